//! The version of an origin's state: `(epoch, counter)`, ordered lexicographically.

use core::fmt;

use bytes::{BufMut, BytesMut};

use crate::wire::Reader;

/// Encoded size of a [`Version`]: two big-endian `u64`s.
pub const VERSION_LEN: usize = 16;

/// When an origin's entry changed.
///
/// `epoch` is chosen by the owner at start and grows across its restarts (drivers pass
/// the start time in Unix milliseconds); `counter` grows by one on every local write.
/// Versions compare lexicographically, so every write of a restarted node is newer
/// than anything its previous run wrote.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Version {
    /// The owner's run (grows across restarts).
    pub epoch: u64,
    /// Writes within the run.
    pub counter: u64,
}

impl Version {
    /// The version before any write: what a node holds for an origin it never heard of.
    pub const ZERO: Version = Version {
        epoch: 0,
        counter: 0,
    };

    /// A version.
    pub const fn new(epoch: u64, counter: u64) -> Self {
        Version { epoch, counter }
    }

    /// The next version: one more write (the next epoch if the counter is exhausted);
    /// `None` after the very last version.
    pub fn successor(self) -> Option<Version> {
        match self.counter.checked_add(1) {
            Some(counter) => Some(Version { counter, ..self }),
            None => Some(Version::new(self.epoch.checked_add(1)?, 0)),
        }
    }

    /// The version just before this one; `None` for [`Version::ZERO`].
    pub(crate) fn predecessor(self) -> Option<Version> {
        match self.counter.checked_sub(1) {
            Some(counter) => Some(Version { counter, ..self }),
            None => Some(Version::new(self.epoch.checked_sub(1)?, u64::MAX)),
        }
    }

    pub(crate) fn encode(self, b: &mut BytesMut) {
        b.put_u64(self.epoch);
        b.put_u64(self.counter);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Option<Version> {
        Some(Version::new(r.u64()?, r.u64()?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_epoch_then_counter_and_successor_always_grows() {
        assert!(Version::new(1, 0) > Version::new(0, u64::MAX));
        assert!(Version::new(1, 2) < Version::new(1, 3));
        assert_eq!(Version::new(4, 7).successor(), Some(Version::new(4, 8)));
        assert_eq!(
            Version::new(4, u64::MAX).successor(),
            Some(Version::new(5, 0))
        );
        assert_eq!(Version::new(u64::MAX, u64::MAX).successor(), None);
        assert_eq!(
            Version::new(5, 0).predecessor(),
            Some(Version::new(4, u64::MAX))
        );
        assert_eq!(Version::new(5, 3).predecessor(), Some(Version::new(5, 2)));
        assert_eq!(Version::ZERO.predecessor(), None);
    }

    #[test]
    fn a_version_round_trips_in_sixteen_bytes() {
        let v = Version::new(0x0102_0304_0506_0708, 9);
        let mut b = BytesMut::new();
        v.encode(&mut b);
        assert_eq!(b.len(), VERSION_LEN);
        assert_eq!(&b[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 0]);
        let mut r = Reader(&b);
        assert_eq!(Version::decode(&mut r), Some(v));
        assert!(r.is_empty());
        assert_eq!(Version::decode(&mut Reader(&b[..15])), None);
    }
}
