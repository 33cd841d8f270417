//! Discovery frames (type 0x04, PROTOCOL.md §13): route advertisements, peer exchange
//! and the join request/response; and the directory of members' addresses.
//!
//! ```text
//! routes         0x01  u16 count, count × (node id 32, distance u8)
//! peers          0x02  members
//! join request   0x03  addrs
//! join response  0x04  status u8 (0 admitted, 1 refused), members
//! members := u16 count, count × (node id 32, addrs)
//! addrs   := u8 count (≤ 4), count × (u8 len ≥ 1, UTF-8)
//! ```

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use bytes::{BufMut, Bytes, BytesMut};

use super::routes::UNREACHABLE;
use crate::wire::Reader;
use crate::{Instant, NodeId};

/// Most addresses a member advertises.
pub const MAX_ADDRS: usize = 4;
/// Most members in one peers or join-response message.
pub const MAX_MEMBERS_PER_MESSAGE: usize = 64;
/// Most entries in one route advertisement.
pub const MAX_ROUTES_PER_MESSAGE: usize = 8192;

/// A member and where it listens.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// The member.
    pub node: NodeId,
    /// Its advertised addresses (`tcp://…`, `ws://…`).
    pub addrs: Vec<String>,
}

/// A decoded Discovery frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Discovery {
    Routes(Vec<(NodeId, u8)>),
    Peers(Vec<Member>),
    JoinRequest { addrs: Vec<String> },
    JoinResponse { admitted: bool, peers: Vec<Member> },
}

impl Discovery {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Discovery::Routes(entries) => {
                let entries = &entries[..entries.len().min(MAX_ROUTES_PER_MESSAGE)];
                b.put_u8(0x01);
                b.put_u16(entries.len() as u16);
                for (node, hops) in entries {
                    b.put_slice(node.as_bytes());
                    b.put_u8(*hops);
                }
            }
            Discovery::Peers(members) => {
                b.put_u8(0x02);
                put_members(&mut b, members);
            }
            Discovery::JoinRequest { addrs } => {
                b.put_u8(0x03);
                put_addrs(&mut b, addrs);
            }
            Discovery::JoinResponse { admitted, peers } => {
                b.put_u8(0x04);
                b.put_u8(if *admitted { 0 } else { 1 });
                put_members(&mut b, peers);
            }
        }
        b.freeze()
    }

    /// `None` if malformed (any trailing byte included).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Discovery> {
        let mut r = Reader(bytes);
        let d = match r.u8()? {
            0x01 => {
                let count = r.u16()? as usize;
                if count > MAX_ROUTES_PER_MESSAGE {
                    return None;
                }
                let mut entries = Vec::with_capacity(count.min(r.remaining() / 33));
                for _ in 0..count {
                    let node = r.node()?;
                    let hops = r.u8()?;
                    if hops == 0 || hops >= UNREACHABLE {
                        return None;
                    }
                    entries.push((node, hops));
                }
                Discovery::Routes(entries)
            }
            0x02 => Discovery::Peers(r.members()?),
            0x03 => Discovery::JoinRequest { addrs: r.addrs()? },
            0x04 => {
                let admitted = match r.u8()? {
                    0 => true,
                    1 => false,
                    _ => return None,
                };
                Discovery::JoinResponse {
                    admitted,
                    peers: r.members()?,
                }
            }
            _ => return None,
        };
        r.is_empty().then_some(d)
    }
}

fn put_addrs(b: &mut BytesMut, addrs: &[String]) {
    let valid: Vec<&String> = addrs
        .iter()
        .filter(|a| (1..=255).contains(&a.len()))
        .take(MAX_ADDRS)
        .collect();
    b.put_u8(valid.len() as u8);
    for a in valid {
        b.put_u8(a.len() as u8);
        b.put_slice(a.as_bytes());
    }
}

fn put_members(b: &mut BytesMut, members: &[Member]) {
    let members = &members[..members.len().min(MAX_MEMBERS_PER_MESSAGE)];
    b.put_u16(members.len() as u16);
    for m in members {
        b.put_slice(m.node.as_bytes());
        put_addrs(b, &m.addrs);
    }
}

impl Reader<'_> {
    fn addrs(&mut self) -> Option<Vec<String>> {
        let count = self.u8()? as usize;
        if count > MAX_ADDRS {
            return None;
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let len = self.u8()? as usize;
            if len == 0 {
                return None;
            }
            out.push(self.str(len)?);
        }
        Some(out)
    }
    fn members(&mut self) -> Option<Vec<Member>> {
        let count = self.u16()? as usize;
        if count > MAX_MEMBERS_PER_MESSAGE {
            return None;
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let node = self.node()?;
            out.push(Member {
                node,
                addrs: self.addrs()?,
            });
        }
        Some(out)
    }
}

