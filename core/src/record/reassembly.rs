//! Incoming fragments joined back into frames, under a per-link byte budget.

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameType, MAX_PAYLOAD_LEN};
use crate::CloseReason;

/// At most one partial frame per type, each ≤ 16 MiB, all together ≤ `budget` bytes.
pub(crate) struct Reassembly {
    partial: [Option<BytesMut>; 16],
    held: usize,
    budget: usize,
}

impl Reassembly {
    pub(crate) fn new(budget: usize) -> Self {
        Reassembly {
            partial: Default::default(),
            held: 0,
            budget,
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
        let buf =
            slot.get_or_insert_with(|| BytesMut::with_capacity(piece.len() + super::MAX_PLAINTEXT));
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
        let whole = slot.take().map(BytesMut::freeze).unwrap_or_default();
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
}
