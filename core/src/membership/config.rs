//! SWIM tuning: memberlist's LAN and WAN presets, plus the bounds that keep every
//! table and queue finite.

use core::time::Duration;

use super::suspicion::log10_q16;

/// Smallest `max_packet` honoured: room for any message and one full Alive update.
pub const MIN_PACKET: usize = 1200;
/// Largest `max_packet` honoured (a push-pull chunk then holds at most
/// [`MAX_STATE_ENTRIES`](super::MAX_STATE_ENTRIES) entries of the smallest size).
pub const MAX_PACKET: usize = 65_535;
/// Most full-state exchanges (push-pull sends and replies) queued at once; more are dropped.
pub const MAX_PUSH_PULLS: usize = 8;

/// Settings of [`Swim`](super::Swim). Durations marked "scaled" are multiplied by
/// `local_health + 1` (Lifeguard).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SwimConfig {
    /// Time between probe rounds (scaled). A round lasts
    /// `max(probe_interval, 2 × probe_timeout)` so that helpers' nacks can arrive.
    pub probe_interval: Duration,
    /// How long a direct ping waits for its ack before indirect probes (scaled).
    /// A helper nacks after 80 % of its own (unscaled) probe timeout.
    pub probe_timeout: Duration,
    /// k: members asked to probe a target that did not answer directly.
    pub indirect_checks: usize,
    /// α: minimum suspicion timeout = `max(suspicion_min_timeout, suspicion_mult ×
    /// max(1, log10 N) × probe_interval)`, reached with `suspicion_confirmations`
    /// independent confirmations. The timeout a
    /// node applies is scaled by its current health (beyond Lifeguard, which scales
    /// only probing: a node slow to handle packets hears refutations late).
    pub suspicion_mult: u32,
    /// β: maximum suspicion timeout = this × the minimum (with no confirmation).
    pub suspicion_max_timeout_mult: u32,
    /// The floor of the minimum suspicion timeout, whatever N (not in memberlist): the
    /// time a suspected member always has to refute, through a stall or a pause, so
    /// that α can be small for large clusters without making small ones hasty.
    pub suspicion_min_timeout: Duration,
    /// K: independent confirmations (suspicions of the same member from other
    /// members) that bring the timeout down from its maximum to its minimum; 0 when
    /// the cluster has fewer than `K + 2` live members. (memberlist ties it to
    /// `suspicion_mult - 2`; Lifeguard keeps it separate.)
    pub suspicion_confirmations: u32,
    /// Local health ranges over `0..awareness_max_multiplier` (at least 1).
    pub awareness_max_multiplier: u32,
    /// λ: each update is piggybacked at most `λ × ceil(log10(N + 1))` times.
    pub retransmit_mult: u32,
    /// Time between gossip rounds: while updates are queued, each round sends them in
    /// a dedicated gossip packet to `gossip_nodes` members (not scaled by health).
    /// With nothing queued no round runs, so an idle cluster sends no gossip.
    pub gossip_interval: Duration,
    /// Members sent a gossip packet per round (one of them a neighbour, see
    /// [`Swim::set_neighbours`](super::Swim::set_neighbours)); 0 turns dedicated
    /// gossip off (updates then ride only on pings, acks and push-pulls).
    pub gossip_nodes: usize,
    /// Full state is exchanged with one random alive member this often.
    pub push_pull_interval: Duration,
    /// How long a dead or left member is remembered (stale Alive updates about it
    /// are refused meanwhile); checked once per probe round.
    pub dead_ttl: Duration,
    /// Most members in the table, this node included; unknown members beyond it are refused.
    pub max_members: usize,
    /// Most bytes per packet, piggybacked updates included (clamped to
    /// [`MIN_PACKET`]..=[`MAX_PACKET`]).
    pub max_packet: usize,
    /// Most indirect probes run for other members at once; more ping-reqs are ignored.
    pub max_relays: usize,
    /// Most small packets (ping, ack, ping-req, nack) waiting for `poll_transmit`;
    /// more are dropped (and counted).
    pub max_queued: usize,
}

impl SwimConfig {
    /// memberlist's `DefaultLANConfig` timing, except the suspicion: α = 1 (memberlist:
    /// 4) with a 4 s floor, β = 9 (memberlist: 6) and K = 3 confirmations (memberlist:
    /// α - 2 = 2). Up to N = 10^4 the minimum is the floor, 4 s (memberlist: 4 s at
    /// N <= 10, 12 s at N = 1000), so a crash in 1000 members is known everywhere
    /// within about 6 s, and an unconfirmed suspicion (one member's view through a
    /// stalled link) waits 36 s for a refutation.
    pub fn lan() -> Self {
        SwimConfig {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 1,
            suspicion_max_timeout_mult: 9,
            suspicion_min_timeout: Duration::from_secs(4),
            suspicion_confirmations: 3,
            awareness_max_multiplier: 8,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            push_pull_interval: Duration::from_secs(30),
            dead_ttl: Duration::from_secs(60),
            max_members: 16_384,
            max_packet: 1400,
            max_relays: 64,
            max_queued: 1024,
        }
    }

    /// memberlist's `DefaultWANConfig` timing: α = 6, β = 6 and K = 4 (memberlist's
    /// α - 2); no floor beyond α. N <= 10: 30 s to 180 s; N = 1000: 90 s to 540 s.
    pub fn wan() -> Self {
        SwimConfig {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            suspicion_max_timeout_mult: 6,
            suspicion_min_timeout: Duration::ZERO,
            suspicion_confirmations: 4,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            push_pull_interval: Duration::from_secs(60),
            dead_ttl: Duration::from_secs(300),
            ..SwimConfig::lan()
        }
    }

