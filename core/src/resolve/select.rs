//! [`Selector`]: which provider of a service to call.

use alloc::collections::BTreeMap;

use super::Breakers;
use crate::registry::ServiceName;
use crate::{Instant, NodeId};

/// How to choose among a service's providers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Strategy {
    /// Each provider in turn (a cursor per name).
    #[default]
    RoundRobin,
    /// This node while it provides the service and its breaker lets calls through,
    /// else round robin.
    Preferred(NodeId),
}

/// Chooses providers: skips those whose breaker is open, rotates through the rest.
///
/// The cursor of a name is the provider chosen last; the next choice is the first usable
/// provider after it in id order (wrapping), so the rotation survives providers coming
/// and going. At most `max_names` cursors are kept.
#[derive(Clone, Debug)]
pub struct Selector {
    max_names: usize,
    cursors: BTreeMap<ServiceName, NodeId>,
}

impl Selector {
    /// A selector with no history.
    pub fn new(max_names: usize) -> Self {
        Selector {
            max_names,
            cursors: BTreeMap::new(),
        }
    }

    /// A provider of `name` among `providers` (sorted by id, without duplicates) that
    /// `breakers` let through (taking a half-open breaker's trial), or `None`.
    pub fn select(
        &mut self,
        now: Instant,
        name: &ServiceName,
        providers: &[NodeId],
        strategy: Strategy,
        breakers: &mut Breakers,
    ) -> Option<NodeId> {
        if let Strategy::Preferred(p) = strategy {
            if providers.binary_search(&p).is_ok() && breakers.try_acquire(now, &p) {
                return Some(p);
            }
        }
        let start = match self.cursors.get(name) {
            Some(last) => providers.partition_point(|p| p <= last),
            None => 0,
        };
        let (before, after) = providers.split_at(start.min(providers.len()));
        let chosen = after
            .iter()
            .chain(before)
            .copied()
            .find(|p| breakers.try_acquire(now, p))?;
        if !self.cursors.contains_key(name) && self.cursors.len() >= self.max_names {
            self.cursors.pop_first();
        }
        if self.max_names > 0 {
            self.cursors.insert(name.clone(), chosen);
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::super::BreakerConfig;
    use super::*;
    use alloc::vec::Vec;
    use core::time::Duration;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    fn open(breakers: &mut Breakers, node: NodeId) {
        for _ in 0..3 {
            breakers.record_failure(Instant::ZERO, &node);
        }
    }

    #[test]
    fn round_robin_is_fair_and_skips_open_breakers() {
        let mut s = Selector::new(8);
        let mut b = Breakers::new(BreakerConfig::default());
        let echo = ServiceName::new("echo").unwrap();
        let providers = [n(1), n(2), n(3)];
        let pick = |s: &mut Selector, b: &mut Breakers| {
            s.select(Instant::ZERO, &echo, &providers, Strategy::RoundRobin, b)
        };
        let picks: Vec<_> = (0..6).map(|_| pick(&mut s, &mut b).unwrap()).collect();
        assert_eq!(picks, [n(1), n(2), n(3), n(1), n(2), n(3)]);
        open(&mut b, n(2));
        let picks: Vec<_> = (0..4).map(|_| pick(&mut s, &mut b).unwrap()).collect();
        assert_eq!(picks, [n(1), n(3), n(1), n(3)]);
        open(&mut b, n(1));
        open(&mut b, n(3));
        assert_eq!(pick(&mut s, &mut b), None, "no usable provider");
    }

    #[test]
    fn the_rotation_survives_a_changing_provider_list() {
        let mut s = Selector::new(8);
        let mut b = Breakers::new(BreakerConfig::default());
        let echo = ServiceName::new("echo").unwrap();
        let rr = Strategy::RoundRobin;
        assert_eq!(
            s.select(Instant::ZERO, &echo, &[n(1), n(3)], rr, &mut b),
            Some(n(1))
        );
        // n(1) left and n(2) arrived: the next after n(1) is n(2).
        assert_eq!(
            s.select(Instant::ZERO, &echo, &[n(2), n(3)], rr, &mut b),
            Some(n(2))
        );
        assert_eq!(
            s.select(Instant::ZERO, &echo, &[n(2), n(3)], rr, &mut b),
            Some(n(3))
        );
        assert_eq!(s.select(Instant::ZERO, &echo, &[], rr, &mut b), None);
    }

    #[test]
    fn preferred_falls_back_to_round_robin() {
        let mut s = Selector::new(8);
        let mut b = Breakers::new(BreakerConfig::default());
        let echo = ServiceName::new("echo").unwrap();
        let providers = [n(1), n(2), n(3)];
        let prefer = |x| Strategy::Preferred(n(x));
        assert_eq!(
            s.select(Instant::ZERO, &echo, &providers, prefer(3), &mut b),
            Some(n(3))
        );
        assert_eq!(
            s.select(Instant::ZERO, &echo, &providers, prefer(3), &mut b),
            Some(n(3))
        );
        assert_eq!(
            s.select(Instant::ZERO, &echo, &providers, prefer(9), &mut b),
            Some(n(1)),
            "not a provider"
        );
        open(&mut b, n(3));
        assert_eq!(
            s.select(Instant::ZERO, &echo, &providers, prefer(3), &mut b),
            Some(n(2)),
            "breaker open"
        );
        // After the cooldown the preferred node gets its trial.
        let later = Instant::ZERO + Duration::from_secs(10);
        assert_eq!(
            s.select(later, &echo, &providers, prefer(3), &mut b),
            Some(n(3))
        );
        assert_eq!(
            s.select(later, &echo, &providers, prefer(3), &mut b),
            Some(n(1)),
            "one trial only"
        );
    }
}
