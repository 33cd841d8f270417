//! [`OriginMap`]: per-origin versioned maps, each written only by its origin.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use super::codec::Codec;
use super::delta::{entry_len, DELTA_HEADER_LEN, MAX_DELTA_ENTRIES};
use super::origin::{Limits, Origin, Slot};
use super::{
    ApplyError, Change, ChangeKind, Delta, DeltaEntry, RegistryConfig, Version, WriteError,
};
use crate::{Instant, NodeId};

/// A replicated map per origin node, scuttlebutt style (DESIGN.md §4 "Registries").
///
/// Each node writes only its own entries ([`insert`](Self::insert),
/// [`remove`](Self::remove)); every write takes the next [`Version`] of its origin.
/// Replicas exchange [`Delta`]s (piggybacked, or answering a digest) and converge:
/// per key the newest version wins. Removals leave tombstones that are collected after
/// [`RegistryConfig::tombstone_ttl`]; the origin's *floor* then records that its state
/// is complete up to that version, so an older replica's copy of a removed key is
/// recognised as removed instead of coming back.
///
/// Everything is bounded by the [`RegistryConfig`]: origins, live entries and tombstones
/// per origin, key and value sizes, remembered removed origins.
///
/// ```
/// use weft_mesh::registry::{ServiceRegistry, ServiceName, ServiceInfo, RegistryConfig, ServiceGossip};
/// use weft_mesh::{Instant, NodeId};
///
/// let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
/// let mut at_a = ServiceRegistry::new(a, 1_700_000_000_000, RegistryConfig::default());
/// let mut at_b = ServiceRegistry::new(b, 1_700_000_000_500, RegistryConfig::default());
/// let echo = ServiceName::new("echo").unwrap();
/// at_a.insert(Instant::ZERO, echo.clone(), ServiceInfo::new(&b"v1"[..]).unwrap()).unwrap();
///
/// // Anti-entropy: b sends its digest, a answers with what b lacks (and wants b's).
/// let digest = ServiceGossip::Digest(at_b.digest()).encode();
/// let answer = at_a.handle(Instant::ZERO, ServiceGossip::decode(&digest).unwrap(), 16 * 1024);
/// for reply in answer.replies {
///     let reply = ServiceGossip::decode(&reply.encode()).unwrap();
///     at_b.handle(Instant::ZERO, reply, 16 * 1024);
/// }
/// assert_eq!(at_b.providers(&echo).collect::<Vec<_>>(), [a]);
/// ```
#[derive(Clone, Debug)]
pub struct OriginMap<K, V> {
    pub(crate) me: NodeId,
    pub(crate) config: RegistryConfig,
    pub(crate) origins: BTreeMap<NodeId, Origin<K, V>>,
    /// Origins removed by [`OriginMap::remove_origin`]: the epoch up to which gossip about
    /// them is stale. `removed_order` keeps them in insertion order for the bound.
    removed: BTreeMap<NodeId, u64>,
    removed_order: VecDeque<NodeId>,
}

