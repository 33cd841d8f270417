//! SWIM membership (with Lifeguard) across the whole stack in the deterministic
//! simulator: detection of a crash, a pause that is refuted, a partition that heals,
//! no false positives under link latency spikes or overloaded nodes, and a graceful
//! leave.
//!
//! Nodes are linked by their seeds only (`target_peers = 0`): a ring with random
//! chords, so most members are not linked to each other and their probes travel
//! relayed, in signed envelopes.
//!
//! Degraded links are routed around: a link silent for 3 s is stalled, one whose
//! round trips (link pings every second) exceed 500 ms is slow; the mesh stops relaying
//! through either and resends what went over it another way, so SWIM's indirect probes
//! and refutations find a path around a stuck connection or an overloaded relay.
//!
//! Every test prints its seed; rerun one with `WEFT_SIM_SEED=<seed> cargo test -p
//! weft-mesh-tests --test membership <name>`. `WEFT_SIM_MINUTES` sets the virtual
//! duration of the 100-node runs (20 minutes by default).

use std::collections::BTreeSet;
use std::time::Duration;

use weft_mesh::membership::{MemberEvent, MemberInfo, MemberState, SwimConfig};
use weft_mesh::node::{NodeConfig, NodeEvent};
use weft_mesh::{Instant, NodeId, Rng};
use weft_mesh_tests::sim::{with_seed, NodeIdx, Sim, SimConfig};

const SEC: Duration = Duration::from_secs(1);

/// Node settings: classical handshakes, links from the seeds only, SWIM's LAN preset.
fn config(sim: &Sim) -> NodeConfig {
    let mut c = sim.classical_config();
    c.target_peers = 0;
    assert_eq!(c.membership, Some(SwimConfig::lan()));
    c
}

/// `n` nodes in a ring (each seeds the next) plus `chords` random seeds each. Returns
/// the nodes and every linked pair.
fn ring_with_chords(
    sim: &mut Sim,
    n: usize,
    chords: usize,
    config: &NodeConfig,
) -> (Vec<NodeIdx>, Vec<(NodeIdx, NodeIdx)>) {
    let nodes = sim.add_nodes(n, config);
    let mut rng = sim.rng();
    let mut pairs = Vec::new();
    for i in 0..n {
        let mut targets = vec![(i + 1) % n];
        for _ in 0..chords {
            targets.push(below(&mut rng, n));
        }
        for j in targets {
            let pair = (nodes[i.min(j)], nodes[i.max(j)]);
            if i != j && !pairs.contains(&pair) {
                sim.seed(nodes[i], nodes[j]);
                pairs.push(pair);
            }
        }
    }
    (nodes, pairs)
}

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// A uniform duration in `lo..=hi` (whole milliseconds).
fn between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    let span = (hi - lo).as_millis() as u64 + 1;
    lo + Duration::from_millis(rng.next_u64() % span)
}

/// What `a` believes about `b`.
fn view(sim: &Sim, a: NodeIdx, b: NodeIdx) -> Option<MemberInfo> {
    let id = sim.node_id(b);
    sim.node(a)?.members().find(|m| m.node == id)
}

/// Whether every node of `nodes` sees every one of `nodes` alive.
fn all_alive(sim: &Sim, nodes: &[NodeIdx]) -> bool {
    let ids: Vec<NodeId> = nodes.iter().map(|&b| sim.node_id(b)).collect();
    nodes.iter().all(|&a| {
        let Some(node) = sim.node(a) else {
            return false;
        };
        let alive: BTreeSet<NodeId> = node
            .members()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.node)
            .collect();
        ids.iter().all(|id| alive.contains(id))
    })
}

/// Run until `pred` holds, checking it every 100 ms of virtual time (the views of
/// 100 nodes are too big to compare after every event), for at most `limit`.
/// Returns the virtual time it took.
fn wait_for(sim: &mut Sim, limit: Duration, pred: impl Fn(&Sim) -> bool) -> Option<Duration> {
    let start = sim.now();
    let step = SEC / 10;
    loop {
        if pred(sim) {
            return Some(sim.now() - start);
        }
        if sim.now() - start >= limit {
            return None;
        }
        sim.run_for(step);
    }
}

