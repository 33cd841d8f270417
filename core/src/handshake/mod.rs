//! The authenticated key exchange: Noise XX or IK (via `snow`) carrying the
//! WeftHandshake hello and an Ed25519 identity proof, with the optional hybrid
//! X25519 + ML-KEM-768 upgrade that costs no extra round trip.
//!
//! ```text
//! XX  I->R  [ver][pattern] e            pre-hello {flags, ML-KEM ek?}       (clear, hashed)
//!     R->I  e, ee, s, es                {hello_R, proof_R, ct?}
//!     I->R  s, se                       {hello_I, proof_I}
//! IK  I->R  [ver][pattern] e, es, s, ss {hello_I, ek?}                   (unsigned)
//!     R->I  e, ee, se                   {hello_R, proof_R, ct?}
//!     I->R  first record                Handshake frame: proof_I over the final h
//! ```
//!
//! [`Handshake`] works on whole transport bodies; [`crate::link::Link`] adds the
//! transport framing and timeouts. Nothing about the peer is committed until the
//! handshake finishes: a replayed first message only costs the responder CPU (an IK
//! responder waits for the initiator's proof in its first record before it reports
//! the peer).
//!
//! Rejections found by the responder while it can still finish (a genesis
//! mismatch, a policy violation, ...) are *deferred*: it completes the handshake
//! so that it can tell the initiator why in an encrypted Close frame, then closes.
//! The initiator rejects at once and reveals nothing more.

mod crypto;
pub(crate) mod hybrid;
pub mod payload;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use snow::HandshakeState;
use zeroize::Zeroizing;

use crate::frame::{self, FrameType, Header};
use crate::identity::verify_strict;
use crate::{CloseReason, Identity, NodeId, PublicIdentity, Rng, PROTOCOL_VERSION};
use hybrid::KemKeypair;
pub use payload::Hello;
use payload::{Payload, PreHello, FLAG_KEM_OFFERED};

/// Noise protocol name of the XX pattern.
pub const NOISE_XX: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Noise protocol name of the IK pattern.
pub const NOISE_IK: &str = "Noise_IK_25519_ChaChaPoly_SHA256";
/// First bytes of the Noise prologue; the version and pattern bytes follow.
pub const PROLOGUE_LABEL: &[u8] = b"weft-mesh";
/// First bytes of every signed identity proof.
pub const PROOF_LABEL: &[u8] = b"weft-mesh/1 identity-proof";

/// Which Noise pattern a handshake runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Pattern {
    /// Three messages; neither side needs to know the other's keys in advance.
    XX = 1,
    /// Two messages; the initiator knows the responder's static key.
    IK = 2,
}

impl Pattern {
    fn noise_name(self) -> &'static str {
        match self {
            Pattern::XX => NOISE_XX,
            Pattern::IK => NOISE_IK,
        }
    }

    fn prologue(self) -> [u8; 11] {
        let mut p = [0u8; 11];
        p[..9].copy_from_slice(PROLOGUE_LABEL);
        p[9] = PROTOCOL_VERSION;
        p[10] = self as u8;
        p
    }
}

/// Whether sessions must, may or must not use the ML-KEM-768 upgrade.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum PqPolicy {
    /// Only hybrid sessions; a classical peer is rejected with `PolicyViolation`.
    Require,
    /// Offer and accept the upgrade, but allow classical peers.
    #[default]
    Prefer,
    /// Never offer or accept the upgrade.
    Off,
}

/// What this node says about itself in the hello, and its PQ policy.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HandshakeConfig {
    /// Hash of the governance genesis block; peers with another one are rejected.
    pub genesis: [u8; 32],
    /// Our governance version.
    pub governance_version: u64,
    /// Capability bits.
    pub capabilities: u64,
    /// Our chain head sequence number.
    pub chain_seq: u64,
    /// Bit set of the sync streams we support.
    pub supported_sync_streams: u64,
    /// Post-quantum policy.
    pub pq: PqPolicy,
}

