//! Faults: their settings, the partition map, and the `Sim` methods that inject them.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_mesh::node::Node;
use weft_mesh::Instant;

use super::engine::Ev;
use super::network::WireId;
use super::random::{chance, up_to};
use super::{check_profile, NetProfile, NodeIdx, Sim};

/// Faults injected at random while the simulation runs.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct FaultConfig {
    /// Probability that a given established connection is reset in one tick
    /// (`0.01` with a 1 s tick: 1 % of connections reset per virtual second). Each end
    /// learns of a reset within one latency, independently.
    pub reset_probability: f64,
    /// Mean time between two draws of the random faults (each gap is uniform in
    /// `tick/2..=3*tick/2`, so draws do not line up with a test's own period).
    pub tick: Duration,
}

impl Default for FaultConfig {
    /// No random faults; one tick per virtual second once enabled.
    fn default() -> Self {
        FaultConfig {
            reset_probability: 0.0,
            tick: Duration::from_secs(1),
        }
    }
}

/// What a partition does to the connections that cross it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum PartitionMode {
    /// Bytes stop flowing silently (a black hole); the nodes notice by their idle
    /// timeouts. Bytes in flight are held and flow again after the heal.
    #[default]
    Stall,
    /// Every crossing connection is reset at once (both ends see it closed).
    Reset,
}

/// Which group each node is in; nodes in different groups cannot reach each other.
#[derive(Clone, Default, Debug)]
pub(crate) struct Partition {
    /// Group of each listed node; unlisted nodes form one more group together.
    groups: BTreeMap<NodeIdx, usize>,
    active: bool,
}

impl Partition {
    /// Split the nodes into `groups`; unlisted nodes form a group of their own.
    pub fn split(groups: &[Vec<NodeIdx>]) -> Self {
        let mut map = BTreeMap::new();
        for (g, nodes) in groups.iter().enumerate() {
            for &n in nodes {
                map.insert(n, g);
            }
        }
        Partition {
            groups: map,
            active: true,
        }
    }

    /// Whether `a` and `b` are cut off from each other.
    pub fn separated(&self, a: NodeIdx, b: NodeIdx) -> bool {
        self.active && self.groups.get(&a) != self.groups.get(&b)
    }

    /// Whether any partition is in force.
    pub fn is_active(&self) -> bool {
        self.active
    }
}

/// Injecting faults.
impl Sim {
    /// Cut the network into `groups` (unlisted nodes form one more group), replacing any
    /// earlier partition: connections across the cut stall silently (bytes in flight are
    /// held) and new dials across it fail after the dial timeout.
    pub fn partition(&mut self, groups: &[Vec<NodeIdx>]) {
        self.partition_with(groups, PartitionMode::Stall);
    }

    /// [`Sim::partition`] with a choice of what happens to crossing connections.
    pub fn partition_with(&mut self, groups: &[Vec<NodeIdx>], mode: PartitionMode) {
        self.partition = Partition::split(groups);
        self.log(format!("fault partition {groups:?} {mode:?}"));
        // A new partition replaces the old one: pairs it no longer cuts flow again.
        let ids: Vec<WireId> = self.wires.keys().copied().collect();
        for w in ids {
            self.resume_wire(w);
        }
        if mode == PartitionMode::Reset {
            let crossing: Vec<WireId> = self
                .wires
                .iter()
                .filter(|(_, w)| !w.dead && self.separated(w))
                .map(|(id, _)| *id)
                .collect();
            for w in crossing {
                self.reset_wire(w, [Duration::ZERO; 2], "partition");
            }
        }
    }

    /// End the partition: stalled connections flow again (bytes held in flight arrive).
    pub fn heal(&mut self) {
        self.partition = Partition::default();
        self.log("fault heal".into());
        let ids: Vec<WireId> = self.wires.keys().copied().collect();
        for w in ids {
            self.resume_wire(w);
        }
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        self.partition.is_active()
    }

    /// Crash `a`: its node state is dropped (outstanding messages, keys, queues) and its
    /// peers see their connections reset one latency later (if they can be reached).
    pub fn crash(&mut self, a: NodeIdx) {
        self.log(format!("fault crash {a}"));
        self.stats.crashes += 1;
        self.crash_host(a);
    }

    /// Start a crashed `a` again: a fresh `Node` with the same identity, which re-adds
    /// its seeds. A running `a` is crashed first.
    pub fn restart(&mut self, a: NodeIdx) {
        if self.hosts[a.0].node.is_some() {
            self.crash(a);
        }
        self.log(format!("fault restart {a}"));
        let now = self.now;
        let host = &mut self.hosts[a.0];
        let mut node = Node::new(host.identity.clone(), host.config.clone(), host.rng.fork());
        for s in &host.seeds {
            node.add_seed(now, s.addr());
        }
        host.node = Some(node);
        self.step(a);
    }

