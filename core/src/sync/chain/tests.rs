//! Chain sync: entry hashes against their definition; a node 10,000 entries behind
//! catching up through a link that resets every 500 entries, each entry moved about
//! once; three chains with divergent forks reporting them with the right evidence and
//! never appending across; prefixes converging and forks found under any batching and
//! order; corrupted, unasked, inconsistent or late replies refused; decoders refusing
//! truncations and oversized counts before allocating.

extern crate std;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::*;

const NOW: Instant = Instant::ZERO;

/// A store that takes whatever it is given: a responder's "chain" with broken links.
#[derive(Clone, Debug, Default)]
struct RawChain(Vec<ChainEntry>);

impl ChainStore for RawChain {
    fn head(&self) -> ChainHead {
        self.0.last().map_or(ChainHead::EMPTY, ChainEntry::head)
    }

    fn get(&self, seq: u64) -> Option<ChainEntry> {
        self.0
            .get(usize::try_from(seq.checked_sub(1)?).ok()?)
            .cloned()
    }

    fn append(&mut self, entry: ChainEntry) -> Result<(), AppendError> {
        self.0.push(entry);
        Ok(())
    }
}

/// A store that refuses entries past `limit`.
struct Limited {
    chain: MemoryChain,
    limit: u64,
}

impl ChainStore for Limited {
    fn head(&self) -> ChainHead {
        self.chain.head()
    }

    fn get(&self, seq: u64) -> Option<ChainEntry> {
        self.chain.get(seq)
    }

    fn append(&mut self, entry: ChainEntry) -> Result<(), AppendError> {
        if entry.seq() > self.limit {
            return Err(AppendError::Refused);
        }
        self.chain.append(entry)
    }
}

fn chain(tag: &str, n: usize) -> MemoryChain {
    MemoryChain::from_payloads((0..n).map(|i| format!("{tag} entry {i}").into_bytes())).unwrap()
}

/// `base` followed by `n` entries tagged `tag`.
fn extend(base: &MemoryChain, tag: &str, n: usize) -> MemoryChain {
    let mut c = base.clone();
    for i in 0..n {
        c.push(format!("{tag} entry {i}").into_bytes()).unwrap();
    }
    c
}

fn entry(c: &MemoryChain, seq: u64) -> ChainEntry {
    c.get(seq).unwrap()
}

/// Which request in flight is answered next.
#[derive(Clone, Copy, Debug)]
enum Order {
    Oldest,
    Newest,
    Alternate,
}

/// Run a pull of `theirs` into `ours` to the end, answering one request at a time in
/// `order`, with `tamper` applied to every encoded reply.
fn pull_with<S: ChainStore>(
    config: &ChainSyncConfig,
    ours: &mut impl ChainStore,
    theirs: &S,
    remote: u64,
    order: Order,
    mut tamper: impl FnMut(&mut Vec<u8>),
) -> (ChainPuller, ChainResponder) {
    let mut puller = ChainPuller::new(config, ours, remote);
    let mut responder = ChainResponder::new(config);
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let mut steps = 0usize;
    loop {
        while let Some(r) = puller.poll_transmit(NOW) {
            queue.push_back(r);
        }
        let request = match order {
            Order::Oldest => queue.pop_front(),
            Order::Newest => queue.pop_back(),
            Order::Alternate if steps % 2 == 0 => queue.pop_front(),
            Order::Alternate => queue.pop_back(),
        };
        let Some(request) = request else { break };
        let mut reply = responder.handle_bytes(theirs, &request).unwrap().to_vec();
        tamper(&mut reply);
        let _ = puller.handle_bytes(NOW, ours, &reply);
        steps += 1;
        assert!(steps < 100_000, "the pull ends");
    }
    (puller, responder)
}

fn pull(
    config: &ChainSyncConfig,
    ours: &mut MemoryChain,
    theirs: &MemoryChain,
) -> (ChainPuller, ChainResponder) {
    let remote = theirs.head().seq;
    pull_with(config, ours, theirs, remote, Order::Oldest, |_| {})
}

#[test]
fn the_entry_hash_is_its_definition() {
    // Pinned against an independent computation (Python's hashlib).
    let genesis = ChainEntry::genesis(&b"hi"[..]).unwrap();
    assert_eq!(
        hex::encode(genesis.hash()),
        "356ba331a125f4a96f9b583e108ac50df4bd9b96352ec0aad477622bd9720d57"
    );
    let second = ChainEntry::after(genesis.head(), &b"there"[..]).unwrap();
    assert_eq!(
        hex::encode(second.hash()),
        "d9368d0b091bc27fab108353044c70edbd1c56b3ba90a250d0f43b0524647a17"
    );
    let mut preimage = b"weft-mesh chain entry v1".to_vec();
    preimage.extend(2u64.to_be_bytes());
    preimage.extend(genesis.hash());
    preimage.extend(b"there");
    assert_eq!(*second.hash(), <[u8; 32]>::from(Sha256::digest(&preimage)));
    assert_eq!(second.seq(), 2);
    assert_eq!(second.prev_hash(), genesis.hash());
    assert!(second.follows(&genesis.head()));
    assert!(!second.follows(&ChainHead::EMPTY));
    assert!(genesis.follows(&ChainHead::EMPTY));
    // Every field is bound: another sequence number, predecessor or payload, another hash.
    assert_ne!(entry_hash(3, genesis.hash(), b"there"), *second.hash());
    assert_ne!(entry_hash(2, &[1; 32], b"there"), *second.hash());
    assert_ne!(entry_hash(2, genesis.hash(), b"there!"), *second.hash());

    assert_eq!(
        ChainEntry::new(0, GENESIS_PREV, vec![]),
        Err(EntryError::Seq)
    );
    assert_eq!(
        ChainEntry::new(MAX_SEQ + 1, [1; 32], vec![]),
        Err(EntryError::Seq)
    );
    assert!(ChainEntry::new(MAX_SEQ, [1; 32], vec![]).is_ok());
    assert_eq!(
        ChainEntry::new(1, [1; 32], vec![]),
        Err(EntryError::Genesis)
    );
    assert_eq!(
        ChainEntry::after(
            ChainHead {
                seq: 0,
                hash: [1; 32]
            },
            vec![]
        ),
        Err(EntryError::Genesis)
    );
    assert_eq!(
        ChainEntry::genesis(vec![0; MAX_ENTRY_LEN + 1]),
        Err(EntryError::PayloadTooLarge)
    );
    assert!(ChainEntry::genesis(vec![0; MAX_ENTRY_LEN]).is_ok());
}

