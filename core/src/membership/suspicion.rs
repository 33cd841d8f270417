//! Lifeguard's dynamic suspicion timer: it starts at the maximum and shrinks
//! logarithmically with each independent confirmation, never below the minimum.
//!
//! The core has no floating point maths (`no_std`), so logarithms are computed in
//! 16.16 fixed point.

use alloc::vec::Vec;
use core::time::Duration;

use crate::{Instant, NodeId};

/// The timer of one suspected member.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    start: Instant,
    min: Duration,
    max: Duration,
    /// K: confirmations that bring the timeout down to `min`.
    k: u32,
    /// The accuser first, then each distinct confirmer (at most `k + 1`).
    accusers: Vec<NodeId>,
}

impl Suspicion {
    /// A suspicion raised by `accuser` at `start`.
    pub(crate) fn new(
        start: Instant,
        accuser: NodeId,
        min: Duration,
        max: Duration,
        k: u32,
    ) -> Self {
        Suspicion {
            start,
            min,
            max: max.max(min),
            k,
            accusers: alloc::vec![accuser],
        }
    }

    /// Count `from` as an independent confirmation; `false` if it is not new or
    /// enough confirmations were already counted.
    pub(crate) fn confirm(&mut self, from: NodeId) -> bool {
        if self.confirmations() >= self.k || self.accusers.contains(&from) {
            return false;
        }
        self.accusers.push(from);
        true
    }

    /// C: independent confirmations so far (the first accuser does not count).
    pub(crate) fn confirmations(&self) -> u32 {
        self.accusers.len().saturating_sub(1) as u32
    }

    /// `max - (max - min) × log(C + 1) / log(K + 1)`, never below `min`.
    pub(crate) fn timeout(&self) -> Duration {
        let c = self.confirmations();
        if self.k == 0 || c >= self.k {
            return self.min;
        }
        let span = (self.max - self.min).as_micros();
        let cut = span * u128::from(log2_q16(u64::from(c) + 1))
            / u128::from(log2_q16(u64::from(self.k) + 1));
        let micros = self.max.as_micros().saturating_sub(cut);
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)).max(self.min)
    }

    /// When the member is declared dead unless refuted first, at local health
    /// `health`: a node that is itself slow (and hears refutations late) waits
    /// `health + 1` times as long, like its probes.
    pub(crate) fn deadline(&self, health: u32) -> Instant {
        self.start + super::SwimConfig::scaled(self.timeout(), health)
    }
}

/// `log2(x)` in 16.16 fixed point (0 for `x <= 1`).
pub(crate) fn log2_q16(x: u64) -> u64 {
    if x <= 1 {
        return 0;
    }
    let int = 63 - u64::from(x.leading_zeros());
    // The mantissa x / 2^int in [1, 2) as Q.32; each squaring yields one fraction bit.
    let mut y: u128 = (u128::from(x) << 32) >> int;
    let mut frac = 0u64;
    for bit in (0..16).rev() {
        y = (y * y) >> 32;
        if y >= 2 << 32 {
            frac |= 1 << bit;
            y >>= 1;
        }
    }
    (int << 16) | frac
}

/// `log10(x)` in 16.16 fixed point (0 for `x <= 1`).
pub(crate) fn log10_q16(x: u64) -> u64 {
    const LOG2_10_Q16: u64 = 217_706; // log2(10) × 65536, rounded
    log2_q16(x) * (1 << 16) / LOG2_10_Q16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    const MIN: Duration = Duration::from_secs(4);
    const MAX: Duration = Duration::from_secs(24);

    #[test]
    fn fixed_point_logarithms_are_close() {
        assert_eq!(log2_q16(1), 0);
        assert_eq!(log2_q16(2), 1 << 16);
        assert_eq!(log2_q16(1024), 10 << 16);
        assert!(log2_q16(3).abs_diff(103_872) <= 2, "{}", log2_q16(3)); // 1.58496 × 65536
        assert!(log10_q16(10).abs_diff(1 << 16) <= 1);
        assert!(log10_q16(1000).abs_diff(3 << 16) <= 2);
        assert!(log2_q16(u64::MAX) > 63 << 16);
    }

    #[test]
    fn without_confirmations_the_timeout_is_the_maximum() {
        let s = Suspicion::new(Instant::ZERO, n(1), MIN, MAX, 2);
        assert_eq!(s.timeout(), MAX);
        assert_eq!(s.deadline(0), Instant::ZERO + MAX);
        assert_eq!(
            s.deadline(2),
            Instant::ZERO + 3 * MAX,
            "a slow node waits longer"
        );
    }

    #[test]
    fn confirmations_shrink_the_timeout_down_to_the_minimum_and_no_further() {
        let mut s = Suspicion::new(Instant::ZERO, n(1), MIN, MAX, 2);
        assert!(!s.confirm(n(1)), "the accuser does not confirm itself");
        assert!(s.confirm(n(2)));
        assert!(!s.confirm(n(2)), "a confirmer counts once");
        // 24 - 20 × log 2 / log 3 = 11.38 s
        let one = s.timeout();
        assert!(
            one.abs_diff(Duration::from_millis(11_381)) < Duration::from_millis(2),
            "{one:?}"
        );
        assert!(s.confirm(n(3)));
        assert_eq!(s.timeout(), MIN);
        assert!(!s.confirm(n(4)), "K confirmations are enough");
        assert_eq!(s.timeout(), MIN);
    }

    #[test]
    fn with_k_zero_the_timeout_is_the_minimum() {
        let s = Suspicion::new(Instant::ZERO, n(1), MIN, MAX, 0);
        assert_eq!(s.timeout(), MIN);
    }

    proptest! {
        #[test]
        fn the_timeout_never_grows_with_confirmations_and_stays_in_bounds(
            min_ms in 0u64..100_000, mult in 1u32..10, k in 0u32..10, confirmers in 0u8..20,
        ) {
            let min = Duration::from_millis(min_ms);
            let max = min * mult;
            let mut s = Suspicion::new(Instant::ZERO, n(0), min, max, k);
            let mut last = s.timeout();
            prop_assert!(last <= max && last >= min);
            for c in 1..=confirmers {
                s.confirm(n(c));
                let t = s.timeout();
                prop_assert!(t <= last && t >= min);
                last = t;
            }
        }
    }
}
