//! Receipts held back briefly, so that they leave in the link's next record (usually
//! the answer the application sends at once, or the next message of a stream) instead
//! of in a record and a write of their own: a receipt costs the peer a wake-up, a read
//! and a decryption, as much as the message it acknowledges.
//!
//! A held receipt leaves when its link transmits anything else, when
//! [`NodeConfig::receipt_delay`](super::NodeConfig::receipt_delay) passes, or when
//! [`MAX_HELD`] are waiting on one link.

use alloc::collections::VecDeque;

use bytes::Bytes;

use super::{ConnId, Node};
use crate::frame::FrameType;
use crate::Instant;

/// Receipts held on one link at most; one more sends them all.
pub(crate) const MAX_HELD: usize = 32;

/// When each link's oldest held receipt is due (in order: the delay is one constant).
#[derive(Default)]
pub(crate) struct HeldReceipts(VecDeque<(Instant, ConnId)>);

impl HeldReceipts {
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.0.front().map(|(at, _)| *at)
    }
}

impl Node {
    /// Send a receipt on `conn`, after a short delay unless something else leaves first.
    pub(super) fn send_receipt(&mut self, conn: ConnId, bytes: Bytes) {
        let (now, delay) = (self.now, self.config.receipt_delay);
        let Some(entry) = self.links.get_mut(conn) else {
            return;
        };
        if delay.is_zero() {
            return self.send_on(conn, bytes);
        }
        entry.last_used = now;
        if entry.held.is_empty() {
            self.held.0.push_back((now + delay, conn));
        }
        entry.held.push(bytes);
        if entry.held.len() >= MAX_HELD {
            self.release_receipts(conn);
        }
    }

    /// Queue `conn`'s held receipts on its link and have them sent.
    pub(super) fn release_receipts(&mut self, conn: ConnId) {
        if self.move_held(conn) {
            self.wake(conn);
        }
    }

    /// Queue `conn`'s held receipts on its link (about to transmit anyway); whether
    /// there were any.
    pub(super) fn move_held(&mut self, conn: ConnId) -> bool {
        let Some(entry) = self.links.get_mut(conn) else {
            return false;
        };
        if entry.held.is_empty() {
            return false;
        }
        for bytes in entry.held.drain(..) {
            if entry.link.send(FrameType::Message, bytes).is_err() {
                self.stats.dropped_full += 1;
            }
        }
        true
    }

    /// Send the receipts whose delay is over.
    pub(super) fn release_due_receipts(&mut self) {
        while let Some(&(at, conn)) = self.held.0.front() {
            if at > self.now {
                break;
            }
            self.held.0.pop_front();
            self.release_receipts(conn);
        }
    }
}
