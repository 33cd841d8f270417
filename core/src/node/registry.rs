//! The node's gossiped registries: the services and processes of every member
//! ([`ServiceRegistry`], [`ProcessTable`]), replicated over the mesh links.
//!
//! * A local write is pushed at once to every peer as a delta (ServiceGossip 0x09,
//!   ProcessGossip 0x08). A node that learns something new from a delta forwards the
//!   message to its other peers, so an update floods the link graph in as many rounds
//!   as its diameter; a node that already knew it forwards nothing.
//! * Anti-entropy: after a link comes up, and to one random peer every
//!   `exchange_interval`, a [`SyncDigest`] (0x0A) summarises both registries; the peer
//!   answers with digests, wants and deltas until both hold the same versions. A node
//!   that missed an update repairs within one period.
//! * A member SWIM declares down or left has its entries removed (by epoch: a restarted
//!   node, with a later epoch, is accepted again).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;

use super::{ConnId, Node, NodeEvent};
use crate::frame::FrameType;
use crate::registry::{
    ChangeKind, Codec, EntryError, Gossip, OriginMap, ProcessInfo, ProcessTable, ServiceInfo,
    ServiceName, ServiceRegistry, SyncDigest, Version, WriteError,
};
use crate::{Instant, NodeId};

/// Bytes of deltas in one gossip message at most (a full delta of an origin at its
/// entry limit may need more; it is then repaired in smaller steps by later deltas).
const GOSSIP_BUDGET: usize = 256 * 1024;

