//! The ChainSync frame's payload (0x05): requests for a range of entries, the entries
//! that answer them, and head advertisements.
//!
//! The format is described on [`ChainSyncMessage`].

use alloc::vec::Vec;
use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::store::{ChainEntry, ChainHead, EntryError, GENESIS_PREV, MAX_ENTRY_LEN};
use crate::wire::Reader;

/// Most entries one request asks for, and one reply carries.
pub const MAX_BATCH_ENTRIES: usize = 4096;
/// Encoded size of a [`GetEntries`] message: kind, id, from_seq, max_entries, max_bytes.
pub const GET_ENTRIES_LEN: usize = 1 + 4 + 8 + 2 + 4;
/// Encoded size of an [`Entries`] message without its entries: kind, id, head, count.
pub const ENTRIES_HEADER_LEN: usize = 1 + 4 + HEAD_LEN + 2;
/// Encoded size of a head: seq and hash.
pub const HEAD_LEN: usize = 8 + 32;
/// Encoded size of a [`ChainSyncMessage::Head`] message: kind and head.
pub const HEAD_MESSAGE_LEN: usize = 1 + HEAD_LEN;
/// Encoded size of an entry without its payload: seq, prev_hash, hash, length.
pub const ENTRY_HEADER_LEN: usize = 8 + 32 + 32 + 4;

const KIND_GET_ENTRIES: u8 = 0x01;
const KIND_ENTRIES: u8 = 0x02;
const KIND_HEAD: u8 = 0x03;

/// Why a ChainSync payload did not decode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// A field runs past the end of the payload.
    Truncated,
    /// Unknown message kind (the first byte).
    UnknownKind(u8),
    /// A request's `max_entries` of zero or above [`MAX_BATCH_ENTRIES`], or a reply with
    /// more than [`MAX_BATCH_ENTRIES`] entries.
    Count,
    /// A request from sequence number 0, or an entry numbered 0 or above
    /// [`MAX_SEQ`](super::MAX_SEQ).
    Seq,
    /// Entry 1 whose previous hash is not zero.
    Genesis,
    /// A head at sequence number 0 whose hash is not zero.
    Head,
    /// An entry payload larger than [`MAX_ENTRY_LEN`].
    PayloadTooLarge,
    /// An entry whose hash is not the hash of its contents.
    Hash,
    /// Bytes after the message.
    TrailingBytes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("chain sync message truncated"),
            DecodeError::UnknownKind(k) => write!(f, "unknown chain sync message kind {k:#04x}"),
            DecodeError::Count => f.write_str("chain sync entry count zero or above 4096"),
            DecodeError::Seq => f.write_str("chain sequence number 0 or too high"),
            DecodeError::Genesis => f.write_str("chain entry 1 does not link to the zero hash"),
            DecodeError::Head => f.write_str("empty chain head with a non-zero hash"),
            DecodeError::PayloadTooLarge => f.write_str("chain entry payload larger than 1 MiB"),
            DecodeError::Hash => f.write_str("chain entry hash does not match its contents"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes after chain sync message"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

impl From<EntryError> for DecodeError {
    fn from(e: EntryError) -> Self {
        match e {
            EntryError::Seq => DecodeError::Seq,
            EntryError::Genesis => DecodeError::Genesis,
            EntryError::PayloadTooLarge => DecodeError::PayloadTooLarge,
        }
    }
}

/// "Send me your entries from `from_seq` on."
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GetEntries {
    /// Echoed by the reply.
    pub id: u32,
    /// The first entry wanted (from 1).
    pub from_seq: u64,
    /// Most entries wanted, 1 to [`MAX_BATCH_ENTRIES`].
    pub max_entries: u16,
    /// Most encoded bytes of the reply (one entry is sent even if it alone is larger).
    pub max_bytes: u32,
}

/// The answer to a [`GetEntries`]: the responder's head, and its entries `from_seq`,
/// `from_seq + 1`, ... in order: as many as asked, as fit the byte budget (at least
/// one) and as it has. Empty when its head is below `from_seq`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entries {
    /// The request's id.
    pub id: u32,
    /// The responder's head when it answered.
    pub head: ChainHead,
    /// 0 to [`MAX_BATCH_ENTRIES`] entries.
    pub entries: Vec<ChainEntry>,
}

/// A decoded ChainSync frame (0x05) payload.
///
/// ```text
/// message := u8 kind, body                   (nothing after the body)
///   0x01 get entries  u32 id, u64 from_seq (≥ 1), u16 max_entries (1..=4096),
///                     u32 max_bytes
///   0x02 entries      u32 id, head, u16 count (0..=4096), count × entry
///   0x03 head         head
/// head    := u64 seq, 32 hash                (seq 0 only with 32 zero bytes)
/// entry   := u64 seq (1..=2^64-2), 32 prev_hash, 32 hash,
///            u32 len (≤ 1 MiB), len bytes of payload
/// ```
/// All integers are big-endian. An entry's `hash` must equal
/// [`entry_hash`](super::entry_hash)`(seq, prev_hash, payload)` =
/// `SHA-256("weft-mesh chain entry v1" ‖ u64 BE seq ‖ prev_hash ‖ payload)`, and entry 1's
/// `prev_hash` must be 32 zero bytes: the decoder recomputes every hash and refuses
/// the message otherwise. Whether the entries of a reply are consecutive and link to
/// each other is for the puller to judge (a broken link is fork evidence, not a
/// malformed message).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ChainSyncMessage {
    /// A request, from a puller to a responder.
    GetEntries(GetEntries),
    /// A reply, from a responder to a puller.
    Entries(Entries),
    /// An advertisement of the sender's head (after it appended, say), for the
    /// receiver's puller or for deciding to start one.
    Head(ChainHead),
}

