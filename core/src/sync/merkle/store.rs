//! [`KvStore`]: where a [`super::MerkleTree`]'s values live, and [`MemoryStore`].

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// An application's key/value store, as a [`super::MerkleTree`] uses it.
///
/// The tree reads values when it serves them to a peer and writes through to the store
/// when the application or a sync changes an entry. Keys and values are byte strings.
/// Everything else (persistence, caching, transactions) is the store's business; the
/// methods cannot fail, so a store that can should decide itself what a failed write
/// means (retry, buffer, abort the process).
///
/// Write only through the tree once it is built: an entry changed behind its back is
/// served with a stale hash, and peers pulling it see a mismatch.
pub trait KvStore {
    /// The value under `key`, borrowed when the store holds it in memory.
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>>;
    /// Store `value` under `key`, replacing what was there.
    fn insert(&mut self, key: &[u8], value: &[u8]);
    /// Remove `key` (nothing if absent).
    fn remove(&mut self, key: &[u8]);
    /// Call `f` with every entry, in any order (once, when the tree is built).
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]));
}

impl<T: KvStore + ?Sized> KvStore for &mut T {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        (**self).get(key)
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        (**self).insert(key, value);
    }

    fn remove(&mut self, key: &[u8]) {
        (**self).remove(key);
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        (**self).for_each(f);
    }
}

impl<T: KvStore + ?Sized> KvStore for alloc::boxed::Box<T> {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        (**self).get(key)
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        (**self).insert(key, value);
    }

    fn remove(&mut self, key: &[u8]) {
        (**self).remove(key);
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        (**self).for_each(f);
    }
}

/// A [`KvStore`] in a `BTreeMap`, for tests and demos.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct MemoryStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entries in key order.
    pub fn map(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.map
    }
}

impl From<BTreeMap<Vec<u8>, Vec<u8>>> for MemoryStore {
    fn from(map: BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        MemoryStore { map }
    }
}

impl FromIterator<(Vec<u8>, Vec<u8>)> for MemoryStore {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(iter: I) -> Self {
        MemoryStore {
            map: iter.into_iter().collect(),
        }
    }
}

impl KvStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.map.get(key).map(|v| Cow::Borrowed(&v[..]))
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.map.insert(key.to_vec(), value.to_vec());
    }

    fn remove(&mut self, key: &[u8]) {
        self.map.remove(key);
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for (k, v) in &self.map {
            f(k, v);
        }
    }
}
