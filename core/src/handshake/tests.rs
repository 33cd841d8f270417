//! Handshake state machine tests at the level of transport bodies: every pattern and
//! policy, and every rejection with its reason (forged payloads via the tamper hook).

use super::*;
use alloc::vec;
use alloc::vec::Vec;

const GENESIS: [u8; 32] = [0x47; 32];

fn ident(seed: u8) -> Arc<Identity> {
    Arc::new(Identity::generate(&mut Rng::from_seed([seed; 32])))
}

fn config(pq: PqPolicy) -> HandshakeConfig {
    HandshakeConfig {
        pq,
        ..HandshakeConfig::new(GENESIS)
    }
}

/// The result of running a handshake to its end on both sides.
struct Outcome {
    initiator: Result<Finished, CloseReason>,
    responder: Result<Finished, CloseReason>,
}

impl Outcome {
    /// The reason the handshake was rejected, by whichever side, deferred or not.
    fn rejection(&self) -> Option<CloseReason> {
        let side = |r: &Result<Finished, CloseReason>| match r {
            Err(reason) => Some(*reason),
            Ok(f) => f.deferred_reject,
        };
        // A side that only saw the other fail reports ConnectionLost; skip it.
        [side(&self.initiator), side(&self.responder)]
            .into_iter()
            .flatten()
            .find(|r| *r != CloseReason::ConnectionLost)
    }

    fn keys_agree(&self) -> bool {
        match (&self.initiator, &self.responder) {
            (Ok(i), Ok(r)) => {
                i.send_key == r.recv_key && i.recv_key == r.send_key && i.send_key != i.recv_key
            }
            _ => false,
        }
    }
}

/// Shuttle bodies between the two sides, letting `mangle` rewrite each body
/// (message index, body) on its way.
fn run_with(
    mut i: Handshake,
    mut r: Handshake,
    mut mangle: impl FnMut(usize, &mut Vec<u8>),
) -> Outcome {
    let mut index = 0;
    let fail = |reason| Outcome {
        initiator: Err(reason),
        responder: Err(reason),
    };
    loop {
        let (from, to) = if index % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        if from.is_finished() && to.is_finished() {
            break;
        }
        let mut body = match from.write_message() {
            Ok(b) => b,
            Err(reason) => return fail(reason),
        };
        mangle(index, &mut body);
        if let Err(reason) = to.read_message(&body) {
            let (initiator, responder) = if index % 2 == 0 {
                (Err(CloseReason::ConnectionLost), Err(reason))
            } else {
                (Err(reason), Err(CloseReason::ConnectionLost))
            };
            return Outcome {
                initiator,
                responder,
            };
        }
        index += 1;
        if index > 3 {
            break;
        }
    }
    Outcome {
        initiator: i.finish(),
        responder: r.finish(),
    }
}

fn run(i: Handshake, r: Handshake) -> Outcome {
    run_with(i, r, |_, _| {})
}

fn pair(remote: Remote, ip: PqPolicy, rp: PqPolicy) -> (Handshake, Handshake) {
    let (a, b) = (ident(1), ident(2));
    let remote = match remote {
        Remote::Known(_) => Remote::Known(*b.public()),
        other => other,
    };
    (
        Handshake::initiator(config(ip), a, remote, Rng::from_seed([11; 32])),
        Handshake::responder(config(rp), b, Rng::from_seed([12; 32])),
    )
}

fn known() -> Remote {
    Remote::Known(*ident(2).public())
}

#[test]
fn xx_and_ik_agree_on_keys_and_authenticate_both_sides() {
    for remote in [Remote::Any, known()] {
        for (pq, hybrid) in [(PqPolicy::Prefer, true), (PqPolicy::Off, false)] {
            let (i, r) = pair(remote, pq, pq);
            let out = run(i, r);
            assert!(out.keys_agree(), "{remote:?} {pq:?}");
            let (fi, fr) = (
                out.initiator.as_ref().unwrap(),
                out.responder.as_ref().unwrap(),
            );
            let (pi, pr) = (fi.peer.as_ref().unwrap(), fr.peer.as_ref().unwrap());
            assert_eq!(pi.identity, *ident(2).public());
            assert_eq!(pr.identity, *ident(1).public());
            assert_eq!((pi.hybrid, pr.hybrid), (hybrid, hybrid));
            assert_eq!(pi.handshake_hash, pr.handshake_hash);
            assert_eq!(pi.hello.governance_genesis_hash, GENESIS);
            assert_eq!(
                pi.pattern,
                if matches!(remote, Remote::Any) {
                    Pattern::XX
                } else {
                    Pattern::IK
                }
            );
        }
    }
}

