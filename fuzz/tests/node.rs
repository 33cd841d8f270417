//! A fuzz harness of whole [`Node`]s: three nodes with fixed identities and seeded RNGs,
//! joined by byte pipes, under a fuzz-chosen script.
//!
//! The script moves the clock (in steps, in large jumps that fire every timer in order
//! on the way, or without running timers at all), pulls and delivers the bytes of each
//! connection (whole, in chunks, or mutated: bit flips, dropped bytes, inserted fuzz
//! bytes, a duplicated or replayed record, a forged record), answers or refuses the
//! nodes' dials, lets strangers connect and inject bytes, resets connections, and has the
//! applications send messages, close links and shut down. After the script the network
//! heals (every byte delivered, every dial answered) and time runs on past every
//! message deadline.
//!
//! The harness runs with the core's `fuzzing` null cipher switched on
//! ([`RecordConfig::set_fuzzing_null_cipher`]): records carry their plaintext and a fixed
//! tag, so a flipped, truncated or forged record reaches the frame decoder, the envelope
//! decoder, relaying and the application instead of stopping at `DecryptFailed`. The
//! handshake stays real, so strangers cannot pose as one of the three nodes.
//!
//! After every step it asserts (see [`Harness::check_node`] and [`Harness::on_event`]):
//!
//! * no panic, and nothing asks the harness to do something impossible (a `Transmit` or
//!   `Close` for a connection the node does not have, a `Dial` reusing a live id);
//! * a node never has more than `max_links` connections (counted from its `Dial`s,
//!   `accept`s and `Close`s; `is_idle` agrees) nor more than `max_handshakes` still
//!   handshaking, and `accept` refuses exactly at `max_links`;
//! * `poll_timeout` is never before the latest `now` the node was given, and a
//!   `handle_timeout` at that deadline makes progress (at most a few calls at one instant);
//! * bounded memory: pulling a connection until `poll_transmit` says `None` yields at most
//!   `2 × max_queued_bytes + 128 KiB`, and a node never has bytes to send on a connection
//!   it did not announce with `Transmit` (unless a timer is overdue);
//! * **no duplicate delivery**: each sent payload carries a unique counter, and a
//!   `NodeEvent::Message` with a given counter is delivered at most once per receiver
//!   (see [`delivery_identity`]); a node that never received mutated bytes only delivers
//!   payloads that were sent to it, by the node it names as the sender;
//! * every `MessageId` returned by `send` is answered by `Delivered` or `SendFailed` at
//!   most once, and (after the healing phase) exactly once; `Delivered` between nodes
//!   that saw no mutated bytes means the receiver really delivered that message.
//!
//! * replication: each node keeps a chain (nodes 0 and 1 on one chain, node 2 forked)
//!   and a tree, and the script may write to them; every fork reported carries valid
//!   evidence, and an untainted node's own starting chain is never replaced (nothing is
//!   appended across a fork).
//!
//! Mutated bytes taint the node they reach: a tainted node may deliver forged payloads
//! (the null cipher authenticates nothing), so only the structural checks apply to it.
//!
//! # Running it
//!
//! As a test (a bounded number of random inputs, about one second; what CI does):
//!
//! ```text
//! cargo test -p weft-mesh-fuzz --test node
//! BOLERO_RANDOM_TEST_TIME_MS=60000 cargo test -p weft-mesh-fuzz --test node -- --nocapture
//! ```
//!
//! `--nocapture` also prints what the runs reached: how many delivered messages (and how
//! many of those at a node that had received mutated bytes), relayed envelopes, dropped
//! duplicates, and closed a link with a record-layer (`0x02xx`) reason, a frame-level one
//! in particular (the proof that mutations get past the record cipher).
//!
//! As a coverage-guided fuzzer (cargo-bolero 0.13 and a nightly toolchain; `-l` and
//! `-len_control=0` let libFuzzer try long scripts at once; crashes land in
//! `fuzz/tests/__fuzz__/node_script/crashes`, which the test above replays from then on):
//!
//! ```text
//! cargo bolero test -p weft-mesh-fuzz --toolchain nightly -T 600s -l 8192 -E=-len_control=0 node_script
//! ```
//!
//! A failing input is printed as `(Settings, Vec<Op>)`. `WEFT_FUZZ_TRACE=1` makes a
//! failing run print its last few thousand steps (ops, the nodes' actions and events,
//! bytes pulled and delivered). To pin it as a test, paste the input into a `#[test]` that
//! calls [`run`], with `use Op::*; use How::*; use Forged::*;` and `vec![..]` around byte
//! lists.
//!
//! Two core bugs it found are pinned as tests at the end of this file (and fixed):
//! `a_relay_cannot_speak_for_itself_with_an_unverified_envelope` and
//! `an_oversized_message_does_not_make_the_node_redial_in_a_loop`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bolero::generator::bolero_generator::Driver;
use bolero::{check, TypeGenerator};
use weft_mesh::frame::{self, FrameType};
use weft_mesh::link::MAX_TRANSMIT;
use weft_mesh::mesh::Target;
use weft_mesh::node::{
    AcceptError, Action, ConnId, MessageId, Node, NodeConfig, NodeEvent, NodeSendError, SyncEvent,
};
use weft_mesh::record::{RecordConfig, TAG_LEN};
use weft_mesh::sync::chain::{ChainStore, MemoryChain};
use weft_mesh::sync::merkle::{KvStore, MemoryStore};
use weft_mesh::{CloseReason, Identity, Instant, NodeId, Rng};
use weft_mesh_fuzz::{spread, GENESIS};

/// Nodes in every run.
const NODES: usize = 3;
/// Most `handle_timeout` calls at one instant before the node is declared spinning.
const MAX_SPINS: u32 = 8;
/// Most timer instants one clock move may fire before it is declared a timer storm.
const MAX_FIRINGS: u32 = 50_000;
/// Most rounds of [`Harness::pump`] before the nodes are declared never quiet.
const PUMP_ROUNDS: usize = 1_000;
/// Most records `poll_transmit` may hand out in one pull of one connection.
const MAX_PULLS: usize = 100_000;
/// Records of each connection end kept for replays.
const HISTORY: usize = 64;
/// Payloads of delivered messages start with this, then the counter.
const MAGIC: &[u8; 4] = b"wfz\x01";
/// Payloads of forged envelopes start with this, then the relay and the claimed source.
const FORGED: &[u8; 6] = b"FORGED";

static IDENTITIES: LazyLock<Vec<Arc<Identity>>> = LazyLock::new(|| {
    (0..NODES)
        .map(|i| {
            Arc::new(Identity::generate(&mut Rng::from_seed(
                [0xD0 + i as u8; 32],
            )))
        })
        .collect()
});

fn node_id(i: usize) -> NodeId {
    IDENTITIES[i].node_id()
}

fn index_of(id: &NodeId) -> Option<usize> {
    (0..NODES).find(|&i| node_id(i) == *id)
}

/// Where node `i` listens (what its seeds and its advertisement say).
fn listen_addr(i: usize) -> String {
    format!("tcp://node{i}.fuzz:7000")
}

fn node_at(addr: &str) -> Option<usize> {
    (0..NODES).find(|&i| listen_addr(i) == addr)
}

// ----- what the fuzzer chooses -----

/// The seeds `Settings::extra_seeds` can add, one bit each: `(from, to)`, and a seed
/// nobody listens at.
const SEEDS: [(usize, usize); 7] = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (0, 3)];

/// Node settings (the same for the three nodes, but for their advertised address).
#[derive(Clone, Debug, TypeGenerator)]
pub struct Settings {
    /// `max_links` = 1 + this % 6.
    pub max_links: u8,
    /// `max_handshakes` = 1 + this % 4.
    pub max_handshakes: u8,
    /// Per-link send queue limit in KiB = 1 + this % 128.
    pub queue_kib: u8,
    /// Reassembly budget in KiB = 1 + this % 128.
    pub reassembly_kib: u8,
    /// Rekey after 1 + this % 16 records, or the default.
    pub rekey_after_records: Option<u8>,
    /// Bit `k` adds seed [`SEEDS`]`[k]`.
    pub extra_seeds: u8,
    /// Seed 0 → 1 → 2 (a line, so 0 and 2 talk through 1 until discovery links them)
    /// and let the network settle before the script starts.
    pub connect_first: bool,
    /// Timeouts of a second or two instead of the defaults, so that the script's clock
    /// moves reach them.
    pub quick_timers: bool,
}

