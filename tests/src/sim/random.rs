//! Deterministic draws from `weft_mesh::Rng`: every random choice of the simulator
//! comes from one seed, forked once per purpose.

use std::time::Duration;

use weft_mesh::Rng;

/// The root generator of a run: the seed's little-endian bytes, padded with a label.
pub fn root(seed: u64) -> Rng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..24].copy_from_slice(b"weft-mesh sim v1");
    Rng::from_seed(bytes)
}

/// A uniform draw from `0..n` (`0` when `n == 0`).
pub fn below(rng: &mut Rng, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.next_u64() % n
    }
}

/// A uniform draw from `lo..=hi`.
pub fn between(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + below(rng, hi.saturating_sub(lo).saturating_add(1))
}

/// `true` with probability `p` (clamped to `0..=1`).
pub fn chance(rng: &mut Rng, p: f64) -> bool {
    let x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    x < p
}

/// A uniform duration in `0..=max`, at microsecond resolution.
pub fn up_to(rng: &mut Rng, max: Duration) -> Duration {
    Duration::from_micros(between(rng, 0, max.as_micros() as u64))
}