#[test]
fn hybrid_and_classical_keys_differ_for_the_same_transcript_inputs() {
    // Same seeds: only the policy differs, so the hybrid key schedule must change the keys.
    let (i, r) = pair(Remote::Any, PqPolicy::Prefer, PqPolicy::Prefer);
    let hybrid = run(i, r).initiator.unwrap();
    let (i, r) = pair(Remote::Any, PqPolicy::Prefer, PqPolicy::Off);
    let classical = run(i, r).initiator.unwrap();
    assert!(hybrid.peer.as_ref().unwrap().hybrid && !classical.peer.as_ref().unwrap().hybrid);
    assert_ne!(hybrid.send_key, classical.send_key);
}

#[test]
fn policy_matrix() {
    use PqPolicy::*;
    // (initiator, responder) -> Ok(hybrid) or the rejection.
    let cases = [
        (Prefer, Prefer, Ok(true)),
        (Require, Prefer, Ok(true)),
        (Prefer, Require, Ok(true)),
        (Require, Require, Ok(true)),
        (Prefer, Off, Ok(false)),
        (Off, Prefer, Ok(false)),
        (Off, Off, Ok(false)),
        (Require, Off, Err(CloseReason::PolicyViolation)),
        (Off, Require, Err(CloseReason::PolicyViolation)),
    ];
    for remote in [Remote::Any, known()] {
        for (ip, rp, expected) in cases {
            let (i, r) = pair(remote, ip, rp);
            let out = run(i, r);
            match expected {
                Ok(hybrid) => {
                    assert!(out.keys_agree(), "{ip:?}/{rp:?}");
                    assert_eq!(
                        out.initiator.unwrap().peer.unwrap().hybrid,
                        hybrid,
                        "{ip:?}/{rp:?}"
                    );
                }
                Err(reason) => {
                    assert_eq!(out.rejection(), Some(reason), "{ip:?}/{rp:?} {remote:?}")
                }
            }
        }
    }
}

#[test]
fn a_require_responder_defers_its_rejection_until_it_can_send_it_encrypted() {
    let (i, r) = pair(Remote::Any, PqPolicy::Off, PqPolicy::Require);
    let out = run(i, r);
    let responder = out.responder.as_ref().unwrap();
    assert_eq!(
        responder.deferred_reject,
        Some(CloseReason::PolicyViolation)
    );
    assert!(
        out.keys_agree(),
        "keys exist so the Close frame can be sent"
    );
}

#[test]
fn genesis_mismatch_is_rejected_by_whoever_sees_it_first() {
    for remote in [Remote::Any, known()] {
        let (a, b) = (ident(1), ident(2));
        let remote = if let Remote::Known(_) = remote {
            Remote::Known(*b.public())
        } else {
            remote
        };
        let other = HandshakeConfig {
            genesis: [0x99; 32],
            ..config(PqPolicy::Prefer)
        };
        let i = Handshake::initiator(other, a, remote, Rng::from_seed([1; 32]));
        let r = Handshake::responder(config(PqPolicy::Prefer), b, Rng::from_seed([2; 32]));
        let out = run(i, r);
        assert_eq!(
            out.rejection(),
            Some(CloseReason::GenesisMismatch),
            "{remote:?}"
        );
    }
}

#[test]
fn own_node_id_and_unexpected_peer_are_rejected() {
    let me = ident(1);
    let i = Handshake::initiator(
        config(PqPolicy::Prefer),
        me.clone(),
        Remote::Any,
        Rng::from_seed([1; 32]),
    );
    let r = Handshake::responder(config(PqPolicy::Prefer), me, Rng::from_seed([2; 32]));
    assert_eq!(run(i, r).rejection(), Some(CloseReason::OwnNodeId));

    let (i, r) = pair(
        Remote::Node(ident(3).node_id()),
        PqPolicy::Prefer,
        PqPolicy::Prefer,
    );
    assert_eq!(run(i, r).rejection(), Some(CloseReason::UnexpectedPeer));
    let (i, r) = pair(
        Remote::Node(ident(2).node_id()),
        PqPolicy::Prefer,
        PqPolicy::Prefer,
    );
    assert!(run(i, r).keys_agree());
}

/// Rewrite a signed payload's fields.
fn edit_payload(
    bytes: &mut Vec<u8>,
    edit: impl FnOnce(&mut [u8; 32], &mut Option<[u8; 64]>, &mut Vec<u8>),
) {
    let p = Payload::decode(bytes).unwrap();
    let (mut key, mut sig, mut hello) = (p.signing_key, p.signature, p.hello.to_vec());
    let (ek, ct) = (p.ek.map(<[u8]>::to_vec), p.ct.map(<[u8]>::to_vec));
    edit(&mut key, &mut sig, &mut hello);
    *bytes = Payload {
        hello: &hello,
        signing_key: key,
        signature: sig,
        ek: ek.as_deref(),
        ct: ct.as_deref(),
    }
    .encode();
}

