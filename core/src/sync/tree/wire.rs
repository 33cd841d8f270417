//! The TreeSync frame's payload (0x06): requests for subtrees and the nodes that answer
//! them.
//!
//! The format is described on [`TreeSyncMessage`].

use alloc::vec::Vec;
use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sync::merkle::{Hash, Path, TreeNode, MAX_DEPTH, MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::wire::Reader;

/// Most paths in one request, and nodes in one reply.
pub const MAX_PATHS: usize = 256;
/// Encoded size of a message without its items: kind, id, count.
pub const MESSAGE_HEADER_LEN: usize = 1 + 4 + 2;

const KIND_GET_NODES: u8 = 0x01;
const KIND_NODES: u8 = 0x02;
const NODE_EMPTY: u8 = 0x00;
const NODE_LEAF: u8 = 0x01;
const NODE_INNER: u8 = 0x02;

/// Why a TreeSync payload did not decode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// A field runs past the end of the payload.
    Truncated,
    /// Unknown message kind (the first byte).
    UnknownKind(u8),
    /// Unknown node tag.
    UnknownNode(u8),
    /// A count of zero or above [`MAX_PATHS`].
    Count,
    /// A path deeper than 64 nibbles or with a non-zero padding nibble.
    Path,
    /// A key longer than [`MAX_KEY_LEN`].
    KeyTooLarge,
    /// A value larger than [`MAX_VALUE_LEN`].
    ValueTooLarge,
    /// An inner node with an empty bitmap, or at depth 64 (where only leaves fit).
    Inner,
    /// Bytes after the message.
    TrailingBytes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("tree sync message truncated"),
            DecodeError::UnknownKind(k) => write!(f, "unknown tree sync message kind {k:#04x}"),
            DecodeError::UnknownNode(t) => write!(f, "unknown tree node tag {t:#04x}"),
            DecodeError::Count => f.write_str("tree sync count zero or above 256"),
            DecodeError::Path => f.write_str("malformed tree path"),
            DecodeError::KeyTooLarge => f.write_str("tree key longer than 1024 bytes"),
            DecodeError::ValueTooLarge => f.write_str("tree value larger than 1 MiB"),
            DecodeError::Inner => f.write_str("inner node with no children or at depth 64"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes after tree sync message"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// "Describe these subtrees of your tree."
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GetNodes {
    /// Echoed by the reply.
    pub id: u32,
    /// The subtrees, 1 to [`MAX_PATHS`].
    pub paths: Vec<Path>,
}

/// The answer to a [`GetNodes`]: the first requested subtrees, in request order, as many
/// as fit the responder's reply budget (at least one).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Nodes {
    /// The request's id.
    pub id: u32,
    /// Each answered path and its node, 1 to [`MAX_PATHS`].
    pub nodes: Vec<(Path, TreeNode)>,
}

/// A decoded TreeSync frame (0x06) payload.
///
/// ```text
/// message   := u8 kind, body                 (nothing after the body)
///   0x01 get nodes  u32 id, u16 count (1..=256), count × path
///   0x02 nodes      u32 id, u16 count (1..=256), count × (path, node)
/// path      := u8 depth (0..=64), ⌈depth / 2⌉ bytes of nibbles, high nibble first;
///              when the depth is odd the last byte's low nibble is 0
/// node      := 0x00                                               empty
///            | 0x01, u16 key_len (≤ 1024), key,
///                    u32 value_len (≤ 1 MiB), value               leaf (one entry)
///            | 0x02, u16 bitmap (≠ 0), popcount(bitmap) × 32      inner (depth < 64)
/// ```
/// All integers are big-endian. Bit `i` of an inner node's bitmap (value `1 << i`) is
/// set when child `i` is non-empty; the hashes of those children follow in child order.
/// A node's hash is computed as in [`crate::sync::merkle`]: for an inner node it is
/// `SHA-256(0x01 ‖ bitmap ‖ hashes)`, the node's own bytes after its tag.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TreeSyncMessage {
    /// A request, from a puller to a responder.
    GetNodes(GetNodes),
    /// A reply, from a responder to a puller.
    Nodes(Nodes),
}

impl From<GetNodes> for TreeSyncMessage {
    fn from(m: GetNodes) -> Self {
        TreeSyncMessage::GetNodes(m)
    }
}

impl From<Nodes> for TreeSyncMessage {
    fn from(m: Nodes) -> Self {
        TreeSyncMessage::Nodes(m)
    }
}

/// Encoded size of a path.
pub fn path_len(path: &Path) -> usize {
    1 + path.packed().len()
}

/// Encoded size of a node.
pub fn node_len(node: &TreeNode) -> usize {
    match node {
        TreeNode::Empty => 1,
        TreeNode::Leaf { key, value } => 1 + 2 + key.len() + 4 + value.len(),
        TreeNode::Inner { children, .. } => 1 + 2 + 32 * children.len(),
    }
}

