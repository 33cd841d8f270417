//! `MeshIpcEnvelope`: the unit of cross-node IPC, carried in Message frames and relayed
//! hop by hop (PROTOCOL.md §12).
//!
//! ```text
//! offset size
//!      0    1  kind          0x10 data, 0x11 request, 0x12 response, 0x13 receipt, 0x14 failure
//!      1    1  flags         bit 0: signed; other bits must be zero
//!      2    1  hop_count     links crossed before the current one; relays add one
//!      3    1  attempt       the sender's retransmission number
//!      4   32  source_node
//!     36   32  dest_node
//!     68   16  envelope_id   random, unique per message of the source
//!     84   16  reply_to      the envelope answered (response, receipt, failure), else zero
//!    100    1  target tag    0 the node, 1 a pid (u64 BE follows), 2 a service (u8 len, UTF-8)
//!      …       payload       up to the signature (or the end)
//! signed only: 32-byte Ed25519 key of the source, 64-byte signature
//! ```
//!
//! The signature covers `"weft-mesh/1 envelope" ‖ SHA-256(every byte before the
//! signature, with hop_count read as 0)`: a relay can count hops but not change the
//! source, target, ids or payload, and the key must hash to `source_node`.

use alloc::string::String;
use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::frame::Payload;
use crate::identity::verify_strict;
use crate::{GlobalPid, Identity, NodeId};

/// Bytes before the target.
const FIXED: usize = 101;
/// Signed envelopes end with the source's key and signature.
pub(crate) const SIGNATURE_TRAILER: usize = 32 + 64;
const SIGNED: u8 = 0x01;
const HOP_OFFSET: usize = 2;
const DOMAIN: &[u8] = b"weft-mesh/1 envelope";

/// Largest header of an envelope (a 255-byte service name, signed).
pub const MAX_OVERHEAD: usize = FIXED + 2 + 255 + SIGNATURE_TRAILER;

pub use crate::dedup::EnvelopeId;

/// What an envelope is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// One-way data; the destination answers with a receipt.
    Data,
    /// A request; the destination's application answers with a response.
    Request,
    /// The answer to a request (`reply_to` names it).
    Response,
    /// Delivery confirmation of a data envelope.
    Receipt,
    /// A relay could not forward `reply_to`; the payload is one [`Failure`] code.
    Failure,
    /// A membership (SWIM) packet for a member with no direct link: delivered to the
    /// destination's failure detector, never to its application; no answer, no
    /// retransmission (SWIM tolerates loss).
    Membership,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Data => 0x10,
            Kind::Request => 0x11,
            Kind::Response => 0x12,
            Kind::Receipt => 0x13,
            Kind::Failure => 0x14,
            Kind::Membership => 0x15,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            0x10 => Kind::Data,
            0x11 => Kind::Request,
            0x12 => Kind::Response,
            0x13 => Kind::Receipt,
            0x14 => Kind::Failure,
            0x15 => Kind::Membership,
            _ => return None,
        })
    }

    /// Envelopes whose loss the sender notices itself (by a missing answer).
    pub(crate) fn expects_answer(self) -> bool {
        matches!(self, Kind::Data | Kind::Request)
    }
}

/// Why a relay gave up on an envelope (the payload of a [`Kind::Failure`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// The relay knows no way to the destination.
    NoRoute = 1,
    /// Forwarding would cross more than [`super::MAX_HOPS`] links.
    HopLimit = 2,
}

impl Failure {
    pub(crate) fn from_code(c: u8) -> Option<Failure> {
        match c {
            1 => Some(Failure::NoRoute),
            2 => Some(Failure::HopLimit),
            _ => None,
        }
    }
}

/// Whom an envelope is for, inside its destination node. Opaque to the mesh.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub enum Target {
    /// The node's application itself.
    #[default]
    Node,
    /// A process (the node part of the [`GlobalPid`] is the envelope's destination).
    Pid(u64),
    /// A named service (1 to 255 bytes of UTF-8).
    Service(String),
}

impl Target {
    /// The target for a global process id.
    pub fn pid(pid: GlobalPid) -> Target {
        Target::Pid(pid.pid)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Target::Node => 1,
            Target::Pid(_) => 9,
            Target::Service(s) => 2 + s.len(),
        }
    }

    /// Whether it can be encoded (a service name is 1 to 255 bytes).
    pub fn is_valid(&self) -> bool {
        match self {
            Target::Service(s) => (1..=255).contains(&s.len()),
            _ => true,
        }
    }
}

/// `node`, `pid:N` or `service:NAME` (the CLI's JSON uses this form too).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node => f.write_str("node"),
            Target::Pid(p) => write!(f, "pid:{p}"),
            Target::Service(s) => write!(f, "service:{s}"),
        }
    }
}

