//! Nodes joined by an in-memory network: seeds, duplicate links, redial, messages,
//! limits and shutdown.

use super::*;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;

use crate::mesh::Target;

/// Nodes named `n0`, `n1`, ...; a dial to `"nJ"` reaches node J.
struct Net {
    nodes: Vec<Node>,
    wires: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    events: Vec<Vec<NodeEvent>>,
    now: Instant,
    /// Drop every byte sent by this node (a silent peer).
    mute: Option<usize>,
    /// Transmissions each node made.
    transmits: Vec<usize>,
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
            transmits: vec![0; n],
        }
    }

    /// One more node (named after its index, like the others).
    fn add_node(&mut self, config: NodeConfig) -> usize {
        let mut rng = Rng::from_seed([100 + self.nodes.len() as u8; 32]);
        let identity = Arc::new(Identity::generate(&mut rng));
        self.nodes.push(Node::new(identity, config, rng.fork()));
        self.events.push(Vec::new());
        self.transmits.push(0);
        self.nodes.len() - 1
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
                                self.transmits[i] += 1;
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

/// The in-memory network settles without time passing: no receipt waits for an
/// answer (that has a test of its own).
fn config() -> NodeConfig {
    let mut c = NodeConfig::new([3; 32]);
    c.receipt_delay = Duration::ZERO;
    c
}

/// Two linked nodes whose receipts may wait `delay` for an answer (membership off: no
/// heartbeat traffic to ride on), and their ids.
fn receipt_pair(delay: Duration) -> (Net, NodeId, NodeId) {
    let mut c = config();
    c.receipt_delay = delay;
    c.membership = None;
    let mut net = Net::new(2, c);
    net.nodes[0].add_seed(net.now, "n1");
    net.advance(Duration::ZERO);
    let (a, b) = (net.id(0), net.id(1));
    (net, a, b)
}

/// Whether node `i` was told that its message `id` to `to` arrived.
fn delivered(net: &Net, i: usize, to: NodeId, id: MessageId) -> bool {
    net.events[i].contains(&NodeEvent::Delivered { to, id })
}

#[test]
fn receipts_ride_with_quick_answers_and_never_wait_on_one_way_links() {
    let (mut net, a, b) = receipt_pair(Duration::from_millis(1));

    // One way: the receipt leaves at the end of the read, at once.
    let id = net.nodes[0]
        .send(net.now, b, Target::Node, &b"one"[..])
        .unwrap();
    net.run();
    assert!(delivered(&net, 0, b, id));

    // b answers at once (within the delay of its receipt): the link turns ping-pong,
    // and from then on b's receipt waits for b's answer and leaves in its record.
    net.nodes[1]
        .send(net.now, a, Target::Node, &b"answer"[..])
        .unwrap();
    net.run();
    let sent = net.transmits[1];
    let id = net.nodes[0]
        .send(net.now, b, Target::Node, &b"ping"[..])
        .unwrap();
    net.run();
    assert!(
        !delivered(&net, 0, b, id),
        "b holds its receipt for the answer"
    );
    net.nodes[1]
        .send(net.now, a, Target::Node, &b"pong"[..])
        .unwrap();
    net.run();
    assert!(delivered(&net, 0, b, id));
    assert_eq!(
        net.transmits[1] - sent,
        1,
        "receipt and answer in one transmission"
    );

    // No answer this time: the receipt leaves when the delay is over, and the link is
    // one-way again (the next receipt does not wait).
    let id = net.nodes[0]
        .send(net.now, b, Target::Node, &b"no answer"[..])
        .unwrap();
    net.run();
    assert!(!delivered(&net, 0, b, id));
    net.advance(Duration::from_millis(1));
    assert!(delivered(&net, 0, b, id));
    let id = net.nodes[0]
        .send(net.now, b, Target::Node, &b"one way"[..])
        .unwrap();
    net.run();
    assert!(delivered(&net, 0, b, id));

    // A burst: every receipt of one read leaves in one transmission.
    let before = net.transmits[1];
    let ids: Vec<_> = (0..receipts::MAX_HELD)
        .map(|_| {
            net.nodes[0]
                .send(net.now, b, Target::Node, &b"x"[..])
                .unwrap()
        })
        .collect();
    net.run();
    assert!(ids.iter().all(|&id| delivered(&net, 0, b, id)));
    assert_eq!(
        net.transmits[1] - before,
        1,
        "one transmission carries every receipt"
    );
}

/// A receipt that rode in an answer leaves nothing behind: its deadline neither wakes
/// the driver nor, once passed, turns the link one-way while a later receipt waits.
#[test]
fn receipts_that_rode_in_answers_leave_no_deadline_behind() {
    let delay = Duration::from_millis(1);
    let (mut net, a, b) = receipt_pair(delay);
    net.advance(Duration::from_millis(1));
    // One message answered at once: the link turns ping-pong.
    net.nodes[0]
        .send(net.now, b, Target::Node, &b"one"[..])
        .unwrap();
    net.run();
    net.nodes[1]
        .send(net.now, a, Target::Node, &b"answer"[..])
        .unwrap();
    net.run();
    // Round trips answered after 0.4 ms each, for five times the delay.
    for trip in 0..12 {
        let id = net.nodes[0]
            .send(net.now, b, Target::Node, &b"ping"[..])
            .unwrap();
        net.run();
        let sent = net.transmits[1];
        let deadline = net.nodes[1].poll_timeout();
        assert!(
            deadline.is_some_and(|t| t <= net.now + delay),
            "trip {trip}: b's held receipt is due within the delay"
        );
        net.advance(Duration::from_micros(400));
        assert!(
            !delivered(&net, 0, b, id),
            "trip {trip}: b still holds its receipt for the answer"
        );
        net.nodes[1]
            .send(net.now, a, Target::Node, &b"pong"[..])
            .unwrap();
        net.run();
        assert!(delivered(&net, 0, b, id), "trip {trip}");
        assert_eq!(
            net.transmits[1] - sent,
            1,
            "trip {trip}: receipt and answer in one transmission"
        );
    }
    // With nothing held, b's next deadline is not one of the receipts that left.
    let now = net.now;
    assert!(
        net.nodes[1].poll_timeout().is_none_or(|t| t > now + delay),
        "no stale receipt deadline"
    );
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
    let id = net.nodes[0]
        .send(net.now, b, Target::Node, &b"hello"[..])
        .unwrap();
    net.run();
    assert!(net.events[1].contains(&NodeEvent::Message {
        from: a,
        target: Target::Node,
        payload: Bytes::from_static(b"hello"),
        hops: 1,
    }));
    assert!(net.events[0].contains(&NodeEvent::Delivered { to: b, id }));
    // No link, no route, no address: fails at once with a reason.
    let nobody = NodeId::from_bytes([9; 32]);
    let id = net.nodes[0]
        .send(net.now, nobody, Target::Node, &b"x"[..])
        .unwrap();
    let failed = NodeEvent::SendFailed {
        to: nobody,
        id,
        reason: SendFailure::NoRoute,
    };
    net.run();
    assert!(net.events[0].contains(&failed));
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
    let id = net.nodes[1]
        .send(net.now, a, Target::Node, &b"still works"[..])
        .unwrap();
    net.run();
    assert!(net.events[1].contains(&NodeEvent::Delivered { to: net.id(0), id }));
}

#[test]
fn a_lost_seed_is_redialed_with_backoff() {
    let mut c = config();
    c.membership = None; // no SWIM timer (a gossip round) due at once
    let mut net = Net::new(2, c);
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
    let id = net.nodes[0]
        .send(net.now, b, Target::Node, &b"into the void"[..])
        .unwrap();
    net.run();
    net.advance(Duration::from_secs(10));
    let failed = NodeEvent::SendFailed {
        to: b,
        id,
        reason: SendFailure::Timeout,
    };
    assert!(net.events[0].contains(&failed));
    // The seed's side can redial, so its message waits for the link to come back; the
    // side that was dialed cannot: its message fails with the close reason at once.
    let a = net.id(0);
    let id = net.nodes[1]
        .send(net.now, a, Target::Node, &b"again"[..])
        .unwrap();
    let conn = net.nodes[1].peers().next().unwrap().conn;
    net.nodes[1].close(net.now, conn, CloseReason::Normal);
    net.run();
    let reason = SendFailure::PeerClosed(CloseReason::Normal);
    assert!(net.events[1].contains(&NodeEvent::SendFailed { to: a, id, reason }));
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

/// `n0 - n1 - n2`: both ends dial the middle; routes spread by advertisement.
fn line3() -> Net {
    let mut net = Net::new(3, config());
    net.nodes[0].add_seed(net.now, "n1");
    net.nodes[2].add_seed(net.now, "n1");
    net.advance(Duration::ZERO);
    net.advance(Duration::from_millis(50));
    net
}

fn messages(net: &Net, i: usize) -> Vec<(NodeId, Bytes, u8)> {
    net.events[i]
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Message {
                from,
                payload,
                hops,
                ..
            } => Some((*from, payload.clone(), *hops)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_relay_carries_messages_and_requests_between_nodes_without_a_link() {
    let mut net = line3();
    let (a, b, c) = (net.id(0), net.id(1), net.id(2));
    assert!(net.nodes[0].peers().all(|p| p.node == b));
    let route = net.nodes[0]
        .routes()
        .find(|(d, _)| *d == c)
        .expect("route to n2");
    assert_eq!(
        route.1,
        Route {
            next_hop: b,
            hops: 2
        }
    );

    // Counted from here: SWIM's gossip packets from n0 to n2 are relayed too.
    let relayed = net.nodes[1].stats().relayed;
    let id = net.nodes[0]
        .send(
            net.now,
            c,
            Target::Service("inbox".into()),
            &b"over the relay"[..],
        )
        .unwrap();
    net.run();
    assert_eq!(
        messages(&net, 2),
        vec![(a, Bytes::from_static(b"over the relay"), 2)]
    );
    assert!(net.events[0].contains(&NodeEvent::Delivered { to: c, id }));
    assert_eq!(
        net.nodes[1].stats().relayed - relayed,
        2,
        "the message and its receipt"
    );

    let id = net.nodes[0]
        .request(
            net.now,
            c,
            Target::Pid(7),
            &b"ping"[..],
            Duration::from_secs(5),
        )
        .unwrap();
    net.run();
    let token = net.events[2]
        .iter()
        .find_map(|e| match e {
            NodeEvent::Request {
                request, target, ..
            } if *target == Target::Pid(7) => Some(*request),
            _ => None,
        })
        .expect("request arrived");
    net.nodes[2].respond(net.now, token, &b"pong"[..]).unwrap();
    net.run();
    assert!(net.events[0].contains(&NodeEvent::Response {
        id,
        from: c,
        payload: Bytes::from_static(b"pong")
    }));
}

#[test]
fn a_forged_source_is_rejected_by_the_destination() {
    let mut net = line3();
    let (a, c) = (net.id(0), net.id(2));
    // n1 writes envelopes that claim to come from n0: unsigned, and signed with its own key.
    let header = crate::mesh::envelope::Header {
        kind: crate::mesh::Kind::Data,
        hop_count: 1,
        attempt: 0,
        source: a,
        dest: c,
        id: [1; 16],
        reply_to: [0; 16],
        target: Target::Node,
    };
    let forger = net.nodes[1].identity.clone();
    let conn = *net.nodes[1].peers.get(&c).unwrap();
    for signer in [None, Some(&*forger)] {
        let bytes = crate::mesh::envelope::encode(&header, Bytes::from_static(b"forged"), signer);
        let e = net.nodes[1].links.get_mut(conn).unwrap();
        e.link.send(FrameType::Message, bytes).unwrap();
        net.nodes[1].service(conn);
        net.run();
    }
    assert!(messages(&net, 2).is_empty());
    assert_eq!(net.nodes[2].stats().forged, 2);
    // A relay that alters a signed envelope is caught the same way.
    let mut bytes = crate::mesh::envelope::encode(
        &header,
        Bytes::from_static(b"genuine"),
        Some(&*net.nodes[0].identity),
    )
    .to_bytes()
    .to_vec();
    let at = bytes.len() - 97;
    bytes[at] ^= 1;
    let e = net.nodes[1].links.get_mut(conn).unwrap();
    e.link.send(FrameType::Message, Bytes::from(bytes)).unwrap();
    net.nodes[1].service(conn);
    net.run();
    assert!(messages(&net, 2).is_empty());
    assert_eq!(net.nodes[2].stats().forged, 3);
}

#[test]
fn a_duplicate_is_delivered_once_and_acknowledged_again() {
    let mut net = line3();
    let (a, c) = (net.id(0), net.id(2));
    let header = crate::mesh::envelope::Header {
        kind: crate::mesh::Kind::Data,
        hop_count: 0,
        attempt: 0,
        source: a,
        dest: c,
        id: [9; 16],
        reply_to: [0; 16],
        target: Target::Node,
    };
    let conn = *net.nodes[0].peers.get(&net.id(1)).unwrap();
    for attempt in 0..3u8 {
        let header = crate::mesh::envelope::Header {
            attempt,
            ..header.clone()
        };
        let bytes = crate::mesh::envelope::encode(
            &header,
            Bytes::from_static(b"once"),
            Some(&*net.nodes[0].identity.clone()),
        );
        let e = net.nodes[0].links.get_mut(conn).unwrap();
        e.link.send(FrameType::Message, bytes).unwrap();
        net.nodes[0].service(conn);
        net.run();
    }
    assert_eq!(messages(&net, 2).len(), 1);
    assert_eq!(net.nodes[2].stats().duplicates, 2);
}

#[test]
fn a_banned_node_is_refused() {
    let mut c = config();
    let mut rng = Rng::from_seed([42; 32]);
    let first = Identity::generate(&mut rng).node_id();
    c.banned = vec![first];
    let mut net = Net::new(2, c);
    assert_eq!(net.id(0), first, "same identities as Net::new draws");
    net.nodes[0].add_seed(net.now, "n1");
    net.advance(Duration::ZERO);
    net.advance(Duration::from_millis(10));
    assert!(net.nodes[1].peers().next().is_none());
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        NodeEvent::PeerDown {
            reason: CloseReason::Banned,
            ..
        } | NodeEvent::Rejected {
            reason: CloseReason::Banned,
            ..
        }
    )));
}

#[test]
fn joining_and_peer_exchange_fill_the_directory_and_dial_members() {
    let mut c = config();
    c.target_peers = 3;
    let mut net = Net::new(4, c);
    for i in 0..4 {
        net.nodes[i].config.advertise = vec![format!("n{i}")];
    }
    // Everyone joins through n0; n0 tells later joiners about earlier ones.
    for i in 1..4 {
        net.nodes[i].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        net.advance(Duration::from_millis(10));
    }
    for _ in 0..4 {
        net.advance(Duration::from_secs(5));
    }
    for i in 0..4 {
        assert_eq!(
            net.nodes[i].peers().count(),
            3,
            "n{i} is linked to everyone"
        );
    }
}

#[test]
fn a_response_lost_for_want_of_a_route_is_sent_again_for_the_retransmitted_request() {
    // n0 - n1 - n2 settled; then n3 joins at n0 and asks n2 at once: n2 answers before
    // the route back to n3 has reached n1, so n1 drops the first response.
    let mut net = Net::new(4, config());
    net.nodes[1].add_seed(net.now, "n0");
    net.nodes[2].add_seed(net.now, "n1");
    net.advance(Duration::ZERO);
    net.advance(Duration::from_millis(100));
    net.nodes[3].add_seed(net.now, "n0");
    let c = net.id(2);
    let mut waited = 0;
    while net.nodes[3].routes().all(|(d, _)| d != c) {
        net.advance(Duration::from_millis(1));
        waited += 1;
        assert!(waited < 1000, "n3 learns a route to n2");
    }
    let id = net.nodes[3]
        .request(net.now, c, Target::Node, &b"hi"[..], Duration::from_secs(5))
        .unwrap();
    let mut answered = 0;
    for _ in 0..300 {
        net.run();
        let tokens: Vec<RequestToken> = net.events[2]
            .drain(..)
            .filter_map(|e| match e {
                NodeEvent::Request { request, .. } => Some(request),
                _ => None,
            })
            .collect();
        for t in tokens {
            net.nodes[2].respond(net.now, t, &b"hello"[..]).unwrap();
            answered += 1;
        }
        net.advance(Duration::from_millis(10));
    }
    assert_eq!(answered, 1, "the application sees the request once");
    let responses = net.events[3]
        .iter()
        .filter(|e| matches!(e, NodeEvent::Response { id: i, .. } if *i == id))
        .count();
    assert_eq!(responses, 1);
    // The scenario did happen: n1 had no route for the first response, and n2 answered
    // the retransmitted copy from its cache.
    assert_eq!(net.nodes[1].stats().no_route, 1);
    assert_eq!(net.nodes[2].stats().duplicates, 1);
}

#[test]
fn members_are_probed_through_relays_and_a_silent_member_is_declared_down() {
    use crate::membership::{MemberEvent, MemberState};
    let mut net = line3();
    for _ in 0..50 {
        net.advance(Duration::from_millis(100));
    }
    let ids = [net.id(0), net.id(1), net.id(2)];
    for (i, node) in net.nodes.iter().enumerate() {
        let alive: Vec<NodeId> = node
            .members()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.node)
            .collect();
        assert_eq!(alive.len(), 3, "node {i} knows every member alive");
    }
    // n0 and n2 share no link: their probes travel in relayed membership envelopes.
    assert!(!net.nodes[0].peers().any(|p| p.node == ids[2]));
    assert!(net.nodes[1].stats().relayed > 0);
    let (swim0, health) = net.nodes[0].membership_stats().unwrap();
    assert!(swim0.acks_received >= 3 && health == 0, "{swim0:?}");
    let up = |i: usize, n: NodeId| {
        net.events[i]
            .iter()
            .any(|e| matches!(e, NodeEvent::Member(MemberEvent::Up { node, .. }) if *node == n))
    };
    assert!(up(0, ids[2]) && up(2, ids[0]) && up(0, ids[1]));

    // n2 falls silent (its bytes are lost): both others suspect it, then declare it down.
    net.mute = Some(2);
    for _ in 0..600 {
        net.advance(Duration::from_millis(100));
    }
    for i in 0..2 {
        let about = |pred: fn(&MemberEvent) -> bool| {
            net.events[i].iter().position(|e| match e {
                NodeEvent::Member(m) => pred(m),
                _ => false,
            })
        };
        let suspect = about(|m| matches!(m, MemberEvent::Suspect { .. }));
        let down = about(|m| matches!(m, MemberEvent::Down { .. }));
        assert!(
            suspect.is_some() && down.is_some() && suspect < down,
            "node {i}"
        );
        let downs: Vec<_> = net.events[i]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Member(MemberEvent::Down { node }) => Some(*node),
                _ => None,
            })
            .collect();
        assert_eq!(
            downs,
            [ids[2]],
            "node {i} declared only the silent member down"
        );
    }
}

