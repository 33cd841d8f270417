//! [`Codec`]: how registry keys and values are written on the wire.

use bytes::{BufMut, BytesMut};

use crate::wire::Reader;

/// A registry key or value that has a binary encoding.
///
/// Decoding reads from the front of a byte slice and advances it, so encodings can be
/// concatenated; it returns `None` on any malformed or truncated input.
pub trait Codec: Sized {
    /// The fewest bytes an encoding takes (bounds pre-allocation when decoding lists).
    const MIN_SIZE: usize;

    /// The exact number of bytes [`Codec::encode`] writes.
    fn encoded_len(&self) -> usize;

    /// Append the encoding.
    fn encode(&self, b: &mut BytesMut);

    /// Read one value from the front of `input`, advancing it past the bytes read.
    fn decode(input: &mut &[u8]) -> Option<Self>;
}

/// Decode with the shared bounds-checked cursor, advancing `input` only on success.
pub(crate) fn read<'a, T>(
    input: &mut &'a [u8],
    f: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Option<T> {
    let mut r = Reader(input);
    let value = f(&mut r)?;
    *input = r.0;
    Some(value)
}

/// Process ids: eight big-endian bytes.
impl Codec for u64 {
    const MIN_SIZE: usize = 8;

    fn encoded_len(&self) -> usize {
        8
    }

    fn encode(&self, b: &mut BytesMut) {
        b.put_u64(*self);
    }

    fn decode(input: &mut &[u8]) -> Option<Self> {
        read(input, Reader::u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_advances_only_past_what_it_read_and_only_on_success() {
        let mut b = BytesMut::new();
        7u64.encode(&mut b);
        b.put_u8(0xaa);
        let mut input = &b[..];
        assert_eq!(u64::decode(&mut input), Some(7));
        assert_eq!(input, &[0xaa]);
        assert_eq!(u64::decode(&mut input), None);
        assert_eq!(input, &[0xaa], "a failed read leaves the input alone");
    }
}
