//! Fuzz harnesses of [`weft_mesh::handshake::Hello`]'s CBOR encoding.
//!
//! The hello is a definite-length CBOR map with ascending unique unsigned keys 0..=6
//! (node id and genesis are required 32-byte strings; the rest default to 0/false),
//! unknown keys are skipped, and the map must fill the input exactly. The harnesses
//! encode hellos independently with the small CBOR writer below and check the decoder
//! against that description.

use bolero::{check, TypeGenerator};
use weft_mesh::handshake::Hello;
use weft_mesh::NodeId;

/// The field values of a hello, as the fuzzer chooses them.
#[derive(Clone, Debug, TypeGenerator)]
struct Fields {
    node_id: [u8; 32],
    genesis: [u8; 32],
    governance_version: u64,
    capabilities: u64,
    kem_supported: bool,
    chain_seq: u64,
    supported_sync_streams: u64,
}

impl Fields {
    fn hello(&self) -> Hello {
        Hello {
            node_id: NodeId::from_bytes(self.node_id),
            governance_genesis_hash: self.genesis,
            governance_version: self.governance_version,
            capabilities: self.capabilities,
            kem_supported: self.kem_supported,
            chain_seq: self.chain_seq,
            supported_sync_streams: self.supported_sync_streams,
        }
    }
}

/// A CBOR value, enough to write hellos and the unknown fields a later version may add.
#[derive(Clone, Debug, TypeGenerator)]
enum Value {
    Uint(u64),
    Bytes(Vec<u8>),
    Text(Vec<u8>),
    Bool(bool),
    Null,
    Array(Vec<u64>),
    Map(Vec<(u64, u64)>),
}

fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Uint(n) => head(0, *n, out),
            Value::Bytes(b) => {
                head(2, b.len() as u64, out);
                out.extend_from_slice(b);
            }
            Value::Text(t) => {
                // Only ASCII letters, so the text is valid UTF-8.
                head(3, t.len() as u64, out);
                out.extend(t.iter().map(|c| b'a' + c % 26));
            }
            Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Value::Null => out.push(0xf6),
            Value::Array(items) => {
                head(4, items.len() as u64, out);
                for i in items {
                    head(0, *i, out);
                }
            }
            Value::Map(entries) => {
                head(5, entries.len() as u64, out);
                for (k, v) in entries {
                    head(0, *k, out);
                    head(0, *v, out);
                }
            }
        }
    }
}

