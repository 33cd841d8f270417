//! The event loop, written once for every runtime: one task owns the core [`Node`];
//! per connection a reader task feeds it bytes and a writer task writes what it pulls.
//!
//! * Writes are pulled from the core only when the connection's writer has room (at
//!   most [`IN_FLIGHT`] transmissions queued), so records are sealed at the last moment.
//! * One timer, armed at the node's next deadline.
//! * Bounded work per wake-up: at most [`BATCH`] I/O events before timers and commands
//!   get another look.
//! * A socket error ends only that connection.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{self, AbortHandle, Either};
use futures::{FutureExt, StreamExt};
use tracing::{debug, info, info_span, warn, Instrument, Span};
use weft_mesh::link::MAX_TRANSMIT;
use weft_mesh::mesh::Target;
use weft_mesh::node::{
    Action, ConnId, MessageId, Node, NodeConfig, NodeEvent, NodeStats, PeerSummary, RequestToken,
};
use weft_mesh::{Identity, Instant, NodeId};

use crate::discovery::{self, Discovery};
use crate::mesh::{Responder, RouteSummary, Subscribers};
use crate::runtime::{Incoming, TransportListener, Transports};
use crate::{os_rng, Addr, MeshError, MeshEvent, MeshStream, Runtime};

/// Transmissions queued to one writer before the loop stops pulling for it.
const IN_FLIGHT: usize = 2;
/// I/O events handled per wake-up before timers and commands are looked at again.
const BATCH: usize = 256;
/// Accepted connections still in their WebSocket upgrade, at most.
const MAX_UPGRADES: usize = 256;
/// How often a backlogged subscriber is offered its events again.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);
/// How long a closed connection keeps reading (and discarding) before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// How long an orderly shutdown may take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A request from a [`crate::Mesh`] handle.
pub(crate) enum Command {
    Send {
        to: NodeId,
        target: Target,
        data: Bytes,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Request {
        to: NodeId,
        target: Target,
        data: Bytes,
        timeout: Duration,
        reply: oneshot::Sender<Result<Bytes, MeshError>>,
    },
    Respond {
        token: RequestToken,
        data: Bytes,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerSummary>>,
    },
    Routes {
        reply: oneshot::Sender<Vec<RouteSummary>>,
    },
    Stats {
        reply: oneshot::Sender<NodeStats>,
    },
    Connect {
        addr: Addr,
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What the connection tasks report.
enum Io {
    Connected {
        conn: ConnId,
        wire: MeshStream,
    },
    DialFailed {
        conn: ConnId,
        error: io::Error,
    },
    Accepted {
        wire: MeshStream,
        remote: String,
    },
    Bytes {
        conn: ConnId,
        data: Vec<u8>,
    },
    /// The writer wrote one transmission; the buffer comes back for reuse.
    Written {
        conn: ConnId,
        buf: Vec<u8>,
    },
    Closed {
        conn: ConnId,
        error: Option<io::Error>,
    },
}

pub(crate) struct Setup<R> {
    pub runtime: R,
    pub subscribers: Subscribers,
    pub identity: Identity,
    pub config: NodeConfig,
    pub listeners: Vec<(TransportListener, Addr)>,
    pub transports: Transports,
    pub seeds: Vec<Addr>,
    pub connect_timeout: Duration,
    pub discovery: Discovery,
}

/// A connection the loop knows: its writer queue and reader task.
struct Conn {
    /// Transmissions as (buffer, bytes used): buffers keep their full length, so that
    /// reusing one never zero-fills it again.
    writer: Option<async_channel::Sender<(Vec<u8>, usize)>>,
    in_flight: usize,
    /// Abort the reader and the writer task (a writer can block on a peer that stopped
    /// reading; nothing else would ever end it).
    tasks: Vec<AbortHandle>,
    span: Span,
}

impl Conn {
    /// A connection whose socket is not attached yet.
    fn new(span: Span) -> Self {
        Conn {
            writer: None,
            in_flight: 0,
            tasks: Vec::new(),
            span,
        }
    }
}

/// A handle waiting for the outcome of a message or request it sent.
enum Waiter {
    Send(oneshot::Sender<Result<(), MeshError>>),
    Request(oneshot::Sender<Result<Bytes, MeshError>>),
}

impl Waiter {
    fn fail(self, error: MeshError) {
        match self {
            Waiter::Send(reply) => drop(reply.send(Err(error))),
            Waiter::Request(reply) => drop(reply.send(Err(error))),
        }
    }
}

struct EventLoop<R> {
    runtime: R,
    node: Node,
    started: std::time::Instant,
    io_tx: async_channel::Sender<Io>,
    /// For the responders handed out with requests (weak: the handles alone keep the
    /// node running).
    commands: async_channel::WeakSender<Command>,
    conns: HashMap<ConnId, Conn>,
    subscribers: Subscribers,
    /// Messages and requests of the handles, until the core reports their outcome.
    waiting: HashMap<MessageId, Waiter>,
    spare: Vec<Vec<u8>>,
    tasks: Vec<AbortHandle>,
    connect_timeout: Duration,
    transports: Transports,
    upgrades: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Option<(std::time::Instant, Vec<oneshot::Sender<()>>)>,
}

/// Start the loop; returns the command channel of its handles.
pub(crate) fn spawn<R: Runtime>(setup: Setup<R>) -> async_channel::Sender<Command> {
    let (cmd_tx, cmd_rx) = async_channel::bounded(1024);
    let (io_tx, io_rx) = async_channel::bounded(4096);
    let node_id = setup.identity.node_id();
    let span = info_span!("mesh", node = %node_id.short());
    let mut node = Node::new(setup.identity.into(), setup.config, os_rng());
    let started = std::time::Instant::now();
    for seed in &setup.seeds {
        node.add_seed(Instant::ZERO, seed.to_string());
    }
    let mut el = EventLoop {
        runtime: setup.runtime.clone(),
        node,
        started,
        io_tx,
        commands: cmd_tx.downgrade(),
        conns: HashMap::new(),
        subscribers: setup.subscribers,
        waiting: HashMap::new(),
        spare: Vec::new(),
        tasks: Vec::new(),
        connect_timeout: setup.connect_timeout,
        transports: setup.transports,
        upgrades: Default::default(),
        shutdown: None,
    };
    let _guard = span.enter();
    for (listener, addr) in setup.listeners {
        info!(%addr, "listening");
        el.spawn_acceptor(listener);
    }
    if !setup.discovery.backends.is_empty() {
        // Aborted with the acceptors when the node shuts down.
        let run = discovery::run(setup.runtime.clone(), setup.discovery, cmd_tx.downgrade());
        let (task, handle) = future::abortable(run);
        el.tasks.push(handle);
        setup
            .runtime
            .spawn(task.map(|_| ()).instrument(info_span!("discovery")));
    }
    drop(_guard);
    setup.runtime.spawn(el.run(cmd_rx, io_rx).instrument(span));
    cmd_tx
}

impl<R: Runtime> EventLoop<R> {
    fn now(&self) -> Instant {
        Instant::from_micros(self.started.elapsed().as_micros() as u64)
    }

    async fn run(
        mut self,
        commands: async_channel::Receiver<Command>,
        io: async_channel::Receiver<Io>,
    ) {
        let io_batch = io.clone();
        let mut commands = std::pin::pin!(commands.fuse());
        let mut io = std::pin::pin!(io.fuse());
        // The armed timer and when it fires. It is replaced only by an earlier deadline
        // (or after it fired): a later one just means one early, harmless wake-up, and
        // re-registering a timer on every message costs more than that.
        let mut armed: Option<(std::time::Instant, futures::future::Fuse<_>)> = None;
        loop {
            let now = self.now();
            self.node.handle_timeout(now);
            self.drain_node();
            if let Some((deadline, _)) = &self.shutdown {
                if self.node.is_idle() || std::time::Instant::now() >= *deadline {
                    break;
                }
            }
            let wait = self
                .node
                .poll_timeout()
                .map(|t| {
                    Duration::from_micros(t.as_micros().saturating_sub(self.now().as_micros()))
                })
                .unwrap_or(Duration::from_secs(3600));
            // A subscriber's backlog pauses socket reads (backpressure); look again soon.
            let backlogged = self.subscribers.flush();
            let wait = if self.shutdown.is_some() || backlogged {
                wait.min(if backlogged {
                    BACKLOG_RETRY
                } else {
                    Duration::from_millis(50)
                })
            } else {
                wait
            };
            let at = std::time::Instant::now() + wait;
            if armed.as_ref().is_some_and(|(armed_at, _)| at < *armed_at) {
                armed = None;
            }
            let runtime = &self.runtime;
            let mut timer = &mut armed
                .get_or_insert_with(|| (at, Box::pin(runtime.sleep(wait)).fuse()))
                .1;
            let mut fired = false;
            if backlogged {
                futures::select_biased! {
                    cmd = commands.next() => match cmd {
                        Some(cmd) => self.command(cmd),
                        None => self.begin_shutdown(None),
                    },
                    () = timer => fired = true,
                }
                if fired {
                    armed = None;
                }
                continue;
            }
            futures::select_biased! {
                cmd = commands.next() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => self.begin_shutdown(None),
                },
                event = io.next() => {
                    if let Some(event) = event {
                        self.io(event);
                        for _ in 1..BATCH {
                            if self.subscribers.flush() {
                                break;
                            }
                            match io_batch.try_recv() {
                                Ok(event) => self.io(event),
                                Err(_) => break,
                            }
                        }
                    }
                },
                () = timer => fired = true,
            }
            if fired {
                armed = None;
            }
        }
        self.stop();
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for (_, conn) in self.conns.drain() {
            conn.tasks.iter().for_each(AbortHandle::abort);
        }
        for (_, waiter) in self.waiting.drain() {
            waiter.fail(MeshError::Stopped);
        }
        self.subscribers.close();
        if let Some((_, waiters)) = self.shutdown.take() {
            for w in waiters {
                let _ = w.send(());
            }
        }
        info!("stopped");
    }

    fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        let now = self.now();
        let (_, waiters) = self
            .shutdown
            .get_or_insert_with(|| (std::time::Instant::now() + SHUTDOWN_GRACE, Vec::new()));
        waiters.extend(reply);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.node.shutdown(now);
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Send {
                to,
                target,
                data,
                reply,
            } => match self.node.send(now, to, target, &data) {
                Ok(id) => {
                    self.waiting.insert(id, Waiter::Send(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(MeshError::refused(e)));
                }
            },
            Command::Request {
                to,
                target,
                data,
                timeout,
                reply,
            } => match self.node.request(now, to, target, &data, timeout) {
                Ok(id) => {
                    self.waiting.insert(id, Waiter::Request(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(MeshError::refused(e)));
                }
            },
            Command::Respond { token, data, reply } => {
                let result = self.node.respond(now, token, &data);
                let _ = reply.send(result.map_err(MeshError::refused));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.node.peers().collect());
            }
            Command::Routes { reply } => {
                let routes = self.node.routes().map(|(node, route)| RouteSummary {
                    node,
                    next_hop: route.next_hop,
                    hops: route.hops,
                });
                let _ = reply.send(routes.collect());
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.node.stats());
            }
            Command::Connect { addr, reply } => {
                self.node.add_seed(now, addr.to_string());
                let _ = reply.send(());
            }
            Command::Shutdown { reply } => self.begin_shutdown(Some(reply)),
        }
        self.drain_node();
    }

