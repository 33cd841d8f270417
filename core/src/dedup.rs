//! Duplicate suppression for relayed IPC envelopes (DESIGN.md §4).
//!
//! A relay that forwards a `MeshIpcEnvelope` remembers its 16-byte `envelope_id` for a
//! while, so that the copies of the same envelope arriving over other paths of the mesh
//! are dropped instead of being delivered twice or relayed in circles. [`DedupFilter`]
//! is that memory: a time-to-live (default 60 s) and a hard capacity (default 10 000
//! entries), both set by [`DedupConfig`].
//!
//! * **Sans-IO.** Time is only ever the [`Instant`] passed in; nothing reads a clock.
//!   Entries expire lazily, when a later call brings a later `now`.
//! * **O(1)** per operation, amortised: expiry pops finished entries off the front of a
//!   ring, each entry being popped at most once.
//! * **Bounded memory**, allocated once by the constructor: never more than `capacity`
//!   entries, no side structure that grows; [`DedupFilter::memory_bytes`] stays at its
//!   initial value however hard the filter is flooded (the flood test checks this).
//!
//! # Semantics
//!
//! An id first seen at time `t` is a duplicate for every `now` with
//! `now - t < ttl`; from `t + ttl` on it is new again. Seeing a duplicate does **not**
//! refresh the entry: the TTL counts from the first sighting, so an envelope that keeps
//! circulating is let through again once a TTL, and then its hop count (at most 8)
//! retires it.
//!
//! When the filter is full, inserting a new id evicts the **oldest** entry even though
//! its TTL has not run out. A copy of that old envelope arriving afterwards is then taken
//! for new and delivered or relayed once more. That is acceptable: the capacity is sized
//! for the legitimate traffic of a TTL, so eviction only happens under a flood, when the
//! oldest entry is the one least likely to have copies still in flight; and a copy that
//! does slip through is still bounded by the envelope's hop limit, so eviction can cause
//! at most a few extra deliveries, never a relay loop. The alternative, refusing new ids
//! while full, would let a flood of junk ids block all legitimate traffic.
//!
//! # Design
//!
//! Two structures, both allocated at construction with their final size:
//!
//! * a **ring** of `capacity` slots `(first seen, id)` in insertion order, which is also
//!   time order (the filter never lets time go backwards, see below). Expiry and
//!   eviction both pop its front. A hand-written ring over a `Vec` rather than a
//!   `VecDeque`, because the index needs stable slot numbers.
//! * an **index**, a [`hashbrown::HashTable<u32>`] of slot numbers, keyed by a hash of
//!   the id: lookup probes the index and compares the id in the slot. Storing 4-byte slot
//!   numbers instead of the 16-byte ids halves the index, at the price of one extra
//!   memory access per probe that matches the hash's top 7 bits.
//!
//! The ids are chosen by peers, a malicious one among them, so the hash must be one that
//! a peer cannot steer into collisions: a SipHash-1-3 keyed with 16 random bytes drawn at
//! construction ([`DedupFilter::new`] takes them from the core's injected [`Rng`]). An
//! unkeyed or publicly keyed hash would let an attacker pick ids that all land in one
//! probe chain and turn every lookup into a linear scan.
//!
//! A sorted structure (a B-tree of ids) would need no hasher but costs O(log n) per
//! operation and allocates node by node; the hash table keeps O(1) and one allocation.
//!
//! ## Why the index is allocated at twice the capacity
//!
//! hashbrown marks some removed buckets as tombstones, which keep using up its
//! growth budget. When the budget runs out, hashbrown rehashes in place (no allocation)
//! only if the live items fit in half its capacity, and otherwise *doubles the table*.
//! A filter that keeps churning at full capacity would hit that doubling after a while.
//! The index is therefore created for `2 × capacity` items, so that the in-place rehash
//! is always the one chosen. That rehash is O(table) but happens at most once per
//! `capacity` insertions, so it stays O(1) amortised.
//!
//! ## Memory
//!
//! With the default 10 000 entries, on x86-64 (hashbrown group width 16):
//!
//! | part | size |
//! | --- | --- |
//! | ring: 10 000 slots × 24 B (`u64` time + 16-byte id) | 240 000 B |
//! | index: 32 768 buckets × (4 B slot number + 1 control byte) + 16 B | 163 856 B |
//! | total, [`DedupFilter::memory_bytes`] | 403 856 B ≈ 40.4 B per entry |
//!
//! The index's 32 768 buckets come from `2 × 10 000` items at hashbrown's 7/8 maximum
//! load, rounded up to a power of two. The struct itself (a few words) lives wherever
//! the owner puts it and is not counted.
//!
//! ## Time going backwards
//!
//! The filter remembers the latest `now` it was given and treats an earlier `now` as
//! that latest one: a driver's clock stepping back can make entries live longer, never
//! break the ring's time order or let duplicates through early.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use weft_mesh::dedup::{DedupConfig, DedupFilter};
//! use weft_mesh::{Instant, Rng};
//!
//! let mut rng = Rng::from_seed([3; 32]);
//! let mut seen = DedupFilter::new(DedupConfig::default(), &mut rng);
//! let id = [0x42; 16];
//! let t0 = Instant::from_micros(1_000_000);
//!
//! assert!(seen.check_and_insert(t0, id)); // first copy: deliver or relay
//! assert!(!seen.check_and_insert(t0 + Duration::from_secs(59), id)); // duplicate: drop
//! assert!(seen.contains(t0 + Duration::from_secs(59), id));
//! // A TTL (60 s) after the first sighting the id is new again.
//! assert!(!seen.contains(t0 + Duration::from_secs(60), id));
//! assert!(seen.check_and_insert(t0 + Duration::from_secs(60), id));
//! assert_eq!(seen.len(), 1);
//!
//! // Memory is allocated up front and never grows.
//! let bytes = seen.memory_bytes();
//! for i in 0u32..50_000 {
//!     let mut other = [0u8; 16];
//!     other[..4].copy_from_slice(&i.to_le_bytes());
//!     other[15] = 1;
//!     seen.check_and_insert(t0 + Duration::from_secs(61), other);
//! }
//! assert_eq!(seen.len(), 10_000);
//! assert_eq!(seen.memory_bytes(), bytes);
//! ```

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::mem::size_of;
use core::time::Duration;

