//! A Merkle tree over a key/value map: a hexary trie over `SHA-256(key)` whose shape
//! depends only on the set of keys, with every node's hash cached and updated along one
//! path per write, and inclusion and absence proofs.
//!
//! # Shape
//!
//! Keys are placed by their hash `kh = SHA-256(key)`, read as 64 nibbles (4 bits each,
//! the high nibble of each byte first). The subtree at a [`Path`] `p` (a prefix of up to
//! 64 nibbles) holds the entries whose `kh` starts with `p`, and is:
//!
//! * **empty** if it holds no entry;
//! * a **leaf** if it holds exactly one entry;
//! * otherwise an **inner** node with 16 children, child `i` being the subtree at `p‖i`.
//!
//! Both sides of a sync therefore partition the key space identically whatever order
//! their entries were written in, and the hash of the subtree at any path is a function
//! of the entries under it alone ([`MerkleTree::subtree_hash`]). Depth is about
//! `log16(n) + 1` (5 to 6 levels for 100,000 keys) and never more than 64, since two
//! different key hashes differ within 64 nibbles.
//!
//! # Hashes
//!
//! ```text
//! empty  = 32 zero bytes                                   (no known preimage)
//! leaf   = SHA-256(0x00 ‖ SHA-256(key) ‖ SHA-256(value))
//! inner  = SHA-256(0x01 ‖ u16 BE bitmap ‖ hash of each non-empty child, in child order)
//! ```
//! Bit `i` of the bitmap (value `1 << i`) is set when child `i` is non-empty; an inner
//! node has at least two entries below it, so its bitmap is never zero. The prefix byte
//! separates the domains: a leaf's preimage can never be read as an inner node's or the
//! other way round. The root of an empty tree is `empty`.
//!
//! # Storage
//!
//! Values live in the application's store ([`KvStore`]); the tree keeps an index in
//! memory (per entry its key, key hash, value hash and leaf hash, about 130 bytes plus
//! the key, and one node of 16 slots per inner node). Writes go through the tree
//! ([`MerkleTree::insert`], [`MerkleTree::remove`]) so that index and store agree.
//! [`MemoryStore`] is an in-memory store for tests and demos.

mod proof;
mod store;

#[cfg(test)]
mod tests;

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest as _, Sha256};

pub use proof::{Proof, ProofEnd, ProofError, ProofStep, MAX_PROOF_LEN};
pub use store::{KvStore, MemoryStore};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of an empty subtree, and the root of an empty tree.
pub const EMPTY: Hash = [0; 32];
/// Children per inner node.
pub const FANOUT: usize = 16;
/// The deepest a path goes: the 64 nibbles of a SHA-256 digest.
pub const MAX_DEPTH: usize = 64;
/// Longest key the tree accepts (so that every entry can be synced).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value the tree accepts (so that every entry can be synced).
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Prefix of a leaf hash's preimage.
pub const LEAF_PREFIX: u8 = 0x00;
/// Prefix of an inner node hash's preimage.
pub const INNER_PREFIX: u8 = 0x01;

/// `SHA-256(key)`: where a key sits in the tree.
pub fn key_hash(key: &[u8]) -> Hash {
    Sha256::digest(key).into()
}

/// `SHA-256(value)`.
pub fn value_hash(value: &[u8]) -> Hash {
    Sha256::digest(value).into()
}