/// Form the cluster: run until every node sees every other alive.
fn converge(sim: &mut Sim, nodes: &[NodeIdx], limit: Duration) {
    let took = wait_for(sim, limit, |s| all_alive(s, nodes));
    eprintln!("{} members alive everywhere after {took:?}", nodes.len());
    assert!(took.is_some(), "the cluster did not converge in {limit:?}");
}

fn subject(e: &MemberEvent) -> NodeId {
    match e {
        MemberEvent::Up { node, .. }
        | MemberEvent::Suspect { node, .. }
        | MemberEvent::Alive { node }
        | MemberEvent::Down { node }
        | MemberEvent::Left { node } => *node,
    }
}

/// The membership events `a` reported about `b` at or after `since`.
fn about(sim: &Sim, a: NodeIdx, b: NodeIdx, since: Instant) -> Vec<(Instant, MemberEvent)> {
    let id = sim.node_id(b);
    sim.events(a)
        .iter()
        .filter(|r| r.at >= since)
        .filter_map(|r| match &r.event {
            NodeEvent::Member(e) if subject(e) == id => Some((r.at, e.clone())),
            _ => None,
        })
        .collect()
}

/// Every `Down` any node reported, as (reporter, subject, when).
fn downs(sim: &Sim, nodes: &[NodeIdx]) -> Vec<(NodeIdx, NodeIdx, Instant)> {
    let mut out = Vec::new();
    for &a in nodes {
        for r in sim.events(a) {
            if let NodeEvent::Member(MemberEvent::Down { node }) = &r.event {
                let b = sim.idx_of(node).expect("a simulated node");
                out.push((a, b, r.at));
            }
        }
    }
    out
}

/// How many `Suspect` events any node reported.
fn suspicions(sim: &Sim, nodes: &[NodeIdx]) -> usize {
    nodes
        .iter()
        .map(|&a| {
            sim.count(a, |e| {
                matches!(e, NodeEvent::Member(MemberEvent::Suspect { .. }))
            })
        })
        .sum()
}

/// The suspicion timeout bounds for `n` live members (`SwimConfig::suspicion_mult`
/// × max(1, log10 n) × probe interval, at least `suspicion_min_timeout`, and
/// `suspicion_max_timeout_mult` times that), widened by 1 ms each way: the core
/// computes log10 in 16.16 fixed point.
fn suspicion_bounds(c: &SwimConfig, n: usize) -> (Duration, Duration) {
    let min = c
        .probe_interval
        .mul_f64(f64::from(c.suspicion_mult) * (n as f64).log10().max(1.0))
        .max(c.suspicion_min_timeout);
    let ms = Duration::from_millis(1);
    (min - ms, min * c.suspicion_max_timeout_mult + ms)
}

/// A probe round of a healthy node: `max(probe_interval, 2 × probe_timeout)`.
fn round(c: &SwimConfig) -> Duration {
    c.probe_interval.max(c.probe_timeout * 2)
}

/// The rounds allowed for an update to reach every member: each node that learns it
/// piggybacks it `retransmit_mult × ceil(log10(n + 1))` times, on at least one packet
/// per round.
fn spread_rounds(c: &SwimConfig, n: usize) -> u32 {
    c.retransmit_mult * ((n + 1) as f64).log10().ceil() as u32
}

/// The virtual duration of the long runs: `WEFT_SIM_MINUTES` if set, else `default`.
fn minutes(default: u64) -> Duration {
    let m = std::env::var("WEFT_SIM_MINUTES").map_or(default, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("WEFT_SIM_MINUTES={v:?} is not a number"))
    });
    Duration::from_secs(60 * m)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// 20 nodes; one crashes. Every live member suspects it, then declares it down
