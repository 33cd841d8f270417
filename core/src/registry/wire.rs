//! The registry gossip frames (ServiceGossip 0x09, ProcessGossip 0x08): deltas, digests
//! and wants.
//!
//! ```text
//! deltas  0x01  u16 count (≤ 1024), count × delta
//! digest  0x02  u16 count (≤ 4096), count × (origin 32, version)
//! want    0x03  u16 count (≤ 4096), count × (origin 32, version)
//! delta   := origin 32, from version, to version, floor version,
//!            u16 count (≤ 4096), count × entry
//! entry   := version, u8 present (0 removed, 1 set), key, value if present
//! version := epoch u64, counter u64 (big-endian)
//! ```

use alloc::vec::Vec;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::Codec;
use super::delta::MAX_DELTA_ENTRIES;
use super::version::VERSION_LEN;
use super::{Delta, Version};
use crate::wire::Reader;
use crate::NodeId;

/// Most deltas in one message.
pub const MAX_DELTAS_PER_MESSAGE: usize = 1024;
/// Most `(origin, version)` pairs in one digest or want.
pub const MAX_DIGEST_ENTRIES: usize = 4096;
/// Encoded size of a message without its items: tag and count.
pub const MESSAGE_HEADER_LEN: usize = 3;
/// Encoded size of one `(origin, version)` pair.
pub const DIGEST_ENTRY_LEN: usize = 32 + VERSION_LEN;

/// One registry gossip message (the payload of a ServiceGossip or ProcessGossip frame).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Gossip<K, V> {
    /// Changes, pushed (piggybacked) or answering a digest or want.
    Deltas(Vec<Delta<K, V>>),
    /// Anti-entropy: every origin the sender knows and the version it holds. The
    /// receiver answers with the deltas the sender lacks and a `Want` for what it lacks.
    Digest(Vec<(NodeId, Version)>),
    /// "Send me every change of these origins after these versions."
    Want(Vec<(NodeId, Version)>),
}

impl<K: Codec + Ord, V: Codec> Gossip<K, V> {
    /// The encoding. Lists are cut at their maximum ([`MAX_DELTAS_PER_MESSAGE`],
    /// [`MAX_DIGEST_ENTRIES`]); a delta with more than [`MAX_DELTA_ENTRIES`] entries is
    /// left out, since cutting it would change its meaning.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        match self {
            Gossip::Deltas(deltas) => {
                let deltas: Vec<&Delta<K, V>> = sendable(deltas).collect();
                b.put_u8(0x01);
                b.put_u16(deltas.len() as u16);
                for d in deltas {
                    d.encode(&mut b);
                }
            }
            Gossip::Digest(list) => put_versions(&mut b, 0x02, list),
            Gossip::Want(list) => put_versions(&mut b, 0x03, list),
        }
        b.freeze()
    }

    /// The size of [`Gossip::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        MESSAGE_HEADER_LEN
            + match self {
                Gossip::Deltas(deltas) => sendable(deltas).map(Delta::encoded_len).sum(),
                Gossip::Digest(list) | Gossip::Want(list) => {
                    list.len().min(MAX_DIGEST_ENTRIES) * DIGEST_ENTRY_LEN
                }
            }
    }

    /// `None` if malformed, trailing bytes included.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let message = match r.u8()? {
            0x01 => {
                let count = r.u16()? as usize;
                if count > MAX_DELTAS_PER_MESSAGE {
                    return None;
                }
                let min = super::delta::DELTA_HEADER_LEN;
                let mut deltas = Vec::with_capacity(count.min(r.remaining() / min));
                for _ in 0..count {
                    deltas.push(Delta::decode(&mut r)?);
                }
                Gossip::Deltas(deltas)
            }
            0x02 => Gossip::Digest(r.versions()?),
            0x03 => Gossip::Want(r.versions()?),
            _ => return None,
        };
        r.is_empty().then_some(message)
    }
}

fn sendable<K, V>(deltas: &[Delta<K, V>]) -> impl Iterator<Item = &Delta<K, V>> {
    deltas
        .iter()
        .filter(|d| d.entries.len() <= MAX_DELTA_ENTRIES)
        .take(MAX_DELTAS_PER_MESSAGE)
}

fn put_versions(b: &mut BytesMut, tag: u8, list: &[(NodeId, Version)]) {
    let list = &list[..list.len().min(MAX_DIGEST_ENTRIES)];
    b.put_u8(tag);
    b.put_u16(list.len() as u16);
    put_version_list(b, list);
}

/// `(origin 32, version)` pairs, no count.
pub(crate) fn put_version_list(b: &mut BytesMut, list: &[(NodeId, Version)]) {
    for (node, version) in list {
        b.put_slice(node.as_bytes());
        version.encode(b);
    }
}

impl Reader<'_> {
    /// `u16 count (≤ MAX_DIGEST_ENTRIES), count × (origin, version)`.
    fn versions(&mut self) -> Option<Vec<(NodeId, Version)>> {
        let count = self.u16()? as usize;
        if count > MAX_DIGEST_ENTRIES {
            return None;
        }
        self.version_list(count)
    }

    /// `count` pairs of `(origin 32, version)`.
    pub(crate) fn version_list(&mut self, count: usize) -> Option<Vec<(NodeId, Version)>> {
        let mut out = Vec::with_capacity(count.min(self.remaining() / DIGEST_ENTRY_LEN));
        for _ in 0..count {
            out.push((self.node()?, Version::decode(self)?));
        }
        Some(out)
    }
}
