//! Replication through nodes in the simulator: chain catch-up across link resets, forks
//! among three nodes, tree repair bounded by the difference, bulk sync never delaying
//! link round trips, a tree written during a pull, and the SyncDigest chain and tree
//! sections of PROTOCOL.md §15.5.

use std::time::Duration;

use weft_mesh::membership::MemberEvent;
use weft_mesh::node::{NodeEvent, SyncEvent};
use weft_mesh::sync::chain::{ChainHead, ChainStore, Fork, MemoryChain};
use weft_mesh::sync::merkle::MemoryStore;
use weft_mesh_tests::sim::{with_seed, NetProfile, NodeIdx, Sim, SimConfig};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

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

/// Round-trip samples of the link between two nodes, as each node's Pings time them.
///
/// The node shows only the smoothed round-trip time ([`PeerSummary::rtt`]:
/// `srtt' = (7 srtt + sample) / 8`, whole nanoseconds), so each sample is recovered
/// from a change of it: `sample = 8 srtt' - 7 srtt` (to within 8 ns). Pings leave every
/// 100 ms here and the watch looks whenever virtual time advances, so no change is
/// missed (a sample equal to the smoothed value changes nothing and is not counted).
///
/// [`PeerSummary::rtt`]: weft_mesh::node::PeerSummary::rtt
struct RttWatch {
    nodes: [NodeIdx; 2],
    srtt: [Option<Duration>; 2],
    samples: Vec<Duration>,
}

impl RttWatch {
    fn new(sim: &Sim, nodes: [NodeIdx; 2]) -> Self {
        let mut watch = RttWatch {
            nodes,
            srtt: [None; 2],
            samples: Vec::new(),
        };
        watch.look(sim);
        watch.samples.clear();
        watch
    }

    fn srtt(sim: &Sim, a: NodeIdx) -> Option<Duration> {
        sim.node(a)?.peers().next()?.rtt
    }

    fn look(&mut self, sim: &Sim) {
        for (i, &a) in self.nodes.iter().enumerate() {
            let now = Self::srtt(sim, a);
            if now != self.srtt[i] {
                if let Some(new) = now {
                    let sample = match self.srtt[i] {
                        Some(old) => {
                            let nanos = 8 * new.as_nanos() as i128 - 7 * old.as_nanos() as i128;
                            Duration::from_nanos(nanos.max(0) as u64)
                        }
                        None => new,
                    };
                    self.samples.push(sample);
                }
                self.srtt[i] = now;
            }
        }
    }

    /// Run `sim` for `d`, collecting samples; every `step`, `check` sees the simulation.
    fn run(&mut self, sim: &mut Sim, d: Duration, step: Duration, mut check: impl FnMut(&Sim)) {
        let end = sim.now() + d;
        while sim.now() < end {
            let until = step.min(end - sim.now());
            sim.run_until(until, |s| {
                self.look(s);
                false
            });
            self.look(sim);
            check(sim);
        }
    }

    fn take(&mut self) -> Vec<Duration> {
        let mut samples = std::mem::take(&mut self.samples);
        samples.sort();
        samples
    }
}