use hashbrown::HashTable;
use siphasher::sip::SipHasher13;

use crate::{Instant, Rng};

/// The 16-byte id of an IPC envelope (the bytes of its UUID).
pub type EnvelopeId = [u8; 16];

/// How long an id is remembered by default: 60 s (DESIGN.md §4).
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How many ids are remembered at most by default: 10 000 (DESIGN.md §4).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The largest capacity a filter accepts (2²⁴ ≈ 16.8 M entries, about 680 MB);
/// larger requests are clamped to it.
pub const MAX_CAPACITY: usize = 1 << 24;

/// Bytes of one ring slot: the first-seen time (8) and the id (16).
pub const RING_SLOT_BYTES: usize = size_of::<Slot>();

/// Bytes of one index bucket: a `u32` slot number and hashbrown's control byte.
/// The index has at least `2 × 8/7 × capacity` buckets (a power of two), see the
/// [module documentation](self).
pub const INDEX_BUCKET_BYTES: usize = size_of::<u32>() + 1;

/// Settings of a [`DedupFilter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long after its first sighting an id counts as a duplicate.
    /// Default [`DEFAULT_TTL`] (60 s). A zero TTL remembers nothing.
    pub ttl: Duration,
    /// How many ids are remembered at most; when full, the oldest is forgotten first.
    /// Default [`DEFAULT_CAPACITY`] (10 000). Clamped to `1..=`[`MAX_CAPACITY`].
    pub capacity: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            ttl: DEFAULT_TTL,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl DedupConfig {
    /// A configuration with the given TTL and capacity.
    pub const fn new(ttl: Duration, capacity: usize) -> Self {
        DedupConfig { ttl, capacity }
    }
}

