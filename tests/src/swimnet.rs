//! A deterministic virtual-time network of [`Swim`] instances, for the membership bench.
//!
//! [`SwimNet`] owns `n` members and a binary heap of events keyed by (virtual time,
//! sequence number): packets to deliver, member timers, scheduled contacts and pauses.
//! Every random choice (ids, latencies, losses, stalls, pauses, each member's own
//! [`Rng`]) comes from the seed, so a seed reproduces a run exactly. Members talk to each
//! other directly (a full mesh of links), as SWIM assumes.
//!
//! The model:
//!
//! * a packet takes a latency drawn uniformly from [`NetConfig::latency`], plus, for a
//!   [`NetConfig::tail_fraction`] of packets, an extra uniform in `0..=tail`; a
//!   [`NetConfig::loss`] fraction is lost;
//! * a crashed member neither runs nor receives, for good;
//! * a **link stall** (a connection that stops moving: congestion, a lost segment
//!   waiting for its retransmission, a bad route) holds every packet sent on the link,
//!   in both directions, until the stall ends, then delivers them (the links are
//!   streams, so nothing is lost). With [`SwimNet::set_link_stalls`], each pair of
//!   members alternates between stalls of a uniform [`NetConfig::stall`] length and
//!   exponentially distributed free periods, so that every link is stalled the given
//!   fraction of the time, independently of the others. The state of a link is drawn
//!   lazily, when a packet first uses it, and starts (approximately) in the stationary
//!   state; a packet already in flight when its link stalls is delivered normally;
//! * a **pause** (the whole process frozen: GC, swapping, a stopped VM) lasts a
//!   uniform [`NetConfig::stall`] duration; with [`SwimNet::set_pauses`], pauses start
//!   after exponentially distributed gaps so that each member is paused the given
//!   fraction of the time. A paused member runs no timer and handles no packet; what
//!   reaches it is held (by its sockets) and handled when it resumes, after its overdue
//!   timers have run, in the order the driver's event loop uses (`handle_timeout`
//!   first, then the sockets). It sends nothing while paused; packets it sent before
//!   are delivered.
//!
//! [`SwimNet::form`] builds a settled cluster without simulating its join, for runs
//! that only need one.
//!
//! ```no_run
//! use std::time::Duration;
//! use weft_mesh::membership::SwimConfig;
//! use weft_mesh_tests::swimnet::{NetConfig, SwimNet};
//!
//! let mut net = SwimNet::new(50, 1, SwimConfig::lan(), NetConfig::default());
//! net.join_through_seeds(3, Duration::from_secs(1));
//! let took = net.run_until_converged(Duration::from_secs(120), Duration::from_secs(1));
//! assert!(took.is_some());
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use weft_mesh::membership::{MemberEvent, MemberState, Swim, SwimConfig, Transmit};
use weft_mesh::{Instant, NodeId, Rng};

/// How packets travel and how long stalls and pauses last.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// One-way latency range (inclusive) every packet takes.
    pub latency: (Duration, Duration),
    /// Fraction of packets delayed further by a uniform extra in `0..=tail`.
    pub tail_fraction: f64,
    /// The largest extra delay of a tail packet.
    pub tail: Duration,
    /// Fraction of packets lost.
    pub loss: f64,
    /// Length range (inclusive) of a link stall and of a pause.
    pub stall: (Duration, Duration),
}

impl Default for NetConfig {
    /// 1 to 5 ms, 1 % of packets up to 100 ms later, no loss, stalls and pauses of
    /// 0.5 to 5 s.
    fn default() -> Self {
        NetConfig {
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            tail_fraction: 0.01,
            tail: Duration::from_millis(100),
            loss: 0.0,
            stall: (Duration::from_millis(500), Duration::from_secs(5)),
        }
    }
}

