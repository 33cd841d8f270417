//! Sources of cluster addresses besides seeds, joins and peer exchange: a
//! [`DiscoveryBackend`] (a static list, DNS, a cloud API, a file, ...) is polled
//! periodically, and every new address it reports becomes a seed of the node (kept
//! connected, redialed with backoff), exactly like [`crate::Mesh::connect`].

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{self, Either};
use futures::FutureExt;
use tracing::{debug, info, warn};

use crate::event_loop::Command;
use crate::{Addr, AddrError, BoxFuture, Runtime};

/// How long one poll of a backend may take before it counts as failed.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Addresses the discovery task remembers (and hands to the node) at most; beyond
/// that, new addresses are ignored with a warning.
pub const MAX_DISCOVERED: usize = 1024;

/// The shortest polling interval; shorter ones are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A source of cluster member addresses, polled by the mesh (see
/// [`crate::MeshBuilder::discovery`]).
///
/// Each poll reports the addresses this source knows now; the mesh dials those it
/// has not seen before and keeps them as seeds. Addresses that disappear from a
/// source later are not forgotten (the node's seeds, membership and peer exchange
/// decide about connections). A failed poll is logged and retried at the next
/// interval; it never stops the mesh.
///
/// The trait is runtime-independent: return any `Send` future, and do not block in
/// [`DiscoveryBackend::discover`] itself (it runs on the runtime's threads). The
/// future must be `'static`: clone what it needs out of `self`.
///
/// ```
/// use std::sync::Arc;
/// use weft_mesh_driver::{Addr, BoxFuture, DiscoveryBackend, DiscoveryError};
///
/// /// Reads one address per line from a file, at every poll.
/// struct FileDiscovery {
///     path: Arc<std::path::Path>,
/// }
///
/// impl DiscoveryBackend for FileDiscovery {
///     fn name(&self) -> &str {
///         "file"
///     }
///
///     fn discover(&self) -> BoxFuture<Result<Vec<Addr>, DiscoveryError>> {
///         let path = self.path.clone();
///         Box::pin(async move {
///             // (A real backend would use its runtime's async file API.)
///             let text = std::fs::read_to_string(&path)?;
///             let addrs = text
///                 .lines()
///                 .map(str::trim)
///                 .filter(|l| !l.is_empty() && !l.starts_with('#'))
///                 .map(str::parse)
///                 .collect::<Result<Vec<Addr>, _>>()?;
///             Ok(addrs)
///         })
///     }
/// }
///
/// // Then: Mesh::builder().discovery(FileDiscovery { path: ... })
/// # let _ = FileDiscovery { path: std::path::Path::new("/etc/weft/peers").into() };
/// ```
pub trait DiscoveryBackend: Send + Sync + 'static {
    /// A short name for logs (`"static"`, `"dns"`, ...).
    fn name(&self) -> &str;

    /// The addresses of cluster members this source knows now. Given at most
    /// [`DISCOVERY_TIMEOUT`]; a later answer is dropped and counts as a failure.
    fn discover(&self) -> BoxFuture<Result<Vec<Addr>, DiscoveryError>>;
}

impl<T: DiscoveryBackend + ?Sized> DiscoveryBackend for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn discover(&self) -> BoxFuture<Result<Vec<Addr>, DiscoveryError>> {
        (**self).discover()
    }
}

/// Why a [`DiscoveryBackend`] poll failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The backend did not answer within this time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An address the source holds did not parse.
    #[error(transparent)]
    BadAddr(#[from] AddrError),
    /// An I/O error (reading a file, a socket, a resolver, ...).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Any other failure of the source.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl DiscoveryError {
    /// A failure of the source with this error or message.
    ///
    /// ```
    /// use weft_mesh_driver::DiscoveryError;
    /// let e = DiscoveryError::other("the API answered 503");
    /// assert_eq!(e.to_string(), "the API answered 503");
    /// ```
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        DiscoveryError::Other(error.into())
    }
}

/// A fixed list of addresses (from configuration): every poll returns all of them.
///
/// ```
/// use weft_mesh_driver::StaticDiscovery;
/// let list = StaticDiscovery::new(["tcp://10.0.0.1:7000", "ws://10.0.0.2:7001/mesh"]).unwrap();
/// assert_eq!(list.addrs().len(), 2);
/// assert!(StaticDiscovery::new(["udp://10.0.0.3:7000"]).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticDiscovery {
    addrs: Arc<[Addr]>,
}

