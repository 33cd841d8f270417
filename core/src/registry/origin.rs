//! One origin's replicated state: version, GC floor, entries and tombstones, and the two
//! ways it grows: applying a delta and joining another replica's state.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::ops::Bound::{Excluded, Included, Unbounded};
use core::time::Duration;

use super::{ApplyError, Change, ChangeKind, Delta, Version};
use crate::{Instant, NodeId};

/// A key's latest known change.
#[derive(Clone, Debug)]
pub(crate) struct Slot<V> {
    pub(crate) version: Version,
    /// `None`: removed (a tombstone).
    pub(crate) value: Option<V>,
    /// Local time it was stored (tombstones expire by it).
    pub(crate) stored: Instant,
}

/// The state of one origin.
///
/// Invariants: `floor <= version`; every slot's version is at most `version`; no
/// tombstone has a version at or below `floor`; `by_version` and `tombstones` index
/// exactly the slots (resp. the tombstones) of `entries`; `live` counts live slots.
#[derive(Clone, Debug)]
pub(crate) struct Origin<K, V> {
    pub(crate) version: Version,
    pub(crate) floor: Version,
    entries: BTreeMap<K, Slot<V>>,
    by_version: BTreeMap<Version, K>,
    tombstones: BTreeMap<Version, Instant>,
    live: usize,
}

/// Planned edits of a state: new slots and keys to drop.
type Plan<K, V> = (Vec<(K, Slot<V>)>, Vec<K>);

impl<K: Ord + Clone, V: Clone> Origin<K, V> {
    /// An empty state at `version`, complete up to `floor`.
    pub(crate) fn new(version: Version, floor: Version) -> Self {
        Origin {
            version,
            floor,
            entries: BTreeMap::new(),
            by_version: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            live: 0,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&Slot<V>> {
        self.entries.get(key)
    }

    /// Live entries, by key.
    pub(crate) fn live_entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries
            .iter()
            .filter_map(|(k, s)| s.value.as_ref().map(|v| (k, v)))
    }

    /// Every slot (tombstones included), by key.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> impl Iterator<Item = (&K, &Slot<V>)> {
        self.entries.iter()
    }

    /// Slots changed after `since`, in version order.
    pub(crate) fn changed_after(&self, since: Version) -> impl Iterator<Item = (&K, &Slot<V>)> {
        self.by_version
            .range((Excluded(since), Unbounded))
            .filter_map(|(_, k)| self.entries.get_key_value(k))
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// Store `slot` for `key` (replacing any), keeping the indexes. A version names one
    /// change: another key claiming the same version (only a faulty peer sends that)
    /// loses its slot.
    pub(crate) fn put(&mut self, key: K, slot: Slot<V>) {
        self.take(&key);
        if let Some(other) = self.by_version.get(&slot.version).cloned() {
            self.take(&other);
        }
        self.by_version.insert(slot.version, key.clone());
        match slot.value {
            Some(_) => self.live += 1,
            None => {
                self.tombstones.insert(slot.version, slot.stored);
            }
        }
        self.entries.insert(key, slot);
    }

    /// Forget `key`, keeping the indexes.
    fn take(&mut self, key: &K) -> Option<Slot<V>> {
        let slot = self.entries.remove(key)?;
        self.by_version.remove(&slot.version);
        match slot.value {
            Some(_) => self.live = self.live.saturating_sub(1),
            None => {
                self.tombstones.remove(&slot.version);
            }
        }
        Some(slot)
    }

    /// Raise the floor to `floor` (if higher) and drop the tombstones it covers.
    pub(crate) fn raise_floor(&mut self, floor: Version) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        let covered: Vec<Version> = self.tombstones.range(..=floor).map(|(v, _)| *v).collect();
        for v in covered {
            if let Some(key) = self.by_version.get(&v).cloned() {
                self.take(&key);
            }
        }
    }

