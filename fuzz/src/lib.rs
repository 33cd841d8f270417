//! Fuzz harnesses live in `tests/`, one file per target (`frame_decoder`,
//! `hello_decoder`, `link_responder`, `link_initiator`, `link_pair`). Under
//! `cargo test -p weft-mesh-fuzz` each harness runs random inputs for one second
//! (`BOLERO_RANDOM_TEST_TIME_MS` or `BOLERO_RANDOM_ITERATIONS` change that). As a
//! coverage-guided fuzzer (cargo-bolero 0.13 finds the file from the test name and
//! builds with the workspace's `fuzz` profile; its libFuzzer engine wants a nightly
//! toolchain):
//!
//! ```text
//! cargo bolero test -p weft-mesh-fuzz --toolchain nightly -T 60s responder_fed_mutated_handshake
//! ```
//!
//! This library holds what the link harnesses share: fixed identities and seeds, a
//! genuine handshake transcript made with them (so a harness can start from valid
//! bytes and mutate from there), a fuzz-chosen [`Step`] script and the [`Probe`], a
//! wrapper around a [`Link`] that checks the sans-IO contract after every input.

#![warn(missing_docs)]

use std::ops::Bound;
use std::sync::{Arc, LazyLock};

use bolero::generator::bolero_generator::Driver;
use bolero::TypeGenerator;
use bytes::Bytes;
use weft_mesh::frame::{FrameType, HEADER_LEN};
use weft_mesh::handshake::{Pattern, PeerInfo, Remote};
use weft_mesh::link::{Link, LinkConfig, LinkEvent, SendError, MAX_TRANSMIT};
use weft_mesh::{CloseReason, Identity, Instant, PublicIdentity, Rng};

/// The governance genesis hash every harness link is configured with.
pub const GENESIS: [u8; 32] = [0x47; 32];

/// Seed of the RNG the harness initiator's [`Link`] runs on.
pub const INITIATOR_SEED: [u8; 32] = [0x11; 32];
/// Seed of the RNG the harness responder's [`Link`] runs on.
pub const RESPONDER_SEED: [u8; 32] = [0x22; 32];

static INITIATOR_ID: LazyLock<Arc<Identity>> =
    LazyLock::new(|| Arc::new(Identity::generate(&mut Rng::from_seed([0xA1; 32]))));
static RESPONDER_ID: LazyLock<Arc<Identity>> =
    LazyLock::new(|| Arc::new(Identity::generate(&mut Rng::from_seed([0xB2; 32]))));

/// The identity of the harness initiator (fixed, generated once).
pub fn initiator_identity() -> Arc<Identity> {
    INITIATOR_ID.clone()
}

/// The identity of the harness responder (fixed, generated once).
pub fn responder_identity() -> Arc<Identity> {
    RESPONDER_ID.clone()
}

/// Which handshake the harness initiator dials with.
#[derive(Clone, Copy, PartialEq, Eq, Debug, TypeGenerator)]
pub enum Dial {
    /// XX to any node of the cluster.
    Any,
    /// XX to the harness responder's node id.
    Node,
    /// XX to a node id that is not the harness responder's.
    WrongNode,
    /// IK with the harness responder's keys.
    Known,
}

impl Dial {
    /// The Noise pattern this dial runs.
    pub fn pattern(self) -> Pattern {
        match self {
            Dial::Known => Pattern::IK,
            _ => Pattern::XX,
        }
    }

    /// The [`Remote`] handed to [`Link::connect`].
    pub fn remote(self) -> Remote {
        let responder: PublicIdentity = *responder_identity().public();
        match self {
            Dial::Any => Remote::Any,
            Dial::Node => Remote::Node(responder.node_id),
            Dial::WrongNode => Remote::Node(initiator_identity().node_id()),
            Dial::Known => Remote::Known(responder),
        }
    }
}

/// A fresh harness initiator: fixed identity, seed and genesis, started at time zero.
pub fn new_initiator(dial: Dial) -> Link {
    Link::connect(
        LinkConfig::new(GENESIS),
        initiator_identity(),
        dial.remote(),
        Rng::from_seed(INITIATOR_SEED),
        Instant::ZERO,
    )
}

