//! The state machine's public face: inputs, outputs and what it knows.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::{Bytes, BytesMut};

use super::broadcast::Broadcasts;
use super::config::SwimConfig;
use super::member::{Member, MemberInfo, MemberState, Members};
use super::packet::{put_updates, valid_addrs, Message, Packet, PacketError, Update, MAX_UPDATES};
use super::probe::{Probe, ProbeOrder, Relay};
use super::pushpull::PushPullJob;
use super::suspicion::Suspicion;
use crate::{Instant, NodeId, Rng};

/// A packet for the owner to carry to `to`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// The destination member.
    pub to: NodeId,
    /// The encoded packet (at most `max_packet` bytes).
    pub packet: Bytes,
}

/// A change in what this node believes about another member (never about itself).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MemberEvent {
    /// A member became known alive, or came back after Down or Left.
    Up {
        /// The member.
        node: NodeId,
        /// Its advertised addresses as then known.
        addrs: Vec<String>,
    },
    /// A member is suspected of having failed.
    Suspect {
        /// The member.
        node: NodeId,
        /// The incarnation it is suspected at.
        incarnation: u64,
    },
    /// A suspected member refuted the suspicion.
    Alive {
        /// The member.
        node: NodeId,
    },
    /// A member was declared dead.
    Down {
        /// The member.
        node: NodeId,
    },
    /// A member left gracefully.
    Left {
        /// The member.
        node: NodeId,
    },
}

/// Counters since [`Swim::new`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SwimStats {
    /// Probe rounds that pinged a member.
    pub probes_sent: u64,
    /// Probes answered (directly or through a helper).
    pub acks_received: u64,
    /// Ping-reqs sent to helpers.
    pub indirect_probes: u64,
    /// Suspicions this node raised or confirmed after a failed probe.
    pub suspicions_raised: u64,
    /// Suspicions about this node that it refuted.
    pub refutations: u64,
    /// Members this node declared dead when their suspicion timed out.
    pub declared_down: u64,
    /// Well-formed packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes of well-formed packets received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets refused as malformed.
    pub malformed: u64,
    /// Unknown members not added because the table was full.
    pub members_refused: u64,
    /// Ping-reqs ignored because `max_relays` indirect probes were running.
    pub relays_refused: u64,
    /// Packets dropped because `max_queued` were waiting.
    pub queue_full: u64,
    /// Full-state exchanges dropped because `MAX_PUSH_PULLS` were queued.
    pub push_pulls_dropped: u64,
    /// Oldest events dropped because `2 × max_members` were waiting.
    pub events_dropped: u64,
}

/// One node's SWIM + Lifeguard membership: failure detection, gossip and full-state sync.
///
/// Feed it [`contact`](Swim::contact), [`handle_packet`](Swim::handle_packet) and
/// [`handle_timeout`](Swim::handle_timeout) (at [`poll_timeout`](Swim::poll_timeout));
/// after each input drain [`poll_transmit`](Swim::poll_transmit) and
/// [`poll_event`](Swim::poll_event). Timers start with the first input. See the
/// [module](super) example.
pub struct Swim {
    pub(super) me: NodeId,
    pub(super) addrs: Vec<String>,
    pub(super) incarnation: u64,
    pub(super) left: bool,
    pub(super) started: bool,
    pub(super) config: SwimConfig,
    pub(super) rng: Rng,
    pub(super) members: Members,
    pub(super) suspicions: BTreeMap<NodeId, Suspicion>,
    pub(super) broadcasts: Broadcasts,
    pub(super) health: u32,
    pub(super) probe_order: ProbeOrder,
    pub(super) probe: Option<Probe>,
    pub(super) next_probe: Option<Instant>,
    pub(super) seq: u32,
    pub(super) relays: BTreeMap<u32, Relay>,
    pub(super) next_push_pull: Option<Instant>,
    /// The next gossip round (it runs only while updates are queued).
    pub(super) next_gossip: Option<Instant>,
    /// Members linked directly to this node, sorted (gossip goes to them first).
    pub(super) neighbours: Vec<NodeId>,
    pub(super) outbox: VecDeque<(NodeId, Message)>,
    pub(super) push_pulls: VecDeque<PushPullJob>,
    pub(super) events: VecDeque<MemberEvent>,
    pub(super) stats: SwimStats,
}

