//! Loopback benchmark of replication through the tokio driver.
//!
//! ```text
//! cargo bench -p weft-mesh-tokio --bench sync        # full run (a few seconds once built)
//! cargo test -p weft-mesh-tokio --benches            # quick run: tiny counts, figures meaningless
//! ```
//!
//! Quick mode is chosen as in the `mesh` bench: `WEFT_BENCH_QUICK` set (to anything but
//! `0`), or the binary started without `--bench`.
//!
//! Figures (one multi-thread tokio runtime with 2 workers; the driving task runs on it):
//! 1. Chain catch-up: a node holding `ENTRIES` entries of 100 B and of 1 KiB listens; a
//!    node with an empty chain dials it; timed from the dial (hybrid handshake included)
//!    to its `ChainSynced` at the source's head. Median of `ROUNDS` runs, each with a
//!    fresh late node.
//! 2. Tree reconciliation: a node holding `KEYS` keys at version 2 listens; a node whose
//!    tree (version 1) differs from it in d values dials it (d = 1, 10, 100, 1000, and an
//!    empty replica for the whole tree); the TreeSync bytes and leaves it received (from
//!    its `TreeSynced`) and the time from the dial.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_mesh_tokio::weft_mesh::sync::chain::{ChainHead, ChainStore, MemoryChain};
use weft_mesh_tokio::weft_mesh::sync::merkle::MemoryStore;
use weft_mesh_tokio::{Events, Mesh, MeshEvent};

/// Longest wait for anything (a hang becomes a panic with a reason, not a stuck run).
const WAIT: Duration = Duration::from_secs(60);

struct Plan {
    quick: bool,
    entries: u64,
    keys: u32,
    rounds: usize,
}

impl Plan {
    fn detect() -> Plan {
        let env_quick = std::env::var_os("WEFT_BENCH_QUICK").is_some_and(|v| v != "0");
        let under_bench = std::env::args().any(|a| a == "--bench");
        if env_quick || !under_bench {
            Plan {
                quick: true,
                entries: 500,
                keys: 2000,
                rounds: 1,
            }
        } else {
            Plan {
                quick: false,
                entries: 20_000,
                keys: 100_000,
                rounds: 3,
            }
        }
    }
}

/// The first event `pick` accepts, within [`WAIT`].
async fn until<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&MeshEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(&e) {
                return Some(t);
            }
        }
        None
    })
    .await;
    found
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no {what} within {WAIT:?}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One late node catching up `source`'s chain up to `target`: the time from its dial.
async fn catch_up_once(seed: &str, target: ChainHead) -> Duration {
    let mut builder = Mesh::builder().chain_store(MemoryChain::new());
    let mut events = builder.subscribe();
    let late = builder.start().await.expect("start");
    let started = Instant::now();
    late.connect(seed).await.expect("connect");
    until(&mut events, "chain synced", |e| {
        matches!(e, MeshEvent::ChainSynced { head, .. } if *head == target).then_some(())
    })
    .await;
    let took = started.elapsed();
    late.shutdown().await;
    took
}

async fn fig_chain(plan: &Plan) {
    println!(
        "\n== 1. chain catch-up: a late node with an empty chain, {} entries (median of {}) ==",
        plan.entries, plan.rounds
    );
    println!(
        "{:>9} {:>9} {:>10} {:>12} {:>13}",
        "payload", "entries", "time ms", "entries/s", "payload MB/s"
    );
    for size in [100usize, 1024] {
        let chain = MemoryChain::from_payloads((0..plan.entries).map(|i| {
            let mut p = vec![(i % 251) as u8; size];
            p[..8].copy_from_slice(&i.to_be_bytes());
            p
        }))
        .expect("chain");
        let target = chain.head();
        let source = Mesh::builder()
            .listen("tcp://127.0.0.1:0")
            .chain_store(chain)
            .start()
            .await
            .expect("start");
        let seed = source.local_addrs()[0].to_string();
        let mut times = Vec::new();
        for _ in 0..plan.rounds {
            times.push(catch_up_once(&seed, target).await);
        }
        let t = median(times);
        let rate = plan.entries as f64 / t.as_secs_f64();
        println!(
            "{:>9} {:>9} {:>10.1} {:>12.0} {:>13.1}",
            if size == 1024 {
                "1 KiB".to_owned()
            } else {
                format!("{size} B")
            },
            plan.entries,
            t.as_secs_f64() * 1e3,
            rate,
            rate * size as f64 / 1e6
        );
        source.shutdown().await;
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key {i:06}").into_bytes()
}

async fn fig_tree(plan: &Plan) {
    let n = plan.keys;
    println!(
        "\n== 2. tree reconciliation: {n} keys, a replica at a lower version differing in d values =="
    );
    let full: BTreeMap<Vec<u8>, Vec<u8>> = (0..n)
        .map(|i| (key(i), format!("value {i}").into_bytes()))
        .collect();
    let payload: usize = full.iter().map(|(k, v)| k.len() + v.len()).sum();
    let source = Mesh::builder()
        .listen("tcp://127.0.0.1:0")
        .tree_store(MemoryStore::from(full.clone()), 2)
        .start()
        .await
        .expect("start");
    let seed = source.local_addrs()[0].to_string();
    let want = source.tree_state().await.expect("state").expect("tree");
    println!(
        "   (the tree holds {:.2} MB of keys and values)",
        payload as f64 / 1e6
    );
    println!(
        "{:>20} {:>15} {:>9} {:>13} {:>10}",
        "differing keys", "bytes received", "leaves", "bytes/diff", "time ms"
    );
    let mut cases: Vec<Option<u32>> = [1, 10, 100, 1000]
        .into_iter()
        .filter(|d| *d < n)
        .map(Some)
        .collect();
    cases.push(None); // an empty replica: the whole tree
    for case in cases {
        let replica: MemoryStore = match case {
            Some(d) => {
                let mut map = full.clone();
                for j in 0..d {
                    map.insert(key(j * (n / d)), b"stale".to_vec());
                }
                map.into()
            }
            None => MemoryStore::new(),
        };
        let mut builder = Mesh::builder().tree_store(replica, 1);
        let mut events = builder.subscribe();
        let late = builder.start().await.expect("start");
        let started = Instant::now();
        late.connect(&seed).await.expect("connect");
        let (bytes, leaves) = until(&mut events, "tree synced", |e| match e {
            MeshEvent::TreeSynced {
                state,
                bytes_received,
                leaves,
                ..
            } if *state == want => Some((*bytes_received, *leaves)),
            _ => None,
        })
        .await;
        let took = started.elapsed();
        late.shutdown().await;
        let label = case.map_or_else(|| format!("all ({n}, empty)"), |d| d.to_string());
        let diffs = u64::from(case.unwrap_or(n));
        println!(
            "{label:>20} {bytes:>15} {leaves:>9} {:>13.0} {:>10.1}",
            bytes as f64 / diffs as f64,
            took.as_secs_f64() * 1e3
        );
    }
    source.shutdown().await;
}

async fn bench(plan: Plan) {
    fig_chain(&plan).await;
    fig_tree(&plan).await;
}

fn main() {
    let plan = Plan::detect();
    let started = Instant::now();
    println!(
        "weft-mesh replication loopback benchmark ({} mode), tokio driver, one runtime with 2 workers",
        if plan.quick { "quick" } else { "full" }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Run the whole benchmark on the 2 workers (block_on's own thread would be a third).
    rt.block_on(async { tokio::spawn(bench(plan)).await })
        .expect("benchmark task");
    println!("\nrun time: {:.1} s", started.elapsed().as_secs_f64());
}