impl HandshakeConfig {
    /// A configuration for the cluster with this genesis hash, PQ `Prefer`.
    pub fn new(genesis: [u8; 32]) -> Self {
        HandshakeConfig {
            genesis,
            governance_version: 0,
            capabilities: 0,
            chain_seq: 0,
            supported_sync_streams: 0,
            pq: PqPolicy::Prefer,
        }
    }
}

/// Who the initiator expects to reach.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Remote {
    /// Any node of the cluster (XX).
    Any,
    /// A specific node whose static key is not known (XX, then checked).
    Node(NodeId),
    /// A node whose static key is known (IK).
    Known(PublicIdentity),
}

/// The authenticated peer of a finished handshake.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    /// The peer's id and keys (the static key is the one Noise authenticated).
    pub identity: PublicIdentity,
    /// The peer's hello.
    pub hello: Hello,
    /// Whether the session keys include the ML-KEM-768 secret.
    pub hybrid: bool,
    /// The Noise pattern used.
    pub pattern: Pattern,
    /// Whether we initiated.
    pub initiator: bool,
    /// The final handshake hash (identifies the session; both sides agree on it).
    pub handshake_hash: [u8; 32],
}

/// Keys and peer of a finished handshake.
pub(crate) struct Finished {
    pub send_key: Zeroizing<[u8; 32]>,
    pub recv_key: Zeroizing<[u8; 32]>,
    /// The authenticated peer; `None` only when `deferred_reject` is set.
    pub peer: Option<PeerInfo>,
    /// A rejection the responder deferred so it could send the reason encrypted.
    pub deferred_reject: Option<CloseReason>,
    /// IK initiator: its identity proof over the final handshake hash, to send as the
    /// first frame of its first record.
    pub proof: Option<[u8; 64]>,
    /// IK responder: what the initiator's proof must verify against.
    pub confirmation: Option<Confirmation>,
}

/// The IK responder's pending check of the initiator's identity proof, which arrives in
/// the initiator's first record because only then can it cover the whole handshake.
pub(crate) struct Confirmation {
    signing_key: [u8; 32],
    static_key: [u8; 32],
    hello: Vec<u8>,
    handshake_hash: [u8; 32],
}

impl Confirmation {
    /// Check the proof frame's payload (the 64-byte signature).
    pub(crate) fn verify(&self, proof: &[u8]) -> Result<(), CloseReason> {
        let signature: &[u8; 64] = proof.try_into().map_err(|_| CloseReason::MalformedFrame)?;
        let message = proof_message(b'I', &self.handshake_hash, &self.static_key, &self.hello);
        if verify_strict(&self.signing_key, &message, signature) {
            Ok(())
        } else {
            Err(CloseReason::BadSignature)
        }
    }
}

/// One side of a handshake in progress.
pub struct Handshake {
    noise: Option<HandshakeState>,
    pattern: Pattern,
    initiator: bool,
    messages: u8,
    identity: Arc<Identity>,
    config: HandshakeConfig,
    rng: Rng,
    expected: Option<NodeId>,
    kem: Option<KemKeypair>,
    peer_ek: Option<Vec<u8>>,
    shared: Option<Zeroizing<[u8; 32]>>,
    peer: Option<(PublicIdentity, Hello)>,
    deferred: Option<CloseReason>,
    /// IK: the initiator's hello bytes (ours as initiator, theirs as responder), which
    /// the proof in the first record signs.
    ik_hello: Option<Vec<u8>>,
    /// Test hook: rewrites our CBOR payload before it is framed and encrypted.
    #[cfg(test)]
    tamper: Option<fn(&mut Vec<u8>)>,
}

impl core::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handshake")
            .field("pattern", &self.pattern)
            .field("initiator", &self.initiator)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