/// Counters of the network since [`SwimNet::new`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct NetStats {
    /// Packets handed to a running member.
    pub delivered: u64,
    /// Member timers fired (`handle_timeout` calls).
    pub timers: u64,
    /// Packets members sent.
    pub sent: u64,
    /// Bytes members sent.
    pub bytes: u64,
    /// Pings, acks and nacks sent.
    pub small_packets: u64,
    /// Push-pull (full state) packets sent.
    pub push_pull_packets: u64,
    /// Bytes of those.
    pub push_pull_bytes: u64,
    /// Dedicated gossip packets sent (only while a member has updates queued).
    pub gossip_packets: u64,
    /// Membership updates carried by those and by the pings, acks and nacks (their
    /// count byte, at offset 1 and 5): zero once the gossip queues are empty.
    pub piggybacked: u64,
    /// Packets lost by [`NetConfig::loss`].
    pub lost: u64,
    /// Packets dropped because their destination had crashed.
    pub dropped_crashed: u64,
    /// Packets a member refused as malformed (a bug if ever non-zero).
    pub malformed: u64,
    /// Packets sent on a stalled link (held until the stall ended).
    pub held_by_link: u64,
    /// Packets that reached a paused member (held until it resumed).
    pub held_by_pause: u64,
    /// Pauses started.
    pub pauses: u64,
    /// Total virtual time members spent paused.
    pub paused: Duration,
    /// `Down` events a member emitted from the overdue timers it ran as it resumed
    /// (suspicions that expired while it was paused), before the packets it missed.
    pub downs_on_waking: u64,
}

/// A member event as observed: (when, observer index, event).
pub type Observed = (Instant, usize, MemberEvent);

struct Host {
    swim: Swim,
    crashed: bool,
    paused_until: Option<Instant>,
    /// Packets (sender, packet) that reached it while paused, in arrival order.
    held: Vec<(usize, Transmit)>,
    /// The deadline a `Timer` event in the heap stands for.
    timer: Option<Instant>,
}

/// The state of one link (an unordered pair of members) under link stalls.
struct LinkPhase {
    stalled: bool,
    /// When this phase ends.
    until: Instant,
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        packet: Transmit,
    },
    Timer {
        node: usize,
        at: Instant,
    },
    Contact {
        node: usize,
        to: usize,
    },
    PauseStart {
        node: usize,
        generation: u64,
    },
    PauseEnd {
        node: usize,
        generation: u64,
    },
}

