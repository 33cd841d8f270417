//! Fuzz harnesses of the accepting side of a [`weft_mesh::link::Link`].
//!
//! The responder is fed fuzz bytes in fuzz-chosen chunks, interleaved with
//! `poll_transmit`, `handle_timeout` and a clock that runs forward (and sometimes reads
//! stale), through a [`Probe`] that checks the sans-IO contract after every call. One
//! harness starts from scratch, one from a genuine initiator's messages with fuzz
//! mutations and bytes after them, one compares chunkings.

use bolero::{check, TypeGenerator};
use weft_mesh::handshake::Pattern;
use weft_mesh::link::LinkEvent;
use weft_mesh::{CloseReason, PROTOCOL_VERSION};
use weft_mesh_fuzz::{
    new_initiator, new_responder, peer_events, run_script, transcript, Dial, Limits, Mutation,
    Probe, Step,
};

/// A piece of what the fuzz initiator sends: raw bytes, or bytes in the transport
/// framing, shaped more and more like a genuine first message.
#[derive(Clone, Debug, TypeGenerator)]
enum Piece {
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// `[u16 BE len][body]` around arbitrary bytes.
    Body(Vec<u8>),
    /// A length prefix claiming `len` bytes, then only `have` of them.
    Short { len: u16, have: Vec<u8> },
    /// A first message: `[len][version][pattern][rest]`, the version right unless given.
    Versioned {
        version: Option<u8>,
        pattern: u8,
        rest: Vec<u8>,
    },
    /// A well-formed XX first message: an arbitrary ephemeral key and a pre-hello
    /// with arbitrary flags and ML-KEM key bytes (padded to the real length if asked).
    PreHello {
        e: [u8; 32],
        flags: u8,
        ek: Option<Vec<u8>>,
        full_ek: bool,
        unknown: Option<(u8, Vec<u8>)>,
    },
}

fn cbor_head(major: u8, n: usize, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        _ => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
}

fn framed(body: &[u8], out: &mut Vec<u8>) {
    let body = &body[..body.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

fn build_wire(pieces: &[Piece]) -> Vec<u8> {
    let mut wire = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Raw(bytes) => wire.extend_from_slice(bytes),
            Piece::Body(body) => framed(body, &mut wire),
            Piece::Short { len, have } => {
                wire.extend_from_slice(&len.to_be_bytes());
                wire.extend_from_slice(&have[..have.len().min(usize::from(*len))]);
            }
            Piece::Versioned {
                version,
                pattern,
                rest,
            } => {
                let mut body = vec![version.unwrap_or(PROTOCOL_VERSION), pattern % 4];
                body.extend_from_slice(rest);
                framed(&body, &mut wire);
            }
            Piece::PreHello {
                e,
                flags,
                ek,
                full_ek,
                unknown,
            } => {
                let mut cbor = Vec::new();
                let entries = 1 + usize::from(ek.is_some()) + usize::from(unknown.is_some());
                cbor_head(5, entries, &mut cbor);
                cbor.push(0x00);
                cbor_head(0, usize::from(*flags), &mut cbor);
                if let Some(ek) = ek {
                    let mut ek = ek.clone();
                    if *full_ek {
                        ek.resize(1184, 0x5a);
                    }
                    cbor.push(0x01);
                    cbor_head(2, ek.len(), &mut cbor);
                    cbor.extend_from_slice(&ek);
                }
                if let Some((key, value)) = unknown {
                    cbor_head(0, 2 + usize::from(*key % 22), &mut cbor);
                    cbor_head(2, value.len(), &mut cbor);
                    cbor.extend_from_slice(value);
                }
                let mut body = vec![PROTOCOL_VERSION, Pattern::XX as u8];
                body.extend_from_slice(e);
                body.extend_from_slice(&(cbor.len() as u32 + 1).to_be_bytes());
                body.push(0x01); // FrameType::Handshake
                body.extend_from_slice(&cbor);
                framed(&body, &mut wire);
            }
        }
    }
    wire
}

/// A responder fed arbitrary (increasingly well-shaped) bytes: no panic, every
/// [`Probe`] invariant holds (deadlines never in the past, `Closed` once and last,
/// bounded memory, well-framed output), and it never reports `Established`, since
/// nothing here can authenticate.
#[test]
fn responder_fed_arbitrary_bytes() {
    check!()
        .with_type::<(Vec<Piece>, Vec<Step>)>()
        .for_each(|(pieces, steps)| {
            let wire = build_wire(pieces);
            let mut probe = Probe::new(new_responder(), Limits::default());
            run_script(&mut probe, &wire, steps);
            assert!(probe.established.is_none(), "random bytes authenticated");
        });
}

/// The plain fuzzer input as the bytes a peer sends, all at once and then again
/// byte by byte: the same invariants, and the same events either way.
#[test]
fn responder_fed_raw_input() {
    check!().for_each(|wire: &[u8]| {
        let mut whole = Probe::new(new_responder(), Limits::default());
        run_script(&mut whole, wire, &[]);
        assert!(whole.established.is_none(), "random bytes authenticated");
        let mut bytewise = Probe::new(new_responder(), Limits::default());
        let steps: Vec<Step> = wire.iter().map(|_| Step::Feed(1)).collect();
        run_script(&mut bytewise, wire, &steps);
        assert_eq!(bytewise.events, whole.events, "chunking changed the events");
    });
}