/// A fresh harness responder: fixed identity, seed and genesis, started at time zero.
pub fn new_responder() -> Link {
    Link::accept(
        LinkConfig::new(GENESIS),
        responder_identity(),
        Rng::from_seed(RESPONDER_SEED),
        Instant::ZERO,
    )
}

/// A genuine handshake between [`new_initiator`] and [`new_responder`]: every message
/// as it went over the wire (`[u16 BE len][body]`), and what both sides concluded.
#[derive(Debug)]
pub struct Transcript {
    /// The initiator's messages, in order: XX the first and third handshake messages,
    /// IK the first handshake message and the key-confirming first record.
    pub initiator: Vec<Vec<u8>>,
    /// The responder's messages, in order (one for both patterns).
    pub responder: Vec<Vec<u8>>,
    /// What the initiator learned about the responder.
    pub responder_peer: PeerInfo,
    /// What the responder learned about the initiator.
    pub initiator_peer: PeerInfo,
}

impl Transcript {
    /// The initiator's messages back to back.
    pub fn initiator_wire(&self, count: usize) -> Vec<u8> {
        self.initiator[..count.min(self.initiator.len())].concat()
    }

    /// The responder's messages back to back.
    pub fn responder_wire(&self, count: usize) -> Vec<u8> {
        self.responder[..count.min(self.responder.len())].concat()
    }
}

fn run_transcript(pattern: Pattern) -> Transcript {
    let dial = if pattern == Pattern::IK {
        Dial::Known
    } else {
        Dial::Any
    };
    let now = Instant::ZERO;
    let mut i = new_initiator(dial);
    let mut r = new_responder();
    let mut buf = vec![0u8; MAX_TRANSMIT];
    let (mut from_i, mut from_r) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        while let Some(n) = i.poll_transmit(now, &mut buf) {
            from_i.push(buf[..n].to_vec());
            r.handle_bytes(now, &buf[..n]);
        }
        while let Some(n) = r.poll_transmit(now, &mut buf) {
            from_r.push(buf[..n].to_vec());
            i.handle_bytes(now, &buf[..n]);
        }
    }
    let established = |link: &mut Link| {
        std::iter::from_fn(|| link.poll_event())
            .find_map(|e| match e {
                LinkEvent::Established(peer) => Some(*peer),
                _ => None,
            })
            .expect("the genuine handshake completes")
    };
    let responder_peer = established(&mut i);
    let initiator_peer = established(&mut r);
    // XX: e / s, se. IK: e, es, s, ss, then the record (an empty heartbeat) that
    // confirms the session keys to the responder.
    assert_eq!(from_i.len(), 2);
    assert_eq!(from_r.len(), 1);
    Transcript {
        initiator: from_i,
        responder: from_r,
        responder_peer,
        initiator_peer,
    }
}

static XX: LazyLock<Transcript> = LazyLock::new(|| run_transcript(Pattern::XX));
static IK: LazyLock<Transcript> = LazyLock::new(|| run_transcript(Pattern::IK));

/// The genuine transcript of `pattern` (made once, then cached).
pub fn transcript(pattern: Pattern) -> &'static Transcript {
    match pattern {
        Pattern::XX => &XX,
        Pattern::IK => &IK,
    }
}

/// XOR `flips` into `wire` (positions taken modulo its length), as a fuzzer's mutations
/// of genuine bytes.
pub fn apply_flips(wire: &mut [u8], flips: &[(u16, u8)]) {
    if wire.is_empty() {
        return;
    }
    for &(pos, xor) in flips {
        let at = usize::from(pos) % wire.len();
        wire[at] ^= xor;
    }
}

