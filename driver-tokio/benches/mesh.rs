//! Loopback benchmark of weft-mesh on tokio against raw tokio TCP between the same
//! two tasks, measured in one run so that the ratios hold on a noisy machine.
//!
//! ```text
//! cargo bench -p weft-mesh-tokio --bench mesh                  # full run (well under a minute)
//! WEFT_BENCH_QUICK=1 cargo bench -p weft-mesh-tokio --bench mesh
//! cargo test -p weft-mesh-tokio --benches                      # quick run (see below)
//! ```
//!
//! Quick mode runs every path with tiny counts. It is chosen when `WEFT_BENCH_QUICK` is
//! set (to anything but `0`), or when the binary is started without `--bench`: `cargo
//! bench` passes `--bench` to `harness = false` targets, `cargo test --benches` passes
//! nothing. Quick figures are not meaningful.
//!
//! Everything runs on one multi-thread tokio runtime with 2 workers; the benchmark's own
//! driving task is spawned onto it too, so no third thread competes for the 2 cores.
//!
//! Figures:
//! 1. Single-link throughput, 64 KiB messages: a sender node keeps `BULK_WINDOW` sends
//!    in flight (`Mesh::send` returns on the peer's acknowledgement); payload MB/s as
//!    counted by a task reading the receiver's `MeshEvent::Message`s. Baseline: raw TCP
//!    (`TCP_NODELAY`), `[u32 len][payload]` written by one task, read by another.
//!    Goal: weft/raw >= 0.30.
//! 2. 64 B request/response: A sends, B's application echoes each `Message` event with
//!    `send`, A times send start to the reply's `Message` event. Baseline: raw TCP
//!    ping-pong of the same length-prefixed 64 B. Goal: p50 and p99 <= 1.25x raw.
//!    Also printed: the same ping-pong through the task structure the drivers are
//!    required to have (the application hands bytes to a socket's writer task and gets
//!    them from its reader task through channels), without the core: what the
//!    structure alone costs; and the exchange by two core nodes that the raw TCP tasks
//!    run themselves (no event loop, no hand-off): the core's own cost on the path,
//!    the floor of any driver.
//! 3. Connect to first authenticated delivered byte (hybrid handshake): a fresh client
//!    node seeded with a running listener: `start()`, wait for `PeerUp`, first `send`
//!    acknowledged; fresh client (and identity) each trial, shut down after it.
//!    Goal: p50 <= 1.0 ms. Followed by a breakdown: the core handshake's CPU time per
//!    step (in-process, one thread), and a timeline of the same connect measured
//!    through an instrumented copy of the TCP transport that timestamps dials,
//!    accepts and every socket read and write on both sides.
//! 4. 64 B message rate on one link with `SMALL_WINDOW` sends in flight, against raw
//!    TCP writing the same length-prefixed messages one `write_all` each, and through a
//!    64 KiB `BufWriter` (the raw speed limit).
//! 5. Relayed 64 B round trip: a line `a - b - c` (no `a - c` link); `a` alternates
//!    `Mesh::request`s to `b` (direct, 1 hop) and to `c` (relayed by `b`, 2 hops), whose
//!    applications answer each with its data; p50 / p99 of each, and per hop (the round
//!    trip divided by the hops each way).
//!
//! Diagnostics printed with the figures: the process's CPU time per message in the
//! streaming figures (Linux `schedstat`, so a loaded machine does not hide it; rate
//! times CPU per message is the number of cores a side really had), and a median
//! timeline of one request/response through the instrumented transport.
//! `WEFT_BENCH_ONLY=2,3` runs only those figures (for profiling one of them).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
use weft_mesh_driver::{Addr, BoxFuture, Incoming, MeshStream, MeshTransport, TransportListener};
use weft_mesh_tokio::weft_mesh::handshake::Remote;
use weft_mesh_tokio::weft_mesh::link::{Link, LinkConfig, MAX_TRANSMIT};
use weft_mesh_tokio::weft_mesh::node::{Action, ConnId, Node, NodeConfig, NodeEvent};
use weft_mesh_tokio::weft_mesh::{Identity, Instant as CoreInstant, NodeId, Rng};
use weft_mesh_tokio::{Events, Mesh, MeshBuilder, MeshError, MeshEvent, Target, DEV_GENESIS};

/// A transport to add to a node's builder (the instrumented TCP), if any.
type Extra = Option<Arc<dyn MeshTransport>>;

fn builder(transport: Extra) -> MeshBuilder<weft_mesh_tokio::Tokio> {
    let b = Mesh::builder();
    match transport {
        Some(t) => b.transport(t),
        None => b,
    }
}

const KIB: usize = 1024;
/// Payload of the throughput figure.
const BIG: usize = 64 * KIB;
/// Payload of the latency and message-rate figures.
const SMALL: usize = 64;
/// Sends in flight in the 64 KiB throughput figure (4 MiB, far below the 32 MiB queue).
const BULK_WINDOW: usize = 64;
/// Sends in flight in the 64 B message-rate figure.
const SMALL_WINDOW: usize = 1024;
/// Longest wait for anything (a hang becomes a panic with a reason, not a stuck run).
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------
// Plan and report
// ---------------------------------------------------------------------------------

struct Plan {
    quick: bool,
    /// Interleaved rounds of each throughput figure (the median is reported).
    rounds: usize,
    bulk_time: Duration,
    small_time: Duration,
    rtt_warmup: usize,
    rtt_samples: usize,
    connect_warmup: usize,
    connect_trials: usize,
    core_trials: usize,
}

impl Plan {
    fn detect() -> Plan {
        let env_quick = std::env::var_os("WEFT_BENCH_QUICK").is_some_and(|v| v != "0");
        let under_bench = std::env::args().any(|a| a == "--bench");
        if env_quick || !under_bench {
            Plan {
                quick: true,
                rounds: 1,
                bulk_time: Duration::from_millis(50),
                small_time: Duration::from_millis(50),
                rtt_warmup: 5,
                rtt_samples: 50,
                connect_warmup: 1,
                connect_trials: 3,
                core_trials: 3,
            }
        } else {
            Plan {
                quick: false,
                rounds: 5,
                bulk_time: Duration::from_millis(1000),
                small_time: Duration::from_millis(800),
                rtt_warmup: 1000,
                rtt_samples: 20_000,
                connect_warmup: 5,
                connect_trials: 50,
                core_trials: 50,
            }
        }
    }
}