/// A responder fed a genuine initiator's messages (XX or IK) with fuzz flips, then
/// fuzz bytes, under a fuzz script. Beyond the [`Probe`] invariants:
///
/// * `Established` only if every genuine message arrived unchanged, and then with
///   exactly the initiator's identity, hello and handshake hash;
/// * liveness: if they all arrived unchanged before the harness cut the handshake
///   short, `Established` happened;
/// * determinism: with the first message unchanged, the responder's answer is the
///   genuine transcript's byte for byte;
/// * after `Established` the fuzz tail cannot forge a frame, the link closes only for
///   a record that fails, an idle timeout or a local close, and a genuine initiator
///   that reads everything the responder sent sees `Established` and then exactly the
///   responder's close reason, by peer.
#[test]
fn responder_fed_mutated_handshake() {
    check!()
        .with_type::<(bool, Mutation, Vec<Step>)>()
        .for_each(|(ik, mutation, steps)| {
            let (pattern, dial) = if *ik {
                (Pattern::IK, Dial::Known)
            } else {
                (Pattern::XX, Dial::Any)
            };
            let t = transcript(pattern);
            let m = mutation.apply(&t.initiator);
            let all = t.initiator.len();
            let mut probe = Probe::new(new_responder(), Limits::default());
            run_script(&mut probe, &m.wire, steps);

            if let Some(peer) = &probe.established {
                assert!(m.intact_through(all), "established on mutated messages");
                assert_eq!(peer, &t.initiator_peer, "established with the wrong peer");
            } else if m.intact_through(all)
                && probe.interrupted_at.is_none_or(|at| at >= m.end_of(all))
            {
                panic!(
                    "genuine handshake did not establish: {:?}, interrupted at {:?}",
                    probe.events, probe.interrupted_at
                );
            }
            let first_answer_due =
                m.intact_through(1) && probe.interrupted_at.is_none_or(|at| at >= m.end_of(1));
            if first_answer_due && !probe.sent.is_empty() {
                assert_eq!(
                    probe.sent[0], t.responder[0],
                    "answer differs from transcript"
                );
            }
            for event in &probe.events {
                assert!(
                    !matches!(event, LinkEvent::Frame { .. }),
                    "fuzz bytes delivered a frame: {event:?}"
                );
            }
            if probe.established.is_none() {
                return;
            }
            if let Some((reason, by_peer)) = probe.closed {
                assert!(!by_peer, "fuzz bytes closed the link as the peer");
                assert!(
                    probe.closed_locally
                        || matches!(
                            reason,
                            CloseReason::DecryptFailed
                                | CloseReason::MalformedRecord
                                | CloseReason::IdleTimeout
                        ),
                    "established link closed with {reason:?}"
                );
            }
            let seen = peer_events(new_initiator(dial), &probe.sent);
            if probe.sent.is_empty() {
                // Lost or closed before its answer was pulled: nothing went out.
                assert!(seen.is_empty());
                return;
            }
            assert_eq!(
                seen.first(),
                Some(&LinkEvent::Established(Box::new(t.responder_peer.clone())))
            );
            let expected_close =
                probe
                    .closed
                    .filter(|_| probe.close_record_sent)
                    .map(|(reason, _)| LinkEvent::Closed {
                        reason,
                        by_peer: true,
                    });
            assert_eq!(
                seen.get(1),
                expected_close.as_ref(),
                "the genuine initiator saw {seen:?}"
            );
            assert!(seen.len() <= 2, "the genuine initiator saw {seen:?}");
        });
}

/// The same inputs (genuine messages, flips, fuzz tail) fed at one instant in fuzz-chosen
/// chunks with `poll_transmit` after each, and all at once with `poll_transmit` at the
/// end: the events are identical, and what the lazy run sent is a prefix of what the
/// eager run sent (a close may drop handshake messages not yet pulled, nothing else).
#[test]
fn responder_chunking_invariance() {
    check!()
        .with_type::<(bool, Mutation, Vec<u16>)>()
        .for_each(|(ik, mutation, sizes)| {
            let pattern = if *ik { Pattern::IK } else { Pattern::XX };
            let m = mutation.apply(&transcript(pattern).initiator);
            let mut eager = Probe::new(new_responder(), Limits::default());
            let steps: Vec<Step> = sizes
                .iter()
                .flat_map(|s| [Step::Feed(*s), Step::Flush])
                .collect();
            run_script(&mut eager, &m.wire, &steps);
            let mut lazy = Probe::new(new_responder(), Limits::default());
            run_script(&mut lazy, &m.wire, &[]);
            assert_eq!(eager.events, lazy.events, "chunking changed the events");
            let (eager_sent, lazy_sent) = (eager.sent_bytes(), lazy.sent_bytes());
            assert!(
                eager_sent.starts_with(&lazy_sent),
                "lazy run sent bytes the eager one did not"
            );
        });
}