/// exactly once; nobody else is declared down.
///
/// Bounds, from the LAN preset (1 s rounds) and N = 20:
/// * detection: SWIM's round-robin makes every member probe the victim at least once
///   in any `2(N − 1)` rounds, and the failed probe is a suspicion one round later;
/// * the first `Down` comes between the suspicion timeout's minimum and maximum
///   (its 4 s floor, above `1 × log10 20` = 1.3 s, and 9 × that = 36 s) after the
///   first suspicion;
/// * every other member follows within `λ × ceil(log10 21)` = 8 rounds (the Dead
///   update's gossip budget) of the first.
#[test]
fn a_crashed_member_is_suspected_then_declared_down_by_every_member() {
    with_seed(
        "a_crashed_member_is_suspected_then_declared_down_by_every_member",
        1,
        |seed| {
            let mut sim = Sim::new(seed, SimConfig::default());
            let node_config = config(&sim);
            let swim = SwimConfig::lan();
            let n = 20;
            let (nodes, _) = ring_with_chords(&mut sim, n, 1, &node_config);
            converge(&mut sim, &nodes, 30 * SEC);
            sim.run_for(10 * SEC);
            let before = suspicions(&sim, &nodes);

            let mut rng = sim.rng();
            let victim = nodes[below(&mut rng, n)];
            let live: Vec<NodeIdx> = nodes.iter().copied().filter(|&x| x != victim).collect();
            let crashed_at = sim.now();
            sim.crash(victim);

            let r = round(&swim);
            let (smin, smax) = suspicion_bounds(&swim, n);
            let spread = r * spread_rounds(&swim, n);
            let detect = r * (2 * (n as u32 - 1));
            let bound = detect + smax + spread;
            let took = wait_for(&mut sim, bound + 10 * SEC, |s| {
                live.iter().all(|&a| {
                    about(s, a, victim, crashed_at)
                        .iter()
                        .any(|(_, e)| matches!(e, MemberEvent::Down { .. }))
                })
            });
            assert!(took.is_some(), "not every member declared {victim} down");
            sim.run_for(30 * SEC); // nothing more may come

            let mut first_suspect = None::<Instant>;
            let mut down_at = Vec::new();
            for &a in &live {
                let events = about(&sim, a, victim, crashed_at);
                let kinds: Vec<&str> = events
                    .iter()
                    .map(|(_, e)| match e {
                        MemberEvent::Suspect { .. } => "suspect",
                        MemberEvent::Down { .. } => "down",
                        MemberEvent::Alive { .. } => "alive",
                        MemberEvent::Up { .. } => "up",
                        MemberEvent::Left { .. } => "left",
                    })
                    .collect();
                assert_eq!(kinds, ["suspect", "down"], "{a} about {victim}");
                let (s, d) = (events[0].0, events[1].0);
                assert!(s < d, "{a}: suspected before down");
                first_suspect = Some(first_suspect.map_or(s, |f| f.min(s)));
                down_at.push((a, d));
                assert_eq!(
                    view(&sim, a, victim).map(|m| m.state),
                    Some(MemberState::Dead)
                );
            }
            let first_suspect = first_suspect.expect("20 members");
            let first_down = down_at.iter().map(|(_, d)| *d).min().expect("members");
            let last_down = down_at.iter().map(|(_, d)| *d).max().expect("members");
            let detected = first_suspect - crashed_at;
            eprintln!(
                "crash of {victim}: first suspicion after {:.2} s, first down after {:.2} s, \
                 last down after {:.2} s (bounds: detection {:.0} s, suspicion {:.1}..{:.1} s, \
                 spread {:.0} s, total {:.1} s)",
                secs(detected),
                secs(first_down - crashed_at),
                secs(last_down - crashed_at),
                secs(detect),
                secs(smin),
                secs(smax),
                secs(spread),
                secs(bound),
            );
            assert!(detected <= detect, "detected after {detected:?}");
            let suspected_for = first_down - first_suspect;
            assert!(
                suspected_for >= smin && suspected_for <= smax,
                "the first down came {suspected_for:?} after the first suspicion"
            );
            assert!(
                last_down - first_down <= spread,
                "the down spread too slowly"
            );
            assert!(last_down - crashed_at <= bound);

            let others: Vec<_> = downs(&sim, &nodes)
                .into_iter()
                .filter(|(_, b, _)| *b != victim)
                .collect();
            assert!(
                others.is_empty(),
                "healthy members declared down: {others:?}"
            );
            let after = suspicions(&sim, &nodes) - before;
            assert_eq!(
                after,
                live.len(),
                "only {victim} was suspected, once by each"
            );
        },
    );
}

