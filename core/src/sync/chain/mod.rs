//! Chain sync (ChainSync frames, 0x05): a [`ChainPuller`] extends its [`ChainStore`]
//! with a peer's entries, verifying every link, and reports a fork with its evidence; a
//! [`ChainResponder`] answers a peer's puller from its own store.
//!
//! # The chain
//!
//! An append-only log of [`ChainEntry`]s numbered from 1. Entry `s` carries the hash of
//! entry `s - 1` (entry 1 carries 32 zero bytes, [`GENESIS_PREV`]), and its own hash is
//!
//! ```text
//! hash = SHA-256("weft-mesh chain entry v1" ‖ u64 BE seq ‖ prev_hash ‖ payload)
//! ```
//! ([`entry_hash`]). A chain is named by its head `(seq, hash)` ([`ChainHead`]); the
//! empty chain's head is `(0, 32 zero bytes)`, so the hello's `chain_seq` is the number
//! of entries. The genesis link is the zero hash rather than the cluster's governance
//! genesis: links already refuse peers of another cluster, and an application that wants
//! its chain bound to the cluster puts the genesis hash in entry 1's payload.
//!
//! # Model: pull from our head
//!
//! A puller is started when a peer's head is known to be at or past ours (the hello's
//! `chain_seq`, a sync digest, a [`ChainSyncMessage::Head`] advertisement). Its first
//! request starts **at our head's sequence number `L`**, not after it, so the first
//! entry that comes back must be the one we hold: if its hash differs, our head is not
//! on the peer's chain and the pull stops with [`Fork::Conflict`] (our entry `L` and
//! theirs). Entries past `L` that arrive first wait for that check, so a fork at our
//! head is always shown this way. After that, every entry must be the next one and link
//! to the entry before it (ours or theirs); one that does not stops the pull with
//! [`Fork::BrokenLink`] (the two entries). Entries are appended only in order and only
//! once they link, so nothing is ever appended across a fork. Every entry's hash is
//! recomputed by the decoder.
//!
//! Two chains of the same length that fork are found the same way (a puller started at
//! an equal `chain_seq` asks for the one entry `L`). A head advertised at or below ours
//! whose hash differs from our entry there makes the puller fetch that one entry, for
//! the evidence.
//!
//! Requests cover the missing range in batches of at most
//! [`ChainSyncConfig::batch_entries`] entries and [`ChainSyncConfig::batch_bytes`]
//! bytes, with up to [`ChainSyncConfig::max_in_flight`] outstanding; replies may come
//! in any order (the early ones are held until the gap before them is filled) and may
//! be short (the rest is asked again). Each reply carries the responder's head, which
//! moves the target on as the peer's chain grows.
//!
//! # Resuming
//!
//! A pull holds nothing that is not in the store except the requests in flight: after a
//! link drops, a new puller (or [`ChainPuller::resume`] on the old one) starts from the
//! store's head, so entries already appended are not fetched again. A new puller asks
//! for entry `L` once more to check the peer's chain (one entry per resumption);
//! `resume` skips that when the puller itself verified or appended the current head.
//!
//! # Bounds
//!
//! * At most `max_in_flight` requests outstanding, each for at most
//!   [`MAX_BATCH_ENTRIES`] entries.
//! * Held entries (received past a missing one): ranges beyond the first missing entry
//!   are asked only while fewer than `max_in_flight × batch_bytes` encoded entry bytes
//!   wait, so at most about twice that (plus one oversized entry per reply) is held.
//! * Entry payloads are at most [`MAX_ENTRY_LEN`] (1 MiB); decoders check every count
//!   and length before allocating.
//! * A responder's reply holds at most [`ChainSyncConfig::max_reply_bytes`] (and what the
//!   request allows), but always one entry if it has any.
//!
//! ```
//! use weft_mesh::sync::chain::{
//!     ChainPuller, ChainResponder, ChainStore, ChainSyncConfig, ChainSyncStatus, MemoryChain,
//! };
//! use weft_mesh::Instant;
//!
//! let theirs = MemoryChain::from_payloads((0..100u32).map(|i| i.to_be_bytes().to_vec())).unwrap();
//! let mut ours = theirs.prefix(40);
//!
//! let config = ChainSyncConfig::default();
//! let now = Instant::ZERO;
//! let mut puller = ChainPuller::new(&config, &ours, theirs.head().seq);
//! let mut responder = ChainResponder::new(&config);
//! while let Some(request) = puller.poll_transmit(now) {
//!     let reply = responder.handle_bytes(&theirs, &request).unwrap();
//!     puller.handle_bytes(now, &mut ours, &reply).unwrap();
//! }
//! assert_eq!(puller.status(), ChainSyncStatus::Done { head: theirs.head() });
//! assert_eq!(ours, theirs);
//! assert_eq!(puller.stats().entries, 61, "entry 40 again, to check it, then 41 to 100");
//! ```