    /// Pause `a` for `d`: it processes nothing (bytes, accepts, timers) until then, and
    /// then catches up on everything that arrived, in order. Its sockets keep sending
    /// what was already written.
    pub fn pause(&mut self, a: NodeIdx, d: Duration) {
        let until = self.now + d;
        let host = &mut self.hosts[a.0];
        let until = host.paused_until.map_or(until, |t| t.max(until));
        host.paused_until = Some(until);
        let incarnation = host.incarnation;
        self.log(format!("fault pause {a} until={}", until.as_micros()));
        self.sched.push(
            until,
            Ev::Resume {
                node: a,
                incarnation,
            },
        );
    }

    /// Whether `a` is paused now.
    pub fn is_paused(&self, a: NodeIdx) -> bool {
        self.hosts[a.0].paused(self.now)
    }

    /// Overload `a` from now on: it handles every input (bytes, accepts, connection
    /// events) a random `min..=max` after it arrives, in arrival order, while its
    /// timers still fire on time and what it sends leaves at once: a machine whose
    /// event loop is far behind. It survives restarts; [`Sim::relieve`] ends it.
    pub fn overload(&mut self, a: NodeIdx, min: Duration, max: Duration) {
        self.log(format!(
            "fault overload {a} lag={}..={} us",
            min.as_micros(),
            max.as_micros()
        ));
        self.hosts[a.0].lag = Some((min, max.max(min)));
    }

    /// End [`Sim::overload`]: inputs from now on are handled as they arrive (after the
    /// late ones still waiting, so nothing is reordered).
    pub fn relieve(&mut self, a: NodeIdx) {
        self.log(format!("fault relieve {a}"));
        self.hosts[a.0].lag = None;
    }

    /// Whether `a` is overloaded.
    pub fn is_overloaded(&self, a: NodeIdx) -> bool {
        self.hosts[a.0].lag.is_some()
    }

    /// Reset every connection of `a`: `a` sees each closed at once, the peer one
    /// latency later.
    pub fn reset_connections_of(&mut self, a: NodeIdx) {
        self.log(format!("fault reset_all {a}"));
        let ends: Vec<_> = self.hosts[a.0].conns.values().copied().collect();
        for (w, side) in ends {
            let latency = self
                .wires
                .get(&w)
                .map_or(Duration::ZERO, |w| w.profile.latency);
            let mut delays = [latency; 2];
            delays[side] = Duration::ZERO;
            self.reset_wire(w, delays, "manual");
        }
    }

    /// Silently stall every current connection between `a` and `b`: no more bytes flow
    /// either way and nobody is told (connections made later are not affected).
    pub fn stall(&mut self, a: NodeIdx, b: NodeIdx) {
        self.log(format!("fault stall {a} {b}"));
        for w in self.wires_between(a, b) {
            if let Some(wire) = self.wires.get_mut(&w) {
                wire.stalled = true;
            }
        }
    }

    /// Let stalled connections between `a` and `b` flow again.
    pub fn unstall(&mut self, a: NodeIdx, b: NodeIdx) {
        self.log(format!("fault unstall {a} {b}"));
        for w in self.wires_between(a, b) {
            if let Some(wire) = self.wires.get_mut(&w) {
                wire.stalled = false;
            }
            self.resume_wire(w);
        }
    }

    /// Change the random faults from now on.
    pub fn set_faults(&mut self, faults: FaultConfig) {
        self.log(format!("fault config {faults:?}"));
        self.config.faults = faults;
        self.schedule_fault_tick();
    }

    /// Link characteristics for connections made from now on between `a` and `b`.
    ///
    /// # Panics
    /// If the socket buffer is smaller than `MIN_TRANSMIT` (4096 bytes).
    pub fn set_profile(&mut self, a: NodeIdx, b: NodeIdx, profile: NetProfile) {
        check_profile(&profile);
        self.overrides.insert((a.min(b), a.max(b)), profile);
    }

    // ----- internals -----

    pub(crate) fn crash_host(&mut self, a: NodeIdx) {
        let host = &mut self.hosts[a.0];
        host.node = None;
        host.incarnation += 1;
        host.armed = None;
        host.paused_until = None;
        host.stopping = false;
        host.ready.clear();
        let ends = std::mem::take(&mut host.conns);
        for (w, side) in ends.into_values() {
            let Some(wire) = self.wires.get(&w) else {
                continue;
            };
            let other = 1 - side;
            // The crashed machine's kernel resets its connections; a peer behind a
            // partition only learns of it when its bytes get through (see `on_arrive`).
            let tell = wire.connected && wire.ends[other].open && self.flows(wire);
            let wire = self.wires.get_mut(&w).expect("present");
            let end = &mut wire.ends[side];
            end.open = false;
            end.out.clear(); // unsent and in-flight bytes are lost with the machine
            if tell {
                wire.dead = true;
                wire.ends[other].out.clear();
                let at = self.now + wire.profile.delay(&mut self.net_rng);
                self.sched.push(
                    at,
                    Ev::Notify {
                        wire: w,
                        side: other,
                    },
                );
            }
            self.gc(w);
        }
    }