/// 20 nodes; one is paused five times for 2.5 s, 15 s apart: longer than a probe
/// round (1 s, of which 0.5 s probe timeout) but well within the suspicion timeout
/// (at least 4 s for N = 20, counted from a failed round, so at least 5 s from the
/// start of the pause; the margin is the time the paused node needs to hear of the
/// suspicion once it resumes and for its refutation to spread). It is suspected,
/// refutes every time (its incarnation rises and every member follows it) and nobody
/// ever declares it, or anyone, down.
#[test]
fn a_paused_member_refutes_its_suspicion_and_is_never_declared_down() {
    with_seed(
        "a_paused_member_refutes_its_suspicion_and_is_never_declared_down",
        2,
        |seed| {
            let mut sim = Sim::new(seed, SimConfig::default());
            let node_config = config(&sim);
            let swim = SwimConfig::lan();
            let n = 20;
            let (nodes, _) = ring_with_chords(&mut sim, n, 1, &node_config);
            converge(&mut sim, &nodes, 30 * SEC);
            sim.run_for(10 * SEC);

            let pause = Duration::from_millis(2500);
            let (smin, _) = suspicion_bounds(&swim, n);
            assert!(pause > round(&swim) && pause < smin);
            let mut rng = sim.rng();
            let sleeper = nodes[below(&mut rng, n)];
            let start = sim.now();
            // The 19 others probe it about once per round between them, so a pause is
            // noticed with probability about 1 - e^-1.5; five make it all but sure.
            let pauses = 5;
            for _ in 0..pauses {
                sim.pause(sleeper, pause);
                sim.run_for(15 * SEC);
            }

            let own = view(&sim, sleeper, sleeper).expect("itself");
            let (stats, _) = sim.node(sleeper).unwrap().membership_stats().unwrap();
            let mut suspected = 0;
            for &a in nodes.iter().filter(|&&a| a != sleeper) {
                let kinds: Vec<bool> = about(&sim, a, sleeper, start)
                    .iter()
                    .map(|(_, e)| match e {
                        MemberEvent::Suspect { .. } => true,
                        MemberEvent::Alive { .. } => false,
                        other => panic!("{a} about {sleeper}: {other:?}"),
                    })
                    .collect();
                // Suspect, Alive, Suspect, Alive...: every suspicion ended in Alive.
                let alternating = kinds.iter().enumerate().all(|(i, s)| *s == (i % 2 == 0));
                assert!(
                    alternating && kinds.len() % 2 == 0,
                    "{a} about {sleeper}: {kinds:?}"
                );
                suspected += kinds.len() / 2;
                let seen = view(&sim, a, sleeper).expect("known");
                assert_eq!(seen.state, MemberState::Alive, "{a}");
                assert_eq!(seen.incarnation, own.incarnation, "{a} follows it");
            }
            eprintln!(
                "{sleeper} paused {pauses} × {pause:?}: suspected {suspected} times by \
                 others, refuted {} times, incarnation {}",
                stats.refutations, own.incarnation
            );
            assert!(suspected > 0, "the pauses were noticed");
            assert!(own.incarnation > 0 && stats.refutations > 0, "it refuted");
            let all = downs(&sim, &nodes);
            assert!(all.is_empty(), "members declared down: {all:?}");
        },
    );
}

