//! weft-mesh on tokio: TCP (`tcp://host:port`) and WebSocket (`ws://host:port/path`,
//! via tokio-tungstenite) transports, and the [`Mesh`] handle.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weft_mesh_tokio::{Mesh, MeshEvent};
//!
//! let mut a = Mesh::builder().listen("tcp://127.0.0.1:0");
//! let mut events = a.subscribe();
//! let a = a.start().await?;
//! let b = Mesh::builder().seed(a.local_addrs()[0].to_string()).start().await?;
//! while let Some(event) = events.next().await {
//!     if let MeshEvent::PeerUp { node, hybrid, .. } = event {
//!         assert!(hybrid && node == b.node_id());
//!         b.send(a.node_id(), &b"hello"[..]).await?; // returns once `a` acknowledged it
//!         break;
//!     }
//! }
//! b.shutdown().await;
//! a.shutdown().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
use weft_mesh_driver::{ws_config, ws_path_check, Incoming, Listener, Runtime, Wire};

pub use weft_mesh_driver::{
    identity_file, weft_mesh, Addr, AddrError, Events, MeshBuilder, MeshError, MeshEvent,
    StartError, DEV_GENESIS,
};

/// A mesh node on tokio.
pub type Mesh = weft_mesh_driver::Mesh<Tokio>;

/// The tokio [`Runtime`]: tasks on the current runtime, `tokio::time`, `tokio::net`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

fn tcp_wire(stream: TcpStream) -> Wire {
    let (r, w) = stream.into_split();
    Wire::from_io(r.compat(), w.compat_write())
}

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

    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<Wire>> + Send + 'static {
        let addr = addr.clone();
        async move {
            let stream = TcpStream::connect(addr.host_port()).await?;
            stream.set_nodelay(true)?;
            match addr {
                Addr::Tcp { .. } => Ok(tcp_wire(stream)),
                Addr::Ws { .. } => {
                    let url = addr.to_string();
                    let (ws, _) =
                        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
                            .await
                            .map_err(io::Error::other)?;
                    Ok(Wire::from_ws(ws))
                }
            }
        }
    }

    fn listen(
        &self,
        addr: &Addr,
    ) -> impl Future<Output = io::Result<(Listener, Addr)>> + Send + 'static {
        let addr = addr.clone();
        async move {
            let listener = TcpListener::bind(addr.host_port()).await?;
            let bound = addr.with_host_port(listener.local_addr()?.to_string());
            let stream = futures::stream::unfold(listener, move |listener| {
                let addr = addr.clone();
                async move {
                    let accepted = listener.accept().await.and_then(|(stream, peer)| {
                        stream.set_nodelay(true)?;
                        Ok(upgrade(stream, peer.to_string(), addr))
                    });
                    Some((accepted, listener))
                }
            });
            Ok((stream.boxed() as Listener, bound))
        }
    }
}

/// Finish the transport setup of an accepted socket (the WebSocket upgrade, if any).
fn upgrade(stream: TcpStream, peer: String, addr: Addr) -> Incoming {
    Box::pin(async move {
        match addr {
            Addr::Tcp { .. } => Ok((tcp_wire(stream), peer)),
            Addr::Ws { path, .. } => {
                let ws = tokio_tungstenite::accept_hdr_async_with_config(
                    stream,
                    ws_path_check(path),
                    Some(ws_config()),
                )
                .await
                .map_err(io::Error::other)?;
                Ok((Wire::from_ws(ws), peer))
            }
        }
    })
}

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