impl TreeSyncMessage {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        MESSAGE_HEADER_LEN
            + match self {
                TreeSyncMessage::GetNodes(m) => {
                    m.paths.iter().take(MAX_PATHS).map(path_len).sum::<usize>()
                }
                TreeSyncMessage::Nodes(m) => m
                    .nodes
                    .iter()
                    .take(MAX_PATHS)
                    .map(|(p, n)| path_len(p) + node_len(n))
                    .sum(),
            }
    }

    /// The encoding. Lists are cut at [`MAX_PATHS`]; the session never builds longer
    /// ones, nor empty ones, nor nodes over the limits (which the decoder would refuse).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        match self {
            TreeSyncMessage::GetNodes(m) => {
                let paths = &m.paths[..m.paths.len().min(MAX_PATHS)];
                b.put_u8(KIND_GET_NODES);
                b.put_u32(m.id);
                b.put_u16(paths.len() as u16);
                for p in paths {
                    put_path(&mut b, p);
                }
            }
            TreeSyncMessage::Nodes(m) => {
                let nodes = &m.nodes[..m.nodes.len().min(MAX_PATHS)];
                b.put_u8(KIND_NODES);
                b.put_u32(m.id);
                b.put_u16(nodes.len() as u16);
                for (p, n) in nodes {
                    put_path(&mut b, p);
                    put_node(&mut b, n);
                }
            }
        }
        b.freeze()
    }

    /// Decode a payload, checking every count and length before allocating.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let kind = r.u8().ok_or(DecodeError::Truncated)?;
        let message = match kind {
            KIND_GET_NODES => {
                let (id, count) = header(&mut r)?;
                let mut paths = Vec::with_capacity(count.min(r.remaining()));
                for _ in 0..count {
                    paths.push(read_path(&mut r)?);
                }
                TreeSyncMessage::GetNodes(GetNodes { id, paths })
            }
            KIND_NODES => {
                let (id, count) = header(&mut r)?;
                // Smallest item: a root path (1 byte) and an empty node (1 byte).
                let mut nodes = Vec::with_capacity(count.min(r.remaining() / 2));
                for _ in 0..count {
                    let path = read_path(&mut r)?;
                    let node = read_node(&mut r, &path)?;
                    nodes.push((path, node));
                }
                TreeSyncMessage::Nodes(Nodes { id, nodes })
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(message)
    }
}

fn put_path(b: &mut BytesMut, path: &Path) {
    b.put_u8(path.depth() as u8);
    b.put_slice(path.packed());
}

fn put_node(b: &mut BytesMut, node: &TreeNode) {
    match node {
        TreeNode::Empty => b.put_u8(NODE_EMPTY),
        TreeNode::Leaf { key, value } => {
            b.put_u8(NODE_LEAF);
            b.put_u16(key.len() as u16);
            b.put_slice(key);
            b.put_u32(value.len() as u32);
            b.put_slice(value);
        }
        TreeNode::Inner { bitmap, children } => {
            b.put_u8(NODE_INNER);
            b.put_u16(*bitmap);
            for c in children {
                b.put_slice(c);
            }
        }
    }
}

/// `u32 id, u16 count` with the count in `1..=MAX_PATHS`.
fn header(r: &mut Reader<'_>) -> Result<(u32, usize), DecodeError> {
    let id = r.u32().ok_or(DecodeError::Truncated)?;
    let count = usize::from(r.u16().ok_or(DecodeError::Truncated)?);
    if count == 0 || count > MAX_PATHS {
        return Err(DecodeError::Count);
    }
    Ok((id, count))
}

fn read_path(r: &mut Reader<'_>) -> Result<Path, DecodeError> {
    let depth = usize::from(r.u8().ok_or(DecodeError::Truncated)?);
    if depth > MAX_DEPTH {
        return Err(DecodeError::Path);
    }
    let packed = r.take(depth.div_ceil(2)).ok_or(DecodeError::Truncated)?;
    Path::from_packed(depth, packed).ok_or(DecodeError::Path)
}

fn read_node(r: &mut Reader<'_>, path: &Path) -> Result<TreeNode, DecodeError> {
    let t = DecodeError::Truncated;
    match r.u8().ok_or(t)? {
        NODE_EMPTY => Ok(TreeNode::Empty),
        NODE_LEAF => {
            let key_len = usize::from(r.u16().ok_or(t)?);
            if key_len > MAX_KEY_LEN {
                return Err(DecodeError::KeyTooLarge);
            }
            let key = r.take(key_len).ok_or(t)?.to_vec();
            let value_len = r.u32().ok_or(t)? as usize;
            if value_len > MAX_VALUE_LEN {
                return Err(DecodeError::ValueTooLarge);
            }
            let value = r.take(value_len).ok_or(t)?.to_vec();
            Ok(TreeNode::Leaf { key, value })
        }
        NODE_INNER => {
            let bitmap = r.u16().ok_or(t)?;
            if bitmap == 0 || path.depth() == MAX_DEPTH {
                return Err(DecodeError::Inner);
            }
            let count = bitmap.count_ones() as usize;
            let mut children: Vec<Hash> = Vec::with_capacity(count);
            for _ in 0..count {
                children.push(r.array().ok_or(t)?);
            }
            Ok(TreeNode::Inner { bitmap, children })
        }
        other => Err(DecodeError::UnknownNode(other)),
    }
}