#[test]
fn a_memory_chain_takes_only_the_next_entry() {
    let mut c = MemoryChain::new();
    assert_eq!(c.head(), ChainHead::EMPTY);
    assert_eq!(c.get(0), None);
    assert_eq!(c.get(1), None);
    let one = ChainEntry::genesis(&b"a"[..]).unwrap();
    let two = ChainEntry::after(one.head(), &b"b"[..]).unwrap();
    assert_eq!(c.append(two.clone()), Err(AppendError::NotNext));
    c.append(one.clone()).unwrap();
    assert_eq!(c.append(one.clone()), Err(AppendError::NotNext));
    let other = ChainEntry::new(2, [9; 32], &b"b"[..]).unwrap();
    assert_eq!(c.append(other), Err(AppendError::NotNext));
    c.append(two.clone()).unwrap();
    assert_eq!(c.head(), two.head());
    assert_eq!(c.get(1), Some(one));
    assert_eq!(c.get(2), Some(two));
    assert_eq!(c.get(3), None);
    assert_eq!(c.len(), 2);
    assert_eq!(c.prefix(1).len(), 1);
    assert_eq!(c.prefix(9), c);
}

#[test]
fn a_worked_example_of_the_encoding() {
    let get = ChainSyncMessage::GetEntries(GetEntries {
        id: 1,
        from_seq: 0x0102,
        max_entries: 3,
        max_bytes: 0x0001_0000,
    });
    assert_eq!(
        get.encode().as_ref(),
        &[0x01, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 3, 0, 0x01, 0, 0][..]
    );
    let genesis = ChainEntry::genesis(&b"hi"[..]).unwrap();
    let hash = *genesis.hash();
    let entries = ChainSyncMessage::Entries(Entries {
        id: 1,
        head: genesis.head(),
        entries: vec![genesis],
    });
    let mut expected = vec![0x02, 0, 0, 0, 1];
    expected.extend([0, 0, 0, 0, 0, 0, 0, 1]);
    expected.extend(hash);
    expected.extend([0, 1]);
    expected.extend([0, 0, 0, 0, 0, 0, 0, 1]);
    expected.extend([0; 32]);
    expected.extend(hash);
    expected.extend([0, 0, 0, 2, b'h', b'i']);
    assert_eq!(entries.encode().as_ref(), &expected[..]);
    assert_eq!(expected.len(), ENTRIES_HEADER_LEN + ENTRY_HEADER_LEN + 2);
    let mut head = vec![0x03, 0, 0, 0, 0, 0, 0, 0, 1];
    head.extend(hash);
    assert_eq!(
        ChainSyncMessage::Head(ChainHead { seq: 1, hash })
            .encode()
            .as_ref(),
        &head[..]
    );
    assert_eq!(
        ChainSyncMessage::Head(ChainHead::EMPTY).encode().as_ref(),
        &[[0x03].as_slice(), &[0; 40]].concat()[..]
    );
}

fn sample_messages() -> Vec<ChainSyncMessage> {
    let c = chain("sample", 5);
    vec![
        ChainSyncMessage::GetEntries(GetEntries {
            id: 0x0102_0304,
            from_seq: 7,
            max_entries: MAX_BATCH_ENTRIES as u16,
            max_bytes: u32::MAX,
        }),
        ChainSyncMessage::Entries(Entries {
            id: 9,
            head: c.head(),
            entries: c.entries()[1..].to_vec(),
        }),
        ChainSyncMessage::Entries(Entries {
            id: 0,
            head: ChainHead::EMPTY,
            entries: vec![],
        }),
        ChainSyncMessage::Entries(Entries {
            id: 2,
            head: c.head(),
            entries: vec![ChainEntry::genesis(vec![]).unwrap()],
        }),
        ChainSyncMessage::Head(c.head()),
    ]
}

