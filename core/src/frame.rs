//! Wire frames: `[u32 BE len][u8 type][payload]`, where `len` counts the type byte and
//! the payload and is at most [`MAX_FRAME_LEN`].
//!
//! The high bit of the type byte ([`MORE_FRAGMENTS`]) marks a fragment of a larger
//! frame (see [`crate::record`]); the low seven bits are the [`FrameType`].
//!
//! ```
//! use weft_mesh::frame::{encode, FrameDecoder, FrameType};
//! let mut wire = Vec::new();
//! encode(FrameType::Message, b"hi", &mut wire);
//! assert_eq!(wire, [0, 0, 0, 3, 0x02, b'h', b'i']);
//!
//! // Feed it in two pieces: the decoder copies only the frame that straddles them.
//! let mut dec = FrameDecoder::new();
//! let mut got = Vec::new();
//! dec.feed(&wire[..4], |f| got.push(f.payload.to_vec())).unwrap();
//! dec.feed(&wire[4..], |f| got.push(f.payload.to_vec())).unwrap();
//! assert_eq!(got, [b"hi".to_vec()]);
//! ```

use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

/// Largest value of a frame's `len` field: 16 MiB (type byte plus payload).
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;
/// Largest payload of one (reassembled) frame.
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN as usize - 1;
/// Bytes before the payload: the length and the type.
pub const HEADER_LEN: usize = 5;
/// Type-byte flag: this is a fragment and more of the same frame follow.
pub const MORE_FRAGMENTS: u8 = 0x80;

/// What a frame carries. Values `0x01..=0x0A` are the seed's; later ones are control types.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameType {
    /// Handshake payloads (hello, identity proof, KEM material).
    Handshake = 0x01,
    /// Application IPC messages.
    Message = 0x02,
    /// Heartbeats and failure-detector probes.
    Heartbeat = 0x03,
    /// Discovery and peer exchange.
    Discovery = 0x04,
    /// Chain replication.
    ChainSync = 0x05,
    /// Merkle tree replication.
    TreeSync = 0x06,
    /// Service resolution requests and answers.
    ServiceResolve = 0x07,
    /// Distributed process table gossip.
    ProcessGossip = 0x08,
    /// Service registry gossip.
    ServiceGossip = 0x09,
    /// Sync state digests.
    SyncDigest = 0x0A,
    /// Orderly close with a reason code.
    Close = 0x0B,
    /// The sender switches its sending key after this record.
    Rekey = 0x0C,
    /// Link round-trip probes: a ping every second, answered by a pong at once.
    Ping = 0x0D,
}

impl FrameType {
    /// Every frame type, in wire order.
    pub const ALL: [FrameType; 13] = [
        FrameType::Handshake,
        FrameType::Message,
        FrameType::Heartbeat,
        FrameType::Discovery,
        FrameType::ChainSync,
        FrameType::TreeSync,
        FrameType::ServiceResolve,
        FrameType::ProcessGossip,
        FrameType::ServiceGossip,
        FrameType::SyncDigest,
        FrameType::Close,
        FrameType::Rekey,
        FrameType::Ping,
    ];

    /// The type with wire value `v` (without the fragment flag), if known.
    pub fn from_u8(v: u8) -> Option<FrameType> {
        FrameType::ALL.iter().copied().find(|t| *t as u8 == v)
    }

    /// Whether the link itself sends and consumes frames of this type (Handshake,
    /// Close, Rekey, Ping): applications may not send them.
    pub fn is_link_internal(self) -> bool {
        matches!(
            self,
            FrameType::Handshake | FrameType::Close | FrameType::Rekey | FrameType::Ping
        )
    }

    /// Which send lane frames of this type wait in; lower lanes are sealed first.
    pub fn priority(self) -> Priority {
        match self {
            FrameType::Heartbeat | FrameType::Ping => Priority::Heartbeat,
            FrameType::Close | FrameType::Rekey | FrameType::Handshake | FrameType::Discovery => {
                Priority::Control
            }
            FrameType::ServiceResolve
            | FrameType::ProcessGossip
            | FrameType::ServiceGossip
            | FrameType::SyncDigest => Priority::Gossip,
            FrameType::Message => Priority::Message,
            FrameType::ChainSync | FrameType::TreeSync => Priority::Bulk,
        }
    }
}

/// Send priority: heartbeats never wait behind anything, bulk sync waits for everything.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Priority {
    /// Heartbeats and probes.
    Heartbeat = 0,
    /// Close, rekey, discovery.
    Control = 1,
    /// Resolution, gossip and digests.
    Gossip = 2,
    /// Application messages.
    Message = 3,
    /// Chain and tree sync.
    Bulk = 4,
}

