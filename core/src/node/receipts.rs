//! Receipts, coalesced and, on links that carry requests and answers, held back
//! briefly so that they leave in the answer's record.
//!
//! A receipt costs the peer a wake-up, a read and a decryption, as much as the message
//! it acknowledges. So:
//!
//! * The receipts for everything one read delivered leave together, at the end of the
//!   read (a stream of messages gets one receipt record per read, not per message).
//! * A link whose application answers quickly (something else leaves on the link within
//!   [`NodeConfig::receipt_delay`](super::NodeConfig::receipt_delay) of a receipt) turns
//!   "ping-pong": its receipts then wait up to that delay for the next record, usually
//!   the answer, and ride in it. If the delay passes with nothing to ride on, the link
//!   turns back, so one-way traffic never waits.
//! * At most [`MAX_HELD`] wait on one link; one more sends them all.

use alloc::collections::VecDeque;

use super::{ConnId, Node};
use crate::frame::{FrameType, Payload};
use crate::Instant;

/// Receipts held on one link at most; one more sends them all.
pub(crate) const MAX_HELD: usize = 32;

/// When each ping-pong link's oldest held receipt is due (in order: the delay is one
/// constant). An entry whose receipts left in an answer stays until it reaches the
/// front, where it is recognised as stale (its link's [`Receipts::due`] differs) and
/// dropped without firing.
#[derive(Default)]
pub(crate) struct HeldReceipts(VecDeque<(Instant, ConnId)>);

/// A link's receipt state.
#[derive(Default)]
pub(crate) struct Receipts {
    held: alloc::vec::Vec<Payload>,
    /// Receipts wait for the next record (the application answers quickly).
    pingpong: bool,
    /// When receipts last left on their own.
    sent_alone: Option<Instant>,
    /// When the held receipts must leave: the deadline of this link's live entry in
    /// [`HeldReceipts`].
    due: Option<Instant>,
}

impl Node {
    /// Send a receipt on `conn`: at the end of this read, or (ping-pong) with the
    /// link's next record.
    pub(super) fn send_receipt(&mut self, conn: ConnId, bytes: Payload) {
        let (now, delay) = (self.now, self.config.receipt_delay);
        let Some(entry) = self.links.get_mut(conn) else {
            return;
        };
        entry.last_used = now;
        let r = &mut entry.receipts;
        if r.pingpong && r.held.is_empty() && !delay.is_zero() {
            r.due = Some(now + delay);
            self.held.0.push_back((now + delay, conn));
        }
        r.held.push(bytes);
        if r.held.len() >= MAX_HELD {
            self.release_receipts(conn);
        }
    }

    /// Something other than a receipt is about to leave on `conn`: a quick answer to
    /// what we just acknowledged makes the link ping-pong.
    pub(super) fn note_answer(&mut self, conn: ConnId) {
        let (now, delay) = (self.now, self.config.receipt_delay);
        if delay.is_zero() {
            return;
        }
        if let Some(r) = self.links.get_mut(conn).map(|e| &mut e.receipts) {
            if r.sent_alone.is_some_and(|at| now <= at + delay) {
                r.pingpong = true;
            }
        }
    }

    /// The end of a read on `conn`: receipts of a link that is not ping-pong leave now.
    pub(super) fn end_of_read(&mut self, conn: ConnId) {
        if self.links.get(conn).is_some_and(|e| !e.receipts.pingpong) {
            self.release_receipts(conn);
        }
    }

    /// Queue `conn`'s held receipts on its link and have them sent.
    fn release_receipts(&mut self, conn: ConnId) {
        if self.move_held(conn) {
            if let Some(e) = self.links.get_mut(conn) {
                e.receipts.sent_alone = Some(self.now);
            }
            self.wake(conn);
        }
    }

    /// Queue `conn`'s held receipts on its link (about to transmit anyway); whether
    /// there were any.
    pub(super) fn move_held(&mut self, conn: ConnId) -> bool {
        let Some(entry) = self.links.get_mut(conn) else {
            return false;
        };
        entry.receipts.due = None;
        if entry.receipts.held.is_empty() {
            return false;
        }
        for bytes in entry.receipts.held.drain(..) {
            if entry.link.send(FrameType::Message, bytes).is_err() {
                self.stats.dropped_full += 1;
            }
        }
        true
    }

    /// Held receipts whose delay passed with nothing to ride on leave, and their link
    /// stops being ping-pong.
    pub(super) fn release_due_receipts(&mut self) {
        while let Some(at) = self.next_held_deadline() {
            if at > self.now {
                break;
            }
            let Some((_, conn)) = self.held.0.pop_front() else {
                break;
            };
            if let Some(e) = self.links.get_mut(conn) {
                e.receipts.pingpong = false;
                self.release_receipts(conn);
            }
        }
    }

    /// When the first held receipts are due, once entries whose receipts have left (in
    /// an answer, or with their link) are dropped from the front: a stale entry must
    /// neither wake the driver nor end a link's ping-pong.
    pub(super) fn next_held_deadline(&mut self) -> Option<Instant> {
        while let Some(&(at, conn)) = self.held.0.front() {
            let live = self
                .links
                .get(conn)
                .is_some_and(|e| e.receipts.due == Some(at) && !e.receipts.held.is_empty());
            if live {
                return Some(at);
            }
            self.held.0.pop_front();
        }
        None
    }
}
