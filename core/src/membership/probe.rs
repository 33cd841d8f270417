//! Probing: the shuffled round-robin order, direct and indirect probes, the
//! probes this node runs for others (relays), suspicion timeouts and the periodic
//! push-pull.

use alloc::collections::btree_map::Entry;
use alloc::vec::Vec;

use super::config::SwimConfig;
use super::member::{MemberState, Members};
use super::packet::{Message, Update};
use super::swim::Swim;
use crate::{Instant, NodeId, Rng};

/// The probe in flight this round.
pub(crate) struct Probe {
    pub(crate) target: NodeId,
    seq: u32,
    /// When to ask helpers (`None` once asked).
    pub(crate) indirect_at: Option<Instant>,
    helpers: Vec<NodeId>,
    nacked: Vec<NodeId>,
}

/// An indirect probe run for another member.
pub(crate) struct Relay {
    requester: NodeId,
    requester_seq: u32,
    target: NodeId,
    /// When to nack (`None` once sent).
    pub(crate) nack_at: Option<Instant>,
    /// When to forget it (a later ack is no longer relayed).
    pub(crate) expires: Instant,
}

/// Members in a random order, each probed once per pass, without a list: a pass
/// ranks the live members by a keyed mix of their ids (a fresh random key each pass)
/// and probes them in rank order, finding the next one by a scan (O(N) per probe round,
/// no memory per member). A member that joins during a pass is probed in it when it
/// ranks after the cursor, else in the next pass, like memberlist's insertion at a
/// random position.
#[derive(Default)]
pub(crate) struct ProbeOrder {
    /// This pass's key; `None` before the first (every member must draw its own).
    key: Option<u64>,
    cursor: Option<(u64, NodeId)>,
}

impl ProbeOrder {
    fn rank(key: u64, node: &NodeId) -> (u64, NodeId) {
        let head = node
            .as_bytes()
            .first_chunk::<8>()
            .copied()
            .unwrap_or_default();
        (mix(u64::from_le_bytes(head) ^ key), *node)
    }

    /// The next live member to probe.
    pub(crate) fn next(&mut self, members: &Members, rng: &mut Rng) -> Option<NodeId> {
        let mut key = *self.key.get_or_insert_with(|| rng.next_u64());
        for _ in 0..2 {
            let next = members
                .iter()
                .filter(|(_, m)| m.state.is_live())
                .map(|(node, _)| Self::rank(key, node))
                .filter(|r| self.cursor.is_none_or(|c| *r > c))
                .min();
            if let Some(r) = next {
                self.cursor = Some(r);
                return Some(r.1);
            }
            // The pass is over: a new order.
            key = rng.next_u64();
            self.key = Some(key);
            self.cursor = None;
        }
        None
    }
}

/// SplitMix64's finaliser: a bijection that scatters keyed ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random index below `n` (`n > 0`).
pub(crate) fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

impl Swim {
    /// End the current round (a probe still in flight failed) and start the next.
    pub(super) fn probe_round(&mut self, now: Instant) {
        if let Some(p) = self.probe.take() {
            self.probe_failed(now, p);
        }
        for node in self.members.reap(now, self.config.dead_ttl) {
            self.broadcasts.remove(&node);
            self.suspicions.remove(&node);
        }
        self.next_probe = Some(now + self.config.round(self.health));
        let Some(target) = self.probe_order.next(&self.members, &mut self.rng) else {
            return;
        };
        let seq = self.next_seq();
        self.send(target, Message::Ping { seq });
        self.stats.probes_sent += 1;
        let timeout = SwimConfig::scaled(self.config.probe_timeout, self.health);
        self.probe = Some(Probe {
            target,
            seq,
            indirect_at: Some(now + timeout),
            helpers: Vec::new(),
            nacked: Vec::new(),
        });
    }

    /// Lifeguard: a failed probe costs 1 health point, or one per helper that did
    /// not even nack; then the target is suspected.
    fn probe_failed(&mut self, now: Instant, p: Probe) {
        let Some(m) = self.members.get(&p.target) else {
            return;
        };
        if !m.state.is_live() {
            return;
        }
        let suspect = Update::Suspect {
            node: p.target,
            incarnation: m.incarnation,
            from: self.me,
        };
        let missed = if p.helpers.is_empty() {
            1
        } else {
            p.helpers.len().saturating_sub(p.nacked.len()) as u32
        };
        self.health_up(missed);
        if self.apply(now, suspect) {
            self.stats.suspicions_raised += 1;
        }
    }

