//! The piggyback queue: the latest update about each node, sent fewest-transmissions
//! first and then most-recent first, each at most a limited number of times.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::cmp::Reverse;

use super::packet::{Update, MIN_UPDATE_LEN};
use crate::NodeId;

struct Queued {
    update: Update,
    transmits: u32,
    id: u64,
}

/// At most one queued update per node (a newer one replaces it), so the queue is
/// bounded by the member table.
#[derive(Default)]
pub(crate) struct Broadcasts {
    queued: BTreeMap<NodeId, Queued>,
    order: BTreeSet<(u32, Reverse<u64>, NodeId)>,
    next_id: u64,
}

impl Broadcasts {
    /// Queue `update`, replacing any queued update about the same node.
    pub(crate) fn push(&mut self, update: Update) {
        let node = update.node();
        self.remove(&node);
        let id = self.next_id;
        self.next_id += 1;
        self.order.insert((0, Reverse(id), node));
        self.queued.insert(
            node,
            Queued {
                update,
                transmits: 0,
                id,
            },
        );
    }

    /// Drop the queued update about `node`, if any.
    pub(crate) fn remove(&mut self, node: &NodeId) {
        if let Some(q) = self.queued.remove(node) {
            self.order.remove(&(q.transmits, Reverse(q.id), *node));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Updates that fit in `budget` bytes (at most `max_count`, none about `skip`),
    /// each counted as transmitted once more; an update sent `limit` times is dropped.
    pub(crate) fn take(
        &mut self,
        mut budget: usize,
        max_count: usize,
        limit: u32,
        skip: Option<NodeId>,
    ) -> Vec<Update> {
        let mut chosen = Vec::new();
        for key in &self.order {
            if chosen.len() >= max_count || budget < MIN_UPDATE_LEN {
                break;
            }
            if Some(key.2) == skip {
                continue;
            }
            if let Some(q) = self.queued.get(&key.2) {
                let len = q.update.encoded_len();
                if len <= budget {
                    budget -= len;
                    chosen.push(*key);
                }
            }
        }
        let mut out = Vec::with_capacity(chosen.len());
        for key in chosen {
            self.order.remove(&key);
            let (transmits, id, node) = key;
            let Some(q) = self.queued.get_mut(&node) else {
                continue;
            };
            out.push(q.update.clone());
            q.transmits = transmits.saturating_add(1);
            if q.transmits >= limit {
                self.queued.remove(&node);
            } else {
                self.order.insert((q.transmits, id, node));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(b: u8, incarnation: u64) -> Update {
        Update::Left {
            node: NodeId::from_bytes([b; 32]),
            incarnation,
        }
    }

    #[test]
    fn fewest_transmissions_then_newest_first_and_at_most_limit_times() {
        let mut q = Broadcasts::default();
        q.push(left(1, 0));
        q.push(left(2, 0));
        assert_eq!(q.take(1000, 1, 3, None), [left(2, 0)], "newest first");
        assert_eq!(
            q.take(1000, 1, 3, None),
            [left(1, 0)],
            "then the least sent"
        );
        q.push(left(3, 0));
        assert_eq!(
            q.take(1000, 10, 3, None),
            [left(3, 0), left(2, 0), left(1, 0)]
        );
        assert_eq!(
            q.take(1000, 10, 3, None),
            [left(3, 0), left(2, 0), left(1, 0)]
        );
        assert_eq!(q.take(1000, 10, 3, None), [left(3, 0)]);
        assert_eq!(q.len(), 0);
        assert!(q.take(1000, 10, 3, None).is_empty());
    }

    #[test]
    fn a_newer_update_replaces_the_queued_one_and_the_budget_is_respected() {
        let mut q = Broadcasts::default();
        q.push(left(1, 0));
        q.push(left(1, 5));
        q.push(left(2, 0));
        assert_eq!(q.len(), 2);
        assert_eq!(q.take(MIN_UPDATE_LEN * 2 - 1, 10, 9, None).len(), 1);
        assert_eq!(
            q.take(1000, 10, 9, Some(NodeId::from_bytes([2; 32]))),
            [left(1, 5)]
        );
        q.remove(&NodeId::from_bytes([1; 32]));
        assert_eq!(q.take(1000, 10, 9, None), [left(2, 0)]);
    }
}