impl StaticDiscovery {
    /// Parse `addrs` (`tcp://host:port`, `ws://host:port/path` or `host:port`); the
    /// first one that does not parse is the error.
    pub fn new<I>(addrs: I) -> Result<Self, AddrError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let addrs = addrs
            .into_iter()
            .map(|a| a.as_ref().parse())
            .collect::<Result<Vec<Addr>, _>>()?;
        Ok(Self::from_addrs(addrs))
    }

    /// A list of already parsed addresses.
    pub fn from_addrs(addrs: impl IntoIterator<Item = Addr>) -> Self {
        StaticDiscovery {
            addrs: addrs.into_iter().collect(),
        }
    }

    /// The addresses.
    pub fn addrs(&self) -> &[Addr] {
        &self.addrs
    }
}

impl DiscoveryBackend for StaticDiscovery {
    fn name(&self) -> &str {
        "static"
    }

    fn discover(&self) -> BoxFuture<Result<Vec<Addr>, DiscoveryError>> {
        let addrs = self.addrs.to_vec();
        Box::pin(future::ready(Ok(addrs)))
    }
}

/// What the discovery task of one node needs.
pub(crate) struct Discovery {
    pub backends: Vec<Arc<dyn DiscoveryBackend>>,
    pub interval: Duration,
    /// The node's own listen and advertised addresses: never dialed.
    pub own: Vec<Addr>,
}

/// Poll every backend now and then every `interval`, and hand each new address to the
/// node as a seed. Ends when the node stops (its command channel closes); the loop
/// also aborts it on shutdown.
pub(crate) async fn run<R: Runtime>(
    runtime: R,
    discovery: Discovery,
    commands: async_channel::WeakSender<Command>,
) {
    let Discovery {
        backends,
        interval,
        own,
    } = discovery;
    let interval = interval.max(MIN_INTERVAL);
    let own: HashSet<Addr> = own.into_iter().collect();
    let mut known: HashSet<Addr> = HashSet::new();
    loop {
        let polls = backends.iter().map(|b| poll(&runtime, b.as_ref()));
        let results = future::join_all(polls).await;
        for (backend, result) in backends.iter().zip(results) {
            let name = backend.name();
            let addrs = match result {
                Ok(addrs) => addrs,
                Err(error) => {
                    warn!(backend = name, %error, retry_in = ?interval, "discovery failed");
                    continue;
                }
            };
            let (found, mut added, mut ignored) = (addrs.len(), 0usize, 0usize);
            for addr in addrs {
                if own.contains(&addr) || known.contains(&addr) {
                    continue;
                }
                if known.len() >= MAX_DISCOVERED {
                    ignored += 1;
                    continue;
                }
                // Weak: the discovery task alone must not keep the node running.
                let Some(commands) = commands.upgrade() else {
                    return;
                };
                let (reply, _) = oneshot::channel();
                let command = Command::Connect {
                    addr: addr.clone(),
                    reply,
                };
                if commands.send(command).await.is_err() {
                    return;
                }
                info!(backend = name, %addr, "discovered");
                known.insert(addr);
                added += 1;
            }
            debug!(backend = name, found, added, "discovery poll");
            if ignored > 0 {
                warn!(
                    backend = name,
                    ignored,
                    limit = MAX_DISCOVERED,
                    "too many discovered addresses; ignoring new ones"
                );
            }
        }
        runtime.sleep(interval).await;
    }
}

