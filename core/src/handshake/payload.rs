//! The handshake payloads, encoded as CBOR maps with small unsigned-integer keys
//! (PROTOCOL.md §4). Keys must be ascending and unique; unknown keys are skipped, so
//! later versions can add fields.

use alloc::vec::Vec;

use minicbor::{Decoder, Encoder};

use crate::NodeId;

/// Most entries a payload map may declare (bounds the work before the first check).
const MAX_MAP_ENTRIES: u64 = 64;

/// The WeftHandshake hello each side sends (signed as part of its identity proof).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Hello {
    /// The sender's node id.
    pub node_id: NodeId,
    /// Hash of the governance genesis block; must equal ours.
    pub governance_genesis_hash: [u8; 32],
    /// The sender's governance version.
    pub governance_version: u64,
    /// Capability bits (none defined yet; unknown bits are ignored).
    pub capabilities: u64,
    /// Whether the sender is willing to run the ML-KEM-768 upgrade.
    pub kem_supported: bool,
    /// Sequence number of the sender's chain head.
    pub chain_seq: u64,
    /// Bit set of the sync streams the sender supports.
    pub supported_sync_streams: u64,
}

/// The initiator's cleartext first XX payload: flags and the optional ML-KEM key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct PreHello<'a> {
    pub flags: u64,
    pub ek: Option<&'a [u8]>,
}

/// Flag bit: the initiator offers the ML-KEM-768 upgrade (the key follows).
pub(crate) const FLAG_KEM_OFFERED: u64 = 1;

/// An encrypted handshake payload: the signed hello and KEM material.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Payload<'a> {
    /// The encoded [`Hello`], exactly as signed.
    pub hello: &'a [u8],
    pub signing_key: [u8; 32],
    /// Absent only in the IK initiator's first message, whose proof follows in its
    /// first record (signed over the final handshake hash).
    pub signature: Option<[u8; 64]>,
    /// IK only: the initiator's ML-KEM encapsulation key.
    pub ek: Option<&'a [u8]>,
    /// Responder only: the ML-KEM ciphertext.
    pub ct: Option<&'a [u8]>,
}

/// The payload is not valid CBOR of the expected shape.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Malformed;

impl From<minicbor::decode::Error> for Malformed {
    fn from(_: minicbor::decode::Error) -> Self {
        Malformed
    }
}

type Enc = Encoder<Vec<u8>>;

fn finish(e: Enc) -> Vec<u8> {
    e.into_writer()
}

// Writing to a Vec cannot fail; the `expect`s below document that, not network input.
const VEC_WRITE: &str = "writing CBOR to a Vec is infallible";

impl Hello {
    /// The CBOR encoding (PROTOCOL.md §4.5).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::with_capacity(128));
        e.map(7).expect(VEC_WRITE);
        e.u8(0)
            .and_then(|e| e.bytes(self.node_id.as_bytes()))
            .expect(VEC_WRITE);
        e.u8(1)
            .and_then(|e| e.bytes(&self.governance_genesis_hash))
            .expect(VEC_WRITE);
        e.u8(2)
            .and_then(|e| e.u64(self.governance_version))
            .expect(VEC_WRITE);
        e.u8(3)
            .and_then(|e| e.u64(self.capabilities))
            .expect(VEC_WRITE);
        e.u8(4)
            .and_then(|e| e.bool(self.kem_supported))
            .expect(VEC_WRITE);
        e.u8(5)
            .and_then(|e| e.u64(self.chain_seq))
            .expect(VEC_WRITE);
        e.u8(6)
            .and_then(|e| e.u64(self.supported_sync_streams))
            .expect(VEC_WRITE);
        finish(e)
    }

    /// Decode a hello (PROTOCOL.md §4.5); unknown keys are skipped.
    pub fn decode(bytes: &[u8]) -> Result<Hello, Malformed> {
        let (mut node_id, mut genesis) = (None, None);
        let mut hello = Hello {
            node_id: NodeId::from_bytes([0; 32]),
            governance_genesis_hash: [0; 32],
            governance_version: 0,
            capabilities: 0,
            kem_supported: false,
            chain_seq: 0,
            supported_sync_streams: 0,
        };
        decode_map(bytes, |key, d| {
            match key {
                0 => node_id = Some(fixed::<32>(d)?),
                1 => genesis = Some(fixed::<32>(d)?),
                2 => hello.governance_version = d.u64()?,
                3 => hello.capabilities = d.u64()?,
                4 => hello.kem_supported = d.bool()?,
                5 => hello.chain_seq = d.u64()?,
                6 => hello.supported_sync_streams = d.u64()?,
                _ => d.skip()?,
            }
            Ok(())
        })?;
        hello.node_id = NodeId::from_bytes(node_id.ok_or(Malformed)?);
        hello.governance_genesis_hash = genesis.ok_or(Malformed)?;
        Ok(hello)
    }
}

impl<'a> PreHello<'a> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::with_capacity(self.ek.map_or(0, <[u8]>::len) + 16));
        e.map(if self.ek.is_some() { 2 } else { 1 })
            .expect(VEC_WRITE);
        e.u8(0).and_then(|e| e.u64(self.flags)).expect(VEC_WRITE);
        if let Some(ek) = self.ek {
            e.u8(1).and_then(|e| e.bytes(ek)).expect(VEC_WRITE);
        }
        finish(e)
    }

    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self, Malformed> {
        let mut flags = None;
        let mut ek = None;
        decode_map(bytes, |key, d| {
            match key {
                0 => flags = Some(d.u64()?),
                1 => ek = Some(d.bytes()?),
                _ => d.skip()?,
            }
            Ok(())
        })?;
        Ok(PreHello {
            flags: flags.ok_or(Malformed)?,
            ek,
        })
    }
}

