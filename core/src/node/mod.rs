//! The node: all links of this process (at most one per peer), seeds, discovery and
//! routes, and cross-node IPC: envelopes sent directly or relayed, answered,
//! retransmitted and deduplicated. The one object a driver steps (DESIGN.md §2).
//!
//! Inputs: [`Node::accept`], [`Node::handle_bytes`], [`Node::handle_closed`],
//! [`Node::handle_timeout`] and the application's [`Node::send`], [`Node::request`],
//! [`Node::respond`], [`Node::add_seed`], [`Node::close`], [`Node::shutdown`]. Outputs, drained after every input:
//! [`Node::poll_action`] (dial, transmit, close a socket), [`Node::poll_transmit`]
//! (pull one record for a socket that can take bytes), [`Node::poll_event`] and
//! [`Node::poll_timeout`] (one deadline for the whole node; an idle poll is O(1)).
//!
//! ```
//! use weft_mesh::node::{Action, Node, NodeConfig, NodeEvent};
//! use weft_mesh::{Identity, Instant, Rng};
//!
//! let mut rng = Rng::from_seed([1; 32]);
//! let config = NodeConfig::new([7; 32]);
//! let mut a = Node::new(Identity::generate(&mut rng).into(), config.clone(), rng.fork());
//! let mut b = Node::new(Identity::generate(&mut rng).into(), config, rng.fork());
//! let now = Instant::ZERO;
//! a.add_seed(now, "tcp://b.example:7000");
//! a.handle_timeout(now);
//! let Some(Action::Dial { conn: ca, .. }) = a.poll_action() else { panic!() };
//! let cb = b.accept(now, None).unwrap(); // the driver accepted the socket
//! let mut buf = vec![0; weft_mesh::link::MAX_TRANSMIT];
//! for _ in 0..4 {
//!     while let Some(n) = a.poll_transmit(now, ca, &mut buf) { b.handle_bytes(now, cb, &buf[..n]); }
//!     while let Some(n) = b.poll_transmit(now, cb, &mut buf) { a.handle_bytes(now, ca, &buf[..n]); }
//! }
//! assert!(std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, NodeEvent::PeerUp { hybrid: true, .. })));
//! ```

mod discovery;
mod ipc;
mod links;
mod membership;
mod outbox;
mod receipts;
mod registry;
mod resolve;
mod seeds;
mod sync;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::Bytes;

pub use ipc::RequestToken;
pub use links::{ConnId, Direction};
pub use outbox::MessageId;
pub use registry::RegistryError;
pub use sync::{
    BoxedChain, BoxedTree, ChainWriteError, SyncConfig, SyncEvent, TreeWrite, TreeWriteError,
};

use crate::dedup::{DedupConfig, DedupFilter};
use crate::frame::{FrameType, Payload};
use crate::handshake::Remote;
use crate::link::{Link, LinkConfig, LinkEvent};
use crate::membership::{MemberEvent, Swim, SwimConfig};
use crate::mesh::discovery::Directory;
use crate::mesh::routes::Routes;
use crate::mesh::{Route, Target};
use crate::registry::{ProcessTable, RegistryConfig, ServiceRegistry};
use crate::resolve::{QueryId, ResolveError, Resolver, ResolverConfig};
use crate::{CloseReason, Identity, Instant, NodeId, Rng};
use discovery::Schedule;
use links::Links;
use outbox::Outbox;
use seeds::{Backoff, SeedState, Seeds};

/// How long a shutting-down node waits for its leave to be pulled before closing.
const LEAVE_GRACE: Duration = Duration::from_millis(200);