impl Settings {
    fn config(&self, i: usize) -> NodeConfig {
        let mut c = NodeConfig::new(GENESIS);
        c.max_links = usize::from(self.max_links % 6) + 1;
        c.max_handshakes = usize::from(self.max_handshakes % 4) + 1;
        c.link.record.max_queued_bytes = (usize::from(self.queue_kib % 128) + 1) * 1024;
        c.link.record.reassembly_budget = (usize::from(self.reassembly_kib % 128) + 1) * 1024;
        if let Some(n) = self.rekey_after_records {
            c.link.record.rekey_after_records = u64::from(n % 16) + 1;
        }
        if self.quick_timers {
            c.message_timeout = Duration::from_secs(2);
            c.retry_interval = Duration::from_millis(200);
            c.link.handshake_timeout = Duration::from_secs(2);
            c.link.idle_timeout = Some(Duration::from_secs(3));
            c.link.keepalive = Some(Duration::from_secs(1));
            c.route_refresh = Duration::from_secs(1);
            c.exchange_interval = Duration::from_secs(1);
        }
        c.advertise = vec![listen_addr(i)];
        c
    }
}

/// A record body forged by the fuzzer, sealed with the null cipher's tag.
#[derive(Clone, Debug)]
pub enum Forged {
    /// Arbitrary plaintext.
    Raw(Vec<u8>),
    /// One frame `[u32 len][type][payload]` (type byte as given, fragment flag included).
    Frame(u8, Vec<u8>),
    /// One Message frame carrying an envelope with genuine node ids (the relay it is
    /// delivered to, and `source`/`dest` among the three nodes).
    Envelope(ForgedEnvelope),
}

/// The fields of a forged envelope.
#[derive(Clone, Debug, TypeGenerator)]
pub struct ForgedEnvelope {
    /// Kind 0x10 + this % 5.
    pub kind: u8,
    /// Claim a signature (96 junk bytes follow).
    pub signed: bool,
    /// Hop count.
    pub hop: u8,
    /// Source node (% 3).
    pub source: u8,
    /// Destination node (% 3).
    pub dest: u8,
    /// Envelope id (16 copies) and `reply_to` (16 copies).
    pub ids: (u8, u8),
    /// Payload after the forged marker.
    pub body: Vec<u8>,
}

/// How the bytes waiting in a pipe reach the other end.
#[derive(Clone, Debug)]
pub enum How {
    /// All of them, in one `handle_bytes`.
    All,
    /// Only the first `n`.
    Part(u32),
    /// All of them, `n` (at least 1) at a time.
    Chunks(u16),
    /// All of them, with one byte XORed.
    Flip(u16, u8),
    /// All of them but `len` bytes from `pos`.
    Drop(u16, u16),
    /// All of them, with fuzz bytes inserted at `pos`.
    Insert(u16, Vec<u8>),
    /// All of them, with a forged record inserted between two records.
    Forge(u8, Forged),
    /// All of them, one record twice.
    Duplicate(u8),
    /// Records this end or another sent earlier (`count` from `first`), then nothing else.
    Replay { source: u8, first: u8, count: u8 },
}

/// One fuzz-chosen step. `end`, `wire` and `node` picks are taken modulo what exists.
#[derive(Clone, Debug)]
pub enum Op {
    /// Time moves forward `ms` milliseconds; every timer on the way fires in order.
    Advance(u32),
    /// Time moves forward `ms` milliseconds, no timer runs (a stalled driver).
    Skip(u32),
    /// One node's `handle_timeout` at the current time.
    Timers(u8),
    /// One node's `handle_timeout` with a time `ms` before the current one.
    Stale(u8, u16),
    /// A connection end's node is pulled until `poll_transmit` is empty.
    Pull(u8),
    /// The bytes pulled from a connection end reach the other end.
    Deliver(u8, How),
    /// Everything moves until nothing does (dials answered, bytes pulled and delivered,
    /// due timers run; the clock stands still).
    Pump,
    /// A pending dial connects, or fails.
    Answer(u8, bool),
    /// A stranger connects to a node.
    Accept(u8),
    /// Raw bytes arrive on a connection end.
    Inject(u8, Vec<u8>),
    /// Raw bytes arrive for a connection the node already closed (must be ignored).
    InjectStale(u8, Vec<u8>),
    /// The connection breaks: both nodes learn it.
    Reset(u8),
    /// One end's socket fails; the other learns when that node closes it.
    HalfClose(u8),
    /// An application sends `len` bytes (`fill`) to another node (or itself).
    Send {
        /// Sender.
        from: u8,
        /// Recipient.
        to: u8,
        /// Filler length.
        len: u32,
        /// Filler byte.
        fill: u8,
    },
    /// An application closes a connection with the reason of this code.
    Close(u8, u16),
    /// A node shuts down.
    Shutdown(u8),
    /// A node gets a seed (`to` % 4; node 3 does not exist).
    Seed(u8, u8),
    /// An application writes to its replicated state: appends to its chain (even
    /// `what`) or writes a key of its tree (odd `what`).
    Write(u8, u8),
}

impl TypeGenerator for Forged {
    fn generate<D: Driver>(driver: &mut D) -> Option<Self> {
        Some(
            match driver.gen_u8(Bound::Included(&0), Bound::Excluded(&3))? {
                0 => Forged::Raw(driver.produce()?),
                1 => Forged::Frame(driver.produce()?, driver.produce()?),
                _ => Forged::Envelope(driver.produce()?),
            },
        )
    }
}

impl TypeGenerator for How {
    fn generate<D: Driver>(driver: &mut D) -> Option<Self> {
        let small = |driver: &mut D, bits| spread(driver, bits).map(|v| v as u16);
        Some(
            match driver.gen_u8(Bound::Included(&0), Bound::Excluded(&100))? {
                0..=44 => How::All,
                45..=52 => How::Part(spread(driver, 17)?),
                53..=62 => How::Chunks(small(driver, 12)?),
                63..=72 => How::Flip(
                    driver.produce()?,
                    driver.gen_u8(Bound::Included(&1), Bound::Unbounded)?,
                ),
                73..=76 => How::Drop(driver.produce()?, small(driver, 8)?),
                77..=81 => How::Insert(driver.produce()?, driver.produce()?),
                82..=91 => How::Forge(driver.produce()?, driver.produce()?),
                92..=95 => How::Duplicate(driver.produce()?),
                _ => How::Replay {
                    source: driver.produce()?,
                    first: driver.produce()?,
                    count: driver.gen_u8(Bound::Included(&1), Bound::Included(&4))?,
                },
            },
        )
    }
}

impl TypeGenerator for Op {
    fn generate<D: Driver>(driver: &mut D) -> Option<Self> {
        let node =
            |driver: &mut D| driver.gen_u8(Bound::Included(&0), Bound::Excluded(&(NODES as u8)));
        Some(
            match driver.gen_u8(Bound::Included(&0), Bound::Excluded(&100))? {
                0..=21 => Op::Deliver(driver.produce()?, driver.produce()?),
                22..=32 => Op::Pull(driver.produce()?),
                33..=40 => Op::Pump,
                41..=47 => {
                    // Mostly steps of up to a minute, sometimes up to 17 minutes.
                    let bits = if driver.produce::<u8>()? < 16 { 20 } else { 16 };
                    Op::Advance(spread(driver, bits)?)
                }
                48..=49 => Op::Skip(spread(driver, 16)?),
                50..=53 => Op::Timers(node(driver)?),
                54 => Op::Stale(node(driver)?, driver.produce()?),
                55..=68 => Op::Send {
                    from: node(driver)?,
                    to: node(driver)?,
                    len: spread(driver, 17)?,
                    fill: driver.produce()?,
                },
                69..=72 => Op::Answer(
                    driver.produce()?,
                    driver.gen_u8(Bound::Included(&0), Bound::Excluded(&8))? != 0,
                ),
                73..=74 => Op::Accept(node(driver)?),
                75..=78 => Op::Inject(driver.produce()?, driver.produce()?),
                79 => Op::InjectStale(node(driver)?, driver.produce()?),
                80..=82 => Op::Reset(driver.produce()?),
                83..=84 => Op::HalfClose(driver.produce()?),
                85..=87 => {
                    const CODES: [u16; 6] = [0x0000, 0x0001, 0x0202, 0x0206, 0x0301, 0x7777];
                    let code = CODES
                        [usize::from(driver.gen_u8(Bound::Included(&0), Bound::Excluded(&6))?)];
                    Op::Close(driver.produce()?, code)
                }
                88 => Op::Shutdown(node(driver)?),
                89..=91 => Op::Seed(
                    node(driver)?,
                    driver.gen_u8(Bound::Included(&0), Bound::Excluded(&4))?,
                ),
                92..=93 => Op::Write(node(driver)?, driver.produce()?),
                _ => Op::Deliver(driver.produce()?, How::All),
            },
        )
    }
}

// ----- payloads and the identity of a delivery -----

