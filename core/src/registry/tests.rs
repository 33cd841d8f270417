//! Properties of the registries: the join laws, deltas against the join, GC, splitting,
//! lossy gossip repaired by anti-entropy, restarts and removals, codecs and bounds.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::{Instant, NodeId};

type Map = OriginMap<u64, ServiceInfo>;
type Msg = Gossip<u64, ServiceInfo>;

const NODES: usize = 3;
const KEYS: u64 = 6;
const TTL: Duration = Duration::from_secs(10);

fn n(i: usize) -> NodeId {
    NodeId::from_bytes([i as u8 + 1; 32])
}

fn info(v: u8) -> ServiceInfo {
    ServiceInfo::new(vec![v]).unwrap()
}

fn config() -> RegistryConfig {
    RegistryConfig {
        tombstone_ttl: TTL,
        ..RegistryConfig::default()
    }
}

fn map(i: usize) -> Map {
    Map::new(n(i), 1, config())
}

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

type Slots = Vec<(u64, Version, Option<ServiceInfo>)>;

/// The whole replicated state (version, floor, every slot), without local timestamps.
fn state(m: &Map) -> BTreeMap<NodeId, (Version, Version, Slots)> {
    m.origins
        .iter()
        .map(|(id, o)| {
            let slots = o
                .slots()
                .map(|(k, s)| (*k, s.version, s.value.clone()))
                .collect();
            (*id, (o.version, o.floor, slots))
        })
        .collect()
}

/// What the map shows: each origin's version and live entries.
fn live(m: &Map) -> BTreeMap<NodeId, (Version, Vec<(u64, ServiceInfo)>)> {
    m.origins
        .iter()
        .map(|(id, o)| {
            let entries = o.live_entries().map(|(k, v)| (*k, v.clone())).collect();
            (*id, (o.version, entries))
        })
        .collect()
}

fn merged(a: &Map, b: &Map) -> Map {
    let mut m = a.clone();
    m.merge(b);
    m
}

/// One step of building random replicated states.
#[derive(Clone, Debug)]
enum Op {
    Set(usize, u64, u8),
    Del(usize, u64),
    Gc(usize),
    Tick(u8),
    Merge(usize, usize),
}

/// Writes, removals, GC and time.
fn local_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NODES, 0..KEYS, 0..4u8).prop_map(|(i, k, v)| Op::Set(i, k, v)),
        3 => (0..NODES, 0..KEYS).prop_map(|(i, k)| Op::Del(i, k)),
        1 => (0..NODES).prop_map(Op::Gc),
        2 => (1..8u8).prop_map(Op::Tick),
    ]
}

/// Local operations and merges between nodes.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => local_op(),
        3 => (0..NODES, 0..NODES).prop_map(|(a, b)| Op::Merge(a, b)),
    ]
}

/// [`Op`]s plus pushes of (possibly partial, stale or gapped) deltas between nodes.
#[derive(Clone, Debug)]
enum Chaos {
    Op(Op),
    Push {
        from: usize,
        to: usize,
        origin: usize,
        budget: usize,
        stale: bool,
    },
}

fn chaos() -> impl Strategy<Value = Chaos> {
    prop_oneof![
        3 => local_op().prop_map(Chaos::Op),
        2 => (0..NODES, 0..NODES, 0..NODES, 100usize..300, any::<bool>()).prop_map(
            |(from, to, origin, budget, stale)| Chaos::Push { from, to, origin, budget, stale }
        ),
    ]
}

struct World {
    now: Instant,
    maps: Vec<Map>,
}

impl World {
    fn new() -> Self {
        World {
            now: Instant::ZERO,
            maps: (0..NODES).map(map).collect(),
        }
    }

    fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.step(op);
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Set(i, k, v) => {
                self.maps[i].insert(now, k, info(v)).unwrap();
            }
            Op::Del(i, k) => {
                self.maps[i].remove(now, &k).unwrap();
            }
            Op::Gc(i) => self.maps[i].gc(now),
            Op::Tick(s) => self.now = now + Duration::from_secs(s.into()),
            Op::Merge(a, b) => {
                let other = self.maps[b].clone();
                self.maps[a].merge(&other);
            }
        }
    }
}

fn world(ops: &[Op]) -> World {
    let mut w = World::new();
    w.run(ops);
    w
}