/// One remembered id and when it was first seen.
#[derive(Clone, Copy)]
struct Slot {
    seen: Instant,
    id: EnvelopeId,
}

impl Slot {
    const VACANT: Slot = Slot {
        seen: Instant::ZERO,
        id: [0; 16],
    };
}

/// A time-bounded, capacity-bounded set of envelope ids that answers "seen before?".
///
/// See the [module documentation](self) for the semantics, the design and the memory
/// figures.
pub struct DedupFilter {
    /// Ring of `capacity` slots; the live ones are `head, head + 1, …` (mod capacity),
    /// `len` of them, oldest first. Its length never changes after construction.
    slots: Vec<Slot>,
    head: usize,
    len: usize,
    /// Slot numbers of the live slots, hashed by their id with `sip`.
    index: HashTable<u32>,
    sip: SipHasher13,
    ttl: Duration,
    /// The latest `now` seen; earlier ones are raised to it.
    latest: Instant,
}

impl DedupFilter {
    /// An empty filter whose hash key is drawn from `rng`.
    ///
    /// Allocates all the memory the filter will ever use (see
    /// [`memory_bytes`](Self::memory_bytes)).
    pub fn new(config: DedupConfig, rng: &mut Rng) -> Self {
        Self::with_key(config, rng.array())
    }

    /// An empty filter hashing ids with SipHash-1-3 under `key`.
    ///
    /// The key must be secret and random (peers choose the ids; a known key lets
    /// them choose colliding ones). [`new`](Self::new) draws one from the core's `Rng`.
    pub fn with_key(config: DedupConfig, key: [u8; 16]) -> Self {
        let capacity = config.capacity.clamp(1, MAX_CAPACITY);
        DedupFilter {
            slots: vec![Slot::VACANT; capacity],
            head: 0,
            len: 0,
            // Twice the capacity: keeps hashbrown rehashing in place instead of growing.
            index: HashTable::with_capacity(2 * capacity),
            sip: SipHasher13::new_with_key(&key),
            ttl: config.ttl,
            latest: Instant::ZERO,
        }
    }

    /// Whether `id` is new: `true` (deliver or relay it) if it was not seen in the
    /// last TTL before `now`, in which case it is remembered from `now` on; `false` if
    /// it is a duplicate (drop it). A duplicate does not refresh the entry.
    ///
    /// Also forgets every entry whose TTL has run out by `now`, and, if the filter is
    /// full, the oldest entry to make room for `id`.
    pub fn check_and_insert(&mut self, now: Instant, id: EnvelopeId) -> bool {
        let now = self.advance(now);
        self.expire_until(now);
        let hash = self.sip.hash(&id);
        let slots = &self.slots;
        // After `expire_until` every remembered entry is live.
        if self
            .index
            .find(hash, |&i| slots[i as usize].id == id)
            .is_some()
        {
            return false;
        }
        if self.len == self.slots.len() {
            self.pop_oldest();
        }
        let tail = self.wrap(self.head + self.len);
        self.slots[tail] = Slot { seen: now, id };
        let (sip, slots) = (self.sip, &self.slots);
        self.index.insert_unique(hash, slot_number(tail), |&i| {
            sip.hash(&slots[i as usize].id)
        });
        self.len += 1;
        true
    }

    /// Whether `id` counts as a duplicate at `now` (seen less than a TTL before it).
    /// Changes nothing.
    pub fn contains(&self, now: Instant, id: EnvelopeId) -> bool {
        let now = now.max(self.latest);
        let slots = &self.slots;
        self.index
            .find(self.sip.hash(&id), |&i| slots[i as usize].id == id)
            .is_some_and(|&i| self.live(slots[i as usize].seen, now))
    }