fn build(
    pattern: Pattern,
    identity: &Identity,
    rng: &mut Rng,
    remote_static: Option<&[u8; 32]>,
    initiator: bool,
) -> HandshakeState {
    let params = pattern
        .noise_name()
        .parse()
        .expect("static Noise protocol names parse");
    let prologue = pattern.prologue();
    let resolver = crypto::SeededResolver::new(rng)
        .with_static(identity.static_secret(), &identity.public().static_key);
    let resolver = alloc::boxed::Box::new(resolver);
    let mut builder = snow::Builder::with_resolver(params, resolver)
        .prologue(&prologue)
        .and_then(|b| b.local_private_key(identity.static_secret()))
        .expect("prologue and key are set once");
    if let Some(rs) = remote_static {
        builder = builder
            .remote_public_key(rs)
            .expect("remote key is set once");
    }
    let built = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    built.expect("the resolver provides every primitive of these patterns")
}

impl Handshake {
    /// Start a handshake as the dialing side. `Remote::Known` selects IK, else XX.
    pub fn initiator(
        config: HandshakeConfig,
        identity: Arc<Identity>,
        remote: Remote,
        mut rng: Rng,
    ) -> Self {
        let (pattern, expected, rs) = match remote {
            Remote::Any => (Pattern::XX, None, None),
            Remote::Node(id) => (Pattern::XX, Some(id), None),
            Remote::Known(p) => (Pattern::IK, Some(p.node_id), Some(p.static_key)),
        };
        let noise = build(pattern, &identity, &mut rng, rs.as_ref(), true);
        let kem = (config.pq != PqPolicy::Off).then(|| KemKeypair::generate(&mut rng));
        let mut hs = Handshake::new(config, identity, rng, true);
        hs.noise = Some(noise);
        hs.pattern = pattern;
        hs.expected = expected;
        hs.kem = kem;
        hs
    }

    /// Start a handshake as the accepting side; the pattern comes from the first message.
    pub fn responder(config: HandshakeConfig, identity: Arc<Identity>, rng: Rng) -> Self {
        Handshake::new(config, identity, rng, false)
    }

    fn new(config: HandshakeConfig, identity: Arc<Identity>, rng: Rng, initiator: bool) -> Self {
        Handshake {
            noise: None,
            pattern: Pattern::XX,
            initiator,
            messages: 0,
            identity,
            config,
            rng,
            expected: None,
            kem: None,
            peer_ek: None,
            shared: None,
            peer: None,
            deferred: None,
            ik_hello: None,
            #[cfg(test)]
            tamper: None,
        }
    }

    /// Whether the next message is ours to write.
    pub fn is_my_turn(&self) -> bool {
        self.noise
            .as_ref()
            .is_some_and(|n| n.is_my_turn() && !n.is_handshake_finished())
    }

    /// Whether all handshake messages have been written and read.
    pub fn is_finished(&self) -> bool {
        self.noise
            .as_ref()
            .is_some_and(HandshakeState::is_handshake_finished)
    }

    /// Write our next message: one transport body.
    pub fn write_message(&mut self) -> Result<Vec<u8>, CloseReason> {
        let noise = self.noise.as_ref().ok_or(CloseReason::MalformedHandshake)?;
        let h_prev = hash32(noise.get_handshake_hash());
        let payload = match (self.pattern, self.initiator, self.messages) {
            (Pattern::XX, true, 0) => {
                let ek = self.kem.as_ref().map(KemKeypair::encapsulation_key);
                let flags = if ek.is_some() { FLAG_KEM_OFFERED } else { 0 };
                PreHello {
                    flags,
                    ek: ek.as_deref(),
                }
                .encode()
            }
            (Pattern::IK, true, 0) => {
                // Unsigned: h here would be the same for every IK dial to this responder,
                // so the proof follows in the first record, over the final hash.
                let ek = self.kem.as_ref().map(KemKeypair::encapsulation_key);
                let hello = self.hello().encode();
                let signing_key = self.identity.public().signing_key;
                let payload = Payload {
                    hello: &hello,
                    signing_key,
                    signature: None,
                    ek: ek.as_deref(),
                    ct: None,
                };
                let payload = payload.encode();
                self.ik_hello = Some(hello);
                payload
            }
            (_, false, 1) => {
                let ct = self.encapsulate_for_peer();
                self.signed_payload(&h_prev, None, ct.as_deref())
            }
            (Pattern::XX, true, 2) => self.signed_payload(&h_prev, None, None),
            _ => return Err(CloseReason::MalformedHandshake),
        };
        #[cfg(test)]
        let payload = {
            let mut payload = payload;
            if let Some(tamper) = self.tamper {
                tamper(&mut payload);
            }
            payload
        };
        let mut framed = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::encode(FrameType::Handshake, &payload, &mut framed);
        let prefix = if self.initiator && self.messages == 0 {
            2
        } else {
            0
        };
        let mut body = vec![0u8; prefix + framed.len() + 64 + 48];
        body[..prefix].copy_from_slice(&[PROTOCOL_VERSION, self.pattern as u8][..prefix]);
        let noise = self.noise.as_mut().ok_or(CloseReason::MalformedHandshake)?;
        let n = noise
            .write_message(&framed, &mut body[prefix..])
            .map_err(noise_error)?;
        body.truncate(prefix + n);
        self.messages += 1;
        Ok(body)
    }

