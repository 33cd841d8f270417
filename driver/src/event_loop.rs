//! The event loop, written once for every runtime: one task drives the core [`Node`]
//! and every connection's socket. It reads each socket, feeds the bytes to the core and
//! writes what the core pulls out, itself: no task stands between a socket and the core.
//! Its state sits behind a lock that the task holds only while it works, and a handle's
//! message (send, request, response) runs on the caller's thread while the lock is free,
//! writing its record straight to the socket ([`Commands`]): a message costs no
//! hand-off on its way out, one (to the application) on its way in.
//!
//! * Per connection, a reader (a stream polled only when its socket woke the loop) and
//!   a writer (the socket's sending half and one transmission buffer). Transmissions are
//!   pulled from the core only when the socket took the previous one, so records are
//!   sealed at the last moment.
//! * One timer, armed at the node's next deadline.
//! * Bounded work per wake-up: at most [`BATCH`] commands, setup results and reads per
//!   round, [`ROUNDS`] rounds, then the loop yields to the runtime.
//! * A socket error ends only that connection.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{AcqRel, Release},
};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{self, AbortHandle, Either};
use futures::task::{ArcWake, AtomicWaker};
use futures::{FutureExt, Stream, StreamExt};
use tracing::{debug, info, info_span, warn, Instrument, Span};
use weft_mesh::link::MAX_TRANSMIT;
use weft_mesh::membership::{MemberEvent, MemberInfo};
use weft_mesh::mesh::Target;
use weft_mesh::node::{
    Action, ConnId, MessageId, Node, NodeConfig, NodeEvent, NodeStats, PeerSummary, RequestToken,
};
use weft_mesh::resolve::{QueryId, Resolution, ResolveError, Strategy};
use weft_mesh::{Identity, Instant, NodeId};

use crate::discovery::{self, Discovery};
use crate::mesh::{ProcessSummary, Responder, RouteSummary, ServiceSummary, Subscribers};
use crate::replication::{self, Plug, SyncCommand};
use crate::runtime::{Incoming, Timer, TransportListener, Transports};
use crate::stream::{ReadHalf, WriteHalf};
use crate::{os_rng, Addr, MeshError, MeshEvent, MeshStream, Runtime};

