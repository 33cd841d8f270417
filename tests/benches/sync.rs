//! Replication through the node (PROTOCOL.md §19, issue 6), in the simulator's virtual
//! time.
//!
//! `cargo bench -p weft-mesh-tests --bench sync` runs the full set (well under a minute
//! in release); without `--bench` (as under `cargo test --benches`) it runs once, small,
//! so that it cannot rot. Nothing in the tables is assumed: every value comes from the
//! run. Two nodes, membership off, default node configuration (chain pulls of 4
//! requests of up to 512 entries and 256 KiB in flight; tree pulls of 4 requests of 64
//! paths, replies up to 256 KiB).
//!
//! * **Chain catch-up**: a node with an empty chain links to one holding `entries`
//!   entries of `payload` bytes. The clock starts when the link is up (its hello shows
//!   the head, so the pull starts at once) and stops when the heads are equal.
//!   Entries per second of virtual time (what the protocol achieves on that network),
//!   and per second of real time (what simulating it costs: both nodes' work, the
//!   encryption included), and the wire goodput (all bytes delivered by the simulated
//!   network, both ways, per second of virtual time).
//! * **Tree reconciliation**: two trees of `keys` keys (8-byte values) that differ in
//!   `d` keys: half of them changed values, a quarter only at the source, the rest only
//!   at the replica (a single difference is a changed value). The source's version is
//!   higher, so the replica mirrors it. The bytes are the TreeSync payload bytes the
//!   replica received ([`SyncEvent::TreeSynced`]), the time runs from the link coming up
//!   to the replica holding the source's state. `d = 0`: the roots are equal, nothing
//!   is pulled and the replica only takes the source's version. The last row mirrors
//!   the whole tree into an empty replica, for scale.

use std::time::{Duration, Instant as Wall};

use weft_mesh::node::{NodeEvent, SyncEvent};
use weft_mesh::sync::chain::{ChainStore, MemoryChain};
use weft_mesh::sync::merkle::{KvStore, MemoryStore};
use weft_mesh::Instant;
use weft_mesh_tests::sim::{NetProfile, NodeIdx, Sim};

const LIMIT: Duration = Duration::from_secs(600);

/// A network profile with this bandwidth; the rest as the simulator's default (5 ms
/// latency, 2 ms jitter, 256 KiB socket buffers).
fn profile(bandwidth: u64) -> NetProfile {
    NetProfile {
        bandwidth,
        ..NetProfile::default()
    }
}

/// Two nodes without membership, the source first; not yet linked.
fn pair(seed: u64, net: NetProfile) -> (Sim, NodeIdx, NodeIdx) {
    let mut sim = Sim::with_net(seed, net);
    let mut config = sim.classical_config();
    config.membership = None;
    let src = sim.add_node(config.clone());
    let dst = sim.add_node(config);
    (sim, src, dst)
}

/// Link `dst` to `src`; when the link came up at `dst` (where the pulls start).
fn link(sim: &mut Sim, src: NodeIdx, dst: NodeIdx) -> Instant {
    sim.seed(dst, src);
    sim.run_until(Duration::from_secs(10), |s| {
        s.connected(src, dst) && s.connected(dst, src)
    })
    .expect("the link comes up");
    event_at(sim, dst, |e| matches!(e, NodeEvent::PeerUp { .. })).expect("a PeerUp")
}

/// When `a` first reported an event matching `pred`.
fn event_at(sim: &Sim, a: NodeIdx, pred: impl Fn(&NodeEvent) -> bool) -> Option<Instant> {
    sim.events(a).iter().find(|r| pred(&r.event)).map(|r| r.at)
}

struct ChainRun {
    virtual_time: Duration,
    real_time: Duration,
    wire_bytes: u64,
}

fn chain_catch_up(entries: u32, payload: usize, net: NetProfile) -> ChainRun {
    let (mut sim, src, dst) = pair(u64::from(entries) ^ payload as u64, net);
    let full = MemoryChain::from_payloads((0..entries).map(|i| {
        let mut p = vec![(i % 251) as u8; payload];
        p[..4].copy_from_slice(&i.to_be_bytes());
        p
    }))
    .expect("a valid chain");
    let target = full.head();
    sim.with_node(src, "plug chain", |n, _| n.set_chain_store(full));
    sim.with_node(dst, "plug chain", |n, _| {
        n.set_chain_store(MemoryChain::new())
    });
    let up = link(&mut sim, src, dst);
    let bytes_before = sim.stats().bytes_delivered;
    let wall = Wall::now();
    let head = |s: &Sim| s.node(dst).and_then(|n| n.chain()).map(|c| c.head());
    sim.run_until(LIMIT, |s| head(s) == Some(target))
        .expect("the replica catches up");
    let real_time = wall.elapsed();
    let synced = |e: &NodeEvent| matches!(e, NodeEvent::Sync(SyncEvent::ChainSynced { head, .. }) if *head == target);
    assert_eq!(sim.count(dst, synced), 1, "one pull caught up");
    ChainRun {
        virtual_time: event_at(&sim, dst, synced).expect("synced") - up,
        real_time,
        wire_bytes: sim.stats().bytes_delivered - bytes_before,
    }
}

