//! The mesh layer in the deterministic simulator: relaying along lines and rings,
//! exactly-once delivery, the hop limit, partitions, crashes and a 200-node mesh with
//! random resets.
//!
//! Every test prints its seed; rerun one with `WEFT_SIM_SEED=<seed> cargo test -p
//! weft-mesh-tests --test mesh <name>`.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_mesh::node::{MessageId, NodeConfig, NodeEvent, SendFailure};
use weft_mesh::NodeId;
use weft_mesh_tests::sim::{with_seed, FaultConfig, NetProfile, NodeIdx, Sim, SimConfig};

const SEC: Duration = Duration::from_secs(1);

/// `n` nodes where node `i + 1` seeds node `i`: each is linked to its neighbours only.
fn line(sim: &mut Sim, n: usize, config: &NodeConfig) -> Vec<NodeIdx> {
    let nodes = sim.add_nodes(n, config);
    for w in nodes.windows(2) {
        sim.seed(w[1], w[0]);
    }
    nodes
}

fn route_hops(sim: &Sim, a: NodeIdx, b: NodeIdx) -> Option<u8> {
    let to = sim.node_id(b);
    sim.node(a)?
        .routes()
        .find(|(d, _)| *d == to)
        .map(|(_, r)| r.hops)
}

fn outcome(sim: &Sim, a: NodeIdx, id: MessageId) -> Option<Result<(), SendFailure>> {
    sim.events(a).iter().find_map(|r| match &r.event {
        NodeEvent::Delivered { id: i, .. } if *i == id => Some(Ok(())),
        NodeEvent::SendFailed { id: i, reason, .. } if *i == id => Some(Err(*reason)),
        _ => None,
    })
}

/// Hops of every message `b` received from `a` with this payload.
fn received(sim: &Sim, b: NodeIdx, from: NodeId, data: &[u8]) -> Vec<u8> {
    sim.events(b)
        .iter()
        .filter_map(|r| match &r.event {
            NodeEvent::Message {
                from: f,
                payload,
                hops,
                ..
            } if *f == from && payload[..] == *data => Some(*hops),
            _ => None,
        })
        .collect()
}

fn send_and_wait(sim: &mut Sim, a: NodeIdx, b: NodeIdx, data: &[u8]) -> Result<(), SendFailure> {
    let id = sim.send(a, b, data).expect("accepted");
    sim.run_until(30 * SEC, |s| outcome(s, a, id).is_some());
    outcome(sim, a, id).unwrap_or_else(|| panic!("{a} -> {b}: no outcome"))
}

#[test]
fn a_line_of_five_delivers_end_to_end_through_relays() {
    with_seed(
        "a_line_of_five_delivers_end_to_end_through_relays",
        1,
        |seed| {
            let mut sim = Sim::new(seed, SimConfig::default());
            let config = sim.node_config();
            let nodes = line(&mut sim, 5, &config);
            let (first, last) = (nodes[0], nodes[4]);
            let took = sim.run_until(10 * SEC, |s| route_hops(s, first, last) == Some(4));
            eprintln!("routes converged after {took:?}");
            assert!(took.is_some(), "n0 learns a 4-hop route to n4");
            for w in nodes.windows(3) {
                assert!(!sim.connected(w[0], w[2]), "only neighbours are linked");
            }
            assert_eq!(
                send_and_wait(&mut sim, first, last, b"to the far end"),
                Ok(())
            );
            assert_eq!(
                received(&sim, last, sim.node_id(first), b"to the far end"),
                [4]
            );
            assert_eq!(send_and_wait(&mut sim, last, first, b"and back"), Ok(()));

            // A request across three relays is answered by the far end's echo.
            let id = sim.request(first, last, b"ping", 10 * SEC).unwrap();
            sim.run_until(10 * SEC, |s| {
                s.count(
                    first,
                    |e| matches!(e, NodeEvent::Response { id: i, .. } if *i == id),
                ) > 0
            });
            let response = sim.events(first).iter().find_map(|r| match &r.event {
                NodeEvent::Response {
                    id: i,
                    payload,
                    from,
                } if *i == id => Some((*from, payload.clone())),
                _ => None,
            });
            assert_eq!(response, Some((sim.node_id(last), "ping".into())));

            // In order over a direct link: 100 messages n0 -> n1 arrive in sending order.
            for i in 0..100u32 {
                sim.send(first, nodes[1], &i.to_be_bytes()).unwrap();
            }
            sim.run_for(2 * SEC);
            let order: Vec<u32> = sim
                .messages_from(nodes[1], first)
                .iter()
                .filter(|m| m.len() == 4)
                .map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
                .collect();
            assert_eq!(order, (0..100).collect::<Vec<_>>());
        },
    );
}

