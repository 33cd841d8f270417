//! SWIM membership and registry gossip at scale, in virtual time (issue 5).
//!
//! `cargo bench -p weft-mesh-tests --bench membership` runs the full set (about six
//! minutes in release on two cores); without `--bench` (as under `cargo test
//! --benches`) it runs once, small, in about a second. It prints each figure as it is
//! measured, then a table with the targets. Nothing in the table is assumed: every
//! value comes from the run.
//!
//! **N = 10000** is simulated only on request, as it takes about 11 GB of memory and
//! 23 minutes of real time on two cores (5 of them forming the cluster): with
//! `WEFT_BENCH_N10000=1` a formed cluster of 10000 (see below; no join is simulated)
//! runs after the other sizes, and with `WEFT_BENCH_N10000=only` it runs alone (no
//! other figure):
//!
//! ```text
//! WEFT_BENCH_N10000=only cargo bench -p weft-mesh-tests --bench membership
//! ```
//!
//! It goes through the phases below after the join, shortened: idle over 30 s (one
//! push-pull interval), 3 crash trials, 30 s of 5 % link stalls (about 83 node-hours;
//! no 20 % stalls and no pauses), and also prints the real time forming took and the
//! process's peak resident memory.
//!
//! SWIM figures come from [`SwimNet`] (`tests/src/swimnet.rs`): N [`Swim`] members with
//! the LAN preset (1 s probe period), every pair linked directly by 1-5 ms links with a
//! 1 % tail up to 100 ms later. One cluster per N goes through every phase in turn
//! (at N = 1000, every phase after the join runs on a cluster made by [`SwimNet::form`],
//! equivalent to a joined one whose gossip has drained: waiting for the drain there
//! takes over five minutes of real time):
//!
//! * **join**: members 1 and 2 contact member 0, every other member contacts one of
//!   those three seeds, joins spread over N / 100 s; the time from the first contact
//!   until every member knows every other as Alive, then until the gossip queues have
//!   drained (no update on any ping, ack or gossip packet for 10 s; at most 60 s are
//!   waited at N = 1000).
//! * **idle**: packets and bytes each member sends per second over the next 120 s
//!   (SWIM packets only: probes, acks, ping-reqs, push-pull every 30 s; gossip packets go out
//!   only while updates are queued), and the share
//!   of the bytes that is push-pull.
//! * **cluster heap**: the heap of the whole simulation over N (N - 1) member rows.
//! * **crash**: a random member crashes; the time until any member emits `Suspect` for
//!   it, and until every live member has emitted `Down` for it. p50 and p99 over the
//!   trials (nearest rank: with fewer than 100 trials p99 is the worst one).
//! * **false positives**: `Down` events about members that never crashed, while
//!   faults run and until the cluster has converged again after them (at least the
//!   longest suspicion timeout plus 30 s), per node-hour of faults. The figure is the
//!   number of members declared dead (Downs about one member less than 60 s apart
//!   count once) per node-hour; the Down events (one per observer) and the false
//!   `Suspect` events are shown too. Two kinds of faults, 5 % then 20 % of the time
//!   each (stalls and pauses of 0.5-5 s; see `swimnet`):
//!   - **link stalls**, the issue's "connection stalls and latency spikes" (and the
//!     model of the simulator test `latency_spikes_on_links_cause_no_false_positives`):
//!     every link, independently, holds its packets 5 % of the time and delivers them
//!     when the stall ends. The target (zero at 5 %) is checked on these.
//!   - **process pauses**: every member is frozen 5 % of the time (no timer runs, what
//!     reaches it is handled when it resumes). Harsher: a paused member misses every
//!     probe, and with N members 5 % paused, N × 0.05 / 2.75 s pauses start per
//!     second across the cluster, each followed by a suspicion and a refutation to
//!     gossip. Shown without a target; at N = 1000 only 5 %, for 60 s (the cluster
//!     is then already overwhelmed, and simulating it is slow).
//! * **events/s**: packets delivered plus timers fired per second of real time, over
//!   every phase of that N.
//!
//! Then, at N = 1000, **without dedicated gossip**: the crash and the 5 % link-stall
//! figures again with `gossip_nodes` 0 (everything else LAN, 1 s probe period), so that
//! updates ride only on pings, acks and push-pulls, on a cluster made by
//! [`SwimNet::form`] (every member given the full state, no simulated join), to show
//! what the gossip rounds contribute.
//!
//! **memory per member** (the target) is measured on one table alone, by a counting
//! allocator: the heap a [`Swim`] gains by learning N - 1 members (rows, probe order;
//! its gossip queues drained), divided by N - 1. With it, the size of one full-state
//! (push-pull) send. By default N = 10000 is measured this way only: a simulated
//! cluster holds 10^8 rows (the note at the end gives the sizes; see above for
//! `WEFT_BENCH_N10000`).
//!
//! Registry figures model the Node's dissemination with real [`ServiceRegistry`]s and
//! encoded gossip: an overlay where each node links to about 8 others (the union of 4
//! random rings, like `target_peers = 8`); the origin pushes its delta to its neighbours,
//! and each node that learns something forwards the message to its other neighbours in
//! the next round (replies, such as a `Want` for a missing range, take a round too).
//! **rounds** is the hop count until every node holds the update, for origins every node
//! already knew (as after anti-entropy) and for origins nobody had heard of. Every
//! registry also holds 100 other origins, so summaries are hashed as in a real cluster.
//! **repair**: nodes that missed an update each send a `SyncDigest` to one random
//! neighbour, and the two answer each other until done; they must then hold it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant as Wall};

use bytes::Bytes;
use weft_mesh::membership::{MemberEvent, Swim, SwimConfig, SwimStats};
use weft_mesh::registry::{
    Delta, RegistryConfig, ServiceGossip, ServiceInfo, ServiceName, ServiceRegistry, SyncDigest,
    Version,
};
use weft_mesh::{Instant, NodeId, Rng};
use weft_mesh_tests::swimnet::{NetConfig, Observed, SwimNet};