#[test]
fn messages_round_trip_and_every_truncation_fails() {
    for m in &sample_messages() {
        let bytes = m.encode();
        assert_eq!(bytes.len(), m.encoded_len());
        assert_eq!(ChainSyncMessage::decode(&bytes).as_ref(), Ok(m));
        for cut in 0..bytes.len() {
            assert_eq!(
                ChainSyncMessage::decode(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "{m:?} cut at {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            ChainSyncMessage::decode(&longer),
            Err(DecodeError::TrailingBytes)
        );
    }
}

#[test]
fn malformed_messages_are_refused_before_allocating() {
    use DecodeError::*;
    let d = ChainSyncMessage::decode;
    assert_eq!(d(&[]), Err(Truncated));
    assert_eq!(d(&[0x04]), Err(UnknownKind(0x04)));
    assert_eq!(d(&[0x00]), Err(UnknownKind(0x00)));
    // Requests: from 0, no entries, too many entries.
    let get = |from: u64, max: u16| {
        let mut b = vec![0x01, 0, 0, 0, 0];
        b.extend(from.to_be_bytes());
        b.extend(max.to_be_bytes());
        b.extend([0, 0, 0, 0]);
        b
    };
    assert_eq!(d(&get(0, 1)), Err(Seq));
    assert_eq!(d(&get(1, 0)), Err(Count));
    assert_eq!(d(&get(1, MAX_BATCH_ENTRIES as u16 + 1)), Err(Count));
    assert_eq!(d(&get(1, u16::MAX)), Err(Count));
    assert!(d(&get(u64::MAX, MAX_BATCH_ENTRIES as u16)).is_ok());
    // Replies: a count over the limit with nothing after it; a count that is not there.
    let reply = |head_seq: u64, head_hash: [u8; 32], count: u16| {
        let mut b = vec![0x02, 0, 0, 0, 0];
        b.extend(head_seq.to_be_bytes());
        b.extend(head_hash);
        b.extend(count.to_be_bytes());
        b
    };
    assert_eq!(d(&reply(0, [0; 32], 4097)), Err(Count));
    assert_eq!(d(&reply(0, [0; 32], u16::MAX)), Err(Count));
    assert_eq!(d(&reply(0, [0; 32], 4096)), Err(Truncated));
    assert_eq!(d(&reply(0, [1; 32], 0)), Err(Head));
    assert_eq!(
        d(&[[0x03].as_slice(), &[0; 8], &[1; 32]].concat()),
        Err(Head)
    );
    assert!(d(&reply(5, [0; 32], 0)).is_ok());
    // Entries: length over the limit refused before its bytes are read.
    let with_entry = |seq: u64, prev: [u8; 32], hash: [u8; 32], len: u32, payload: &[u8]| {
        let mut b = reply(1, [0; 32], 1);
        b.extend(seq.to_be_bytes());
        b.extend(prev);
        b.extend(hash);
        b.extend(len.to_be_bytes());
        b.extend(payload);
        b
    };
    let good = ChainEntry::genesis(&b"ok"[..]).unwrap();
    assert!(d(&with_entry(1, [0; 32], *good.hash(), 2, b"ok")).is_ok());
    assert_eq!(
        d(&with_entry(1, [0; 32], *good.hash(), u32::MAX, b"")),
        Err(PayloadTooLarge)
    );
    assert_eq!(
        d(&with_entry(1, [0; 32], *good.hash(), (1 << 20) + 1, b"")),
        Err(PayloadTooLarge)
    );
    assert_eq!(
        d(&with_entry(1, [0; 32], *good.hash(), 1 << 20, b"")),
        Err(Truncated)
    );
    // A corrupted payload, hash, predecessor or sequence number: the hash gives it away.
    assert_eq!(
        d(&with_entry(1, [0; 32], *good.hash(), 2, b"oK")),
        Err(Hash)
    );
    let mut bad = *good.hash();
    bad[31] ^= 1;
    assert_eq!(d(&with_entry(1, [0; 32], bad, 2, b"ok")), Err(Hash));
    assert_eq!(
        d(&with_entry(2, [0; 32], *good.hash(), 2, b"ok")),
        Err(Hash)
    );
    assert_eq!(
        d(&with_entry(1, [1; 32], *good.hash(), 2, b"ok")),
        Err(Genesis)
    );
    assert_eq!(d(&with_entry(0, [0; 32], *good.hash(), 2, b"ok")), Err(Seq));
    assert_eq!(
        d(&with_entry(u64::MAX, [0; 32], *good.hash(), 2, b"ok")),
        Err(Seq)
    );
}

/// What a catch-up through a resetting link did.
struct CatchUp {
    ours: MemoryChain,
    theirs: MemoryChain,
    /// Entries that reached a puller, over all pullers.
    received: u64,
    /// Entries the responder sent (some lost in flight at a reset).
    sent: u64,
    /// Bytes both ways that were not entry payloads, over all pullers.
    overhead: u64,
    resets: u32,
    /// Virtual time to catch up.
    took: Duration,
}

/// A node 10,000 entries behind catches up through a link with 3 to 7 ms of latency
/// each way (so replies also overtake each other) that drops every time 500 more entries were appended: requests and replies in
/// flight are lost, and a new puller (or the old one, resumed) starts from the store's
/// head.
fn catch_up_with_resets(resume: bool) -> CatchUp {
    const BEHIND: usize = 10_000;
    const HELD: usize = 100;
    const TICK: Duration = Duration::from_millis(1);
    let theirs = MemoryChain::from_payloads(
        (0..HELD + BEHIND)
            .map(|i| format!("entry {i:05} {}", "x".repeat(40 + i % 61)).into_bytes()),
    )
    .unwrap();
    let mut ours = theirs.prefix(HELD);
    let config = ChainSyncConfig {
        max_in_flight: 4,
        batch_entries: 64,
        batch_bytes: 16 * 1024,
        ..ChainSyncConfig::default()
    };
    let remote = theirs.head().seq;
    let mut now = Instant::ZERO;
    let mut responder = ChainResponder::new(&config);
    let mut puller = ChainPuller::new(&config, &ours, remote);
    let mut total = ChainSyncStats::default();
    let add = |total: &mut ChainSyncStats, s: &ChainSyncStats| {
        total.entries += s.entries;
        total.bytes_sent += s.bytes_sent;
        total.bytes_received += s.bytes_received;
        total.payload_bytes += s.payload_bytes;
    };
    // Messages on the wire, by the instant each arrives.
    let mut to_responder: BTreeMap<(Instant, u64), Bytes> = BTreeMap::new();
    let mut to_puller: BTreeMap<(Instant, u64), Bytes> = BTreeMap::new();
    let mut sent = 0u64;
    let mut latency = || {
        sent += 1;
        (Duration::from_millis(3 + sent % 5), sent)
    };
    let mut resets = 0u32;
    let mut since_reset = 0u64;
    while !matches!(puller.status(), ChainSyncStatus::Done { .. }) {
        assert_eq!(puller.status(), ChainSyncStatus::Running);
        while let Some(r) = puller.poll_transmit(now) {
            let (delay, n) = latency();
            to_responder.insert((now + delay, n), r);
        }
        while to_responder
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= now)
        {
            let (_, request) = to_responder.pop_first().unwrap();
            let reply = responder.handle_bytes(&theirs, &request).unwrap();
            let (delay, n) = latency();
            to_puller.insert((now + delay, n), reply);
        }
        while to_puller
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= now)
        {
            let (_, reply) = to_puller.pop_first().unwrap();
            let before = puller.stats().appended;
            puller.handle_bytes(now, &mut ours, &reply).unwrap();
            since_reset += puller.stats().appended - before;
            while let Some(r) = puller.poll_transmit(now) {
                let (delay, n) = latency();
                to_responder.insert((now + delay, n), r);
            }
            if since_reset >= 500 && ours.len() < theirs.len() {
                // The link drops: everything in flight is lost.
                resets += 1;
                since_reset = 0;
                to_responder.clear();
                to_puller.clear();
                if resume {
                    puller.resume(&ours, remote);
                } else {
                    add(&mut total, puller.stats());
                    puller = ChainPuller::new(&config, &ours, remote);
                }
            }
        }
        puller.handle_timeout(now);
        now = now + TICK;
        assert!(
            now < Instant::from_micros(600_000_000),
            "caught up within 10 minutes"
        );
    }
    add(&mut total, puller.stats());
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Done {
            head: theirs.head()
        }
    );
    CatchUp {
        ours,
        theirs,
        received: total.entries,
        sent: responder.stats().entries,
        overhead: total.bytes_sent + total.bytes_received - total.payload_bytes,
        resets,
        took: now - Instant::ZERO,
    }
}