impl From<GetEntries> for ChainSyncMessage {
    fn from(m: GetEntries) -> Self {
        ChainSyncMessage::GetEntries(m)
    }
}

impl From<Entries> for ChainSyncMessage {
    fn from(m: Entries) -> Self {
        ChainSyncMessage::Entries(m)
    }
}

/// Encoded size of an entry.
pub fn entry_len(entry: &ChainEntry) -> usize {
    ENTRY_HEADER_LEN + entry.payload().len()
}

impl ChainSyncMessage {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        match self {
            ChainSyncMessage::GetEntries(_) => GET_ENTRIES_LEN,
            ChainSyncMessage::Entries(m) => {
                ENTRIES_HEADER_LEN
                    + m.entries
                        .iter()
                        .take(MAX_BATCH_ENTRIES)
                        .map(entry_len)
                        .sum::<usize>()
            }
            ChainSyncMessage::Head(_) => HEAD_MESSAGE_LEN,
        }
    }

    /// The encoding. Entry lists are cut at [`MAX_BATCH_ENTRIES`]; the sessions never
    /// build longer ones, nor requests the decoder would refuse.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        match self {
            ChainSyncMessage::GetEntries(m) => {
                b.put_u8(KIND_GET_ENTRIES);
                b.put_u32(m.id);
                b.put_u64(m.from_seq);
                b.put_u16(m.max_entries);
                b.put_u32(m.max_bytes);
            }
            ChainSyncMessage::Entries(m) => {
                let entries = &m.entries[..m.entries.len().min(MAX_BATCH_ENTRIES)];
                b.put_u8(KIND_ENTRIES);
                b.put_u32(m.id);
                put_head(&mut b, &m.head);
                b.put_u16(entries.len() as u16);
                for e in entries {
                    put_entry(&mut b, e);
                }
            }
            ChainSyncMessage::Head(head) => {
                b.put_u8(KIND_HEAD);
                put_head(&mut b, head);
            }
        }
        b.freeze()
    }

    /// Decode a payload, checking every count and length before allocating and every
    /// entry's hash.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let t = DecodeError::Truncated;
        let mut r = Reader(bytes);
        let message = match r.u8().ok_or(t)? {
            KIND_GET_ENTRIES => {
                let id = r.u32().ok_or(t)?;
                let from_seq = r.u64().ok_or(t)?;
                let max_entries = r.u16().ok_or(t)?;
                let max_bytes = r.u32().ok_or(t)?;
                if from_seq == 0 {
                    return Err(DecodeError::Seq);
                }
                if max_entries == 0 || usize::from(max_entries) > MAX_BATCH_ENTRIES {
                    return Err(DecodeError::Count);
                }
                ChainSyncMessage::GetEntries(GetEntries {
                    id,
                    from_seq,
                    max_entries,
                    max_bytes,
                })
            }
            KIND_ENTRIES => {
                let id = r.u32().ok_or(t)?;
                let head = read_head(&mut r)?;
                let count = usize::from(r.u16().ok_or(t)?);
                if count > MAX_BATCH_ENTRIES {
                    return Err(DecodeError::Count);
                }
                let mut entries = Vec::with_capacity(count.min(r.remaining() / ENTRY_HEADER_LEN));
                for _ in 0..count {
                    entries.push(read_entry(&mut r)?);
                }
                ChainSyncMessage::Entries(Entries { id, head, entries })
            }
            KIND_HEAD => ChainSyncMessage::Head(read_head(&mut r)?),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(message)
    }
}

fn put_head(b: &mut BytesMut, head: &ChainHead) {
    b.put_u64(head.seq);
    b.put_slice(&head.hash);
}

fn put_entry(b: &mut BytesMut, e: &ChainEntry) {
    b.put_u64(e.seq());
    b.put_slice(e.prev_hash());
    b.put_slice(e.hash());
    b.put_u32(e.payload().len() as u32);
    b.put_slice(e.payload());
}

fn read_head(r: &mut Reader<'_>) -> Result<ChainHead, DecodeError> {
    let t = DecodeError::Truncated;
    let seq = r.u64().ok_or(t)?;
    let hash = r.array().ok_or(t)?;
    if seq == 0 && hash != GENESIS_PREV {
        return Err(DecodeError::Head);
    }
    Ok(ChainHead { seq, hash })
}

fn read_entry(r: &mut Reader<'_>) -> Result<ChainEntry, DecodeError> {
    let t = DecodeError::Truncated;
    let seq = r.u64().ok_or(t)?;
    let prev_hash = r.array().ok_or(t)?;
    let hash: [u8; 32] = r.array().ok_or(t)?;
    let len = r.u32().ok_or(t)? as usize;
    if len > MAX_ENTRY_LEN {
        return Err(DecodeError::PayloadTooLarge);
    }
    let payload = Bytes::copy_from_slice(r.take(len).ok_or(t)?);
    let entry = ChainEntry::new(seq, prev_hash, payload)?;
    if *entry.hash() != hash {
        return Err(DecodeError::Hash);
    }
    Ok(entry)
}
