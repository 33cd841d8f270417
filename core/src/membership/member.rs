//! The member table: every other node this one knows of, bounded, with a running
//! count of the live (alive or suspect) ones.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
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

/// A member's advertised addresses, packed: each as `[u8 len][bytes]` in one
/// allocation of exactly their size (none: no allocation). At most 4 addresses of 1 to
/// 255 bytes reach the table (`valid_addrs`); longer ones are cut off here anyway.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub(crate) struct Addrs(Option<Box<[u8]>>);

impl Addrs {
    pub(crate) fn new(addrs: &[String]) -> Self {
        if addrs.is_empty() {
            return Addrs(None);
        }
        let mut packed = Vec::with_capacity(addrs.iter().map(|a| a.len().min(255) + 1).sum());
        for a in addrs {
            let bytes = &a.as_bytes()[..a.len().min(255)];
            packed.push(bytes.len() as u8);
            packed.extend_from_slice(bytes);
        }
        Addrs(Some(packed.into_boxed_slice()))
    }

    /// The addresses as strings (a cut that split a character is dropped).
    pub(crate) fn to_vec(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest: &[u8] = self.0.as_deref().unwrap_or_default();
        while let Some((&len, tail)) = rest.split_first() {
            let (addr, next) = tail.split_at(usize::from(len).min(tail.len()));
            if let Ok(a) = core::str::from_utf8(addr) {
                out.push(String::from(a));
            }
            rest = next;
        }
        out
    }
}

/// One row of the table (24 bytes beside its 32-byte id).
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) incarnation: u64,
    pub(crate) addrs: Addrs,
    /// When `state` last changed, in whole seconds of [`Instant`] (dead and left rows
    /// expire from here).
    since_secs: u32,
    pub(crate) state: MemberState,
    /// False for a row made by `contact` and not yet confirmed by any Alive update:
    /// such a row is never gossiped, and the first Alive at any incarnation replaces it.
    pub(crate) heard: bool,
}

fn secs(t: Instant) -> u32 {
    u32::try_from(t.as_micros() / 1_000_000).unwrap_or(u32::MAX)
}

impl Member {
    pub(crate) fn new(
        state: MemberState,
        incarnation: u64,
        addrs: &[String],
        now: Instant,
        heard: bool,
    ) -> Self {
        Member {
            incarnation,
            addrs: Addrs::new(addrs),
            since_secs: secs(now),
            state,
            heard,
        }
    }
}

/// Every other known node, at most `capacity` of them, in a vector sorted by id: no
/// per-row allocation beyond the addresses, and at most 1/8 spare capacity.
pub(crate) struct Members {
    rows: Vec<(NodeId, Member)>,
    live: usize,
    capacity: usize,
}

impl Members {
    pub(crate) fn new(capacity: usize) -> Self {
        Members {
            rows: Vec::new(),
            live: 0,
            capacity,
        }
    }

    fn find(&self, node: &NodeId) -> Result<usize, usize> {
        self.rows.binary_search_by(|(n, _)| n.cmp(node))
    }

    pub(crate) fn get(&self, node: &NodeId) -> Option<&Member> {
        self.find(node).ok().map(|i| &self.rows[i].1)
    }

    fn get_mut(&mut self, node: &NodeId) -> Option<&mut Member> {
        let i = self.find(node).ok()?;
        Some(&mut self.rows[i].1)
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
        if self.rows.len() >= self.capacity {
            return false;
        }
        let Err(at) = self.find(&node) else {
            return false;
        };
        if member.state.is_live() {
            self.live += 1;
        }
        if self.rows.len() == self.rows.capacity() {
            // Grow by an eighth: amortised O(1) moves per row, little spare room.
            self.rows.reserve_exact(self.rows.len() / 8 + 4);
        }
        self.rows.insert(at, (node, member));
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
        let row = self.get_mut(node)?;
        let was = row.state;
        if was != state {
            row.since_secs = secs(now);
        }
        row.state = state;
        row.incarnation = incarnation;
        match (was.is_live(), state.is_live()) {
            (true, false) => self.live -= 1,
            (false, true) => self.live += 1,
            _ => {}
        }
        Some(was)
    }

    /// Record that the node's own word was heard, with its addresses.
    pub(crate) fn heard(&mut self, node: &NodeId, addrs: &[String]) {
        if let Some(row) = self.get_mut(node) {
            row.heard = true;
            row.addrs = Addrs::new(addrs);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Member)> {
        self.rows.iter().map(|(n, m)| (n, m))
    }

    /// Rows after `cursor` in id order (all rows when `None`).
    pub(crate) fn after(&self, cursor: Option<NodeId>) -> impl Iterator<Item = (&NodeId, &Member)> {
        let from = cursor.map_or(0, |c| self.rows.partition_point(|(n, _)| *n <= c));
        self.rows[from..].iter().map(|(n, m)| (n, m))
    }

    /// Forget dead and left rows at least `ttl` old; returns the forgotten nodes.
    pub(crate) fn reap(&mut self, now: Instant, ttl: Duration) -> Vec<NodeId> {
        let now = u64::from(secs(now));
        let ttl = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let mut gone = Vec::new();
        self.rows.retain(|(node, row)| {
            let keep = row.state.is_live() || now < u64::from(row.since_secs) + ttl;
            if !keep {
                gone.push(*node);
            }
            keep
        });
        if self.rows.capacity() > self.rows.len() + self.rows.len() / 4 + 8 {
            self.rows
                .shrink_to(self.rows.len() + self.rows.len() / 8 + 4);
        }
        gone
    }
}

impl MemberInfo {
    pub(crate) fn of(node: NodeId, m: &Member) -> Self {
        MemberInfo {
            node,
            state: m.state,
            incarnation: m.incarnation,
            addrs: m.addrs.to_vec(),
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
        Member::new(state, 0, &[], Instant::ZERO, true)
    }

    #[test]
    fn addresses_pack_and_unpack() {
        use alloc::string::ToString;
        let addrs = ["tcp://10.0.0.1:7000".to_string(), "ws://h:1/p".to_string()];
        let packed = Addrs::new(&addrs);
        assert_eq!(packed.to_vec(), addrs);
        assert_eq!(packed.0.as_ref().unwrap().len(), 19 + 10 + 2, "exact size");
        assert_eq!(Addrs::new(&[]), Addrs::default());
        assert!(Addrs::default().to_vec().is_empty());
        let long = "x".repeat(300);
        let cut = Addrs::new(core::slice::from_ref(&long)).to_vec();
        assert_eq!(cut, [long[..255].to_string()]);
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
