//! What a driver needs from an async runtime. `weft-mesh-tokio` and `weft-mesh-smol`
//! implement it; everything else is written once in this crate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

use crate::{Addr, Wire};

/// An accepted connection still finishing its transport-level setup (the WebSocket
/// upgrade); resolves to the connection and the peer's socket address.
pub type Incoming = Pin<Box<dyn Future<Output = io::Result<(Wire, String)>> + Send>>;

/// A bound listener: yields accepted connections.
pub type Listener = Pin<Box<dyn Stream<Item = io::Result<Incoming>> + Send>>;

/// The runtime services the event loop uses.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Run `future` in the background.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Complete after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static;

    /// Connect to `addr` (TCP with `TCP_NODELAY`, or a WebSocket client handshake).
    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<Wire>> + Send + 'static;

    /// Bind `addr`; returns the listener and the address actually bound (port 0 resolved).
    fn listen(
        &self,
        addr: &Addr,
    ) -> impl Future<Output = io::Result<(Listener, Addr)>> + Send + 'static;
}
