//! Fuzz harnesses of chain sync ([`weft_mesh::sync::chain`]).
//!
//! * `chain_sync_messages`: raw bytes into [`ChainSyncMessage::decode`]; what decodes
//!   must encode back to the same bytes (one encoding), and a decoded request is answered
//!   by a [`ChainResponder`] over a real chain with the range asked, within its budget.
//! * `mutated_chain_sync_messages`: genuine requests, replies and heads with bits
//!   flipped: what decodes re-encodes identically, and every entry that survives the
//!   decoder is a genuine one (the decoder recomputes every hash).
//! * `puller_fed_arbitrary_replies`: a [`ChainPuller`] extending a prefix of a source
//!   chain, under a fuzz-chosen script of genuine, reordered, mutated, lost and
//!   arbitrary replies, replies from a forked chain and from a store with a broken link,
//!   head advertisements, time jumps, link drops (resume) and fresh pullers. After every
//!   step: requests in flight and their sizes stay within the configured bounds, the
//!   local chain holds only genuine entries of one chain (the source's, or the fork's
//!   past their common prefix), a fork's evidence is valid and nothing is appended after
//!   it, and the store never refuses an entry (the puller checked it first). At the end
//!   the pull is healed with genuine replies: it converges on the source, or (if it
//!   followed the fork) reports the fork.
//!
//! ```text
//! cargo test -p weft-mesh-fuzz --test chain_sync
//! cargo bolero test -p weft-mesh-fuzz --toolchain nightly -T 60s puller_fed_arbitrary_replies
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use bolero::{check, TypeGenerator};
use weft_mesh::sync::chain::{
    AppendError, ChainEntry, ChainHead, ChainPuller, ChainResponder, ChainStore, ChainSyncConfig,
    ChainSyncError, ChainSyncMessage, ChainSyncStatus, Entries, Fork, GetEntries, MemoryChain,
    MAX_BATCH_ENTRIES,
};
use weft_mesh::Instant;

/// Entries the source and the fork share.
const COMMON: usize = 150;
/// Where the broken store's link breaks: its entry `BREAK + 1` is the fork's.
const BREAK: usize = 200;
/// Entries the local chain starts with.
const HELD: usize = 100;

fn payload(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag}{i}{}", "-".repeat(i % 37)).into_bytes()
}

/// The source: 400 entries. The fork: the first 150 of them, then 250 of its own.
static SOURCE: LazyLock<MemoryChain> =
    LazyLock::new(|| MemoryChain::from_payloads((0..400).map(|i| payload("s", i))).unwrap());
static FORK: LazyLock<MemoryChain> = LazyLock::new(|| {
    let mut c = SOURCE.prefix(COMMON);
    for i in COMMON..400 {
        c.push(payload("f", i)).unwrap();
    }
    c
});
/// The source's first 200 entries, then the fork's from 201 on: entry 201 does not link.
static BROKEN: LazyLock<Raw> = LazyLock::new(|| {
    let mut entries = SOURCE.entries()[..BREAK].to_vec();
    entries.extend(FORK.entries()[BREAK..].iter().cloned());
    Raw(entries)
});

/// A store that serves whatever it holds, links or not.
struct Raw(Vec<ChainEntry>);

impl ChainStore for Raw {
    fn head(&self) -> ChainHead {
        self.0.last().map_or(ChainHead::EMPTY, ChainEntry::head)
    }

    fn get(&self, seq: u64) -> Option<ChainEntry> {
        self.0
            .get(usize::try_from(seq.checked_sub(1)?).ok()?)
            .cloned()
    }

    fn append(&mut self, _: ChainEntry) -> Result<(), AppendError> {
        Err(AppendError::Refused)
    }
}

fn config() -> ChainSyncConfig {
    ChainSyncConfig {
        max_in_flight: 3,
        batch_entries: 16,
        batch_bytes: 900,
        request_timeout: Duration::from_secs(5),
        max_reply_bytes: 900,
    }
}