struct Row {
    figure: String,
    weft: String,
    raw: String,
    ratio: String,
    goal: String,
    verdict: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, figure: &str, weft: String, raw: String, ratio: String, goal: &str) {
        self.rows.push(Row {
            figure: figure.into(),
            weft,
            raw,
            ratio,
            goal: goal.into(),
            verdict: String::new(),
        });
    }

    /// The last row met its goal or not.
    fn verdict(&mut self, met: bool) {
        if let Some(r) = self.rows.last_mut() {
            r.verdict = if met { "met" } else { "MISSED" }.into();
        }
    }

    fn note(&mut self, line: String) {
        println!("  {line}");
        self.notes.push(line);
    }

    fn print(&self) {
        let head = Row {
            figure: "figure".into(),
            weft: "weft-mesh".into(),
            raw: "raw TCP".into(),
            ratio: "weft/raw".into(),
            goal: "goal".into(),
            verdict: String::new(),
        };
        let all: Vec<&Row> = std::iter::once(&head).chain(&self.rows).collect();
        let w = |f: fn(&Row) -> &str| all.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
        let widths = [
            w(|r| &r.figure),
            w(|r| &r.weft),
            w(|r| &r.raw),
            w(|r| &r.ratio),
            w(|r| &r.goal),
        ];
        let line = |r: &Row| {
            format!(
                "| {:<a$} | {:>b$} | {:>c$} | {:>d$} | {:<e$} | {}",
                r.figure,
                r.weft,
                r.raw,
                r.ratio,
                r.goal,
                r.verdict,
                a = widths[0],
                b = widths[1],
                c = widths[2],
                d = widths[3],
                e = widths[4],
            )
        };
        let rule = format!(
            "|{}|",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        println!("{}", line(&head));
        println!("{rule}");
        for r in &self.rows {
            println!("{}", line(r));
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`-th percentile (0..=100) of `v`, sorted in place.
fn pct(v: &mut [Duration], p: usize) -> Duration {
    assert!(!v.is_empty(), "no samples");
    v.sort_unstable();
    v[((v.len() - 1) * p) / 100]
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// CPU time used so far by this process's threads (Linux `schedstat`, nanoseconds), if
/// the platform tells.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------

async fn peer_up(events: &mut Events, who: NodeId) {
    within("peer up", async {
        loop {
            match events.next().await {
                Some(MeshEvent::PeerUp { node, .. }) if node == who => return,
                Some(_) => {}
                None => panic!("mesh stopped before peer up"),
            }
        }
    })
    .await
}

/// A listening node `a` and a node `b` seeded with it, both up.
async fn pair() -> (Mesh, Mesh) {
    pair_with(None, None).await
}

/// Like [`pair`], `a` and `b` with an extra transport each.
async fn pair_with(ta: Extra, tb: Extra) -> (Mesh, Mesh) {
    let mut ab = builder(ta).listen("tcp://127.0.0.1:0");
    let mut ae = ab.subscribe();
    let a = ab.start().await.expect("start a");
    let mut bb = builder(tb).seed(a.local_addrs()[0].to_string());
    let mut be = bb.subscribe();
    let b = bb.start().await.expect("start b");
    peer_up(&mut ae, b.node_id()).await;
    peer_up(&mut be, a.node_id()).await;
    (a, b)
}

// ---------------------------------------------------------------------------------
// Streams of messages (figures 1 and 4)
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Rate {
    msgs: u64,
    bytes: u64,
    secs: f64,
    /// CPU time of the whole process over the run.
    cpu: Option<Duration>,
}

impl Rate {
    /// Process CPU time per message, in microseconds.
    fn cpu_us_per_msg(&self) -> Option<f64> {
        self.cpu.map(|c| us(c) / self.msgs.max(1) as f64)
    }

    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    fn msg_s(&self) -> f64 {
        self.msgs as f64 / self.secs
    }
}

/// Raw TCP: one task writes `[u32 len][payload]` messages for `time`, another reads
/// them; from the first write to the last byte read. `buffered` puts a 64 KiB
/// `BufWriter` / `BufReader` on the two ends.
async fn raw_stream(size: usize, time: Duration, buffered: bool) -> Rate {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut s: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if buffered {
            Box::new(BufReader::with_capacity(64 * KIB, s))
        } else {
            Box::new(s)
        };
        let mut buf = vec![0u8; size];
        let (mut msgs, mut bytes) = (0u64, 0u64);
        loop {
            let mut len = [0u8; 4];
            match s.read_exact(&mut len).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("raw read: {e}"),
            }
            let len = u32::from_be_bytes(len) as usize;
            s.read_exact(&mut buf[..len]).await.expect("raw read");
            msgs += 1;
            bytes += len as u64;
        }
        (msgs, bytes, Instant::now())
    });
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut s: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if buffered {
        Box::new(BufWriter::with_capacity(64 * KIB, s))
    } else {
        Box::new(s)
    };
    let mut msg = (size as u32).to_be_bytes().to_vec();
    msg.resize(4 + size, 0xab);
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    while t0.elapsed() < time {
        s.write_all(&msg).await.expect("raw write");
    }
    s.shutdown().await.expect("raw shutdown");
    drop(s);
    let (msgs, bytes, end) = within("raw reader", reader).await.expect("reader");
    Rate {
        msgs,
        bytes,
        secs: (end - t0).as_secs_f64(),
        cpu: cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a)),
    }
}

struct WeftRate {
    rate: Rate,
    /// Sends refused with `Full` (retried after a pause).
    full: u64,
    /// Acknowledged messages whose event the counting task never saw.
    lost: u64,
}

/// `tx` keeps `window` sends of `size` bytes to `rx` in flight for `time`; a task reading
/// `rx`'s events counts what arrives. From the first send to the last message event.
async fn weft_stream(tx: &Mesh, rx: &Mesh, size: usize, window: usize, time: Duration) -> WeftRate {
    let to = rx.node_id();
    let mut events = rx.subscribe();
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let last_ns = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let counter = {
        let (count, bytes, last_ns) = (count.clone(), bytes.clone(), last_ns.clone());
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if let MeshEvent::Message { data, .. } = e {
                    bytes.fetch_add(data.len() as u64, Relaxed);
                    last_ns.store(t0.elapsed().as_nanos() as u64, Relaxed);
                    count.fetch_add(1, Relaxed);
                }
            }
        })
    };
    let payload = Bytes::from(vec![0xab; size]);
    let (sent, full) = (AtomicU64::new(0), AtomicU64::new(0));
    stream::iter(0u64..)
        .take_while(|_| futures::future::ready(t0.elapsed() < time))
        .for_each_concurrent(window, |_| async {
            loop {
                match tx.send(to, Target::Node, payload.clone()).await {
                    Ok(()) => break,
                    Err(MeshError::Full) => {
                        full.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
            sent.fetch_add(1, Relaxed);
        })
        .await;
    let sent = sent.load(Relaxed);
    // Every acknowledged message was delivered; its event may trail the ack a little.
    let (mut seen, mut stalled) = (count.load(Relaxed), Instant::now());
    while seen < sent && stalled.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = count.load(Relaxed);
        if now != seen {
            (seen, stalled) = (now, Instant::now());
        }
    }
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    counter.abort();
    WeftRate {
        rate: Rate {
            msgs: count.load(Relaxed),
            bytes: bytes.load(Relaxed),
            secs: Duration::from_nanos(last_ns.load(Relaxed)).as_secs_f64(),
            cpu,
        },
        full: full.load(Relaxed),
        lost: sent.saturating_sub(count.load(Relaxed)),
    }
}

/// Median of `f` over the rounds that have it.
fn median_of(rates: &[Rate], f: fn(&Rate) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = rates.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median_f64(v))
}

/// Process CPU per message of both sides, and the rate it allows on 2 fully used cores.
fn cpu_note(what: &str, size: usize, raw: &[Rate], weft: &[Rate]) -> Option<String> {
    let r = median_of(raw, Rate::cpu_us_per_msg)?;
    let w = median_of(weft, Rate::cpu_us_per_msg)?;
    let limit = |cpu_us: f64| {
        if size >= KIB {
            format!("{:.0} MB/s", 2.0 * size as f64 / cpu_us)
        } else {
            format!("{:.0} msg/s", 2e6 / cpu_us)
        }
    };
    Some(format!(
        "{what}: process CPU per message (both ends): raw {r:.2} us, weft {w:.2} us ({:.1}x); \
         2 fully used cores would cap them at {} / {}",
        w / r,
        limit(r),
        limit(w)
    ))
}

async fn fig_throughput(plan: &Plan, report: &mut Report) {
    println!("\n[1] 64 KiB throughput ({} rounds)", plan.rounds);
    let (a, b) = pair().await;
    // Warm-up: connections, allocator, CPU frequency.
    raw_stream(BIG, plan.bulk_time / 4, false).await;
    weft_stream(&b, &a, BIG, BULK_WINDOW, plan.bulk_time / 4).await;
    let (mut raw, mut weft) = (Vec::new(), Vec::new());
    let (mut full, mut lost) = (0, 0);
    for round in 0..plan.rounds {
        let r = raw_stream(BIG, plan.bulk_time, false).await;
        let w = weft_stream(&b, &a, BIG, BULK_WINDOW, plan.bulk_time).await;
        println!(
            "  round {round}: raw {:6.0} MB/s ({} msgs, {:.1} us CPU/msg)   \
             weft {:6.0} MB/s ({} msgs, {:.1} us CPU/msg, {} Full, {} lost)",
            r.mb_s(),
            r.msgs,
            r.cpu_us_per_msg().unwrap_or(f64::NAN),
            w.rate.mb_s(),
            w.rate.msgs,
            w.rate.cpu_us_per_msg().unwrap_or(f64::NAN),
            w.full,
            w.lost
        );
        raw.push(r);
        weft.push(w.rate);
        full += w.full;
        lost += w.lost;
    }
    let raw_mb = median_f64(raw.iter().map(Rate::mb_s).collect());
    let weft_mb = median_f64(weft.iter().map(Rate::mb_s).collect());
    report.row(
        "1. 64 KiB throughput, MB/s (median)",
        format!("{weft_mb:.0}"),
        format!("{raw_mb:.0}"),
        format!("{:.2}x", weft_mb / raw_mb),
        ">= 0.30x",
    );
    report.verdict(weft_mb / raw_mb >= 0.30);
    if let Some(n) = cpu_note("64 KiB", BIG, &raw, &weft) {
        report.note(n);
    }
    if full + lost > 0 {
        report.note(format!(
            "64 KiB: {full} sends refused with Full, {lost} acknowledged messages never seen by the receiving application"
        ));
    }
    b.shutdown().await;
    a.shutdown().await;
}

async fn fig_message_rate(plan: &Plan, report: &mut Report) {
    println!("\n[4] 64 B message rate ({} rounds)", plan.rounds);
    let (a, b) = pair().await;
    raw_stream(SMALL, plan.small_time / 4, false).await;
    raw_stream(SMALL, plan.small_time / 4, true).await;
    weft_stream(&b, &a, SMALL, SMALL_WINDOW, plan.small_time / 4).await;
    let (mut raw, mut raw_buf, mut weft) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full, mut lost, mut acked) = (0, 0, 0);
    for round in 0..plan.rounds {
        let r = raw_stream(SMALL, plan.small_time, false).await;
        let rb = raw_stream(SMALL, plan.small_time, true).await;
        let w = weft_stream(&b, &a, SMALL, SMALL_WINDOW, plan.small_time).await;
        println!(
            "  round {round}: raw {:8.0} msg/s ({:.2} us CPU/msg)   raw buffered {:9.0} msg/s   \
             weft {:8.0} msg/s ({:.2} us CPU/msg, {} Full, {} lost)",
            r.msg_s(),
            r.cpu_us_per_msg().unwrap_or(f64::NAN),
            rb.msg_s(),
            w.rate.msg_s(),
            w.rate.cpu_us_per_msg().unwrap_or(f64::NAN),
            w.full,
            w.lost
        );
        raw.push(r);
        raw_buf.push(rb);
        weft.push(w.rate);
        full += w.full;
        lost += w.lost;
        acked += w.rate.msgs + w.lost;
    }
    let med = |v: &[Rate]| median_f64(v.iter().map(Rate::msg_s).collect());
    let (raw_r, raw_buf_r, weft_r) = (med(&raw), med(&raw_buf), med(&weft));
    report.row(
        "4. 64 B msg/s vs raw write_all each",
        format!("{weft_r:.0}"),
        format!("{raw_r:.0}"),
        format!("{:.2}x", weft_r / raw_r),
        "(none)",
    );
    report.row(
        "4. 64 B msg/s vs raw 64 KiB BufWriter",
        format!("{weft_r:.0}"),
        format!("{raw_buf_r:.0}"),
        format!("{:.2}x", weft_r / raw_buf_r),
        "(none)",
    );
    if let Some(n) = cpu_note("64 B", SMALL, &raw, &weft) {
        report.note(n);
    }
    if full + lost > 0 {
        report.note(format!(
            "64 B: {full} sends refused with Full; {lost} of {acked} acknowledged messages never \
             reached the receiving application (its event channel overflowed)"
        ));
    }
    b.shutdown().await;
    a.shutdown().await;
}

// ---------------------------------------------------------------------------------
// Request/response (figure 2)
// ---------------------------------------------------------------------------------

/// Raw TCP ping-pong of `[u32 len][64 B]`, `BufReader` on both read halves.
async fn raw_rtt(warmup: usize, samples: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut msg = [0u8; 4 + SMALL];
        loop {
            if r.read_exact(&mut msg[..4]).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
            r.read_exact(&mut msg[4..4 + len]).await.expect("echo read");
            w.write_all(&msg[..4 + len]).await.expect("echo write");
        }
    });
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut req = [0xab; 4 + SMALL];
    req[..4].copy_from_slice(&(SMALL as u32).to_be_bytes());
    let mut reply = [0u8; 4 + SMALL];
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t = Instant::now();
        w.write_all(&req).await.expect("write");
        r.read_exact(&mut reply[..4]).await.expect("read");
        let len = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
        r.read_exact(&mut reply[4..4 + len]).await.expect("read");
        if i >= warmup {
            out.push(t.elapsed());
        }
    }
    drop((r, w));
    within("raw echo", echo).await.expect("echo task");
    out
}

/// The floor of the structure the issue requires (a reader task and a writer task per
/// socket, the application in a task of its own), without the event loop, the core or
/// any cryptography: raw TCP ping-pong where each side's application hands its 64 B
/// to the socket's writer task through a channel and gets the reply from the socket's
/// reader task through another. Four task hand-offs per round trip that raw TCP
/// between the two application tasks does not have.
async fn structure_rtt(warmup: usize, samples: usize) -> Vec<Duration> {
    use tokio::sync::mpsc;
    /// Reader and writer tasks for one socket: (bytes to write, frames read).
    fn split(s: TcpStream) -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
        s.set_nodelay(true).expect("nodelay");
        let (r, mut w) = s.into_split();
        let (to_writer, mut writes) = mpsc::channel::<Vec<u8>>(64);
        let (to_app, reads) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(buf) = writes.recv().await {
                if w.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut r = BufReader::new(r);
            let mut len = [0u8; 4];
            while r.read_exact(&mut len).await.is_ok() {
                let mut msg = vec![0u8; 4 + u32::from_be_bytes(len) as usize];
                msg[..4].copy_from_slice(&len);
                if r.read_exact(&mut msg[4..]).await.is_err() || to_app.send(msg).await.is_err() {
                    break;
                }
            }
        });
        (to_writer, reads)
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let (tx, mut rx) = split(s);
        while let Some(msg) = rx.recv().await {
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    let (tx, mut rx) = split(TcpStream::connect(addr).await.expect("connect"));
    let mut req = vec![0xab; 4 + SMALL];
    req[..4].copy_from_slice(&(SMALL as u32).to_be_bytes());
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t = Instant::now();
        tx.send(req.clone()).await.expect("writer task");
        let reply = rx.recv().await.expect("reader task");
        assert_eq!(reply.len(), 4 + SMALL);
        if i >= warmup {
            out.push(t.elapsed());
        }
    }
    drop((tx, rx));
    within("structure echo", echo).await.expect("echo task");
    out
}

/// One side of [`core_rtt`]: a core node driven inline by the task that owns its socket.
struct InlineNode {
    node: Node,
    conn: ConnId,
    sock: TcpStream,
    started: Instant,
    out: Vec<u8>,
    inbuf: Vec<u8>,
}

impl InlineNode {
    fn now(&self) -> CoreInstant {
        CoreInstant::from_micros(self.started.elapsed().as_micros() as u64)
    }

    /// Run due timers, then write everything the node has for the socket.
    async fn flush(&mut self) {
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        while self.node.poll_action().is_some() {}
        while let Some(n) = self.node.poll_transmit(now, self.conn, &mut self.out) {
            self.sock.write_all(&self.out[..n]).await.expect("write");
        }
    }

    /// One socket read into the node; false at end of stream.
    async fn read(&mut self) -> bool {
        match self.sock.read(&mut self.inbuf).await {
            Ok(n @ 1..) => {
                let now = self.now();
                self.node.handle_bytes(now, self.conn, &self.inbuf[..n]);
                true
            }
            _ => false,
        }
    }
}

/// The floor of any driver: figure 2's exchange by two core nodes, each run inline by
/// the one task that owns its socket (as in the raw ping-pong: no event loop, no
/// hand-off between tasks, no timer armed). What it adds to raw TCP is the core's own
/// work on the round trip's path: sealing, opening, envelopes, receipts.
async fn core_rtt(warmup: usize, samples: usize) -> Vec<Duration> {
    let mut rng = Rng::from_seed([3; 32]);
    let started = Instant::now();
    let side = move |sock: TcpStream, node: Node, conn| {
        sock.set_nodelay(true).expect("nodelay");
        InlineNode {
            node,
            conn,
            sock,
            started,
            out: vec![0; MAX_TRANSMIT],
            inbuf: vec![0; 64 * KIB],
        }
    };
    let node = |rng: &mut Rng| {
        let identity = Arc::new(Identity::generate(rng));
        Node::new(identity, NodeConfig::new(DEV_GENESIS), rng.fork())
    };
    let (mut a, mut b) = (node(&mut rng), node(&mut rng));
    let to = b.node_id();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    a.add_seed(CoreInstant::ZERO, format!("tcp://{addr}"));
    a.handle_timeout(CoreInstant::ZERO);
    let ca = std::iter::from_fn(|| a.poll_action())
        .find_map(|action| match action {
            Action::Dial { conn, .. } => Some(conn),
            _ => None,
        })
        .expect("a dials its seed");
    let cb = b.accept(CoreInstant::ZERO, None).expect("accept");
    let echo = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let mut b = side(s, b, cb);
        loop {
            b.flush().await;
            if !b.read().await {
                break;
            }
            let now = b.now();
            while let Some(event) = b.node.poll_event() {
                if let NodeEvent::Message { from, payload, .. } = event {
                    b.node.send(now, from, Target::Node, payload).expect("echo");
                }
            }
        }
    });
    let mut a = side(TcpStream::connect(addr).await.expect("connect"), a, ca);
    loop {
        a.flush().await;
        if std::iter::from_fn(|| a.node.poll_event()).any(|e| matches!(e, NodeEvent::PeerUp { .. }))
        {
            break;
        }
        assert!(a.read().await, "handshake");
    }
    let req = Bytes::from(vec![0xab; SMALL]);
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t = Instant::now();
        let now = a.now();
        a.node
            .send(now, to, Target::Node, req.clone())
            .expect("send");
        a.flush().await;
        'reply: loop {
            assert!(a.read().await, "echo closed");
            while let Some(event) = a.node.poll_event() {
                if let NodeEvent::Message { payload, .. } = event {
                    assert_eq!(payload.len(), SMALL);
                    break 'reply;
                }
            }
        }
        if i >= warmup {
            out.push(t.elapsed());
        }
        a.flush().await;
    }
    drop(a);
    within("core echo", echo).await.expect("echo task");
    out
}

/// B's application: echo every message back with `send`, one at a time. (Keeping
/// several sends in flight in a `FuturesUnordered` would cost a thread switch per
/// message: it wakes its task whenever all its futures are pending, and a task that
/// wakes itself is handed to another worker. The echo's acknowledgement comes with A's
/// next message, so waiting for it delays nothing A measures.)
async fn echo_app(mesh: Mesh, mut events: Events, trace: Option<Arc<Trace>>) {
    while let Some(event) = events.next().await {
        if let MeshEvent::Message { from, data, .. } = event {
            if let Some(t) = &trace {
                t.mark("B app: Message event", None);
            }
            mesh.send(from, Target::Node, data).await.expect("reply");
        }
    }
}

/// A sends 64 B to B, B's application echoes it; A times send start to the reply event.
async fn weft_rtt(
    (a, b): (Mesh, Mesh),
    warmup: usize,
    samples: usize,
    trace: Option<Arc<Trace>>,
) -> (Vec<Duration>, Vec<Marks>) {
    let mut a_events = a.subscribe();
    let echo = tokio::spawn(echo_app(b.clone(), b.subscribe(), trace.clone()));
    let to = b.node_id();
    let req = Bytes::from(vec![0xab; SMALL]);
    let (mut out, mut timelines) = (Vec::with_capacity(samples), Vec::new());
    for i in 0..warmup + samples {
        if let Some(t) = &trace {
            t.reset(false);
        }
        let t = Instant::now();
        let mark = |what: &'static str| {
            if let Some(t) = &trace {
                t.mark(what, None);
            }
        };
        mark("A app: send() called");
        let send = async {
            let r = a.send(to, Target::Node, req.clone()).await;
            mark("A app: send() returned (ack)");
            r
        };
        let reply = async {
            loop {
                match a_events.next().await {
                    Some(MeshEvent::Message { data, .. }) => {
                        let at = Instant::now();
                        assert_eq!(data.len(), SMALL);
                        mark("A app: reply Message event");
                        return at;
                    }
                    Some(_) => {}
                    None => panic!("mesh stopped"),
                }
            }
        };
        let (sent, at) = within("reply", async { futures::join!(send, reply) }).await;
        sent.expect("request");
        if i >= warmup {
            out.push(at - t);
            if let Some(t) = &trace {
                // Let the reply's acknowledgement reach B before the next trial, without
                // sleeping (an idle runtime parks its workers, which the untraced loop
                // never lets happen).
                let wait = Instant::now();
                while t.count("B socket read") < 2 && wait.elapsed() < Duration::from_millis(1) {
                    tokio::task::yield_now().await;
                }
                timelines.push(t.take());
            }
        }
    }
    echo.abort();
    b.shutdown().await;
    a.shutdown().await;
    (out, timelines)
}

async fn fig_rtt(plan: &Plan, report: &mut Report) {
    println!(
        "\n[2] 64 B request/response ({} samples after {} warm-up)",
        plan.rtt_samples, plan.rtt_warmup
    );
    let mut raw = raw_rtt(plan.rtt_warmup, plan.rtt_samples).await;
    let (mut weft, _) = weft_rtt(pair().await, plan.rtt_warmup, plan.rtt_samples, None).await;
    let mut raw2 = raw_rtt(plan.rtt_warmup, plan.rtt_samples / 4).await;
    raw.append(&mut raw2);
    let mut floor = structure_rtt(plan.rtt_warmup, plan.rtt_samples).await;
    let mut core = core_rtt(plan.rtt_warmup, plan.rtt_samples).await;
    for (name, p) in [("p50", 50), ("p99", 99)] {
        let (w, r, f) = (pct(&mut weft, p), pct(&mut raw, p), pct(&mut floor, p));
        let c = pct(&mut core, p);
        println!(
            "  {name}: raw {:7.1} us   weft {:7.1} us   required task structure alone {:7.1} us ({:.2}x raw)   \
             core inline in the raw tasks {:7.1} us ({:.2}x raw)",
            us(r),
            us(w),
            us(f),
            us(f) / us(r),
            us(c),
            us(c) / us(r),
        );
        report.row(
            &format!("2. 64 B round trip {name}, us"),
            format!("{:.1}", us(w)),
            format!("{:.1}", us(r)),
            format!("{:.2}x", us(w) / us(r)),
            "<= 1.25x",
        );
        report.verdict(us(w) / us(r) <= 1.25);
        report.note(format!(
            "64 B round trip {name}: the core run inline by the raw TCP tasks (any driver's floor) {:.1} us, {:.2}x raw",
            us(c),
            us(c) / us(r)
        ));
    }

    // The same exchange through the instrumented transport: where the time goes.
    let trace = Trace::new();
    let probe = |side| Probe::transport(side, &trace);
    let nodes = pair_with(probe("A"), probe("B")).await;
    let samples = (plan.rtt_samples / 10).max(10);
    let (mut traced, timelines) =
        weft_rtt(nodes, plan.rtt_warmup / 10, samples, Some(trace.clone())).await;
    println!(
        "\n[2b] one 64 B request/response through the instrumented transport (A = requester, B = echo), \
         p50 {:.1} us over {samples}",
        us(pct(&mut traced, 50))
    );
    print_timeline(&timelines, "A app: send() called");
}

/// Median time of each mark (its first occurrence per trial, counted per label) over
/// `runs`, in time order, with the step from the previous line.
fn print_timeline(runs: &[Marks], origin: &str) {
    let mut by_label: Vec<(String, Vec<Duration>, Vec<usize>)> = Vec::new();
    for marks in runs {
        for (at, what, bytes) in marks {
            match by_label.iter_mut().find(|(w, ..)| w == what) {
                Some((_, ats, bs)) => {
                    ats.push(*at);
                    bs.extend(bytes);
                }
                None => by_label.push((what.clone(), vec![*at], bytes.iter().copied().collect())),
            }
        }
    }
    let mut timeline: Vec<(Duration, String, usize, Option<usize>)> = by_label
        .into_iter()
        .map(|(what, mut ats, mut bs)| {
            let n = ats.len();
            let b = (!bs.is_empty()).then(|| {
                bs.sort_unstable();
                bs[bs.len() / 2]
            });
            (pct(&mut ats, 50), what, n, b)
        })
        .collect();
    // Marks seen in under a tenth of the trials (stragglers of an earlier trial, a
    // rare extra socket call) would only clutter the timeline.
    let rare = timeline.len();
    timeline.retain(|(_, _, n, _)| n * 10 >= runs.len());
    let rare = rare - timeline.len();
    timeline.sort_by_key(|(at, ..)| *at);
    println!(
        "  median time of each mark after {origin:?} (socket = the instrumented read/write call):"
    );
    let mut prev = Duration::ZERO;
    for (at, what, n, bytes) in &timeline {
        let bytes = bytes.map(|b| format!("{b} B")).unwrap_or_default();
        let seen = if *n == runs.len() {
            String::new()
        } else {
            format!("(in {n}/{} trials)", runs.len())
        };
        println!(
            "    {:>8.1} us  (+{:>6.1})  {what:<32} {bytes:>7} {seen}",
            us(*at),
            us(at.saturating_sub(prev))
        );
        prev = *at;
    }
    if rare > 0 {
        println!("    ({rare} marks seen in under a tenth of the trials left out)");
    }
}

// ---------------------------------------------------------------------------------
// Connect (figure 3)
// ---------------------------------------------------------------------------------

/// Milestones of one connect, from before the builder is made.
#[derive(Clone, Copy)]
struct Connect {
    started: Duration,
    up: Duration,
    done: Duration,
}

async fn connect_once(
    transport: Extra,
    seed: &str,
    server: NodeId,
    trace: Option<&Trace>,
) -> Connect {
    if let Some(t) = trace {
        t.reset(true);
    }
    let mark = |what: &'static str| {
        if let Some(t) = trace {
            t.mark(what, None);
        }
    };
    let t0 = Instant::now();
    let mut builder = builder(transport).seed(seed);
    let mut events = builder.subscribe();
    let mesh = builder.start().await.expect("start client");
    let started = t0.elapsed();
    if let Some(t) = trace {
        *t.client.lock().unwrap() = Some(mesh.node_id());
    }
    mark("C app: start() returned");
    peer_up(&mut events, server).await;
    let up = t0.elapsed();
    mark("C app: PeerUp event");
    within(
        "first send",
        mesh.send(server, Target::Node, Bytes::from_static(b"first")),
    )
    .await
    .expect("first send");
    let done = t0.elapsed();
    mark("C app: send() returned");
    if let Some(t) = trace {
        t.stop();
    }
    within("client shutdown", mesh.shutdown()).await;
    Connect { started, up, done }
}

async fn fig_connect(plan: &Plan, report: &mut Report) {
    println!(
        "\n[3] connect to first delivered byte ({} trials after {} warm-up)",
        plan.connect_trials, plan.connect_warmup
    );
    let server = Mesh::builder()
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .expect("start listener");
    let seed = server.local_addrs()[0].to_string();
    let mut trials = Vec::new();
    for i in 0..plan.connect_warmup + plan.connect_trials {
        let c = connect_once(None, &seed, server.node_id(), None).await;
        if i >= plan.connect_warmup {
            trials.push(c);
        }
    }
    server.shutdown().await;
    let col = |f: fn(&Connect) -> Duration| trials.iter().map(f).collect::<Vec<_>>();
    let (mut started, mut up, mut done) = (col(|c| c.started), col(|c| c.up), col(|c| c.done));
    let mut gaps = trials.iter().map(|c| c.done - c.up).collect::<Vec<_>>();
    let mut handshakes = trials.iter().map(|c| c.up - c.started).collect::<Vec<_>>();
    println!(
        "  total p50 {:.3} ms  p90 {:.3} ms  min {:.3} ms  max {:.3} ms",
        ms(pct(&mut done, 50)),
        ms(pct(&mut done, 90)),
        ms(pct(&mut done, 0)),
        ms(pct(&mut done, 100))
    );
    println!(
        "  p50 of parts: start() {:.3} ms | start() -> PeerUp {:.3} ms | PeerUp -> send acknowledged {:.3} ms",
        ms(pct(&mut started, 50)),
        ms(pct(&mut handshakes, 50)),
        ms(pct(&mut gaps, 50))
    );
    let p50 = pct(&mut done, 50);
    report.row(
        "3. connect -> first delivered, p50 ms",
        format!("{:.3}", ms(p50)),
        "-".into(),
        "-".into(),
        "<= 1.0 ms",
    );
    report.verdict(p50 <= Duration::from_millis(1));
    report.row(
        "3.   of which start() -> PeerUp, p50 ms",
        format!("{:.3}", ms(pct(&mut up, 50) - pct(&mut started, 50))),
        "-".into(),
        "-".into(),
        "",
    );
}

// ---------------------------------------------------------------------------------
// Relaying (figure 5)
// ---------------------------------------------------------------------------------

/// An application that answers every request with the request's data.
async fn answer_requests(mut events: Events) {
    while let Some(e) = events.next().await {
        if let MeshEvent::Request {
            data, responder, ..
        } = e
        {
            responder.respond(data).await.expect("respond");
        }
    }
}

/// `a - b - c`: `b` dials `a`, `c` dials `b`, and none dials the nodes it hears of.
/// Returns once `a` and `c` have their routes to each other.
async fn line() -> [Mesh; 3] {
    let node = || {
        Mesh::builder()
            .listen("tcp://127.0.0.1:0")
            .configure(|c| c.target_peers = 0)
    };
    let mut ab = node();
    let mut ae = ab.subscribe();
    let a = ab.start().await.expect("start a");
    let mut bb = node().seed(a.local_addrs()[0].to_string());
    let mut be = bb.subscribe();
    let b = bb.start().await.expect("start b");
    let mut cb = node().seed(b.local_addrs()[0].to_string());
    let mut ce = cb.subscribe();
    let c = cb.start().await.expect("start c");
    peer_up(&mut ae, b.node_id()).await;
    peer_up(&mut be, a.node_id()).await;
    peer_up(&mut be, c.node_id()).await;
    peer_up(&mut ce, b.node_id()).await;
    // Both ways: a response has no retransmission of its own (the destination drops a
    // repeated request as a duplicate), so c must know its way back before a asks.
    for (from, to) in [(&a, &c), (&c, &a)] {
        within("routes between a and c", async {
            loop {
                let routes = from.routes().await.expect("routes");
                if routes.iter().any(|r| r.node == to.node_id() && r.hops == 2) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
    [a, b, c]
}

async fn fig_relay(plan: &Plan, report: &mut Report) {
    let samples = (plan.rtt_samples / 2).max(10);
    println!(
        "\n[5] 64 B request/response, direct (a -> b) and through one relay (a -> b -> c), \
         interleaved ({samples} samples each after {} warm-up)",
        plan.rtt_warmup / 2
    );
    let [a, b, c] = line().await;
    let apps = [
        tokio::spawn(answer_requests(b.subscribe())),
        tokio::spawn(answer_requests(c.subscribe())),
    ];
    let req = Bytes::from(vec![0xab; SMALL]);
    let (mut direct, mut relayed) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..plan.rtt_warmup / 2 + samples {
        for (to, out) in [(b.node_id(), &mut direct), (c.node_id(), &mut relayed)] {
            let t = Instant::now();
            let reply = within("response", a.request(to, Target::Node, req.clone(), WAIT)).await;
            let took = t.elapsed();
            assert_eq!(reply.expect("request").len(), SMALL);
            if i >= plan.rtt_warmup / 2 {
                out.push(took);
            }
        }
    }
    let relays = b.stats().await.expect("stats").relayed;
    apps.iter().for_each(|t| t.abort());
    for mesh in [c, b, a] {
        mesh.shutdown().await;
    }
    let (d50, d99) = (pct(&mut direct, 50), pct(&mut direct, 99));
    let (r50, r99) = (pct(&mut relayed, 50), pct(&mut relayed, 99));
    println!(
        "  direct:    p50 {:7.1} us  p99 {:7.1} us   (1 hop each way)",
        us(d50),
        us(d99)
    );
    println!(
        "  one relay: p50 {:7.1} us  p99 {:7.1} us   (2 hops each way; per hop p50 {:.1} us, p99 {:.1} us)",
        us(r50),
        us(r99),
        us(r50) / 2.0,
        us(r99) / 2.0
    );
    println!(
        "  the relay adds {:.1} us (p50) per round trip; b forwarded {relays} envelopes",
        us(r50) - us(d50)
    );
    report.row(
        "5. 64 B round trip direct, p50 / p99 us",
        format!("{:.1} / {:.1}", us(d50), us(d99)),
        "-".into(),
        "-".into(),
        "",
    );
    report.row(
        "5. 64 B round trip via one relay, p50 / p99 us",
        format!("{:.1} / {:.1}", us(r50), us(r99)),
        "-".into(),
        format!(
            "{:.2}x / {:.2}x direct",
            us(r50) / us(d50),
            us(r99) / us(d99)
        ),
        "",
    );
    report.row(
        "5.   per hop via one relay, p50 / p99 us",
        format!("{:.1} / {:.1}", us(r50) / 2.0, us(r99) / 2.0),
        "-".into(),
        format!(
            "{:.2}x / {:.2}x direct",
            us(r50) / 2.0 / us(d50),
            us(r99) / 2.0 / us(d99)
        ),
        "",
    );
}

// ---------------------------------------------------------------------------------
// Breakdowns: core CPU per handshake step, and an instrumented transport
// ---------------------------------------------------------------------------------

/// CPU time of each handshake step in the core, both sides on this thread.
fn core_handshake(trials: usize) -> Vec<(&'static str, Duration)> {
    let config = LinkConfig::new(DEV_GENESIS);
    let mut rng = Rng::from_seed([5; 32]);
    let server = Arc::new(Identity::generate(&mut rng));
    let now = CoreInstant::ZERO;
    let (mut a, mut b) = (vec![0u8; MAX_TRANSMIT], vec![0u8; MAX_TRANSMIT]);
    let labels = [
        "client identity (Ed25519 + X25519 keygen)",
        "C: Link::connect (Noise setup, ML-KEM keygen) + msg1",
        "S: read msg1 + write msg2 (DH, encaps, sign)",
        "C: read msg2 + write msg3 (DH, decaps, verify, sign)",
        "S: read msg3 (DH, verify) -> established",
        "first record: seal + open 64 B",
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); labels.len()];
    for _ in 0..trials {
        let mut t = Instant::now();
        let mut lap = |i: usize, times: &mut Vec<Vec<Duration>>| {
            times[i].push(t.elapsed());
            t = Instant::now();
        };
        let client = Arc::new(Identity::generate(&mut rng));
        lap(0, &mut times);
        let mut c = Link::connect(config.clone(), client, Remote::Any, rng.fork(), now);
        let n1 = c.poll_transmit(now, &mut a).expect("msg1");
        lap(1, &mut times);
        let mut s = Link::accept(config.clone(), server.clone(), rng.fork(), now);
        s.handle_bytes(now, &a[..n1]);
        let n2 = s.poll_transmit(now, &mut b).expect("msg2");
        lap(2, &mut times);
        c.handle_bytes(now, &b[..n2]);
        let n3 = c.poll_transmit(now, &mut a).expect("msg3");
        lap(3, &mut times);
        s.handle_bytes(now, &a[..n3]);
        lap(4, &mut times);
        assert!(c.is_established() && s.is_established(), "handshake failed");
        use weft_mesh_tokio::weft_mesh::frame::FrameType;
        c.send(FrameType::Message, Bytes::from_static(&[7; SMALL]))
            .expect("send");
        let n = c.poll_transmit(now, &mut a).expect("record");
        s.handle_bytes(now, &a[..n]);
        lap(5, &mut times);
        while s.poll_event().is_some() {}
    }
    labels
        .iter()
        .zip(times.iter_mut())
        .map(|(l, v)| (*l, pct(v, 50)))
        .collect()
}

/// Marks of one trial: time since the trial began, what, and bytes for socket calls.
type Marks = Vec<(Duration, String, Option<usize>)>;

/// A mark as taken: time since the trial began, a static label, bytes of a socket call.
type RawMark = (Duration, &'static str, Option<usize>);

/// Timestamps of one trial, shared by the instrumented nodes and the application.
/// Marking takes one uncontended lock and no allocation, so that it disturbs little.
struct Trace {
    on: std::sync::atomic::AtomicBool,
    /// Bumped per connect trial: sockets of earlier trials (still closing) stay quiet.
    epoch: AtomicU64,
    /// The connect trial's client, so that the listener's late events of an earlier
    /// client are not counted in this trial.
    client: Mutex<Option<NodeId>>,
    /// The trial's start and its marks so far.
    marks: Mutex<(Instant, Vec<RawMark>)>,
}

impl Trace {
    fn new() -> Arc<Trace> {
        Arc::new(Trace {
            on: Default::default(),
            epoch: AtomicU64::new(0),
            client: Mutex::new(None),
            marks: Mutex::new((Instant::now(), Vec::with_capacity(64))),
        })
    }

    /// Start a trial now; `new_epoch` silences the sockets opened before.
    fn reset(&self, new_epoch: bool) {
        if new_epoch {
            self.epoch.fetch_add(1, Relaxed);
        }
        let mut marks = self.marks.lock().unwrap();
        marks.1.clear();
        marks.0 = Instant::now();
        self.on.store(true, Relaxed);
    }

    fn stop(&self) {
        self.on.store(false, Relaxed);
    }

    fn mark(&self, what: &'static str, bytes: Option<usize>) {
        if self.on.load(Relaxed) {
            let mut marks = self.marks.lock().unwrap();
            let at = marks.0.elapsed();
            marks.1.push((at, what, bytes));
        }
    }

    /// How many marks labelled `what` this trial has.
    fn count(&self, what: &str) -> usize {
        let marks = self.marks.lock().unwrap();
        marks.1.iter().filter(|(_, w, _)| *w == what).count()
    }

    /// End the trial: its marks, socket calls numbered per label (`#1`, `#2`, ...).
    fn take(&self) -> Marks {
        self.stop();
        let raw = std::mem::take(&mut self.marks.lock().unwrap().1);
        let mut out: Marks = Vec::with_capacity(raw.len());
        for (at, what, bytes) in raw {
            let what = if bytes.is_some() {
                let prefix = format!("{what} #");
                let n = out
                    .iter()
                    .filter(|(_, w, _)| w.starts_with(&prefix))
                    .count();
                format!("{prefix}{}", n + 1)
            } else {
                what.to_string()
            };
            out.push((at, what, bytes));
        }
        out
    }
}

/// `tcp://` like the built-in transport, timestamping dials, accepts and every socket
/// read and write; added to a node's builder, it is tried before the built-in one.
#[derive(Clone)]
struct Probe {
    trace: Arc<Trace>,
    /// The labels of this side's marks (made once: marking does not allocate).
    labels: &'static [&'static str; 5],
}

const READ: usize = 0;
const WRITE: usize = 1;
const DIAL: usize = 2;
const CONNECTED: usize = 3;
const ACCEPTED: usize = 4;

impl Probe {
    fn transport(side: &'static str, trace: &Arc<Trace>) -> Extra {
        let label = |op: &str| &*Box::leak(format!("{side} {op}").into_boxed_str());
        let labels = Box::leak(Box::new([
            label("socket read"),
            label("socket write"),
            label("dial: connect() called"),
            label("dial: TCP connected"),
            label("TCP accepted"),
        ]));
        Some(Arc::new(Probe {
            trace: trace.clone(),
            labels,
        }))
    }

    fn mark(&self, what: usize, bytes: Option<usize>) {
        self.trace.mark(self.labels[what], bytes);
    }

    fn stream(&self, stream: TcpStream) -> MeshStream {
        let epoch = self.trace.epoch.load(Relaxed);
        let (r, w) = stream.into_split();
        MeshStream::from_io(
            Probed {
                io: r.compat(),
                probe: self.clone(),
                epoch,
            },
            Probed {
                io: w.compat_write(),
                probe: self.clone(),
                epoch,
            },
        )
    }
}

struct Probed<T> {
    io: Compat<T>,
    probe: Probe,
    epoch: u64,
}

impl<T> Probed<T> {
    fn mark(&self, op: usize, bytes: usize) {
        if self.epoch == self.probe.trace.epoch.load(Relaxed) {
            self.probe.mark(op, Some(bytes));
        }
    }
}

impl futures::io::AsyncRead for Probed<tokio::net::tcp::OwnedReadHalf> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.mark(READ, n);
            }
        }
        r
    }
}

