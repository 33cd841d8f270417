//! The trace of a run: one canonical text line per node event, fault and API call,
//! folded into a running SHA-256. Two runs with the same seed give the same hash.

use std::collections::VecDeque;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use weft_mesh::membership::MemberEvent;
use weft_mesh::node::{Direction, NodeEvent, SendFailure};
use weft_mesh::{Instant, NodeId};

/// Running hash of the trace, plus its last lines (and optionally all of them).
pub(crate) struct Trace {
    hasher: Sha256,
    lines: u64,
    tail: VecDeque<String>,
    tail_len: usize,
    full: Option<Vec<String>>,
}

impl Trace {
    pub fn new(tail_len: usize, keep_full: bool) -> Self {
        Trace {
            hasher: Sha256::new(),
            lines: 0,
            tail: VecDeque::with_capacity(tail_len),
            tail_len,
            full: keep_full.then(Vec::new),
        }
    }

    /// Append the line `text` at `now`.
    pub fn record(&mut self, now: Instant, text: &str) {
        let line = format!("{:>12} {text}", now.as_micros());
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.lines += 1;
        if self.tail_len > 0 {
            if self.tail.len() == self.tail_len {
                self.tail.pop_front();
            }
            self.tail.push_back(line.clone());
        }
        if let Some(full) = &mut self.full {
            full.push(line);
        }
    }

    /// SHA-256 over every line so far (each followed by `\n`).
    pub fn hash(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    pub fn len(&self) -> u64 {
        self.lines
    }

    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    pub fn full(&self) -> Option<&[String]> {
        self.full.as_deref()
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The canonical text of a node event; `name` turns node ids into short names.
pub(crate) fn describe(event: &NodeEvent, name: impl Fn(&NodeId) -> String) -> String {
    let dir = |d: &Direction| match d {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    };
    match event {
        NodeEvent::PeerUp {
            node,
            conn,
            addr,
            hybrid,
            direction,
        } => format!(
            "peer_up {} {conn} {} hybrid={hybrid} addr={}",
            name(node),
            dir(direction),
            addr.as_deref().unwrap_or("-")
        ),
        NodeEvent::PeerDown {
            node,
            reason,
            by_peer,
        } => format!("peer_down {} {reason} by_peer={by_peer}", name(node)),
        NodeEvent::Rejected {
            conn,
            addr,
            reason,
            by_peer,
        } => format!(
            "rejected {conn} addr={} {reason} by_peer={by_peer}",
            addr.as_deref().unwrap_or("-")
        ),
        NodeEvent::Message {
            from,
            payload,
            hops,
            ..
        } => format!(
            "message from={} hops={hops} len={} head={}",
            name(from),
            payload.len(),
            hex(&payload[..payload.len().min(8)])
        ),
        NodeEvent::Request {
            from,
            payload,
            hops,
            ..
        } => format!(
            "request from={} hops={hops} len={}",
            name(from),
            payload.len()
        ),
        NodeEvent::Response { id, from, payload } => format!(
            "response id={} from={} len={}",
            id.0,
            name(from),
            payload.len()
        ),
        NodeEvent::Delivered { to, id } => format!("delivered to={} id={}", name(to), id.0),
        NodeEvent::SendFailed { to, id, reason } => {
            let why = match reason {
                SendFailure::Timeout => "timeout".to_string(),
                SendFailure::PeerClosed(r) => format!("peer_closed:{r}"),
                other => format!("{other:?}"),
            };
            format!("send_failed to={} id={} {why}", name(to), id.0)
        }
        NodeEvent::Member(e) => match e {
            MemberEvent::Up { node, addrs } => {
                format!("member_up {} addrs={}", name(node), addrs.join(","))
            }
            MemberEvent::Suspect { node, incarnation } => {
                format!("member_suspect {} inc={incarnation}", name(node))
            }
            MemberEvent::Alive { node } => format!("member_alive {}", name(node)),
            MemberEvent::Down { node } => format!("member_down {}", name(node)),
            MemberEvent::Left { node } => format!("member_left {}", name(node)),
        },
        other => format!("{other:?}"),
    }
}
