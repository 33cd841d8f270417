//! One connection from its first handshake byte to its close reason, sans IO.
//!
//! A driver owns the socket and a [`Link`]; after every input it drains the outputs:
//!
//! * inputs: [`Link::handle_bytes`], [`Link::handle_timeout`],
//!   [`Link::handle_connection_lost`], and the application's [`Link::send`] and
//!   [`Link::close`];
//! * outputs: [`Link::poll_transmit`] whenever the socket can take bytes (records are
//!   packed and sealed at that moment), [`Link::poll_event`] until `None`, and
//!   [`Link::poll_timeout`] for the one timer to arm. When [`Link::is_drained`] the
//!   driver closes the socket.
//!
//! On the wire every handshake message and record is `[u16 BE len][body]`
//! (PROTOCOL.md §2).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{FrameType, Payload, MAX_PAYLOAD_LEN};
use crate::handshake::{Confirmation, Handshake, HandshakeConfig, Pattern, PeerInfo, Remote};
use crate::record::{Inbound, RecordConfig, RecordStats, Session, LEN_PREFIX, MAX_RECORD};
use crate::{CloseReason, Identity, Instant, Rng};

/// Ping frame payload: `kind ‖ u64 token` (PROTOCOL.md §8.5).
const PING_LEN: usize = 9;
const PING: u8 = 0x00;
const PONG: u8 = 0x01;
/// Unanswered pings remembered (older ones are forgotten; the stall timer has fired
/// long before).
const MAX_PINGS_OUT: usize = 8;

/// A buffer this large lets [`Link::poll_transmit`] fill a record completely.
pub const MAX_TRANSMIT: usize = LEN_PREFIX + MAX_RECORD;
/// The smallest buffer [`Link::poll_transmit`] accepts (every handshake message fits).
pub const MIN_TRANSMIT: usize = 4096;

/// Settings of one link.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LinkConfig {
    /// What we say in the hello, and the PQ policy.
    pub handshake: HandshakeConfig,
    /// Record-layer limits and rekey policy.
    pub record: RecordConfig,
    /// The handshake must finish this soon after the link starts.
    pub handshake_timeout: Duration,
    /// Close an established link after this long without receiving a record.
    pub idle_timeout: Option<Duration>,
    /// Send a Ping (0x0D) this often, whatever else is sent: the peer's idle and stall
    /// timers do not fire on a quiet but healthy link, and its Pong measures the
    /// round-trip time ([`Link::rtt`]).
    pub keepalive: Option<Duration>,
    /// Report [`LinkEvent::Stalled`] after this long without receiving a record (the
    /// link stays open; [`LinkEvent::Resumed`] follows the next record). Must exceed
    /// the peer's keepalive; PROTOCOL.md §13.2 sets 1 s keepalives for every peer.
    pub stall_after: Option<Duration>,
    /// Report [`LinkEvent::Slow`] once the smoothed round-trip time, or the wait for
    /// the oldest unanswered Ping, exceeds this (only after the peer has answered a
    /// Ping: a peer that ignores them is never judged); [`LinkEvent::Resumed`] once
    /// both are at most half of it.
    pub slow_rtt: Option<Duration>,
    /// How long a closing link may take to hand its Close record to the socket.
    pub close_timeout: Duration,
}

impl LinkConfig {
    /// Defaults for the cluster with this genesis hash: 10 s handshake timeout,
    /// 30 s idle timeout, a Ping every second, stalled after 3 s of silence, slow
    /// beyond 500 ms round trips, PQ `Prefer`.
    pub fn new(genesis: [u8; 32]) -> Self {
        LinkConfig {
            handshake: HandshakeConfig::new(genesis),
            record: RecordConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(30)),
            keepalive: Some(Duration::from_secs(1)),
            stall_after: Some(Duration::from_secs(3)),
            slow_rtt: Some(Duration::from_millis(500)),
            close_timeout: Duration::from_secs(2),
        }
    }
}

