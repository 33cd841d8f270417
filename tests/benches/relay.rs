//! Relayed delivery latency per hop, in the simulator's virtual time.
//!
//! Lines of 2 to 9 nodes (1 to 8 links) on links with a fixed one-way latency; the
//! first node sends a 64-byte message to the last and the bench reads the virtual time
//! from `send` to the destination's `Message` event, and to the sender's `Delivered`
//! (the receipt back). The baseline is the links' own latency: a perfect relay adds
//! nothing, so `weft / links` shows the per-hop cost of the mesh (record framing,
//! serialization at the simulated bandwidth, and the relay's own work, which takes no
//! virtual time). `cargo bench -p weft-mesh-tests --bench relay`; under `cargo test` it
//! runs once, small.

use std::time::Duration;

use weft_mesh::node::NodeEvent;
use weft_mesh_tests::sim::{NetProfile, Sim, SimConfig};

const LATENCY: Duration = Duration::from_millis(10);

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let lengths: Vec<usize> = if quick { vec![1, 2] } else { (1..=8).collect() };
    let trials = if quick { 2 } else { 20 };
    println!("relayed 64 B delivery over a line, one-way link latency {LATENCY:?}, no jitter");
    println!(
        "links | to Message (virtual) | per link | links' own latency | weft/links | receipt back"
    );
    for links in lengths {
        let config = SimConfig {
            net: NetProfile {
                latency: LATENCY,
                jitter: Duration::ZERO,
                ..NetProfile::default()
            },
            ..SimConfig::default()
        };
        let mut sim = Sim::new(links as u64, config);
        let node_config = sim.classical_config();
        let nodes = sim.add_nodes(links + 1, &node_config);
        for w in nodes.windows(2) {
            sim.seed(w[1], w[0]);
        }
        let (a, b) = (nodes[0], nodes[links]);
        let to = sim.node_id(b);
        let ready = sim.run_until(Duration::from_secs(30), |s| {
            s.node(a)
                .is_some_and(|n| links == 1 || n.routes().any(|(d, _)| d == to))
        });
        assert!(ready.is_some(), "route over {links} links");
        sim.run_for(Duration::from_secs(1));
        let (mut there, mut back) = (Vec::new(), Vec::new());
        for _ in 0..trials {
            let before = sim.count(b, |e| matches!(e, NodeEvent::Message { .. }));
            let start = sim.now();
            let id = sim.send(a, b, &[0x5a; 64]).expect("route");
            let t = sim
                .run_until(Duration::from_secs(5), |s| {
                    s.count(b, |e| matches!(e, NodeEvent::Message { .. })) > before
                })
                .expect("delivered");
            there.push(t);
            sim.run_until(Duration::from_secs(5), |s| s.delivered(a, id))
                .expect("receipt");
            back.push(sim.now().saturating_duration_since(start));
            sim.run_for(Duration::from_millis(100));
        }
        there.sort();
        back.sort();
        let (t, r) = (there[there.len() / 2], back[back.len() / 2]);
        let base = LATENCY * links as u32;
        println!(
            "{links:>5} | {:>17.3} ms | {:>5.3} ms | {:>15.3} ms | {:>9.3}x | {:>9.3} ms",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3 / links as f64,
            base.as_secs_f64() * 1e3,
            t.as_secs_f64() / base.as_secs_f64(),
            r.as_secs_f64() * 1e3,
        );
    }
}
