//! Nodes joined by an in-memory network: seeds, duplicate links, redial, messages,
//! limits and shutdown.

use super::*;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;

/// Nodes named `n0`, `n1`, ...; a dial to `"nJ"` reaches node J.
struct Net {
    nodes: Vec<Node>,
    wires: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    events: Vec<Vec<NodeEvent>>,
    now: Instant,
    /// Drop every byte sent by this node (a silent peer).
    mute: Option<usize>,
}

impl Net {
    fn new(n: usize, config: NodeConfig) -> Self {
        let mut rng = Rng::from_seed([42; 32]);
        let nodes = (0..n)
            .map(|_| {
                Node::new(
                    Arc::new(Identity::generate(&mut rng)),
                    config.clone(),
                    rng.fork(),
                )
            })
            .collect();
        Net {
            nodes,
            wires: BTreeMap::new(),
            events: vec![Vec::new(); n],
            now: Instant::from_micros(1),
            mute: None,
        }
    }

    fn id(&self, i: usize) -> NodeId {
        self.nodes[i].node_id()
    }

    /// Process actions and bytes until nothing happens.
    fn run(&mut self) {
        let mut buf = vec![0u8; crate::link::MAX_TRANSMIT];
        for _ in 0..10_000 {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                while let Some(action) = self.nodes[i].poll_action() {
                    progress = true;
                    match action {
                        Action::Dial { conn, addr } => {
                            let j: usize = addr[1..].parse().unwrap();
                            match self.nodes[j].accept(self.now, Some(format!("n{i}"))) {
                                Ok(cj) => {
                                    self.wires.insert((i, conn), (j, cj));
                                    self.wires.insert((j, cj), (i, conn));
                                }
                                Err(_) => self.nodes[i].handle_closed(self.now, conn),
                            }
                        }
                        Action::Transmit { conn } => {
                            while let Some(n) =
                                self.nodes[i].poll_transmit(self.now, conn, &mut buf)
                            {
                                if let (Some(&(j, cj)), false) =
                                    (self.wires.get(&(i, conn)), self.mute == Some(i))
                                {
                                    self.nodes[j].handle_bytes(self.now, cj, &buf[..n]);
                                }
                            }
                        }
                        Action::Close { conn } => {
                            if let Some((j, cj)) = self.wires.remove(&(i, conn)) {
                                self.wires.remove(&(j, cj));
                                self.nodes[j].handle_closed(self.now, cj);
                            }
                        }
                    }
                }
                while let Some(e) = self.nodes[i].poll_event() {
                    progress = true;
                    self.events[i].push(e);
                }
            }
            if !progress {
                return;
            }
        }
        panic!("network never settled");
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        for n in &mut self.nodes {
            n.handle_timeout(self.now);
        }
        self.run();
    }

    fn ups(&self, i: usize) -> usize {
        self.events[i]
            .iter()
            .filter(|e| matches!(e, NodeEvent::PeerUp { .. }))
            .count()
    }

    fn downs(&self, i: usize) -> usize {
        self.events[i]
            .iter()
            .filter(|e| matches!(e, NodeEvent::PeerDown { .. }))
            .count()
    }
}

fn config() -> NodeConfig {
    NodeConfig::new([3; 32])
}

#[test]
fn a_seed_connects_and_messages_are_acknowledged() {
    let mut net = Net::new(2, config());
    net.nodes[0].add_seed(net.now, "n1");
    net.advance(Duration::ZERO);
    assert_eq!((net.ups(0), net.ups(1)), (1, 1));
    let peers: Vec<_> = net.nodes[0].peers().collect();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].hybrid && peers[0].direction == Direction::Outbound);
    let (b, a) = (net.id(1), net.id(0));
    let id = net.nodes[0].send(net.now, b, b"hello").unwrap();
    net.run();
    assert!(net.events[1].contains(&NodeEvent::Message {
        from: a,
        payload: Bytes::from_static(b"hello")
    }));
    assert!(net.events[0].contains(&NodeEvent::Delivered { to: b, id }));
    let me = net.id(0);
    assert_eq!(
        net.nodes[0].send(net.now, me, b"x"),
        Err(NodeSendError::NotConnected)
    );
}

