//! Cross-node IPC (PROTOCOL.md §12): envelopes sent directly or through relays,
//! answered by receipts and responses, retransmitted until answered, deduplicated at
//! the destination, and failed with a typed reason.

use alloc::collections::{BTreeMap, VecDeque};
use core::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::outbox::{MessageId, Pending};
use super::{ConnId, Node, NodeEvent, NodeSendError, SendFailure};
use crate::frame::{FrameType, Payload, MAX_PAYLOAD_LEN};
use crate::link::SendError;
use crate::mesh::envelope::{self, Envelope, EnvelopeId, Failure, Header, MAX_OVERHEAD};
use crate::mesh::{Kind, Target, MAX_HOPS};
use crate::{CloseReason, Instant, NodeId};

/// Identifies a request received by this node; answer it with [`Node::respond`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RequestToken {
    /// Who asked.
    pub from: NodeId,
    /// The request's envelope id.
    pub envelope: EnvelopeId,
}

/// How an envelope to some node leaves right now.
#[derive(Clone, Copy)]
pub(super) enum Way {
    /// Over the link to the destination itself.
    Direct(ConnId),
    /// Through a neighbour, crossing `hops` links in all.
    Relay(ConnId, u8),
    None,
}

impl Node {
    /// Send `data` to `target` at node `to`: over their link if there is one, else
    /// through relays. The outcome comes later as [`NodeEvent::Delivered`] or
    /// [`NodeEvent::SendFailed`]; until then the message is retransmitted when its
    /// path breaks (the destination drops copies it already has).
    pub fn send(
        &mut self,
        now: crate::Instant,
        to: NodeId,
        target: Target,
        data: impl Into<Bytes>,
    ) -> Result<MessageId, NodeSendError> {
        self.originate(
            now,
            to,
            Kind::Data,
            target,
            data.into(),
            self.config.message_timeout,
        )
    }

    /// Send a request; the answer comes as [`NodeEvent::Response`] or, after at most
    /// `timeout` (capped at the dedup TTL, 60 s by default: a retransmitted copy must
    /// not be taken for new), as [`NodeEvent::SendFailed`].
    pub fn request(
        &mut self,
        now: crate::Instant,
        to: NodeId,
        target: Target,
        data: impl Into<Bytes>,
        timeout: core::time::Duration,
    ) -> Result<MessageId, NodeSendError> {
        self.originate(now, to, Kind::Request, target, data.into(), timeout)
    }

    /// Answer a request received as [`NodeEvent::Request`]. Best effort: if the
    /// response is lost the requester times out.
    pub fn respond(
        &mut self,
        now: crate::Instant,
        request: RequestToken,
        data: impl Into<Bytes>,
    ) -> Result<(), NodeSendError> {
        self.advance(now);
        let response = data.into();
        check_size(&response)?;
        let key = (request.from, request.envelope);
        let back = self.recent.get(&key).map(|r| r.arrived_on);
        self.recent.answered(&key, response.clone());
        self.emit(
            Kind::Response,
            request.from,
            request.envelope,
            response,
            back,
        );
        Ok(())
    }

    fn originate(
        &mut self,
        now: crate::Instant,
        to: NodeId,
        kind: Kind,
        target: Target,
        data: Bytes,
        timeout: core::time::Duration,
    ) -> Result<MessageId, NodeSendError> {
        self.advance(now);
        check_size(&data)?;
        if !target.is_valid() {
            return Err(NodeSendError::InvalidTarget);
        }
        if self.outbox.len() >= self.config.max_pending {
            return Err(NodeSendError::Full);
        }
        // Copies must not outlive the destination's memory of the envelope.
        let timeout = timeout.min(self.config.dedup.ttl);
        let id = self.next_message;
        self.next_message += 1;
        let envelope = self.new_envelope_id();
        self.outbox.insert(
            id,
            Pending {
                to,
                kind,
                target,
                envelope,
                payload: data,
                deadline: now + timeout,
                retry: None,
                attempt: 0,
                via: None,
                problem: None,
            },
        );
        match self.transmit(id, true) {
            Err(e) => {
                self.outbox.remove(id);
                Err(e)
            }
            Ok(()) => Ok(MessageId(id)),
        }
    }

