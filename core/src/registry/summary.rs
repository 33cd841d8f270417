//! The SyncDigest frame (0x0A): a compact summary of what a node holds, exchanged after
//! connecting to decide which syncs to start.
//!
//! ```text
//! sync digest := section*                  (to the end of the payload)
//! section     := u8 tag, u16 len, len bytes of body
//!   0x01 services   registry summary
//!   0x02 processes  registry summary
//!   0x03 chain      u64 seq, 32 hash          (the chain's head; seq 0 only with zero hash)
//!   0x04 tree       u64 version, 32 root      (the replicated tree's state)
//!   other tags      skipped
//! registry summary := u32 origins, SHA-256 32, u8 listed (0 | 1),
//!                     listed: origins × (origin 32, version)  (ascending origin)
//! ```
//! The hash is SHA-256 over `origin 32 ‖ epoch u64 ‖ counter u64` of every origin in
//! ascending order. The list is included when it has at most [`MAX_SUMMARY_LIST`] origins.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest as _, Sha256};

use super::codec::Codec;
use super::wire::{put_version_list, DIGEST_ENTRY_LEN};
use super::{Gossip, OriginMap, Version};
use crate::sync::chain::{ChainHead, MAX_SEQ};
use crate::sync::TreeState;
use crate::wire::Reader;
use crate::NodeId;

/// Most origins listed in full inside a [`RegistrySummary`].
pub const MAX_SUMMARY_LIST: usize = 64;
/// Section tag of the service registry summary.
pub const SECTION_SERVICES: u8 = 0x01;
/// Section tag of the process table summary.
pub const SECTION_PROCESSES: u8 = 0x02;
/// Section tag of the chain head (present when the sender keeps a chain).
pub const SECTION_CHAIN: u8 = 0x03;
/// Section tag of the tree state (present when the sender keeps a tree).
pub const SECTION_TREE: u8 = 0x04;
/// Body length of the chain and tree sections.
const STATE_SECTION_LEN: usize = 8 + 32;

/// A registry's digest in brief: how many origins, a hash over `(origin, version)`, and
/// the list itself when short.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegistrySummary {
    /// Number of origins.
    pub origins: u32,
    /// SHA-256 over the sorted `(origin, version)` list.
    pub hash: [u8; 32],
    /// The list, when it has at most [`MAX_SUMMARY_LIST`] origins.
    pub list: Option<Vec<(NodeId, Version)>>,
}

impl RegistrySummary {
    /// The summary of a digest (any order; duplicates keep the highest version).
    pub fn of(digest: &[(NodeId, Version)]) -> Self {
        let mut sorted: BTreeMap<NodeId, Version> = BTreeMap::new();
        for (id, v) in digest {
            let held = sorted.entry(*id).or_insert(*v);
            *held = (*held).max(*v);
        }
        let list: Vec<(NodeId, Version)> = sorted.into_iter().collect();
        RegistrySummary {
            origins: u32::try_from(list.len()).unwrap_or(u32::MAX),
            hash: hash(&list),
            list: (list.len() <= MAX_SUMMARY_LIST).then_some(list),
        }
    }

    fn encode(&self, b: &mut BytesMut) {
        b.put_u32(self.origins);
        b.put_slice(&self.hash);
        match &self.list {
            Some(list) if list.len() <= MAX_SUMMARY_LIST => {
                b.put_u8(1);
                put_version_list(b, list);
            }
            _ => b.put_u8(0),
        }
    }

    fn encoded_len(&self) -> usize {
        4 + 32
            + 1
            + self
                .list
                .as_ref()
                .filter(|l| l.len() <= MAX_SUMMARY_LIST)
                .map_or(0, |l| l.len() * DIGEST_ENTRY_LEN)
    }

    /// A listed summary must be sorted, of the stated count and match its hash.
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let origins = r.u32()?;
        let stated: [u8; 32] = r.array()?;
        let list = match r.u8()? {
            0 => None,
            1 => {
                let count = usize::try_from(origins)
                    .ok()
                    .filter(|c| *c <= MAX_SUMMARY_LIST)?;
                let list = r.version_list(count)?;
                let sorted = list.windows(2).all(|w| w[0].0 < w[1].0);
                if !sorted || hash(&list) != stated {
                    return None;
                }
                Some(list)
            }
            _ => return None,
        };
        Some(RegistrySummary {
            origins,
            hash: stated,
            list,
        })
    }
}

