//! The SWIM packet codec: one message followed by piggybacked membership updates.
//!
//! ```text
//! packet    := kind u8, message, u8 count (≤ 255), count × update
//! ping      0x01  seq u32
//! ack       0x02  seq u32
//! ping-req  0x03  seq u32, target node 32
//! nack      0x04  seq u32
//! push-pull 0x05  flags u8 (bit 0: reply wanted; others 0), u16 count (≤ 2048), count × update
//! gossip    0x06  (nothing: the packet is its piggybacked updates)
//! update    := type u8, node 32, incarnation u64, then by type:
//!   alive   0x01  addrs u8 count (≤ 4), count × (u8 len ≥ 1, UTF-8)
//!   suspect 0x02  from node 32
//!   dead    0x03  from node 32
//!   left    0x04  (nothing)
//! ```
//!
//! Integers are big-endian. Anything else (an unknown kind or type, a count over its
//! limit, a truncated field, an empty or non-UTF-8 address, a trailing byte) is refused.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use bytes::{BufMut, BytesMut};

use crate::wire::Reader;
use crate::NodeId;

/// Most addresses in an Alive update (more are not sent).
pub const MAX_ADDRS: usize = 4;
/// Most piggybacked updates in one packet.
pub const MAX_UPDATES: usize = 255;
/// Most member entries in one push-pull packet.
pub const MAX_STATE_ENTRIES: usize = 2048;

/// The smallest update (left): type, node, incarnation.
pub(crate) const MIN_UPDATE_LEN: usize = 1 + 32 + 8;
/// Push-pull header: kind, flags, count.
pub(crate) const PUSH_PULL_HEADER: usize = 4;
/// Reply-wanted flag of a push-pull.
pub(crate) const REPLY_WANTED: u8 = 0x01;

/// Why a packet did not decode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketError {
    /// A field runs past the end of the packet.
    Truncated,
    /// Unknown message kind.
    UnknownKind,
    /// Unknown update type.
    UnknownUpdate,
    /// Reserved push-pull flag bits are set.
    ReservedFlags,
    /// A count is over its limit (addresses, push-pull entries).
    TooMany,
    /// An empty or non-UTF-8 address.
    BadAddress,
    /// Bytes after the last update.
    TrailingBytes,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacketError::Truncated => "swim packet truncated",
            PacketError::UnknownKind => "unknown swim message kind",
            PacketError::UnknownUpdate => "unknown swim update type",
            PacketError::ReservedFlags => "reserved push-pull flags set",
            PacketError::TooMany => "swim count over its limit",
            PacketError::BadAddress => "empty or non-UTF-8 address",
            PacketError::TrailingBytes => "trailing bytes after swim packet",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PacketError {}

/// A membership update about one node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Update {
    Alive {
        node: NodeId,
        incarnation: u64,
        addrs: Vec<String>,
    },
    Suspect {
        node: NodeId,
        incarnation: u64,
        from: NodeId,
    },
    Dead {
        node: NodeId,
        incarnation: u64,
        from: NodeId,
    },
    Left {
        node: NodeId,
        incarnation: u64,
    },
}

impl Update {
    /// The node the update is about.
    pub(crate) fn node(&self) -> NodeId {
        match self {
            Update::Alive { node, .. }
            | Update::Suspect { node, .. }
            | Update::Dead { node, .. }
            | Update::Left { node, .. } => *node,
        }
    }

    /// Bytes it takes on the wire.
    pub(crate) fn encoded_len(&self) -> usize {
        MIN_UPDATE_LEN
            + match self {
                Update::Alive { addrs, .. } => 1 + addrs.iter().map(|a| 1 + a.len()).sum::<usize>(),
                Update::Suspect { .. } | Update::Dead { .. } => 32,
                Update::Left { .. } => 0,
            }
    }

