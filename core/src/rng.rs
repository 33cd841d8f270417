//! The injected, seeded CSPRNG every random choice in the core is drawn from.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};

/// A ChaCha20 CSPRNG seeded by the driver.
///
/// The same seed and the same inputs make the core produce the same bytes, which
/// is what golden transcripts and the deterministic simulator rely on. Drivers
/// seed it once from the operating system; the core never does.
pub struct Rng(ChaCha20Rng);

impl Rng {
    /// A generator that yields the stream determined by `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Rng(ChaCha20Rng::from_seed(seed))
    }

    /// An independent child generator seeded from this one (one per link, say).
    pub fn fork(&mut self) -> Rng {
        Rng::from_seed(self.array())
    }

    /// Fill `dest` with random bytes.
    pub fn fill(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    /// `N` random bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// The generator as a `rand_core` CSPRNG, for crates that take one (ml-kem).
    pub(crate) fn as_crypto_rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.0
    }
}

impl core::fmt::Debug for Rng {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Rng(..)")
    }
}
