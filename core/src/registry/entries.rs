//! The registries' keys and values: service names, service and process descriptions.

use alloc::string::String;
use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{read, Codec};
use crate::wire::Reader;

/// Most bytes of a service or process name.
pub const MAX_NAME_LEN: usize = 255;
/// Most bytes of a service's or process's opaque metadata.
pub const MAX_METADATA_LEN: usize = 1024;

/// Why a registry key or value was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EntryError {
    /// A service name must be 1 to [`MAX_NAME_LEN`] bytes, a process name at most that.
    NameLength,
    /// Metadata is limited to [`MAX_METADATA_LEN`] bytes.
    MetadataTooLarge,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryError::NameLength => "name must be at most 255 bytes (services: at least 1)",
            EntryError::MetadataTooLarge => "metadata larger than 1024 bytes",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EntryError {}

/// The name a service is advertised and resolved under: UTF-8, 1 to 255 bytes.
///
/// Wire: `u8 len, len bytes of UTF-8`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ServiceName(String);

impl ServiceName {
    /// A name, if it is 1 to [`MAX_NAME_LEN`] bytes long.
    pub fn new(name: impl Into<String>) -> Result<Self, EntryError> {
        let name = name.into();
        if (1..=MAX_NAME_LEN).contains(&name.len()) {
            Ok(ServiceName(name))
        } else {
            Err(EntryError::NameLength)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for ServiceName {
    type Error = EntryError;
    fn try_from(name: &str) -> Result<Self, EntryError> {
        ServiceName::new(name)
    }
}

impl Codec for ServiceName {
    const MIN_SIZE: usize = 2;

    fn encoded_len(&self) -> usize {
        1 + self.0.len()
    }

    fn encode(&self, b: &mut BytesMut) {
        put_name(b, &self.0);
    }

    fn decode(input: &mut &[u8]) -> Option<Self> {
        read(input, |r| ServiceName::new(r.name()?).ok())
    }
}

/// What a node says about a service it provides: opaque metadata (≤ 1 KiB) that the
/// core carries but never interprets.
///
/// Wire: `u16 len, len bytes`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct ServiceInfo {
    metadata: Bytes,
}

impl ServiceInfo {
    /// A description, if the metadata is at most [`MAX_METADATA_LEN`] bytes.
    pub fn new(metadata: impl Into<Bytes>) -> Result<Self, EntryError> {
        Ok(ServiceInfo {
            metadata: checked_metadata(metadata.into())?,
        })
    }

    /// The metadata.
    pub fn metadata(&self) -> &Bytes {
        &self.metadata
    }
}

impl Codec for ServiceInfo {
    const MIN_SIZE: usize = 2;

    fn encoded_len(&self) -> usize {
        2 + self.metadata.len()
    }

    fn encode(&self, b: &mut BytesMut) {
        put_metadata(b, &self.metadata);
    }

    fn decode(input: &mut &[u8]) -> Option<Self> {
        read(input, |r| {
            Some(ServiceInfo {
                metadata: r.metadata()?,
            })
        })
    }
}

/// A process in the distributed process table: its name (≤ 255 bytes, may be empty)
/// and opaque metadata (≤ 1 KiB). The key is its pid on the origin node.
///
/// Wire: `u8 name len, name (UTF-8), u16 metadata len, metadata`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct ProcessInfo {
    name: String,
    metadata: Bytes,
}

impl ProcessInfo {
    /// A description, if the name and metadata are within their limits.
    pub fn new(name: impl Into<String>, metadata: impl Into<Bytes>) -> Result<Self, EntryError> {
        let name = name.into();
        if name.len() > MAX_NAME_LEN {
            return Err(EntryError::NameLength);
        }
        Ok(ProcessInfo {
            name,
            metadata: checked_metadata(metadata.into())?,
        })
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metadata.
    pub fn metadata(&self) -> &Bytes {
        &self.metadata
    }
}

impl Codec for ProcessInfo {
    const MIN_SIZE: usize = 3;

