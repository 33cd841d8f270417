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
    /// Our static key pair, so its public half is not derived again per handshake.
    known: Option<([u8; 32], [u8; 32])>,
}

impl SeededResolver {
    pub(crate) fn new(rng: &mut Rng) -> Self {
        SeededResolver {
            seed: rng.array(),
            known: None,
        }
    }

    /// Also remember our static key pair (secret, public).
    pub(crate) fn with_static(mut self, secret: &[u8; 32], public: &[u8; 32]) -> Self {
        self.known = Some((*secret, *public));
        self
    }
}

impl Drop for SeededResolver {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
        if let Some((secret, _)) = &mut self.known {
            zeroize::Zeroize::zeroize(secret);
        }
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
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                known: self.known,
                ..X25519::default()
            })),
            _ => None,
        }
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

/// X25519 on x25519-dalek (fixed-base multiplication with precomputed tables) that
/// fails on an all-zero shared secret, i.e. a small-order peer key.
#[derive(Default)]
struct X25519 {
    secret: [u8; 32],
    public: [u8; 32],
    known: Option<([u8; 32], [u8; 32])>,
}

impl Drop for X25519 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
        if let Some((secret, _)) = &mut self.known {
            zeroize::Zeroize::zeroize(secret);
        }
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let n = privkey.len().min(32);
        self.secret = [0; 32];
        self.secret[..n].copy_from_slice(&privkey[..n]);
        self.public = match self.known {
            Some((secret, public)) if bool::from(secret.ct_eq(&self.secret)) => public,
            _ => x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.secret))
                .to_bytes(),
        };
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut secret[..])?;
        self.set(&secret[..]);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.secret
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let peer: [u8; 32] = pubkey
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = zeroize::Zeroizing::new(x25519_dalek::x25519(self.secret, peer));
        if bool::from(shared.ct_eq(&[0u8; 32])) {
            return Err(snow::Error::Dh);
        }
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(&shared[..]);
        Ok(())
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
