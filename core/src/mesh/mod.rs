//! The mesh layer's building blocks (DESIGN.md §4): IPC envelopes that are relayed and
//! signed, distance-vector routes, discovery messages and the member directory. The
//! [`crate::node::Node`] puts them together.

pub mod discovery;
pub mod envelope;
pub mod routes;

pub use discovery::Member;
pub use envelope::{Envelope, Kind, Target};
pub use routes::Route;

/// Most links an envelope may cross: a relay that would make it cross more drops it
/// and tells the source ([`envelope::Failure::HopLimit`]).
pub const MAX_HOPS: u8 = 8;
