//! Chain entries, their hash, the [`ChainStore`] an application supplies, and
//! [`MemoryChain`].

use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The previous hash of entry 1, and the hash of the empty chain's head.
pub const GENESIS_PREV: Hash = [0; 32];
/// Largest payload of one entry: 1 MiB.
pub const MAX_ENTRY_LEN: usize = 1 << 20;
/// The highest sequence number an entry can have (so that `seq + 1` never overflows).
pub const MAX_SEQ: u64 = u64::MAX - 1;
/// Prefix of an entry hash's preimage (24 bytes, no terminator).
pub const ENTRY_DOMAIN: &[u8; 24] = b"weft-mesh chain entry v1";

/// `SHA-256("weft-mesh chain entry v1" ‖ u64 BE seq ‖ prev_hash ‖ payload)`: the hash of
/// an entry. Every field but the last has a fixed length, so the preimage is unambiguous;
/// the domain string keeps it apart from every other SHA-256 input in the protocol.
pub fn entry_hash(seq: u64, prev_hash: &Hash, payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(prev_hash);
    h.update(payload);
    h.finalize().into()
}

/// The last entry of a chain: its sequence number and hash. The empty chain's head is
/// [`ChainHead::EMPTY`], `(0, 32 zero bytes)`, which is what entry 1 links to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ChainHead {
    /// Sequence number of the last entry (the number of entries), 0 when empty.
    pub seq: u64,
    /// Its hash, [`GENESIS_PREV`] when empty.
    pub hash: Hash,
}

impl ChainHead {
    /// The head of the empty chain.
    pub const EMPTY: ChainHead = ChainHead {
        seq: 0,
        hash: GENESIS_PREV,
    };
}

/// Why an entry could not be made (or was refused by a decoder).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EntryError {
    /// Sequence number 0 (entries count from 1) or above [`MAX_SEQ`].
    Seq,
    /// Entry 1 with a previous hash other than [`GENESIS_PREV`].
    Genesis,
    /// A payload larger than [`MAX_ENTRY_LEN`].
    PayloadTooLarge,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryError::Seq => "chain entry sequence number 0 or too high",
            EntryError::Genesis => "chain entry 1 does not link to the zero hash",
            EntryError::PayloadTooLarge => "chain entry payload larger than 1 MiB",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EntryError {}

/// One entry of a hash-linked log: sequence number, previous entry's hash, payload, and
/// its own hash.
///
/// Every value of this type is well formed: `1 ≤ seq ≤ MAX_SEQ`, entry 1 links to
/// [`GENESIS_PREV`], the payload is at most [`MAX_ENTRY_LEN`] bytes and `hash` is
/// [`entry_hash`] of the rest (computed by [`ChainEntry::new`], checked by the decoder).
/// Whether it *links* to a given predecessor is a separate question
/// ([`ChainEntry::follows`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChainEntry {
    seq: u64,
    prev_hash: Hash,
    hash: Hash,
    payload: Bytes,
}

impl ChainEntry {
    /// The entry `seq` with this predecessor hash and payload; its hash is computed.
    pub fn new(seq: u64, prev_hash: Hash, payload: impl Into<Bytes>) -> Result<Self, EntryError> {
        let payload = payload.into();
        if seq == 0 || seq > MAX_SEQ {
            return Err(EntryError::Seq);
        }
        if seq == 1 && prev_hash != GENESIS_PREV {
            return Err(EntryError::Genesis);
        }
        if payload.len() > MAX_ENTRY_LEN {
            return Err(EntryError::PayloadTooLarge);
        }
        Ok(ChainEntry {
            seq,
            prev_hash,
            hash: entry_hash(seq, &prev_hash, &payload),
            payload,
        })
    }

    /// Entry 1.
    pub fn genesis(payload: impl Into<Bytes>) -> Result<Self, EntryError> {
        Self::new(1, GENESIS_PREV, payload)
    }

    /// The entry that extends a chain whose head is `head`.
    pub fn after(head: ChainHead, payload: impl Into<Bytes>) -> Result<Self, EntryError> {
        Self::new(
            head.seq.checked_add(1).ok_or(EntryError::Seq)?,
            head.hash,
            payload,
        )
    }

    /// Sequence number, from 1.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The previous entry's hash ([`GENESIS_PREV`] for entry 1).
    pub fn prev_hash(&self) -> &Hash {
        &self.prev_hash
    }