/// One fuzz-chosen input to a link; the harness feeds bytes from its input only
/// through [`Step::Feed`], and the rest in one piece at the end.
///
/// Generated with weights (feeding and pulling often, closing rarely) and sizes and
/// clock steps spread over orders of magnitude, so that a script of a few dozen steps
/// usually gets through a handshake in several pieces.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Feed the next `n` bytes of the input (at least one) to `handle_bytes`.
    Feed(u16),
    /// Move the clock forward by this many milliseconds.
    Advance(u16),
    /// Move the clock forward by this many microseconds.
    Tick(u8),
    /// Call `handle_timeout` at the current time.
    Timeout,
    /// Jump the clock to the deadline `poll_timeout` reports and call `handle_timeout`.
    FireDeadline,
    /// Call `handle_timeout` with a time this many milliseconds before the latest one
    /// (a driver whose clock readings arrive out of order).
    StaleTimeout(u16),
    /// Call `poll_transmit` once.
    Transmit,
    /// Call `poll_transmit` until it returns `None`.
    Flush,
    /// Call `poll_transmit` with a buffer smaller than `MIN_TRANSMIT` (must refuse).
    TinyTransmit,
    /// The application closes the link.
    Close,
    /// The driver reports the socket lost.
    ConnectionLost,
}

/// A value below `2^k` with `k` uniform in `0..=max_bits`: sizes and durations spread
/// over orders of magnitude rather than clustered near the top of the range.
pub fn spread<D: Driver>(driver: &mut D, max_bits: u8) -> Option<u32> {
    let bits = driver.gen_u8(Bound::Included(&0), Bound::Included(&max_bits.min(31)))?;
    let max = (1u32 << bits) - 1;
    driver.gen_u32(Bound::Included(&0), Bound::Included(&max))
}

impl TypeGenerator for Step {
    fn generate<D: Driver>(driver: &mut D) -> Option<Self> {
        fn spread16<D: Driver>(driver: &mut D) -> Option<u16> {
            spread(driver, 16).map(|v| v.min(u32::from(u16::MAX)) as u16)
        }
        let pick = driver.gen_u8(Bound::Included(&0), Bound::Excluded(&100))?;
        Some(match pick {
            0..=37 => Step::Feed(spread16(driver)?),
            38..=52 => Step::Transmit,
            53..=62 => Step::Flush,
            63..=67 => Step::Tick(driver.produce()?),
            68..=77 => Step::Advance(spread16(driver)?),
            78..=84 => Step::Timeout,
            85..=88 => Step::FireDeadline,
            89..=93 => Step::StaleTimeout(spread16(driver)?),
            94..=97 => Step::TinyTransmit,
            98 => Step::Close,
            _ => Step::ConnectionLost,
        })
    }
}

/// Run `steps` against `probe`, taking input bytes from `wire` as `Feed` steps ask;
/// then feed what is left (at the script's final time) and flush.
pub fn run_script(probe: &mut Probe, wire: &[u8], steps: &[Step]) {
    let mut at = 0usize;
    for step in steps {
        probe.step(*step, wire, &mut at);
    }
    if at < wire.len() {
        probe.handle_bytes(probe.now(), &wire[at..]);
    }
    probe.flush();
}

/// What a [`Probe`] saw and what it allows.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest `queued_bytes()` allowed at any point.
    pub max_queued: usize,
    /// Largest `reassembly_bytes()` allowed at any point.
    pub max_reassembly: usize,
}

impl Default for Limits {
    /// A link that no genuine peer sends frames to: no reassembly at all, and only the
    /// link's own frames queued (a keepalive Heartbeat, the Close frame, the IK
    /// initiator's identity proof).
    fn default() -> Self {
        Limits {
            max_queued: 256,
            max_reassembly: 0,
        }
    }
}