mod store;
mod wire;

#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::Bytes;

pub use store::{
    entry_hash, AppendError, ChainEntry, ChainHead, ChainStore, EntryError, Hash, MemoryChain,
    ENTRY_DOMAIN, GENESIS_PREV, MAX_ENTRY_LEN, MAX_SEQ,
};
pub use wire::{
    entry_len, ChainSyncMessage, DecodeError, Entries, GetEntries, ENTRIES_HEADER_LEN,
    ENTRY_HEADER_LEN, GET_ENTRIES_LEN, HEAD_LEN, HEAD_MESSAGE_LEN, MAX_BATCH_ENTRIES,
};

use crate::frame::MAX_PAYLOAD_LEN;
use crate::Instant;

/// Bounds and timing of a chain sync, for both roles.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChainSyncConfig {
    /// Puller: most requests outstanding at once.
    pub max_in_flight: usize,
    /// Puller: most entries per request (1 to [`MAX_BATCH_ENTRIES`]).
    pub batch_entries: usize,
    /// Puller: most encoded bytes per reply it asks for (capped at the largest frame
    /// payload).
    pub batch_bytes: usize,
    /// Puller: a request unanswered this long fails the pull
    /// ([`ChainSyncError::Timeout`]).
    pub request_timeout: Duration,
    /// Responder: most encoded bytes per reply, whatever the request allows (one entry
    /// is always sent, however large; capped at the largest frame payload).
    pub max_reply_bytes: usize,
}

impl Default for ChainSyncConfig {
    /// 4 requests of 512 entries and 256 KiB in flight, 30 s per request, replies of at
    /// most 1 MiB.
    fn default() -> Self {
        ChainSyncConfig {
            max_in_flight: 4,
            batch_entries: 512,
            batch_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
            max_reply_bytes: 1 << 20,
        }
    }
}

/// What a chain sync moved and did; every field only grows.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ChainSyncStats {
    /// Encoded ChainSync payload bytes sent (requests for a puller, replies for a
    /// responder).
    pub bytes_sent: u64,
    /// Encoded ChainSync payload bytes received.
    pub bytes_received: u64,
    /// Requests sent (puller) or answered (responder).
    pub requests: u64,
    /// Entries received (puller) or sent (responder).
    pub entries: u64,
    /// Of those, payload bytes.
    pub payload_bytes: u64,
    /// Puller: entries appended to the store.
    pub appended: u64,
    /// Puller: entries received that the store already held (the check of our head).
    pub duplicates: u64,
    /// Puller: times [`ChainPuller::resume`] restarted it.
    pub resumes: u32,
}