    /// Read the peer's next message (one transport body).
    pub fn read_message(&mut self, mut body: &[u8]) -> Result<(), CloseReason> {
        if self.noise.is_none() {
            let [version, pattern, rest @ ..] = body else {
                return Err(CloseReason::MalformedHandshake);
            };
            if *version != PROTOCOL_VERSION {
                return Err(CloseReason::UnsupportedVersion);
            }
            self.pattern = match pattern {
                1 => Pattern::XX,
                2 => Pattern::IK,
                _ => return Err(CloseReason::MalformedHandshake),
            };
            self.noise = Some(build(
                self.pattern,
                &self.identity,
                &mut self.rng,
                None,
                false,
            ));
            body = rest;
        }
        let noise = self.noise.as_mut().ok_or(CloseReason::MalformedHandshake)?;
        if noise.is_my_turn() || noise.is_handshake_finished() {
            return Err(CloseReason::MalformedHandshake);
        }
        let h_prev = hash32(noise.get_handshake_hash());
        let mut plain = vec![0u8; body.len()];
        let n = noise.read_message(body, &mut plain).map_err(noise_error)?;
        let remote_static = noise.get_remote_static().map(hash32);
        let payload = handshake_frame(&plain[..n])?;
        let index = self.messages;
        self.messages += 1;
        match (self.pattern, self.initiator, index) {
            (Pattern::XX, false, 0) => {
                let pre = PreHello::decode(payload).map_err(|_| CloseReason::MalformedHandshake)?;
                if (pre.flags & FLAG_KEM_OFFERED != 0) != pre.ek.is_some() {
                    return Err(CloseReason::InconsistentOffer);
                }
                self.accept_offer(pre.ek)
            }
            (Pattern::IK, false, 0) | (Pattern::XX, false, 2) => {
                let p = Payload::decode(payload).map_err(|_| CloseReason::MalformedHandshake)?;
                if index == 0 {
                    self.accept_offer(p.ek)?;
                }
                let offered = self.peer_ek.is_some();
                let signed = (index == 2).then_some((&h_prev, b'I'));
                let checked = self
                    .check_peer(&p, signed, remote_static)
                    .and_then(|(id, hello)| {
                        if p.ct.is_some()
                            || (index == 2 && p.ek.is_some())
                            || hello.kem_supported != offered
                        {
                            return Err(CloseReason::InconsistentOffer);
                        }
                        Ok((id, hello))
                    });
                match checked {
                    Ok(peer) => {
                        if index == 0 {
                            self.ik_hello = Some(p.hello.to_vec());
                        }
                        self.peer = Some(peer)
                    }
                    Err(reason) if self.is_finished() || index == 0 => self.defer(reason),
                    Err(reason) => return Err(reason),
                }
                Ok(())
            }
            (_, true, 1) => {
                let p = Payload::decode(payload).map_err(|_| CloseReason::MalformedHandshake)?;
                let (id, hello) = self.check_peer(&p, Some((&h_prev, b'R')), remote_static)?;
                if p.ek.is_some() || (p.ct.is_some() && !hello.kem_supported) {
                    return Err(CloseReason::InconsistentOffer);
                }
                match (&self.kem, p.ct) {
                    (Some(kp), Some(ct)) => {
                        self.shared =
                            Some(kp.decapsulate(ct).ok_or(CloseReason::MalformedHandshake)?);
                    }
                    (None, Some(_)) => return Err(CloseReason::InconsistentOffer),
                    (_, None) if self.config.pq == PqPolicy::Require => {
                        return Err(CloseReason::PolicyViolation)
                    }
                    (_, None) => {}
                }
                self.peer = Some((id, hello));
                Ok(())
            }
            _ => Err(CloseReason::MalformedHandshake),
        }
    }