/// The payload of the harness's message number `counter` from `from` to `to`.
fn payload(counter: u64, from: usize, to: usize, len: usize, fill: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(14 + len);
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&counter.to_be_bytes());
    p.push(from as u8);
    p.push(to as u8);
    p.resize(14 + len, fill);
    p
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What identifies one delivery of a message.
struct Delivery<'a> {
    /// Who the node says sent it.
    from: NodeId,
    /// Its data.
    payload: &'a [u8],
    /// The harness counter embedded in the payload (the identity used for duplicate
    /// detection), if the payload is one of the harness's.
    counter: Option<u64>,
}

/// The one place that looks inside `NodeEvent::Message`. Matched with `..`: the event
/// may gain fields (a target, a hop count, an id) without this harness changing; the
/// identity of a message is the unique counter the harness embedded in its payload.
fn delivery_identity(event: &NodeEvent) -> Option<Delivery<'_>> {
    match event {
        NodeEvent::Message { from, payload, .. } => Some(Delivery {
            from: *from,
            payload,
            counter: payload
                .strip_prefix(MAGIC)
                .and_then(|rest| rest.first_chunk::<8>())
                .map(|c| u64::from_be_bytes(*c)),
        }),
        _ => None,
    }
}

/// `application` sends `data` to `to` (the one call of the send API, kept in one place).
fn app_send(
    node: &mut Node,
    now: Instant,
    to: NodeId,
    data: &[u8],
) -> Result<MessageId, NodeSendError> {
    node.send(now, to, Target::Node, data.to_vec())
}

// ----- statistics over all runs (printed by the fuzz test) -----

static RUNS: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_MESSAGES: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_MUTATED_MESSAGES: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_RECORD_CLOSE: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_FRAME_CLOSE: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_DECRYPT_FAILED: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_RELAYS: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_DUPLICATES: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_CHAIN_PULLS: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_FORKS: AtomicU64 = AtomicU64::new(0);
static RUNS_WITH_TREE_SYNCS: AtomicU64 = AtomicU64::new(0);
static MESSAGES: AtomicU64 = AtomicU64::new(0);
static SLOWEST_RUN_MS: AtomicU64 = AtomicU64::new(0);

/// What one run reached.
#[derive(Default, Debug)]
struct RunStats {
    messages: u64,
    /// Messages delivered by a node that had received mutated bytes.
    mutated_messages: u64,
    /// Links closed with a `0x02xx` reason.
    record_closes: u64,
    /// ... with a frame-level one (a malformed, unexpected or oversized frame or record).
    frame_closes: u64,
    decrypt_failed: u64,
    /// Envelopes the nodes relayed for each other (`NodeStats::relayed`).
    relayed: u64,
    /// Copies the nodes dropped as duplicates (`NodeStats::duplicates`).
    duplicates: u64,
    /// Chain entries appended by pulls.
    chain_appended: u64,
    /// Chain forks reported.
    forks: u64,
    /// Tree pulls finished.
    tree_syncs: u64,
}

impl RunStats {
    fn close(&mut self, reason: CloseReason) {
        if reason.code() >> 8 == 0x02 {
            self.record_closes += 1;
        }
        match reason {
            CloseReason::DecryptFailed => self.decrypt_failed += 1,
            CloseReason::MalformedFrame
            | CloseReason::UnexpectedFrame
            | CloseReason::ReassemblyBudget
            | CloseReason::MalformedRecord => self.frame_closes += 1,
            _ => {}
        }
    }

    fn publish(&self) {
        let bump = |counter: &AtomicU64, hit: u64| {
            if hit > 0 {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        RUNS.fetch_add(1, Ordering::Relaxed);
        MESSAGES.fetch_add(self.messages, Ordering::Relaxed);
        bump(&RUNS_WITH_MESSAGES, self.messages);
        bump(&RUNS_WITH_MUTATED_MESSAGES, self.mutated_messages);
        bump(&RUNS_WITH_RECORD_CLOSE, self.record_closes);
        bump(&RUNS_WITH_FRAME_CLOSE, self.frame_closes);
        bump(&RUNS_WITH_DECRYPT_FAILED, self.decrypt_failed);
        bump(&RUNS_WITH_RELAYS, self.relayed);
        bump(&RUNS_WITH_DUPLICATES, self.duplicates);
        bump(&RUNS_WITH_CHAIN_PULLS, self.chain_appended);
        bump(&RUNS_WITH_FORKS, self.forks);
        bump(&RUNS_WITH_TREE_SYNCS, self.tree_syncs);
    }
}

fn report() -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "node_script: {} runs. Runs with: delivered messages {} ({} messages in all), \
         messages delivered by a node that got mutated bytes {}, relayed envelopes {}, \
         duplicate copies dropped {}, a link closed with a record-layer reason (0x02xx) \
         {}, with a frame-level one {}, with decrypt_failed {}; chain entries pulled {}, \
         a chain fork reported {}, a tree pulled {}; slowest run {} ms",
        get(&RUNS),
        get(&RUNS_WITH_MESSAGES),
        get(&MESSAGES),
        get(&RUNS_WITH_MUTATED_MESSAGES),
        get(&RUNS_WITH_RELAYS),
        get(&RUNS_WITH_DUPLICATES),
        get(&RUNS_WITH_RECORD_CLOSE),
        get(&RUNS_WITH_FRAME_CLOSE),
        get(&RUNS_WITH_DECRYPT_FAILED),
        get(&RUNS_WITH_CHAIN_PULLS),
        get(&RUNS_WITH_FORKS),
        get(&RUNS_WITH_TREE_SYNCS),
        get(&SLOWEST_RUN_MS),
    )
}

// ----- tracing (WEFT_FUZZ_TRACE=1: a failing run prints its last steps) -----

static TRACING: LazyLock<bool> = LazyLock::new(|| std::env::var_os("WEFT_FUZZ_TRACE").is_some());

thread_local! {
    static TRACE: RefCell<VecDeque<String>> = const { RefCell::new(VecDeque::new()) };
}

/// Lines kept for a failing run.
const TRACE_LINES: usize = 3000;

fn trace(line: impl FnOnce() -> String) {
    if *TRACING {
        let mut line = line();
        if line.len() > 300 {
            let mut cut = 300;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" ...");
        }
        TRACE.with(|t| {
            let mut t = t.borrow_mut();
            if t.len() == TRACE_LINES {
                t.pop_front();
            }
            t.push_back(line);
        });
    }
}

// ----- the harness -----

/// One end of a connection: a node's `ConnId` and the bytes pulled from it.
#[derive(Debug)]
struct End {
    node: usize,
    conn: ConnId,
    /// The node has not retired the connection (no `Close` action yet).
    open: bool,
    /// The node learned that the socket closed (`handle_closed` was called).
    told_closed: bool,
    /// A `Transmit` came and `poll_transmit` has not been empty since.
    want_tx: bool,
    /// Bytes pulled from this end, not yet delivered to the other.
    pipe: Vec<u8>,
    /// Where records start in `pipe`.
    starts: Vec<usize>,
    /// The node closed the connection: the other end learns once `pipe` is delivered.
    fin: bool,
    /// The last records pulled from this end.
    history: Vec<Vec<u8>>,
}

impl End {
    fn new(node: usize, conn: ConnId) -> Self {
        End {
            node,
            conn,
            open: true,
            told_closed: false,
            want_tx: false,
            pipe: Vec::new(),
            starts: Vec::new(),
            fin: false,
            history: Vec::new(),
        }
    }

    /// Take the first `n` bytes of the pipe.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.pipe.len());
        let bytes: Vec<u8> = self.pipe.drain(..n).collect();
        self.starts.retain(|&s| s >= n);
        for s in &mut self.starts {
            *s -= n;
        }
        bytes
    }
}

/// A connection: the dialer's end (or the stranger's missing end) and the acceptor's.
#[derive(Debug)]
struct Wire {
    /// `[dialer, acceptor]`; a stranger's connection has only the acceptor.
    ends: [Option<End>; 2],
    /// Where a dial that is not answered yet goes.
    dialing: Option<String>,
}

/// What the harness knows about one node.
struct Peer {
    node: Node,
    /// The latest `now` the node was given.
    latest: Instant,
    live: BTreeSet<ConnId>,
    known: BTreeSet<ConnId>,
    /// The last few closed connections (for `InjectStale`).
    retired: Vec<ConnId>,
    /// Connections reported by `PeerUp`.
    up: BTreeSet<ConnId>,
    /// Connections reported by `Rejected`.
    rejected: BTreeSet<ConnId>,
    /// Nodes it ever reported `PeerUp` for.
    peered: BTreeSet<usize>,
    /// It received mutated, forged or replayed bytes.
    tainted: bool,
    /// Counters it delivered, with the time of the first delivery.
    delivered: BTreeMap<u64, Instant>,
    /// Its sends: id → counter.
    sends: BTreeMap<MessageId, u64>,
    /// Ids answered by `Delivered` or `SendFailed`.
    resolved: BTreeSet<MessageId>,
    /// Every dial: when, and where to.
    dials: Vec<(Instant, String)>,
}

