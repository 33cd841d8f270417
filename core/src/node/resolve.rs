//! Service resolution at the node: the registry first (round robin among providers
//! whose circuit breaker is closed), then the resolver's cache, then the cluster: a
//! query (ServiceResolve, 0x07) to a few peers, answered from their registries or
//! caches; see [`crate::resolve`].

use alloc::vec::Vec;

use super::{ConnId, Node, NodeEvent, RegistryError};
use crate::frame::FrameType;
use crate::registry::ServiceName;
use crate::resolve::{Resolution, ResolveMessage, Strategy};
use crate::{Instant, NodeId};

/// Peers one query goes to at most.
const QUERY_FANOUT: usize = 3;

impl Node {
    /// Find a provider of service `name`, round robin among those whose breaker lets
    /// calls through. [`Resolution::Ask`] means the cluster is being asked: a
    /// [`NodeEvent::Resolved`] with the same query id follows.
    pub fn resolve(&mut self, now: Instant, name: &str) -> Result<Resolution, RegistryError> {
        self.resolve_with(now, name, Strategy::RoundRobin)
    }

    /// [`Node::resolve`] choosing among providers by `strategy`; for example
    /// `Strategy::Preferred(node)` keeps calling `node` while it provides the service
    /// and its breaker is closed.
    pub fn resolve_with(
        &mut self,
        now: Instant,
        name: &str,
        strategy: Strategy,
    ) -> Result<Resolution, RegistryError> {
        self.advance(now);
        let name = ServiceName::new(name).map_err(RegistryError::Entry)?;
        let providers: Vec<NodeId> = self.registries.services.providers(&name).collect();
        let resolution = self
            .resolver
            .resolve_with(self.now, &name, providers, strategy);
        self.send_queries();
        self.resolve_outcomes();
        Ok(resolution)
    }

    /// Tell the resolver how a call to a provider went (its circuit breaker).
    pub fn provider_result(&mut self, now: Instant, node: &NodeId, ok: bool) {
        self.advance(now);
        if ok {
            self.resolver.record_success(node);
        } else {
            self.resolver.record_failure(self.now, node);
        }
    }

    /// Send queued queries to up to [`QUERY_FANOUT`] random peers each.
    fn send_queries(&mut self) {
        while let Some(query) = self.resolver.poll_query() {
            let bytes = ResolveMessage::Query(query.clone()).encode();
            let mut peers: Vec<(NodeId, ConnId)> =
                self.peers.iter().map(|(n, c)| (*n, *c)).collect();
            let mut asked = Vec::new();
            while asked.len() < QUERY_FANOUT && !peers.is_empty() {
                let pick = (self.rng.next_u64() % peers.len() as u64) as usize;
                let (node, conn) = peers.swap_remove(pick);
                self.send_frame(conn, FrameType::ServiceResolve, bytes.clone());
                asked.push(node);
            }
            self.resolver.asked(query.id, asked);
        }
    }

    /// A ServiceResolve frame (0x07) from the peer on `conn`.
    pub(super) fn on_resolve(&mut self, conn: ConnId, payload: &[u8]) {
        let Some(from) = self.links.get(conn).and_then(|e| e.peer) else {
            return;
        };
        match ResolveMessage::decode(payload) {
            Some(ResolveMessage::Query(query)) => {
                let providers: Vec<NodeId> =
                    self.registries.services.providers(&query.name).collect();
                let answer = self.resolver.answer(self.now, &query, providers);
                self.send_frame(
                    conn,
                    FrameType::ServiceResolve,
                    ResolveMessage::Answer(answer).encode(),
                );
            }
            Some(ResolveMessage::Answer(answer)) => {
                self.resolver.handle_answer(self.now, from, &answer);
                self.resolve_outcomes();
            }
            None => self.stats.malformed_gossip += 1,
        }
    }

    /// The resolver's timers.
    pub(super) fn resolve_timers(&mut self) {
        self.resolver.handle_timeout(self.now);
        self.resolve_outcomes();
    }

    fn resolve_outcomes(&mut self) {
        while let Some((query, result)) = self.resolver.poll_outcome() {
            self.events.push_back(NodeEvent::Resolved { query, result });
        }
    }
}
