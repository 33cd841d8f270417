//! Replication of application state between nodes (DESIGN.md §4, issue 6).
//!
//! * [`chain`]: chain sync (ChainSync frames, 0x05): a pull that extends an application's
//!   append-only, hash-linked log ([`chain::ChainStore`]) from a peer's, verifying every
//!   link, and stops with evidence (both entries) at a fork.
//! * [`merkle`]: a Merkle tree over an application's key/value store ([`merkle::KvStore`]),
//!   shaped by the keys' hashes alone, with inclusion and absence proofs.
//! * [`tree`]: tree sync (TreeSync frames, 0x06): a pull that descends only into the
//!   subtrees whose hashes differ, verifying every node before applying it.
//!
//! Like the rest of the core these are sans-IO state machines: the node (or a test)
//! carries their messages, passes time in, and lends them the application's tree or chain.

pub mod chain;
pub mod merkle;
pub mod tree;
