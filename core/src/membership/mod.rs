//! SWIM failure detection with the Lifeguard extensions, as a sans-IO state machine.
//!
//! [`Swim`] is addressed by [`NodeId`](crate::NodeId) only: its owner carries each
//! [`Transmit`] to its destination (on a direct link or relayed through the mesh) and
//! hands incoming packets to [`Swim::handle_packet`]. Packets may be lost, delayed or
//! reordered. Like memberlist:
//!
//! * every probe round pings the next member in a random order (a new one each pass
//!   over the members); without an ack in
//!   time, `k` other members ping it for us (and nack if they get no answer either);
//!   a member that missed a whole round is suspected;
//! * a suspicion times out into Dead after a delay that starts at its maximum and
//!   shrinks with each independent confirmation (Lifeguard);
//! * a member refutes a suspicion about itself by raising its incarnation number;
//!   a ping to a suspect carries the suspicion first (the buddy system);
//! * our own missed acks and nacks raise a local health score that slows our probing
//!   down, so a slow node does not accuse healthy ones (Lifeguard);
//! * membership updates ride on every packet, each sent `λ × ceil(log10(N + 1))`
//!   times, and while any is queued a gossip round sends them to a few members
//!   (one of them a neighbour) every `gossip_interval`; full state is exchanged (push-pull)
//!   on join and periodically.
//!
//! Push-pull sends the whole table split over as many packets as needed, each at
//! most `max_packet` bytes; only the first packet of a request asks for the reply.
//!
//! ```
//! use weft_mesh::membership::{MemberEvent, Swim, SwimConfig};
//! use weft_mesh::{Instant, NodeId, Rng};
//!
//! let (a_id, b_id) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
//! let addrs = vec!["tcp://10.0.0.1:7000".to_string()];
//! let mut a = Swim::new(a_id, addrs.clone(), SwimConfig::lan(), Rng::from_seed([1; 32]));
//! let mut b = Swim::new(b_id, vec![], SwimConfig::lan(), Rng::from_seed([2; 32]));
//! let now = Instant::ZERO;
//! a.contact(now, b_id); // the join: a full-state exchange with b
//! for _ in 0..3 {
//!     while let Some(t) = a.poll_transmit(now) { b.handle_packet(now, a_id, &t.packet).unwrap(); }
//!     while let Some(t) = b.poll_transmit(now) { a.handle_packet(now, b_id, &t.packet).unwrap(); }
//! }
//! assert_eq!((a.alive_count(), b.alive_count()), (2, 2));
//! assert_eq!(b.poll_event(), Some(MemberEvent::Up { node: a_id, addrs }));
//! assert!(a.poll_timeout().is_some()); // the first probe round
//! ```

mod apply;
mod broadcast;
mod config;
mod member;
mod packet;
mod probe;
mod pushpull;
mod suspicion;
mod swim;

#[cfg(test)]
mod tests;

pub use config::{SwimConfig, MAX_PACKET, MAX_PUSH_PULLS, MIN_PACKET};
pub use member::{MemberInfo, MemberState};
pub use packet::{PacketError, MAX_ADDRS, MAX_STATE_ENTRIES, MAX_UPDATES};
pub use swim::{MemberEvent, Swim, SwimStats, Transmit};