    /// Forget every entry whose TTL has run out by `now`.
    ///
    /// [`check_and_insert`](Self::check_and_insert) does this by itself; call it to make
    /// [`len`](Self::len) exact at `now` without inserting anything.
    pub fn expire(&mut self, now: Instant) {
        let now = self.advance(now);
        self.expire_until(now);
    }

    /// How many ids are remembered. This may count entries whose TTL has run out since
    /// the last call that took a `now` ([`expire`](Self::expire) drops them).
    /// Never more than [`capacity`](Self::capacity).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no id is remembered (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many ids are remembered at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How long an id is remembered.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Forget every id (keeps the memory and the hash key).
    pub fn clear(&mut self) {
        self.index.clear();
        self.head = 0;
        self.len = 0;
    }

    /// Heap bytes the filter holds: the ring plus the index, as allocated.
    ///
    /// Fixed by the constructor: it does not change whatever the filter is fed. About
    /// 40.4 bytes per entry at the default capacity on x86-64; see the
    /// [module documentation](self) for the breakdown.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * RING_SLOT_BYTES + self.index.allocation_size()
    }

    /// Raise `now` to the latest instant seen and remember it.
    fn advance(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }

    /// Whether an entry first seen at `seen` is still a duplicate at `now`.
    fn live(&self, seen: Instant, now: Instant) -> bool {
        now.saturating_duration_since(seen) < self.ttl
    }

    /// Pop entries off the front while their TTL has run out. Amortised O(1): each
    /// entry is popped once.
    fn expire_until(&mut self, now: Instant) {
        while self.len > 0 && !self.live(self.slots[self.head].seen, now) {
            self.pop_oldest();
        }
    }

    /// Forget the oldest entry. The filter must not be empty.
    fn pop_oldest(&mut self) {
        debug_assert!(self.len > 0);
        let head = self.head;
        let wanted = slot_number(head);
        let hash = self.sip.hash(&self.slots[head].id);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == wanted) {
            entry.remove();
        } else {
            debug_assert!(false, "dedup ring slot {head} missing from the index");
        }
        self.head = self.wrap(head + 1);
        self.len -= 1;
    }

    /// `i` modulo the capacity, for `i < 2 × capacity`.
    fn wrap(&self, i: usize) -> usize {
        if i >= self.slots.len() {
            i - self.slots.len()
        } else {
            i
        }
    }
}

/// A ring position as stored in the index (positions are below [`MAX_CAPACITY`]).
fn slot_number(i: usize) -> u32 {
    u32::try_from(i).expect("dedup capacity is at most MAX_CAPACITY")
}