/// A [`Link`] under test. Every input goes through the probe, which afterwards drains
/// the events and asserts the sans-IO contract:
///
/// * `poll_timeout()` is never before the latest `now` passed in;
/// * `Established` is emitted at most once, `Closed` at most once, and nothing at all
///   after `Closed`;
/// * a `handle_timeout` before the reported deadline emits nothing and queues nothing;
/// * a link that was never established closes only with a handshake rejection, a
///   record-layer failure other than idleness (an empty transport message, or an IK
///   responder's unconfirmed session failing its first record) or a local close;
/// * a closed link either is drained or still has its Close record to send, and once
///   `poll_transmit` says there is nothing left it is drained and has no deadline;
/// * every transmit is one whole `[u16 BE len][body]` and the byte counters agree;
/// * `queued_bytes()` and `reassembly_bytes()` stay within [`Limits`];
/// * `send` succeeds exactly when the link is established, the frame type is not the
///   link's own and the queue has room, and `SendReady` comes only after a refusal
///   for a full queue.
pub struct Probe {
    /// The link under test.
    pub link: Link,
    limits: Limits,
    now: Instant,
    latest: Instant,
    buf: Vec<u8>,
    /// Every transport message the link handed out, in order.
    pub sent: Vec<Vec<u8>>,
    /// Every event the link emitted, in order.
    pub events: Vec<LinkEvent>,
    /// The peer, once `Established` was emitted.
    pub established: Option<PeerInfo>,
    /// The close reason and whether the peer closed, once `Closed` was emitted.
    pub closed: Option<(CloseReason, bool)>,
    /// Whether the harness closed the link itself (`close` or connection lost).
    pub closed_locally: bool,
    /// How many input bytes had been fed when the handshake was first cut short by
    /// the harness: `handle_timeout` at or after the 10 s handshake deadline, a local
    /// close or a lost connection before `Established`.
    pub interrupted_at: Option<usize>,
    /// Whether the link handed out its encrypted Close record (the transmit that took
    /// it from closing to drained).
    pub close_record_sent: bool,
    /// Input bytes handed to `handle_bytes` so far.
    pub fed: usize,
    /// A send was refused for a full queue and `SendReady` has not come yet.
    pub awaiting_ready: bool,
    bytes_sent: u64,
}

impl Probe {
    /// Wrap `link`, which was created at time zero, and check its initial state.
    pub fn new(link: Link, limits: Limits) -> Self {
        let mut probe = Probe {
            link,
            limits,
            now: Instant::ZERO,
            latest: Instant::ZERO,
            buf: vec![0u8; MAX_TRANSMIT],
            sent: Vec::new(),
            events: Vec::new(),
            established: None,
            closed: None,
            closed_locally: false,
            interrupted_at: None,
            close_record_sent: false,
            fed: 0,
            awaiting_ready: false,
            bytes_sent: 0,
        };
        probe.check();
        probe
    }

    /// The harness clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Move the harness clock forward.
    pub fn advance_micros(&mut self, micros: u64) {
        self.now = Instant::from_micros(self.now.as_micros().saturating_add(micros));
    }

    /// Every transmitted byte, back to back.
    pub fn sent_bytes(&self) -> Vec<u8> {
        self.sent.concat()
    }

    /// Carry out one script step; `at` is the read position in `wire`.
    pub fn step(&mut self, step: Step, wire: &[u8], at: &mut usize) {
        let now = self.now;
        match step {
            Step::Feed(n) => {
                let end = at.saturating_add(usize::from(n).max(1)).min(wire.len());
                self.handle_bytes(now, &wire[*at..end]);
                *at = end;
            }
            Step::Advance(ms) => self.advance_micros(u64::from(ms) * 1000),
            Step::Tick(us) => self.advance_micros(u64::from(us)),
            Step::Timeout => self.handle_timeout(now),
            Step::FireDeadline => {
                if let Some(deadline) = self.link.poll_timeout() {
                    self.now = self.now.max(deadline);
                    self.handle_timeout(self.now);
                }
            }
            Step::StaleTimeout(ms) => {
                let stale = self.latest.as_micros().saturating_sub(u64::from(ms) * 1000);
                self.handle_timeout(Instant::from_micros(stale));
            }
            Step::Transmit => {
                self.poll_transmit(now);
            }
            Step::Flush => self.flush(),
            Step::TinyTransmit => {
                let mut tiny = [0u8; 64];
                assert_eq!(
                    self.link.poll_transmit(now, &mut tiny),
                    None,
                    "poll_transmit wrote into a buffer below MIN_TRANSMIT"
                );
                self.saw(now);
            }
            Step::Close => self.close(now, CloseReason::Normal),
            Step::ConnectionLost => {
                self.interrupt();
                self.closed_locally |= self.closed.is_none();
                self.link.handle_connection_lost(now);
                self.saw(now);
                assert!(
                    self.link.is_drained(),
                    "a lost connection leaves the link drained"
                );
            }
        }
    }

