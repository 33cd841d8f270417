//! weft-mesh on tokio: TCP (`tcp://host:port`) and WebSocket (`ws://host:port/path`,
//! via tokio-tungstenite) transports, and the [`Mesh`] handle.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weft_mesh_tokio::{Mesh, MeshEvent, Target};
//!
//! let mut a = Mesh::builder().listen("tcp://127.0.0.1:0");
//! let mut events = a.subscribe();
//! let a = a.start().await?;
//! let b = Mesh::builder().seed(a.local_addrs()[0].to_string()).start().await?;
//! while let Some(event) = events.next().await {
//!     if let MeshEvent::PeerUp { node, hybrid, .. } = event {
//!         assert!(hybrid && node == b.node_id());
//!         b.send(a.node_id(), Target::Node, &b"hello"[..]).await?; // returns once `a` acknowledged it
//!         break;
//!     }
//! }
//! b.shutdown().await;
//! a.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
use weft_mesh_driver::{
    ws_config, ws_path_check, Accepted, MeshStream, MeshTransport, Runtime, Sockets,
};

pub use weft_mesh_driver::{
    identity_file, weft_mesh, Addr, AddrError, BoxFuture, DiscoveryBackend, DiscoveryError, Events,
    MeshBuilder, MeshError, MeshEvent, Responder, RouteSummary, StartError, StaticDiscovery,
    Target, DEV_GENESIS, MAX_CHAIN_READ,
};

/// A mesh node on tokio.
pub type Mesh = weft_mesh_driver::Mesh<Tokio>;

/// `tcp://` on tokio.
pub type TcpTransport = weft_mesh_driver::TcpTransport<Tokio>;
/// `ws://` on tokio (tokio-tungstenite).
pub type WsTransport = weft_mesh_driver::WsTransport<Tokio>;

/// The tokio [`Runtime`]: tasks on the current runtime, `tokio::time`, `tokio::net`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }

    type Timer = TokioTimer;

    fn timer(&self) -> TokioTimer {
        // Unarmed: a deadline far beyond any the loop sets (re-armed before it counts).
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        TokioTimer {
            sleep: Box::pin(tokio::time::sleep_until(far)),
            waker: None,
        }
    }

    fn transports(&self) -> Vec<Arc<dyn MeshTransport>> {
        vec![
            Arc::new(TcpTransport::default()),
            Arc::new(WsTransport::default()),
        ]
    }
}

/// The event loop's timer on tokio: a `Sleep` moved with `reset` (with tokio's default
/// timer a later deadline only updates the entry, and the wheel re-files it when the
/// old one comes up, without waking the task).
pub struct TokioTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The waker of the last poll, registered again after every reset: tokio's
    /// alternative timer (`enable_alt_timer`) drops it on reset, and a reset may come
    /// from a thread that never polls.
    waker: Option<Waker>,
}

impl Future for TokioTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl weft_mesh_driver::Timer for TokioTimer {
    fn set_at(&mut self, at: std::time::Instant) {
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(at));
        if let Some(waker) = &self.waker {
            if self
                .sleep
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_ready()
            {
                waker.wake_by_ref();
            }
        }
    }
}

impl Sockets for Tokio {
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
        let (r, w) = stream.into_split();
        MeshStream::from_io(r.compat(), w.compat_write())
    }

    fn ws_client(url: String, stream: TcpStream) -> BoxFuture<io::Result<MeshStream>> {
        Box::pin(async move {
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
                    .await
                    .map_err(io::Error::other)?;
            Ok(MeshStream::from_ws(ws))
        })
    }

    fn ws_server(stream: TcpStream, path: String) -> BoxFuture<io::Result<MeshStream>> {
        Box::pin(async move {
            let ws = tokio_tungstenite::accept_hdr_async_with_config(
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

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
