//! Golden transcripts: fixed seeds must give exactly the checked-in bytes, so any change
//! to the wire format shows up here. Regenerate deliberately with `WEFT_BLESS=1`.

mod common;

use bytes::Bytes;
use common::{config, Pair};
use weft_mesh::frame::FrameType;
use weft_mesh::handshake::{PqPolicy, Remote};

fn transcript(remote: Remote, pq: PqPolicy) -> String {
    let mut p = Pair::new(config(pq), config(pq), remote);
    p.run();
    assert!(p.established());
    p.a.send(FrameType::Message, Bytes::from_static(b"hello from a"))
        .unwrap();
    p.b.send(FrameType::Heartbeat, Bytes::from_static(b"probe"))
        .unwrap();
    p.run();
    let mut out = String::new();
    let (mut ai, mut bi) = (p.a_wire.iter(), p.b_wire.iter());
    // Interleave in protocol order: a speaks first, then they alternate while both have data.
    loop {
        let (a, b) = (ai.next(), bi.next());
        if a.is_none() && b.is_none() {
            break;
        }
        for (side, bytes) in [("a", a), ("b", b)] {
            if let Some(bytes) = bytes {
                out.push_str(&format!("{side} {}\n", hex::encode(bytes)));
            }
        }
    }
    out
}

fn check(name: &str, remote: Remote, pq: PqPolicy) {
    let path = format!("{}/tests/golden/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let got = transcript(remote, pq);
    assert_eq!(got, transcript(remote, pq), "deterministic");
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{name}: transcript differs from {path} (WEFT_BLESS=1 regenerates it)"
    );
}

#[test]
fn xx_hybrid() {
    check("xx_hybrid", Remote::Any, PqPolicy::Prefer);
}

#[test]
fn xx_classical() {
    check("xx_classical", Remote::Any, PqPolicy::Off);
}

#[test]
fn ik_hybrid() {
    check(
        "ik_hybrid",
        Remote::Known(*common::identity(2).public()),
        PqPolicy::Prefer,
    );
}