    fn encoded_len(&self) -> usize {
        1 + self.name.len() + 2 + self.metadata.len()
    }

    fn encode(&self, b: &mut BytesMut) {
        put_name(b, &self.name);
        put_metadata(b, &self.metadata);
    }

    fn decode(input: &mut &[u8]) -> Option<Self> {
        read(input, |r| {
            Some(ProcessInfo {
                name: r.name()?,
                metadata: r.metadata()?,
            })
        })
    }
}

fn checked_metadata(metadata: Bytes) -> Result<Bytes, EntryError> {
    if metadata.len() > MAX_METADATA_LEN {
        Err(EntryError::MetadataTooLarge)
    } else {
        Ok(metadata)
    }
}

/// `u8 len, bytes`; callers guarantee `name.len() <= 255` (constructors check it).
fn put_name(b: &mut BytesMut, name: &str) {
    b.put_u8(name.len().min(MAX_NAME_LEN) as u8);
    b.put_slice(&name.as_bytes()[..name.len().min(MAX_NAME_LEN)]);
}

/// `u16 len, bytes`; callers guarantee `metadata.len() <= 1024` (constructors check it).
fn put_metadata(b: &mut BytesMut, metadata: &[u8]) {
    let len = metadata.len().min(MAX_METADATA_LEN);
    b.put_u16(len as u16);
    b.put_slice(&metadata[..len]);
}

impl Reader<'_> {
    /// `u8 len, UTF-8` (possibly empty).
    fn name(&mut self) -> Option<String> {
        let len = self.u8()? as usize;
        self.str(len)
    }

    /// `u16 len (≤ 1024), bytes`.
    fn metadata(&mut self) -> Option<Bytes> {
        let len = self.u16()? as usize;
        if len > MAX_METADATA_LEN {
            return None;
        }
        Some(Bytes::copy_from_slice(self.take(len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn round_trip<T: Codec + PartialEq + fmt::Debug>(value: &T) {
        let mut b = BytesMut::new();
        value.encode(&mut b);
        assert_eq!(b.len(), value.encoded_len());
        let mut input = &b[..];
        assert_eq!(T::decode(&mut input).as_ref(), Some(value));
        assert!(input.is_empty());
        for cut in 0..b.len() {
            assert_eq!(T::decode(&mut &b[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn names_and_metadata_are_length_checked() {
        assert_eq!(ServiceName::new(""), Err(EntryError::NameLength));
        assert!(ServiceName::new("a".repeat(255)).is_ok());
        assert_eq!(
            ServiceName::new("a".repeat(256)),
            Err(EntryError::NameLength)
        );
        assert!(ServiceInfo::new(Vec::from([0u8; 1024])).is_ok());
        assert_eq!(
            ServiceInfo::new(Vec::from([0u8; 1025])),
            Err(EntryError::MetadataTooLarge)
        );
        assert!(ProcessInfo::new("", Bytes::new()).is_ok());
        assert_eq!(
            ProcessInfo::new("p".repeat(256), Bytes::new()),
            Err(EntryError::NameLength)
        );
    }

    #[test]
    fn entries_round_trip_and_truncations_fail() {
        round_trip(&ServiceName::new("échos").unwrap());
        round_trip(&ServiceInfo::new(&b"v=2"[..]).unwrap());
        round_trip(&ServiceInfo::new(Vec::from([7u8; 1024])).unwrap());
        round_trip(&ProcessInfo::new("worker", &b"\x00\x01"[..]).unwrap());
        round_trip(&ProcessInfo::default());
    }

    #[test]
    fn invalid_encodings_are_refused() {
        assert_eq!(
            ServiceName::decode(&mut &[0u8][..]),
            None,
            "empty service name"
        );
        assert_eq!(
            ServiceName::decode(&mut &[2, 0xff, 0xfe][..]),
            None,
            "not UTF-8"
        );
        assert_eq!(
            ServiceInfo::decode(&mut &[0x04, 0x01][..]),
            None,
            "1025 bytes claimed"
        );
    }
}