/// An event in the heap, ordered by (time, sequence) only.
struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Events processed at one instant before the run is declared stuck (a member whose
/// `poll_timeout` never moves past `now`).
const MAX_STEPS_AT_ONE_INSTANT: u64 = 10_000_000;

/// `n` [`Swim`] members on a simulated network, stepped in virtual time.
pub struct SwimNet {
    now: Instant,
    hosts: Vec<Host>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    swim_config: SwimConfig,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    rng: Rng,
    config: NetConfig,
    pause_fraction: f64,
    pause_generation: u64,
    link_fraction: f64,
    /// When the current link-stall regime began (every link's process starts there).
    link_epoch: Instant,
    links: HashMap<(u32, u32), LinkPhase>,
    events: Vec<Observed>,
    stats: NetStats,
    steps_at_now: u64,
}

/// The address member `i` advertises.
fn address(i: usize) -> String {
    format!("tcp://10.{}.{}.{}:7000", i >> 16, (i >> 8) & 255, i & 255)
}

impl SwimNet {
    /// `n` members with ids and per-member generators drawn from `seed`, each advertising
    /// one address of the form `tcp://10.a.b.c:7000`; nobody knows anybody yet.
    pub fn new(n: usize, seed: u64, swim: SwimConfig, config: NetConfig) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_be_bytes());
        let mut rng = Rng::from_seed(bytes);
        let mut hosts = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = NodeId::from_bytes(rng.array());
            hosts.push(Host {
                swim: Swim::new(id, vec![address(i)], swim.clone(), rng.fork()),
                crashed: false,
                paused_until: None,
                held: Vec::new(),
                timer: None,
            });
            ids.push(id);
        }
        SwimNet {
            now: Instant::ZERO,
            index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            hosts,
            ids,
            swim_config: swim,
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            config,
            pause_fraction: 0.0,
            pause_generation: 0,
            link_fraction: 0.0,
            link_epoch: Instant::ZERO,
            links: HashMap::new(),
            events: Vec::new(),
            stats: NetStats::default(),
            steps_at_now: 0,
        }
    }

    /// Number of members (crashed ones included).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Member `i`'s id.
    pub fn id(&self, i: usize) -> NodeId {
        self.ids[i]
    }

    /// The index of the member with this id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Member `i`'s state machine.
    pub fn swim(&self, i: usize) -> &Swim {
        &self.hosts[i].swim
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Whether member `i` crashed.
    pub fn is_crashed(&self, i: usize) -> bool {
        self.hosts[i].crashed
    }

    /// Members that have not crashed.
    pub fn live(&self) -> usize {
        self.hosts.iter().filter(|h| !h.crashed).count()
    }

    /// A uniformly random index below `n` (`n > 0`), from the network's generator.
    pub fn random_below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// Member `i` contacts member `j` now (the join: a push-pull).
    pub fn contact(&mut self, i: usize, j: usize) {
        self.schedule(self.now, Event::Contact { node: i, to: j });
    }

    /// Members `1..seeds` contact member 0 now; every other member contacts one of the
    /// `seeds` first members, chosen at random, at a time spread evenly over `spread`.
    pub fn join_through_seeds(&mut self, seeds: usize, spread: Duration) {
        let n = self.len();
        let seeds = seeds.clamp(1, n.max(1));
        for i in 1..seeds.min(n) {
            self.contact(i, 0);
        }
        let joiners = n.saturating_sub(seeds).max(1) as u32;
        for (k, i) in (seeds..n).enumerate() {
            let seed = self.random_below(seeds);
            let at = self.now + spread * k as u32 / joiners;
            self.schedule(at, Event::Contact { node: i, to: seed });
        }
    }

    /// Form the cluster without simulating its join, on a network where nothing
    /// happened yet: every member ends up knowing every other as Alive, with its gossip
    /// queue drained, as after a join whose gossip has died down; nothing travels on
    /// the network and the events of the formation are discarded.
    ///
    /// Member 0 learns every member from its join packet (each made by a stand-in
    /// [`Swim`] with that member's id and address); every other member then receives
    /// member 0's full state; each member's queue is drained by pings answered off the
    /// network, all at the current time. The members are not in step: each schedules
    /// its first periodic push-pull at a random point of the first interval (the core
    /// staggers it), so its push-pulls fall at random times of every interval, and its
    /// first probe round runs at a random time in the first probe interval. The clock
    /// does not move.
    pub fn form(&mut self) {
        let n = self.len();
        if n == 0 {
            return;
        }
        let start = self.now;
        let round = self.swim_config.probe_interval;
        let id0 = self.ids[0];
        for j in 1..n {
            let config = self.swim_config.clone();
            let mut stand_in = Swim::new(self.ids[j], vec![address(j)], config, self.rng.fork());
            stand_in.contact(start, id0);
            let join = stand_in.poll_transmit(start).expect("a join packet");
            let zero = &mut self.hosts[0].swim;
            zero.handle_packet(start, self.ids[j], &join.packet)
                .expect("well formed");
            discard_output(zero, start);
            // Drained as it fills (see below).
            drain_gossip(zero, start, self.ids[j]);
        }
        let zero = &mut self.hosts[0].swim;
        zero.contact(start, self.ids[1 % n]);
        let mut state = Vec::new();
        while let Some(t) = zero.poll_transmit(start) {
            state.push(t.packet);
        }
        for j in 1..n {
            let swim = &mut self.hosts[j].swim;
            for chunk in &state {
                swim.handle_packet(start, id0, chunk).expect("well formed");
                // As a driver would after every input (the event queue stays short).
                discard_output(swim, start);
                // Drained chunk by chunk: the piggyback queue stays short. Draining
                // N queued updates at once costs O(N) per ack (an update that does
                // not fit the rest of a packet makes the queue's walk go on to its
                // end), so O(N^2) per member.
                drain_gossip(swim, start, id0);
            }
        }
        for i in 0..n {
            let at = self.now + self.uniform(Duration::ZERO, round);
            self.hosts[i].timer = Some(at);
            self.schedule(at, Event::Timer { node: i, at });
        }
    }

    /// Crash member `i` now, for good.
    pub fn crash(&mut self, i: usize) {
        self.hosts[i].crashed = true;
        let held = std::mem::take(&mut self.hosts[i].held);
        self.stats.dropped_crashed += held.len() as u64;
    }

    /// Pause every running member `fraction` of the time from now on (0 stops new
    /// pauses; those under way end normally).
    pub fn set_pauses(&mut self, fraction: f64) {
        self.pause_fraction = fraction.clamp(0.0, 0.99);
        self.pause_generation += 1;
        if self.pause_fraction == 0.0 {
            return;
        }
        let generation = self.pause_generation;
        for node in 0..self.len() {
            let at = self.now + self.free_gap(self.pause_fraction);
            self.schedule(at, Event::PauseStart { node, generation });
        }
    }

    /// Stall every link `fraction` of the time from now on, each independently (0
    /// stops them: packets already held are delivered when their stall ends).
    pub fn set_link_stalls(&mut self, fraction: f64) {
        self.link_fraction = fraction.clamp(0.0, 0.99);
        self.link_epoch = self.now;
        self.links.clear();
    }

    /// Whether the link between members `a` and `b` is stalled now (drawing its state
    /// if no packet used it yet, which takes from the network's generator).
    pub fn link_stalled(&mut self, a: usize, b: usize) -> bool {
        self.link_stalled_until(a, b).is_some()
    }

    /// Events observed since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Observed> {
        std::mem::take(&mut self.events)
    }

    /// Process every event up to `end` and move the clock there.
    pub fn run_until(&mut self, end: Instant) {
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= end) {
            let Some(Reverse(next)) = self.queue.pop() else {
                break;
            };
            if next.at > self.now {
                self.now = next.at;
                self.steps_at_now = 0;
            }
            self.steps_at_now += 1;
            assert!(
                self.steps_at_now < MAX_STEPS_AT_ONE_INSTANT,
                "no progress at {:?}",
                self.now
            );
            self.dispatch(next.event);
        }
        self.now = self.now.max(end);
    }

    /// Process every event of the next `d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Whether every running member knows exactly the other running members, all Alive.
    pub fn converged(&self) -> bool {
        let live = self.live();
        let counts_match = self
            .hosts
            .iter()
            .filter(|h| !h.crashed)
            .all(|h| h.swim.alive_count() == live);
        counts_match
            && (0..self.len())
                .filter(|&i| !self.hosts[i].crashed)
                .all(|i| self.knows_every_live_member(i))
    }

    /// Run in steps of `step` until [`converged`](Self::converged); the time it took,
    /// or `None` after `limit`. Events are kept (see [`take_events`](Self::take_events)).
    pub fn run_until_converged(&mut self, limit: Duration, step: Duration) -> Option<Duration> {
        let start = self.now;
        loop {
            if self.converged() {
                return Some(self.now - start);
            }
            if self.now >= start + limit {
                return None;
            }
            self.run_for(step);
        }
    }

    fn knows_every_live_member(&self, i: usize) -> bool {
        let mut alive = 0;
        for m in self.hosts[i].swim.members().skip(1) {
            if !m.state.is_live() {
                continue;
            }
            let running = self
                .index_of(&m.node)
                .is_some_and(|j| !self.hosts[j].crashed);
            if !running || m.state != MemberState::Alive {
                return false;
            }
            alive += 1;
        }
        alive + 1 == self.live()
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        let at = at.max(self.now);
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn is_paused(&self, i: usize) -> bool {
        self.hosts[i].paused_until.is_some()
    }

    fn dispatch(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Deliver { to, from, packet } => {
                if self.hosts[to].crashed {
                    self.stats.dropped_crashed += 1;
                } else if self.is_paused(to) {
                    self.stats.held_by_pause += 1;
                    self.hosts[to].held.push((from, packet));
                } else {
                    self.deliver(to, from, &packet);
                }
            }
            Event::Timer { node, at } => {
                let host = &self.hosts[node];
                if host.timer == Some(at) && !host.crashed && !self.is_paused(node) {
                    self.fire(node);
                }
            }
            Event::Contact { node, to } => {
                if !self.hosts[node].crashed && !self.is_paused(node) {
                    let id = self.ids[to];
                    self.hosts[node].swim.contact(now, id);
                    self.flush(node);
                }
            }
            Event::PauseStart { node, generation } => {
                let host = &self.hosts[node];
                if generation != self.pause_generation || host.crashed || self.is_paused(node) {
                    return;
                }
                let (lo, hi) = self.config.stall;
                let length = self.uniform(lo, hi);
                self.hosts[node].paused_until = Some(now + length);
                self.stats.pauses += 1;
                self.stats.paused += length;
                self.schedule(now + length, Event::PauseEnd { node, generation });
            }
            Event::PauseEnd { node, generation } => {
                self.hosts[node].paused_until = None;
                if self.hosts[node].crashed {
                    return;
                }
                if self.hosts[node].timer.is_some_and(|t| t <= now) {
                    let seen = self.events.len();
                    self.fire(node);
                    let downs = self.events[seen..]
                        .iter()
                        .filter(|(_, _, e)| matches!(e, MemberEvent::Down { .. }))
                        .count();
                    self.stats.downs_on_waking += downs as u64;
                }
                for (from, packet) in std::mem::take(&mut self.hosts[node].held) {
                    self.deliver(node, from, &packet);
                }
                if generation == self.pause_generation && self.pause_fraction > 0.0 {
                    let at = now + self.free_gap(self.pause_fraction);
                    self.schedule(at, Event::PauseStart { node, generation });
                }
            }
        }
    }

    /// Hand a packet to running member `to`.
    fn deliver(&mut self, to: usize, from: usize, packet: &Transmit) {
        self.stats.delivered += 1;
        let now = self.now;
        let from = self.ids[from];
        if self.hosts[to]
            .swim
            .handle_packet(now, from, &packet.packet)
            .is_err()
        {
            self.stats.malformed += 1;
        }
        self.flush(to);
    }

    /// Run member `i`'s due timers.
    fn fire(&mut self, i: usize) {
        self.stats.timers += 1;
        self.hosts[i].timer = None;
        let now = self.now;
        self.hosts[i].swim.handle_timeout(now);
        self.flush(i);
    }

    /// Put member `i`'s packets on the wire, collect its events, track its deadline.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        while let Some(t) = self.hosts[i].swim.poll_transmit(now) {
            self.stats.sent += 1;
            self.stats.bytes += t.packet.len() as u64;
            if matches!(t.packet.first(), Some(0x01 | 0x02 | 0x04)) {
                self.stats.small_packets += 1;
                self.stats.piggybacked += u64::from(t.packet.get(5).copied().unwrap_or(0));
            } else if t.packet.first() == Some(&0x06) {
                self.stats.gossip_packets += 1;
                self.stats.piggybacked += u64::from(t.packet.get(1).copied().unwrap_or(0));
            } else if t.packet.first() == Some(&0x05) {
                self.stats.push_pull_packets += 1;
                self.stats.push_pull_bytes += t.packet.len() as u64;
            }
            let Some(to) = self.index_of(&t.to) else {
                continue;
            };
            if self.config.loss > 0.0 && self.unit() < self.config.loss {
                self.stats.lost += 1;
                continue;
            }
            let leaves = match self.link_stalled_until(i, to) {
                Some(until) => {
                    self.stats.held_by_link += 1;
                    until
                }
                None => now,
            };
            let at = leaves + self.latency();
            self.schedule(
                at,
                Event::Deliver {
                    to,
                    from: i,
                    packet: t,
                },
            );
        }
        while let Some(e) = self.hosts[i].swim.poll_event() {
            self.events.push((now, i, e));
        }
        let next = self.hosts[i].swim.poll_timeout();
        if next != self.hosts[i].timer {
            self.hosts[i].timer = next;
            if let Some(at) = next {
                self.schedule(at, Event::Timer { node: i, at });
            }
        }
    }

    /// When the stall of the link between `a` and `b` ends, if it is stalled now.
    fn link_stalled_until(&mut self, a: usize, b: usize) -> Option<Instant> {
        let f = self.link_fraction;
        if f == 0.0 {
            return None;
        }
        let key = (a.min(b) as u32, a.max(b) as u32);
        let mut phase = match self.links.remove(&key) {
            Some(phase) => phase,
            // The stationary start: stalled with probability f, for part of a stall
            // (the free periods are exponential, so their remainder is too).
            None if self.unit() < f => {
                let length = self.stall_length();
                let left = self.uniform(Duration::ZERO, length);
                LinkPhase {
                    stalled: true,
                    until: self.link_epoch + left,
                }
            }
            None => LinkPhase {
                stalled: false,
                until: self.link_epoch + self.free_gap(f),
            },
        };
        while phase.until <= self.now {
            phase.stalled = !phase.stalled;
            let length = if phase.stalled {
                self.stall_length()
            } else {
                self.free_gap(f)
            };
            phase.until = phase.until + length;
        }
        let stalled = phase.stalled.then_some(phase.until);
        self.links.insert(key, phase);
        stalled
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.config.latency;
        let base = self.uniform(lo, hi);
        if self.config.tail_fraction > 0.0 && self.unit() < self.config.tail_fraction {
            base + self.uniform(Duration::ZERO, self.config.tail)
        } else {
            base
        }
    }

    /// The length of one stall or pause.
    fn stall_length(&mut self) -> Duration {
        let (lo, hi) = self.config.stall;
        self.uniform(lo, hi)
    }

    /// The gap before the next stall or pause: exponential, with the mean that makes
    /// the stalled share of time `fraction` (`0 < fraction < 1`).
    fn free_gap(&mut self, fraction: f64) -> Duration {
        let (lo, hi) = self.config.stall;
        let mean_stall = (lo + hi).as_secs_f64() / 2.0;
        let mean_gap = mean_stall * (1.0 - fraction) / fraction;
        Duration::from_secs_f64(-mean_gap * (1.0 - self.unit()).ln())
    }

    /// Uniform in `lo..=hi`, to the microsecond.
    fn uniform(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.rng.next_u64() % (span + 1))
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Throw away what `swim` has to send and to report.
fn discard_output(swim: &mut Swim, now: Instant) {
    while swim.poll_transmit(now).is_some() {}
    while swim.poll_event().is_some() {}
}

