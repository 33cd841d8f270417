//! Fuzz harnesses of the dialing side of a [`weft_mesh::link::Link`].
//!
//! The initiator writes its genuine first message (XX or IK, to any node, a named node
//! or a known key), then is fed fuzz bytes, or the genuine responder's answer with
//! fuzz mutations and bytes after it, in fuzz-chosen chunks under a fuzz script of
//! polls, timeouts and clock steps, all through a [`Probe`] that checks the sans-IO
//! contract after every call.

use bolero::check;
use weft_mesh::link::LinkEvent;
use weft_mesh::CloseReason;
use weft_mesh_fuzz::{
    new_initiator, new_responder, peer_events, run_script, transcript, Dial, Limits, Mutation,
    Probe, Step, Tail,
};

/// A harness initiator behind a probe, its first message already pulled and checked
/// against the genuine transcript (the same seed must give the same bytes).
fn started(dial: Dial) -> Probe {
    let mut probe = Probe::new(new_initiator(dial), Limits::default());
    probe.poll_transmit(probe.now());
    assert_eq!(
        probe.sent,
        [transcript(dial.pattern()).initiator[0].clone()],
        "first message differs from the transcript"
    );
    probe
}

/// What a genuine responder sees when it reads everything `probe`'s initiator sent.
fn responder_view(_dial: Dial, probe: &Probe) -> Vec<LinkEvent> {
    peer_events(new_responder(), &probe.sent)
}

/// An initiator fed arbitrary bytes and forged transport messages after its first
/// message: no panic, every [`Probe`] invariant holds (deadlines never in the past,
/// `Closed` once and last, bounded memory, well-framed output), and it never reports
/// `Established`, since nothing here can authenticate.
#[test]
fn initiator_fed_arbitrary_bytes() {
    check!()
        .with_type::<(Dial, Vec<Tail>, Vec<Step>)>()
        .for_each(|(dial, pieces, steps)| {
            let mut wire = Vec::new();
            for piece in pieces {
                piece.write(&mut wire);
            }
            let mut probe = started(*dial);
            run_script(&mut probe, &wire, steps);
            assert!(probe.established.is_none(), "random bytes authenticated");
        });
}

/// The plain fuzzer input as the responder's bytes to an XX initiator, all at once
/// and then byte by byte: the same invariants, and the same events either way.
#[test]
fn initiator_fed_raw_input() {
    check!().for_each(|wire: &[u8]| {
        let mut whole = started(Dial::Any);
        run_script(&mut whole, wire, &[]);
        assert!(whole.established.is_none(), "random bytes authenticated");
        let mut bytewise = started(Dial::Any);
        let steps: Vec<Step> = wire.iter().map(|_| Step::Feed(1)).collect();
        run_script(&mut bytewise, wire, &steps);
        assert_eq!(bytewise.events, whole.events, "chunking changed the events");
    });
}

/// An initiator fed the genuine responder's answer with fuzz flips, then fuzz bytes,
/// under a fuzz script. Beyond the [`Probe`] invariants:
///
/// * `Established` only if the answer arrived unchanged and came from the node that
///   was dialed, and then with exactly the responder's identity, hello and hash;
/// * liveness: an unchanged answer that arrived before the harness cut the handshake
///   short establishes the link, or, dialing another node id, closes it with
///   `UnexpectedPeer`;
/// * determinism: the XX third message is the transcript's byte for byte;
/// * after `Established` the fuzz tail cannot forge a frame, the link closes only for
///   a record that fails, an idle timeout or a local close, and a genuine responder
///   that reads everything the initiator sent sees `Established` and then exactly the
///   initiator's close reason, by peer.
#[test]
fn initiator_fed_mutated_handshake() {
    check!()
        .with_type::<(Dial, Mutation, Vec<Step>)>()
        .for_each(|(dial, mutation, steps)| {
            let t = transcript(dial.pattern());
            let m = mutation.apply(&t.responder);
            let mut probe = started(*dial);
            run_script(&mut probe, &m.wire, steps);

            let answered = m.intact_through(1);
            let in_time = probe.interrupted_at.is_none_or(|at| at >= m.end_of(1));
            if let Some(peer) = &probe.established {
                assert!(answered, "established on a mutated answer");
                assert_ne!(*dial, Dial::WrongNode, "established with the wrong node");
                assert_eq!(peer, &t.responder_peer, "established with the wrong peer");
            } else if answered && in_time && *dial != Dial::WrongNode {
                panic!(
                    "genuine handshake did not establish: {:?}, interrupted at {:?}",
                    probe.events, probe.interrupted_at
                );
            }
            if *dial == Dial::WrongNode && answered && in_time {
                assert_eq!(
                    probe.closed,
                    Some((CloseReason::UnexpectedPeer, false)),
                    "dialed another node id: {:?}",
                    probe.events
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
            if *dial != Dial::Known && probe.sent.len() >= 2 {
                assert_eq!(probe.sent[1], t.initiator[1], "third message differs");
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
            let seen = responder_view(*dial, &probe);
            if probe.sent.len() < 2 {
                // Its last handshake message (XX) or first record (IK) never went out.
                assert!(seen.is_empty(), "the genuine responder saw {seen:?}");
                return;
            }
            assert_eq!(
                seen.first(),
                Some(&LinkEvent::Established(Box::new(t.initiator_peer.clone()))),
                "the genuine responder saw {seen:?}"
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
                "the genuine responder saw {seen:?}"
            );
            assert!(seen.len() <= 2, "the genuine responder saw {seen:?}");
        });
}

/// The same inputs (genuine answer, flips, fuzz tail) fed at one instant in fuzz-chosen
/// chunks with `poll_transmit` after each, and all at once with `poll_transmit` at the
/// end: the events are identical; before `Established` what the lazy run sent is a
/// prefix of what the eager run sent, and after it a genuine responder reading either
/// run's output sees the same events (records are packed when pulled, so the bytes
/// may differ: the eager run sends the IK key-confirming heartbeat on its own).
#[test]
fn initiator_chunking_invariance() {
    check!()
        .with_type::<(Dial, Mutation, Vec<u16>)>()
        .for_each(|(dial, mutation, sizes)| {
            let m = mutation.apply(&transcript(dial.pattern()).responder);
            let mut eager = started(*dial);
            let steps: Vec<Step> = sizes
                .iter()
                .flat_map(|s| [Step::Feed(*s), Step::Flush])
                .collect();
            run_script(&mut eager, &m.wire, &steps);
            let mut lazy = started(*dial);
            run_script(&mut lazy, &m.wire, &[]);
            assert_eq!(eager.events, lazy.events, "chunking changed the events");
            if eager.established.is_some() {
                assert_eq!(
                    responder_view(*dial, &eager),
                    responder_view(*dial, &lazy),
                    "the genuine responder sees the runs differently"
                );
            } else {
                let (eager_sent, lazy_sent) = (eager.sent_bytes(), lazy.sent_bytes());
                assert!(
                    eager_sent.starts_with(&lazy_sent),
                    "lazy run sent bytes the eager one did not"
                );
            }
        });
}