/// Evidence that two chains fork: entries that cannot both belong to one chain. Each
/// entry's hash is the hash of its contents, so anyone can check the evidence
/// ([`Fork::is_valid`]); it does not say which side is right.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Fork {
    /// Two entries with the same sequence number and different hashes: ours, and the
    /// peer's.
    Conflict {
        /// Our entry.
        ours: ChainEntry,
        /// The peer's entry at the same sequence number.
        theirs: ChainEntry,
    },
    /// Consecutive entries that do not link: `next.prev_hash() != prev.hash()`. `next`
    /// is the peer's; `prev` is the entry before it in our store, which is our own or
    /// one the peer sent earlier (in the same reply or an earlier one).
    BrokenLink {
        /// Entry `next.seq() - 1`.
        prev: ChainEntry,
        /// The peer's entry that does not link to it.
        next: ChainEntry,
    },
}

impl Fork {
    /// Where the evidence shows the chains differ: the conflicting entries' sequence
    /// number, or the one of the entry that does not link. The chains may have parted
    /// earlier (a puller compares at its own head first); the application can look for
    /// the first difference with [`ChainStore::get`] on both sides.
    pub fn seq(&self) -> u64 {
        match self {
            Fork::Conflict { ours, .. } => ours.seq(),
            Fork::BrokenLink { next, .. } => next.seq(),
        }
    }

    /// Whether the evidence proves a fork: the same sequence number and different
    /// hashes, or consecutive sequence numbers without the link.
    pub fn is_valid(&self) -> bool {
        match self {
            Fork::Conflict { ours, theirs } => {
                ours.seq() == theirs.seq() && ours.hash() != theirs.hash()
            }
            Fork::BrokenLink { prev, next } => {
                prev.seq().checked_add(1) == Some(next.seq()) && next.prev_hash() != prev.hash()
            }
        }
    }
}

/// Why a pull stopped. The entries appended before it stay (each was verified); the
/// puller does nothing more until [`ChainPuller::resume`] (except after a fork).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ChainSyncError {
    /// The peer sent a payload that does not decode (a corrupted entry among others).
    Decode(DecodeError),
    /// The peer sent a request where a reply was expected (route requests to a
    /// [`ChainResponder`]).
    Unexpected,
    /// A reply to no request in flight.
    UnknownRequest(u32),
    /// A reply whose entries are not the range asked: not starting at `from_seq`, not
    /// consecutive, more than asked, or over the byte budget with more than one entry.
    WrongRange,
    /// A reply whose head contradicts its entries (below the last one, or another hash
    /// for the entry at its sequence number).
    Inconsistent,
    /// A reply without entries although the peer's head covers the range asked.
    Unavailable,
    /// The local store refused entry `seq`.
    Refused {
        /// The refused entry.
        seq: u64,
        /// The store's reason.
        error: AppendError,
    },
    /// The local store did not return entry `seq`, at or below its head.
    Store {
        /// The missing entry.
        seq: u64,
    },
    /// The chains fork at `seq`; the evidence is [`ChainPuller::fork`].
    Forked {
        /// [`Fork::seq`].
        seq: u64,
    },
    /// A request went unanswered for [`ChainSyncConfig::request_timeout`].
    Timeout,
}

impl fmt::Display for ChainSyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainSyncError::Decode(e) => write!(f, "malformed chain sync message: {e}"),
            ChainSyncError::Unexpected => {
                f.write_str("chain sync request where a reply was expected")
            }
            ChainSyncError::UnknownRequest(id) => {
                write!(f, "chain sync reply to unknown request {id}")
            }
            ChainSyncError::WrongRange => {
                f.write_str("chain sync reply does not match its request")
            }
            ChainSyncError::Inconsistent => {
                f.write_str("chain sync reply's head contradicts its entries")
            }
            ChainSyncError::Unavailable => {
                f.write_str("peer did not send chain entries below its head")
            }
            ChainSyncError::Refused { seq, error } => {
                write!(f, "chain store refused entry {seq}: {error}")
            }
            ChainSyncError::Store { seq } => write!(f, "chain store lacks entry {seq}"),
            ChainSyncError::Forked { seq } => write!(f, "chains fork at entry {seq}"),
            ChainSyncError::Timeout => f.write_str("chain sync request timed out"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ChainSyncError {}

impl From<DecodeError> for ChainSyncError {
    fn from(e: DecodeError) -> Self {
        ChainSyncError::Decode(e)
    }
}

/// Where a [`ChainPuller`] stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChainSyncStatus {
    /// Requests remain to be sent or answered.
    Running,
    /// Caught up: the store's head is at or past the peer's head as last known (and,
    /// unless the peer was behind from the start, on the peer's chain).
    Done {
        /// The store's head.
        head: ChainHead,
    },
    /// The chains fork at `seq`; the evidence is [`ChainPuller::fork`]. Final: stop
    /// syncing from this peer.
    Forked {
        /// [`Fork::seq`].
        seq: u64,
    },
    /// The pull stopped for another reason; [`ChainPuller::resume`] can restart it.
    Failed(ChainSyncError),
}