/// Ping `swim` (as from `pinger`, a member it knows) until its acks carry no update:
/// its piggyback queue is then empty. The acks go nowhere.
fn drain_gossip(swim: &mut Swim, now: Instant, pinger: NodeId) {
    for seq in 1u32.. {
        let mut ping = vec![0x01];
        ping.extend_from_slice(&seq.to_be_bytes());
        ping.push(0);
        swim.handle_packet(now, pinger, &ping).expect("a ping");
        let ack = swim.poll_transmit(now).expect("an ack");
        while swim.poll_transmit(now).is_some() {}
        if ack.packet.len() == ping.len() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(n: usize, seed: u64) -> SwimNet {
        SwimNet::new(n, seed, SwimConfig::lan(), NetConfig::default())
    }

    fn downs(events: &[Observed]) -> usize {
        events
            .iter()
            .filter(|(_, _, e)| matches!(e, MemberEvent::Down { .. }))
            .count()
    }

    #[test]
    fn members_join_through_seeds_and_converge() {
        let mut net = net(20, 1);
        assert!(!net.converged());
        net.join_through_seeds(3, Duration::from_secs(1));
        let took = net.run_until_converged(Duration::from_secs(120), Duration::from_secs(1));
        assert!(took.is_some(), "20 members did not converge");
        assert_eq!(net.stats().malformed, 0);
        assert!(net.stats().delivered > 0 && net.stats().timers > 0);
        assert!(net.stats().piggybacked > 0, "the joins were gossiped");
        let before = net.stats();
        net.run_for(Duration::from_secs(120));
        let quiet = net.stats().piggybacked - before.piggybacked;
        net.run_for(Duration::from_secs(30));
        assert_eq!(
            net.stats().piggybacked - before.piggybacked,
            quiet,
            "no update left to gossip after 2 quiet minutes"
        );
        let ups = net
            .take_events()
            .iter()
            .filter(|(_, _, e)| matches!(e, MemberEvent::Up { .. }))
            .count();
        assert_eq!(ups, 20 * 19, "one Up per (observer, member)");
    }

    #[test]
    fn a_formed_cluster_is_converged_quiet_and_out_of_step() {
        let mut net = net(30, 5);
        net.form();
        assert_eq!(net.now(), Instant::ZERO, "forming takes no time");
        assert!(net.converged());
        assert!(
            net.take_events().is_empty(),
            "the formation's events are discarded"
        );
        let before = net.stats();
        net.run_for(Duration::from_secs(61));
        let s = net.stats();
        assert!(net.converged());
        assert!(net.take_events().is_empty(), "nothing changed");
        assert_eq!(s.piggybacked, before.piggybacked, "nothing left to gossip");
        assert!(
            s.delivered > 30 * 2 * 60,
            "every member probed every second"
        );
        // Push-pulls are spread over the interval: not every member sends its full
        // state within the same second.
        let mut busy_seconds = 0;
        for _ in 0..30 {
            let sent = net.stats().push_pull_packets;
            net.run_for(Duration::from_secs(1));
            if net.stats().push_pull_packets > sent {
                busy_seconds += 1;
            }
        }
        assert!(
            busy_seconds > 10,
            "push-pulls in only {busy_seconds} of 30 s"
        );
    }

    #[test]
    fn a_seed_reproduces_the_run_exactly() {
        let run = |seed| {
            let mut net = net(10, seed);
            net.join_through_seeds(2, Duration::from_millis(500));
            net.set_pauses(0.2);
            net.set_link_stalls(0.2);
            net.run_for(Duration::from_secs(60));
            (net.stats(), net.take_events())
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).0, run(8).0);
    }

    #[test]
    fn a_crashed_member_is_declared_down_by_every_other() {
        let mut net = net(10, 2);
        net.join_through_seeds(2, Duration::from_millis(500));
        net.run_until_converged(Duration::from_secs(60), Duration::from_secs(1))
            .expect("converged");
        net.take_events();
        net.crash(9);
        net.run_for(Duration::from_secs(60));
        let victim = net.id(9);
        let downs = net
            .take_events()
            .into_iter()
            .filter(|(_, _, e)| *e == MemberEvent::Down { node: victim })
            .count();
        assert_eq!(downs, 9);
        assert!(net.stats().dropped_crashed > 0);
        assert_eq!(net.live(), 9);
        assert!(net.converged(), "the others still know each other");
    }

    #[test]
    fn pauses_hold_packets_and_take_about_the_requested_share_of_time() {
        let mut net = net(20, 3);
        net.form();
        net.set_pauses(0.2);
        let hours = 2.0;
        net.run_for(Duration::from_secs_f64(hours * 3600.0));
        let s = net.stats();
        let share = s.paused.as_secs_f64() / (20.0 * hours * 3600.0);
        assert!((0.15..0.25).contains(&share), "paused share {share}");
        assert!(s.held_by_pause > 0);
        assert!(s.downs_on_waking <= downs(&net.take_events()) as u64);
        assert!(s.small_packets > 0 && s.piggybacked <= 255 * (s.small_packets + s.gossip_packets));
        net.set_pauses(0.0);
        let pauses = net.stats().pauses;
        net.run_for(Duration::from_secs(600));
        let s = net.stats();
        assert_eq!(s.pauses, pauses, "no pause after turning them off");
        assert_eq!(s.lost, 0, "none was lost");
        assert!(
            s.sent - s.delivered < 20,
            "every packet arrived but those still in flight: {} of {}",
            s.sent - s.delivered,
            s.sent
        );
    }

    #[test]
    fn links_stall_about_the_requested_share_of_time_and_hold_packets() {
        let n = 20;
        let mut net = net(n, 4);
        net.form();
        net.set_link_stalls(0.2);
        let (mut samples, mut stalled) = (0, 0);
        for _ in 0..3600 {
            net.run_for(Duration::from_secs(1));
            for _ in 0..10 {
                let (a, b) = (net.random_below(n), net.random_below(n));
                if a != b {
                    samples += 1;
                    stalled += usize::from(net.link_stalled(a, b));
                }
            }
        }
        let share = stalled as f64 / samples as f64;
        assert!((0.17..0.23).contains(&share), "stalled share {share}");
        let s = net.stats();
        // Fewer packets than that are held: a probe held by a stall is not repeated.
        let held = s.held_by_link as f64 / s.sent as f64;
        assert!((0.05..share).contains(&held), "held share {held}");
        net.set_link_stalls(0.0);
        let held = net.stats().held_by_link;
        net.run_for(Duration::from_secs(60));
        let s = net.stats();
        assert_eq!(s.held_by_link, held, "no stall after turning them off");
        assert_eq!(s.delivered, s.sent, "held packets arrive, none is lost");
        assert_eq!(s.held_by_pause, 0);
    }
}
