//! The Noise test vectors (cacophony) for `Noise_XX_25519_ChaChaPoly_SHA256` and
//! `Noise_IK_25519_ChaChaPoly_SHA256`, run through our resolver (seeded RNG,
//! small-order-checking DH) for the handshake and through our record `CipherState`
//! for the transport messages that follow it.

use super::crypto::SeededResolver;
use crate::record::CipherState;
use crate::Rng;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn field(v: &serde_json::Value, k: &str) -> Option<Vec<u8>> {
    v.get(k).and_then(serde_json::Value::as_str).map(hex)
}

#[test]
fn cacophony_xx_and_ik_through_our_code_path() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/data/cacophony_xx_ik.json")).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        let name: String = v["protocol_name"].as_str().unwrap().into();
        let build = |prefix: &str, initiator: bool| {
            let resolver =
                alloc::boxed::Box::new(SeededResolver::new(&mut Rng::from_seed([0; 32])));
            let prologue = field(v, &alloc::format!("{prefix}_prologue")).unwrap();
            let eph = field(v, &alloc::format!("{prefix}_ephemeral")).unwrap();
            let mut b = snow::Builder::with_resolver(name.parse().unwrap(), resolver)
                .prologue(&prologue)
                .unwrap()
                .fixed_ephemeral_key_for_testing_only(&eph);
            let s = field(v, &alloc::format!("{prefix}_static"));
            if let Some(s) = &s {
                b = b.local_private_key(s).unwrap();
            }
            let rs = field(v, &alloc::format!("{prefix}_remote_static"));
            if let Some(rs) = &rs {
                b = b.remote_public_key(rs).unwrap();
            }
            if initiator {
                b.build_initiator()
            } else {
                b.build_responder()
            }
            .unwrap()
        };
        let mut init = build("init", true);
        let mut resp = build("resp", false);
        let messages = v["messages"].as_array().unwrap();
        let mut buf = vec![0u8; 65535];
        let mut plain = vec![0u8; 65535];
        let mut idx = 0;
        // Handshake phase, alternating writers.
        while !(init.is_handshake_finished() && resp.is_handshake_finished()) {
            let m = &messages[idx];
            let (payload, ct) = (
                field(m, "payload").unwrap(),
                field(m, "ciphertext").unwrap(),
            );
            let (w, r) = if idx % 2 == 0 {
                (&mut init, &mut resp)
            } else {
                (&mut resp, &mut init)
            };
            let n = w.write_message(&payload, &mut buf).unwrap();
            assert_eq!(&buf[..n], &ct[..], "{name} message {idx}");
            let p = r.read_message(&ct, &mut plain).unwrap();
            assert_eq!(&plain[..p], &payload[..]);
            idx += 1;
        }
        assert_eq!(
            init.get_handshake_hash(),
            &field(v, "handshake_hash").unwrap()[..],
            "{name}"
        );
        // Transport phase through our own CipherState with the raw split keys.
        let (k1, k2) = init.dangerously_get_raw_split();
        let (mut i2r_tx, mut i2r_rx) = (CipherState::new(&k1), CipherState::new(&k1));
        let (mut r2i_tx, mut r2i_rx) = (CipherState::new(&k2), CipherState::new(&k2));
        // Cacophony continues alternating; in one-way-free patterns the responder
        // writes next after an odd number of handshake messages.
        for (offset, m) in messages[idx..].iter().enumerate() {
            let (payload, ct) = (
                field(m, "payload").unwrap(),
                field(m, "ciphertext").unwrap(),
            );
            let initiator_writes = (idx + offset) % 2 == 0;
            let (tx, rx) = if initiator_writes {
                (&mut i2r_tx, &mut i2r_rx)
            } else {
                (&mut r2i_tx, &mut r2i_rx)
            };
            let mut rec = payload.clone();
            rec.resize(payload.len() + crate::record::TAG_LEN, 0);
            let n = tx.seal(&mut rec, payload.len()).unwrap();
            assert_eq!(
                &rec[..n],
                &ct[..],
                "{name} transport message {}",
                idx + offset
            );
            let p = rx.open(&mut rec[..n]).unwrap();
            assert_eq!(&rec[..p], &payload[..]);
        }
    }
}
