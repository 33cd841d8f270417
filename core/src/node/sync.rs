//! Replication through the node (PROTOCOL.md §19): the application plugs in a chain
//! ([`Node::set_chain_store`]) and a tree ([`Node::set_tree_store`]); the node keeps them
//! in step with its peers' using chain sync (ChainSync 0x05) and tree sync (TreeSync
//! 0x06), and reports what happened as [`SyncEvent`]s.
//!
//! * **Negotiation.** A node with a chain sets [`STREAM_CHAIN`] in its hello's
//!   `supported_sync_streams`, one with a tree [`STREAM_TREE`]; a stream runs between two
//!   nodes only when both set its bit. The hello's `chain_seq` is the chain's head.
//! * **What starts a sync.** After a link comes up, and then with anti-entropy, the
//!   SyncDigest (0x0A) carries the chain head and the tree state ([`TreeState`]) next to
//!   the registries. After a local change (and after a pull that changed something) the
//!   node sends its state to every peer sharing the stream, at most once per
//!   [`SyncConfig::advertise_delay`].
//! * **Chain.** One pull at a time, from the peer whose head is furthest ahead among
//!   those at or past ours (an equal head with another hash is a fork to show; an equal
//!   `chain_seq` from a hello is checked once). Entries appended survive a dropped link;
//!   the next pull starts from our head. A fork stops pulls from that peer for good (the
//!   evidence goes to the application); a failure waits for the peer's next head. A peer
//!   behind whose head is not on our chain is asked for that entry, so the side ahead
//!   reports the fork too.
//! * **Tree.** The tree with the higher version wins: a node mirrors a peer whose
//!   version is higher and whose root differs, one pull at a time, checking every node
//!   against the advertised root, and then takes that version. Equal versions with
//!   different roots are a divergence the node does not settle on its own: it reports
//!   [`SyncEvent::TreeDiverged`] and the application may [`Node::pull_tree`]. Writes
//!   applied as one batch ([`Node::write_tree`]) are one change with one version.
//! * **Priority.** Sync frames wait in the bulk lane: heartbeats, pings and messages
//!   always leave first.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::Bytes;

use super::{ConnId, Node, NodeEvent};
use crate::frame::FrameType;
use crate::registry::SyncDigest;
use crate::sync::chain::{
    AppendError, ChainEntry, ChainHead, ChainPuller, ChainResponder, ChainStore, ChainSyncConfig,
    ChainSyncError, ChainSyncMessage, ChainSyncStatus, EntryError, Fork,
};
use crate::sync::merkle::{self, KvStore, MerkleTree};
use crate::sync::tree::{
    Puller, Responder, SyncError, SyncStatus, TreeSyncConfig, TreeSyncMessage,
};
use crate::sync::{TreeState, STREAM_CHAIN, STREAM_TREE};
use crate::{Instant, NodeId};

/// The application's chain, as the node holds it.
pub type BoxedChain = Box<dyn ChainStore + Send>;
/// The application's tree, as the node holds it.
pub type BoxedTree = MerkleTree<Box<dyn KvStore + Send>>;

/// Peers whose chain forked from ours, remembered (oldest forgotten first).
const MAX_FORKED: usize = 1024;

/// Settings of replication.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SyncConfig {
    /// Chain pulls and answers.
    pub chain: ChainSyncConfig,
    /// Tree pulls and answers.
    pub tree: TreeSyncConfig,
    /// After a change, the node tells its peers its new state this much later, so that a
    /// burst of writes costs one advertisement.
    pub advertise_delay: Duration,
}

impl Default for SyncConfig {
    /// The chain and tree sync defaults; advertisements 50 ms after a change.
    fn default() -> Self {
        SyncConfig {
            chain: ChainSyncConfig::default(),
            tree: TreeSyncConfig::default(),
            advertise_delay: Duration::from_millis(50),
        }
    }
}