#[test]
fn membership_can_be_turned_off() {
    let mut c = config();
    c.membership = None;
    let mut net = Net::new(2, c);
    net.nodes[0].add_seed(net.now, "n1");
    for _ in 0..30 {
        net.advance(Duration::from_millis(100));
    }
    assert_eq!(net.nodes[0].members().count(), 0);
    assert!(net.nodes[0].membership_stats().is_none());
    assert!(!net.events[0]
        .iter()
        .any(|e| matches!(e, NodeEvent::Member(_))));
}

#[test]
fn services_spread_to_every_member_and_leave_with_their_provider() {
    use crate::registry::ServiceName;
    let mut net = line3();
    let ids = [net.id(0), net.id(1), net.id(2)];
    let db = ServiceName::new("db").unwrap();
    let providers =
        |net: &Net, i: usize| -> Vec<NodeId> { net.nodes[i].services().providers(&db).collect() };
    let service = |net: &Net, i: usize, up: bool| {
        net.events[i].iter().any(|e| match e {
            NodeEvent::ServiceUp { node, name } if up => *node == ids[2] && name == "db",
            NodeEvent::ServiceDown { node, name } if !up => *node == ids[2] && name == "db",
            _ => false,
        })
    };
    // n2 advertises: n1 learns it from n2, n0 from n1's forward (no link to n2).
    net.nodes[2].advertise(net.now, "db", b"port=5432").unwrap();
    net.run();
    for i in 0..2 {
        assert_eq!(providers(&net, i), [ids[2]], "node {i}");
        assert!(service(&net, i, true), "node {i} reported the service up");
    }
    let info = net.nodes[0].services().get(&ids[2], &db).unwrap();
    assert_eq!(&info.metadata()[..], b"port=5432");
    net.nodes[1]
        .register_process(net.now, 7, "worker", b"")
        .unwrap();
    net.run();
    assert_eq!(
        net.nodes[0].processes().get(&ids[1], &7).unwrap().name(),
        "worker"
    );

    // Withdrawn: gone everywhere.
    net.nodes[2].withdraw(net.now, "db").unwrap();
    net.run();
    assert!(providers(&net, 0).is_empty() && service(&net, 0, false));

    // A node that joins later catches up through the digest exchange on its first link.
    net.nodes[2].advertise(net.now, "db", b"").unwrap();
    net.run();
    let late = net.add_node(config());
    net.nodes[late].add_seed(net.now, "n0");
    net.advance(Duration::ZERO);
    assert_eq!(providers(&net, 3), [ids[2]]);
    assert_eq!(
        net.nodes[3].processes().get(&ids[1], &7).unwrap().name(),
        "worker"
    );

    // The provider falls silent: once SWIM declares it down, its services go too.
    net.mute = Some(2);
    for _ in 0..600 {
        net.advance(Duration::from_millis(100));
        if providers(&net, 0).is_empty() {
            break;
        }
    }
    assert!(
        providers(&net, 0).is_empty(),
        "n2's service is gone from n0"
    );
    let down = net.events[0].iter().position(|e| {
        matches!(e, NodeEvent::Member(crate::membership::MemberEvent::Down { node }) if *node == ids[2])
    });
    let gone = net.events[0]
        .iter()
        .rposition(|e| matches!(e, NodeEvent::ServiceDown { node, .. } if *node == ids[2]));
    assert!(
        down.is_some() && down < gone,
        "member down, then its service down"
    );
}

