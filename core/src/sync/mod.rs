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

/// Bit of the hello's `supported_sync_streams`: the sender keeps a chain and takes part
/// in chain sync (PROTOCOL.md §4.5.1, §19).
pub const STREAM_CHAIN: u64 = 1 << 0;
/// Bit of the hello's `supported_sync_streams`: the sender keeps a tree and takes part
/// in tree sync.
pub const STREAM_TREE: u64 = 1 << 1;

/// A replicated tree's state as sync digests carry it: the application's version of
/// the tree and its Merkle root. A node pulls the tree from a peer whose version is
/// higher (see `node::SyncEvent`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TreeState {
    /// Grows with every change the application makes (one per write, or a number it
    /// sets, such as the chain entry the tree reflects).
    pub version: u64,
    /// The tree's root hash ([`merkle::MerkleTree::root`]).
    pub root: merkle::Hash,
}