/// What replication did, for the application. Carried by [`NodeEvent::Sync`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SyncEvent {
    /// Entries pulled from `peer` were appended to our chain (one event per reply).
    ChainProgress {
        /// Where they came from.
        peer: NodeId,
        /// Our head now.
        head: ChainHead,
    },
    /// Our chain caught up with `peer`'s (as far as it was known).
    ChainSynced {
        /// The peer.
        peer: NodeId,
        /// Our head.
        head: ChainHead,
        /// Entries this pull appended.
        appended: u64,
    },
    /// `peer`'s chain forks from ours: nothing more is pulled from it.
    ChainForked {
        /// The peer.
        peer: NodeId,
        /// Two entries that cannot belong to one chain ([`Fork::is_valid`]).
        fork: Fork,
    },
    /// A chain pull stopped; it starts again at the peer's next advertised head.
    ChainFailed {
        /// The peer.
        peer: NodeId,
        /// Why.
        error: ChainSyncError,
    },
    /// Our tree now mirrors `peer`'s.
    TreeSynced {
        /// The peer.
        peer: NodeId,
        /// Our tree's state (the peer's version and root).
        state: TreeState,
        /// TreeSync payload bytes received by this pull.
        bytes_received: u64,
        /// Leaves received.
        leaves: u64,
    },
    /// A tree pull stopped; it starts again at the peer's next advertised state.
    TreeFailed {
        /// The peer.
        peer: NodeId,
        /// Why.
        error: SyncError,
    },
    /// `peer`'s tree has our version and another root: neither is pulled. Reported once
    /// per root of the peer; [`Node::pull_tree`] mirrors it if the application decides so.
    TreeDiverged {
        /// The peer.
        peer: NodeId,
        /// Our tree.
        ours: TreeState,
        /// The peer's tree.
        theirs: TreeState,
    },
}

/// Why [`Node::append_chain`] refused an entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ChainWriteError {
    /// No chain store is plugged in.
    NoChain,
    /// The payload is too large, or the chain is full.
    Entry(EntryError),
    /// The store refused the entry.
    Refused(AppendError),
}

impl fmt::Display for ChainWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainWriteError::NoChain => f.write_str("no chain store"),
            ChainWriteError::Entry(e) => write!(f, "invalid entry: {e}"),
            ChainWriteError::Refused(e) => write!(f, "the store refused the entry: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ChainWriteError {}

/// Why a tree write through the node was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TreeWriteError {
    /// No tree store is plugged in.
    NoTree,
    /// The key or value is too large.
    Entry(merkle::EntryError),
}

impl fmt::Display for TreeWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeWriteError::NoTree => f.write_str("no tree store"),
            TreeWriteError::Entry(e) => write!(f, "invalid entry: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TreeWriteError {}

/// One write of a [`Node::write_tree`] batch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TreeWrite<'a> {
    /// Store `value` under `key`.
    Insert {
        /// The key (at most [`merkle::MAX_KEY_LEN`] bytes).
        key: &'a [u8],
        /// The value (at most [`merkle::MAX_VALUE_LEN`] bytes).
        value: &'a [u8],
    },
    /// Remove `key`.
    Remove {
        /// The key.
        key: &'a [u8],
    },
}

impl<'a> TreeWrite<'a> {
    /// Store `value` under `key`.
    pub fn insert(key: &'a [u8], value: &'a [u8]) -> Self {
        TreeWrite::Insert { key, value }
    }

    /// Remove `key`.
    pub fn remove(key: &'a [u8]) -> Self {
        TreeWrite::Remove { key }
    }
}

/// What we know of a connected peer's replicated state.
#[derive(Clone, Copy, Debug)]
struct PeerState {
    conn: ConnId,
    streams: u64,
    /// Its chain head: the sequence number, and the hash if a digest told it.
    chain: Option<(u64, Option<[u8; 32]>)>,
    /// A pull from it ended at this head of ours (nothing to check until one moves).
    checked: Option<ChainHead>,
    tree: Option<TreeState>,
    /// The root of its tree we last reported as diverged.
    diverged: Option<[u8; 32]>,
}

struct ChainSide {
    store: BoxedChain,
    responder: ChainResponder,
    pull: Option<(NodeId, ConnId, ChainPuller)>,
    forked: VecDeque<NodeId>,
}

