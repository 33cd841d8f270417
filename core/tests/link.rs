//! A pair of `Link`s over an in-memory wire: handshakes in every shape and chunking,
//! rejections as both sides see them, timeouts, closing, and misuse of the API.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{config, identity, Chunks, Pair, GENESIS};
use weft_mesh::frame::FrameType;
use weft_mesh::handshake::{PqPolicy, Remote};
use weft_mesh::link::{Link, LinkConfig, LinkEvent, SendError, MAX_TRANSMIT};
use weft_mesh::{CloseReason, Instant, Rng};

fn known() -> Remote {
    Remote::Known(*identity(2).public())
}

#[test]
fn xx_and_ik_with_and_without_kem_whole_and_byte_by_byte() {
    for remote in [Remote::Any, known()] {
        for (pq, hybrid) in [
            (PqPolicy::Prefer, true),
            (PqPolicy::Require, true),
            (PqPolicy::Off, false),
        ] {
            for chunks in [Chunks::Whole, Chunks::Bytewise, Chunks::Random(7)] {
                let mut p = Pair::new(config(pq), config(pq), remote);
                p.chunks = chunks;
                p.run();
                let ctx = format!("{remote:?} {pq:?} {chunks:?}");
                assert!(p.established(), "{ctx}");
                assert_eq!(Pair::established_hybrid(&p.a_events), Some(hybrid), "{ctx}");
                assert_eq!(Pair::established_hybrid(&p.b_events), Some(hybrid), "{ctx}");
                assert_eq!(p.a.is_hybrid(), hybrid);
                assert_eq!(p.a.peer().unwrap().identity.node_id, identity(2).node_id());
                assert_eq!(p.b.peer().unwrap().identity.node_id, identity(1).node_id());
                p.a.send(FrameType::Message, Bytes::from_static(b"ping"))
                    .unwrap();
                p.b.send(FrameType::Message, Bytes::from_static(b"pong"))
                    .unwrap();
                p.run();
                assert_eq!(
                    Pair::frames(&p.b_events),
                    [(FrameType::Message, Bytes::from_static(b"ping"))],
                    "{ctx}"
                );
                assert_eq!(
                    Pair::frames(&p.a_events),
                    [(FrameType::Message, Bytes::from_static(b"pong"))],
                    "{ctx}"
                );
            }
        }
    }
}

#[test]
fn an_ik_responder_reports_the_peer_only_after_key_confirmation() {
    let mut p = Pair::default_pair(known());
    // First message only: the responder answers but must not report the peer.
    let mut buf = vec![0u8; MAX_TRANSMIT];
    let n = p.a.poll_transmit(p.now, &mut buf).unwrap();
    let first = buf[..n].to_vec();

    // A replay of that first message to a fresh responder.
    let mut replayed = Link::accept(
        config(PqPolicy::Prefer),
        identity(2),
        Rng::from_seed([5; 32]),
        p.now,
    );
    replayed.handle_bytes(p.now, &first);
    assert!(
        replayed.poll_transmit(p.now, &mut buf).is_some(),
        "it answers"
    );
    assert!(replayed.poll_event().is_none(), "but reports nothing");
    assert!(!replayed.is_established() && replayed.peer().is_none());
    let later = p.now + Duration::from_secs(10);
    assert_eq!(replayed.poll_timeout(), Some(later));
    replayed.handle_timeout(later);
    assert_eq!(
        replayed.poll_event(),
        Some(LinkEvent::Closed {
            reason: CloseReason::HandshakeTimeout,
            by_peer: false
        })
    );

    // The real exchange confirms at once (the initiator sends a keepalive record).
    p.b.handle_bytes(p.now, &first);
    p.run();
    assert!(p.established());
    assert_eq!(Pair::established_hybrid(&p.b_events), Some(true));
}

