//! weft-mesh on smol: TCP (`tcp://host:port`) and WebSocket (`ws://host:port/path`,
//! via async-tungstenite) transports, and the [`Mesh`] handle.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weft_mesh_smol::{Mesh, MeshEvent, Target};
//!
//! smol::block_on(async {
//!     let mut a = Mesh::builder().listen("ws://127.0.0.1:0/mesh");
//!     let mut events = a.subscribe();
//!     let a = a.start().await?;
//!     let b = Mesh::builder().seed(a.local_addrs()[0].to_string()).start().await?;
//!     while let Some(event) = events.next().await {
//!         if let MeshEvent::PeerUp { .. } = event {
//!             b.send(a.node_id(), Target::Node, &b"hello"[..]).await?;
//!             break;
//!         }
//!     }
//!     b.shutdown().await;
//!     a.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_net::{TcpListener, TcpStream};
use weft_mesh_driver::{
    ws_config, ws_path_check, Accepted, MeshStream, MeshTransport, Runtime, Sockets,
};

pub use weft_mesh_driver::{
    identity_file, weft_mesh, Addr, AddrError, BoxFuture, DiscoveryBackend, DiscoveryError, Events,
    MeshBuilder, MeshError, MeshEvent, Responder, RouteSummary, StartError, StaticDiscovery,
    Target, DEV_GENESIS, MAX_CHAIN_READ,
};

/// A mesh node on smol.
pub type Mesh = weft_mesh_driver::Mesh<Smol>;

/// `tcp://` on smol.
pub type TcpTransport = weft_mesh_driver::TcpTransport<Smol>;
/// `ws://` on smol (async-tungstenite).
pub type WsTransport = weft_mesh_driver::WsTransport<Smol>;

/// The smol [`Runtime`]: tasks on smol's global executor, `async-io` timers, `async-net`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        futures::FutureExt::map(smol::Timer::after(duration), |_| ())
    }

    type Timer = SmolTimer;

    fn timer(&self) -> SmolTimer {
        SmolTimer {
            timer: smol::Timer::never(),
            set: None,
            target: None,
        }
    }

    fn transports(&self) -> Vec<Arc<dyn MeshTransport>> {
        vec![
            Arc::new(TcpTransport::default()),
            Arc::new(WsTransport::default()),
        ]
    }
}

/// The event loop's timer on smol: an `async-io` timer. Every `set_at` of an armed
/// `async-io` timer re-files it and interrupts the reactor, so a later deadline is only
/// recorded here and taken up when the earlier one passes (one wake-up of the owner,
/// answered with `Pending`); an earlier one re-arms at once.
pub struct SmolTimer {
    timer: smol::Timer,
    /// Where `timer` is set, until it fires.
    set: Option<std::time::Instant>,
    /// Where the owner wants it: `set` or later.
    target: Option<std::time::Instant>,
}

impl Future for SmolTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if Pin::new(&mut self.timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            match self.target {
                Some(target) if self.set.is_some_and(|set| target > set) => {
                    self.timer.set_at(target);
                    self.set = Some(target);
                }
                _ => {
                    self.set = None;
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl weft_mesh_driver::Timer for SmolTimer {
    fn set_at(&mut self, at: std::time::Instant) {
        self.target = Some(at);
        if self.set.is_none_or(|set| at < set) {
            self.timer.set_at(at);
            self.set = Some(at);
        }
    }
}

impl Sockets for Smol {
    type Stream = TcpStream;
    type Listener = TcpListener;

    fn connect(host_port: String) -> BoxFuture<io::Result<TcpStream>> {
        Box::pin(async move { TcpStream::connect(host_port).await })
    }

    fn bind(host_port: String) -> BoxFuture<io::Result<(TcpListener, String)>> {
        Box::pin(async move {
            let listener = TcpListener::bind(host_port).await?;
            let local = listener.local_addr()?.to_string();
            Ok((listener, local))
        })
    }

    fn accept(listener: TcpListener) -> BoxFuture<Accepted<Self>> {
        Box::pin(async move {
            let accepted = listener
                .accept()
                .await
                .map(|(s, peer)| (s, peer.to_string()));
            (accepted, listener)
        })
    }

    fn tune(stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)
    }

    fn into_mesh_stream(stream: TcpStream) -> MeshStream {
        MeshStream::from_io(stream.clone(), stream)
    }

    fn ws_client(url: String, stream: TcpStream) -> BoxFuture<io::Result<MeshStream>> {
        Box::pin(async move {
            let (ws, _) =
                async_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
                    .await
                    .map_err(io::Error::other)?;
            Ok(MeshStream::from_ws(ws))
        })
    }

    fn ws_server(stream: TcpStream, path: String) -> BoxFuture<io::Result<MeshStream>> {
        Box::pin(async move {
            let ws = async_tungstenite::accept_hdr_async_with_config(
                stream,
                ws_path_check(path),
                Some(ws_config()),
            )
            .await
            .map_err(io::Error::other)?;
            Ok(MeshStream::from_ws(ws))
        })
    }
}