/// An envelope's header fields.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    /// What it is.
    pub kind: Kind,
    /// Links crossed before the current one.
    pub hop_count: u8,
    /// The sender's retransmission number.
    pub attempt: u8,
    /// Who wrote it.
    pub source: NodeId,
    /// Who it is for.
    pub dest: NodeId,
    /// Its id.
    pub id: EnvelopeId,
    /// The envelope it answers, or zero.
    pub reply_to: EnvelopeId,
    /// Whom it is for inside `dest`.
    pub target: Target,
}

/// A decoded envelope; `bytes` is the whole encoding (kept for relaying).
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The header.
    pub header: Header,
    /// The application payload.
    pub payload: Bytes,
    /// Whether a signature is attached (checked by [`Envelope::verify`]).
    pub signed: bool,
    bytes: Bytes,
}

/// Why an envelope did not decode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DecodeError {
    /// Shorter than its header says.
    Truncated,
    /// Unknown kind, flags or target tag, or a bad service name.
    Invalid,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "envelope truncated",
            DecodeError::Invalid => "invalid envelope",
        })
    }
}

/// Encode an envelope, signed by `signer` when given (it must be the source): the
/// header, then `payload` itself (not copied), then the signature trailer if signed.
pub(crate) fn encode(header: &Header, payload: Bytes, signer: Option<&Identity>) -> Payload {
    let mut b = BytesMut::with_capacity(FIXED - 1 + header.target.encoded_len());
    b.put_u8(header.kind.code());
    b.put_u8(if signer.is_some() { SIGNED } else { 0 });
    b.put_u8(header.hop_count);
    b.put_u8(header.attempt);
    b.put_slice(header.source.as_bytes());
    b.put_slice(header.dest.as_bytes());
    b.put_slice(&header.id);
    b.put_slice(&header.reply_to);
    match &header.target {
        Target::Node => b.put_u8(0),
        Target::Pid(p) => {
            b.put_u8(1);
            b.put_u64(*p);
        }
        Target::Service(s) => {
            b.put_u8(2);
            b.put_u8(s.len() as u8);
            b.put_slice(s.as_bytes());
        }
    }
    let trailer = match signer {
        Some(id) => {
            let key = id.public().signing_key;
            let mut t = BytesMut::with_capacity(SIGNATURE_TRAILER);
            t.put_slice(&key);
            t.put_slice(&id.sign(&signed_message([&b, &payload, &key])));
            t.freeze()
        }
        None => Bytes::new(),
    };
    Payload::new(b.freeze(), payload, trailer)
}

/// `DOMAIN ‖ SHA-256(every byte before the signature, with hop_count read as 0)`, the
/// bytes given in pieces of which the first holds the hop count.
fn signed_message(pieces: [&[u8]; 3]) -> [u8; 52] {
    let [first, rest @ ..] = pieces;
    let mut h = Sha256::new();
    h.update(&first[..HOP_OFFSET]);
    h.update([0]);
    h.update(&first[HOP_OFFSET + 1..]);
    rest.iter().for_each(|p| h.update(p));
    let mut out = [0u8; 52];
    out[..DOMAIN.len()].copy_from_slice(DOMAIN);
    out[DOMAIN.len()..].copy_from_slice(&h.finalize());
    out
}

/// Decode an envelope without checking its signature.
pub fn decode(bytes: Bytes) -> Result<Envelope, DecodeError> {
    if bytes.len() < FIXED {
        return Err(DecodeError::Truncated);
    }
    let kind = Kind::from_code(bytes[0]).ok_or(DecodeError::Invalid)?;
    let flags = bytes[1];
    if flags & !SIGNED != 0 {
        return Err(DecodeError::Invalid);
    }
    let signed = flags & SIGNED != 0;
    let id32 = |at: usize| {
        let mut a = [0u8; 32];
        a.copy_from_slice(&bytes[at..at + 32]);
        NodeId::from_bytes(a)
    };
    let id16 = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&bytes[at..at + 16]);
        a
    };
    let (target, body_start) = match bytes[FIXED - 1] {
        0 => (Target::Node, FIXED),
        1 => {
            let p = bytes.get(FIXED..FIXED + 8).ok_or(DecodeError::Truncated)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(p);
            (Target::Pid(u64::from_be_bytes(a)), FIXED + 8)
        }
        2 => {
            let len = *bytes.get(FIXED).ok_or(DecodeError::Truncated)? as usize;
            let name = bytes
                .get(FIXED + 1..FIXED + 1 + len)
                .ok_or(DecodeError::Truncated)?;
            let name = core::str::from_utf8(name).map_err(|_| DecodeError::Invalid)?;
            if name.is_empty() {
                return Err(DecodeError::Invalid);
            }
            (Target::Service(name.into()), FIXED + 1 + len)
        }
        _ => return Err(DecodeError::Invalid),
    };
    let trailer = if signed { SIGNATURE_TRAILER } else { 0 };
    if bytes.len() < body_start + trailer {
        return Err(DecodeError::Truncated);
    }
    let header = Header {
        kind,
        hop_count: bytes[HOP_OFFSET],
        attempt: bytes[3],
        source: id32(4),
        dest: id32(36),
        id: id16(68),
        reply_to: id16(84),
        target,
    };
    let payload = bytes.slice(body_start..bytes.len() - trailer);
    Ok(Envelope {
        header,
        payload,
        signed,
        bytes,
    })
}