    /// The same settings with out-of-range bounds brought into range.
    pub(crate) fn sanitized(mut self) -> Self {
        self.max_packet = self.max_packet.clamp(MIN_PACKET, MAX_PACKET);
        self.max_members = self.max_members.max(1);
        self.awareness_max_multiplier = self.awareness_max_multiplier.max(1);
        self
    }

    /// `d × (health + 1)`, saturating.
    pub(crate) fn scaled(d: Duration, health: u32) -> Duration {
        d.saturating_mul(health.saturating_add(1))
    }

    /// How long a probe round lasts at this health.
    pub(crate) fn round(&self, health: u32) -> Duration {
        let base = self
            .probe_interval
            .max(self.probe_timeout.saturating_mul(2));
        Self::scaled(base, health)
    }

    /// When a helper that has not heard the target's ack sends its nack.
    pub(crate) fn nack_after(&self) -> Duration {
        self.probe_timeout.saturating_mul(4) / 5
    }

    /// How many times each update is piggybacked in a cluster of `n` live members.
    pub(crate) fn retransmit_limit(&self, n: usize) -> u32 {
        self.retransmit_mult
            .saturating_mul(ceil_log10(n.saturating_add(1)))
    }

    /// The suspicion timeout bounds `(min, max)` for a cluster of `n` live members.
    pub(crate) fn suspicion_bounds(&self, n: usize) -> (Duration, Duration) {
        let scale = log10_q16(n as u64).max(1 << 16);
        let micros = self
            .probe_interval
            .as_micros()
            .saturating_mul(u128::from(self.suspicion_mult))
            .saturating_mul(u128::from(scale))
            >> 16;
        let min = Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
            .max(self.suspicion_min_timeout);
        (min, min.saturating_mul(self.suspicion_max_timeout_mult))
    }

    /// K: confirmations expected before the suspicion timeout reaches its minimum
    /// (0 when the cluster is too small to supply them).
    pub(crate) fn expected_confirmations(&self, n: usize) -> u32 {
        let k = self.suspicion_confirmations;
        if (n.saturating_sub(2) as u64) < u64::from(k) {
            0
        } else {
            k
        }
    }
}

impl Default for SwimConfig {
    /// [`SwimConfig::lan`].
    fn default() -> Self {
        SwimConfig::lan()
    }
}

/// The smallest `d` with `10^d >= m`.
pub(crate) fn ceil_log10(m: usize) -> u32 {
    let mut d = 0;
    let mut p: u128 = 1;
    while p < m as u128 {
        p *= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit_limit_follows_lambda_log_n() {
        let c = SwimConfig::lan();
        assert_eq!(ceil_log10(1), 0);
        assert_eq!(ceil_log10(2), 1);
        assert_eq!(ceil_log10(10), 1);
        assert_eq!(ceil_log10(11), 2);
        assert_eq!(c.retransmit_limit(1), 4);
        assert_eq!(c.retransmit_limit(9), 4);
        assert_eq!(c.retransmit_limit(10), 8);
        assert_eq!(c.retransmit_limit(1000), 16);
    }

    #[test]
    fn suspicion_bounds_scale_with_log10_n_but_never_below_the_floor() {
        let c = SwimConfig::lan();
        let four = Duration::from_secs(4);
        assert_eq!(c.suspicion_bounds(3), (four, four * 9));
        assert_eq!(c.suspicion_bounds(100), (four, four * 9));
        assert_eq!(c.suspicion_bounds(1000), (four, four * 9));
        // α alone beyond 10^4 members.
        let (min, max) = c.suspicion_bounds(16_384);
        assert!(min.abs_diff(Duration::from_millis(4214)) < Duration::from_millis(5));
        assert_eq!(max, min * 9);
        // Without a floor: α × max(1, log10 N).
        let bare = SwimConfig {
            suspicion_min_timeout: Duration::ZERO,
            ..c
        };
        assert_eq!(bare.suspicion_bounds(3).0, Duration::from_secs(1));
        let (min, _) = bare.suspicion_bounds(1000);
        assert!(min.abs_diff(Duration::from_secs(3)) < Duration::from_millis(5));
        // WAN keeps memberlist's α = 6 and β = 6.
        let wan = SwimConfig::wan();
        assert_eq!(
            wan.suspicion_bounds(10),
            (Duration::from_secs(30), Duration::from_secs(180))
        );
        let (min, max) = wan.suspicion_bounds(1000);
        assert!(min.abs_diff(Duration::from_secs(90)) < Duration::from_millis(50));
        assert_eq!(max, min * 6);
        // K is its own setting (Lifeguard), no longer suspicion_mult - 2.
        assert_eq!(c.expected_confirmations(4), 0);
        assert_eq!(c.expected_confirmations(5), 3);
        assert_eq!(SwimConfig::wan().expected_confirmations(6), 4);
    }

    #[test]
    fn rounds_leave_room_for_nacks_and_scale_with_health() {
        assert_eq!(SwimConfig::lan().round(0), Duration::from_secs(1));
        assert_eq!(SwimConfig::lan().round(2), Duration::from_secs(3));
        assert_eq!(SwimConfig::wan().round(0), Duration::from_secs(6));
        assert_eq!(SwimConfig::lan().nack_after(), Duration::from_millis(400));
    }
}