impl Priority {
    /// Number of lanes.
    pub const COUNT: usize = 5;
}

/// Why bytes are not a valid frame. The decoder stops at the first error.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// `len` was zero: every frame has at least its type byte.
    EmptyFrame,
    /// `len` exceeded the limit (the value is the claimed length).
    TooLarge(u32),
    /// The type byte (without the fragment flag) is not a known [`FrameType`].
    UnknownType(u8),
    /// Bytes ended inside a frame where a whole one was required.
    Truncated,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::EmptyFrame => f.write_str("frame length 0 (no type byte)"),
            FrameError::TooLarge(n) => write!(f, "frame length {n} exceeds {MAX_FRAME_LEN}"),
            FrameError::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            FrameError::Truncated => f.write_str("frame truncated"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// A decoded frame header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// The type.
    pub frame_type: FrameType,
    /// Whether this is a fragment with more to follow.
    pub more: bool,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Header {
    /// Parse and check a header against `max_len` (at most [`MAX_FRAME_LEN`]).
    pub fn parse(bytes: &[u8; HEADER_LEN], max_len: u32) -> Result<Header, FrameError> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if len == 0 {
            return Err(FrameError::EmptyFrame);
        }
        if len > max_len {
            return Err(FrameError::TooLarge(len));
        }
        let raw = bytes[4];
        let frame_type =
            FrameType::from_u8(raw & !MORE_FRAGMENTS).ok_or(FrameError::UnknownType(raw))?;
        Ok(Header {
            frame_type,
            more: raw & MORE_FRAGMENTS != 0,
            payload_len: len as usize - 1,
        })
    }

    /// The header's five bytes. `payload_len` must be below [`MAX_FRAME_LEN`].
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        debug_assert!(self.payload_len < MAX_FRAME_LEN as usize);
        let len = (self.payload_len as u32 + 1).to_be_bytes();
        let flag = if self.more { MORE_FRAGMENTS } else { 0 };
        [len[0], len[1], len[2], len[3], self.frame_type as u8 | flag]
    }
}

/// A frame borrowed from the decoder's input or its reassembly buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Frame<'a> {
    /// The type.
    pub frame_type: FrameType,
    /// Whether this is a fragment with more to follow.
    pub more: bool,
    /// The payload.
    pub payload: &'a [u8],
}

/// An outgoing frame's payload: up to three pieces that leave back to back, so that a
/// large body (an application's message) is sealed straight from the buffer the
/// application handed over, with a small header and trailer around it, never joined.
///
/// ```
/// use bytes::Bytes;
/// use weft_mesh::frame::Payload;
/// let p = Payload::new(Bytes::from_static(b"head:"), Bytes::from_static(b"body"), Bytes::new());
/// assert_eq!(p.len(), 9);
/// let mut out = [0u8; 6];
/// p.copy_to(3, &mut out);
/// assert_eq!(&out, b"d:body");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    parts: [Bytes; 3],
}

impl Payload {
    /// `head`, then `body`, then `tail`.
    pub fn new(head: Bytes, body: Bytes, tail: Bytes) -> Payload {
        Payload {
            parts: [head, body, tail],
        }
    }

    /// Bytes in all pieces.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether every piece is empty.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    /// Copy `out.len()` bytes starting at byte `from` of the joined pieces.
    ///
    /// # Panics
    /// If `from + out.len()` exceeds [`Payload::len`] (a caller bug).
    pub fn copy_to(&self, mut from: usize, out: &mut [u8]) {
        let mut at = 0;
        for part in &self.parts {
            if at == out.len() {
                return;
            }
            if from >= part.len() {
                from -= part.len();
                continue;
            }
            let n = (part.len() - from).min(out.len() - at);
            out[at..at + n].copy_from_slice(&part[from..from + n]);
            (at, from) = (at + n, 0);
        }
        assert!(at == out.len(), "copy past the end of a payload");
    }

    /// The pieces joined into one buffer (copied unless only one piece is non-empty).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.iter().filter(|p| !p.is_empty()).count() {
            0 => Bytes::new(),
            1 => self
                .parts
                .iter()
                .find(|p| !p.is_empty())
                .cloned()
                .unwrap_or_default(),
            _ => {
                let mut v = Vec::with_capacity(self.len());
                self.parts.iter().for_each(|p| v.extend_from_slice(p));
                v.into()
            }
        }
    }
}

impl From<Bytes> for Payload {
    fn from(body: Bytes) -> Payload {
        Payload::new(Bytes::new(), body, Bytes::new())
    }
}

