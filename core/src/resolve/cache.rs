//! [`ResolveCache`]: what resolution learned from the cluster, positive and negative.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::time::Duration;

use crate::registry::ServiceName;
use crate::{Instant, NodeId};

/// What the cache knows about a name.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Lookup {
    /// Providers whose entries have not expired, in id order.
    Hit(Vec<NodeId>),
    /// The cluster recently said nobody provides it.
    Negative,
    /// Nothing (or only expired entries).
    Miss,
}

#[derive(Clone, Debug)]
enum Entry {
    /// Providers and when each expires.
    Positive(BTreeMap<NodeId, Instant>),
    /// Nobody provides the name until this instant.
    Negative(Instant),
}

impl Entry {
    /// When the whole entry is stale.
    fn expires(&self) -> Instant {
        match self {
            Entry::Positive(providers) => {
                providers.values().copied().max().unwrap_or(Instant::ZERO)
            }
            Entry::Negative(until) => *until,
        }
    }

    fn live_at(&self, now: Instant) -> bool {
        now < self.expires()
    }
}

/// A dual cache of resolutions: positive entries (providers, each with its own expiry)
/// and negative entries ("nobody provides it", for `negative_ttl`). A positive insert
/// replaces a negative entry; a negative insert is ignored while a positive one lives.
/// Entries are live while `now < expiry`.
///
/// Bounded: at most `max_names` names (when full, the entry expiring soonest is evicted)
/// and `max_providers` providers per name (likewise).
#[derive(Clone, Debug)]
pub struct ResolveCache {
    max_names: usize,
    max_providers: usize,
    negative_ttl: Duration,
    entries: BTreeMap<ServiceName, Entry>,
    /// `(expiry, name)` of every entry, soonest first.
    by_expiry: BTreeSet<(Instant, ServiceName)>,
}