/// Issue 6: bulk sync frames travel at the lowest priority and never delay heartbeats.
///
/// Two nodes (membership on) on a 10 MB/s link with 64 KiB socket send buffers, 5 ms
/// one-way latency (+ up to 2 ms jitter), Pings every 100 ms. Their trees are both
/// empty while the link round trips are measured idle for 5 s; then the source writes
/// 10 000 keys of 4000-byte values (40 MB) and the empty replica starts mirroring it,
/// which saturates the link for about 4 s with replies of about 256 KiB, four in
/// flight. Over 2.5 s of that sync (the replica's tree growing every 500 ms and not
/// finished), every round trip of either node's Pings stays within the idle maximum
/// plus what a Ping can wait behind when it travels first: a full socket buffer and
/// one whole record (at most a socket buffer too, as the simulator hands the node no
/// more room than that), each at the link's bandwidth, plus the jitter of both ways.
/// That bound is checked to be at most half of what a FIFO send queue would give: the
/// replies the responder has queued beyond the socket and the wire, at the bandwidth.
/// Neither node's SWIM suspects the other, and neither link is judged slow. Seed 4:
/// idle max 14.0 ms; during the sync p50 20.3 ms, max 21.0 ms; bound 31.1 ms; FIFO
/// 79.8 ms.
#[test]
fn link_round_trips_stay_at_idle_while_a_40_mb_tree_syncs_over_10_mb_per_s() {
    with_seed("bulk_sync_keeps_round_trips", 4, |seed| {
        const BANDWIDTH: u64 = 10_000_000;
        const SOCKET_BUFFER: usize = 64 * 1024;
        const KEYS: usize = 10_000;
        const VALUE_LEN: usize = 4000;
        let net = NetProfile {
            bandwidth: BANDWIDTH,
            socket_buffer: SOCKET_BUFFER,
            ..NetProfile::default()
        };
        let mut sim = Sim::with_net(seed, net);
        let mut config = sim.classical_config();
        assert!(config.membership.is_some(), "SWIM probes run too");
        config.link.keepalive = Some(Duration::from_millis(100));
        let src = sim.add_node(config.clone());
        let dst = sim.add_node(config);
        for a in [src, dst] {
            sim.with_node(a, "plug tree", |n, _| {
                n.set_tree_store(MemoryStore::new(), 0).unwrap()
            });
        }
        sim.seed(dst, src);
        let mut watch = RttWatch::new(&sim, [src, dst]);
        let measured = sim.run_until(5 * SEC, |s| {
            [src, dst].iter().all(|&a| RttWatch::srtt(s, a).is_some())
        });
        assert!(measured.is_some(), "both nodes time round trips");

        let mut idle = Vec::new();
        let mut round = 0;
        while idle.len() < 80 {
            watch.run(&mut sim, 5 * SEC, 100 * MS, |_| {});
            idle = watch.take();
            round += 1;
            assert!(round < 3, "{} idle samples", idle.len());
        }
        let idle_max = *idle.last().unwrap();

        // The source writes 40 MB; the replica (version 0) pulls it (version 1 after
        // the first write, 10 000 after the last: the advertisement carries the last).
        sim.with_node(src, "write 10000 keys", |n, now| {
            for i in 0..KEYS {
                let key = format!("key {i:05}");
                let mut value = vec![(i % 251) as u8; VALUE_LEN];
                value[..8].copy_from_slice(&(i as u64).to_be_bytes());
                assert!(n.tree_insert(now, key.as_bytes(), &value).unwrap());
            }
        });
        let written = sim.now();
        let want = sim.node(src).unwrap().tree_state().unwrap();
        assert_eq!(want.version, KEYS as u64);
        let len = |s: &Sim| s.node(dst).unwrap().tree().unwrap().len();
        let started = sim.run_until(2 * SEC, |s| len(s) > 0);
        assert!(started.is_some(), "the replica starts pulling");
        watch.look(&sim);
        watch.take();

        let window = 2500 * MS;
        let from_len = len(&sim);
        assert!(from_len < KEYS / 10, "the window starts early in the sync");
        let mut lens = vec![from_len];
        let mut degraded = false;
        watch.run(&mut sim, window, 100 * MS, |s| {
            lens.push(len(s));
            degraded |= [src, dst]
                .iter()
                .any(|&a| s.node(a).unwrap().peers().any(|p| p.degraded));
        });
        let during = watch.take();
        let to_len = len(&sim);
        assert!(
            to_len < KEYS,
            "the sync still runs at the end of the window ({to_len} of {KEYS} keys)"
        );
        let every_500_ms: Vec<usize> = lens.iter().copied().step_by(5).collect();
        assert!(
            every_500_ms.windows(2).all(|w| w[1] > w[0]),
            "the replica grows every 500 ms: {lens:?}"
        );
        assert!(!degraded, "no link was judged slow or stalled");

        let done = sim.run_until(60 * SEC, |s| {
            s.node(dst).and_then(|n| n.tree_state()) == Some(want)
        });
        assert!(done.is_some(), "the replica mirrors the source");
        let (bytes, leaves) = sync_events(&sim, dst)
            .iter()
            .find_map(|e| match e {
                SyncEvent::TreeSynced {
                    bytes_received,
                    leaves,
                    ..
                } => Some((*bytes_received, *leaves)),
                _ => None,
            })
            .expect("a synced event");
        assert_eq!(leaves, KEYS as u64);
        for a in [src, dst] {
            let suspects = sim.count(a, |e| {
                matches!(e, NodeEvent::Member(MemberEvent::Suspect { .. }))
            });
            assert_eq!(suspects, 0, "{a} suspected nobody");
        }

        // The link was saturated over the window: at least 80 % of the bandwidth.
        let per_leaf = bytes as f64 / leaves as f64;
        let secs = |d: Duration| d.as_secs_f64();
        let throughput = (to_len - from_len) as f64 * per_leaf / secs(window);
        assert!(
            throughput >= 0.8 * BANDWIDTH as f64,
            "{throughput:.0} B/s over the window"
        );

        // What a Ping can wait behind at the responder when it travels first.
        let at_bandwidth = |bytes: f64| Duration::from_secs_f64(bytes / BANDWIDTH as f64);
        let jitter = 2 * net.jitter;
        let bound = idle_max + at_bandwidth(2.0 * SOCKET_BUFFER as f64) + jitter;
        // What it would wait behind in one FIFO queue: of the replies in flight, all
        // but the one being received, less what the socket and the wire hold.
        let tree = &sim.node(src).unwrap().config().sync.tree;
        let reply = (tree.max_paths_per_request as f64 * per_leaf).min(tree.max_reply_bytes as f64);
        let on_wire = secs(net.latency) * BANDWIDTH as f64;
        let queued = (tree.max_in_flight - 1) as f64 * reply - SOCKET_BUFFER as f64 - on_wire;
        let fifo = idle[idle.len() / 2] + at_bandwidth(queued);

        let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
        eprintln!(
            "round trips: idle {} samples p50 {:?} max {:?}; during the sync ({} samples, \
             {} -> {} keys, {:.1} MB/s) p50 {:?} p99 {:?} max {:?}; bound {:?}; \
             FIFO estimate {:?} ({:.0} KiB queued, replies {:.0} KiB); the sync moved \
             {bytes} bytes in {:?}",
            idle.len(),
            pct(&idle, 50),
            idle_max,
            during.len(),
            from_len,
            to_len,
            throughput / 1e6,
            pct(&during, 50),
            pct(&during, 99),
            during.last().unwrap(),
            bound,
            fifo,
            queued / 1024.0,
            reply / 1024.0,
            sim.now() - written,
        );
        assert!(
            bound * 2 <= fifo,
            "the bound ({bound:?}) is well below FIFO's wait ({fifo:?})"
        );
        assert!(
            during.len() >= 40,
            "{} samples during the sync",
            during.len()
        );
        let worst = *during.last().unwrap();
        assert!(
            worst <= bound,
            "round trips during the sync: max {worst:?} > {bound:?}"
        );
    });
}

