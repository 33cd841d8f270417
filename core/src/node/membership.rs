//! The node's failure detector: [`Swim`] carried over the mesh. A packet for a member
//! with a direct link travels in a Heartbeat frame (the highest-priority lane, so it
//! never waits behind bulk data); for any other member it is relayed in a signed
//! membership envelope (PROTOCOL.md §12). Every new peer link is a SWIM contact (a
//! push-pull join); member addresses learned through SWIM fill the directory.

use alloc::vec::Vec;

use bytes::Bytes;

use super::ipc::Way;
use super::{ConnId, Node, NodeEvent};
use crate::frame::FrameType;
use crate::membership::{MemberEvent, MemberInfo, Swim, SwimStats};
use crate::mesh::discovery::Member;
use crate::mesh::envelope::Kind;
use crate::NodeId;

impl Node {
    /// The members this node knows (itself first), if membership is on.
    pub fn members(&self) -> impl Iterator<Item = MemberInfo> + '_ {
        self.swim.iter().flat_map(Swim::members)
    }

    /// The failure detector's counters and this node's Lifeguard health score (0 is
    /// healthy), if membership is on.
    pub fn membership_stats(&self) -> Option<(SwimStats, u32)> {
        self.swim.as_ref().map(|s| (s.stats(), s.local_health()))
    }

    /// A new peer link: tell SWIM (a push-pull state exchange with it).
    pub(super) fn member_linked(&mut self, node: NodeId) {
        if let Some(swim) = &mut self.swim {
            swim.contact(self.now, node);
            self.flush_membership();
        }
    }

    /// A SWIM packet from the link's peer (a Heartbeat frame with a payload).
    pub(super) fn on_heartbeat(&mut self, conn: ConnId, packet: &[u8]) {
        let Some(from) = self.links.get(conn).and_then(|e| e.peer) else {
            return;
        };
        self.on_membership_packet(from, packet);
    }

    /// A SWIM packet from `from`, directly or relayed.
    pub(super) fn on_membership_packet(&mut self, from: NodeId, packet: &[u8]) {
        let Some(swim) = &mut self.swim else {
            return;
        };
        // A malformed packet is counted by SWIM and changes nothing; the link that
        // carried it authenticated its sender, so it stays up.
        let _ = swim.handle_packet(self.now, from, packet);
        self.flush_membership();
    }

    /// SWIM's timers. SWIM's gossip rounds prefer the peers whose links flow (a
    /// packet to them needs no signature and no relay).
    pub(super) fn membership_timers(&mut self) {
        if let Some(swim) = &mut self.swim {
            let routes = &self.routes;
            swim.set_neighbours(
                self.peers
                    .keys()
                    .copied()
                    .filter(|n| !routes.is_degraded(n)),
            );
            swim.handle_timeout(self.now);
            self.flush_membership();
        }
    }

    /// Leave gracefully (before the links close at shutdown).
    pub(super) fn leave_membership(&mut self) {
        if let Some(swim) = &mut self.swim {
            swim.leave(self.now);
            self.flush_membership();
        }
    }

    /// Carry SWIM's packets and report its events.
    fn flush_membership(&mut self) {
        let Some(swim) = &mut self.swim else {
            return;
        };
        let now = self.now;
        let mut packets = Vec::new();
        while let Some(t) = swim.poll_transmit(now) {
            packets.push((t.to, t.packet));
        }
        let mut events = Vec::new();
        while let Some(e) = swim.poll_event() {
            events.push(e);
        }
        for (to, packet) in packets {
            self.carry_membership(to, packet);
        }
        for event in events {
            match &event {
                MemberEvent::Up { node, addrs } => {
                    let member = Member {
                        node: *node,
                        addrs: addrs.clone(),
                    };
                    self.directory.learn(now, &member);
                    // Back after Down (a refuted false positive, or a restart): its
                    // registry entries are welcome again.
                    self.registries.services.readmit(node);
                    self.registries.processes.readmit(node);
                }
                MemberEvent::Down { node } | MemberEvent::Left { node } => {
                    // The member's event first, then its services going down.
                    self.events.push_back(NodeEvent::Member(event.clone()));
                    self.registry_member_gone(node);
                    continue;
                }
                _ => {}
            }
            self.events.push_back(NodeEvent::Member(event));
        }
    }

    fn carry_membership(&mut self, to: NodeId, packet: Bytes) {
        match self.way_to(&to) {
            Way::Direct(conn) => self.send_frame(conn, FrameType::Heartbeat, packet),
            // Relayed and signed; no route: counted as unroutable, and SWIM treats the
            // silence as it treats loss.
            _ => self.emit(Kind::Membership, to, [0; 16], packet, None),
        }
    }
}
