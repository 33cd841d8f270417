//! Inclusion and absence proofs.
//!
//! The proof format is described on [`Proof`].

use alloc::vec::Vec;
use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    inner_hash, key_hash, leaf_hash, nibble, value_hash, Hash, Path, EMPTY, FANOUT, MAX_DEPTH,
};
use crate::wire::Reader;

/// Longest encoded proof: 64 full steps and an other leaf.
pub const MAX_PROOF_LEN: usize = 2 + MAX_DEPTH * (2 + (FANOUT - 1) * 32) + 64;

const END_PRESENT: u8 = 0x00;
const END_EMPTY: u8 = 0x01;
const END_OTHER: u8 = 0x02;

/// One inner node on the key's path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProofStep {
    /// Its bitmap (bit `i` set when child `i` is non-empty).
    pub bitmap: u16,
    /// The hashes of its non-empty children other than the one on the path, in child order.
    pub siblings: Vec<Hash>,
}

/// Where the key's path ends.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ProofEnd {
    /// At the key's leaf: the key is present (the verifier supplies its value).
    Present,
    /// At an empty child (or an empty tree): the key is absent.
    Empty,
    /// At another key's leaf: the key is absent.
    Other {
        /// `SHA-256` of the other key.
        key_hash: Hash,
        /// `SHA-256` of its value.
        value_hash: Hash,
    },
}

/// An inclusion or absence proof, made by [`super::MerkleTree::prove`].
///
/// A proof lists, from the root down along the key's path, each inner node's bitmap and
/// the hashes of its other non-empty children, then says how the path ends: at the
/// key's own leaf (present), at an empty child (absent), or at another key's leaf
/// (absent; that leaf's key hash and value hash are given). The verifier recomputes the
/// root from the key (and the claimed value) upwards.
///
/// ```text
/// proof := u8 end (0x00 present | 0x01 absent: empty | 0x02 absent: other leaf),
///          u8 steps (≤ 64),
///          steps × (u16 BE bitmap, n × 32 sibling hashes),
///          end 0x02 only: other key hash 32, other value hash 32
/// n = popcount(bitmap) − 1, except for the last step of an 0x01 proof: popcount(bitmap)
/// ```
/// Sibling hashes are in child order, skipping the key's own child (the key's nibble at
/// that step's depth). A proof in a tree of 100,000 keys is about 1.9 KB.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Proof {
    /// The inner nodes from the root down.
    pub steps: Vec<ProofStep>,
    /// How the path ends.
    pub end: ProofEnd,
}

/// Why a proof was rejected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ProofError {
    /// The encoding is cut short, has bytes left over, more than 64 steps or an unknown
    /// end tag.
    Malformed,
    /// The proof does not fit the key's path: a bitmap without the key's child where the
    /// path continues (or with it where the path ends empty), a sibling count that does
    /// not match the bitmap, or an other leaf that is the key's own or off its path.
    Inconsistent,
    /// The proof is of presence and absence was claimed, or the other way round.
    WrongClaim,
    /// The root recomputed from the proof is not the given root: the key does not have
    /// the claimed value (or presence) in that tree, or something was tampered with.
    RootMismatch,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProofError::Malformed => "malformed proof",
            ProofError::Inconsistent => "proof does not fit the key's path",
            ProofError::WrongClaim => "proof of presence for an absence claim or the reverse",
            ProofError::RootMismatch => "proof does not lead to the root",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ProofError {}

impl Proof {
    /// Check the proof against `root`: that `key` holds `value` (`Some`), or that `key`
    /// is absent (`None`).
    pub fn verify(&self, root: &Hash, key: &[u8], value: Option<&[u8]>) -> Result<(), ProofError> {
        let computed = self.compute_root(key, value)?;
        // Not secret, but compare in constant time anyway: it costs nothing.
        if subtle::ConstantTimeEq::ct_eq(&computed[..], &root[..]).into() {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        }
    }