/// A tree the source changes while the replica pulls it: the source advertises its new
/// state 50 ms after the write (a SyncDigest, in the gossip lane, ahead of the bulk
/// replies), while the replica's pull still runs. That pull then ends (converged on the
/// state it started from, or failed when a node on the changed path no longer matches
/// the root it expected), and the replica should go on to the state it has already been
/// told of. Anti-entropy is slowed to one digest a minute so that it does not hide the
/// outcome.
///
/// Fails on the core of 9af6524: `on_tree_state` records the new state but
/// `start_tree_pull` refuses while a pull runs, and when the pull ends `pump_tree`
/// starts no other pull (the chain side has `next_chain_pull` for this); on failure it
/// even forgets the recorded state (`p.tree = None`). The replica then waits for the
/// source's next digest: the next anti-entropy round that picks it (every
/// `exchange_interval`, to one random peer) or the source's next write.
#[test]
fn a_tree_written_during_a_pull_is_mirrored_once_the_pull_ends() {
    with_seed("tree_written_during_pull", 5, |seed| {
        let net = NetProfile {
            bandwidth: 10_000_000,
            socket_buffer: 64 * 1024,
            ..NetProfile::default()
        };
        let mut sim = Sim::with_net(seed, net);
        let mut config = sim.classical_config();
        config.membership = None;
        config.exchange_interval = 60 * SEC;
        let src = sim.add_node(config.clone());
        let dst = sim.add_node(config);
        use weft_mesh::sync::merkle::KvStore;
        let mut source = MemoryStore::new();
        for i in 0..10_000u32 {
            source.insert(format!("key {i:05}").as_bytes(), &[(i % 251) as u8; 4000]);
        }
        sim.with_node(src, "plug tree", |n, _| {
            n.set_tree_store(source, 1).unwrap()
        });
        sim.with_node(dst, "plug tree", |n, _| {
            n.set_tree_store(MemoryStore::new(), 0).unwrap()
        });
        sim.seed(dst, src);
        let len = |s: &Sim| s.node(dst).unwrap().tree().unwrap().len();
        let midway = sim.run_until(10 * SEC, |s| len(s) >= 2000);
        assert!(midway.is_some(), "the pull is under way");
        sim.with_node(src, "write during the pull", |n, now| {
            n.tree_insert(now, b"late key", b"late value").unwrap()
        });
        let want = sim.node(src).unwrap().tree_state().unwrap();
        assert_eq!(want.version, 2);
        // The first pull alone takes about 4 s (40 MB at 10 MB/s).
        let mirrored = sim.run_until(10 * SEC, |s| {
            s.node(dst).and_then(|n| n.tree_state()) == Some(want)
        });
        assert!(
            mirrored.is_some(),
            "the replica mirrors the written tree: {:?}, events {:?}",
            sim.node(dst).unwrap().tree_state(),
            sync_events(&sim, dst)
        );
    });
}

