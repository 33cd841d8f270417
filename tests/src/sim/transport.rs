//! How connections and bytes move: dials, accepts, serialization at the link's
//! bandwidth, in-order arrival, FINs and resets.

use std::time::Duration;

use weft_mesh::node::ConnId;
use weft_mesh::Instant;

use super::engine::Ev;
use super::network::{End, Piece, Side, Wire, WireId, ACCEPTOR, DIALER};
use super::{NodeIdx, Sim};

impl Sim {
    // ----- connections -----

    pub(crate) fn dial(&mut self, n: NodeIdx, conn: ConnId, addr: &str) {
        self.stats.dials += 1;
        let target = addr
            .strip_prefix("sim://")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&t| t < self.hosts.len() && t != n.0)
            .map(NodeIdx);
        let w = WireId(self.next_wire);
        self.next_wire += 1;
        let profile = target.map_or(self.config.net, |t| self.profile(n, t));
        let wire = Wire {
            ends: [End::new(n, Some(conn)), End::new(target.unwrap_or(n), None)],
            profile,
            stalled: false,
            dead: false,
            connected: false,
        };
        self.wires.insert(w, wire);
        self.hosts[n.0].conns.insert(conn, (w, DIALER));
        self.log(format!("{w} dial {n}->{addr}"));
        let delay = profile.delay(&mut self.net_rng);
        let ev = if target.is_some() {
            Ev::ConnectArrive { wire: w }
        } else {
            Ev::DialFailed {
                wire: w,
                why: "bad address",
            }
        };
        self.sched.push(self.now + delay, ev);
    }

    pub(crate) fn on_connect_arrive(&mut self, w: WireId) {
        let Some(wire) = self.wires.get(&w) else {
            return;
        };
        if wire.dead {
            return; // the dialer is being told
        }
        if !wire.ends[DIALER].open {
            self.wires.remove(&w); // the dialer gave up
            return;
        }
        let (a, b) = wire.nodes();
        let profile = wire.profile;
        if self.partition.separated(a, b) {
            let at = self.now + self.config.dial_timeout;
            self.sched.push(
                at,
                Ev::DialFailed {
                    wire: w,
                    why: "partitioned",
                },
            );
            return;
        }
        let delay = profile.delay(&mut self.net_rng);
        let now = self.now;
        let accepted = match &mut self.hosts[b.0].node {
            None => Err("target down"),
            Some(node) => node.accept(now, Some(a.addr())).map_err(|_| "refused"),
        };
        match accepted {
            Ok(conn) => {
                let wire = self.wires.get_mut(&w).expect("checked above");
                wire.connected = true;
                let end = &mut wire.ends[ACCEPTOR];
                end.conn = Some(conn);
                end.open = true;
                end.writable = true;
                self.hosts[b.0].conns.insert(conn, (w, ACCEPTOR));
                self.log(format!("{w} accept {b} {conn}"));
                self.sched.push(self.now + delay, Ev::Connected { wire: w });
                self.step(b);
            }
            Err(why) => {
                if let Some(wire) = self.wires.get_mut(&w) {
                    wire.connected = true;
                }
                self.sched
                    .push(self.now + delay, Ev::DialFailed { wire: w, why });
            }
        }
    }

    pub(crate) fn on_connected(&mut self, w: WireId) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        let end = &mut wire.ends[DIALER];
        if wire.dead || !end.open {
            return;
        }
        end.writable = true;
        let n = end.node;
        self.step(n);
    }

    pub(crate) fn on_dial_failed(&mut self, w: WireId, why: &'static str) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        // The acceptor never took this connection: nothing else refers to it.
        let end = &mut wire.ends[DIALER];
        let (open, n, conn) = (end.open, end.node, end.conn);
        self.wires.remove(&w);
        if open {
            self.stats.failed_dials += 1;
            self.log(format!("{w} dial_failed {n} {why}"));
            self.node_closed(n, conn);
        }
    }

    /// `n` learned that `conn` is gone: tell its node.
    pub(crate) fn node_closed(&mut self, n: NodeIdx, conn: Option<ConnId>) {
        let Some(conn) = conn else { return };
        let now = self.now;
        let host = &mut self.hosts[n.0];
        host.conns.remove(&conn);
        host.ready.remove(&conn);
        if let Some(node) = &mut host.node {
            node.handle_closed(now, conn);
            self.step(n);
        }
    }

    /// The node let go of its end: send a FIN behind the data already written.
    pub(crate) fn close_end(&mut self, w: WireId, side: Side) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        let end = &mut wire.ends[side];
        end.open = false;
        if !wire.dead && wire.connected {
            end.out.sendq.push_back(Piece::Fin);
        }
        if !self.gc(w) {
            self.kick(w, side);
        }
    }

    /// Forget a wire neither node holds any more. Returns whether it was removed.
    pub(crate) fn gc(&mut self, w: WireId) -> bool {
        let finished = self
            .wires
            .get(&w)
            .is_some_and(|wire| wire.finished() && (wire.connected || wire.dead));
        if finished {
            self.wires.remove(&w);
        }
        finished
    }

    pub(crate) fn flows(&self, wire: &Wire) -> bool {
        !wire.dead && !wire.stalled && !self.separated(wire)
    }

    /// Start serializing `side`'s next piece if the wire is idle and flowing.
    pub(crate) fn kick(&mut self, w: WireId, side: Side) {
        let Some(wire) = self.wires.get(&w) else {
            return;
        };
        if !self.flows(wire) || wire.ends[side].out.current.is_some() {
            return;
        }
        let wire = self.wires.get_mut(&w).expect("present");
        let profile = wire.profile;
        let pipe = &mut wire.ends[side].out;
        let rng = &mut self.net_rng;
        let Some(piece) = pipe.next_piece(|avail| profile.piece(rng, avail)) else {
            return;
        };
        let time = match &piece {
            Piece::Data(d) => profile.serialization(d.len()),
            Piece::Fin => Duration::ZERO,
        };
        pipe.current = Some(piece);
        self.sched
            .push(self.now + time, Ev::TxDone { wire: w, side });
    }

    pub(crate) fn on_tx_done(&mut self, w: WireId, side: Side) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        let profile = wire.profile;
        let end = &mut wire.ends[side];
        let Some(piece) = end.out.current.take() else {
            return; // reset meanwhile
        };
        if let Piece::Data(d) = &piece {
            end.out.buffered -= d.len();
        }
        let arrival = (self.now + profile.delay(&mut self.net_rng)).max(end.out.last_arrival);
        end.out.last_arrival = arrival;
        end.out.in_flight.push_back((arrival, piece));
        let (n, conn, open) = (end.node, end.conn, end.open);
        self.sched.push(
            arrival,
            Ev::Arrive {
                wire: w,
                side: 1 - side,
            },
        );
        self.kick(w, side);
        let wants = conn.is_some_and(|c| self.hosts[n.0].ready.contains(&c));
        if open && wants && !self.hosts[n.0].paused(self.now) {
            self.step(n);
        }
    }

    /// Pieces reach `side`: hand its node every byte that had arrived by `upto` (now,
    /// or earlier for an overloaded node that handles its inputs late).
    pub(crate) fn on_arrive(&mut self, w: WireId, side: Side, upto: Instant) {
        let Some(wire) = self.wires.get(&w) else {
            return;
        };
        if !self.flows(wire) {
            return; // held until the heal (or dropped by a reset)
        }
        let now = self.now;
        let wire = self.wires.get_mut(&w).expect("present");
        let from = 1 - side;
        let pipe = &mut wire.ends[from].out;
        let mut data = Vec::new();
        let mut fin = false;
        while pipe.in_flight.front().is_some_and(|(at, _)| *at <= upto) {
            match pipe.in_flight.pop_front() {
                Some((_, Piece::Data(d))) => data.extend_from_slice(&d),
                Some((_, Piece::Fin)) => {
                    fin = true;
                    break;
                }
                None => break,
            }
        }
        if data.is_empty() && !fin {
            return;
        }
        let end = &mut wire.ends[side];
        if !end.open {
            // Bytes for a socket that is gone: the sender gets a reset, behind whatever
            // the closed side sent before (its Close record and FIN, say).
            if !data.is_empty() && wire.ends[from].open {
                let at = (now + wire.profile.latency).max(wire.ends[side].out.last_arrival);
                let sender = wire.ends[from].node;
                self.sched.push(
                    at,
                    Ev::Notify {
                        wire: w,
                        side: from,
                    },
                );
                self.log(format!("{w} rst to {sender}"));
            } else {
                self.gc(w);
            }
            return;
        }
        let (n, conn) = (end.node, end.conn.expect("an open end has a conn"));
        if fin {
            end.open = false;
        }
        if !data.is_empty() {
            self.stats.bytes_delivered += data.len() as u64;
            if let Some(node) = &mut self.hosts[n.0].node {
                node.handle_bytes(now, conn, &data);
            }
        }
        if fin {
            self.log(format!("{w} fin to {n}"));
            self.node_closed(n, Some(conn));
            self.gc(w);
        } else {
            self.step(n);
        }
    }

    pub(crate) fn on_notify(&mut self, w: WireId, side: Side) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        let end = &mut wire.ends[side];
        if !end.open {
            return;
        }
        end.open = false;
        let (n, conn) = (end.node, end.conn);
        self.node_closed(n, conn);
        self.gc(w);
    }

    /// Reset a connection: drop its bytes and tell each open end after `delays[side]`.
    pub(crate) fn reset_wire(&mut self, w: WireId, delays: [Duration; 2], why: &str) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        if wire.dead {
            return;
        }
        wire.dead = true;
        let (a, b) = wire.nodes();
        for (side, end) in wire.ends.iter_mut().enumerate() {
            end.out.clear();
            if end.open {
                self.sched
                    .push(self.now + delays[side], Ev::Notify { wire: w, side });
            }
        }
        self.stats.resets += 1;
        self.log(format!("{w} reset {a}-{b} {why}"));
        self.gc(w);
    }

    /// Flow again after a stall or partition: restart both senders and deliver what
    /// was held in flight.
    pub(crate) fn resume_wire(&mut self, w: WireId) {
        let Some(wire) = self.wires.get(&w) else {
            return;
        };
        if !self.flows(wire) {
            return;
        }
        let heads: Vec<(Side, Instant)> = (0..2)
            .filter_map(|s| wire.ends[s].out.in_flight.front().map(|(at, _)| (s, *at)))
            .collect();
        for (from, at) in heads {
            self.sched.push(
                at.max(self.now),
                Ev::Arrive {
                    wire: w,
                    side: 1 - from,
                },
            );
        }
        for side in 0..2 {
            self.kick(w, side);
        }
    }
}
