//! Why a link closed: one typed reason, with the 16-bit code carried by the Close frame.

use core::fmt;

/// Why a link closed or a handshake was rejected.
///
/// Every variant has a stable wire code ([`CloseReason::code`]) that travels in the
/// Close frame, so the peer learns the reason too. When a link closes the state it
/// held (keys, queues, reassembly buffers) is dropped; nothing about the peer is kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application closed the link on purpose.
    Normal,
    /// Another link to the same peer is kept instead of this one.
    DuplicateLink,
    /// This node is banned from the cluster.
    Banned,
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// A handshake message or payload could not be parsed.
    MalformedHandshake,
    /// A handshake message failed authentication (tampered bytes, a different
    /// prologue, or an IK dial with a stale static key).
    HandshakeFailed,
    /// The identity proof's Ed25519 signature did not verify.
    BadSignature,
    /// The hello's node id is not derived from the proof's public key.
    NodeIdMismatch,
    /// The peer claims our own node id.
    OwnNodeId,
    /// The peer is not the node that was dialed.
    UnexpectedPeer,
    /// A Diffie-Hellman result was all zeros: a small-order key.
    SmallOrderKey,
    /// The peer belongs to another cluster (different governance genesis hash).
    GenesisMismatch,
    /// The post-quantum policy forbids the session the peer offered.
    PolicyViolation,
    /// KEM material contradicts the offer (a ciphertext nobody asked for, flags
    /// that disagree with the key, ...).
    InconsistentOffer,
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// A record failed to decrypt.
    DecryptFailed,
    /// A record held a malformed frame or a frame split across records.
    MalformedFrame,
    /// A frame type that is not allowed at this point (a Handshake frame after the
    /// handshake, say).
    UnexpectedFrame,
    /// Fragments in reassembly exceeded the link's budget.
    ReassemblyBudget,
    /// A transport message had a zero length.
    MalformedRecord,
    /// Nothing was received for longer than the idle timeout.
    IdleTimeout,
    /// The record counter reached its limit without a rekey.
    NonceExhausted,
    /// The socket closed or failed (reported by the driver, never sent).
    ConnectionLost,
    /// The peer sent a code this version does not know.
    Unknown(u16),
}

impl CloseReason {
    /// The code carried in a Close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 0x0000,
            CloseReason::DuplicateLink => 0x0001,
            CloseReason::Banned => 0x0002,
            CloseReason::UnsupportedVersion => 0x0101,
            CloseReason::MalformedHandshake => 0x0102,
            CloseReason::HandshakeFailed => 0x0103,
            CloseReason::BadSignature => 0x0104,
            CloseReason::NodeIdMismatch => 0x0105,
            CloseReason::OwnNodeId => 0x0106,
            CloseReason::UnexpectedPeer => 0x0107,
            CloseReason::SmallOrderKey => 0x0108,
            CloseReason::GenesisMismatch => 0x0109,
            CloseReason::PolicyViolation => 0x010A,
            CloseReason::InconsistentOffer => 0x010B,
            CloseReason::HandshakeTimeout => 0x010C,
            CloseReason::DecryptFailed => 0x0201,
            CloseReason::MalformedFrame => 0x0202,
            CloseReason::UnexpectedFrame => 0x0203,
            CloseReason::ReassemblyBudget => 0x0204,
            CloseReason::MalformedRecord => 0x0205,
            CloseReason::IdleTimeout => 0x0206,
            CloseReason::NonceExhausted => 0x0207,
            CloseReason::ConnectionLost => 0x0301,
            CloseReason::Unknown(code) => code,
        }
    }

    /// The reason a received code stands for.
    pub fn from_code(code: u16) -> CloseReason {
        const KNOWN: [CloseReason; 23] = [
            CloseReason::Normal,
            CloseReason::DuplicateLink,
            CloseReason::Banned,
            CloseReason::UnsupportedVersion,
            CloseReason::MalformedHandshake,
            CloseReason::HandshakeFailed,
            CloseReason::BadSignature,
            CloseReason::NodeIdMismatch,
            CloseReason::OwnNodeId,
            CloseReason::UnexpectedPeer,
            CloseReason::SmallOrderKey,
            CloseReason::GenesisMismatch,
            CloseReason::PolicyViolation,
            CloseReason::InconsistentOffer,
            CloseReason::HandshakeTimeout,
            CloseReason::DecryptFailed,
            CloseReason::MalformedFrame,
            CloseReason::UnexpectedFrame,
            CloseReason::ReassemblyBudget,
            CloseReason::MalformedRecord,
            CloseReason::IdleTimeout,
            CloseReason::NonceExhausted,
            CloseReason::ConnectionLost,
        ];
        KNOWN
            .into_iter()
            .find(|r| r.code() == code)
            .unwrap_or(CloseReason::Unknown(code))
    }

    /// A short stable name (`genesis_mismatch`), for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::DuplicateLink => "duplicate_link",
            CloseReason::Banned => "banned",
            CloseReason::UnsupportedVersion => "unsupported_version",
            CloseReason::MalformedHandshake => "malformed_handshake",
            CloseReason::HandshakeFailed => "handshake_failed",
            CloseReason::BadSignature => "bad_signature",
            CloseReason::NodeIdMismatch => "node_id_mismatch",
            CloseReason::OwnNodeId => "own_node_id",
            CloseReason::UnexpectedPeer => "unexpected_peer",
            CloseReason::SmallOrderKey => "small_order_key",
            CloseReason::GenesisMismatch => "genesis_mismatch",
            CloseReason::PolicyViolation => "policy_violation",
            CloseReason::InconsistentOffer => "inconsistent_offer",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::DecryptFailed => "decrypt_failed",
            CloseReason::MalformedFrame => "malformed_frame",
            CloseReason::UnexpectedFrame => "unexpected_frame",
            CloseReason::ReassemblyBudget => "reassembly_budget",
            CloseReason::MalformedRecord => "malformed_record",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::NonceExhausted => "nonce_exhausted",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::Unknown(_) => "unknown",
        }
    }

    /// Whether this is a handshake rejection (code `0x01xx`).
    pub fn is_handshake_rejection(self) -> bool {
        self.code() >> 8 == 0x01
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Unknown(code) => write!(f, "unknown reason 0x{code:04x}"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = alloc::vec::Vec::new();
        for code in 0..=0x0400u16 {
            let r = CloseReason::from_code(code);
            assert_eq!(r.code(), code);
            if !matches!(r, CloseReason::Unknown(_)) {
                assert!(!seen.contains(&r.name()), "{r:?}");
                seen.push(r.name());
            }
        }
        assert_eq!(seen.len(), 23);
        assert!(CloseReason::GenesisMismatch.is_handshake_rejection());
        assert!(!CloseReason::DecryptFailed.is_handshake_rejection());
    }
}