/// Apply every delta `s` has for `r` (one per origin, or split by `budget`).
fn sync_by_deltas(r: &mut Map, s: &Map, now: Instant, budget: usize) -> usize {
    let mut chunks = 0;
    for origin in s.origins().filter(|o| *o != r.me()).collect::<Vec<_>>() {
        loop {
            let since = r.version(&origin).unwrap_or(Version::ZERO);
            let d = match s.delta_since(&origin, since, budget) {
                Some(d) => d,
                None if s.version(&origin).is_some_and(|v| v > since) => {
                    // Only a full delta may not fit: it must reach the floor at once.
                    assert!(
                        since < s.floor(&origin).unwrap(),
                        "a partial delta always fits"
                    );
                    s.delta_since(&origin, since, usize::MAX).unwrap()
                }
                None => break,
            };
            assert!(d.encoded_len() <= budget || d.is_full());
            r.apply(now, d).unwrap();
            chunks += 1;
        }
    }
    chunks
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_and_idempotent(ops in prop::collection::vec(op(), 0..60)) {
        let w = world(&ops);
        let [a, b, c] = [&w.maps[0], &w.maps[1], &w.maps[2]];
        prop_assert_eq!(state(&merged(a, b)), state(&merged(b, a)));
        prop_assert_eq!(state(&merged(&merged(a, b), c)), state(&merged(a, &merged(b, c))));
        prop_assert_eq!(state(&merged(a, a)), state(a));
        prop_assert_eq!(state(&merged(&merged(a, b), b)), state(&merged(a, b)));
    }

    #[test]
    fn applying_deltas_since_our_versions_equals_the_merge(ops in prop::collection::vec(op(), 0..60)) {
        let w = world(&ops);
        for (r, s) in [(0, 1), (1, 2), (2, 0)] {
            let mut by_delta = w.maps[r].clone();
            sync_by_deltas(&mut by_delta, &w.maps[s], w.now, usize::MAX);
            prop_assert_eq!(live(&by_delta), live(&merged(&w.maps[r], &w.maps[s])));
        }
    }

    #[test]
    fn deltas_split_by_budget_apply_to_the_same_result(
        ops in prop::collection::vec(op(), 0..60),
        budget in 120usize..400,
    ) {
        let w = world(&ops);
        let mut whole = w.maps[0].clone();
        let one_each = sync_by_deltas(&mut whole, &w.maps[1], w.now, usize::MAX);
        let mut split = w.maps[0].clone();
        let chunks = sync_by_deltas(&mut split, &w.maps[1], w.now, budget);
        prop_assert!(chunks >= one_each);
        prop_assert_eq!(live(&split), live(&whole));
    }

    #[test]
    fn an_older_state_never_resurrects_collected_removals(
        before in prop::collection::vec(op(), 0..40),
        after in prop::collection::vec(op(), 0..40),
    ) {
        let mut w = world(&before);
        let old = w.maps.clone();
        w.run(&after);
        // Tombstones written after the snapshot may all be collected by now.
        w.now = w.now + TTL;
        for m in &mut w.maps {
            m.gc(w.now);
        }
        for (i, current) in w.maps.iter().enumerate() {
            // Every node knows at least what it knew, so its own snapshot adds nothing.
            prop_assert_eq!(live(&merged(current, &old[i])), live(current));
            // And no snapshot changes what an owner holds of its own entries.
            for snapshot in &old {
                let m = merged(current, snapshot);
                prop_assert_eq!(live(&m).remove(&n(i)), live(current).remove(&n(i)));
            }
        }
    }

    #[test]
    fn lossy_gossip_is_repaired_by_one_round_of_digests(
        writes in prop::collection::vec((0..NODES, 0..KEYS, prop::option::of(0..4u8), 0..NODES, 0..4u8), 1..60),
    ) {
        let mut w = World::new();
        let mut late = Vec::new();
        for (i, key, value, to, fate) in writes {
            let before = w.maps[i].version(&n(i)).unwrap();
            match value {
                Some(v) => { w.maps[i].insert(w.now, key, info(v)).unwrap(); }
                None => { w.maps[i].remove(w.now, &key).unwrap(); }
            }
            w.now = w.now + Duration::from_secs(3);
            w.maps[to].gc(w.now);
            // Piggyback the write on a packet to `to`: delivered, lost, or late.
            let Some(delta) = w.maps[i].delta_since(&n(i), before, 200) else { continue };
            match (fate, to == i) {
                (_, true) | (0, _) => {}
                (1, _) => late.push((to, delta)),
                _ => { let _ = w.maps[to].apply(w.now, delta); }
            }
        }
        for (to, delta) in late.into_iter().rev() {
            let _ = w.maps[to].apply(w.now, delta);
        }
        // One anti-entropy period: every node sends its digest to every other node.
        for x in 0..NODES {
            for y in (0..NODES).filter(|y| *y != x) {
                exchange(&mut w.maps, w.now, x, y, 64 * 1024);
            }
        }
        for i in 0..NODES {
            prop_assert_eq!(live(&w.maps[i]), live(&w.maps[0]));
            for o in 0..NODES {
                prop_assert_eq!(w.maps[i].version(&n(o)), w.maps[o].version(&n(o)));
            }
        }
    }

    #[test]
    fn partial_out_of_order_and_stale_deltas_with_gc_still_converge(
        ops in prop::collection::vec(chaos(), 0..80),
    ) {
        let mut w = World::new();
        for op in ops {
            match op {
                Chaos::Op(op) => w.step(&op),
                Chaos::Push { from, to, origin, budget, stale } => {
                    let since = if stale { Version::ZERO } else { w.maps[to].version(&n(origin)).unwrap_or(Version::ZERO) };
                    if let Some(d) = w.maps[from].delta_since(&n(origin), since, budget) {
                        let _ = w.maps[to].apply(w.now, d);
                    }
                }
            }
        }
        for _round in 0..2 {
            for x in 0..NODES {
                for y in (0..NODES).filter(|y| *y != x) {
                    exchange(&mut w.maps, w.now, x, y, usize::MAX);
                }
            }
        }
        for i in 0..NODES {
            for o in 0..NODES {
                prop_assert_eq!(live(&w.maps[i]).remove(&n(o)), live(&w.maps[o]).remove(&n(o)));
            }
        }
    }

    #[test]
    fn garbage_never_panics_and_never_decodes_to_something_else(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Some(m) = Msg::decode(&bytes) {
            prop_assert_eq!(m.encode().to_vec(), bytes.clone());
        }
        if let Some(d) = SyncDigest::decode(&bytes) {
            prop_assert_eq!(SyncDigest::decode(&d.encode()), Some(d));
        }
    }

    #[test]
    fn every_gossip_message_round_trips_and_truncations_fail(ops in prop::collection::vec(op(), 1..40)) {
        let w = world(&ops);
        let m = &w.maps[0];
        let deltas = (0..NODES).filter_map(|o| m.delta_since(&n(o), Version::ZERO, usize::MAX)).collect();
        for msg in [Msg::Deltas(deltas), Msg::Digest(m.digest()), Msg::Want(m.digest())] {
            let bytes = msg.encode();
            prop_assert_eq!(bytes.len(), msg.encoded_len());
            prop_assert_eq!(Msg::decode(&bytes), Some(msg.clone()));
            for cut in 0..bytes.len() {
                prop_assert_eq!(Msg::decode(&bytes[..cut]), None);
            }
            let mut long = bytes.to_vec();
            long.push(0);
            prop_assert_eq!(Msg::decode(&long), None);
        }
    }
}