/// What [`split_and_heal`] measured.
struct SplitOutcome {
    /// How long the partition lasted (until each side saw the other down).
    split: Duration,
    /// `Down`s of members of the reporter's own side during the partition.
    same_side: Vec<(NodeIdx, NodeIdx, Instant)>,
    /// How long after the heal every node saw all 16 alive.
    merged: Duration,
    /// The bound `merged` was held to.
    bound: Duration,
    /// `Down`s reported after the heal (members flapping while the views merge).
    after_heal: usize,
}

/// 16 nodes in a ring with chords, split into the halves `0..8` and `8..16` (each
/// stays linked through its ring edges) by a silent partition (the cut links stall)
/// until each side has declared every member of the other down, then healed; runs
/// until every node sees all 16 alive again.
///
/// Asserts what the partition must do: each node declares each member of the other
/// side down exactly once, every node sees every member alive within a bound after
/// the heal, and sees each member of the other side come back. The bound: a
/// cut link that idled out is redialed by its seed within `dial_timeout` (a dial in
/// flight into the cut fails after it) plus `redial_max` (the longest seed backoff),
/// and the new link's push-pull starts the merge; a cut link that survived the
/// partition carries no push-pull, so the merge waits for a periodic push-pull
/// (`push_pull_interval`) to tell some node that the other side thinks it dead;
/// either way the refutations then spread within `λ × ceil(log10 17)` = 8 rounds.
fn split_and_heal(seed: u64) -> SplitOutcome {
    let mut sim = Sim::new(seed, SimConfig::default());
    let node_config = config(&sim);
    let swim = SwimConfig::lan();
    let n = 16;
    let (nodes, _) = ring_with_chords(&mut sim, n, 1, &node_config);
    converge(&mut sim, &nodes, 30 * SEC);
    sim.run_for(10 * SEC);

    let (left, right) = (nodes[..n / 2].to_vec(), nodes[n / 2..].to_vec());
    sim.partition(&[left.clone(), right.clone()]);
    let across = |a: NodeIdx| if left.contains(&a) { &right } else { &left };
    let down_across = |s: &Sim| {
        nodes.iter().all(|&a| {
            across(a)
                .iter()
                .all(|&b| !view(s, a, b).is_some_and(|m| m.state.is_live()))
        })
    };
    let split = wait_for(&mut sim, 180 * SEC, down_across);
    let split = split.expect("the sides did not declare each other down in 180 s");
    let during = downs(&sim, &nodes);
    for &a in &nodes {
        for &b in across(a) {
            let d = during.iter().filter(|(x, y, _)| (*x, *y) == (a, b)).count();
            assert_eq!(d, 1, "{a} declared {b} down once");
        }
    }
    let same_side: Vec<_> = during
        .into_iter()
        .filter(|(a, b, _)| left.contains(a) == left.contains(b))
        .collect();

    sim.heal();
    let healed_at = sim.now();
    let redial = sim.config().dial_timeout + node_config.redial_max;
    let bound = redial.max(swim.push_pull_interval) + round(&swim) * spread_rounds(&swim, n);
    let merged = wait_for(&mut sim, bound + 60 * SEC, |s| all_alive(s, &nodes));
    let merged = merged.expect("the views never merged");
    assert!(merged <= bound, "merged {merged:?} after the heal");
    for &a in &nodes {
        for &b in across(a) {
            let back = about(&sim, a, b, healed_at)
                .iter()
                .filter(|(_, e)| matches!(e, MemberEvent::Up { .. }))
                .count();
            assert!(back >= 1, "{a} saw {b} come back");
        }
    }
    let after_heal = downs(&sim, &nodes)
        .iter()
        .filter(|(_, _, at)| *at >= healed_at)
        .count();
    SplitOutcome {
        split,
        same_side,
        merged,
        bound,
        after_heal,
    }
}

