//! Noise `CipherState` for records, sealing and opening in place (no copy of the record).
//!
//! ChaCha20-Poly1305 with the Noise nonce (4 zero bytes, then the 64-bit counter
//! little-endian), empty associated data, and Noise's `REKEY`. The pure-Rust
//! `chacha20poly1305` crate by default; ring's with the `ring` feature.

use zeroize::Zeroizing;

/// Length of the Poly1305 tag that follows every record.
pub const TAG_LEN: usize = 16;

/// The counter value Noise reserves for `REKEY`; records never use it.
const REKEY_NONCE: u64 = u64::MAX;

/// One direction's key and record counter.
pub(crate) struct CipherState {
    aead: Aead,
    nonce: u64,
}

/// The counter ran out (2^64 - 1 records under one key lineage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

impl CipherState {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        CipherState {
            aead: Aead::new(key),
            nonce: 0,
        }
    }

    /// Encrypt `buf[..len]` in place and write the tag at `buf[len..len + TAG_LEN]`.
    /// Returns the sealed length.
    pub(crate) fn seal(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Exhausted> {
        let nonce = self.next_nonce()?;
        let (plain, rest) = buf.split_at_mut(len);
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

    #[test]
    fn the_last_nonce_is_never_used() {
        let mut tx = CipherState::new(&[7; 32]);
        tx.set_nonce(u64::MAX - 1);
        let mut buf = [0u8; 32];
        assert!(tx.seal(&mut buf, 0).is_ok());
        assert_eq!(tx.seal(&mut buf, 0), Err(Exhausted));
    }
}
