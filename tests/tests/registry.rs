//! The service registry across a large simulated cluster: an update reaches every node
//! within a bound, a node that missed it repairs through anti-entropy, and a failed
//! node's services disappear everywhere.

use std::time::Duration;

use weft_mesh::registry::ServiceName;
use weft_mesh_tests::sim::{with_seed, NodeIdx, Sim, SimConfig};

const SEC: Duration = Duration::from_secs(1);

fn holders(sim: &Sim, nodes: &[NodeIdx], name: &ServiceName, provider: NodeIdx) -> usize {
    let id = sim.node_id(provider);
    nodes
        .iter()
        .filter(|&&n| {
            sim.node(n)
                .is_some_and(|x| x.services().providers(name).any(|p| p == id))
        })
        .count()
}

/// N = 1000 (membership off: this measures the registry's own dissemination; the
/// membership tests cover failure detection). Links come from a random tree plus two
/// random seeds per node, 5 +- 2 ms each (the simulator's default). An update floods the
/// link graph, one hop per link latency, so it reaches everyone in about diameter x 7 ms
/// (measured: 33 ms). The asserted bound, 1 s, leaves room for a diameter of 140.
#[test]
fn an_update_reaches_all_of_a_thousand_nodes_and_a_node_that_missed_it_repairs() {
    with_seed(
        "an_update_reaches_all_of_a_thousand_nodes_and_a_node_that_missed_it_repairs",
        11,
        |seed| {
            let mut sim = Sim::new(seed, SimConfig::default());
            let mut config = sim.classical_config();
            config.membership = None;
            config.target_peers = 0;
            let n = 1000;
            let nodes = sim.add_nodes(n, &config);
            let mut rng = sim.rng();
            sim.seed_random_tree(&nodes, 2, &mut rng);
            let linked = sim.run_until(60 * SEC, |s| nodes.iter().all(|&a| s.peer_count(a) > 0));
            assert!(linked.is_some(), "every node linked");
            sim.run_for(2 * SEC);

            let name = ServiceName::new("db").unwrap();
            let provider = nodes[0];
            assert!(sim.advertise(provider, "db"));
            let took = sim.run_until(10 * SEC, |s| holders(s, &nodes, &name, provider) == n);
            eprintln!("1000 nodes hold the update after {took:?}");
            let took = took.expect("every node holds the update");
            assert!(took <= SEC, "within the bound: {took:?}");

            // A node that was down while the next update spread catches up from a peer
            // (the digest exchange on its first link, then one every exchange interval).
            let late = nodes[n - 1];
            sim.crash(late);
            let kv = ServiceName::new("kv").unwrap();
            assert!(sim.advertise(nodes[1], "kv"));
            sim.run_for(2 * SEC);
            assert_eq!(
                holders(&sim, &nodes, &kv, nodes[1]),
                n - 1,
                "all but the crashed node"
            );
            sim.restart(late);
            let repaired = sim.run_until(config.exchange_interval + 10 * SEC, |s| {
                holders(s, &[late], &kv, nodes[1]) == 1 && holders(s, &[late], &name, provider) == 1
            });
            eprintln!("the restarted node repaired after {repaired:?}");
            assert!(
                repaired.is_some(),
                "the node that missed the updates repaired"
            );
        },
    );
}

/// With membership on (50 nodes): a provider that crashes is declared down by every
/// member, and its service disappears from every registry with it.
#[test]
fn a_failed_providers_services_disappear_everywhere() {
    with_seed(
        "a_failed_providers_services_disappear_everywhere",
        12,
        |seed| {
            let mut sim = Sim::new(seed, SimConfig::default());
            let mut config = sim.classical_config();
            config.target_peers = 0;
            let n = 50;
            let nodes = sim.add_nodes(n, &config);
            let mut rng = sim.rng();
            for i in 1..n {
                let parent = (rng.next_u64() % i as u64) as usize;
                sim.seed(nodes[i], nodes[parent]);
                let j = (rng.next_u64() % n as u64) as usize;
                if j != i {
                    sim.seed(nodes[i], nodes[j]);
                }
            }
            let name = ServiceName::new("db").unwrap();
            let provider = nodes[7];
            sim.run_for(5 * SEC);
            assert!(sim.advertise(provider, "db"));
            let everywhere = sim.run_until(10 * SEC, |s| holders(s, &nodes, &name, provider) == n);
            assert!(everywhere.is_some(), "every node holds the service");
            sim.crash(provider);
            let live: Vec<NodeIdx> = nodes.iter().copied().filter(|&x| x != provider).collect();
            // SWIM (LAN): suspected within a few rounds, down after at most the longest
            // suspicion timeout (about 31 s at this size); the service goes with it.
            let gone = sim.run_until(60 * SEC, |s| holders(s, &live, &name, provider) == 0);
            eprintln!("the failed provider's service was gone everywhere after {gone:?}");
            assert!(gone.is_some(), "no live node lists the failed provider");
            let service_downs = live
            .iter()
            .filter(|&&x| {
                sim.count(x, |e| {
                    matches!(e, weft_mesh::node::NodeEvent::ServiceDown { name, .. } if name == "db")
                }) == 1
            })
            .count();
            assert_eq!(
                service_downs,
                n - 1,
                "each live node reported the service down once"
            );
        },
    );
}
