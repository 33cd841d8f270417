//! The member table: every other node this one knows of, bounded, with a running
//! count of the live (alive or suspect) ones.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Bound;
use core::time::Duration;

use crate::{Instant, NodeId};

/// What a node believes about a member.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemberState {
    /// Answering probes (or not yet found otherwise).
    Alive,
    /// Missed a probe round; declared dead unless it refutes in time.
    Suspect,
    /// Declared dead: its suspicion timed out.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Alive or suspect: probed, counted in N.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// A member as listed by [`Swim::members`](super::Swim::members).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MemberInfo {
    /// The member.
    pub node: NodeId,
    /// What this node believes about it.
    pub state: MemberState,
    /// Its incarnation number as last heard.
    pub incarnation: u64,
    /// Its advertised addresses (empty until heard from it or about it).
    pub addrs: Vec<String>,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) state: MemberState,
    pub(crate) incarnation: u64,
    pub(crate) addrs: Vec<String>,
    /// When `state` last changed (dead and left rows expire from here).
    pub(crate) since: Instant,
    /// False for a row made by `contact` and not yet confirmed by any Alive update:
    /// such a row is never gossiped, and the first Alive at any incarnation replaces it.
    pub(crate) heard: bool,
}

/// Every other known node, at most `capacity` of them.
pub(crate) struct Members {
    rows: BTreeMap<NodeId, Member>,
    live: usize,
    capacity: usize,
}

impl Members {
    pub(crate) fn new(capacity: usize) -> Self {
        Members {
            rows: BTreeMap::new(),
            live: 0,
            capacity,
        }
    }

    pub(crate) fn get(&self, node: &NodeId) -> Option<&Member> {
        self.rows.get(node)
    }

    /// Rows of any state.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Alive and suspect rows.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Add a row for an unknown node; `false` (nothing changed) when full or known.
    pub(crate) fn insert(&mut self, node: NodeId, member: Member) -> bool {
        if self.rows.len() >= self.capacity || self.rows.contains_key(&node) {
            return false;
        }
        if member.state.is_live() {
            self.live += 1;
        }
        self.rows.insert(node, member);
        true
    }

    /// Change a known row's state and incarnation; returns the previous state.
    pub(crate) fn set(
        &mut self,
        now: Instant,
        node: &NodeId,
        state: MemberState,
        incarnation: u64,
    ) -> Option<MemberState> {
        let row = self.rows.get_mut(node)?;
        let was = row.state;
        match (was.is_live(), state.is_live()) {
            (true, false) => self.live -= 1,
            (false, true) => self.live += 1,
            _ => {}
        }
        if was != state {
            row.since = now;
        }
        row.state = state;
        row.incarnation = incarnation;
        Some(was)
    }

    /// Record that the node's own word was heard, with its addresses.
    pub(crate) fn heard(&mut self, node: &NodeId, addrs: Vec<String>) {
        if let Some(row) = self.rows.get_mut(node) {
            row.heard = true;
            row.addrs = addrs;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Member)> {
        self.rows.iter()
    }

    /// Rows after `cursor` in id order (all rows when `None`).
    pub(crate) fn after(&self, cursor: Option<NodeId>) -> impl Iterator<Item = (&NodeId, &Member)> {
        let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        self.rows.range((from, Bound::Unbounded))
    }

    /// Forget dead and left rows older than `ttl`; returns the forgotten nodes.
    pub(crate) fn reap(&mut self, now: Instant, ttl: Duration) -> Vec<NodeId> {
        let mut gone = Vec::new();
        self.rows.retain(|node, row| {
            let keep = row.state.is_live() || now < row.since + ttl;
            if !keep {
                gone.push(*node);
            }
            keep
        });
        gone
    }
}

impl MemberInfo {
    pub(crate) fn of(node: NodeId, m: &Member) -> Self {
        MemberInfo {
            node,
            state: m.state,
            incarnation: m.incarnation,
            addrs: m.addrs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    fn row(state: MemberState) -> Member {
        Member {
            state,
            incarnation: 0,
            addrs: Vec::new(),
            since: Instant::ZERO,
            heard: true,
        }
    }

    #[test]
    fn the_table_is_bounded_and_counts_live_rows() {
        let mut t = Members::new(2);
        assert!(t.insert(n(1), row(MemberState::Alive)));
        assert!(!t.insert(n(1), row(MemberState::Alive)), "known");
        assert!(t.insert(n(2), row(MemberState::Dead)));
        assert!(!t.insert(n(3), row(MemberState::Alive)), "full");
        assert_eq!((t.len(), t.live()), (2, 1));
        assert_eq!(
            t.set(Instant::ZERO, &n(1), MemberState::Suspect, 1),
            Some(MemberState::Alive)
        );
        assert_eq!(t.live(), 1);
        t.set(Instant::ZERO, &n(1), MemberState::Left, 2);
        assert_eq!(t.live(), 0);
        t.set(Instant::ZERO, &n(2), MemberState::Alive, 2);
        assert_eq!(t.live(), 1);
        assert_eq!(t.set(Instant::ZERO, &n(9), MemberState::Alive, 0), None);
    }

    #[test]
    fn only_dead_and_left_rows_expire() {
        let mut t = Members::new(8);
        let ttl = Duration::from_secs(10);
        t.insert(n(1), row(MemberState::Alive));
        t.insert(n(2), row(MemberState::Dead));
        t.insert(n(3), row(MemberState::Alive));
        t.set(
            Instant::ZERO + Duration::from_secs(5),
            &n(3),
            MemberState::Left,
            1,
        );
        assert!(t
            .reap(Instant::ZERO + Duration::from_secs(9), ttl)
            .is_empty());
        assert_eq!(t.reap(Instant::ZERO + Duration::from_secs(10), ttl), [n(2)]);
        assert_eq!(t.reap(Instant::ZERO + Duration::from_secs(15), ttl), [n(3)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.after(Some(n(0))).count(), 1);
        assert_eq!(t.after(Some(n(1))).count(), 0);
    }
}
