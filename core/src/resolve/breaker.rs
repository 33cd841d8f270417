//! [`Breakers`]: a circuit breaker per provider node.

use alloc::collections::BTreeMap;
use core::time::Duration;

use crate::{Instant, NodeId};

/// Settings of the circuit breakers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BreakerConfig {
    /// Consecutive failures that open a node's breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before allowing one trial.
    pub cooldown: Duration,
    /// Most nodes tracked; beyond, the least severe state is forgotten.
    pub max_nodes: usize,
}

impl Default for BreakerConfig {
    /// Three failures, ten seconds, 1024 nodes.
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
            max_nodes: 1024,
        }
    }
}

/// A breaker's state as seen at some instant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// The cooldown ended: one trial call may go; its outcome closes or reopens it.
    HalfOpen,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Counting consecutive failures (at least one; zero is not stored).
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cooldown over; a trial was handed out and holds the slot until `trial_until`
    /// (after which another trial may go, in case its outcome was never reported).
    HalfOpen {
        trial_until: Option<Instant>,
    },
}

/// Circuit breakers of provider nodes: closed → open after `failure_threshold`
/// consecutive failures, open for `cooldown`, then half-open allowing one trial; a
/// success closes, a failure reopens. Only nodes with a failure on record take memory.
#[derive(Clone, Debug)]
pub struct Breakers {
    config: BreakerConfig,
    nodes: BTreeMap<NodeId, State>,
}

impl Breakers {
    /// All breakers closed.
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            nodes: BTreeMap::new(),
        }
    }

    /// `node`'s breaker at `now`.
    pub fn state(&self, now: Instant, node: &NodeId) -> BreakerState {
        match self.nodes.get(node) {
            None | Some(State::Closed { .. }) => BreakerState::Closed,
            Some(State::Open { until }) if now < *until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call to `node` may go now (closed, or half-open with the trial free).
    pub fn is_usable(&self, now: Instant, node: &NodeId) -> bool {
        match self.nodes.get(node) {
            None | Some(State::Closed { .. }) => true,
            Some(State::Open { until }) => now >= *until,
            Some(State::HalfOpen { trial_until }) => trial_until.is_none_or(|t| now >= t),
        }
    }

    /// Like [`Breakers::is_usable`], and take the half-open trial if that is what lets
    /// the call go.
    pub fn try_acquire(&mut self, now: Instant, node: &NodeId) -> bool {
        if !self.is_usable(now, node) {
            return false;
        }
        if let Some(state) = self.nodes.get_mut(node) {
            if matches!(state, State::Open { .. } | State::HalfOpen { .. }) {
                *state = State::HalfOpen {
                    trial_until: Some(now + self.config.cooldown),
                };
            }
        }
        true
    }

    /// A call to `node` succeeded: its breaker closes.
    pub fn record_success(&mut self, node: &NodeId) {
        self.nodes.remove(node);
    }

    /// A call to `node` failed: one more consecutive failure (opening the breaker at the
    /// threshold), or back to open after a failed trial. Failures while open change nothing.
    pub fn record_failure(&mut self, now: Instant, node: &NodeId) {
        let open = State::Open {
            until: now + self.config.cooldown,
        };
        let next = match self.nodes.get(node) {
            None => self.closed_or_open(1, open),
            Some(State::Closed { failures }) => {
                self.closed_or_open(failures.saturating_add(1), open)
            }
            Some(State::Open { .. }) => return,
            Some(State::HalfOpen { .. }) => open,
        };
        if !self.nodes.contains_key(node) {
            if self.config.max_nodes == 0 {
                return;
            }
            if self.nodes.len() >= self.config.max_nodes {
                self.forget_least_severe();
            }
        }
        self.nodes.insert(*node, next);
    }

    fn closed_or_open(&self, failures: u32, open: State) -> State {
        if failures >= self.config.failure_threshold {
            open
        } else {
            State::Closed { failures }
        }
    }

    /// Make room: forget a closed breaker with the fewest failures, else the breaker
    /// whose cooldown ends first.
    fn forget_least_severe(&mut self) {
        let rank = |s: &State| match s {
            State::Closed { failures } => (0, *failures, Instant::ZERO),
            State::HalfOpen { .. } => (1, 0, Instant::ZERO),
            State::Open { until } => (2, 0, *until),
        };
        let victim = self
            .nodes
            .iter()
            .min_by_key(|(_, s)| rank(s))
            .map(|(n, _)| *n);
        if let Some(victim) = victim {
            self.nodes.remove(&victim);
        }
    }

    /// Nodes with a failure on record.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether every breaker is closed with no failure on record.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    fn at(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn closed_open_half_open_and_back() {
        let mut b = Breakers::new(BreakerConfig::default());
        let x = n(1);
        b.record_failure(at(0), &x);
        b.record_failure(at(0), &x);
        assert_eq!(b.state(at(0), &x), BreakerState::Closed);
        b.record_success(&x);
        b.record_failure(at(0), &x);
        b.record_failure(at(0), &x);
        assert_eq!(
            b.state(at(0), &x),
            BreakerState::Closed,
            "a success reset the count"
        );
        b.record_failure(at(1), &x);
        assert_eq!(b.state(at(1), &x), BreakerState::Open);
        assert!(!b.try_acquire(at(10), &x));
        assert_eq!(b.state(at(11), &x), BreakerState::HalfOpen);
        assert!(b.try_acquire(at(11), &x), "one trial");
        assert!(!b.try_acquire(at(11), &x), "only one");
        b.record_failure(at(12), &x);
        assert_eq!(
            b.state(at(21), &x),
            BreakerState::Open,
            "a failed trial reopens"
        );
        assert!(b.try_acquire(at(22), &x));
        b.record_success(&x);
        assert_eq!(b.state(at(22), &x), BreakerState::Closed);
        assert!(b.is_empty());
    }

    #[test]
    fn a_lost_trial_frees_the_slot_after_a_cooldown() {
        let mut b = Breakers::new(BreakerConfig::default());
        let x = n(1);
        for _ in 0..3 {
            b.record_failure(at(0), &x);
        }
        assert!(b.try_acquire(at(10), &x));
        assert!(!b.try_acquire(at(19), &x));
        assert!(b.try_acquire(at(20), &x));
    }

    #[test]
    fn failures_while_open_do_not_extend_the_cooldown() {
        let mut b = Breakers::new(BreakerConfig::default());
        for _ in 0..3 {
            b.record_failure(at(0), &n(1));
        }
        b.record_failure(at(5), &n(1));
        assert_eq!(b.state(at(10), &n(1)), BreakerState::HalfOpen);
    }

    #[test]
    fn the_map_is_bounded_and_forgets_the_least_severe() {
        let mut b = Breakers::new(BreakerConfig {
            max_nodes: 2,
            ..BreakerConfig::default()
        });
        for _ in 0..3 {
            b.record_failure(at(0), &n(1));
        }
        b.record_failure(at(0), &n(2));
        b.record_failure(at(0), &n(3));
        assert_eq!(b.len(), 2);
        assert_eq!(
            b.state(at(0), &n(1)),
            BreakerState::Open,
            "the open breaker is kept"
        );
        b.record_failure(at(0), &n(3));
        b.record_failure(at(0), &n(3));
        assert_eq!(b.state(at(0), &n(3)), BreakerState::Open);
    }
}
