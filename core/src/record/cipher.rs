//! Noise `CipherState` for records, sealing and opening in place (no copy of the record).
//!
//! ChaCha20-Poly1305 with the Noise nonce (4 zero bytes, then the 64-bit counter
//! little-endian), empty associated data, and Noise's `REKEY`. The pure-Rust
//! `chacha20poly1305` crate by default; ring's with the `ring` feature.
//!
//! # The `fuzzing` feature: a null cipher for fuzz harnesses
//!
//! **Warning: never enable `fuzzing` in a build that talks to real peers, and never
//! switch the null cipher on outside a fuzz harness. It removes all confidentiality and
//! integrity from the record layer.**
//!
//! A fuzzer that mutates bytes on an established link only ever reaches the AEAD's
//! tag check: every mutated record fails with `DecryptFailed` and the frame decoder,
//! reassembly and everything above never see fuzz bytes. With the feature compiled in,
//! `RecordConfig::set_fuzzing_null_cipher(true)` (which exists only with the feature)
//! switches every record cipher created afterwards (process-wide) to a null cipher:
//!
//! * seal: the plaintext stays as it is and the fixed tag `NULL_TAG` (16 zero bytes)
//!   follows it;
//! * open: a record shorter than a tag, or whose last 16 bytes are not `NULL_TAG`,
//!   fails exactly like a forged record (`OpenError`, so the link closes with
//!   `DecryptFailed`); otherwise the plaintext is what precedes the tag.
//!
//! Everything else is unchanged: the Noise handshake stays real (snow, ML-KEM), the
//! record counter still advances and runs out, rekeys still happen. The null cipher
//! wins over the `ring` feature.
//!
//! The feature alone changes nothing: it only compiles the switch in, and the switch
//! starts off. This matters twice. Cargo unifies features: `cargo test --workspace`
//! builds the core with `fuzzing` for every crate of the build (the fuzz crate enables
//! it), the drivers and the simulator included, and they must keep their real cipher.
//! And the older harnesses of the fuzz crate (`link_pair`, `link_initiator`,
//! `link_responder`) assert what a real AEAD guarantees (a corrupted record never turns
//! into a frame); only the whole-`Node` script fuzzer (`fuzz/tests/node.rs`) flips the
//! switch, in its own test process.

use zeroize::Zeroizing;

/// Length of the Poly1305 tag that follows every record.
pub const TAG_LEN: usize = 16;

/// The tag the `fuzzing` feature's null cipher writes and expects.
#[cfg(feature = "fuzzing")]
const NULL_TAG: [u8; TAG_LEN] = [0; TAG_LEN];

/// Whether record ciphers created from now on are null ciphers (`fuzzing` only).
#[cfg(feature = "fuzzing")]
static NULL_CIPHER: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "fuzzing")]
impl super::RecordConfig {
    /// **Fuzzing only; never call this outside a fuzz harness.** Available with the
    /// `fuzzing` feature (off by default, which no crate but the fuzz harnesses may
    /// enable).
    ///
    /// With `enabled`, every record cipher created afterwards in this process (every
    /// link that completes a handshake from now on) is a null cipher: records are sent
    /// in plaintext followed by 16 zero bytes instead of a Poly1305 tag, and a record
    /// is accepted if it ends in those 16 zero bytes, so that a fuzzer's mutations of
    /// an established link's bytes reach the frame decoder, reassembly and the node
    /// instead of failing authentication. The Noise handshake stays real. Links
    /// created before the call keep their cipher. Off until switched on.
    pub fn set_fuzzing_null_cipher(enabled: bool) {
        NULL_CIPHER.store(enabled, core::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`RecordConfig::set_fuzzing_null_cipher`](Self::set_fuzzing_null_cipher)
    /// switched the null cipher on (`fuzzing` feature only).
    pub fn fuzzing_null_cipher() -> bool {
        NULL_CIPHER.load(core::sync::atomic::Ordering::SeqCst)
    }
}

/// The counter value Noise reserves for `REKEY`; records never use it.
const REKEY_NONCE: u64 = u64::MAX;

/// One direction's key and record counter.
pub(crate) struct CipherState {
    aead: Aead,
    nonce: u64,
    /// This state is the `fuzzing` feature's null cipher (fixed when it was created).
    #[cfg(feature = "fuzzing")]
    null: bool,
}

/// The counter ran out (2^64 - 1 records under one key lineage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

impl CipherState {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        CipherState {
            aead: Aead::new(key),
            nonce: 0,
            #[cfg(feature = "fuzzing")]
            null: NULL_CIPHER.load(core::sync::atomic::Ordering::SeqCst),
        }
    }

