//! [`Delta`]: the changes of one origin over a contiguous version range, and its encoding.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use bytes::{BufMut, BytesMut};

use super::codec::Codec;
use super::version::VERSION_LEN;
use super::{ApplyError, RegistryConfig, Version};
use crate::wire::Reader;
use crate::NodeId;

/// Most entries in one encoded delta.
pub const MAX_DELTA_ENTRIES: usize = 4096;
/// Encoded size of a delta without its entries: origin, from, to, floor, entry count.
pub const DELTA_HEADER_LEN: usize = 32 + 3 * VERSION_LEN + 2;

/// One changed key: its new value, or `None` for a removal (a tombstone).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeltaEntry<K, V> {
    /// When it changed.
    pub version: Version,
    /// The key.
    pub key: K,
    /// The value, `None` if removed.
    pub value: Option<V>,
}

impl<K: Codec, V: Codec> DeltaEntry<K, V> {
    /// Encoded size: version, present flag, key, value.
    pub fn encoded_len(&self) -> usize {
        entry_len(&self.key, self.value.as_ref())
    }
}

pub(crate) fn entry_len<K: Codec, V: Codec>(key: &K, value: Option<&V>) -> usize {
    VERSION_LEN + 1 + key.encoded_len() + value.map_or(0, Codec::encoded_len)
}

/// Every entry of `origin` that changed in the version range `(from, to]`, as held by
/// the sender, plus the sender's GC `floor` for that origin (never above `to`).
///
/// A receiver applies it only if it holds `from` or later for the origin, so applying
/// deltas in any order never leaves a gap; afterwards it holds `max(its version, to)`.
/// Keys the receiver has at a version in `(from, min(floor, to)]` that the delta lacks
/// were removed and garbage-collected by the sender: the receiver drops them. A delta
/// starting below the floor ([`Delta::is_full`]) therefore carries `from = ZERO` and the
/// sender's whole state up to `to`, which replaces the receiver's.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delta<K, V> {
    /// Whose entries.
    pub origin: NodeId,
    /// The range starts after this version.
    pub from: Version,
    /// The range ends at this version (included).
    pub to: Version,
    /// The sender's GC horizon for the origin, at most `to`.
    pub floor: Version,
    /// The changes, in increasing version order, each in `(from, to]`, one per key.
    pub entries: Vec<DeltaEntry<K, V>>,
}

impl<K: Codec + Ord, V: Codec> Delta<K, V> {
    /// Whether it starts below the sender's floor, i.e. replaces the receiver's state.
    pub fn is_full(&self) -> bool {
        self.from < self.floor
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        DELTA_HEADER_LEN
            + self
                .entries
                .iter()
                .map(DeltaEntry::encoded_len)
                .sum::<usize>()
    }

    /// The range is non-empty, the floor within it, entries ordered inside it, keys unique.
    pub(crate) fn check_shape(&self) -> Result<(), ApplyError> {
        let mut last = self.from;
        let mut keys = BTreeSet::new();
        for e in &self.entries {
            if e.version <= last || e.version > self.to || !keys.insert(&e.key) {
                return Err(ApplyError::Malformed);
            }
            last = e.version;
        }
        if self.from >= self.to || self.floor > self.to || self.entries.len() > MAX_DELTA_ENTRIES {
            return Err(ApplyError::Malformed);
        }
        Ok(())
    }

    /// The shape, and every key and value within the configured sizes.
    pub(crate) fn check(&self, config: &RegistryConfig) -> Result<(), ApplyError> {
        self.check_shape()?;
        for e in &self.entries {
            if e.key.encoded_len() > config.max_key_bytes {
                return Err(ApplyError::KeyTooLarge);
            }
            if e.value.as_ref().map_or(0, Codec::encoded_len) > config.max_value_bytes {
                return Err(ApplyError::ValueTooLarge);
            }
        }
        Ok(())
    }

    /// Append the encoding (callers skip deltas with more than [`MAX_DELTA_ENTRIES`]).
    pub(crate) fn encode(&self, b: &mut BytesMut) {
        b.put_slice(self.origin.as_bytes());
        self.from.encode(b);
        self.to.encode(b);
        self.floor.encode(b);
        b.put_u16(self.entries.len().min(MAX_DELTA_ENTRIES) as u16);
        for e in self.entries.iter().take(MAX_DELTA_ENTRIES) {
            e.version.encode(b);
            match &e.value {
                None => {
                    b.put_u8(0);
                    e.key.encode(b);
                }
                Some(v) => {
                    b.put_u8(1);
                    e.key.encode(b);
                    v.encode(b);
                }
            }
        }
    }

    /// `None` if malformed, including a delta of inconsistent shape.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let origin = r.node()?;
        let from = Version::decode(r)?;
        let to = Version::decode(r)?;
        let floor = Version::decode(r)?;
        let count = r.u16()? as usize;
        if count > MAX_DELTA_ENTRIES {
            return None;
        }
        let min_entry = VERSION_LEN + 1 + K::MIN_SIZE;
        let mut entries = Vec::with_capacity(count.min(r.remaining() / min_entry));
        for _ in 0..count {
            let version = Version::decode(r)?;
            let present = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let key = K::decode(&mut r.0)?;
            let value = if present {
                Some(V::decode(&mut r.0)?)
            } else {
                None
            };
            entries.push(DeltaEntry {
                version,
                key,
                value,
            });
        }
        let delta = Delta {
            origin,
            from,
            to,
            floor,
            entries,
        };
        delta.check_shape().ok()?;
        Some(delta)
    }
}