#[test]
fn a_node_10000_entries_behind_catches_up_through_a_link_that_resets_every_500_entries() {
    for resume in [false, true] {
        let started = std::time::Instant::now();
        let run = catch_up_with_resets(resume);
        let elapsed = started.elapsed();
        assert_eq!(run.ours, run.theirs);
        let resets = run.resets;
        assert!(resets >= 15, "{resets} resets");
        // Each entry arrives once, plus the check of our head: one entry per puller (a
        // resumed puller knows its head is on the peer's chain, having appended it).
        let slack = if resume { 1 } else { u64::from(resets) + 1 };
        assert_eq!(
            run.received,
            10_000 + slack,
            "entries received for 10,000 ({resets} resets)"
        );
        assert!(run.sent > run.received, "replies were lost in flight");
        std::println!(
            "chain catch-up, 10,000 entries behind, 3-7 ms each way, link reset every 500 \
             entries ({} puller): {resets} resets, {} entries received, {} sent ({} lost in \
             flight), {:.1} bytes of overhead per entry received; {:?} of virtual time \
             ({:.0} entries/s), {:.0} entries/s of wall clock (test profile)",
            if resume { "resumed" } else { "a new" },
            run.received,
            run.sent,
            run.sent - run.received,
            run.overhead as f64 / run.received as f64,
            run.took,
            10_000.0 / run.took.as_secs_f64(),
            10_000.0 / elapsed.as_secs_f64(),
        );
    }
}

#[test]
fn bytes_per_entry_overhead_on_an_unbroken_catch_up() {
    let theirs = chain("bulk", 5000);
    let mut ours = MemoryChain::new();
    let started = std::time::Instant::now();
    let (puller, responder) = pull(&ChainSyncConfig::default(), &mut ours, &theirs);
    let elapsed = started.elapsed();
    assert_eq!(ours, theirs);
    let s = puller.stats();
    assert_eq!(s.entries, 5000);
    assert_eq!(s.appended, 5000);
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.bytes_sent, responder.stats().bytes_received);
    assert_eq!(s.bytes_received, responder.stats().bytes_sent);
    let overhead = s.bytes_sent + s.bytes_received - s.payload_bytes;
    let per_entry = overhead as f64 / 5000.0;
    // 76 bytes per entry on the wire (seq, both hashes, length), plus a request and a
    // reply header per batch of 512.
    assert!((76.0..77.0).contains(&per_entry), "{per_entry}");
    std::println!(
        "chain sync, 5000 entries of {} payload bytes on average from scratch: {} requests, \
         {per_entry:.2} bytes overhead per entry ({ENTRY_HEADER_LEN} per entry + \
         {GET_ENTRIES_LEN} + {ENTRIES_HEADER_LEN} per batch), {:.0} entries/s",
        s.payload_bytes / 5000,
        s.requests,
        5000.0 / elapsed.as_secs_f64(),
    );
}

#[test]
fn three_chains_with_divergent_forks_report_them_with_evidence() {
    let base = chain("base", 100);
    // A extends the base; B forks from it after entry 80; C forks from A after 115.
    let a = extend(&base, "a", 30);
    let b = extend(&base.prefix(80), "b", 60);
    let c = extend(&a.prefix(115), "c", 20);
    assert_eq!((a.len(), b.len(), c.len()), (130, 140, 135));
    let config = ChainSyncConfig {
        batch_entries: 16,
        ..ChainSyncConfig::default()
    };

    // Each pulls from each that is ahead: the entry at its head differs.
    for (ours, theirs) in [(&a, &b), (&a, &c), (&c, &b)] {
        let mut mine = ours.clone();
        let (puller, _) = pull(&config, &mut mine, theirs);
        let seq = ours.head().seq;
        assert_eq!(puller.status(), ChainSyncStatus::Forked { seq });
        assert_eq!(
            puller.fork(),
            Some(&Fork::Conflict {
                ours: entry(ours, seq),
                theirs: entry(theirs, seq),
            })
        );
        assert!(puller.fork().unwrap().is_valid());
        assert_eq!(&mine, ours, "nothing appended across the fork");
        assert_eq!(puller.stats().appended, 0);
        // A forked puller stays forked.
        let mut again = puller.clone();
        again.resume(&mine, theirs.head().seq);
        assert_eq!(again.status(), ChainSyncStatus::Forked { seq });
        assert_eq!(again.poll_request(NOW), None);
    }
    // The one behind does not pull (its puller is done at once); the forks are found
    // from the other side.
    let mut mine = b.clone();
    let (puller, _) = pull(&config, &mut mine, &a);
    assert_eq!(puller.status(), ChainSyncStatus::Done { head: b.head() });
    assert_eq!(puller.stats().requests, 0);

    // A node on the common prefix follows A, then meets B: fork at its new head.
    let mut d = base.prefix(90);
    let (puller, _) = pull(&config, &mut d, &a);
    assert_eq!(puller.status(), ChainSyncStatus::Done { head: a.head() });
    assert_eq!(d, a);
    let (puller, _) = pull(&config, &mut d, &b);
    assert_eq!(puller.status(), ChainSyncStatus::Forked { seq: 130 });
    assert_eq!(
        puller.fork(),
        Some(&Fork::Conflict {
            ours: entry(&a, 130),
            theirs: entry(&b, 130)
        })
    );
    assert_eq!(d, a);

    // A node that pulled A's entries up to 120 and resumes against C (which agrees up
    // to 115): C's entry 121 does not link to A's 120, which it holds.
    let mut e = base.prefix(50);
    let a_then = a.prefix(120);
    let mut puller = ChainPuller::new(&config, &e, 120);
    let mut responder = ChainResponder::new(&config);
    while let Some(r) = puller.poll_transmit(NOW) {
        let reply = responder.handle_bytes(&a_then, &r).unwrap();
        puller.handle_bytes(NOW, &mut e, &reply).unwrap();
    }
    assert_eq!(e, a.prefix(120));
    puller.resume(&e, c.head().seq);
    let mut result = Ok(());
    while let Some(r) = puller.poll_transmit(NOW) {
        let reply = responder.handle_bytes(&c, &r).unwrap();
        result = puller.handle_bytes(NOW, &mut e, &reply);
    }
    assert_eq!(result, Err(ChainSyncError::Forked { seq: 121 }));
    assert_eq!(
        puller.fork(),
        Some(&Fork::BrokenLink {
            prev: entry(&a, 120),
            next: entry(&c, 121)
        })
    );
    assert!(puller.fork().unwrap().is_valid());
    assert_eq!(e, a.prefix(120));
    // A new puller against C instead checks entry 120 first.
    let (puller, _) = pull(&config, &mut e, &c);
    assert_eq!(
        puller.fork(),
        Some(&Fork::Conflict {
            ours: entry(&a, 120),
            theirs: entry(&c, 120)
        })
    );
    assert_eq!(e, a.prefix(120));
}