#[derive(Clone, Copy, Debug)]
struct Request {
    sent: Instant,
    from: u64,
    count: u64,
    max_bytes: u32,
}

/// The pulling side of a chain sync, for one peer; see the [module](self) docs.
///
/// Sans-IO: [`ChainPuller::poll_request`] gives the requests to send, replies go to
/// [`ChainPuller::handle_bytes`] with the local store (which the puller does not hold),
/// and [`ChainPuller::poll_timeout`] / [`ChainPuller::handle_timeout`] bound how long a
/// request waits.
#[derive(Clone, Debug)]
pub struct ChainPuller {
    config: ChainSyncConfig,
    /// The peer's head sequence number as last known.
    remote: u64,
    /// The store's head as last seen.
    local: ChainHead,
    /// A head this puller saw on the peer's chain (checked or appended).
    verified: Option<ChainHead>,
    /// The next sequence number no request has covered yet.
    next: u64,
    /// Ranges `(from, count)` asked but not received (short or empty replies), by `from`.
    gaps: BTreeMap<u64, u64>,
    /// One entry to ask for at once: a head advertised below ours with another hash.
    probe: Option<u64>,
    /// The request that checks our head, while in flight: entries past our head wait
    /// for it, so that a fork is always shown at our head first.
    checking: Option<u32>,
    in_flight: BTreeMap<u32, Request>,
    /// Received runs of consecutive entries, by first sequence number, waiting for the
    /// entries before them.
    ready: BTreeMap<u64, Vec<ChainEntry>>,
    ready_bytes: usize,
    next_id: u32,
    status: ChainSyncStatus,
    fork: Option<Fork>,
    stats: ChainSyncStats,
}

impl ChainPuller {
    /// Start pulling from a peer whose head is at `remote_seq` (the hello's `chain_seq`,
    /// a digest's chain head). Done at once if the peer is behind us, or we are both
    /// empty; otherwise the first request starts at our head (checking it).
    pub fn new<S: ChainStore + ?Sized>(
        config: &ChainSyncConfig,
        store: &S,
        remote_seq: u64,
    ) -> Self {
        let mut config = config.clone();
        config.max_in_flight = config.max_in_flight.max(1);
        config.batch_entries = config.batch_entries.clamp(1, MAX_BATCH_ENTRIES);
        config.batch_bytes = config.batch_bytes.min(MAX_PAYLOAD_LEN);
        let mut puller = ChainPuller {
            config,
            remote: 0,
            local: ChainHead::EMPTY,
            verified: None,
            next: 1,
            gaps: BTreeMap::new(),
            probe: None,
            checking: None,
            in_flight: BTreeMap::new(),
            ready: BTreeMap::new(),
            ready_bytes: 0,
            next_id: 0,
            status: ChainSyncStatus::Running,
            fork: None,
            stats: ChainSyncStats::default(),
        };
        puller.restart(store, remote_seq);
        puller
    }

    /// Where the pull stands.
    pub fn status(&self) -> ChainSyncStatus {
        self.status
    }

