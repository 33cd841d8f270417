//! The `weft-mesh` program as separate processes: keygen, node + send with JSON events,
//! sends and requests relayed along a line of nodes, rejections with a reason and exit
//! code, SIGTERM, and kill -9 detection.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_weft-mesh");
const WAIT: Duration = Duration::from_secs(20);

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("weft-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A running `weft-mesh node --json` whose stdout lines arrive on a channel.
struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// Every line received so far (also those `expect` skipped).
    seen: Vec<Value>,
    node: String,
    addr: String,
}

impl NodeProcess {
    fn start(name: &str, extra: &[&str]) -> NodeProcess {
        let id = temp(name);
        let mut child = Command::new(BIN)
            .args(["node", "--json", "--identity"])
            .arg(&id)
            .args(["--listen", "tcp://127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weft-mesh node");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
                assert!(
                    value["event"].is_string(),
                    "every line has an event: {line}"
                );
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut p = NodeProcess {
            child,
            lines,
            seen: Vec::new(),
            node: String::new(),
            addr: String::new(),
        };
        p.node = p.expect("started")["node"].as_str().unwrap().to_owned();
        p.addr = p.expect("listening")["addr"].as_str().unwrap().to_owned();
        p
    }

    /// The next line with this event (earlier lines are skipped).
    fn expect(&mut self, event: &str) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {event} event"));
            self.seen.push(v.clone());
            if v["event"] == event {
                return v;
            }
        }
    }

    /// The nodes of every `peer_up` line printed so far.
    fn peers_seen(&mut self) -> Vec<String> {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
        self.seen
            .iter()
            .filter(|v| v["event"] == "peer_up")
            .map(|v| v["node"].as_str().unwrap().to_owned())
            .collect()
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        let _ = std::fs::remove_file(temp(""));
        status
    }
}