struct TreeSide {
    tree: BoxedTree,
    version: u64,
    responder: Responder,
    /// The pull running: from whom, over which link, and the state it mirrors.
    pull: Option<(NodeId, ConnId, Puller, TreeState)>,
}

/// The node's replication state.
#[derive(Default)]
pub(super) struct Replication {
    chain: Option<ChainSide>,
    tree: Option<TreeSide>,
    peers: BTreeMap<NodeId, PeerState>,
    advertise_at: Option<Instant>,
}

impl Replication {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let chain = self.chain.as_ref().and_then(|c| c.pull.as_ref());
        let tree = self.tree.as_ref().and_then(|t| t.pull.as_ref());
        [
            self.advertise_at,
            chain.and_then(|(_, _, p)| p.poll_timeout()),
            tree.and_then(|(_, _, p, _)| p.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn streams(&self) -> u64 {
        (if self.chain.is_some() {
            STREAM_CHAIN
        } else {
            0
        }) | (if self.tree.is_some() { STREAM_TREE } else { 0 })
    }

    fn tree_state(&self) -> Option<TreeState> {
        self.tree.as_ref().map(|t| TreeState {
            version: t.version,
            root: t.tree.root(),
        })
    }
}

impl Node {
    /// Plug in the application's chain: the node serves it to peers and extends it from
    /// theirs (see [`SyncEvent`] and PROTOCOL.md §19). Plug stores in before the first
    /// input: links that came up earlier do not run the stream.
    pub fn set_chain_store(&mut self, store: impl ChainStore + Send + 'static) {
        let store: BoxedChain = Box::new(store);
        let head = store.head();
        self.replication.chain = Some(ChainSide {
            store,
            responder: ChainResponder::new(&self.config.sync.chain),
            pull: None,
            forked: VecDeque::new(),
        });
        let hello = &mut self.config.link.handshake;
        hello.chain_seq = head.seq;
        hello.supported_sync_streams = self.replication.streams();
    }

    /// Plug in the application's key/value tree at `version` (see [`TreeState`]); fails
    /// if an entry is too large for a tree. Like [`Node::set_chain_store`], before the
    /// first input.
    pub fn set_tree_store(
        &mut self,
        store: impl KvStore + Send + 'static,
        version: u64,
    ) -> Result<(), merkle::EntryError> {
        let store: Box<dyn KvStore + Send> = Box::new(store);
        self.replication.tree = Some(TreeSide {
            tree: MerkleTree::new(store)?,
            version,
            responder: Responder::new(&self.config.sync.tree),
            pull: None,
        });
        self.config.link.handshake.supported_sync_streams = self.replication.streams();
        Ok(())
    }

    /// The chain, if one is plugged in.
    pub fn chain(&self) -> Option<&dyn ChainStore> {
        self.replication.chain.as_ref().map(|c| &*c.store as _)
    }

    /// The tree, if one is plugged in (write through [`Node::tree_insert`] and
    /// [`Node::tree_remove`], so that peers hear of it).
    pub fn tree(&self) -> Option<&BoxedTree> {
        self.replication.tree.as_ref().map(|t| &t.tree)
    }

    /// The tree's version and root, if one is plugged in.
    pub fn tree_state(&self) -> Option<TreeState> {
        self.replication.tree_state()
    }

    /// Append an entry with `payload` to our chain; peers sharing the stream hear of
    /// the new head and pull it.
    pub fn append_chain(
        &mut self,
        now: Instant,
        payload: impl Into<Bytes>,
    ) -> Result<ChainHead, ChainWriteError> {
        self.advance(now);
        let chain = self
            .replication
            .chain
            .as_mut()
            .ok_or(ChainWriteError::NoChain)?;
        let entry =
            ChainEntry::after(chain.store.head(), payload).map_err(ChainWriteError::Entry)?;
        let head = entry.head();
        chain
            .store
            .append(entry)
            .map_err(ChainWriteError::Refused)?;
        self.sync_changed();
        Ok(head)
    }

    /// Apply `writes` to our tree as one change, checking every key and value before
    /// writing any: afterwards the version is `version` if given, else one more if
    /// anything changed. Peers with a lower version and another root pull the result
    /// (so a batch, unlike a series of single writes, is never seen half done once
    /// advertised). Returns how many writes changed the tree.
    ///
    /// ```
    /// use weft_mesh::node::{Node, NodeConfig, TreeWrite};
    /// use weft_mesh::sync::merkle::MemoryStore;
    /// use weft_mesh::{Identity, Instant, Rng};
    ///
    /// let mut rng = Rng::from_seed([1; 32]);
    /// let id = Identity::generate(&mut rng).into();
    /// let mut node = Node::new(id, NodeConfig::new([7; 32]), rng.fork());
    /// node.set_tree_store(MemoryStore::new(), 0).unwrap();
    /// let writes = [TreeWrite::insert(b"alice", b"10"), TreeWrite::insert(b"bob", b"5")];
    /// assert_eq!(node.write_tree(Instant::ZERO, writes, Some(42)), Ok(2));
    /// assert_eq!(node.tree_state().unwrap().version, 42);
    /// ```
    pub fn write_tree<'a>(
        &mut self,
        now: Instant,
        writes: impl IntoIterator<Item = TreeWrite<'a>>,
        version: Option<u64>,
    ) -> Result<usize, TreeWriteError> {
        self.advance(now);
        let side = self
            .replication
            .tree
            .as_mut()
            .ok_or(TreeWriteError::NoTree)?;
        let writes: Vec<TreeWrite<'a>> = writes.into_iter().collect();
        for w in &writes {
            if let TreeWrite::Insert { key, value } = w {
                merkle::check_entry(key, value).map_err(TreeWriteError::Entry)?;
            }
        }
        let mut changed = 0;
        for w in writes {
            let hit = match w {
                TreeWrite::Insert { key, value } => side.tree.insert(key, value).unwrap_or(false),
                TreeWrite::Remove { key } => side.tree.remove(key),
            };
            changed += usize::from(hit);
        }
        let next = version.unwrap_or(side.version + u64::from(changed > 0));
        if changed > 0 || next != side.version {
            side.version = next;
            self.sync_changed();
        }
        Ok(changed)
    }

    /// Write `key` = `value` into our tree (one [`Node::write_tree`]): the version grows
    /// by one if the value changed. Returns whether it changed.
    pub fn tree_insert(
        &mut self,
        now: Instant,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, TreeWriteError> {
        Ok(self.write_tree(now, [TreeWrite::insert(key, value)], None)? > 0)
    }

    /// Remove `key` from our tree (one [`Node::write_tree`]): the version grows by one
    /// if it was there. Returns whether it was.
    pub fn tree_remove(&mut self, now: Instant, key: &[u8]) -> Result<bool, TreeWriteError> {
        Ok(self.write_tree(now, [TreeWrite::remove(key)], None)? > 0)
    }

    /// Set our tree's version (say, to the chain entry whose effects it holds).
    pub fn set_tree_version(&mut self, now: Instant, version: u64) -> Result<(), TreeWriteError> {
        self.write_tree(now, [], Some(version)).map(|_| ())
    }

    /// Mirror `peer`'s tree whatever the versions (after [`SyncEvent::TreeDiverged`],
    /// say): false if no tree, no state known from that peer, or a pull is running.
    pub fn pull_tree(&mut self, now: Instant, peer: NodeId) -> bool {
        self.advance(now);
        let Some(theirs) = self.replication.peers.get(&peer).copied() else {
            return false;
        };
        match theirs.tree {
            Some(state) if theirs.streams & STREAM_TREE != 0 => {
                self.start_tree_pull(peer, theirs.conn, state)
            }
            _ => false,
        }
    }

    /// Our chain or tree changed: the next links' hellos carry the head, and peers hear
    /// of it after `advertise_delay`.
    fn sync_changed(&mut self) {
        if let Some(chain) = &self.replication.chain {
            self.config.link.handshake.chain_seq = chain.store.head().seq;
        }
        if self.replication.advertise_at.is_none() {
            self.replication.advertise_at = Some(self.now + self.config.sync.advertise_delay);
        }
    }

    /// The chain and tree sections of a digest for a peer with these streams.
    pub(super) fn sync_sections(&self, digest: &mut SyncDigest, peer: &NodeId) {
        let streams = self.replication.peers.get(peer).map_or(0, |p| p.streams);
        if streams & STREAM_CHAIN != 0 {
            digest.chain = self.replication.chain.as_ref().map(|c| c.store.head());
        }
        if streams & STREAM_TREE != 0 {
            digest.tree = self.replication.tree_state();
        }
    }

    /// A peer came up on `conn`: note the streams and chain head of its hello and start
    /// what the hello already shows (its digest follows).
    pub(super) fn sync_peer_up(&mut self, conn: ConnId, node: NodeId) {
        let Some(hello) = self
            .links
            .get(conn)
            .and_then(|e| e.link.peer())
            .map(|p| p.hello.clone())
        else {
            return;
        };
        let streams = hello.supported_sync_streams & self.replication.streams();
        let state = PeerState {
            conn,
            streams,
            chain: (streams & STREAM_CHAIN != 0).then_some((hello.chain_seq, None)),
            checked: None,
            tree: None,
            diverged: None,
        };
        self.replication.peers.insert(node, state);
        // A pull bound to an older link of this peer would wait for replies in vain.
        self.drop_pulls_of(&node, Some(conn));
        self.next_chain_pull();
    }

    /// A peer's last link closed.
    pub(super) fn sync_peer_down(&mut self, node: &NodeId) {
        self.replication.peers.remove(node);
        self.drop_pulls_of(node, None);
        self.next_chain_pull();
        self.next_tree_pull();
    }

    /// Forget pulls from `node` except one on `keep`.
    fn drop_pulls_of(&mut self, node: &NodeId, keep: Option<ConnId>) {
        let stale = |peer: &NodeId, conn: &ConnId| peer == node && Some(*conn) != keep;
        let r = &mut self.replication;
        if let Some(c) = &mut r.chain {
            if c.pull.as_ref().is_some_and(|(p, conn, _)| stale(p, conn)) {
                c.pull = None;
            }
        }
        if let Some(t) = &mut r.tree {
            if t.pull
                .as_ref()
                .is_some_and(|(p, conn, _, _)| stale(p, conn))
            {
                t.pull = None;
            }
        }
    }

    /// The chain and tree sections of a peer's digest.
    pub(super) fn on_sync_state(
        &mut self,
        conn: ConnId,
        chain: Option<ChainHead>,
        tree: Option<TreeState>,
    ) {
        let Some(node) = self.links.get(conn).and_then(|e| e.peer) else {
            return;
        };
        if let Some(head) = chain {
            self.on_chain_head(node, head);
        }
        if let Some(theirs) = tree {
            self.on_tree_state(node, theirs);
        }
    }

    fn on_chain_head(&mut self, node: NodeId, head: ChainHead) {
        let Some(peer) = self.replication.peers.get_mut(&node) else {
            return;
        };
        if peer.streams & STREAM_CHAIN == 0 {
            return;
        }
        peer.chain = Some((head.seq, Some(head.hash)));
        let Some(chain) = &mut self.replication.chain else {
            return;
        };
        match &mut chain.pull {
            Some((p, _, puller)) if *p == node => {
                puller.handle_head(&chain.store, head);
                self.pump_chain();
            }
            _ => self.next_chain_pull(),
        }
    }

    fn on_tree_state(&mut self, node: NodeId, theirs: TreeState) {
        let Some(ours) = self.replication.tree_state() else {
            return;
        };
        let Some(peer) = self.replication.peers.get_mut(&node) else {
            return;
        };
        if peer.streams & STREAM_TREE == 0 {
            return;
        }
        peer.tree = Some(theirs);
        if theirs.root == ours.root {
            peer.diverged = None;
            if theirs.version > ours.version {
                self.set_version_from_peer(theirs.version);
            }
        } else if theirs.version > ours.version {
            self.next_tree_pull();
        } else if theirs.version == ours.version && peer.diverged != Some(theirs.root) {
            peer.diverged = Some(theirs.root);
            self.events
                .push_back(NodeEvent::Sync(SyncEvent::TreeDiverged {
                    peer: node,
                    ours,
                    theirs,
                }));
        }
    }

    fn set_version_from_peer(&mut self, version: u64) {
        if let Some(side) = self
            .replication
            .tree
            .as_mut()
            .filter(|t| t.version != version)
        {
            side.version = version;
            self.sync_changed();
        }
    }

    /// Start a tree pull if none runs and a peer holds a higher version with another
    /// root (the highest such version).
    fn next_tree_pull(&mut self) {
        let Some(ours) = self.replication.tree_state() else {
            return;
        };
        let candidate = self
            .replication
            .peers
            .iter()
            .filter(|(_, p)| p.streams & STREAM_TREE != 0)
            .filter_map(|(node, p)| Some((p.tree?, *node, p.conn)))
            .filter(|(t, _, _)| t.version > ours.version && t.root != ours.root)
            .max_by_key(|(t, node, _)| (t.version, core::cmp::Reverse(*node)));
        if let Some((theirs, node, conn)) = candidate {
            self.start_tree_pull(node, conn, theirs);
        }
    }

    fn start_tree_pull(&mut self, node: NodeId, conn: ConnId, theirs: TreeState) -> bool {
        let config = &self.config.sync.tree;
        let Some(side) = &mut self.replication.tree else {
            return false;
        };
        if side.pull.is_some() {
            return false;
        }
        let puller = Puller::new(config, &side.tree, Some(theirs.root));
        side.pull = Some((node, conn, puller, theirs));
        self.pump_tree();
        true
    }

    /// Start a chain pull if none runs and a peer is ahead (or level with another hash,
    /// or level and not yet checked): from the one furthest ahead. Otherwise, if a peer
    /// behind advertised a head that is not on our chain, fetch its entry there: the
    /// evidence of the fork (so the side ahead learns of it too).
    fn next_chain_pull(&mut self) {
        let r = &mut self.replication;
        let Some(chain) = &mut r.chain else {
            return;
        };
        if chain.pull.is_some() {
            return;
        }
        let ours = chain.store.head();
        let store = &chain.store;
        let peers = r
            .peers
            .iter()
            .filter(|(node, _)| !chain.forked.contains(node))
            .filter_map(|(node, p)| Some((*node, p, p.chain?)));
        let mut ahead = None;
        let mut behind = None;
        for (node, p, (seq, hash)) in peers {
            let level = seq == ours.seq && seq > 0;
            if seq > ours.seq
                || (level && hash.is_some_and(|h| h != ours.hash))
                || (level && hash.is_none() && p.checked != Some(ours))
            {
                if ahead.is_none_or(|(s, _, _)| seq > s) {
                    ahead = Some((seq, node, p.conn));
                }
            } else if let Some(hash) = hash.filter(|_| seq >= 1 && seq < ours.seq) {
                let off_chain = store.get(seq).is_some_and(|e| *e.hash() != hash);
                if off_chain && behind.is_none() {
                    behind = Some((ChainHead { seq, hash }, node, p.conn));
                }
            }
        }
        let (node, conn, puller) = match (ahead, behind) {
            (Some((seq, node, conn)), _) => (
                node,
                conn,
                ChainPuller::new(&self.config.sync.chain, store, seq),
            ),
            (None, Some((head, node, conn))) => {
                let mut puller = ChainPuller::new(&self.config.sync.chain, store, head.seq);
                puller.handle_head(store, head);
                (node, conn, puller)
            }
            (None, None) => return,
        };
        chain.pull = Some((node, conn, puller));
        self.pump_chain();
    }

    /// Send the chain puller's requests; act on how it stands.
    fn pump_chain(&mut self) {
        let now = self.now;
        let Some(chain) = &mut self.replication.chain else {
            return;
        };
        let Some((peer, conn, puller)) = &mut chain.pull else {
            return;
        };
        let (peer, conn) = (*peer, *conn);
        let mut requests = Vec::new();
        while let Some(bytes) = puller.poll_transmit(now) {
            requests.push(bytes);
        }
        let status = puller.status();
        let appended = puller.stats().appended;
        let event = match status {
            ChainSyncStatus::Running => None,
            ChainSyncStatus::Done { head } => {
                if let Some(p) = self.replication.peers.get_mut(&peer) {
                    p.checked = Some(head);
                }
                Some(SyncEvent::ChainSynced {
                    peer,
                    head,
                    appended,
                })
            }
            ChainSyncStatus::Forked { .. } => {
                let fork = puller.fork().cloned();
                if chain.forked.len() >= MAX_FORKED {
                    chain.forked.pop_front();
                }
                chain.forked.push_back(peer);
                fork.map(|fork| SyncEvent::ChainForked { peer, fork })
            }
            ChainSyncStatus::Failed(error) => {
                // Not tried again before the peer advertises a head past the one this
                // pull knew (one it advertised meanwhile is kept).
                let known = puller.remote_seq();
                if let Some(p) = self.replication.peers.get_mut(&peer) {
                    if p.chain.is_some_and(|(seq, _)| seq <= known) {
                        p.chain = None;
                    }
                }
                Some(SyncEvent::ChainFailed { peer, error })
            }
        };
        for bytes in requests {
            self.send_frame(conn, FrameType::ChainSync, bytes);
        }
        if status != ChainSyncStatus::Running {
            if let Some(chain) = &mut self.replication.chain {
                chain.pull = None;
            }
            self.events.extend(event.map(NodeEvent::Sync));
            self.next_chain_pull();
        }
    }

    /// Send the tree puller's requests; act on how it stands.
    fn pump_tree(&mut self) {
        let now = self.now;
        let Some(side) = &mut self.replication.tree else {
            return;
        };
        let Some((peer, conn, puller, theirs)) = &mut side.pull else {
            return;
        };
        let (peer, conn, theirs) = (*peer, *conn, *theirs);
        let mut requests = Vec::new();
        while let Some(bytes) = puller.poll_transmit(now) {
            requests.push(bytes);
        }
        let status = puller.status();
        let stats = *puller.stats();
        for bytes in requests {
            self.send_frame(conn, FrameType::TreeSync, bytes);
        }
        // Unless the pull mirrored it, the state pulled is not tried again before the
        // peer advertises another (one it advertised meanwhile is kept).
        let forget = |peers: &mut BTreeMap<NodeId, PeerState>| {
            if let Some(p) = peers.get_mut(&peer).filter(|p| p.tree == Some(theirs)) {
                p.tree = None;
            }
        };
        let event = match status {
            SyncStatus::Running => return,
            SyncStatus::Done {
                converged: true, ..
            } => {
                self.set_version_from_peer(theirs.version);
                Some(SyncEvent::TreeSynced {
                    peer,
                    state: theirs,
                    bytes_received: stats.bytes_received,
                    leaves: stats.leaves,
                })
            }
            SyncStatus::Done { .. } => {
                // Our tree moved during the pull.
                forget(&mut self.replication.peers);
                None
            }
            SyncStatus::Failed(error) => {
                forget(&mut self.replication.peers);
                Some(SyncEvent::TreeFailed { peer, error })
            }
        };
        if let Some(side) = &mut self.replication.tree {
            side.pull = None;
        }
        self.events.extend(event.map(NodeEvent::Sync));
        self.next_tree_pull();
    }

    /// A ChainSync frame (0x05) from the peer on `conn`.
    pub(super) fn on_chain_sync(&mut self, conn: ConnId, payload: &[u8]) {
        let Some(node) = self.links.get(conn).and_then(|e| e.peer) else {
            return;
        };
        let now = self.now;
        let message = match ChainSyncMessage::decode(payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed_gossip += 1;
                // A corrupt reply fails the pull from that peer at once.
                if let Some(chain) = self.replication.chain.as_mut() {
                    if let Some((_, _, puller)) = chain
                        .pull
                        .as_mut()
                        .filter(|(p, c, _)| *p == node && *c == conn)
                    {
                        let _ = puller.handle_bytes(now, &mut chain.store, payload);
                        self.pump_chain();
                    }
                }
                return;
            }
        };
        let Some(chain) = &mut self.replication.chain else {
            return;
        };
        match message {
            ChainSyncMessage::GetEntries(request) => {
                let reply = chain.responder.answer(&chain.store, &request);
                let bytes = ChainSyncMessage::Entries(reply).encode();
                self.send_frame(conn, FrameType::ChainSync, bytes);
            }
            ChainSyncMessage::Entries(reply) => {
                let Some((peer, c, puller)) = &mut chain.pull else {
                    return;
                };
                if *peer != node || *c != conn {
                    return;
                }
                let before = puller.stats().appended;
                // An error shows in the status, which `pump_chain` reports.
                let _ = puller.handle_entries(now, &mut chain.store, reply);
                if puller.stats().appended > before {
                    let head = chain.store.head();
                    self.events
                        .push_back(NodeEvent::Sync(SyncEvent::ChainProgress {
                            peer: node,
                            head,
                        }));
                    self.sync_changed();
                }
                self.pump_chain();
            }
            ChainSyncMessage::Head(head) => self.on_chain_head(node, head),
        }
    }

    /// A TreeSync frame (0x06) from the peer on `conn`.
    pub(super) fn on_tree_sync(&mut self, conn: ConnId, payload: &[u8]) {
        let Some(node) = self.links.get(conn).and_then(|e| e.peer) else {
            return;
        };
        let now = self.now;
        let message = match TreeSyncMessage::decode(payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed_gossip += 1;
                // A corrupt reply fails the pull from that peer at once.
                if let Some(side) = self.replication.tree.as_mut() {
                    if let Some((_, _, puller, _)) = side
                        .pull
                        .as_mut()
                        .filter(|(p, c, _, _)| *p == node && *c == conn)
                    {
                        let _ = puller.handle_bytes(now, &mut side.tree, payload);
                        self.pump_tree();
                    }
                }
                return;
            }
        };
        let Some(side) = &mut self.replication.tree else {
            return;
        };
        match message {
            TreeSyncMessage::GetNodes(request) => {
                let reply = side.responder.answer(&side.tree, &request);
                let bytes = TreeSyncMessage::Nodes(reply).encode();
                self.send_frame(conn, FrameType::TreeSync, bytes);
            }
            TreeSyncMessage::Nodes(reply) => {
                let Some((peer, c, puller, _)) = &mut side.pull else {
                    return;
                };
                if *peer != node || *c != conn {
                    return;
                }
                let _ = puller.handle_nodes(now, &mut side.tree, reply);
                self.pump_tree();
            }
        }
    }

    /// Request timeouts of the pulls, and the advertisement of a change.
    pub(super) fn sync_timers(&mut self) {
        let now = self.now;
        if let Some((_, _, puller)) = self
            .replication
            .chain
            .as_mut()
            .and_then(|c| c.pull.as_mut())
        {
            puller.handle_timeout(now);
            self.pump_chain();
        }
        if let Some((_, _, puller, _)) =
            self.replication.tree.as_mut().and_then(|t| t.pull.as_mut())
        {
            puller.handle_timeout(now);
            self.pump_tree();
        }
        if self.replication.advertise_at.is_some_and(|t| now >= t) {
            self.replication.advertise_at = None;
            let targets: Vec<(NodeId, ConnId)> = self
                .replication
                .peers
                .iter()
                .filter(|(_, p)| p.streams != 0)
                .map(|(n, p)| (*n, p.conn))
                .collect();
            for (node, conn) in targets {
                let mut digest = SyncDigest::default();
                self.sync_sections(&mut digest, &node);
                self.send_frame(conn, FrameType::SyncDigest, digest.encode());
            }
        }
    }
}
