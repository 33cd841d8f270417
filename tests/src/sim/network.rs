//! The simulated network: connections ("wires") between nodes, each with two ends and
//! one pipe per direction.
//!
//! A pipe models a TCP socket's send side: bytes the node writes go into a bounded
//! send buffer, leave it serially at the configured bandwidth in randomly sized
//! pieces, and arrive after the one-way latency plus jitter. Arrival times within a
//! pipe never decrease, so bytes are never reordered. A FIN travels in order behind
//! the data.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use weft_mesh::node::ConnId;
use weft_mesh::{Instant, Rng};

use super::random::{below, between, up_to};
use super::NodeIdx;

/// Link characteristics of one connection (both directions alike).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NetProfile {
    /// One-way latency (a dial takes one for the SYN and one for the SYN-ACK).
    pub latency: Duration,
    /// Extra one-way delay, uniform in `0..=jitter`, never reordering a connection's bytes.
    pub jitter: Duration,
    /// Bytes per second leaving each send buffer.
    pub bandwidth: u64,
    /// Capacity of each simulated socket send buffer, in bytes (at least 4096, the
    /// smallest `poll_transmit` buffer).
    pub socket_buffer: usize,
    /// Largest piece the bytes are cut into on the wire (pieces are random in size).
    pub max_chunk: usize,
}

impl Default for NetProfile {
    /// 5 ms latency, 2 ms jitter, 100 MB/s, 256 KiB socket buffers, pieces up to 16 KiB.
    fn default() -> Self {
        NetProfile {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            bandwidth: 100_000_000,
            socket_buffer: 256 * 1024,
            max_chunk: 16 * 1024,
        }
    }
}

impl NetProfile {
    /// One-way delay of a piece: latency plus a random share of the jitter.
    pub(crate) fn delay(&self, rng: &mut Rng) -> Duration {
        self.latency + up_to(rng, self.jitter)
    }

    /// How long `bytes` take to leave the send buffer.
    pub(crate) fn serialization(&self, bytes: usize) -> Duration {
        let bw = self.bandwidth.max(1) as u128;
        Duration::from_micros(((bytes as u128 * 1_000_000).div_ceil(bw)) as u64)
    }

    /// A random piece size for `available` bytes: a quarter of the pieces are tiny
    /// (1..=64 bytes, to split length prefixes), the rest up to `max_chunk`.
    pub(crate) fn piece(&self, rng: &mut Rng, available: usize) -> usize {
        let cap = if below(rng, 4) == 0 {
            64
        } else {
            self.max_chunk.max(1)
        };
        between(rng, 1, cap.min(available) as u64) as usize
    }
}

/// Identifies a connection in the simulator (allocated in order, never reused).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WireId(pub u64);

impl fmt::Display for WireId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// Which end of a wire: the dialer (0) or the acceptor (1).
pub(crate) type Side = usize;
/// The dialer's end.
pub(crate) const DIALER: Side = 0;
/// The acceptor's end.
pub(crate) const ACCEPTOR: Side = 1;

/// What travels through a pipe.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Vec<u8>),
    Fin,
}

/// One direction of a wire.
#[derive(Default, Debug)]
pub(crate) struct Pipe {
    /// Written by the node, not yet on the wire (the socket send buffer).
    pub sendq: VecDeque<Piece>,
    /// Bytes in the send buffer, including the piece being serialized.
    pub buffered: usize,
    /// The piece being serialized (a `TxDone` event is scheduled for it).
    pub current: Option<Piece>,
    /// On the wire, with arrival times in non-decreasing order.
    pub in_flight: VecDeque<(Instant, Piece)>,
    /// Arrival time of the last piece put on the wire.
    pub last_arrival: Instant,
}

impl Pipe {
    /// Queue `bytes` in the send buffer.
    pub fn write(&mut self, bytes: &[u8]) {
        self.buffered += bytes.len();
        self.sendq.push_back(Piece::Data(bytes.to_vec()));
    }

    /// Free space in a send buffer of `capacity` bytes.
    pub fn room(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.buffered)
    }

    /// Drop everything (the connection was reset).
    pub fn clear(&mut self) {
        self.sendq.clear();
        self.current = None;
        self.in_flight.clear();
        self.buffered = 0;
    }

    /// Take the next piece to serialize: up to `size(available)` bytes of the front
    /// write, or a FIN.
    pub fn next_piece(&mut self, size: impl FnOnce(usize) -> usize) -> Option<Piece> {
        match self.sendq.front_mut()? {
            Piece::Fin => self.sendq.pop_front(),
            Piece::Data(data) => {
                let n = size(data.len()).clamp(1, data.len());
                if n == data.len() {
                    self.sendq.pop_front()
                } else {
                    let rest = data.split_off(n);
                    Some(Piece::Data(std::mem::replace(data, rest)))
                }
            }
        }
    }
}

/// One end of a wire, owned by a node.
#[derive(Debug)]
pub(crate) struct End {
    /// The node at this end.
    pub node: NodeIdx,
    /// The node's handle for the connection (`None` until accepted).
    pub conn: Option<ConnId>,
    /// The node still owns this end (no close, reset or crash yet).
    pub open: bool,
    /// The connection is established from this end's view (the dialer waits for the
    /// SYN-ACK).
    pub writable: bool,
    /// Outgoing direction.
    pub out: Pipe,
}

impl End {
    pub(crate) fn new(node: NodeIdx, conn: Option<ConnId>) -> Self {
        End {
            node,
            conn,
            open: conn.is_some(),
            writable: false,
            out: Pipe::default(),
        }
    }
}

/// A connection between two nodes.
#[derive(Debug)]
pub(crate) struct Wire {
    /// `ends[DIALER]` and `ends[ACCEPTOR]`.
    pub ends: [End; 2],
    /// Its link characteristics.
    pub profile: NetProfile,
    /// Bytes stopped flowing on purpose (`Sim::stall`), without a close.
    pub stalled: bool,
    /// Reset: nothing flows any more; open ends are being told.
    pub dead: bool,
    /// The acceptor took it (or refused it); no longer a pending dial.
    pub connected: bool,
}

impl Wire {
    /// The two nodes, dialer first.
    pub fn nodes(&self) -> (NodeIdx, NodeIdx) {
        (self.ends[DIALER].node, self.ends[ACCEPTOR].node)
    }

    /// Whether neither end is still held by its node.
    pub fn finished(&self) -> bool {
        !self.ends[DIALER].open && !self.ends[ACCEPTOR].open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_writes_in_order() {
        let mut p = Pipe::default();
        p.write(b"hello world");
        p.sendq.push_back(Piece::Fin);
        let mut out = Vec::new();
        while let Some(piece) = p.next_piece(|n| n.min(4)) {
            out.push(piece);
        }
        let data: Vec<u8> = out
            .iter()
            .flat_map(|p| match p {
                Piece::Data(d) => d.clone(),
                Piece::Fin => Vec::new(),
            })
            .collect();
        assert_eq!(data, b"hello world");
        assert!(matches!(out.last(), Some(Piece::Fin)));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn serialization_time_follows_bandwidth() {
        let p = NetProfile {
            bandwidth: 1_000_000,
            ..NetProfile::default()
        };
        assert_eq!(p.serialization(1_000_000), Duration::from_secs(1));
        assert_eq!(p.serialization(1), Duration::from_micros(1));
    }
}
