//! weft-mesh on smol: TCP (`tcp://host:port`) and WebSocket (`ws://host:port/path`,
//! via async-tungstenite) transports, and the [`Mesh`] handle.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weft_mesh_smol::{Mesh, MeshEvent};
//!
//! smol::block_on(async {
//!     let mut a = Mesh::builder().listen("ws://127.0.0.1:0/mesh");
//!     let mut events = a.subscribe();
//!     let a = a.start().await?;
//!     let b = Mesh::builder().seed(a.local_addrs()[0].to_string()).start().await?;
//!     while let Some(event) = events.next().await {
//!         if let MeshEvent::PeerUp { .. } = event {
//!             b.send(a.node_id(), &b"hello"[..]).await?;
//!             break;
//!         }
//!     }
//!     b.shutdown().await;
//!     a.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

use std::future::Future;
use std::io;
use std::time::Duration;

use async_net::{TcpListener, TcpStream};
use futures::StreamExt;
use weft_mesh_driver::{ws_config, ws_path_check, Incoming, Listener, Runtime, Wire};

pub use weft_mesh_driver::{
    identity_file, weft_mesh, Addr, AddrError, Events, MeshBuilder, MeshError, MeshEvent,
    StartError, DEV_GENESIS,
};

/// A mesh node on smol.
pub type Mesh = weft_mesh_driver::Mesh<Smol>;

/// The smol [`Runtime`]: tasks on smol's global executor, `async-io` timers, `async-net`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

fn tcp_wire(stream: TcpStream) -> Wire {
    Wire::from_io(stream.clone(), stream)
}

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
                        async_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
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
                let ws = async_tungstenite::accept_hdr_async_with_config(
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