#[test]
fn invalid_registry_writes_are_refused() {
    let mut net = Net::new(1, config());
    let long = "x".repeat(256);
    assert!(matches!(
        net.nodes[0].advertise(net.now, "", b""),
        Err(RegistryError::Entry(_))
    ));
    assert!(matches!(
        net.nodes[0].advertise(net.now, &long, b""),
        Err(RegistryError::Entry(_))
    ));
    assert!(matches!(
        net.nodes[0].advertise(net.now, "ok", &[0; 2048]),
        Err(RegistryError::Entry(_))
    ));
    assert_eq!(net.nodes[0].services().len(), 0);
}

#[test]
fn resolve_asks_the_cluster_caches_not_found_and_rotates_among_providers() {
    use crate::resolve::{Resolution, ResolveError};
    let mut net = line3();
    let ids = [net.id(0), net.id(1), net.id(2)];
    // Nobody provides "db": the query to n0's only peer comes back empty.
    let Resolution::Ask(query) = net.nodes[0].resolve(net.now, "db").unwrap() else {
        panic!("not in the registry: the cluster is asked");
    };
    net.run();
    assert!(net.events[0].contains(&NodeEvent::Resolved {
        query,
        result: Err(ResolveError::NotFound)
    }));
    assert_eq!(
        net.nodes[0].resolve(net.now, "db").unwrap(),
        Resolution::NotFound,
        "negatively cached"
    );
    // Two providers appear: the registry wins over the negative entry, in turn.
    net.nodes[1].advertise(net.now, "db", b"").unwrap();
    net.nodes[2].advertise(net.now, "db", b"").unwrap();
    net.run();
    let picks: Vec<_> = (0..4)
        .map(|_| net.nodes[0].resolve(net.now, "db").unwrap())
        .collect();
    let p = |i: usize| Resolution::Provider(ids[i]);
    assert!(picks == [p(1), p(2), p(1), p(2)] || picks == [p(2), p(1), p(2), p(1)]);
    // A provider that keeps failing is skipped (its breaker opens).
    for _ in 0..3 {
        net.nodes[0].provider_result(net.now, &ids[1], false);
    }
    for _ in 0..3 {
        assert_eq!(net.nodes[0].resolve(net.now, "db").unwrap(), p(2));
    }
    assert!(net.nodes[0].resolve(net.now, "").is_err());
}