/// Counts the bytes currently allocated (requested sizes, not the allocator's rounding).
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Relaxed);
            ALLOCATED.fetch_add(new_size, Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> usize {
    ALLOCATED.load(Relaxed)
}

const SEC: Duration = Duration::from_secs(1);
/// The Node's gossip budget (`node/registry.rs`).
const GOSSIP_BUDGET: usize = 256 * 1024;
/// Seeds of the joins.
const SEEDS: usize = 3;
/// The crash target: every live member knows, p50, at N = 1000.
const CRASH_TARGET: Duration = Duration::from_secs(8);
/// The memory target, bytes per member.
const MEMORY_TARGET: f64 = 100.0;
/// The registry target: rounds to reach every node at N = 1000.
const ROUNDS_TARGET: u32 = 12;

/// How the cluster of a plan comes to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cluster {
    /// Simulated join; every later phase runs on the joined cluster.
    Joined,
    /// Simulated join (for its figures), then every later phase runs on a
    /// [formed](SwimNet::form) cluster (the joined one's gossip queues take minutes to
    /// drain at 1000).
    JoinedThenFormed,
    /// No join at all: a [formed](SwimNet::form) cluster from the start.
    Formed,
}

/// What one size runs.
struct SwimPlan {
    n: usize,
    crash_trials: usize,
    /// The link-stall runs: (fraction, how long).
    link_runs: Vec<(f64, Duration)>,
    /// The pause runs: (fraction, how long).
    pause_runs: Vec<(f64, Duration)>,
    /// How long to wait for the join's gossip to drain at most.
    settle_max: Duration,
    cluster: Cluster,
    idle_window: Duration,
}

/// The environment variable that adds the N = 10000 cluster (see the module docs).
const N10000_VAR: &str = "WEFT_BENCH_N10000";

/// Whether to simulate the formed cluster of 10000 ([`N10000_VAR`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum N10000 {
    /// Unset, empty or `0` (and always in the quick run).
    Off,
    /// `1` (any other value): after the other SWIM sizes.
    Also,
    /// `only`: the N = 10000 cluster and nothing else.
    Only,
}

impl N10000 {
    fn from_env(quick: bool) -> Self {
        match std::env::var(N10000_VAR) {
            _ if quick => N10000::Off,
            Ok(v) if v == "only" => N10000::Only,
            Ok(v) if !v.is_empty() && v != "0" => N10000::Also,
            _ => N10000::Off,
        }
    }
}

/// One line of the final table.
struct Row {
    figure: String,
    n: usize,
    value: String,
    goal: &'static str,
    met: Option<bool>,
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    started: Wall,
}

impl Report {
    fn new() -> Self {
        Report {
            rows: Vec::new(),
            notes: Vec::new(),
            started: Wall::now(),
        }
    }

    fn row(&mut self, figure: impl Into<String>, n: usize, value: String) {
        self.goal(figure, n, value, "", None);
    }

    fn goal(
        &mut self,
        figure: impl Into<String>,
        n: usize,
        value: String,
        goal: &'static str,
        met: Option<bool>,
    ) {
        let figure = figure.into();
        let at = self.started.elapsed().as_secs_f64();
        println!("  {figure} (N={n}): {value}  [{at:.1} s]");
        self.rows.push(Row {
            figure,
            n,
            value,
            goal,
            met,
        });
    }

    fn note(&mut self, note: String) {
        println!("  note: {note}");
        self.notes.push(note);
    }