impl<'a> Payload<'a> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let extra = self.ek.map_or(0, <[u8]>::len) + self.ct.map_or(0, <[u8]>::len);
        let mut e = Encoder::new(Vec::with_capacity(self.hello.len() + extra + 128));
        let n = 2
            + u64::from(self.signature.is_some())
            + u64::from(self.ek.is_some())
            + u64::from(self.ct.is_some());
        e.map(n).expect(VEC_WRITE);
        e.u8(0).and_then(|e| e.bytes(self.hello)).expect(VEC_WRITE);
        e.u8(1)
            .and_then(|e| e.bytes(&self.signing_key))
            .expect(VEC_WRITE);
        if let Some(signature) = &self.signature {
            e.u8(2).and_then(|e| e.bytes(signature)).expect(VEC_WRITE);
        }
        if let Some(ek) = self.ek {
            e.u8(3).and_then(|e| e.bytes(ek)).expect(VEC_WRITE);
        }
        if let Some(ct) = self.ct {
            e.u8(4).and_then(|e| e.bytes(ct)).expect(VEC_WRITE);
        }
        finish(e)
    }

    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self, Malformed> {
        let (mut hello, mut key, mut sig, mut ek, mut ct) = (None, None, None, None, None);
        decode_map(bytes, |k, d| {
            match k {
                0 => hello = Some(d.bytes()?),
                1 => key = Some(fixed::<32>(d)?),
                2 => sig = Some(fixed::<64>(d)?),
                3 => ek = Some(d.bytes()?),
                4 => ct = Some(d.bytes()?),
                _ => d.skip()?,
            }
            Ok(())
        })?;
        Ok(Payload {
            hello: hello.ok_or(Malformed)?,
            signing_key: key.ok_or(Malformed)?,
            signature: sig,
            ek,
            ct,
        })
    }
}

/// A definite-length byte string of exactly `N` bytes.
fn fixed<const N: usize>(d: &mut Decoder<'_>) -> Result<[u8; N], Malformed> {
    d.bytes()?.try_into().map_err(|_| Malformed)
}

/// Walk a definite-length map with ascending unique unsigned keys that fills the
/// whole input, handing each key and the decoder (positioned at the value) to `field`.
fn decode_map<'b>(
    bytes: &'b [u8],
    mut field: impl FnMut(u64, &mut Decoder<'b>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let mut d = Decoder::new(bytes);
    let entries = d.map()?.ok_or(Malformed)?;
    if entries > MAX_MAP_ENTRIES {
        return Err(Malformed);
    }
    let mut last = None;
    for _ in 0..entries {
        let key = d.u64()?;
        if last.is_some_and(|l| key <= l) {
            return Err(Malformed);
        }
        last = Some(key);
        field(key, &mut d)?;
    }
    if d.position() != bytes.len() {
        return Err(Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            node_id: NodeId::from_bytes([1; 32]),
            governance_genesis_hash: [2; 32],
            governance_version: 3,
            capabilities: 4,
            kem_supported: true,
            chain_seq: 5,
            supported_sync_streams: 6,
        }
    }

    #[test]
    fn hello_round_trips_and_has_the_documented_bytes() {
        let bytes = hello().encode();
        assert_eq!(Hello::decode(&bytes).unwrap(), hello());
        // a7 = map(7); 00 58 20 = key 0, bytes(32)
        assert_eq!(&bytes[..4], &[0xa7, 0x00, 0x58, 0x20]);
    }

    #[test]
    fn unknown_keys_are_skipped_but_order_and_trailing_bytes_are_enforced() {
        let mut e = Encoder::new(Vec::new());
        e.map(3).unwrap();
        e.u8(0).unwrap().u64(1).unwrap();
        e.u8(7)
            .unwrap()
            .array(2)
            .unwrap()
            .str("x")
            .unwrap()
            .map(0)
            .unwrap();
        e.u8(9).unwrap().bytes(b"future").unwrap();
        let bytes = e.into_writer();
        assert_eq!(
            PreHello::decode(&bytes).unwrap(),
            PreHello { flags: 1, ek: None }
        );

        let mut e = Encoder::new(Vec::new());
        e.map(2)
            .unwrap()
            .u8(1)
            .unwrap()
            .bytes(b"k")
            .unwrap()
            .u8(0)
            .unwrap()
            .u64(1)
            .unwrap();
        assert_eq!(
            PreHello::decode(&e.into_writer()),
            Err(Malformed),
            "descending keys"
        );

        let mut trailing = PreHello { flags: 0, ek: None }.encode();
        trailing.push(0);
        assert_eq!(PreHello::decode(&trailing), Err(Malformed));
        assert_eq!(
            PreHello::decode(&[0xbf, 0xff]),
            Err(Malformed),
            "indefinite map"
        );
        assert_eq!(PreHello::decode(&[]), Err(Malformed));
    }

    #[test]
    fn payload_round_trips_and_requires_its_fields() {
        let hello_bytes = hello().encode();
        let p = Payload {
            hello: &hello_bytes,
            signing_key: [7; 32],
            signature: Some([8; 64]),
            ek: None,
            ct: Some(b"ct"),
        };
        let bytes = p.encode();
        assert_eq!(Payload::decode(&bytes).unwrap(), p);
        let mut e = Encoder::new(Vec::new());
        e.map(1)
            .unwrap()
            .u8(0)
            .unwrap()
            .bytes(&hello_bytes)
            .unwrap();
        assert_eq!(Payload::decode(&e.into_writer()), Err(Malformed));
    }
}
