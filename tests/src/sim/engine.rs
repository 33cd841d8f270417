//! The event loop: what each scheduled event does to the nodes and the network.

use weft_mesh::link::{MAX_TRANSMIT, MIN_TRANSMIT};
use weft_mesh::node::{Action, ConnId, NodeEvent};
use weft_mesh::Instant;

use super::network::{Side, WireId, ACCEPTOR, DIALER};
use super::trace::describe;
use super::{NodeIdx, Sim};

/// Most events at one instant before the run is declared stuck.
const SPIN_LIMIT: u64 = 2_000_000;
/// Most timer firings of one node at one instant before its timer is declared stuck.
const TIMER_SPIN_LIMIT: u32 = 1_000;

/// Something that happens at an instant.
#[derive(Debug)]
pub(crate) enum Ev {
    /// A node's timer (as armed from `poll_timeout`).
    Timer {
        node: NodeIdx,
        incarnation: u32,
        at: Instant,
    },
    /// A dial reaches its target.
    ConnectArrive { wire: WireId },
    /// The dialer learns that the target accepted (the SYN-ACK).
    Connected { wire: WireId },
    /// The dialer learns that the dial failed.
    DialFailed { wire: WireId, why: &'static str },
    /// A piece finished leaving `side`'s send buffer.
    TxDone { wire: WireId, side: Side },
    /// Pieces reach `side` (the receiving end).
    Arrive { wire: WireId, side: Side },
    /// `side`'s node learns that the connection is gone (a reset).
    Notify { wire: WireId, side: Side },
    /// A pause ends.
    Resume { node: NodeIdx, incarnation: u32 },
    /// Draw the random faults.
    FaultTick,
    /// An input that happened at `at`, handled late by an overloaded node.
    Late { ev: Box<Ev>, at: Instant },
}

impl Sim {
    /// Process events up to `deadline` or until `pred` holds; returns whether it held.
    pub(crate) fn run_to(
        &mut self,
        deadline: Instant,
        mut pred: Option<&mut dyn FnMut(&Sim) -> bool>,
    ) -> bool {
        loop {
            if let Some(p) = pred.as_mut() {
                if p(self) {
                    return true;
                }
            }
            let Some(t) = self.sched.peek_time() else {
                break;
            };
            if t > deadline {
                break;
            }
            assert!(t >= self.now, "an event was scheduled in the past");
            self.now = t;
            let mut n = 0u64;
            while self.sched.peek_time() == Some(t) {
                let Some((_, ev)) = self.sched.pop() else {
                    break;
                };
                self.dispatch(ev);
                self.stats.events += 1;
                n += 1;
                assert!(
                    n <= SPIN_LIMIT,
                    "more than {SPIN_LIMIT} events at t={} us: virtual time does not advance",
                    t.as_micros()
                );
            }
        }
        self.now = self.now.max(deadline);
        pred.is_some_and(|p| p(self))
    }

