//! A deterministic simulator of many [`Node`]s on a virtual network (DESIGN.md §6).
//!
//! One [`Sim`] owns every node and the network between them and steps them with an
//! earliest-event scheduler in virtual time: node timers come from
//! [`Node::poll_timeout`], bytes travel through simulated connections (in order, in
//! random pieces, with latency, jitter, bandwidth and a bounded socket send buffer
//! that `poll_transmit` is only called into when it has room), and faults are
//! injected on request or at random. Nothing reads a clock; every random choice comes
//! from the run's seed, so a seed reproduces a run exactly. Every node event, fault and
//! API call goes into a trace whose SHA-256 ([`Sim::trace_hash`]) tests compare.
//!
//! Nodes are addressed as `sim://<index>`; [`Sim::seed`] makes one node keep a
//! connection to another.
//!
//! The model, and where it is simpler than TCP:
//!
//! * A dial reaches the target after one latency (plus jitter), which `accept`s it;
//!   the dialer may send one more latency later. A dial to a crashed node or one that
//!   refuses fails after a round trip; one into a partition after `dial_timeout`; one
//!   to a paused node is accepted when it resumes.
//! * Each direction has a send buffer of `socket_buffer` bytes that drains at
//!   `bandwidth`; a node's `poll_transmit` is called only with a buffer that fits the
//!   free space. The receive side is unbounded (no TCP receive window).
//! * Closing (`Action::Close`) sends a FIN behind the data; bytes that reach a socket
//!   its node already let go of make the sender see a reset.
//! * Faults: [`Sim::reset_connections_of`] and random resets ([`FaultConfig`]);
//!   [`Sim::stall`]; [`Sim::partition`] / [`Sim::heal`]; [`Sim::crash`] (bytes in flight
//!   from the node are lost; reachable peers see a reset one latency later, others
//!   when their bytes get through or by idle timeout) and [`Sim::restart`];
//!   [`Sim::pause`] (events for the node wait until it resumes, in order);
//!   [`Sim::overload`] (the node handles each input late, its timers on time).
//!
//! ```no_run
//! use std::time::Duration;
//! use weft_mesh_tests::sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(7, SimConfig::default());
//! let (a, b) = (sim.add_node(sim.node_config()), sim.add_node(sim.node_config()));
//! sim.seed(a, b);
//! assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(a, b)).is_some());
//! let id = sim.send(a, b, b"hello").unwrap();
//! sim.run_for(Duration::from_secs(1));
//! assert!(sim.delivered(a, id));
//! ```

mod engine;
mod faults;
mod host;
mod network;
mod random;
mod repro;
mod scheduler;
mod trace;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use weft_mesh::link::{MAX_TRANSMIT, MIN_TRANSMIT};
use weft_mesh::mesh::Target;
use weft_mesh::node::{MessageId, Node, NodeConfig, NodeEvent, NodeSendError};
use weft_mesh::{CloseReason, Identity, Instant, NodeId, Rng};

pub use faults::{FaultConfig, PartitionMode};
pub use host::Recorded;
pub use network::{NetProfile, WireId};
pub use repro::{seed_or, with_seed, SEED_VAR};
pub use scheduler::Scheduler;
pub use trace::hex;

use engine::Ev;
use faults::Partition;
use host::Host;
use network::Wire;
use trace::Trace;

/// A node's index in the simulator (its address is `sim://<index>`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeIdx(pub usize);

impl NodeIdx {
    /// The address other nodes dial: `sim://<index>`.
    pub fn addr(self) -> String {
        format!("sim://{}", self.0)
    }
}

impl fmt::Display for NodeIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Settings of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Link characteristics of every connection (see [`Sim::set_profile`] for pairs).
    pub net: NetProfile,
    /// A dial into a partition fails after this long (a dial to a node that is down
    /// or refuses fails after one round trip).
    pub dial_timeout: Duration,
    /// Random faults.
    pub faults: FaultConfig,
    /// Genesis hash used by [`Sim::node_config`].
    pub genesis: [u8; 32],
    /// Trace lines kept for printing when a test fails.
    pub trace_tail: usize,
    /// Keep every trace line (for diffing two runs), not only the hash and the tail.
    pub keep_full_trace: bool,
    /// Every node answers every request with its payload, like an echo service.
    pub echo_requests: bool,
}