#[test]
fn chain_sync_messages() {
    check!().for_each(|bytes: &[u8]| {
        let Ok(message) = ChainSyncMessage::decode(bytes) else {
            return;
        };
        assert_eq!(&message.encode()[..], bytes, "one encoding");
        assert_eq!(message.encoded_len(), bytes.len());
        let mut responder = ChainResponder::new(&config());
        match responder.handle_bytes(&*SOURCE, bytes) {
            Ok(reply) => {
                let ChainSyncMessage::GetEntries(request) = message else {
                    panic!("an answer to something other than a request");
                };
                let Ok(ChainSyncMessage::Entries(entries)) = ChainSyncMessage::decode(&reply)
                else {
                    panic!("a reply that does not decode");
                };
                check_answer(&request, &entries, reply.len());
            }
            Err(_) => assert!(!matches!(message, ChainSyncMessage::GetEntries(_))),
        }
    });
}

/// A responder's reply over the source: the range asked, in order, within budget.
fn check_answer(request: &GetEntries, reply: &Entries, len: usize) {
    assert_eq!(reply.id, request.id);
    assert_eq!(reply.head, SOURCE.head());
    assert!(reply.entries.len() <= usize::from(request.max_entries));
    assert!(reply.entries.len() <= MAX_BATCH_ENTRIES);
    let budget = (request.max_bytes as usize).min(900);
    assert!(len <= budget || reply.entries.len() == 1, "{len} bytes");
    for (i, e) in reply.entries.iter().enumerate() {
        assert_eq!(e.seq(), request.from_seq + i as u64);
        assert_eq!(Some(e), SOURCE.get(e.seq()).as_ref());
    }
    if request.from_seq <= SOURCE.head().seq {
        assert!(!reply.entries.is_empty());
    }
}