#[test]
fn genesis_mismatch_is_reported_on_both_sides() {
    let mut other = config(PqPolicy::Prefer);
    other.handshake.genesis = [0x99; 32];
    // XX: the initiator sees the responder's hello first and drops the connection.
    let mut p = Pair::new(other.clone(), config(PqPolicy::Prefer), Remote::Any);
    p.run();
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::GenesisMismatch, false))
    );
    assert!(p.a.is_drained());
    p.b.handle_connection_lost(p.now);
    p.drain_events();
    assert_eq!(
        Pair::closed(&p.b_events),
        Some((CloseReason::ConnectionLost, false))
    );
    // IK: the responder sees it first and finishes the handshake to send its Close;
    // the initiator sees the responder's hello and rejects too.
    let mut p = Pair::new(other, config(PqPolicy::Prefer), known());
    p.run();
    assert_eq!(
        Pair::closed(&p.b_events),
        Some((CloseReason::GenesisMismatch, false))
    );
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::GenesisMismatch, false))
    );
    assert_eq!(
        p.b_wire.len(),
        2,
        "the second handshake message, then the Close record"
    );
    assert!(p.a.is_drained() && p.b.is_drained());
    assert_eq!(
        Pair::established_hybrid(&p.b_events),
        None,
        "never reported up"
    );
}

#[test]
fn policy_violations_reach_the_initiator_with_their_reason() {
    // A classical initiator against a Require responder (XX): deferred, then sent.
    let mut p = Pair::new(
        config(PqPolicy::Off),
        config(PqPolicy::Require),
        Remote::Any,
    );
    p.run();
    assert_eq!(
        Pair::closed(&p.b_events),
        Some((CloseReason::PolicyViolation, false))
    );
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::PolicyViolation, true))
    );
    assert_eq!(Pair::established_hybrid(&p.b_events), None);
    // A Require initiator against a classical responder rejects by itself.
    let mut p = Pair::new(
        config(PqPolicy::Require),
        config(PqPolicy::Off),
        Remote::Any,
    );
    p.run();
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::PolicyViolation, false))
    );
}

#[test]
fn own_node_id_is_rejected() {
    let me = identity(1);
    let mut p = Pair::with_identities(
        config(PqPolicy::Prefer),
        config(PqPolicy::Prefer),
        Remote::Any,
        me.clone(),
        me,
    );
    p.run();
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::OwnNodeId, false))
    );
}

#[test]
fn a_stalled_handshake_times_out() {
    let mut a = Link::connect(
        config(PqPolicy::Prefer),
        identity(1),
        Remote::Any,
        Rng::from_seed([1; 32]),
        Instant::ZERO,
    );
    let deadline = a.poll_timeout().unwrap();
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(10));
    a.handle_timeout(Instant::from_micros(9_999_999));
    assert!(a.poll_event().is_none(), "early calls are harmless");
    a.handle_timeout(deadline);
    assert_eq!(
        a.poll_event(),
        Some(LinkEvent::Closed {
            reason: CloseReason::HandshakeTimeout,
            by_peer: false
        })
    );
    assert!(a.is_drained() && a.poll_timeout().is_none());
}

#[test]
fn garbage_and_huge_lengths_close_or_time_out_without_buffering() {
    let cases: [(&[u8], Option<CloseReason>); 4] = [
        (b"\x00\x00", Some(CloseReason::MalformedRecord)),
        (
            b"\x00\x03\x07\x01\x00",
            Some(CloseReason::UnsupportedVersion),
        ),
        (
            b"\x00\x04\x01\x09\x00\x00",
            Some(CloseReason::MalformedHandshake),
        ),
        // A claimed 65535-byte message that never comes: only the timeout ends it.
        (b"\xff\xff\x01\x01", None),
    ];
    for (input, reason) in cases {
        let now = Instant::ZERO;
        let mut b = Link::accept(
            config(PqPolicy::Prefer),
            identity(2),
            Rng::from_seed([2; 32]),
            now,
        );
        b.handle_bytes(now, input);
        match reason {
            Some(r) => assert_eq!(
                b.poll_event(),
                Some(LinkEvent::Closed {
                    reason: r,
                    by_peer: false
                }),
                "{input:?}"
            ),
            None => {
                assert!(b.poll_event().is_none());
                b.handle_timeout(now + Duration::from_secs(10));
                let reason = CloseReason::HandshakeTimeout;
                assert_eq!(
                    b.poll_event(),
                    Some(LinkEvent::Closed {
                        reason,
                        by_peer: false
                    })
                );
            }
        }
        assert!(b.is_drained());
        // A closed link ignores further input.
        b.handle_bytes(now, &[0xff; 100]);
        assert!(b.poll_event().is_none());
    }
}