fn encode_map(entries: &[(u64, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    head(5, entries.len() as u64, &mut out);
    for (key, value) in entries {
        head(0, *key, &mut out);
        value.encode(&mut out);
    }
    out
}

/// A hello written by the independent encoder: which optional fields are present, and
/// unknown fields (keys above 6) after them.
#[derive(Clone, Debug, TypeGenerator)]
struct Spec {
    fields: Fields,
    /// Bit `i` set: field `2 + i` is written (else the decoder must default it).
    present: u8,
    /// Unknown fields; their keys are made ascending and above 6.
    unknown: Vec<(u8, Value)>,
}

impl Spec {
    fn entries(&self) -> Vec<(u64, Value)> {
        let f = &self.fields;
        let mut entries = vec![
            (0, Value::Bytes(f.node_id.to_vec())),
            (1, Value::Bytes(f.genesis.to_vec())),
        ];
        let optional = [
            (2, Value::Uint(f.governance_version)),
            (3, Value::Uint(f.capabilities)),
            (4, Value::Bool(f.kem_supported)),
            (5, Value::Uint(f.chain_seq)),
            (6, Value::Uint(f.supported_sync_streams)),
        ];
        for (i, entry) in optional.into_iter().enumerate() {
            if self.present & (1 << i) != 0 {
                entries.push(entry);
            }
        }
        let mut key = 6u64;
        for (step, value) in self.unknown.iter().take(40) {
            key += 1 + u64::from(*step);
            entries.push((key, value.clone()));
        }
        entries
    }

    /// The hello the decoder must return for [`Spec::entries`].
    fn expected(&self) -> Hello {
        let mut hello = self.fields.hello();
        let has = |i: u8| self.present & (1 << i) != 0;
        if !has(0) {
            hello.governance_version = 0;
        }
        if !has(1) {
            hello.capabilities = 0;
        }
        if !has(2) {
            hello.kem_supported = false;
        }
        if !has(3) {
            hello.chain_seq = 0;
        }
        if !has(4) {
            hello.supported_sync_streams = 0;
        }
        hello
    }
}

/// Ways to break a valid encoding; each must make `decode` fail.
#[derive(Clone, Debug, TypeGenerator)]
enum Breakage {
    /// Leave out the node id (0) or the genesis hash (1).
    DropRequired(bool),
    /// Swap two neighbouring entries (keys no longer ascending).
    Swap(u8),
    /// Repeat an entry (a duplicate key).
    Duplicate(u8),
    /// Give the node id (0) or genesis (1) a length other than 32.
    WrongLength(bool, u8),
    /// Give a numeric field a byte string instead.
    WrongType(u8),
    /// Cut the encoding short by this many bytes (at least one).
    Truncate(u16),
    /// Append bytes after the map.
    Trailing(Vec<u8>),
    /// Declare one entry more than there are.
    Overcount,
}

/// Arbitrary bytes: `Hello::decode` never panics, and whatever it accepts re-encodes
/// to bytes that decode to the same hello (the canonical form is a fixed point).
#[test]
fn decode_arbitrary_bytes() {
    check!().for_each(|bytes: &[u8]| {
        if let Ok(hello) = Hello::decode(bytes) {
            let again = hello.encode();
            assert_eq!(Hello::decode(&again), Ok(hello.clone()));
            assert_eq!(again, hello.clone().encode(), "encode is not deterministic");
        }
    });
}

/// A generated hello: `decode(encode(h)) == h`; the encoding is the canonical 7-entry
/// map and the independent encoder writes the same bytes; every strict prefix and any
/// trailing byte is rejected.
#[test]
fn hello_round_trips() {
    check!().with_type::<Fields>().for_each(|fields| {
        let hello = fields.hello();
        let bytes = hello.encode();
        assert_eq!(Hello::decode(&bytes), Ok(hello.clone()));
        let spec = Spec {
            fields: fields.clone(),
            present: 0x1f,
            unknown: Vec::new(),
        };
        assert_eq!(
            bytes,
            encode_map(&spec.entries()),
            "not the canonical encoding"
        );
        for cut in 0..bytes.len() {
            assert!(
                Hello::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Hello::decode(&longer).is_err(), "trailing byte accepted");
    });
}

/// Hellos from the independent encoder, with optional fields left out and unknown
/// fields added: they decode to the described hello (defaults for what is missing,
/// unknown keys skipped), and re-encoding gives the canonical form.
#[test]
fn spec_encoded_hellos_decode() {
    check!().with_type::<Spec>().for_each(|spec| {
        let bytes = encode_map(&spec.entries());
        let expected = spec.expected();
        assert_eq!(Hello::decode(&bytes), Ok(expected.clone()), "{bytes:02x?}");
        assert_eq!(Hello::decode(&expected.encode()), Ok(expected));
    });
}

/// Hellos from the independent encoder broken in one specific way are rejected.
#[test]
fn broken_hellos_are_rejected() {
    check!()
        .with_type::<(Spec, Breakage)>()
        .for_each(|(spec, breakage)| {
            let mut entries = spec.entries();
            let n = entries.len();
            let bytes = match breakage {
                Breakage::DropRequired(genesis) => {
                    entries.remove(usize::from(*genesis));
                    encode_map(&entries)
                }
                Breakage::Swap(i) => {
                    let i = usize::from(*i) % (n - 1);
                    entries.swap(i, i + 1);
                    encode_map(&entries)
                }
                Breakage::Duplicate(i) => {
                    let i = usize::from(*i) % n;
                    let entry = entries[i].clone();
                    entries.insert(i, entry);
                    encode_map(&entries)
                }
                Breakage::WrongLength(genesis, len) => {
                    let len = if *len == 32 { 33 } else { usize::from(*len) };
                    entries[usize::from(*genesis)].1 = Value::Bytes(vec![7; len]);
                    encode_map(&entries)
                }
                Breakage::WrongType(i) => {
                    // Entry 2 onwards are the optional numeric/bool fields, if present.
                    let optional = entries.iter().filter(|(k, _)| (2..=6).contains(k)).count();
                    if optional == 0 {
                        return;
                    }
                    let i = 2 + usize::from(*i) % optional;
                    entries[i].1 = Value::Bytes(vec![1]);
                    encode_map(&entries)
                }
                Breakage::Truncate(k) => {
                    let mut bytes = encode_map(&entries);
                    let cut = 1 + usize::from(*k) % bytes.len();
                    bytes.truncate(bytes.len() - cut);
                    bytes
                }
                Breakage::Trailing(extra) => {
                    let mut bytes = encode_map(&entries);
                    bytes.extend_from_slice(extra);
                    if extra.is_empty() {
                        bytes.push(0);
                    }
                    bytes
                }
                Breakage::Overcount => {
                    let mut bytes = encode_map(&entries);
                    let mut header = Vec::new();
                    head(5, n as u64 + 1, &mut header);
                    let mut old = Vec::new();
                    head(5, n as u64, &mut old);
                    bytes.splice(..old.len(), header);
                    bytes
                }
            };
            let result = Hello::decode(&bytes);
            assert!(
                result.is_err(),
                "{breakage:?} accepted: {bytes:02x?} -> {result:?}"
            );
        });
}

/// Valid hellos with arbitrary bytes XORed in: no panic, and anything accepted
/// re-encodes to a fixed point.
#[test]
fn mutated_hellos_decode_consistently() {
    check!()
        .with_type::<(Spec, Vec<(u16, u8)>)>()
        .for_each(|(spec, flips)| {
            let mut bytes = encode_map(&spec.entries());
            weft_mesh_fuzz::apply_flips(&mut bytes, flips);
            if let Ok(hello) = Hello::decode(&bytes) {
                assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
            }
        });
}