    /// What it moved so far (across resumptions).
    pub fn stats(&self) -> &ChainSyncStats {
        &self.stats
    }

    /// The evidence, once the pull found a fork.
    pub fn fork(&self) -> Option<&Fork> {
        self.fork.as_ref()
    }

    /// The peer's head sequence number as last known.
    pub fn remote_seq(&self) -> u64 {
        self.remote
    }

    /// Start again after a link dropped (or a timeout): forget the requests in flight
    /// and the entries held, and pull from the store's current head to the peer's
    /// (`remote_seq`, or higher if a reply showed more). Nothing already appended is
    /// fetched again. Use it with the same peer; another peer gets a new puller. After
    /// a fork this does nothing: the puller stays [`ChainSyncStatus::Forked`].
    pub fn resume<S: ChainStore + ?Sized>(&mut self, store: &S, remote_seq: u64) {
        if matches!(self.status, ChainSyncStatus::Forked { .. }) {
            return;
        }
        self.stats.resumes += 1;
        self.restart(store, remote_seq);
    }

    fn restart<S: ChainStore + ?Sized>(&mut self, store: &S, remote_seq: u64) {
        self.stop();
        self.remote = self.remote.max(remote_seq.min(MAX_SEQ));
        self.local = store.head();
        // Ask for our head again unless it is known to be on the peer's chain.
        self.next = if self.local.seq == 0 || self.verified == Some(self.local) {
            self.local.seq.saturating_add(1)
        } else {
            self.local.seq
        };
        self.status = ChainSyncStatus::Running;
        if self.next > self.remote {
            self.status = ChainSyncStatus::Done { head: self.local };
        }
    }

    /// The next request to send, if the pull is running, something is missing and
    /// fewer than [`ChainSyncConfig::max_in_flight`] requests are outstanding. Call
    /// until `None` after every input.
    pub fn poll_request(&mut self, now: Instant) -> Option<GetEntries> {
        if self.status != ChainSyncStatus::Running
            || self.in_flight.len() >= self.config.max_in_flight
        {
            return None;
        }
        let batch = self.config.batch_entries as u64;
        // Ranges past the first missing entry are asked only while the held entries
        // leave room; the first missing entry is always asked (it frees the others).
        let hole = self.local.seq.saturating_add(1);
        let room = self.ready.is_empty()
            || self.ready_bytes
                < (self.config.max_in_flight).saturating_mul(self.config.batch_bytes);
        let (from, count) = if let Some(seq) = self.probe.take() {
            (seq, 1)
        } else if let Some(range) = self.next_gap(batch, hole, room) {
            range
        } else if self.next <= self.remote && (self.next <= hole || room) {
            let count = batch.min(self.remote - self.next + 1);
            let from = self.next;
            self.next += count;
            (from, count)
        } else {
            return None;
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let max_bytes = self.config.batch_bytes as u32;
        if from == self.local.seq && self.verified != Some(self.local) {
            self.checking = Some(id);
        }
        self.in_flight.insert(
            id,
            Request {
                sent: now,
                from,
                count,
                max_bytes,
            },
        );
        self.stats.requests += 1;
        self.stats.bytes_sent += GET_ENTRIES_LEN as u64;
        Some(GetEntries {
            id,
            from_seq: from,
            max_entries: count as u16,
            max_bytes,
        })
    }

    /// The first range asked before and still missing, cut to the peer's head and to
    /// what the store lacks; past the `hole` only if there is `room`.
    fn next_gap(&mut self, batch: u64, hole: u64, room: bool) -> Option<(u64, u64)> {
        while let Some(first) = self.gaps.first_entry() {
            let (from, count) = (*first.key(), *first.get());
            let end = from + (count - 1);
            let from = from.max(hole);
            let end = end.min(self.remote);
            if from > end {
                first.remove();
                continue;
            }
            if from > hole && !room {
                return None;
            }
            first.remove();
            let count = (end - from + 1).min(batch);
            if end - from + 1 > count {
                self.gaps.insert(from + count, end - from + 1 - count);
            }
            return Some((from, count));
        }
        None
    }

    /// [`ChainPuller::poll_request`], encoded as a ChainSync payload.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.poll_request(now)
            .map(|r| ChainSyncMessage::GetEntries(r).encode())
    }