    fn new_envelope_id(&mut self) -> EnvelopeId {
        let mut id: EnvelopeId = self.rng.array();
        // A UUID v4 (RFC 9562): version and variant bits.
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        id
    }

    /// The link to `dest` unless it is degraded; else the best route (which avoids
    /// relaying through degraded links when it can, and may be that link after all).
    pub(super) fn way_to(&self, dest: &NodeId) -> Way {
        let direct = self.peers.get(dest).copied();
        if let Some(c) = direct.filter(|_| !self.routes.is_degraded(dest)) {
            return Way::Direct(c);
        }
        let relay = self
            .routes
            .get(dest)
            .filter(|r| r.next_hop != *dest)
            .and_then(|r| Some((*self.peers.get(&r.next_hop)?, r.hops)));
        match (relay, direct) {
            (Some((c, hops)), _) => Way::Relay(c, hops),
            (None, Some(c)) => Way::Direct(c),
            (None, None) => Way::None,
        }
    }

    /// Send (or resend) pending envelope `id` along the current best way. `first`:
    /// called from `send`/`request`, whose caller learns a full queue at once.
    pub(super) fn transmit(&mut self, id: u64, first: bool) -> Result<(), NodeSendError> {
        let Some(p) = self.outbox.get_mut(id) else {
            return Ok(());
        };
        let to = p.to;
        let (conn, signed) = match self.way_to(&to) {
            Way::Direct(c) => (c, false),
            Way::Relay(_, hops) if hops > MAX_HOPS => {
                self.fail(id, SendFailure::HopLimit);
                return Ok(());
            }
            Way::Relay(c, _) => (c, true),
            Way::None => {
                let closed = self.outbox.get_mut(id).and_then(|p| {
                    p.via = None;
                    p.problem
                        .filter(|r| matches!(r, SendFailure::PeerClosed(_)))
                });
                // Never sent, or its destination's own link closed: fail now unless a
                // dial or a seed can bring the destination back. A copy already on its
                // way waits for a route until the deadline.
                if !self.reach_later(to) && (first || closed.is_some()) {
                    self.fail(id, closed.unwrap_or(SendFailure::NoRoute));
                }
                return Ok(());
            }
        };
        let me = self.identity.node_id();
        let p = self.outbox.get_mut(id).expect("checked above");
        if !first {
            p.attempt = p.attempt.saturating_add(1);
        }
        let header = Header {
            kind: p.kind,
            hop_count: 0,
            attempt: p.attempt,
            source: me,
            dest: to,
            id: p.envelope,
            reply_to: [0; 16],
            target: p.target.clone(),
        };
        let bytes = envelope::encode(
            &header,
            p.payload.clone(),
            signed.then_some(&*self.identity),
        );
        let backoff = self.config.retry_interval * (1u32 << p.attempt.min(3));
        let now = self.now;
        self.note_answer(conn);
        let Some(entry) = self.links.get_mut(conn) else {
            return Ok(());
        };
        match entry.link.send(FrameType::Message, bytes) {
            Ok(()) => {
                entry.last_used = now;
                if let Some(p) = self.outbox.get_mut(id) {
                    p.via = Some(conn);
                }
                // A direct link is reliable until it closes (which triggers a resend);
                // a relayed copy can vanish silently, so it is resent on a timer.
                self.outbox.set_retry(id, signed.then(|| now + backoff));
            }
            Err(SendError::Full) if first => return Err(NodeSendError::Full),
            Err(_) => self
                .outbox
                .set_retry(id, Some(now + self.config.retry_interval)),
        }
        self.wake(conn);
        Ok(())
    }

    /// Whether `node` may become reachable without the application doing anything: a
    /// link to it is handshaking, a seed leads to it, or it can be dialed on demand.
    fn reach_later(&mut self, node: NodeId) -> bool {
        let dialing = self
            .links
            .ids()
            .filter_map(|c| self.links.get(c))
            .any(|e| e.peer.is_none() && e.wants == Some(node));
        dialing || self.seeds.leads_to(&node) || self.dial_node(node)
    }