    /// A null cipher regardless of the process-wide switch (for the unit tests).
    #[cfg(all(test, feature = "fuzzing"))]
    fn new_null(key: &[u8; 32]) -> Self {
        CipherState {
            null: true,
            ..CipherState::new(key)
        }
    }

    /// Encrypt `buf[..len]` in place and write the tag at `buf[len..len + TAG_LEN]`.
    /// Returns the sealed length.
    pub(crate) fn seal(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Exhausted> {
        let nonce = self.next_nonce()?;
        let (plain, rest) = buf.split_at_mut(len);
        #[cfg(feature = "fuzzing")]
        if self.null {
            rest[..TAG_LEN].copy_from_slice(&NULL_TAG);
            return Ok(len + TAG_LEN);
        }
        let tag = self.aead.seal(nonce, plain);
        rest[..TAG_LEN].copy_from_slice(&tag);
        Ok(len + TAG_LEN)
    }

    /// Decrypt `buf` (ciphertext then tag) in place; returns the plaintext length.
    pub(crate) fn open(&mut self, buf: &mut [u8]) -> Result<usize, OpenError> {
        let len = buf.len().checked_sub(TAG_LEN).ok_or(OpenError)?;
        let nonce = self.next_nonce().map_err(|_| OpenError)?;
        let (cipher, tag) = buf.split_at_mut(len);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| OpenError)?;
        #[cfg(feature = "fuzzing")]
        if self.null {
            return if tag == NULL_TAG {
                Ok(len)
            } else {
                Err(OpenError)
            };
        }
        self.aead.open(nonce, cipher, &tag).map_err(|_| OpenError)?;
        Ok(len)
    }

    /// Noise `REKEY`: the new key is the first 32 bytes of encrypting 32 zero bytes
    /// with nonce 2^64 - 1. The counter carries on.
    pub(crate) fn rekey(&mut self) {
        let mut key = Zeroizing::new([0u8; 32]);
        let _tag = self.aead.seal(REKEY_NONCE, &mut key[..]);
        self.aead = Aead::new(&key);
    }

    fn next_nonce(&mut self) -> Result<u64, Exhausted> {
        if self.nonce == REKEY_NONCE {
            return Err(Exhausted);
        }
        let n = self.nonce;
        self.nonce += 1;
        Ok(n)
    }

    #[cfg(test)]
    pub(crate) fn set_nonce(&mut self, n: u64) {
        self.nonce = n;
    }
}

/// A record failed authentication (or was shorter than a tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenError;

fn noise_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    nonce
}

#[cfg(not(feature = "ring"))]
struct Aead(chacha20poly1305::ChaCha20Poly1305);

#[cfg(not(feature = "ring"))]
impl Aead {
    fn new(key: &[u8; 32]) -> Self {
        use chacha20poly1305::KeyInit;
        Aead(chacha20poly1305::ChaCha20Poly1305::new(key.into()))
    }

    fn seal(&self, n: u64, buf: &mut [u8]) -> [u8; TAG_LEN] {
        use chacha20poly1305::AeadInPlace;
        let tag = self
            .0
            .encrypt_in_place_detached(&noise_nonce(n).into(), &[], buf)
            .expect("records are far below ChaCha20's 256 GiB message limit");
        tag.into()
    }

    fn open(&self, n: u64, buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), OpenError> {
        use chacha20poly1305::AeadInPlace;
        self.0
            .decrypt_in_place_detached(&noise_nonce(n).into(), &[], buf, tag.into())
            .map_err(|_| OpenError)
    }
}

#[cfg(feature = "ring")]
struct Aead(ring::aead::LessSafeKey);

#[cfg(feature = "ring")]
impl Aead {
    fn new(key: &[u8; 32]) -> Self {
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .expect("32 bytes is the ChaCha20-Poly1305 key length");
        Aead(ring::aead::LessSafeKey::new(key))
    }

