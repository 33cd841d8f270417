//! Node identity: an Ed25519 key that names the node, and an X25519 key that Noise uses.
//!
//! The [`NodeId`] is derived from the Ed25519 public key and never changes; the X25519
//! static key is bound to it by a signature in every handshake and can be rotated.

use core::fmt;
use core::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::Rng;

/// Length in bytes of a [`NodeId`].
pub const NODE_ID_LEN: usize = 32;

/// A node's name in the cluster: SHA-256 of its Ed25519 public key.
///
/// Displays as 64 lower-case hex digits and parses from the same.
///
/// ```
/// use weft_mesh::NodeId;
/// let id: NodeId = "00".repeat(32).parse().unwrap();
/// assert_eq!(id.to_string(), "00".repeat(32));
/// assert!("zz".parse::<NodeId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; NODE_ID_LEN]);

impl NodeId {
    /// The node id that belongs to an Ed25519 public key.
    pub fn derive(ed25519_public: &[u8; 32]) -> Self {
        NodeId(Sha256::digest(ed25519_public).into())
    }

    /// Wrap raw bytes (as read from the wire).
    pub const fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> Self {
        NodeId(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }

    /// The first 8 hex digits, for logs and people.
    pub fn short(&self) -> ShortNodeId {
        ShortNodeId(*self)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// The display form of [`NodeId::short`].
pub struct ShortNodeId(NodeId);

impl fmt::Display for ShortNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0 .0[..4])
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseNodeIdError;

impl fmt::Display for ParseNodeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node id is 64 hex digits")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseNodeIdError {}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; NODE_ID_LEN];
        parse_hex(s, &mut out).ok_or(ParseNodeIdError)?;
        Ok(NodeId(out))
    }
}

/// A process anywhere in the cluster: the node it runs on and its local pid.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GlobalPid {
    /// The node the process runs on.
    pub node: NodeId,
    /// The process id local to that node.
    pub pid: u64,
}

impl GlobalPid {
    /// The process `pid` on `node`.
    pub const fn new(node: NodeId, pid: u64) -> Self {
        GlobalPid { node, pid }
    }
}

impl fmt::Display for GlobalPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.pid)
    }
}

/// What a peer may know of a node: its id and both public keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PublicIdentity {
    /// The node id (derived from `signing_key`).
    pub node_id: NodeId,
    /// The Ed25519 public key.
    pub signing_key: [u8; 32],
    /// The X25519 static public key used by Noise (needed to dial with IK).
    pub static_key: [u8; 32],
}

/// Length of [`Identity::to_secret_bytes`].
pub const IDENTITY_SECRET_LEN: usize = 64;

/// A node's secret keys. Zeroized on drop; `Debug` shows only the node id.
///
/// ```
/// use weft_mesh::{Identity, Rng};
/// let id = Identity::generate(&mut Rng::from_seed([9; 32]));
/// let restored = Identity::from_secret_bytes(&id.to_secret_bytes());
/// assert_eq!(id.node_id(), restored.node_id());
/// assert!(!format!("{id:?}").contains(&hex_secret(&id)));
/// # fn hex_secret(id: &Identity) -> String { id.to_secret_bytes().iter().map(|b| format!("{b:02x}")).collect() }
/// ```
pub struct Identity {
    signing: SigningKey,
    static_secret: StaticSecret,
    public: PublicIdentity,
}

impl Identity {
    /// A fresh identity drawn from `rng`.
    pub fn generate(rng: &mut Rng) -> Self {
        let seed = Zeroizing::new(rng.array::<64>());
        Self::from_secret_bytes(&seed)
    }

    /// Rebuild an identity from the 64 bytes of [`Identity::to_secret_bytes`]:
    /// the Ed25519 seed followed by the X25519 static secret.
    pub fn from_secret_bytes(bytes: &[u8; IDENTITY_SECRET_LEN]) -> Self {
        let mut ed = Zeroizing::new([0u8; 32]);
        let mut x = Zeroizing::new([0u8; 32]);
        ed.copy_from_slice(&bytes[..32]);
        x.copy_from_slice(&bytes[32..]);
        let signing = SigningKey::from_bytes(&ed);
        let static_secret = StaticSecret::from(*x);
        let signing_key = signing.verifying_key().to_bytes();
        let public = PublicIdentity {
            node_id: NodeId::derive(&signing_key),
            signing_key,
            static_key: XPublicKey::from(&static_secret).to_bytes(),
        };
        Identity {
            signing,
            static_secret,
            public,
        }
    }

    /// The secret keys as 64 bytes, for the driver to persist (mode 0600).
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; IDENTITY_SECRET_LEN]> {
        let mut out = Zeroizing::new([0u8; IDENTITY_SECRET_LEN]);
        out[..32].copy_from_slice(self.signing.as_bytes());
        out[32..].copy_from_slice(self.static_secret.as_bytes());
        out
    }

    /// The same node id with a new X25519 static key (key rotation).
    pub fn rotate_static_key(&self, rng: &mut Rng) -> Self {
        let mut bytes = self.to_secret_bytes();
        rng.fill(&mut bytes[32..]);
        Self::from_secret_bytes(&bytes)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.public.node_id
    }

    /// The public half.
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// Sign `message` with the Ed25519 key.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 static secret, for snow.
    pub(crate) fn static_secret(&self) -> &[u8; 32] {
        self.static_secret.as_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.public.node_id)
            .finish_non_exhaustive()
    }
}

/// Check an Ed25519 signature with the strict rules (no malleability, no small-order keys).
pub(crate) fn verify_strict(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &sig).is_ok()
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// Parse exactly `out.len() * 2` hex digits into `out`.
pub(crate) fn parse_hex(s: &str, out: &mut [u8]) -> Option<()> {
    let s = s.as_bytes();
    if s.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    #[test]
    fn node_id_is_sha256_of_the_signing_key_and_round_trips_as_hex() {
        let id = Identity::generate(&mut Rng::from_seed([3; 32]));
        let expected: [u8; 32] = Sha256::digest(id.public().signing_key).into();
        assert_eq!(id.node_id().as_bytes(), &expected);
        let parsed: NodeId = id.node_id().to_string().parse().unwrap();
        assert_eq!(parsed, id.node_id());
        assert_eq!(id.node_id().short().to_string().len(), 8);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("0".repeat(63).parse::<NodeId>().is_err());
        assert!("g".repeat(64).parse::<NodeId>().is_err());
        assert!("0".repeat(66).parse::<NodeId>().is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let id = Identity::generate(&mut Rng::from_seed([4; 32]));
        let dbg = format!("{id:?}");
        let secret = id.to_secret_bytes();
        for window in [&secret[..4], &secret[32..36]] {
            let hex: alloc::string::String = window.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!dbg.contains(&hex), "{dbg}");
        }
    }

    #[test]
    fn rotation_keeps_the_node_id_and_changes_the_static_key() {
        let mut rng = Rng::from_seed([5; 32]);
        let id = Identity::generate(&mut rng);
        let rotated = id.rotate_static_key(&mut rng);
        assert_eq!(id.node_id(), rotated.node_id());
        assert_ne!(id.public().static_key, rotated.public().static_key);
    }

    #[test]
    fn signatures_verify_strictly() {
        let id = Identity::generate(&mut Rng::from_seed([6; 32]));
        let sig = id.sign(b"hello");
        assert!(verify_strict(&id.public().signing_key, b"hello", &sig));
        assert!(!verify_strict(&id.public().signing_key, b"hellp", &sig));
    }
}
