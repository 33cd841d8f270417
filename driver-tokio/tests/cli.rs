//! The `weft-mesh` program as separate processes: keygen, node + send with JSON events,
//! rejections with a reason and exit code, SIGTERM, and kill -9 detection.

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
            if v["event"] == event {
                return v;
            }
        }
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

fn send(seed: &str, to: &str, extra: &[&str], data: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["send", "--seed", seed, "--to", to, "--timeout", "5"])
        .args(extra)
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
