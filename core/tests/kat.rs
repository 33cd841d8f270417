//! Known-answer tests for the primitives the hybrid handshake is built on, against
//! values published independently of the crates we use.

use hkdf::Hkdf;
use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::{MlKem768, Seed};
use sha2::Sha256;
use shake::digest::{ExtendableOutput, Update, XofReader};
use shake::Shake128;

type DecapsulationKey = ml_kem::DecapsulationKey<MlKem768>;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

/// The accumulated ML-KEM-768 test of Go's `crypto/internal/fips140/mlkem` (final
/// FIPS 203; the C2SP CCTV scheme): 10 000 key generations from 64-byte seeds,
/// encapsulations and decapsulations (one with the right ciphertext, one with a random
/// one), inputs drawn from one SHAKE-128 stream, outputs (ek, ct, k, k') hashed.
#[test]
fn ml_kem_768_accumulated_10000_matches_go() {
    let mut rng = Shake128::default().finalize_xof();
    let mut acc = Shake128::default();
    let mut first = [0u8; 16];
    Shake128::default().finalize_xof().read(&mut first);
    assert_eq!(
        hex::encode(first),
        "7f9c2ba4e88f827d616045507605853e",
        "the documented stream start"
    );
    for _ in 0..10_000 {
        let mut seed = Seed::default();
        rng.read(&mut seed);
        let mut m = [0u8; 32];
        rng.read(&mut m);
        let mut bad_ct = [0u8; 1088];
        rng.read(&mut bad_ct);
        let dk = DecapsulationKey::from_seed(seed);
        let ek = dk.encapsulation_key();
        acc.update(&ek.to_bytes());
        let (ct, k) = ek.encapsulate_deterministic(&m.into());
        acc.update(&ct);
        acc.update(&k);
        assert_eq!(dk.decapsulate(&ct), k);
        let k_bad = dk.decapsulate_slice(&bad_ct).unwrap();
        acc.update(&k_bad);
    }
    let mut out = [0u8; 32];
    acc.finalize_xof().read(&mut out);
    assert_eq!(
        hex::encode(out),
        "8a518cc63da366322a8e7a818c7a0d63483cb3528d34a4cf42f35d5ad73f22fc"
    );
}

/// The ML-KEM-768 example key of the IETF LAMPS draft (seed 00 01 .. 3f): key
/// generation from a seed, the way the handshake generates its KEM keys.
#[test]
fn ml_kem_768_keygen_from_seed_matches_the_ietf_example() {
    let seed: Seed = core::array::from_fn::<u8, 64, _>(|i| i as u8).into();
    let dk = DecapsulationKey::from_seed(seed);
    let expected = unhex(include_str!("data/mlkem768_example_ek.hex"));
    assert_eq!(dk.encapsulation_key().to_bytes().as_slice(), &expected[..]);
}

/// RFC 5869 appendix A, test cases 1 and 3 (HKDF-SHA256).
#[test]
fn hkdf_sha256_rfc5869() {
    let cases = [
        (
            "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "",
            "",
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ];
    for (ikm, salt, info, prk, okm) in cases {
        let salt = unhex(salt);
        let (got_prk, hk) = Hkdf::<Sha256>::extract(Some(&salt), &unhex(ikm));
        assert_eq!(hex::encode(got_prk), prk);
        let mut got = vec![0u8; 42];
        hk.expand(&unhex(info), &mut got).unwrap();
        assert_eq!(hex::encode(got), okm);
    }
}