#[test]
fn keepalives_hold_an_idle_link_open_and_silence_closes_it() {
    let mut p = Pair::default_pair(Remote::Any);
    p.run();
    for _ in 0..10 {
        p.advance(Duration::from_secs(10));
    }
    assert!(p.established(), "100 s of keepalives, no data");
    assert!(
        Pair::frames(&p.b_events).is_empty(),
        "keepalives are not delivered"
    );
    // Now b goes silent: a's idle timer fires and b is told.
    p.now = p.now + Duration::from_secs(31);
    p.a.handle_timeout(p.now);
    p.run();
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::IdleTimeout, false))
    );
    assert_eq!(
        Pair::closed(&p.b_events),
        Some((CloseReason::IdleTimeout, true))
    );
}

/// Events `a` has not reported yet, without moving any bytes.
fn pending(link: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

/// Move what `from` has to send into `to` at `now`.
fn deliver(from: &mut Link, to: &mut Link, now: Instant) {
    let mut buf = vec![0u8; MAX_TRANSMIT];
    while let Some(n) = from.poll_transmit(now, &mut buf) {
        to.handle_bytes(now, &buf[..n]);
    }
}

#[test]
fn a_silent_link_is_reported_stalled_and_resumed_by_the_next_record() {
    let mut p = Pair::default_pair(Remote::Any);
    p.run();
    for _ in 0..10 {
        p.advance(Duration::from_secs(1));
    }
    let health = |events: &[LinkEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, LinkEvent::Stalled | LinkEvent::Slow | LinkEvent::Resumed))
            .count()
    };
    assert_eq!(health(&p.a_events) + health(&p.b_events), 0, "pings flow");
    assert!(p.a.rtt().is_some() && p.b.rtt().is_some(), "pongs measured");
    // Nothing reaches a any more: it reports the stall once and stays open.
    let stall_after = LinkConfig::new([0; 32]).stall_after.unwrap();
    p.now = p.now + stall_after + Duration::from_millis(1);
    p.a.handle_timeout(p.now);
    p.a.handle_timeout(p.now);
    assert_eq!(pending(&mut p.a), [LinkEvent::Stalled]);
    assert!(p.a.is_stalled() && p.a.is_degraded() && p.established());
    // The path clears: a's ping reaches b, whose pong ends the stall.
    p.run();
    assert!(!p.a.is_stalled() && !p.a.is_degraded());
    assert_eq!(p.a_events.last(), Some(&LinkEvent::Resumed));
}

#[test]
fn slow_round_trips_are_reported_and_recover_with_hysteresis() {
    let mut p = Pair::default_pair(Remote::Any);
    p.run();
    p.advance(Duration::from_secs(1));
    let slow_rtt = LinkConfig::new([0; 32]).slow_rtt.unwrap();
    // b takes 0.8 s to handle each ping (an overloaded peer); a notices while waiting.
    for round in 0..6 {
        p.now = p.now + Duration::from_secs(1);
        p.a.handle_timeout(p.now);
        let sent = p.now;
        if round == 0 {
            let t = p.a.poll_timeout().unwrap();
            assert!(
                t <= sent + slow_rtt + Duration::from_millis(1),
                "a times the ping"
            );
            p.a.handle_timeout(t);
            assert_eq!(pending(&mut p.a), [LinkEvent::Slow]);
            assert!(p.a.is_slow() && p.a.is_degraded());
        }
        let late = sent + Duration::from_millis(800);
        deliver(&mut p.a, &mut p.b, late);
        pending(&mut p.b);
        deliver(&mut p.b, &mut p.a, late);
        assert!(pending(&mut p.a).is_empty(), "still slow: {:?}", p.a.rtt());
        p.now = late;
    }
    assert!(p.a.rtt().unwrap() > slow_rtt / 2);
    // Prompt answers bring the smoothed round trip down to half the limit, then back.
    let mut rounds = 0;
    while p.a.is_slow() {
        rounds += 1;
        assert!(rounds < 30, "never recovered: {:?}", p.a.rtt());
        p.advance(Duration::from_secs(1));
    }
    assert!(p.a.rtt().unwrap() <= slow_rtt / 2);
    assert_eq!(p.a_events.last(), Some(&LinkEvent::Resumed));
    assert!(rounds > 1, "hysteresis: one fast answer is not enough");
}

