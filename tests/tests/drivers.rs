//! End to end over real loopback sockets: both runtimes, both transports, and every
//! pairing of them; messages and requests relayed along a line of nodes; rejections,
//! vanishing peers, reconnects and hostile clients; discovery backends.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_mesh::handshake::PqPolicy;
use weft_mesh::{CloseReason, Identity, NodeId, Rng};
use weft_mesh_driver::{
    Addr, BoxFuture, DiscoveryBackend, DiscoveryError, Events, Mesh, MeshBuilder, MeshError,
    MeshEvent, RouteSummary, Runtime, StaticDiscovery, Target, Timer,
};
use weft_mesh_smol::Smol;
use weft_mesh_tokio::Tokio;

const WAIT: Duration = Duration::from_secs(15);

async fn start<R: Runtime>(
    rt: R,
    f: impl FnOnce(MeshBuilder<R>) -> MeshBuilder<R>,
) -> (Mesh<R>, Events) {
    let mut builder = f(MeshBuilder::new(rt));
    let events = builder.subscribe();
    (builder.start().await.expect("start"), events)
}

/// `fut`, or `None` after `WAIT` (on any executor: the timer has its own reactor).
async fn timeout<T>(wait: Duration, fut: impl std::future::Future<Output = T>) -> Result<T, ()> {
    let timer = async_io::Timer::after(wait);
    match futures::future::select(std::pin::pin!(fut), timer).await {
        futures::future::Either::Left((t, _)) => Ok(t),
        futures::future::Either::Right(_) => Err(()),
    }
}

/// Wait for the first event that `pick` accepts.
async fn expect<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&MeshEvent) -> Option<T>,
) -> T {
    let found = timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(&e) {
                return Some(t);
            }
        }
        None
    })
    .await;
    found
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no {what} within {WAIT:?}"))
}

async fn peer_up(events: &mut Events) -> (NodeId, bool) {
    expect(events, "peer up", |e| match e {
        MeshEvent::PeerUp { node, hybrid, .. } => Some((*node, *hybrid)),
        _ => None,
    })
    .await
}

async fn peer_down(events: &mut Events, who: NodeId) -> CloseReason {
    expect(events, "peer down", |e| match e {
        MeshEvent::PeerDown { node, reason } if *node == who => Some(*reason),
        _ => None,
    })
    .await
}

async fn message(events: &mut Events) -> (NodeId, Bytes) {
    expect(events, "message", |e| match e {
        MeshEvent::Message { from, data, .. } => Some((*from, data.clone())),
        _ => None,
    })
    .await
}