/// A message the harness sent.
struct Sent {
    from: usize,
    to: usize,
    fingerprint: u64,
}

/// Three nodes, their connections, and everything the checks need.
pub struct Harness {
    config: NodeConfig,
    now: Instant,
    nodes: Vec<Peer>,
    wires: BTreeMap<u64, Wire>,
    next_wire: u64,
    by_conn: BTreeMap<(usize, ConnId), u64>,
    sent: BTreeMap<u64, Sent>,
    counter: u64,
    /// The clock once moved without timers running.
    skipped_timers: bool,
    buf: Vec<u8>,
    stats: RunStats,
}

impl Harness {
    /// Three fresh nodes with `settings`, seeded, not yet connected.
    pub fn new(settings: &Settings) -> Self {
        RecordConfig::set_fuzzing_null_cipher(true);
        let nodes = (0..NODES)
            .map(|i| Peer {
                node: with_stores(
                    i,
                    Node::new(
                        IDENTITIES[i].clone(),
                        settings.config(i),
                        Rng::from_seed([0xE0 + i as u8; 32]),
                    ),
                ),
                latest: Instant::ZERO,
                live: BTreeSet::new(),
                known: BTreeSet::new(),
                retired: Vec::new(),
                up: BTreeSet::new(),
                rejected: BTreeSet::new(),
                peered: BTreeSet::new(),
                tainted: false,
                delivered: BTreeMap::new(),
                sends: BTreeMap::new(),
                resolved: BTreeSet::new(),
                dials: Vec::new(),
            })
            .collect();
        let mut h = Harness {
            config: settings.config(0),
            now: Instant::ZERO,
            nodes,
            wires: BTreeMap::new(),
            next_wire: 0,
            by_conn: BTreeMap::new(),
            sent: BTreeMap::new(),
            counter: 0,
            skipped_timers: false,
            buf: vec![0; MAX_TRANSMIT],
            stats: RunStats::default(),
        };
        if settings.connect_first {
            h.seed(0, 1);
            h.seed(1, 2);
        }
        for (k, &(from, to)) in SEEDS.iter().enumerate() {
            if settings.extra_seeds & (1 << k) != 0 {
                h.seed(from, to);
            }
        }
        if settings.connect_first {
            h.pump();
            for _ in 0..3 {
                let t = h.now + Duration::from_millis(300);
                h.advance_to(t);
                h.pump();
            }
        }
        h
    }

    fn max_queued(&self) -> usize {
        self.config.link.record.max_queued_bytes
    }

    /// What one pull of a connection may yield at most.
    fn pull_bound(&self) -> usize {
        2 * self.max_queued() + 128 * 1024
    }

    /// The harness stops pulling from a connection whose pipe holds this much.
    fn pipe_cap(&self) -> usize {
        4 * self.max_queued() + 256 * 1024
    }

    fn end(&self, wire: u64, side: usize) -> Option<&End> {
        self.wires.get(&wire)?.ends[side].as_ref()
    }

    fn end_mut(&mut self, wire: u64, side: usize) -> Option<&mut End> {
        self.wires.get_mut(&wire)?.ends[side].as_mut()
    }

