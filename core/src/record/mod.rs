//! The encrypted record layer of an established session.
//!
//! A record is one Noise transport message: at most [`MAX_PLAINTEXT`] bytes of
//! plaintext sealed with ChaCha20-Poly1305, sent as `[u16 BE len][ciphertext][tag]`.
//! The plaintext holds whole frames packed back to back, or fragments of frames too
//! large for one record (type byte flag [`crate::frame::MORE_FRAGMENTS`]).
//!
//! Frames wait in plaintext in per-priority lanes and are packed and sealed only when
//! the socket pulls ([`crate::link::Link::poll_transmit`]), so a heartbeat queued
//! behind a 16 MiB message leaves in the very next record. The sender rekeys after a
//! number of records or an amount of time by putting a Rekey frame in a record and
//! switching its key after sealing it; the receiver switches after opening that record.

mod cipher;
mod lanes;
mod reassembly;

use core::time::Duration;

use bytes::{Bytes, BytesMut};

pub(crate) use cipher::CipherState;
pub use cipher::TAG_LEN;
use lanes::SendQueue;
use reassembly::Reassembly;

use crate::frame::{FrameDecoder, FrameType, Header, HEADER_LEN};
use crate::{CloseReason, Instant};

/// Largest Noise message, hence largest record body.
pub const MAX_RECORD: usize = 65535;
/// Largest plaintext in one record.
pub const MAX_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;
/// Bytes of the transport length prefix before every record or handshake message.
pub const LEN_PREFIX: usize = 2;

/// Limits and rekey policy of the record layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecordConfig {
    /// Most bytes of frames queued for sending; beyond it `send` fails with `Full`.
    pub max_queued_bytes: usize,
    /// Most bytes held in partly received fragmented frames; beyond it the link closes.
    pub reassembly_budget: usize,
    /// Rekey the sending key after this many records.
    pub rekey_after_records: u64,
    /// Rekey the sending key after this much time.
    pub rekey_after: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            max_queued_bytes: 32 << 20,
            reassembly_budget: 32 << 20,
            rekey_after_records: 1 << 20,
            rekey_after: Duration::from_secs(600),
        }
    }
}

/// What an opened record delivered.
pub(crate) enum Inbound {
    /// A whole (reassembled) frame.
    Frame(FrameType, Bytes),
    /// The peer closed the link.
    Close(CloseReason),
}

/// Counters of one direction pair.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct RecordStats {
    /// Records sealed.
    pub records_sent: u64,
    /// Records opened.
    pub records_received: u64,
    /// Times we switched our sending key.
    pub rekeys_sent: u64,
    /// Times the peer switched its sending key.
    pub rekeys_received: u64,
}

/// The record layer of one established link.
pub(crate) struct Session {
    /// A frame that must open the next record, ahead of every lane (the IK initiator's
    /// identity proof). Not affected by clearing the queue.
    preamble: Option<(FrameType, Bytes)>,
    tx: CipherState,
    rx: CipherState,
    queue: SendQueue,
    reassembly: Reassembly,
    config: RecordConfig,
    records_since_rekey: u64,
    last_rekey: Instant,
    stats: RecordStats,
}

