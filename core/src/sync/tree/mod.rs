//! Tree sync (TreeSync frames, 0x06): a [`Puller`] makes its [`MerkleTree`] a replica of
//! a peer's by descending only into the subtrees whose hashes differ; a [`Responder`]
//! answers a peer's puller from its own tree.
//!
//! # Model: pull, mirror
//!
//! The puller asks ([`GetNodes`]) for the root node of the responder's tree, then for
//! every child whose hash differs from its own subtree at the same [`Path`], down to
//! the leaves. At each node that arrives it:
//!
//! 1. **verifies** it: the node must hash to what its parent advertised (the root is
//!    taken as it comes, or checked against an `expected_root` learned elsewhere, e.g. a
//!    sync digest), and a leaf's key must lie under its path;
//! 2. **applies** it: an empty subtree removes every local entry under that path; a
//!    leaf removes the other local entries under its path and writes its entry; an
//!    inner node is compared child by child with [`MerkleTree::subtree_hash`], equal
//!    children are skipped, children the peer has empty are removed locally, and the
//!    others are queued.
//!
//! The puller thus ends with exactly the responder's entries (deletions included): it
//! *mirrors* the responder. Only differing paths travel: for `d` differing keys in a
//! tree of depth `h`, at most about `d · h` inner nodes (each ≤ 515 bytes) and `d`
//! leaves, whatever the tree's size. For two-way repair, each side runs a puller
//! against the other only if mirroring is the intended merge; choosing which side is the
//! source (e.g. from a digest) is the application's decision. Both roles can run on one
//! link at once: requests and replies are different messages.
//!
//! # Bounds
//!
//! * At most [`TreeSyncConfig::max_in_flight`] requests outstanding, each of at most
//!   [`TreeSyncConfig::max_paths_per_request`] paths (≤ [`MAX_PATHS`]).
//! * Replies hold at most [`TreeSyncConfig::max_reply_bytes`] (but always one node);
//!   unanswered paths are asked again.
//! * Paths wait on a stack (depth first), so the queue holds at most about
//!   `depth × 16` paths per path in flight.
//! * Decoders check every count and length before allocating; keys and values are
//!   limited to [`MAX_KEY_LEN`](crate::sync::merkle::MAX_KEY_LEN) and
//!   [`MAX_VALUE_LEN`](crate::sync::merkle::MAX_VALUE_LEN).
//!
//! # Consistency
//!
//! If the responder's tree changes during a pull, a node can fail to match the hash
//! advertised by its parent. Without an `expected_root` the puller lets the requests
//! in flight finish, then starts again from the root (keeping what it applied, which
//! was verified), at most [`TreeSyncConfig::max_restarts`] times before failing with
//! [`SyncError::Unstable`]. With an `expected_root`, a mismatch is an error at once
//! ([`SyncError::Mismatch`]): the peer no longer holds that root.
//!
//! ```
//! use weft_mesh::sync::merkle::{MemoryStore, MerkleTree};
//! use weft_mesh::sync::tree::{Puller, Responder, SyncStatus, TreeSyncConfig};
//! use weft_mesh::Instant;
//!
//! let mut theirs = MerkleTree::new(MemoryStore::new()).unwrap();
//! let mut ours = MerkleTree::new(MemoryStore::new()).unwrap();
//! for i in 0..100u32 {
//!     theirs.insert(&i.to_be_bytes(), b"v").unwrap();
//!     ours.insert(&i.to_be_bytes(), b"v").unwrap();
//! }
//! theirs.insert(b"new", b"entry").unwrap();
//! ours.remove(&7u32.to_be_bytes());
//!
//! let config = TreeSyncConfig::default();
//! let now = Instant::ZERO;
//! let mut puller = Puller::new(&config, &ours, None);
//! let mut responder = Responder::new(&config);
//! while let Some(request) = puller.poll_transmit(now) {
//!     let reply = responder.handle_bytes(&theirs, &request).unwrap();
//!     puller.handle_bytes(now, &mut ours, &reply).unwrap();
//! }
//! assert!(matches!(puller.status(), SyncStatus::Done { converged: true, .. }));
//! assert_eq!(ours.root(), theirs.root());
//! ```