    pub(super) fn fail(&mut self, id: u64, reason: SendFailure) {
        if let Some(p) = self.outbox.remove(id) {
            self.events.push_back(NodeEvent::SendFailed {
                to: p.to,
                id: MessageId(id),
                reason,
            });
        }
    }

    /// Resend everything still waiting for a route (after a link or route appeared).
    pub(super) fn retry_unrouted(&mut self) {
        for id in self.outbox.unrouted() {
            let _ = self.transmit(id, false);
        }
    }

    /// The link on `conn` is degraded: envelopes whose last copy went over it go again
    /// along another way, if there is one (the destination drops whichever copy comes
    /// second).
    pub(super) fn resend_around(&mut self, conn: ConnId) {
        for id in self.outbox.sent_on(conn) {
            let to = match self.outbox.get_mut(id) {
                Some(p) => p.to,
                None => continue,
            };
            let around = match self.way_to(&to) {
                Way::Direct(c) | Way::Relay(c, _) => c != conn,
                Way::None => false,
            };
            if around {
                let _ = self.transmit(id, false);
            }
        }
    }

    /// `conn` closed: what was last sent over it goes again along another way.
    pub(super) fn resend_from(&mut self, conn: ConnId, peer: Option<NodeId>, reason: CloseReason) {
        // A peer that closed over a record or frame error (ours, as it saw it) would
        // only close again: its messages fail now instead of being resent.
        let offended = (0x0200..0x0300).contains(&reason.code());
        for id in self.outbox.sent_on(conn) {
            let mut fail = false;
            if let Some(p) = self.outbox.get_mut(id) {
                p.via = None;
                if peer == Some(p.to) {
                    p.problem = Some(SendFailure::PeerClosed(reason));
                    fail = offended;
                }
            }
            if fail {
                self.fail(id, SendFailure::PeerClosed(reason));
            } else {
                let _ = self.transmit(id, false);
            }
        }
    }

    /// Send a fire-and-forget envelope (receipt, response, failure) to `dest`; `back`
    /// is the link the envelope it answers came in on, the way back while no route to
    /// `dest` is known yet (routes spread one advertisement per hop, a request at once).
    pub(super) fn emit(
        &mut self,
        kind: Kind,
        dest: NodeId,
        reply_to: EnvelopeId,
        payload: Bytes,
        back: Option<ConnId>,
    ) {
        let back = back.filter(|c| self.links.get(*c).is_some_and(|e| e.up));
        let (conn, signed) = match (self.way_to(&dest), back) {
            (Way::Direct(c), _) => (c, false),
            (Way::Relay(c, hops), _) if hops <= MAX_HOPS => (c, true),
            (_, Some(c)) => (c, true),
            _ => {
                self.stats.unroutable += 1;
                return;
            }
        };
        let header = Header {
            kind,
            hop_count: 0,
            attempt: 0,
            source: self.identity.node_id(),
            dest,
            id: self.new_envelope_id(),
            reply_to,
            target: Target::Node,
        };
        let bytes = envelope::encode(&header, payload, signed.then_some(&*self.identity));
        if kind == Kind::Receipt {
            self.send_receipt(conn, bytes);
        } else {
            self.send_on(conn, bytes);
        }
    }

    pub(super) fn send_on(&mut self, conn: ConnId, bytes: Payload) {
        if let Some(entry) = self.links.get_mut(conn) {
            entry.last_used = self.now;
        }
        self.note_answer(conn);
        self.send_frame(conn, FrameType::Message, bytes);
    }

    /// A Message frame from neighbour `from` on `conn`.
    pub(super) fn on_message(&mut self, conn: ConnId, payload: Bytes) {
        let now = self.now;
        let Some(entry) = self.links.get_mut(conn) else {
            return;
        };
        let Some(from) = entry.peer else { return };
        entry.last_used = now;
        let env = match envelope::decode(payload) {
            Ok(e) => e,
            Err(_) => {
                entry.link.close(now, CloseReason::MalformedFrame);
                return;
            }
        };
        if env.header.dest == self.identity.node_id() {
            // The link authenticates its peer, for what it sends itself (hop count 0);
            // anything else must carry a valid signature of its source.
            let own = env.header.source == from && env.header.hop_count == 0;
            let authentic = own || (env.signed && env.verify());
            if !authentic {
                self.stats.forged += 1;
                return;
            }
            self.on_envelope(env, conn);
        } else {
            self.relay(env, conn);
        }
    }