    /// When an input for `n` that arrives now is handled, if not now: after its lag
    /// if overloaded, and never before the late inputs already waiting.
    pub(crate) fn lag_input(&mut self, n: NodeIdx) -> Option<Instant> {
        let now = self.now;
        let (lag, waiting) = (self.hosts[n.0].lag, self.hosts[n.0].lagged_until);
        if lag.is_none() && waiting.is_none_or(|t| t < now) {
            return None;
        }
        let delay = lag.map_or(Duration::ZERO, |(min, max)| {
            min + up_to(&mut self.fault_rng, max - min)
        });
        let at = waiting.map_or(now + delay, |t| t.max(now + delay));
        self.hosts[n.0].lagged_until = Some(at);
        Some(at)
    }

    pub(crate) fn schedule_fault_tick(&mut self) {
        if !self.fault_tick && self.config.faults.reset_probability > 0.0 {
            self.fault_tick = true;
            // Random phase, so faults do not line up with a test's own period.
            let tick = self.config.faults.tick;
            let next = tick / 2 + up_to(&mut self.fault_rng, tick);
            self.sched.push(self.now + next, Ev::FaultTick);
        }
    }

    pub(crate) fn on_fault_tick(&mut self) {
        self.fault_tick = false;
        let p = self.config.faults.reset_probability;
        if p <= 0.0 {
            return;
        }
        let candidates: Vec<WireId> = self
            .wires
            .iter()
            .filter(|(_, w)| w.connected && !w.dead && !w.finished())
            .map(|(id, _)| *id)
            .collect();
        for w in candidates {
            if chance(&mut self.fault_rng, p) {
                // Each end learns of it within one latency, independently.
                let latency = self.wires[&w].profile.latency;
                let delays = [
                    up_to(&mut self.fault_rng, latency),
                    up_to(&mut self.fault_rng, latency),
                ];
                self.reset_wire(w, delays, "random");
            }
        }
        self.schedule_fault_tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;
    use weft_mesh::node::NodeEvent;
    use weft_mesh::CloseReason;

    const SEC: Duration = Duration::from_secs(1);

    fn linked_pair() -> (Sim, NodeIdx, NodeIdx) {
        let mut sim = Sim::new(9, SimConfig::default());
        let mut config = sim.classical_config();
        config.membership = None;
        let (a, b) = (sim.add_node(config.clone()), sim.add_node(config));
        sim.seed(a, b);
        let up = sim.run_until(5 * SEC, |s| s.connected(a, b) && s.connected(b, a));
        assert!(up.is_some());
        (sim, a, b)
    }

    /// When `b` reported each one-byte message from `a`, with its payload.
    fn arrivals(sim: &Sim, b: NodeIdx) -> Vec<(Instant, u8)> {
        sim.events(b)
            .iter()
            .filter_map(|r| match &r.event {
                NodeEvent::Message { payload, .. } if payload.len() == 1 => {
                    Some((r.at, payload[0]))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_overloaded_node_handles_its_inputs_late_and_in_order() {
        let (mut sim, a, b) = linked_pair();
        sim.overload(b, SEC, 2 * SEC);
        assert!(sim.is_overloaded(b));
        let mut sent = Vec::new();
        for i in 0..20u8 {
            sent.push(sim.now());
            sim.send(a, b, &[i]).unwrap();
            sim.run_for(SEC / 20);
        }
        sim.run_for(5 * SEC);
        let got = arrivals(&sim, b);
        let order: Vec<u8> = got.iter().map(|(_, i)| *i).collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
        for ((at, i), sent) in got.iter().zip(&sent) {
            let late = *at - *sent;
            // The lag, plus the one-way latency (at most 7 ms here).
            assert!(late >= SEC && late <= 2 * SEC + SEC / 100, "{i}: {late:?}");
        }

        sim.relieve(b);
        assert!(!sim.is_overloaded(b));
        sim.run_for(3 * SEC); // the last late inputs drain
        let sent = sim.now();
        sim.send(a, b, &[99]).unwrap();
        sim.run_for(SEC);
        let (at, _) = *arrivals(&sim, b).last().unwrap();
        assert!(at - sent < SEC / 10, "on time again");
    }

    #[test]
    fn shutdown_tells_the_peer_and_stops_the_node() {
        let (mut sim, a, b) = linked_pair();
        sim.shutdown(b);
        sim.run_for(5 * SEC);
        assert!(!sim.is_up(b), "stopped once its link closed");
        assert_eq!(sim.peer_downs(a, b), [CloseReason::Normal]);
        sim.restart(b);
        let back = sim.run_until(5 * SEC, |s| s.connected(a, b));
        assert!(back.is_some(), "the seed link comes back after a restart");
    }

    #[test]
    fn groups_and_the_rest() {
        let n = NodeIdx;
        let p = Partition::split(&[vec![n(0), n(1)], vec![n(2)]]);
        assert!(!p.separated(n(0), n(1)));
        assert!(p.separated(n(1), n(2)));
        assert!(
            p.separated(n(0), n(3)),
            "unlisted nodes are their own group"
        );
        assert!(!p.separated(n(3), n(4)));
        assert!(!Partition::default().separated(n(0), n(2)), "healed");
    }
}