/// What happened on a link. Drain with [`Link::poll_event`] after every input.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LinkEvent {
    /// The handshake finished; the peer is authenticated.
    Established(Box<PeerInfo>),
    /// A whole frame arrived.
    Frame {
        /// Its type.
        frame_type: FrameType,
        /// Its payload (a zero-copy slice of the record where possible).
        payload: Bytes,
    },
    /// The send queue, once full, has room again.
    SendReady,
    /// Nothing arrived for [`LinkConfig::stall_after`]: the path may be stuck. The
    /// link stays open (it closes at the idle timeout); traffic is better sent around it.
    Stalled,
    /// Round trips take longer than [`LinkConfig::slow_rtt`] (the peer, or the path,
    /// is overloaded); traffic is better sent around it.
    Slow,
    /// A link that was [`LinkEvent::Stalled`] or [`LinkEvent::Slow`] is neither any more.
    Resumed,
    /// The link closed. Emitted once; afterwards the link only flushes its Close record.
    Closed {
        /// Why.
        reason: CloseReason,
        /// Whether the peer closed it (with a Close frame).
        by_peer: bool,
    },
}

/// Why [`Link::send`] refused a frame. The frame was not queued.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The send queue is full; wait for [`LinkEvent::SendReady`].
    Full,
    /// The handshake has not finished (or, for an IK responder, the initiator has not
    /// yet proven its identity).
    NotEstablished,
    /// The link is closing or closed.
    Closed,
    /// The payload is longer than a frame may be (16 MiB - 1).
    TooLarge,
    /// Handshake, Close and Rekey frames belong to the link itself.
    ReservedType,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full => "send queue full",
            SendError::NotEstablished => "handshake not finished",
            SendError::Closed => "link closed",
            SendError::TooLarge => "payload larger than 16 MiB - 1",
            SendError::ReservedType => "frame type reserved for the link",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SendError {}

/// Counters of one link.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct LinkStats {
    /// Bytes handed out by `poll_transmit`.
    pub bytes_sent: u64,
    /// Bytes taken by `handle_bytes`.
    pub bytes_received: u64,
    /// Record-layer counters (zero until established).
    pub records: RecordStats,
}

enum State {
    Handshaking(Box<Handshake>),
    Established(Box<Session>),
    /// Flushing the Close record, then done.
    Closing(Box<Session>),
    Closed,
}

/// One connection's state machine. See the [module docs](self).
pub struct Link {
    state: State,
    config: LinkConfig,
    /// Handshake messages waiting for the socket.
    outgoing: VecDeque<Vec<u8>>,
    /// Bytes received but not yet a whole message.
    rx: BytesMut,
    events: VecDeque<LinkEvent>,
    peer: Option<PeerInfo>,
    /// IK responder: the peer, until its first record confirms it holds the keys.
    unconfirmed: Option<PeerInfo>,
    /// IK responder: the check of the proof expected as that record's first frame.
    confirmation: Option<Confirmation>,
    started: Instant,
    now: Instant,
    last_recv: Instant,
    last_send: Instant,
    /// [`LinkEvent::Stalled`] was reported and no record has arrived since.
    stalled: bool,
    /// Round trips: pings sent and not yet answered (oldest first), the next one due,
    /// the smoothed and the latest round-trip time, and whether [`LinkEvent::Slow`] holds.
    pings: VecDeque<Instant>,
    next_ping: Instant,
    srtt: Option<Duration>,
    last_rtt: Duration,
    slow: bool,
    close_deadline: Option<Instant>,
    send_blocked: bool,
    close_reported: bool,
    stats: LinkStats,
    /// Records sealed before the session closed (kept for `stats`).
    closed_records: Option<RecordStats>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Handshaking(_) => "handshaking",
            State::Established(_) => "established",
            State::Closing(_) => "closing",
            State::Closed => "closed",
        };
        f.debug_struct("Link")
            .field("state", &state)
            .field("peer", &self.peer.as_ref().map(|p| p.identity.node_id))
            .finish()
    }
}

impl Link {
    /// A link we dialed. `remote` picks the pattern: IK when its keys are known.
    pub fn connect(
        config: LinkConfig,
        identity: Arc<Identity>,
        remote: Remote,
        rng: Rng,
        now: Instant,
    ) -> Self {
        let hs = Handshake::initiator(config.handshake.clone(), identity, remote, rng);
        let mut link = Link::new(config, hs, now);
        link.drive_handshake(now);
        link
    }

    /// A link a peer dialed.
    pub fn accept(config: LinkConfig, identity: Arc<Identity>, rng: Rng, now: Instant) -> Self {
        let hs = Handshake::responder(config.handshake.clone(), identity, rng);
        Link::new(config, hs, now)
    }