impl Drop for NodeProcess {
    /// A failed assertion must not leave the node running (it would hold the test's
    /// output pipe open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weft-mesh send`: whether it succeeded, and its stderr.
fn send(seed: &str, to: &str, extra: &[&str], data: &str) -> (bool, String) {
    let out = send_output(seed, to, "5", extra, data);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn send_output(
    seed: &str,
    to: &str,
    timeout: &str,
    extra: &[&str],
    data: &str,
) -> std::process::Output {
    Command::new(BIN)
        .args(["send", "--seed", seed, "--to", to, "--timeout", timeout])
        .args(extra)
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn keygen_writes_a_private_identity_and_refuses_to_overwrite() {
    let path = temp("keygen");
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    assert_eq!(id.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // A corrupt identity is a clear error for `node`.
    std::fs::write(&path, b"short").unwrap();
    let bad = Command::new(BIN)
        .args(["node", "--identity"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("5 bytes"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn node_and_send_deliver_and_report_in_json() {
    let mut node = NodeProcess::start("n1", &[]);
    let (ok, err) = send(&node.addr, &node.node, &[], "hello over the wire");
    assert!(ok, "send failed: {err}");
    let up = node.expect("peer_up");
    assert_eq!(up["hybrid"], true);
    let msg = node.expect("message");
    assert_eq!(msg["data"], "hello over the wire");
    assert_eq!(msg["from"], up["node"]);
    let down = node.expect("peer_down");
    assert_eq!(down["node"], up["node"]);

    // Another cluster: refused with a reason and a non-zero exit.
    let (ok, err) = send(
        &node.addr,
        &node.node,
        &["--genesis", &"11".repeat(32)],
        "x",
    );
    assert!(!ok);
    assert!(err.contains("genesis mismatch"), "{err}");
    // Policy: a classical sender against... the node prefers hybrid, so require on our side works.
    let (ok, err) = send(&node.addr, &node.node, &["--pq", "require"], "pq only");
    assert!(ok, "{err}");
    // Nobody listening: unreachable within the timeout.
    let (ok, err) = send("tcp://127.0.0.1:9", &node.node, &[], "x");
    assert!(!ok);
    assert!(err.contains("unreachable"), "{err}");

    let status = node.terminate();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
}

#[test]
fn a_killed_node_is_reported_down_by_its_peer() {
    let mut a = NodeProcess::start("ka", &[]);
    let mut b = NodeProcess::start("kb", &["--seed", &a.addr.clone()]);
    assert_eq!(a.expect("peer_up")["node"], b.node.as_str());
    b.expect("peer_up");
    b.child.kill().unwrap(); // SIGKILL: no Close frame, the socket just dies
    b.child.wait().unwrap();
    let down = a.expect("peer_down");
    assert_eq!(down["node"], b.node.as_str());
    assert_eq!(down["reason"], "connection_lost");
    assert!(a.terminate().success());
}

#[test]
fn send_reports_a_policy_rejection() {
    let node = NodeProcess::start("pq", &["--pq", "require"]);
    let (ok, err) = send(&node.addr, &node.node, &["--pq", "off"], "classical");
    assert!(!ok);
    assert!(err.contains("policy"), "{err}");
    let (ok, err) = send(&node.addr, &node.node, &[], "hybrid");
    assert!(ok, "{err}");
    assert!(node.terminate().success());
}

#[test]
fn send_reaches_a_node_behind_two_relays() {
    // A line a - b - c: b dials a, c dials b, and none dials the nodes it hears of.
    let mut a = NodeProcess::start("la", &["--target-peers", "0"]);
    let mut b = NodeProcess::start("lb", &["--target-peers", "0", "--seed", &a.addr.clone()]);
    let mut c = NodeProcess::start(
        "lc",
        &["--target-peers", "0", "--echo", "--seed", &b.addr.clone()],
    );
    assert_eq!(a.expect("peer_up")["node"], b.node.as_str());
    assert_eq!(c.expect("peer_up")["node"], b.node.as_str());
    let mut b_peers =
        [b.expect("peer_up"), b.expect("peer_up")].map(|v| v["node"].as_str().unwrap().to_owned());
    b_peers.sort();
    let mut want = [a.node.clone(), c.node.clone()];
    want.sort();
    assert_eq!(b_peers, want);

    // `send` links only to its seed a; the mesh carries the message on through b (the
    // sender retries while a has no route to c yet). Links crossed: sender - a - b - c.
    let out = send_output(&a.addr, &c.node, "20", &[], "across the line");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "send failed: {err}");
    let msg = c.expect("message");
    assert_eq!(msg["data"], "across the line");
    assert_eq!(msg["target"], "node");
    assert_eq!(msg["hops"], 3, "{msg}");
    let sender = msg["from"].as_str().unwrap().to_owned();
    assert!(sender != a.node && sender != b.node);

    // Seeded with b instead: one relay, 2 links.
    let (ok, err) = send(&b.addr, &c.node, &[], "one relay");
    assert!(ok, "send failed: {err}");
    let msg = c.expect("message");
    assert_eq!(
        (msg["data"].as_str(), msg["hops"].as_u64()),
        (Some("one relay"), Some(2))
    );

    // A request to c's echo service, answered by `node --echo` across the line.
    let out = send_output(
        &a.addr,
        &c.node,
        "20",
        &["--request", "--service", "echo"],
        "echo me",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "request failed: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echo me");
    let req = c.expect("request");
    assert_eq!(
        (
            req["target"].as_str(),
            req["hops"].as_u64(),
            req["answered"].as_bool()
        ),
        (Some("service:echo"), Some(3), Some(true))
    );

    // a and c never linked: neither printed a peer_up for the other.
    assert!(!a.peers_seen().contains(&c.node), "a linked to c");
    assert!(!c.peers_seen().contains(&a.node), "c linked to a");

    // Nobody at the end of the line: unreachable, with the reason.
    let nobody = "42".repeat(32);
    let out = send_output(&a.addr, &nobody, "1", &[], "x");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unreachable") && err.contains("no route"),
        "{err}"
    );
    for node in [c, b, a] {
        assert!(node.terminate().success());
    }
}

#[test]
fn services_and_member_failures_are_reported_in_json() {
    let mut a = NodeProcess::start("ma", &[]);
    let seed = a.addr.clone();
    let mut b = NodeProcess::start("mb", &["--seed", &seed, "--service", "db"]);
    let mut c = NodeProcess::start("mc", &["--seed", &seed]);
    let service = c.expect("service_up");
    assert_eq!(
        (service["node"].as_str(), service["name"].as_str()),
        (Some(b.node.as_str()), Some("db"))
    );
    let member = |p: &mut NodeProcess, event: &str, node: &str| loop {
        if p.expect(event)["node"] == node {
            break;
        }
    };
    member(&mut a, "member_up", &b.node);
    member(&mut a, "member_up", &c.node);
    b.expect("peer_up");
    b.child.kill().unwrap(); // no leave: the others must detect the failure
    b.child.wait().unwrap();
    // Suspected, then (with c's confirmation shortening the suspicion) declared down,
    // and its service goes with it.
    member(&mut a, "member_suspect", &b.node);
    member(&mut a, "member_down", &b.node);
    let gone = a.expect("service_down");
    assert_eq!(
        (gone["node"].as_str(), gone["name"].as_str()),
        (Some(b.node.as_str()), Some("db"))
    );
    assert!(a.terminate().success());
    assert!(c.terminate().success());
}

/// `--chain` and `--tree`: a node with 300 entries and 500 keys, and one joining with
/// an empty chain and 490 of the keys. The second reports, in JSON, catching up the
/// chain to entry 300 and mirroring the tree with a few kilobytes.
#[test]
fn chain_catch_up_and_tree_repair_are_reported_in_json() {
    let a = NodeProcess::start("sa", &["--chain", "300", "--tree", "500"]);
    let mut b = NodeProcess::start(
        "sb",
        &["--seed", &a.addr.clone(), "--chain", "0", "--tree", "490"],
    );
    let synced = b.expect("chain_synced");
    assert_eq!(synced["peer"], a.node.as_str());
    assert_eq!(synced["seq"], 300);
    assert_eq!(synced["appended"], 300);
    assert_eq!(synced["hash"].as_str().map(str::len), Some(64));
    let progress = b.seen.iter().find(|v| v["event"] == "chain_progress");
    assert!(progress.is_some_and(|p| p["seq"].as_u64().is_some_and(|s| s <= 300)));
    // The tree may have been mirrored before the chain caught up.
    let tree = (b.seen.iter())
        .find(|v| v["event"] == "tree_synced")
        .cloned()
        .unwrap_or_else(|| b.expect("tree_synced"));
    assert_eq!(tree["peer"], a.node.as_str());
    assert_eq!(tree["version"], 500);
    let bytes = tree["bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes < 8_000, "{bytes} bytes for 10 keys");
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}
