//! Cross-crate tests of weft-mesh: the deterministic multi-node simulator ([`sim`])
//! and, under `tests/`, end-to-end tests over real sockets.

pub mod sim;