impl Default for SimConfig {
    /// [`NetProfile::default`], 3 s dial timeout, no random faults, 64 tail lines.
    fn default() -> Self {
        SimConfig {
            net: NetProfile::default(),
            dial_timeout: Duration::from_secs(3),
            faults: FaultConfig::default(),
            genesis: [0x5e; 32],
            trace_tail: 64,
            keep_full_trace: false,
            echo_requests: true,
        }
    }
}

/// Why [`Sim::send`] or [`Sim::request`] was refused; nothing was queued.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SimSendError {
    /// The sending node is crashed.
    Down,
    /// Its node refused it.
    Refused(NodeSendError),
}

impl std::fmt::Display for SimSendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimSendError::Down => f.write_str("the node is down"),
            SimSendError::Refused(e) => e.fmt(f),
        }
    }
}

/// Counters of a run.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SimStats {
    /// Scheduler events processed.
    pub events: u64,
    /// Dials attempted.
    pub dials: u64,
    /// Dials that failed (target down, refused or partitioned).
    pub failed_dials: u64,
    /// Connections reset by faults (random, [`Sim::reset_connections_of`], partitions
    /// in [`PartitionMode::Reset`]).
    pub resets: u64,
    /// Crashes.
    pub crashes: u64,
    /// Bytes handed to `handle_bytes`.
    pub bytes_delivered: u64,
    /// The most bytes any one socket send buffer ever held.
    pub max_buffered: usize,
}

/// The simulator. See the [module docs](self).
pub struct Sim {
    seed: u64,
    config: SimConfig,
    now: Instant,
    sched: Scheduler<Ev>,
    hosts: Vec<Host>,
    ids: BTreeMap<NodeId, NodeIdx>,
    wires: BTreeMap<WireId, Wire>,
    next_wire: u64,
    overrides: BTreeMap<(NodeIdx, NodeIdx), NetProfile>,
    partition: Partition,
    /// Identities and per-node generators.
    node_rng: Rng,
    /// Latency, jitter and piece sizes.
    net_rng: Rng,
    /// Random faults.
    fault_rng: Rng,
    /// Handed to tests by [`Sim::rng`].
    test_rng: Rng,
    fault_tick: bool,
    trace: Trace,
    stats: SimStats,
    scratch: Vec<u8>,
    /// Consecutive timer firings of one node at one instant (spin detection).
    timer_spin: (NodeIdx, Instant, u32),
}

impl Sim {
    /// An empty simulation at virtual time zero whose randomness all comes from `seed`.
    ///
    /// # Panics
    /// If the profile's socket buffer is smaller than `MIN_TRANSMIT` (4096 bytes).
    pub fn new(seed: u64, config: SimConfig) -> Sim {
        check_profile(&config.net);
        let mut root = random::root(seed);
        let mut sim = Sim {
            seed,
            now: Instant::ZERO,
            sched: Scheduler::default(),
            hosts: Vec::new(),
            ids: BTreeMap::new(),
            wires: BTreeMap::new(),
            next_wire: 0,
            overrides: BTreeMap::new(),
            partition: Partition::default(),
            node_rng: root.fork(),
            net_rng: root.fork(),
            fault_rng: root.fork(),
            test_rng: root.fork(),
            fault_tick: false,
            trace: Trace::new(config.trace_tail, config.keep_full_trace),
            stats: SimStats::default(),
            scratch: vec![0; MAX_TRANSMIT],
            timer_spin: (NodeIdx(usize::MAX), Instant::ZERO, 0),
            config,
        };
        sim.log(format!("sim seed={seed}"));
        sim.schedule_fault_tick();
        sim
    }

    /// A simulation with the default configuration on links of profile `net`.
    pub fn with_net(seed: u64, net: NetProfile) -> Sim {
        Sim::new(
            seed,
            SimConfig {
                net,
                ..SimConfig::default()
            },
        )
    }