/// [`split_and_heal`]: each side declares the other down; after the heal every
/// node's view holds all 16 alive again within the bound.
#[test]
fn a_healed_partition_comes_back_to_one_view() {
    with_seed("a_healed_partition_comes_back_to_one_view", 3, |seed| {
        let o = split_and_heal(seed);
        eprintln!(
            "split {:.1} s, merged {:.1} s after the heal (bound {:.0} s), {} downs within \
             a side during the split, {} downs while merging",
            secs(o.split),
            secs(o.merged),
            secs(o.bound),
            o.same_side.len(),
            o.after_heal
        );
    });
}

/// [`split_and_heal`] in a silent partition (the cut links hold their bytes, no
/// socket closes): no node is declared down by its own side. A node whose routes to
/// its own side crossed the cut must have them moved to links that flow before SWIM's
/// suspicion (at least 2.4 s) runs out; the cut links are reported stalled after 3 s.
#[test]
fn a_silent_partition_takes_down_only_the_other_side() {
    with_seed(
        "a_silent_partition_takes_down_only_the_other_side",
        3,
        |seed| {
            let o = split_and_heal(seed);
            assert!(
                o.same_side.is_empty(),
                "members declared down by their own side: {:?}",
                o.same_side
            );
        },
    );
}

/// Keep `share` of `pairs` stalled for `total`: each stall lasts a random
/// `lengths` (bytes are held and flow again after it) and hits a random link, never
/// two links of one node at once (so every node keeps a live link). Returns the
/// number of stalls.
fn churn_stalls(
    sim: &mut Sim,
    pairs: &[(NodeIdx, NodeIdx)],
    share: f64,
    lengths: (Duration, Duration),
    total: Duration,
) -> usize {
    let mut rng = sim.rng();
    let want = ((pairs.len() as f64) * share).ceil() as usize;
    let end = sim.now() + total;
    let mut active: Vec<(NodeIdx, NodeIdx, Instant)> = Vec::new();
    let mut stalls = 0;
    let tick = SEC / 4;
    while sim.now() < end {
        let now = sim.now();
        active.retain(|&(a, b, until)| {
            if until <= now {
                sim.unstall(a, b);
            }
            until > now
        });
        for _ in 0..pairs.len() {
            if active.len() >= want {
                break;
            }
            let (a, b) = pairs[below(&mut rng, pairs.len())];
            let busy = active
                .iter()
                .any(|&(x, y, _)| [x, y].contains(&a) || [x, y].contains(&b));
            if !busy {
                sim.stall(a, b);
                active.push((a, b, now + between(&mut rng, lengths.0, lengths.1)));
                stalls += 1;
            }
        }
        sim.run_for(tick);
    }
    for (a, b, _) in active {
        sim.unstall(a, b);
    }
    stalls
}

/// 100 nodes in a ring with 2 random chords each while 5 % of their links stall at
/// random, each stall lasting `lengths`, for `total`. Asserts that nobody is declared
/// down, that the stalls were felt (members were suspected and refuted) and that
/// every suspicion ended in a refutation.
fn stalls_without_false_positives(seed: u64, lengths: (Duration, Duration), total: Duration) {
    let mut sim = Sim::new(seed, SimConfig::default());
    let node_config = config(&sim);
    let n = 100;
    let (nodes, pairs) = ring_with_chords(&mut sim, n, 2, &node_config);
    converge(&mut sim, &nodes, 60 * SEC);
    let stalls = churn_stalls(&mut sim, &pairs, 0.05, lengths, total);
    sim.run_for(30 * SEC);
    let refutations: u64 = nodes
        .iter()
        .map(|&a| {
            sim.node(a)
                .unwrap()
                .membership_stats()
                .unwrap()
                .0
                .refutations
        })
        .sum();
    let suspected = suspicions(&sim, &nodes);
    let all = downs(&sim, &nodes);
    eprintln!(
        "{n} nodes, {} links, {stalls} stalls of {:?}..={:?} over {total:?} ({:.1} \
         node-hours): {suspected} suspicion events, {refutations} refutations, {} downs",
        pairs.len(),
        lengths.0,
        lengths.1,
        n as f64 * total.as_secs_f64() / 3600.0,
        all.len()
    );
    assert!(all.is_empty(), "healthy members declared down: {all:?}");
    assert!(suspected > 0 && refutations > 0, "the stalls were felt");
    assert!(all_alive(&sim, &nodes), "every suspicion was refuted");
}