    /// No ack within the probe timeout: ask `k` random alive members to probe.
    pub(super) fn indirect_due(&mut self, now: Instant) {
        let Some(p) = &self.probe else {
            return;
        };
        if p.indirect_at.is_none_or(|t| t > now) {
            return;
        }
        let (target, seq) = (p.target, p.seq);
        let helpers = self.random_members(self.config.indirect_checks, |node, m| {
            m.state == MemberState::Alive && *node != target
        });
        for helper in &helpers {
            self.send(*helper, Message::PingReq { seq, target });
        }
        self.stats.indirect_probes += helpers.len() as u64;
        if let Some(p) = &mut self.probe {
            p.indirect_at = None;
            p.helpers = helpers;
        }
    }

    /// An ack: for our probe (from its target or one of its helpers), or for a
    /// relay (from its target), which is passed on to the requester.
    pub(super) fn on_ack(&mut self, from: NodeId, seq: u32) {
        if let Some(p) = &self.probe {
            if p.seq == seq && (from == p.target || p.helpers.contains(&from)) {
                self.probe = None;
                self.stats.acks_received += 1;
                self.health_down();
                return;
            }
        }
        if let Entry::Occupied(e) = self.relays.entry(seq) {
            if e.get().target == from {
                let r = e.remove();
                self.send(
                    r.requester,
                    Message::Ack {
                        seq: r.requester_seq,
                    },
                );
            }
        }
    }

    /// A helper could not reach our target either (so it is not us who is slow).
    pub(super) fn on_nack(&mut self, from: NodeId, seq: u32) {
        if let Some(p) = &mut self.probe {
            if p.seq == seq && p.helpers.contains(&from) && !p.nacked.contains(&from) {
                p.nacked.push(from);
            }
        }
    }

    /// Probe `target` for `from`: ack back if it answers, nack at 80 % of the timeout.
    pub(super) fn on_ping_req(&mut self, now: Instant, from: NodeId, seq: u32, target: NodeId) {
        if self.left || target == self.me || target == from {
            return;
        }
        if self.relays.len() >= self.config.max_relays {
            self.stats.relays_refused += 1;
            return;
        }
        let own = self.next_seq();
        self.send(target, Message::Ping { seq: own });
        self.relays.insert(
            own,
            Relay {
                requester: from,
                requester_seq: seq,
                target,
                nack_at: Some(now + self.config.nack_after()),
                expires: now + self.config.probe_timeout,
            },
        );
    }

    /// Send due nacks and forget expired relays.
    pub(super) fn relay_timers(&mut self, now: Instant) {
        let mut nacks = Vec::new();
        for r in self.relays.values_mut() {
            if r.nack_at.is_some_and(|t| t <= now) {
                r.nack_at = None;
                nacks.push((r.requester, r.requester_seq));
            }
        }
        self.relays.retain(|_, r| r.expires > now);
        for (to, seq) in nacks {
            self.send(to, Message::Nack { seq });
        }
    }

    /// Suspicions that ran out: the member is dead.
    pub(super) fn suspicion_timers(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let due: Vec<NodeId> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline(self.health) <= now)
            .map(|(node, _)| *node)
            .collect();
        for node in due {
            self.suspicions.remove(&node);
            let Some(m) = self.members.get(&node) else {
                continue;
            };
            let dead = Update::Dead {
                node,
                incarnation: m.incarnation,
                from: self.me,
            };
            if self.apply(now, dead) {
                self.stats.declared_down += 1;
            }
        }
    }

    /// Exchange full state with one random alive member.
    pub(super) fn push_pull_round(&mut self, now: Instant) {
        self.next_push_pull = Some(now + self.config.push_pull_interval);
        let pick = self.random_members(1, |_, m| m.state == MemberState::Alive);
        if let Some(node) = pick.first() {
            self.queue_push_pull(*node, true);
        }
    }
}