    /// This entry's hash.
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// The application's bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The head of a chain that ends with this entry.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// Whether this entry extends a chain whose head is `head`: the next sequence number,
    /// linked to its hash.
    pub fn follows(&self, head: &ChainHead) -> bool {
        head.seq.checked_add(1) == Some(self.seq) && self.prev_hash == head.hash
    }
}

/// Why a store did not append an entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum AppendError {
    /// The entry does not follow the store's head.
    NotNext,
    /// The application refused it (full, invalid payload, read-only, ...).
    Refused,
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AppendError::NotNext => "entry does not follow the chain head",
            AppendError::Refused => "the chain store refused the entry",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AppendError {}

/// An application's append-only, hash-linked log, as chain sync uses it.
///
/// Entries are numbered from 1 without gaps; entry `s + 1` links to entry `s` by its
/// [`ChainEntry::prev_hash`] and entry 1 to [`GENESIS_PREV`]. A store must serve every
/// entry from 1 to its head ([`ChainStore::get`]): chain sync answers peers from it and
/// shows one's own entries as fork evidence. Persistence, caching and what a payload
/// means are the store's business.
pub trait ChainStore {
    /// The last entry's sequence number and hash, [`ChainHead::EMPTY`] when empty.
    fn head(&self) -> ChainHead;
    /// Entry `seq` (from 1), `None` above the head.
    fn get(&self, seq: u64) -> Option<ChainEntry>;
    /// Append `entry`, which chain sync has verified to follow [`ChainStore::head`]; the
    /// store may still refuse it (and should refuse one that does not follow).
    fn append(&mut self, entry: ChainEntry) -> Result<(), AppendError>;
}

impl<T: ChainStore + ?Sized> ChainStore for alloc::boxed::Box<T> {
    fn head(&self) -> ChainHead {
        (**self).head()
    }

    fn get(&self, seq: u64) -> Option<ChainEntry> {
        (**self).get(seq)
    }

    fn append(&mut self, entry: ChainEntry) -> Result<(), AppendError> {
        (**self).append(entry)
    }
}

impl<T: ChainStore + ?Sized> ChainStore for &mut T {
    fn head(&self) -> ChainHead {
        (**self).head()
    }

    fn get(&self, seq: u64) -> Option<ChainEntry> {
        (**self).get(seq)
    }

    fn append(&mut self, entry: ChainEntry) -> Result<(), AppendError> {
        (**self).append(entry)
    }
}

/// A [`ChainStore`] in a `Vec`, for tests and demos. Refuses entries that do not follow
/// its head.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct MemoryChain {
    entries: Vec<ChainEntry>,
}

impl MemoryChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// A chain of these payloads, in order.
    pub fn from_payloads<P: Into<Bytes>>(
        payloads: impl IntoIterator<Item = P>,
    ) -> Result<Self, EntryError> {
        let mut chain = Self::new();
        for p in payloads {
            chain.push(p)?;
        }
        Ok(chain)
    }

    /// Append an entry with this payload after the head; returns the new head.
    pub fn push(&mut self, payload: impl Into<Bytes>) -> Result<ChainHead, EntryError> {
        let entry = ChainEntry::after(self.head(), payload)?;
        let head = entry.head();
        self.entries.push(entry);
        Ok(head)
    }

    /// Number of entries (the head's sequence number).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, entry 1 first.
    pub fn entries(&self) -> &[ChainEntry] {
        &self.entries
    }

    /// The first `len` entries (all of them if fewer): a prefix of this chain.
    pub fn prefix(&self, len: usize) -> MemoryChain {
        MemoryChain {
            entries: self.entries[..len.min(self.entries.len())].to_vec(),
        }
    }
}

impl ChainStore for MemoryChain {
    fn head(&self) -> ChainHead {
        self.entries
            .last()
            .map_or(ChainHead::EMPTY, ChainEntry::head)
    }

    fn get(&self, seq: u64) -> Option<ChainEntry> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.entries.get(i).cloned()
    }

    fn append(&mut self, entry: ChainEntry) -> Result<(), AppendError> {
        if !entry.follows(&self.head()) {
            return Err(AppendError::NotNext);
        }
        self.entries.push(entry);
        Ok(())
    }
}
