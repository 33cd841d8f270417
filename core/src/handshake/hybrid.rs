//! The post-quantum half of the hybrid handshake: ML-KEM-768 and the key schedule that
//! mixes its shared secret with the Noise keys.

use alloc::vec::Vec;

use hkdf::Hkdf;
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport, TryKeyInit};
use ml_kem::{MlKem768, Seed};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::Rng;

/// ML-KEM-768 encapsulation key length.
pub const EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
pub const CT_LEN: usize = 1088;

/// HKDF-Expand label for the initiator-to-responder key.
pub const LABEL_I2R: &[u8] = b"weft-mesh/1 hybrid i2r";
/// HKDF-Expand label for the responder-to-initiator key.
pub const LABEL_R2I: &[u8] = b"weft-mesh/1 hybrid r2i";

type DecapsulationKey = ml_kem::DecapsulationKey<MlKem768>;
type EncapsulationKey = ml_kem::EncapsulationKey<MlKem768>;

/// The initiator's ephemeral ML-KEM key pair (zeroized on drop by ml-kem).
pub(crate) struct KemKeypair {
    dk: DecapsulationKey,
}

impl KemKeypair {
    /// A key pair from 64 bytes of the link's RNG (the FIPS 203 seed `d || z`).
    pub(crate) fn generate(rng: &mut Rng) -> Self {
        let mut seed = Seed::default();
        rng.fill(&mut seed);
        let dk = DecapsulationKey::from_seed(seed);
        seed.zeroize();
        KemKeypair { dk }
    }

    /// The encapsulation key to send.
    pub(crate) fn encapsulation_key(&self) -> Vec<u8> {
        self.dk.encapsulation_key().to_bytes().to_vec()
    }

    /// The shared secret in `ct`; `None` if `ct` has the wrong length.
    pub(crate) fn decapsulate(&self, ct: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        if ct.len() != CT_LEN {
            return None;
        }
        let ss = self.dk.decapsulate_slice(ct).ok()?;
        Some(Zeroizing::new(ss.into()))
    }
}

/// Encapsulate to the peer's key: `(ciphertext, shared secret)`, or `None` if the key
/// is malformed (wrong length or coefficients out of range).
pub(crate) fn encapsulate(ek: &[u8], rng: &mut Rng) -> Option<(Vec<u8>, Zeroizing<[u8; 32]>)> {
    let ek = EncapsulationKey::new_from_slice(ek).ok()?;
    let (ct, ss) = ek.encapsulate_with_rng(rng.as_crypto_rng());
    Some((ct.to_vec(), Zeroizing::new(ss.into())))
}

/// The two directional keys of a hybrid session.
///
/// `PRK = HKDF-Extract(salt = k1 || k2, IKM = ss)`, then
/// `k_i2r = HKDF-Expand(PRK, "weft-mesh/1 hybrid i2r" || h, 32)` and likewise `r2i`.
pub(crate) fn hybrid_keys(
    k1: &[u8; 32],
    k2: &[u8; 32],
    ss: &[u8; 32],
    h: &[u8; 32],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut salt = Zeroizing::new([0u8; 64]);
    salt[..32].copy_from_slice(k1);
    salt[32..].copy_from_slice(k2);
    let prk = Hkdf::<Sha256>::new(Some(&salt[..]), ss);
    let expand = |label: &[u8]| {
        let mut key = Zeroizing::new([0u8; 32]);
        prk.expand_multi_info(&[label, h], &mut key[..])
            .expect("32 bytes is a valid HKDF-SHA256 length");
        key
    };
    (expand(LABEL_I2R), expand(LABEL_R2I))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encapsulation_round_trips_and_rejects_bad_keys() {
        let mut rng = Rng::from_seed([1; 32]);
        let kp = KemKeypair::generate(&mut rng);
        let ek = kp.encapsulation_key();
        assert_eq!(ek.len(), EK_LEN);
        let (ct, ss) = encapsulate(&ek, &mut rng).unwrap();
        assert_eq!(ct.len(), CT_LEN);
        assert_eq!(kp.decapsulate(&ct).unwrap(), ss);
        assert!(kp.decapsulate(&ct[1..]).is_none());
        assert!(encapsulate(&ek[1..], &mut rng).is_none());
        // Coefficients >= q are rejected (FIPS 203 modulus check).
        let mut bad = ek.clone();
        bad[0] = 0xff;
        bad[1] = 0xff;
        assert!(encapsulate(&bad, &mut rng).is_none());
    }

    #[test]
    fn hybrid_keys_depend_on_every_input() {
        let base = hybrid_keys(&[1; 32], &[2; 32], &[3; 32], &[4; 32]);
        assert_ne!(base.0, base.1);
        for changed in [
            hybrid_keys(&[9; 32], &[2; 32], &[3; 32], &[4; 32]),
            hybrid_keys(&[1; 32], &[9; 32], &[3; 32], &[4; 32]),
            hybrid_keys(&[1; 32], &[2; 32], &[9; 32], &[4; 32]),
            hybrid_keys(&[1; 32], &[2; 32], &[3; 32], &[9; 32]),
        ] {
            assert_ne!(changed.0, base.0);
            assert_ne!(changed.1, base.1);
        }
    }
}