/// Commands, setup results or socket reads handled per round of a wake-up.
const BATCH: usize = 64;
/// Reads of one socket before the others get their turn.
const READS_PER_TURN: usize = 4;
/// Rounds per wake-up before the loop yields to the runtime's other tasks.
const ROUNDS: usize = 8;
/// Accepted connections still in their WebSocket upgrade, at most.
const MAX_UPGRADES: usize = 256;
/// How far ahead of now the timer follows a deadline that moved later. Traffic moves
/// the node's deadline back and forth (a request: its retransmission, in a second; the
/// answer: the receipt held for the next request, in `receipt_delay`, 1 ms by
/// default): following it only this far keeps every move later, which is cheap,
/// where moving earlier re-files the timer and may wake the runtime's timer thread. An
/// idle loop pays for it with one early wake-up, after which the timer goes to the
/// exact deadline.
const TIMER_HORIZON: Duration = Duration::from_millis(1);
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
    Members {
        reply: oneshot::Sender<Vec<MemberInfo>>,
    },
    Registry {
        entry: Entry,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Services {
        reply: oneshot::Sender<Vec<ServiceSummary>>,
    },
    Processes {
        reply: oneshot::Sender<Vec<ProcessSummary>>,
    },
    Resolve {
        name: String,
        strategy: Strategy,
        reply: oneshot::Sender<Result<NodeId, MeshError>>,
    },
    ProviderResult {
        provider: NodeId,
        ok: bool,
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    Sync(SyncCommand),
}

/// Where a handle's commands go. A message (send, request, response) runs at once, on
/// the caller's thread, when the loop is between wake-ups (its lock is free) and nothing
/// is queued for it: the record is sealed and written to its socket without waking the
/// loop's task, which saves two task hand-offs on every request/response round trip.
/// Otherwise, and for every other command, it is queued for the loop. Either way
/// [`EventLoop::command`] runs it, and a handle's commands run in the order submitted.
///
/// A transport's writer may therefore be polled from a handle's thread, which need not
/// be one of the runtime's: it must not spawn or create timers while writing.
#[derive(Clone)]
pub(crate) struct Commands {
    queue: async_channel::WeakSender<Command>,
    inline: Weak<dyn Inline>,
}

impl Commands {
    /// Run `command` now if it may, else queue it; `Stopped` once the loop is gone.
    pub(crate) async fn submit(&self, command: Command) -> Result<(), MeshError> {
        let queue = self.queue.upgrade().ok_or(MeshError::Stopped)?;
        let message = matches!(
            command,
            Command::Send { .. } | Command::Request { .. } | Command::Respond { .. }
        );
        // Queued commands go first: running this one now would overtake them.
        let command = match self.inline.upgrade() {
            Some(inline) if message && queue.is_empty() => match inline.try_run(command) {
                Ok(()) => return Ok(()),
                Err(command) => command,
            },
            _ => command,
        };
        queue.send(command).await.map_err(|_| MeshError::Stopped)
    }
}

/// The loop's state, run from a handle's thread.
pub(crate) trait Inline: Send + Sync {
    /// Run `command` unless the loop is busy or stopped (then it comes back).
    fn try_run(&self, command: Command) -> Result<(), Command>;
}

impl<R: Runtime> Inline for Mutex<EventLoop<R>> {
    fn try_run(&self, command: Command) -> Result<(), Command> {
        // Busy, or poisoned by a panic: the loop's queue.
        let Ok(mut el) = self.try_lock() else {
            return Err(command);
        };
        // Like Nagle's rule: a node with messages awaiting their answer is streaming,
        // and the loop packs what its round gathers into full records and few writes;
        // one that is idle (request/response) gains most from writing at once.
        if el.stopped || el.shutdown.is_some() || !el.waiting.is_empty() {
            return Err(command);
        }
        el.clock = std::time::Instant::now();
        el.inline = true;
        // Sockets still writing a backlog (full, or the loop about to write) are the
        // loop's: what the command queues leaves after that backlog, when the socket
        // wakes the loop. Only idle sockets are written here.
        let backlog = el.writable.len();
        el.command(command);
        let waker = el.waker.clone();
        if backlog == 0 {
            el.write(&mut Context::from_waker(&waker));
        }
        el.drain_node();
        el.inline = false;
        // The node's deadline moved (a receipt rode along, a message awaits its own):
        // so does the loop's timer, which keeps the loop's waker. Unarmed, it fired and
        // the loop is about to run anyway.
        el.due = el.node_due();
        if el.armed.is_some() {
            el.arm();
        }
        // Wake the loop if a socket with no backlog to wake it still has bytes, actions
        // wait for it, or a subscriber's backlog needs its retry timer.
        let wake = (backlog > 0 && el.writable.len() > backlog)
            || (backlog == 0 && !el.writable.is_empty())
            || !el.deferred.is_empty()
            || el.subscribers.flush();
        drop(el);
        if wake {
            waker.wake();
        }
        Ok(())
    }
}

/// A change to this node's registry entries.
pub(crate) enum Entry {
    Service {
        name: String,
        metadata: Bytes,
    },
    NoService {
        name: String,
    },
    Process {
        pid: u64,
        name: String,
        metadata: Bytes,
    },
    NoProcess {
        pid: u64,
    },
}

/// What the connection setup tasks report.
enum Io {
    Connected { conn: ConnId, wire: MeshStream },
    DialFailed { conn: ConnId, error: io::Error },
    Accepted { wire: MeshStream, remote: String },
}

/// The connections whose socket woke the loop, to be read. (A `FuturesUnordered` of
/// readers would do the bookkeeping, but it wakes its task again whenever all its
/// members are pending, and a task that wakes itself is handed to another thread by a
/// multi-threaded runtime: a thread switch after every read.)
#[derive(Default)]
struct Woken {
    conns: std::sync::Mutex<Vec<ConnId>>,
    event_loop: AtomicWaker,
}

impl Woken {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ConnId>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_conns(&self) -> bool {
        !self.lock().is_empty()
    }
}

/// The waker a connection's socket is read with: queues the connection, wakes the loop.
struct ReadWaker {
    conn: ConnId,
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl ArcWake for ReadWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        if !this.queued.swap(true, AcqRel) {
            this.woken.lock().push(this.conn);
            this.woken.event_loop.wake();
        }
    }
}