/// Members' advertised addresses, learned from joins and peer exchange. Bounded: when
/// full, unknown members are ignored until stale entries expire.
pub(crate) struct Directory {
    me: NodeId,
    max: usize,
    ttl: core::time::Duration,
    members: BTreeMap<NodeId, (Vec<String>, Instant)>,
}

impl Directory {
    pub(crate) fn new(me: NodeId, max: usize, ttl: core::time::Duration) -> Self {
        Directory {
            me,
            max,
            ttl,
            members: BTreeMap::new(),
        }
    }

    /// Learn (or refresh) a member's addresses; members without any are skipped.
    pub(crate) fn learn(&mut self, now: Instant, member: &Member) {
        if member.node == self.me || member.addrs.is_empty() {
            return;
        }
        if let Some(entry) = self.members.get_mut(&member.node) {
            *entry = (member.addrs.clone(), now);
        } else if self.members.len() < self.max {
            self.members
                .insert(member.node, (member.addrs.clone(), now));
        }
    }

    pub(crate) fn addrs(&self, node: &NodeId) -> Option<&[String]> {
        self.members.get(node).map(|(a, _)| a.as_slice())
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.members.retain(|_, (_, seen)| now < *seen + ttl);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Up to `n` members picked by `pick(len)` indices (the caller's rng), without `skip`.
    pub(crate) fn sample(
        &self,
        n: usize,
        skip: &NodeId,
        mut pick: impl FnMut(usize) -> usize,
    ) -> Vec<Member> {
        let all: Vec<(&NodeId, &(Vec<String>, Instant))> =
            self.members.iter().filter(|(id, _)| *id != skip).collect();
        if all.len() <= n {
            return all
                .into_iter()
                .map(|(node, (addrs, _))| Member {
                    node: *node,
                    addrs: addrs.clone(),
                })
                .collect();
        }
        let mut chosen: Vec<usize> = Vec::with_capacity(n);
        while chosen.len() < n {
            let i = pick(all.len());
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        chosen
            .into_iter()
            .map(|i| Member {
                node: *all[i].0,
                addrs: all[i].1 .0.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use core::time::Duration;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn every_message_round_trips_and_trailing_bytes_are_refused() {
        let member = Member {
            node: n(1),
            addrs: alloc::vec!["tcp://10.0.0.1:7000".to_string()],
        };
        for d in [
            Discovery::Routes(alloc::vec![(n(1), 1), (n(2), 15)]),
            Discovery::Peers(alloc::vec![member.clone()]),
            Discovery::JoinRequest {
                addrs: member.addrs.clone(),
            },
            Discovery::JoinResponse {
                admitted: false,
                peers: alloc::vec![member],
            },
        ] {
            let bytes = d.encode();
            assert_eq!(Discovery::decode(&bytes), Some(d.clone()));
            let mut long = bytes.to_vec();
            long.push(0);
            assert_eq!(Discovery::decode(&long), None);
            for cut in 0..bytes.len() {
                assert_eq!(Discovery::decode(&bytes[..cut]), None);
            }
        }
    }

    #[test]
    fn a_huge_claimed_count_is_refused_before_allocating() {
        assert_eq!(Discovery::decode(&[0x01, 0xff, 0xff]), None);
        assert_eq!(Discovery::decode(&[0x02, 0xff, 0xff]), None);
        assert_eq!(Discovery::decode(&[0x01, 0x00, 0x01]), None);
    }

    #[test]
    fn the_directory_is_bounded_and_forgets_stale_members() {
        let mut d = Directory::new(n(0), 2, Duration::from_secs(10));
        let m = |b| Member {
            node: n(b),
            addrs: alloc::vec!["tcp://x:1".to_string()],
        };
        for b in 0..5 {
            d.learn(Instant::ZERO, &m(b));
        }
        assert_eq!(d.len(), 2, "own entry skipped, then full");
        d.learn(Instant::ZERO + Duration::from_secs(8), &m(1));
        d.expire(Instant::ZERO + Duration::from_secs(12));
        assert_eq!(d.len(), 1);
        assert!(d.addrs(&n(1)).is_some());
        assert_eq!(d.sample(5, &n(1), |_| 0).len(), 0);
    }
}