/// One poll of `backend`, at most [`DISCOVERY_TIMEOUT`]; a panic is a failure too.
async fn poll<R: Runtime>(
    runtime: &R,
    backend: &dyn DiscoveryBackend,
) -> Result<Vec<Addr>, DiscoveryError> {
    let discover = std::panic::catch_unwind(AssertUnwindSafe(|| backend.discover()))
        .map_err(|_| DiscoveryError::other("the backend panicked"))?;
    let discover = AssertUnwindSafe(discover).catch_unwind();
    let timer = Box::pin(runtime.sleep(DISCOVERY_TIMEOUT));
    match future::select(discover, timer).await {
        Either::Left((Ok(result), _)) => result,
        Either::Left((Err(_), _)) => Err(DiscoveryError::other("the backend panicked")),
        Either::Right(_) => Err(DiscoveryError::Timeout(DISCOVERY_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// A runtime whose sleeps end at the next poll; `run` spawns nothing.
    #[derive(Clone)]
    struct Immediate;

    impl Runtime for Immediate {
        fn spawn<F>(&self, _: F)
        where
            F: std::future::Future<Output = ()> + Send + 'static,
        {
            unreachable!("the discovery task spawns nothing")
        }

        fn sleep(&self, _: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
            let mut yielded = false;
            future::poll_fn(move |cx| {
                if yielded {
                    return std::task::Poll::Ready(());
                }
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
        }

        type Timer = Never;

        fn timer(&self) -> Never {
            Never
        }

        fn transports(&self) -> Vec<Arc<dyn crate::MeshTransport>> {
            Vec::new()
        }
    }

    /// The discovery task uses no re-armable timer.
    struct Never;

    impl std::future::Future for Never {
        type Output = ();

        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            std::task::Poll::Pending
        }
    }

    impl crate::Timer for Never {
        fn set_at(&mut self, _: std::time::Instant) {}
    }

    /// Returns `addrs` at every poll, failing (or panicking) every other poll.
    struct Counting {
        addrs: Vec<Addr>,
        polls: Arc<AtomicUsize>,
    }

    impl DiscoveryBackend for Counting {
        fn name(&self) -> &str {
            "counting"
        }

        fn discover(&self) -> BoxFuture<Result<Vec<Addr>, DiscoveryError>> {
            let n = self.polls.fetch_add(1, SeqCst);
            let addrs = self.addrs.clone();
            Box::pin(async move {
                match n % 4 {
                    1 => Err(DiscoveryError::other("flaky")),
                    3 => panic!("a buggy backend"),
                    _ => Ok(addrs),
                }
            })
        }
    }

    /// Run the discovery task over `addrs` for `polls` polls; the addresses it handed
    /// to the node, in order.
    fn seeds_from(addrs: Vec<Addr>, own: Vec<Addr>, polls: usize) -> Vec<Addr> {
        let counter = Arc::new(AtomicUsize::new(0));
        let backend = Counting {
            addrs,
            polls: counter.clone(),
        };
        let discovery = Discovery {
            backends: vec![Arc::new(backend)],
            interval: Duration::from_secs(30),
            own,
        };
        let (tx, rx) = async_channel::unbounded();
        let task = run(Immediate, discovery, tx.downgrade());
        let enough = future::poll_fn(|cx| {
            if counter.load(SeqCst) > polls {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        });
        futures::executor::block_on(future::select(Box::pin(task), enough));
        let mut seeds = Vec::new();
        while let Ok(command) = rx.try_recv() {
            match command {
                Command::Connect { addr, .. } => seeds.push(addr),
                _ => panic!("unexpected command"),
            }
        }
        seeds
    }

    fn addr(i: usize) -> Addr {
        format!("tcp://10.0.{}.{}:7000", i / 256, i % 256)
            .parse()
            .unwrap()
    }

    #[test]
    fn each_address_is_handed_over_once_and_failures_do_not_stop_polling() {
        let (x, y, me) = (addr(1), addr(2), addr(3));
        let list = vec![x.clone(), y.clone(), me.clone(), x.clone()];
        // Polls 0, 2, 4, 6, 8 succeed; 1, 5 fail, 3, 7 panic.
        let seeds = seeds_from(list, vec![me], 8);
        assert_eq!(seeds, [x, y]);
    }

    #[test]
    fn at_most_max_discovered_addresses_are_handed_over() {
        let list: Vec<Addr> = (0..MAX_DISCOVERED + 100).map(addr).collect();
        let seeds = seeds_from(list.clone(), Vec::new(), 4);
        assert_eq!(seeds, list[..MAX_DISCOVERED]);
    }

    #[test]
    fn a_static_list_parses_and_rejects_bad_addresses() {
        let list = StaticDiscovery::new(["127.0.0.1:1", "ws://h:2/m"]).unwrap();
        assert_eq!(
            list.addrs().iter().map(Addr::to_string).collect::<Vec<_>>(),
            ["tcp://127.0.0.1:1", "ws://h:2/m"]
        );
        assert_eq!(
            StaticDiscovery::new(["tcp://h:1", "tcp://nope"]),
            Err(AddrError("tcp://nope".into()))
        );
        let polled = futures::executor::block_on(list.discover()).unwrap();
        assert_eq!(polled, list.addrs());
    }
}