/// `SHA-256(0x00 ‖ key_hash ‖ value_hash)`: the hash of a one-entry subtree.
pub fn leaf_hash(key_hash: &Hash, value_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(key_hash);
    h.update(value_hash);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ bitmap ‖ children)`: the hash of an inner node whose non-empty
/// children (in child order, one per set bit of `bitmap`) have these hashes.
pub fn inner_hash<'a>(bitmap: u16, children: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut h = Sha256::new();
    h.update([INNER_PREFIX]);
    h.update(bitmap.to_be_bytes());
    for child in children {
        h.update(child);
    }
    h.finalize().into()
}

/// Nibble `depth` (0..64) of a key hash: the child taken at that depth.
pub fn nibble(key_hash: &Hash, depth: usize) -> usize {
    let byte = key_hash[depth / 2];
    usize::from(if depth % 2 == 0 {
        byte >> 4
    } else {
        byte & 0x0f
    })
}

/// Why an entry was refused; the tree and the store are unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EntryError {
    /// The key is longer than [`MAX_KEY_LEN`].
    KeyTooLarge,
    /// The value is larger than [`MAX_VALUE_LEN`].
    ValueTooLarge,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryError::KeyTooLarge => "key longer than 1024 bytes",
            EntryError::ValueTooLarge => "value larger than 1 MiB",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EntryError {}

/// Whether `key` and `value` fit a tree: what [`MerkleTree::insert`] checks first.
pub fn check_entry(key: &[u8], value: &[u8]) -> Result<(), EntryError> {
    if key.len() > MAX_KEY_LEN {
        return Err(EntryError::KeyTooLarge);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(EntryError::ValueTooLarge);
    }
    Ok(())
}

/// A prefix of a key hash, 0 to [`MAX_DEPTH`] nibbles: names a subtree.
///
/// Wire: `u8 depth, ⌈depth / 2⌉ bytes`, nibbles high first; when the depth is odd the
/// low nibble of the last byte is zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path {
    depth: u8,
    /// Nibbles past `depth` are zero, so that equal paths compare equal.
    bytes: [u8; 32],
}

impl Path {
    /// The empty prefix: the whole tree.
    pub const ROOT: Path = Path {
        depth: 0,
        bytes: [0; 32],
    };

    /// The first `depth` nibbles (at most [`MAX_DEPTH`]) of a key hash.
    pub fn of_key_hash(key_hash: &Hash, depth: usize) -> Path {
        let depth = depth.min(MAX_DEPTH);
        let mut bytes = [0u8; 32];
        bytes[..depth / 2].copy_from_slice(&key_hash[..depth / 2]);
        if depth % 2 == 1 {
            bytes[depth / 2] = key_hash[depth / 2] & 0xf0;
        }
        Path {
            depth: depth as u8,
            bytes,
        }
    }

    /// Number of nibbles.
    pub fn depth(&self) -> usize {
        usize::from(self.depth)
    }

    /// Nibble `i`, for `i < depth`.
    pub fn nibble(&self, i: usize) -> usize {
        nibble(&self.bytes, i)
    }

    /// The path of child `nibble` (0..16), or `None` at [`MAX_DEPTH`].
    pub fn child(&self, nibble: usize) -> Option<Path> {
        let d = self.depth();
        if d >= MAX_DEPTH || nibble >= FANOUT {
            return None;
        }
        let mut bytes = self.bytes;
        let n = nibble as u8;
        bytes[d / 2] |= if d % 2 == 0 { n << 4 } else { n };
        Some(Path {
            depth: self.depth + 1,
            bytes,
        })
    }

    /// Whether `key_hash` starts with this prefix.
    pub fn contains(&self, key_hash: &Hash) -> bool {
        *self == Path::of_key_hash(key_hash, self.depth())
    }

    /// The packed nibbles: `⌈depth / 2⌉` bytes.
    pub fn packed(&self) -> &[u8] {
        &self.bytes[..self.depth().div_ceil(2)]
    }

    /// The path of `depth` nibbles packed in `packed` (`⌈depth / 2⌉` bytes); `None` if
    /// the depth exceeds [`MAX_DEPTH`], the length is wrong or the padding nibble is not zero.
    pub fn from_packed(depth: usize, packed: &[u8]) -> Option<Path> {
        if depth > MAX_DEPTH || packed.len() != depth.div_ceil(2) {
            return None;
        }
        if depth % 2 == 1 && packed[depth / 2] & 0x0f != 0 {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes[..packed.len()].copy_from_slice(packed);
        Some(Path {
            depth: depth as u8,
            bytes,
        })
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({self})")
    }
}

impl fmt::Display for Path {
    /// The nibbles in hex, `/` for the root.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.depth == 0 {
            return f.write_str("/");
        }
        for i in 0..self.depth() {
            write!(f, "{:x}", self.nibble(i))?;
        }
        Ok(())
    }
}

/// One node of a tree, as a sync peer sees it: what [`MerkleTree::node`] returns and
/// what TreeSync replies carry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TreeNode {
    /// No entry below.
    Empty,
    /// Exactly one entry below.
    Leaf {
        /// The key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// Two or more entries below.
    Inner {
        /// Bit `i` set when child `i` is non-empty; never zero.
        bitmap: u16,
        /// The hashes of the non-empty children, in child order (one per set bit).
        children: Vec<Hash>,
    },
}

impl TreeNode {
    /// Its hash ([`EMPTY`], [`leaf_hash`] or [`inner_hash`]).
    pub fn hash(&self) -> Hash {
        match self {
            TreeNode::Empty => EMPTY,
            TreeNode::Leaf { key, value } => leaf_hash(&key_hash(key), &value_hash(value)),
            TreeNode::Inner { bitmap, children } => inner_hash(*bitmap, children),
        }
    }

    /// The hash of each of the 16 children of an inner node ([`EMPTY`] where the bitmap
    /// bit is clear); `None` if not an inner node or if the bitmap and the hash count
    /// disagree.
    pub fn child_hashes(&self) -> Option<[Hash; FANOUT]> {
        let TreeNode::Inner { bitmap, children } = self else {
            return None;
        };
        if bitmap.count_ones() as usize != children.len() {
            return None;
        }
        let mut out = [EMPTY; FANOUT];
        let mut hashes = children.iter();
        for (i, slot) in out.iter_mut().enumerate() {
            if bitmap & (1 << i) != 0 {
                *slot = *hashes.next()?;
            }
        }
        Some(out)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    pub(crate) key_hash: Hash,
    pub(crate) value_hash: Hash,
    pub(crate) hash: Hash,
    pub(crate) key: Box<[u8]>,
}

impl Leaf {
    fn new(key: &[u8], value: &[u8]) -> Box<Leaf> {
        let key_hash = key_hash(key);
        let value_hash = value_hash(value);
        Box::new(Leaf {
            key_hash,
            value_hash,
            hash: leaf_hash(&key_hash, &value_hash),
            key: key.into(),
        })
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Inner {
    pub(crate) children: [Node; FANOUT],
    pub(crate) hash: Hash,
}

impl Inner {
    pub(crate) fn bitmap(&self) -> u16 {
        let mut bitmap = 0u16;
        for (i, child) in self.children.iter().enumerate() {
            if !matches!(child, Node::Empty) {
                bitmap |= 1 << i;
            }
        }
        bitmap
    }

    fn rehash(&mut self) {
        let mut h = Sha256::new();
        h.update([INNER_PREFIX]);
        h.update(self.bitmap().to_be_bytes());
        for child in &self.children {
            if !matches!(child, Node::Empty) {
                h.update(child.hash());
            }
        }
        self.hash = h.finalize().into();
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) enum Node {
    #[default]
    Empty,
    Leaf(Box<Leaf>),
    Inner(Box<Inner>),
}

impl Node {
    pub(crate) fn hash(&self) -> Hash {
        match self {
            Node::Empty => EMPTY,
            Node::Leaf(l) => l.hash,
            Node::Inner(i) => i.hash,
        }
    }

    /// Put `leaf` in the subtree at `depth`; returns the leaf it replaced (same key hash).
    fn insert(&mut self, leaf: Box<Leaf>, depth: usize) -> Option<Box<Leaf>> {
        match self {
            Node::Empty => {
                *self = Node::Leaf(leaf);
                None
            }
            Node::Leaf(old) if old.key_hash == leaf.key_hash => Some(core::mem::replace(old, leaf)),
            Node::Leaf(_) => {
                // Two entries now: split. The key hashes differ, so they part within
                // 64 nibbles and the recursion ends before `MAX_DEPTH`.
                let mut inner = Box::<Inner>::default();
                if let Node::Leaf(old) = core::mem::take(self) {
                    let at = nibble(&old.key_hash, depth);
                    inner.children[at] = Node::Leaf(old);
                }
                *self = Node::Inner(inner);
                self.insert(leaf, depth)
            }
            Node::Inner(inner) => {
                let i = nibble(&leaf.key_hash, depth);
                let replaced = inner.children[i].insert(leaf, depth + 1);
                inner.rehash();
                replaced
            }
        }
    }

    /// Take the leaf with this key hash out of the subtree at `depth`.
    fn remove(&mut self, key_hash: &Hash, depth: usize) -> Option<Box<Leaf>> {
        match self {
            Node::Empty => None,
            Node::Leaf(l) if l.key_hash == *key_hash => match core::mem::take(self) {
                Node::Leaf(l) => Some(l),
                _ => None,
            },
            Node::Leaf(_) => None,
            Node::Inner(inner) => {
                let removed =
                    inner.children[nibble(key_hash, depth)].remove(key_hash, depth + 1)?;
                self.settle();
                Some(removed)
            }
        }
    }

    /// Take the subtree at `path` (below `depth`) out of this one.
    fn detach(&mut self, path: &Path, depth: usize) -> Node {
        if depth == path.depth() {
            return core::mem::take(self);
        }
        match self {
            Node::Empty => Node::Empty,
            Node::Leaf(l) if path.contains(&l.key_hash) => core::mem::take(self),
            Node::Leaf(_) => Node::Empty,
            Node::Inner(inner) => {
                let taken = inner.children[path.nibble(depth)].detach(path, depth + 1);
                if !matches!(taken, Node::Empty) {
                    self.settle();
                }
                taken
            }
        }
    }

    /// After a removal below: an inner node left with a single entry becomes that leaf
    /// (keeping the shape canonical), one left with none becomes empty; else rehash.
    fn settle(&mut self) {
        let Node::Inner(inner) = self else { return };
        let mut non_empty = inner.children.iter().filter(|c| !matches!(c, Node::Empty));
        let first = non_empty.next();
        let single_leaf = matches!(first, Some(Node::Leaf(_))) && non_empty.next().is_none();
        if first.is_none() {
            *self = Node::Empty;
        } else if single_leaf {
            let leaf = inner
                .children
                .iter_mut()
                .find(|c| !matches!(c, Node::Empty))
                .map(core::mem::take)
                .unwrap_or_default();
            *self = leaf;
        } else {
            inner.rehash();
        }
    }

    /// Every leaf of the subtree, in key hash order.
    fn for_each_leaf<'a>(&'a self, f: &mut dyn FnMut(&'a Leaf)) {
        match self {
            Node::Empty => {}
            Node::Leaf(l) => f(l),
            Node::Inner(inner) => {
                for child in &inner.children {
                    child.for_each_leaf(f);
                }
            }
        }
    }

    // The leaves stay boxed: they end up in `Node::Leaf` as they are.
    #[allow(clippy::vec_box)]
    fn into_leaves(self, out: &mut Vec<Box<Leaf>>) {
        match self {
            Node::Empty => {}
            Node::Leaf(l) => out.push(l),
            Node::Inner(inner) => {
                for child in inner.children {
                    child.into_leaves(out);
                }
            }
        }
    }

    /// The canonical subtree of `leaves` (sorted by key hash, all under one path of
    /// `depth` nibbles), hashed once, bottom up. Boxed leaves move as pointers when
    /// the list is split.
    #[allow(clippy::vec_box)]
    fn build(mut leaves: Vec<Box<Leaf>>, depth: usize) -> Node {
        match leaves.len() {
            0 => Node::Empty,
            1 => leaves.pop().map_or(Node::Empty, Node::Leaf),
            _ => {
                let mut inner = Box::<Inner>::default();
                for i in (0..FANOUT).rev() {
                    let start = leaves.partition_point(|l| nibble(&l.key_hash, depth) < i);
                    inner.children[i] = Node::build(leaves.split_off(start), depth + 1);
                }
                inner.rehash();
                Node::Inner(inner)
            }
        }
    }

    /// The deepest leaf below, counting this node at `depth`.
    fn max_depth(&self, depth: usize) -> usize {
        match self {
            Node::Empty | Node::Leaf(_) => depth,
            Node::Inner(inner) => inner
                .children
                .iter()
                .map(|c| c.max_depth(depth + 1))
                .max()
                .unwrap_or(depth),
        }
    }

    fn inner_count(&self) -> usize {
        match self {
            Node::Inner(inner) => 1 + inner.children.iter().map(Node::inner_count).sum::<usize>(),
            _ => 0,
        }
    }
}

/// A Merkle tree over the entries of a [`KvStore`]; see the [module](self) docs.
///
/// ```
/// use weft_mesh::sync::merkle::{MemoryStore, MerkleTree, EMPTY};
///
/// let mut tree = MerkleTree::new(MemoryStore::new()).unwrap();
/// assert_eq!(tree.root(), EMPTY);
/// tree.insert(b"apple", b"red").unwrap();
/// tree.insert(b"banana", b"yellow").unwrap();
///
/// // Prove that apple is red, and that cherry is absent, against the root alone.
/// let root = tree.root();
/// let proof = tree.prove(b"apple");
/// assert!(proof.verify(&root, b"apple", Some(b"red")).is_ok());
/// assert!(proof.verify(&root, b"apple", Some(b"green")).is_err());
/// assert!(tree.prove(b"cherry").verify(&root, b"cherry", None).is_ok());
///
/// // The root depends on the entries only.
/// tree.remove(b"banana");
/// let mut other = MerkleTree::new(MemoryStore::new()).unwrap();
/// other.insert(b"apple", b"red").unwrap();
/// assert_eq!(tree.root(), other.root());
/// ```
#[derive(Clone, Debug)]
pub struct MerkleTree<S> {
    store: S,
    root: Node,
    len: usize,
}

