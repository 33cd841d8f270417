//! `weft-mesh demo`: a small cluster on loopback, narrated.

use std::time::{Duration, Instant};

use bytes::Bytes;
use weft_mesh::membership::SwimConfig;
use weft_mesh::sync::chain::MemoryChain;
use weft_mesh::sync::merkle::MemoryStore;
use weft_mesh::NodeId;
use weft_mesh_tokio::{Events, Mesh, MeshEvent, Target};

const WAIT: Duration = Duration::from_secs(10);

struct DemoNode {
    name: String,
    mesh: Mesh,
    events: Events,
}

/// Wait for the next event `pick` accepts.
async fn until<T>(
    events: &mut Events,
    mut pick: impl FnMut(&MeshEvent) -> Option<T>,
) -> Result<T, String> {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(&e) {
                return Ok(t);
            }
        }
        Err("the mesh stopped".to_owned())
    })
    .await
    .map_err(|_| "timed out waiting for the cluster".to_owned())?
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub async fn run(n: usize) -> Result<(), String> {
    println!("weft-mesh demo: {n} nodes on loopback, each with its own Ed25519 identity\n");
    let mut hub_builder = Mesh::builder()
        .listen("tcp://127.0.0.1:0")
        .listen("ws://127.0.0.1:0/mesh");
    let hub_events = hub_builder.subscribe();
    let hub = hub_builder.start().await.map_err(|e| e.to_string())?;
    let (tcp, ws) = (
        hub.local_addrs()[0].to_string(),
        hub.local_addrs()[1].to_string(),
    );
    let mut nodes = vec![DemoNode {
        name: "n0".into(),
        mesh: hub,
        events: hub_events,
    }];
    println!(
        "  n0 {}  listens on {tcp} and {ws}",
        nodes[0].mesh.node_id().short()
    );

    let mut joins = Vec::new();
    for i in 1..n {
        let via = if i % 2 == 1 { &tcp } else { &ws };
        let started = Instant::now();
        let mut builder = Mesh::builder().seed(via.clone());
        let mut events = builder.subscribe();
        let mesh = builder.start().await.map_err(|e| e.to_string())?;
        let hybrid = until(&mut events, |e| match e {
            MeshEvent::PeerUp { hybrid, .. } => Some(*hybrid),
            _ => None,
        })
        .await?;
        joins.push((
            i,
            via.split("://").next().unwrap_or("?").to_owned(),
            started.elapsed(),
            hybrid,
        ));
        println!("  n{i} {}  dials n0 over {via}", mesh.node_id().short());
        nodes.push(DemoNode {
            name: format!("n{i}"),
            mesh,
            events,
        });
    }
    for _ in 1..n {
        until(&mut nodes[0].events, |e| {
            matches!(e, MeshEvent::PeerUp { .. }).then_some(())
        })
        .await?;
    }

    println!("\nHandshakes (Noise XX; hybrid = X25519 + ML-KEM-768, keys mixed with HKDF-SHA256):");
    for (i, transport, took, hybrid) in &joins {
        let kind = if *hybrid {
            "hybrid post-quantum"
        } else {
            "classical"
        };
        println!(
            "  n{i} <-> n0  over {transport:<3}  {kind}, authenticated {} after the node started",
            ms(*took)
        );
    }

    println!("\nMessages (each send returns when the receiver acknowledged it):");
    let hub_id = nodes[0].mesh.node_id();
    for i in 1..n {
        let text = format!("hello from n{i}");
        let t = Instant::now();
        nodes[i]
            .mesh
            .send(hub_id, Target::Node, Bytes::from(text.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let rtt = t.elapsed();
        let (from, data) = until(&mut nodes[0].events, |e| match e {
            MeshEvent::Message { from, data, .. } => Some((*from, data.clone())),
            _ => None,
        })
        .await?;
        let from = name_of(&nodes, from);
        println!("  n{i} -> n0  {text:?}  delivered and acknowledged in {}  (n0 saw it from {from}: {:?})", ms(rtt), String::from_utf8_lossy(&data));
        let reply = format!("welcome, n{i}");
        nodes[0]
            .mesh
            .send(
                nodes[i].mesh.node_id(),
                Target::Node,
                Bytes::from(reply.clone()),
            )
            .await
            .map_err(|e| e.to_string())?;
        until(&mut nodes[i].events, |e| {
            matches!(e, MeshEvent::Message { .. }).then_some(())
        })
        .await?;
        println!("  n0 -> n{i}  {reply:?}");
    }

    let samples = 200;
    let mut rtts = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        nodes[1]
            .mesh
            .send(hub_id, Target::Node, Bytes::from_static(&[0u8; 64]))
            .await
            .map_err(|e| e.to_string())?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    println!(
        "\nRound trips, n1 -> n0 -> n1 (64-byte message + acknowledgement, {samples} samples): p50 {}, p99 {}",
        ms(rtts[samples / 2]),
        ms(rtts[samples * 99 / 100])
    );

    let leaver = nodes.pop().ok_or("no nodes")?;
    let leaver_id = leaver.mesh.node_id();
    leaver.mesh.shutdown().await;
    let reason = until(&mut nodes[0].events, |e| match e {
        MeshEvent::PeerDown { node, reason } if *node == leaver_id => Some(*reason),
        _ => None,
    })
    .await?;
    println!("\n{} shuts down: n0 sees it leave ({reason}).", leaver.name);
    for node in nodes.iter().rev() {
        node.mesh.shutdown().await;
    }
    relay().await?;
    membership().await?;
    replication().await?;
    println!("\nAll nodes stopped.");
    Ok(())
}

/// Three more nodes in a line, `a - b - c` (`b` dials `a`, `c` dials `b`, and none
/// dials the nodes it hears of): `a` reaches `c` only through `b`.
async fn relay() -> Result<(), String> {
    println!("\nRelaying: a line a - b - c, where a and c have no link to each other:");
    let line = |b: weft_mesh_tokio::MeshBuilder<weft_mesh_tokio::Tokio>| {
        b.listen("tcp://127.0.0.1:0")
            .configure(|c| c.target_peers = 0)
    };
    let mut ab = line(Mesh::builder());
    let mut a_events = ab.subscribe();
    let a = ab.start().await.map_err(|e| e.to_string())?;
    let mut bb = line(Mesh::builder()).seed(a.local_addrs()[0].to_string());
    let mut b_events = bb.subscribe();
    let b = bb.start().await.map_err(|e| e.to_string())?;
    let mut cb = line(Mesh::builder()).seed(b.local_addrs()[0].to_string());
    let mut c_events = cb.subscribe();
    let c = cb.start().await.map_err(|e| e.to_string())?;
    let names = [(a.node_id(), "a"), (b.node_id(), "b"), (c.node_id(), "c")];
    let name = |id: NodeId| {
        names
            .iter()
            .find(|(n, _)| *n == id)
            .map_or_else(|| id.short().to_string(), |(_, s)| (*s).to_owned())
    };
    for (who, id) in [("a", a.node_id()), ("b", b.node_id()), ("c", c.node_id())] {
        println!("  {who} {}", id.short());
    }
    let up = |e: &MeshEvent| matches!(e, MeshEvent::PeerUp { .. }).then_some(());
    until(&mut a_events, up).await?;
    until(&mut b_events, up).await?;
    until(&mut b_events, up).await?;
    until(&mut c_events, up).await?;

    // Routes travel as distance vectors: a learns of c from b's advertisement, and c
    // of a (the way back for receipts and responses).
    let started = Instant::now();
    let mut route = None;
    for (from, to) in [(&a, c.node_id()), (&c, a.node_id())] {
        loop {
            let routes = from.routes().await.map_err(|e| e.to_string())?;
            if let Some(r) = routes.into_iter().find(|r| r.node == to) {
                route = route.or(Some(r));
                break;
            }
            if started.elapsed() > WAIT {
                return Err("a and c never learned their routes".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let route = route.ok_or("no route")?;
    println!(
        "  a's route to c: via {}, {} hops (routes both ways {} after the line was up)",
        name(route.next_hop),
        route.hops,
        ms(started.elapsed())
    );

    let t = Instant::now();
    a.send(
        c.node_id(),
        Target::Node,
        Bytes::from_static(b"hello c, from a"),
    )
    .await
    .map_err(|e| e.to_string())?;
    let rtt = t.elapsed();
    let (from, data, hops) = until(&mut c_events, |e| match e {
        MeshEvent::Message {
            from, data, hops, ..
        } => Some((*from, data.clone(), *hops)),
        _ => None,
    })
    .await?;
    println!(
        "  a -> c  {:?}  arrived from {} after {hops} hops (signed by a, relayed by b), \
         receipt back at a in {}",
        String::from_utf8_lossy(&data),
        name(from),
        ms(rtt)
    );

    // c's application answers requests to its "clock" service.
    let responder = tokio::spawn(async move {
        while let Some(e) = c_events.next().await {
            if let MeshEvent::Request {
                target: Target::Service(s),
                hops,
                responder,
                ..
            } = e
            {
                if s == "clock" {
                    let answer = format!("c's clock service, {hops} hops from you");
                    let _ = responder.respond(answer).await;
                }
            }
        }
    });
    let t = Instant::now();
    let reply = a
        .request(
            c.node_id(),
            Target::Service("clock".into()),
            Bytes::from_static(b"what time is it?"),
            WAIT,
        )
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "  a -> c  request to service \"clock\", response {:?} in {}",
        String::from_utf8_lossy(&reply),
        ms(t.elapsed())
    );
    let stats = b.stats().await.map_err(|e| e.to_string())?;
    println!(
        "  b relayed {} envelopes (the message, the request and their answers)",
        stats.relayed
    );
    let nobody = NodeId::from_bytes([0x42; 32]);
    match a.send(nobody, Target::Node, Bytes::new()).await {
        Err(e) => println!("  a -> {}  fails at once: {e}", nobody.short()),
        Ok(()) => return Err("a message to nobody was delivered".into()),
    }
    responder.abort();
    for mesh in [c, b, a] {
        mesh.shutdown().await;
    }
    Ok(())
}

/// The demo's failure detector: SWIM with Lifeguard, probing every 200 ms (the LAN
/// preset probes every second) and with the suspicion floor shortened alike (the LAN
/// preset's is 4 s), so that the demo does not keep you waiting.
fn quick_swim() -> SwimConfig {
    SwimConfig {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        suspicion_min_timeout: Duration::from_millis(800),
        ..SwimConfig::lan()
    }
}

/// A cluster of four: services spread to every member and resolve to their provider;
/// then one member crashes (its runtime is dropped: no goodbye) and the others detect it.
async fn membership() -> Result<(), String> {
    println!("\nMembership: four nodes, p0 .. p3, all joined through p0; failure detection is");
    println!("SWIM with Lifeguard, here probing every 200 ms:");
    let builder = || Mesh::builder().configure(|c| c.membership = Some(quick_swim()));
    let mut p0b = builder().listen("tcp://127.0.0.1:0");
    let mut p0_events = p0b.subscribe();
    let p0 = p0b.start().await.map_err(|e| e.to_string())?;
    let seed = p0.local_addrs()[0].to_string();
    let mut p1b = builder().seed(seed.clone());
    let p1_events = p1b.subscribe();
    let p1 = p1b.start().await.map_err(|e| e.to_string())?;
    let mut p3b = builder().seed(seed.clone());
    let mut p3_events = p3b.subscribe();
    let p3 = p3b.start().await.map_err(|e| e.to_string())?;

    // p2 runs on a runtime of its own, so that dropping it kills p2 like a crash.
    let (p2_id, crash) = {
        let (tx, rx) = std::sync::mpsc::channel();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let seed = seed.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Runtime::new() else {
                return;
            };
            rt.block_on(async move {
                let started = builder().seed(seed).start().await;
                let Ok(p2) = started else { return };
                let _ = tx.send(p2.node_id());
                let _ = killed.await;
                std::mem::forget(p2); // no shutdown, no leave
            });
            rt.shutdown_background(); // sockets close with the tasks
        });
        let id = rx
            .recv_timeout(WAIT)
            .map_err(|_| "p2 did not start".to_owned())?;
        (id, kill)
    };
    let ids = [p0.node_id(), p1.node_id(), p2_id, p3.node_id()];
    let name = move |id: &NodeId| {
        ids.iter()
            .position(|n| n == id)
            .map_or_else(|| id.short().to_string(), |i| format!("p{i}"))
    };
    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let node = until(&mut p3_events, |e| match e {
            MeshEvent::MemberUp { node, .. } => Some(*node),
            _ => None,
        })
        .await?;
        seen.insert(node);
    }
    println!(
        "  p3 knows every member {} after it started (p3 is linked to p0 only; members it",
        ms(started.elapsed())
    );
    println!("  has no link to are probed through the mesh)");

    p1.advertise("kv", Bytes::from_static(b"version=1"))
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (node, service) = until(&mut p3_events, |e| match e {
        MeshEvent::ServiceUp { node, name } => Some((*node, name.clone())),
        _ => None,
    })
    .await?;
    println!(
        "  p1 advertises service {service:?}: p3 learns it is at {} {} later (gossip)",
        name(&node),
        ms(t.elapsed())
    );
    let provider = p3.resolve("kv").await.map_err(|e| e.to_string())?;
    let answering = tokio::spawn(answer_kv(p1_events));
    let reply = p3
        .request(
            provider,
            Target::Service("kv".into()),
            Bytes::from_static(b"get greeting"),
            WAIT,
        )
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "  p3 resolves \"kv\" to {} and asks it: {:?}",
        name(&provider),
        String::from_utf8_lossy(&reply)
    );
    match p3.resolve("nonexistent").await {
        Err(e) => println!("  p3 resolves \"nonexistent\": {e} (asked its peers; cached for 30 s)"),
        Ok(n) => return Err(format!("nonexistent resolved to {}", name(&n))),
    }

    let _ = crash.send(());
    let t = Instant::now();
    let mut suspected = None;
    let down = until(&mut p0_events, |e| match e {
        MeshEvent::MemberSuspect { node } if *node == p2_id => {
            suspected.get_or_insert(t.elapsed());
            None
        }
        MeshEvent::MemberDown { node } if *node == p2_id => Some(t.elapsed()),
        _ => None,
    })
    .await?;
    println!("  p2 crashes (no goodbye):");
    if let Some(s) = suspected {
        println!(
            "    p0 suspects p2 after {} (missed probes, then indirect probes through others)",
            ms(s)
        );
    }
    println!(
        "    p0 declares p2 failed after {} (the suspicion was not refuted)",
        ms(down)
    );
    let members = p3.members().await.map_err(|e| e.to_string())?;
    let states: Vec<String> = members
        .iter()
        .map(|m| format!("{} {:?}", name(&m.node), m.state))
        .collect();
    println!("    p3's view now: {}", states.join(", "));
    p1.shutdown().await;
    let left = until(&mut p0_events, |e| match e {
        MeshEvent::MemberLeft { node } => Some(*node),
        _ => None,
    })
    .await?;
    let gone = until(&mut p0_events, |e| match e {
        MeshEvent::ServiceDown { name, .. } => Some(name.clone()),
        _ => None,
    })
    .await?;
    println!(
        "  {} shuts down: p0 sees it leave (not fail), and its service {gone:?} goes with it",
        name(&left)
    );
    answering.abort();
    p3.shutdown().await;
    p0.shutdown().await;
    Ok(())
}

/// p1's application: answer requests to its "kv" service.
async fn answer_kv(mut events: Events) {
    while let Some(e) = events.next().await {
        if let MeshEvent::Request {
            target: Target::Service(s),
            responder,
            ..
        } = e
        {
            if s == "kv" {
                let _ = responder
                    .respond(Bytes::from_static(b"greeting = hello"))
                    .await;
            }
        }
    }
}

fn name_of(nodes: &[DemoNode], id: NodeId) -> String {
    nodes
        .iter()
        .find(|n| n.mesh.node_id() == id)
        .map_or_else(|| id.short().to_string(), |n| n.name.clone())
}

/// Payments in the replication demo's ledger.
const PAYMENTS: u64 = 2000;
/// Accounts whose balances the replication demo's tree holds.
const ACCOUNTS: u64 = 20_000;
/// The entry of the late node's balance snapshot.
const SNAPSHOT: u64 = 1990;

/// Payment `i` (from 1) of the demo ledger: who pays whom how much.
fn payment(i: u64) -> (u64, u64, u64) {
    (
        i * 7919 % ACCOUNTS,
        (i * 104_729 + 1) % ACCOUNTS,
        1 + i % 50,
    )
}

/// The ledger's first `n` payments, as chain entries.
fn ledger(n: u64) -> Result<MemoryChain, String> {
    MemoryChain::from_payloads((1..=n).map(|i| {
        let (from, to, amount) = payment(i);
        format!("payment {i}: account {from:05} pays account {to:05} {amount} coins").into_bytes()
    }))
    .map_err(|e| e.to_string())
}

/// Every account's balance after the first `n` payments (each starts with 1000), and
/// the bytes of keys and values.
fn balances(n: u64) -> (MemoryStore, usize) {
    let mut balance = vec![1000i64; ACCOUNTS as usize];
    for i in 1..=n {
        let (from, to, amount) = payment(i);
        balance[from as usize] -= amount as i64;
        balance[to as usize] += amount as i64;
    }
    let store: MemoryStore = (balance.iter().enumerate())
        .map(|(a, b)| {
            (
                format!("account/{a:05}").into_bytes(),
                b.to_string().into_bytes(),
            )
        })
        .collect();
    let bytes = store.map().iter().map(|(k, v)| k.len() + v.len()).sum();
    (store, bytes)
}

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1e3)
}