/// Bit flips (`(byte index, bit)`, indices taken modulo the length) applied to `bytes`.
fn flipped(bytes: &[u8], flips: &[(u16, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        for (at, bit) in flips {
            let i = usize::from(*at) % out.len();
            out[i] ^= 1 << (bit % 8);
        }
    }
    out
}

#[test]
fn mutated_chain_sync_messages() {
    check!()
        .with_type::<(u16, u8, Vec<(u16, u8)>)>()
        .for_each(|(from, max, flips)| {
            let request = GetEntries {
                id: 7,
                from_seq: 1 + u64::from(*from) % 420,
                max_entries: 1 + u16::from(*max) % 24,
                max_bytes: 900,
            };
            let reply = ChainResponder::new(&config()).answer(&*SOURCE, &request);
            for message in [
                ChainSyncMessage::GetEntries(request),
                ChainSyncMessage::Entries(reply),
                ChainSyncMessage::Head(SOURCE.head()),
            ] {
                let bytes = flipped(&message.encode(), flips);
                let Ok(decoded) = ChainSyncMessage::decode(&bytes) else {
                    continue;
                };
                assert_eq!(&decoded.encode()[..], &bytes[..], "one encoding");
                if let ChainSyncMessage::Entries(entries) = decoded {
                    for e in &entries.entries {
                        assert_eq!(
                            Some(e),
                            SOURCE.get(e.seq()).as_ref(),
                            "a forged entry decoded"
                        );
                    }
                }
            }
        });
}

/// One step of the script.
#[derive(Clone, Debug, TypeGenerator)]
enum Op {
    /// Answer the oldest request in flight truthfully.
    Genuine,
    /// Answer the newest request in flight truthfully.
    Newest,
    /// Answer the oldest request with some bits flipped.
    Mutated(Vec<(u16, u8)>),
    /// Answer the oldest request from the fork.
    Forked,
    /// Answer the oldest request from the store with a broken link.
    Broken,
    /// Lose the oldest request.
    Lose,
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// Advertise the head at this sequence number (modulo 420) of the source or the fork.
    Head { seq: u16, fork: bool },
    /// Move the clock on by this many milliseconds, then `handle_timeout`.
    Wait(u16),
    /// The link drops: requests in flight are lost and the puller resumes.
    Resume,
    /// The link drops and a new puller starts.
    Fresh,
}

struct Run {
    puller: ChainPuller,
    chain: MemoryChain,
    responder: ChainResponder,
    queue: VecDeque<GetEntries>,
    now: Instant,
}

impl Run {
    fn pump(&mut self) {
        while let Some(request) = self.puller.poll_request(self.now) {
            assert!(request.from_seq >= 1);
            assert!(request.max_entries >= 1 && request.max_entries <= 16);
            assert_eq!(request.max_bytes, 900);
            self.queue.push_back(request);
        }
        // Lost requests stay in flight for the puller until they time out.
        assert!(
            self.queue.len() <= 3,
            "{} requests in flight",
            self.queue.len()
        );
    }

    fn reply_from<S: ChainStore>(&mut self, store: &S, request: &GetEntries) -> Vec<u8> {
        ChainSyncMessage::Entries(self.responder.answer(store, request))
            .encode()
            .to_vec()
    }

    fn deliver(&mut self, bytes: &[u8]) {
        let before = self.chain.clone();
        let was_forked = matches!(self.puller.status(), ChainSyncStatus::Forked { .. });
        let _ = self.puller.handle_bytes(self.now, &mut self.chain, bytes);
        if was_forked {
            assert_eq!(self.chain, before, "appended after a fork");
        }
        self.check();
    }

    /// Only genuine entries of one chain, and nothing appended across a fork.
    fn check(&self) {
        for e in self.chain.entries() {
            assert!(
                SOURCE.get(e.seq()).as_ref() == Some(e) || FORK.get(e.seq()).as_ref() == Some(e),
                "entry {} is neither the source's nor the fork's",
                e.seq()
            );
        }
        match self.puller.status() {
            ChainSyncStatus::Forked { seq } => {
                let fork = self.puller.fork().expect("evidence");
                assert!(fork.is_valid(), "{fork:?}");
                assert_eq!(fork.seq(), seq);
                match fork {
                    // Our side of the evidence is ours.
                    Fork::Conflict { ours, .. } => {
                        assert_eq!(self.chain.get(ours.seq()).as_ref(), Some(ours));
                    }
                    // The entry that does not link was not appended: we stop at `prev`.
                    Fork::BrokenLink { prev, .. } => assert_eq!(self.chain.head(), prev.head()),
                }
            }
            ChainSyncStatus::Failed(
                e @ (ChainSyncError::Refused { .. } | ChainSyncError::Store { .. }),
            ) => panic!("the puller handed the store an entry it should have refused: {e}"),
            _ => {}
        }
    }

    /// Whether the local chain is a prefix of the source.
    fn on_source(&self) -> bool {
        SOURCE.prefix(self.chain.len()) == self.chain
    }
}

#[test]
fn puller_fed_arbitrary_replies() {
    check!().with_type::<Vec<Op>>().for_each(|ops| {
        let chain = SOURCE.prefix(HELD);
        let remote = SOURCE.head().seq;
        let mut run = Run {
            puller: ChainPuller::new(&config(), &chain, remote),
            chain,
            responder: ChainResponder::new(&config()),
            queue: VecDeque::new(),
            now: Instant::ZERO,
        };
        run.pump();
        for op in ops {
            match op {
                Op::Genuine | Op::Newest => {
                    let request = if matches!(op, Op::Genuine) {
                        run.queue.pop_front()
                    } else {
                        run.queue.pop_back()
                    };
                    if let Some(request) = request {
                        let reply = run.reply_from(&*SOURCE, &request);
                        run.deliver(&reply);
                    }
                }
                Op::Mutated(flips) => {
                    if let Some(request) = run.queue.pop_front() {
                        let reply = flipped(&run.reply_from(&*SOURCE, &request), flips);
                        run.deliver(&reply);
                    }
                }
                Op::Forked => {
                    if let Some(request) = run.queue.pop_front() {
                        let reply = run.reply_from(&*FORK, &request);
                        run.deliver(&reply);
                    }
                }
                Op::Broken => {
                    if let Some(request) = run.queue.pop_front() {
                        let reply = run.reply_from(&*BROKEN, &request);
                        run.deliver(&reply);
                    }
                }
                Op::Lose => {
                    run.queue.pop_front();
                }
                Op::Raw(bytes) => run.deliver(bytes),
                Op::Head { seq, fork } => {
                    let from = if *fork { &*FORK } else { &*SOURCE };
                    let head = from
                        .get(u64::from(*seq) % 420)
                        .map_or(ChainHead::EMPTY, |e| e.head());
                    run.deliver(&ChainSyncMessage::Head(head).encode());
                }
                Op::Wait(ms) => {
                    run.now = run.now + Duration::from_millis(u64::from(*ms));
                    run.puller.handle_timeout(run.now);
                    if let Some(deadline) = run.puller.poll_timeout() {
                        assert!(
                            deadline > run.now,
                            "an overdue deadline after handle_timeout"
                        );
                    }
                }
                Op::Resume => {
                    run.queue.clear();
                    run.puller.resume(&run.chain, remote);
                }
                Op::Fresh => {
                    run.queue.clear();
                    run.puller = ChainPuller::new(&config(), &run.chain, remote);
                }
            }
            run.pump();
        }
        // Heal: genuine replies only; lost requests time out and the pull resumes; a
        // fork the script showed a chain on the source is left for a new puller.
        let mut fresh = false;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "the healing pull ends");
            match run.puller.status() {
                ChainSyncStatus::Running => {
                    if let Some(request) = run.queue.pop_front() {
                        let reply = run.reply_from(&*SOURCE, &request);
                        run.deliver(&reply);
                    } else {
                        let deadline = run.puller.poll_timeout().expect("waiting on a request");
                        run.now = deadline;
                        run.puller.handle_timeout(run.now);
                    }
                }
                ChainSyncStatus::Failed(_) => {
                    run.queue.clear();
                    run.puller.resume(&run.chain, remote);
                }
                ChainSyncStatus::Done { .. } if run.chain == *SOURCE => break,
                ChainSyncStatus::Done { .. } => {
                    // Stopped short (an advertisement or a forged head said less), or
                    // on the fork: the source's head restarts it.
                    run.puller.handle_head(&run.chain, SOURCE.head());
                    assert_eq!(run.puller.status(), ChainSyncStatus::Running);
                }
                ChainSyncStatus::Forked { .. } if run.on_source() => {
                    fresh = true;
                    run.queue.clear();
                    run.puller = ChainPuller::new(&config(), &run.chain, remote);
                }
                ChainSyncStatus::Forked { .. } => break,
            }
            run.pump();
        }
        if run.on_source() {
            assert_eq!(run.chain, *SOURCE);
            assert!(matches!(run.puller.status(), ChainSyncStatus::Done { .. }));
            REACHED[usize::from(fresh)].fetch_add(1, Ordering::Relaxed);
        } else {
            // It followed the fork (past their common prefix): the source shows the fork.
            assert!(run.chain.len() > COMMON);
            assert!(matches!(
                run.puller.status(),
                ChainSyncStatus::Forked { .. }
            ));
            REACHED[2].fetch_add(1, Ordering::Relaxed);
        }
    });
    let [converged, after_fork, followed] = REACHED.each_ref().map(|c| c.load(Ordering::Relaxed));
    println!(
        "puller runs: {converged} converged on the source, {after_fork} converged with a new \
         puller after a fork the script showed, {followed} followed the fork and report it"
    );
}

/// Runs of `puller_fed_arbitrary_replies` by outcome.
static REACHED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
