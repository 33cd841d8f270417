//! The application's view: build and start a mesh, then use a cloneable handle.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::Stream;
use weft_mesh::handshake::PqPolicy;
use weft_mesh::membership::MemberInfo;
use weft_mesh::mesh::{Target, MAX_HOPS};
use weft_mesh::node::{
    ChainWriteError, NodeConfig, NodeSendError, NodeStats, PeerSummary, RegistryError,
    RequestToken, SendFailure, TreeWriteError,
};
use weft_mesh::resolve::Strategy;
use weft_mesh::sync::chain::{ChainHead, ChainStore, ChainSyncError, Fork};
use weft_mesh::sync::merkle::{self, KvStore};
use weft_mesh::sync::tree::SyncError;
use weft_mesh::sync::TreeState;
use weft_mesh::{CloseReason, Identity, NodeId};

use crate::discovery::Discovery;
use crate::event_loop::{self, Command, Commands, Entry};
use crate::replication::Plug;
use crate::runtime::Transports;
use crate::{Addr, AddrError, DiscoveryBackend, Runtime};

/// Something that happened in the mesh. Every subscriber sees every event.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MeshEvent {
    /// A peer is connected and authenticated. On a link we dialed with Noise XX the
    /// peer judges our hello only after this (one half round trip later): if it
    /// refuses, a `PeerDown` with the handshake reason follows.
    PeerUp {
        /// The peer.
        node: NodeId,
        /// Its socket address.
        addr: Option<String>,
        /// Whether the session is hybrid post-quantum.
        hybrid: bool,
    },
    /// A peer's connection closed.
    PeerDown {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: CloseReason,
    },
    /// A message arrived (its sender learns of the delivery). Each message is reported
    /// once, even if it was retransmitted.
    Message {
        /// The sender.
        from: NodeId,
        /// Whom it is for in this node.
        target: Target,
        /// The data.
        data: Bytes,
        /// Links it crossed: 1 when it came over the sender's own link, more when
        /// other nodes relayed it.
        hops: u8,
    },
    /// A request arrived: answer it with [`Responder::respond`] (else the requester
    /// times out).
    Request {
        /// The requester.
        from: NodeId,
        /// Whom it is for in this node.
        target: Target,
        /// The data.
        data: Bytes,
        /// Links it crossed (1: directly from the requester).
        hops: u8,
        /// Answers the request.
        responder: Responder,
    },
    /// A connection closed before its handshake completed.
    Rejected {
        /// The socket address.
        addr: Option<String>,
        /// Why.
        reason: CloseReason,
    },
    /// A member joined the cluster, or came back (failure detection, SWIM).
    MemberUp {
        /// The member.
        node: NodeId,
        /// Where it can be dialed, as it advertises.
        addrs: Vec<String>,
    },
    /// A member is suspected of having failed (it may still refute).
    MemberSuspect {
        /// The member.
        node: NodeId,
    },
    /// A suspected member refuted the suspicion: it is alive.
    MemberAlive {
        /// The member.
        node: NodeId,
    },
    /// A member was declared failed; its services and processes are gone.
    MemberDown {
        /// The member.
        node: NodeId,
    },
    /// A member left the cluster gracefully.
    MemberLeft {
        /// The member.
        node: NodeId,
    },
    /// A member began to provide a service.
    ServiceUp {
        /// The provider.
        node: NodeId,
        /// The service.
        name: String,
    },
    /// A member stopped providing a service (withdrawn, or the member is gone).
    ServiceDown {
        /// The former provider.
        node: NodeId,
        /// The service.
        name: String,
    },
    /// Entries pulled from `peer` were appended to this node's chain (one event per
    /// batch the peer sent).
    ChainProgress {
        /// Where they came from.
        peer: NodeId,
        /// This node's chain head now.
        head: ChainHead,
    },
    /// This node's chain caught up with `peer`'s (as far as it was known).
    ChainSynced {
        /// The peer.
        peer: NodeId,
        /// This node's chain head.
        head: ChainHead,
        /// Entries this pull appended.
        appended: u64,
    },
    /// `peer`'s chain forks from this node's: nothing more is pulled from it.
    ChainForked {
        /// The peer.
        peer: NodeId,
        /// Two entries that cannot belong to one chain ([`Fork::is_valid`]).
        fork: Fork,
    },
    /// A chain pull from `peer` stopped; it starts again at the peer's next head.
    ChainFailed {
        /// The peer.
        peer: NodeId,
        /// Why.
        error: ChainSyncError,
    },
    /// This node's tree now mirrors `peer`'s (which had the higher version).
    TreeSynced {
        /// The peer.
        peer: NodeId,
        /// This node's tree now: the peer's version and root.
        state: TreeState,
        /// Tree sync bytes received by this pull (it descends only into subtrees that
        /// differ, so this grows with the difference, not with the tree).
        bytes_received: u64,
        /// Leaves (keys with their values) received.
        leaves: u64,
    },
    /// A tree pull from `peer` stopped; it starts again at the peer's next state.
    TreeFailed {
        /// The peer.
        peer: NodeId,
        /// Why.
        error: SyncError,
    },
    /// `peer`'s tree has this node's version and another root: neither side pulls.
    /// Reported once per root of the peer; [`Mesh::pull_tree`] mirrors it if the
    /// application decides so.
    TreeDiverged {
        /// The peer.
        peer: NodeId,
        /// This node's tree.
        ours: TreeState,
        /// The peer's tree.
        theirs: TreeState,
    },
}