    fn print(&self) {
        println!();
        println!("| figure | N | measured | target | |");
        println!("|---|---:|---|---|---|");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            println!(
                "| {} | {} | {} | {} | {} |",
                r.figure, r.n, r.value, r.goal, met
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        println!(
            "whole run: {:.1} s of real time",
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let swim = SwimConfig::lan();
    let net = NetConfig::default();
    println!("SwimConfig (every figure unless stated): {swim:?}");
    println!("NetConfig: {net:?}");
    let n10000 = N10000::from_env(quick);
    let mut plans = if quick {
        vec![SwimPlan {
            n: 30,
            crash_trials: 3,
            link_runs: link_runs(Duration::from_secs(300)),
            pause_runs: vec![
                (0.05, Duration::from_secs(300)),
                (0.2, Duration::from_secs(300)),
            ],
            settle_max: Duration::from_secs(120),
            cluster: Cluster::Joined,
            idle_window: Duration::from_secs(60),
        }]
    } else {
        vec![
            SwimPlan {
                n: 100,
                crash_trials: 20,
                link_runs: link_runs(Duration::from_secs(3600)),
                pause_runs: vec![
                    (0.05, Duration::from_secs(3600)),
                    (0.2, Duration::from_secs(3600)),
                ],
                settle_max: Duration::from_secs(900),
                cluster: Cluster::Joined,
                idle_window: Duration::from_secs(120),
            },
            SwimPlan {
                n: 1000,
                crash_trials: 10,
                link_runs: link_runs(Duration::from_secs(300)),
                pause_runs: vec![(0.05, Duration::from_secs(60))],
                settle_max: Duration::from_secs(60),
                cluster: Cluster::JoinedThenFormed,
                idle_window: Duration::from_secs(120),
            },
        ]
    };
    if n10000 == N10000::Only {
        plans.clear();
    }
    if n10000 != N10000::Off {
        plans.push(SwimPlan {
            n: 10_000,
            crash_trials: 3,
            link_runs: vec![(0.05, Duration::from_secs(30))],
            pause_runs: Vec::new(),
            settle_max: Duration::ZERO,
            cluster: Cluster::Formed,
            idle_window: Duration::from_secs(30),
        });
    }
    let mut report = Report::new();
    let mut join_wall = Duration::ZERO;
    for plan in &plans {
        join_wall = join_wall.max(swim_figures(plan, &swim, &net, &mut report));
    }
    if n10000 == N10000::Only {
        report.print();
        return;
    }
    let variant = if quick {
        (30, 3, Duration::from_secs(300))
    } else {
        (1000, 10, Duration::from_secs(300))
    };
    let mut no_gossip = swim.clone();
    no_gossip.gossip_nodes = 0;
    variant_figures(variant, &no_gossip, &net, &mut report);

    let table_sizes: &[usize] = if quick {
        &[100, 1000]
    } else {
        &[100, 1000, 10_000]
    };
    let mut per_member = 0.0;
    let mut push_pull_bytes = 0;
    for &n in table_sizes {
        (per_member, push_pull_bytes) = table_figures(n, &swim, &mut report);
    }
    for &n in table_sizes {
        registry_figures(n, if quick { 3 } else { 10 }, &mut report);
    }
    if n10000 == N10000::Off && !quick {
        report.note(format!(
            "no SWIM cluster of 10000 simulated (set {N10000_VAR}=1 for one, formed without \
             a join), so no crash or false-positive figures at 10000: its 10^8 rows of \
             {per_member:.0} B (measured above) would take {:.0} GB; every push-pull would \
             carry {} kB (measured above), 20000 of them per 30 s; the 1000-member join took \
             {:.0} s of real time to converge",
            per_member * 1e8 / 1e9,
            push_pull_bytes / 1000,
            join_wall.as_secs_f64(),
        ));
    }
    report.print();
}

/// On one cluster: join, idle cost, memory, crash detection, then false positives under
/// link stalls and pauses; simulation speed over all of it. Returns the real time the
/// join took to converge.
fn swim_figures(
    plan: &SwimPlan,
    swim: &SwimConfig,
    config: &NetConfig,
    report: &mut Report,
) -> Duration {
    let n = plan.n;
    println!("N = {n}");
    let wall = Wall::now();
    let mut heap_before = allocated();
    let mut events = 0;
    let mut join_wall = Duration::ZERO;
    let mut joined_net = None;
    if plan.cluster != Cluster::Formed {
        let (mut net, joined) = joined_cluster(n, n as u64, swim, config);
        join_wall = wall.elapsed();
        let spread = join_spread(n);
        let value = joined.map_or("not converged in 1800 s".into(), |t| {
            format!(
                "{:.1} s (joins spread over {} s)",
                t.as_secs_f64(),
                spread.as_secs()
            )
        });
        report.row("join: all know all", n, value);

        let value = match settle(&mut net, plan.settle_max) {
            Ok(took) => format!("{} s after all knew all", took.as_secs()),
            Err(load) => format!(
                "not within {} s after all knew all (pings, acks and gossip packets still \
                 carried {load:.1} updates each in the last 10 s)",
                plan.settle_max.as_secs()
            ),
        };
        report.row("join: gossip queues drained", n, value);
        if plan.cluster == Cluster::Joined {
            joined_net = Some(net);
        } else {
            let s = net.stats();
            events += s.delivered + s.timers;
        }
    }
    // Real time spent forming and checking the formed cluster (not simulating).
    let mut forming = Duration::ZERO;
    let mut net = match joined_net {
        Some(net) => net,
        None => {
            let started = Wall::now();
            heap_before = allocated();
            let mut net = SwimNet::new(n, n as u64 + 1, swim.clone(), config.clone());
            net.form();
            let formed = started.elapsed();
            assert!(net.converged(), "a formed cluster has converged");
            forming = started.elapsed();
            let what = if plan.cluster == Cluster::Formed {
                "formed cluster (no join simulated)"
            } else {
                "formed cluster for what follows"
            };
            report.row(
                what,
                n,
                format!(
                    "{:.1} s of real time (every member given the full state, queues drained)",
                    formed.as_secs_f64()
                ),
            );
            net
        }
    };
    let before = net.stats();
    net.run_for(plan.idle_window);
    let after = net.stats();
    let per = (n as f64) * plan.idle_window.as_secs_f64();
    let bytes = after.bytes - before.bytes;
    let push_pull = after.push_pull_packets - before.push_pull_packets;
    let push_pull_bytes = after.push_pull_bytes - before.push_pull_bytes;
    let small = (after.small_packets - before.small_packets) as f64 / per;
    let gossip = (after.gossip_packets - before.gossip_packets) as f64 / per;
    report.row(
        "idle: sent per node per s",
        n,
        format!(
            "{:.2} packets, {:.0} B (over {} s; push-pull: {:.2} packets, {:.0} % of the bytes; \
             pings, acks and nacks: {small:.2}; gossip: {gossip:.2})",
            (after.sent - before.sent) as f64 / per,
            bytes as f64 / per,
            plan.idle_window.as_secs(),
            push_pull as f64 / per,
            100.0 * push_pull_bytes as f64 / bytes.max(1) as f64,
        ),
    );
    let idle_downs = count_downs(&net.take_events());
    if idle_downs > 0 {
        report.note(format!("N={n}: {idle_downs} Down events while idle"));
    }
    let heap = allocated().saturating_sub(heap_before);
    report.row(
        "cluster heap / N(N-1)",
        n,
        format!(
            "{:.0} B (rows plus each member's fixed state)",
            heap as f64 / (n * (n - 1)) as f64
        ),
    );
    crash_figures(&mut net, plan.crash_trials, swim, small, "", report);
    let mut faults: Vec<_> = plan
        .link_runs
        .iter()
        .map(|&(fraction, run)| {
            let goal = if fraction == 0.05 { "0 at 5 %" } else { "" };
            (Fault::LinkStalls, fraction, run, goal)
        })
        .collect();
    faults.extend(
        plan.pause_runs
            .iter()
            .map(|&(fraction, run)| (Fault::Pauses, fraction, run, "")),
    );
    for (fault, fraction, run, goal) in faults {
        fault_figures(&mut net, swim, fault, fraction, run, goal, "", report);
    }

    let s = net.stats();
    assert_eq!(s.malformed, 0, "a member refused a packet of another");
    events += s.delivered + s.timers;
    let secs = (wall.elapsed() - forming).as_secs_f64();
    report.row(
        "simulated events per real s",
        n,
        format!(
            "{:.3} M ({events} packets delivered and timers fired in {secs:.1} s)",
            events as f64 / secs / 1e6,
        ),
    );
    if plan.cluster == Cluster::Formed {
        if let Some(peak) = peak_resident() {
            report.row(
                "peak resident memory of the bench so far",
                n,
                format!(
                    "{:.1} GB (VmHWM; the simulation took {:.0} s of real time after forming)",
                    peak as f64 / 1e9,
                    secs
                ),
            );
        }
    }
    join_wall
}

/// The 5 % and 20 % link-stall runs, each lasting `run`.
fn link_runs(run: Duration) -> Vec<(f64, Duration)> {
    vec![(0.05, run), (0.2, run)]
}

/// The process's peak resident set in bytes (Linux's `VmHWM`), if known.
fn peak_resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The variant without dedicated gossip on a formed cluster of `n`: crash trials and 5 %
/// link stalls.
fn variant_figures(
    (n, trials, run): (usize, usize, Duration),
    swim: &SwimConfig,
    config: &NetConfig,
    report: &mut Report,
) {
    println!("N = {n}, gossip_nodes {}", swim.gossip_nodes);
    let mut net = SwimNet::new(n, 7 * n as u64, swim.clone(), config.clone());
    let wall = Wall::now();
    net.form();
    net.run_for(10 * SEC);
    assert!(net.converged(), "a formed cluster has converged");
    assert_eq!(net.stats().piggybacked, 0, "a formed cluster is quiet");
    net.take_events();
    report.row(
        format!("formed cluster, gossip_nodes {}", swim.gossip_nodes),
        n,
        format!(
            "{:.1} s of real time to form (every member given the full state)",
            wall.elapsed().as_secs_f64()
        ),
    );
    let label = format!(", gossip_nodes {}", swim.gossip_nodes);
    let before = net.stats();
    net.run_for(10 * SEC);
    let small = (net.stats().small_packets - before.small_packets) as f64 / (10 * n) as f64;
    crash_figures(&mut net, trials, swim, small, &label, report);
    fault_figures(
        &mut net,
        swim,
        Fault::LinkStalls,
        0.05,
        run,
        "0 at 5 %",
        &label,
        report,
    );
}

/// Joins of `n` members are spread over this long (100 per second).
fn join_spread(n: usize) -> Duration {
    SEC * (n as u32 / 100).max(1)
}

/// `n` members that joined through [`SEEDS`] seeds, and how long until all knew all.
fn joined_cluster(
    n: usize,
    seed: u64,
    swim: &SwimConfig,
    config: &NetConfig,
) -> (SwimNet, Option<Duration>) {
    let mut net = SwimNet::new(n, seed, swim.clone(), config.clone());
    net.join_through_seeds(SEEDS, join_spread(n));
    let joined = net.run_until_converged(Duration::from_secs(1800), SEC / 2);
    net.take_events();
    (net, joined)
}

/// Run 10 s windows until one carries no piggybacked update (the join's Alive updates
/// have all been gossiped their λ·log N times), at most `max`: the time it took, or the
/// updates each ping and ack carried in the last window.
fn settle(net: &mut SwimNet, max: Duration) -> Result<Duration, f64> {
    let start = net.now();
    let mut load = 0.0;
    while net.now() < start + max {
        let before = net.stats();
        net.run_for(Duration::from_secs(10));
        let after = net.stats();
        if after.piggybacked == before.piggybacked {
            net.take_events();
            return Ok(net.now() - start);
        }
        let carriers = after.small_packets + after.gossip_packets
            - before.small_packets
            - before.gossip_packets;
        load = (after.piggybacked - before.piggybacked) as f64 / carriers.max(1) as f64;
    }
    net.take_events();
    Err(load)
}

/// Downs in `events` (all of them unexpected where this is used).
fn count_downs(events: &[Observed]) -> usize {
    events
        .iter()
        .filter(|(_, _, e)| matches!(e, MemberEvent::Down { .. }))
        .count()
}

/// Crash one random member per trial; time to the first suspicion and to every live
/// member's Down. `label` ends the figures' names.
fn crash_figures(
    net: &mut SwimNet,
    trials: usize,
    swim: &SwimConfig,
    small_per_s: f64,
    label: &str,
    report: &mut Report,
) {
    let n = net.len();
    let (mut suspected, mut all_know) = (Vec::new(), Vec::new());
    let mut other_downs = 0;
    let mut unfinished = 0;
    for _ in 0..trials {
        let victim = loop {
            let i = SEEDS + net.random_below(n - SEEDS);
            if !net.is_crashed(i) {
                break i;
            }
        };
        let id = net.id(victim);
        net.crash(victim);
        let start = net.now();
        let observers = net.live();
        let mut down = vec![false; n];
        let (mut downs, mut first, mut last) = (0, None, None);
        while downs < observers && net.now() < start + Duration::from_secs(600) {
            net.run_for(SEC / 10);
            for (at, observer, e) in net.take_events() {
                match e {
                    MemberEvent::Suspect { node, .. } if node == id => {
                        first.get_or_insert(at);
                    }
                    MemberEvent::Down { node } if node == id => {
                        // The first Down of each observer (a member may say it twice).
                        let fresh = !std::mem::replace(&mut down[observer], true);
                        downs += usize::from(fresh);
                        if fresh {
                            last = Some(at);
                        }
                    }
                    MemberEvent::Down { .. } => other_downs += 1,
                    _ => {}
                }
            }
        }
        if let Some(t) = first {
            suspected.push(t - start);
        }
        match last {
            Some(t) if downs == observers => all_know.push(t - start),
            _ => unfinished += 1,
        }
        net.run_for(Duration::from_secs(5));
        other_downs += count_downs(&net.take_events());
    }
    let first_p50 = percentile(&mut suspected, 0.5);
    report.row(
        format!("crash -> first Suspect p50 / p99{label}"),
        n,
        format!("{} ({trials} trials)", p50_p99(&mut suspected)),
    );
    let p50 = percentile(&mut all_know, 0.5);
    let (goal, met) = if n == 1000 {
        ("p50 <= 8 s", Some(p50.is_some_and(|t| t <= CRASH_TARGET)))
    } else {
        ("", None)
    };
    let mut value = p50_p99(&mut all_know);
    if unfinished > 0 {
        value.push_str(&format!(", {unfinished} trials unfinished after 600 s"));
    }
    let (min, max) = suspicion_bounds(swim, n);
    value.push_str(&format!(
        " (suspicion timeout {min:.1} s with {} confirmations, {max:.1} s without)",
        swim.suspicion_confirmations
    ));
    report.goal(
        format!("crash -> all live know (Down) p50 / p99{label}"),
        n,
        value,
        goal,
        met,
    );
    if met == Some(false) && min >= CRASH_TARGET.as_secs_f64() {
        report.note(format!(
            "N={n}{label}: the crash target cannot be met with this configuration: a \
             suspicion alone lasts at least {min:.1} s (suspicion_mult {} x log10 N x probe \
             interval, at least {:.1} s), before which no member declares the crashed one dead",
            swim.suspicion_mult,
            swim.suspicion_min_timeout.as_secs_f64(),
        ));
    }
    if let (Some(_), Some(all), Some(first)) = (met, p50, first_p50) {
        let rest = all.as_secs_f64() - first.as_secs_f64() - min;
        let gossip = if swim.gossip_nodes == 0 {
            "updates ride only on pings, acks and push-pulls".to_string()
        } else {
            format!(
                "updates also travel in gossip packets to {} members every {} ms while any \
                 is queued",
                swim.gossip_nodes,
                swim.gossip_interval.as_millis()
            )
        };
        report.note(format!(
            "N={n}{label}: crash -> all know p50 {:.1} s = first suspicion {:.1} s + the \
             shortest suspicion timeout {min:.1} s (reached with {} confirmations) + \
             {rest:.1} s (waiting for confirmations, and for the Down to reach the last \
             member): {gossip} (members sent {small_per_s:.1} pings, acks and nacks per s \
             idle)",
            all.as_secs_f64(),
            first.as_secs_f64(),
            swim.suspicion_confirmations,
        ));
    }
    if other_downs > 0 {
        report.note(format!(
            "N={n}{label}: {other_downs} Down events about members that had not crashed \
             during the crash trials"
        ));
    }
}

/// Lifeguard's suspicion timeout bounds in seconds (min, max) as `Swim` computes them.
fn suspicion_bounds(swim: &SwimConfig, n: usize) -> (f64, f64) {
    let min = (f64::from(swim.suspicion_mult)
        * (n as f64).log10().max(1.0)
        * swim.probe_interval.as_secs_f64())
    .max(swim.suspicion_min_timeout.as_secs_f64());
    (min, min * f64::from(swim.suspicion_max_timeout_mult))
}

/// A kind of fault for the false-positive runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    LinkStalls,
    Pauses,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::LinkStalls => "link stalls",
            Fault::Pauses => "process pauses",
        }
    }