    /// Derive the session keys once both sides have spoken their last message.
    pub(crate) fn finish(mut self) -> Result<Finished, CloseReason> {
        let mut noise = self
            .noise
            .take()
            .filter(HandshakeState::is_handshake_finished)
            .ok_or(CloseReason::MalformedHandshake)?;
        let h = hash32(noise.get_handshake_hash());
        let (k1, k2) = noise.dangerously_get_raw_split();
        let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
        let (i2r, r2i) = match &self.shared {
            Some(ss) => hybrid::hybrid_keys(&k1, &k2, ss, &h),
            None => (k1, k2),
        };
        let (send_key, recv_key) = if self.initiator {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        };
        let deferred_reject = self.deferred;
        let hybrid = self.shared.is_some();
        let peer = self.peer.take().map(|(identity, hello)| PeerInfo {
            identity,
            hello,
            hybrid,
            pattern: self.pattern,
            initiator: self.initiator,
            handshake_hash: h,
        });
        if peer.is_none() && deferred_reject.is_none() {
            return Err(CloseReason::MalformedHandshake);
        }
        let (proof, confirmation) = match (self.pattern, self.initiator, &self.ik_hello) {
            (Pattern::IK, true, Some(hello)) => {
                let me = self.identity.public();
                (
                    Some(
                        self.identity
                            .sign(&proof_message(b'I', &h, &me.static_key, hello)),
                    ),
                    None,
                )
            }
            (Pattern::IK, false, Some(hello)) => {
                let confirmation = peer.as_ref().map(|p| Confirmation {
                    signing_key: p.identity.signing_key,
                    static_key: p.identity.static_key,
                    hello: hello.clone(),
                    handshake_hash: h,
                });
                (None, confirmation)
            }
            _ => (None, None),
        };
        Ok(Finished {
            send_key,
            recv_key,
            peer,
            deferred_reject,
            proof,
            confirmation,
        })
    }

    /// The rejection the responder is holding back until it can send it encrypted.
    pub fn deferred_reject(&self) -> Option<CloseReason> {
        self.deferred
    }

    fn defer(&mut self, reason: CloseReason) {
        self.deferred.get_or_insert(reason);
    }

    /// Responder: remember the initiator's KEM offer (or defer a policy rejection).
    fn accept_offer(&mut self, ek: Option<&[u8]>) -> Result<(), CloseReason> {
        match ek {
            Some(ek) if ek.len() != hybrid::EK_LEN => return Err(CloseReason::MalformedHandshake),
            Some(ek) => self.peer_ek = Some(ek.to_vec()),
            None if self.config.pq == PqPolicy::Require => self.defer(CloseReason::PolicyViolation),
            None => {}
        }
        Ok(())
    }

    /// Responder: the ciphertext for the initiator's key, if we take the upgrade.
    fn encapsulate_for_peer(&mut self) -> Option<Vec<u8>> {
        if self.config.pq == PqPolicy::Off {
            return None;
        }
        let ek = self.peer_ek.as_deref()?;
        match hybrid::encapsulate(ek, &mut self.rng) {
            Some((ct, ss)) => {
                self.shared = Some(ss);
                Some(ct)
            }
            None => {
                self.defer(CloseReason::MalformedHandshake);
                None
            }
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            node_id: self.identity.node_id(),
            governance_genesis_hash: self.config.genesis,
            governance_version: self.config.governance_version,
            capabilities: self.config.capabilities,
            kem_supported: self.config.pq != PqPolicy::Off,
            chain_seq: self.config.chain_seq,
            supported_sync_streams: self.config.supported_sync_streams,
        }
    }