mod wire;

#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::Bytes;

pub use wire::{
    node_len, path_len, DecodeError, GetNodes, Nodes, TreeSyncMessage, MAX_PATHS,
    MESSAGE_HEADER_LEN,
};

use crate::frame::MAX_PAYLOAD_LEN;
use crate::sync::merkle::{
    key_hash, EntryError, Hash, KvStore, MerkleTree, Path, TreeNode, EMPTY, FANOUT,
};
use crate::Instant;

/// Bounds and timing of a tree sync, for both roles.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TreeSyncConfig {
    /// Puller: most requests outstanding at once.
    pub max_in_flight: usize,
    /// Puller: most paths per request (at most [`MAX_PATHS`]).
    pub max_paths_per_request: usize,
    /// Responder: most encoded bytes per reply (one node is always sent, however large;
    /// capped at the largest frame payload).
    pub max_reply_bytes: usize,
    /// Puller: a request unanswered this long fails the pull ([`SyncError::Timeout`]).
    pub request_timeout: Duration,
    /// Puller: how often a pull starts again from the root after the responder's tree
    /// changed under it, before failing with [`SyncError::Unstable`].
    pub max_restarts: u32,
}

impl Default for TreeSyncConfig {
    /// 4 requests of 64 paths in flight, replies of 256 KiB, 30 s per request, 3 restarts.
    fn default() -> Self {
        TreeSyncConfig {
            max_in_flight: 4,
            max_paths_per_request: 64,
            max_reply_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
            max_restarts: 3,
        }
    }
}

/// What a sync moved and did; every field only grows.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SyncStats {
    /// Encoded TreeSync payload bytes sent (requests for a puller, replies for a responder).
    pub bytes_sent: u64,
    /// Encoded TreeSync payload bytes received.
    pub bytes_received: u64,
    /// Requests sent (puller) or answered (responder).
    pub requests: u64,
    /// Nodes received (puller) or sent (responder).
    pub nodes: u64,
    /// Of those, leaves.
    pub leaves: u64,
    /// Puller: entries written locally (added or changed).
    pub keys_set: u64,
    /// Puller: entries removed locally.
    pub keys_removed: u64,
    /// Puller: times the pull started again from the root.
    pub restarts: u32,
}

/// Why a pull failed. The entries applied before the failure stay (each was verified);
/// the puller does nothing more, and a new one can be started.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SyncError {
    /// The peer sent a payload that does not decode.
    Decode(DecodeError),
    /// The peer sent a request where a reply was expected (route requests to a [`Responder`]).
    Unexpected,
    /// A reply to no request in flight.
    UnknownRequest(u32),
    /// A reply with more nodes than asked, or paths other than those asked, in order.
    WrongPath,
    /// A node does not hash to what was expected while an `expected_root` was given.
    Mismatch,
    /// A leaf whose key does not lie under its path.
    Misplaced,
    /// The responder's tree kept changing: [`TreeSyncConfig::max_restarts`] restarts used.
    Unstable,
    /// A request went unanswered for [`TreeSyncConfig::request_timeout`].
    Timeout,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Decode(e) => write!(f, "malformed tree sync message: {e}"),
            SyncError::Unexpected => f.write_str("tree sync request where a reply was expected"),
            SyncError::UnknownRequest(id) => write!(f, "tree sync reply to unknown request {id}"),
            SyncError::WrongPath => f.write_str("tree sync reply does not match its request"),
            SyncError::Mismatch => f.write_str("tree node does not match the expected hash"),
            SyncError::Misplaced => f.write_str("tree leaf outside its path"),
            SyncError::Unstable => f.write_str("remote tree kept changing during sync"),
            SyncError::Timeout => f.write_str("tree sync request timed out"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SyncError {}

impl From<DecodeError> for SyncError {
    fn from(e: DecodeError) -> Self {
        SyncError::Decode(e)
    }
}

/// Where a [`Puller`] stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SyncStatus {
    /// Requests remain to be sent or answered.
    Running,
    /// Every differing subtree was pulled.
    Done {
        /// The responder's root that was mirrored.
        remote_root: Hash,
        /// Whether the local root equals it now (false if the local tree was written
        /// during the pull, or the responder's changed in a way no node showed).
        converged: bool,
    },
    /// The pull stopped.
    Failed(SyncError),
}

