//! What the core costs per message: two [`Node`]s stepped in one thread exchange 64-byte
//! messages (A sends, B's application echoes, A receives), with no sockets and no runtime,
//! against the bare ChaCha20-Poly1305 seal and open of the same records (counted during
//! the run: the messages, their receipts and anything else the links sent), measured in
//! the same run so that the ratio holds on a noisy machine.
//!
//! ```text
//! cargo bench -p weft-mesh --bench node                      # RustCrypto AEAD
//! cargo bench -p weft-mesh --bench node --features ring      # ring's assembly (the drivers' choice)
//! cargo test -p weft-mesh --benches                          # quick run, figures not meaningful
//! ```
//!
//! The round-trip figure is the CPU a driver cannot avoid spending in the core: all of it
//! lies on the round trip's path except the receipts. What a driver adds on top (task
//! hand-offs, timers, syscalls) is what `weft-mesh-tokio`'s `mesh` bench compares with raw
//! TCP.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant as Clock;

use weft_mesh::link::MAX_TRANSMIT;
use weft_mesh::mesh::Target;
use weft_mesh::node::{Action, ConnId, Node, NodeConfig, NodeEvent};
use weft_mesh::{Identity, Instant, Rng};

const PAYLOAD: usize = 64;

/// Two connected nodes (membership off: nothing but the messages and their receipts).
struct Pair {
    a: Node,
    b: Node,
    ca: ConnId,
    cb: ConnId,
    buf: Vec<u8>,
    /// Sizes of the transmissions pulled (each holds one or more records).
    sizes: Vec<usize>,
}

impl Pair {
    fn new() -> Pair {
        let mut rng = Rng::from_seed([1; 32]);
        let mut config = NodeConfig::new([7; 32]);
        config.membership = None;
        let mut a = Node::new(
            Arc::new(Identity::generate(&mut rng)),
            config.clone(),
            rng.fork(),
        );
        let mut b = Node::new(Arc::new(Identity::generate(&mut rng)), config, rng.fork());
        a.add_seed(Instant::ZERO, "tcp://b:1");
        a.handle_timeout(Instant::ZERO);
        let ca = std::iter::from_fn(|| a.poll_action())
            .find_map(|action| match action {
                Action::Dial { conn, .. } => Some(conn),
                _ => None,
            })
            .expect("a dials its seed");
        let cb = b.accept(Instant::ZERO, None).expect("b accepts");
        let mut pair = Pair {
            a,
            b,
            ca,
            cb,
            buf: vec![0; MAX_TRANSMIT],
            sizes: Vec::new(),
        };
        pair.pump(Instant::ZERO);
        while pair.a.poll_event().is_some() {}
        while pair.b.poll_event().is_some() {}
        pair.sizes.clear();
        pair
    }

