//! Push-pull: the whole member table sent in as many `max_packet` chunks as it
//! takes, encoded lazily (a cursor walks the table in id order, so a queued exchange
//! costs no memory beyond its cursor).

use bytes::{BufMut, BytesMut};

use super::config::MAX_PUSH_PULLS;
use super::member::{Member, MemberState};
use super::packet::{Update, MAX_STATE_ENTRIES, PUSH_PULL_HEADER, REPLY_WANTED};
use super::swim::Swim;
use crate::NodeId;

/// A full-state send in progress.
pub(crate) struct PushPullJob {
    to: NodeId,
    /// Ask for the receiver's state in return (set on the first chunk only).
    reply: bool,
    /// No chunk sent yet (the first one carries our own entry and the flag).
    first: bool,
    /// The last member sent.
    cursor: Option<NodeId>,
}

impl Swim {
    /// Queue a full-state send to `to` (once per destination and kind; at most
    /// [`MAX_PUSH_PULLS`]).
    pub(super) fn queue_push_pull(&mut self, to: NodeId, reply: bool) {
        if self
            .push_pulls
            .iter()
            .any(|j| j.to == to && j.reply == reply && j.first)
        {
            return;
        }
        if self.push_pulls.len() >= MAX_PUSH_PULLS {
            self.stats.push_pulls_dropped += 1;
            return;
        }
        self.push_pulls.push_back(PushPullJob {
            to,
            reply,
            first: true,
            cursor: None,
        });
    }

    /// The next chunk of the oldest queued full-state send.
    pub(super) fn push_pull_chunk(&mut self) -> Option<(NodeId, BytesMut)> {
        let mut job = self.push_pulls.pop_front()?;
        let room = self.config.max_packet - 1; // one byte for the update count
        let mut b = BytesMut::with_capacity(self.config.max_packet);
        b.put_u8(0x05);
        b.put_u8(if job.reply && job.first {
            REPLY_WANTED
        } else {
            0
        });
        b.put_u16(0);
        let mut count: u16 = 0;
        if job.first {
            self.self_update().encode(&mut b);
            count += 1;
            job.first = false;
        }
        let mut done = true;
        for (node, m) in self.members.after(job.cursor) {
            if !m.heard {
                // Only the member's own word is passed on.
                job.cursor = Some(*node);
                continue;
            }
            let entry = self.state_entry(*node, m);
            let fits = b.len() + entry.encoded_len() <= room;
            if usize::from(count) >= MAX_STATE_ENTRIES || (!fits && count > 0) {
                done = false;
                break;
            }
            if fits {
                entry.encode(&mut b);
                count += 1;
            }
            job.cursor = Some(*node);
        }
        let at = PUSH_PULL_HEADER - 2;
        b[at..PUSH_PULL_HEADER].copy_from_slice(&count.to_be_bytes());
        self.piggyback(&mut b, None);
        let to = job.to;
        if !done {
            self.push_pulls.push_front(job);
        }
        Some((to, b))
    }

    /// How a member is described in our state.
    fn state_entry(&self, node: NodeId, m: &Member) -> Update {
        let incarnation = m.incarnation;
        match m.state {
            MemberState::Alive => Update::Alive {
                node,
                incarnation,
                addrs: m.addrs.to_vec(),
            },
            MemberState::Suspect => Update::Suspect {
                node,
                incarnation,
                from: self.me,
            },
            MemberState::Dead => Update::Dead {
                node,
                incarnation,
                from: self.me,
            },
            MemberState::Left => Update::Left { node, incarnation },
        }
    }
}
