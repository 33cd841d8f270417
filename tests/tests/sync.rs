//! Replication through nodes in the simulator: chain catch-up across link resets, forks
//! among three nodes, tree repair bounded by the difference, and bulk sync never
//! delaying link round trips.

use std::time::Duration;

use weft_mesh::node::{NodeEvent, SyncEvent};
use weft_mesh::sync::chain::{ChainHead, ChainStore, Fork, MemoryChain};
use weft_mesh::sync::merkle::MemoryStore;
use weft_mesh_tests::sim::{with_seed, NodeIdx, Sim, SimConfig};

const SEC: Duration = Duration::from_secs(1);

fn chain_of(len: u32, tag: &str) -> MemoryChain {
    MemoryChain::from_payloads((0..len).map(|i| format!("{tag} entry {i}").into_bytes())).unwrap()
}

fn head(sim: &Sim, a: NodeIdx) -> ChainHead {
    sim.node(a)
        .and_then(|n| n.chain())
        .map(|c| c.head())
        .unwrap()
}

fn sync_events(sim: &Sim, a: NodeIdx) -> Vec<SyncEvent> {
    sim.events(a)
        .iter()
        .filter_map(|r| match &r.event {
            NodeEvent::Sync(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Two nodes; `b` is 10 000 entries behind `a` and its link to `a` is reset every time
/// it has appended another 500. Each new link's hello shows `a` ahead, and the pull
/// starts again from `b`'s head: every entry arrives, none is appended twice, and the
/// only entries fetched again are the one-per-link checks of `b`'s head.
#[test]
fn a_node_ten_thousand_entries_behind_catches_up_through_resets_every_500_entries() {
    with_seed("chain_catch_up_through_resets", 1, |seed| {
        let mut sim = Sim::new(seed, SimConfig::default());
        let mut config = sim.classical_config();
        config.membership = None;
        let a = sim.add_node(config.clone());
        let b = sim.add_node(config);
        let full = chain_of(10_000, "a");
        let target = full.head();
        sim.with_node(a, "plug chain", |n, _| n.set_chain_store(full));
        sim.with_node(b, "plug chain", |n, _| {
            n.set_chain_store(MemoryChain::new())
        });
        sim.seed(b, a);

        let mut resets = 0;
        let mut next = 500;
        while next < 10_000 {
            let reached = sim.run_until(30 * SEC, |s| head(s, b).seq >= next);
            assert!(
                reached.is_some(),
                "reached {next} (at {})",
                head(&sim, b).seq
            );
            sim.reset_connections_of(b);
            resets += 1;
            next = head(&sim, b).seq + 500;
        }
        let done = sim.run_until(60 * SEC, |s| head(s, b) == target);
        assert!(
            done.is_some(),
            "caught up: {:?} vs {target:?}",
            head(&sim, b)
        );
        assert!(resets >= 19, "{resets} resets");

        let events = sync_events(&sim, b);
        let progress = events
            .iter()
            .filter(|e| matches!(e, SyncEvent::ChainProgress { .. }))
            .count();
        assert!(progress >= 20, "{progress} progress events");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, SyncEvent::ChainSynced { head, .. } if *head == target)),
            "a synced event at the target: {events:?}"
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, SyncEvent::ChainForked { .. })));
        // b's chain is a's, entry for entry.
        let (na, nb) = (sim.node(a).unwrap(), sim.node(b).unwrap());
        for seq in [1, 500, 501, 5000, 10_000] {
            assert_eq!(
                na.chain().unwrap().get(seq),
                nb.chain().unwrap().get(seq),
                "entry {seq}"
            );
        }
        eprintln!(
            "caught up 10000 entries through {resets} resets in {:?} of virtual time",
            sim.now()
        );
    });
}