/// `x` sends its digest to `y`; every reply is answered until the conversation ends.
/// Messages travel encoded.
fn exchange(maps: &mut [Map], now: Instant, x: usize, y: usize, budget: usize) {
    let mut inbox = VecDeque::from([(y, Msg::Digest(maps[x].digest()).encode())]);
    let mut steps = 0;
    while let Some((to, bytes)) = inbox.pop_front() {
        steps += 1;
        assert!(steps < 16, "the conversation ends");
        let back = if to == x { y } else { x };
        let handled = maps[to].handle(now, Msg::decode(&bytes).unwrap(), budget);
        assert!(handled.rejected.is_empty(), "{:?}", handled.rejected);
        for reply in handled.replies {
            assert!(reply.encoded_len() <= budget.max(reply_floor(&reply)));
            inbox.push_back((back, reply.encode()));
        }
    }
}

/// A `Want` is not bounded by the budget (it is bounded by the origin count).
fn reply_floor(reply: &Msg) -> usize {
    match reply {
        Msg::Deltas(_) => 0,
        _ => usize::MAX,
    }
}

#[test]
fn a_collected_removal_is_not_undone_by_a_stale_replica() {
    let (mut a, mut b, mut c) = (map(0), map(1), map(2));
    a.insert(at(0), 7, info(1)).unwrap();
    b.merge(&a);
    c.merge(&a);
    a.remove(at(1), &7).unwrap();
    c.merge(&a);
    a.gc(at(20));
    c.gc(at(20));
    assert_eq!(a.tombstones(&n(0)), 0);
    assert_eq!(
        a.floor(&n(0)),
        a.version(&n(0)),
        "the floor covers the removal"
    );
    a.merge(&b);
    c.merge(&b);
    assert_eq!(a.get(&n(0), &7), None);
    assert_eq!(c.get(&n(0), &7), None);
    // b missed the removal and the tombstone is gone: it gets a full delta.
    let d = a
        .delta_since(&n(0), b.version(&n(0)).unwrap(), 1024)
        .unwrap();
    assert!(d.is_full());
    let changes = b.apply(at(21), d).unwrap();
    assert_eq!(
        changes,
        [Change {
            origin: n(0),
            key: 7,
            kind: ChangeKind::Removed
        }]
    );
    assert_eq!(b.get(&n(0), &7), None);
}