/// 100 nodes for 20 virtual minutes (33 node-hours; about 50 s of real time in
/// debug, `WEFT_SIM_MINUTES=60` for an hour) while 5 % of their links suffer latency
/// spikes: they stall for 0.5 to 3 s at a time, then deliver what they held. Members
/// behind a spiking link are suspected and refute; nobody is declared down.
#[test]
fn latency_spikes_on_links_cause_no_false_positives() {
    with_seed(
        "latency_spikes_on_links_cause_no_false_positives",
        4,
        |seed| {
            stalls_without_false_positives(seed, (SEC / 2, 3 * SEC), minutes(20));
        },
    );
}

/// Like the test above with stalls of 2 to 25 s (below the links' 30 s idle
/// timeout), 20 virtual minutes. A stalled link is not a stalled node: after 3 s of
/// silence the link is reported stalled and the mesh routes SWIM's packets around
/// it. (Before links reported stalls, seed 4 gave 86 false downs: n74, whose link to
/// n29 carried 38 of its 99 routes, was declared down 11 s into that link's stall.)
#[test]
fn stalled_links_cause_no_false_positives() {
    with_seed("stalled_links_cause_no_false_positives", 4, |seed| {
        stalls_without_false_positives(seed, (2 * SEC, 25 * SEC), minutes(20));
    });
}

/// 100 nodes, 4 of them overloaded (they handle every input 1 to 2 s late, their
/// timers on time) for `total`: the healthy ones in a ring with 2 random chords each,
/// the overloaded ones either leaves hanging off one random healthy node each
/// (`leaves`, so that they relay nothing) or members of the ring. Asserts that no
/// healthy node is declared down by anyone, and that Lifeguard was at work: the
/// overloaded nodes' probes failed (they raised suspicions) and raised their health
/// score. The overloaded nodes themselves may be declared down: they answer 1 to 2 s
/// late, beyond the 0.5 s probe timeout.
fn overload_without_false_positives(seed: u64, leaves: bool, total: Duration) {
    let mut sim = Sim::new(seed, SimConfig::default());
    let node_config = config(&sim);
    let (n, k) = (100, 4);
    let ring = if leaves { n - k } else { n };
    let (mut nodes, _) = ring_with_chords(&mut sim, ring, 2, &node_config);
    let mut rng = sim.rng();
    let mut slow = BTreeSet::new();
    while slow.len() < k {
        if leaves {
            let leaf = sim.add_node(node_config.clone());
            sim.seed(leaf, nodes[below(&mut rng, ring)]);
            slow.insert(leaf);
        } else {
            slow.insert(nodes[below(&mut rng, n)]);
        }
    }
    if leaves {
        nodes.extend(&slow);
    }
    converge(&mut sim, &nodes, 60 * SEC);
    for &a in &slow {
        sim.overload(a, SEC, 2 * SEC);
    }
    let end = sim.now() + total;
    let (mut slow_health, mut healthy_health) = (0, 0);
    while sim.now() < end {
        sim.run_for(5 * SEC);
        for &a in &nodes {
            let (_, health) = sim.node(a).unwrap().membership_stats().unwrap();
            if slow.contains(&a) {
                slow_health = slow_health.max(health);
            } else {
                healthy_health = healthy_health.max(health);
            }
        }
    }
    let raised: u64 = slow
        .iter()
        .map(|&a| {
            let (stats, _) = sim.node(a).unwrap().membership_stats().unwrap();
            stats.suspicions_raised
        })
        .sum();
    let (of_slow, of_healthy): (Vec<_>, Vec<_>) = downs(&sim, &nodes)
        .into_iter()
        .partition(|(_, b, _)| slow.contains(b));
    eprintln!(
        "{n} nodes, overloaded {slow:?} (leaves: {leaves}) for {total:?} ({:.1} \
         node-hours): they raised {raised} suspicions; {} suspicion events in all; highest \
         health score {slow_health} (overloaded) / {healthy_health} (healthy); downs of \
         overloaded nodes {}, of healthy ones {}",
        n as f64 * total.as_secs_f64() / 3600.0,
        suspicions(&sim, &nodes),
        of_slow.len(),
        of_healthy.len()
    );
    assert!(
        of_healthy.is_empty(),
        "healthy members declared down: {of_healthy:?}"
    );
    assert!(raised > 0, "the overloaded nodes did accuse others");
    assert!(
        slow_health > 0,
        "Lifeguard raised the overloaded nodes' health score"
    );
}