    /// Hand a fresh data or request envelope to the application.
    fn deliver(&mut self, env: Envelope, hops: u8) {
        let h = env.header;
        self.stats.delivered += 1;
        self.events.push_back(if h.kind == Kind::Data {
            NodeEvent::Message {
                from: h.source,
                target: h.target,
                payload: env.payload,
                hops,
            }
        } else {
            NodeEvent::Request {
                from: h.source,
                target: h.target,
                payload: env.payload,
                hops,
                request: RequestToken {
                    from: h.source,
                    envelope: h.id,
                },
            }
        });
    }

    fn on_envelope(&mut self, env: Envelope, conn: ConnId) {
        let h = &env.header;
        let (from, hops) = (h.source, h.hop_count.saturating_add(1));
        match h.kind {
            Kind::Data | Kind::Request => {
                let fresh = self
                    .dedup
                    .check_and_insert(self.now, dedup_key(0, &from, &h.id, 0));
                let (kind, id) = (h.kind, h.id);
                let key = (from, id);
                if fresh {
                    if kind == Kind::Request {
                        self.recent
                            .insert(self.now, self.config.dedup.ttl, key, conn);
                    }
                    self.deliver(env, hops);
                } else {
                    self.stats.duplicates += 1;
                }
                // A copy is answered again: the first answer may have been lost.
                if kind == Kind::Data {
                    self.emit(Kind::Receipt, from, id, Bytes::new(), Some(conn));
                } else if let Some(response) =
                    self.recent.get(&key).and_then(|r| r.response.clone())
                {
                    self.emit(Kind::Response, from, id, response, Some(conn));
                }
            }
            Kind::Receipt | Kind::Response => {
                let asked = if h.kind == Kind::Receipt {
                    Kind::Data
                } else {
                    Kind::Request
                };
                let matches = self
                    .outbox
                    .find(&h.reply_to)
                    .is_some_and(|p| p.to == from && p.kind == asked);
                if !matches {
                    return;
                }
                let Some((id, p)) = self.outbox.answer(&h.reply_to) else {
                    return;
                };
                self.events.push_back(if h.kind == Kind::Receipt {
                    NodeEvent::Delivered {
                        to: p.to,
                        id: MessageId(id),
                    }
                } else {
                    NodeEvent::Response {
                        id: MessageId(id),
                        from,
                        payload: env.payload,
                    }
                });
            }
            Kind::Membership => self.on_membership_packet(from, &env.payload),
            Kind::Failure => {
                let (Some(&code), true) = (env.payload.first(), env.payload.len() == 1) else {
                    return;
                };
                let Some(id) = self.outbox.id_of(&h.reply_to) else {
                    return;
                };
                match Failure::from_code(code) {
                    Some(Failure::HopLimit) => self.fail(id, SendFailure::HopLimit),
                    // Routes change: the retransmission timer keeps trying.
                    Some(Failure::NoRoute) | None => {}
                }
            }
        }
    }