#[test]
fn a_delta_after_a_gap_is_refused_and_the_gap_is_asked_for() {
    let (mut a, mut b) = (map(0), map(1));
    a.insert(at(0), 1, info(1)).unwrap();
    let v1 = a.insert(at(0), 2, info(2)).unwrap();
    a.insert(at(0), 3, info(3)).unwrap();
    let late = a.delta_since(&n(0), v1, 1024).unwrap();
    assert_eq!(late.entries.len(), 1);
    let handled = b.handle(at(0), Msg::Deltas(vec![late]), 1024);
    assert!(handled.changes.is_empty());
    assert_eq!(handled.replies, [Msg::Want(vec![(n(0), Version::ZERO)])]);
    let answer = a.handle(at(0), handled.replies[0].clone(), 1024);
    let done = b.handle(at(0), answer.replies[0].clone(), 1024);
    assert_eq!(done.changes.len(), 3);
    assert!(done.changes.iter().all(|c| c.kind == ChangeKind::Added));
    assert_eq!(live(&b).get(&n(0)), live(&a).get(&n(0)));
}

#[test]
fn changes_report_added_updated_and_removed() {
    let (mut a, mut b) = (map(0), map(1));
    a.insert(at(0), 1, info(1)).unwrap();
    a.insert(at(0), 2, info(1)).unwrap();
    let v = a.version(&n(0)).unwrap();
    let first = b
        .apply(at(0), a.delta_since(&n(0), Version::ZERO, 1024).unwrap())
        .unwrap();
    assert_eq!(
        first.iter().map(|c| (c.key, c.kind)).collect::<Vec<_>>(),
        [(1, ChangeKind::Added), (2, ChangeKind::Added)]
    );
    a.insert(at(0), 1, info(9)).unwrap();
    a.remove(at(0), &2).unwrap();
    let second = b
        .apply(at(0), a.delta_since(&n(0), v, 1024).unwrap())
        .unwrap();
    assert_eq!(
        second.iter().map(|c| (c.key, c.kind)).collect::<Vec<_>>(),
        [(1, ChangeKind::Updated), (2, ChangeKind::Removed)]
    );
    assert_eq!(
        b.apply(at(0), a.delta_since(&n(0), v, 1024).unwrap()),
        Ok(vec![]),
        "idempotent"
    );
}

#[test]
fn writing_the_same_value_again_is_not_a_new_version() {
    let mut a = map(0);
    let v = a.insert(at(0), 1, info(1)).unwrap();
    assert_eq!(a.insert(at(0), 1, info(1)), Ok(v));
    assert_eq!(a.remove(at(0), &5), Ok(None));
    assert_eq!(a.version(&n(0)), Some(v));
    assert_eq!(v, Version::new(1, 1));
}

#[test]
fn a_readmitted_origin_is_accepted_again_in_the_same_epoch() {
    let (mut a, mut b) = (map(0), map(1));
    a.insert(at(0), 1, info(1)).unwrap();
    let delta = a.delta_since(&n(0), Version::ZERO, 1024).unwrap();
    b.apply(at(0), delta.clone()).unwrap();
    b.remove_origin(&n(0), 1);
    assert_eq!(b.apply(at(1), delta.clone()), Err(ApplyError::Removed));
    // SWIM: it refuted the suspicion; the same run is welcome again.
    b.readmit(&n(0));
    assert_eq!(b.apply(at(2), delta).unwrap().len(), 1);
    assert_eq!(b.get(&n(0), &1), Some(&info(1)));
}