    /// The application closes the link with `reason`, then the checks.
    pub fn close(&mut self, now: Instant, reason: CloseReason) {
        let was_open = self.closed.is_none();
        self.interrupt();
        self.closed_locally |= was_open;
        self.link.close(now, reason);
        self.saw(now);
        if was_open {
            assert_eq!(
                self.closed,
                Some((reason, false)),
                "close() reported otherwise"
            );
        }
    }

    fn interrupt(&mut self) {
        if self.established.is_none() && self.closed.is_none() && self.interrupted_at.is_none() {
            self.interrupted_at = Some(self.fed);
        }
    }

    fn saw(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
        self.check();
    }

    /// `handle_bytes(now, bytes)`, then the checks.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        let before = self.link.stats().bytes_received;
        let was_closed = self.closed.is_some();
        self.link.handle_bytes(now, bytes);
        self.fed += bytes.len();
        let after = self.link.stats().bytes_received;
        if was_closed {
            assert_eq!(after, before, "a closed link counted received bytes");
        } else {
            assert_eq!(after, before + bytes.len() as u64, "bytes_received is off");
        }
        self.saw(now);
    }

    /// `send(frame_type, payload)`, then the checks: it succeeds exactly when the link is
    /// established, the type is not the link's own and the queue has room; a refusal
    /// for a full queue must be followed by `SendReady` once the queue drains.
    pub fn send(
        &mut self,
        frame_type: FrameType,
        payload: Bytes,
        max_queued: usize,
    ) -> Result<(), SendError> {
        let len = payload.len();
        let queued = self.link.queued_bytes();
        let established = self.link.is_established();
        let result = self.link.send(frame_type, payload);
        let reserved = frame_type.is_link_internal();
        let expected = if reserved {
            Err(SendError::ReservedType)
        } else if self.closed.is_some() {
            Err(SendError::Closed)
        } else if !established {
            Err(SendError::NotEstablished)
        } else if queued + len + HEADER_LEN > max_queued {
            Err(SendError::Full)
        } else {
            Ok(())
        };
        assert_eq!(
            result, expected,
            "send({frame_type:?}, {len} bytes), {queued} queued"
        );
        match result {
            Ok(()) => assert_eq!(self.link.queued_bytes(), queued + len + HEADER_LEN),
            Err(_) => assert_eq!(self.link.queued_bytes(), queued, "a refused send queued"),
        }
        if result == Err(SendError::Full) {
            self.awaiting_ready = true;
        }
        self.check();
        result
    }

    /// `handle_timeout(now)`, then the checks; a call before the deadline must do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let deadline = self.link.poll_timeout();
        let early = now >= self.latest && deadline.is_none_or(|d| now < d);
        let wanted = self.link.wants_transmit();
        let queued = self.link.queued_bytes();
        let events = self.events.len();
        if now >= Instant::ZERO + LinkConfig::new(GENESIS).handshake_timeout {
            self.interrupt();
        }
        self.link.handle_timeout(now);
        self.saw(now);
        if early {
            assert_eq!(
                self.events.len(),
                events,
                "handle_timeout({now:?}) before the deadline {deadline:?} emitted {:?}",
                &self.events[events..]
            );
            assert_eq!(
                self.link.wants_transmit(),
                wanted,
                "early timeout changed wants_transmit"
            );
            assert_eq!(
                self.link.queued_bytes(),
                queued,
                "early timeout queued a frame"
            );
        }
    }

    /// `poll_transmit(now)` into a full-size buffer, then the checks.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<usize> {
        let wanted = self.link.wants_transmit();
        let n = self.link.poll_transmit(now, &mut self.buf);
        if let Some(n) = n {
            self.close_record_sent |= self.link.is_drained();
            assert!((2..=MAX_TRANSMIT).contains(&n), "transmit of {n} bytes");
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            assert_eq!(len + 2, n, "a transmit is exactly one [u16 len][body]");
            assert!(len > 0, "an empty transport message");
            self.bytes_sent += n as u64;
            self.sent.push(self.buf[..n].to_vec());
        } else {
            assert!(
                !wanted || self.closed.is_some(),
                "wants_transmit was true but poll_transmit gave nothing"
            );
        }
        self.saw(now);
        if n.is_none() && self.closed.is_some() {
            assert!(
                self.link.is_drained(),
                "closed, nothing to send, yet not drained"
            );
            assert_eq!(
                self.link.poll_timeout(),
                None,
                "a drained link has a deadline"
            );
        }
        n
    }

    /// `poll_transmit` until it returns `None` (which must happen within a few calls,
    /// since no frames are queued by the harness).
    pub fn flush(&mut self) {
        for _ in 0..64 {
            if self.poll_transmit(self.now).is_none() {
                return;
            }
        }
        panic!("poll_transmit never ran dry");
    }

    /// Drain the events and assert every invariant listed on [`Probe`].
    fn check(&mut self) {
        while let Some(event) = self.link.poll_event() {
            assert!(
                self.closed.is_none(),
                "event {event:?} after Closed {:?}",
                self.closed
            );
            match &event {
                LinkEvent::Established(peer) => {
                    assert!(self.established.is_none(), "Established twice");
                    self.established = Some((**peer).clone());
                }
                LinkEvent::Closed { reason, by_peer } => {
                    if self.established.is_none() && !self.closed_locally {
                        // A handshake rejection, or (an IK responder waiting for its
                        // first record) a record-layer failure.
                        let record_layer = reason.code() >> 8 == 0x02;
                        assert!(
                            reason.is_handshake_rejection()
                                || (record_layer && *reason != CloseReason::IdleTimeout),
                            "a link that never came up closed with {reason:?}"
                        );
                        assert!(!by_peer, "closed by a peer that never authenticated");
                    }
                    self.closed = Some((*reason, *by_peer));
                }
                LinkEvent::SendReady => {
                    assert!(self.awaiting_ready, "SendReady without a refused send");
                    self.awaiting_ready = false;
                }
                LinkEvent::Frame { .. } => {
                    assert!(self.established.is_some(), "{event:?} before Established");
                }
                _ => {}
            }
            self.events.push(event);
        }
        if let Some(t) = self.link.poll_timeout() {
            assert!(
                t >= self.latest,
                "poll_timeout {t:?} before the latest now {:?}",
                self.latest
            );
        }
        let queued = self.link.queued_bytes();
        assert!(queued <= self.limits.max_queued, "{queued} bytes queued");
        let held = self.link.reassembly_bytes();
        assert!(
            held <= self.limits.max_reassembly,
            "{held} bytes in reassembly"
        );
        assert_eq!(
            self.link.stats().bytes_sent,
            self.bytes_sent,
            "bytes_sent is off"
        );
        if self.closed.is_some() {
            assert!(
                !self.link.is_established(),
                "Closed was emitted, link is established"
            );
            assert!(
                self.link.is_drained() || self.link.wants_transmit(),
                "a closed link neither drained nor flushing its Close record"
            );
            assert_eq!(
                self.link.reassembly_bytes(),
                0,
                "a closed link holds fragments"
            );
        } else if self.established.is_some() {
            assert!(
                self.link.is_established(),
                "link fell out of Established without Closed"
            );
        }
        if self.link.is_drained() {
            assert!(self.closed.is_some(), "drained without a Closed event");
            assert!(
                !self.link.wants_transmit(),
                "a drained link wants to transmit"
            );
        }
    }
}