    fn seal(&self, n: u64, buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = ring::aead::Nonce::assume_unique_for_key(noise_nonce(n));
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::empty(), buf)
            .expect("records are far below ChaCha20's message limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open(&self, n: u64, buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), OpenError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(noise_nonce(n));
        let tag = ring::aead::Tag::from(*tag);
        self.0
            .open_in_place_separate_tag(nonce, ring::aead::Aad::empty(), tag, buf, 0..)
            .map(|_| ())
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let mut tx = CipherState::new(&[5; 32]);
        let mut rx = CipherState::new(&[5; 32]);
        let mut buf = [0u8; 64];
        buf[..5].copy_from_slice(b"hello");
        let n = tx.seal(&mut buf, 5).unwrap();
        assert_eq!(n, 5 + TAG_LEN);
        assert_ne!(&buf[..5], b"hello");
        let mut copy = buf;
        assert_eq!(rx.open(&mut copy[..n]).unwrap(), 5);
        assert_eq!(&copy[..5], b"hello");
        // The next record uses the next nonce; replaying the first fails.
        let mut replay = buf;
        assert_eq!(rx.open(&mut replay[..n]), Err(OpenError));
        assert_eq!(rx.open(&mut [0u8; 3]), Err(OpenError));
    }

    #[test]
    fn both_sides_rekey_to_the_same_key() {
        let (mut tx, mut rx) = (CipherState::new(&[6; 32]), CipherState::new(&[6; 32]));
        tx.rekey();
        let mut buf = [1u8; 32];
        let n = tx.seal(&mut buf, 16).unwrap();
        let mut stale = buf;
        let mut stale_rx = CipherState::new(&[6; 32]);
        assert!(stale_rx.open(&mut stale[..n]).is_err());
        rx.rekey();
        assert_eq!(rx.open(&mut buf[..n]).unwrap(), 16);
    }

    /// The `fuzzing` null cipher: plaintext plus a fixed tag, any plaintext accepted,
    /// a wrong tag or a short record refused like a forged one, counter and rekey as usual.
    #[cfg(feature = "fuzzing")]
    #[test]
    fn the_fuzzing_null_cipher_passes_mutations_but_checks_its_tag() {
        let (mut tx, mut rx) = (
            CipherState::new_null(&[8; 32]),
            CipherState::new_null(&[9; 32]),
        );
        let mut buf = [0xEEu8; 64];
        buf[..5].copy_from_slice(b"hello");
        let n = tx.seal(&mut buf, 5).unwrap();
        assert_eq!(n, 5 + TAG_LEN);
        assert_eq!(&buf[..5], b"hello", "the plaintext goes out as it is");
        assert_eq!(&buf[5..n], &NULL_TAG);
        let mut mutated = buf;
        mutated[1] ^= 0x20;
        assert_eq!(rx.open(&mut mutated[..n]).unwrap(), 5);
        assert_eq!(&mutated[..5], b"hEllo", "a mutated plaintext gets through");
        let mut bad_tag = buf;
        bad_tag[n - 1] ^= 1;
        assert_eq!(rx.open(&mut bad_tag[..n]), Err(OpenError));
        assert_eq!(rx.open(&mut [0u8; TAG_LEN - 1]), Err(OpenError));
        assert_eq!(rx.open(&mut [0u8; TAG_LEN]), Ok(0));
        tx.rekey();
        assert_eq!(tx.seal(&mut buf, 5), Ok(5 + TAG_LEN));
        tx.set_nonce(u64::MAX);
        assert_eq!(tx.seal(&mut buf, 0), Err(Exhausted));
        // A real cipher refuses what the null cipher sealed, and the other way round.
        let mut real = CipherState::new(&[8; 32]);
        if !real.null {
            let mut plain = buf;
            assert_eq!(real.open(&mut plain[..n]), Err(OpenError));
            let sealed = real.seal(&mut plain, 5).unwrap();
            assert_eq!(rx.open(&mut plain[..sealed]), Err(OpenError));
        }
    }

    #[test]
    fn the_last_nonce_is_never_used() {
        let mut tx = CipherState::new(&[7; 32]);
        tx.set_nonce(u64::MAX - 1);
        let mut buf = [0u8; 32];
        assert!(tx.seal(&mut buf, 0).is_ok());
        assert_eq!(tx.seal(&mut buf, 0), Err(Exhausted));
    }
}
