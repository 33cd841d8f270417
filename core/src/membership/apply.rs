//! Update precedence (memberlist's rules), refutation and the push-pull merge.
//!
//! * Alive{i} overrides Alive/Suspect{j < i} and Dead/Left{j < i}.
//! * Suspect{i} overrides Alive{j <= i}; about a suspect with `i >= j` it is a
//!   confirmation from its sender.
//! * Dead{i} and Left{i} override Alive/Suspect{j <= i}.
//! * Anything about this node at or above its incarnation is refuted (an Alive only
//!   if newer or with other addresses).

use alloc::string::String;
use alloc::vec::Vec;

use super::member::{Member, MemberState};
use super::packet::Update;
use super::suspicion::Suspicion;
use super::swim::{MemberEvent, Swim};
use crate::{Instant, NodeId};

impl Swim {
    /// Apply an update heard from the network or raised here; one that changed
    /// something is queued for gossip. Returns whether it did.
    pub(super) fn apply(&mut self, now: Instant, update: Update) -> bool {
        if update.node() == self.me {
            self.about_me(&update);
            return false;
        }
        let changed = match &update {
            Update::Alive {
                node,
                incarnation,
                addrs,
            } => self.alive(now, *node, *incarnation, addrs),
            Update::Suspect {
                node,
                incarnation,
                from,
            } => self.suspect(now, *node, *incarnation, *from),
            Update::Dead {
                node, incarnation, ..
            } => self.down(now, *node, *incarnation, MemberState::Dead),
            Update::Left { node, incarnation } => {
                self.down(now, *node, *incarnation, MemberState::Left)
            }
        };
        if changed {
            self.broadcasts.push(update);
        }
        changed
    }

    /// Merge a push-pull's state from `from`. As in memberlist, a member the sender
    /// believes dead is only suspected here (confirmed by the sender).
    pub(super) fn merge_state(&mut self, now: Instant, from: NodeId, state: Vec<Update>) {
        for entry in state {
            let update = match entry {
                Update::Suspect {
                    node, incarnation, ..
                }
                | Update::Dead {
                    node, incarnation, ..
                } => Update::Suspect {
                    node,
                    incarnation,
                    from,
                },
                other => other,
            };
            self.apply(now, update);
        }
    }

    fn about_me(&mut self, update: &Update) {
        if self.left {
            return;
        }
        let accused = match update {
            Update::Alive {
                incarnation, addrs, ..
            } => {
                let same = *incarnation == self.incarnation && *addrs == self.addrs;
                if *incarnation < self.incarnation || same {
                    return;
                }
                *incarnation
            }
            Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. }
            | Update::Left { incarnation, .. } => {
                if *incarnation < self.incarnation {
                    return;
                }
                *incarnation
            }
        };
        self.incarnation = accused.saturating_add(1).max(self.incarnation);
        self.stats.refutations += 1;
        self.health_up(1);
        self.broadcasts.push(self.self_update());
    }

    fn alive(&mut self, now: Instant, node: NodeId, incarnation: u64, addrs: &[String]) -> bool {
        let Some(m) = self.members.get(&node) else {
            let row = Member::new(MemberState::Alive, incarnation, addrs, now, true);
            if !self.members.insert(node, row) {
                self.stats.members_refused += 1;
                return false;
            }
            self.event(MemberEvent::Up {
                node,
                addrs: addrs.to_vec(),
            });
            return true;
        };
        // A row made by `contact` takes the member's own word at any incarnation.
        if incarnation < m.incarnation || (incarnation == m.incarnation && m.heard) {
            return false;
        }
        let was = m.state;
        self.members
            .set(now, &node, MemberState::Alive, incarnation);
        self.members.heard(&node, addrs);
        self.suspicions.remove(&node);
        match was {
            MemberState::Alive => {}
            MemberState::Suspect => self.event(MemberEvent::Alive { node }),
            MemberState::Dead | MemberState::Left => {
                self.event(MemberEvent::Up {
                    node,
                    addrs: addrs.to_vec(),
                });
            }
        }
        true
    }

    fn suspect(&mut self, now: Instant, node: NodeId, incarnation: u64, from: NodeId) -> bool {
        let Some(m) = self.members.get(&node) else {
            return false;
        };
        if incarnation < m.incarnation {
            return false;
        }
        match m.state {
            MemberState::Dead | MemberState::Left => false,
            MemberState::Suspect if incarnation > m.incarnation => {
                // It refuted the old suspicion (we missed the Alive): a new one starts.
                self.members
                    .set(now, &node, MemberState::Suspect, incarnation);
                self.start_suspicion(now, node, from);
                true
            }
            MemberState::Suspect => match self.suspicions.get_mut(&node) {
                Some(s) => s.confirm(from),
                None => {
                    self.start_suspicion(now, node, from);
                    false
                }
            },
            MemberState::Alive => {
                self.members
                    .set(now, &node, MemberState::Suspect, incarnation);
                self.start_suspicion(now, node, from);
                self.event(MemberEvent::Suspect { node, incarnation });
                true
            }
        }
    }

    fn start_suspicion(&mut self, now: Instant, node: NodeId, from: NodeId) {
        let n = self.alive_count();
        let (min, max) = self.config.suspicion_bounds(n);
        let k = self.config.expected_confirmations(n);
        self.suspicions
            .insert(node, Suspicion::new(now, from, min, max, k));
    }

    fn down(&mut self, now: Instant, node: NodeId, incarnation: u64, state: MemberState) -> bool {
        let Some(m) = self.members.get(&node) else {
            return false;
        };
        if incarnation < m.incarnation {
            return false;
        }
        let was = m.state;
        if !was.is_live() {
            // Already down: only remember a newer incarnation (to refuse stale Alives).
            if incarnation > m.incarnation {
                self.members.set(now, &node, was, incarnation);
            }
            return false;
        }
        self.members.set(now, &node, state, incarnation);
        self.suspicions.remove(&node);
        self.event(if state == MemberState::Left {
            MemberEvent::Left { node }
        } else {
            MemberEvent::Down { node }
        });
        true
    }
}