    /// The seed of this run.
    pub fn seed_value(&self) -> u64 {
        self.seed
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Default node settings for this simulation's genesis hash.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig::new(self.config.genesis)
    }

    /// [`Sim::node_config`] without the ML-KEM upgrade (cheaper handshakes for big runs).
    pub fn classical_config(&self) -> NodeConfig {
        let mut c = self.node_config();
        c.link.handshake.pq = weft_mesh::handshake::PqPolicy::Off;
        c
    }

    /// A generator for the test's own random choices, forked from the run's seed.
    pub fn rng(&mut self) -> Rng {
        self.test_rng.fork()
    }

    /// Seed `nodes` into a random tree (each node after the first seeds one earlier
    /// node, so the graph is connected), then give each `chords` more random seeds.
    pub fn seed_random_tree(&mut self, nodes: &[NodeIdx], chords: usize, rng: &mut Rng) {
        let n = nodes.len();
        for i in 1..n {
            let parent = (rng.next_u64() % i as u64) as usize;
            self.seed(nodes[i], nodes[parent]);
        }
        for i in 0..n {
            for _ in 0..chords {
                let j = (rng.next_u64() % n as u64) as usize;
                if j != i {
                    self.seed(nodes[i], nodes[j]);
                }
            }
        }
    }

    /// Add a node with a fresh identity; it starts at the current time.
    pub fn add_node(&mut self, config: NodeConfig) -> NodeIdx {
        let idx = NodeIdx(self.hosts.len());
        let identity = Arc::new(Identity::generate(&mut self.node_rng));
        let id = identity.node_id();
        self.ids.insert(id, idx);
        self.hosts
            .push(Host::new(identity, config, self.node_rng.fork()));
        self.log(format!("{idx} add id={id}"));
        self.step(idx);
        idx
    }

    /// Add `n` nodes with the same settings.
    pub fn add_nodes(&mut self, n: usize, config: &NodeConfig) -> Vec<NodeIdx> {
        (0..n).map(|_| self.add_node(config.clone())).collect()
    }

    /// Make `a` keep a connection to `b` (a seed: redialed with backoff, and re-added
    /// when `a` restarts).
    pub fn seed(&mut self, a: NodeIdx, b: NodeIdx) {
        self.hosts[a.0].seeds.push(b);
        self.log(format!("{a} seed {b}"));
        let now = self.now;
        if let Some(node) = &mut self.hosts[a.0].node {
            node.add_seed(now, b.addr());
        }
        self.step(a);
    }

    /// Shut `a` down in order ([`Node::shutdown`]): it leaves the membership, closes
    /// every link with `Normal` and, once its last connection is gone, stops (its node
    /// is dropped as by a crash, but its peers were told). [`Sim::restart`] starts it
    /// again.
    pub fn shutdown(&mut self, a: NodeIdx) {
        self.log(format!("{a} shutdown"));
        let now = self.now;
        let host = &mut self.hosts[a.0];
        if let Some(node) = &mut host.node {
            node.shutdown(now);
            host.stopping = true;
        }
        self.step(a);
    }

    /// Send `data` from `a` to `b`, directly or relayed (the outcome arrives later as
    /// `Delivered` or `SendFailed` at `a`). A crashed `a` refuses with
    /// [`SimSendError::Down`]; a paused `a` queues it, and nothing leaves until it resumes.
    pub fn send(&mut self, a: NodeIdx, b: NodeIdx, data: &[u8]) -> Result<MessageId, SimSendError> {
        self.originate(a, b, "send", data.len(), |node, now, to| {
            node.send(now, to, Target::Node, data.to_vec())
        })
    }

    /// Send a request from `a` to `b` (answered by `b`'s echo when
    /// [`SimConfig::echo_requests`]); the outcome arrives as `Response` or `SendFailed`.
    pub fn request(
        &mut self,
        a: NodeIdx,
        b: NodeIdx,
        data: &[u8],
        timeout: Duration,
    ) -> Result<MessageId, SimSendError> {
        self.originate(a, b, "request", data.len(), |node, now, to| {
            node.request(now, to, Target::Node, data.to_vec(), timeout)
        })
    }