/// Settings of a node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeConfig {
    /// Settings of every link.
    pub link: LinkConfig,
    /// Most connections at once (inbound and outbound); more are refused.
    pub max_links: usize,
    /// Most connections still handshaking at once; more are refused.
    pub max_handshakes: usize,
    /// A sent message not acknowledged in this time fails.
    pub message_timeout: Duration,
    /// First retransmission delay of a relayed envelope (doubles, up to 8×).
    pub retry_interval: Duration,
    /// On a link whose application answers quickly, how long a receipt may wait for
    /// the next record (the answer) to leave in; see `receipts.rs`. Zero: receipts
    /// leave at the end of each read.
    pub receipt_delay: Duration,
    /// Most unanswered messages and requests; more are refused with `Full`.
    pub max_pending: usize,
    /// First redial delay of a seed (doubles per failure, with jitter).
    pub redial_min: Duration,
    /// Largest redial delay.
    pub redial_max: Duration,
    /// Duplicate suppression of envelopes (60 s, 10 000 entries), one filter for
    /// envelopes delivered here and one for envelopes relayed.
    pub dedup: DedupConfig,
    /// Most destinations in the routing table.
    pub max_routes: usize,
    /// Every route is re-advertised to every neighbour this often.
    pub route_refresh: Duration,
    /// Peer exchange, directory expiry, link count and idle checks run this often.
    pub exchange_interval: Duration,
    /// Links the node tries to keep, dialing members it learned of.
    pub target_peers: usize,
    /// Links (other than seeds) that carried no envelope for this long are closed
    /// while more than `target_peers` exist.
    pub idle_close: Option<Duration>,
    /// Most members in the address directory.
    pub max_members: usize,
    /// A member not heard of for this long is forgotten.
    pub member_ttl: Duration,
    /// Where this node can be dialed (told to peers when joining and in peer exchange).
    pub advertise: Vec<String>,
    /// Nodes refused at the handshake and at join.
    pub banned: Vec<NodeId>,
    /// SWIM failure detection with Lifeguard over the mesh (LAN preset); `None` turns
    /// membership off (no member events, no heartbeat traffic of its own). Every node of
    /// a cluster should agree: a node with it off never answers probes, so members
    /// with it on declare that node down and drop its registry entries.
    pub membership: Option<SwimConfig>,
    /// Bounds of the service registry and the process table (each).
    pub registry: RegistryConfig,
    /// Service resolution: caches, query timeout, circuit breakers.
    pub resolver: ResolverConfig,
    /// This run of the node, for its registry entries: it must grow across restarts
    /// (drivers pass the start time in milliseconds since the Unix epoch), so that a
    /// restarted node's entries replace those of its previous run everywhere.
    pub epoch: u64,
    /// Chain and tree sync, once the application plugs in a store
    /// ([`Node::set_chain_store`], [`Node::set_tree_store`]).
    pub sync: SyncConfig,
}

impl NodeConfig {
    /// Defaults for the cluster with this genesis hash.
    pub fn new(genesis: [u8; 32]) -> Self {
        NodeConfig {
            link: LinkConfig::new(genesis),
            max_links: 1024,
            max_handshakes: 128,
            message_timeout: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            receipt_delay: Duration::from_millis(1),
            max_pending: 10_000,
            redial_min: Duration::from_millis(200),
            redial_max: Duration::from_secs(30),
            dedup: DedupConfig::default(),
            max_routes: 4096,
            route_refresh: Duration::from_secs(5),
            exchange_interval: Duration::from_secs(5),
            target_peers: 8,
            idle_close: Some(Duration::from_secs(300)),
            max_members: 4096,
            member_ttl: Duration::from_secs(600),
            advertise: Vec::new(),
            banned: Vec::new(),
            membership: Some(SwimConfig::lan()),
            registry: RegistryConfig::default(),
            resolver: ResolverConfig::default(),
            epoch: 0,
            sync: SyncConfig::default(),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            min: self.redial_min,
            max: self.redial_max,
        }
    }
}

/// Something the driver must do.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Action {
    /// Open a connection to `addr` and report it with `handle_bytes`/`handle_closed`
    /// under `conn` (a failed dial is `handle_closed`).
    Dial {
        /// The connection's id.
        conn: ConnId,
        /// Where to connect (`tcp://host:port` or `ws://host:port/path`).
        addr: String,
    },
    /// `conn` has bytes to send: call `poll_transmit` when its socket can take them.
    Transmit {
        /// The connection.
        conn: ConnId,
    },
    /// Close `conn`'s socket once the bytes already pulled are written.
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// Why a message was not delivered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SendFailure {
    /// No link or route to the destination, and no way to dial it.
    NoRoute,
    /// The destination is more than [`crate::mesh::MAX_HOPS`] links away.
    HopLimit,
    /// No answer within the timeout.
    Timeout,
    /// The destination's link closed (with this reason) and it could not be reached
    /// another way before the timeout.
    PeerClosed(CloseReason),
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendFailure::NoRoute => f.write_str("no route"),
            SendFailure::HopLimit => f.write_str("hop limit"),
            SendFailure::Timeout => f.write_str("no answer in time"),
            SendFailure::PeerClosed(r) => write!(f, "peer closed: {r}"),
        }
    }
}

