//! Fuzz harnesses of [`weft_mesh::frame::FrameDecoder`] and [`weft_mesh::frame::encode`].
//!
//! Every harness compares the streaming decoder with a straightforward model of the
//! `[u32 BE len][u8 type][payload]` format written here from the spec, so a wrong
//! answer shows up even where nothing panics.

use bolero::{check, TypeGenerator};
use weft_mesh::frame::{
    encode, FrameDecoder, FrameError, FrameType, Header, HEADER_LEN, MAX_FRAME_LEN, MORE_FRAGMENTS,
};

/// What a decoder reported, in order: a frame, or the error it stopped at.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Out {
    Frame(FrameType, bool, Vec<u8>),
    Error(FrameError),
}

/// The format as specified: headers are checked as soon as their five bytes are there,
/// a frame is reported once all its bytes are there, and the first error ends it all.
/// Returns what must be reported and how many bytes must stay buffered.
fn model(wire: &[u8], max_len: u32) -> (Vec<Out>, usize) {
    let mut out = Vec::new();
    let mut rest = wire;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let raw = rest[4];
        let error = if len == 0 {
            Some(FrameError::EmptyFrame)
        } else if len > max_len {
            Some(FrameError::TooLarge(len))
        } else if FrameType::from_u8(raw & !MORE_FRAGMENTS).is_none() {
            Some(FrameError::UnknownType(raw))
        } else {
            None
        };
        if let Some(error) = error {
            out.push(Out::Error(error));
            return (out, 0);
        }
        let total = HEADER_LEN + len as usize - 1;
        if rest.len() < total {
            break;
        }
        let frame_type = FrameType::from_u8(raw & !MORE_FRAGMENTS).expect("checked above");
        let more = raw & MORE_FRAGMENTS != 0;
        out.push(Out::Frame(
            frame_type,
            more,
            rest[HEADER_LEN..total].to_vec(),
        ));
        rest = &rest[total..];
    }
    (out, rest.len())
}

/// Feed `wire` to a fresh decoder in pieces of the given sizes (the rest in one last
/// piece), checking the byte accounting after every piece; returns what it reported
/// and what it holds at the end.
fn decode_chunked(wire: &[u8], max_len: Option<u32>, sizes: &[u8]) -> (Vec<Out>, usize) {
    let mut dec = max_len.map_or_else(FrameDecoder::new, FrameDecoder::with_max_len);
    let limit = max_len.unwrap_or(MAX_FRAME_LEN).min(MAX_FRAME_LEN);
    let mut out = Vec::new();
    let mut failed: Option<FrameError> = None;
    let (mut fed, mut consumed) = (0usize, 0usize);
    let mut at = 0usize;
    let pieces = sizes
        .iter()
        .map(|s| usize::from(*s))
        .chain(std::iter::once(usize::MAX));
    for size in pieces {
        let end = at.saturating_add(size).min(wire.len());
        let piece = &wire[at..end];
        at = end;
        fed += piece.len();
        let mut frames = Vec::new();
        let result = dec.feed(piece, |f| {
            assert!(f.payload.len() < limit as usize, "frame over the limit");
            frames.push(Out::Frame(f.frame_type, f.more, f.payload.to_vec()));
        });
        if let Some(err) = failed {
            assert_eq!(result, Err(err), "a failed decoder must repeat its error");
            assert!(frames.is_empty(), "a failed decoder handed out a frame");
            assert_eq!(dec.buffered(), 0, "a failed decoder holds bytes");
        } else {
            for f in &frames {
                if let Out::Frame(_, _, payload) = f {
                    consumed += HEADER_LEN + payload.len();
                }
            }
            out.extend(frames);
            match result {
                Ok(()) => {
                    // Exactly the bytes of the one incomplete frame are held: never
                    // more than arrived, never anything reserved from a claimed length.
                    assert_eq!(dec.buffered(), fed - consumed, "buffered() is off");
                    assert!(dec.buffered() < HEADER_LEN + limit as usize);
                }
                Err(err) => {
                    assert_eq!(dec.buffered(), 0, "a failed decoder holds bytes");
                    out.push(Out::Error(err));
                    failed = Some(err);
                }
            }
        }
        assert!(dec.buffered() <= fed, "buffered more than was fed");
    }
    (out, dec.buffered())
}

/// A piece of decoder input: raw bytes or headers of various plausibility.
#[derive(Clone, Debug, TypeGenerator)]
enum Piece {
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// An arbitrary header (length and type byte).
    Header(u32, u8),
    /// A header with a known type and a small length, followed by `fill` bytes.
    Plausible {
        len: u16,
        type_index: u8,
        more: bool,
        fill: Vec<u8>,
    },
    /// A whole well-formed frame of a known type.
    Whole {
        type_index: u8,
        more: bool,
        payload: Vec<u8>,
    },
}

fn build_wire(pieces: &[Piece]) -> Vec<u8> {
    let mut wire = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Raw(bytes) => wire.extend_from_slice(bytes),
            Piece::Header(len, ty) => {
                wire.extend_from_slice(&len.to_be_bytes());
                wire.push(*ty);
            }
            Piece::Plausible {
                len,
                type_index,
                more,
                fill,
            } => {
                let ty = FrameType::ALL[usize::from(*type_index) % FrameType::ALL.len()] as u8;
                wire.extend_from_slice(&u32::from(*len).to_be_bytes());
                wire.push(ty | if *more { MORE_FRAGMENTS } else { 0 });
                wire.extend_from_slice(fill);
            }
            Piece::Whole {
                type_index,
                more,
                payload,
            } => {
                let frame_type = FrameType::ALL[usize::from(*type_index) % FrameType::ALL.len()];
                let header = Header {
                    frame_type,
                    more: *more,
                    payload_len: payload.len(),
                };
                wire.extend_from_slice(&header.to_bytes());
                wire.extend_from_slice(payload);
            }
        }
    }
    wire
}

