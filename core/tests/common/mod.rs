//! A pair of links joined by an in-memory wire, for integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weft_mesh::frame::FrameType;
use weft_mesh::handshake::{PqPolicy, Remote};
use weft_mesh::link::{Link, LinkConfig, LinkEvent, MAX_TRANSMIT};
use weft_mesh::{CloseReason, Identity, Instant, Rng};

pub const GENESIS: [u8; 32] = [0x47; 32];

/// How bytes are cut before `handle_bytes`.
#[derive(Clone, Copy, Debug)]
pub enum Chunks {
    /// Each `poll_transmit` result in one call.
    Whole,
    /// One byte per call.
    Bytewise,
    /// Random sizes from 1 to the given maximum, from a seeded generator.
    Random(u64),
}

pub fn identity(seed: u8) -> Arc<Identity> {
    Arc::new(Identity::generate(&mut Rng::from_seed([seed; 32])))
}

pub fn config(pq: PqPolicy) -> LinkConfig {
    let mut c = LinkConfig::new(GENESIS);
    c.handshake.pq = pq;
    c
}

/// Rewrites a transmission (its index, its bytes) on the wire.
pub type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>)>;

/// Two links, `a` dialing `b`, and everything that came out of them.
pub struct Pair {
    pub a: Link,
    pub b: Link,
    pub now: Instant,
    pub a_events: Vec<LinkEvent>,
    pub b_events: Vec<LinkEvent>,
    /// Every chunk of bytes `a` sent, in order (and `b`'s).
    pub a_wire: Vec<Vec<u8>>,
    pub b_wire: Vec<Vec<u8>>,
    pub chunks: Chunks,
    rng: Rng,
    buf: Vec<u8>,
    /// Rewrites each transmission from `a` (index, bytes) before delivery.
    pub tamper_a: Option<Tamper>,
}

impl Pair {
    pub fn new(ca: LinkConfig, cb: LinkConfig, remote: Remote) -> Self {
        Self::with_identities(ca, cb, remote, identity(1), identity(2))
    }

    pub fn with_identities(
        ca: LinkConfig,
        cb: LinkConfig,
        remote: Remote,
        ia: Arc<Identity>,
        ib: Arc<Identity>,
    ) -> Self {
        let remote = match remote {
            Remote::Known(_) => Remote::Known(*ib.public()),
            other => other,
        };
        let now = Instant::from_micros(1_000_000);
        Pair {
            a: Link::connect(ca, ia, remote, Rng::from_seed([21; 32]), now),
            b: Link::accept(cb, ib, Rng::from_seed([22; 32]), now),
            now,
            a_events: Vec::new(),
            b_events: Vec::new(),
            a_wire: Vec::new(),
            b_wire: Vec::new(),
            chunks: Chunks::Whole,
            rng: Rng::from_seed([23; 32]),
            buf: vec![0; MAX_TRANSMIT],
            tamper_a: None,
        }
    }

    pub fn default_pair(remote: Remote) -> Self {
        Self::new(config(PqPolicy::Prefer), config(PqPolicy::Prefer), remote)
    }

    fn deliver(&mut self, from_a: bool, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = match self.chunks {
                Chunks::Whole => rest.len(),
                Chunks::Bytewise => 1,
                Chunks::Random(max) => 1 + (self.rng.next_u64() % max) as usize,
            }
            .min(rest.len());
            let to = if from_a { &mut self.b } else { &mut self.a };
            to.handle_bytes(self.now, &rest[..n]);
            rest = &rest[n..];
        }
    }

    /// Move everything each side wants to send to the other, once. True if anything moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(n) = self.a.poll_transmit(self.now, &mut self.buf) {
            let mut bytes = self.buf[..n].to_vec();
            if let Some(t) = self.tamper_a.as_mut() {
                t(self.a_wire.len(), &mut bytes);
            }
            self.a_wire.push(bytes.clone());
            self.deliver(true, &bytes);
            moved = true;
        }
        while let Some(n) = self.b.poll_transmit(self.now, &mut self.buf) {
            let bytes = self.buf[..n].to_vec();
            self.b_wire.push(bytes.clone());
            self.deliver(false, &bytes);
            moved = true;
        }
        self.drain_events();
        moved
    }

    pub fn drain_events(&mut self) {
        while let Some(e) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push(e);
        }
    }

    /// Step until nothing moves.
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("links never went quiet");
    }

    /// Advance time by `d`, firing due timers on both sides, then run.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.run();
    }

    pub fn established(&self) -> bool {
        self.a.is_established() && self.b.is_established()
    }

    /// Frames delivered to `b` (or `a`), in order.
    pub fn frames(events: &[LinkEvent]) -> Vec<(FrameType, Bytes)> {
        events
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Frame {
                    frame_type,
                    payload,
                } => Some((*frame_type, payload.clone())),
                _ => None,
            })
            .collect()
    }

    /// The close reason reported in `events`, if any.
    pub fn closed(events: &[LinkEvent]) -> Option<(CloseReason, bool)> {
        events.iter().find_map(|e| match e {
            LinkEvent::Closed { reason, by_peer } => Some((*reason, *by_peer)),
            _ => None,
        })
    }

    pub fn established_hybrid(events: &[LinkEvent]) -> Option<bool> {
        events.iter().find_map(|e| match e {
            LinkEvent::Established(p) => Some(p.hybrid),
            _ => None,
        })
    }
}