/// What happened at the node. Drain with [`Node::poll_event`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A peer is connected and authenticated. On a link we dialed with Noise XX the
    /// peer judges our hello only after this (one half round trip later): if it
    /// refuses, a `PeerDown` with the handshake reason follows.
    PeerUp {
        /// The peer.
        node: NodeId,
        /// The link that carries it.
        conn: ConnId,
        /// The socket address, if the driver gave one.
        addr: Option<String>,
        /// Whether the session is hybrid post-quantum.
        hybrid: bool,
        /// Who dialed.
        direction: Direction,
    },
    /// A peer's link closed (and no other link to it remains).
    PeerDown {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: CloseReason,
        /// Whether the peer closed it.
        by_peer: bool,
    },
    /// A connection closed before its handshake completed (rejected, failed, timed out).
    Rejected {
        /// The connection.
        conn: ConnId,
        /// Its address, if known.
        addr: Option<String>,
        /// Why.
        reason: CloseReason,
        /// Whether the peer closed it.
        by_peer: bool,
    },
    /// A message arrived (a receipt went back). Each message is reported once.
    Message {
        /// The sender.
        from: NodeId,
        /// Whom it is for in this node.
        target: Target,
        /// The data.
        payload: Bytes,
        /// Links it crossed (1: it came over the sender's own link).
        hops: u8,
    },
    /// A request arrived: answer with [`Node::respond`].
    Request {
        /// The requester.
        from: NodeId,
        /// Whom it is for in this node.
        target: Target,
        /// The data.
        payload: Bytes,
        /// Links it crossed.
        hops: u8,
        /// Pass it to [`Node::respond`].
        request: RequestToken,
    },
    /// The answer to a [`Node::request`].
    Response {
        /// The request.
        id: MessageId,
        /// Who answered.
        from: NodeId,
        /// The data.
        payload: Bytes,
    },
    /// The destination confirmed a message.
    Delivered {
        /// The recipient.
        to: NodeId,
        /// The message.
        id: MessageId,
    },
    /// What the failure detector learned about a member (with membership on).
    Member(MemberEvent),
    /// A member began to provide a service (or changed its metadata).
    ServiceUp {
        /// The provider.
        node: NodeId,
        /// The service.
        name: String,
    },
    /// A member stopped providing a service (withdrawn, or the member is gone).
    ServiceDown {
        /// The former provider.
        node: NodeId,
        /// The service.
        name: String,
    },
    /// The outcome of a [`Node::resolve`] that asked the cluster.
    Resolved {
        /// The query [`Resolution::Ask`](crate::resolve::Resolution::Ask) named.
        query: QueryId,
        /// A provider, or why none.
        result: Result<NodeId, ResolveError>,
    },
    /// Chain or tree sync did something (with a store plugged in).
    Sync(SyncEvent),
    /// A message or request failed (no answer will come).
    SendFailed {
        /// The recipient.
        to: NodeId,
        /// The message.
        id: MessageId,
        /// Why.
        reason: SendFailure,
    },
}

/// Why [`Node::send`] refused a message; nothing was queued.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum NodeSendError {
    /// The link's send queue, or the node's table of unanswered messages, is full.
    Full,
    /// The message is larger than a frame allows.
    TooLarge,
    /// A service name must be 1 to 255 bytes.
    InvalidTarget,
}

impl fmt::Display for NodeSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeSendError::Full => "send queue full",
            NodeSendError::TooLarge => "message too large",
            NodeSendError::InvalidTarget => "service name must be 1 to 255 bytes",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for NodeSendError {}

/// Why [`Node::accept`] refused a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum AcceptError {
    /// `max_links` connections exist.
    TooManyLinks,
    /// `max_handshakes` handshakes are in flight.
    TooManyHandshakes,
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcceptError::TooManyLinks => "too many connections",
            AcceptError::TooManyHandshakes => "too many handshakes in flight",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AcceptError {}

/// A connected peer, as listed by [`Node::peers`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerSummary {
    /// The peer.
    pub node: NodeId,
    /// Its link.
    pub conn: ConnId,
    /// The socket address, if known.
    pub addr: Option<String>,
    /// Whether the session is hybrid.
    pub hybrid: bool,
    /// Who dialed.
    pub direction: Direction,
    /// The link's smoothed round-trip time, once measured.
    pub rtt: Option<core::time::Duration>,
    /// Whether routes avoid the link (stalled or slow).
    pub degraded: bool,
}

