//! Duplicate-filter benchmark: `DedupFilter::check_and_insert` operations per second
//! on the traffic shapes a relay sees, and the filter's bytes per entry.
//!
//! ```text
//! cargo bench -p weft-mesh --bench dedup              # full run (release)
//! WEFT_BENCH_QUICK=1 cargo bench -p weft-mesh --bench dedup
//! cargo test -p weft-mesh --benches                    # quick run (see below)
//! ```
//!
//! Quick mode runs every figure with few operations and one repetition. It is chosen
//! when `WEFT_BENCH_QUICK` is set (to anything but `0`), or when the binary is started
//! without the `--bench` argument: `cargo bench` passes `--bench` to `harness = false`
//! targets, `cargo test --benches` / `cargo test --bench dedup` pass nothing. Quick
//! figures (unoptimised core under `cargo test`) are not meaningful.
//!
//! Figures, all with the default configuration (60 s TTL, 10 000 entries) unless said:
//! 1. all-new ids, time moving 1 µs per operation: the filter is full after the first
//!    10 000, so every operation is a lookup miss, an eviction and an insertion (the
//!    flood case).
//! 2. all-new ids, time moving 12 ms per operation: 5 000 ids live per TTL, so the
//!    oldest leave by expiry instead of eviction (steady legitimate traffic).
//! 3. all-duplicate ids: the filter holds 10 000 ids, every operation is a hit.
//! 4. mixed: half new ids, half copies of an id inserted among the last 5 000.
//! 5. bytes per entry (`memory_bytes() / capacity`) for several capacities.
//!
//! Ids are random 16-byte values drawn before timing starts.

use std::hint::black_box;
use std::time::{Duration, Instant as Clock};

use weft_mesh::dedup::{DedupConfig, DedupFilter, EnvelopeId, INDEX_BUCKET_BYTES, RING_SLOT_BYTES};
use weft_mesh::{Instant, Rng};

struct Mode {
    quick: bool,
    /// Timed repetitions of each figure (the median is reported).
    reps: usize,
    /// Operations per repetition.
    ops: usize,
}

impl Mode {
    fn detect() -> Mode {
        let env_quick = std::env::var_os("WEFT_BENCH_QUICK").is_some_and(|v| v != "0");
        let under_bench = std::env::args().any(|a| a == "--bench");
        if env_quick || !under_bench {
            Mode {
                quick: true,
                reps: 1,
                ops: 20_000,
            }
        } else {
            Mode {
                quick: false,
                reps: 15,
                ops: 2_000_000,
            }
        }
    }
}

/// Median, first and third quartile of a list of rates.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[n / 4], v[n / 2], v[(3 * n) / 4])
}

/// One operation of a prepared workload.
#[derive(Clone, Copy)]
struct Op {
    now: Instant,
    id: EnvelopeId,
}

/// A workload: ids to insert before timing (not timed), then the timed operations and
/// how many of them must return `true`.
struct Workload {
    name: &'static str,
    config: DedupConfig,
    warmup: Vec<Op>,
    timed: Vec<Op>,
    expect_new: usize,
}

fn random_ids(rng: &mut Rng, n: usize) -> Vec<EnvelopeId> {
    (0..n).map(|_| rng.array()).collect()
}

