//! Acknowledged messages over a direct link (Message frames, PROTOCOL.md §12):
//! `[0x00][u64 BE id][data]` carries data, `[0x01][u64 BE id]` acknowledges it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use bytes::{BufMut, Bytes, BytesMut};

use super::ConnId;
use crate::{Instant, NodeId};

const DATA: u8 = 0x00;
const ACK: u8 = 0x01;
/// Bytes before the data of a data message.
pub(crate) const DATA_HEADER: usize = 9;

/// Identifies a message sent with [`super::Node::send`]; unique per node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MessageId(pub u64);

/// A decoded Message frame.
pub(crate) enum Direct {
    Data { id: u64, data: Bytes },
    Ack { id: u64 },
}

pub(crate) fn encode_data(id: u64, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(DATA_HEADER + data.len());
    b.put_u8(DATA);
    b.put_u64(id);
    b.put_slice(data);
    b.freeze()
}

pub(crate) fn encode_ack(id: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(DATA_HEADER);
    b.put_u8(ACK);
    b.put_u64(id);
    b.freeze()
}

/// `None` if the payload is not a valid direct message.
pub(crate) fn decode(payload: &Bytes) -> Option<Direct> {
    let (&kind, rest) = payload.split_first()?;
    let id = u64::from_be_bytes(*rest.first_chunk::<8>()?);
    match kind {
        DATA => Some(Direct::Data {
            id,
            data: payload.slice(DATA_HEADER..),
        }),
        ACK if rest.len() == 8 => Some(Direct::Ack { id }),
        _ => None,
    }
}

/// A sent message awaiting its acknowledgement.
pub(crate) struct Pending {
    pub to: NodeId,
    pub conn: ConnId,
    pub deadline: Instant,
}

/// Messages awaiting acknowledgement, with their deadlines in order.
#[derive(Default)]
pub(crate) struct Outstanding {
    by_id: BTreeMap<u64, Pending>,
    by_deadline: BTreeMap<(Instant, u64), ()>,
}

impl Outstanding {
    pub(crate) fn insert(&mut self, id: u64, pending: Pending) {
        self.by_deadline.insert((pending.deadline, id), ());
        self.by_id.insert(id, pending);
    }

    /// Take the message `id` if it was sent over `conn` (acks only count on their link).
    pub(crate) fn ack(&mut self, id: u64, conn: ConnId) -> Option<Pending> {
        if self.by_id.get(&id)?.conn != conn {
            return None;
        }
        let p = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(p.deadline, id));
        Some(p)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.keys().next().map(|(at, _)| *at)
    }

    /// Remove and return every message whose deadline passed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(u64, Pending)> {
        let mut out = Vec::new();
        while let Some((&(at, id), _)) = self.by_deadline.first_key_value() {
            if at > now {
                break;
            }
            self.by_deadline.pop_first();
            if let Some(p) = self.by_id.remove(&id) {
                out.push((id, p));
            }
        }
        out
    }

    /// Remove and return every message sent over `conn`.
    pub(crate) fn on_conn(&mut self, conn: ConnId) -> Vec<(u64, Pending)> {
        let ids: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, p)| p.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let p = self.by_id.remove(&id)?;
                self.by_deadline.remove(&(p.deadline, id));
                Some((id, p))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let d = encode_data(7, b"hi");
        assert_eq!(&d[..], &[0, 0, 0, 0, 0, 0, 0, 0, 7, b'h', b'i']);
        assert!(matches!(decode(&d), Some(Direct::Data { id: 7, ref data }) if &data[..] == b"hi"));
        assert!(matches!(
            decode(&encode_ack(9)),
            Some(Direct::Ack { id: 9 })
        ));
        for bad in [
            &[][..],
            &[0, 1, 2],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 5],
        ] {
            assert!(decode(&Bytes::copy_from_slice(bad)).is_none(), "{bad:?}");
        }
    }
}
