//! # weft-mesh core
//!
//! The sans-IO heart of weft-mesh: pure state machines that take bytes, time and
//! randomness in and give bytes, events and deadlines out. Nothing here reads a
//! clock, touches a socket or asks the operating system for random numbers; the
//! drivers (`weft-mesh-tokio`, `weft-mesh-smol`) do the waiting.
//!
//! Layers, bottom up:
//!
//! * [`identity`]: Ed25519 node identity, [`NodeId`], [`GlobalPid`] and the X25519
//!   static key that Noise uses.
//! * [`frame`]: the `[u32 BE len][u8 type][payload]` frames and their streaming decoder.
//! * [`handshake`]: Noise XX / IK with the WeftHandshake hello, an Ed25519 identity
//!   proof and the hybrid X25519 + ML-KEM-768 upgrade.
//! * [`record`]: the encrypted record layer: priority lanes, packing, fragmentation,
//!   reassembly, rekey.
//! * [`link`]: one connection's whole life, from the first handshake byte to the
//!   close reason, as a single state machine.
//! * [`mesh`]: the mesh layer's parts: IPC envelopes (signed when relayed),
//!   distance-vector routes, discovery messages and the member directory.
//! * [`node`]: every link of a process, at most one per peer, seeds, discovery and
//!   cross-node IPC (relaying, receipts, requests, retransmission, dedup): the one
//!   object a driver steps.
//! * [`dedup`]: the duplicate filter for delivered and relayed envelopes.
//! * [`sync`]: replication: a Merkle tree over an application's key/value store with
//!   proofs, and tree sync that pulls only the differing subtrees.
//!
//! The wire format is specified byte by byte in `PROTOCOL.md` at the repository root.
//!
//! ```
//! use weft_mesh::{Identity, Instant, Rng};
//! use weft_mesh::handshake::Remote;
//! use weft_mesh::link::{Link, LinkConfig, LinkEvent};
//!
//! let genesis = [7u8; 32];
//! let mut rng = Rng::from_seed([1; 32]);
//! let alice = Identity::generate(&mut rng);
//! let bob = Identity::generate(&mut rng);
//! let now = Instant::ZERO;
//! let mut a = Link::connect(LinkConfig::new(genesis), alice.into(), Remote::Any, rng.fork(), now);
//! let mut b = Link::accept(LinkConfig::new(genesis), bob.into(), rng.fork(), now);
//!
//! // Shuttle bytes until both sides are established (a driver does this with sockets).
//! let mut buf = vec![0u8; weft_mesh::link::MAX_TRANSMIT];
//! for _ in 0..4 {
//!     while let Some(n) = a.poll_transmit(now, &mut buf) { b.handle_bytes(now, &buf[..n]); }
//!     while let Some(n) = b.poll_transmit(now, &mut buf) { a.handle_bytes(now, &buf[..n]); }
//! }
//! let up = core::iter::from_fn(|| a.poll_event())
//!     .any(|e| matches!(e, LinkEvent::Established(ref peer) if peer.hybrid));
//! assert!(up);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod dedup;
pub mod frame;
pub mod handshake;
pub mod identity;
pub mod link;
pub mod membership;
pub mod mesh;
pub mod node;
pub mod reason;
pub mod record;
pub mod registry;
pub mod resolve;
mod rng;
pub mod sync;
mod time;
mod wire;

pub use identity::{GlobalPid, Identity, NodeId, PublicIdentity};
pub use reason::CloseReason;
pub use rng::Rng;
pub use time::Instant;

/// The protocol version this crate speaks; carried in the prologue and the pre-hello.
pub const PROTOCOL_VERSION: u8 = 1;