#[test]
fn a_removed_origin_stays_removed_until_it_restarts() {
    let (mut a, mut b) = (map(0), map(1));
    a.insert(at(0), 1, info(1)).unwrap();
    let stale = a.delta_since(&n(0), Version::ZERO, 1024).unwrap();
    b.apply(at(0), stale.clone()).unwrap();
    let removed = b.remove_origin(&n(0), 1);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].kind, ChangeKind::Removed);
    assert_eq!(b.version(&n(0)), None);
    assert_eq!(b.apply(at(1), stale.clone()), Err(ApplyError::Removed));
    let mut old = map(0);
    old.insert(at(0), 1, info(1)).unwrap();
    b.merge(&old);
    assert_eq!(
        b.version(&n(0)),
        None,
        "merging a stale state does not bring it back"
    );
    // The digest of a stale peer is not answered with a want either.
    assert!(b.answer_digest(&a.digest(), 1024).want.is_empty());
    // The node restarts (epoch 2): its gossip is accepted.
    let mut a2 = Map::new(n(0), 2, config());
    a2.insert(at(5), 4, info(4)).unwrap();
    let fresh = a2.delta_since(&n(0), Version::ZERO, 1024).unwrap();
    assert_eq!(b.apply(at(5), fresh).unwrap().len(), 1);
    assert_eq!(b.get(&n(0), &4), Some(&info(4)));
    assert_eq!(
        b.remove_origin(&n(1), 9),
        vec![],
        "our own origin is never removed"
    );
}

#[test]
fn a_restarted_node_replaces_its_previous_entries_everywhere() {
    let (mut a, mut b) = (map(0), map(1));
    a.insert(at(0), 1, info(1)).unwrap();
    a.insert(at(0), 2, info(2)).unwrap();
    exchange(&mut [a.clone(), b.clone()], at(0), 0, 1, 4096);
    b.merge(&a);
    assert_eq!(b.get(&n(0), &1), Some(&info(1)));
    let mut restarted = Map::new(n(0), 2, config());
    restarted.insert(at(1), 3, info(3)).unwrap();
    let mut maps = [restarted, b];
    exchange(&mut maps, at(1), 1, 0, 4096);
    let b = &maps[1];
    assert_eq!(b.entries(&n(0)).map(|(k, _)| *k).collect::<Vec<_>>(), [3]);
}