impl Swim {
    /// A node `me` advertising `addrs` (at most 4 of 1 to 255 bytes are kept),
    /// alone until [`contact`](Swim::contact) or a packet introduces others.
    pub fn new(me: NodeId, addrs: Vec<String>, config: SwimConfig, rng: Rng) -> Self {
        let config = config.sanitized();
        Swim {
            me,
            addrs: valid_addrs(addrs),
            incarnation: 0,
            left: false,
            started: false,
            members: Members::new(config.max_members - 1),
            config,
            rng,
            suspicions: BTreeMap::new(),
            broadcasts: Broadcasts::default(),
            health: 0,
            probe_order: ProbeOrder::default(),
            probe: None,
            next_probe: None,
            seq: 0,
            relays: BTreeMap::new(),
            next_push_pull: None,
            next_gossip: None,
            neighbours: Vec::new(),
            outbox: VecDeque::new(),
            push_pulls: VecDeque::new(),
            events: VecDeque::new(),
            stats: SwimStats::default(),
        }
    }

    /// A node we can reach (a seed, a freshly linked peer): remember it as alive
    /// (incarnation 0 unless known; its own word replaces that, without a second
    /// `Up`) and exchange full state with it. This is the join. A member we believe
    /// dead stays so until the exchange brings its refutation.
    pub fn contact(&mut self, now: Instant, node: NodeId) {
        if node == self.me || self.left {
            return;
        }
        self.start(now);
        if self.members.get(&node).is_none() {
            let row = Member::new(MemberState::Alive, 0, &[], now, false);
            if self.members.insert(node, row) {
                self.event(MemberEvent::Up {
                    node,
                    addrs: Vec::new(),
                });
            } else {
                self.stats.members_refused += 1;
            }
        }
        self.queue_push_pull(node, true);
        self.gossip_not_before(now);
    }