    /// Append the encoding (addresses must be valid, see [`valid_addrs`]).
    pub(crate) fn encode(&self, b: &mut BytesMut) {
        let (kind, node, incarnation) = match self {
            Update::Alive {
                node, incarnation, ..
            } => (0x01, node, incarnation),
            Update::Suspect {
                node, incarnation, ..
            } => (0x02, node, incarnation),
            Update::Dead {
                node, incarnation, ..
            } => (0x03, node, incarnation),
            Update::Left { node, incarnation } => (0x04, node, incarnation),
        };
        b.put_u8(kind);
        b.put_slice(node.as_bytes());
        b.put_u64(*incarnation);
        match self {
            Update::Alive { addrs, .. } => {
                b.put_u8(addrs.len() as u8);
                for a in addrs {
                    b.put_u8(a.len() as u8);
                    b.put_slice(a.as_bytes());
                }
            }
            Update::Suspect { from, .. } | Update::Dead { from, .. } => {
                b.put_slice(from.as_bytes())
            }
            Update::Left { .. } => {}
        }
    }
}

/// The addresses that can be advertised: the first [`MAX_ADDRS`] of 1 to 255 bytes.
pub(crate) fn valid_addrs(addrs: Vec<String>) -> Vec<String> {
    addrs
        .into_iter()
        .filter(|a| (1..=255).contains(&a.len()))
        .take(MAX_ADDRS)
        .collect()
}

/// The message a packet carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Message {
    Ping { seq: u32 },
    Ack { seq: u32 },
    PingReq { seq: u32, target: NodeId },
    Nack { seq: u32 },
    PushPull { reply: bool, state: Vec<Update> },
    Gossip,
}

impl Message {
    /// Append the encoding (a push-pull's state must fit its limit).
    pub(crate) fn encode(&self, b: &mut BytesMut) {
        match self {
            Message::Ping { seq } => {
                b.put_u8(0x01);
                b.put_u32(*seq);
            }
            Message::Ack { seq } => {
                b.put_u8(0x02);
                b.put_u32(*seq);
            }
            Message::PingReq { seq, target } => {
                b.put_u8(0x03);
                b.put_u32(*seq);
                b.put_slice(target.as_bytes());
            }
            Message::Nack { seq } => {
                b.put_u8(0x04);
                b.put_u32(*seq);
            }
            Message::PushPull { reply, state } => {
                b.put_u8(0x05);
                b.put_u8(if *reply { REPLY_WANTED } else { 0 });
                b.put_u16(state.len() as u16);
                for u in state {
                    u.encode(b);
                }
            }
            Message::Gossip => b.put_u8(0x06),
        }
    }
}

/// A decoded packet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Packet {
    pub(crate) message: Message,
    pub(crate) updates: Vec<Update>,
}

impl Packet {
    /// The whole encoding (tests build packets this way; the state machine encodes
    /// the message and then fills piggyback space).
    #[cfg(test)]
    pub(crate) fn encode(&self) -> BytesMut {
        let mut b = BytesMut::new();
        self.message.encode(&mut b);
        put_updates(&mut b, &self.updates);
        b
    }

    /// Decode a whole packet; any malformed input, trailing bytes included, is an error.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Packet, PacketError> {
        let mut r = Reader(bytes);
        let message = match need(r.u8())? {
            0x01 => Message::Ping {
                seq: need(r.u32())?,
            },
            0x02 => Message::Ack {
                seq: need(r.u32())?,
            },
            0x03 => Message::PingReq {
                seq: need(r.u32())?,
                target: need(r.node())?,
            },
            0x04 => Message::Nack {
                seq: need(r.u32())?,
            },
            0x05 => {
                let flags = need(r.u8())?;
                if flags & !REPLY_WANTED != 0 {
                    return Err(PacketError::ReservedFlags);
                }
                let count = usize::from(need(r.u16())?);
                if count > MAX_STATE_ENTRIES {
                    return Err(PacketError::TooMany);
                }
                Message::PushPull {
                    reply: flags & REPLY_WANTED != 0,
                    state: r.updates(count)?,
                }
            }
            0x06 => Message::Gossip,
            _ => return Err(PacketError::UnknownKind),
        };
        let count = usize::from(need(r.u8())?);
        let updates = r.updates(count)?;
        if !r.is_empty() {
            return Err(PacketError::TrailingBytes);
        }
        Ok(Packet { message, updates })
    }
}

