//! ServiceResolve frames (0x07): a query for a service name and its answer.
//!
//! ```text
//! query   0x01  id u64, name
//! answer  0x02  id u64, name, u8 count (≤ 32), count × (node id 32, ttl_secs u32)
//! name := u8 len (1..=255), UTF-8
//! ```

use alloc::vec::Vec;
use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::registry::{Codec, ServiceName};
use crate::wire::Reader;
use crate::NodeId;

/// Most providers in one answer.
pub const MAX_ANSWER_PROVIDERS: usize = 32;

/// Identifies a query and its answers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct QueryId(pub u64);

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{:016x}", self.0)
    }
}

/// "Who provides this service?"
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Query {
    /// Echoed in the answer.
    pub id: QueryId,
    /// The service.
    pub name: ServiceName,
}

/// The providers a node knows of for a queried service (none if it knows of none),
/// each with how long the asker may cache it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Answer {
    /// The query's id.
    pub id: QueryId,
    /// The query's service.
    pub name: ServiceName,
    /// Providers and their time to live in seconds (at most [`MAX_ANSWER_PROVIDERS`]).
    pub providers: Vec<(NodeId, u32)>,
}

/// A decoded ServiceResolve frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResolveMessage {
    /// A query.
    Query(Query),
    /// An answer.
    Answer(Answer),
}

impl ResolveMessage {
    /// The encoding (an answer's providers are cut at [`MAX_ANSWER_PROVIDERS`]).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            ResolveMessage::Query(q) => {
                b.put_u8(0x01);
                b.put_u64(q.id.0);
                q.name.encode(&mut b);
            }
            ResolveMessage::Answer(a) => {
                let providers = &a.providers[..a.providers.len().min(MAX_ANSWER_PROVIDERS)];
                b.put_u8(0x02);
                b.put_u64(a.id.0);
                a.name.encode(&mut b);
                b.put_u8(providers.len() as u8);
                for (node, ttl) in providers {
                    b.put_slice(node.as_bytes());
                    b.put_u32(*ttl);
                }
            }
        }
        b.freeze()
    }

    /// `None` if malformed, trailing bytes included.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let tag = r.u8()?;
        let id = QueryId(r.u64()?);
        let name = ServiceName::decode(&mut r.0)?;
        let message = match tag {
            0x01 => ResolveMessage::Query(Query { id, name }),
            0x02 => {
                let count = r.u8()? as usize;
                if count > MAX_ANSWER_PROVIDERS {
                    return None;
                }
                let mut providers = Vec::with_capacity(count.min(r.remaining() / 36));
                for _ in 0..count {
                    providers.push((r.node()?, r.u32()?));
                }
                ResolveMessage::Answer(Answer {
                    id,
                    name,
                    providers,
                })
            }
            _ => return None,
        };
        r.is_empty().then_some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer() -> ResolveMessage {
        ResolveMessage::Answer(Answer {
            id: QueryId(u64::MAX),
            name: ServiceName::new("echo").unwrap(),
            providers: alloc::vec![
                (NodeId::from_bytes([1; 32]), 30),
                (NodeId::from_bytes([2; 32]), 0)
            ],
        })
    }

    #[test]
    fn messages_round_trip_and_truncations_or_trailing_bytes_fail() {
        let query = ResolveMessage::Query(Query {
            id: QueryId(7),
            name: ServiceName::new("echo").unwrap(),
        });
        assert_eq!(&query.encode()[..], b"\x01\0\0\0\0\0\0\0\x07\x04echo");
        for m in [query, answer()] {
            let bytes = m.encode();
            assert_eq!(ResolveMessage::decode(&bytes), Some(m.clone()));
            for cut in 0..bytes.len() {
                assert_eq!(ResolveMessage::decode(&bytes[..cut]), None);
            }
            let mut long = bytes.to_vec();
            long.push(0);
            assert_eq!(ResolveMessage::decode(&long), None);
        }
    }

    #[test]
    fn too_many_providers_or_an_empty_name_are_refused() {
        let mut bytes = answer().encode().to_vec();
        bytes[14] = 33;
        assert_eq!(ResolveMessage::decode(&bytes), None);
        assert_eq!(ResolveMessage::decode(b"\x01\0\0\0\0\0\0\0\x07\x00"), None);
        assert_eq!(ResolveMessage::decode(b"\x03\0\0\0\0\0\0\0\x07\x01a"), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics_and_what_decodes_re_encodes_identically(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Some(m) = ResolveMessage::decode(&bytes) {
                prop_assert_eq!(m.encode().to_vec(), bytes);
            }
        }
    }
}
