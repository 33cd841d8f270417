//! Anti-entropy: answering digests and wants, and handling whole gossip messages.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::codec::Codec;
use super::wire::{MAX_DELTAS_PER_MESSAGE, MAX_DIGEST_ENTRIES, MESSAGE_HEADER_LEN};
use super::{ApplyError, Change, Delta, Gossip, OriginMap, Version};
use crate::{Instant, NodeId};

/// What [`OriginMap::handle`] did with a message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Handled<K, V> {
    /// Visible changes (for events).
    pub changes: Vec<Change<K>>,
    /// Messages to send back to the peer, in order.
    pub replies: Vec<Gossip<K, V>>,
    /// Deltas that were refused, by origin (each left the map unchanged).
    pub rejected: Vec<(NodeId, ApplyError)>,
}

/// What [`OriginMap::answer_digest`] sends back.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DigestAnswer<K, V> {
    /// The deltas the peer lacks.
    pub deltas: Vec<Delta<K, V>>,
    /// `(origin, version we hold)` for the origins where the peer is ahead.
    pub want: Vec<(NodeId, Version)>,
}

impl<K: Codec + Ord + Clone, V: Codec + Clone + PartialEq> OriginMap<K, V> {
    /// Handle a gossip message from a peer: apply its deltas (asking for the ranges
    /// missed before them), answer a digest with the deltas it lacks and a want for what
    /// we lack, answer a want with deltas. Each `Deltas` reply encodes in at most
    /// `budget_bytes`; what does not fit follows in a later round.
    pub fn handle(
        &mut self,
        now: Instant,
        message: Gossip<K, V>,
        budget_bytes: usize,
    ) -> Handled<K, V> {
        let mut handled = Handled {
            changes: Vec::new(),
            replies: Vec::new(),
            rejected: Vec::new(),
        };
        match message {
            Gossip::Deltas(deltas) => {
                let mut want = BTreeMap::new();
                for delta in deltas {
                    let origin = delta.origin;
                    if origin == self.me {
                        // Someone holds more of our origin than we wrote: a previous run.
                        self.overtake(delta.to);
                    }
                    match self.apply(now, delta) {
                        Ok(mut changes) => handled.changes.append(&mut changes),
                        Err(ApplyError::Gap { have }) => {
                            want.insert(origin, have);
                        }
                        Err(e) => handled.rejected.push((origin, e)),
                    }
                }
                if !want.is_empty() {
                    handled
                        .replies
                        .push(Gossip::Want(want.into_iter().collect()));
                }
            }
            Gossip::Digest(digest) => handled.replies = self.digest_replies(&digest, budget_bytes),
            Gossip::Want(want) => {
                let deltas = self.answer_want(&want, budget_bytes);
                if !deltas.is_empty() {
                    handled.replies.push(Gossip::Deltas(deltas));
                }
            }
        }
        handled
    }

    /// Answer a peer's digest: the deltas it lacks (origins it did not list included),
    /// encoding in at most `budget_bytes` as one message, and what to ask it for. A digest that claims a newer version of our own origin
    /// makes us jump past it (see [`OriginMap`]'s restart handling).
    pub fn answer_digest(
        &mut self,
        digest: &[(NodeId, Version)],
        budget_bytes: usize,
    ) -> DigestAnswer<K, V> {
        let mut theirs: BTreeMap<NodeId, Version> = BTreeMap::new();
        for (id, v) in digest.iter().take(MAX_DIGEST_ENTRIES) {
            let held = theirs.entry(*id).or_insert(*v);
            *held = (*held).max(*v);
        }
        if let Some(claimed) = theirs.get(&self.me) {
            self.overtake(*claimed);
        }
        let mut room = self.config.max_origins.saturating_sub(self.origins.len());
        let mut want = Vec::new();
        for (id, v) in &theirs {
            let held = self.version(id);
            let newer = held.is_none_or(|h| h < *v) && *id != self.me && !self.is_removed(id, *v);
            if newer && (held.is_some() || room > 0) {
                if held.is_none() {
                    room -= 1;
                }
                want.push((*id, held.unwrap_or(Version::ZERO)));
            }
        }
        let own = core::iter::once(self.me);
        let others = self.origins.keys().copied().filter(|id| *id != self.me);
        let requests: Vec<(NodeId, Version)> = own
            .chain(others)
            .map(|id| (id, theirs.get(&id).copied().unwrap_or(Version::ZERO)))
            .collect();
        DigestAnswer {
            deltas: self.pack(&requests, budget_bytes),
            want,
        }
    }

    /// [`OriginMap::answer_digest`] as messages: `Deltas` then `Want`, each if non-empty.
    pub(crate) fn digest_replies(
        &mut self,
        digest: &[(NodeId, Version)],
        budget_bytes: usize,
    ) -> Vec<Gossip<K, V>> {
        let DigestAnswer { deltas, want } = self.answer_digest(digest, budget_bytes);
        let deltas = (!deltas.is_empty()).then_some(Gossip::Deltas(deltas));
        let want = (!want.is_empty()).then_some(Gossip::Want(want));
        deltas.into_iter().chain(want).collect()
    }

    /// Answer a want: the deltas after each listed version, encoding in at most
    /// `budget_bytes` as one message.
    pub fn answer_want(&self, want: &[(NodeId, Version)], budget_bytes: usize) -> Vec<Delta<K, V>> {
        let want = &want[..want.len().min(MAX_DIGEST_ENTRIES)];
        self.pack(want, budget_bytes)
    }

    /// One delta per requested origin that has news, while the message stays in budget.
    fn pack(&self, requests: &[(NodeId, Version)], budget_bytes: usize) -> Vec<Delta<K, V>> {
        let mut left = budget_bytes.saturating_sub(MESSAGE_HEADER_LEN);
        let mut deltas = Vec::new();
        for (origin, since) in requests {
            if deltas.len() == MAX_DELTAS_PER_MESSAGE {
                break;
            }
            if let Some(d) = self.delta_since(origin, *since, left) {
                left = left.saturating_sub(d.encoded_len());
                deltas.push(d);
            }
        }
        deltas
    }
}