mod replication {
    use super::*;
    use crate::sync::chain::{ChainStore, MemoryChain};
    use crate::sync::merkle::MemoryStore;
    use crate::sync::{STREAM_CHAIN, STREAM_TREE};

    fn sync_events(net: &Net, i: usize) -> Vec<SyncEvent> {
        net.events[i]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Sync(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn tree(keys: core::ops::Range<u32>) -> MemoryStore {
        let mut store = MemoryStore::new();
        for k in keys {
            crate::sync::merkle::KvStore::insert(&mut store, &k.to_be_bytes(), b"v");
        }
        store
    }

    fn no_membership() -> NodeConfig {
        let mut c = config();
        c.membership = None;
        c
    }

    #[test]
    fn the_hello_names_the_streams_and_the_chain_head() {
        let mut net = Net::new(2, no_membership());
        let chain = MemoryChain::from_payloads([&b"a"[..], b"b", b"c"]).unwrap();
        net.nodes[0].set_chain_store(chain);
        net.nodes[0].set_tree_store(tree(0..3), 1).unwrap();
        let hello = &net.nodes[0].config().link.handshake;
        assert_eq!(hello.chain_seq, 3);
        assert_eq!(hello.supported_sync_streams, STREAM_CHAIN | STREAM_TREE);
        net.nodes[0].append_chain(net.now, &b"d"[..]).unwrap();
        assert_eq!(net.nodes[0].config().link.handshake.chain_seq, 4);
        // A node without stores says so, and its peer never pulls from it nor offers it
        // anything: no sync traffic, no sync events.
        net.nodes[1].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        net.advance(Duration::from_secs(6));
        assert_eq!(
            net.nodes[1].config().link.handshake.supported_sync_streams,
            0
        );
        assert!(sync_events(&net, 0).is_empty() && sync_events(&net, 1).is_empty());
        assert_eq!(net.nodes[1].stats().malformed_gossip, 0);
    }

    #[test]
    fn an_append_is_advertised_and_pulled_within_the_advertise_delay() {
        let mut net = Net::new(2, no_membership());
        net.nodes[0].set_chain_store(MemoryChain::new());
        net.nodes[1].set_chain_store(MemoryChain::new());
        net.nodes[1].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        for i in 0..10u8 {
            net.nodes[0].append_chain(net.now, vec![i]).unwrap();
        }
        net.run();
        assert_eq!(
            net.nodes[1].chain().unwrap().head().seq,
            0,
            "not before the delay"
        );
        net.advance(net.nodes[0].config().sync.advertise_delay);
        let (a, b) = (net.nodes[0].chain().unwrap(), net.nodes[1].chain().unwrap());
        assert_eq!(b.head(), a.head());
        let synced = sync_events(&net, 1);
        assert!(
            matches!(
                synced.last(),
                Some(SyncEvent::ChainSynced { appended: 10, .. })
            ),
            "{synced:?}"
        );
        // Without a chain, appending is refused.
        let mut lone = Net::new(1, no_membership());
        let now = lone.now;
        assert_eq!(
            lone.nodes[0].append_chain(now, &b"x"[..]),
            Err(ChainWriteError::NoChain)
        );
    }

    #[test]
    fn the_higher_tree_version_wins_and_equal_versions_that_differ_are_reported() {
        let mut net = Net::new(3, no_membership());
        net.nodes[0].set_tree_store(tree(0..100), 7).unwrap();
        net.nodes[1].set_tree_store(tree(0..90), 3).unwrap();
        net.nodes[2].set_tree_store(tree(50..150), 7).unwrap();
        net.nodes[1].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        // n1 (version 3) mirrors n0 (version 7) and takes its version.
        assert_eq!(net.nodes[1].tree_state(), net.nodes[0].tree_state());
        assert!(matches!(
            sync_events(&net, 1).as_slice(),
            [SyncEvent::TreeSynced { leaves: 10, .. }]
        ));
        assert!(sync_events(&net, 0).is_empty(), "n0 had the higher version");

        // n2 has version 7 too, with another root: both sides report it once, and
        // neither pulls.
        net.nodes[2].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        net.advance(Duration::from_secs(20)); // anti-entropy digests repeat the states
        let diverged = |net: &Net, i| {
            sync_events(net, i)
                .iter()
                .filter(|e| matches!(e, SyncEvent::TreeDiverged { .. }))
                .count()
        };
        assert_eq!((diverged(&net, 0), diverged(&net, 2)), (1, 1));
        assert_eq!(net.nodes[2].tree().unwrap().len(), 100);
        assert_ne!(net.nodes[2].tree_state(), net.nodes[0].tree_state());

        // The application settles it: n2 mirrors n0.
        let n0 = net.id(0);
        assert!(net.nodes[2].pull_tree(net.now, n0));
        net.run();
        assert_eq!(net.nodes[2].tree_state(), net.nodes[0].tree_state());

        // A write bumps the version: everyone else pulls it.
        net.nodes[2]
            .tree_insert(net.now, b"fresh", b"value")
            .unwrap();
        net.advance(net.nodes[2].config().sync.advertise_delay);
        net.advance(net.nodes[0].config().sync.advertise_delay);
        for i in 0..3 {
            let state = net.nodes[i].tree_state().unwrap();
            assert_eq!(state, net.nodes[2].tree_state().unwrap(), "node {i}");
            assert_eq!(state.version, 8);
        }
    }

    #[test]
    fn both_sides_of_a_fork_report_it_the_one_ahead_too() {
        let mut net = Net::new(2, no_membership());
        let common = MemoryChain::from_payloads((0..10u8).map(|i| vec![i])).unwrap();
        let (mut long, mut short) = (common.clone(), common);
        for i in 0..10u8 {
            long.push(vec![b'L', i]).unwrap();
        }
        for i in 0..5u8 {
            short.push(vec![b'S', i]).unwrap();
        }
        let heads = (long.head(), short.head());
        net.nodes[0].set_chain_store(long);
        net.nodes[1].set_chain_store(short);
        net.nodes[1].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        for (i, seq) in [(0, 15), (1, 15)] {
            let forks: Vec<_> = sync_events(&net, i)
                .into_iter()
                .filter_map(|e| match e {
                    SyncEvent::ChainForked { fork, .. } => Some(fork),
                    _ => None,
                })
                .collect();
            assert_eq!(forks.len(), 1, "node {i}: {forks:?}");
            assert!(forks[0].is_valid());
            assert_eq!(forks[0].seq(), seq, "node {i}");
        }
        assert_eq!(net.nodes[0].chain().unwrap().head(), heads.0);
        assert_eq!(net.nodes[1].chain().unwrap().head(), heads.1);
        // Neither asks again: anti-entropy repeats the heads, nothing more happens.
        net.advance(Duration::from_secs(30));
        assert_eq!(sync_events(&net, 0).len() + sync_events(&net, 1).len(), 2);
    }

    #[test]
    fn a_tree_batch_is_one_change_and_all_or_nothing() {
        let mut net = Net::new(1, no_membership());
        let now = net.now;
        let node = &mut net.nodes[0];
        assert_eq!(node.write_tree(now, [], None), Err(TreeWriteError::NoTree));
        node.set_tree_store(tree(0..4), 5).unwrap();
        let before = node.tree_state().unwrap();
        let big = vec![0; crate::sync::merkle::MAX_VALUE_LEN + 1];
        let refused = [TreeWrite::insert(b"a", b"1"), TreeWrite::insert(b"b", &big)];
        assert_eq!(
            node.write_tree(now, refused, Some(9)),
            Err(TreeWriteError::Entry(
                crate::sync::merkle::EntryError::ValueTooLarge
            ))
        );
        assert_eq!(node.tree_state(), Some(before), "nothing written");
        let (k0, k1) = (0u32.to_be_bytes(), 1u32.to_be_bytes());
        let batch = [
            TreeWrite::insert(b"a", b"1"),
            TreeWrite::remove(&k0),
            TreeWrite::remove(b"absent"),
            TreeWrite::insert(&k1, b"v"), // unchanged
        ];
        assert_eq!(node.write_tree(now, batch, None), Ok(2));
        assert_eq!(
            node.tree_state().unwrap().version,
            6,
            "one change, one version"
        );
        assert_eq!(node.write_tree(now, [], Some(40)), Ok(0));
        assert_eq!(node.tree_state().unwrap().version, 40);
    }

    #[test]
    fn a_corrupt_reply_fails_the_pull_at_once() {
        let mut net = Net::new(2, no_membership());
        net.nodes[0].set_chain_store(MemoryChain::from_payloads([&b"a"[..]]).unwrap());
        net.nodes[1].set_chain_store(MemoryChain::new());
        net.nodes[1].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        assert_eq!(net.nodes[1].chain().unwrap().head().seq, 1);
        // n0 claims a longer chain; n1 starts a pull (its request not yet delivered)
        // and a corrupt reply arrives first.
        let (c0, c1) = (
            net.nodes[0].peers[&net.id(1)],
            net.nodes[1].peers[&net.id(0)],
        );
        let claimed = crate::sync::chain::ChainHead {
            seq: 50,
            hash: [5; 32],
        };
        net.nodes[1].on_sync_state(c1, Some(claimed), None);
        net.nodes[0].send_frame(c0, FrameType::ChainSync, Bytes::from_static(&[0x02, 0]));
        let mut buf = vec![0; crate::link::MAX_TRANSMIT];
        while let Some(n) = net.nodes[0].poll_transmit(net.now, c0, &mut buf) {
            net.nodes[1].handle_bytes(net.now, c1, &buf[..n]);
        }
        net.run();
        let failed = sync_events(&net, 1);
        assert!(
            matches!(
                failed.last(),
                Some(SyncEvent::ChainFailed {
                    error: crate::sync::chain::ChainSyncError::Decode(_),
                    ..
                })
            ),
            "{failed:?}"
        );
    }

    #[test]
    fn garbage_sync_frames_are_counted_and_change_nothing() {
        let mut net = Net::new(2, no_membership());
        net.nodes[0].set_chain_store(MemoryChain::from_payloads([&b"a"[..]]).unwrap());
        net.nodes[0].set_tree_store(tree(0..10), 1).unwrap();
        net.nodes[1].set_chain_store(MemoryChain::new());
        net.nodes[1].set_tree_store(tree(0..1), 0).unwrap();
        net.nodes[1].add_seed(net.now, "n0");
        net.advance(Duration::ZERO);
        let conn = *net.nodes[0].peers.values().next().unwrap();
        for frame in [FrameType::ChainSync, FrameType::TreeSync] {
            for junk in [&[][..], &[0xff][..], &[0x02, 0, 0][..]] {
                net.nodes[0].send_frame(conn, frame, Bytes::copy_from_slice(junk));
            }
        }
        net.run();
        assert_eq!(net.nodes[1].stats().malformed_gossip, 6);
        assert_eq!(net.nodes[1].tree_state(), net.nodes[0].tree_state());
        assert_eq!(net.nodes[1].chain().unwrap().head().seq, 1);
    }
}