    /// Hand `a`'s node a send to `b`, log it and step `a`.
    fn originate(
        &mut self,
        a: NodeIdx,
        b: NodeIdx,
        what: &str,
        len: usize,
        f: impl FnOnce(&mut Node, Instant, NodeId) -> Result<MessageId, NodeSendError>,
    ) -> Result<MessageId, SimSendError> {
        let (now, to) = (self.now, self.node_id(b));
        let result = match &mut self.hosts[a.0].node {
            Some(node) => f(node, now, to).map_err(SimSendError::Refused),
            None => Err(SimSendError::Down),
        };
        match &result {
            Ok(id) => self.log(format!("{a} {what} to={b} id={} len={len}", id.0)),
            Err(e) => self.log(format!("{a} {what} to={b} len={len} refused: {e}")),
        }
        self.step(a);
        result
    }

    /// Have `a` advertise service `name` (gossiped to every member). False if `a` is
    /// down or the name is invalid.
    pub fn advertise(&mut self, a: NodeIdx, name: &str) -> bool {
        let now = self.now;
        let done = match &mut self.hosts[a.0].node {
            Some(node) => node.advertise(now, name, b"").is_ok(),
            None => false,
        };
        self.log(format!("{a} advertise {name} ok={done}"));
        self.step(a);
        done
    }

    /// Hand `a`'s node to `f` (with the current time) for anything the simulator has no
    /// verb for (plugging in stores, writing a chain or a tree), log `what` and step `a`.
    /// `None` if `a` is down.
    pub fn with_node<R>(
        &mut self,
        a: NodeIdx,
        what: &str,
        f: impl FnOnce(&mut Node, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let result = self.hosts[a.0].node.as_mut().map(|node| f(node, now));
        self.log(format!("{a} {what} up={}", result.is_some()));
        self.step(a);
        result
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_to(deadline, None);
    }

    /// Run until `pred` holds (checked before the first event and whenever virtual time
    /// advances) or `limit` of virtual time has passed. Returns the virtual time it
    /// took, or `None` if `pred` never held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let deadline = start + limit;
        self.run_to(deadline, Some(&mut pred))
            .then(|| self.now - start)
    }

    // ----- observation -----

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The node id of `a`.
    pub fn node_id(&self, a: NodeIdx) -> NodeId {
        self.hosts[a.0].identity.node_id()
    }

    /// The index of the node with this id.
    pub fn idx_of(&self, id: &NodeId) -> Option<NodeIdx> {
        self.ids.get(id).copied()
    }

    /// `a`'s node, unless crashed.
    pub fn node(&self, a: NodeIdx) -> Option<&Node> {
        self.hosts[a.0].node.as_ref()
    }

    /// Whether `a` is running (not crashed).
    pub fn is_up(&self, a: NodeIdx) -> bool {
        self.hosts[a.0].node.is_some()
    }

    /// How many times `a` was crashed or stopped (its current incarnation).
    pub fn incarnation(&self, a: NodeIdx) -> u32 {
        self.hosts[a.0].incarnation
    }

    /// Whether `a` lists `b` among its connected peers.
    pub fn connected(&self, a: NodeIdx, b: NodeIdx) -> bool {
        let id = self.node_id(b);
        self.node(a)
            .is_some_and(|n| n.peers().any(|p| p.node == id))
    }

    /// How many peers `a` has.
    pub fn peer_count(&self, a: NodeIdx) -> usize {
        self.node(a).map_or(0, |n| n.peers().count())
    }

    /// Every event `a` reported, across restarts.
    pub fn events(&self, a: NodeIdx) -> &[Recorded] {
        &self.hosts[a.0].events
    }

    /// How many of `a`'s events match `pred`.
    pub fn count(&self, a: NodeIdx, pred: impl Fn(&NodeEvent) -> bool) -> usize {
        self.events(a).iter().filter(|r| pred(&r.event)).count()
    }