/// Counters of the mesh layer, for metrics.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct NodeStats {
    /// Messages and requests delivered to this node's application.
    pub delivered: u64,
    /// Envelopes forwarded for other nodes.
    pub relayed: u64,
    /// Copies dropped as duplicates.
    pub duplicates: u64,
    /// Envelopes dropped because their source was not authentic.
    pub forged: u64,
    /// Envelopes dropped by this relay at the hop limit.
    pub hop_limit: u64,
    /// Envelopes this relay had no route for.
    pub no_route: u64,
    /// Answers (receipts, responses, failures) with no way back to their destination.
    pub unroutable: u64,
    /// Envelopes dropped because a link's send queue was full.
    pub dropped_full: u64,
    /// Registry gossip, sync digests, chain and tree sync and resolve messages that did
    /// not decode (dropped).
    pub malformed_gossip: u64,
    /// Times a link went silent for `LinkConfig::stall_after` (routes then go around
    /// it until it speaks again).
    pub stalls: u64,
    /// Times a link's round trips grew beyond `LinkConfig::slow_rtt` (routes then go
    /// around it until they are fast again).
    pub slow_links: u64,
}

/// The node state machine. See the [module docs](self).
pub struct Node {
    identity: Arc<Identity>,
    config: NodeConfig,
    rng: Rng,
    links: Links,
    handshakes: usize,
    peers: BTreeMap<NodeId, ConnId>,
    seeds: Seeds,
    outbox: Outbox,
    held: receipts::HeldReceipts,
    dedup: DedupFilter,
    relay_dedup: DedupFilter,
    recent: ipc::RecentRequests,
    dial_backoff: discovery::DialBackoff,
    routes: Routes,
    directory: Directory,
    swim: Option<Swim>,
    registries: registry::Registries,
    replication: sync::Replication,
    resolver: Resolver,
    schedule: Option<Schedule>,
    stats: NodeStats,
    next_message: u64,
    actions: VecDeque<Action>,
    events: VecDeque<NodeEvent>,
    now: Instant,
    shutting_down: bool,
    /// At shutdown: every link is closed by then, drained or not.
    closing_by: Option<Instant>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.identity.node_id())
            .field("links", &self.links.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with this identity; `rng` seeds every random choice it makes.
    pub fn new(identity: Arc<Identity>, config: NodeConfig, mut rng: Rng) -> Self {
        let me = identity.node_id();
        Node {
            dedup: DedupFilter::new(config.dedup, &mut rng),
            relay_dedup: DedupFilter::new(config.dedup, &mut rng),
            recent: ipc::RecentRequests::default(),
            dial_backoff: discovery::DialBackoff::default(),
            routes: Routes::new(me, config.max_routes),
            directory: Directory::new(me, config.max_members, config.member_ttl),
            swim: config
                .membership
                .clone()
                .map(|c| Swim::new(me, config.advertise.clone(), c, rng.fork())),
            registries: registry::Registries {
                services: ServiceRegistry::new(me, config.epoch, config.registry.clone()),
                processes: ProcessTable::new(me, config.epoch, config.registry.clone()),
            },
            replication: sync::Replication::default(),
            resolver: Resolver::new(config.resolver.clone(), &mut rng),
            schedule: None,
            stats: NodeStats::default(),
            identity,
            config,
            rng,
            links: Links::default(),
            handshakes: 0,
            peers: BTreeMap::new(),
            seeds: Seeds::default(),
            outbox: Outbox::default(),
            held: Default::default(),
            next_message: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            now: Instant::ZERO,
            shutting_down: false,
            closing_by: None,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Keep a connection to `addr`, redialing with backoff whenever it drops (unless
    /// the node found there is connected some other way).
    pub fn add_seed(&mut self, now: Instant, addr: impl Into<String>) {
        self.advance(now);
        let backoff = self.config.backoff();
        self.seeds.add(addr.into(), now, backoff);
    }

    /// The driver accepted a socket: start the responder side of a handshake on it.
    pub fn accept(&mut self, now: Instant, addr: Option<String>) -> Result<ConnId, AcceptError> {
        self.advance(now);
        self.check_capacity()?;
        let link = Link::accept(
            self.config.link.clone(),
            self.identity.clone(),
            self.rng.fork(),
            now,
        );
        self.handshakes += 1;
        Ok(self.links.insert(link, Direction::Inbound, addr, None))
    }

    fn check_capacity(&self) -> Result<(), AcceptError> {
        if self.links.len() >= self.config.max_links {
            return Err(AcceptError::TooManyLinks);
        }
        if self.handshakes >= self.config.max_handshakes {
            return Err(AcceptError::TooManyHandshakes);
        }
        Ok(())
    }

    /// Bytes read from `conn`'s socket. Unknown or stale ids are ignored.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.advance(now);
        if let Some(e) = self.links.get_mut(conn) {
            e.link.handle_bytes(now, bytes);
            self.service(conn);
            self.end_of_read(conn);
        }
    }

    /// `conn`'s socket closed or failed (or its dial failed).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.advance(now);
        if let Some(e) = self.links.get_mut(conn) {
            e.link.handle_connection_lost(now);
            self.service(conn);
        }
    }

    /// Close one connection with `reason` (the peer is told).
    pub fn close(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        self.advance(now);
        if let Some(e) = self.links.get_mut(conn) {
            e.link.close(now, reason);
            self.service(conn);
        }
    }

    /// Close every link with `Normal` and stop redialing. The driver keeps stepping
    /// until [`Node::is_idle`], then stops.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        if self.shutting_down {
            return;
        }
        self.leave_membership();
        self.shutting_down = true;
        // A link with something queued (the leave) closes once that is pulled
        // (`poll_transmit`), or at the latest after LEAVE_GRACE; the others at once
        // (closing a link drops what it has queued).
        self.closing_by = Some(now + LEAVE_GRACE);
        let ids: Vec<ConnId> = self.links.ids().collect();
        for conn in ids {
            if !self
                .links
                .get(conn)
                .is_some_and(|e| e.link.wants_transmit())
            {
                self.close(now, conn, CloseReason::Normal);
            }
        }
    }

    /// At shutdown, close `conn` once what it had queued is pulled.
    fn close_when_drained(&mut self, conn: ConnId) {
        if self.shutting_down
            && self
                .links
                .get(conn)
                .is_some_and(|e| !e.link.wants_transmit())
        {
            self.close(self.now, conn, CloseReason::Normal);
        }
    }

    /// True when no connection remains (after [`Node::shutdown`], time to stop).
    pub fn is_idle(&self) -> bool {
        self.links.len() == 0
    }

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        while let Some(conn) = self.links.pop_due(now) {
            if let Some(e) = self.links.get_mut(conn) {
                e.link.handle_timeout(now);
                self.service(conn);
            }
        }
        if self.closing_by.is_some_and(|t| now >= t) {
            self.closing_by = None;
            let ids: Vec<ConnId> = self.links.ids().collect();
            for conn in ids {
                self.close(now, conn, CloseReason::Normal);
            }
        }
        self.release_due_receipts();
        self.membership_timers();
        self.resolve_timers();
        self.sync_timers();
        self.outbox_timers();
        self.discovery_timers();
        self.dial_due_seeds(now);
    }

    fn dial_due_seeds(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        let mut due = Vec::new();
        let peers = &self.peers;
        for (i, seed) in self.seeds.iter_mut() {
            let elsewhere = seed.node.as_ref().is_some_and(|n| peers.contains_key(n));
            if matches!(seed.state, SeedState::Idle { next } if next <= now) && !elsewhere {
                due.push((i, seed.addr.clone()));
            }
        }
        for (i, addr) in due {
            if self.check_capacity().is_err() {
                return;
            }
            let remote = Remote::Any;
            let link = Link::connect(
                self.config.link.clone(),
                self.identity.clone(),
                remote,
                self.rng.fork(),
                now,
            );
            self.handshakes += 1;
            let conn = self
                .links
                .insert(link, Direction::Outbound, Some(addr.clone()), Some(i));
            if let Some(seed) = self.seeds.get_mut(i) {
                seed.state = SeedState::Connected(conn);
            }
            self.actions.push_back(Action::Dial { conn, addr });
            self.service(conn);
        }
    }

    /// The connected peers.
    pub fn peers(&self) -> impl Iterator<Item = PeerSummary> + '_ {
        self.peers.iter().filter_map(|(node, conn)| {
            let e = self.links.get(*conn)?;
            Some(PeerSummary {
                node: *node,
                conn: *conn,
                addr: e.addr.clone(),
                hybrid: e.link.is_hybrid(),
                direction: e.direction,
                rtt: e.link.rtt(),
                degraded: e.link.is_degraded(),
            })
        })
    }

    /// The routing table: every node reachable through a neighbour, and how.
    pub fn routes(&self) -> impl Iterator<Item = (NodeId, Route)> + '_ {
        self.routes.iter()
    }

    /// The mesh layer's counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// Write `conn`'s next transmission into `buf` (see [`Link::poll_transmit`]).
    pub fn poll_transmit(&mut self, now: Instant, conn: ConnId, buf: &mut [u8]) -> Option<usize> {
        self.advance(now);
        // Held receipts ride along with whatever else leaves (and only then).
        if self
            .links
            .get(conn)
            .is_some_and(|e| e.link.wants_transmit())
        {
            self.move_held(conn);
        }
        let entry = self.links.get_mut(conn)?;
        let n = entry.link.poll_transmit(now, buf);
        if n.is_none() {
            entry.transmit_pending = false;
        }
        self.service(conn);
        if n.is_none() {
            self.close_when_drained(conn);
        }
        n
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline of the node, never before the latest `now`.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let held = self.next_held_deadline();
        let peers = &self.peers;
        [
            self.links.next_deadline(),
            self.outbox.next_deadline(),
            held,
            self.closing_by.filter(|_| self.links.len() > 0),
            self.swim.as_ref().and_then(Swim::poll_timeout),
            self.resolver.poll_timeout(),
            self.replication.poll_timeout(),
            self.discovery_deadline(),
            // At capacity a due seed cannot be dialed: it waits until a link or a
            // handshake slot frees up (every such change comes with an input, after
            // which the driver asks again), instead of a deadline stuck at `now`.
            if self.shutting_down || self.check_capacity().is_err() {
                None
            } else {
                self.seeds.next_deadline(|n| peers.contains_key(n))
            },
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.max(self.now))
    }

    fn advance(&mut self, now: Instant) {
        if self.schedule.is_none() {
            // Periodic work counts from the first input, not from `Instant::ZERO`.
            self.schedule = Some(Schedule::starting(now, &self.config));
        }
        self.now = self.now.max(now);
    }

    /// After any input to a link: route its events, request transmits, retire it when
    /// drained, and re-arm its timer.
    fn service(&mut self, conn: ConnId) {
        while let Some(event) = self.links.get_mut(conn).and_then(|e| e.link.poll_event()) {
            match event {
                LinkEvent::Established(peer) => {
                    self.on_established(conn, peer.identity.node_id, peer.hybrid)
                }
                LinkEvent::Frame {
                    frame_type: FrameType::Message,
                    payload,
                } => self.on_message(conn, payload),
                LinkEvent::Frame {
                    frame_type: FrameType::Discovery,
                    payload,
                } => self.on_discovery(conn, &payload),
                LinkEvent::Frame {
                    frame_type: FrameType::Heartbeat,
                    payload,
                } => self.on_heartbeat(conn, &payload),
                LinkEvent::Frame {
                    frame_type: frame @ (FrameType::ServiceGossip | FrameType::ProcessGossip),
                    payload,
                } => self.on_gossip(conn, frame, payload),
                LinkEvent::Frame {
                    frame_type: FrameType::SyncDigest,
                    payload,
                } => self.on_sync_digest(conn, &payload),
                LinkEvent::Frame {
                    frame_type: FrameType::ServiceResolve,
                    payload,
                } => self.on_resolve(conn, &payload),
                LinkEvent::Frame {
                    frame_type: FrameType::ChainSync,
                    payload,
                } => self.on_chain_sync(conn, &payload),
                LinkEvent::Frame {
                    frame_type: FrameType::TreeSync,
                    payload,
                } => self.on_tree_sync(conn, &payload),
                LinkEvent::Stalled | LinkEvent::Slow | LinkEvent::Resumed => {
                    self.link_health(conn, &event)
                }
                LinkEvent::Frame { .. } | LinkEvent::SendReady => {}
                LinkEvent::Closed { reason, by_peer } => self.on_closed(conn, reason, by_peer),
            }
        }
        let Some(entry) = self.links.get_mut(conn) else {
            return;
        };
        if entry.link.is_drained() {
            self.retire(conn);
            return;
        }
        self.wake(conn);
    }

    /// Queue a control frame (not an envelope) on `conn` and have it sent.
    fn send_frame(&mut self, conn: ConnId, frame: FrameType, bytes: impl Into<Payload>) {
        if let Some(entry) = self.links.get_mut(conn) {
            if entry.link.send(frame, bytes).is_err() {
                self.stats.dropped_full += 1;
            }
            self.wake(conn);
        }
    }

    /// After queueing on a link from inside the node (which may be in the middle of
    /// `service` for another frame of the same link: its events are drained by that
    /// loop, in order): request a transmit and re-arm its timer.
    fn wake(&mut self, conn: ConnId) {
        let Some(entry) = self.links.get_mut(conn) else {
            return;
        };
        if !entry.transmit_pending && entry.link.wants_transmit() {
            entry.transmit_pending = true;
            self.actions.push_back(Action::Transmit { conn });
        }
        self.links.rearm(conn);
    }

    fn on_established(&mut self, conn: ConnId, node: NodeId, hybrid: bool) {
        self.handshakes = self.handshakes.saturating_sub(1);
        let me = self.identity.node_id();
        let Some(entry) = self.links.get_mut(conn) else {
            return;
        };
        entry.peer = Some(node);
        entry.last_used = self.now;
        if self.config.banned.contains(&node) {
            entry.link.close(self.now, CloseReason::Banned);
            return;
        }
        let (direction, addr, seed) = (entry.direction, entry.addr.clone(), entry.seed);
        if let Some(seed) = seed.and_then(|i| self.seeds.get_mut(i)) {
            seed.node = Some(node);
        }
        // Two links to one peer (simultaneous dials): both sides keep the link whose
        // initiator has the lower node id; with the same initiator, the older link.
        if let Some(&existing) = self.peers.get(&node) {
            let initiator = |d: Direction| if d == Direction::Outbound { me } else { node };
            let old_dir = self.links.get(existing).map_or(direction, |e| e.direction);
            let keep_new = initiator(direction) < initiator(old_dir);
            let loser = if keep_new { existing } else { conn };
            if keep_new {
                self.peers.insert(node, conn);
                if let Some(e) = self.links.get_mut(conn) {
                    e.up = true;
                }
                self.send_routes_to(node, conn);
                self.sync_peer_up(conn, node);
                self.send_sync_digest(conn);
            }
            if let Some(e) = self.links.get_mut(loser) {
                e.up = false;
                e.duplicate = true;
                e.link.close(self.now, CloseReason::DuplicateLink);
            }
            if loser != conn {
                self.service(loser);
            }
            return;
        }
        self.peers.insert(node, conn);
        if let Some(e) = self.links.get_mut(conn) {
            e.up = true;
        }
        self.events.push_back(NodeEvent::PeerUp {
            node,
            conn,
            addr,
            hybrid,
            direction,
        });
        self.discovery_peer_up(conn, node, direction);
        self.member_linked(node);
        self.sync_peer_up(conn, node);
        self.send_sync_digest(conn);
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, by_peer: bool) {
        let Some(entry) = self.links.get_mut(conn) else {
            return;
        };
        let (peer, up, duplicate, addr) =
            (entry.peer, entry.up, entry.duplicate, entry.addr.clone());
        entry.up = false;
        if peer.is_none() {
            self.handshakes = self.handshakes.saturating_sub(1);
        }
        match peer {
            Some(node) if up => {
                self.peers.remove(&node);
                self.discovery_peer_down(&node);
                self.sync_peer_down(&node);
                self.events.push_back(NodeEvent::PeerDown {
                    node,
                    reason,
                    by_peer,
                });
            }
            Some(_) => {}
            None if !duplicate => self.events.push_back(NodeEvent::Rejected {
                conn,
                addr,
                reason,
                by_peer,
            }),
            None => {}
        }
        self.resend_from(conn, peer, reason);
    }

    /// Drop a drained link and tell the driver to close its socket.
    fn retire(&mut self, conn: ConnId) {
        let Some(entry) = self.links.remove(conn) else {
            return;
        };
        self.actions.push_back(Action::Close { conn });
        if let Some(seed) = entry.seed.and_then(|i| self.seeds.get_mut(i)) {
            if matches!(seed.state, SeedState::Connected(c) if c == conn) {
                let backoff = self.config.backoff();
                seed.disconnected(self.now, entry.peer.is_some(), backoff, &mut self.rng);
            }
        }
    }
}

#[cfg(test)]
mod tests;