/// Why a mesh operation failed.
///
/// A message or request that was accepted fails with one of [`MeshError::NoRoute`],
/// [`MeshError::HopLimit`], [`MeshError::Timeout`] or [`MeshError::PeerClosed`] (the
/// core's [`SendFailure`]s); one refused at once with [`MeshError::Full`],
/// [`MeshError::TooLarge`] or [`MeshError::InvalidTarget`].
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The mesh has shut down.
    #[error("the mesh is shut down")]
    Stopped,
    /// Too many messages and requests are unanswered, or the link's send queue is
    /// full; try again later.
    #[error("send queue full")]
    Full,
    /// The message is larger than a frame can carry (16 MiB less the envelope).
    #[error("message too large")]
    TooLarge,
    /// A [`Target::Service`] name must be 1 to 255 bytes.
    #[error("invalid target: a service name must be 1 to 255 bytes")]
    InvalidTarget,
    /// No link and no route to the node, and no address to dial it at.
    #[error("no route to {0}")]
    NoRoute(NodeId),
    /// The node is more than [`MAX_HOPS`] links away.
    #[error("{0} is more than {MAX_HOPS} links away")]
    HopLimit(NodeId),
    /// No receipt (message) or response (request) arrived in time.
    #[error("no answer from {0} in time")]
    Timeout(NodeId),
    /// The node's own link closed and it could not be reached another way in time.
    #[error("{node} closed the link: {reason}")]
    PeerClosed {
        /// The destination.
        node: NodeId,
        /// Why its link closed.
        reason: CloseReason,
    },
    /// Not delivered for a reason this driver does not know (a newer core).
    #[error("not delivered to {to}: {reason}")]
    Undelivered {
        /// The destination.
        to: NodeId,
        /// Why.
        reason: SendFailure,
    },
    /// Refused by the core for a reason this driver does not know (a newer core).
    #[error("refused: {0}")]
    Refused(NodeSendError),
    /// Nobody in the cluster provides the service (asked, or recently asked).
    #[error("no provider of service {0:?}")]
    NotFound(String),
    /// The service's providers are known, but every one failed recently (their
    /// circuit breakers are open).
    #[error("every provider of service {0:?} failed recently")]
    Unavailable(String),
    /// A service or process entry was refused (invalid name or metadata, limits).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An address did not parse.
    #[error(transparent)]
    BadAddr(#[from] AddrError),
    /// A chain append was refused: no chain store, an invalid entry, or the store
    /// refused it.
    #[error("chain: {0}")]
    Chain(#[from] ChainWriteError),
    /// A tree write was refused: no tree store, or a key or value too large.
    #[error("tree: {0}")]
    Tree(#[from] TreeWriteError),
}

impl MeshError {
    /// The error for a message or request to `to` that failed with `reason`.
    pub(crate) fn failed(to: NodeId, reason: SendFailure) -> MeshError {
        match reason {
            SendFailure::NoRoute => MeshError::NoRoute(to),
            SendFailure::HopLimit => MeshError::HopLimit(to),
            SendFailure::Timeout => MeshError::Timeout(to),
            SendFailure::PeerClosed(reason) => MeshError::PeerClosed { node: to, reason },
            reason => MeshError::Undelivered { to, reason },
        }
    }

    /// The error for a message, request or response the core refused.
    pub(crate) fn refused(error: NodeSendError) -> MeshError {
        match error {
            NodeSendError::Full => MeshError::Full,
            NodeSendError::TooLarge => MeshError::TooLarge,
            NodeSendError::InvalidTarget => MeshError::InvalidTarget,
            other => MeshError::Refused(other),
        }
    }
}

/// A service one member provides, as listed by [`Mesh::services`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServiceSummary {
    /// The provider.
    pub node: NodeId,
    /// The service.
    pub name: String,
    /// What the provider advertised with it.
    pub metadata: Bytes,
}

/// A process in the distributed process table, as listed by [`Mesh::processes`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProcessSummary {
    /// The node it runs on.
    pub node: NodeId,
    /// Its id on that node.
    pub pid: u64,
    /// Its name.
    pub name: String,
    /// What its node registered with it.
    pub metadata: Bytes,
}

