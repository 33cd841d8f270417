//! The links of a node in a generation-checked slab, with one timer heap over all of them.

use alloc::collections::BinaryHeap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;

use crate::link::Link;
use crate::{Instant, NodeId};

/// A connection's handle. Stale handles (of a closed connection whose slot was
/// reused) are recognised by their generation and ignored.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}", self.index, self.generation)
    }
}

/// Who opened a connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// A peer connected to us.
    Inbound,
    /// We dialed.
    Outbound,
}

/// A link and what the node knows about its connection.
pub(crate) struct Entry {
    pub link: Link,
    pub direction: Direction,
    pub addr: Option<String>,
    /// The authenticated peer once established.
    pub peer: Option<NodeId>,
    /// The seed this connection dials, if any.
    pub seed: Option<usize>,
    /// A `Transmit` action was emitted and `poll_transmit` has not yet come up empty.
    pub transmit_pending: bool,
    /// This link carries the peer (it is in the node's peer map).
    pub up: bool,
    /// Closed because another link to the same peer is kept; its close is not reported.
    pub duplicate: bool,
    /// The node this dial is meant to reach (on-demand and discovery dials).
    pub wants: Option<NodeId>,
    /// The last time an envelope crossed this link.
    pub last_used: Instant,
    /// Receipts waiting to leave (see `receipts.rs`).
    pub receipts: super::receipts::Receipts,
    /// The deadline last pushed onto the timer heap.
    armed: Option<Instant>,
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Slab of links plus a min-heap of their deadlines with lazy deletion: an entry is
/// stale when it no longer equals its link's armed deadline, and is skipped when seen.
#[derive(Default)]
pub(crate) struct Links {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Links {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(
        &mut self,
        link: Link,
        direction: Direction,
        addr: Option<String>,
        seed: Option<usize>,
    ) -> ConnId {
        let entry = Entry {
            link,
            direction,
            addr,
            peer: None,
            seed,
            transmit_pending: false,
            up: false,
            duplicate: false,
            wants: None,
            last_used: Instant::ZERO,
            receipts: Default::default(),
            armed: None,
        };
        self.len += 1;
        let conn = if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = Some(entry);
            ConnId {
                index,
                generation: slot.generation,
            }
        } else {
            let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 connections");
            self.slots.push(Slot {
                generation: 0,
                entry: Some(entry),
            });
            ConnId {
                index,
                generation: 0,
            }
        };
        self.rearm(conn);
        conn
    }

    pub(crate) fn get(&self, conn: ConnId) -> Option<&Entry> {
        let slot = self.slots.get(conn.index as usize)?;
        (slot.generation == conn.generation)
            .then_some(slot.entry.as_ref())
            .flatten()
    }

    pub(crate) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(conn.index as usize)?;
        (slot.generation == conn.generation)
            .then_some(slot.entry.as_mut())
            .flatten()
    }

    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<Entry> {
        let slot = self.slots.get_mut(conn.index as usize)?;
        if slot.generation != conn.generation {
            return None;
        }
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(conn.index);
        self.len -= 1;
        Some(entry)
    }

    /// Every live connection id.
    pub(crate) fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, s)| ConnId {
                index: i as u32,
                generation: s.generation,
            })
    }

    /// Push the link's current deadline if it changed.
    pub(crate) fn rearm(&mut self, conn: ConnId) {
        let Some(entry) = self.get_mut(conn) else {
            return;
        };
        let deadline = entry.link.poll_timeout();
        if deadline != entry.armed {
            entry.armed = deadline;
            if let Some(at) = deadline {
                self.timers.push(Reverse((at, conn)));
            }
        }
    }

    /// The earliest live deadline (dropping stale heap entries on the way).
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, conn))) = self.timers.peek().copied() {
            if self.get(conn).is_some_and(|e| e.armed == Some(at)) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Pop one connection whose deadline is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ConnId> {
        let at = self.next_deadline()?;
        if at > now {
            return None;
        }
        let Reverse((_, conn)) = self.timers.pop()?;
        if let Some(entry) = self.get_mut(conn) {
            entry.armed = None;
        }
        Some(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkConfig;
    use crate::{Identity, Rng};
    use alloc::sync::Arc;

    fn link(now: Instant) -> Link {
        let id = Arc::new(Identity::generate(&mut Rng::from_seed([1; 32])));
        Link::accept(LinkConfig::new([0; 32]), id, Rng::from_seed([2; 32]), now)
    }

    #[test]
    fn stale_ids_are_rejected_and_slots_reused() {
        let mut links = Links::default();
        let a = links.insert(link(Instant::ZERO), Direction::Inbound, None, None);
        assert!(links.remove(a).is_some());
        let b = links.insert(link(Instant::ZERO), Direction::Inbound, None, None);
        assert_ne!(a, b);
        assert!(links.get(a).is_none() && links.remove(a).is_none());
        assert!(links.get(b).is_some());
        assert_eq!(links.len(), 1);
    }

    #[test]
    fn the_heap_yields_live_deadlines_in_order_and_skips_stale_ones() {
        let mut links = Links::default();
        let early = links.insert(link(Instant::ZERO), Direction::Inbound, None, None);
        let late = links.insert(
            link(Instant::from_micros(5)),
            Direction::Inbound,
            None,
            None,
        );
        let t0 = links.next_deadline().unwrap();
        links.remove(early);
        let t1 = links.next_deadline().unwrap();
        assert!(t1 > t0, "the removed link's deadline is skipped");
        assert_eq!(links.pop_due(t1), Some(late));
        assert_eq!(links.next_deadline(), None);
    }
}