    /// A ChainSync payload from the peer: a reply or a head advertisement. A malformed
    /// one (a corrupted entry, say) or a request fails the pull.
    pub fn handle_bytes<S: ChainStore + ?Sized>(
        &mut self,
        now: Instant,
        store: &mut S,
        bytes: &[u8],
    ) -> Result<(), ChainSyncError> {
        if !matches!(
            self.status,
            ChainSyncStatus::Running | ChainSyncStatus::Done { .. }
        ) {
            return Ok(());
        }
        match ChainSyncMessage::decode(bytes) {
            Ok(ChainSyncMessage::Entries(reply)) => self.handle_entries(now, store, reply),
            Ok(ChainSyncMessage::Head(head)) => {
                self.handle_head(store, head);
                Ok(())
            }
            Ok(ChainSyncMessage::GetEntries(_)) => {
                if self.status != ChainSyncStatus::Running {
                    return Ok(());
                }
                self.fail(ChainSyncError::Unexpected)
            }
            Err(e) => {
                if self.status != ChainSyncStatus::Running {
                    return Ok(());
                }
                self.fail(ChainSyncError::Decode(e))
            }
        }
    }

    /// The peer advertised its head. A head past the one known moves the target on
    /// (and restarts a finished pull); a head at or below ours with another hash than
    /// our entry there asks for that entry, to show the fork with evidence.
    pub fn handle_head<S: ChainStore + ?Sized>(&mut self, store: &S, head: ChainHead) {
        if !matches!(
            self.status,
            ChainSyncStatus::Running | ChainSyncStatus::Done { .. }
        ) {
            return;
        }
        let head_seq = head.seq.min(MAX_SEQ);
        let local = store.head();
        if head_seq >= 1 && head_seq <= local.seq {
            let ours = if head_seq == local.seq {
                Some(local.hash)
            } else {
                store.get(head_seq).map(|e| *e.hash())
            };
            match ours {
                Some(ours) if ours != head.hash => {
                    // Fetch their entry there: the fork's evidence.
                    if self.status != ChainSyncStatus::Running {
                        self.stop();
                        self.local = local;
                        self.status = ChainSyncStatus::Running;
                    }
                    self.probe = Some(head_seq);
                    return;
                }
                // Their head is our head: it is on their chain.
                Some(_) if head_seq == local.seq => self.verified = Some(local),
                _ => {}
            }
        }
        if head_seq > self.remote {
            if self.status == ChainSyncStatus::Running {
                self.remote = head_seq;
            } else {
                self.restart(store, head_seq);
            }
        }
    }