/// Feed every transport message in `sent` to `peer` (a genuine counterpart of the link
/// that sent them), flushing whatever `peer` answers, and return the events it emitted.
pub fn peer_events(mut peer: Link, sent: &[Vec<u8>]) -> Vec<LinkEvent> {
    let now = Instant::ZERO;
    let mut buf = vec![0u8; MAX_TRANSMIT];
    let mut events = Vec::new();
    while peer.poll_transmit(now, &mut buf).is_some() {}
    for message in sent {
        peer.handle_bytes(now, message);
        while peer.poll_transmit(now, &mut buf).is_some() {}
        events.extend(std::iter::from_fn(|| peer.poll_event()));
    }
    events
}

/// Genuine handshake messages of the peer, then fuzz bytes, with fuzz XORs on top.
#[derive(Clone, Debug, TypeGenerator)]
pub struct Mutation {
    /// How many of the peer's genuine messages start the input (taken modulo the
    /// count plus two, so that "all of them" comes up often).
    pub genuine: u8,
    /// What follows the genuine messages.
    pub tail: Vec<Tail>,
    /// `(position, xor)` flips applied to the whole input (see [`apply_flips`]).
    pub flips: Vec<(u16, u8)>,
    /// Apply the flips to the tail only, leaving the genuine messages intact.
    pub tail_only: bool,
}