#[test]
fn a_node_whose_clock_went_back_overtakes_its_previous_run() {
    let (mut a, mut b) = (Map::new(n(0), 100, config()), map(1));
    a.insert(at(0), 1, info(1)).unwrap();
    b.merge(&a);
    let mut maps = [Map::new(n(0), 50, config()), b];
    maps[0].insert(at(1), 2, info(2)).unwrap();
    // b's digest claims a newer version of a's origin than a's new run holds.
    exchange(&mut maps, at(1), 1, 0, 4096);
    assert!(maps[0].version(&n(0)).unwrap() > Version::new(100, 1));
    assert_eq!(
        maps[1].entries(&n(0)).map(|(k, _)| *k).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(live(&maps[1]).get(&n(0)), live(&maps[0]).get(&n(0)));
}

#[test]
fn deltas_about_ourselves_are_ignored() {
    let (mut a, mut b) = (map(0), map(1));
    b.insert(at(0), 1, info(1)).unwrap();
    a.merge(&b);
    let d = a.delta_since(&n(1), Version::ZERO, 1024).unwrap();
    assert_eq!(b.apply(at(0), d), Err(ApplyError::OwnOrigin));
}

#[test]
fn malformed_deltas_are_refused_whole() {
    let mut b = map(1);
    let entry = |c, k| DeltaEntry {
        version: Version::new(1, c),
        key: k,
        value: Some(info(0)),
    };
    let delta = |from, to, floor, entries| Delta {
        origin: n(0),
        from: Version::new(1, from),
        to: Version::new(1, to),
        floor: Version::new(1, floor),
        entries,
    };
    for bad in [
        delta(3, 3, 0, vec![]),
        delta(0, 3, 4, vec![]),
        delta(0, 3, 0, vec![entry(2, 1), entry(1, 2)]),
        delta(0, 3, 0, vec![entry(1, 1), entry(2, 1)]),
        delta(0, 3, 0, vec![entry(4, 1)]),
        delta(1, 3, 0, vec![entry(1, 1)]),
    ] {
        assert_eq!(b.apply(at(0), bad), Err(ApplyError::Malformed));
    }
    assert_eq!(b.version(&n(0)), None);
    // A version that already names another key's change is refused too.
    let first = Delta {
        from: Version::ZERO,
        ..delta(0, 1, 0, vec![entry(1, 1)])
    };
    b.apply(at(0), first).unwrap();
    let reuse = Delta {
        from: Version::ZERO,
        ..delta(0, 2, 0, vec![entry(1, 2), entry(2, 3)])
    };
    assert_eq!(b.apply(at(0), reuse), Err(ApplyError::Malformed));
    assert_eq!(b.entries(&n(0)).count(), 1);
}

#[test]
fn bounds_are_enforced_and_refusals_change_nothing() {
    let small = RegistryConfig {
        max_origins: 2,
        max_entries_per_origin: 2,
        max_tombstones_per_origin: 1,
        max_key_bytes: 8,
        max_value_bytes: 3,
        max_removed_origins: 1,
        ..config()
    };
    let mut a = Map::new(n(0), 1, small.clone());
    a.insert(at(0), 1, info(1)).unwrap();
    a.insert(at(0), 2, info(2)).unwrap();
    assert_eq!(a.insert(at(0), 3, info(3)), Err(WriteError::Full));
    assert_eq!(
        a.insert(at(0), 1, info(4)).map(|_| ()),
        Ok(()),
        "replacing is not growing"
    );
    let big = ServiceInfo::new(vec![0u8; 2]).unwrap();
    assert_eq!(a.insert(at(0), 1, big), Err(WriteError::ValueTooLarge));
    // Tombstones beyond the bound are collected early, raising the floor.
    a.remove(at(0), &1).unwrap();
    let v = a.remove(at(0), &2).unwrap().unwrap();
    assert_eq!(a.tombstones(&n(0)), 1);
    assert!(a.floor(&n(0)).unwrap() < v && a.floor(&n(0)).unwrap() > Version::new(1, 0));

    // Entries: a delta that would exceed the bound is refused whole.
    let mut roomy = Map::new(n(1), 1, config());
    for k in 0..3 {
        roomy.insert(at(0), k, info(0)).unwrap();
    }
    let mut b = Map::new(n(2), 1, small.clone());
    let d = roomy.delta_since(&n(1), Version::ZERO, 4096).unwrap();
    assert_eq!(b.apply(at(0), d), Err(ApplyError::TooManyEntries));
    assert_eq!(b.version(&n(1)), None);
    // Value size.
    let mut wide = Map::new(n(1), 1, config());
    wide.insert(at(0), 1, ServiceInfo::new(vec![0u8; 5]).unwrap())
        .unwrap();
    let d = wide.delta_since(&n(1), Version::ZERO, 4096).unwrap();
    assert_eq!(b.apply(at(0), d), Err(ApplyError::ValueTooLarge));
    // Origins: ours plus one.
    let mut c1 = Map::new(n(3), 1, config());
    c1.insert(at(0), 1, info(1)).unwrap();
    b.apply(at(0), c1.delta_since(&n(3), Version::ZERO, 4096).unwrap())
        .unwrap();
    let mut c2 = Map::new(n(4), 1, config());
    c2.insert(at(0), 1, info(1)).unwrap();
    let d = c2.delta_since(&n(4), Version::ZERO, 4096).unwrap();
    assert_eq!(b.apply(at(0), d.clone()), Err(ApplyError::TooManyOrigins));
    assert_eq!(b.origins().count(), 2);
    // Removed origins are remembered up to the bound (the oldest is forgotten).
    b.remove_origin(&n(4), 1);
    b.remove_origin(&n(3), 1);
    assert!(!b.is_removed(&n(4), Version::new(1, 1)));
    assert!(b.is_removed(&n(3), Version::new(1, 1)));
    assert_eq!(
        b.apply(at(0), d),
        Ok(vec![Change {
            origin: n(4),
            key: 1,
            kind: ChangeKind::Added
        }])
    );
}

#[test]
fn a_full_delta_must_reach_the_floor_and_a_partial_one_carry_an_entry() {
    let mut a = map(0);
    for k in 0..4 {
        a.insert(at(0), k, info(0)).unwrap();
    }
    a.insert(at(0), 9, info(0)).unwrap();
    a.remove(at(0), &9).unwrap();
    a.gc(at(30));
    let floor = a.floor(&n(0)).unwrap();
    assert_eq!(floor, Version::new(1, 6));
    let entry = 16 + 1 + 8 + 3;
    // The four live entries are below the floor: all or nothing.
    assert_eq!(
        a.delta_since(&n(0), Version::ZERO, DELTA_HEADER_LEN + 3 * entry),
        None
    );
    let full = a
        .delta_since(&n(0), Version::ZERO, DELTA_HEADER_LEN + 4 * entry)
        .unwrap();
    assert!(full.is_full());
    assert_eq!((full.entries.len(), full.to), (4, Version::new(1, 6)));
    a.insert(at(31), 5, info(0)).unwrap();
    a.insert(at(31), 6, info(0)).unwrap();
    let part = a
        .delta_since(&n(0), floor, DELTA_HEADER_LEN + entry)
        .unwrap();
    assert_eq!(
        (part.from, part.to, part.entries.len()),
        (floor, Version::new(1, 7), 1)
    );
    assert_eq!(
        a.delta_since(&n(0), floor, DELTA_HEADER_LEN + entry - 1),
        None
    );
    assert_eq!(
        a.delta_since(&n(0), a.version(&n(0)).unwrap(), usize::MAX),
        None
    );
}

#[test]
fn tombstones_expire_after_the_ttl_by_local_time() {
    let mut a = map(0);
    a.insert(at(0), 1, info(1)).unwrap();
    a.remove(at(5), &1).unwrap();
    a.gc(at(14));
    assert_eq!(a.tombstones(&n(0)), 1);
    a.gc(at(15));
    assert_eq!(a.tombstones(&n(0)), 0);
    assert_eq!(a.floor(&n(0)), Some(Version::new(1, 2)));
}

#[test]
fn digest_exchange_over_small_budgets_converges_in_a_few_rounds() {
    let mut maps: Vec<Map> = (0..NODES).map(map).collect();
    for (i, m) in maps.iter_mut().enumerate() {
        for k in 0..KEYS {
            m.insert(at(0), k, info(i as u8)).unwrap();
        }
    }
    let mut rounds = 0;
    while maps.iter().any(|m| live(m) != live(&maps[0])) || live(&maps[0]).len() < NODES {
        rounds += 1;
        assert!(rounds <= 10, "converges");
        for x in 0..NODES {
            let y = (x + 1) % NODES;
            exchange(&mut maps, at(0), x, y, 200);
        }
    }
    assert!(rounds > 1, "the budget forced several rounds");
}

#[test]
fn providers_lists_live_entries_only() {
    let echo = ServiceName::new("echo").unwrap();
    let (mut a, mut b) = (
        ServiceRegistry::new(n(0), 1, RegistryConfig::default()),
        ServiceRegistry::new(n(1), 1, RegistryConfig::default()),
    );
    a.insert(at(0), echo.clone(), ServiceInfo::default())
        .unwrap();
    b.insert(at(0), echo.clone(), ServiceInfo::default())
        .unwrap();
    b.merge(&a);
    assert_eq!(b.providers(&echo).collect::<Vec<_>>(), [n(0), n(1)]);
    a.remove(at(1), &echo).unwrap();
    b.merge(&a);
    assert_eq!(b.providers(&echo).collect::<Vec<_>>(), [n(1)]);
}

#[test]
fn process_tables_gossip_too() {
    let (mut a, mut b) = (
        ProcessTable::new(n(0), 1, RegistryConfig::default()),
        ProcessTable::new(n(1), 1, RegistryConfig::default()),
    );
    let p = ProcessInfo::new("worker", &b"x"[..]).unwrap();
    a.insert(at(0), 42, p.clone()).unwrap();
    let bytes = ProcessGossip::Digest(b.digest()).encode();
    for reply in a
        .handle(at(0), ProcessGossip::decode(&bytes).unwrap(), 4096)
        .replies
    {
        b.handle(at(0), ProcessGossip::decode(&reply.encode()).unwrap(), 4096);
    }
    assert_eq!(b.get(&n(0), &42), Some(&p));
}

#[test]
fn sync_digest_round_trips_skips_unknown_sections_and_checks_lists() {
    let mut a = map(0);
    a.insert(at(0), 1, info(1)).unwrap();
    let digest = SyncDigest {
        services: Some(a.summary()),
        processes: Some(RegistrySummary::of(&[])),
        ..SyncDigest::default()
    };
    let bytes = digest.encode();
    assert_eq!(SyncDigest::decode(&bytes), Some(digest.clone()));
    // An unknown section (tag 0x7f) is skipped wherever it is.
    let mut extended = vec![0x7f, 0, 3, 1, 2, 3];
    extended.extend_from_slice(&bytes);
    assert_eq!(SyncDigest::decode(&extended), Some(digest.clone()));
    // A known section twice, a cut section, or a list that does not match its hash.
    let mut twice = bytes.to_vec();
    twice.extend_from_slice(&bytes);
    assert_eq!(SyncDigest::decode(&twice), None);
    let listed = SyncDigest {
        services: Some(a.summary()),
        ..SyncDigest::default()
    };
    let boundary = listed.encode().len();
    for cut in 1..bytes.len() {
        let expected = (cut == boundary).then(|| listed.clone());
        assert_eq!(SyncDigest::decode(&bytes[..cut]), expected, "cut at {cut}");
    }
    let mut forged = listed.encode().to_vec();
    assert_eq!(SyncDigest::decode(&forged), Some(listed));
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(SyncDigest::decode(&forged), None);
    // Long digests are summarised without the list.
    let many: Vec<(NodeId, Version)> = (0..=MAX_SUMMARY_LIST)
        .map(|i| (NodeId::from_bytes([i as u8; 32]), Version::new(1, 1)))
        .collect();
    let summary = RegistrySummary::of(&many);
    assert_eq!((summary.origins, summary.list.is_none()), (65, true));
    let d = SyncDigest {
        services: Some(summary),
        ..SyncDigest::default()
    };
    assert_eq!(SyncDigest::decode(&d.encode()), Some(d));
}

#[test]
fn sync_digest_carries_chain_head_and_tree_state() {
    use crate::sync::chain::ChainHead;
    use crate::sync::TreeState;
    let digest = SyncDigest {
        chain: Some(ChainHead {
            seq: 7,
            hash: [9; 32],
        }),
        tree: Some(TreeState {
            version: 3,
            root: [4; 32],
        }),
        ..SyncDigest::default()
    };
    let bytes = digest.encode();
    let mut expected = vec![0x03, 0, 40, 0, 0, 0, 0, 0, 0, 0, 7];
    expected.extend_from_slice(&[9; 32]);
    expected.extend_from_slice(&[0x04, 0, 40, 0, 0, 0, 0, 0, 0, 0, 3]);
    expected.extend_from_slice(&[4; 32]);
    assert_eq!(&bytes[..], &expected[..]);
    assert_eq!(SyncDigest::decode(&bytes), Some(digest.clone()));
    // Cut anywhere inside a section: malformed; at the boundary: the first section.
    for cut in 1..bytes.len() {
        let expected = match cut {
            43 => Some(SyncDigest {
                chain: digest.chain,
                ..SyncDigest::default()
            }),
            _ => None,
        };
        assert_eq!(SyncDigest::decode(&bytes[..cut]), expected, "cut at {cut}");
    }
    // A section too long, twice, or an empty chain head with a hash: malformed.
    let mut long = bytes.to_vec();
    long[2] = 41;
    long.insert(43, 0);
    assert_eq!(SyncDigest::decode(&long), None);
    let mut twice = bytes.to_vec();
    twice.extend_from_slice(&bytes[..43]);
    assert_eq!(SyncDigest::decode(&twice), None);
    let mut empty_with_hash = bytes.to_vec();
    empty_with_hash[10] = 0;
    assert_eq!(SyncDigest::decode(&empty_with_hash), None);
    empty_with_hash[11..43].fill(0);
    assert!(SyncDigest::decode(&empty_with_hash).is_some_and(|d| d.chain == Some(ChainHead::EMPTY)));
}

#[test]
fn summaries_start_only_the_syncs_that_are_needed() {
    let (mut a, mut b) = (map(0), map(1));
    a.insert(at(0), 1, info(1)).unwrap();
    b.merge(&a);
    a.merge(&b);
    assert_eq!(b.answer_summary(&a.summary(), 4096), vec![]);
    a.insert(at(1), 2, info(2)).unwrap();
    // A short list: answered like a digest (b wants a's news).
    let replies = b.answer_summary(&a.summary(), 4096);
    assert_eq!(replies, [Msg::Want(vec![(n(0), Version::new(1, 1))])]);
    // Without the list: b sends its digest.
    let unlisted = RegistrySummary {
        list: None,
        ..a.summary()
    };
    assert_eq!(b.answer_summary(&unlisted, 4096), [Msg::Digest(b.digest())]);
}

#[test]
fn a_pushed_delta_about_a_previous_run_makes_us_overtake_it() {
    let mut old_run = Map::new(n(0), 100, config());
    old_run.insert(at(0), 1, info(1)).unwrap();
    let stale = old_run.delta_since(&n(0), Version::ZERO, 1024).unwrap();
    let mut a = Map::new(n(0), 50, config());
    a.insert(at(1), 2, info(2)).unwrap();
    let handled = a.handle(at(1), Msg::Deltas(vec![stale]), 1024);
    assert_eq!(handled.rejected, [(n(0), ApplyError::OwnOrigin)]);
    assert!(a.version(&n(0)).unwrap() > Version::new(100, 1));
    assert_eq!(a.entries(&n(0)).map(|(k, _)| *k).collect::<Vec<_>>(), [2]);
}