    /// Forward an envelope for another node, or tell its source why not.
    fn relay(&mut self, env: Envelope, arrived_on: ConnId) {
        let h = &env.header;
        // Unsigned envelopes are for the link peer only; and nobody relays on our behalf
        // what we never sent (the next hop would take it for our own).
        if !env.signed || h.source == self.identity.node_id() {
            self.stats.forged += 1;
            return;
        }
        let key = dedup_key(1, &h.source, &h.id, h.attempt);
        if !self.relay_dedup.check_and_insert(self.now, key) {
            self.stats.duplicates += 1;
            return;
        }
        // Links crossed so far, counting the one it arrived on.
        let crossed = h.hop_count.saturating_add(1);
        let (source, id, answerable) = (h.source, h.id, h.kind.expects_answer());
        let failure = match self.way_to(&h.dest) {
            Way::Direct(c) if crossed < MAX_HOPS => Ok(c),
            Way::Relay(c, hops) if crossed.saturating_add(hops) <= MAX_HOPS => Ok(c),
            Way::None => {
                self.stats.no_route += 1;
                Err(Failure::NoRoute)
            }
            _ => {
                self.stats.hop_limit += 1;
                Err(Failure::HopLimit)
            }
        };
        let conn = match failure {
            Ok(conn) => conn,
            Err(failure) => {
                if answerable {
                    let code = Bytes::copy_from_slice(&[failure as u8]);
                    self.emit(Kind::Failure, source, id, code, Some(arrived_on));
                }
                return;
            }
        };
        self.stats.relayed += 1;
        self.send_on(conn, env.forwarded().into());
    }

    /// Run due retransmissions and fail what passed its deadline.
    pub(super) fn outbox_timers(&mut self) {
        let now = self.now;
        let (expired, retry) = self.outbox.due(now);
        for (id, p) in expired {
            // Routes come and go; only a closed link of the destination itself is a
            // more telling reason than the timeout.
            let reason = match p.problem {
                Some(closed @ SendFailure::PeerClosed(_)) => closed,
                _ => SendFailure::Timeout,
            };
            self.events.push_back(NodeEvent::SendFailed {
                to: p.to,
                id: MessageId(id),
                reason,
            });
        }
        for id in retry {
            let _ = self.transmit(id, false);
        }
    }
}

fn check_size(data: &[u8]) -> Result<(), NodeSendError> {
    if data.len() + MAX_OVERHEAD > MAX_PAYLOAD_LEN {
        Err(NodeSendError::TooLarge)
    } else {
        Ok(())
    }
}

/// The dedup filter's key: destination copies by (source, id), relayed copies by
/// (source, id, attempt), domain-separated. Hashed so that no source can choose ids
/// that collide with another source's.
fn dedup_key(domain: u8, source: &NodeId, id: &EnvelopeId, attempt: u8) -> EnvelopeId {
    let digest = Sha256::new()
        .chain_update([domain])
        .chain_update(source.as_bytes())
        .chain_update(id)
        .chain_update([attempt])
        .finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Requests received in the last dedup TTL: the link each came in on (the way back) and
/// the response once given, sent again when a copy of the request arrives. Bounded in
/// entries and in response bytes; the oldest go first.
#[derive(Default)]
pub(super) struct RecentRequests {
    entries: BTreeMap<(NodeId, EnvelopeId), Recent>,
    order: VecDeque<(Instant, (NodeId, EnvelopeId))>,
    bytes: usize,
}

pub(super) struct Recent {
    pub arrived_on: ConnId,
    pub response: Option<Bytes>,
}

/// Requests remembered at most.
const MAX_RECENT: usize = 4096;
/// Response bytes remembered at most.
const MAX_RECENT_BYTES: usize = 4 << 20;

impl RecentRequests {
    fn insert(&mut self, now: Instant, ttl: Duration, key: (NodeId, EnvelopeId), conn: ConnId) {
        while let Some(&(at, old)) = self.order.front() {
            if now < at + ttl && self.order.len() < MAX_RECENT {
                break;
            }
            self.order.pop_front();
            if let Some(r) = self.entries.remove(&old) {
                self.bytes -= r.response.map_or(0, |b| b.len());
            }
        }
        self.order.push_back((now, key));
        self.entries.insert(
            key,
            Recent {
                arrived_on: conn,
                response: None,
            },
        );
    }

    fn get(&self, key: &(NodeId, EnvelopeId)) -> Option<&Recent> {
        self.entries.get(key)
    }

    /// Remember the response (if the byte budget allows; else it is not resent).
    fn answered(&mut self, key: &(NodeId, EnvelopeId), response: Bytes) {
        let Some(r) = self.entries.get_mut(key) else {
            return;
        };
        if r.response.is_none() && self.bytes + response.len() <= MAX_RECENT_BYTES {
            self.bytes += response.len();
            r.response = Some(response);
        }
    }
}