/// A piece of what follows the genuine messages.
#[derive(Clone, Debug, TypeGenerator)]
pub enum Tail {
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// Arbitrary bytes as one transport message (`[u16 BE len][bytes]`), a forged record.
    Message(Vec<u8>),
    /// A forged record of exactly this many bytes (all `fill`), e.g. a full-size one.
    Sized(u16, u8),
    /// An empty transport message.
    Empty,
}

impl Tail {
    /// Append this piece's bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut message = |body: &[u8]| {
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            out.extend_from_slice(body);
        };
        match self {
            Tail::Raw(bytes) => out.extend_from_slice(bytes),
            Tail::Message(body) => message(&body[..body.len().min(usize::from(u16::MAX))]),
            Tail::Sized(len, fill) => message(&vec![*fill; usize::from(*len)]),
            Tail::Empty => message(&[]),
        }
    }
}

/// The input a [`Mutation`] makes from genuine messages.
#[derive(Clone, Debug)]
pub struct Mutated {
    /// The bytes to feed.
    pub wire: Vec<u8>,
    /// How many genuine messages went in.
    pub genuine: usize,
    /// Byte length of each genuine message's end in `wire` (cumulative).
    pub ends: Vec<usize>,
    /// For each genuine message: whether it survived the flips unchanged.
    pub intact: Vec<bool>,
}

impl Mutated {
    /// Whether the first `n` genuine messages went in unchanged.
    pub fn intact_through(&self, n: usize) -> bool {
        n <= self.genuine && self.intact[..n].iter().all(|ok| *ok)
    }

    /// Where the first `n` genuine messages end in the input (`usize::MAX` if fewer
    /// than `n` went in).
    pub fn end_of(&self, n: usize) -> usize {
        match n {
            0 => 0,
            n => self.ends.get(n - 1).copied().unwrap_or(usize::MAX),
        }
    }
}

impl Mutation {
    /// Build the input from `messages` (a genuine peer's transport messages).
    pub fn apply(&self, messages: &[Vec<u8>]) -> Mutated {
        let genuine = usize::from(self.genuine) % (messages.len() + 2);
        let genuine = genuine.min(messages.len());
        let mut wire = messages[..genuine].concat();
        let prefix = wire.clone();
        let ends: Vec<usize> = messages[..genuine]
            .iter()
            .scan(0, |end, m| {
                *end += m.len();
                Some(*end)
            })
            .collect();
        for piece in &self.tail {
            piece.write(&mut wire);
        }
        if self.tail_only {
            apply_flips(&mut wire[prefix.len()..], &self.flips);
        } else {
            apply_flips(&mut wire, &self.flips);
        }
        let intact = ends
            .iter()
            .map(|&end| wire[..end] == prefix[..end])
            .collect();
        Mutated {
            wire,
            genuine,
            ends,
            intact,
        }
    }
}
