//! `weft-mesh demo`: a small cluster on loopback, narrated.

use std::time::{Duration, Instant};

use bytes::Bytes;
use weft_mesh::NodeId;
use weft_mesh_tokio::{Events, Mesh, MeshEvent};

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
            .send(hub_id, Bytes::from(text.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let rtt = t.elapsed();
        let (from, data) = until(&mut nodes[0].events, |e| match e {
            MeshEvent::Message { from, data } => Some((*from, data.clone())),
            _ => None,
        })
        .await?;
        let from = name_of(&nodes, from);
        println!("  n{i} -> n0  {text:?}  delivered and acknowledged in {}  (n0 saw it from {from}: {:?})", ms(rtt), String::from_utf8_lossy(&data));
        let reply = format!("welcome, n{i}");
        nodes[0]
            .mesh
            .send(nodes[i].mesh.node_id(), Bytes::from(reply.clone()))
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
            .send(hub_id, Bytes::from_static(&[0u8; 64]))
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
    println!("All nodes stopped.");
    Ok(())
}

fn name_of(nodes: &[DemoNode], id: NodeId) -> String {
    nodes
        .iter()
        .find(|n| n.mesh.node_id() == id)
        .map_or_else(|| id.short().to_string(), |n| n.name.clone())
}