struct TreeRun {
    bytes: u64,
    leaves: u64,
    virtual_time: Duration,
}

fn key(i: usize) -> Vec<u8> {
    format!("key {i:06}").into_bytes()
}

/// The replica of `base` that differs from the source in `d` keys, and the source.
fn differing(base: &MemoryStore, keys: usize, d: usize) -> (MemoryStore, MemoryStore) {
    let (mut source, mut replica) = (base.clone(), base.clone());
    let changed = if d == 1 { 1 } else { d / 2 };
    let only_source = if d == 1 { 0 } else { d / 4 };
    let only_replica = d - changed - only_source;
    // Spread the changed keys over the tree.
    let stride = keys / changed.max(1);
    for k in 0..changed {
        source.insert(&key(k * stride), b"changed!");
    }
    for k in 0..only_source {
        source.insert(format!("new {k}").as_bytes(), b"source  ");
    }
    for k in 0..only_replica {
        replica.insert(format!("stale {k}").as_bytes(), b"replica ");
    }
    (source, replica)
}

fn tree_reconcile(source: MemoryStore, replica: MemoryStore, seed: u64) -> TreeRun {
    let (mut sim, src, dst) = pair(seed, NetProfile::default());
    sim.with_node(src, "plug tree", |n, _| n.set_tree_store(source, 2))
        .expect("up")
        .expect("valid entries");
    sim.with_node(dst, "plug tree", |n, _| n.set_tree_store(replica, 1))
        .expect("up")
        .expect("valid entries");
    let want = sim.node(src).and_then(|n| n.tree_state()).expect("a tree");
    let up = link(&mut sim, src, dst);
    sim.run_until(LIMIT, |s| {
        s.node(dst).and_then(|n| n.tree_state()) == Some(want)
    })
    .expect("the replica mirrors the source");
    let synced = sim.events(dst).iter().find_map(|r| match &r.event {
        NodeEvent::Sync(SyncEvent::TreeSynced {
            bytes_received,
            leaves,
            ..
        }) => Some((*bytes_received, *leaves, r.at)),
        _ => None,
    });
    // Equal roots: no pull, no event; the version is taken when the digest arrives.
    let (bytes, leaves, at) = synced.unwrap_or((0, 0, sim.now()));
    TreeRun {
        bytes,
        leaves,
        virtual_time: at - up,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");

    let (chains, profiles): (&[u32], &[u64]) = if quick {
        (&[1000], &[100_000_000])
    } else {
        (&[10_000, 100_000], &[100_000_000, 10_000_000])
    };
    println!("chain catch-up: an empty chain pulls the whole of a peer's");
    println!(
        "bandwidth | entries | payload | virtual time | entries/s virtual | \
         real time | entries/s real | wire MB/s"
    );
    for &bandwidth in profiles {
        for &entries in chains {
            for payload in [100, 1024] {
                let run = chain_catch_up(entries, payload, profile(bandwidth));
                let n = f64::from(entries);
                println!(
                    "{:>5} MB/s | {entries:>7} | {payload:>5} B | {:>9.1} ms | {:>17.0} | \
                     {:>6.0} ms | {:>14.0} | {:>9.1}",
                    bandwidth / 1_000_000,
                    ms(run.virtual_time),
                    n / run.virtual_time.as_secs_f64(),
                    ms(run.real_time),
                    n / run.real_time.as_secs_f64(),
                    run.wire_bytes as f64 / run.virtual_time.as_secs_f64() / 1e6,
                );
            }
        }
    }

    let (keys, diffs): (usize, &[usize]) = if quick {
        (10_000, &[0, 1, 10, 100])
    } else {
        (100_000, &[0, 1, 10, 100, 1000, 10_000])
    };
    let mut base = MemoryStore::new();
    for i in 0..keys {
        base.insert(&key(i), &(i as u64).to_be_bytes());
    }
    println!();
    println!(
        "tree reconciliation: {keys} keys, 8-byte values, {} MB/s, mirrored from the \
         higher version",
        NetProfile::default().bandwidth / 1_000_000
    );
    println!("differences | bytes received | bytes/difference | leaves | virtual time");
    for &d in diffs {
        let (source, replica) = differing(&base, keys, d);
        let run = tree_reconcile(source, replica, d as u64);
        let ratio = if d == 0 {
            "-".to_string()
        } else {
            format!("{:.0}", run.bytes as f64 / d as f64)
        };
        println!(
            "{d:>11} | {:>14} | {ratio:>16} | {:>6} | {:>9.1} ms",
            run.bytes,
            run.leaves,
            ms(run.virtual_time)
        );
    }
    let run = tree_reconcile(base, MemoryStore::new(), 1 << 32);
    println!(
        "{:>11} | {:>14} | {:>16.0} | {:>6} | {:>9.1} ms   (empty replica)",
        keys,
        run.bytes,
        run.bytes as f64 / keys as f64,
        run.leaves,
        ms(run.virtual_time)
    );
}