impl<K: Codec + Ord + Clone, V: Codec + Clone + PartialEq> OriginMap<K, V> {
    /// An empty map for node `me` in its run `epoch` (which must grow across restarts:
    /// the driver passes its start time in Unix milliseconds).
    ///
    /// Our origin starts at version `(epoch, 0)` with its floor there too: a peer still
    /// holding entries of our previous run gets a full delta that clears them.
    pub fn new(me: NodeId, epoch: u64, config: RegistryConfig) -> Self {
        let start = Version::new(epoch, 0);
        let mut origins = BTreeMap::new();
        origins.insert(me, Origin::new(start, start));
        OriginMap {
            me,
            config,
            origins,
            removed: BTreeMap::new(),
            removed_order: VecDeque::new(),
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The bounds in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    fn limits(&self) -> Limits {
        Limits {
            max_live: self.config.max_entries_per_origin,
            max_tombstones: self.config.max_tombstones_per_origin,
        }
    }

    fn own(&mut self) -> &mut Origin<K, V> {
        self.origins
            .entry(self.me)
            .or_insert_with(|| Origin::new(Version::ZERO, Version::ZERO))
    }

    /// Set our `key` to `value` and return the write's version. Writing the value the
    /// key already has changes nothing and returns its current version.
    pub fn insert(&mut self, now: Instant, key: K, value: V) -> Result<Version, WriteError> {
        if key.encoded_len() > self.config.max_key_bytes {
            return Err(WriteError::KeyTooLarge);
        }
        if value.encoded_len() > self.config.max_value_bytes {
            return Err(WriteError::ValueTooLarge);
        }
        let max_live = self.config.max_entries_per_origin;
        let own = self.own();
        let current = own.get(&key).map(|s| (s.version, s.value.as_ref()));
        if let Some((version, Some(old))) = current {
            if *old == value {
                return Ok(version);
            }
        } else if own.live() >= max_live {
            return Err(WriteError::Full);
        }
        let version = own.version.successor().ok_or(WriteError::Exhausted)?;
        own.version = version;
        own.put(
            key,
            Slot {
                version,
                value: Some(value),
                stored: now,
            },
        );
        Ok(version)
    }

    /// Remove our `key`: `Ok(Some(version))` of the removal, `Ok(None)` if it was not set.
    pub fn remove(&mut self, now: Instant, key: &K) -> Result<Option<Version>, WriteError> {
        let max_tombstones = self.config.max_tombstones_per_origin;
        let own = self.own();
        if own.live_version(key).is_none() {
            return Ok(None);
        }
        let version = own.version.successor().ok_or(WriteError::Exhausted)?;
        own.version = version;
        own.put(
            key.clone(),
            Slot {
                version,
                value: None,
                stored: now,
            },
        );
        own.trim(max_tombstones);
        Ok(Some(version))
    }

    /// `origin`'s live value for `key`.
    pub fn get(&self, origin: &NodeId, key: &K) -> Option<&V> {
        self.origins.get(origin)?.get(key)?.value.as_ref()
    }

    /// The version held for `origin`, if it is known.
    pub fn version(&self, origin: &NodeId) -> Option<Version> {
        self.origins.get(origin).map(|o| o.version)
    }

    /// The GC floor held for `origin`, if it is known.
    pub fn floor(&self, origin: &NodeId) -> Option<Version> {
        self.origins.get(origin).map(|o| o.floor)
    }

    /// Known origins (ours included), in id order.
    pub fn origins(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.origins.keys().copied()
    }

    /// `origin`'s live entries, in key order.
    pub fn entries(&self, origin: &NodeId) -> impl Iterator<Item = (&K, &V)> {
        self.origins
            .get(origin)
            .into_iter()
            .flat_map(Origin::live_entries)
    }

    /// Every live entry of every origin.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &K, &V)> {
        self.origins
            .iter()
            .flat_map(|(id, o)| o.live_entries().map(move |(k, v)| (*id, k, v)))
    }

    /// The origins with a live entry for `key`, in id order.
    pub fn holders<'a>(&'a self, key: &'a K) -> impl Iterator<Item = NodeId> + 'a {
        self.origins
            .iter()
            .filter(move |(_, o)| o.live_version(key).is_some())
            .map(|(id, _)| *id)
    }

    /// Number of live entries over all origins.
    pub fn len(&self) -> usize {
        self.origins.values().map(Origin::live).sum()
    }

    /// Whether no origin has a live entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of tombstones held for `origin`.
    pub fn tombstones(&self, origin: &NodeId) -> usize {
        self.origins.get(origin).map_or(0, Origin::tombstones)
    }

    /// Every known origin with the version held for it, in id order ("what I have").
    pub fn digest(&self) -> Vec<(NodeId, Version)> {
        self.origins
            .iter()
            .map(|(id, o)| (*id, o.version))
            .collect()
    }

    /// Collect the tombstones stored at least [`RegistryConfig::tombstone_ttl`] before
    /// `now`, raising the floors. Call it periodically (every anti-entropy round).
    pub fn gc(&mut self, now: Instant) {
        let ttl = self.config.tombstone_ttl;
        for o in self.origins.values_mut() {
            o.expire(now, ttl);
        }
    }

    /// The changes of `origin` after `since`, encoded in at most `budget_bytes`.
    ///
    /// Changes are taken in version order; when they do not all fit, the delta ends
    /// just before the first one left out and the rest follows from its `to`. If
    /// `since` is below the origin's floor the delta is full (from [`Version::ZERO`])
    /// and must reach the floor, so it carries every live entry up to it.
    ///
    /// `None` if nothing is newer than `since`, the origin is unknown, or the budget
    /// cannot hold the first change (for a full delta: every change up to the floor).
    pub fn delta_since(
        &self,
        origin: &NodeId,
        since: Version,
        budget_bytes: usize,
    ) -> Option<Delta<K, V>> {
        let state = self.origins.get(origin)?;
        if state.version <= since {
            return None;
        }
        let full = since < state.floor;
        let from = if full { Version::ZERO } else { since };
        let mut len = DELTA_HEADER_LEN;
        if len > budget_bytes {
            return None;
        }
        let mut to = state.version;
        let mut entries = Vec::new();
        for (key, slot) in state.changed_after(from) {
            let more = entry_len(key, slot.value.as_ref());
            if len.saturating_add(more) > budget_bytes || entries.len() == MAX_DELTA_ENTRIES {
                // A full delta must reach the floor; a partial one must carry something.
                if full && slot.version <= state.floor || !full && entries.is_empty() {
                    return None;
                }
                to = slot.version.predecessor()?;
                break;
            }
            len += more;
            entries.push(DeltaEntry {
                version: slot.version,
                key: key.clone(),
                value: slot.value.clone(),
            });
        }
        Some(Delta {
            origin: *origin,
            from,
            to,
            floor: state.floor.min(to),
            entries,
        })
    }

    /// Apply a delta received from a peer and report what changed. On error nothing
    /// changed (see [`ApplyError`]; a [`ApplyError::Gap`] is repaired by asking for the
    /// missing range).
    pub fn apply(
        &mut self,
        now: Instant,
        delta: Delta<K, V>,
    ) -> Result<Vec<Change<K>>, ApplyError> {
        if delta.origin == self.me {
            return Err(ApplyError::OwnOrigin);
        }
        delta.check(&self.config)?;
        if self.is_removed(&delta.origin, delta.to) {
            return Err(ApplyError::Removed);
        }
        let limits = self.limits();
        let mut changes = Vec::new();
        let origin = delta.origin;
        match self.origins.get_mut(&origin) {
            Some(state) => state.apply(now, delta, limits, &mut changes)?,
            None => {
                if self.origins.len() >= self.config.max_origins {
                    return Err(ApplyError::TooManyOrigins);
                }
                let mut state = Origin::new(Version::ZERO, Version::ZERO);
                state.apply(now, delta, limits, &mut changes)?;
                self.origins.insert(origin, state);
            }
        }
        Ok(changes)
    }

    /// The state-based join with another replica: per key the newest version wins,
    /// floors and versions take the maximum, and a key one side lacks at or below that
    /// side's floor is removed. Commutative, associative and idempotent (as long as the
    /// bounds are not reached: an origin the result could not hold keeps our state).
    ///
    /// Our own origin is joined only if the other holds no newer version of it (we are
    /// its only writer); origins removed at the other's epoch stay removed.
    pub fn merge(&mut self, other: &Self) {
        let limits = self.limits();
        let mut ignored = Vec::new();
        for (id, theirs) in &other.origins {
            let newer_self = *id == self.me && self.version(id).is_some_and(|v| v < theirs.version);
            if newer_self || self.is_removed(id, theirs.version) {
                continue;
            }
            let room = self.origins.len() < self.config.max_origins;
            match self.origins.get_mut(id) {
                Some(mine) => {
                    let _ = mine.join(*id, theirs, limits, &mut ignored);
                }
                None if room => {
                    let mut mine = Origin::new(Version::ZERO, Version::ZERO);
                    if mine.join(*id, theirs, limits, &mut ignored).is_ok() {
                        self.origins.insert(*id, mine);
                    }
                }
                None => {}
            }
            ignored.clear();
        }
    }

    /// Accept gossip about `origin` again after [`OriginMap::remove_origin`] (it was
    /// declared down wrongly and refuted): its entries come back with the next deltas
    /// or digest exchange that carries them.
    pub fn readmit(&mut self, origin: &NodeId) {
        if self.removed.remove(origin).is_some() {
            self.removed_order.retain(|o| o != origin);
        }
    }

    /// Forget `origin` (SWIM declared it down) if what we hold of it is from `epoch` or
    /// earlier, and ignore gossip about it up to that epoch from now on (the most recent
    /// [`RegistryConfig::max_removed_origins`] removals are remembered). A delta of a
    /// later epoch (the node restarted) is accepted. Returns its live keys, removed.
    pub fn remove_origin(&mut self, origin: &NodeId, epoch: u64) -> Vec<Change<K>> {
        if *origin == self.me {
            return Vec::new();
        }
        match self.removed.get_mut(origin) {
            Some(e) => *e = (*e).max(epoch),
            None if self.config.max_removed_origins == 0 => {}
            None => {
                if self.removed_order.len() >= self.config.max_removed_origins {
                    if let Some(oldest) = self.removed_order.pop_front() {
                        self.removed.remove(&oldest);
                    }
                }
                self.removed.insert(*origin, epoch);
                self.removed_order.push_back(*origin);
            }
        }
        if self.version(origin).is_none_or(|v| v.epoch > epoch) {
            return Vec::new();
        }
        let Some(state) = self.origins.remove(origin) else {
            return Vec::new();
        };
        state
            .live_entries()
            .map(|(k, _)| Change {
                origin: *origin,
                key: k.clone(),
                kind: ChangeKind::Removed,
            })
            .collect()
    }

    /// Whether gossip about `origin` at `version` is stale because the origin was removed.
    pub(crate) fn is_removed(&self, origin: &NodeId, version: Version) -> bool {
        self.removed
            .get(origin)
            .is_some_and(|e| version.epoch <= *e)
    }

    /// A peer claims `claimed` for our own origin although we are its only writer: a
    /// previous run of ours with a larger epoch (a clock that went back). Jump past it,
    /// writing our entries again above it, so that every peer takes a full delta that
    /// replaces the stale state.
    pub(crate) fn overtake(&mut self, claimed: Version) {
        let own = self.own();
        if claimed > own.version {
            own.restart_after(claimed);
        }
    }
}