impl<S: KvStore> MerkleTree<S> {
    /// A tree over what `store` holds (built in one pass: sorted, then hashed bottom
    /// up). Fails, keeping nothing, if an entry exceeds [`MAX_KEY_LEN`] or [`MAX_VALUE_LEN`].
    pub fn new(store: S) -> Result<Self, EntryError> {
        let mut leaves = Vec::new();
        let mut error = Ok(());
        store.for_each(&mut |key, value| {
            if error.is_ok() {
                error = check_entry(key, value);
                if error.is_ok() {
                    leaves.push(Leaf::new(key, value));
                }
            }
        });
        error?;
        leaves.sort_unstable_by_key(|l| l.key_hash);
        // Equal key hashes would be a SHA-256 collision; keep one entry per position.
        leaves.dedup_by(|a, b| a.key_hash == b.key_hash);
        let len = leaves.len();
        Ok(MerkleTree {
            store,
            root: Node::build(leaves, 0),
            len,
        })
    }

    /// The root hash ([`EMPTY`] when there are no entries).
    pub fn root(&self) -> Hash {
        self.root.hash()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, giving up the index.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The value under `key` (read from the store).
    pub fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.leaf(&key_hash(key))?;
        self.store.get(key)
    }

    /// `SHA-256(value)` of the value under `key`, from the index.
    pub fn value_hash(&self, key: &[u8]) -> Option<Hash> {
        self.leaf(&key_hash(key)).map(|l| l.value_hash)
    }

