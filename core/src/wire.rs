//! Bounds-checked reading of the core's binary messages: every read returns `None`
//! instead of panicking when the input is short, so decoders are `?` chains.

use alloc::string::String;

use crate::NodeId;

/// A cursor over a received message.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Some(a)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    pub(crate) fn node(&mut self) -> Option<NodeId> {
        self.array().map(NodeId::from_bytes)
    }

    /// A UTF-8 string of `len` bytes.
    pub(crate) fn str(&mut self, len: usize) -> Option<String> {
        Some(String::from(core::str::from_utf8(self.take(len)?).ok()?))
    }

    /// Bytes left unread.
    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    /// Whether every byte was read (decoders reject trailing bytes).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
