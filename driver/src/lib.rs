//! The part of the weft-mesh drivers that does not depend on the async runtime: the
//! event loop around the core [`weft_mesh::node::Node`], transport addresses, the
//! TCP/WebSocket byte-stream adaptation, identity files, discovery backends
//! ([`DiscoveryBackend`]) and the [`Mesh`] handle.
//!
//! Applications use it through `weft-mesh-tokio` or `weft-mesh-smol`, which only
//! implement [`Runtime`] (spawn, sleep, the transports) and [`Sockets`] (the socket
//! primitives the built-in TCP and WebSocket transports need) for their runtime.
#![warn(missing_docs)]

mod addr;
mod discovery;
mod event_loop;
pub mod identity_file;
mod mesh;
mod replication;
mod runtime;
mod sockets;
mod stream;

pub use addr::{Addr, AddrError};
pub use discovery::{
    DiscoveryBackend, DiscoveryError, StaticDiscovery, DISCOVERY_TIMEOUT, MAX_DISCOVERED,
};
pub use identity_file::os_rng;
pub use mesh::{
    Events, Mesh, MeshBuilder, MeshError, MeshEvent, ProcessSummary, Responder, RouteSummary,
    ServiceSummary, StartError, DEV_GENESIS, EVENT_CAPACITY,
};
pub use replication::MAX_CHAIN_READ;
pub use runtime::{BoxFuture, Incoming, MeshTransport, Runtime, Timer, TransportListener};
pub use sockets::{Accepted, Sockets, TcpTransport, WsTransport};
pub use stream::{ws_config, ws_path_check, MeshStream, ReadHalf, WriteHalf, READ_BUFFER};

pub use weft_mesh;
pub use weft_mesh::mesh::Target;