/// Append `u8 count` and the updates (at most [`MAX_UPDATES`]).
pub(crate) fn put_updates(b: &mut BytesMut, updates: &[Update]) {
    let updates = &updates[..updates.len().min(MAX_UPDATES)];
    b.put_u8(updates.len() as u8);
    for u in updates {
        u.encode(b);
    }
}

fn need<T>(v: Option<T>) -> Result<T, PacketError> {
    v.ok_or(PacketError::Truncated)
}

impl Reader<'_> {
    fn updates(&mut self, count: usize) -> Result<Vec<Update>, PacketError> {
        let mut out = Vec::with_capacity(count.min(self.remaining() / MIN_UPDATE_LEN));
        for _ in 0..count {
            out.push(self.update()?);
        }
        Ok(out)
    }

    fn update(&mut self) -> Result<Update, PacketError> {
        let kind = need(self.u8())?;
        let node = need(self.node())?;
        let incarnation = need(self.u64())?;
        Ok(match kind {
            0x01 => Update::Alive {
                node,
                incarnation,
                addrs: self.swim_addrs()?,
            },
            0x02 => Update::Suspect {
                node,
                incarnation,
                from: need(self.node())?,
            },
            0x03 => Update::Dead {
                node,
                incarnation,
                from: need(self.node())?,
            },
            0x04 => Update::Left { node, incarnation },
            _ => return Err(PacketError::UnknownUpdate),
        })
    }

    fn swim_addrs(&mut self) -> Result<Vec<String>, PacketError> {
        let count = usize::from(need(self.u8())?);
        if count > MAX_ADDRS {
            return Err(PacketError::TooMany);
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(need(self.u8())?);
            if len == 0 {
                return Err(PacketError::BadAddress);
            }
            let bytes = need(self.take(len))?;
            let s = core::str::from_utf8(bytes).map_err(|_| PacketError::BadAddress)?;
            out.push(String::from(s));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    fn node() -> impl Strategy<Value = NodeId> {
        any::<[u8; 32]>().prop_map(NodeId::from_bytes)
    }

    fn update() -> impl Strategy<Value = Update> {
        let addrs = proptest::collection::vec("[a-z0-9:/.]{1,40}", 0..=MAX_ADDRS);
        prop_oneof![
            (node(), any::<u64>(), addrs).prop_map(|(node, incarnation, addrs)| Update::Alive {
                node,
                incarnation,
                addrs
            }),
            (node(), any::<u64>(), node()).prop_map(|(node, incarnation, from)| Update::Suspect {
                node,
                incarnation,
                from
            }),
            (node(), any::<u64>(), node()).prop_map(|(node, incarnation, from)| Update::Dead {
                node,
                incarnation,
                from
            }),
            (node(), any::<u64>())
                .prop_map(|(node, incarnation)| Update::Left { node, incarnation }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            any::<u32>().prop_map(|seq| Message::Ping { seq }),
            any::<u32>().prop_map(|seq| Message::Ack { seq }),
            (any::<u32>(), node()).prop_map(|(seq, target)| Message::PingReq { seq, target }),
            any::<u32>().prop_map(|seq| Message::Nack { seq }),
            (any::<bool>(), proptest::collection::vec(update(), 0..20))
                .prop_map(|(reply, state)| Message::PushPull { reply, state }),
            Just(Message::Gossip),
        ]
    }

    fn packet() -> impl Strategy<Value = Packet> {
        (message(), proptest::collection::vec(update(), 0..20))
            .prop_map(|(message, updates)| Packet { message, updates })
    }

    proptest! {
        #[test]
        fn packets_round_trip_and_their_length_is_predicted(p in packet()) {
            let bytes = p.encode();
            prop_assert_eq!(Packet::decode(&bytes), Ok(p.clone()));
            let predicted: usize = p.updates.iter().map(Update::encoded_len).sum::<usize>() + 1;
            let mut message = BytesMut::new();
            p.message.encode(&mut message);
            prop_assert_eq!(bytes.len(), message.len() + predicted);
        }

        #[test]
        fn every_truncation_is_an_error(p in packet()) {
            let bytes = p.encode();
            for cut in 0..bytes.len() {
                prop_assert!(Packet::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn a_trailing_byte_is_refused(p in packet(), extra in any::<u8>()) {
            let mut bytes = p.encode();
            bytes.put_u8(extra);
            prop_assert_eq!(Packet::decode(&bytes), Err(PacketError::TrailingBytes));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Packet::decode(&bytes);
        }

        #[test]
        fn mutated_packets_never_panic(p in packet(), at in any::<usize>(), to in any::<u8>()) {
            let mut bytes = p.encode().to_vec();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = to;
            }
            let _ = Packet::decode(&bytes);
        }
    }

    #[test]
    fn counts_over_their_limits_are_refused_before_allocating() {
        let mut b = BytesMut::new();
        b.put_u8(0x05);
        b.put_u8(0);
        b.put_u16(MAX_STATE_ENTRIES as u16 + 1);
        assert_eq!(Packet::decode(&b), Err(PacketError::TooMany));

        let mut b = BytesMut::new();
        b.put_u8(0x05);
        b.put_u8(0);
        b.put_u16(MAX_STATE_ENTRIES as u16);
        assert_eq!(Packet::decode(&b), Err(PacketError::Truncated));

        let mut b = BytesMut::new();
        Message::Ping { seq: 1 }.encode(&mut b);
        b.put_u8(1);
        b.put_u8(0x01);
        b.put_slice(&[0; 40]);
        b.put_u8(MAX_ADDRS as u8 + 1);
        assert_eq!(Packet::decode(&b), Err(PacketError::TooMany));

        let mut b = BytesMut::new();
        Message::Ack { seq: 1 }.encode(&mut b);
        b.put_u8(255);
        assert_eq!(Packet::decode(&b), Err(PacketError::Truncated));
    }

    #[test]
    fn unknown_kinds_types_flags_and_bad_addresses_are_refused() {
        assert_eq!(Packet::decode(&[]), Err(PacketError::Truncated));
        assert_eq!(
            Packet::decode(&[0x07, 0, 0, 0, 0, 0]),
            Err(PacketError::UnknownKind)
        );
        assert_eq!(Packet::decode(&[0x00]), Err(PacketError::UnknownKind));
        assert_eq!(
            Packet::decode(&[0x05, 0x02, 0, 0, 0]),
            Err(PacketError::ReservedFlags)
        );
        let mut b = BytesMut::new();
        Message::Nack { seq: 9 }.encode(&mut b);
        b.put_u8(1);
        b.put_u8(0x05);
        b.put_slice(&[0; 40]);
        assert_eq!(Packet::decode(&b), Err(PacketError::UnknownUpdate));

        let alive = |addr: &[u8]| {
            let mut b = BytesMut::new();
            Message::Ping { seq: 1 }.encode(&mut b);
            b.put_u8(1);
            b.put_u8(0x01);
            b.put_slice(&[0; 40]);
            b.put_u8(1);
            b.put_u8(addr.len() as u8);
            b.put_slice(addr);
            b
        };
        assert_eq!(Packet::decode(&alive(b"")), Err(PacketError::BadAddress));
        assert_eq!(
            Packet::decode(&alive(&[0xff, 0xfe])),
            Err(PacketError::BadAddress)
        );
        assert!(Packet::decode(&alive(b"tcp://a:1")).is_ok());
    }

    #[test]
    fn a_known_packet_has_the_documented_layout() {
        let n = NodeId::from_bytes([0xab; 32]);
        let p = Packet {
            message: Message::PingReq {
                seq: 0x0102_0304,
                target: n,
            },
            updates: vec![Update::Alive {
                node: n,
                incarnation: 7,
                addrs: vec!["x".to_string()],
            }],
        };
        let mut want = vec![0x03, 1, 2, 3, 4];
        want.extend_from_slice(&[0xab; 32]);
        want.push(1);
        want.push(0x01);
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&[1, 1, b'x']);
        assert_eq!(&p.encode()[..], &want[..]);
    }

    #[test]
    fn only_valid_addresses_are_advertised() {
        let long = "a".repeat(256);
        let addrs = vec![
            String::new(),
            long,
            "1".to_string(),
            "2".to_string(),
            "3".to_string(),
            "4".to_string(),
            "5".to_string(),
        ];
        assert_eq!(valid_addrs(addrs), ["1", "2", "3", "4"]);
    }
}