    /// Collect tombstones stored `ttl` or longer before `now` (and any older-versioned
    /// ones with them: the floor only covers a prefix of versions).
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) {
        let horizon = self
            .tombstones
            .iter()
            .filter(|(_, stored)| now >= **stored + ttl)
            .map(|(v, _)| *v)
            .max();
        if let Some(v) = horizon {
            self.raise_floor(v);
        }
    }

    /// Collect the oldest tombstones until at most `max` remain.
    pub(crate) fn trim(&mut self, max: usize) {
        let excess = self.tombstones.len().saturating_sub(max);
        if let Some(v) = excess
            .checked_sub(1)
            .and_then(|i| self.tombstones.keys().nth(i).copied())
        {
            self.raise_floor(v);
        }
    }

    /// Start over after `past` (a version someone holds that we never wrote): the floor
    /// goes just above it and every live entry is written again at the next versions, so
    /// that replicas drop whatever they hold up to `past` and take our entries anew.
    /// Nothing changes if the versions would run out.
    pub(crate) fn restart_after(&mut self, past: Version) {
        let live: Vec<(K, Slot<V>)> = self
            .entries
            .iter()
            .filter(|(_, s)| s.value.is_some())
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let mut versions = Vec::with_capacity(live.len());
        let mut next = past.successor();
        for _ in 0..=live.len() {
            let Some(v) = next else { return };
            versions.push(v);
            next = v.successor();
        }
        let mut versions = versions.into_iter();
        let Some(floor) = versions.next() else { return };
        self.version = self.version.max(floor);
        self.raise_floor(floor);
        for ((key, slot), version) in live.into_iter().zip(versions) {
            self.version = self.version.max(version);
            self.put(key, Slot { version, ..slot });
        }
    }

    /// Apply `delta` (already checked for shape and sizes): see [`Delta`] for the rules.
    pub(crate) fn apply(
        &mut self,
        now: Instant,
        delta: Delta<K, V>,
        limits: Limits,
        out: &mut Vec<Change<K>>,
    ) -> Result<(), ApplyError> {
        if delta.from > self.version {
            return Err(ApplyError::Gap { have: self.version });
        }
        let floor = delta.floor.min(delta.to);
        // Ours in (from, min(floor, to)] that the sender lacks were removed and collected.
        let drops: Vec<K> = if delta.from < floor {
            let sent: BTreeSet<&K> = delta.entries.iter().map(|e| &e.key).collect();
            self.by_version
                .range((Excluded(delta.from), Included(floor)))
                .filter(|(_, k)| !sent.contains(k))
                .map(|(_, k)| k.clone())
                .collect()
        } else {
            Vec::new()
        };
        let puts: Vec<(K, Slot<V>)> = delta
            .entries
            .into_iter()
            .filter(|e| self.accepts(&e.key, e.version))
            .map(|e| {
                let slot = Slot {
                    version: e.version,
                    value: e.value,
                    stored: now,
                };
                (e.key, slot)
            })
            .collect();
        self.commit(delta.origin, (puts, drops), delta.to, floor, limits, out)
    }

    /// The state-based join with `other` (a replica of the same origin).
    pub(crate) fn join(
        &mut self,
        origin: NodeId,
        other: &Origin<K, V>,
        limits: Limits,
        out: &mut Vec<Change<K>>,
    ) -> Result<(), ApplyError> {
        let mut puts = Vec::new();
        let mut drops = Vec::new();
        for (k, mine) in &self.entries {
            match other.entries.get(k) {
                Some(theirs) if theirs.version > mine.version => {
                    puts.push((k.clone(), theirs.clone()))
                }
                Some(_) => {}
                None if mine.version <= other.floor => drops.push(k.clone()),
                None => {}
            }
        }
        for (k, theirs) in &other.entries {
            if !self.entries.contains_key(k) && theirs.version > self.floor {
                puts.push((k.clone(), theirs.clone()));
            }
        }
        self.commit(
            origin,
            (puts, drops),
            other.version,
            other.floor,
            limits,
            out,
        )
    }

    /// Whether a change of `key` at `version` from elsewhere is news: newer than ours,
    /// or about a key we lack whose absence the floor does not explain.
    fn accepts(&self, key: &K, version: Version) -> bool {
        match self.entries.get(key) {
            Some(mine) => version > mine.version,
            None => version > self.floor,
        }
    }

    /// Check the entry bound, then carry out `plan` and advance version and floor.
    fn commit(
        &mut self,
        origin: NodeId,
        (puts, drops): Plan<K, V>,
        version: Version,
        floor: Version,
        limits: Limits,
        out: &mut Vec<Change<K>>,
    ) -> Result<(), ApplyError> {
        // One version names one change: a faulty peer's reuse of a version is refused.
        let clash = puts.iter().any(|(k, s)| {
            self.by_version
                .get(&s.version)
                .is_some_and(|holder| holder != k)
        });
        if clash {
            return Err(ApplyError::Malformed);
        }
        let live_now = |k: &K| self.entries.get(k).is_some_and(|s| s.value.is_some());
        let gained = puts
            .iter()
            .filter(|(k, s)| s.value.is_some() && !live_now(k))
            .count();
        let lost = puts
            .iter()
            .filter(|(k, s)| s.value.is_none() && live_now(k))
            .count()
            + drops.iter().filter(|k| live_now(k)).count();
        let live_after = self.live.saturating_add(gained).saturating_sub(lost);
        if live_after > limits.max_live && live_after > self.live {
            return Err(ApplyError::TooManyEntries);
        }
        let mut touched: Vec<(K, Option<Version>)> = Vec::with_capacity(puts.len() + drops.len());
        for (k, slot) in puts {
            touched.push((k.clone(), self.live_version(&k)));
            self.put(k, slot);
        }
        for k in drops {
            touched.push((k.clone(), self.live_version(&k)));
            self.take(&k);
        }
        self.version = self.version.max(version);
        self.raise_floor(floor);
        self.trim(limits.max_tombstones);
        for (key, before) in touched {
            if let Some(kind) = ChangeKind::between(before, self.live_version(&key)) {
                out.push(Change { origin, key, kind });
            }
        }
        Ok(())
    }

    /// The version of `key`'s live value, if it has one.
    pub(crate) fn live_version(&self, key: &K) -> Option<Version> {
        self.entries
            .get(key)
            .filter(|s| s.value.is_some())
            .map(|s| s.version)
    }
}

/// The per-origin bounds of a [`super::RegistryConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_live: usize,
    pub(crate) max_tombstones: usize,
}