/// A node reachable from this one, as listed by [`Mesh::routes`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RouteSummary {
    /// The destination.
    pub node: NodeId,
    /// The neighbour envelopes for it are handed to (the node itself if linked).
    pub next_hop: NodeId,
    /// Links to the destination (1: a neighbour).
    pub hops: u8,
}

/// Answers one [`MeshEvent::Request`]. Cheap to clone (every subscriber gets a copy);
/// the first answer reaches the requester, later ones are ignored by it.
#[derive(Clone)]
pub struct Responder {
    token: RequestToken,
    commands: Commands,
}

impl Responder {
    pub(crate) fn new(token: RequestToken, commands: Commands) -> Self {
        Responder { token, commands }
    }

    /// Who asked.
    pub fn requester(&self) -> NodeId {
        self.token.from
    }

    /// Send `data` back to the requester. Returns once the response is queued; it is
    /// not acknowledged (if it is lost, the requester times out).
    pub async fn respond(&self, data: impl Into<Bytes>) -> Result<(), MeshError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Respond {
            token: self.token,
            data: data.into(),
            reply,
        };
        self.commands.submit(command).await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }
}

impl PartialEq for Responder {
    fn eq(&self, other: &Self) -> bool {
        self.token == other.token
    }
}

impl Eq for Responder {}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Why [`MeshBuilder::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// An address did not parse.
    #[error(transparent)]
    BadAddr(#[from] AddrError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Addr,
        /// The error.
        source: std::io::Error,
    },
    /// The tree store given to [`MeshBuilder::tree_store`] holds an entry too large
    /// for a tree (a key over 1 KiB or a value over 1 MiB).
    #[error("tree store: {0}")]
    Tree(#[from] merkle::EntryError),
}

/// Configures a mesh node; [`MeshBuilder::start`] runs it.
pub struct MeshBuilder<R> {
    runtime: R,
    transports: Transports,
    subscribers: Subscribers,
    identity: Option<Identity>,
    config: NodeConfig,
    listen: Vec<String>,
    seeds: Vec<String>,
    advertise: Vec<String>,
    connect_timeout: Duration,
    discovery: Vec<Arc<dyn DiscoveryBackend>>,
    discovery_interval: Duration,
    stores: Vec<Plug>,
}

impl<R: Runtime> MeshBuilder<R> {
    /// A builder on `runtime` with a fresh identity, the development genesis
    /// ([`DEV_GENESIS`]), PQ `Prefer` and default limits.
    pub fn new(runtime: R) -> Self {
        MeshBuilder {
            transports: Transports(runtime.transports()),
            runtime,
            subscribers: Subscribers::default(),
            identity: None,
            config: NodeConfig::new(DEV_GENESIS),
            listen: Vec::new(),
            seeds: Vec::new(),
            advertise: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            discovery: Vec::new(),
            discovery_interval: Duration::from_secs(30),
            stores: Vec::new(),
        }
    }

    /// The node's identity (default: a fresh one).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The cluster's governance genesis hash; peers with another are rejected.
    pub fn genesis(mut self, genesis: [u8; 32]) -> Self {
        self.config.link.handshake.genesis = genesis;
        self
    }

    /// Listen on `addr` (`tcp://host:port` or `ws://host:port/path`; port 0 picks one).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen.push(addr.into());
        self
    }

    /// Keep a connection to `addr`, redialing with backoff.
    pub fn seed(mut self, addr: impl Into<String>) -> Self {
        self.seeds.push(addr.into());
        self
    }

    /// Also find cluster members through `backend` (repeatable: every backend is
    /// used). It is polled when the node starts and then every
    /// [`MeshBuilder::discovery_interval`], each poll given at most
    /// [`crate::DISCOVERY_TIMEOUT`]; every address it reports that was not reported
    /// before becomes a seed, as with [`Mesh::connect`] (at most
    /// [`crate::MAX_DISCOVERED`] addresses in all; the node's own listen and
    /// advertised addresses are skipped). A failed poll is logged and retried at the
    /// next interval.
    pub fn discovery(mut self, backend: impl DiscoveryBackend) -> Self {
        self.discovery.push(Arc::new(backend));
        self
    }

    /// How often the [`MeshBuilder::discovery`] backends are polled (default 30 s;
    /// at least 10 ms).
    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = interval;
        self
    }

    /// Tell other nodes they can dial this one at `addr` (repeatable). Default: the
    /// bound listen addresses (ports resolved), except wildcard ones (`0.0.0.0`,
    /// `[::]`), which mean nothing elsewhere: a node listening on a wildcard should
    /// advertise the address others reach it at.
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise.push(addr.into());
        self
    }

    /// Post-quantum policy (default `Prefer`).
    pub fn pq(mut self, policy: PqPolicy) -> Self {
        self.config.link.handshake.pq = policy;
        self
    }

    /// Adjust limits and timeouts of the core.
    pub fn configure(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Give up on a dial after this long (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Add a transport, tried before the built-in TCP and WebSocket ones.
    pub fn transport(mut self, transport: std::sync::Arc<dyn crate::MeshTransport>) -> Self {
        self.transports.0.insert(0, transport);
        self
    }

    /// Keep `store` as this node's chain, an append-only, hash-linked log replicated
    /// with every peer that keeps one too: the node serves it to them and extends it
    /// from the peer furthest ahead, checking every entry's link, and stops pulling
    /// from a peer whose chain forks from it ([`MeshEvent::ChainForked`]). Write with
    /// [`Mesh::append_chain`]; read with [`Mesh::chain_head`] and
    /// [`Mesh::chain_entries`]. [`weft_mesh::sync::chain::MemoryChain`] keeps one in
    /// memory.
    pub fn chain_store(mut self, store: impl ChainStore + Send + 'static) -> Self {
        self.stores.push(Box::new(move |node| {
            node.set_chain_store(store);
            Ok(())
        }));
        self
    }

    /// Keep `store` as this node's key/value tree at `version`, replicated with every
    /// peer that keeps one too: a node mirrors a peer whose tree has a higher version
    /// (and another root), moving only the subtrees that differ; equal versions with
    /// different roots are reported ([`MeshEvent::TreeDiverged`]). Write with
    /// [`Mesh::tree_insert`] and [`Mesh::tree_remove`] (each bumps the version), never
    /// behind the node's back. [`weft_mesh::sync::merkle::MemoryStore`] keeps one in
    /// memory. The tree is built over the store's entries at [`MeshBuilder::start`],
    /// which fails with [`StartError::Tree`] if one is too large.
    pub fn tree_store(mut self, store: impl KvStore + Send + 'static, version: u64) -> Self {
        self.stores.push(Box::new(move |node| {
            node.set_tree_store(store, version)
                .map_err(StartError::Tree)
        }));
        self
    }

    /// Receive every event from the start (nothing can happen before this subscription).
    pub fn subscribe(&mut self) -> Events {
        self.subscribers.add()
    }

    /// Bind the listeners, plug in the chain and tree stores and start the node in the
    /// background.
    pub async fn start(self) -> Result<Mesh<R>, StartError> {
        let listen = self
            .listen
            .iter()
            .map(|a| a.parse())
            .collect::<Result<Vec<Addr>, _>>()?;
        let seeds = self
            .seeds
            .iter()
            .map(|a| a.parse())
            .collect::<Result<Vec<Addr>, _>>()?;
        let advertise = self
            .advertise
            .iter()
            .map(|a| a.parse())
            .collect::<Result<Vec<Addr>, _>>()?;
        let mut listeners = Vec::new();
        for addr in listen {
            let bound = match self.transports.pick(&addr) {
                Ok(t) => t.listen(&addr).await,
                Err(e) => Err(e),
            };
            listeners.push(bound.map_err(|source| StartError::Listen { addr, source })?);
        }
        let identity = self
            .identity
            .unwrap_or_else(|| Identity::generate(&mut crate::os_rng()));
        let node_id = identity.node_id();
        let local_addrs: Vec<Addr> = listeners.iter().map(|(_, a)| a.clone()).collect();
        let mut config = self.config;
        if !advertise.is_empty() {
            config
                .advertise
                .extend(advertise.iter().map(Addr::to_string));
        } else if config.advertise.is_empty() {
            config.advertise = local_addrs
                .iter()
                .filter(|a| !is_wildcard(a))
                .map(Addr::to_string)
                .collect();
        }
        if config.epoch == 0 {
            // This run's registry entries replace those of earlier runs everywhere.
            config.epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_millis() as u64);
        }
        let discovery = Discovery {
            backends: self.discovery,
            interval: self.discovery_interval,
            own: local_addrs
                .iter()
                .cloned()
                .chain(config.advertise.iter().filter_map(|a| a.parse().ok()))
                .collect(),
        };
        let (queue, commands) = event_loop::spawn(event_loop::Setup {
            runtime: self.runtime,
            subscribers: self.subscribers.clone(),
            transports: self.transports.clone(),
            identity,
            config,
            listeners,
            seeds,
            connect_timeout: self.connect_timeout,
            discovery,
            stores: self.stores,
        })?;
        let local_addrs = Arc::new(local_addrs);
        Ok(Mesh {
            _queue: queue,
            commands,
            subscribers: self.subscribers,
            node_id,
            local_addrs,
            runtime: PhantomData,
        })
    }
}