#[test]
fn equal_heads_cost_one_entry_and_equal_length_forks_are_found() {
    let base = chain("base", 100);
    let x = extend(&base, "x", 30);
    let y = extend(&base, "y", 30);
    let config = ChainSyncConfig::default();
    let mut mine = x.clone();
    let (puller, _) = pull(&config, &mut mine, &x);
    assert_eq!(puller.status(), ChainSyncStatus::Done { head: x.head() });
    assert_eq!((puller.stats().requests, puller.stats().entries), (1, 1));
    assert_eq!(puller.stats().duplicates, 1);
    let (puller, _) = pull(&config, &mut mine, &y);
    assert_eq!(puller.status(), ChainSyncStatus::Forked { seq: 130 });
    assert_eq!((puller.stats().requests, puller.stats().entries), (1, 1));
    // Two empty chains: nothing to do.
    let mut empty = MemoryChain::new();
    let (puller, _) = pull(&config, &mut empty, &MemoryChain::new());
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Done {
            head: ChainHead::EMPTY
        }
    );
    assert_eq!(puller.stats().requests, 0);
}

#[test]
fn the_check_of_our_head_comes_first_whatever_order_replies_arrive_in() {
    // Ours is one entry, theirs two of a different chain. The request for entry 2 is
    // answered before the one for entry 1 (our head): entry 2 waits, and the fork is
    // shown at our head (both entries 1), not as entry 2 failing to link.
    let ours0 = chain("o", 1);
    let theirs = chain("t", 2);
    let config = ChainSyncConfig {
        batch_entries: 1,
        ..ChainSyncConfig::default()
    };
    let mut ours = ours0.clone();
    let mut puller = ChainPuller::new(&config, &ours, 2);
    let check = puller.poll_request(NOW).unwrap();
    let next = puller.poll_request(NOW).unwrap();
    assert_eq!((check.from_seq, next.from_seq), (1, 2));
    puller
        .handle_entries(NOW, &mut ours, responder_answer(&theirs, &next))
        .unwrap();
    assert_eq!(puller.status(), ChainSyncStatus::Running);
    assert_eq!(
        puller.handle_entries(NOW, &mut ours, responder_answer(&theirs, &check)),
        Err(ChainSyncError::Forked { seq: 1 })
    );
    assert_eq!(
        puller.fork(),
        Some(&Fork::Conflict {
            ours: entry(&ours0, 1),
            theirs: entry(&theirs, 1)
        })
    );
    assert_eq!(ours, ours0);
}

#[test]
fn head_advertisements_extend_a_pull_and_expose_hidden_forks() {
    let theirs = chain("t", 100);
    let config = ChainSyncConfig {
        batch_entries: 8,
        ..ChainSyncConfig::default()
    };
    // The peer had 50 entries when the pull started: done at 50. It grows to 100 and
    // says so: the pull restarts from 51 (its head is verified: no entry again).
    let earlier = theirs.prefix(50);
    let mut ours = theirs.prefix(10);
    let mut puller = ChainPuller::new(&config, &ours, 50);
    let mut responder = ChainResponder::new(&config);
    let mut run = |puller: &mut ChainPuller, ours: &mut MemoryChain, from: &MemoryChain| {
        while let Some(r) = puller.poll_transmit(NOW) {
            let reply = responder.handle_bytes(from, &r).unwrap();
            puller.handle_bytes(NOW, ours, &reply).unwrap();
        }
    };
    run(&mut puller, &mut ours, &earlier);
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Done {
            head: earlier.head()
        }
    );
    assert_eq!(puller.stats().entries, 41, "entry 10 again, then 11 to 50");
    let head = ChainSyncMessage::Head(theirs.head()).encode();
    puller.handle_bytes(NOW, &mut ours, &head).unwrap();
    assert_eq!(puller.status(), ChainSyncStatus::Running);
    let mut peek = puller.clone();
    assert_eq!(peek.poll_request(NOW).unwrap().from_seq, 51);
    run(&mut puller, &mut ours, &theirs);
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Done {
            head: theirs.head()
        }
    );
    assert_eq!(ours, theirs);
    assert_eq!(puller.stats().entries, 91);

    // A puller done at once (the peer said it was behind) hears the peer's head: same
    // sequence number as one of ours, another hash. It fetches that entry: a fork.
    let other = extend(&theirs.prefix(90), "o", 10);
    for seq in [100u64, 95] {
        let mut puller = ChainPuller::new(&config, &ours, 20);
        assert!(matches!(puller.status(), ChainSyncStatus::Done { .. }));
        puller.handle_head(&ours, entry(&other, seq).head());
        assert_eq!(puller.status(), ChainSyncStatus::Running);
        let r = puller.poll_request(NOW).unwrap();
        assert_eq!((r.from_seq, r.max_entries), (seq, 1));
        let reply = ChainResponder::new(&config).answer(&other, &r);
        assert_eq!(
            puller.handle_entries(NOW, &mut ours, reply),
            Err(ChainSyncError::Forked { seq })
        );
        assert_eq!(
            puller.fork(),
            Some(&Fork::Conflict {
                ours: entry(&theirs, seq),
                theirs: entry(&other, seq)
            })
        );
    }
    // Our own head advertised back, or an older entry of ours: nothing to do.
    let mut puller = ChainPuller::new(&config, &ours, 20);
    puller.handle_head(&ours, theirs.head());
    puller.handle_head(&ours, entry(&theirs, 3).head());
    assert_eq!(puller.poll_request(NOW), None);
    assert!(matches!(puller.status(), ChainSyncStatus::Done { .. }));
}

fn responder_answer(store: &MemoryChain, request: &GetEntries) -> Entries {
    ChainResponder::new(&ChainSyncConfig::default()).answer(store, request)
}

#[test]
fn a_broken_link_inside_a_reply_stops_just_before_it() {
    let x = chain("x", 60);
    let y = chain("y", 60);
    // The responder's "chain": x's first 40 entries, then y's from 41 on (entry 41
    // points at y's 40).
    let mut raw = RawChain(x.entries()[..40].to_vec());
    raw.0.extend(y.entries()[40..].iter().cloned());
    for batch in [4usize, 16, 100] {
        let config = ChainSyncConfig {
            batch_entries: batch,
            ..ChainSyncConfig::default()
        };
        let mut ours = x.prefix(10);
        let (puller, _) = pull_with(&config, &mut ours, &raw, 60, Order::Oldest, |_| {});
        assert_eq!(puller.status(), ChainSyncStatus::Forked { seq: 41 });
        assert_eq!(
            puller.fork(),
            Some(&Fork::BrokenLink {
                prev: entry(&x, 40),
                next: entry(&y, 41)
            })
        );
        assert_eq!(ours, x.prefix(40), "appended up to the break, not across");
    }
}