/// A socket's receiving half, read in place into one buffer for the connection's life.
struct Reader {
    half: ReadHalf,
    buf: Vec<u8>,
    flag: Arc<ReadWaker>,
    waker: Waker,
}

impl Reader {
    fn new(half: ReadHalf, conn: ConnId, woken: &Arc<Woken>) -> Self {
        let flag = Arc::new(ReadWaker {
            conn,
            queued: AtomicBool::new(false),
            woken: woken.clone(),
        });
        Reader {
            half,
            buf: vec![0u8; crate::stream::READ_BUFFER],
            waker: futures::task::waker(flag.clone()),
            flag,
        }
    }

    /// Read and discard until the peer closes (a closed connection lingering).
    async fn drain(mut self) {
        while let Ok(1..) = self.half.read(&mut self.buf).await {}
    }
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
    /// The application's chain and tree, plugged in before anything else happens.
    pub stores: Vec<Plug>,
}

/// A connection the loop knows.
struct Conn {
    /// The socket's sending half, once connected.
    writer: Option<Writer>,
    /// The socket's receiving half, once connected and until it ends.
    reader: Option<Reader>,
    span: Span,
}

impl Conn {
    /// A connection whose socket is not attached yet.
    fn new(span: Span) -> Self {
        Conn {
            writer: None,
            reader: None,
            span,
        }
    }
}

/// A socket's sending half and the transmission it is writing.
struct Writer {
    half: WriteHalf,
    /// `buf[done..len]` is still to be written. The buffer keeps its full length so
    /// that reusing it never zero-fills it again.
    buf: Vec<u8>,
    done: usize,
    len: usize,
    /// A WebSocket may hold written messages until flushed.
    unflushed: bool,
}

impl Writer {
    fn new(half: WriteHalf) -> Self {
        Writer {
            half,
            buf: Vec::new(),
            done: 0,
            len: 0,
            unflushed: false,
        }
    }

    /// Finish what was pulled, then close the sending side (a closed connection).
    async fn close(mut self) {
        if self
            .half
            .write(&self.buf[self.done..self.len])
            .await
            .is_ok()
        {
            let _ = self.half.close().await;
        }
    }
}

impl Writer {
    /// Write `conn`'s transmissions, pulling each from the core once the socket took
    /// the previous one, until the socket is full or the core has nothing more.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        node: &mut Node,
        now: Instant,
        conn: ConnId,
    ) -> io::Result<Stalled> {
        loop {
            if self.done == self.len {
                if self.buf.len() < MAX_TRANSMIT {
                    self.buf.resize(MAX_TRANSMIT, 0);
                }
                let Some(n) = node.poll_transmit(now, conn, &mut self.buf) else {
                    if self.unflushed {
                        if self.half.poll_flush(cx)?.is_pending() {
                            return Ok(Stalled::Full);
                        }
                        self.unflushed = false;
                    }
                    return Ok(Stalled::Empty);
                };
                (self.done, self.len) = (0, n);
            }
            match self.half.poll_write(cx, &self.buf[self.done..self.len])? {
                Poll::Ready(n) => {
                    self.done += n;
                    self.unflushed = true;
                }
                Poll::Pending => return Ok(Stalled::Full),
            }
        }
    }
}

/// Why a writer stopped for now.
enum Stalled {
    /// The socket is full; the loop is woken when it drains.
    Full,
    /// Nothing more to write.
    Empty,
}

/// A handle waiting for a resolution: the name asked and where the answer goes.
type ResolveWaiter = (String, oneshot::Sender<Result<NodeId, MeshError>>);

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