/// A subtree to ask for, and the hash the responder advertised for it (`None` for the
/// root when no expected root was given).
#[derive(Clone, Copy, Debug)]
struct Pending {
    path: Path,
    expected: Option<Hash>,
}

#[derive(Clone, Debug)]
struct InFlight {
    sent: Instant,
    items: Vec<Pending>,
}

/// The pulling side of a tree sync, for one peer; see the [module](self) docs.
///
/// Sans-IO: [`Puller::poll_transmit`] gives the requests to send, replies go to
/// [`Puller::handle_bytes`] with the local tree (which the puller does not hold), and
/// [`Puller::poll_timeout`] / [`Puller::handle_timeout`] bound how long a request waits.
#[derive(Clone, Debug)]
pub struct Puller {
    config: TreeSyncConfig,
    expected_root: Option<Hash>,
    target: Option<Hash>,
    pending: Vec<Pending>,
    in_flight: BTreeMap<u32, InFlight>,
    next_id: u32,
    stale: bool,
    status: SyncStatus,
    stats: SyncStats,
}

impl Puller {
    /// Start mirroring a peer's tree into `tree`. With `expected_root` (the peer's root
    /// from a digest, say) every node must lead to it, and the pull is done at once if
    /// `tree` already has that root.
    pub fn new<S: KvStore>(
        config: &TreeSyncConfig,
        tree: &MerkleTree<S>,
        expected_root: Option<Hash>,
    ) -> Self {
        let mut config = config.clone();
        config.max_in_flight = config.max_in_flight.max(1);
        config.max_paths_per_request = config.max_paths_per_request.clamp(1, MAX_PATHS);
        let mut puller = Puller {
            config,
            expected_root,
            target: expected_root,
            pending: alloc::vec![Pending {
                path: Path::ROOT,
                expected: expected_root,
            }],
            in_flight: BTreeMap::new(),
            next_id: 0,
            stale: false,
            status: SyncStatus::Running,
            stats: SyncStats::default(),
        };
        if let Some(root) = expected_root.filter(|r| *r == tree.root()) {
            puller.pending.clear();
            puller.status = SyncStatus::Done {
                remote_root: root,
                converged: true,
            };
        }
        puller
    }

    /// Where the pull stands.
    pub fn status(&self) -> SyncStatus {
        self.status
    }

    /// What it moved so far.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// The next request to send, if the pull is running, a path waits and fewer than
    /// [`TreeSyncConfig::max_in_flight`] requests are outstanding. Call until `None`
    /// after every input.
    pub fn poll_request(&mut self, now: Instant) -> Option<GetNodes> {
        if self.status != SyncStatus::Running
            || self.stale
            || self.pending.is_empty()
            || self.in_flight.len() >= self.config.max_in_flight
        {
            return None;
        }
        let n = self.pending.len().min(self.config.max_paths_per_request);
        let items = self.pending.split_off(self.pending.len() - n);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let request = GetNodes {
            id,
            paths: items.iter().map(|p| p.path).collect(),
        };
        self.in_flight.insert(id, InFlight { sent: now, items });
        self.stats.requests += 1;
        self.stats.bytes_sent +=
            MESSAGE_HEADER_LEN as u64 + request.paths.iter().map(path_len).sum::<usize>() as u64;
        Some(request)
    }