#[test]
fn orderly_close_is_delivered_and_drains() {
    let mut p = Pair::default_pair(Remote::Any);
    p.run();
    p.a.close(p.now, CloseReason::Normal);
    assert!(!p.a.is_drained(), "the Close record is still to be sent");
    p.run();
    assert!(p.a.is_drained() && p.b.is_drained());
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::Normal, false))
    );
    assert_eq!(Pair::closed(&p.b_events), Some((CloseReason::Normal, true)));
    assert_eq!(
        p.a.send(FrameType::Message, Bytes::new()),
        Err(SendError::Closed)
    );
}

#[test]
fn a_closing_link_that_cannot_flush_gives_up_after_the_close_timeout() {
    let mut p = Pair::default_pair(Remote::Any);
    p.run();
    p.a.close(p.now, CloseReason::Normal);
    let deadline = p.a.poll_timeout().unwrap();
    assert_eq!(deadline, p.now + Duration::from_secs(2));
    p.a.handle_timeout(deadline);
    assert!(p.a.is_drained());
}

#[test]
fn a_flipped_ciphertext_bit_closes_the_link() {
    let mut p = Pair::default_pair(Remote::Any);
    p.run();
    let handshake_messages = p.a_wire.len();
    p.tamper_a = Some(Box::new(move |i, bytes| {
        if i == handshake_messages {
            let last = bytes.len() - 1;
            bytes[last / 2] ^= 0x10;
        }
    }));
    p.a.send(FrameType::Message, Bytes::from_static(b"secret"))
        .unwrap();
    p.run();
    assert_eq!(
        Pair::closed(&p.b_events),
        Some((CloseReason::DecryptFailed, false))
    );
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::DecryptFailed, true))
    );
    assert!(Pair::frames(&p.b_events).is_empty());
}

#[test]
fn send_misuse_and_backpressure() {
    let mut cfg = config(PqPolicy::Prefer);
    cfg.record.max_queued_bytes = 100_000;
    let mut p = Pair::new(cfg.clone(), cfg, Remote::Any);
    assert_eq!(
        p.a.send(FrameType::Message, Bytes::new()),
        Err(SendError::NotEstablished),
        "not yet established"
    );
    p.run();
    for t in [
        FrameType::Handshake,
        FrameType::Close,
        FrameType::Rekey,
        FrameType::Ping,
    ] {
        assert_eq!(p.a.send(t, Bytes::new()), Err(SendError::ReservedType));
    }
    let huge = Bytes::from(vec![0u8; 16 << 20]);
    assert_eq!(p.a.send(FrameType::Message, huge), Err(SendError::TooLarge));
    let chunk = Bytes::from(vec![1u8; 30_000]);
    let mut queued = 0;
    while p.a.send(FrameType::Message, chunk.clone()).is_ok() {
        queued += 1;
    }
    assert_eq!(queued, 3);
    assert_eq!(
        p.a.send(FrameType::Message, chunk.clone()),
        Err(SendError::Full)
    );
    p.run();
    assert!(p.a_events.contains(&LinkEvent::SendReady));
    assert_eq!(Pair::frames(&p.b_events).len(), 3);
    assert!(p.a.send(FrameType::Message, chunk).is_ok());
}

#[test]
fn poll_timeout_is_never_in_the_past() {
    let mut p = Pair::default_pair(Remote::Any);
    p.run();
    let far = p.now + Duration::from_secs(3600);
    p.a.handle_timeout(far);
    // Idle timeout fired; whatever remains must not be before `far`.
    if let Some(t) = p.a.poll_timeout() {
        assert!(t >= far);
    }
    let mut c = LinkConfig::new(GENESIS);
    c.record.rekey_after = Duration::from_secs(1);
    let mut p = Pair::new(c.clone(), c, Remote::Any);
    p.run();
    let later = p.now + Duration::from_secs(5);
    p.a.handle_timeout(later);
    assert!(p.a.wants_transmit(), "a time-based rekey is due");
    assert!(
        p.a.poll_timeout().unwrap() > later,
        "the due rekey does not spin the timer"
    );
}