    /// The node an event is processed by (deferred while that node is paused).
    fn target(&self, ev: &Ev) -> Option<NodeIdx> {
        let end = |wire: &WireId, side: Side| self.wires.get(wire).map(|w| w.ends[side].node);
        match ev {
            Ev::Timer { node, .. } => Some(*node),
            Ev::ConnectArrive { wire } => end(wire, ACCEPTOR),
            Ev::Connected { wire } | Ev::DialFailed { wire, .. } => end(wire, DIALER),
            Ev::Arrive { wire, side } | Ev::Notify { wire, side } => end(wire, *side),
            Ev::Late { ev, .. } => self.target(ev),
            Ev::TxDone { .. } | Ev::Resume { .. } | Ev::FaultTick => None,
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Some(n) = self.target(&ev) {
            if let Some(until) = self.hosts[n.0].paused_until.filter(|t| self.now < *t) {
                self.sched.push(until, ev);
                return;
            }
            let input = !matches!(ev, Ev::Timer { .. } | Ev::Late { .. });
            if input {
                if let Some(at) = self.lag_input(n) {
                    let now = self.now;
                    self.sched.push(
                        at,
                        Ev::Late {
                            ev: Box::new(ev),
                            at: now,
                        },
                    );
                    return;
                }
            }
        }
        self.handle(ev, self.now);
    }

    /// Carry out `ev`, an input that happened at `at` (earlier than now if it waited
    /// for an overloaded node).
    fn handle(&mut self, ev: Ev, at: Instant) {
        match ev {
            Ev::Timer {
                node,
                incarnation,
                at,
            } => self.on_timer(node, incarnation, at),
            Ev::ConnectArrive { wire } => self.on_connect_arrive(wire),
            Ev::Connected { wire } => self.on_connected(wire),
            Ev::DialFailed { wire, why } => self.on_dial_failed(wire, why),
            Ev::TxDone { wire, side } => self.on_tx_done(wire, side),
            Ev::Arrive { wire, side } => self.on_arrive(wire, side, at),
            Ev::Notify { wire, side } => self.on_notify(wire, side),
            Ev::Resume { node, incarnation } => self.on_resume(node, incarnation),
            Ev::FaultTick => self.on_fault_tick(),
            Ev::Late { ev, at } => self.handle(*ev, at),
        }
    }

    // ----- nodes -----

    /// After any input to `n`: carry out its actions, pull bytes for sockets with room,
    /// record its events and re-arm its timer.
    pub(crate) fn step(&mut self, n: NodeIdx) {
        if self.hosts[n.0].node.is_none() {
            return;
        }
        loop {
            while let Some(action) = self.hosts[n.0].node.as_mut().and_then(|x| x.poll_action()) {
                self.act(n, action);
            }
            if !self.pump(n) {
                break;
            }
        }
        self.drain_events(n);
        let host = &self.hosts[n.0];
        if host.stopping && host.node.as_ref().is_some_and(|x| x.is_idle()) {
            self.log(format!("{n} stopped"));
            self.crash_host(n);
            return;
        }
        self.rearm(n);
    }

    fn act(&mut self, n: NodeIdx, action: Action) {
        match action {
            Action::Dial { conn, addr } => self.dial(n, conn, &addr),
            Action::Transmit { conn } => {
                let host = &mut self.hosts[n.0];
                if host.conns.contains_key(&conn) {
                    host.ready.insert(conn);
                }
            }
            Action::Close { conn } => {
                let host = &mut self.hosts[n.0];
                host.ready.remove(&conn);
                if let Some((w, side)) = host.conns.remove(&conn) {
                    self.close_end(w, side);
                }
            }
            other => panic!("the simulator does not know the action {other:?}"),
        }
    }

    fn drain_events(&mut self, n: NodeIdx) {
        while let Some(event) = self.hosts[n.0].node.as_mut().and_then(|x| x.poll_event()) {
            let text = describe(&event, |id| self.short(id));
            self.log(format!("{n} {text}"));
            if let (
                true,
                NodeEvent::Request {
                    request, payload, ..
                },
            ) = (self.config.echo_requests, &event)
            {
                let now = self.now;
                if let Some(node) = self.hosts[n.0].node.as_mut() {
                    let _ = node.respond(now, *request, payload.clone());
                }
            }
            let host = &mut self.hosts[n.0];
            host.events.push(super::Recorded {
                at: self.now,
                incarnation: host.incarnation,
                event,
            });
        }
    }

    fn rearm(&mut self, n: NodeIdx) {
        let host = &mut self.hosts[n.0];
        let Some(node) = &mut host.node else { return };
        let deadline = node.poll_timeout();
        if deadline != host.armed {
            host.armed = deadline;
            if let Some(at) = deadline {
                assert!(at >= self.now, "{n}: poll_timeout returned a past deadline");
                let incarnation = host.incarnation;
                self.sched.push(
                    at,
                    Ev::Timer {
                        node: n,
                        incarnation,
                        at,
                    },
                );
            }
        }
    }

    fn on_timer(&mut self, n: NodeIdx, incarnation: u32, at: Instant) {
        let now = self.now;
        let host = &mut self.hosts[n.0];
        if host.incarnation != incarnation || host.armed != Some(at) {
            return; // superseded
        }
        host.armed = None;
        let Some(node) = &mut host.node else { return };
        node.handle_timeout(now);
        if self.timer_spin.0 == n && self.timer_spin.1 == now {
            self.timer_spin.2 += 1;
            assert!(
                self.timer_spin.2 < TIMER_SPIN_LIMIT,
                "{n}: poll_timeout keeps returning t={} us after handle_timeout at that time \
                 (a busy loop in a real driver)",
                now.as_micros()
            );
        } else {
            self.timer_spin = (n, now, 1);
        }
        self.step(n);
    }

    fn on_resume(&mut self, n: NodeIdx, incarnation: u32) {
        let host = &mut self.hosts[n.0];
        if host.incarnation != incarnation || host.paused_until != Some(self.now) {
            return; // crashed, or the pause was extended
        }
        host.paused_until = None;
        self.log(format!("{n} resume"));
        self.step(n);
    }

    /// Pull records from `n` for every ready connection whose socket has room. Returns
    /// whether `poll_transmit` was called.
    fn pump(&mut self, n: NodeIdx) -> bool {
        let now = self.now;
        let host = &mut self.hosts[n.0];
        if host.paused(now) || host.ready.is_empty() {
            return false;
        }
        let Some(node) = &mut host.node else {
            return false;
        };
        let ready: Vec<ConnId> = host.ready.iter().copied().collect();
        let mut pulled = false;
        let mut kicks = Vec::new();
        for conn in ready {
            let Some(&(w, side)) = host.conns.get(&conn) else {
                host.ready.remove(&conn);
                continue;
            };
            let Some(wire) = self.wires.get_mut(&w) else {
                continue;
            };
            let capacity = wire.profile.socket_buffer;
            let end = &mut wire.ends[side];
            while end.writable && !wire.dead {
                let room = end.out.room(capacity);
                if room < MIN_TRANSMIT {
                    break;
                }
                let buf = &mut self.scratch[..room.min(MAX_TRANSMIT)];
                pulled = true;
                match node.poll_transmit(now, conn, buf) {
                    Some(k) => {
                        end.out.write(&buf[..k]);
                        self.stats.max_buffered = self.stats.max_buffered.max(end.out.buffered);
                    }
                    None => {
                        host.ready.remove(&conn);
                        break;
                    }
                }
            }
            kicks.push((w, side));
        }
        for (w, side) in kicks {
            self.kick(w, side);
        }
        pulled
    }
}