    fn leaf(&self, key_hash: &Hash) -> Option<&Leaf> {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf(l) => return (l.key_hash == *key_hash).then_some(&**l),
                Node::Inner(inner) => {
                    node = &inner.children[nibble(key_hash, depth)];
                    depth += 1;
                }
            }
        }
    }

    /// Store `value` under `key` and update the hashes on its path (at most one leaf
    /// hash and one inner hash per level). Returns whether anything changed: writing the
    /// value a key already has touches neither the store nor the tree.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<bool, EntryError> {
        check_entry(key, value)?;
        let leaf = Leaf::new(key, value);
        if self.leaf(&leaf.key_hash).map(|l| l.value_hash) == Some(leaf.value_hash) {
            return Ok(false);
        }
        self.store.insert(key, value);
        match self.root.insert(leaf, 0) {
            None => self.len += 1,
            // Same key hash, different key: a SHA-256 collision. One entry per position.
            Some(old) if *old.key != *key => self.store.remove(&old.key),
            Some(_) => {}
        }
        Ok(true)
    }

    /// Remove `key`; returns whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let kh = key_hash(key);
        match self.leaf(&kh) {
            Some(l) if *l.key == *key => {}
            _ => return false,
        }
        self.root.remove(&kh, 0);
        self.store.remove(key);
        self.len -= 1;
        true
    }

    /// Remove every entry whose key hash starts with `path`; returns how many.
    pub fn remove_prefix(&mut self, path: &Path) -> usize {
        let mut leaves = Vec::new();
        self.root.detach(path, 0).into_leaves(&mut leaves);
        for leaf in &leaves {
            self.store.remove(&leaf.key);
        }
        self.len -= leaves.len();
        leaves.len()
    }

    /// The hash of the subtree at `path`: a function of the entries below it alone, so
    /// it can be compared with a peer's even where the two trees are shaped differently.
    pub fn subtree_hash(&self, path: &Path) -> Hash {
        let mut node = &self.root;
        for d in 0..path.depth() {
            match node {
                Node::Empty => return EMPTY,
                Node::Leaf(l) => {
                    return if path.contains(&l.key_hash) {
                        l.hash
                    } else {
                        EMPTY
                    }
                }
                Node::Inner(inner) => node = &inner.children[path.nibble(d)],
            }
        }
        node.hash()
    }

    /// The subtree at `path` as a sync peer sees it (a leaf's value read from the store;
    /// an empty value if the store lost it, which the peer will see as a hash mismatch).
    pub fn node(&self, path: &Path) -> TreeNode {
        let mut node = &self.root;
        for d in 0..path.depth() {
            match node {
                Node::Inner(inner) => node = &inner.children[path.nibble(d)],
                Node::Leaf(l) if path.contains(&l.key_hash) => break,
                _ => return TreeNode::Empty,
            }
        }
        match node {
            Node::Empty => TreeNode::Empty,
            Node::Leaf(l) => TreeNode::Leaf {
                key: l.key.to_vec(),
                value: self
                    .store
                    .get(&l.key)
                    .map(Cow::into_owned)
                    .unwrap_or_default(),
            },
            Node::Inner(inner) => TreeNode::Inner {
                bitmap: inner.bitmap(),
                children: inner
                    .children
                    .iter()
                    .filter(|c| !matches!(c, Node::Empty))
                    .map(Node::hash)
                    .collect(),
            },
        }
    }

    /// The keys below `path`, in key hash order (visits that subtree only).
    pub fn keys_under(&self, path: &Path) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut node = &self.root;
        for d in 0..path.depth() {
            match node {
                Node::Inner(inner) => node = &inner.children[path.nibble(d)],
                Node::Leaf(l) if path.contains(&l.key_hash) => break,
                _ => return keys,
            }
        }
        node.for_each_leaf(&mut |l| keys.push(l.key.to_vec()));
        keys
    }

    /// Every key, in key hash order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.keys_under(&Path::ROOT)
    }

    /// The number of levels below the root down to the deepest leaf (0 for a tree of at
    /// most one entry).
    pub fn depth(&self) -> usize {
        self.root.max_depth(0)
    }

    /// Number of inner nodes.
    pub fn inner_nodes(&self) -> usize {
        self.root.inner_count()
    }

    /// A proof that `key` is in the tree with its current value, or that it is absent;
    /// check it with [`Proof::verify`] against [`MerkleTree::root`].
    pub fn prove(&self, key: &[u8]) -> Proof {
        let kh = key_hash(key);
        let mut steps = Vec::new();
        let mut node = &self.root;
        let mut depth = 0;
        let end = loop {
            match node {
                Node::Empty => break ProofEnd::Empty,
                Node::Leaf(l) if l.key_hash == kh => break ProofEnd::Present,
                Node::Leaf(l) => {
                    break ProofEnd::Other {
                        key_hash: l.key_hash,
                        value_hash: l.value_hash,
                    }
                }
                Node::Inner(inner) => {
                    let at = nibble(&kh, depth);
                    steps.push(ProofStep {
                        bitmap: inner.bitmap(),
                        siblings: inner
                            .children
                            .iter()
                            .enumerate()
                            .filter(|(i, c)| *i != at && !matches!(c, Node::Empty))
                            .map(|(_, c)| c.hash())
                            .collect(),
                    });
                    node = &inner.children[at];
                    depth += 1;
                }
            }
        };
        Proof { steps, end }
    }
}