    fn signed_payload(&self, h_prev: &[u8; 32], ek: Option<&[u8]>, ct: Option<&[u8]>) -> Vec<u8> {
        let hello = self.hello().encode();
        let role = if self.initiator { b'I' } else { b'R' };
        let me = self.identity.public();
        let signature = self
            .identity
            .sign(&proof_message(role, h_prev, &me.static_key, &hello));
        Payload {
            hello: &hello,
            signing_key: me.signing_key,
            signature: Some(signature),
            ek,
            ct,
        }
        .encode()
    }

    /// Check the peer's identity proof and hello; the KEM checks are the caller's.
    /// `signed` is `(h before the message, sender's role)`, or `None` for the IK
    /// initiator's first message, which must be unsigned (its proof comes later).
    fn check_peer(
        &self,
        p: &Payload<'_>,
        signed: Option<(&[u8; 32], u8)>,
        remote_static: Option<[u8; 32]>,
    ) -> Result<(PublicIdentity, Hello), CloseReason> {
        let hello = Hello::decode(p.hello).map_err(|_| CloseReason::MalformedHandshake)?;
        let static_key = remote_static.ok_or(CloseReason::MalformedHandshake)?;
        if NodeId::derive(&p.signing_key) != hello.node_id {
            return Err(CloseReason::NodeIdMismatch);
        }
        match (signed, &p.signature) {
            (Some((h_prev, role)), Some(signature)) => {
                let message = proof_message(role, h_prev, &static_key, p.hello);
                if !verify_strict(&p.signing_key, &message, signature) {
                    return Err(CloseReason::BadSignature);
                }
            }
            (None, None) => {}
            _ => return Err(CloseReason::MalformedHandshake),
        }
        if hello.node_id == self.identity.node_id() {
            return Err(CloseReason::OwnNodeId);
        }
        if self.expected.is_some_and(|e| e != hello.node_id) {
            return Err(CloseReason::UnexpectedPeer);
        }
        if hello.governance_genesis_hash != self.config.genesis {
            return Err(CloseReason::GenesisMismatch);
        }
        let identity = PublicIdentity {
            node_id: hello.node_id,
            signing_key: p.signing_key,
            static_key,
        };
        Ok((identity, hello))
    }
}

/// The bytes an identity proof signs:
/// `PROOF_LABEL || role || h || static_key || hello`, where `role` is `'I'` or `'R'`,
/// `h` the handshake hash before the message and `static_key` the sender's X25519 key.
fn proof_message(role: u8, h_prev: &[u8; 32], static_key: &[u8; 32], hello: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROOF_LABEL.len() + 1 + 64 + hello.len());
    m.extend_from_slice(PROOF_LABEL);
    m.push(role);
    m.extend_from_slice(h_prev);
    m.extend_from_slice(static_key);
    m.extend_from_slice(hello);
    m
}

fn noise_error(e: snow::Error) -> CloseReason {
    match e {
        snow::Error::Dh => CloseReason::SmallOrderKey,
        snow::Error::Decrypt => CloseReason::HandshakeFailed,
        _ => CloseReason::MalformedHandshake,
    }
}

/// The payload of the single whole Handshake frame a Noise payload must be.
fn handshake_frame(plain: &[u8]) -> Result<&[u8], CloseReason> {
    let (head, rest) = plain
        .split_first_chunk::<{ frame::HEADER_LEN }>()
        .ok_or(CloseReason::MalformedHandshake)?;
    let header =
        Header::parse(head, frame::MAX_FRAME_LEN).map_err(|_| CloseReason::MalformedHandshake)?;
    if header.frame_type != FrameType::Handshake || header.more || header.payload_len != rest.len()
    {
        return Err(CloseReason::MalformedHandshake);
    }
    Ok(rest)
}

fn hash32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