    fn new(config: LinkConfig, hs: Handshake, now: Instant) -> Self {
        Link {
            state: State::Handshaking(Box::new(hs)),
            config,
            outgoing: VecDeque::new(),
            rx: BytesMut::new(),
            events: VecDeque::new(),
            peer: None,
            unconfirmed: None,
            confirmation: None,
            started: now,
            now,
            last_recv: now,
            last_send: now,
            stalled: false,
            pings: VecDeque::new(),
            next_ping: now,
            srtt: None,
            last_rtt: Duration::ZERO,
            slow: false,
            close_deadline: None,
            send_blocked: false,
            close_reported: false,
            stats: LinkStats::default(),
            closed_records: None,
        }
    }

    /// The authenticated peer, once established.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// Whether the session keys include the ML-KEM-768 secret.
    pub fn is_hybrid(&self) -> bool {
        self.peer.as_ref().is_some_and(|p| p.hybrid)
    }

    /// Whether the handshake finished and the link is open for frames.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_)) && self.unconfirmed.is_none()
    }

    /// Whether the link is [`LinkEvent::Stalled`]: nothing has arrived for
    /// [`LinkConfig::stall_after`].
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Whether the link is [`LinkEvent::Slow`].
    pub fn is_slow(&self) -> bool {
        self.slow
    }

    /// Whether traffic is better sent around this link: stalled or slow.
    pub fn is_degraded(&self) -> bool {
        self.stalled || self.slow
    }

    /// The smoothed round-trip time (RFC 6298's 1/8 gain over Ping round trips),
    /// once the peer has answered a Ping.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Whether the link is closed and has nothing left to send: close the socket.
    pub fn is_drained(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        let mut stats = self.stats;
        stats.records = match &self.state {
            State::Established(s) | State::Closing(s) => s.stats(),
            _ => self.closed_records.unwrap_or_default(),
        };
        stats
    }

    /// Bytes queued for sending and not yet sealed.
    pub fn queued_bytes(&self) -> usize {
        match &self.state {
            State::Established(s) | State::Closing(s) => s.queued_bytes(),
            _ => 0,
        }
    }

    /// Bytes held in partly received fragmented frames.
    pub fn reassembly_bytes(&self) -> usize {
        match &self.state {
            State::Established(s) => s.reassembly_held(),
            _ => 0,
        }
    }

    /// Queue a frame. Allowed once the handshake has finished; frames leave by priority
    /// when the socket pulls. An empty Heartbeat is a keepalive: the peer's link swallows
    /// it instead of delivering it.
    pub fn send(
        &mut self,
        frame_type: FrameType,
        payload: impl Into<Payload>,
    ) -> Result<(), SendError> {
        let payload = payload.into();
        if frame_type.is_link_internal() {
            return Err(SendError::ReservedType);
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(SendError::TooLarge);
        }
        let session = match &mut self.state {
            State::Established(_) if self.unconfirmed.is_some() => {
                return Err(SendError::NotEstablished)
            }
            State::Established(session) => session,
            State::Handshaking(_) => return Err(SendError::NotEstablished),
            State::Closing(_) | State::Closed => return Err(SendError::Closed),
        };
        if !session.queue().has_room(payload.len()) {
            self.send_blocked = true;
            return Err(SendError::Full);
        }
        session.queue().push(frame_type, payload);
        Ok(())
    }

    /// Close the link: the peer gets a Close frame with `reason` if the session is up.
    pub fn close(&mut self, now: Instant, reason: CloseReason) {
        self.advance(now);
        self.fail(reason);
    }

    /// The socket closed or failed under us.
    pub fn handle_connection_lost(&mut self, now: Instant) {
        self.advance(now);
        self.report_close(CloseReason::ConnectionLost, false);
        self.enter_closed();
    }

    /// Bytes read from the socket, in any chunking.
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8]) {
        self.advance(now);
        if matches!(self.state, State::Closed | State::Closing(_)) {
            return;
        }
        self.stats.bytes_received += input.len() as u64;
        self.rx.extend_from_slice(input);
        while let Some(body) = self.next_body() {
            // Only whole messages count as life: a peer trickling bytes stays idle.
            self.last_recv = now;
            if self.stalled {
                self.stalled = false;
                if !self.slow {
                    self.events.push_back(LinkEvent::Resumed);
                }
            }
            if let Err(reason) = self.handle_body(now, body) {
                self.fail(reason);
            }
            if matches!(self.state, State::Closed | State::Closing(_)) {
                self.rx = BytesMut::new();
                return;
            }
        }
    }

    /// Split the next whole `[u16 len][body]` off the receive buffer.
    fn next_body(&mut self) -> Option<BytesMut> {
        let len = usize::from(u16::from_be_bytes(*self.rx.first_chunk::<2>()?));
        if self.rx.len() < LEN_PREFIX + len {
            return None;
        }
        self.rx.advance(LEN_PREFIX);
        Some(self.rx.split_to(len))
    }

    fn handle_body(&mut self, now: Instant, body: BytesMut) -> Result<(), CloseReason> {
        if body.is_empty() {
            return Err(CloseReason::MalformedRecord);
        }
        match &mut self.state {
            State::Handshaking(hs) => {
                hs.read_message(&body)?;
                self.drive_handshake(now);
                Ok(())
            }
            State::Established(session) => {
                let events = &mut self.events;
                let first_new_event = events.len();
                let mut peer_closed = None;
                let mut unexpected = false;
                let mut pings: Vec<Bytes> = Vec::new();
                // IK responder: the first frame must be the initiator's identity proof.
                let mut proof: Option<Option<Bytes>> = self.confirmation.is_some().then_some(None);
                session.open(body, &mut |inbound| match inbound {
                    Inbound::Frame(FrameType::Handshake, payload) if proof == Some(None) => {
                        proof = Some(Some(payload));
                    }
                    // Before the proof nothing counts, not even a Close.
                    _ if proof == Some(None) => unexpected = true,
                    Inbound::Close(reason) => peer_closed = Some(reason),
                    Inbound::Frame(FrameType::Handshake, _) => unexpected = true,
                    Inbound::Frame(FrameType::Heartbeat, payload) if payload.is_empty() => {}
                    Inbound::Frame(FrameType::Ping, payload) => pings.push(payload),
                    Inbound::Frame(frame_type, payload) => {
                        events.push_back(LinkEvent::Frame {
                            frame_type,
                            payload,
                        });
                    }
                })?;
                // Nothing from this record counts until the proof (if due) verifies.
                let verified = match (&self.confirmation, &proof) {
                    (Some(confirmation), Some(Some(p))) => Some(confirmation.verify(p)),
                    _ => None,
                };
                let outcome = if unexpected {
                    Err(CloseReason::UnexpectedFrame)
                } else {
                    verified.unwrap_or(Ok(()))
                };
                if let Err(reason) = outcome {
                    self.events.truncate(first_new_event);
                    return Err(reason);
                }
                if matches!(proof, Some(Some(_))) {
                    self.confirmation = None;
                    if let Some(peer) = self.unconfirmed.take() {
                        self.peer = Some(peer.clone());
                        self.events
                            .insert(first_new_event, LinkEvent::Established(Box::new(peer)));
                    }
                }
                for ping in pings {
                    self.on_ping(now, &ping)?;
                }
                if let Some(reason) = peer_closed {
                    self.report_close(reason, true);
                    self.enter_closed();
                }
                Ok(())
            }
            State::Closing(_) | State::Closed => Ok(()),
        }
    }

    /// Write our handshake messages while it is our turn; switch to the session at the end.
    fn drive_handshake(&mut self, now: Instant) {
        let State::Handshaking(hs) = &mut self.state else {
            return;
        };
        while hs.is_my_turn() {
            match hs.write_message() {
                Ok(body) => self.outgoing.push_back(body),
                Err(reason) => return self.fail(reason),
            }
        }
        if !hs.is_finished() {
            return;
        }
        let State::Handshaking(hs) = core::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        match hs.finish() {
            Ok(done) => {
                let session = Session::new(&done.send_key, &done.recv_key, self.config.record, now);
                self.state = State::Established(Box::new(session));
                self.last_send = now;
                match (done.deferred_reject, done.peer) {
                    (Some(reason), _) => self.fail(reason),
                    (None, None) => self.fail(CloseReason::MalformedHandshake),
                    // An IK responder has not yet heard from the initiator's session keys: a
                    // replayed first message would get this far. It reports the peer only
                    // once the first record opens (key confirmation); the initiator sends
                    // one at once.
                    (None, Some(peer)) if peer.pattern == Pattern::IK && !peer.initiator => {
                        self.unconfirmed = Some(peer);
                        self.confirmation = done.confirmation;
                    }
                    (None, Some(peer)) => {
                        if let (Some(proof), State::Established(session)) =
                            (done.proof, &mut self.state)
                        {
                            session
                                .set_preamble(FrameType::Handshake, Bytes::copy_from_slice(&proof));
                        }
                        self.peer = Some(peer.clone());
                        self.events
                            .push_back(LinkEvent::Established(Box::new(peer)));
                    }
                }
            }
            Err(reason) => self.fail(reason),
        }
    }

    /// Close locally with `reason`: tell the peer if a session exists, report it once.
    fn fail(&mut self, reason: CloseReason) {
        if self.close_reported {
            return;
        }
        match core::mem::replace(&mut self.state, State::Closed) {
            State::Established(mut session) => {
                session.queue().clear();
                session.queue().push(
                    FrameType::Close,
                    Bytes::copy_from_slice(&reason.code().to_be_bytes()).into(),
                );
                self.state = State::Closing(session);
                self.close_deadline = Some(self.now + self.config.close_timeout);
            }
            other => {
                self.state = other;
                self.enter_closed();
            }
        }
        self.report_close(reason, false);
    }

    fn report_close(&mut self, reason: CloseReason, by_peer: bool) {
        if !self.close_reported {
            self.close_reported = true;
            self.events.push_back(LinkEvent::Closed { reason, by_peer });
        }
    }

    fn enter_closed(&mut self) {
        if let State::Established(s) | State::Closing(s) = &self.state {
            self.closed_records = Some(s.stats());
        }
        self.state = State::Closed;
        self.outgoing.clear();
        self.rx = BytesMut::new();
        self.close_deadline = None;
    }

    /// A Ping frame from the peer: answer a ping, time a pong (PROTOCOL.md §8.5).
    fn on_ping(&mut self, now: Instant, payload: &[u8]) -> Result<(), CloseReason> {
        let [kind, token @ ..] = payload else {
            return Err(CloseReason::MalformedFrame);
        };
        let token: [u8; 8] = token.try_into().map_err(|_| CloseReason::MalformedFrame)?;
        match *kind {
            PING => {
                if let State::Established(session) = &mut self.state {
                    let mut pong = [0u8; PING_LEN];
                    pong[0] = PONG;
                    pong[1..].copy_from_slice(&token);
                    session
                        .queue()
                        .push(FrameType::Ping, Bytes::copy_from_slice(&pong).into());
                }
            }
            PONG => {
                // The token is the send time of one of our pings; answers come in order.
                let sent = Instant::from_micros(u64::from_be_bytes(token));
                let mut answered = false;
                while self.pings.front().is_some_and(|t| *t <= sent) {
                    self.pings.pop_front();
                    answered = true;
                }
                if answered {
                    let sample = now.saturating_duration_since(sent);
                    self.last_rtt = sample;
                    self.srtt = Some(match self.srtt {
                        Some(srtt) => (srtt * 7 + sample) / 8,
                        None => sample,
                    });
                    self.check_rtt(now);
                }
            }
            _ => return Err(CloseReason::MalformedFrame),
        }
        Ok(())
    }

    /// Enter the slow state when the smoothed round trip or the wait for the oldest
    /// ping exceeds `slow_rtt`; leave it when those and the latest round trip are at
    /// most half of it (so one prompt answer does not end it, nor does a slow one
    /// that finally arrives).
    fn check_rtt(&mut self, now: Instant) {
        let (Some(limit), Some(srtt)) = (self.config.slow_rtt, self.srtt) else {
            return;
        };
        let waiting = self
            .pings
            .front()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(*t));
        if !self.slow && srtt.max(waiting) > limit {
            self.slow = true;
            self.events.push_back(LinkEvent::Slow);
        } else if self.slow && srtt.max(waiting).max(self.last_rtt) <= limit / 2 {
            self.slow = false;
            if !self.stalled {
                self.events.push_back(LinkEvent::Resumed);
            }
        }
    }

    /// Queue a ping stamped with `now`, the next one a keepalive interval later.
    fn send_ping(&mut self, now: Instant, interval: Duration) {
        let State::Established(session) = &mut self.state else {
            return;
        };
        let mut ping = [0u8; PING_LEN];
        ping[0] = PING;
        ping[1..].copy_from_slice(&now.as_micros().to_be_bytes());
        session
            .queue()
            .push(FrameType::Ping, Bytes::copy_from_slice(&ping).into());
        if self.pings.len() == MAX_PINGS_OUT {
            self.pings.pop_front();
        }
        self.pings.push_back(now);
        self.next_ping = now + interval;
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Whether [`Link::poll_transmit`] has something to write now.
    pub fn wants_transmit(&self) -> bool {
        !self.outgoing.is_empty()
            || match &self.state {
                State::Established(s) | State::Closing(s) => s.wants_transmit(self.now),
                _ => false,
            }
    }

    /// Write the next handshake message or sealed record into `buf` (at least
    /// [`MIN_TRANSMIT`] bytes; [`MAX_TRANSMIT`] fills records fully). Returns the number
    /// of bytes to send, or `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.advance(now);
        if buf.len() < MIN_TRANSMIT {
            return None;
        }
        let n = if let Some(body) = self.outgoing.pop_front() {
            let len = u16::try_from(body.len()).expect("handshake messages are far below 64 KiB");
            buf[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
            buf[LEN_PREFIX..LEN_PREFIX + body.len()].copy_from_slice(&body);
            LEN_PREFIX + body.len()
        } else {
            let now = self.now;
            match &mut self.state {
                State::Established(session) => match session.seal(now, buf) {
                    Ok(n) => {
                        if self.send_blocked
                            && session
                                .queue()
                                .has_room(self.config.record.max_queued_bytes / 2)
                        {
                            self.send_blocked = false;
                            self.events.push_back(LinkEvent::SendReady);
                        }
                        n?
                    }
                    Err(reason) => {
                        self.fail(reason);
                        return None;
                    }
                },
                State::Closing(session) => {
                    let n = session.seal(now, buf).ok().flatten();
                    self.enter_closed();
                    n?
                }
                _ => return None,
            }
        };
        self.last_send = self.now;
        self.stats.bytes_sent += n as u64;
        Some(n)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`Link::handle_timeout`] has work, if any.
    /// Never earlier than the latest `now` this link has seen.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = match &self.state {
            State::Handshaking(_) => Some(self.started + self.config.handshake_timeout),
            // A deadline whose work is a pending transmit is left out once due:
            // `wants_transmit` carries it, and a past deadline would spin the driver's timer.
            // A running minimum, not an iterator over an array of options: this runs
            // after every event of the link, and the array cost a store-forwarding stall.
            State::Established(s) => {
                let mut at = Some(s.rekey_deadline()).filter(|d| *d > self.now);
                let mut consider = |d: Option<Instant>| {
                    if let Some(d) = d {
                        at = Some(at.map_or(d, |a| a.min(d)));
                    }
                };
                let confirmed = self.unconfirmed.is_none();
                if !confirmed {
                    consider(Some(self.started + self.config.handshake_timeout));
                }
                consider(self.config.idle_timeout.map(|d| self.last_recv + d));
                // An IK responder's peer is not confirmed yet: nothing to keep alive.
                if confirmed && !self.stalled {
                    consider(self.config.stall_after.map(|d| self.last_recv + d));
                }
                if confirmed && self.config.keepalive.is_some() {
                    consider(Some(self.next_ping));
                }
                if !self.slow && self.srtt.is_some() {
                    consider(self.config.slow_rtt.and_then(|d| {
                        self.pings
                            .front()
                            .map(|t| *t + d + Duration::from_micros(1))
                    }));
                }
                at
            }
            State::Closing(_) => self.close_deadline,
            State::Closed => None,
        };
        deadline.map(|d| d.max(self.now))
    }

    /// Run the timers that are due at `now`. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let handshake_over = now >= self.started + self.config.handshake_timeout;
        let idle = self
            .config
            .idle_timeout
            .is_some_and(|d| now >= self.last_recv + d);
        let ping = self
            .config
            .keepalive
            .filter(|_| now >= self.next_ping && self.unconfirmed.is_none());
        let silent = self
            .config
            .stall_after
            .is_some_and(|d| now >= self.last_recv + d);
        if silent && !idle && !self.stalled && self.is_established() {
            self.stalled = true;
            self.events.push_back(LinkEvent::Stalled);
        }
        if !idle && self.is_established() {
            self.check_rtt(now);
            if let Some(interval) = ping {
                self.send_ping(now, interval);
            }
        }
        match &mut self.state {
            State::Handshaking(_) if handshake_over => self.fail(CloseReason::HandshakeTimeout),
            State::Established(_) if handshake_over && self.unconfirmed.is_some() => {
                self.fail(CloseReason::HandshakeTimeout);
            }
            State::Established(_) if idle => self.fail(CloseReason::IdleTimeout),
            State::Closing(_) if self.close_deadline.is_some_and(|d| now >= d) => {
                self.enter_closed()
            }
            _ => {}
        }
    }
}