    /// How many times `a` reported `b` up.
    pub fn peer_ups(&self, a: NodeIdx, b: NodeIdx) -> usize {
        let id = self.node_id(b);
        self.count(
            a,
            |e| matches!(e, NodeEvent::PeerUp { node, .. } if *node == id),
        )
    }

    /// The reasons of every `PeerDown` of `b` that `a` reported.
    pub fn peer_downs(&self, a: NodeIdx, b: NodeIdx) -> Vec<CloseReason> {
        let id = self.node_id(b);
        self.events(a)
            .iter()
            .filter_map(|r| match r.event {
                NodeEvent::PeerDown { node, reason, .. } if node == id => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// Whether `a` reported message `id` of its current life delivered.
    pub fn delivered(&self, a: NodeIdx, id: MessageId) -> bool {
        let inc = self.incarnation(a);
        self.events(a).iter().any(|r| {
            r.incarnation == inc && matches!(r.event, NodeEvent::Delivered { id: i, .. } if i == id)
        })
    }

    /// Payloads of the messages `a` received from `b`.
    pub fn messages_from(&self, a: NodeIdx, b: NodeIdx) -> Vec<&[u8]> {
        let id = self.node_id(b);
        self.events(a)
            .iter()
            .filter_map(|r| match &r.event {
                NodeEvent::Message { from, payload, .. } if *from == id => Some(&payload[..]),
                _ => None,
            })
            .collect()
    }

    /// Connections that exist (including ones still closing).
    pub fn connections(&self) -> usize {
        self.wires.len()
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// SHA-256 of the trace so far.
    pub fn trace_hash(&self) -> [u8; 32] {
        self.trace.hash()
    }

    /// [`Sim::trace_hash`] in hex.
    pub fn trace_hex(&self) -> String {
        hex(&self.trace.hash())
    }

    /// Number of trace lines so far.
    pub fn trace_len(&self) -> u64 {
        self.trace.len()
    }

    /// The last trace lines (as many as `SimConfig::trace_tail`).
    pub fn trace_tail(&self) -> Vec<String> {
        self.trace.tail().map(str::to_owned).collect()
    }

    /// Every trace line, if `SimConfig::keep_full_trace` was set.
    pub fn full_trace(&self) -> Option<&[String]> {
        self.trace.full()
    }

    /// Add a line of the test's own to the trace (it is hashed like the rest).
    pub fn note(&mut self, text: &str) {
        self.log(format!("note {text}"));
    }

    // ----- helpers shared with the engine -----

    fn log(&mut self, text: String) {
        self.trace.record(self.now, &text);
    }

    fn profile(&self, a: NodeIdx, b: NodeIdx) -> NetProfile {
        self.overrides
            .get(&(a.min(b), a.max(b)))
            .copied()
            .unwrap_or(self.config.net)
    }

    fn separated(&self, wire: &Wire) -> bool {
        let (a, b) = wire.nodes();
        self.partition.separated(a, b)
    }

    fn wires_between(&self, a: NodeIdx, b: NodeIdx) -> Vec<WireId> {
        self.wires
            .iter()
            .filter(|(_, w)| {
                let (x, y) = w.nodes();
                (x, y) == (a, b) || (x, y) == (b, a)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn short(&self, id: &NodeId) -> String {
        match self.ids.get(id) {
            Some(idx) => idx.to_string(),
            None => format!("{id}"),
        }
    }
}

fn check_profile(p: &NetProfile) {
    assert!(
        p.socket_buffer >= MIN_TRANSMIT,
        "socket_buffer must be at least MIN_TRANSMIT ({MIN_TRANSMIT} bytes)"
    );
}

impl Drop for Sim {
    /// On a panic, print the seed and the last trace lines.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[sim] panicked at t={} us with seed = {} (rerun: {SEED_VAR}={}); last trace lines:",
                self.now.as_micros(),
                self.seed,
                self.seed
            );
            for line in self.trace.tail() {
                eprintln!("  {line}");
            }
        }
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("nodes", &self.hosts.len())
            .field("connections", &self.wires.len())
            .finish_non_exhaustive()
    }
}
