//! Event lines for `weft-mesh node`: human-readable, or one JSON object per line.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use weft_mesh::sync::chain::Fork;
use weft_mesh::NodeId;
use weft_mesh_tokio::{Addr, MeshEvent, Target};

/// Where `node` writes what happens.
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    fn emit(&self, value: Value, human: String) {
        let mut out = std::io::stdout().lock();
        let _ = if self.json {
            writeln!(out, "{value}")
        } else {
            writeln!(out, "{human}")
        };
        let _ = out.flush();
    }

    pub fn started(&self, node: NodeId, created: Option<&Path>) {
        let note = created
            .map(|p| format!(" (new identity written to {})", p.display()))
            .unwrap_or_default();
        self.emit(
            json!({"event": "started", "node": node.to_string()}),
            format!("node {node}{note}"),
        );
    }

    pub fn listening(&self, addr: &Addr) {
        self.emit(
            json!({"event": "listening", "addr": addr.to_string()}),
            format!("listening on {addr}"),
        );
    }

    pub fn stopped(&self) {
        self.emit(json!({"event": "stopped"}), "stopped".into());
    }

    /// One event; `answered`: requests are answered (`--echo`).
    pub fn event(&self, event: &MeshEvent, answered: bool) {
        let (value, human) = match event {
            MeshEvent::PeerUp { node, addr, hybrid } => (
                json!({"event": "peer_up", "node": node.to_string(), "addr": addr, "hybrid": hybrid}),
                format!(
                    "peer up    {} at {} ({})",
                    node.short(),
                    addr.as_deref().unwrap_or("?"),
                    if *hybrid {
                        "hybrid X25519+ML-KEM-768"
                    } else {
                        "classical X25519"
                    }
                ),
            ),
            MeshEvent::PeerDown { node, reason } => (
                json!({"event": "peer_down", "node": node.to_string(), "reason": reason.name()}),
                format!("peer down  {} ({reason})", node.short()),
            ),
            MeshEvent::Message {
                from,
                target,
                data,
                hops,
            } => delivery("message", from, target, data, *hops, None),
            MeshEvent::Request {
                from,
                target,
                data,
                hops,
                ..
            } => delivery("request", from, target, data, *hops, Some(answered)),
            MeshEvent::Rejected { addr, reason } => (
                json!({"event": "rejected", "addr": addr, "reason": reason.name()}),
                format!("rejected   {} ({reason})", addr.as_deref().unwrap_or("?")),
            ),
            MeshEvent::MemberUp { node, addrs } => (
                json!({"event": "member_up", "node": node.to_string(), "addrs": addrs}),
                format!("member up  {} {}", node.short(), addrs.join(" ")),
            ),
            MeshEvent::MemberSuspect { node } => member("suspect", node, "suspected"),
            MeshEvent::MemberAlive { node } => member("alive", node, "alive again"),
            MeshEvent::MemberDown { node } => member("down", node, "declared failed"),
            MeshEvent::MemberLeft { node } => member("left", node, "left"),
            MeshEvent::ServiceUp { node, name } => service("up", node, name),
            MeshEvent::ServiceDown { node, name } => service("down", node, name),
            MeshEvent::ChainProgress { peer, head } => (
                json!({"event": "chain_progress", "peer": peer.to_string(),
                       "seq": head.seq, "hash": hex::encode(head.hash)}),
                format!("chain      at entry {} (pulling from {})", head.seq, peer.short()),
            ),
            MeshEvent::ChainSynced {
                peer,
                head,
                appended,
            } => (
                json!({"event": "chain_synced", "peer": peer.to_string(), "seq": head.seq,
                       "hash": hex::encode(head.hash), "appended": appended}),
                format!(
                    "chain      caught up with {} at entry {} ({appended} new)",
                    peer.short(),
                    head.seq
                ),
            ),
            MeshEvent::ChainForked { peer, fork } => (
                json!({"event": "chain_forked", "peer": peer.to_string(), "seq": fork.seq(),
                       "kind": match fork {
                           Fork::Conflict { .. } => "conflict",
                           _ => "broken_link",
                       }}),
                format!(
                    "chain      {} forks from ours at entry {}: no more pulls from it",
                    peer.short(),
                    fork.seq()
                ),
            ),
            MeshEvent::ChainFailed { peer, error } => (
                json!({"event": "chain_failed", "peer": peer.to_string(), "error": error.to_string()}),
                format!("chain      pull from {} failed: {error}", peer.short()),
            ),
            MeshEvent::TreeSynced {
                peer,
                state,
                bytes_received,
                leaves,
            } => (
                json!({"event": "tree_synced", "peer": peer.to_string(), "version": state.version,
                       "root": hex::encode(state.root), "bytes": bytes_received, "leaves": leaves}),
                format!(
                    "tree       mirrors {} at version {} ({leaves} leaves, {bytes_received} bytes received)",
                    peer.short(),
                    state.version
                ),
            ),
            MeshEvent::TreeFailed { peer, error } => (
                json!({"event": "tree_failed", "peer": peer.to_string(), "error": error.to_string()}),
                format!("tree       pull from {} failed: {error}", peer.short()),
            ),
            MeshEvent::TreeDiverged { peer, ours, theirs } => (
                json!({"event": "tree_diverged", "peer": peer.to_string(), "version": ours.version,
                       "ours": hex::encode(ours.root), "theirs": hex::encode(theirs.root)}),
                format!(
                    "tree       {} has our version {} with another root: not pulled",
                    peer.short(),
                    ours.version
                ),
            ),
            other => (
                json!({"event": "other", "debug": format!("{other:?}")}),
                format!("{other:?}"),
            ),
        };
        self.emit(value, human);
    }
}

/// A delivered message or request (`answered` only for requests): JSON and text.
fn delivery(
    kind: &str,
    from: &NodeId,
    target: &Target,
    data: &[u8],
    hops: u8,
    answered: Option<bool>,
) -> (Value, String) {
    let text = String::from_utf8_lossy(data);
    let mut value = json!({
        "event": kind, "from": from.to_string(), "target": target.to_string(),
        "data": text, "data_hex": hex::encode(data), "hops": hops,
    });
    if let Some(answered) = answered {
        value["answered"] = answered.into();
    }
    let note = match answered {
        Some(true) => " (echoed)",
        Some(false) => " (not answered)",
        None => "",
    };
    let human = format!(
        "{kind:<10} from {}{}{}: {text}{note}",
        from.short(),
        via(hops),
        to_target(target)
    );
    (value, human)
}

/// A membership change: `member_<what>`.
fn member(what: &str, node: &NodeId, text: &str) -> (Value, String) {
    (
        json!({"event": format!("member_{what}"), "node": node.to_string()}),
        format!("member     {} {text}", node.short()),
    )
}

/// A service appearing or going: `service_<what>`.
fn service(what: &str, node: &NodeId, name: &str) -> (Value, String) {
    (
        json!({"event": format!("service_{what}"), "node": node.to_string(), "name": name}),
        format!("service    {name:?} {what} at {}", node.short()),
    )
}

/// How a message came, for the human-readable lines.
fn via(hops: u8) -> String {
    match hops {
        0 | 1 => String::new(),
        n => format!(" ({n} hops, relayed)"),
    }
}

fn to_target(target: &Target) -> String {
    match target {
        Target::Node => String::new(),
        other => format!(" to {other}"),
    }
}
