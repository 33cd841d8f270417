//! Cross-crate tests of weft-mesh: the deterministic multi-node simulator ([`sim`])
//! and, under `tests/`, end-to-end tests over real sockets.

#![warn(missing_docs)]

pub mod sim;
pub mod swimnet;