/// PROTOCOL.md §15.5's example of the chain and tree sections, byte for byte, and its
/// malformed rules for them: a body other than 40 bytes, a section twice, an empty
/// chain head with a non-zero hash, a sequence number past 2^64 − 2. Unknown tags are
/// skipped.
#[test]
fn sync_digest_chain_and_tree_sections_match_the_protocol_example() {
    use weft_mesh::registry::SyncDigest;
    use weft_mesh::sync::TreeState;
    use weft_mesh_tests::sim::hex;

    let chain = MemoryChain::from_payloads([b"hi".to_vec()]).unwrap();
    let h = chain.head().hash;
    assert_eq!(
        hex(&h),
        "356ba331a125f4a96f9b583e108ac50df4bd9b96352ec0aad477622bd9720d57"
    );
    let r = [0x77; 32];
    let digest = SyncDigest {
        chain: Some(chain.head()),
        tree: Some(TreeState {
            version: 2,
            root: r,
        }),
        ..SyncDigest::default()
    };
    let bytes = digest.encode();
    let want = format!(
        "030028{}{}040028{}{}",
        "0000000000000001",
        hex(&h),
        "0000000000000002",
        hex(&r)
    );
    assert_eq!(hex(&bytes), want);
    assert_eq!(bytes.len(), 86);
    assert_eq!(SyncDigest::decode(&bytes), Some(digest.clone()));

    let empty = SyncDigest {
        chain: Some(ChainHead {
            seq: 0,
            hash: [0; 32],
        }),
        tree: Some(TreeState::default()),
        ..SyncDigest::default()
    };
    let mut expected = vec![0x03, 0x00, 0x28];
    expected.extend([0; 40]);
    expected.extend([0x04, 0x00, 0x28]);
    expected.extend([0; 40]);
    assert_eq!(&empty.encode()[..], &expected[..]);

    let section = |tag: u8, number: u64, hash: [u8; 32], len: u16| {
        let mut b = vec![tag];
        b.extend(len.to_be_bytes());
        b.extend(number.to_be_bytes());
        b.extend(hash);
        b.resize(3 + usize::from(len), 0);
        b
    };
    let malformed = [
        ("chain body of 39 bytes", section(0x03, 1, h, 39)),
        ("chain body of 41 bytes", section(0x03, 1, h, 41)),
        ("tree body of 41 bytes", section(0x04, 1, r, 41)),
        ("empty head, non-zero hash", section(0x03, 0, h, 40)),
        ("seq past 2^64 - 2", section(0x03, u64::MAX, h, 40)),
        (
            "chain twice",
            [section(0x03, 1, h, 40), section(0x03, 1, h, 40)].concat(),
        ),
        (
            "tree twice",
            [section(0x04, 1, r, 40), section(0x04, 2, r, 40)].concat(),
        ),
    ];
    for (what, bytes) in malformed {
        assert_eq!(SyncDigest::decode(&bytes), None, "{what}");
    }
    let valid = [
        section(0x04, u64::MAX, [0xff; 32], 40),
        section(0x03, u64::MAX - 1, h, 40),
        section(0x05, 7, h, 7),
    ]
    .concat();
    let decoded = SyncDigest::decode(&valid).expect("valid");
    assert_eq!(decoded.chain.map(|c| c.seq), Some(u64::MAX - 1));
    assert_eq!(decoded.tree.map(|t| t.version), Some(u64::MAX));
}