fn flip_signature(bytes: &mut Vec<u8>) {
    edit_payload(bytes, |_, sig, _| {
        if let Some(sig) = sig {
            sig[10] ^= 1;
        }
    });
}

fn foreign_key(bytes: &mut Vec<u8>) {
    edit_payload(bytes, |key, _, _| *key = ident(9).public().signing_key);
}

fn lie_kem_supported(bytes: &mut Vec<u8>) {
    edit_payload(bytes, |_, _, hello| {
        let mut h = Hello::decode(hello).unwrap();
        h.kem_supported = !h.kem_supported;
        *hello = h.encode();
    });
}

#[test]
fn forged_proofs_are_rejected_with_their_reason() {
    type Tamper = fn(&mut Vec<u8>);
    let cases: [(Tamper, CloseReason); 3] = [
        (flip_signature, CloseReason::BadSignature),
        (foreign_key, CloseReason::NodeIdMismatch),
        // Changing the signed hello after signing also breaks the signature.
        (lie_kem_supported, CloseReason::BadSignature),
    ];
    for (tamper, reason) in cases {
        for remote in [Remote::Any, known()] {
            // A forging responder: the initiator rejects at once.
            let (i, mut r) = pair(remote, PqPolicy::Prefer, PqPolicy::Prefer);
            r.tamper = Some(tamper);
            let out = run(i, r);
            assert_eq!(
                out.initiator.as_ref().err(),
                Some(&reason),
                "responder forged, {remote:?}"
            );
        }
    }
    // A forging IK initiator: its first message is unsigned (the proof follows over the
    // final hash), but a foreign key or a hello inconsistent with its offer is deferred.
    for (tamper, reason) in [
        (foreign_key as Tamper, CloseReason::NodeIdMismatch),
        (lie_kem_supported, CloseReason::InconsistentOffer),
    ] {
        let (mut i, r) = pair(known(), PqPolicy::Prefer, PqPolicy::Prefer);
        i.tamper = Some(tamper);
        let out = run(i, r);
        assert_eq!(
            out.responder.as_ref().ok().and_then(|f| f.deferred_reject),
            Some(reason)
        );
    }
}

#[test]
fn the_ik_initiator_proof_covers_the_whole_session() {
    let session = |seed: u8| {
        let (a, b) = (ident(1), ident(2));
        let i = Handshake::initiator(
            config(PqPolicy::Prefer),
            a,
            Remote::Known(*b.public()),
            Rng::from_seed([seed; 32]),
        );
        let r = Handshake::responder(config(PqPolicy::Prefer), b, Rng::from_seed([seed + 1; 32]));
        let out = run(i, r);
        let (i, r) = (out.initiator.unwrap(), out.responder.unwrap());
        assert!(i.confirmation.is_none() && r.proof.is_none());
        (i.proof.unwrap(), r.confirmation.unwrap())
    };
    let (proof1, check1) = session(10);
    let (proof2, check2) = session(20);
    assert_eq!(check1.verify(&proof1), Ok(()));
    assert_eq!(check2.verify(&proof2), Ok(()));
    // A proof recorded from another session does not verify: no replay.
    assert_eq!(check2.verify(&proof1), Err(CloseReason::BadSignature));
    let mut flipped = proof1;
    flipped[3] ^= 1;
    assert_eq!(check1.verify(&flipped), Err(CloseReason::BadSignature));
    assert_eq!(
        check1.verify(&proof1[..63]),
        Err(CloseReason::MalformedFrame)
    );
    // XX needs none of this: its proofs are in the handshake messages.
    let (i, r) = pair(Remote::Any, PqPolicy::Prefer, PqPolicy::Prefer);
    let out = run(i, r);
    assert!(
        out.initiator.unwrap().proof.is_none() && out.responder.unwrap().confirmation.is_none()
    );
}

#[test]
fn forged_xx_third_message_is_deferred_by_the_responder() {
    fn forge_third(bytes: &mut Vec<u8>) {
        // Leave the cleartext pre-hello alone; forge the signed payload.
        if Payload::decode(bytes).is_ok() {
            flip_signature(bytes);
        }
    }
    let (mut i, r) = pair(Remote::Any, PqPolicy::Prefer, PqPolicy::Prefer);
    i.tamper = Some(forge_third);
    let out = run(i, r);
    assert!(out.initiator.is_ok());
    assert_eq!(
        out.responder.unwrap().deferred_reject,
        Some(CloseReason::BadSignature)
    );
}

