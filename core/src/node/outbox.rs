//! Sent envelopes awaiting their answer (a receipt or a response): retransmitted while
//! unanswered, failed with a reason at their deadline.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use bytes::Bytes;

use super::{ConnId, SendFailure};
use crate::mesh::envelope::EnvelopeId;
use crate::mesh::{Kind, Target};
use crate::{Instant, NodeId};

/// Identifies a message or request sent by this node; unique per node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MessageId(pub u64);

/// One unanswered envelope.
pub(crate) struct Pending {
    pub to: NodeId,
    pub kind: Kind,
    pub target: Target,
    pub envelope: EnvelopeId,
    pub payload: Bytes,
    pub deadline: Instant,
    /// When to send it again (`None`: only when a route appears or its link drops).
    pub retry: Option<Instant>,
    pub attempt: u8,
    /// The link the last copy left on, while it is up.
    pub via: Option<ConnId>,
    /// The reason to report if the deadline passes.
    pub problem: Option<SendFailure>,
}

/// Pending envelopes by id, by envelope id and by time.
#[derive(Default)]
pub(crate) struct Outbox {
    by_id: BTreeMap<u64, Pending>,
    by_envelope: BTreeMap<EnvelopeId, u64>,
    /// (deadline or retry time, id) of every entry: exactly its live times, so the
    /// set never outgrows the outbox.
    timers: BTreeSet<(Instant, u64)>,
}

impl Outbox {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn insert(&mut self, id: u64, p: Pending) {
        self.timers.insert((p.deadline, id));
        if let Some(r) = p.retry {
            self.timers.insert((r, id));
        }
        self.by_envelope.insert(p.envelope, id);
        self.by_id.insert(id, p);
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Pending> {
        self.by_id.get_mut(&id)
    }

    /// Arm `id`'s retry at `at`.
    pub(crate) fn set_retry(&mut self, id: u64, at: Option<Instant>) {
        if let Some(p) = self.by_id.get_mut(&id) {
            if let Some(old) = p.retry {
                // Keep the deadline's own entry when both fall on the same instant.
                if old != p.deadline {
                    self.timers.remove(&(old, id));
                }
            }
            p.retry = at;
            if let Some(at) = at {
                self.timers.insert((at, id));
            }
        }
    }

    /// Take the entry answered by an envelope naming `envelope`.
    pub(crate) fn answer(&mut self, envelope: &EnvelopeId) -> Option<(u64, Pending)> {
        let id = *self.by_envelope.get(envelope)?;
        self.remove(id).map(|p| (id, p))
    }

    /// The id of the entry for `envelope`.
    pub(crate) fn id_of(&self, envelope: &EnvelopeId) -> Option<u64> {
        self.by_envelope.get(envelope).copied()
    }

    /// Peek at the entry for `envelope`.
    pub(crate) fn find(&self, envelope: &EnvelopeId) -> Option<&Pending> {
        self.by_envelope
            .get(envelope)
            .and_then(|id| self.by_id.get(id))
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Pending> {
        let p = self.by_id.remove(&id)?;
        self.by_envelope.remove(&p.envelope);
        self.timers.remove(&(p.deadline, id));
        if let Some(r) = p.retry {
            self.timers.remove(&(r, id));
        }
        Some(p)
    }

    /// Entries past their deadline (removed) and entries due for a retry (kept).
    pub(crate) fn due(&mut self, now: Instant) -> (Vec<(u64, Pending)>, Vec<u64>) {
        let (mut expired, mut retry) = (Vec::new(), Vec::new());
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(p) = self.by_id.get_mut(&id) else {
                continue;
            };
            if p.deadline <= now {
                if let Some(p) = self.remove(id) {
                    expired.push((id, p));
                }
            } else if p.retry.is_some_and(|r| r <= now) {
                // Its timer entry is gone: the retry is due and taken.
                p.retry = None;
                retry.push(id);
            }
        }
        (expired, retry)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Ids of entries whose last copy left on `conn`.
    pub(crate) fn sent_on(&self, conn: ConnId) -> Vec<u64> {
        self.by_id
            .iter()
            .filter(|(_, p)| p.via == Some(conn))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Ids of entries waiting for a route (none of their copies is on a live link).
    pub(crate) fn unrouted(&self) -> Vec<u64> {
        self.by_id
            .iter()
            .filter(|(_, p)| p.via.is_none())
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn pending(n: u8, deadline: Instant, retry: Option<Instant>) -> Pending {
        Pending {
            to: NodeId::from_bytes([n; 32]),
            kind: Kind::Data,
            target: Target::Node,
            envelope: [n; 16],
            payload: Bytes::new(),
            deadline,
            retry,
            attempt: 0,
            via: None,
            problem: None,
        }
    }

    #[test]
    fn answered_entries_leave_no_timers_behind() {
        let mut o = Outbox::default();
        let t = |ms| Instant::ZERO + Duration::from_millis(ms);
        for i in 0..100u8 {
            o.insert(u64::from(i), pending(i, t(10_000), Some(t(1000))));
            o.set_retry(u64::from(i), Some(t(2000)));
        }
        assert_eq!(o.timers.len(), 200, "a deadline and one retry each");
        for i in 0..100u8 {
            assert!(o.answer(&[i; 16]).is_some());
        }
        assert!(o.timers.is_empty() && o.next_deadline().is_none());
    }

    #[test]
    fn due_retries_are_taken_once_and_deadlines_expire() {
        let mut o = Outbox::default();
        let t = |ms| Instant::ZERO + Duration::from_millis(ms);
        o.insert(1, pending(1, t(5000), Some(t(1000))));
        let (expired, retry) = o.due(t(1000));
        assert!(expired.is_empty());
        assert_eq!(retry, [1]);
        assert_eq!(
            o.due(t(1500)).1,
            Vec::<u64>::new(),
            "not again until re-armed"
        );
        assert_eq!(o.next_deadline(), Some(t(5000)));
        let (expired, _) = o.due(t(5000));
        assert_eq!(expired.len(), 1);
        assert_eq!(o.len(), 0);
        assert!(o.timers.is_empty());
    }
}