#[test]
fn a_ring_delivers_every_copy_exactly_once() {
    with_seed("a_ring_delivers_every_copy_exactly_once", 2, |seed| {
        let config = SimConfig {
            net: NetProfile {
                latency: Duration::from_millis(40),
                jitter: Duration::from_millis(20),
                ..NetProfile::default()
            },
            ..SimConfig::default()
        };
        let mut sim = Sim::new(seed, config);
        let mut node_config = sim.classical_config();
        // Retransmit long before an answer can come back: copies of every relayed
        // message chase each other around the ring's two paths.
        node_config.retry_interval = Duration::from_millis(30);
        let nodes = sim.add_nodes(8, &node_config);
        for i in 0..8 {
            sim.seed(nodes[i], nodes[(i + 1) % 8]);
        }
        let (a, b) = (nodes[0], nodes[4]);
        assert!(sim
            .run_until(10 * SEC, |s| route_hops(s, a, b) == Some(4))
            .is_some());
        let mut ids = Vec::new();
        for i in 0..50u32 {
            ids.push(sim.send(a, b, &i.to_be_bytes()).unwrap());
            sim.run_for(SEC / 20);
        }
        sim.run_for(10 * SEC);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(outcome(&sim, a, *id), Some(Ok(())), "message {i}");
            let data = (i as u32).to_be_bytes();
            assert_eq!(
                received(&sim, b, sim.node_id(a), &data).len(),
                1,
                "message {i} once"
            );
        }
        let dups = sim.node(b).unwrap().stats().duplicates;
        eprintln!("duplicates dropped at the destination: {dups}");
        assert!(dups > 0, "copies did arrive and were dropped");
    });
}

#[test]
fn a_nine_hop_path_fails_with_the_hop_limit() {
    with_seed("a_nine_hop_path_fails_with_the_hop_limit", 3, |seed| {
        let mut sim = Sim::new(seed, SimConfig::default());
        let config = sim.classical_config();
        let nodes = line(&mut sim, 10, &config);
        let (first, ninth, eighth) = (nodes[0], nodes[9], nodes[8]);
        assert!(sim
            .run_until(20 * SEC, |s| route_hops(s, first, ninth) == Some(9))
            .is_some());
        assert_eq!(
            send_and_wait(&mut sim, first, ninth, b"too far"),
            Err(SendFailure::HopLimit)
        );
        assert!(received(&sim, ninth, sim.node_id(first), b"too far").is_empty());
        assert_eq!(
            send_and_wait(&mut sim, first, eighth, b"just in reach"),
            Ok(())
        );
        assert_eq!(
            received(&sim, eighth, sim.node_id(first), b"just in reach"),
            [8]
        );
    });
}

#[test]
fn partition_then_heal_resumes_delivery() {
    with_seed("partition_then_heal_resumes_delivery", 4, |seed| {
        let mut sim = Sim::new(seed, SimConfig::default());
        let mut config = sim.classical_config();
        config.message_timeout = 60 * SEC;
        let nodes = line(&mut sim, 6, &config);
        let (a, b) = (nodes[0], nodes[5]);
        assert!(sim
            .run_until(10 * SEC, |s| route_hops(s, a, b) == Some(5))
            .is_some());
        assert_eq!(send_and_wait(&mut sim, a, b, b"before"), Ok(()));

        // A silent cut: the link in the middle looks fine until its idle timeout.
        sim.partition(&[nodes[..3].to_vec(), nodes[3..].to_vec()]);
        let in_flight = sim.send(a, b, b"into the cut").unwrap();
        // The cut link times out (idle 30 s) and the routes across it are withdrawn.
        assert!(sim
            .run_until(60 * SEC, |s| route_hops(s, a, b).is_none())
            .is_some());
        assert_eq!(outcome(&sim, a, in_flight), None, "still trying");
        assert_eq!(
            send_and_wait(&mut sim, a, b, b"during"),
            Err(SendFailure::NoRoute),
            "a new message with no route, seed or address to reach it fails at once"
        );

        // After the heal the link and the routes come back, and the message that was
        // in flight during the cut arrives, once.
        sim.heal();
        sim.run_until(60 * SEC, |s| outcome(s, a, in_flight).is_some());
        assert_eq!(outcome(&sim, a, in_flight), Some(Ok(())));
        assert_eq!(received(&sim, b, sim.node_id(a), b"into the cut").len(), 1);
        assert_eq!(send_and_wait(&mut sim, b, a, b"after"), Ok(()));
    });
}