/// Append one whole frame to `out`.
///
/// # Panics
/// If `payload` is longer than [`MAX_PAYLOAD_LEN`] (a caller bug, never network input).
pub fn encode(frame_type: FrameType, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= MAX_PAYLOAD_LEN,
        "frame payload over 16 MiB"
    );
    let header = Header {
        frame_type,
        more: false,
        payload_len: payload.len(),
    };
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
}

/// Streaming frame decoder.
///
/// Whole frames are handed out borrowed from the input; only a frame split across
/// two inputs is copied, into a buffer that grows with the bytes that actually
/// arrive (never with the length a header claims). After an error the decoder
/// returns that error forever.
#[derive(Debug)]
pub struct FrameDecoder {
    partial: Vec<u8>,
    max_len: u32,
    skip_unknown: bool,
    failed: Option<FrameError>,
}

/// One length-delimited unit: a frame, or one of an unknown type being skipped.
struct Unit {
    payload_len: usize,
    header: Option<Header>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// A decoder accepting frames whose `len` is at most `max_len` (capped at [`MAX_FRAME_LEN`]).
    pub fn with_max_len(max_len: u32) -> Self {
        FrameDecoder {
            partial: Vec::new(),
            max_len: max_len.min(MAX_FRAME_LEN),
            skip_unknown: false,
            failed: None,
        }
    }

    /// Skip frames of unknown types (length still checked) instead of failing, so a
    /// peer of a later version can send types this one does not know.
    pub fn skip_unknown_types(mut self) -> Self {
        self.skip_unknown = true;
        self
    }