/// Chain and tree sync: a late node catches up a ledger and has its balances repaired,
/// keeps up with a new payment, and a node with another history is told of the fork.
async fn replication() -> Result<(), String> {
    println!("\nReplication: nodes keep a shared log (a chain, each entry linked to the one");
    println!("before by its hash) and a key/value tree (a Merkle tree: every subtree has a hash).");
    let full = ledger(PAYMENTS)?;
    let payload: usize = full.entries().iter().map(|e| e.payload().len()).sum();
    let (tree, tree_bytes) = balances(PAYMENTS);
    let mut r0b = Mesh::builder()
        .listen("tcp://127.0.0.1:0")
        .chain_store(full.clone())
        .tree_store(tree.clone(), PAYMENTS);
    let mut r0_events = r0b.subscribe();
    let r0 = r0b.start().await.map_err(|e| e.to_string())?;
    let seed = r0.local_addrs()[0].to_string();
    let r1 = Mesh::builder()
        .seed(seed.clone())
        .chain_store(full)
        .tree_store(tree, PAYMENTS)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    until(&mut r0_events, |e| {
        matches!(e, MeshEvent::PeerUp { .. }).then_some(())
    })
    .await?;
    println!(
        "  r0 and r1 hold a ledger of {PAYMENTS} payments ({} of entries) and the {ACCOUNTS} accounts'",
        kb(payload as u64)
    );
    println!(
        "  balances after them ({} of keys and values; tree version {PAYMENTS}: the entry it reflects).",
        kb(tree_bytes as u64)
    );

    let (snapshot, _) = balances(SNAPSHOT);
    let (now, _) = balances(PAYMENTS);
    let stale = (snapshot.map().iter())
        .filter(|(k, v)| now.map().get(*k) != Some(*v))
        .count();
    println!(
        "  r2 joins late, restored from a balance snapshot taken at payment {SNAPSHOT} (so {stale}"
    );
    println!("  balances are out of date) and with an empty ledger:");
    let mut r2b = Mesh::builder()
        .chain_store(MemoryChain::new())
        .tree_store(snapshot, SNAPSHOT);
    let mut r2_events = r2b.subscribe();
    let r2 = r2b.start().await.map_err(|e| e.to_string())?;
    // Timed from the dial (`start` built r2's tree over its snapshot).
    let started = Instant::now();
    r2.connect(&seed).await.map_err(|e| e.to_string())?;
    let names = [
        (r0.node_id(), "r0"),
        (r1.node_id(), "r1"),
        (r2.node_id(), "r2"),
    ];
    let name = |id: &NodeId| {
        names
            .iter()
            .find(|(n, _)| n == id)
            .map_or_else(|| id.short().to_string(), |(_, s)| (*s).to_owned())
    };
    let (mut batches, mut chain, mut repaired) = (0, None, None);
    while chain.is_none() || repaired.is_none() {
        let event = until(&mut r2_events, |e| Some(e.clone())).await?;
        match event {
            MeshEvent::ChainProgress { .. } => batches += 1,
            MeshEvent::ChainSynced {
                peer,
                head,
                appended,
            } if head.seq == PAYMENTS => {
                chain = Some((peer, appended, started.elapsed()));
            }
            MeshEvent::TreeSynced {
                peer,
                bytes_received,
                leaves,
                ..
            } => repaired = Some((peer, bytes_received, leaves, started.elapsed())),
            MeshEvent::ChainForked { .. } | MeshEvent::ChainFailed { .. } => {
                return Err(format!("r2's catch-up went wrong: {event:?}"));
            }
            _ => {}
        }
    }
    if let (Some((peer, appended, took)), Some((tpeer, bytes, leaves, tat))) = (chain, repaired) {
        println!(
            "    ledger: {appended} entries pulled from {} in {batches} batches, {} after r2",
            name(&peer),
            ms(took)
        );
        println!(
            "            dialed r0 (handshake included: {:.0} entries/s), each entry checked",
            appended as f64 / took.as_secs_f64().max(1e-6)
        );
        println!("            against the hash of the one before");
        println!(
            "    tree:   repaired from {} {} after r2 dialed: comparing subtree hashes",
            name(&tpeer),
            ms(tat)
        );
        println!(
            "            from the root down, it fetched {leaves} balances, {} in all",
            kb(bytes)
        );
        println!(
            "            ({:.1} % of the {} the tree holds)",
            bytes as f64 * 100.0 / tree_bytes as f64,
            kb(tree_bytes as u64)
        );
    }
    let (ours, theirs) = (
        r2.tree_state().await.map_err(|e| e.to_string())?,
        r0.tree_state().await.map_err(|e| e.to_string())?,
    );
    if ours.is_none() || ours != theirs {
        return Err("r2's tree does not match r0's".into());
    }
    println!(
        "    r2's tree root now equals r0's: the same {ACCOUNTS} balances, version {PAYMENTS}"
    );

    // A new payment: the ledger grows by one entry and two balances change, written to
    // the tree in one batch whose version is the payment's number.
    let t = Instant::now();
    let head = r0
        .append_chain(&b"payment 2001: account 00042 pays account 00007 5 coins"[..])
        .await
        .map_err(|e| e.to_string())?;
    let balance = |key: &str| {
        let r0 = r0.clone();
        let key = key.to_string();
        async move {
            let value = r0.tree_get(key).await.map_err(|e| e.to_string())?;
            let value = value.ok_or("a balance is missing")?;
            std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| String::from("a balance is not a number"))
        }
    };
    let (payer, payee) = (
        balance("account/00042").await?,
        balance("account/00007").await?,
    );
    let writes = vec![
        (
            Bytes::from_static(b"account/00042"),
            Some(Bytes::from((payer - 5).to_string())),
        ),
        (
            Bytes::from_static(b"account/00007"),
            Some(Bytes::from((payee + 5).to_string())),
        ),
    ];
    r0.write_tree(writes, Some(head.seq))
        .await
        .map_err(|e| e.to_string())?;
    let (mut chain_at, mut tree_at) = (None, None);
    until(&mut r2_events, |e| {
        match e {
            MeshEvent::ChainSynced { head: h, .. } if *h == head => chain_at = Some(t.elapsed()),
            MeshEvent::TreeSynced { state, leaves, .. } if state.version == head.seq => {
                tree_at = Some((t.elapsed(), *leaves))
            }
            _ => {}
        }
        (chain_at.is_some() && tree_at.is_some()).then_some(())
    })
    .await?;
    let (tree_ms, leaves) = tree_at.unwrap_or_default();
    println!(
        "  r0 records payment {}: a ledger entry, and the two balances in one tree write",
        head.seq
    );
    println!(
        "  (version {}). r2 has the entry {} later and the {leaves} new balances {} later",
        head.seq,
        ms(chain_at.unwrap_or_default()),
        ms(tree_ms)
    );
    println!(
        "  (a change is announced 50 ms after it, so a burst of writes costs one announcement)"
    );

    // r3 kept its own history after payment 1500.
    let mut other = ledger(1500)?;
    for i in 0..40 {
        other
            .push(format!("payment {}: recorded only by r3", 1501 + i).into_bytes())
            .map_err(|e| e.to_string())?;
    }
    let mut r3b = Mesh::builder().seed(seed).chain_store(other);
    let mut r0_forks = r0.subscribe();
    let mut r3_events = r3b.subscribe();
    let r3 = r3b.start().await.map_err(|e| e.to_string())?;
    let (peer, fork) = until(&mut r3_events, |e| match e {
        MeshEvent::ChainForked { peer, fork } => Some((*peer, fork.clone())),
        _ => None,
    })
    .await?;
    println!(
        "  r3 joins with a ledger of 1540 payments, the last 40 recorded only by r3: it finds"
    );
    println!(
        "  that its entry {} and {}'s differ: a fork (both entries are kept as evidence,",
        fork.seq(),
        name(&peer)
    );
    println!(
        "  which anyone can check{}); it pulls nothing more from {} and leaves the decision",
        if fork.is_valid() {
            ""
        } else {
            " (this one does not hold!)"
        },
        name(&peer)
    );
    println!("  to its application.");
    until(&mut r0_forks, |e| {
        matches!(e, MeshEvent::ChainForked { fork, .. } if fork.is_valid()).then_some(())
    })
    .await?;
    println!("  r0, whose ledger is longer, learns of the fork too: r3 told it its head, which");
    println!("  r0 finds is not on its own ledger, and r0 fetches that entry as its evidence");
    for mesh in [r3, r2, r1, r0] {
        mesh.shutdown().await;
    }
    Ok(())
}