    fn set(self, net: &mut SwimNet, fraction: f64) {
        match self {
            Fault::LinkStalls => net.set_link_stalls(fraction),
            Fault::Pauses => net.set_pauses(fraction),
        }
    }
}

/// Run `fault` `fraction` of the time for `run`, then without it until the cluster has
/// converged again (at least the longest suspicion timeout plus 30 s); count Downs and
/// Suspects about members that never crashed, per node-hour of faults.
#[allow(clippy::too_many_arguments)]
fn fault_figures(
    net: &mut SwimNet,
    swim: &SwimConfig,
    fault: Fault,
    fraction: f64,
    run: Duration,
    goal: &'static str,
    label: &str,
    report: &mut Report,
) {
    let n = net.len();
    net.take_events();
    let net_before = net.stats();
    let swim_before = total_stats(net);
    let live = net.live();
    fault.set(net, fraction);
    let (mut downs, mut suspects, mut declared) = (0u64, 0u64, 0u64);
    let mut last_down: Vec<Option<Instant>> = vec![None; n];
    let mut tally = |net: &mut SwimNet| {
        for (at, _, e) in net.take_events() {
            let (node, is_down) = match e {
                MemberEvent::Down { node } => (node, true),
                MemberEvent::Suspect { node, .. } => (node, false),
                _ => continue,
            };
            let Some(j) = net.index_of(&node).filter(|&j| !net.is_crashed(j)) else {
                continue;
            };
            if !is_down {
                suspects += 1;
                continue;
            }
            downs += 1;
            // Downs about the same member less than a minute apart: one false death.
            if last_down[j].is_none_or(|t| at - t > Duration::from_secs(60)) {
                declared += 1;
            }
            last_down[j] = Some(at);
        }
    };
    let end = net.now() + run;
    while net.now() < end {
        net.run_for(Duration::from_secs(10).min(end - net.now()));
        tally(net);
    }
    let during = net.stats();
    let swim_during = total_stats(net);
    fault.set(net, 0.0);
    let (_, longest) = suspicion_bounds(swim, n);
    let quiet = Duration::from_secs_f64(longest) + 30 * SEC;
    net.run_for(quiet);
    tally(net);
    let limit = Duration::from_secs(300);
    let reconverged = net.run_until_converged(limit, SEC);
    tally(net);

    let node_hours = live as f64 * run.as_secs_f64() / 3600.0;
    let share = match fault {
        Fault::Pauses => format!(
            "members paused {:.1} % of the time",
            100.0 * (during.paused - net_before.paused).as_secs_f64()
                / (live as f64 * run.as_secs_f64())
        ),
        Fault::LinkStalls => format!(
            "links stalled {:.0} % of the time, {:.1} % of the packets held",
            100.0 * fraction,
            100.0 * (during.held_by_link - net_before.held_by_link) as f64
                / (during.sent - net_before.sent).max(1) as f64
        ),
    };
    let value = format!(
        "{:.3} members declared dead / node-hour ({declared} in {node_hours:.0} node-hours \
         over {} s, by {downs} Down events; {:.1} false Suspect events / node-hour; {share})",
        declared as f64 / node_hours,
        run.as_secs(),
        suspects as f64 / node_hours,
    );
    let figure = format!(
        "false positives, {:.0} % {}{label}",
        100.0 * fraction,
        fault.name()
    );
    let met = (!goal.is_empty()).then_some(downs == 0);
    report.goal(figure, n, value, goal, met);
    if reconverged.is_none() {
        report.note(format!(
            "N={n}{label}: not reconverged {} s after the {:.0} % {} stopped; the next run \
             starts from there",
            (quiet + limit).as_secs(),
            100.0 * fraction,
            fault.name()
        ));
    }
    if downs == 0 {
        return;
    }
    let d = |f: fn(&SwimStats) -> u64| f(&swim_during) - f(&swim_before);
    let per_node_s = (n as f64) * run.as_secs_f64();
    let small = during.small_packets - net_before.small_packets;
    let carriers = small + during.gossip_packets - net_before.gossip_packets;
    let load = (during.piggybacked - net_before.piggybacked) as f64 / carriers.max(1) as f64;
    let on_waking = match fault {
        Fault::Pauses => format!(
            ", {} Downs emitted by members from the timers they ran as they resumed (before \
             the packets held for them)",
            during.downs_on_waking - net_before.downs_on_waking
        ),
        Fault::LinkStalls => String::new(),
    };
    let (min, _) = suspicion_bounds(swim, n);
    report.note(format!(
        "N={n}{label}, {:.0} % {}: {} suspicions raised after failed probes, {} refuted; {} \
         suspicions timed out into Dead locally (the other Downs came by gossip){on_waking}; \
         the shortest suspicion here is {min:.1} s; pings, acks and gossip packets carried \
         {load:.1} updates each on average (0 when idle, about 20 fit in 1400 B); each member sent {:.1} \
         packets, {:.0} B per s",
        100.0 * fraction,
        fault.name(),
        d(|s| s.suspicions_raised),
        d(|s| s.refutations),
        d(|s| s.declared_down),
        d(|s| s.packets_out) as f64 / per_node_s,
        d(|s| s.bytes_out) as f64 / per_node_s,
    ));
}