/// `mesh`'s route to `to`, once it has one (routes spread by periodic advertisements;
/// polled, as no event announces them).
async fn route<R: Runtime>(mesh: &Mesh<R>, to: NodeId) -> RouteSummary {
    let found = timeout(WAIT, async {
        loop {
            let routes = mesh.routes().await.expect("routes");
            if let Some(r) = routes.into_iter().find(|r| r.node == to) {
                return r;
            }
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|()| panic!("no route to {to} within {WAIT:?}"))
}

/// A listener for a test forwarder in front of `target`: its `tcp://` address, and
/// the pair (accepted socket, socket connected to `target`) once someone dials it.
async fn forwarder_sockets(
    target: String,
) -> (
    String,
    impl std::future::Future<Output = (tokio::net::TcpStream, tokio::net::TcpStream)>,
) {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("tcp://{}", proxy.local_addr().unwrap());
    let sockets = async move {
        let (inbound, _) = proxy.accept().await.unwrap();
        (
            inbound,
            tokio::net::TcpStream::connect(target).await.unwrap(),
        )
    };
    (addr, sockets)
}

/// Two nodes, `b` seeded with `a`: up (hybrid), messages both ways, orderly close.
async fn pair<A: Runtime, B: Runtime>(ra: A, rb: B, listen: &str) {
    let (a, mut ae) = start(ra, |b| b.listen(listen)).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(rb, |b| b.seed(seed)).await;
    assert_eq!(peer_up(&mut ae).await, (b.node_id(), true));
    assert_eq!(peer_up(&mut be).await, (a.node_id(), true));
    b.send(a.node_id(), Target::Node, Bytes::from_static(b"ping"))
        .await
        .unwrap();
    let hops = expect(&mut ae, "ping", |e| match e {
        MeshEvent::Message {
            from,
            target: Target::Node,
            data,
            hops,
        } if *from == b.node_id() && data == &b"ping"[..] => Some(*hops),
        _ => None,
    })
    .await;
    assert_eq!(hops, 1, "a direct message crosses one link");
    let big = Bytes::from(vec![7u8; 3 << 20]);
    a.send(b.node_id(), Target::Node, big.clone())
        .await
        .unwrap();
    assert_eq!(message(&mut be).await, (a.node_id(), big));
    assert_eq!(a.peers().await.unwrap().len(), 1);
    b.shutdown().await;
    assert_eq!(peer_down(&mut ae, b.node_id()).await, CloseReason::Normal);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_to_tokio_over_tcp_and_websocket() {
    pair(Tokio, Tokio, "tcp://127.0.0.1:0").await;
    pair(Tokio, Tokio, "ws://127.0.0.1:0/mesh").await;
}

#[test]
fn smol_to_smol_over_tcp_and_websocket() {
    smol::block_on(async {
        pair(Smol, Smol, "tcp://127.0.0.1:0").await;
        pair(Smol, Smol, "ws://127.0.0.1:0/mesh").await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_and_smol_interoperate_over_tcp_and_websocket() {
    pair(Tokio, Smol, "tcp://127.0.0.1:0").await;
    pair(Smol, Tokio, "tcp://127.0.0.1:0").await;
    pair(Tokio, Smol, "ws://127.0.0.1:0/mesh").await;
    pair(Smol, Tokio, "ws://127.0.0.1:0/mesh").await;
}

/// `b` dials `a`, `c` dials `b`, and no node dials the nodes it hears of
/// (`target_peers` 0): a line in which `a` and `c` reach each other only through `b`.
/// Messages and requests both ways, relayed, and a request nobody answers.
async fn relay_line<A: Runtime, B: Runtime, C: Runtime>(
    ra: A,
    rb: B,
    rc: C,
    listen_a: &str,
    listen_b: &str,
) {
    let line = |c: &mut weft_mesh::node::NodeConfig| c.target_peers = 0;
    let (a, mut ae) = start(ra, |x| x.listen(listen_a).configure(line)).await;
    let seed_a = a.local_addrs()[0].to_string();
    let (b, mut be) = start(rb, |x| x.listen(listen_b).seed(seed_a).configure(line)).await;
    let seed_b = b.local_addrs()[0].to_string();
    let (c, mut ce) = start(rc, |x| x.seed(seed_b).configure(line)).await;
    let (a_id, b_id, c_id) = (a.node_id(), b.node_id(), c.node_id());
    assert_eq!(peer_up(&mut ae).await.0, b_id);
    assert_eq!(peer_up(&mut ce).await.0, b_id);
    let mut b_peers = vec![peer_up(&mut be).await.0, peer_up(&mut be).await.0];
    b_peers.sort();
    let mut want = vec![a_id, c_id];
    want.sort();
    assert_eq!(b_peers, want);

    let to_c = route(&a, c_id).await;
    assert_eq!((to_c.next_hop, to_c.hops), (b_id, 2));
    let to_a = route(&c, a_id).await;
    assert_eq!((to_a.next_hop, to_a.hops), (b_id, 2));
    let linked = |peers: Vec<weft_mesh::node::PeerSummary>| -> Vec<NodeId> {
        peers.into_iter().map(|p| p.node).collect()
    };
    assert_eq!(linked(a.peers().await.unwrap()), vec![b_id], "no a-c link");
    assert_eq!(linked(c.peers().await.unwrap()), vec![b_id], "no a-c link");

    // A message, relayed by b: c sees it once, from a (b cannot forge it), 2 links away.
    a.send(c_id, Target::Node, Bytes::from_static(b"over the relay"))
        .await
        .expect("relayed message acknowledged");
    let got = expect(&mut ce, "relayed message", |e| match e {
        MeshEvent::Message {
            from,
            target,
            data,
            hops,
        } => Some((*from, target.clone(), data.clone(), *hops)),
        _ => None,
    })
    .await;
    assert_eq!(
        got,
        (a_id, Target::Node, Bytes::from_static(b"over the relay"), 2)
    );

    // A request from a to a service of c, and one from c to a process of a.
    let echo = Target::Service("echo".into());
    let answer = async {
        let (target, hops, data, responder) = expect(&mut ce, "request", |e| match e {
            MeshEvent::Request {
                from,
                target,
                data,
                hops,
                responder,
            } if *from == a_id => Some((target.clone(), *hops, data.clone(), responder.clone())),
            _ => None,
        })
        .await;
        assert_eq!((target, hops), (Target::Service("echo".into()), 2));
        assert_eq!(responder.requester(), a_id);
        responder.respond(data).await.expect("respond");
    };
    let asked = a.request(c_id, echo, Bytes::from_static(b"ping"), WAIT);
    let (reply, ()) = futures::join!(asked, answer);
    assert_eq!(reply.expect("response"), Bytes::from_static(b"ping"));

    let answer = async {
        let responder = expect(&mut ae, "request", |e| match e {
            MeshEvent::Request {
                from,
                target: Target::Pid(7),
                hops: 2,
                responder,
                ..
            } if *from == c_id => Some(responder.clone()),
            _ => None,
        })
        .await;
        responder
            .respond(&b"pid 7 here"[..])
            .await
            .expect("respond");
    };
    let asked = c.request(a_id, Target::Pid(7), Bytes::from_static(b"who?"), WAIT);
    let (reply, ()) = futures::join!(asked, answer);
    assert_eq!(reply.expect("response"), Bytes::from_static(b"pid 7 here"));

    // A request c's application never answers times out, with a typed error.
    let silent = Target::Service("silent".into());
    let asked = a.request(c_id, silent, Bytes::new(), Duration::from_millis(300));
    assert_eq!(asked.await, Err(MeshError::Timeout(c_id)));

    assert!(b.stats().await.unwrap().relayed >= 7, "b relayed both ways");
    assert_eq!(
        linked(a.peers().await.unwrap()),
        vec![b_id],
        "still no a-c link"
    );
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_three_tokio_nodes_relays_messages_and_requests() {
    relay_line(
        Tokio,
        Tokio,
        Tokio,
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_across_runtimes_and_transports_relays_messages_and_requests() {
    // smol over WebSocket, tokio in the middle, smol again over TCP.
    relay_line(
        Smol,
        Tokio,
        Smol,
        "ws://127.0.0.1:0/mesh",
        "tcp://127.0.0.1:0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_each_other_at_their_advertised_listen_addresses() {
    // b listens on port 0 and joins through a; c joins through a too and learns from
    // a where b listens (b advertised its bound address, the real port), then dials it.
    let (a, mut ae) = start(Tokio, |x| x.listen("tcp://127.0.0.1:0")).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Smol, |x| {
        x.listen("ws://127.0.0.1:0/mesh").seed(seed.clone())
    })
    .await;
    assert_eq!(peer_up(&mut be).await.0, a.node_id());
    assert_eq!(peer_up(&mut ae).await.0, b.node_id());
    let (c, mut ce) = start(Tokio, |x| x.seed(seed)).await;
    let mut c_peers = vec![peer_up(&mut ce).await.0, peer_up(&mut ce).await.0];
    c_peers.sort();
    let mut want = vec![a.node_id(), b.node_id()];
    want.sort();
    assert_eq!(c_peers, want, "c dialed b, which it had only heard of");
    c.send(b.node_id(), Target::Node, Bytes::from_static(b"found you"))
        .await
        .unwrap();
    let hops = expect(&mut be, "message from c", |e| match e {
        MeshEvent::Message { from, hops, .. } if *from == c.node_id() => Some(*hops),
        _ => None,
    })
    .await;
    assert_eq!(hops, 1, "over the link c dialed");
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

/// A handle's messages run on the caller's thread when the loop is free; from a thread
/// outside any runtime that must still work, and so must the commands that go to the
/// loop's queue (a connect, a shutdown) and the dial and closes they cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_work_from_a_thread_outside_the_runtime() {
    let (a, mut ae) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0")).await;
    let (c, mut ce) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0")).await;
    // Without membership nothing is queued at shutdown (no leave): its links close at
    // once.
    let (b, mut be) = start(Tokio, |x| {
        x.seed(a.local_addrs()[0].to_string())
            .configure(|c| c.membership = None)
    })
    .await;
    peer_up(&mut be).await;
    let (a_id, c_id) = (a.node_id(), c.node_id());
    let c_addr = c.local_addrs()[0].to_string();
    let handle = b.clone();
    let outside = std::thread::spawn(move || {
        futures::executor::block_on(async {
            for i in 0..50u32 {
                let data = Bytes::from(i.to_be_bytes().to_vec());
                handle.send(a_id, Target::Node, data).await?;
            }
            handle.connect(&c_addr).await?;
            let mut tries = 0;
            loop {
                match handle.send(c_id, Target::Node, &b"via a dial"[..]).await {
                    Ok(()) => return Ok::<_, MeshError>(()),
                    Err(_) if tries < 100 => {
                        tries += 1;
                        async_io::Timer::after(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    });
    for i in 0..50u32 {
        let (from, data) = message(&mut ae).await;
        assert_eq!((from, &data[..]), (b.node_id(), &i.to_be_bytes()[..]));
    }
    let (from, data) = message(&mut ce).await;
    assert_eq!((from, &data[..]), (b.node_id(), &b"via a dial"[..]));
    let joined = tokio::task::spawn_blocking(move || outside.join()).await;
    joined.expect("join").expect("thread").expect("sends");
    // Shutting down closes links; their lingering closes are tasks of the loop's.
    let handle = b.clone();
    let outside = std::thread::spawn(move || futures::executor::block_on(handle.shutdown()));
    tokio::task::spawn_blocking(move || outside.join())
        .await
        .expect("join")
        .expect("shutdown from outside");
    assert_eq!(peer_down(&mut ae, b.node_id()).await, CloseReason::Normal);
    for m in [a, c] {
        m.shutdown().await;
    }
}

/// A runtime whose event-loop timers are counted: how often they were set, fired, and
/// moved earlier (which re-files a timer in the runtime's timer structure).
#[derive(Clone)]
struct Counted<R> {
    inner: R,
    counts: Counts,
}

#[derive(Clone, Default)]
struct Counts {
    set: Arc<AtomicUsize>,
    fired: Arc<AtomicUsize>,
    earlier: Arc<AtomicUsize>,
}

impl Counts {
    fn now(&self) -> [usize; 3] {
        [&self.set, &self.fired, &self.earlier].map(|c| c.load(SeqCst))
    }
}

struct CountedTimer<T> {
    inner: T,
    at: Option<std::time::Instant>,
    counts: Counts,
}

impl<T: Timer> std::future::Future for CountedTimer<T> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let poll = std::pin::Pin::new(&mut self.inner).poll(cx);
        if poll.is_ready() {
            self.counts.fired.fetch_add(1, SeqCst);
        }
        poll
    }
}

impl<T: Timer> Timer for CountedTimer<T> {
    fn set_at(&mut self, at: std::time::Instant) {
        self.counts.set.fetch_add(1, SeqCst);
        if self.at.is_some_and(|old| at < old) {
            self.counts.earlier.fetch_add(1, SeqCst);
        }
        self.at = Some(at);
        self.inner.set_at(at);
    }
}

impl<R: Runtime> Runtime for Counted<R> {
    fn spawn<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.spawn(future)
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.sleep(duration)
    }

    type Timer = CountedTimer<R::Timer>;

    fn timer(&self) -> Self::Timer {
        CountedTimer {
            inner: self.inner.timer(),
            at: None,
            counts: self.counts.clone(),
        }
    }

    fn transports(&self) -> Vec<Arc<dyn weft_mesh_driver::MeshTransport>> {
        self.inner.transports()
    }
}

/// A runtime's re-armable timer completes at its last setting, moved later or earlier
/// (also from another thread, as a command run inline does), and again after it fired
/// once it is set again.
async fn timer_follows_its_deadline<R: Runtime>(rt: R) {
    use std::time::Instant;
    let ms = Duration::from_millis;
    let mut timer = rt.timer();
    let start = Instant::now();
    timer.set_at(start + ms(30));
    timer.set_at(start + ms(120)); // later
    (&mut timer).await;
    assert!(
        start.elapsed() >= ms(120),
        "moved later: {:?}",
        start.elapsed()
    );
    let start = Instant::now();
    timer.set_at(start + ms(5_000));
    // Polled once at the far deadline (registered), then moved earlier elsewhere.
    assert!(futures::poll!(&mut timer).is_pending());
    std::thread::scope(|s| {
        s.spawn(|| timer.set_at(start + ms(20)));
    });
    timeout(ms(2_000), &mut timer)
        .await
        .expect("moved earlier on another thread: fires at the earlier deadline");
    assert!(start.elapsed() >= ms(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_timer_follows_its_deadline() {
    timer_follows_its_deadline(Tokio).await;
}

#[test]
fn the_smol_timer_follows_its_deadline() {
    smol::block_on(timer_follows_its_deadline(Smol));
}

/// Send `i` to `to` and wait for its echo.
async fn echo_trip<R: Runtime>(a: &Mesh<R>, events: &mut Events, to: NodeId, i: u32) {
    let data = Bytes::from(i.to_be_bytes().to_vec());
    a.send(to, Target::Node, data.clone()).await.expect("send");
    assert_eq!(message(events).await.1, data);
}

/// On a request/response link every round trip moves each node's next deadline (the
/// receipt held for the answer, the message awaiting its receipt). The event loops
/// follow without their timers firing for deadlines that passed on, or being filed
/// earlier again and again; and once the answers stop, a held receipt still leaves on
/// time.
async fn round_trips_leave_the_loop_timers_alone<R: Runtime>(rt: R) {
    let rt = Counted {
        inner: rt,
        counts: Counts::default(),
    };
    let counts = rt.counts.clone();
    let quiet = |b: MeshBuilder<Counted<R>>| b.configure(|c| c.membership = None);
    let (a, mut ae) = start(rt.clone(), |b| quiet(b).listen("tcp://127.0.0.1:0")).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(rt.clone(), |x| quiet(x).seed(seed)).await;
    peer_up(&mut ae).await;
    peer_up(&mut be).await;
    let echo = b.clone();
    rt.spawn(async move {
        while let Some(event) = be.next().await {
            if let MeshEvent::Message { from, data, .. } = event {
                if &data[..] != b"no answer" && echo.send(from, Target::Node, data).await.is_err() {
                    return;
                }
            }
        }
    });
    // Warm up into ping-pong, then count over at least 50 ms of round trips.
    let to = b.node_id();
    for i in 0..100 {
        echo_trip(&a, &mut ae, to, i).await;
    }
    let before = counts.now();
    let started = std::time::Instant::now();
    let mut trips = 0;
    while trips < 1000 || started.elapsed() < Duration::from_millis(50) {
        echo_trip(&a, &mut ae, to, trips).await;
        trips += 1;
    }
    let ms = started.elapsed().as_millis() as usize;
    let [set, fired, earlier] = [0, 1, 2].map(|i| counts.now()[i] - before[i]);
    assert!(set > 0, "the loops use the runtime's re-armable timer");
    // With deadlines left behind, each loop woke about once per receipt delay (1 ms);
    // with every move followed exactly, timers moved earlier twice per round trip. A
    // round trip delayed past 1 ms (a loaded machine) rightly fires a few.
    let allowed = 4 + ms / 10;
    assert!(
        fired <= allowed,
        "{fired} timer wake-ups in {trips} round trips over {ms} ms"
    );
    assert!(
        earlier <= allowed,
        "timers moved earlier {earlier} times in {trips} round trips over {ms} ms"
    );
    // B holds the receipt of a message it does not answer for the receipt delay only.
    let t = std::time::Instant::now();
    timeout(
        Duration::from_millis(500),
        a.send(to, Target::Node, &b"no answer"[..]),
    )
    .await
    .expect("the held receipt leaves on its timer")
    .expect("delivered");
    assert!(
        t.elapsed() >= Duration::from_millis(1),
        "the receipt waited for an answer"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_do_not_wake_tokio_loops_for_moved_deadlines() {
    round_trips_leave_the_loop_timers_alone(Tokio).await;
}

#[test]
fn round_trips_do_not_wake_smol_loops_for_moved_deadlines() {
    smol::block_on(round_trips_leave_the_loop_timers_alone(Smol));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_an_unknown_node_fail_with_typed_errors() {
    let (a, mut ae) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0")).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Tokio, |x| x.seed(seed)).await;
    peer_up(&mut ae).await;
    peer_up(&mut be).await;
    let nobody = Identity::generate(&mut Rng::from_seed([3; 32])).node_id();
    let asked = a.request(nobody, Target::Node, Bytes::from_static(b"?"), WAIT);
    assert_eq!(asked.await, Err(MeshError::NoRoute(nobody)));
    let sent = b.send(nobody, Target::Pid(1), Bytes::from_static(b"!"));
    assert_eq!(sent.await, Err(MeshError::NoRoute(nobody)));
    let bad = Target::Service(String::new());
    assert_eq!(
        b.send(a.node_id(), bad, Bytes::new()).await,
        Err(MeshError::InvalidTarget)
    );
    assert!(a.routes().await.unwrap().iter().all(|r| r.node != nobody));
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_messages_through_a_hub() {
    let (hub, mut he) = start(Tokio, |b| {
        b.listen("tcp://127.0.0.1:0").listen("ws://127.0.0.1:0/m")
    })
    .await;
    let (tcp, ws) = (
        hub.local_addrs()[0].to_string(),
        hub.local_addrs()[1].to_string(),
    );
    let (b, mut be) = start(Tokio, |x| x.seed(tcp)).await;
    let (c, mut ce) = start(Smol, |x| x.seed(ws)).await;
    peer_up(&mut be).await;
    peer_up(&mut ce).await;
    let mut ups = vec![peer_up(&mut he).await.0, peer_up(&mut he).await.0];
    ups.sort();
    let mut want = vec![b.node_id(), c.node_id()];
    want.sort();
    assert_eq!(ups, want);
    b.send(hub.node_id(), Target::Node, Bytes::from_static(b"b"))
        .await
        .unwrap();
    assert_eq!(
        message(&mut he).await,
        (b.node_id(), Bytes::from_static(b"b"))
    );
    c.send(hub.node_id(), Target::Node, Bytes::from_static(b"c"))
        .await
        .unwrap();
    assert_eq!(
        message(&mut he).await,
        (c.node_id(), Bytes::from_static(b"c"))
    );
    hub.send(b.node_id(), Target::Node, Bytes::from_static(b"hi b"))
        .await
        .unwrap();
    assert_eq!(message(&mut be).await.1, Bytes::from_static(b"hi b"));
    hub.send(c.node_id(), Target::Node, Bytes::from_static(b"hi c"))
        .await
        .unwrap();
    assert_eq!(message(&mut ce).await.1, Bytes::from_static(b"hi c"));
    b.shutdown().await;
    c.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genesis_mismatch_is_rejected_with_its_reason() {
    let (a, _ae) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0")).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Tokio, |x| x.seed(seed).genesis([9; 32])).await;
    let reason = expect(&mut be, "rejection", |e| match e {
        MeshEvent::Rejected { reason, .. } => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, CloseReason::GenesisMismatch);
    assert!(b.peers().await.unwrap().is_empty());
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_require_rejects_a_classical_peer() {
    let (a, _ae) = start(Tokio, |b| {
        b.listen("tcp://127.0.0.1:0").pq(PqPolicy::Require)
    })
    .await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Tokio, |x| x.seed(seed).pq(PqPolicy::Off)).await;
    let reason = expect(&mut be, "policy close", |e| match e {
        MeshEvent::PeerDown { reason, .. } | MeshEvent::Rejected { reason, .. } => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, CloseReason::PolicyViolation);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_seed_is_reported_down_and_redialed_when_it_returns() {
    let identity = Identity::generate(&mut Rng::from_seed([5; 32])).to_secret_bytes();
    let (a, mut ae) = start(Tokio, |b| {
        b.listen("tcp://127.0.0.1:0")
            .identity(Identity::from_secret_bytes(&identity))
    })
    .await;
    let addr = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Tokio, |x| {
        x.seed(addr.clone())
            .configure(|c| c.redial_max = Duration::from_millis(500))
    })
    .await;
    let a_id = peer_up(&mut be).await.0;
    // The XX initiator is up once it wrote its last message; wait until `a` read it.
    peer_up(&mut ae).await;
    a.shutdown().await;
    assert_eq!(peer_down(&mut be, a_id).await, CloseReason::Normal);
    // The seed comes back on the same address: b dials it again by itself.
    let (a2, _) = start(Tokio, |x| {
        x.listen(addr)
            .identity(Identity::from_secret_bytes(&identity))
    })
    .await;
    assert_eq!(peer_up(&mut be).await.0, a_id);
    b.send(a_id, Target::Node, Bytes::from_static(b"welcome back"))
        .await
        .unwrap();
    b.shutdown().await;
    a2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_socket_dies_is_reported_down() {
    // b reaches a through a forwarder that we then kill: no Close frame, just a dead socket.
    let (a, mut ae) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0")).await;
    let target = a.local_addrs()[0].host_port().to_owned();
    let (proxy_addr, sockets) = forwarder_sockets(target).await;
    let forwarder = tokio::spawn(async move {
        let (mut inbound, mut outbound) = sockets.await;
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    let (b, mut be) = start(Tokio, |x| x.seed(proxy_addr)).await;
    peer_up(&mut ae).await;
    peer_up(&mut be).await;
    forwarder.abort();
    assert_eq!(
        peer_down(&mut ae, b.node_id()).await,
        CloseReason::ConnectionLost
    );
    assert_eq!(
        peer_down(&mut be, a.node_id()).await,
        CloseReason::ConnectionLost
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_dropped_and_others_still_served() {
    let (a, mut ae) = start(Tokio, |b| {
        b.listen("tcp://127.0.0.1:0")
            .configure(|c| c.link.handshake_timeout = Duration::from_millis(500))
    })
    .await;
    let host = a.local_addrs()[0].host_port().to_owned();
    // Garbage: rejected at once with a reason.
    let mut garbage = tokio::net::TcpStream::connect(&host).await.unwrap();
    garbage.write_all(b"\x00\x05GET /").await.unwrap();
    let reason = expect(&mut ae, "garbage rejected", |e| match e {
        MeshEvent::Rejected { reason, .. } => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, CloseReason::UnsupportedVersion);
    let mut sink = Vec::new();
    let closed = timeout(WAIT, garbage.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the server closed the garbage connection");
    // A huge claimed length and a client that stops mid-handshake: timed out.
    let mut huge = tokio::net::TcpStream::connect(&host).await.unwrap();
    huge.write_all(b"\xff\xff\x01\x01").await.unwrap();
    let reason = expect(&mut ae, "stalled client timed out", |e| match e {
        MeshEvent::Rejected { reason, .. } => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, CloseReason::HandshakeTimeout);
    // Meanwhile a real peer is served normally.
    let (b, mut be) = start(Tokio, |x| x.seed(format!("tcp://{host}"))).await;
    peer_up(&mut be).await;
    b.send(a.node_id(), Target::Node, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_loses_no_acknowledged_message() {
    use futures::StreamExt;
    let (a, mut ae) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0")).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Tokio, |x| x.seed(seed)).await;
    peer_up(&mut ae).await;
    peer_up(&mut be).await;
    // Far more messages than a subscription channel holds; `a`'s application starts
    // reading only after a pause, so its backlog fills and the node must hold back.
    let total = 3 * weft_mesh_driver::EVENT_CAPACITY;
    let to = a.node_id();
    let sender = b.clone();
    let sends = tokio::spawn(async move {
        futures::stream::iter(0..total)
            .map(|i| {
                let b = sender.clone();
                async move {
                    b.send(to, Target::Node, Bytes::from(format!("{i:08}")))
                        .await
                        .is_ok()
                }
            })
            .buffer_unordered(256)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < total {
        let (_, data) = message(&mut ae).await;
        assert!(seen.insert(data), "a message arrived twice");
    }
    let acked = timeout(WAIT, sends).await.expect("sends finished").unwrap();
    assert_eq!(
        acked, total,
        "every send was acknowledged, and every one arrived"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_does_not_pin_our_socket_after_close() {
    use tokio::io::AsyncWriteExt as _;
    // a dials b through a forwarder that, once the link is up, stops forwarding (and
    // stops reading what a writes), so a's writer blocks on a full socket.
    let (b, mut be) = start(Tokio, |x| x.listen("tcp://127.0.0.1:0")).await;
    let target = b.local_addrs()[0].host_port().to_owned();
    let (proxy_addr, sockets) = forwarder_sockets(target).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let forwarder = tokio::spawn(async move {
        let (from_a, to_b) = sockets.await;
        let (mut ar, mut aw) = from_a.into_split();
        let (mut br, mut bw) = to_b.into_split();
        let (mut stop_ab, mut stop_ba) = (stop_rx.clone(), stop_rx);
        let b_to_a = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::io::copy(&mut br, &mut aw) => {}
                _ = stop_ba.wait_for(|s| *s) => {}
            }
            aw
        });
        tokio::select! {
            _ = tokio::io::copy(&mut ar, &mut bw) => {}
            _ = stop_ab.wait_for(|s| *s) => {}
        }
        let mut aw = b_to_a.await.unwrap();
        // Once a has closed, its socket must really be gone: writing to it then fails
        // (reset). A socket pinned by a blocked writer task would keep accepting bytes.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for _ in 0..300 {
            if aw.write_all(&[0u8; 1024]).await.is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(ar);
        Err(())
    });
    let (a, mut ae) = start(Tokio, |x| x.seed(proxy_addr)).await;
    peer_up(&mut ae).await;
    peer_up(&mut be).await;
    stop_tx.send(true).unwrap();
    // Fill a's socket and queue: these sends cannot complete.
    for _ in 0..8 {
        let (a, to) = (a.clone(), b.node_id());
        tokio::spawn(async move {
            a.send(to, Target::Node, Bytes::from(vec![1u8; 4 << 20]))
                .await
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    timeout(WAIT, a.shutdown())
        .await
        .expect("shutdown returns despite the stalled peer");
    let released = forwarder.await.unwrap();
    assert!(
        released.is_ok(),
        "a's socket was still open seconds after the close"
    );
    b.shutdown().await;
}

/// `b` knows `a` only through a static discovery list (no seed): it dials it.
async fn static_discovery<A: Runtime, B: Runtime>(ra: A, rb: B, listen: &str) {
    let (a, mut ae) = start(ra, |x| x.listen(listen)).await;
    let list = StaticDiscovery::new([a.local_addrs()[0].to_string()]).expect("valid list");
    let (b, mut be) = start(rb, |x| x.discovery(list)).await;
    assert_eq!(peer_up(&mut be).await.0, a.node_id());
    assert_eq!(peer_up(&mut ae).await.0, b.node_id());
    b.send(
        a.node_id(),
        Target::Node,
        Bytes::from_static(b"found by list"),
    )
    .await
    .unwrap();
    assert_eq!(
        message(&mut ae).await,
        (b.node_id(), Bytes::from_static(b"found by list"))
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_only_a_static_discovery_list_connects_to_it() {
    static_discovery(Tokio, Tokio, "tcp://127.0.0.1:0").await;
    static_discovery(Tokio, Smol, "ws://127.0.0.1:0/mesh").await;
}

#[test]
fn a_smol_node_with_only_a_static_discovery_list_connects_to_it() {
    smol::block_on(static_discovery(Smol, Smol, "tcp://127.0.0.1:0"));
}

/// A discovery backend that fails on its first poll and then reports `addr`.
struct FailsFirst {
    addr: std::sync::Arc<std::sync::Mutex<Option<Addr>>>,
    polls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DiscoveryBackend for FailsFirst {
    fn name(&self) -> &str {
        "fails-first"
    }

    fn discover(&self) -> BoxFuture<Result<Vec<Addr>, DiscoveryError>> {
        let poll = self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let addr = self.addr.lock().unwrap().clone();
        Box::pin(async move {
            match (poll, addr) {
                (0, _) => Err(DiscoveryError::other("not reachable yet")),
                (_, addr) => Ok(addr.into_iter().collect()),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_discovery_backend_is_retried_and_does_not_stop_the_mesh() {
    use std::sync::atomic::Ordering::SeqCst;
    let addr = std::sync::Arc::new(std::sync::Mutex::new(None));
    let polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let backend = FailsFirst {
        addr: addr.clone(),
        polls: polls.clone(),
    };
    // b starts first: its first poll (at start) fails whatever a does.
    let (b, mut be) = start(Tokio, |x| {
        x.discovery(backend)
            .discovery_interval(Duration::from_millis(50))
    })
    .await;
    let (a, mut ae) = start(Smol, |x| x.listen("tcp://127.0.0.1:0")).await;
    *addr.lock().unwrap() = Some(a.local_addrs()[0].clone());
    assert_eq!(peer_up(&mut be).await.0, a.node_id());
    assert_eq!(peer_up(&mut ae).await.0, b.node_id());
    assert!(polls.load(SeqCst) >= 2, "the failed poll was retried");
    // Later polls report the same address again: it is not dialed again.
    let polled = timeout(WAIT, async {
        while polls.load(SeqCst) < 5 {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "the backend is still polled");
    assert_eq!(b.peers().await.unwrap().len(), 1);
    b.send(
        a.node_id(),
        Target::Node,
        Bytes::from_static(b"still running"),
    )
    .await
    .unwrap();
    assert_eq!(
        message(&mut ae).await,
        (b.node_id(), Bytes::from_static(b"still running"))
    );
    b.shutdown().await;
    // Polling stops with the mesh.
    let after = polls.load(SeqCst);
    async_io::Timer::after(Duration::from_millis(200)).await;
    assert!(polls.load(SeqCst) <= after + 1, "polled after shutdown");
    a.shutdown().await;
}

/// Membership, the service registry, the process table and resolution through the
/// handle API, across runtimes: `b` (smol) and `c` (tokio) joined through `a` (tokio).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_services_and_processes_across_runtimes() {
    let (a, mut ae) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0")).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, _be) = start(Smol, |x| x.seed(seed.clone())).await;
    let (c, mut ce) = start(Tokio, |x| x.seed(seed.clone())).await;
    let (a_id, b_id, c_id) = (a.node_id(), b.node_id(), c.node_id());
    // c learns of b through membership (no link between them needed).
    expect(&mut ce, "member b up", |e| {
        matches!(e, MeshEvent::MemberUp { node, .. } if *node == b_id).then_some(())
    })
    .await;
    let mut members: Vec<NodeId> = c.members().await.unwrap().iter().map(|m| m.node).collect();
    members.sort();
    let mut all = vec![a_id, b_id, c_id];
    all.sort();
    assert_eq!(members, all);

    b.advertise("db", Bytes::from_static(b"port=5432"))
        .await
        .unwrap();
    b.register_process(42, "worker", Bytes::new())
        .await
        .unwrap();
    let up = expect(&mut ce, "service up", |e| match e {
        MeshEvent::ServiceUp { node, name } => Some((*node, name.clone())),
        _ => None,
    })
    .await;
    assert_eq!(up, (b_id, "db".to_string()));
    assert_eq!(c.resolve("db").await.unwrap(), b_id);
    // A second provider: round robin alternates, a preference sticks.
    a.advertise("db", Bytes::new()).await.unwrap();
    expect(&mut ce, "a's service up", |e| {
        matches!(e, MeshEvent::ServiceUp { node, .. } if *node == a_id).then_some(())
    })
    .await;
    let (first, second) = (
        c.resolve("db").await.unwrap(),
        c.resolve("db").await.unwrap(),
    );
    assert_ne!(first, second, "round robin");
    assert!([a_id, b_id].contains(&first) && [a_id, b_id].contains(&second));
    for _ in 0..3 {
        assert_eq!(c.resolve_preferring("db", b_id).await.unwrap(), b_id);
    }
    a.withdraw("db").await.unwrap();
    let services = c.services().await.unwrap();
    assert!(services
        .iter()
        .any(|s| s.node == b_id && s.name == "db" && s.metadata == b"port=5432"[..]));
    let have_process = timeout(WAIT, async {
        loop {
            let ps = c.processes().await.unwrap();
            if ps
                .iter()
                .any(|p| p.node == b_id && p.pid == 42 && p.name == "worker")
            {
                return;
            }
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(have_process.is_ok(), "the process reached c");
    // Nobody provides "cache": asked, not found (and typed).
    assert_eq!(
        c.resolve("cache").await,
        Err(MeshError::NotFound("cache".into()))
    );
    assert!(matches!(
        c.advertise("", Bytes::new()).await,
        Err(MeshError::Registry(_))
    ));

    // b leaves gracefully: a sees it left and its service gone.
    b.shutdown().await;
    expect(&mut ae, "member b left", |e| {
        matches!(e, MeshEvent::MemberLeft { node } if *node == b_id).then_some(())
    })
    .await;
    expect(&mut ae, "service down", |e| {
        matches!(e, MeshEvent::ServiceDown { node, name } if *node == b_id && name == "db")
            .then_some(())
    })
    .await;
    c.shutdown().await;
    a.shutdown().await;
}