impl fmt::Debug for DedupFilter {
    /// Shows the sizes, never the hash key or the ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupFilter")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("ttl", &self.ttl)
            .field("latest", &self.latest)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 16] = [9; 16];

    fn at(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    fn id(n: u64) -> EnvelopeId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_le_bytes());
        id[8..].copy_from_slice(&(!n).to_be_bytes());
        id
    }

    fn filter(ttl_micros: u64, capacity: usize) -> DedupFilter {
        DedupFilter::with_key(
            DedupConfig::new(Duration::from_micros(ttl_micros), capacity),
            KEY,
        )
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = DedupConfig::default();
        assert_eq!(config.ttl, Duration::from_secs(60));
        assert_eq!(config.capacity, 10_000);
        let f = DedupFilter::with_key(config, KEY);
        assert_eq!(f.capacity(), 10_000);
        assert_eq!(f.ttl(), Duration::from_secs(60));
        assert!(f.is_empty());
    }

    #[test]
    fn duplicate_within_ttl_is_suppressed() {
        let mut f = filter(1_000, 8);
        assert!(f.check_and_insert(at(10), id(1)));
        assert!(!f.check_and_insert(at(10), id(1)));
        assert!(!f.check_and_insert(at(1_009), id(1)));
        assert!(f.contains(at(1_009), id(1)));
        assert!(!f.contains(at(1_009), id(2)));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn id_is_new_again_after_ttl() {
        let mut f = filter(1_000, 8);
        assert!(f.check_and_insert(at(10), id(1)));
        // Exactly one TTL after the first sighting the entry has expired.
        assert!(!f.contains(at(1_010), id(1)));
        assert!(f.check_and_insert(at(1_010), id(1)));
        assert_eq!(f.len(), 1);
        // The TTL now counts from the second sighting.
        assert!(!f.check_and_insert(at(2_009), id(1)));
        assert!(f.check_and_insert(at(2_010), id(1)));
    }

    #[test]
    fn duplicate_does_not_refresh_the_ttl() {
        let mut f = filter(100, 8);
        assert!(f.check_and_insert(at(0), id(1)));
        assert!(!f.check_and_insert(at(99), id(1)));
        assert!(f.check_and_insert(at(100), id(1)));
    }

    #[test]
    fn expiry_is_driven_by_now_only() {
        let mut f = filter(100, 8);
        for n in 0..5 {
            assert!(f.check_and_insert(at(n * 10), id(n)));
        }
        assert_eq!(f.len(), 5);
        f.expire(at(125)); // entries seen at 0, 10, 20 have expired
        assert_eq!(f.len(), 2);
        assert!(!f.contains(at(125), id(2)));
        assert!(f.contains(at(125), id(3)));
        f.expire(at(1_000));
        assert!(f.is_empty());
    }

    #[test]
    fn full_filter_evicts_the_oldest() {
        let mut f = filter(1_000_000, 3);
        for n in 0..3 {
            assert!(f.check_and_insert(at(n), id(n)));
        }
        assert_eq!(f.len(), 3);
        assert!(f.check_and_insert(at(3), id(3)));
        assert_eq!(f.len(), 3);
        // id 0 was the oldest: forgotten, so a late copy of it counts as new (and in
        // turn evicts id 1).
        assert!(!f.contains(at(3), id(0)));
        assert!(f.contains(at(3), id(1)));
        assert!(f.check_and_insert(at(4), id(0)));
        assert!(!f.contains(at(4), id(1)));
        for n in [2, 3, 0] {
            assert!(!f.check_and_insert(at(5), id(n)));
        }
    }

    #[test]
    fn capacity_is_clamped() {
        let mut f = filter(1_000, 0);
        assert_eq!(f.capacity(), 1);
        assert!(f.check_and_insert(at(0), id(1)));
        assert!(!f.check_and_insert(at(0), id(1)));
        assert!(f.check_and_insert(at(0), id(2)));
        assert!(f.check_and_insert(at(0), id(1)));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn zero_ttl_remembers_nothing() {
        let mut f = filter(0, 4);
        assert!(f.check_and_insert(at(5), id(1)));
        assert!(!f.contains(at(5), id(1)));
        assert!(f.check_and_insert(at(5), id(1)));
    }

    #[test]
    fn time_going_backwards_counts_as_no_time_passing() {
        let mut f = filter(100, 8);
        assert!(f.check_and_insert(at(1_000), id(1)));
        // An earlier `now` is raised to 1 000: id 2 is remembered from 1 000.
        assert!(f.check_and_insert(at(10), id(2)));
        assert!(!f.check_and_insert(at(10), id(1)));
        assert!(f.contains(at(1_099), id(2)));
        assert!(f.check_and_insert(at(1_100), id(2)));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn clear_forgets_everything_and_keeps_memory() {
        let mut f = filter(1_000, 4);
        let bytes = f.memory_bytes();
        for n in 0..6 {
            f.check_and_insert(at(0), id(n));
        }
        f.clear();
        assert!(f.is_empty());
        assert!(f.check_and_insert(at(0), id(5)));
        assert_eq!(f.memory_bytes(), bytes);
    }

    #[test]
    fn memory_is_computed_as_documented() {
        assert_eq!(RING_SLOT_BYTES, 24);
        assert_eq!(INDEX_BUCKET_BYTES, 5);
        let f = DedupFilter::with_key(DedupConfig::default(), KEY);
        // 2 × 10 000 items at 7/8 load → 32 768 buckets; plus one group of trailing
        // control bytes (8 or 16 depending on the SIMD group width) and alignment.
        let ring = 10_000 * RING_SLOT_BYTES;
        let index = f.memory_bytes() - ring;
        assert!(
            (32_768 * INDEX_BUCKET_BYTES..=32_768 * INDEX_BUCKET_BYTES + 32).contains(&index),
            "index bytes {index}"
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(f.memory_bytes(), 403_856);
    }

    #[test]
    fn debug_does_not_leak_key_or_ids() {
        let mut f = filter(1_000, 4);
        f.check_and_insert(at(0), [0xAB; 16]);
        let s = alloc::format!("{f:?}");
        assert!(s.contains("len: 1"), "{s}");
        assert!(!s.contains("171"), "{s}");
        assert!(!s.contains("sip"), "{s}");
    }

    /// A million distinct ids, arriving faster than they expire: the filter stays at
    /// its capacity and its memory never moves.
    #[test]
    fn flood_of_unique_ids_stays_bounded() {
        let mut f = DedupFilter::with_key(DedupConfig::default(), KEY);
        let bytes = f.memory_bytes();
        for n in 0..1_000_000u64 {
            // 1 µs apart: nothing expires (1 s < 60 s TTL), only capacity evicts.
            assert!(f.check_and_insert(at(n), id(n)));
            assert!(f.len() <= DEFAULT_CAPACITY);
            assert_eq!(f.memory_bytes(), bytes);
        }
        assert_eq!(f.len(), DEFAULT_CAPACITY);
        // The newest capacity-many ids are remembered, the older ones forgotten.
        assert!(!f.check_and_insert(at(1_000_000), id(999_999)));
        assert!(!f.check_and_insert(at(1_000_000), id(990_000)));
        assert!(f.contains(at(1_000_000), id(990_000)));
        assert!(!f.contains(at(1_000_000), id(989_999)));
    }

    /// A flood mixing expiry and eviction, with the ids an attacker could pick
    /// (sequential, sharing all but a few bytes).
    #[test]
    fn flood_with_expiry_stays_bounded() {
        let mut f = filter(5_000, 1_000);
        let bytes = f.memory_bytes();
        for n in 0..200_000u64 {
            let mut chosen = [0u8; 16];
            chosen[..4].copy_from_slice(&(n as u32).to_be_bytes());
            assert!(f.check_and_insert(at(n * 3), chosen));
            // 5 000 µs / 3 µs ≈ 1 667 ids per TTL: capacity binds, then expiry.
            assert!(f.len() <= 1_000);
            assert_eq!(f.memory_bytes(), bytes);
        }
    }

    // ----- property tests against a reference model --------------------------------

    /// The specification, written the obvious way: a list of (first seen, id), oldest
    /// first, scanned linearly.
    struct Model {
        entries: Vec<(Instant, EnvelopeId)>,
        ttl: Duration,
        capacity: usize,
        latest: Instant,
    }

    impl Model {
        fn new(ttl: Duration, capacity: usize) -> Self {
            Model {
                entries: Vec::new(),
                ttl,
                capacity: capacity.max(1),
                latest: Instant::ZERO,
            }
        }

        fn live(&self, seen: Instant, now: Instant) -> bool {
            now - seen < self.ttl
        }

        fn expire(&mut self, now: Instant) {
            self.latest = self.latest.max(now);
            let now = self.latest;
            let ttl = self.ttl;
            self.entries.retain(|&(seen, _)| now - seen < ttl);
        }

        fn check_and_insert(&mut self, now: Instant, id: EnvelopeId) -> bool {
            self.expire(now);
            if self.entries.iter().any(|&(_, e)| e == id) {
                return false;
            }
            if self.entries.len() == self.capacity {
                self.entries.remove(0);
            }
            self.entries.push((self.latest, id));
            true
        }

        fn contains(&self, now: Instant, id: EnvelopeId) -> bool {
            let now = now.max(self.latest);
            self.entries
                .iter()
                .any(|&(seen, e)| e == id && self.live(seen, now))
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Insert { step: u64, id: u8 },
        Contains { step: u64, id: u8 },
        Expire { step: u64 },
        Clear,
    }

    /// Time steps: often zero (bursts at one instant), mostly shorter than the TTLs
    /// used, sometimes longer.
    fn step() -> impl Strategy<Value = u64> {
        prop_oneof![3 => Just(0u64), 6 => 0u64..40, 1 => 0u64..400]
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct ids, so that duplicates are common.
        prop_oneof![
            8 => (step(), 0u8..24).prop_map(|(step, id)| Op::Insert { step, id }),
            4 => (step(), 0u8..24).prop_map(|(step, id)| Op::Contains { step, id }),
            1 => step().prop_map(|step| Op::Expire { step }),
            1 => Just(Op::Clear),
        ]
    }

    fn model_id(n: u8) -> EnvelopeId {
        // Ids differing in one byte only, like an attacker's.
        let mut id = [0x5A; 16];
        id[7] = n;
        id
    }

    /// Run `ops` on a filter and the model, with time moved by `step` (forwards when
    /// `back` is false; with `back`, odd steps go backwards) and compare every answer.
    fn compare(
        ttl: u64,
        capacity: usize,
        key: [u8; 16],
        ops: &[Op],
        back: bool,
    ) -> Result<(), TestCaseError> {
        let ttl = Duration::from_micros(ttl);
        let mut f = DedupFilter::with_key(DedupConfig::new(ttl, capacity), key);
        let mut m = Model::new(ttl, capacity);
        let bytes = f.memory_bytes();
        let mut t = 1_000u64;
        let mut tick = |step: u64| {
            if back && step % 2 == 1 {
                t = t.saturating_sub(step);
            } else {
                t += step;
            }
            Instant::from_micros(t)
        };
        for (i, &op) in ops.iter().enumerate() {
            match op {
                Op::Insert { step, id } => {
                    let now = tick(step);
                    let (got, want) = (
                        f.check_and_insert(now, model_id(id)),
                        m.check_and_insert(now, model_id(id)),
                    );
                    prop_assert_eq!(got, want, "op {} {:?}", i, op);
                }
                Op::Contains { step, id } => {
                    let now = tick(step);
                    prop_assert_eq!(
                        f.contains(now, model_id(id)),
                        m.contains(now, model_id(id)),
                        "op {} {:?}",
                        i,
                        op
                    );
                }
                Op::Expire { step } => {
                    let now = tick(step);
                    f.expire(now);
                    m.expire(now);
                }
                Op::Clear => {
                    f.clear();
                    m.entries.clear();
                }
            }
            prop_assert_eq!(f.len(), m.entries.len(), "len after op {} {:?}", i, op);
            prop_assert!(f.len() <= f.capacity());
            prop_assert_eq!(f.memory_bytes(), bytes);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_model_with_time_moving_forward(
            ttl in prop_oneof![Just(0u64), 1u64..30, 30u64..300],
            capacity in 0usize..12,
            key in any::<[u8; 16]>(),
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            compare(ttl, capacity, key, &ops, false)?;
        }

        #[test]
        fn matches_model_with_time_jumping_back(
            ttl in 1u64..200,
            capacity in 1usize..12,
            key in any::<[u8; 16]>(),
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            compare(ttl, capacity, key, &ops, true)?;
        }
    }
}
