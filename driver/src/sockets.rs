//! The built-in TCP and WebSocket transports, written once over a runtime's sockets.

use std::io;
use std::marker::PhantomData;

use futures::StreamExt;

use crate::{Addr, BoxFuture, Incoming, MeshStream, MeshTransport, TransportListener};

/// The socket primitives of a runtime that the built-in transports need.
pub trait Sockets: Send + Sync + 'static {
    /// A connected TCP stream.
    type Stream: Send + 'static;
    /// A bound TCP listener.
    type Listener: Send + 'static;

    /// Connect to `host:port` (the transports set `TCP_NODELAY` through [`Sockets::tune`]).
    fn connect(host_port: String) -> BoxFuture<io::Result<Self::Stream>>;
    /// Bind `host:port`; returns the listener and its local address.
    fn bind(host_port: String) -> BoxFuture<io::Result<(Self::Listener, String)>>;
    /// Accept one connection and its peer address (the listener comes back for the next).
    fn accept(listener: Self::Listener) -> BoxFuture<Accepted<Self>>;
    /// Set `TCP_NODELAY`: records are sealed whole, there is nothing to wait for.
    fn tune(stream: &Self::Stream) -> io::Result<()>;
    /// A stream carrying transport messages as they are.
    fn into_mesh_stream(stream: Self::Stream) -> MeshStream;
    /// The WebSocket client handshake for `url` on `stream`.
    fn ws_client(url: String, stream: Self::Stream) -> BoxFuture<io::Result<MeshStream>>;
    /// The WebSocket server handshake, accepting only `path`.
    fn ws_server(stream: Self::Stream, path: String) -> BoxFuture<io::Result<MeshStream>>;
}

/// The result of [`Sockets::accept`]: the connection (or error) and the listener.
pub type Accepted<S> = (
    io::Result<(<S as Sockets>::Stream, String)>,
    <S as Sockets>::Listener,
);

/// `tcp://host:port`: transport messages on a TCP stream with `TCP_NODELAY`.
pub struct TcpTransport<S>(PhantomData<fn() -> S>);

/// `ws://host:port/path`: one transport message per binary WebSocket message.
pub struct WsTransport<S>(PhantomData<fn() -> S>);

impl<S> Default for TcpTransport<S> {
    fn default() -> Self {
        TcpTransport(PhantomData)
    }
}

impl<S> Default for WsTransport<S> {
    fn default() -> Self {
        WsTransport(PhantomData)
    }
}

async fn dial<S: Sockets>(addr: &Addr) -> io::Result<S::Stream> {
    let stream = S::connect(addr.host_port().to_owned()).await?;
    S::tune(&stream)?;
    Ok(stream)
}

/// Bind `addr` and hand each accepted socket to `upgrade`.
async fn bind<S: Sockets>(
    addr: Addr,
    upgrade: fn(S::Stream, String, Addr) -> Incoming,
) -> io::Result<(TransportListener, Addr)> {
    let (listener, local) = S::bind(addr.host_port().to_owned()).await?;
    let bound = addr.with_host_port(local);
    let accepted = futures::stream::unfold(listener, move |listener| {
        let addr = addr.clone();
        async move {
            let (result, listener) = S::accept(listener).await;
            let incoming = result.and_then(|(stream, peer)| {
                S::tune(&stream)?;
                Ok(upgrade(stream, peer, addr))
            });
            Some((incoming, listener))
        }
    });
    Ok((accepted.boxed(), bound))
}

impl<S: Sockets> MeshTransport for TcpTransport<S> {
    fn supports(&self, addr: &Addr) -> bool {
        matches!(addr, Addr::Tcp { .. })
    }

    fn connect(&self, addr: &Addr) -> BoxFuture<io::Result<MeshStream>> {
        let addr = addr.clone();
        Box::pin(async move { Ok(S::into_mesh_stream(dial::<S>(&addr).await?)) })
    }

    fn listen(&self, addr: &Addr) -> BoxFuture<io::Result<(TransportListener, Addr)>> {
        Box::pin(bind::<S>(addr.clone(), |stream, peer, _| {
            Box::pin(async move { Ok((S::into_mesh_stream(stream), peer)) })
        }))
    }
}

impl<S: Sockets> MeshTransport for WsTransport<S> {
    fn supports(&self, addr: &Addr) -> bool {
        matches!(addr, Addr::Ws { .. })
    }

    fn connect(&self, addr: &Addr) -> BoxFuture<io::Result<MeshStream>> {
        let addr = addr.clone();
        Box::pin(async move {
            let stream = dial::<S>(&addr).await?;
            S::ws_client(addr.to_string(), stream).await
        })
    }

    fn listen(&self, addr: &Addr) -> BoxFuture<io::Result<(TransportListener, Addr)>> {
        Box::pin(bind::<S>(addr.clone(), |stream, peer, addr| {
            Box::pin(async move {
                let Addr::Ws { path, .. } = addr else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a ws:// address",
                    ));
                };
                Ok((S::ws_server(stream, path).await?, peer))
            })
        }))
    }
}