/// Arbitrary bytes, arbitrarily chunked, with an arbitrary (often small) length limit:
/// the decoder never panics, reports exactly what the spec model reports whatever the
/// chunking, holds exactly the bytes of the incomplete frame (so `buffered()` never
/// exceeds what was fed), and repeats its first error forever.
#[test]
fn decoder_matches_model_under_any_chunking() {
    check!()
        .with_type::<(Vec<Piece>, Vec<u8>, Option<u16>)>()
        .for_each(|(pieces, sizes, max_len)| {
            let wire = build_wire(pieces);
            let max_len = max_len.map(u32::from);
            let limit = max_len.unwrap_or(MAX_FRAME_LEN).min(MAX_FRAME_LEN);
            let (expected, expected_held) = model(&wire, limit);
            let (whole, whole_held) = decode_chunked(&wire, max_len, &[]);
            assert_eq!(whole, expected, "all at once differs from the model");
            assert_eq!(whole_held, expected_held);
            let (chunked, chunked_held) = decode_chunked(&wire, max_len, sizes);
            assert_eq!(chunked, whole, "chunking changed the result");
            assert_eq!(chunked_held, whole_held, "chunking changed what is held");
        });
}

/// Plain arbitrary bytes (the fuzzer's own input), fed in one piece and byte by byte:
/// no panic, and both agree with the model.
#[test]
fn decoder_on_raw_bytes() {
    check!().for_each(|wire: &[u8]| {
        let (expected, held) = model(wire, MAX_FRAME_LEN);
        let (whole, whole_held) = decode_chunked(wire, None, &[]);
        assert_eq!((&whole, whole_held), (&expected, held));
        let ones = vec![1u8; wire.len()];
        let (bytewise, bytewise_held) = decode_chunked(wire, None, &ones);
        assert_eq!((&bytewise, bytewise_held), (&expected, held));
    });
}

/// A frame's payload: literal bytes, or a long run of one byte (to cross record and
/// 64 KiB buffer boundaries without a huge input).
#[derive(Clone, Debug, TypeGenerator)]
enum Payload {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len` copies of `byte`.
    Run {
        #[generator(0..=200_000u32)]
        len: u32,
        byte: u8,
    },
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Run { len, byte } => vec![*byte; *len as usize],
        }
    }
}

/// Frames encoded with `encode` (or `Header::to_bytes` for fragments), split at
/// arbitrary points, decode to exactly the frames that were encoded, with nothing left
/// over; the header bytes round trip through `Header::parse`.
#[test]
fn encode_then_decode_round_trips() {
    check!()
        .with_type::<(Vec<(u8, bool, Payload)>, Vec<u8>)>()
        .for_each(|(frames, sizes)| {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (type_index, more, payload) in frames {
                let frame_type = FrameType::ALL[usize::from(*type_index) % FrameType::ALL.len()];
                let payload = payload.bytes();
                let header = Header {
                    frame_type,
                    more: *more,
                    payload_len: payload.len(),
                };
                let bytes = header.to_bytes();
                assert_eq!(Header::parse(&bytes, MAX_FRAME_LEN), Ok(header));
                let start = wire.len();
                if *more {
                    wire.extend_from_slice(&bytes);
                    wire.extend_from_slice(&payload);
                } else {
                    encode(frame_type, &payload, &mut wire);
                    assert_eq!(wire[start..start + HEADER_LEN], bytes, "encode's header");
                }
                assert_eq!(wire.len() - start, HEADER_LEN + payload.len());
                expected.push(Out::Frame(frame_type, *more, payload));
            }
            let (got, held) = decode_chunked(&wire, None, sizes);
            assert_eq!(got, expected, "frames changed on the way");
            assert_eq!(held, 0, "bytes left over after whole frames");
            // Chunks of up to 255 bytes barely dent the long runs: split them coarser too.
            let scaled: Vec<u8> = sizes.iter().map(|s| s.wrapping_mul(97)).collect();
            let (got, held) = decode_chunked(&wire, None, &scaled);
            assert_eq!((got, held), (expected, 0));
        });
}

/// A header claiming up to 16 MiB followed by only some of its bytes: the decoder
/// reports nothing and holds exactly the bytes that arrived.
#[test]
fn claimed_length_is_never_reserved() {
    check!()
        .with_type::<(u32, u8, Vec<u8>, Vec<u8>)>()
        .for_each(|(claim, type_index, body, sizes)| {
            let len = claim % MAX_FRAME_LEN + 1;
            let ty = FrameType::ALL[usize::from(*type_index) % FrameType::ALL.len()];
            let have = body.len().min(len as usize - 1);
            let mut wire = Vec::new();
            wire.extend_from_slice(&len.to_be_bytes());
            wire.push(ty as u8);
            wire.extend_from_slice(&body[..have]);
            let complete = have == len as usize - 1;
            let (got, held) = decode_chunked(&wire, None, sizes);
            if complete {
                assert_eq!(got, [Out::Frame(ty, false, body[..have].to_vec())]);
                assert_eq!(held, 0);
            } else {
                assert!(got.is_empty(), "an incomplete frame was reported");
                assert_eq!(held, wire.len(), "held other than the bytes that arrived");
            }
        });
}