/// Every member's counters added up.
fn total_stats(net: &SwimNet) -> SwimStats {
    let mut t = SwimStats::default();
    for i in 0..net.len() {
        let s = net.swim(i).stats();
        t.suspicions_raised += s.suspicions_raised;
        t.refutations += s.refutations;
        t.declared_down += s.declared_down;
        t.packets_out += s.packets_out;
        t.bytes_out += s.bytes_out;
    }
    t
}

/// `p50 / p99` in seconds (nearest rank), or `-` with no sample.
fn p50_p99(samples: &mut [Duration]) -> String {
    match (percentile(samples, 0.5), percentile(samples, 0.99)) {
        (Some(a), Some(b)) => format!("{:.2} s / {:.2} s", a.as_secs_f64(), b.as_secs_f64()),
        _ => "-".into(),
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Option<Duration> {
    samples.sort();
    let rank = (p * samples.len() as f64).ceil() as usize;
    samples.get(rank.max(1) - 1).copied()
}

/// One member's table holding `n - 1` others: heap per member, and the size of one
/// full-state (push-pull) send. Returns both.
fn table_figures(n: usize, swim: &SwimConfig, report: &mut Report) -> (f64, usize) {
    let (per_member, mut table, last) = one_table(n, swim, true);
    report.goal(
        "memory per member",
        n,
        format!("{per_member:.0} B (one table of N-1 rows)"),
        "<= 100 B",
        Some(per_member <= MEMORY_TARGET),
    );
    if per_member > MEMORY_TARGET && n == 1000 {
        let (bare, _, _) = one_table(n, swim, false);
        report.note(format!(
            "memory at N={n}: {per_member:.0} B per member, of which {:.0} B is the \
             advertised address (one string of about 21 B, measured against a table of \
             members that advertise none) and {bare:.0} B the rest: the 32 B id, the row \
             (state, incarnation, address list, since, heard), the B-tree's slack and the \
             32 B id in the probe order",
            per_member - bare
        ));
    }
    let now = Instant::ZERO;
    table.contact(now, last);
    let (mut packets, mut bytes) = (0, 0);
    while let Some(t) = table.poll_transmit(now) {
        packets += 1;
        bytes += t.packet.len();
    }
    report.row(
        "full-state (push-pull) send",
        n,
        format!(
            "{packets} packets, {bytes} B (each member sends one and answers about one per \
             30 s: ~{:.0} B/s)",
            2.0 * bytes as f64 / 30.0
        ),
    );
    (per_member, bytes)
}

/// A [`Swim`] that learned `n - 1` members (each advertising one address, or none)
/// from their joins, its gossip queue drained: the heap it gained per member, the
/// table, and the last member's id.
fn one_table(n: usize, swim: &SwimConfig, addrs: bool) -> (f64, Swim, NodeId) {
    let mut rng = Rng::from_seed([n as u8; 32]);
    let now = Instant::ZERO;
    let me = NodeId::from_bytes(rng.array());
    let mut table = Swim::new(
        me,
        vec!["tcp://10.0.0.1:7000".into()],
        swim.clone(),
        rng.fork(),
    );
    table.handle_timeout(now);
    let before = allocated();
    let mut last = me;
    for i in 1..n {
        let id = NodeId::from_bytes(rng.array());
        let addr = format!("tcp://10.{}.{}.{}:7000", i >> 16, (i >> 8) & 255, i & 255);
        let addrs = if addrs { vec![addr] } else { Vec::new() };
        let mut joiner = Swim::new(id, addrs, swim.clone(), rng.fork());
        joiner.contact(now, me);
        let join = joiner.poll_transmit(now).expect("a push-pull");
        table
            .handle_packet(now, id, &join.packet)
            .expect("well formed");
        while table.poll_event().is_some() {}
        last = id;
    }
    // Send the queued replies, then ping the table until its acks carry no update:
    // every piggyback queue is then empty and only the table remains.
    while table.poll_transmit(now).is_some() {}
    for seq in 1u32.. {
        let mut ping = vec![0x01];
        ping.extend_from_slice(&seq.to_be_bytes());
        ping.push(0);
        table.handle_packet(now, last, &ping).expect("a ping");
        let ack = table.poll_transmit(now).expect("an ack");
        if ack.packet.len() == ping.len() {
            break;
        }
    }
    let per_member = allocated().saturating_sub(before) as f64 / (n - 1) as f64;
    (per_member, table, last)
}
/// An overlay of about `2 × rings` links per node: the union of random rings.
fn overlay(n: usize, rings: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for _ in 0..rings {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for k in 0..n {
            let (a, b) = (order[k], order[(k + 1) % n]);
            if a != b && !adj[a].contains(&b) {
                adj[a].push(b);
                adj[b].push(a);
            }
        }
    }
    adj
}

/// Origins every registry holds besides the flooded ones: more than `MAX_SUMMARY_LIST`
/// (64), so that summaries are hashed as in a real cluster.
const BACKGROUND_ORIGINS: usize = 100;

/// The registries of an overlay.
struct Overlay {
    adj: Vec<Vec<usize>>,
    ids: Vec<NodeId>,
    maps: Vec<ServiceRegistry>,
}

/// What one flood took.
#[derive(Default)]
struct Flood {
    /// Rounds until every node not told to miss it held the update.
    rounds: Option<u32>,
    messages: usize,
    bytes: usize,
}

impl Overlay {
    /// `n` nodes on [`overlay`] links, each registry holding the background origins
    /// and, at their initial (empty) version, the `known` nodes' origins.
    fn new(n: usize, known: &[usize], rng: &mut Rng) -> Self {
        let now = Instant::ZERO;
        let adj = overlay(n, 4, rng);
        let ids: Vec<NodeId> = (0..n).map(|_| NodeId::from_bytes(rng.array())).collect();
        let epoch = |i: usize| 1_700_000_000_000 + i as u64;
        let mut deltas: Vec<_> = known
            .iter()
            .map(|&i| {
                let map = ServiceRegistry::new(ids[i], epoch(i), RegistryConfig::default());
                full_delta(&map)
            })
            .collect();
        for i in 0..BACKGROUND_ORIGINS {
            let id = NodeId::from_bytes(rng.array());
            let mut map = ServiceRegistry::new(id, 1_600_000_000_000, RegistryConfig::default());
            let name = ServiceName::new(format!("background-{i}")).expect("a name");
            map.insert(now, name, service_info()).expect("insert");
            deltas.push(full_delta(&map));
        }
        let maps = (0..n)
            .map(|i| {
                let mut map = ServiceRegistry::new(ids[i], epoch(i), RegistryConfig::default());
                for delta in deltas.iter().filter(|d| d.origin != ids[i]) {
                    map.apply(now, delta.clone()).expect("a known origin");
                }
                map
            })
            .collect();
        Overlay { adj, ids, maps }
    }

    /// `origin` advertises `name` and pushes the delta to its neighbours; every node that
    /// learns something forwards the message to its other neighbours the next round.
    /// Nodes marked in `missed` drop everything.
    fn flood(&mut self, origin: usize, name: &ServiceName, missed: &[bool]) -> Flood {
        let now = Instant::ZERO;
        let origin_id = self.ids[origin];
        let map = &mut self.maps[origin];
        let before = map.version(&origin_id).expect("own origin");
        map.insert(now, name.clone(), service_info())
            .expect("insert");
        let delta = map
            .delta_since(&origin_id, before, GOSSIP_BUDGET)
            .expect("a delta");
        let message = ServiceGossip::Deltas(vec![delta]).encode();
        let mut frontier: Vec<(usize, usize, Bytes)> = self.adj[origin]
            .iter()
            .map(|&b| (b, origin, message.clone()))
            .collect();
        let want = missed.iter().filter(|m| !**m).count();
        let (mut holders, mut round) = (1, 0);
        let mut flood = Flood::default();
        while !frontier.is_empty() {
            round += 1;
            let mut next = Vec::new();
            for (to, from, payload) in frontier {
                flood.messages += 1;
                flood.bytes += payload.len();
                if missed[to] {
                    continue;
                }
                let gossip = ServiceGossip::decode(&payload).expect("well formed");
                let had = self.maps[to].version(&origin_id);
                let handled = self.maps[to].handle(now, gossip, GOSSIP_BUDGET);
                for reply in handled.replies {
                    next.push((from, to, reply.encode()));
                }
                if self.maps[to].version(&origin_id) > had {
                    holders += 1;
                    for &peer in self.adj[to].iter().filter(|&&p| p != from) {
                        next.push((peer, to, payload.clone()));
                    }
                }
            }
            if holders == want && flood.rounds.is_none() {
                flood.rounds = Some(round);
            }
            frontier = next;
        }
        flood
    }

    /// Node `m` sends a SyncDigest to `helper` and the two answer each other until
    /// neither has anything to say: the messages exchanged and their bytes.
    fn exchange(&mut self, m: usize, helper: usize) -> (usize, usize) {
        let now = Instant::ZERO;
        let digest = SyncDigest {
            services: Some(self.maps[m].summary()),
            ..SyncDigest::default()
        }
        .encode();
        let mut bytes = digest.len();
        let summary = SyncDigest::decode(&digest)
            .and_then(|d| d.services)
            .expect("a summary");
        let mut in_flight: Vec<Bytes> = self.maps[helper]
            .answer_summary(&summary, GOSSIP_BUDGET)
            .iter()
            .map(ServiceGossip::encode)
            .collect();
        let (mut messages, mut to) = (1, m);
        while !in_flight.is_empty() && messages < 16 {
            messages += 1;
            let mut replies = Vec::new();
            for message in in_flight {
                bytes += message.len();
                let gossip = ServiceGossip::decode(&message).expect("well formed");
                let handled = self.maps[to].handle(now, gossip, GOSSIP_BUDGET);
                replies.extend(handled.replies.iter().map(ServiceGossip::encode));
            }
            in_flight = replies;
            to = if to == m { helper } else { m };
        }
        (messages, bytes)
    }
}

/// A map's whole origin as one delta (what anti-entropy sends a node that lacks it).
fn full_delta(map: &ServiceRegistry) -> Delta<ServiceName, ServiceInfo> {
    map.delta_since(&map.me(), Version::ZERO, GOSSIP_BUDGET)
        .expect("a full delta")
}

/// The value every service is advertised with.
fn service_info() -> ServiceInfo {
    ServiceInfo::new(&b"tcp://10.0.0.1:7000 v1"[..]).expect("metadata")
}

/// `count` distinct random indices below `n`.
fn distinct(count: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::with_capacity(count);
    while picked.len() < count.min(n) {
        let i = (rng.next_u64() % n as u64) as usize;
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
}

/// Floods from `floods` origins every node already knew (anti-entropy ran since they
/// joined), from 3 that nobody had heard of, and one that some nodes miss and then
/// repair by one anti-entropy exchange each.
fn registry_figures(n: usize, floods: usize, report: &mut Report) {
    let mut rng = Rng::from_seed([0xa0 ^ (n as u8); 32]);
    let origins = distinct(floods + 4, n, &mut rng);
    let (known, unknown) = origins.split_at(floods + 1);
    let mut net = Overlay::new(n, known, &mut rng);
    let nobody = vec![false; n];
    let mut total = Flood::default();
    let mut flood_all = |net: &mut Overlay, origins: &[usize], tag: &str| {
        let mut rounds: Vec<u32> = origins
            .iter()
            .enumerate()
            .map(|(k, &o)| {
                let name = ServiceName::new(format!("{tag}-{k}")).expect("a name");
                let f = net.flood(o, &name, &nobody);
                total.messages += f.messages;
                total.bytes += f.bytes;
                f.rounds.unwrap_or(u32::MAX)
            })
            .collect();
        rounds.sort();
        rounds
    };
    let steady = flood_all(&mut net, &known[..floods], "known");
    let fresh = flood_all(&mut net, unknown, "unknown");
    let degree = net.adj.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    let updates = (floods + unknown.len()) as f64;
    let worst = steady.last().copied().unwrap_or(u32::MAX);
    let value = format!(
        "median {}, worst {worst} of {floods} updates (degree {degree:.1}; {:.1} messages, {:.0} \
         B sent per node per update)",
        steady[steady.len() / 2],
        total.messages as f64 / (n as f64 * updates),
        total.bytes as f64 / (n as f64 * updates),
    );
    let (goal, met) = if n == 1000 {
        ("<= 12 at 1000", Some(worst <= ROUNDS_TARGET))
    } else {
        ("", None)
    };
    report.goal("registry update: rounds to all", n, value, goal, met);
    report.row(
        "registry update from an unknown origin",
        n,
        format!(
            "rounds {:?} (receivers ask the sender for the missing range first)",
            fresh
        ),
    );

    // Repair: these nodes miss the last flood, then each sends a SyncDigest to one
    // random neighbour that did not.
    let mut missed = vec![false; n];
    let origin = known[floods];
    let missers: Vec<usize> = distinct((n / 100).clamp(3, 20) + 1, n, &mut rng)
        .into_iter()
        .filter(|&m| m != origin)
        .take((n / 100).clamp(3, 20))
        .collect();
    for &m in &missers {
        missed[m] = true;
    }
    let key = ServiceName::new("missed").expect("a name");
    net.flood(origin, &key, &missed);
    let (mut repaired, mut bytes, mut most) = (0, 0, 0);
    for &m in &missers {
        let helpers: Vec<usize> = net.adj[m].iter().copied().filter(|&p| !missed[p]).collect();
        let Some(&helper) = helpers.get((rng.next_u64() % helpers.len().max(1) as u64) as usize)
        else {
            continue;
        };
        let (messages, b) = net.exchange(m, helper);
        bytes += b;
        if net.maps[m].get(&net.ids[origin], &key).is_some() {
            repaired += 1;
            most = most.max(messages);
        }
    }
    report.goal(
        "registry repair: caught up in one exchange",
        n,
        format!(
            "{repaired} of {} nodes that missed an update, in at most {most} messages \
             (SyncDigest, Digest, Want, Deltas when the summary is hashed; {:.0} B per \
             exchange, registries of {} origins)",
            missers.len(),
            bytes as f64 / missers.len() as f64,
            net.maps[origin].origins().count(),
        ),
        "all",
        Some(repaired == missers.len()),
    );
}