    /// [`Puller::poll_request`], encoded as a TreeSync payload.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.poll_request(now)
            .map(|r| TreeSyncMessage::GetNodes(r).encode())
    }

    /// A TreeSync payload from the peer. A malformed one or a request fails the pull.
    pub fn handle_bytes<S: KvStore>(
        &mut self,
        now: Instant,
        tree: &mut MerkleTree<S>,
        bytes: &[u8],
    ) -> Result<(), SyncError> {
        if self.status != SyncStatus::Running {
            return Ok(());
        }
        match TreeSyncMessage::decode(bytes) {
            Ok(TreeSyncMessage::Nodes(nodes)) => self.handle_nodes(now, tree, nodes),
            Ok(TreeSyncMessage::GetNodes(_)) => self.fail(SyncError::Unexpected),
            Err(e) => self.fail(SyncError::Decode(e)),
        }
    }

    /// A reply from the peer: verify each node, apply it to `tree`, queue the differing
    /// children. A reply that arrives after the pull ended is ignored.
    pub fn handle_nodes<S: KvStore>(
        &mut self,
        _now: Instant,
        tree: &mut MerkleTree<S>,
        reply: Nodes,
    ) -> Result<(), SyncError> {
        if self.status != SyncStatus::Running {
            return Ok(());
        }
        self.stats.bytes_received += (MESSAGE_HEADER_LEN
            + reply
                .nodes
                .iter()
                .map(|(p, n)| path_len(p) + node_len(n))
                .sum::<usize>()) as u64;
        let Some(request) = self.in_flight.remove(&reply.id) else {
            return self.fail(SyncError::UnknownRequest(reply.id));
        };
        if reply.nodes.is_empty() || reply.nodes.len() > request.items.len() {
            return self.fail(SyncError::WrongPath);
        }
        let answered = reply.nodes.len();
        for ((path, node), item) in reply.nodes.into_iter().zip(&request.items) {
            if path != item.path {
                return self.fail(SyncError::WrongPath);
            }
            self.apply(tree, item, node)?;
        }
        // Unanswered paths (the reply hit its byte budget) are asked again.
        self.pending.extend(request.items[answered..].iter().rev());
        self.settle(tree)
    }

    /// The earliest instant a request times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.status != SyncStatus::Running {
            return None;
        }
        self.in_flight
            .values()
            .map(|r| r.sent + self.config.request_timeout)
            .min()
    }

    /// Fail the pull if a request has waited [`TreeSyncConfig::request_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            let _ = self.fail(SyncError::Timeout);
        }
    }

    fn fail(&mut self, error: SyncError) -> Result<(), SyncError> {
        self.status = SyncStatus::Failed(error);
        self.pending.clear();
        self.in_flight.clear();
        Err(error)
    }

    fn apply<S: KvStore>(
        &mut self,
        tree: &mut MerkleTree<S>,
        item: &Pending,
        node: TreeNode,
    ) -> Result<(), SyncError> {
        let hash = node.hash();
        match item.expected {
            None => self.target = Some(hash),
            Some(expected) if expected != hash => {
                if self.expected_root.is_some() {
                    return self.fail(SyncError::Mismatch);
                }
                // The responder's tree changed: start again once the replies are in.
                self.stale = true;
                return Ok(());
            }
            Some(_) => {}
        }
        self.stats.nodes += 1;
        let path = item.path;
        match node {
            TreeNode::Empty => {
                self.stats.keys_removed += tree.remove_prefix(&path) as u64;
            }
            TreeNode::Leaf { key, value } => {
                self.stats.leaves += 1;
                if !path.contains(&key_hash(&key)) {
                    return self.fail(SyncError::Misplaced);
                }
                for other in tree.keys_under(&path) {
                    if other != key && tree.remove(&other) {
                        self.stats.keys_removed += 1;
                    }
                }
                match tree.insert(&key, &value) {
                    Ok(changed) => self.stats.keys_set += u64::from(changed),
                    Err(EntryError::KeyTooLarge) => {
                        return self.fail(SyncError::Decode(DecodeError::KeyTooLarge))
                    }
                    Err(_) => return self.fail(SyncError::Decode(DecodeError::ValueTooLarge)),
                }
            }
            TreeNode::Inner { .. } => {
                let Some(theirs) = node.child_hashes() else {
                    return self.fail(SyncError::Decode(DecodeError::Inner));
                };
                for (i, their) in theirs.iter().enumerate().take(FANOUT) {
                    let Some(child) = path.child(i) else {
                        return self.fail(SyncError::Decode(DecodeError::Inner));
                    };
                    if *their == tree.subtree_hash(&child) {
                        continue;
                    }
                    if *their == EMPTY {
                        self.stats.keys_removed += tree.remove_prefix(&child) as u64;
                    } else {
                        self.pending.push(Pending {
                            path: child,
                            expected: Some(*their),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Restart after a mismatch once nothing is in flight, or finish.
    fn settle<S: KvStore>(&mut self, tree: &MerkleTree<S>) -> Result<(), SyncError> {
        if !self.in_flight.is_empty() {
            return Ok(());
        }
        if self.stale {
            if self.stats.restarts >= self.config.max_restarts {
                return self.fail(SyncError::Unstable);
            }
            self.stats.restarts += 1;
            self.stale = false;
            self.target = None;
            self.pending.clear();
            self.pending.push(Pending {
                path: Path::ROOT,
                expected: None,
            });
        } else if self.pending.is_empty() {
            let remote_root = self.target.unwrap_or(EMPTY);
            self.status = SyncStatus::Done {
                remote_root,
                converged: tree.root() == remote_root,
            };
        }
        Ok(())
    }
}

/// The answering side of a tree sync: stateless apart from its counters, so one serves
/// any number of pullers. Each request costs at most [`MAX_PATHS`] walks from the root
/// and one reply of at most [`TreeSyncConfig::max_reply_bytes`].
#[derive(Clone, Debug)]
pub struct Responder {
    max_reply_bytes: usize,
    stats: SyncStats,
}

impl Responder {
    /// A responder with the reply budget of `config`.
    pub fn new(config: &TreeSyncConfig) -> Self {
        Responder {
            max_reply_bytes: config.max_reply_bytes.min(MAX_PAYLOAD_LEN),
            stats: SyncStats::default(),
        }
    }

    /// What it served so far.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// The reply to `request` from `tree`: the requested nodes in order, as many as fit
    /// the reply budget, at least one.
    pub fn answer<S: KvStore>(&mut self, tree: &MerkleTree<S>, request: &GetNodes) -> Nodes {
        self.stats.requests += 1;
        self.stats.bytes_received += MESSAGE_HEADER_LEN as u64
            + request
                .paths
                .iter()
                .take(MAX_PATHS)
                .map(path_len)
                .sum::<usize>() as u64;
        let mut size = MESSAGE_HEADER_LEN;
        let mut nodes = Vec::new();
        for path in request.paths.iter().take(MAX_PATHS) {
            let node = tree.node(path);
            let len = path_len(path) + node_len(&node);
            if !nodes.is_empty() && size + len > self.max_reply_bytes {
                break;
            }
            size += len;
            self.stats.nodes += 1;
            self.stats.leaves += u64::from(matches!(node, TreeNode::Leaf { .. }));
            nodes.push((*path, node));
        }
        self.stats.bytes_sent += size as u64;
        Nodes {
            id: request.id,
            nodes,
        }
    }

    /// A TreeSync payload from a puller, answered with an encoded reply. A malformed
    /// payload or a reply (route those to a [`Puller`]) is an error and answered with nothing.
    pub fn handle_bytes<S: KvStore>(
        &mut self,
        tree: &MerkleTree<S>,
        bytes: &[u8],
    ) -> Result<Bytes, SyncError> {
        match TreeSyncMessage::decode(bytes)? {
            TreeSyncMessage::GetNodes(request) => {
                Ok(TreeSyncMessage::Nodes(self.answer(tree, &request)).encode())
            }
            TreeSyncMessage::Nodes(_) => Err(SyncError::Unexpected),
        }
    }
}
