//! The gossiped registries (DESIGN.md §4 "Registries"): the service registry and the
//! distributed process table, each a per-origin versioned map ([`OriginMap`]) that only
//! the origin writes and every node replicates.
//!
//! * Writes: [`OriginMap::insert`] / [`OriginMap::remove`] on our own origin.
//! * Push: [`OriginMap::delta_since`] within a byte budget; the node sends it to every
//!   peer, and peers that learn something forward it (see `node/registry.rs`).
//! * Anti-entropy: a [`SyncDigest`] (frame 0x0A) summarising both registries, after a
//!   link comes up and to a random peer every period; [`OriginMap::answer_summary`] and
//!   [`OriginMap::handle`] answer with digests, wants and deltas.
//! * Failure: [`OriginMap::remove_origin`] when SWIM declares a member down,
//!   [`OriginMap::readmit`] if it comes back.
//!
//! Entries are not signed by their origin: a member trusts its authenticated neighbours
//! to pass on what origins wrote (as it trusts them to relay honestly).
//!
//! See [`OriginMap`] for an example.

mod codec;
mod delta;
mod entries;
mod error;
mod origin;
mod origin_map;
mod summary;
mod sync;
mod version;
mod wire;

#[cfg(test)]
mod tests;

use core::time::Duration;

pub use codec::Codec;
pub use delta::{Delta, DeltaEntry, DELTA_HEADER_LEN, MAX_DELTA_ENTRIES};
pub use entries::{
    EntryError, ProcessInfo, ServiceInfo, ServiceName, MAX_METADATA_LEN, MAX_NAME_LEN,
};
pub use error::{ApplyError, Change, ChangeKind, WriteError};
pub use origin_map::OriginMap;
pub use summary::{
    RegistrySummary, SyncDigest, MAX_SUMMARY_LIST, SECTION_PROCESSES, SECTION_SERVICES,
};
pub use sync::{DigestAnswer, Handled};
pub use version::{Version, VERSION_LEN};
pub use wire::{
    Gossip, DIGEST_ENTRY_LEN, MAX_DELTAS_PER_MESSAGE, MAX_DIGEST_ENTRIES, MESSAGE_HEADER_LEN,
};

use crate::NodeId;

/// Services by node: who provides what (gossiped in ServiceGossip frames, 0x09).
pub type ServiceRegistry = OriginMap<ServiceName, ServiceInfo>;
/// Processes by node and pid (gossiped in ProcessGossip frames, 0x08).
pub type ProcessTable = OriginMap<u64, ProcessInfo>;
/// A ServiceGossip frame's payload.
pub type ServiceGossip = Gossip<ServiceName, ServiceInfo>;
/// A ProcessGossip frame's payload.
pub type ProcessGossip = Gossip<u64, ProcessInfo>;

impl ServiceRegistry {
    /// The nodes that currently provide `name`, in id order.
    pub fn providers<'a>(&'a self, name: &'a ServiceName) -> impl Iterator<Item = NodeId> + 'a {
        self.holders(name)
    }
}

/// Bounds and timing of an [`OriginMap`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegistryConfig {
    /// Most origins held (ours included); deltas of further origins are refused.
    /// At most [`MAX_DIGEST_ENTRIES`], so that a digest lists them all.
    pub max_origins: usize,
    /// Most live entries per origin; local writes and deltas beyond are refused. Keep it
    /// at most [`MAX_DELTA_ENTRIES`]: a full delta carries them all at once.
    pub max_entries_per_origin: usize,
    /// Most tombstones per origin; beyond, the oldest are collected early (raising the
    /// floor, which costs lagging peers a full delta).
    pub max_tombstones_per_origin: usize,
    /// Largest encoded key.
    pub max_key_bytes: usize,
    /// Largest encoded value.
    pub max_value_bytes: usize,
    /// Tombstones are collected this long after they were stored here. Peers that miss
    /// gossip for longer get full deltas.
    pub tombstone_ttl: Duration,
    /// How many removed origins are remembered, to ignore stale gossip about them.
    pub max_removed_origins: usize,
}

impl Default for RegistryConfig {
    /// 1024 origins of 256 entries and 256 tombstones; keys up to 256 and values up to
    /// 1282 encoded bytes (the largest [`ServiceName`] and [`ProcessInfo`]); tombstones
    /// kept 10 minutes; 1024 removed origins remembered.
    fn default() -> Self {
        RegistryConfig {
            max_origins: 1024,
            max_entries_per_origin: 256,
            max_tombstones_per_origin: 256,
            max_key_bytes: 1 + MAX_NAME_LEN,
            max_value_bytes: 1 + MAX_NAME_LEN + 2 + MAX_METADATA_LEN,
            tombstone_ttl: Duration::from_secs(600),
            max_removed_origins: 1024,
        }
    }
}