#[test]
fn corrupted_entries_are_rejected() {
    let theirs = chain("t", 50);
    let config = ChainSyncConfig {
        batch_entries: 10,
        ..ChainSyncConfig::default()
    };
    // Ours holds 5: the first reply is entries 5 to 14, of 9-byte payloads up to
    // entry 10. Flip a bit in one field of its third entry (7): payload, hash,
    // predecessor, sequence number.
    let third = ENTRIES_HEADER_LEN + 2 * (ENTRY_HEADER_LEN + 9);
    for offset in [ENTRY_HEADER_LEN + 3, 8 + 32 + 5, 8 + 3, 7] {
        let mut ours = theirs.prefix(5);
        let mut first = true;
        let (puller, _) = pull_with(&config, &mut ours, &theirs, 50, Order::Oldest, |r| {
            if std::mem::take(&mut first) {
                assert_eq!(
                    &r[third + ENTRY_HEADER_LEN..third + ENTRY_HEADER_LEN + 9],
                    b"t entry 6"
                );
                r[third + offset] ^= 0x10;
            }
        });
        assert_eq!(
            puller.status(),
            ChainSyncStatus::Failed(ChainSyncError::Decode(DecodeError::Hash))
        );
        assert_eq!(ours, theirs.prefix(5), "nothing from the corrupted reply");
    }
}

#[test]
fn replies_that_do_not_match_their_request_fail_the_pull() {
    let theirs = chain("t", 100);
    let config = ChainSyncConfig {
        batch_entries: 10,
        ..ChainSyncConfig::default()
    };
    let start = |ours: &MemoryChain| {
        let mut p = ChainPuller::new(&config, ours, 100);
        let r = p.poll_request(NOW).unwrap();
        (p, r)
    };
    let ours0 = theirs.prefix(20);
    let check = |tamper: &dyn Fn(&mut Entries), error: ChainSyncError| {
        let mut ours = ours0.clone();
        let (mut p, r) = start(&ours);
        let mut reply = responder_answer(&theirs, &r);
        tamper(&mut reply);
        assert_eq!(p.handle_entries(NOW, &mut ours, reply), Err(error));
        assert_eq!(p.status(), ChainSyncStatus::Failed(error));
        assert_eq!(p.poll_request(NOW), None);
        assert_eq!(ours, ours0);
    };
    check(&|e| e.id += 1, ChainSyncError::UnknownRequest(1));
    check(
        &|e| {
            e.entries.remove(0);
        },
        ChainSyncError::WrongRange,
    );
    check(
        &|e| {
            e.entries.remove(3);
        },
        ChainSyncError::WrongRange,
    );
    check(
        &|e| e.entries.push(entry(&theirs, 30)),
        ChainSyncError::WrongRange,
    );
    check(&|e| e.entries.swap(1, 2), ChainSyncError::WrongRange);
    check(
        &|e| e.head = entry(&theirs, 25).head(),
        ChainSyncError::Inconsistent,
    );
    check(
        &|e| {
            e.head = ChainHead {
                seq: 29,
                hash: [7; 32],
            }
        },
        ChainSyncError::Inconsistent,
    );
    check(&|e| e.entries.clear(), ChainSyncError::Unavailable);

    // Over the byte budget with more than one entry.
    let mut ours = ours0.clone();
    let small = ChainSyncConfig {
        batch_bytes: 300,
        ..config.clone()
    };
    let mut p = ChainPuller::new(&small, &ours, 100);
    let r = p.poll_request(NOW).unwrap();
    assert_eq!(r.max_bytes, 300);
    let reply = ChainResponder::new(&ChainSyncConfig::default()).answer(
        &theirs,
        &GetEntries {
            max_bytes: 10_000,
            ..r
        },
    );
    assert_eq!(
        p.handle_entries(NOW, &mut ours, reply),
        Err(ChainSyncError::WrongRange)
    );

    // A request where a reply was expected, and garbage.
    let mut ours = ours0.clone();
    let (mut p, r) = start(&ours);
    let request = ChainSyncMessage::GetEntries(r).encode();
    assert_eq!(
        p.handle_bytes(NOW, &mut ours, &request),
        Err(ChainSyncError::Unexpected)
    );
    let (mut p, _) = start(&ours);
    assert_eq!(
        p.handle_bytes(NOW, &mut ours, &[0x02, 0]),
        Err(ChainSyncError::Decode(DecodeError::Truncated))
    );
    // After failing, replies are ignored.
    let late = ChainSyncMessage::Entries(responder_answer(&theirs, &r)).encode();
    assert_eq!(p.handle_bytes(NOW, &mut ours, &late), Ok(()));
    assert_eq!(ours, ours0);
    // A responder is sent replies and advertisements: refused.
    let mut responder = ChainResponder::new(&config);
    assert_eq!(
        responder.handle_bytes(&theirs, &late),
        Err(ChainSyncError::Unexpected)
    );
    assert_eq!(
        responder.handle_bytes(&theirs, &ChainSyncMessage::Head(theirs.head()).encode()),
        Err(ChainSyncError::Unexpected)
    );
    assert_eq!(
        responder.handle_bytes(&theirs, &[0x01]),
        Err(ChainSyncError::Decode(DecodeError::Truncated))
    );
}

#[test]
fn a_peer_shorter_than_advertised_ends_the_pull_at_its_head() {
    let theirs = chain("t", 30);
    let mut ours = theirs.prefix(10);
    let config = ChainSyncConfig {
        batch_entries: 8,
        max_in_flight: 3,
        ..ChainSyncConfig::default()
    };
    // The hello said 80; the replies say 30.
    let (puller, _) = pull_with(&config, &mut ours, &theirs, 80, Order::Newest, |_| {});
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Done {
            head: theirs.head()
        }
    );
    assert_eq!(puller.remote_seq(), 30);
    assert_eq!(ours, theirs);
    // A peer that is behind us altogether: done at its head, ours unchanged.
    let mut ahead = chain("t", 40);
    let (puller, _) = pull_with(&config, &mut ahead, &theirs, 60, Order::Oldest, |_| {});
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Done { head: ahead.head() }
    );
    assert_eq!(ahead.len(), 40);
}