    /// A reply from the peer: check it against its request, hold its entries, and
    /// append every entry that is next and links. A reply that arrives after the pull
    /// ended is ignored.
    pub fn handle_entries<S: ChainStore + ?Sized>(
        &mut self,
        _now: Instant,
        store: &mut S,
        reply: Entries,
    ) -> Result<(), ChainSyncError> {
        if self.status != ChainSyncStatus::Running {
            return Ok(());
        }
        let n = reply.entries.len();
        let size = ChainSyncMessage::Entries(Entries {
            id: reply.id,
            head: reply.head,
            entries: Vec::new(),
        })
        .encoded_len()
            + reply.entries.iter().map(entry_len).sum::<usize>();
        self.stats.bytes_received += size as u64;
        self.stats.entries += n as u64;
        self.stats.payload_bytes += reply
            .entries
            .iter()
            .map(|e| e.payload().len() as u64)
            .sum::<u64>();
        let Some(request) = self.in_flight.remove(&reply.id) else {
            return self.fail(ChainSyncError::UnknownRequest(reply.id));
        };
        if self.checking == Some(reply.id) {
            self.checking = None;
        }
        let consecutive = reply
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| request.from.checked_add(i as u64) == Some(e.seq()));
        if n as u64 > request.count || !consecutive || (n > 1 && size > request.max_bytes as usize)
        {
            return self.fail(ChainSyncError::WrongRange);
        }
        let head = reply.head;
        if let Some(last) = reply.entries.last() {
            if head.seq < last.seq() {
                return self.fail(ChainSyncError::Inconsistent);
            }
            if head.seq == last.seq() {
                let at = &reply.entries[(head.seq - request.from) as usize];
                if *at.hash() != head.hash {
                    return self.fail(ChainSyncError::Inconsistent);
                }
            }
            self.remote = self.remote.max(head.seq.min(MAX_SEQ));
        } else {
            if head.seq >= request.from {
                return self.fail(ChainSyncError::Unavailable);
            }
            // The peer is behind what we asked (its chain is shorter than we thought).
            self.remote = self.remote.min(head.seq);
        }
        if (n as u64) < request.count {
            // Short (the byte budget, or the peer's end): ask the rest again if needed.
            self.gaps
                .insert(request.from + n as u64, request.count - n as u64);
        }
        if n > 0 {
            self.ready_bytes += reply.entries.iter().map(entry_len).sum::<usize>();
            self.ready.insert(request.from, reply.entries);
        }
        self.drain(store)?;
        self.settle();
        Ok(())
    }

    /// Append every held entry that is next, or check it against ours if we hold it.
    fn drain<S: ChainStore + ?Sized>(&mut self, store: &mut S) -> Result<(), ChainSyncError> {
        self.local = store.head();
        while let Some(entry) = self.ready.first_entry() {
            let first = *entry.key();
            if first > self.local.seq.saturating_add(1)
                || (self.checking.is_some() && first > self.local.seq)
            {
                break;
            }
            let run = entry.remove();
            self.ready_bytes = self
                .ready_bytes
                .saturating_sub(run.iter().map(entry_len).sum::<usize>());
            for theirs in run {
                let seq = theirs.seq();
                if seq <= self.local.seq {
                    let Some(ours) = store.get(seq) else {
                        return self.fail(ChainSyncError::Store { seq });
                    };
                    if ours.hash() != theirs.hash() {
                        return self.forked(Fork::Conflict { ours, theirs });
                    }
                    self.stats.duplicates += 1;
                    if seq == self.local.seq {
                        self.verified = Some(self.local);
                    }
                    continue;
                }
                if !theirs.follows(&self.local) {
                    // `seq` is `local.seq + 1` (runs are consecutive and start at most
                    // there). Entry 1 always links to the empty head, so `local.seq` ≥ 1
                    // here unless the store's empty head is malformed.
                    let Some(prev) = store.get(self.local.seq) else {
                        return self.fail(ChainSyncError::Store {
                            seq: self.local.seq,
                        });
                    };
                    return self.forked(Fork::BrokenLink { prev, next: theirs });
                }
                let head = theirs.head();
                if let Err(error) = store.append(theirs) {
                    return self.fail(ChainSyncError::Refused { seq, error });
                }
                self.stats.appended += 1;
                self.local = store.head();
                if self.local != head {
                    // The store said yes but its head is not the entry: treat as refused.
                    return self.fail(ChainSyncError::Refused {
                        seq,
                        error: AppendError::Refused,
                    });
                }
                self.verified = Some(head);
            }
        }
        Ok(())
    }

    /// Done once nothing is in flight or waiting and the store reached the peer's head.
    fn settle(&mut self) {
        if self.in_flight.is_empty() && self.probe.is_none() && self.local.seq >= self.remote {
            self.ready.clear();
            self.ready_bytes = 0;
            self.gaps.clear();
            self.status = ChainSyncStatus::Done { head: self.local };
        }
    }

    /// The earliest instant a request times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.status != ChainSyncStatus::Running {
            return None;
        }
        self.in_flight
            .values()
            .map(|r| r.sent + self.config.request_timeout)
            .min()
    }

    /// Fail the pull if a request has waited [`ChainSyncConfig::request_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            let _ = self.fail(ChainSyncError::Timeout);
        }
    }

    fn stop(&mut self) {
        self.checking = None;
        self.in_flight.clear();
        self.ready.clear();
        self.ready_bytes = 0;
        self.gaps.clear();
        self.probe = None;
    }

    fn fail(&mut self, error: ChainSyncError) -> Result<(), ChainSyncError> {
        self.stop();
        self.status = ChainSyncStatus::Failed(error);
        Err(error)
    }

    fn forked(&mut self, fork: Fork) -> Result<(), ChainSyncError> {
        self.stop();
        let seq = fork.seq();
        self.fork = Some(fork);
        self.status = ChainSyncStatus::Forked { seq };
        Err(ChainSyncError::Forked { seq })
    }
}