    fn io(&mut self, event: Io) {
        let now = self.now();
        match event {
            Io::Connected { conn, wire } => {
                if self.conns.contains_key(&conn) {
                    self.attach(conn, wire);
                    self.pump(conn);
                }
            }
            Io::DialFailed { conn, error } => {
                if let Some(c) = self.conns.get(&conn) {
                    c.span.in_scope(|| debug!(%error, "dial failed"));
                }
                self.node.handle_closed(now, conn);
            }
            Io::Accepted { wire, remote } => match self.node.accept(now, Some(remote.clone())) {
                Ok(conn) => {
                    let span = info_span!("link", %conn, addr = %remote);
                    span.in_scope(|| debug!("accepted"));
                    self.conns.insert(conn, Conn::new(span));
                    self.attach(conn, wire);
                }
                Err(e) => warn!(addr = %remote, error = %e, "refused connection"),
            },
            Io::Bytes { conn, data } => self.node.handle_bytes(now, conn, &data),
            Io::Written { conn, buf } => {
                if self.spare.len() < 16 {
                    self.spare.push(buf);
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                    self.pump(conn);
                }
            }
            Io::Closed { conn, error } => {
                if let (Some(c), Some(error)) = (self.conns.get(&conn), error) {
                    c.span.in_scope(|| debug!(%error, "socket error"));
                }
                self.node.handle_closed(now, conn);
            }
        }
        self.drain_node();
    }