    /// The harness node at the other end of `conn` of node `n`, if it is one of ours.
    fn peer_of(&self, n: usize, conn: ConnId) -> Option<usize> {
        let wire = self.wires.get(self.by_conn.get(&(n, conn))?)?;
        if let Some(addr) = &wire.dialing {
            return node_at(addr);
        }
        let side = wire
            .ends
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.node == n && e.conn == conn))?;
        wire.ends[1 - side].as_ref().map(|e| e.node)
    }

    /// Every end matching `keep`, as `(wire, side)`, in a fixed order.
    fn ends(&self, keep: impl Fn(&End) -> bool) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        for (&w, wire) in &self.wires {
            for side in 0..2 {
                if wire.ends[side].as_ref().is_some_and(&keep) {
                    out.push((w, side));
                }
            }
        }
        out
    }

    fn pick<T: Copy>(list: &[T], pick: u8) -> Option<T> {
        (!list.is_empty()).then(|| list[usize::from(pick) % list.len()])
    }

    // ----- calls into a node, each followed by draining it and checking it -----

    /// Run `f` on node `n` at the current time, then drain its actions and events.
    fn call<R>(&mut self, n: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now;
        let peer = &mut self.nodes[n];
        peer.latest = peer.latest.max(now);
        let r = f(&mut peer.node, now);
        self.drain(n);
        r
    }

    fn seed(&mut self, from: usize, to: usize) {
        let addr = if to < NODES {
            listen_addr(to)
        } else {
            "tcp://nowhere.fuzz:1".to_string()
        };
        self.call(from, |node, now| node.add_seed(now, addr));
    }

    fn drain(&mut self, n: usize) {
        while let Some(action) = self.nodes[n].node.poll_action() {
            self.on_action(n, action);
        }
        while let Some(event) = self.nodes[n].node.poll_event() {
            self.on_event(n, event);
        }
        self.check_node(n);
    }

    fn on_action(&mut self, n: usize, action: Action) {
        trace(|| format!("  node {n}: {action:?}"));
        match action {
            Action::Dial { conn, addr } => {
                let peer = &mut self.nodes[n];
                // No redial storm: the same address is not dialed again and again at one
                // instant (dials back off).
                let again = peer
                    .dials
                    .iter()
                    .rev()
                    .take_while(|(at, _)| *at == self.now)
                    .filter(|(_, a)| *a == addr)
                    .count();
                assert!(
                    again < 2,
                    "node {n}: {addr} dialed a third time at one instant"
                );
                peer.dials.push((self.now, addr.clone()));
                assert!(
                    !peer.live.contains(&conn),
                    "node {n}: Dial reuses the live {conn}"
                );
                peer.live.insert(conn);
                peer.known.insert(conn);
                let w = self.next_wire;
                self.next_wire += 1;
                self.wires.insert(
                    w,
                    Wire {
                        ends: [Some(End::new(n, conn)), None],
                        dialing: Some(addr),
                    },
                );
                self.by_conn.insert((n, conn), w);
            }
            Action::Transmit { conn } => {
                assert!(
                    self.nodes[n].live.contains(&conn),
                    "node {n}: Transmit for {conn}, which it does not have"
                );
                let w = self.by_conn[&(n, conn)];
                let side = self.side_of(w, n, conn);
                self.end_mut(w, side).expect("live").want_tx = true;
            }
            Action::Close { conn } => {
                let peer = &mut self.nodes[n];
                assert!(
                    peer.live.remove(&conn),
                    "node {n}: Close for {conn}, which it does not have"
                );
                peer.retired.push(conn);
                if peer.retired.len() > 8 {
                    peer.retired.remove(0);
                }
                let w = self
                    .by_conn
                    .remove(&(n, conn))
                    .expect("a live connection has a wire");
                let side = self.side_of(w, n, conn);
                let wire = self.wires.get_mut(&w).expect("live");
                // Closed before the dial was answered: the dial is abandoned.
                wire.dialing = None;
                let end = wire.ends[side].as_mut().expect("live");
                end.open = false;
                end.want_tx = false;
                end.fin = true;
                self.maybe_finish(w, side);
            }
            _ => {}
        }
    }

    fn side_of(&self, w: u64, n: usize, conn: ConnId) -> usize {
        let wire = &self.wires[&w];
        (0..2)
            .find(|&s| {
                wire.ends[s]
                    .as_ref()
                    .is_some_and(|e| e.node == n && e.conn == conn)
            })
            .expect("the connection is on its wire")
    }

    /// `side` was closed by its node: once its pipe is delivered (or cannot be), the other
    /// end learns that the socket closed.
    fn maybe_finish(&mut self, w: u64, side: usize) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        let other_open = wire.ends[1 - side].as_ref().is_some_and(|e| e.open);
        let Some(end) = wire.ends[side].as_mut() else {
            return;
        };
        if !end.fin {
            return;
        }
        if !other_open {
            end.pipe.clear();
            end.starts.clear();
        }
        if end.pipe.is_empty() {
            end.fin = false;
            self.tell_closed(w, 1 - side);
        }
    }

    /// The node at `side` learns that its socket closed.
    fn tell_closed(&mut self, w: u64, side: usize) {
        let Some(end) = self.end_mut(w, side) else {
            return;
        };
        if !end.open || end.told_closed {
            return;
        }
        end.told_closed = true;
        let (n, conn) = (end.node, end.conn);
        self.call(n, |node, now| node.handle_closed(now, conn));
    }

    fn on_event(&mut self, n: usize, event: NodeEvent) {
        trace(|| format!("  node {n}: {event:?}"));
        if let Some(delivery) = delivery_identity(&event) {
            self.on_delivery(n, &delivery);
            return;
        }
        match event {
            NodeEvent::PeerUp { node, conn, .. } => {
                let peer = &mut self.nodes[n];
                assert!(
                    peer.known.contains(&conn),
                    "node {n}: PeerUp on unknown {conn}"
                );
                let other = index_of(&node).expect("PeerUp for a node that is none of ours");
                assert_ne!(other, n, "node {n}: PeerUp with itself");
                peer.up.insert(conn);
                peer.peered.insert(other);
            }
            NodeEvent::PeerDown { reason, .. } => self.stats.close(reason),
            NodeEvent::Rejected { conn, reason, .. } => {
                assert!(
                    self.nodes[n].known.contains(&conn),
                    "node {n}: Rejected unknown {conn}"
                );
                self.nodes[n].rejected.insert(conn);
                self.stats.close(reason);
            }
            NodeEvent::Delivered { to, id } => {
                let counter = self.resolve(n, id);
                let r = index_of(&to).expect("Delivered to a node that is none of ours");
                assert_eq!(
                    self.sent[&counter].to, r,
                    "node {n}: {id:?} Delivered to another node"
                );
                if !self.nodes[n].tainted && !self.nodes[r].tainted {
                    assert!(
                        self.nodes[r].delivered.contains_key(&counter),
                        "node {n}: message {counter} ({id:?}) Delivered, but node {r} never \
                         delivered it"
                    );
                }
            }
            NodeEvent::SendFailed { id, .. } => {
                self.resolve(n, id);
            }
            NodeEvent::Sync(SyncEvent::ChainSynced { appended, .. }) => {
                self.stats.chain_appended += appended;
            }
            NodeEvent::Sync(SyncEvent::ChainForked { fork, .. }) => {
                assert!(
                    fork.is_valid(),
                    "node {n}: fork evidence that proves nothing"
                );
                self.stats.forks += 1;
            }
            NodeEvent::Sync(SyncEvent::TreeSynced { .. }) => self.stats.tree_syncs += 1,
            _ => {}
        }
    }

    /// `id` of node `n` is answered: it must be one of its sends, answered once.
    fn resolve(&mut self, n: usize, id: MessageId) -> u64 {
        let peer = &mut self.nodes[n];
        let counter = *peer
            .sends
            .get(&id)
            .unwrap_or_else(|| panic!("node {n}: an answer for {id:?}, which send never returned"));
        assert!(peer.resolved.insert(id), "node {n}: {id:?} answered twice");
        counter
    }

    /// The duplicate and integrity checks of one delivered message.
    fn on_delivery(&mut self, n: usize, d: &Delivery<'_>) {
        self.stats.messages += 1;
        let tainted = self.nodes[n].tainted;
        if tainted {
            self.stats.mutated_messages += 1;
        }
        let Some(counter) = d.counter else {
            if tainted {
                return;
            }
            panic!(
                "node {n} got no mutated bytes yet delivered a payload nobody sent: from {:?}, {} bytes {:02x?}",
                index_of(&d.from),
                d.payload.len(),
                &d.payload[..d.payload.len().min(64)]
            );
        };
        let now = self.now;
        let ttl = self.config.dedup.ttl;
        if let Some(&first) = self.nodes[n].delivered.get(&counter) {
            let within = now - first < ttl;
            assert!(
                tainted || (!within && self.skipped_timers),
                "DUPLICATE DELIVERY: node {n} delivered message {counter} again at {} us \
                 (first at {} us)",
                now.as_micros(),
                first.as_micros()
            );
        } else {
            self.nodes[n].delivered.insert(counter, now);
        }
        if tainted {
            return;
        }
        let sent = self
            .sent
            .get(&counter)
            .unwrap_or_else(|| panic!("node {n}: delivered message {counter}, never sent"));
        assert_eq!(
            sent.to, n,
            "node {n}: delivered message {counter} meant for node {}",
            sent.to
        );
        assert_eq!(
            index_of(&d.from),
            Some(sent.from),
            "node {n}: message {counter} attributed to the wrong sender"
        );
        assert_eq!(
            fingerprint(d.payload),
            sent.fingerprint,
            "node {n}: message {counter} arrived altered"
        );
    }

    /// The invariants of node `n` that hold after every input.
    fn check_node(&mut self, n: usize) {
        let max_links = self.config.max_links;
        let max_handshakes = self.config.max_handshakes;
        let handshaking: Vec<ConnId> = self.nodes[n]
            .live
            .iter()
            .copied()
            .filter(|c| {
                let p = &self.nodes[n];
                !p.up.contains(c)
                    && !p.rejected.contains(c)
                    // A duplicate link to a peer is established but never reported.
                    && !self.peer_of(n, *c).is_some_and(|o| p.peered.contains(&o))
            })
            .collect();
        let peer = &mut self.nodes[n];
        assert!(
            peer.live.len() <= max_links,
            "node {n}: {} connections, max_links {max_links}",
            peer.live.len()
        );
        assert_eq!(
            peer.node.is_idle(),
            peer.live.is_empty(),
            "node {n}: is_idle disagrees"
        );
        assert!(
            handshaking.len() <= max_handshakes,
            "node {n}: {} connections handshaking ({handshaking:?}), max_handshakes {max_handshakes}",
            handshaking.len()
        );
        if let Some(t) = peer.node.poll_timeout() {
            assert!(
                t >= peer.latest,
                "node {n}: poll_timeout {t:?} before the latest now {:?}",
                peer.latest
            );
        }
    }

    // ----- time -----

    /// Run node `n`'s timers due at the current time; whether any was due.
    fn fire_due(&mut self, n: usize) -> bool {
        let mut spins = 0;
        while let Some(t) = self.nodes[n].node.poll_timeout() {
            if t > self.now {
                break;
            }
            spins += 1;
            assert!(
                spins <= MAX_SPINS,
                "node {n}: still due at {t:?} after {MAX_SPINS} handle_timeout calls at {:?}",
                self.now
            );
            self.call(n, |node, now| node.handle_timeout(now));
        }
        spins > 0
    }

    /// Move the clock to `target`, firing every timer on the way at its deadline.
    fn advance_to(&mut self, target: Instant) {
        for _ in 0..MAX_FIRINGS {
            let next = (0..NODES)
                .filter_map(|n| self.nodes[n].node.poll_timeout())
                .min();
            match next {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    for n in 0..NODES {
                        self.fire_due(n);
                    }
                }
                _ => {
                    self.now = self.now.max(target);
                    return;
                }
            }
        }
        panic!("more than {MAX_FIRINGS} timer instants before {target:?}: a timer storm");
    }

    // ----- bytes -----

    /// Pull `side` of `w` until `poll_transmit` is empty (or the pipe is full). With
    /// `strict`, bytes from a connection the node did not announce with `Transmit` are a
    /// bug unless one of its timers is overdue.
    fn pull(&mut self, w: u64, side: usize, strict: bool) -> bool {
        let Some(end) = self.end(w, side) else {
            return false;
        };
        if !end.open {
            return false;
        }
        let (n, conn, asked) = (end.node, end.conn, end.want_tx);
        let now = self.now;
        let cap = self.pipe_cap();
        let overdue = self.nodes[n].node.poll_timeout().is_some_and(|t| t <= now);
        let mut pulled = 0usize;
        let mut complete = false;
        self.nodes[n].latest = self.nodes[n].latest.max(now);
        for _ in 0..MAX_PULLS {
            if self.end(w, side).is_none_or(|e| e.pipe.len() >= cap) {
                break;
            }
            let Some(k) = self.nodes[n].node.poll_transmit(now, conn, &mut self.buf) else {
                complete = true;
                break;
            };
            assert!(
                (3..=MAX_TRANSMIT).contains(&k),
                "node {n}: a transmit of {k} bytes"
            );
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            assert_eq!(
                len + 2,
                k,
                "node {n}: a transmit is exactly one [u16 len][body]"
            );
            pulled += k;
            let record = self.buf[..k].to_vec();
            let end = self.end_mut(w, side).expect("checked");
            end.starts.push(end.pipe.len());
            end.pipe.extend_from_slice(&record);
            end.history.push(record);
            if end.history.len() > HISTORY {
                end.history.remove(0);
            }
        }
        if complete {
            if let Some(end) = self.end_mut(w, side) {
                end.want_tx = false;
            }
            let bound = self.pull_bound();
            assert!(
                pulled <= bound,
                "node {n}: one pull of {conn} gave {pulled} bytes, more than {bound}"
            );
        }
        trace(|| format!("  pulled {pulled} bytes from node {n} {conn}"));
        if strict && pulled > 0 && !asked && !overdue {
            panic!("node {n}: {pulled} bytes to send on {conn} without a Transmit action");
        }
        self.drain(n);
        pulled > 0
    }

    /// Deliver the pipe of `side` of `w` to the other end, as `how` says.
    fn deliver(&mut self, w: u64, side: usize, how: &How) -> bool {
        let to = 1 - side;
        let Some(target) = self.end(w, to) else {
            return false; // a dial not answered yet: the bytes wait
        };
        if !target.open {
            if let Some(end) = self.end_mut(w, side) {
                end.pipe.clear();
                end.starts.clear();
            }
            return false;
        }
        let receiver = target.node;
        let replay = match how {
            How::Replay {
                source,
                first,
                count,
            } => {
                let sources = self.ends(|e| !e.history.is_empty());
                let Some((sw, ss)) = Self::pick(&sources, *source) else {
                    return false;
                };
                let history = &self.end(sw, ss).expect("listed").history;
                let first = usize::from(*first) % history.len();
                let last = (first + usize::from(*count)).min(history.len());
                Some(history[first..last].concat())
            }
            _ => None,
        };
        let relay_index = receiver;
        let Some(end) = self.end_mut(w, side) else {
            return false;
        };
        let mut mutated = true;
        let bytes = match how {
            How::Replay { .. } => replay.expect("made above"),
            How::Part(n) => {
                mutated = false;
                end.take(*n as usize)
            }
            How::Duplicate(k) => {
                let starts = end.starts.clone();
                let Some(i) = Self::pick(&(0..starts.len()).collect::<Vec<_>>(), *k) else {
                    return false;
                };
                let stop = starts.get(i + 1).copied().unwrap_or(end.pipe.len());
                let record = end.pipe[starts[i]..stop].to_vec();
                let mut bytes = end.take(stop);
                bytes.extend_from_slice(&record);
                let rest = end.take(usize::MAX);
                bytes.extend_from_slice(&rest);
                bytes
            }
            How::Forge(at, forged) => {
                let mut boundaries = end.starts.clone();
                boundaries.push(end.pipe.len());
                let at = boundaries[usize::from(*at) % boundaries.len()];
                let mut bytes = end.take(at);
                bytes.extend_from_slice(&forge(forged, relay_index));
                let rest = end.take(usize::MAX);
                bytes.extend_from_slice(&rest);
                bytes
            }
            _ => {
                let mut bytes = end.take(usize::MAX);
                if bytes.is_empty() {
                    return false;
                }
                match how {
                    How::Flip(pos, xor) => {
                        let at = usize::from(*pos) % bytes.len();
                        bytes[at] ^= xor;
                    }
                    How::Drop(pos, len) => {
                        let at = usize::from(*pos) % bytes.len();
                        let stop = (at + usize::from(*len).max(1)).min(bytes.len());
                        bytes.drain(at..stop);
                    }
                    How::Insert(pos, raw) => {
                        let at = usize::from(*pos) % (bytes.len() + 1);
                        bytes.splice(at..at, raw.iter().copied());
                    }
                    _ => mutated = false,
                }
                bytes
            }
        };
        if bytes.is_empty() {
            self.maybe_finish(w, side);
            return false;
        }
        if mutated {
            self.nodes[receiver].tainted = true;
        }
        let chunk = match how {
            How::Chunks(n) => usize::from(*n).max(1),
            _ => bytes.len(),
        };
        for piece in bytes.chunks(chunk) {
            let Some(target) = self.end(w, to).filter(|e| e.open) else {
                break;
            };
            let conn = target.conn;
            trace(|| {
                format!(
                    "  {} bytes to node {receiver} {conn} (mutated: {mutated})",
                    piece.len()
                )
            });
            self.call(receiver, |node, now| node.handle_bytes(now, conn, piece));
        }
        self.maybe_finish(w, side);
        true
    }

    /// Answer the dial of `w`: the target accepts (if it exists), else the dial fails.
    fn answer(&mut self, w: u64, accept: bool) {
        let Some(wire) = self.wires.get_mut(&w) else {
            return;
        };
        let Some(addr) = wire.dialing.take() else {
            return;
        };
        let dialer = wire.ends[0].as_ref().expect("a dial has its dialer").node;
        if let Some(t) = node_at(&addr).filter(|_| accept) {
            let from = format!("tcp://node{dialer}.fuzz:{}", 40000 + w);
            if let Some(conn) = self.checked_accept(t, Some(from)) {
                self.wires.get_mut(&w).expect("exists").ends[1] = Some(End::new(t, conn));
                self.by_conn.insert((t, conn), w);
                self.drain(t);
                return;
            }
            self.drain(t);
        }
        self.tell_closed(w, 0);
    }

    /// Node `n` accepts a connection: refused exactly at `max_links`, never reusing a
    /// live id.
    fn checked_accept(&mut self, n: usize, addr: Option<String>) -> Option<ConnId> {
        let now = self.now;
        let live = self.nodes[n].live.len();
        let peer = &mut self.nodes[n];
        peer.latest = peer.latest.max(now);
        let result = peer.node.accept(now, addr);
        if live >= self.config.max_links {
            assert_eq!(
                result,
                Err(AcceptError::TooManyLinks),
                "node {n}: accept at max_links"
            );
        }
        let conn = result.ok()?;
        assert!(
            !peer.live.contains(&conn),
            "node {n}: accept reused the live {conn}"
        );
        peer.live.insert(conn);
        peer.known.insert(conn);
        Some(conn)
    }

    /// A stranger connects to node `n`.
    fn stranger(&mut self, n: usize) {
        if let Some(conn) = self.checked_accept(n, None) {
            let w = self.next_wire;
            self.next_wire += 1;
            self.wires.insert(
                w,
                Wire {
                    ends: [None, Some(End::new(n, conn))],
                    dialing: None,
                },
            );
            self.by_conn.insert((n, conn), w);
        }
        self.drain(n);
    }

    /// Everything moves until nothing does: pending dials are answered, every end is
    /// pulled and every pipe delivered, due timers run. The clock stands still.
    pub fn pump(&mut self) {
        // Dials made during the pump wait for the next one: a connection takes time.
        let dials: Vec<u64> = self
            .wires
            .iter()
            .filter(|(_, w)| w.dialing.is_some())
            .map(|(&w, _)| w)
            .collect();
        for w in dials {
            self.answer(w, true);
        }
        for _ in 0..PUMP_ROUNDS {
            let mut moved = false;
            for (w, side) in self.ends(|e| e.open) {
                moved |= self.pull(w, side, true);
            }
            for (w, side) in self.ends(|e| !e.pipe.is_empty()) {
                moved |= self.deliver(w, side, &How::All);
            }
            for n in 0..NODES {
                moved |= self.fire_due(n);
            }
            self.collect_wires();
            if !moved {
                return;
            }
        }
        panic!(
            "the nodes never went quiet ({PUMP_ROUNDS} rounds at {:?})",
            self.now
        );
    }

    /// Forget connections whose both ends are closed and delivered.
    fn collect_wires(&mut self) {
        self.wires.retain(|_, wire| {
            wire.dialing.is_some()
                || wire
                    .ends
                    .iter()
                    .flatten()
                    .any(|e| e.open || !e.pipe.is_empty() || e.fin)
        });
    }

    /// Run one step of the script.
    pub fn run(&mut self, op: &Op) {
        trace(|| format!("t={} us: {op:?}", self.now.as_micros()));
        match op {
            Op::Advance(ms) => self.advance_to(self.now + Duration::from_millis(u64::from(*ms))),
            Op::Skip(ms) => {
                self.now = self.now + Duration::from_millis(u64::from(*ms));
                self.skipped_timers |= *ms > 0;
            }
            Op::Timers(n) => self.call(usize::from(*n), |node, now| node.handle_timeout(now)),
            Op::Stale(n, ms) => {
                let n = usize::from(*n);
                // A clock reading older than the latest one this node was given.
                let latest = self.nodes[n].latest;
                let stale =
                    Instant::from_micros(latest.as_micros().saturating_sub(u64::from(*ms) * 1000));
                self.nodes[n].node.handle_timeout(stale);
                self.drain(n);
            }
            Op::Pull(pick) => {
                let ends = self.ends(|e| e.open);
                if let Some((w, side)) = Self::pick(&ends, *pick) {
                    self.pull(w, side, true);
                }
            }
            Op::Deliver(pick, how) => {
                // Replays and forged records need no pending bytes.
                let any = matches!(how, How::Replay { .. } | How::Forge(..));
                let ends = self.ends(|e| any || !e.pipe.is_empty());
                if let Some((w, side)) = Self::pick(&ends, *pick) {
                    self.deliver(w, side, how);
                }
            }
            Op::Pump => self.pump(),
            Op::Answer(pick, accept) => {
                let dials: Vec<u64> = self
                    .wires
                    .iter()
                    .filter(|(_, w)| w.dialing.is_some())
                    .map(|(&w, _)| w)
                    .collect();
                if let Some(w) = Self::pick(&dials, *pick) {
                    self.answer(w, *accept);
                }
            }
            Op::Accept(n) => self.stranger(usize::from(*n)),
            Op::Inject(pick, bytes) => {
                let ends = self.ends(|e| e.open);
                if let Some((w, side)) = Self::pick(&ends, *pick) {
                    let end = self.end(w, side).expect("listed");
                    let (n, conn) = (end.node, end.conn);
                    self.nodes[n].tainted = true;
                    self.call(n, |node, now| node.handle_bytes(now, conn, bytes));
                }
            }
            Op::InjectStale(n, bytes) => {
                let n = usize::from(*n);
                if let Some(&conn) = self.nodes[n].retired.last() {
                    if !self.nodes[n].live.contains(&conn) {
                        let now = self.now;
                        let peer = &mut self.nodes[n];
                        peer.latest = peer.latest.max(now);
                        peer.node.handle_bytes(now, conn, bytes);
                        peer.node.handle_closed(now, conn);
                        assert_eq!(
                            peer.node.poll_action(),
                            None,
                            "node {n}: a stale {conn} acted"
                        );
                        assert_eq!(
                            peer.node.poll_event(),
                            None,
                            "node {n}: a stale {conn} reported"
                        );
                    }
                }
            }
            Op::Reset(pick) => {
                let ends = self.ends(|e| e.open);
                if let Some((w, _)) = Self::pick(&ends, *pick) {
                    for side in 0..2 {
                        if let Some(end) = self.end_mut(w, side) {
                            end.pipe.clear();
                            end.starts.clear();
                        }
                    }
                    self.tell_closed(w, 0);
                    self.tell_closed(w, 1);
                }
            }
            Op::HalfClose(pick) => {
                let ends = self.ends(|e| e.open);
                if let Some((w, side)) = Self::pick(&ends, *pick) {
                    self.tell_closed(w, side);
                }
            }
            Op::Send {
                from,
                to,
                len,
                fill,
            } => {
                let (from, to) = (usize::from(*from), usize::from(*to));
                let counter = self.counter;
                self.counter += 1;
                let data = payload(counter, from, to, *len as usize, *fill);
                let now = self.now;
                let peer = &mut self.nodes[from];
                peer.latest = peer.latest.max(now);
                // Registered before draining: the answer may come at once (no route).
                if let Ok(id) = app_send(&mut peer.node, now, node_id(to), &data) {
                    assert!(
                        peer.sends.insert(id, counter).is_none(),
                        "node {from}: send reused {id:?}"
                    );
                    self.sent.insert(
                        counter,
                        Sent {
                            from,
                            to,
                            fingerprint: fingerprint(&data),
                        },
                    );
                }
                self.drain(from);
            }
            Op::Close(pick, code) => {
                let ends = self.ends(|e| e.open);
                if let Some((w, side)) = Self::pick(&ends, *pick) {
                    let end = self.end(w, side).expect("listed");
                    let (n, conn) = (end.node, end.conn);
                    let reason = CloseReason::from_code(*code);
                    self.call(n, |node, now| node.close(now, conn, reason));
                }
            }
            Op::Shutdown(n) => self.call(usize::from(*n), |node, now| node.shutdown(now)),
            Op::Seed(from, to) => self.seed(usize::from(*from), usize::from(*to)),
            Op::Write(n, what) => self.call(usize::from(*n), |node, now| {
                if what % 2 == 0 {
                    let _ = node.append_chain(now, vec![*what]);
                } else {
                    let _ = node.tree_insert(now, &[*what], b"written");
                }
            }),
        }
        self.collect_wires();
    }

    /// The network heals: every dial is answered, every byte delivered, and time runs
    /// (firing every timer) until every message's deadline has passed.
    pub fn settle(&mut self) {
        self.pump();
        let c = &self.config;
        let end = self.now
            + c.message_timeout
            + c.retry_interval * 8
            + c.link.handshake_timeout
            + Duration::from_secs(2);
        for _ in 0..100_000 {
            if self.now >= end {
                break;
            }
            let next = (0..NODES)
                .filter_map(|n| self.nodes[n].node.poll_timeout())
                .min()
                .map_or(end, |t| t.min(end));
            self.advance_to(next.max(self.now + Duration::from_micros(1)));
            self.pump();
        }
    }

    /// The checks after [`Harness::settle`]: every send was answered exactly once, and
    /// chain sync never appended across a fork: the chains of nodes that saw no mutated
    /// bytes, each a fork of the common prefix, still extend their own starting chain.
    pub fn final_checks(&mut self) {
        for (n, peer) in self.nodes.iter().enumerate() {
            let chain = peer.node.chain().expect("plugged in");
            let start = starting_chain(n);
            if peer.tainted {
                continue;
            }
            for seq in 1..=start.head().seq.min(chain.head().seq) {
                assert_eq!(
                    chain.get(seq).as_ref(),
                    start.entries().get(seq as usize - 1),
                    "node {n}: entry {seq} of its own chain was replaced"
                );
            }
        }
        // Answers that only need the senders' pending events drained.
        for n in 0..NODES {
            self.drain(n);
        }
        for (n, peer) in self.nodes.iter().enumerate() {
            let unanswered: Vec<_> = peer
                .sends
                .keys()
                .filter(|id| !peer.resolved.contains(id))
                .collect();
            assert!(
                unanswered.is_empty(),
                "node {n}: sends never answered after every deadline passed: {unanswered:?}"
            );
        }
    }
}