impl Envelope {
    /// Whether the envelope is signed by the key of its source (strict Ed25519).
    pub fn verify(&self) -> bool {
        if !self.signed {
            return false;
        }
        let n = self.bytes.len();
        let body = &self.bytes[..n - 64];
        let mut key = [0u8; 32];
        key.copy_from_slice(&self.bytes[n - SIGNATURE_TRAILER..n - 64]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&self.bytes[n - 64..]);
        NodeId::derive(&key) == self.header.source
            && verify_strict(&key, &signed_message([body, &[], &[]]), &sig)
    }

    /// The encoding with `hop_count` one higher, for the next link.
    pub(crate) fn forwarded(&self) -> Bytes {
        let mut b = BytesMut::from(&self.bytes[..]);
        b[HOP_OFFSET] = self.header.hop_count.saturating_add(1);
        b.freeze()
    }

    /// The whole encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// The joined encoding of a static payload.
    fn enc(h: &Header, payload: &'static [u8], signer: Option<&Identity>) -> Bytes {
        encode(h, Bytes::from_static(payload), signer).to_bytes()
    }

    fn header(source: NodeId, dest: NodeId, target: Target) -> Header {
        Header {
            kind: Kind::Request,
            hop_count: 0,
            attempt: 2,
            source,
            dest,
            id: [7; 16],
            reply_to: [0; 16],
            target,
        }
    }

    #[test]
    fn round_trips_every_target_signed_and_not() {
        let mut rng = Rng::from_seed([1; 32]);
        let a = Identity::generate(&mut rng);
        let b = Identity::generate(&mut rng);
        for target in [Target::Node, Target::Pid(42), Target::Service("kv".into())] {
            let h = header(a.node_id(), b.node_id(), target);
            for signer in [None, Some(&a)] {
                let bytes = enc(&h, b"payload", signer);
                let e = decode(bytes).unwrap();
                assert_eq!(e.header, h);
                assert_eq!(&e.payload[..], b"payload");
                assert_eq!(e.verify(), signer.is_some());
            }
        }
    }

    #[test]
    fn relays_may_count_hops_but_not_change_anything_else() {
        let mut rng = Rng::from_seed([2; 32]);
        let a = Identity::generate(&mut rng);
        let b = Identity::generate(&mut rng);
        let bytes = enc(
            &header(a.node_id(), b.node_id(), Target::Node),
            b"x",
            Some(&a),
        );
        let e = decode(bytes.clone()).unwrap();
        let hop = decode(e.forwarded()).unwrap();
        assert_eq!(hop.header.hop_count, 1);
        assert!(hop.verify());
        for at in [0usize, 3, 4, 40, 70, 90, 100, 101, bytes.len() - 1] {
            let mut forged = bytes.to_vec();
            forged[at] ^= 0x01;
            if let Ok(e) = decode(Bytes::from(forged)) {
                assert!(!e.verify(), "flip at {at} still verifies");
            }
        }
    }

    #[test]
    fn a_signature_by_another_key_is_rejected() {
        let mut rng = Rng::from_seed([3; 32]);
        let a = Identity::generate(&mut rng);
        let mallory = Identity::generate(&mut rng);
        // Mallory claims to be `a` but can only sign with her own key.
        let e = decode(enc(
            &header(a.node_id(), mallory.node_id(), Target::Node),
            b"x",
            Some(&mallory),
        ))
        .unwrap();
        assert!(!e.verify());
    }

    #[test]
    fn rejects_truncation_and_unknown_fields_without_panicking() {
        let mut rng = Rng::from_seed([4; 32]);
        let a = Identity::generate(&mut rng);
        let bytes = enc(
            &header(a.node_id(), a.node_id(), Target::Service("s".into())),
            b"",
            Some(&a),
        );
        for n in 0..bytes.len() {
            assert!(decode(bytes.slice(..n)).is_err(), "prefix {n}");
        }
        let mut bad = bytes.to_vec();
        bad[1] = 0x02;
        assert_eq!(decode(Bytes::from(bad)).unwrap_err(), DecodeError::Invalid);
        let mut bad = bytes.to_vec();
        bad[0] = 0x20;
        assert_eq!(decode(Bytes::from(bad)).unwrap_err(), DecodeError::Invalid);
    }
}
