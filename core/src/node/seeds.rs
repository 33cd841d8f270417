//! Seed addresses the node keeps a connection to, redialing with jittered
//! exponential backoff.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::ConnId;
use crate::{Instant, NodeId, Rng};

pub(crate) enum SeedState {
    /// Dial at (or after) this instant.
    Idle { next: Instant },
    /// A connection to the seed exists.
    Connected(ConnId),
}

pub(crate) struct Seed {
    pub addr: String,
    pub state: SeedState,
    /// The node found at this address last time; while it is connected some other
    /// way (it dialed us), the seed is not dialed.
    pub node: Option<NodeId>,
    backoff: Duration,
}

/// Redial policy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Default)]
pub(crate) struct Seeds {
    list: Vec<Seed>,
}

impl Seeds {
    pub(crate) fn add(&mut self, addr: String, now: Instant, policy: Backoff) -> usize {
        if let Some(i) = self.list.iter().position(|s| s.addr == addr) {
            return i;
        }
        self.list.push(Seed {
            addr,
            state: SeedState::Idle { next: now },
            node: None,
            backoff: policy.min,
        });
        self.list.len() - 1
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Seed> {
        self.list.get_mut(i)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Seed)> {
        self.list.iter_mut().enumerate()
    }

    /// Whether some seed is known to lead to `node` (it will be redialed).
    pub(crate) fn leads_to(&self, node: &NodeId) -> bool {
        self.list.iter().any(|s| s.node.as_ref() == Some(node))
    }

    /// The earliest instant a seed wants dialing.
    pub(crate) fn next_deadline(&self, connected: impl Fn(&NodeId) -> bool) -> Option<Instant> {
        self.list
            .iter()
            .filter(|s| !s.node.as_ref().is_some_and(&connected))
            .filter_map(|s| match s.state {
                SeedState::Idle { next } => Some(next),
                SeedState::Connected(_) => None,
            })
            .min()
    }
}

impl Seed {
    /// The connection to the seed went away: dial again after the (jittered) backoff,
    /// which doubles up to the maximum unless the connection had come up.
    pub(crate) fn disconnected(
        &mut self,
        now: Instant,
        was_up: bool,
        policy: Backoff,
        rng: &mut Rng,
    ) {
        if was_up {
            self.backoff = policy.min;
        }
        let base = self.backoff.as_micros() as u64;
        let jitter = if base > 1 {
            rng.next_u64() % (base / 2)
        } else {
            0
        };
        let delay = Duration::from_micros(base / 2 + jitter);
        self.state = SeedState::Idle { next: now + delay };
        self.backoff = (self.backoff * 2).min(policy.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets_after_success() {
        let policy = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut seeds = Seeds::default();
        let i = seeds.add("tcp://x".into(), Instant::ZERO, policy);
        assert_eq!(
            seeds.add("tcp://x".into(), Instant::ZERO, policy),
            i,
            "deduplicated"
        );
        let mut rng = Rng::from_seed([1; 32]);
        let seed = seeds.get_mut(i).unwrap();
        let mut delays = Vec::new();
        for _ in 0..6 {
            seed.disconnected(Instant::ZERO, false, policy, &mut rng);
            let SeedState::Idle { next } = seed.state else {
                panic!()
            };
            delays.push(next.as_micros());
        }
        // Each delay lies in [backoff/2, backoff): 100, 200, 400, 800, 1000, 1000 ms.
        for (d, b) in delays
            .iter()
            .zip([100_000u64, 200_000, 400_000, 800_000, 1_000_000, 1_000_000])
        {
            assert!(*d >= b / 2 && *d < b, "{d} vs {b}");
        }
        seed.disconnected(Instant::ZERO, true, policy, &mut rng);
        let SeedState::Idle { next } = seed.state else {
            panic!()
        };
        assert!(next.as_micros() < 100_000);
    }
}
