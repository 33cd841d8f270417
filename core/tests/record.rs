//! The record layer through a pair of links: round trips of frames up to 16 MiB under
//! random chunking (proptest), priorities, fragmentation limits and rekeying.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{config, Chunks, Pair};
use proptest::prelude::*;
use weft_mesh::frame::{FrameType, MAX_PAYLOAD_LEN};
use weft_mesh::handshake::{PqPolicy, Remote};
use weft_mesh::link::{LinkConfig, LinkEvent};
use weft_mesh::CloseReason;

/// The frame types an application may send (all but the link's own).
fn app_types() -> Vec<FrameType> {
    FrameType::ALL
        .into_iter()
        .filter(|t| !t.is_link_internal())
        .collect()
}

fn roomy() -> LinkConfig {
    let mut c = config(PqPolicy::Prefer);
    c.record.max_queued_bytes = 256 << 20;
    c.record.reassembly_budget = 64 << 20;
    c
}

fn payload(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

/// Frames of each type arrive whole, in the order they were sent (types may interleave).
fn assert_delivered_in_order(sent: &[(FrameType, Bytes)], got: &[(FrameType, Bytes)]) {
    assert_eq!(sent.len(), got.len(), "frame count");
    for t in app_types() {
        let s: Vec<_> = sent.iter().filter(|f| f.0 == t).map(|f| &f.1).collect();
        let g: Vec<_> = got.iter().filter(|f| f.0 == t).map(|f| &f.1).collect();
        assert!(s == g, "frames of {t:?} differ");
    }
}

fn sizes() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..2_000,
        3 => 60_000usize..140_000,
        1 => 1usize..=MAX_PAYLOAD_LEN,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn frames_up_to_16_mib_round_trip_under_random_chunking(
        frames in prop::collection::vec((any::<prop::sample::Index>(), sizes()), 1..12),
        max_chunk in 1u64..100_000,
        rekey_after in 1u64..50,
    ) {
        let mut c = roomy();
        c.record.rekey_after_records = rekey_after;
        let mut p = Pair::new(c.clone(), c, Remote::Any);
        p.chunks = Chunks::Random(max_chunk);
        p.run();
        let types = app_types();
        let sent: Vec<_> = frames
            .iter()
            .enumerate()
            .map(|(i, (t, len))| (*t.get(&types), payload(*len, i as u8)))
            .filter(|(t, b)| !(*t == FrameType::Heartbeat && b.is_empty()))
            .collect();
        for (t, b) in &sent {
            p.a.send(*t, b.clone()).unwrap();
        }
        p.run();
        assert_delivered_in_order(&sent, &Pair::frames(&p.b_events));
        prop_assert_eq!(Pair::closed(&p.b_events), None);
        prop_assert_eq!(p.b.reassembly_bytes(), 0);
        prop_assert_eq!(p.a.queued_bytes(), 0);
    }
}

#[test]
fn a_16_mib_frame_byte_by_byte_sized_chunks_still_arrives() {
    let mut p = Pair::new(roomy(), roomy(), Remote::Any);
    p.chunks = Chunks::Random(3);
    p.run();
    let big = payload(MAX_PAYLOAD_LEN, 9);
    p.a.send(FrameType::TreeSync, big.clone()).unwrap();
    p.run();
    assert_eq!(Pair::frames(&p.b_events), [(FrameType::TreeSync, big)]);
    // 16 MiB in records of at most 65519 plaintext bytes.
    assert_eq!(p.a.stats().records.records_sent, 1 + (16 << 20) / 65514);
}

#[test]
fn a_heartbeat_queued_behind_16_mib_leaves_in_the_next_record() {
    let mut p = Pair::new(roomy(), roomy(), Remote::Any);
    p.run();
    let mut buf = vec![0u8; weft_mesh::link::MAX_TRANSMIT];
    p.a.send(FrameType::Message, payload(MAX_PAYLOAD_LEN, 1))
        .unwrap();
    p.a.send(FrameType::ChainSync, payload(5 << 20, 2)).unwrap();
    let n = p.a.poll_transmit(p.now, &mut buf).unwrap();
    p.b.handle_bytes(p.now, &buf[..n]);
    p.a.send(FrameType::Heartbeat, Bytes::from_static(b"probe"))
        .unwrap();
    let n = p.a.poll_transmit(p.now, &mut buf).unwrap();
    p.b.handle_bytes(p.now, &buf[..n]);
    let got: Vec<_> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert_eq!(
        got,
        [LinkEvent::Frame {
            frame_type: FrameType::Heartbeat,
            payload: Bytes::from_static(b"probe")
        }],
        "the heartbeat arrives with the second record, the 16 MiB message is still in flight"
    );
    assert!(p.b.reassembly_bytes() > 100_000);
    // Messages (lane 3) finish before bulk sync (lane 4) starts.
    p.run();
    let order: Vec<_> = Pair::frames(&p.b_events).into_iter().map(|f| f.0).collect();
    assert_eq!(order, [FrameType::Message, FrameType::ChainSync]);
}

#[test]
fn rekeys_by_record_count_and_by_time_keep_the_stream_intact() {
    let mut c = roomy();
    c.record.rekey_after_records = 4;
    c.record.rekey_after = Duration::from_secs(60);
    c.idle_timeout = None;
    c.keepalive = None;
    let mut p = Pair::new(c.clone(), c, Remote::Any);
    p.run();
    let sent: Vec<_> = (0..50)
        .map(|i| (FrameType::Message, payload(40_000, i)))
        .collect();
    for (t, b) in &sent {
        p.a.send(*t, b.clone()).unwrap();
    }
    p.run();
    assert_delivered_in_order(&sent, &Pair::frames(&p.b_events));
    let (a, b) = (p.a.stats().records, p.b.stats().records);
    assert!(a.rekeys_sent >= 5, "{a:?}");
    assert_eq!(a.rekeys_sent, b.rekeys_received);
    // Time-based: an idle minute makes each side rekey with an otherwise empty record.
    let before = (
        p.a.stats().records.rekeys_sent,
        p.b.stats().records.rekeys_sent,
    );
    p.advance(Duration::from_secs(61));
    let after = (
        p.a.stats().records.rekeys_sent,
        p.b.stats().records.rekeys_sent,
    );
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
    p.a.send(FrameType::Message, Bytes::from_static(b"after"))
        .unwrap();
    p.run();
    assert_eq!(
        Pair::frames(&p.b_events).last().unwrap().1,
        Bytes::from_static(b"after")
    );
}

#[test]
fn fragments_beyond_the_reassembly_budget_close_the_link() {
    let mut small = roomy();
    small.record.reassembly_budget = 200_000;
    let mut p = Pair::new(roomy(), small, Remote::Any);
    p.run();
    p.a.send(FrameType::Message, payload(150_000, 1)).unwrap();
    p.run();
    assert_eq!(Pair::frames(&p.b_events).len(), 1, "within budget");
    p.a.send(FrameType::Message, payload(1 << 20, 2)).unwrap();
    p.run();
    assert_eq!(
        Pair::closed(&p.b_events),
        Some((CloseReason::ReassemblyBudget, false))
    );
    assert_eq!(
        Pair::closed(&p.a_events),
        Some((CloseReason::ReassemblyBudget, true))
    );
}
