//! Replication of application state between nodes (DESIGN.md §4, issue 6).
//!
//! * [`merkle`]: a Merkle tree over an application's key/value store ([`merkle::KvStore`]),
//!   shaped by the keys' hashes alone, with inclusion and absence proofs.
//! * [`tree`]: tree sync (TreeSync frames, 0x06): a pull that descends only into the
//!   subtrees whose hashes differ, verifying every node before applying it.
//!
//! Like the rest of the core these are sans-IO state machines: the node (or a test)
//! carries their messages, passes time in, and lends them the application's tree.

pub mod merkle;
pub mod tree;