fn workloads(mode: &Mode, rng: &mut Rng) -> Vec<Workload> {
    let config = DedupConfig::default();
    let cap = config.capacity;
    let ops = mode.ops;
    let us = Instant::from_micros;
    let mut out = Vec::new();

    // 1. all new, flood: warm up to full, then every op evicts.
    let ids = random_ids(rng, cap + ops);
    let mut all: Vec<Op> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| Op {
            now: us(i as u64),
            id,
        })
        .collect();
    let timed = all.split_off(cap);
    out.push(Workload {
        name: "all new, full (evict oldest)",
        config,
        warmup: all,
        timed,
        expect_new: ops,
    });

    // 2. all new, expiry-bound: 12 ms apart, 60 s TTL → 5 000 live.
    let step = 12_000u64;
    let ids = random_ids(rng, cap + ops);
    let mut all: Vec<Op> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| Op {
            now: us(i as u64 * step),
            id,
        })
        .collect();
    let timed = all.split_off(cap);
    out.push(Workload {
        name: "all new, half full (expire oldest)",
        config,
        warmup: all,
        timed,
        expect_new: ops,
    });

    // 3. all duplicates: 10 000 held ids, queried in a random order.
    let held = random_ids(rng, cap);
    let warmup: Vec<Op> = held.iter().map(|&id| Op { now: us(0), id }).collect();
    let timed: Vec<Op> = (0..ops)
        .map(|_| Op {
            now: us(1),
            id: held[(rng.next_u64() % cap as u64) as usize],
        })
        .collect();
    out.push(Workload {
        name: "all duplicate",
        config,
        warmup,
        timed,
        expect_new: 0,
    });

    // 4. mixed: a fair coin picks a fresh id or a copy of one of the last 5 000 fresh
    //    ids (still held: 10 000 capacity, nothing near the TTL).
    let fresh = random_ids(rng, cap + ops);
    let warmup: Vec<Op> = fresh[..cap]
        .iter()
        .enumerate()
        .map(|(i, &id)| Op {
            now: us(i as u64),
            id,
        })
        .collect();
    let mut next = cap;
    let mut timed = Vec::with_capacity(ops);
    let mut expect_new = 0;
    for i in 0..ops {
        let now = us((cap + i) as u64);
        let r = rng.next_u64();
        if r & 1 == 0 {
            timed.push(Op {
                now,
                id: fresh[next],
            });
            next += 1;
            expect_new += 1;
        } else {
            let back = 1 + ((r >> 1) % (cap as u64 / 2)) as usize;
            timed.push(Op {
                now,
                id: fresh[next - back],
            });
        }
    }
    out.push(Workload {
        name: "mixed (50% duplicate)",
        config,
        warmup,
        timed,
        expect_new,
    });
    out
}

/// Operations per second of one repetition of `w`, on a fresh filter.
fn run_once(w: &Workload, rng: &mut Rng) -> f64 {
    let mut filter = DedupFilter::new(w.config, rng);
    for op in &w.warmup {
        filter.check_and_insert(op.now, op.id);
    }
    let bytes = filter.memory_bytes();
    let start = Clock::now();
    let mut new = 0usize;
    for op in &w.timed {
        new += usize::from(filter.check_and_insert(black_box(op.now), black_box(op.id)));
    }
    let elapsed = start.elapsed();
    assert_eq!(new, w.expect_new, "{}: wrong number of new ids", w.name);
    assert_eq!(filter.memory_bytes(), bytes, "{}: memory grew", w.name);
    assert!(filter.len() <= filter.capacity());
    w.timed.len() as f64 / elapsed.max(Duration::from_nanos(1)).as_secs_f64()
}

fn main() {
    let mode = Mode::detect();
    let mut rng = Rng::from_seed([0xDE; 32]);
    println!(
        "dedup filter benchmark{} ({} ops per repetition, {} repetition{}, median [q1, q3])",
        if mode.quick {
            " (QUICK MODE: figures not meaningful)"
        } else {
            ""
        },
        mode.ops,
        mode.reps,
        if mode.reps == 1 { "" } else { "s" },
    );
    println!();
    println!("check_and_insert, 60 s TTL, 10 000 entries:");
    for w in workloads(&mode, &mut rng) {
        let rates: Vec<f64> = (0..mode.reps).map(|_| run_once(&w, &mut rng)).collect();
        let (q1, median, q3) = quartiles(rates);
        println!(
            "  {:<36} {:>7.2} M ops/s [{:.2}, {:.2}]  ({:.1} ns/op)",
            w.name,
            median / 1e6,
            q1 / 1e6,
            q3 / 1e6,
            1e9 / median
        );
    }

    println!();
    println!(
        "memory (ring slot {RING_SLOT_BYTES} B per entry, index bucket {INDEX_BUCKET_BYTES} B, \
         index sized for 2 x capacity):"
    );
    for capacity in [100usize, 1_000, 10_000, 100_000] {
        let filter = DedupFilter::new(
            DedupConfig::new(Duration::from_secs(60), capacity),
            &mut rng,
        );
        let bytes = filter.memory_bytes();
        println!(
            "  capacity {:>7}: {:>9} B total, {:>5.1} B per entry{}",
            capacity,
            bytes,
            bytes as f64 / capacity as f64,
            if capacity == 10_000 {
                "  (default)"
            } else {
                ""
            }
        );
    }
}