#[test]
fn requests_time_out_and_a_resumed_pull_refetches_nothing() {
    let theirs = chain("t", 100);
    let config = ChainSyncConfig {
        batch_entries: 10,
        max_in_flight: 2,
        ..ChainSyncConfig::default()
    };
    let mut ours = theirs.prefix(30);
    let mut puller = ChainPuller::new(&config, &ours, 100);
    assert_eq!(puller.poll_timeout(), None);
    let sent = Instant::from_micros(5);
    let first = puller.poll_request(sent).unwrap();
    let second = puller.poll_request(sent + Duration::from_secs(1)).unwrap();
    assert_eq!(puller.poll_request(sent), None, "two in flight");
    assert_eq!((first.from_seq, second.from_seq), (30, 40));
    let deadline = sent + config.request_timeout;
    assert_eq!(puller.poll_timeout(), Some(deadline));
    // The first is answered; the second is lost.
    let reply = responder_answer(&theirs, &first);
    puller.handle_entries(sent, &mut ours, reply).unwrap();
    assert_eq!(ours.len(), 39);
    let third = puller.poll_request(sent + Duration::from_secs(2)).unwrap();
    assert_eq!(third.from_seq, 50);
    // The second is now the oldest in flight.
    assert_eq!(puller.poll_timeout(), Some(sent + Duration::from_secs(31)));
    puller.handle_timeout(sent + Duration::from_secs(30));
    assert_eq!(puller.status(), ChainSyncStatus::Running);
    puller.handle_timeout(sent + Duration::from_secs(31));
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Failed(ChainSyncError::Timeout)
    );
    assert_eq!(puller.poll_timeout(), None);
    // Resumed: from 40 (39 was appended by this puller, so not checked again).
    puller.resume(&ours, 100);
    let mut responder = ChainResponder::new(&config);
    let mut first_from = None;
    while let Some(r) = puller.poll_request(NOW) {
        first_from.get_or_insert(r.from_seq);
        let reply = responder.answer(&theirs, &r);
        puller.handle_entries(NOW, &mut ours, reply).unwrap();
    }
    assert_eq!(first_from, Some(40));
    assert_eq!(ours, theirs);
    let s = puller.stats();
    assert_eq!(s.resumes, 1);
    assert_eq!(
        s.entries,
        10 + 61,
        "entries 30 to 39, then 40 to 100, each once"
    );
    assert_eq!(s.duplicates, 1);
    assert_eq!(s.appended, 70);
}

#[test]
fn a_store_that_refuses_an_entry_stops_the_pull() {
    let theirs = chain("t", 50);
    let mut ours = Limited {
        chain: theirs.prefix(5),
        limit: 20,
    };
    let (puller, _) = pull_with(
        &ChainSyncConfig::default(),
        &mut ours,
        &theirs,
        50,
        Order::Oldest,
        |_| {},
    );
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Failed(ChainSyncError::Refused {
            seq: 21,
            error: AppendError::Refused
        })
    );
    assert_eq!(ours.chain, theirs.prefix(20));
}

#[test]
fn responder_replies_fit_the_budget_but_always_carry_one_entry() {
    let c = MemoryChain::from_payloads((0..50u32).map(|i| vec![i as u8; 300])).unwrap();
    for budget in [0usize, 100, 1000, 5000, 1 << 20] {
        for asked in [budget as u32, u32::MAX] {
            let mut responder = ChainResponder::new(&ChainSyncConfig {
                max_reply_bytes: budget,
                ..ChainSyncConfig::default()
            });
            let request = GetEntries {
                id: 9,
                from_seq: 3,
                max_entries: 40,
                max_bytes: asked,
            };
            let reply = responder.answer(&c, &request);
            let len = ChainSyncMessage::Entries(reply.clone()).encoded_len();
            assert!(!reply.entries.is_empty());
            assert!(len <= budget.max(ENTRIES_HEADER_LEN + ENTRY_HEADER_LEN + 300));
            assert_eq!(reply.id, 9);
            assert_eq!(reply.head, c.head());
            assert_eq!(reply.entries[0], entry(&c, 3));
            if budget >= 1 << 20 {
                assert_eq!(reply.entries.len(), 40);
            }
        }
    }
    // Past its head: nothing, and its head. At the end: what it has.
    let mut responder = ChainResponder::new(&ChainSyncConfig::default());
    let past = GetEntries {
        id: 1,
        from_seq: 51,
        max_entries: 10,
        max_bytes: u32::MAX,
    };
    let reply = responder.answer(&c, &past);
    assert!(reply.entries.is_empty());
    assert_eq!(reply.head, c.head());
    let end = GetEntries {
        from_seq: 45,
        ..past
    };
    assert_eq!(responder.answer(&c, &end).entries.len(), 6);
    let far = GetEntries {
        from_seq: u64::MAX,
        max_entries: MAX_BATCH_ENTRIES as u16,
        ..past
    };
    assert!(responder.answer(&c, &far).entries.is_empty());
}

#[test]
fn in_flight_and_held_bytes_stay_bounded() {
    let theirs =
        MemoryChain::from_payloads((0..3000u32).map(|i| vec![i as u8; 1 + (i as usize * 7) % 200]))
            .unwrap();
    let mut ours = MemoryChain::new();
    let config = ChainSyncConfig {
        max_in_flight: 3,
        batch_entries: 32,
        batch_bytes: 2000,
        request_timeout: Duration::from_secs(1),
        max_reply_bytes: 1500,
    };
    let mut puller = ChainPuller::new(&config, &ours, 3000);
    let mut responder = ChainResponder::new(&config);
    let mut queue: Vec<GetEntries> = Vec::new();
    let mut max_held = 0;
    loop {
        while let Some(r) = puller.poll_request(NOW) {
            assert!(usize::from(r.max_entries) <= 32 && r.max_bytes == 2000);
            queue.push(r);
        }
        assert!(queue.len() <= 3, "{} requests in flight", queue.len());
        // Newest first: the replies wait for the ones before them.
        let Some(r) = queue.pop() else { break };
        let reply = responder.answer(&theirs, &r);
        let len = ChainSyncMessage::Entries(reply.clone()).encoded_len();
        assert!(len <= 1500 || reply.entries.len() == 1, "{len} bytes");
        puller.handle_entries(NOW, &mut ours, reply).unwrap();
        max_held = max_held.max(puller.ready_bytes);
    }
    assert!(max_held <= 2 * 3 * 2000, "{max_held} bytes held");
    std::println!(
        "chain sync, newest reply first: at most {max_held} entry bytes held (bound {})",
        2 * 3 * 2000
    );
    assert_eq!(
        puller.status(),
        ChainSyncStatus::Done {
            head: theirs.head()
        }
    );
    assert_eq!(ours, theirs);
    assert_eq!(puller.stats().entries, 3000);
}

