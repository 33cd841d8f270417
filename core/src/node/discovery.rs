//! The node's side of discovery (PROTOCOL.md §13): route advertisements, peer
//! exchange, join, keeping `target_peers` links, dialing on demand and closing idle
//! links.

use alloc::vec::Vec;
use core::time::Duration;

use super::links::Direction;
use super::{ConnId, Node};
use crate::frame::FrameType;
use crate::handshake::Remote;
use crate::link::{Link, LinkEvent};
use crate::mesh::discovery::{Discovery, Member};
use crate::{CloseReason, Instant, NodeId};

/// Triggered route advertisements leave at most this often.
const ADVERT_GAP: Duration = Duration::from_millis(20);
/// Members handed to a joiner or in one peer exchange.
const SAMPLE: usize = 16;
/// New discovery dials per tick, at most.
const DIALS_PER_TICK: usize = 2;

/// Periodic discovery work, scheduled by the node's single deadline.
pub(crate) struct Schedule {
    /// Send changed routes at this time.
    pub advert_at: Instant,
    /// Advertise every route to every neighbour again.
    pub refresh_at: Instant,
    /// Peer exchange, directory expiry, degree and idle checks.
    pub exchange_at: Instant,
}

impl Schedule {
    pub(super) fn starting(now: Instant, config: &super::NodeConfig) -> Self {
        Schedule {
            advert_at: now,
            refresh_at: now + config.route_refresh,
            exchange_at: now + config.exchange_interval,
        }
    }
}

impl Node {
    pub(super) fn is_banned(&self, node: &NodeId) -> bool {
        self.config.banned.contains(node)
    }

    /// Dial `node` at an address from the directory. False if none is known or the
    /// node is at capacity.
    /// Dials to one node back off like seeds (jittered doubling from `redial_min`).
    pub(super) fn dial_node(&mut self, node: NodeId) -> bool {
        if self.shutting_down || self.check_capacity().is_err() || self.is_banned(&node) {
            return false;
        }
        let Some(addr) = self.directory.addrs(&node).and_then(|a| a.first()).cloned() else {
            return false;
        };
        let now = self.now;
        if !self
            .dial_backoff
            .allow(now, node, &self.config, &mut self.rng)
        {
            return false;
        }
        let link = Link::connect(
            self.config.link.clone(),
            self.identity.clone(),
            Remote::Node(node),
            self.rng.fork(),
            now,
        );
        self.handshakes += 1;
        let conn = self
            .links
            .insert(link, Direction::Outbound, Some(addr.clone()), None);
        if let Some(e) = self.links.get_mut(conn) {
            e.wants = Some(node);
        }
        self.actions.push_back(super::Action::Dial { conn, addr });
        self.wake(conn);
        true
    }

    /// A link to `node` came up on `conn`.
    pub(super) fn discovery_peer_up(&mut self, conn: ConnId, node: NodeId, direction: Direction) {
        self.routes.neighbour_up(node);
        self.send_routes_to(node, conn);
        if direction == Direction::Outbound {
            let addrs = self.config.advertise.clone();
            self.send_discovery(conn, &Discovery::JoinRequest { addrs });
        }
        self.retry_unrouted();
    }

    pub(super) fn discovery_peer_down(&mut self, node: &NodeId) {
        self.routes.neighbour_down(node);
    }

    /// The link on `conn` stalled, turned slow or recovered: routes go around a
    /// degraded link, and what was sent over it goes again another way.
    pub(super) fn link_health(&mut self, conn: ConnId, event: &LinkEvent) {
        let Some(e) = self.links.get(conn).filter(|e| e.up) else {
            return;
        };
        let (Some(node), degraded) = (e.peer, e.link.is_degraded()) else {
            return;
        };
        match event {
            LinkEvent::Stalled => self.stats.stalls += 1,
            LinkEvent::Slow => self.stats.slow_links += 1,
            _ => {}
        }
        self.routes.set_degraded(node, degraded);
        if degraded {
            self.resend_around(conn);
        } else {
            self.retry_unrouted();
        }
    }