#[test]
fn simultaneous_dials_leave_exactly_one_link() {
    let mut net = Net::new(2, config());
    net.nodes[0].add_seed(net.now, "n1");
    net.nodes[1].add_seed(net.now, "n0");
    net.advance(Duration::ZERO);
    for _ in 0..5 {
        net.advance(Duration::from_secs(1));
    }
    assert_eq!(
        (net.ups(0), net.ups(1)),
        (1, 1),
        "each side reports the peer once"
    );
    assert_eq!(
        (net.downs(0), net.downs(1)),
        (0, 0),
        "the duplicate's close is not a peer down"
    );
    assert_eq!(net.wires.len(), 2, "one connection (two ends) remains");
    let (a, b) = (
        net.nodes[0].peers().next().unwrap(),
        net.nodes[1].peers().next().unwrap(),
    );
    assert_eq!(
        net.wires.get(&(0, a.conn)),
        Some(&(1, b.conn)),
        "both kept the same link"
    );
    let a = net.id(0);
    let id = net.nodes[1].send(net.now, a, b"still works").unwrap();
    net.run();
    assert!(net.events[1].contains(&NodeEvent::Delivered { to: net.id(0), id }));
}

#[test]
fn a_lost_seed_is_redialed_with_backoff() {
    let mut net = Net::new(2, config());
    net.nodes[0].add_seed(net.now, "n1");
    net.advance(Duration::ZERO);
    let conn = net.nodes[0].peers().next().unwrap().conn;
    // The socket dies under node 0.
    let (j, cj) = net.wires.remove(&(0, conn)).unwrap();
    net.wires.remove(&(j, cj));
    net.nodes[0].handle_closed(net.now, conn);
    net.nodes[1].handle_closed(net.now, cj);
    net.run();
    assert_eq!(net.downs(0), 1);
    let next = net.nodes[0].poll_timeout().unwrap();
    assert!(
        next > net.now && next <= net.now + Duration::from_millis(200),
        "redial within the first backoff"
    );
    net.advance(Duration::from_millis(200));
    assert_eq!(net.ups(0), 2, "reconnected");
}

#[test]
fn unacknowledged_messages_fail_with_a_reason() {
    let mut net = Net::new(2, config());
    net.nodes[0].add_seed(net.now, "n1");
    net.advance(Duration::ZERO);
    let b = net.id(1);
    net.mute = Some(1);
    let id = net.nodes[0].send(net.now, b, b"into the void").unwrap();
    net.run();
    net.advance(Duration::from_secs(10));
    let failed = NodeEvent::SendFailed {
        to: b,
        id,
        reason: SendFailure::Timeout,
    };
    assert!(net.events[0].contains(&failed));
    // A message outstanding when the link closes fails with the close reason.
    let id = net.nodes[0].send(net.now, b, b"again").unwrap();
    let conn = net.nodes[0].peers().next().unwrap().conn;
    net.nodes[0].close(net.now, conn, CloseReason::Normal);
    net.run();
    let reason = SendFailure::LinkClosed(CloseReason::Normal);
    assert!(net.events[0].contains(&NodeEvent::SendFailed { to: b, id, reason }));
}

#[test]
fn limits_refuse_connections_and_rejections_are_reported() {
    let mut c = config();
    c.max_handshakes = 2;
    let mut node = Node::new(
        Arc::new(Identity::generate(&mut Rng::from_seed([1; 32]))),
        c,
        Rng::from_seed([2; 32]),
    );
    assert!(node.accept(Instant::ZERO, None).is_ok());
    let c2 = node.accept(Instant::ZERO, None).unwrap();
    assert_eq!(
        node.accept(Instant::ZERO, None),
        Err(AcceptError::TooManyHandshakes)
    );
    node.handle_bytes(Instant::ZERO, c2, b"\x00\x02\x09\x09");
    let e = node.poll_event().unwrap();
    assert_eq!(
        e,
        NodeEvent::Rejected {
            conn: c2,
            addr: None,
            reason: CloseReason::UnsupportedVersion,
            by_peer: false
        }
    );
    assert_eq!(node.poll_action(), Some(Action::Close { conn: c2 }));
    assert!(
        node.accept(Instant::ZERO, None).is_ok(),
        "the slot was freed"
    );
    // Stale ids are ignored.
    node.handle_bytes(Instant::ZERO, c2, b"garbage");
    assert!(node.poll_event().is_none());
}

#[test]
fn shutdown_closes_every_link_and_stops_redialing() {
    let mut net = Net::new(3, config());
    net.nodes[0].add_seed(net.now, "n1");
    net.nodes[0].add_seed(net.now, "n2");
    net.advance(Duration::ZERO);
    assert_eq!(net.ups(0), 2);
    net.nodes[0].shutdown(net.now);
    net.run();
    assert!(net.nodes[0].is_idle());
    assert_eq!(net.nodes[0].poll_timeout(), None);
    for j in [1, 2] {
        let down = net.events[j].iter().any(|e| {
            matches!(
                e,
                NodeEvent::PeerDown {
                    reason: CloseReason::Normal,
                    by_peer: true,
                    ..
                }
            )
        });
        assert!(down, "node {j} saw an orderly close");
    }
}