#[test]
fn inconsistent_kem_offers_are_rejected() {
    // The pre-hello claims no KEM while carrying a key.
    fn clear_flag(bytes: &mut Vec<u8>) {
        if let Ok(pre) = PreHello::decode(bytes) {
            let ek = pre.ek.map(<[u8]>::to_vec);
            *bytes = PreHello {
                flags: 0,
                ek: ek.as_deref(),
            }
            .encode();
        }
    }
    let (mut i, r) = pair(Remote::Any, PqPolicy::Prefer, PqPolicy::Prefer);
    i.tamper = Some(clear_flag);
    assert_eq!(run(i, r).rejection(), Some(CloseReason::InconsistentOffer));

    // A responder that sends a ciphertext nobody asked for.
    fn add_ct(bytes: &mut Vec<u8>) {
        let p = Payload::decode(bytes).unwrap();
        let hello = p.hello.to_vec();
        let ct = [0u8; hybrid::CT_LEN];
        *bytes = Payload {
            hello: &hello,
            ct: Some(&ct),
            ..p
        }
        .encode();
    }
    let (i, mut r) = pair(Remote::Any, PqPolicy::Off, PqPolicy::Prefer);
    r.tamper = Some(add_ct);
    assert_eq!(
        run(i, r).initiator.err(),
        Some(CloseReason::InconsistentOffer)
    );
}

#[test]
fn tampering_with_any_handshake_byte_fails_the_handshake() {
    for remote in [Remote::Any, known()] {
        let (i, r) = pair(remote, PqPolicy::Prefer, PqPolicy::Prefer);
        let mut sizes = Vec::new();
        run_with(i, r, |_, body| sizes.push(body.len()));
        for (msg, &len) in sizes.iter().enumerate() {
            for pos in 0..len {
                let (i, r) = pair(remote, PqPolicy::Prefer, PqPolicy::Prefer);
                let out = run_with(i, r, |index, body| {
                    if index == msg {
                        body[pos] ^= 0x01;
                    }
                });
                assert!(
                    out.rejection().is_some() || !out.keys_agree(),
                    "{remote:?}: flipping byte {pos} of message {msg} went unnoticed"
                );
            }
        }
    }
}

#[test]
fn small_order_ephemeral_keys_are_refused() {
    for point in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        let (i, r) = pair(Remote::Any, PqPolicy::Prefer, PqPolicy::Prefer);
        // Body: [version][pattern][e (32 bytes)][pre-hello frame].
        let out = run_with(i, r, |index, body| {
            if index == 0 {
                body[2..34].copy_from_slice(&point);
            }
        });
        assert_eq!(out.rejection(), Some(CloseReason::SmallOrderKey));
    }
}

#[test]
fn version_pattern_and_stale_ik_keys_are_rejected() {
    for (byte, value, reason) in [
        (0, 2, CloseReason::UnsupportedVersion),
        (1, 7, CloseReason::MalformedHandshake),
    ] {
        let (i, r) = pair(Remote::Any, PqPolicy::Prefer, PqPolicy::Prefer);
        let out = run_with(i, r, |index, body| {
            if index == 0 {
                body[byte] = value;
            }
        });
        assert_eq!(out.responder.err(), Some(reason));
    }
    // IK with the responder's old static key: the responder cannot decrypt.
    let (a, b) = (ident(1), ident(2));
    let stale = *b.public();
    let b = Arc::new(b.rotate_static_key(&mut Rng::from_seed([5; 32])));
    let i = Handshake::initiator(
        config(PqPolicy::Prefer),
        a,
        Remote::Known(stale),
        Rng::from_seed([1; 32]),
    );
    let r = Handshake::responder(config(PqPolicy::Prefer), b, Rng::from_seed([2; 32]));
    assert_eq!(
        run(i, r).responder.err(),
        Some(CloseReason::HandshakeFailed)
    );
}

#[test]
fn garbage_first_messages_never_panic() {
    let mut rng = Rng::from_seed([8; 32]);
    for len in 0..300 {
        let mut body = vec![0u8; len];
        rng.fill(&mut body);
        if len > 1 {
            body[0] = PROTOCOL_VERSION;
            body[1] = 1 + (len % 2) as u8;
        }
        let mut r =
            Handshake::responder(config(PqPolicy::Prefer), ident(2), Rng::from_seed([2; 32]));
        let _ = r.read_message(&body);
    }
}