#[test]
fn a_crash_mid_request_times_out() {
    with_seed("a_crash_mid_request_times_out", 5, |seed| {
        let config = SimConfig {
            net: NetProfile {
                latency: Duration::from_millis(50),
                ..NetProfile::default()
            },
            ..SimConfig::default()
        };
        let mut sim = Sim::new(seed, config);
        let node_config = sim.classical_config();
        let nodes = line(&mut sim, 3, &node_config);
        let (a, c) = (nodes[0], nodes[2]);
        assert!(sim
            .run_until(10 * SEC, |s| route_hops(s, a, c) == Some(2))
            .is_some());
        let id = sim.request(a, c, b"are you there", 3 * SEC).unwrap();
        // The request reaches the relay; the destination dies before answering.
        sim.run_for(Duration::from_millis(60));
        sim.crash(c);
        sim.run_for(5 * SEC);
        let failed: Vec<SendFailure> = sim
            .events(a)
            .iter()
            .filter_map(|r| match &r.event {
                NodeEvent::SendFailed { id: i, reason, .. } if *i == id => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(failed, [SendFailure::Timeout]);
        assert_eq!(sim.count(a, |e| matches!(e, NodeEvent::Response { .. })), 0);
    });
}

/// 200 nodes, each seeding three random others, under 1 % connection resets per
/// second. Messages between random pairs (all in one component) are each delivered
/// exactly once: retransmission covers the resets, dedup the copies.
#[test]
fn two_hundred_nodes_with_resets_deliver_every_message_exactly_once() {
    with_seed(
        "two_hundred_nodes_with_resets_deliver_every_message_exactly_once",
        6,
        |seed| {
            let config = SimConfig {
                net: NetProfile {
                    latency: Duration::from_millis(5),
                    jitter: Duration::from_millis(5),
                    ..NetProfile::default()
                },
                faults: FaultConfig {
                    reset_probability: 0.01,
                    tick: SEC,
                },
                ..SimConfig::default()
            };
            let mut sim = Sim::new(seed, config);
            let mut node_config = sim.classical_config();
            node_config.message_timeout = 30 * SEC;
            node_config.target_peers = 0; // links come from the seeds only
            let n = 200;
            let nodes = sim.add_nodes(n, &node_config);
            let mut rng = sim.rng();
            // A random tree keeps the graph connected; two more random seeds each.
            sim.seed_random_tree(&nodes, 2, &mut rng);
            let converged = sim.run_until(60 * SEC, |s| {
                nodes
                    .iter()
                    .all(|&a| s.node(a).is_some_and(|x| x.routes().count() == n - 1))
            });
            eprintln!("routes converged after {converged:?}");
            assert!(converged.is_some(), "every node routes to every other");

            let mut sent: BTreeMap<MessageId, (NodeIdx, NodeIdx, u32)> = BTreeMap::new();
            for k in 0..1000u32 {
                let a = nodes[(rng.next_u64() % n as u64) as usize];
                let b = nodes[(rng.next_u64() % n as u64) as usize];
                if a == b {
                    continue;
                }
                let id = sim.send(a, b, &k.to_be_bytes()).unwrap();
                // Ids are per node: key by (sender, id) through the payload instead.
                sent.insert(MessageId(u64::from(k)), (a, b, id.0 as u32));
                sim.run_for(Duration::from_millis(20));
            }
            sim.run_for(40 * SEC);
            let stats = sim.stats();
            let (mut relayed, mut dups) = (0, 0);
            for &x in &nodes {
                let s = sim.node(x).unwrap().stats();
                relayed += s.relayed;
                dups += s.duplicates;
            }
            eprintln!(
                "sent {}, resets {}, relayed {relayed}, duplicates dropped {dups}",
                sent.len(),
                stats.resets
            );
            assert!(stats.resets >= 50, "resets happened: {}", stats.resets);
            for (k, (a, b, id)) in &sent {
                let data = (k.0 as u32).to_be_bytes();
                let got = received(&sim, *b, sim.node_id(*a), &data);
                assert_eq!(
                    got.len(),
                    1,
                    "message {} {a} -> {b} arrived {} times",
                    k.0,
                    got.len()
                );
                assert_eq!(
                    outcome(&sim, *a, MessageId(u64::from(*id))),
                    Some(Ok(())),
                    "message {} {a} -> {b} confirmed",
                    k.0
                );
            }
        },
    );
}