    fn send_discovery(&mut self, conn: ConnId, d: &Discovery) {
        if let Some(e) = self.links.get_mut(conn) {
            // A full queue drops it: routes are re-sent periodically, joins re-asked.
            let _ = e.link.send(FrameType::Discovery, d.encode());
            self.wake(conn);
        }
    }

    pub(super) fn send_routes_to(&mut self, node: NodeId, conn: ConnId) {
        let entries = self.routes.advert_for(&node);
        self.send_discovery(conn, &Discovery::Routes(entries));
    }

    fn advertise_routes(&mut self) {
        self.routes.dirty = false;
        let peers: Vec<(NodeId, ConnId)> = self.peers.iter().map(|(n, c)| (*n, *c)).collect();
        for (node, conn) in peers {
            self.send_routes_to(node, conn);
        }
    }

    /// A Discovery frame from the peer on `conn`.
    pub(super) fn on_discovery(&mut self, conn: ConnId, payload: &[u8]) {
        let now = self.now;
        let Some(from) = self.links.get(conn).and_then(|e| e.peer) else {
            return;
        };
        let Some(msg) = Discovery::decode(payload) else {
            if let Some(e) = self.links.get_mut(conn) {
                e.link.close(now, CloseReason::MalformedFrame);
            }
            return;
        };
        match msg {
            Discovery::Routes(entries) => {
                if self.routes.advertised(from, &entries) {
                    self.retry_unrouted();
                }
            }
            Discovery::Peers(members) => {
                for m in &members {
                    self.directory.learn(now, m);
                }
                self.keep_degree();
            }
            Discovery::JoinRequest { addrs } => {
                let admitted = !self.is_banned(&from);
                if admitted {
                    self.directory.learn(now, &Member { node: from, addrs });
                }
                let peers = if admitted {
                    let rng = &mut self.rng;
                    self.directory
                        .sample(SAMPLE, &from, |n| (rng.next_u64() % n as u64) as usize)
                } else {
                    Vec::new()
                };
                self.send_discovery(conn, &Discovery::JoinResponse { admitted, peers });
                if !admitted {
                    if let Some(e) = self.links.get_mut(conn) {
                        e.link.close(now, CloseReason::Banned);
                    }
                }
            }
            Discovery::JoinResponse { admitted, peers } => {
                if admitted {
                    for m in &peers {
                        self.directory.learn(now, m);
                    }
                    self.keep_degree();
                }
            }
        }
    }

    /// Dial directory members while fewer than `target_peers` links exist.
    fn keep_degree(&mut self) {
        let have = self.peers.len() + self.handshakes;
        let want = self
            .config
            .target_peers
            .saturating_sub(have)
            .min(DIALS_PER_TICK);
        if want == 0 || self.shutting_down {
            return;
        }
        let me = self.identity.node_id();
        let rng = &mut self.rng;
        let candidates = self
            .directory
            .sample(want * 4, &me, |n| (rng.next_u64() % n as u64) as usize);
        let mut dialed = 0;
        for m in candidates {
            if dialed == want {
                break;
            }
            let busy = self.peers.contains_key(&m.node)
                || self
                    .links
                    .ids()
                    .filter_map(|c| self.links.get(c))
                    .any(|e| e.wants == Some(m.node));
            if !busy && self.dial_node(m.node) {
                dialed += 1;
            }
        }
    }

