//! What the event loop needs from an async runtime, and the transports it dials and
//! listens with. `weft-mesh-tokio` and `weft-mesh-smol` implement both; everything
//! else is written once in this crate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

use crate::{Addr, MeshStream};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An accepted connection still finishing its transport-level setup (the WebSocket
/// upgrade); resolves to the connection and the peer's socket address.
pub type Incoming = BoxFuture<io::Result<(MeshStream, String)>>;

/// A bound listener: yields accepted connections.
pub type TransportListener = Pin<Box<dyn Stream<Item = io::Result<Incoming>> + Send>>;

/// A way to carry transport messages: TCP and WebSocket ship with the drivers; add
/// your own with [`crate::MeshBuilder::transport`].
///
/// The writing half of a connection may be polled from an application's thread (a
/// message is written by the task that sends it when the node is idle), which need
/// not be one of the runtime's: writing must not spawn tasks or create timers.
pub trait MeshTransport: Send + Sync + 'static {
    /// Whether this transport handles `addr` (usually: its scheme).
    fn supports(&self, addr: &Addr) -> bool;

    /// Connect to `addr`.
    fn connect(&self, addr: &Addr) -> BoxFuture<io::Result<MeshStream>>;

    /// Bind `addr`; returns the listener and the address actually bound (port 0 resolved).
    fn listen(&self, addr: &Addr) -> BoxFuture<io::Result<(TransportListener, Addr)>>;
}

/// The runtime services the event loop uses.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Run `future` in the background.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Complete after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static;

    /// A timer, unarmed until [`Timer::set_at`].
    fn timer(&self) -> Self::Timer;

    /// The re-armable timer of [`Runtime::timer`].
    type Timer: Timer;

    /// The transports of this runtime (TCP and WebSocket).
    fn transports(&self) -> Vec<Arc<dyn MeshTransport>>;
}

/// A timer that is moved rather than replaced: the event loop keeps one and re-arms it
/// whenever the node's next deadline changes.
///
/// Re-arming must keep the waker of the last poll and may happen on any thread (a
/// handle's, when a command runs inline). Moving the deadline later happens about
/// twice per request/response and should be cheap: tokio's `Sleep::reset` only
/// updates the entry, and the smol driver's timer takes a later deadline up when the
/// earlier one passes.
pub trait Timer: Future<Output = ()> + Send + Unpin + 'static {
    /// Complete at `at` (in the past: at once); replaces any earlier setting.
    fn set_at(&mut self, at: std::time::Instant);
}

/// The transports a node uses, searched in order for one that supports an address.
#[derive(Clone, Default)]
pub(crate) struct Transports(pub Vec<Arc<dyn MeshTransport>>);

impl Transports {
    pub(crate) fn pick(&self, addr: &Addr) -> io::Result<&Arc<dyn MeshTransport>> {
        self.0.iter().find(|t| t.supports(addr)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no transport for {addr}"),
            )
        })
    }
}