    /// The root of the tree in which this proof shows `key` holding `value` (or absent).
    pub fn compute_root(&self, key: &[u8], value: Option<&[u8]>) -> Result<Hash, ProofError> {
        let kh = key_hash(key);
        let depth = self.steps.len();
        if depth > MAX_DEPTH {
            return Err(ProofError::Inconsistent);
        }
        let mut hash = match (&self.end, value) {
            (ProofEnd::Present, Some(v)) => leaf_hash(&kh, &value_hash(v)),
            (ProofEnd::Empty, None) => EMPTY,
            (
                ProofEnd::Other {
                    key_hash,
                    value_hash,
                },
                None,
            ) => {
                if *key_hash == kh || !Path::of_key_hash(&kh, depth).contains(key_hash) {
                    return Err(ProofError::Inconsistent);
                }
                leaf_hash(key_hash, value_hash)
            }
            _ => return Err(ProofError::WrongClaim),
        };
        for (d, step) in self.steps.iter().enumerate().rev() {
            let at = nibble(&kh, d);
            let on_path = step.bitmap & (1 << at) != 0;
            let empty_end = d + 1 == depth && self.end == ProofEnd::Empty;
            let expected_siblings = step.bitmap.count_ones() as usize - usize::from(on_path);
            if on_path == empty_end || step.siblings.len() != expected_siblings {
                return Err(ProofError::Inconsistent);
            }
            let mut children = [EMPTY; FANOUT];
            let mut siblings = step.siblings.iter();
            for (i, slot) in children.iter_mut().enumerate() {
                if i == at && on_path {
                    *slot = hash;
                } else if step.bitmap & (1 << i) != 0 {
                    *slot = *siblings.next().ok_or(ProofError::Inconsistent)?;
                }
            }
            hash = inner_hash(
                step.bitmap,
                (0..FANOUT)
                    .filter(|i| step.bitmap & (1 << i) != 0)
                    .map(|i| &children[i]),
            );
        }
        Ok(hash)
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        2 + self
            .steps
            .iter()
            .map(|s| 2 + 32 * s.siblings.len())
            .sum::<usize>()
            + if matches!(self.end, ProofEnd::Other { .. }) {
                64
            } else {
                0
            }
    }

    /// The encoding (see [`Proof`]). A proof made by
    /// [`super::MerkleTree::prove`] always fits; steps past 64 are not written.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        let steps = &self.steps[..self.steps.len().min(MAX_DEPTH)];
        b.put_u8(match self.end {
            ProofEnd::Present => END_PRESENT,
            ProofEnd::Empty => END_EMPTY,
            ProofEnd::Other { .. } => END_OTHER,
        });
        b.put_u8(steps.len() as u8);
        for step in steps {
            b.put_u16(step.bitmap);
            for s in &step.siblings {
                b.put_slice(s);
            }
        }
        if let ProofEnd::Other {
            key_hash,
            value_hash,
        } = &self.end
        {
            b.put_slice(key_hash);
            b.put_slice(value_hash);
        }
        b.freeze()
    }

    /// Decode a proof; sibling counts follow from the bitmaps, so a proof that decodes
    /// still has to [`Proof::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Proof, ProofError> {
        Self::read(&mut Reader(bytes)).ok_or(ProofError::Malformed)
    }

    fn read(r: &mut Reader<'_>) -> Option<Proof> {
        let end_tag = r.u8()?;
        if end_tag > END_OTHER {
            return None;
        }
        let depth = usize::from(r.u8()?);
        if depth > MAX_DEPTH {
            return None;
        }
        let mut steps = Vec::with_capacity(depth.min(r.remaining() / 2));
        for d in 0..depth {
            let bitmap = r.u16()?;
            let ones = bitmap.count_ones() as usize;
            if ones == 0 {
                return None;
            }
            let count = if d + 1 == depth && end_tag == END_EMPTY {
                ones
            } else {
                ones - 1
            };
            let mut siblings = Vec::with_capacity(count.min(r.remaining() / 32));
            for _ in 0..count {
                siblings.push(r.array()?);
            }
            steps.push(ProofStep { bitmap, siblings });
        }
        let end = match end_tag {
            END_PRESENT => ProofEnd::Present,
            END_EMPTY => ProofEnd::Empty,
            _ => ProofEnd::Other {
                key_hash: r.array()?,
                value_hash: r.array()?,
            },
        };
        r.is_empty().then_some(Proof { steps, end })
    }
}