    /// The earliest discovery deadline.
    pub(super) fn discovery_deadline(&self) -> Option<Instant> {
        let s = self.schedule.as_ref().filter(|_| !self.shutting_down)?;
        // Without neighbours there is nobody to tell (a new one gets the full table).
        let advert = (self.routes.dirty && !self.peers.is_empty()).then_some(s.advert_at);
        [advert, Some(s.refresh_at), Some(s.exchange_at)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Run the discovery work due at `now`.
    pub(super) fn discovery_timers(&mut self) {
        let now = self.now;
        let Some(s) = self.schedule.as_mut().filter(|_| !self.shutting_down) else {
            return;
        };
        let refresh = now >= s.refresh_at;
        if refresh {
            s.refresh_at = now + self.config.route_refresh;
        }
        let advert = refresh || (self.routes.dirty && now >= s.advert_at);
        if advert {
            s.advert_at = now + ADVERT_GAP;
        }
        let exchange = now >= s.exchange_at;
        if exchange {
            s.exchange_at = now + self.config.exchange_interval;
        }
        if advert {
            self.advertise_routes();
        }
        if exchange {
            self.exchange_peers();
            self.directory.expire(now);
            self.keep_degree();
            self.close_idle();
            self.registry_anti_entropy();
        }
    }

    /// Send one random neighbour a sample of members, ourselves included.
    fn exchange_peers(&mut self) {
        if self.peers.is_empty() {
            return;
        }
        let pick = (self.rng.next_u64() % self.peers.len() as u64) as usize;
        let Some((&to, &conn)) = self.peers.iter().nth(pick) else {
            return;
        };
        let rng = &mut self.rng;
        let mut members = self
            .directory
            .sample(SAMPLE, &to, |n| (rng.next_u64() % n as u64) as usize);
        if !self.config.advertise.is_empty() {
            members.push(Member {
                node: self.identity.node_id(),
                addrs: self.config.advertise.clone(),
            });
        }
        self.send_discovery(conn, &Discovery::Peers(members));
    }

    /// Close links this node dialed for discovery or on demand that carried no
    /// envelope for `idle_close`, while more than `target_peers` exist. Seed links and
    /// links peers dialed stay (a peer's seed link would only be redialed).
    fn close_idle(&mut self) {
        let Some(idle) = self.config.idle_close else {
            return;
        };
        let now = self.now;
        let mut excess = self.peers.len().saturating_sub(self.config.target_peers);
        let conns: Vec<ConnId> = self.peers.values().copied().collect();
        for conn in conns {
            if excess == 0 {
                break;
            }
            let Some(e) = self.links.get(conn) else {
                continue;
            };
            if e.wants.is_some() && now >= e.last_used + idle {
                excess -= 1;
                self.close(now, conn, CloseReason::Normal);
            }
        }
    }
}

/// When each node may be dialed again on demand or for discovery. Bounded: the oldest
/// entries go first (forgetting one only allows an earlier dial).
#[derive(Default)]
pub(crate) struct DialBackoff {
    next: alloc::collections::BTreeMap<NodeId, (Instant, Duration)>,
}

/// Nodes whose dial backoff is remembered, at most.
const MAX_BACKOFFS: usize = 1024;

impl DialBackoff {
    /// Whether `node` may be dialed at `now`; if so, the next dial waits longer.
    fn allow(
        &mut self,
        now: Instant,
        node: NodeId,
        config: &super::NodeConfig,
        rng: &mut crate::Rng,
    ) -> bool {
        let (min, max) = (config.redial_min, config.redial_max);
        let backoff = match self.next.get(&node) {
            Some(&(at, _)) if now < at => return false,
            // Quiet for a whole maximum backoff since it was allowed: start over.
            Some(&(at, b)) if now < at + max => (b * 2).min(max),
            _ => min,
        };
        if self.next.len() >= MAX_BACKOFFS && !self.next.contains_key(&node) {
            let oldest = self
                .next
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(n, _)| *n);
            if let Some(n) = oldest {
                self.next.remove(&n);
            }
        }
        let half = backoff.as_micros() as u64 / 2;
        let jitter = if half > 0 { rng.next_u64() % half } else { 0 };
        let wait = Duration::from_micros(half + jitter);
        self.next.insert(node, (now + wait, backoff));
        true
    }
}