struct EventLoop<R: Runtime> {
    runtime: R,
    node: Node,
    started: std::time::Instant,
    /// The clock, read at the start of each round of work.
    clock: std::time::Instant,
    io_tx: async_channel::Sender<Io>,
    /// For the responders handed out with requests (weak: the handles alone keep the
    /// node running); set once the loop is shared.
    commands: Option<Commands>,
    conns: HashMap<ConnId, Conn>,
    woken: Arc<Woken>,
    /// Connections with something to write, or whose socket was full (retried on every
    /// wake-up, which includes the one its socket sends when it drains).
    writable: HashSet<ConnId>,
    subscribers: Subscribers,
    /// Messages and requests of the handles, until the core reports their outcome.
    waiting: HashMap<MessageId, Waiter>,
    /// Resolutions waiting for the cluster's answer.
    resolving: HashMap<QueryId, Vec<ResolveWaiter>>,
    tasks: Vec<AbortHandle>,
    connect_timeout: Duration,
    transports: Transports,
    upgrades: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The loop's one timer, moved along with the node's deadline (see [`Self::arm`]):
    /// a deadline left behind would wake the loop for nothing, and on a
    /// request/response link every round trip moves the deadline.
    timer: R::Timer,
    /// Where the timer is set; `None` once it fired (until the loop sets it again).
    armed: Option<std::time::Instant>,
    /// When the node's next timer is due, as it said at the end of the last round.
    due: std::time::Instant,
    /// The loop looks again by then (a subscriber's backlog, a shutdown), if earlier.
    retry: Option<std::time::Instant>,
    /// The loop task's waker (for sockets written to by commands run inline).
    waker: Waker,
    /// The loop has ended: commands are refused.
    stopped: bool,
    /// A command is running on a handle's thread.
    inline: bool,
    /// Actions of commands run inline, for the loop to carry out.
    deferred: Vec<Action>,
    shutdown: Option<(std::time::Instant, Vec<oneshot::Sender<()>>)>,
}