    /// Move bytes both ways until neither node has any.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while self.a.poll_action().is_some() {}
            while self.b.poll_action().is_some() {}
            while let Some(n) = self.a.poll_transmit(now, self.ca, &mut self.buf) {
                self.b.handle_bytes(now, self.cb, &self.buf[..n]);
                self.sizes.push(n);
                moved = true;
            }
            while let Some(n) = self.b.poll_transmit(now, self.cb, &mut self.buf) {
                self.a.handle_bytes(now, self.ca, &self.buf[..n]);
                self.sizes.push(n);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// `n` round trips starting at `*t` microseconds.
    fn round_trips(&mut self, n: usize, t: &mut u64) {
        let (ida, idb) = (self.a.node_id(), self.b.node_id());
        let payload = bytes::Bytes::from_static(&[7u8; PAYLOAD]);
        for _ in 0..n {
            *t += 20;
            let now = Instant::from_micros(*t);
            self.a
                .send(now, idb, Target::Node, payload.clone())
                .expect("room");
            self.pump(now);
            while let Some(e) = self.b.poll_event() {
                if let NodeEvent::Message { payload, .. } = e {
                    self.b.send(now, ida, Target::Node, payload).expect("room");
                }
            }
            self.pump(now);
            let echoed = std::iter::from_fn(|| self.a.poll_event())
                .filter(|e| matches!(e, NodeEvent::Message { .. }))
                .count();
            assert_eq!(echoed, 1, "the echo came back");
            // Timers (receipts held for an answer, retransmissions) stay due-free.
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            self.pump(now);
        }
    }
}

/// Seal and open records of these sizes (the record layer's overhead of 2 length bytes
/// and a 16-byte tag taken off), as the record layer does: no associated data,
/// counter nonces.
fn bare(sizes: &[usize]) -> impl FnMut() + '_ {
    let mut buf = vec![0xa5u8; MAX_TRANSMIT];
    let mut counter = 0u64;
    #[cfg(feature = "ring")]
    let (tx, rx) = {
        use ring::aead::{LessSafeKey, UnboundKey, CHACHA20_POLY1305};
        let key = |k| LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[k; 32]).unwrap());
        (key(9), key(9))
    };
    #[cfg(not(feature = "ring"))]
    let (tx, rx) = {
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
        (
            ChaCha20Poly1305::new(&[9u8; 32].into()),
            ChaCha20Poly1305::new(&[9u8; 32].into()),
        )
    };
    move || {
        for &size in sizes {
            let len = size.saturating_sub(18);
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            counter += 1;
            #[cfg(feature = "ring")]
            {
                use ring::aead::{Aad, Nonce};
                let n = || Nonce::assume_unique_for_key(nonce);
                let tag = tx
                    .seal_in_place_separate_tag(n(), Aad::empty(), &mut buf[..len])
                    .expect("seal");
                let end = len + 16;
                buf[len..end].copy_from_slice(tag.as_ref());
                rx.open_in_place(n(), Aad::empty(), &mut buf[..end])
                    .expect("open");
            }
            #[cfg(not(feature = "ring"))]
            {
                use chacha20poly1305::AeadInPlace;
                let tag = tx
                    .encrypt_in_place_detached(&nonce.into(), &[], &mut buf[..len])
                    .expect("seal");
                rx.decrypt_in_place_detached(&nonce.into(), &[], &mut buf[..len], &tag)
                    .expect("open");
            }
        }
        black_box(&buf);
    }
}

fn main() {
    let quick = std::env::var_os("WEFT_BENCH_QUICK").is_some_and(|v| v != "0")
        || !std::env::args().any(|a| a == "--bench");
    let (per_rep, reps) = if quick { (20, 3) } else { (20_000, 21) };
    let backend = if cfg!(feature = "ring") {
        "ring"
    } else {
        "RustCrypto"
    };
    let mut pair = Pair::new();
    let mut t = 1;
    pair.round_trips(per_rep, &mut t); // warm-up; also records what the links send
    let sizes = std::mem::take(&mut pair.sizes);
    let bytes: usize = sizes.iter().sum();
    let mut node_us = Vec::new();
    let mut bare_us = Vec::new();
    let mut run_bare = bare(&sizes);
    for _ in 0..reps {
        let start = Clock::now();
        pair.round_trips(per_rep, &mut t);
        node_us.push(start.elapsed().as_secs_f64() * 1e6 / per_rep as f64);
        pair.sizes.clear();
        let start = Clock::now();
        run_bare();
        bare_us.push(start.elapsed().as_secs_f64() * 1e6 / per_rep as f64);
    }
    node_us.sort_by(f64::total_cmp);
    bare_us.sort_by(f64::total_cmp);
    let (node, aead) = (node_us[reps / 2], bare_us[reps / 2]);
    println!(
        "{} 64 B round trips between two Nodes in one thread ({backend} AEAD{}):",
        per_rep,
        if quick {
            ", quick mode: not meaningful"
        } else {
            ""
        }
    );
    println!(
        "  {:.2} transmissions, {:.0} bytes on the wire per round trip (messages, receipts)",
        sizes.len() as f64 / per_rep as f64,
        bytes as f64 / per_rep as f64
    );
    println!("  core, both nodes:          {node:6.2} us CPU per round trip (median of {reps})");
    println!("  bare seal + open of those: {aead:6.2} us");
    println!(
        "  core / bare AEAD:          {:6.2}x  (the rest: framing, envelopes, dedup, routing, events)",
        node / aead
    );
}
