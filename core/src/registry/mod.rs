//! The gossiped per-origin registries: services and processes (work in progress).