/// The answering side of a chain sync: stateless apart from its counters, so one serves
/// any number of pullers. Each request costs at most [`MAX_BATCH_ENTRIES`] store reads
/// and one reply of at most [`ChainSyncConfig::max_reply_bytes`].
#[derive(Clone, Debug)]
pub struct ChainResponder {
    max_reply_bytes: usize,
    stats: ChainSyncStats,
}

impl ChainResponder {
    /// A responder with the reply budget of `config`.
    pub fn new(config: &ChainSyncConfig) -> Self {
        ChainResponder {
            max_reply_bytes: config.max_reply_bytes.min(MAX_PAYLOAD_LEN),
            stats: ChainSyncStats::default(),
        }
    }

    /// What it served so far.
    pub fn stats(&self) -> &ChainSyncStats {
        &self.stats
    }

    /// The reply to `request` from `store`: its head, and its entries from
    /// `from_seq` on, as many as asked and as fit the budget (at least one if it has
    /// any).
    pub fn answer<S: ChainStore + ?Sized>(&mut self, store: &S, request: &GetEntries) -> Entries {
        self.stats.requests += 1;
        self.stats.bytes_received += GET_ENTRIES_LEN as u64;
        let head = store.head();
        let budget = self.max_reply_bytes.min(request.max_bytes as usize);
        let count = usize::from(request.max_entries).min(MAX_BATCH_ENTRIES) as u64;
        let mut size = ENTRIES_HEADER_LEN;
        let mut entries = Vec::new();
        if request.from_seq >= 1 && count >= 1 {
            let last = head.seq.min(request.from_seq.saturating_add(count - 1));
            for seq in request.from_seq..=last {
                let Some(entry) = store.get(seq) else { break };
                let len = entry_len(&entry);
                if !entries.is_empty() && size + len > budget {
                    break;
                }
                size += len;
                self.stats.payload_bytes += entry.payload().len() as u64;
                entries.push(entry);
            }
        }
        self.stats.entries += entries.len() as u64;
        self.stats.bytes_sent += size as u64;
        Entries {
            id: request.id,
            head,
            entries,
        }
    }

    /// A ChainSync payload from a puller, answered with an encoded reply. A malformed
    /// payload, a reply or a head advertisement (route those to a [`ChainPuller`]) is an
    /// error and answered with nothing.
    pub fn handle_bytes<S: ChainStore + ?Sized>(
        &mut self,
        store: &S,
        bytes: &[u8],
    ) -> Result<Bytes, ChainSyncError> {
        match ChainSyncMessage::decode(bytes)? {
            ChainSyncMessage::GetEntries(request) => {
                Ok(ChainSyncMessage::Entries(self.answer(store, &request)).encode())
            }
            ChainSyncMessage::Entries(_) | ChainSyncMessage::Head(_) => {
                Err(ChainSyncError::Unexpected)
            }
        }
    }
}