/// Node `i`'s chain at the start: 8 common entries, then node 0 and 1 agree on 4 more
/// (node 1 holds only 2 of them) and node 2 has forked with 3 of its own.
fn starting_chain(i: usize) -> MemoryChain {
    let mut chain = MemoryChain::from_payloads((0..8u8).map(|k| vec![k])).expect("valid");
    let own: &[&[u8]] = match i {
        0 => &[b"a", b"b", b"c", b"d"],
        1 => &[b"a", b"b"],
        _ => &[b"x", b"y", b"z"],
    };
    for p in own {
        chain.push(p.to_vec()).expect("valid");
    }
    chain
}

/// Node `i` with its chain and a tree (versions 3, 2, 3 with different contents, so
/// node 1 pulls and nodes 0 and 2 diverge).
fn with_stores(i: usize, mut node: Node) -> Node {
    node.set_chain_store(starting_chain(i));
    let mut tree = MemoryStore::new();
    for k in 0..(20 + 5 * i as u8) {
        KvStore::insert(&mut tree, &[k], &[i as u8]);
    }
    node.set_tree_store(tree, [3, 2, 3][i])
        .expect("small entries");
    node
}

/// The bytes of a forged record delivered to node `relay`: `[u16 len][plaintext][tag]`.
fn forge(forged: &Forged, relay: usize) -> Vec<u8> {
    let mut plain = Vec::new();
    match forged {
        Forged::Raw(body) => plain.extend_from_slice(body),
        Forged::Frame(frame_type, payload) => {
            plain.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
            plain.push(*frame_type);
            plain.extend_from_slice(payload);
        }
        Forged::Envelope(e) => {
            let (source, dest) = (usize::from(e.source) % NODES, usize::from(e.dest) % NODES);
            let mut env = vec![0x10 + e.kind % 5, u8::from(e.signed), e.hop, 0];
            env.extend_from_slice(node_id(source).as_bytes());
            env.extend_from_slice(node_id(dest).as_bytes());
            env.extend_from_slice(&[e.ids.0; 16]);
            env.extend_from_slice(&[e.ids.1; 16]);
            env.push(0); // target: the node
            env.extend_from_slice(FORGED);
            env.extend_from_slice(&[relay as u8, source as u8]);
            env.extend_from_slice(&e.body);
            if e.signed {
                env.extend_from_slice(&[0x5A; 96]);
            }
            frame::encode(FrameType::Message, &env, &mut plain);
        }
    }
    plain.truncate(usize::from(u16::MAX) - TAG_LEN);
    let mut record = ((plain.len() + TAG_LEN) as u16).to_be_bytes().to_vec();
    record.extend_from_slice(&plain);
    record.extend_from_slice(&[0; TAG_LEN]);
    record
}

