//! SWIM failure detection with Lifeguard (work in progress).