fn hash(sorted: &[(NodeId, Version)]) -> [u8; 32] {
    let mut h = Sha256::new();
    for (id, v) in sorted {
        h.update(id.as_bytes());
        h.update(v.epoch.to_be_bytes());
        h.update(v.counter.to_be_bytes());
    }
    h.finalize().into()
}

/// The SyncDigest frame: one optional section per registry and per replicated state;
/// sections of later versions are skipped by older readers.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SyncDigest {
    /// The service registry's summary.
    pub services: Option<RegistrySummary>,
    /// The process table's summary.
    pub processes: Option<RegistrySummary>,
    /// The head of the sender's chain (chain sync).
    pub chain: Option<ChainHead>,
    /// The state of the sender's tree (tree sync).
    pub tree: Option<TreeState>,
}

impl SyncDigest {
    /// The encoding: present sections in tag order.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        for (tag, section) in [
            (SECTION_SERVICES, &self.services),
            (SECTION_PROCESSES, &self.processes),
        ] {
            if let Some(section) = section {
                b.put_u8(tag);
                b.put_u16(section.encoded_len() as u16);
                section.encode(&mut b);
            }
        }
        let states = [
            (SECTION_CHAIN, self.chain.map(|h| (h.seq, h.hash))),
            (SECTION_TREE, self.tree.map(|t| (t.version, t.root))),
        ];
        for (tag, (number, hash)) in states.into_iter().filter_map(|(t, s)| Some((t, s?))) {
            b.put_u8(tag);
            b.put_u16(STATE_SECTION_LEN as u16);
            b.put_u64(number);
            b.put_slice(&hash);
        }
        b.freeze()
    }

    /// `None` if malformed: a section cut short, a known section twice or with bytes
    /// left over in its body, a chain head past [`MAX_SEQ`] or at 0 with a non-zero
    /// hash. Unknown sections are skipped.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let mut digest = SyncDigest::default();
        while !r.is_empty() {
            let tag = r.u8()?;
            let len = r.u16()? as usize;
            let mut body = Reader(r.take(len)?);
            match tag {
                SECTION_SERVICES | SECTION_PROCESSES => {
                    let slot = if tag == SECTION_SERVICES {
                        &mut digest.services
                    } else {
                        &mut digest.processes
                    };
                    if slot.is_some() {
                        return None;
                    }
                    *slot = Some(RegistrySummary::decode(&mut body)?);
                }
                SECTION_CHAIN => {
                    let (seq, hash) = (body.u64()?, body.array::<32>()?);
                    let valid = seq <= MAX_SEQ && (seq != 0 || hash == [0; 32]);
                    if digest.chain.is_some() || !valid {
                        return None;
                    }
                    digest.chain = Some(ChainHead { seq, hash });
                }
                SECTION_TREE => {
                    let (version, root) = (body.u64()?, body.array::<32>()?);
                    if digest.tree.is_some() {
                        return None;
                    }
                    digest.tree = Some(TreeState { version, root });
                }
                _ => continue,
            }
            if !body.is_empty() {
                return None;
            }
        }
        Some(digest)
    }
}

impl<K: Codec + Ord + Clone, V: Codec + Clone + PartialEq> OriginMap<K, V> {
    /// This map's summary for a [`SyncDigest`].
    pub fn summary(&self) -> RegistrySummary {
        RegistrySummary::of(&self.digest())
    }

    /// React to a peer's summary: nothing if we hold the same versions; if it lists its
    /// origins, what a digest with that list would get ([`OriginMap::answer_digest`]);
    /// otherwise our full digest, so that the peer answers with what differs.
    pub fn answer_summary(
        &mut self,
        summary: &RegistrySummary,
        budget_bytes: usize,
    ) -> Vec<Gossip<K, V>> {
        if *summary == self.summary() {
            return Vec::new();
        }
        let Some(list) = &summary.list else {
            return alloc::vec![Gossip::Digest(self.digest())];
        };
        self.digest_replies(list, budget_bytes)
    }
}