/// One whole run: the script, the healing phase and the final checks.
pub fn run(settings: &Settings, ops: &[Op]) {
    let whole = || {
        let started = std::time::Instant::now();
        let mut h = Harness::new(settings);
        for op in ops {
            h.run(op);
        }
        trace(|| "settle".into());
        h.settle();
        h.final_checks();
        for peer in &h.nodes {
            h.stats.relayed += peer.node.stats().relayed;
            h.stats.duplicates += peer.node.stats().duplicates;
        }
        h.stats.publish();
        let ms = started.elapsed().as_millis() as u64;
        SLOWEST_RUN_MS.fetch_max(ms, Ordering::Relaxed);
    };
    if !*TRACING {
        return whole();
    }
    TRACE.with(|t| t.borrow_mut().clear());
    trace(|| format!("{settings:?}"));
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(whole)) {
        TRACE.with(|t| {
            for line in t.borrow().iter() {
                eprintln!("{line}");
            }
        });
        std::panic::resume_unwind(panic);
    }
}

/// Three nodes under a fuzz script; see the module docs for what is checked.
#[test]
fn node_script() {
    RecordConfig::set_fuzzing_null_cipher(true);
    check!()
        .with_type::<(Settings, Vec<Op>)>()
        .for_each(|(settings, ops)| run(settings, ops));
    eprintln!("{}", report());
}