/// Three nodes whose chains share 100 entries and then diverge (each appended its own
/// 20). Every node reports a fork against each other node, with evidence that proves it
/// (same sequence number, different hashes, or a broken link), and no chain grows: the
/// pulls stop at the fork.
#[test]
fn three_nodes_with_divergent_forks_report_evidence_and_never_append_across() {
    with_seed("chain_three_way_fork", 2, |seed| {
        let mut sim = Sim::new(seed, SimConfig::default());
        let mut config = sim.classical_config();
        config.membership = None;
        let nodes = sim.add_nodes(3, &config);
        let common = chain_of(100, "common");
        let mut heads = Vec::new();
        for (i, &n) in nodes.iter().enumerate() {
            let mut chain = common.clone();
            for k in 0..20 {
                chain
                    .push(format!("node {i} entry {k}").into_bytes())
                    .unwrap();
            }
            heads.push(chain.head());
            sim.with_node(n, "plug chain", |node, _| node.set_chain_store(chain));
        }
        sim.seed(nodes[1], nodes[0]);
        sim.seed(nodes[2], nodes[0]);
        sim.seed(nodes[2], nodes[1]);
        let forked = |s: &Sim, a: NodeIdx| {
            sync_events(s, a)
                .iter()
                .filter(|e| matches!(e, SyncEvent::ChainForked { .. }))
                .count()
        };
        let all = sim.run_until(30 * SEC, |s| nodes.iter().all(|&a| forked(s, a) == 2));
        assert!(all.is_some(), "every node saw two forks");
        sim.run_for(20 * SEC);
        for (i, &a) in nodes.iter().enumerate() {
            assert_eq!(head(&sim, a), heads[i], "node {i} appended nothing");
            let events = sync_events(&sim, a);
            let mut peers = Vec::new();
            for e in &events {
                if let SyncEvent::ChainForked { peer, fork } = e {
                    assert!(fork.is_valid(), "valid evidence: {fork:?}");
                    assert_eq!(fork.seq(), 120, "the forks show at the heads");
                    if let Fork::Conflict { ours, .. } = fork {
                        assert_eq!(ours.head(), heads[i]);
                    }
                    peers.push(*peer);
                }
                assert!(
                    !matches!(e, SyncEvent::ChainProgress { .. }),
                    "node {i} appended: {e:?}"
                );
            }
            peers.sort();
            peers.dedup();
            assert_eq!(peers.len(), 2, "forks against both others, once each");
        }
    });
}

/// Tree sync through nodes: two trees of 100 000 keys differing in 10 (5 changed values,
/// 3 keys only at the source, 2 only at the replica). The source has the higher version,
/// so the replica mirrors it; the bytes it receives are bounded by the difference.
#[test]
fn trees_of_100k_keys_differing_in_10_converge_moving_only_the_difference() {
    with_seed("tree_repair_through_nodes", 3, |seed| {
        let mut sim = Sim::new(seed, SimConfig::default());
        let mut config = sim.classical_config();
        config.membership = None;
        let src = sim.add_node(config.clone());
        let dst = sim.add_node(config);
        let mut theirs = MemoryStore::new();
        let mut ours = MemoryStore::new();
        use weft_mesh::sync::merkle::KvStore;
        for i in 0..100_000u32 {
            let key = format!("key {i}");
            theirs.insert(key.as_bytes(), &i.to_be_bytes());
            ours.insert(key.as_bytes(), &i.to_be_bytes());
        }
        for i in 0..5u32 {
            theirs.insert(format!("key {}", i * 7919).as_bytes(), b"changed");
        }
        for i in 0..3u32 {
            theirs.insert(format!("new {i}").as_bytes(), b"only at the source");
        }
        for i in 0..2u32 {
            ours.insert(format!("stale {i}").as_bytes(), b"only at the replica");
        }
        sim.with_node(src, "plug tree", |n, _| {
            n.set_tree_store(theirs, 2).unwrap()
        });
        sim.with_node(dst, "plug tree", |n, _| n.set_tree_store(ours, 1).unwrap());
        let want = sim.node(src).unwrap().tree_state().unwrap();
        assert_ne!(sim.node(dst).unwrap().tree_state().unwrap().root, want.root);
        sim.seed(dst, src);
        let done = sim.run_until(30 * SEC, |s| {
            s.node(dst).and_then(|n| n.tree_state()) == Some(want)
        });
        assert!(done.is_some(), "the replica mirrors the source");
        let events = sync_events(&sim, dst);
        let bytes = events
            .iter()
            .find_map(|e| match e {
                SyncEvent::TreeSynced { bytes_received, .. } => Some(*bytes_received),
                _ => None,
            })
            .expect("a synced event");
        eprintln!("100k keys, 10 differences: {bytes} bytes received");
        // At most depth (5 for 100k keys) inner nodes of <= 515 bytes and one leaf per
        // difference, plus the root: far below the tree (100k leaves, ~5 MB).
        assert!(bytes <= 10 * 6 * 600, "{bytes} bytes");
        assert_eq!(sim.node(dst).unwrap().tree().unwrap().len(), 100_003);
        // The source pulled nothing: its version was higher.
        assert!(sync_events(&sim, src).is_empty());
    });
}