/// Whether `addr`'s host is `0.0.0.0` or `[::]` (listen everywhere, dial nowhere).
fn is_wildcard(addr: &Addr) -> bool {
    let host = addr
        .host_port()
        .rsplit_once(':')
        .map_or("", |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

/// The genesis hash used when none is given: SHA-256 of `"weft-mesh development genesis"`.
pub const DEV_GENESIS: [u8; 32] = [
    0x87, 0xef, 0x91, 0xa8, 0x5e, 0x1a, 0x7c, 0x33, 0xc9, 0x40, 0x90, 0xce, 0xbe, 0xc7, 0xe5, 0x2e,
    0x14, 0xf6, 0xf2, 0xc6, 0xb8, 0xd1, 0x2c, 0x3e, 0x65, 0x27, 0xf7, 0xfd, 0x9c, 0x90, 0xf9, 0xed,
];

/// A running mesh node. Cheap to clone; all clones drive the same node.
pub struct Mesh<R> {
    /// Keeps the loop running while any handle exists.
    _queue: async_channel::Sender<Command>,
    commands: Commands,
    subscribers: Subscribers,
    node_id: NodeId,
    local_addrs: Arc<Vec<Addr>>,
    runtime: PhantomData<fn() -> R>,
}

impl<R> Clone for Mesh<R> {
    fn clone(&self) -> Self {
        Mesh {
            _queue: self._queue.clone(),
            commands: self.commands.clone(),
            subscribers: self.subscribers.clone(),
            node_id: self.node_id,
            local_addrs: self.local_addrs.clone(),
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime + Default> Mesh<R> {
    /// Start configuring a node on the default runtime handle.
    pub fn builder() -> MeshBuilder<R> {
        MeshBuilder::new(R::default())
    }
}

impl<R> Mesh<R> {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The addresses the node listens on (with ports resolved).
    pub fn local_addrs(&self) -> &[Addr] {
        &self.local_addrs
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.commands.submit(make(tx)).await?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// Send `data` to `target` at node `to` and wait until `to` confirms receipt.
    ///
    /// It goes over the link to `to` if there is one, else through other nodes along
    /// the routes they advertise (signed by this node, so that no relay can forge it),
    /// retransmitted while unanswered. `to` reports each message once. Use
    /// [`Target::Node`] for the node's application itself.
    pub async fn send(
        &self,
        to: NodeId,
        target: Target,
        data: impl Into<Bytes>,
    ) -> Result<(), MeshError> {
        let data = data.into();
        self.ask(|reply| Command::Send {
            to,
            target,
            data,
            reply,
        })
        .await?
    }

    /// Send a request to `target` at node `to` (directly or relayed, like
    /// [`Mesh::send`]) and wait for the response, at most `timeout`
    /// ([`MeshError::Timeout`] then). `to` sees a [`MeshEvent::Request`].
    pub async fn request(
        &self,
        to: NodeId,
        target: Target,
        data: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, MeshError> {
        let data = data.into();
        self.ask(|reply| Command::Request {
            to,
            target,
            data,
            timeout,
            reply,
        })
        .await?
    }

    /// Receive every event from now on (use [`MeshBuilder::subscribe`] to miss none).
    pub fn subscribe(&self) -> Events {
        self.subscribers.add()
    }

    /// The connected peers (the nodes this one has a link to).
    pub async fn peers(&self) -> Result<Vec<PeerSummary>, MeshError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Every node this one can reach, by node id: the peers (1 hop, next hop
    /// themselves) and the nodes behind them, with the neighbour that relays and the
    /// number of links.
    pub async fn routes(&self) -> Result<Vec<RouteSummary>, MeshError> {
        self.ask(|reply| Command::Routes { reply }).await
    }

    /// The cluster's members as this node's failure detector sees them (this node
    /// first); empty with membership off.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, MeshError> {
        self.ask(|reply| Command::Members { reply }).await
    }

    /// Advertise that this node provides service `name` (with up to 1 KiB of
    /// `metadata`); every member learns it, and forgets it when this node goes.
    pub async fn advertise(
        &self,
        name: impl Into<String>,
        metadata: impl Into<Bytes>,
    ) -> Result<(), MeshError> {
        let (name, metadata) = (name.into(), metadata.into());
        let entry = Entry::Service { name, metadata };
        self.ask(|reply| Command::Registry { entry, reply }).await?
    }

    /// Stop advertising service `name`.
    pub async fn withdraw(&self, name: impl Into<String>) -> Result<(), MeshError> {
        let entry = Entry::NoService { name: name.into() };
        self.ask(|reply| Command::Registry { entry, reply }).await?
    }

    /// Register process `pid` of this node in the distributed process table.
    pub async fn register_process(
        &self,
        pid: u64,
        name: impl Into<String>,
        metadata: impl Into<Bytes>,
    ) -> Result<(), MeshError> {
        let (name, metadata) = (name.into(), metadata.into());
        let entry = Entry::Process {
            pid,
            name,
            metadata,
        };
        self.ask(|reply| Command::Registry { entry, reply }).await?
    }

    /// Remove process `pid` of this node from the process table.
    pub async fn unregister_process(&self, pid: u64) -> Result<(), MeshError> {
        let entry = Entry::NoProcess { pid };
        self.ask(|reply| Command::Registry { entry, reply }).await?
    }

    /// Every member's services, as this node knows them.
    pub async fn services(&self) -> Result<Vec<ServiceSummary>, MeshError> {
        self.ask(|reply| Command::Services { reply }).await
    }

    /// The distributed process table, as this node knows it.
    pub async fn processes(&self) -> Result<Vec<ProcessSummary>, MeshError> {
        self.ask(|reply| Command::Processes { reply }).await
    }

    /// A node that provides service `name`: from the registry (round robin among
    /// providers, skipping those that failed recently), else from the cache, else by
    /// asking a few peers ([`MeshError::NotFound`] if nobody knows one; that answer
    /// is cached for 30 s).
    pub async fn resolve(&self, name: impl Into<String>) -> Result<NodeId, MeshError> {
        self.resolve_with(name.into(), Strategy::RoundRobin).await
    }

    /// [`Mesh::resolve`], but `preferred` whenever it provides `name` and its breaker
    /// is closed (say, the provider on this machine); round robin otherwise.
    pub async fn resolve_preferring(
        &self,
        name: impl Into<String>,
        preferred: NodeId,
    ) -> Result<NodeId, MeshError> {
        self.resolve_with(name.into(), Strategy::Preferred(preferred))
            .await
    }

    async fn resolve_with(&self, name: String, strategy: Strategy) -> Result<NodeId, MeshError> {
        self.ask(|reply| Command::Resolve {
            name,
            strategy,
            reply,
        })
        .await?
    }

    /// Report how a call to `provider` went, for the circuit breakers [`Mesh::resolve`]
    /// consults (three failures in a row skip it for 10 s).
    pub async fn provider_result(&self, provider: NodeId, ok: bool) -> Result<(), MeshError> {
        self.ask(|reply| Command::ProviderResult {
            provider,
            ok,
            reply,
        })
        .await
    }

    /// The mesh layer's counters (delivered, relayed, duplicates, ...).
    pub async fn stats(&self) -> Result<NodeStats, MeshError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Keep a connection to `addr` (like a seed).
    pub async fn connect(&self, addr: &str) -> Result<(), MeshError> {
        let addr: Addr = addr.parse()?;
        self.ask(|reply| Command::Connect { addr, reply }).await
    }

    /// Close every connection with an orderly Close and stop the node. Returns once
    /// the node has stopped (at most a couple of seconds).
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }
}

/// Events a subscriber's channel holds. Beyond it events wait in a backlog and the node
/// stops reading from its sockets until the subscriber catches up: nothing is dropped.
pub const EVENT_CAPACITY: usize = 4096;

/// The event subscribers, shared by the handles and the loop.
///
/// Events are never dropped: what a subscriber's channel cannot take waits in its
/// backlog, and while any backlog exists the loop stops reading sockets, so a slow
/// subscriber slows the peers down (TCP flow control, then their `Full` send queues)
/// instead of losing messages that were already acknowledged.
#[derive(Clone, Default)]
pub(crate) struct Subscribers(Arc<std::sync::Mutex<Vec<Subscriber>>>);

struct Subscriber {
    tx: async_channel::Sender<MeshEvent>,
    backlog: std::collections::VecDeque<MeshEvent>,
}

impl Subscriber {
    /// Move backlog into the channel while it has room; false once the receiver is gone.
    fn flush(&mut self) -> bool {
        while let Some(event) = self.backlog.pop_front() {
            match self.tx.try_send(event) {
                Ok(()) => {}
                Err(async_channel::TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    return true;
                }
                Err(async_channel::TrySendError::Closed(_)) => return false,
            }
        }
        !self.tx.is_closed()
    }
}

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self) -> Events {
        let (tx, rx) = async_channel::bounded(EVENT_CAPACITY);
        self.lock().push(Subscriber {
            tx,
            backlog: Default::default(),
        });
        Events { rx: Box::pin(rx) }
    }

    /// Give `event` to every live subscriber (into its backlog if its channel is full).
    pub(crate) fn publish(&self, event: &MeshEvent) {
        let mut subs = self.lock();
        for s in subs.iter_mut() {
            s.backlog.push_back(event.clone());
        }
        subs.retain_mut(Subscriber::flush);
    }

    /// Move backlogs into channels that have room; true while some backlog remains.
    pub(crate) fn flush(&self) -> bool {
        let mut subs = self.lock();
        subs.retain_mut(Subscriber::flush);
        subs.iter().any(|s| !s.backlog.is_empty())
    }

    /// End every subscription (the mesh stopped).
    pub(crate) fn close(&self) {
        self.lock().clear();
    }
}

/// A subscription to [`MeshEvent`]s. Ends when the mesh stops.
pub struct Events {
    rx: Pin<Box<async_channel::Receiver<MeshEvent>>>,
}

impl Events {
    /// The next event, or `None` once the mesh has stopped.
    pub async fn next(&mut self) -> Option<MeshEvent> {
        self.rx.recv().await.ok()
    }
}

impl Stream for Events {
    type Item = MeshEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MeshEvent>> {
        self.rx.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_not_advertised() {
        for (addr, wildcard) in [
            ("tcp://0.0.0.0:7000", true),
            ("tcp://[::]:7000", true),
            ("ws://0.0.0.0:7001/mesh", true),
            ("tcp://127.0.0.1:7000", false),
            ("tcp://[::1]:7000", false),
            ("ws://node.example:7001/mesh", false),
        ] {
            assert_eq!(is_wildcard(&addr.parse().unwrap()), wildcard, "{addr}");
        }
    }
}