impl Session {
    pub(crate) fn new(
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        config: RecordConfig,
        now: Instant,
    ) -> Self {
        Session {
            preamble: None,
            tx: CipherState::new(send_key),
            rx: CipherState::new(recv_key),
            queue: SendQueue::new(config.max_queued_bytes),
            reassembly: Reassembly::new(config.reassembly_budget),
            config,
            records_since_rekey: 0,
            last_rekey: now,
            stats: RecordStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> RecordStats {
        self.stats
    }

    /// Make `payload` the first frame of the next record (a few bytes; must fit a record).
    pub(crate) fn set_preamble(&mut self, frame_type: FrameType, payload: Bytes) {
        self.preamble = Some((frame_type, payload));
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queue.queued_bytes()
    }

    pub(crate) fn queue(&mut self) -> &mut SendQueue {
        &mut self.queue
    }

    pub(crate) fn reassembly_held(&self) -> usize {
        self.reassembly.held()
    }

    /// When the time-based rekey is due.
    pub(crate) fn rekey_deadline(&self) -> Instant {
        self.last_rekey + self.config.rekey_after
    }

    fn rekey_due(&self, now: Instant) -> bool {
        self.records_since_rekey >= self.config.rekey_after_records || now >= self.rekey_deadline()
    }

    /// Whether [`Session::seal`] would produce a record.
    pub(crate) fn wants_transmit(&self, now: Instant) -> bool {
        self.preamble.is_some() || !self.queue.is_empty() || self.rekey_due(now)
    }

    /// Pack and seal one record into `out` as `[u16 len][ciphertext][tag]`; `None` if
    /// there is nothing to send or `out` cannot hold a minimal record.
    pub(crate) fn seal(
        &mut self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<usize>, CloseReason> {
        let Some(room) = out.len().checked_sub(LEN_PREFIX + TAG_LEN) else {
            return Ok(None);
        };
        let cap = room.min(MAX_PLAINTEXT);
        let rekey = self.rekey_due(now);
        let preamble_len = self
            .preamble
            .as_ref()
            .map_or(0, |(_, p)| HEADER_LEN + p.len());
        if cap < HEADER_LEN + 1 + preamble_len
            || (self.queue.is_empty() && !rekey && preamble_len == 0)
        {
            return Ok(None);
        }
        let body = &mut out[LEN_PREFIX..LEN_PREFIX + cap + TAG_LEN];
        let mut len = 0;
        if let Some((frame_type, payload)) = self.preamble.take() {
            let header = Header {
                frame_type,
                more: false,
                payload_len: payload.len(),
            };
            body[..HEADER_LEN].copy_from_slice(&header.to_bytes());
            body[HEADER_LEN..preamble_len].copy_from_slice(&payload);
            len = preamble_len;
        }
        if rekey {
            let header = Header {
                frame_type: FrameType::Rekey,
                more: false,
                payload_len: 0,
            };
            body[len..len + HEADER_LEN].copy_from_slice(&header.to_bytes());
            len += HEADER_LEN;
        }
        len += self.queue.fill(&mut body[len..cap]);
        let sealed = self
            .tx
            .seal(body, len)
            .map_err(|_| CloseReason::NonceExhausted)?;
        let prefix = u16::try_from(sealed)
            .expect("a record is at most 65535 bytes")
            .to_be_bytes();
        out[..LEN_PREFIX].copy_from_slice(&prefix);
        self.stats.records_sent += 1;
        if rekey {
            self.tx.rekey();
            self.records_since_rekey = 0;
            self.last_rekey = now;
            self.stats.rekeys_sent += 1;
        } else {
            self.records_since_rekey += 1;
        }
        Ok(Some(LEN_PREFIX + sealed))
    }

    /// Open one record body and hand what it carries to `deliver`, in order.
    /// Stops after a Close frame; any error means the link must close.
    pub(crate) fn open(
        &mut self,
        mut body: BytesMut,
        deliver: &mut impl FnMut(Inbound),
    ) -> Result<(), CloseReason> {
        let len = self
            .rx
            .open(&mut body)
            .map_err(|_| CloseReason::DecryptFailed)?;
        body.truncate(len);
        let record = body.freeze();
        self.stats.records_received += 1;

        let mut failure = None;
        let mut closed = false;
        let mut rekey = false;
        let reassembly = &mut self.reassembly;
        let mut decoder = FrameDecoder::with_max_len(MAX_PLAINTEXT as u32).skip_unknown_types();
        let fed = decoder.feed(&record, |f| {
            if failure.is_some() || closed {
                return;
            }
            let piece = record.slice_ref(f.payload);
            let result = match f.frame_type {
                FrameType::Rekey if !f.more => {
                    rekey = true;
                    Ok(())
                }
                FrameType::Close if !f.more => {
                    let code = f.payload.first_chunk::<2>().map(|c| u16::from_be_bytes(*c));
                    code.map(|c| {
                        closed = true;
                        deliver(Inbound::Close(CloseReason::from_code(c)));
                    })
                    .ok_or(CloseReason::MalformedFrame)
                }
                FrameType::Rekey | FrameType::Close => Err(CloseReason::MalformedFrame),
                other => reassembly.push(other, f.more, piece).map(|whole| {
                    if let Some(frame) = whole {
                        deliver(Inbound::Frame(other, frame));
                    }
                }),
            };
            if let Err(reason) = result {
                failure = Some(reason);
            }
        });
        if let Some(reason) = failure {
            return Err(reason);
        }
        if closed {
            return Ok(());
        }
        if fed.is_err() || decoder.buffered() != 0 {
            return Err(CloseReason::MalformedFrame);
        }
        if rekey {
            self.rx.rekey();
            self.stats.rekeys_received += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn frames_of_unknown_types_are_skipped() {
        let key = [9u8; 32];
        let mut tx = CipherState::new(&key);
        let mut rx = Session::new(&[1; 32], &key, RecordConfig::default(), Instant::ZERO);
        let mut plain = Vec::new();
        crate::frame::encode(FrameType::Message, b"before", &mut plain);
        plain.extend_from_slice(&[0, 0, 0, 3, 0x55, 0xaa, 0xbb]); // type 0x55: from the future
        plain.extend_from_slice(&[0, 0, 0, 2, 0xd5, 0xcc]); // ... fragmented
        crate::frame::encode(FrameType::Message, b"after", &mut plain);
        let len = plain.len();
        plain.resize(len + TAG_LEN, 0);
        let n = tx.seal(&mut plain, len).unwrap();
        let mut got = Vec::new();
        rx.open(BytesMut::from(&plain[..n]), &mut |i| {
            if let Inbound::Frame(_, p) = i {
                got.push(p)
            }
        })
        .unwrap();
        assert_eq!(
            got,
            [Bytes::from_static(b"before"), Bytes::from_static(b"after")]
        );
    }
}