    /// An incoming packet from `from`. A malformed packet is refused whole: only the
    /// `malformed` counter changes.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: NodeId,
        packet: &[u8],
    ) -> Result<(), PacketError> {
        let Packet { message, updates } =
            Packet::decode(packet).inspect_err(|_| self.stats.malformed += 1)?;
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        self.start(now);
        for update in updates {
            self.apply(now, update);
        }
        match message {
            Message::Ping { seq } => self.send(from, Message::Ack { seq }),
            Message::Ack { seq } => self.on_ack(from, seq),
            Message::PingReq { seq, target } => self.on_ping_req(now, from, seq, target),
            Message::Nack { seq } => self.on_nack(from, seq),
            Message::PushPull { reply, state } => {
                self.merge_state(now, from, state);
                if reply {
                    self.queue_push_pull(from, false);
                }
            }
            Message::Gossip => {}
        }
        self.gossip_not_before(now);
        Ok(())
    }

    /// Run whatever is due at `now`: indirect probes, nacks, suspicion timeouts, the
    /// next probe round, push-pull, gossip.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.start(now);
        self.indirect_due(now);
        self.relay_timers(now);
        self.suspicion_timers(now);
        if self.next_probe.is_some_and(|t| t <= now) {
            self.probe_round(now);
        }
        if self.next_push_pull.is_some_and(|t| t <= now) {
            self.push_pull_round(now);
        }
        if self.gossip_due().is_some_and(|t| t <= now) {
            self.gossip_round(now);
        }
        self.gossip_not_before(now);
    }

    /// The members linked directly to this node (replacing those given before). A
    /// gossip round sends to one of them: the owner carries a packet to a neighbour
    /// on its link, and to any other member through relays.
    pub fn set_neighbours(&mut self, nodes: impl IntoIterator<Item = NodeId>) {
        self.neighbours.clear();
        self.neighbours.extend(nodes);
        self.neighbours.sort_unstable();
        self.neighbours.dedup();
        self.neighbours.truncate(self.config.max_members);
    }

    /// The next instant [`handle_timeout`](Swim::handle_timeout) has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let indirect = self.probe.as_ref().and_then(|p| p.indirect_at);
        let relays = self
            .relays
            .values()
            .map(|r| r.nack_at.unwrap_or(r.expires))
            .min();
        let suspicions = if self.left {
            None
        } else {
            self.suspicions
                .values()
                .map(|s| s.deadline(self.health))
                .min()
        };
        [
            self.next_probe,
            self.next_push_pull,
            self.gossip_due(),
            indirect,
            relays,
            suspicions,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next packet to send, piggybacked updates filled in (fewest transmissions,
    /// then most recent, first; a Ping to a suspect carries its suspicion first).
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        let (to, packet) = loop {
            match self.outbox.pop_front() {
                Some((to, message)) => {
                    let mut b = BytesMut::with_capacity(self.config.max_packet);
                    message.encode(&mut b);
                    let buddy = match message {
                        Message::Ping { .. } => self.buddy(&to),
                        _ => None,
                    };
                    let carried = self.piggyback(&mut b, buddy);
                    // A gossip packet whose updates ran out before its turn is not sent.
                    if message == Message::Gossip && carried == 0 {
                        continue;
                    }
                    break (to, b);
                }
                None => break self.push_pull_chunk()?,
            }
        };
        self.stats.packets_out += 1;
        self.stats.bytes_out += packet.len() as u64;
        Some(Transmit {
            to,
            packet: packet.freeze(),
        })
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// Leave gracefully: gossip a Left update about ourselves (incarnation bumped)
    /// to a few members and stop probing, suspecting and exchanging state. Packets
    /// are still answered and updates still applied; there is no way back.
    pub fn leave(&mut self, _now: Instant) {
        if self.left {
            return;
        }
        let fanout = self.config.retransmit_limit(self.alive_count()) as usize;
        self.left = true;
        self.incarnation = self.incarnation.saturating_add(1);
        self.probe = None;
        self.next_probe = None;
        self.next_push_pull = None;
        self.next_gossip = None;
        self.suspicions.clear();
        self.broadcasts.push(Update::Left {
            node: self.me,
            incarnation: self.incarnation,
        });
        for node in self.random_members(fanout, |_, m| m.state.is_live()) {
            let seq = self.next_seq();
            self.send(node, Message::Ping { seq });
        }
    }

    /// Every member: this node first, then the others in id order (suspect ones
    /// included, dead and left ones while remembered).
    pub fn members(&self) -> impl Iterator<Item = MemberInfo> + '_ {
        core::iter::once(self.me_info()).chain(
            self.members
                .iter()
                .map(|(node, m)| MemberInfo::of(*node, m)),
        )
    }

    /// One member (this node included), if known.
    pub fn member(&self, node: &NodeId) -> Option<MemberInfo> {
        if *node == self.me {
            return Some(self.me_info());
        }
        self.members.get(node).map(|m| MemberInfo::of(*node, m))
    }

    /// Alive and suspect members, this node included (unless it left): the N of
    /// every `log N`.
    pub fn alive_count(&self) -> usize {
        self.members.live() + usize::from(!self.left)
    }

    /// This node's incarnation number.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Lifeguard's local health (awareness) score: 0 is healthy; probing slows down
    /// by a factor of `health + 1`.
    pub fn local_health(&self) -> u32 {
        self.health
    }

    /// Counters.
    pub fn stats(&self) -> SwimStats {
        self.stats
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    fn me_info(&self) -> MemberInfo {
        MemberInfo {
            node: self.me,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            incarnation: self.incarnation,
            addrs: self.addrs.clone(),
        }
    }

    /// Schedule the first probe round and the first periodic push-pull on the first
    /// input, each at a random point of its first interval (as memberlist staggers
    /// them): members that joined together do not all wait a whole push-pull interval
    /// before repairing what the join's gossip missed.
    fn start(&mut self, now: Instant) {
        if self.started || self.left {
            return;
        }
        self.started = true;
        let jitter = self.random_duration(self.config.probe_interval);
        self.next_probe = Some(now + jitter);
        let stagger = self.random_duration(self.config.push_pull_interval);
        self.next_push_pull = Some(now + stagger);
        self.next_gossip = Some(now);
    }

    /// A gossip round that fell due while nothing was queued runs at once when
    /// something is, not at its past instant (`poll_timeout` never goes back in time).
    fn gossip_not_before(&mut self, now: Instant) {
        if let Some(t) = &mut self.next_gossip {
            *t = (*t).max(now);
        }
    }

    /// When the next gossip round runs: only while updates are queued (and gossip
    /// is on).
    fn gossip_due(&self) -> Option<Instant> {
        if self.config.gossip_nodes == 0 || self.broadcasts.is_empty() {
            return None;
        }
        self.next_gossip
    }

    /// A gossip round: a gossip packet (filled with queued updates as it is polled)
    /// to `gossip_nodes` distinct random live members: one random neighbour, if any
    /// (cheap to reach: no signature, no relay), and the others drawn from all live
    /// members, so the updates spread as an epidemic instead of going round and round
    /// the same few links (and being used up there).
    fn gossip_round(&mut self, now: Instant) {
        self.next_gossip = Some(now + self.config.gossip_interval);
        for node in self.gossip_targets() {
            self.send(node, Message::Gossip);
        }
    }

    /// The members a gossip round sends to (see [`gossip_round`](Swim::gossip_round)).
    pub(super) fn gossip_targets(&mut self) -> Vec<NodeId> {
        let want = self.config.gossip_nodes;
        if want == 0 {
            return Vec::new();
        }
        let neighbours = core::mem::take(&mut self.neighbours);
        let linked = |node: &NodeId| neighbours.binary_search(node).is_ok();
        let mut targets = self.random_members(1, |node, m| m.state.is_live() && linked(node));
        let first = targets.first().copied();
        let more = self.random_members(want.saturating_sub(targets.len()), |node, m| {
            m.state.is_live() && Some(*node) != first
        });
        targets.extend(more);
        self.neighbours = neighbours;
        targets
    }

    fn random_duration(&mut self, below: Duration) -> Duration {
        let micros = u64::try_from(below.as_micros()).unwrap_or(u64::MAX).max(1);
        Duration::from_micros(self.rng.next_u64() % micros)
    }

    /// Our Alive update, as gossiped after a refutation and sent in push-pull.
    pub(super) fn self_update(&self) -> Update {
        if self.left {
            Update::Left {
                node: self.me,
                incarnation: self.incarnation,
            }
        } else {
            Update::Alive {
                node: self.me,
                incarnation: self.incarnation,
                addrs: self.addrs.clone(),
            }
        }
    }

    /// Buddy system: a Ping to a member we suspect tells it so first.
    fn buddy(&self, to: &NodeId) -> Option<Update> {
        let m = self.members.get(to)?;
        (m.state == MemberState::Suspect).then_some(Update::Suspect {
            node: *to,
            incarnation: m.incarnation,
            from: self.me,
        })
    }

    /// Append the update count and as many queued updates as fit in `max_packet`;
    /// returns how many.
    pub(super) fn piggyback(&mut self, b: &mut BytesMut, first: Option<Update>) -> usize {
        let mut budget = self.config.max_packet.saturating_sub(b.len() + 1);
        let mut updates = Vec::new();
        let skip = first.as_ref().map(Update::node);
        if let Some(u) = first {
            if u.encoded_len() <= budget {
                budget -= u.encoded_len();
                updates.push(u);
            }
        }
        let limit = self.config.retransmit_limit(self.alive_count());
        let more = self
            .broadcasts
            .take(budget, MAX_UPDATES - updates.len(), limit, skip);
        updates.extend(more);
        put_updates(b, &updates);
        updates.len()
    }

    /// Queue a small packet; dropped (and counted) when `max_queued` are waiting.
    pub(super) fn send(&mut self, to: NodeId, message: Message) {
        if self.outbox.len() >= self.config.max_queued {
            self.stats.queue_full += 1;
            return;
        }
        self.outbox.push_back((to, message));
    }

    /// Queue an event; the oldest is dropped (and counted) beyond `2 × max_members`.
    pub(super) fn event(&mut self, e: MemberEvent) {
        if self.events.len() >= self.config.max_members.saturating_mul(2) {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub(super) fn health_up(&mut self, by: u32) {
        let max = self.config.awareness_max_multiplier - 1;
        self.health = self.health.saturating_add(by).min(max);
    }

    pub(super) fn health_down(&mut self) {
        self.health = self.health.saturating_sub(1);
    }

    /// Up to `n` distinct random members that satisfy `keep`.
    pub(super) fn random_members(
        &mut self,
        n: usize,
        keep: impl Fn(&NodeId, &Member) -> bool,
    ) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(node, m)| keep(node, m))
            .map(|(node, _)| *node)
            .collect();
        let n = n.min(all.len());
        for i in 0..n {
            let j = i + super::probe::below(&mut self.rng, all.len() - i);
            all.swap(i, j);
        }
        all.truncate(n);
        all
    }
}