/// Why a registry write was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RegistryError {
    /// The name or metadata is invalid (empty, too long).
    Entry(EntryError),
    /// The registry refused the write (limits).
    Write(WriteError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Entry(e) => write!(f, "invalid entry: {e}"),
            RegistryError::Write(e) => write!(f, "registry refused the write: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RegistryError {}

/// Both registries.
pub(crate) struct Registries {
    pub services: ServiceRegistry,
    pub processes: ProcessTable,
}

impl Node {
    /// Advertise that this node provides service `name` (with opaque `metadata`, at
    /// most 1 KiB); replaces an earlier advertisement of the same name.
    pub fn advertise(
        &mut self,
        now: Instant,
        name: &str,
        metadata: &[u8],
    ) -> Result<(), RegistryError> {
        self.advance(now);
        let name = ServiceName::new(name).map_err(RegistryError::Entry)?;
        let info =
            ServiceInfo::new(Bytes::copy_from_slice(metadata)).map_err(RegistryError::Entry)?;
        let (me, now) = (self.identity.node_id(), self.now);
        let map = &mut self.registries.services;
        let before = map.version(&me).unwrap_or(Version::ZERO);
        map.insert(now, name, info).map_err(RegistryError::Write)?;
        self.push_local(FrameType::ServiceGossip, before);
        Ok(())
    }

    /// Stop advertising service `name` (nothing if it was not advertised).
    pub fn withdraw(&mut self, now: Instant, name: &str) -> Result<(), RegistryError> {
        self.advance(now);
        let name = ServiceName::new(name).map_err(RegistryError::Entry)?;
        let (me, now) = (self.identity.node_id(), self.now);
        let map = &mut self.registries.services;
        let before = map.version(&me).unwrap_or(Version::ZERO);
        map.remove(now, &name).map_err(RegistryError::Write)?;
        self.push_local(FrameType::ServiceGossip, before);
        Ok(())
    }

    /// Register process `pid` of this node in the distributed process table.
    pub fn register_process(
        &mut self,
        now: Instant,
        pid: u64,
        name: &str,
        metadata: &[u8],
    ) -> Result<(), RegistryError> {
        self.advance(now);
        let info = ProcessInfo::new(name, Bytes::copy_from_slice(metadata))
            .map_err(RegistryError::Entry)?;
        let (me, now) = (self.identity.node_id(), self.now);
        let map = &mut self.registries.processes;
        let before = map.version(&me).unwrap_or(Version::ZERO);
        map.insert(now, pid, info).map_err(RegistryError::Write)?;
        self.push_local(FrameType::ProcessGossip, before);
        Ok(())
    }

    /// Remove process `pid` of this node from the process table.
    pub fn unregister_process(&mut self, now: Instant, pid: u64) -> Result<(), RegistryError> {
        self.advance(now);
        let (me, now) = (self.identity.node_id(), self.now);
        let map = &mut self.registries.processes;
        let before = map.version(&me).unwrap_or(Version::ZERO);
        map.remove(now, &pid).map_err(RegistryError::Write)?;
        self.push_local(FrameType::ProcessGossip, before);
        Ok(())
    }

    /// The service registry as this node holds it (every member's services).
    pub fn services(&self) -> &ServiceRegistry {
        &self.registries.services
    }

    /// The distributed process table as this node holds it.
    pub fn processes(&self) -> &ProcessTable {
        &self.registries.processes
    }

    /// Push our origin's changes after `before` to every peer.
    fn push_local(&mut self, frame: FrameType, before: Version) {
        let me = self.identity.node_id();
        let message = match frame {
            FrameType::ServiceGossip => local_delta(&self.registries.services, &me, before),
            _ => local_delta(&self.registries.processes, &me, before),
        };
        if let Some(message) = message {
            self.send_to_peers(frame, &message, None);
        }
    }

    /// `bytes` in a `frame` to every peer but `except`.
    fn send_to_peers(&mut self, frame: FrameType, bytes: &Bytes, except: Option<ConnId>) {
        let conns: Vec<ConnId> = self
            .peers
            .values()
            .copied()
            .filter(|c| Some(*c) != except)
            .collect();
        for conn in conns {
            self.send_frame(conn, frame, bytes.clone());
        }
    }

    /// A gossip frame (0x08 or 0x09) from the peer on `conn`.
    pub(super) fn on_gossip(&mut self, conn: ConnId, frame: FrameType, payload: Bytes) {
        let now = self.now;
        let (replies, forward, events) = match frame {
            FrameType::ServiceGossip => {
                let (replies, forward, changes) =
                    handle_gossip(&mut self.registries.services, now, &payload);
                let events = changes.into_iter().map(|(origin, name, up)| {
                    service_event(origin, String::from(name.as_str()), up)
                });
                (replies, forward, events.collect())
            }
            _ => {
                let (replies, forward, _) =
                    handle_gossip(&mut self.registries.processes, now, &payload);
                (replies, forward, Vec::new())
            }
        };
        let Some(replies) = replies else {
            self.stats.malformed_gossip += 1;
            return;
        };
        for reply in replies {
            self.send_frame(conn, frame, reply);
        }
        if forward {
            self.send_to_peers(frame, &payload, Some(conn));
        }
        self.events.extend(events);
    }

    /// Summarise both registries to the peer on `conn` (after it came up, and for
    /// anti-entropy).
    pub(super) fn send_sync_digest(&mut self, conn: ConnId) {
        let mut digest = SyncDigest {
            services: Some(self.registries.services.summary()),
            processes: Some(self.registries.processes.summary()),
            ..SyncDigest::default()
        };
        if let Some(peer) = self.links.get(conn).and_then(|e| e.peer) {
            self.sync_sections(&mut digest, &peer);
        }
        self.send_frame(conn, FrameType::SyncDigest, digest.encode());
    }

    /// A SyncDigest (0x0A) from the peer on `conn`: answer what differs.
    pub(super) fn on_sync_digest(&mut self, conn: ConnId, payload: &[u8]) {
        let Some(digest) = SyncDigest::decode(payload) else {
            self.stats.malformed_gossip += 1;
            return;
        };
        self.on_sync_state(conn, digest.chain, digest.tree);
        let r = &mut self.registries;
        let services = digest
            .services
            .map(|s| r.services.answer_summary(&s, GOSSIP_BUDGET))
            .unwrap_or_default();
        let processes = digest
            .processes
            .map(|s| r.processes.answer_summary(&s, GOSSIP_BUDGET))
            .unwrap_or_default();
        for g in services {
            self.send_frame(conn, FrameType::ServiceGossip, g.encode());
        }
        for g in processes {
            self.send_frame(conn, FrameType::ProcessGossip, g.encode());
        }
    }

    /// Anti-entropy with one random peer, and tombstone collection.
    pub(super) fn registry_anti_entropy(&mut self) {
        let now = self.now;
        self.registries.services.gc(now);
        self.registries.processes.gc(now);
        if self.peers.is_empty() {
            return;
        }
        let pick = (self.rng.next_u64() % self.peers.len() as u64) as usize;
        if let Some(&conn) = self.peers.values().nth(pick) {
            self.send_sync_digest(conn);
        }
    }

    /// A member is gone (down or left): drop its entries.
    pub(super) fn registry_member_gone(&mut self, node: &NodeId) {
        let r = &mut self.registries;
        if let Some(v) = r.processes.version(node) {
            r.processes.remove_origin(node, v.epoch);
        }
        let Some(v) = r.services.version(node) else {
            return;
        };
        let changes = r.services.remove_origin(node, v.epoch);
        for c in changes {
            if c.kind == ChangeKind::Removed {
                let event = service_event(c.origin, String::from(c.key.as_str()), false);
                self.events.push_back(event);
            }
        }
    }
}

fn service_event(node: NodeId, name: String, up: bool) -> NodeEvent {
    if up {
        NodeEvent::ServiceUp { node, name }
    } else {
        NodeEvent::ServiceDown { node, name }
    }
}

/// Our origin's changes after `before`, as an encoded Deltas message.
fn local_delta<K: Codec + Ord + Clone, V: Codec + Clone + PartialEq>(
    map: &OriginMap<K, V>,
    me: &NodeId,
    before: Version,
) -> Option<Bytes> {
    let delta = map.delta_since(me, before, GOSSIP_BUDGET)?;
    Some(Gossip::Deltas(alloc::vec![delta]).encode())
}

/// Handle one gossip message: the encoded replies (`None` if malformed), whether it
/// taught us anything (then it is forwarded to the other peers), and the visible
/// changes as (origin, key, up).
#[allow(clippy::type_complexity)]
fn handle_gossip<K: Codec + Ord + Clone, V: Codec + Clone + PartialEq>(
    map: &mut OriginMap<K, V>,
    now: Instant,
    payload: &[u8],
) -> (Option<Vec<Bytes>>, bool, Vec<(NodeId, K, bool)>) {
    let Some(message) = Gossip::<K, V>::decode(payload) else {
        return (None, false, Vec::new());
    };
    // Deltas that advance another origin's version are news, visible or not (a claim
    // about our own origin is never passed on).
    let me = map.me();
    let origins: BTreeMap<NodeId, Option<Version>> = match &message {
        Gossip::Deltas(deltas) => deltas
            .iter()
            .filter(|d| d.origin != me)
            .map(|d| (d.origin, map.version(&d.origin)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let handled = map.handle(now, message, GOSSIP_BUDGET);
    let news = origins.iter().any(|(o, v)| map.version(o) > *v);
    let changes = handled
        .changes
        .into_iter()
        .map(|c| (c.origin, c.key, c.kind != ChangeKind::Removed))
        .collect();
    let replies = handled.replies.iter().map(Gossip::encode).collect();
    (Some(replies), news, changes)
}