impl ResolveCache {
    /// An empty cache.
    pub fn new(max_names: usize, max_providers: usize, negative_ttl: Duration) -> Self {
        ResolveCache {
            max_names,
            max_providers,
            negative_ttl,
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Record that `provider` provides `name` for `ttl` from `now` (a zero TTL records
    /// nothing). Clears a negative entry.
    pub fn insert_positive(
        &mut self,
        now: Instant,
        name: &ServiceName,
        provider: NodeId,
        ttl: Duration,
    ) {
        let until = now + ttl;
        if until <= now || self.max_providers == 0 {
            return;
        }
        let mut providers = match self.entries.get(name) {
            Some(Entry::Positive(p)) => p.clone(),
            _ => BTreeMap::new(),
        };
        providers.retain(|_, expiry| now < *expiry);
        if !providers.contains_key(&provider) && providers.len() >= self.max_providers {
            let soonest = providers
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(n, e)| (*n, *e));
            match soonest {
                Some((victim, expiry)) if expiry < until => {
                    providers.remove(&victim);
                }
                _ => return,
            }
        }
        providers.insert(provider, until);
        self.set(now, name, Entry::Positive(providers));
    }

    /// Record that nobody provides `name` (for the negative TTL from `now`), unless a
    /// positive entry is live.
    pub fn insert_negative(&mut self, now: Instant, name: &ServiceName) {
        if let Some(entry @ Entry::Positive(_)) = self.entries.get(name) {
            if entry.live_at(now) {
                return;
            }
        }
        let until = now + self.negative_ttl;
        if until > now {
            self.set(now, name, Entry::Negative(until));
        }
    }

    /// Forget that `provider` provides `name` (it said otherwise, or calls to it failed).
    pub fn remove_provider(&mut self, now: Instant, name: &ServiceName, provider: &NodeId) {
        if let Some(Entry::Positive(p)) = self.entries.get(name) {
            let mut p = p.clone();
            p.remove(provider);
            self.set(now, name, Entry::Positive(p));
        }
    }

    /// What is known about `name` at `now`.
    pub fn lookup(&self, now: Instant, name: &ServiceName) -> Lookup {
        match self.entries.get(name) {
            Some(Entry::Positive(p)) => {
                let live: Vec<NodeId> = p
                    .iter()
                    .filter(|(_, e)| now < **e)
                    .map(|(n, _)| *n)
                    .collect();
                if live.is_empty() {
                    Lookup::Miss
                } else {
                    Lookup::Hit(live)
                }
            }
            Some(Entry::Negative(until)) if now < *until => Lookup::Negative,
            _ => Lookup::Miss,
        }
    }

    /// Live providers of `name` with the time each has left.
    pub(crate) fn providers(&self, now: Instant, name: &ServiceName) -> Vec<(NodeId, Duration)> {
        match self.entries.get(name) {
            Some(Entry::Positive(p)) => p
                .iter()
                .filter(|(_, e)| now < **e)
                .map(|(n, e)| (*n, e.saturating_duration_since(now)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Drop every entry that has expired at `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((until, name)) = self.by_expiry.first().cloned() {
            if now < until {
                break;
            }
            self.by_expiry.remove(&(until, name.clone()));
            self.entries.remove(&name);
        }
    }

    /// Names held (live or not yet expired away).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Store `entry` under `name` (or drop the name if the entry is dead), keeping the
    /// index and the bound.
    fn set(&mut self, now: Instant, name: &ServiceName, entry: Entry) {
        if let Some(old) = self.entries.remove(name) {
            self.by_expiry.remove(&(old.expires(), name.clone()));
        }
        if !entry.live_at(now) || self.max_names == 0 {
            return;
        }
        if self.entries.len() >= self.max_names {
            self.expire(now);
        }
        if self.entries.len() >= self.max_names {
            if let Some((_, victim)) = self.by_expiry.pop_first() {
                self.entries.remove(&victim);
            }
        }
        self.by_expiry.insert((entry.expires(), name.clone()));
        self.entries.insert(name.clone(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    fn cache() -> ResolveCache {
        ResolveCache::new(3, 2, Duration::from_secs(30))
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_positive_insert_clears_the_negative_entry_and_not_the_reverse() {
        let mut c = cache();
        let echo = name("echo");
        c.insert_negative(at(0), &echo);
        assert_eq!(c.lookup(at(0), &echo), Lookup::Negative);
        c.insert_positive(at(1), &echo, n(1), 5 * SEC);
        assert_eq!(c.lookup(at(1), &echo), Lookup::Hit(alloc::vec![n(1)]));
        c.insert_negative(at(2), &echo);
        assert_eq!(
            c.lookup(at(2), &echo),
            Lookup::Hit(alloc::vec![n(1)]),
            "ignored while positive"
        );
        // Once the positive entry expired, a negative one takes its place.
        c.insert_negative(at(5001), &echo);
        assert_eq!(c.lookup(at(5001), &echo), Lookup::Negative);
    }

    #[test]
    fn entries_expire_exactly_at_their_ttl() {
        let mut c = cache();
        let (echo, time) = (name("echo"), name("time"));
        c.insert_positive(at(0), &echo, n(1), 2 * SEC);
        c.insert_positive(at(1000), &echo, n(2), 2 * SEC);
        assert_eq!(
            c.lookup(at(1999), &echo),
            Lookup::Hit(alloc::vec![n(1), n(2)])
        );
        assert_eq!(c.lookup(at(2000), &echo), Lookup::Hit(alloc::vec![n(2)]));
        assert_eq!(c.lookup(at(3000), &echo), Lookup::Miss);
        c.insert_negative(at(0), &time);
        assert_eq!(c.lookup(at(29_999), &time), Lookup::Negative);
        assert_eq!(c.lookup(at(30_000), &time), Lookup::Miss);
        c.expire(at(3000));
        assert_eq!(c.len(), 1, "the negative entry still lives");
        c.expire(at(30_000));
        assert!(c.is_empty());
        c.insert_positive(at(0), &echo, n(1), Duration::ZERO);
        assert_eq!(
            c.lookup(at(0), &echo),
            Lookup::Miss,
            "a zero TTL records nothing"
        );
    }

    #[test]
    fn the_cache_is_bounded_evicting_what_expires_soonest() {
        let mut c = cache();
        c.insert_positive(at(0), &name("a"), n(1), 10 * SEC);
        c.insert_positive(at(0), &name("b"), n(1), 5 * SEC);
        c.insert_negative(at(0), &name("c"));
        c.insert_positive(at(0), &name("d"), n(1), 20 * SEC);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.lookup(at(0), &name("b")),
            Lookup::Miss,
            "b expired soonest"
        );
        assert!(matches!(c.lookup(at(0), &name("a")), Lookup::Hit(_)));
        // Providers per name: the soonest-expiring one gives way to a later one only.
        let a = name("a");
        c.insert_positive(at(0), &a, n(2), 3 * SEC);
        c.insert_positive(at(0), &a, n(3), SEC);
        assert_eq!(c.lookup(at(0), &a), Lookup::Hit(alloc::vec![n(1), n(2)]));
        c.insert_positive(at(0), &a, n(4), 4 * SEC);
        assert_eq!(c.lookup(at(0), &a), Lookup::Hit(alloc::vec![n(1), n(4)]));
        c.remove_provider(at(0), &a, &n(1));
        assert_eq!(c.lookup(at(0), &a), Lookup::Hit(alloc::vec![n(4)]));
    }
}