/// Start the loop; returns its command queue (whose senders keep it running) and the
/// way handles submit commands.
pub(crate) fn spawn<R: Runtime>(
    setup: Setup<R>,
) -> Result<(async_channel::Sender<Command>, Commands), crate::StartError> {
    let node_id = setup.identity.node_id();
    let mut node = Node::new(setup.identity.into(), setup.config, os_rng());
    for plug in setup.stores {
        plug(&mut node)?;
    }
    let (cmd_tx, cmd_rx) = async_channel::bounded(1024);
    let (io_tx, io_rx) = async_channel::bounded(4096);
    let span = info_span!("mesh", node = %node_id.short());
    let started = std::time::Instant::now();
    for seed in &setup.seeds {
        node.add_seed(Instant::ZERO, seed.to_string());
    }
    let mut el = EventLoop {
        runtime: setup.runtime.clone(),
        node,
        started,
        clock: started,
        io_tx,
        commands: None,
        conns: HashMap::new(),
        woken: Default::default(),
        writable: HashSet::new(),
        subscribers: setup.subscribers,
        waiting: HashMap::new(),
        resolving: HashMap::new(),
        tasks: Vec::new(),
        connect_timeout: setup.connect_timeout,
        transports: setup.transports,
        upgrades: Default::default(),
        timer: setup.runtime.timer(),
        armed: None,
        due: started,
        retry: None,
        waker: futures::task::noop_waker(),
        stopped: false,
        inline: false,
        deferred: Vec::new(),
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
    let el = Arc::new(Mutex::new(el));
    let commands = Commands {
        queue: cmd_tx.downgrade(),
        inline: Arc::downgrade(&el) as Weak<dyn Inline>,
    };
    el.lock().unwrap_or_else(PoisonError::into_inner).commands = Some(commands.clone());
    setup
        .runtime
        .spawn(EventLoop::run(el, cmd_rx, io_rx).instrument(span));
    Ok((cmd_tx, commands))
}

impl<R: Runtime> EventLoop<R> {
    /// The core's time: when the current round of work began (reading the clock once
    /// a round, not at every step).
    fn now(&self) -> Instant {
        Instant::from_micros(self.clock.duration_since(self.started).as_micros() as u64)
    }

    async fn run(
        shared: Arc<Mutex<Self>>,
        commands: async_channel::Receiver<Command>,
        io: async_channel::Receiver<Io>,
    ) {
        let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut commands, mut io) = (Box::pin(commands), Box::pin(io));
        future::poll_fn(|cx| {
            let mut el = lock();
            // A command that panicked inline (an application's store, say) left this set.
            el.inline = false;
            if !el.waker.will_wake(cx.waker()) {
                el.waker = cx.waker().clone();
            }
            el.poll(cx, commands.as_mut(), io.as_mut())
        })
        .await;
        lock().stop();
    }

    /// One wake-up: commands, setup results, socket reads, the core's actions, writes,
    /// timers; round after round while there is work, at most [`ROUNDS`].
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut commands: Pin<&mut async_channel::Receiver<Command>>,
        mut io: Pin<&mut async_channel::Receiver<Io>>,
    ) -> Poll<()> {
        for _ in 0..ROUNDS {
            self.clock = std::time::Instant::now();
            // Nothing since the last round moved the node's deadline (its last call
            // was `poll_timeout`): its timers run only once due.
            // Actions of inline commands first: they came before anything due now.
            for action in std::mem::take(&mut self.deferred) {
                self.act(action);
            }
            if self.clock >= self.due {
                self.node.handle_timeout(self.now());
                self.drain_node();
            }
            if let Some((deadline, _)) = &self.shutdown {
                if self.node.is_idle() || self.clock >= *deadline {
                    return Poll::Ready(());
                }
            }
            let mut busy = false;
            for _ in 0..BATCH {
                match commands.as_mut().poll_next(cx) {
                    Poll::Ready(Some(cmd)) => self.command(cmd),
                    Poll::Ready(None) if self.shutdown.is_none() => self.begin_shutdown(None),
                    _ => break,
                }
                busy = true;
            }
            for _ in 0..BATCH {
                let Poll::Ready(Some(event)) = io.as_mut().poll_next(cx) else {
                    break;
                };
                self.io(event);
                busy = true;
            }
            // A subscriber's backlog pauses socket reads (backpressure); the timer
            // looks again soon.
            let backlogged = self.subscribers.flush() || self.read(cx);
            busy |= !backlogged && self.woken.has_conns();
            self.drain_node();
            self.write(cx);
            if self.poll_timer(cx, backlogged) {
                busy = true;
            }
            if !busy {
                return Poll::Pending;
            }
        }
        // More work is waiting: come back after the runtime's other tasks had a turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Arm the timer at the node's next deadline (sooner while a subscriber is
    /// backlogged or the node shuts down) and poll it; true if it fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>, backlogged: bool) -> bool {
        self.due = self.node_due();
        self.retry = if backlogged {
            Some(self.clock + BACKLOG_RETRY)
        } else if self.shutdown.is_some() {
            Some(self.clock + Duration::from_millis(50))
        } else {
            None
        };
        self.arm();
        if Pin::new(&mut self.timer).poll(cx).is_ready() {
            self.armed = None;
            return true;
        }
        false
    }

    /// Move the timer to the node's deadline or the loop's retry, whichever is first;
    /// a later one only up to [`TIMER_HORIZON`] ahead.
    fn arm(&mut self) {
        let mut at = self.retry.map_or(self.due, |retry| retry.min(self.due));
        if let Some(armed) = self.armed.filter(|&armed| at > armed) {
            at = at.min(self.clock + TIMER_HORIZON).max(armed);
        }
        if self.armed != Some(at) {
            self.timer.set_at(at);
            self.armed = Some(at);
        }
    }

    /// When the node's next timer is due, on the loop's clock: the same instant for the
    /// same deadline whenever it is asked (not the round's start plus a wait, which
    /// would move with the sub-microsecond part of the clock and re-arm the timer for
    /// nothing).
    fn node_due(&mut self) -> std::time::Instant {
        match self.node.poll_timeout() {
            Some(t) => self.started + Duration::from_micros(t.as_micros()),
            None => self.clock + Duration::from_secs(3600),
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.conns.clear();
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
            } => match self.node.send(now, to, target, data) {
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
            } => match self.node.request(now, to, target, data, timeout) {
                Ok(id) => {
                    self.waiting.insert(id, Waiter::Request(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(MeshError::refused(e)));
                }
            },
            Command::Respond { token, data, reply } => {
                let result = self.node.respond(now, token, data);
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
            Command::Members { reply } => {
                let _ = reply.send(self.node.members().collect());
            }
            Command::Registry { entry, reply } => {
                let result = match entry {
                    Entry::Service { name, metadata } => self.node.advertise(now, &name, &metadata),
                    Entry::NoService { name } => self.node.withdraw(now, &name),
                    Entry::Process {
                        pid,
                        name,
                        metadata,
                    } => self.node.register_process(now, pid, &name, &metadata),
                    Entry::NoProcess { pid } => self.node.unregister_process(now, pid),
                };
                let _ = reply.send(result.map_err(MeshError::Registry));
            }
            Command::Services { reply } => {
                let services =
                    self.node
                        .services()
                        .iter()
                        .map(|(node, name, info)| ServiceSummary {
                            node,
                            name: name.as_str().to_string(),
                            metadata: info.metadata().clone(),
                        });
                let _ = reply.send(services.collect());
            }
            Command::Processes { reply } => {
                let processes =
                    self.node
                        .processes()
                        .iter()
                        .map(|(node, pid, info)| ProcessSummary {
                            node,
                            pid: *pid,
                            name: info.name().to_string(),
                            metadata: info.metadata().clone(),
                        });
                let _ = reply.send(processes.collect());
            }
            Command::Resolve {
                name,
                strategy,
                reply,
            } => match self.node.resolve_with(now, &name, strategy) {
                Ok(Resolution::Provider(node)) => drop(reply.send(Ok(node))),
                Ok(Resolution::Ask(query)) => {
                    self.resolving.entry(query).or_default().push((name, reply));
                }
                Ok(Resolution::NotFound) => drop(reply.send(Err(MeshError::NotFound(name)))),
                Ok(Resolution::Unavailable) => drop(reply.send(Err(MeshError::Unavailable(name)))),
                Ok(_) => drop(reply.send(Err(MeshError::Full))),
                Err(e) => drop(reply.send(Err(MeshError::Registry(e)))),
            },
            Command::ProviderResult {
                provider,
                ok,
                reply,
            } => {
                self.node.provider_result(now, &provider, ok);
                let _ = reply.send(());
            }
            Command::Shutdown { reply } => self.begin_shutdown(Some(reply)),
            Command::Sync(command) => command.run(&mut self.node, now),
        }
        self.drain_node();
    }

    fn io(&mut self, event: Io) {
        let now = self.now();
        match event {
            Io::Connected { conn, wire } => {
                if self.conns.contains_key(&conn) {
                    self.attach(conn, wire);
                    self.writable.insert(conn);
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
        }
        self.drain_node();
    }

    /// Read the sockets that woke the loop, at most [`BATCH`] reads; true if a
    /// subscriber's backlog stopped it (backpressure).
    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        self.woken.event_loop.register(cx.waker());
        let mut queue = std::mem::take(&mut *self.woken.lock());
        let now = self.now();
        let mut reads = 0;
        let mut backlogged = false;
        while let Some(conn) = queue.pop() {
            if reads == BATCH || backlogged {
                queue.push(conn);
                break;
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            let Some(reader) = c.reader.as_mut() else {
                continue;
            };
            reader.flag.queued.store(false, Release);
            let mut rcx = Context::from_waker(&reader.waker);
            // A few reads per socket in turn, so that one busy peer cannot starve others.
            for turn in 1..=READS_PER_TURN {
                reads += 1;
                match reader.half.poll_read(&mut rcx, &mut reader.buf) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n @ 1..)) => {
                        self.node.handle_bytes(now, conn, &reader.buf[..n]);
                        backlogged = self.subscribers.flush();
                        if backlogged || reads == BATCH || turn == READS_PER_TURN {
                            // Not read until pending (which registers the waker): queue
                            // it again.
                            ArcWake::wake_by_ref(&reader.flag);
                            break;
                        }
                    }
                    Poll::Ready(result) => {
                        if let Err(error) = result {
                            c.span.in_scope(|| debug!(%error, "socket error"));
                        }
                        c.reader = None;
                        self.node.handle_closed(now, conn);
                        break;
                    }
                }
            }
        }
        if !queue.is_empty() {
            self.woken.lock().extend(queue);
        }
        self.drain_node();
        backlogged
    }

    /// Take a connected socket: its reader joins the loop's readers, its writer waits
    /// for the core's transmissions.
    fn attach(&mut self, conn: ConnId, wire: MeshStream) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let MeshStream { reader, writer } = wire;
        entry.writer = Some(Writer::new(writer));
        let reader = Reader::new(reader, conn, &self.woken);
        ArcWake::wake_by_ref(&reader.flag); // read it once to register its waker
        entry.reader = Some(reader);
    }

    /// Write what the core has for every connection that has something, or whose
    /// socket was full, until each is empty or full again.
    fn write(&mut self, cx: &mut Context<'_>) {
        if self.writable.is_empty() {
            return;
        }
        let now = self.now();
        let mut closed = Vec::new();
        self.writable.retain(|&conn| {
            let Some(writer) = self.conns.get_mut(&conn).and_then(|c| c.writer.as_mut()) else {
                return false; // not connected yet: `Io::Connected` puts it back
            };
            match writer.poll_write(cx, &mut self.node, now, conn) {
                Ok(Stalled::Full) => true,
                Ok(Stalled::Empty) => false,
                Err(error) => {
                    closed.push((conn, error));
                    false
                }
            }
        });
        for (conn, error) in closed {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.span.in_scope(|| debug!(%error, "socket error"));
                c.writer = None;
            }
            self.node.handle_closed(now, conn);
        }
    }

    /// Carry out the node's actions and deliver its events.
    fn drain_node(&mut self) {
        while let Some(action) = self.node.poll_action() {
            if self.inline && !matches!(action, Action::Transmit { .. }) {
                // Dials and closes spawn tasks, which needs the runtime's context that
                // a handle's thread may lack: the loop carries them out.
                self.deferred.push(action);
                continue;
            }
            self.act(action);
        }
        while let Some(event) = self.node.poll_event() {
            self.node_event(event);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Dial { conn, addr } => self.dial(conn, addr),
            Action::Transmit { conn } => {
                self.writable.insert(conn);
            }
            Action::Close { conn } => {
                self.writable.remove(&conn);
                if let Some(c) = self.conns.remove(&conn) {
                    c.span.in_scope(|| debug!("closed"));
                    // The writer finishes what was pulled and shuts down its side.
                    // The reader keeps draining until the peer closes too: closing a
                    // socket with unread bytes sends a reset, which would destroy our
                    // Close record. After LINGER both end whatever the peer does,
                    // and the socket with them.
                    let linger = self.runtime.sleep(LINGER);
                    let write = c.writer.map(Writer::close);
                    let drain = c.reader.map(Reader::drain);
                    self.runtime.spawn(
                        async move {
                            let both = async {
                                futures::join!(
                                    async {
                                        if let Some(w) = write {
                                            w.await
                                        }
                                    },
                                    async {
                                        if let Some(d) = drain {
                                            d.await
                                        }
                                    },
                                )
                            };
                            let _ = future::select(Box::pin(both), Box::pin(linger)).await;
                        }
                        .instrument(c.span),
                    );
                }
            }
            _ => {}
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
            NodeEvent::Member(event) => match event {
                MemberEvent::Up { node, addrs } => MeshEvent::MemberUp { node, addrs },
                MemberEvent::Suspect { node, .. } => MeshEvent::MemberSuspect { node },
                MemberEvent::Alive { node } => MeshEvent::MemberAlive { node },
                MemberEvent::Down { node } => MeshEvent::MemberDown { node },
                MemberEvent::Left { node } => MeshEvent::MemberLeft { node },
            },
            NodeEvent::ServiceUp { node, name } => MeshEvent::ServiceUp { node, name },
            NodeEvent::ServiceDown { node, name } => MeshEvent::ServiceDown { node, name },
            NodeEvent::Sync(event) => match replication::mesh_event(event) {
                Some(event) => event,
                None => return,
            },
            NodeEvent::Resolved { query, result } => {
                for (name, reply) in self.resolving.remove(&query).unwrap_or_default() {
                    let _ = reply.send(result.map_err(|e| match e {
                        ResolveError::Unavailable => MeshError::Unavailable(name),
                        _ => MeshError::NotFound(name),
                    }));
                }
                return;
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
            } => {
                let Some(commands) = self.commands.clone() else {
                    return;
                };
                MeshEvent::Request {
                    from,
                    target,
                    data: payload,
                    hops,
                    responder: Responder::new(request, commands),
                }
            }
            _ => return,
        };
        self.subscribers.publish(&mesh_event);
    }
}