    /// Start the reader and writer tasks of a connected socket.
    fn attach(&mut self, conn: ConnId, wire: MeshStream) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let MeshStream {
            mut reader,
            mut writer,
        } = wire;
        let (tx, rx) = async_channel::bounded::<(Vec<u8>, usize)>(IN_FLIGHT);
        entry.writer = Some(tx);
        let io = self.io_tx.clone();
        let (write_task, write_handle) = future::abortable(
            async move {
                let mut error = None;
                while let Ok((buf, n)) = rx.recv().await {
                    if let Err(e) = writer.write(&buf[..n]).await {
                        error = Some(e);
                        break;
                    }
                    // The loop may already have stopped (shutdown); keep writing what is
                    // queued regardless, so the Close record still leaves.
                    let _ = io.send(Io::Written { conn, buf }).await;
                }
                match error {
                    Some(e) => {
                        let _ = io
                            .send(Io::Closed {
                                conn,
                                error: Some(e),
                            })
                            .await;
                    }
                    None => {
                        let _ = writer.close().await;
                    }
                }
            }
            .instrument(entry.span.clone()),
        );
        entry.tasks.push(write_handle);
        self.runtime.spawn(write_task.map(|_| ()));
        let io = self.io_tx.clone();
        let (read_task, handle) = future::abortable(async move {
            // One buffer for the connection's life; each read hands over a copy of just
            // the bytes that arrived.
            let mut buf = vec![0u8; crate::stream::READ_BUFFER];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => break io.send(Io::Closed { conn, error: None }).await,
                    Ok(n) => {
                        if io
                            .send(Io::Bytes {
                                conn,
                                data: buf[..n].to_vec(),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        break io
                            .send(Io::Closed {
                                conn,
                                error: Some(e),
                            })
                            .await
                    }
                }
            }
            .ok();
        });
        entry.tasks.push(handle);
        self.runtime
            .spawn(read_task.map(|_| ()).instrument(entry.span.clone()));
    }

    /// Pull transmissions for `conn` while its writer has room.
    fn pump(&mut self, conn: ConnId) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(writer) = &c.writer else { return };
        while c.in_flight < IN_FLIGHT {
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.resize(MAX_TRANSMIT, 0); // only a fresh buffer is filled
            let Some(n) = self.node.poll_transmit(now, conn, &mut buf) else {
                self.spare.push(buf);
                break;
            };
            if let Err(e) = writer.try_send((buf, n)) {
                tracing::warn!(%conn, closed = e.is_closed(), "writer refused a transmission");
                break;
            }
            c.in_flight += 1;
        }
    }

    /// Carry out the node's actions and deliver its events.
    fn drain_node(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Dial { conn, addr } => self.dial(conn, addr),
                Action::Transmit { conn } => self.pump(conn),
                Action::Close { conn } => {
                    if let Some(c) = self.conns.remove(&conn) {
                        c.span.in_scope(|| debug!("closed"));
                        // Dropping the writer's sender lets it write what is queued and
                        // shut down its side. The reader keeps draining until the peer
                        // closes too: closing a socket with unread bytes sends a reset,
                        // which would destroy our Close record. After LINGER both tasks
                        // end whatever the peer does, and the socket with them.
                        if !c.tasks.is_empty() {
                            let sleep = self.runtime.sleep(LINGER);
                            self.runtime.spawn(async move {
                                sleep.await;
                                c.tasks.iter().for_each(AbortHandle::abort);
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some(event) = self.node.poll_event() {
            self.node_event(event);
        }
    }

    fn dial(&mut self, conn: ConnId, addr: String) {
        let span = info_span!("link", %conn, %addr);
        span.in_scope(|| debug!("dialing"));
        self.conns.insert(conn, Conn::new(span.clone()));
        let io = self.io_tx.clone();
        let (runtime, timeout) = (self.runtime.clone(), self.connect_timeout);
        let connect = addr
            .parse::<Addr>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
            .and_then(|addr| Ok(self.transports.pick(&addr)?.connect(&addr)));
        self.runtime.spawn(
            async move {
                let result = match connect {
                    Ok(connect) => {
                        match future::select(connect, Box::pin(runtime.sleep(timeout))).await {
                            Either::Left((result, _)) => result,
                            Either::Right(_) => {
                                Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                            }
                        }
                    }
                    Err(e) => Err(e),
                };
                let _ = io
                    .send(match result {
                        Ok(wire) => Io::Connected { conn, wire },
                        Err(error) => Io::DialFailed { conn, error },
                    })
                    .await;
            }
            .instrument(span),
        );
    }

    fn spawn_acceptor(&mut self, mut listener: TransportListener) {
        let io = self.io_tx.clone();
        let runtime = self.runtime.clone();
        let upgrades = self.upgrades.clone();
        let timeout = self.node.config().link.handshake_timeout;
        let (task, handle) = future::abortable(async move {
            while let Some(incoming) = listener.next().await {
                let incoming: Incoming = match incoming {
                    Ok(i) => i,
                    Err(error) => {
                        warn!(%error, "accept failed");
                        runtime.sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                use std::sync::atomic::Ordering::Relaxed;
                if upgrades.fetch_add(1, Relaxed) >= MAX_UPGRADES {
                    upgrades.fetch_sub(1, Relaxed);
                    warn!("too many connections in transport setup; dropping one");
                    continue;
                }
                let (io, upgrades, sleep) = (io.clone(), upgrades.clone(), runtime.sleep(timeout));
                runtime.spawn(async move {
                    if let Either::Left((Ok((wire, remote)), _)) =
                        future::select(incoming, Box::pin(sleep)).await
                    {
                        let _ = io.send(Io::Accepted { wire, remote }).await;
                    }
                    upgrades.fetch_sub(1, Relaxed);
                });
            }
        });
        self.tasks.push(handle);
        self.runtime.spawn(task.map(|_| ()).in_current_span());
    }

    fn node_event(&mut self, event: NodeEvent) {
        let mesh_event = match event {
            NodeEvent::Delivered { id, .. } => {
                if let Some(Waiter::Send(reply)) = self.waiting.remove(&id) {
                    let _ = reply.send(Ok(()));
                }
                return;
            }
            NodeEvent::Response { id, payload, .. } => {
                if let Some(Waiter::Request(reply)) = self.waiting.remove(&id) {
                    let _ = reply.send(Ok(payload));
                }
                return;
            }
            NodeEvent::SendFailed { to, id, reason } => {
                if let Some(waiter) = self.waiting.remove(&id) {
                    waiter.fail(MeshError::failed(to, reason));
                }
                return;
            }
            NodeEvent::PeerUp {
                node,
                addr,
                hybrid,
                conn,
                ..
            } => {
                if let Some(c) = self.conns.get(&conn) {
                    c.span
                        .in_scope(|| info!(peer = %node.short(), hybrid, "peer up"));
                }
                MeshEvent::PeerUp { node, addr, hybrid }
            }
            NodeEvent::PeerDown { node, reason, .. } => {
                info!(peer = %node.short(), %reason, "peer down");
                MeshEvent::PeerDown { node, reason }
            }
            NodeEvent::Rejected { addr, reason, .. } => {
                info!(addr = addr.as_deref().unwrap_or("?"), %reason, "connection rejected");
                MeshEvent::Rejected { addr, reason }
            }
            NodeEvent::Message {
                from,
                target,
                payload,
                hops,
            } => MeshEvent::Message {
                from,
                target,
                data: payload,
                hops,
            },
            NodeEvent::Request {
                from,
                target,
                payload,
                hops,
                request,
            } => MeshEvent::Request {
                from,
                target,
                data: payload,
                hops,
                responder: Responder::new(request, self.commands.clone()),
            },
            _ => return,
        };
        self.subscribers.publish(&mesh_event);
    }
}
