//! The primitives snow runs on: its default pure-Rust (or ring) implementations, the
//! injected RNG instead of the OS one, and a Diffie-Hellman that refuses small-order keys.

use alloc::boxed::Box;

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;

use crate::Rng;

/// Resolves snow's primitives; every handshake gets its own, seeded from the link's RNG.
pub(crate) struct SeededResolver {
    seed: [u8; 32],
}

impl SeededResolver {
    pub(crate) fn new(rng: &mut Rng) -> Self {
        SeededResolver { seed: rng.array() }
    }
}

impl Drop for SeededResolver {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

struct SeededRandom(Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(Rng::from_seed(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver
            .resolve_dh(choice)
            .map(|inner| Box::new(NonZeroDh(inner)) as Box<dyn Dh>)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        #[cfg(feature = "ring")]
        if let Some(h) = snow::resolvers::RingResolver.resolve_hash(choice) {
            return Some(h);
        }
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        #[cfg(feature = "ring")]
        if let Some(c) = snow::resolvers::RingResolver.resolve_cipher(choice) {
            return Some(c);
        }
        DefaultResolver.resolve_cipher(choice)
    }
}

/// X25519 that fails on an all-zero shared secret (the peer sent a small-order point).
struct NonZeroDh(Box<dyn Dh>);

impl Dh for NonZeroDh {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn pub_len(&self) -> usize {
        self.0.pub_len()
    }
    fn priv_len(&self) -> usize {
        self.0.priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        self.0.set(privkey);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.0.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        self.0.pubkey()
    }
    fn privkey(&self) -> &[u8] {
        self.0.privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        self.0.dh(pubkey, out)?;
        let len = self.0.dh_len().min(out.len());
        let zero = [0u8; 32];
        if out[..len].ct_eq(&zero[..len]).into() {
            return Err(snow::Error::Dh);
        }
        Ok(())
    }
    fn dh_len(&self) -> usize {
        self.0.dh_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_points_are_refused() {
        let mut dh = SeededResolver::new(&mut Rng::from_seed([1; 32]))
            .resolve_dh(&DHChoice::Curve25519)
            .unwrap();
        let mut rng = SeededRandom(Rng::from_seed([2; 32]));
        dh.generate(&mut rng).unwrap();
        let mut out = [0u8; 32];
        // The identity point (0) and the order-2 point (1) give an all-zero result.
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(dh.dh(&[0u8; 32], &mut out).is_err());
        assert!(dh.dh(&one, &mut out).is_err());
        let mut nine = [0u8; 32];
        nine[0] = 9;
        assert!(dh.dh(&nine, &mut out).is_ok());
    }

    #[test]
    fn the_rng_is_the_injected_one() {
        let resolver = SeededResolver::new(&mut Rng::from_seed([3; 32]));
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        resolver
            .resolve_rng()
            .unwrap()
            .try_fill_bytes(&mut a)
            .unwrap();
        resolver
            .resolve_rng()
            .unwrap()
            .try_fill_bytes(&mut b)
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 16]);
    }
}