// ----- deterministic tests -----

/// Two nodes (0 dials 1), connected, settled.
fn connected_pair() -> Harness {
    connected_pair_with(&Settings {
        max_links: 5,
        max_handshakes: 3,
        queue_kib: 127,
        reassembly_kib: 127,
        rekey_after_records: None,
        extra_seeds: 0,
        connect_first: false,
        quick_timers: false,
    })
}

/// Node 0 seeded with node 1 and their link up.
fn connected_pair_with(settings: &Settings) -> Harness {
    let mut h = Harness::new(settings);
    h.seed(0, 1);
    h.pump(); // dials
    h.pump(); // connects
    assert!(!h.nodes[0].up.is_empty(), "node 0 is connected to node 1");
    assert!(!h.nodes[1].up.is_empty(), "node 1 is connected to node 0");
    h
}

/// Node 0 sends one message to node 1 and pulls it: the wire and the index of the
/// record that carries it (the last one pulled).
fn pending_message(h: &mut Harness) -> (u64, usize) {
    h.run(&Op::Send {
        from: 0,
        to: 1,
        len: 32,
        fill: b'x',
    });
    let (w, side) = *h
        .ends(|e| e.node == 0 && e.open)
        .first()
        .expect("node 0 has its link");
    assert_eq!(side, 0, "node 0 dialed");
    h.pull(w, 0, true);
    let end = h.end(w, 0).expect("exists");
    assert!(!end.starts.is_empty(), "the message was pulled");
    (w, end.starts[end.starts.len() - 1])
}

/// With the fuzzing null cipher, a record whose plaintext was mutated is opened and its
/// bytes reach the frame decoder: the link closes with a frame-level reason, not with
/// `DecryptFailed`. Mutating the tag still fails like a forged record.
#[test]
fn a_mutated_record_reaches_the_frame_decoder() {
    RecordConfig::set_fuzzing_null_cipher(true);
    assert!(RecordConfig::fuzzing_null_cipher());

    // The first frame's length made huge: the record opens, its frame does not decode.
    let mut h = connected_pair();
    let (w, at) = pending_message(&mut h);
    let end = h.end_mut(w, 0).expect("exists");
    end.pipe[at + 2] = 0x7F;
    let before = h.stats.frame_closes;
    h.deliver(w, 0, &How::All);
    assert_eq!(
        h.stats.frame_closes,
        before + 1,
        "a frame-level close: {:?}",
        h.stats
    );
    assert_eq!(h.stats.decrypt_failed, 0, "{:?}", h.stats);
    assert_eq!(h.stats.messages, 0);

    // A byte of the message's data flipped: delivered as it arrived (the null cipher
    // authenticates nothing), to a node the harness now counts as tainted.
    let mut h = connected_pair();
    let (w, at) = pending_message(&mut h);
    let end = h.end_mut(w, 0).expect("exists");
    let last = end.pipe.len() - TAG_LEN - 1;
    assert!(last > at);
    end.pipe[last] ^= 0x01;
    h.nodes[1].tainted = true;
    h.deliver(w, 0, &How::All);
    assert_eq!(
        h.stats.messages, 1,
        "the altered message was delivered: {:?}",
        h.stats
    );
    assert_eq!(h.stats.record_closes, 0, "{:?}", h.stats);

    // The tag changed: refused like a forged record.
    let mut h = connected_pair();
    let (w, _) = pending_message(&mut h);
    let end = h.end_mut(w, 0).expect("exists");
    let last = end.pipe.len() - 1;
    end.pipe[last] ^= 0x01;
    h.deliver(w, 0, &How::All);
    assert_eq!(h.stats.decrypt_failed, 1, "{:?}", h.stats);
    assert_eq!(h.stats.frame_closes, 0, "{:?}", h.stats);
}

/// A core bug the harness found (fixed): a relay let a neighbour speak as the relay.
///
/// A relay forwards any envelope with the "signed" flag set without checking the
/// signature, and a destination skips the check when the envelope's source is the
/// neighbour it arrived from. So an authenticated neighbour A of B can send B an
/// envelope claiming `source = B`, `dest = C`, with a junk signature: B relays it
/// (`stats.relayed`), and C delivers it as a message from B (`hops = 2`), although B
/// never sent it. With a real cipher only a malicious (modified) node A can do this;
/// here A's bytes are forged with the null cipher. Fixes: a relay drops envelopes whose
/// source is itself, and/or verifies what it forwards, and/or a destination verifies
/// every envelope with `hop_count > 0`.
#[test]
fn a_relay_cannot_speak_for_itself_with_an_unverified_envelope() {
    RecordConfig::set_fuzzing_null_cipher(true);
    let settings = Settings {
        max_links: 5,
        max_handshakes: 3,
        queue_kib: 127,
        reassembly_kib: 127,
        rekey_after_records: None,
        extra_seeds: 0,
        connect_first: true, // 0 - 1 - 2
        quick_timers: false,
    };
    let mut h = Harness::new(&settings);
    let forged = ForgedEnvelope {
        kind: 0,      // data
        signed: true, // junk signature
        hop: 0,
        source: 1, // claims to be the relay
        dest: 2,
        ids: (0x42, 0),
        body: b"spoofed".to_vec(),
    };
    // Node 0's link to node 1 carries one forged record.
    let (w, side) = *h
        .ends(|e| e.node == 0 && e.open)
        .iter()
        .find(|&&(w, s)| h.end(w, 1 - s).is_some_and(|o| o.node == 1))
        .expect("node 0 has a link to node 1");
    h.deliver(w, side, &How::Forge(255, Forged::Envelope(forged)));
    // Delivering it would fail the harness's integrity check ("a payload nobody sent").
    h.pump();
    assert_eq!(
        h.nodes[1].node.stats().forged,
        1,
        "node 1 refuses to relay an envelope in its own name"
    );
}

/// A core bug the harness found (fixed): an oversized message made the node redial in a loop.
///
/// A message larger than the peer's reassembly budget (but within the sender's queue
/// limit, so `send` accepts it) makes the receiver close the link with
/// `ReassemblyBudget`. The sender then dials the peer again at once (an on-demand dial
/// for the pending message, with no backoff), resends the same message on the new link
/// as soon as it is up, and the receiver closes again: a reconnect loop of full hybrid
/// handshakes and message transfers, one per round trip, until the message times out
/// (10 s by default). Found by `node_script` as "the nodes never went quiet" when dials
/// were answered at once. Expected: at most one dial per instant (a backoff, like the
/// seeds' `redial_min`), or `send` refusing what the link's peer cannot reassemble, or
/// the message failing instead of being resent after a close it caused.
#[test]
fn an_oversized_message_does_not_make_the_node_redial_in_a_loop() {
    RecordConfig::set_fuzzing_null_cipher(true);
    let mut h = connected_pair_with(&Settings {
        max_links: 5,
        max_handshakes: 3,
        queue_kib: 127,     // 128 KiB queue: `send` takes 100 KB
        reassembly_kib: 15, // 16 KiB reassembly budget: the receiver refuses it
        rekey_after_records: None,
        extra_seeds: 0,
        connect_first: false,
        quick_timers: false,
    });
    // Node 1 accepted node 0's dial and learned its address when it joined: it is the
    // one that dials on demand (node 0 would wait for its seed's backoff).
    h.run(&Op::Send {
        from: 1,
        to: 0,
        len: 100_000,
        fill: 7,
    });
    let now = h.now;
    for _ in 0..5 {
        h.pump(); // each answers the dial the previous one left pending
    }
    let redials = h.nodes[1]
        .dials
        .iter()
        .filter(|(at, addr)| *at == now && *addr == listen_addr(0))
        .count();
    assert!(
        redials <= 1,
        "node 1 dialed node 0 {redials} times at one instant: {:?}",
        h.stats
    );
}