fn payloads(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..max)
}

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![
        Just(Order::Oldest),
        Just(Order::Newest),
        Just(Order::Alternate)
    ]
}

fn batching() -> impl Strategy<Value = ChainSyncConfig> {
    (
        1usize..4,
        1usize..9,
        prop_oneof![Just(0usize), 60usize..600, Just(1 << 20)],
        prop_oneof![Just(0usize), 60usize..600, Just(1 << 20)],
    )
        .prop_map(|(in_flight, batch, bytes, reply)| ChainSyncConfig {
            max_in_flight: in_flight,
            batch_entries: batch,
            batch_bytes: bytes,
            max_reply_bytes: reply,
            ..ChainSyncConfig::default()
        })
}

/// `common` followed by `extra`, each extra payload tagged so that the two sides'
/// entries after the common part always differ.
fn tagged(common: &[Vec<u8>], tag: u8, extra: &[Vec<u8>]) -> MemoryChain {
    MemoryChain::from_payloads(common.iter().cloned().chain(extra.iter().map(|p| {
        let mut p = p.clone();
        p.insert(0, tag);
        p
    })))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_prefix_converges_under_any_batching_and_order(
        theirs in payloads(60),
        held in any::<prop::sample::Index>(),
        config in batching(),
        order in order(),
    ) {
        let theirs = MemoryChain::from_payloads(theirs).unwrap();
        let held = held.index(theirs.len() + 1);
        let mut ours = theirs.prefix(held);
        let (puller, responder) =
            pull_with(&config, &mut ours, &theirs, theirs.len() as u64, order, |_| {});
        prop_assert_eq!(puller.status(), ChainSyncStatus::Done { head: theirs.head() });
        prop_assert_eq!(&ours, &theirs);
        // Every missing entry exactly once, plus our head to check it.
        let expected = (theirs.len() - held) as u64 + u64::from(held > 0);
        prop_assert_eq!(puller.stats().entries, expected);
        prop_assert_eq!(puller.stats().appended, (theirs.len() - held) as u64);
        prop_assert_eq!(puller.stats().bytes_sent, responder.stats().bytes_received);
        prop_assert_eq!(puller.stats().bytes_received, responder.stats().bytes_sent);
    }

    #[test]
    fn divergent_chains_always_fork_with_evidence_and_never_append_across(
        common in payloads(30),
        left in payloads(20),
        right in payloads(20),
        config in batching(),
        order in order(),
    ) {
        prop_assume!(!left.is_empty() && !right.is_empty());
        let a = tagged(&common, b'a', &left);
        let b = tagged(&common, b'b', &right);
        // The one behind (or either, when as long) pulls from the other and finds the
        // fork at its own head; the one ahead is done at once and unchanged.
        for (ours, theirs) in [(&a, &b), (&b, &a)] {
            let mut mine = ours.clone();
            let (puller, _) =
                pull_with(&config, &mut mine, theirs, theirs.len() as u64, order, |_| {});
            prop_assert_eq!(&mine, ours);
            prop_assert_eq!(puller.stats().appended, 0);
            if ours.len() > theirs.len() {
                prop_assert_eq!(puller.status(), ChainSyncStatus::Done { head: ours.head() });
                continue;
            }
            let seq = ours.head().seq;
            prop_assert_eq!(puller.status(), ChainSyncStatus::Forked { seq });
            let fork = puller.fork().unwrap();
            prop_assert!(fork.is_valid());
            prop_assert_eq!(
                fork,
                &Fork::Conflict { ours: entry(ours, seq), theirs: entry(theirs, seq) }
            );
        }
    }

    #[test]
    fn a_broken_link_anywhere_is_reported_and_never_crossed(
        x in payloads(40),
        break_at in any::<prop::sample::Index>(),
        held in any::<prop::sample::Index>(),
        config in batching(),
        order in order(),
    ) {
        prop_assume!(x.len() >= 2);
        let x = MemoryChain::from_payloads(x).unwrap();
        let y = tagged(&[], b'y', &x.entries().iter().map(|e| e.payload().to_vec()).collect::<Vec<_>>());
        // Entry `k + 1` of the responder's store comes from y and does not link to
        // entry k (from x).
        let k = 1 + break_at.index(x.len() - 1);
        let mut raw = RawChain(x.entries()[..k].to_vec());
        raw.0.extend(y.entries()[k..].iter().cloned());
        let held = held.index(k + 1);
        let mut ours = x.prefix(held);
        let (puller, _) = pull_with(&config, &mut ours, &raw, x.len() as u64, order, |_| {});
        let seq = k as u64 + 1;
        prop_assert_eq!(puller.status(), ChainSyncStatus::Forked { seq });
        prop_assert_eq!(
            puller.fork(),
            Some(&Fork::BrokenLink { prev: entry(&x, k as u64), next: y.get(seq).unwrap() })
        );
        prop_assert_eq!(&ours, &x.prefix(k));
    }

    #[test]
    fn mutated_replies_never_corrupt_the_store(
        theirs in payloads(40),
        held in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        which in 0usize..6,
        config in batching(),
    ) {
        let theirs = MemoryChain::from_payloads(theirs).unwrap();
        let mut ours = theirs.prefix(held.index(theirs.len() + 1));
        let mut replies = 0;
        let (mut puller, _) = pull_with(
            &config, &mut ours, &theirs, theirs.len() as u64, Order::Oldest,
            |reply| {
                if replies == which {
                    for (at, bit) in &flips {
                        let i = at.index(reply.len());
                        reply[i] ^= 1 << bit;
                    }
                }
                replies += 1;
            },
        );
        // Whatever happened, ours is a prefix of theirs, and no fork was imagined.
        prop_assert_eq!(&theirs.prefix(ours.len()), &ours);
        prop_assert!(puller.fork().is_none());
        // Resumed with honest replies, it completes.
        puller.resume(&ours, theirs.len() as u64);
        let mut responder = ChainResponder::new(&config);
        while let Some(r) = puller.poll_transmit(NOW) {
            let reply = responder.handle_bytes(&theirs, &r).unwrap();
            puller.handle_bytes(NOW, &mut ours, &reply).unwrap();
        }
        prop_assert_eq!(puller.status(), ChainSyncStatus::Done { head: theirs.head() });
        prop_assert_eq!(&ours, &theirs);
    }

    #[test]
    fn garbage_never_panics_and_what_decodes_re_encodes_identically(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        if let Ok(m) = ChainSyncMessage::decode(&bytes) {
            prop_assert_eq!(m.encode().to_vec(), bytes);
        }
    }
}