/// [`overload_without_false_positives`] with the overloaded nodes as leaves, for 20
/// virtual minutes (33 node-hours; about 40 s of real time in debug,
/// `WEFT_SIM_MINUTES=60` for an hour). Lifeguard slows their probing and lengthens
/// their timeouts, and the members they accuse refute: no healthy node goes down.
#[test]
fn overloaded_members_do_not_take_healthy_ones_down() {
    with_seed(
        "overloaded_members_do_not_take_healthy_ones_down",
        5,
        |seed| {
            overload_without_false_positives(seed, true, minutes(20));
        },
    );
}

/// [`overload_without_false_positives`] with the overloaded nodes inside the ring,
/// where they would relay SWIM packets 1 to 2 s late for members that are not linked.
/// Their neighbours measure round trips beyond 500 ms on their links and stop routing
/// through them, so healthy members are reached around them. (Before links measured
/// round trips, seed 8 had n39 declared down by healthy members at 964 s, and seed 7
/// n77 at 67 s.) Seeds 5 and 7 to 11 pass.
#[test]
fn overloaded_relays_do_not_take_their_healthy_neighbours_down() {
    with_seed(
        "overloaded_relays_do_not_take_their_healthy_neighbours_down",
        7,
        |seed| overload_without_false_positives(seed, false, minutes(20)),
    );
}

/// A node that shuts down in order is reported `Left`, never `Down`, by every other
/// member, once.
#[test]
fn a_member_that_shuts_down_is_reported_left_not_down() {
    with_seed(
        "a_member_that_shuts_down_is_reported_left_not_down",
        6,
        |seed| {
            let mut sim = Sim::new(seed, SimConfig::default());
            let node_config = config(&sim);
            let n = 12;
            let (nodes, _) = ring_with_chords(&mut sim, n, 1, &node_config);
            converge(&mut sim, &nodes, 30 * SEC);
            sim.run_for(5 * SEC);
            let mut rng = sim.rng();
            let leaver = nodes[below(&mut rng, n)];
            let rest: Vec<NodeIdx> = nodes.iter().copied().filter(|&x| x != leaver).collect();
            let left_at = sim.now();
            sim.shutdown(leaver);
            let left = |s: &Sim, a: NodeIdx| {
                view(s, a, leaver).is_some_and(|m| m.state == MemberState::Left)
            };
            let took = wait_for(&mut sim, 10 * SEC, |s| rest.iter().all(|&a| left(s, a)));
            eprintln!(
                "{leaver} left; every member knew after {took:?}; stopped: {}",
                !sim.is_up(leaver)
            );
            assert!(took.is_some(), "not every member saw {leaver} leave");
            sim.run_for(60 * SEC); // nothing more may come (past the 60 s dead-member TTL)
            assert!(!sim.is_up(leaver), "the node stopped once its links closed");
            for &a in &rest {
                let events: Vec<MemberEvent> = about(&sim, a, leaver, left_at)
                    .into_iter()
                    .map(|(_, e)| e)
                    .collect();
                assert_eq!(
                    events,
                    [MemberEvent::Left {
                        node: sim.node_id(leaver)
                    }],
                    "{a}"
                );
            }
            let all = downs(&sim, &nodes);
            assert!(all.is_empty(), "members declared down: {all:?}");
        },
    );
}
