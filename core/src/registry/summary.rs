//! The SyncDigest frame (0x0A): a compact summary of what a node holds, exchanged after
//! connecting to decide which syncs to start.
//!
//! ```text
//! sync digest := section*                  (to the end of the payload)
//! section     := u8 tag, u16 len, len bytes of body
//!   0x01 services   registry summary
//!   0x02 processes  registry summary
//!   other tags      skipped (chain head, tree root: later)
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
use crate::wire::Reader;
use crate::NodeId;

/// Most origins listed in full inside a [`RegistrySummary`].
pub const MAX_SUMMARY_LIST: usize = 64;
/// Section tag of the service registry summary.
pub const SECTION_SERVICES: u8 = 0x01;
/// Section tag of the process table summary.
pub const SECTION_PROCESSES: u8 = 0x02;

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

/// The SyncDigest frame: one optional summary per registry; later versions add sections
/// (chain head, tree root) that older readers skip.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SyncDigest {
    /// The service registry's summary.
    pub services: Option<RegistrySummary>,
    /// The process table's summary.
    pub processes: Option<RegistrySummary>,
}

impl SyncDigest {
    /// The encoding: present sections in tag order.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        for (tag, section) in self.sections() {
            b.put_u8(tag);
            b.put_u16(section.encoded_len() as u16);
            section.encode(&mut b);
        }
        b.freeze()
    }

    fn sections(&self) -> impl Iterator<Item = (u8, &RegistrySummary)> {
        [
            (SECTION_SERVICES, self.services.as_ref()),
            (SECTION_PROCESSES, self.processes.as_ref()),
        ]
        .into_iter()
        .filter_map(|(tag, s)| s.map(|s| (tag, s)))
    }

    /// `None` if malformed: a section cut short, a known section twice or with bytes
    /// left over in its body. Unknown sections are skipped.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let mut digest = SyncDigest::default();
        while !r.is_empty() {
            let tag = r.u8()?;
            let len = r.u16()? as usize;
            let mut body = Reader(r.take(len)?);
            let slot = match tag {
                SECTION_SERVICES => &mut digest.services,
                SECTION_PROCESSES => &mut digest.processes,
                _ => continue,
            };
            if slot.is_some() {
                return None;
            }
            let summary = RegistrySummary::decode(&mut body)?;
            if !body.is_empty() {
                return None;
            }
            *slot = Some(summary);
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
