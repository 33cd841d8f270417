//! The registry's error enums and the changes it reports.

use core::fmt;

use super::Version;
use crate::NodeId;

/// Why a local write was refused; the map is unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum WriteError {
    /// The key's encoding exceeds [`super::RegistryConfig::max_key_bytes`].
    KeyTooLarge,
    /// The value's encoding exceeds [`super::RegistryConfig::max_value_bytes`].
    ValueTooLarge,
    /// The origin already has [`super::RegistryConfig::max_entries_per_origin`] entries.
    Full,
    /// Every version has been used (2^128 writes, or a peer claimed the last one).
    Exhausted,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteError::KeyTooLarge => "key too large",
            WriteError::ValueTooLarge => "value too large",
            WriteError::Full => "too many entries",
            WriteError::Exhausted => "versions exhausted",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WriteError {}

/// Why a received delta was not applied; in every case the map is unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ApplyError {
    /// The delta starts after the version held here (`have`): changes in between were
    /// missed. Ask for them with a `Want` of `(origin, have)`.
    Gap {
        /// The version held here for that origin.
        have: Version,
    },
    /// The origin was removed ([`super::OriginMap::remove_origin`]) at the delta's epoch
    /// or a later one: stale gossip.
    Removed,
    /// The delta is about this node's own entries, which only this node writes.
    OwnOrigin,
    /// The origin is new and [`super::RegistryConfig::max_origins`] are known.
    TooManyOrigins,
    /// Applying it would exceed [`super::RegistryConfig::max_entries_per_origin`].
    TooManyEntries,
    /// A key's encoding exceeds [`super::RegistryConfig::max_key_bytes`].
    KeyTooLarge,
    /// A value's encoding exceeds [`super::RegistryConfig::max_value_bytes`].
    ValueTooLarge,
    /// Inconsistent delta: an empty or inverted range, a floor above its end, entries out
    /// of order or outside the range, or a key twice.
    Malformed,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Gap { have } => write!(f, "delta starts after version {have}"),
            ApplyError::Removed => f.write_str("origin removed"),
            ApplyError::OwnOrigin => f.write_str("delta about our own entries"),
            ApplyError::TooManyOrigins => f.write_str("too many origins"),
            ApplyError::TooManyEntries => f.write_str("too many entries"),
            ApplyError::KeyTooLarge => f.write_str("key too large"),
            ApplyError::ValueTooLarge => f.write_str("value too large"),
            ApplyError::Malformed => f.write_str("malformed delta"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApplyError {}

/// What happened to one key of one origin (for events).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChangeKind {
    /// The key became live (it was absent or removed).
    Added,
    /// A live key got a new value.
    Updated,
    /// A live key was removed.
    Removed,
}

/// A visible change of the map, reported by writes from peers and by removals.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Change<K> {
    /// Whose entry.
    pub origin: NodeId,
    /// Which key.
    pub key: K,
    /// What happened.
    pub kind: ChangeKind,
}

impl ChangeKind {
    /// The change from a key's live version `before` to its live version `after`.
    pub(crate) fn between(before: Option<Version>, after: Option<Version>) -> Option<Self> {
        match (before, after) {
            (None, Some(_)) => Some(ChangeKind::Added),
            (Some(b), Some(a)) if a != b => Some(ChangeKind::Updated),
            (Some(_), None) => Some(ChangeKind::Removed),
            _ => None,
        }
    }
}
