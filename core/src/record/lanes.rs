//! Outgoing frames waiting in priority lanes, packed into records when the socket pulls.

use alloc::collections::VecDeque;

use crate::frame::{FrameType, Header, Payload, Priority, HEADER_LEN};

/// Smallest fragment worth starting at the end of a record; with less room left the
/// packer looks for smaller frames in lower lanes instead.
const MIN_FRAGMENT: usize = 64;

struct Pending {
    frame_type: FrameType,
    payload: Payload,
    /// `payload.len()`.
    len: usize,
    /// Payload bytes already sent as fragments.
    sent: usize,
}

/// Frames queued per priority lane, bounded in bytes.
pub(crate) struct SendQueue {
    lanes: [VecDeque<Pending>; Priority::COUNT],
    queued: usize,
    limit: usize,
}

impl SendQueue {
    pub(crate) fn new(limit: usize) -> Self {
        SendQueue {
            lanes: Default::default(),
            queued: 0,
            limit,
        }
    }

    /// Bytes of payload and headers not yet sealed.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether `len` more payload bytes would fit under the limit.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.queued + len + HEADER_LEN <= self.limit
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queue a frame (the caller checked [`Self::has_room`] for application frames;
    /// control frames may exceed the limit by their few bytes).
    pub(crate) fn push(&mut self, frame_type: FrameType, payload: Payload) {
        let len = payload.len();
        self.queued += len + HEADER_LEN;
        self.lanes[frame_type.priority() as usize].push_back(Pending {
            frame_type,
            payload,
            len,
            sent: 0,
        });
    }

    /// Drop everything queued (the link is closing).
    pub(crate) fn clear(&mut self) {
        self.lanes.iter_mut().for_each(VecDeque::clear);
        self.queued = 0;
    }

    /// Pack frames into `out`, highest priority first, fragmenting a frame that does not
    /// fit; returns the bytes written. Within a lane frames leave in order, so at most one
    /// frame per lane (hence per type) is ever partly sent.
    pub(crate) fn fill(&mut self, out: &mut [u8]) -> usize {
        let mut pos = 0;
        for lane in &mut self.lanes {
            while let Some(head) = lane.front_mut() {
                let space = out.len() - pos;
                let left = head.len - head.sent;
                let (take, more) = if HEADER_LEN + left <= space {
                    (left, false)
                } else if space >= HEADER_LEN + MIN_FRAGMENT {
                    (space - HEADER_LEN, true)
                } else {
                    break;
                };
                let header = Header {
                    frame_type: head.frame_type,
                    more,
                    payload_len: take,
                };
                out[pos..pos + HEADER_LEN].copy_from_slice(&header.to_bytes());
                pos += HEADER_LEN;
                head.payload.copy_to(head.sent, &mut out[pos..pos + take]);
                pos += take;
                head.sent += take;
                if more {
                    self.queued -= take;
                } else {
                    self.queued -= take + HEADER_LEN;
                    lane.pop_front();
                }
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;
    use alloc::vec;
    use alloc::vec::Vec;
    use bytes::Bytes;

    fn frames(buf: &[u8]) -> Vec<(FrameType, bool, usize)> {
        let mut out = Vec::new();
        FrameDecoder::new()
            .feed(buf, |f| out.push((f.frame_type, f.more, f.payload.len())))
            .unwrap();
        out
    }

    #[test]
    fn packs_small_frames_in_priority_order() {
        let mut q = SendQueue::new(1 << 20);
        q.push(FrameType::TreeSync, Bytes::from_static(b"bulk").into());
        q.push(FrameType::Message, Bytes::from_static(b"msg").into());
        q.push(FrameType::Heartbeat, Bytes::from_static(b"hb").into());
        let mut out = [0u8; 100];
        let n = q.fill(&mut out);
        assert_eq!(
            frames(&out[..n]),
            [
                (FrameType::Heartbeat, false, 2),
                (FrameType::Message, false, 3),
                (FrameType::TreeSync, false, 4)
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_heartbeat_overtakes_a_large_frame_at_the_next_record() {
        let mut q = SendQueue::new(1 << 25);
        q.push(FrameType::Message, Bytes::from(vec![0u8; 1 << 20]).into());
        let mut rec = vec![0u8; 1000];
        let n = q.fill(&mut rec);
        assert_eq!(frames(&rec[..n]), [(FrameType::Message, true, 995)]);
        q.push(FrameType::Heartbeat, Bytes::from_static(b"ping").into());
        let n = q.fill(&mut rec);
        assert_eq!(frames(&rec[..n])[0], (FrameType::Heartbeat, false, 4));
        assert_eq!(
            frames(&rec[..n])[1],
            (FrameType::Message, true, 1000 - 9 - 5)
        );
    }

    #[test]
    fn accounting_returns_to_zero_and_respects_the_limit() {
        let mut q = SendQueue::new(100);
        assert!(q.has_room(95));
        assert!(!q.has_room(96));
        q.push(FrameType::Message, Bytes::from(vec![1u8; 95]).into());
        assert_eq!(q.queued_bytes(), 100);
        let mut rec = vec![0u8; 80];
        while !q.is_empty() {
            assert!(q.fill(&mut rec) > 0);
        }
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn a_payload_in_pieces_is_fragmented_as_if_joined() {
        let body: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let payload = Payload::new(
            Bytes::from_static(b"header"),
            Bytes::from(body.clone()),
            Bytes::from_static(b"trailer"),
        );
        let mut q = SendQueue::new(1 << 20);
        q.push(FrameType::Message, payload.clone());
        let (mut got, mut rec) = (Vec::new(), vec![0u8; 700]);
        while !q.is_empty() {
            let n = q.fill(&mut rec);
            FrameDecoder::new()
                .feed(&rec[..n], |f| got.extend_from_slice(f.payload))
                .unwrap();
        }
        assert_eq!(got, payload.to_bytes());
    }
}