    /// Bytes held from an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Decode every whole frame in `input` (after any partial one held from before),
    /// calling `on_frame` for each in order, and keep the incomplete tail.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(Frame<'_>),
    ) -> Result<(), FrameError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let result = self.feed_inner(&mut input, &mut on_frame);
        if let Err(err) = result {
            self.failed = Some(err);
            self.partial = Vec::new();
        }
        result
    }

    fn feed_inner(
        &mut self,
        input: &mut &[u8],
        on_frame: &mut impl FnMut(Frame<'_>),
    ) -> Result<(), FrameError> {
        if !self.partial.is_empty() {
            if !self.fill_partial(input)? {
                return Ok(());
            }
            if let Some(header) = self.header_of_partial()?.header {
                on_frame(Frame {
                    frame_type: header.frame_type,
                    more: header.more,
                    payload: &self.partial[HEADER_LEN..],
                });
            }
            self.partial.clear();
            if self.partial.capacity() > 64 * 1024 {
                self.partial = Vec::new();
            }
        }
        while input.len() >= HEADER_LEN {
            let unit = self.unit(input[..HEADER_LEN].try_into().unwrap_or(&[0; 5]))?;
            let total = HEADER_LEN + unit.payload_len;
            if input.len() < total {
                break;
            }
            let (frame, rest) = input.split_at(total);
            if let Some(header) = unit.header {
                on_frame(Frame {
                    frame_type: header.frame_type,
                    more: header.more,
                    payload: &frame[HEADER_LEN..],
                });
            }
            *input = rest;
        }
        self.partial.extend_from_slice(input);
        if self.partial.len() >= HEADER_LEN {
            self.header_of_partial()?;
        }
        Ok(())
    }

    /// Move bytes from `input` into the partial frame; true once it is complete.
    fn fill_partial(&mut self, input: &mut &[u8]) -> Result<bool, FrameError> {
        if self.partial.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            *input = &input[take..];
            if self.partial.len() < HEADER_LEN {
                return Ok(false);
            }
        }
        let total = HEADER_LEN + self.header_of_partial()?.payload_len;
        let take = (total - self.partial.len()).min(input.len());
        self.partial.extend_from_slice(&input[..take]);
        *input = &input[take..];
        Ok(self.partial.len() == total)
    }

    fn header_of_partial(&self) -> Result<Unit, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.partial[..HEADER_LEN]);
        self.unit(&header)
    }

    /// Check a header: the unit's payload length, and its header unless it is of an
    /// unknown type that this decoder skips.
    fn unit(&self, bytes: &[u8; HEADER_LEN]) -> Result<Unit, FrameError> {
        match Header::parse(bytes, self.max_len) {
            Ok(h) => Ok(Unit {
                payload_len: h.payload_len,
                header: Some(h),
            }),
            Err(FrameError::UnknownType(_)) if self.skip_unknown => {
                let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                Ok(Unit {
                    payload_len: len as usize - 1,
                    header: None,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_in_pieces_copies_like_the_joined_bytes() {
        let pieces = [&b"head"[..], b"", b"tail!"];
        for split in 0..=3 {
            let (head, body) = pieces[0].split_at(split);
            let p = Payload::new(
                Bytes::copy_from_slice(head),
                Bytes::copy_from_slice(body),
                Bytes::copy_from_slice(pieces[2]),
            );
            let joined = b"headtail!";
            assert_eq!(p.len(), joined.len());
            assert_eq!(&p.to_bytes()[..], joined);
            for from in 0..=joined.len() {
                for len in 0..=joined.len() - from {
                    let mut out = alloc::vec![0u8; len];
                    p.copy_to(from, &mut out);
                    assert_eq!(out, joined[from..from + len], "from {from} len {len}");
                }
            }
        }
        assert!(Payload::default().is_empty());
        assert_eq!(
            Payload::from(Bytes::from_static(b"x")).to_bytes(),
            &b"x"[..]
        );
    }
    use alloc::vec;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<(FrameType, Vec<u8>)>, FrameError> {
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            dec.feed(c, |f| out.push((f.frame_type, f.payload.to_vec())))?;
        }
        assert_eq!(dec.buffered(), 0, "leftover bytes");
        Ok(out)
    }

    #[test]
    fn every_type_round_trips_and_unknown_types_are_rejected() {
        for t in FrameType::ALL {
            assert_eq!(FrameType::from_u8(t as u8), Some(t));
        }
        assert_eq!(FrameType::from_u8(0), None);
        assert_eq!(FrameType::from_u8(0x0E), None);
        let bad = [0, 0, 0, 1, 0x42];
        assert_eq!(decode_all(&[&bad]), Err(FrameError::UnknownType(0x42)));
    }

    #[test]
    fn rejects_zero_and_oversized_lengths_before_buffering() {
        assert_eq!(decode_all(&[&[0, 0, 0, 0, 2]]), Err(FrameError::EmptyFrame));
        let huge = (MAX_FRAME_LEN + 1).to_be_bytes();
        let mut dec = FrameDecoder::new();
        let err = dec.feed(&[huge[0], huge[1], huge[2], huge[3], 2], |_| {});
        assert_eq!(err, Err(FrameError::TooLarge(MAX_FRAME_LEN + 1)));
        assert_eq!(dec.buffered(), 0);
        // Sticky: the decoder refuses anything after an error.
        assert!(dec.feed(&[0, 0, 0, 1, 2], |_| {}).is_err());
    }

    #[test]
    fn a_claimed_16_mib_frame_buffers_only_what_arrived() {
        let mut dec = FrameDecoder::new();
        let hdr = Header {
            frame_type: FrameType::Message,
            more: false,
            payload_len: MAX_PAYLOAD_LEN,
        };
        dec.feed(&hdr.to_bytes(), |_| panic!("not complete"))
            .unwrap();
        dec.feed(&[1, 2, 3], |_| panic!("not complete")).unwrap();
        assert_eq!(dec.buffered(), HEADER_LEN + 3);
        assert!(dec.partial.capacity() < 1024);
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let mut wire = Vec::new();
        encode(FrameType::Message, b"one", &mut wire);
        encode(FrameType::Heartbeat, b"", &mut wire);
        encode(FrameType::TreeSync, &vec![7u8; 300], &mut wire);
        let whole = decode_all(&[&wire]).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..wire.len() {
            assert_eq!(
                decode_all(&[&wire[..cut], &wire[cut..]]).unwrap(),
                whole,
                "cut {cut}"
            );
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&bytes).unwrap(), whole);
    }

    #[test]
    fn unknown_types_can_be_skipped_whole_or_split() {
        let mut wire = Vec::new();
        encode(FrameType::Message, b"a", &mut wire);
        wire.extend_from_slice(&[0, 0, 0, 4, 0x7e, 1, 2, 3]);
        encode(FrameType::Message, b"b", &mut wire);
        for cut in 0..wire.len() {
            let mut dec = FrameDecoder::new().skip_unknown_types();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                dec.feed(part, |f| got.push(f.payload.to_vec())).unwrap();
            }
            assert_eq!(got, [b"a".to_vec(), b"b".to_vec()], "cut {cut}");
        }
        assert!(
            FrameDecoder::new().feed(&wire, |_| {}).is_err(),
            "strict by default"
        );
    }

    #[test]
    fn fragment_flag_is_reported() {
        let hdr = Header {
            frame_type: FrameType::ChainSync,
            more: true,
            payload_len: 0,
        };
        assert_eq!(hdr.to_bytes(), [0, 0, 0, 1, 0x85]);
        let mut dec = FrameDecoder::new();
        let mut more = false;
        dec.feed(&hdr.to_bytes(), |f| more = f.more).unwrap();
        assert!(more);
    }
}