impl futures::io::AsyncWrite for Probed<tokio::net::tcp::OwnedWriteHalf> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.mark(WRITE, n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl MeshTransport for Probe {
    fn supports(&self, addr: &Addr) -> bool {
        matches!(addr, Addr::Tcp { .. })
    }

    fn connect(&self, addr: &Addr) -> BoxFuture<io::Result<MeshStream>> {
        let (addr, probe) = (addr.clone(), self.clone());
        Box::pin(async move {
            probe.mark(DIAL, None);
            let stream = TcpStream::connect(addr.host_port()).await?;
            stream.set_nodelay(true)?;
            probe.mark(CONNECTED, None);
            Ok(probe.stream(stream))
        })
    }

    fn listen(&self, addr: &Addr) -> BoxFuture<io::Result<(TransportListener, Addr)>> {
        let (addr, probe) = (addr.clone(), self.clone());
        Box::pin(async move {
            let listener = TcpListener::bind(addr.host_port()).await?;
            let bound = addr.with_host_port(listener.local_addr()?.to_string());
            let accepted = stream::unfold(listener, move |listener| {
                let probe = probe.clone();
                async move {
                    let accepted = listener.accept().await.and_then(|(stream, peer)| {
                        stream.set_nodelay(true)?;
                        probe.mark(ACCEPTED, None);
                        let stream = probe.stream(stream);
                        Ok(Box::pin(async move { Ok((stream, peer.to_string())) }) as Incoming)
                    });
                    Some((accepted, listener))
                }
            });
            Ok((accepted.boxed() as TransportListener, bound))
        })
    }
}

async fn connect_breakdown(plan: &Plan, report: &mut Report) {
    println!("\n[3b] where the connect time goes");
    let steps = core_handshake(plan.core_trials);
    let cpu: Duration = steps[..5].iter().map(|(_, d)| *d).sum();
    println!(
        "  core CPU per step, p50 of {} (one thread, no I/O):",
        plan.core_trials
    );
    for (label, d) in &steps {
        println!("    {:>8.1} us  {label}", us(*d));
    }
    println!(
        "    {:>8.1} us  = identity + handshake, both sides",
        us(cpu)
    );
    report.note(format!(
        "connect: core CPU of client identity + hybrid handshake, both sides: {:.0} us p50",
        us(cpu)
    ));

    // The same connect through the instrumented transport, on both sides.
    let trace = Trace::new();
    let probe = |side| Probe::transport(side, &trace);
    let mut builder = builder(probe("S")).listen("tcp://127.0.0.1:0");
    let mut server_events = builder.subscribe();
    let server = builder.start().await.expect("start probe listener");
    let drain = {
        let trace = trace.clone();
        tokio::spawn(async move {
            while let Some(e) = server_events.next().await {
                let client = *trace.client.lock().unwrap();
                match e {
                    MeshEvent::PeerUp { node, .. } if Some(node) == client => {
                        trace.mark("S app: PeerUp event", None)
                    }
                    MeshEvent::Message { from, .. } if Some(from) == client => {
                        trace.mark("S app: Message event", None)
                    }
                    _ => {}
                }
            }
        })
    };
    let seed = server.local_addrs()[0].to_string();
    let (mut totals, mut runs) = (Vec::new(), Vec::new());
    for i in 0..plan.connect_warmup + plan.connect_trials {
        let c = connect_once(probe("C"), &seed, server.node_id(), Some(&trace)).await;
        let marks = trace.take();
        if i >= plan.connect_warmup {
            totals.push(c.done);
            runs.push(marks);
        }
    }
    drain.abort();
    server.shutdown().await;
    println!(
        "  instrumented connect (C = client, S = listener, both on the instrumented transport), \
         {} trials: total p50 {:.3} ms",
        runs.len(),
        ms(pct(&mut totals, 50))
    );
    print_timeline(&runs, "before MeshBuilder::new");
}

async fn bench(plan: Plan) {
    let mut report = Report::default();
    let only = std::env::var("WEFT_BENCH_ONLY").ok();
    let run = |n: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x.trim() == n))
    };
    if run("1") {
        fig_throughput(&plan, &mut report).await;
    }
    if run("2") {
        fig_rtt(&plan, &mut report).await;
    }
    if run("3") {
        fig_connect(&plan, &mut report).await;
        connect_breakdown(&plan, &mut report).await;
    }
    if run("4") {
        fig_message_rate(&plan, &mut report).await;
    }
    if run("5") {
        fig_relay(&plan, &mut report).await;
    }
    println!("\n== weft-mesh (tokio driver) vs raw tokio TCP, loopback, one tokio runtime with 2 workers ==");
    report.print();
    for n in &report.notes {
        println!("  * {n}");
    }
}

fn main() {
    let plan = Plan::detect();
    let started = Instant::now();
    println!(
        "weft-mesh loopback benchmark ({} mode; 64 KiB window {BULK_WINDOW}, 64 B window {SMALL_WINDOW}); \
         load average at start: {}",
        if plan.quick { "quick" } else { "full" },
        loadavg()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Run the whole benchmark on the 2 workers (block_on's own thread would be a third).
    rt.block_on(async { tokio::spawn(bench(plan)).await })
        .expect("benchmark task");
    println!(
        "\nrun time: {:.1} s; load average at end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
