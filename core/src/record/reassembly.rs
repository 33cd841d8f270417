//! Incoming fragments joined back into frames, under a per-link byte budget.

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameType, MAX_PAYLOAD_LEN};
use crate::CloseReason;

/// The largest buffer kept for reuse once its frame is delivered: a frame of two
/// records (a 64 KiB message), the common fragmented case.
const SPARE_MAX: usize = 2 * super::MAX_PLAINTEXT;

/// At most one partial frame per type, each ≤ 16 MiB, all together ≤ `budget` bytes.
pub(crate) struct Reassembly {
    partial: [Option<BytesMut>; 16],
    held: usize,
    budget: usize,
    /// The buffer of the last frame delivered (empty, at most [`SPARE_MAX`]): the next
    /// frame reuses its memory if the application has dropped that frame by then,
    /// instead of allocating (and page-faulting) afresh for every large message.
    spare: BytesMut,
}

impl Reassembly {
    pub(crate) fn new(budget: usize) -> Self {
        Reassembly {
            partial: Default::default(),
            held: 0,
            budget,
            spare: BytesMut::new(),
        }
    }

    /// Bytes currently held in partial frames.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Take one frame piece; returns the whole frame once its last piece arrives.
    /// A whole unfragmented frame passes through without a copy.
    pub(crate) fn push(
        &mut self,
        frame_type: FrameType,
        more: bool,
        piece: Bytes,
    ) -> Result<Option<Bytes>, CloseReason> {
        let slot = &mut self.partial[frame_type as usize & 0x0f];
        if slot.is_none() && !more {
            return Ok(Some(piece));
        }
        // Reserve for this piece and one more record's worth up front: growing from
        // empty would reallocate the whole frame at every doubling.
        let spare = &mut self.spare;
        let buf = slot.get_or_insert_with(|| {
            let mut buf = core::mem::take(spare);
            buf.reserve(piece.len() + super::MAX_PLAINTEXT);
            buf
        });
        if buf.len() + piece.len() > MAX_PAYLOAD_LEN {
            return Err(CloseReason::MalformedFrame);
        }
        self.held += piece.len();
        if self.held > self.budget {
            return Err(CloseReason::ReassemblyBudget);
        }
        buf.extend_from_slice(&piece);
        if more {
            return Ok(None);
        }
        let Some(mut buf) = slot.take() else {
            return Ok(Some(Bytes::new()));
        };
        let whole = buf.split().freeze();
        if buf.capacity() <= SPARE_MAX {
            self.spare = buf;
        }
        self.held -= whole.len();
        Ok(Some(whole))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_fragments_per_type_and_passes_whole_frames_through() {
        let mut r = Reassembly::new(1 << 20);
        assert_eq!(
            r.push(FrameType::Message, true, Bytes::from_static(b"he"))
                .unwrap(),
            None
        );
        let hb = r
            .push(FrameType::Heartbeat, false, Bytes::from_static(b"x"))
            .unwrap();
        assert_eq!(hb.as_deref(), Some(&b"x"[..]));
        assert_eq!(r.held(), 2);
        let m = r
            .push(FrameType::Message, false, Bytes::from_static(b"llo"))
            .unwrap();
        assert_eq!(m.as_deref(), Some(&b"hello"[..]));
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn enforces_the_budget_as_bytes_arrive() {
        let mut r = Reassembly::new(10);
        r.push(FrameType::Message, true, Bytes::from_static(b"123456"))
            .unwrap();
        let err = r.push(FrameType::TreeSync, true, Bytes::from_static(b"123456"));
        assert_eq!(err, Err(CloseReason::ReassemblyBudget));
    }

    #[test]
    fn a_delivered_frames_memory_is_reused_once_dropped_and_never_while_held() {
        let mut r = Reassembly::new(1 << 20);
        let frame = |r: &mut Reassembly, byte: u8| {
            let piece = Bytes::from(alloc::vec![byte; 3000]);
            assert_eq!(
                r.push(FrameType::Message, true, piece.clone()).unwrap(),
                None
            );
            r.push(FrameType::Message, false, piece).unwrap().unwrap()
        };
        let first = frame(&mut r, 1);
        let held = frame(&mut r, 2); // `first` is still held: new memory
        assert_ne!(first.as_ptr(), held.as_ptr());
        assert!(first.iter().all(|b| *b == 1) && first.len() == 6000);
        let at = held.as_ptr();
        drop(held);
        let third = frame(&mut r, 3); // `held` was dropped: its memory again
        assert_eq!(third.as_ptr(), at);
        assert!(third.iter().all(|b| *b == 3) && third.len() == 6000);
        assert_eq!(r.held(), 0);
    }
}
