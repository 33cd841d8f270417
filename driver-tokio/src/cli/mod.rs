//! The command line: argument parsing and the four commands.

mod demo;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use weft_mesh::handshake::PqPolicy;
use weft_mesh::sync::chain::MemoryChain;
use weft_mesh::sync::merkle::MemoryStore;
use weft_mesh::{CloseReason, NodeId};
use weft_mesh_tokio::{
    identity_file, Mesh, MeshBuilder, MeshError, MeshEvent, Target, DEV_GENESIS,
};

use output::Output;

/// An encrypted, post-quantum peer-to-peer mesh node.
#[derive(Parser)]
#[command(name = "weft-mesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an identity file (mode 0600) and print its node id.
    Keygen {
        /// Where to write the identity.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a node until SIGINT or SIGTERM.
    Node {
        /// Identity file (created if it does not exist).
        #[arg(long)]
        identity: PathBuf,
        /// Listen address: tcp://host:port or ws://host:port/path (repeatable).
        #[arg(long = "listen")]
        listen: Vec<String>,
        /// Seed peer to keep a connection to (repeatable).
        #[arg(long = "seed")]
        seed: Vec<String>,
        /// Address other nodes can dial this one at (repeatable; default: the listen
        /// addresses, except 0.0.0.0 / [::] ones).
        #[arg(long = "advertise")]
        advertise: Vec<String>,
        /// Links to keep by dialing nodes learned from peers (0: only seeds and
        /// inbound links; the mesh relays everything else). Beyond this many, links
        /// other than seeds that carried no message for 5 minutes are closed.
        #[arg(long, default_value_t = 8)]
        target_peers: usize,
        /// Answer every request with its own data.
        #[arg(long)]
        echo: bool,
        /// Advertise a service this node provides (repeatable): every member learns it.
        #[arg(long = "service")]
        service: Vec<String>,
        /// Keep an in-memory chain, replicated with peers that keep one, starting with
        /// this many generated entries ("entry 1", "entry 2", ...).
        #[arg(long, value_name = "ENTRIES")]
        chain: Option<u32>,
        /// Keep an in-memory key/value tree, replicated with peers that keep one, of
        /// this many generated keys ("key 1" = "value 1", ...) at version KEYS: a node
        /// with more keys wins, and the others repair their difference.
        #[arg(long, value_name = "KEYS")]
        tree: Option<u32>,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// One JSON object per line on stdout instead of human-readable lines.
        #[arg(long)]
        json: bool,
    },
    /// Connect to a seed, deliver DATA to a node (through the seed and further relays
    /// if it is not the seed itself), and exit once the node acknowledged it.
    Send {
        /// The peer to connect to (the only link this command opens).
        #[arg(long)]
        seed: String,
        /// The recipient's node id (64 hex digits).
        #[arg(long)]
        to: NodeId,
        /// Deliver to this service of the recipient instead of the node itself.
        #[arg(long)]
        service: Option<String>,
        /// Send a request and print the response on stdout.
        #[arg(long)]
        request: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// The message.
        data: String,
    },
    /// Start a few nodes on loopback and show what happens between them.
    Demo {
        /// How many nodes.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=64))]
        nodes: u16,
    },
}

/// What every node of one cluster must agree on.
#[derive(clap::Args)]
struct ClusterArgs {
    /// Governance genesis hash (64 hex digits); defaults to the development genesis.
    #[arg(long, value_parser = parse_genesis)]
    genesis: Option<[u8; 32]>,
    /// Post-quantum policy.
    #[arg(long, value_enum, default_value_t = Pq::Prefer)]
    pq: Pq,
}

#[derive(Clone, Copy, ValueEnum)]
enum Pq {
    /// Only hybrid (X25519 + ML-KEM-768) sessions.
    Require,
    /// Hybrid when the peer can, classical otherwise.
    Prefer,
    /// Classical X25519 only.
    Off,
}

impl ClusterArgs {
    fn apply(
        &self,
        builder: MeshBuilder<weft_mesh_tokio::Tokio>,
    ) -> MeshBuilder<weft_mesh_tokio::Tokio> {
        builder
            .genesis(self.genesis.unwrap_or(DEV_GENESIS))
            .pq(match self.pq {
                Pq::Require => PqPolicy::Require,
                Pq::Prefer => PqPolicy::Prefer,
                Pq::Off => PqPolicy::Off,
            })
    }
}

fn parse_genesis(s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "a genesis hash is 32 bytes (64 hex digits)".to_owned())
}

/// Parse arguments, run the command, map failures to a one-line message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo provokes what a node warns of (a forked chain): its narration says it.
    let default = match cli.command {
        Command::Demo { .. } => "error",
        _ => "warn",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Keygen { out } => {
            let identity =
                weft_mesh::Identity::generate(&mut weft_mesh_tokio::identity_file::os_rng());
            identity_file::create(&out, &identity).map_err(|e| e.to_string())?;
            println!("{}", identity.node_id());
            Ok(())
        }
        Command::Node {
            identity,
            listen,
            seed,
            advertise,
            target_peers,
            echo,
            service,
            chain,
            tree,
            cluster,
            json,
        } => {
            let args = NodeArgs {
                identity,
                listen,
                seeds: seed,
                advertise,
                target_peers,
                echo,
                services: service,
                chain,
                tree,
            };
            node(args, cluster, json).await
        }
        Command::Send {
            seed,
            to,
            service,
            request,
            cluster,
            timeout,
            data,
        } => {
            let target = service.map_or(Target::Node, Target::Service);
            let timeout = Duration::try_from_secs_f64(timeout)
                .map_err(|_| format!("bad --timeout {timeout}"))?;
            let what = Outgoing {
                to,
                target,
                request,
                data: Bytes::from(data.into_bytes()),
            };
            send(seed, what, cluster, timeout).await
        }
        Command::Demo { nodes } => demo::run(nodes.into()).await,
    }
}

/// What `node` runs with.
struct NodeArgs {
    identity: PathBuf,
    listen: Vec<String>,
    seeds: Vec<String>,
    advertise: Vec<String>,
    target_peers: usize,
    echo: bool,
    services: Vec<String>,
    chain: Option<u32>,
    tree: Option<u32>,
}

async fn node(args: NodeArgs, cluster: ClusterArgs, json: bool) -> Result<(), String> {
    let (id, created) = identity_file::load_or_create(&args.identity).map_err(|e| e.to_string())?;
    let out = Output::new(json);
    let target_peers = args.target_peers;
    let mut builder = cluster
        .apply(Mesh::builder().identity(id))
        .configure(|c| c.target_peers = target_peers);
    for addr in args.listen {
        builder = builder.listen(addr);
    }
    for addr in args.seeds {
        builder = builder.seed(addr);
    }
    for addr in args.advertise {
        builder = builder.advertise(addr);
    }
    if let Some(entries) = args.chain {
        let payloads = (1..=entries).map(|i| format!("entry {i}").into_bytes());
        let chain = MemoryChain::from_payloads(payloads).map_err(|e| e.to_string())?;
        builder = builder.chain_store(chain);
    }
    if let Some(keys) = args.tree {
        let tree: MemoryStore = (1..=keys)
            .map(|i| {
                (
                    format!("key {i}").into_bytes(),
                    format!("value {i}").into_bytes(),
                )
            })
            .collect();
        builder = builder.tree_store(tree, keys.into());
    }
    let mut events = builder.subscribe();
    let mesh = builder.start().await.map_err(|e| e.to_string())?;
    out.started(mesh.node_id(), created.then_some(args.identity.as_path()));
    for addr in mesh.local_addrs() {
        out.listening(addr);
    }
    for name in &args.services {
        mesh.advertise(name.as_str(), Bytes::new())
            .await
            .map_err(|e| format!("service {name:?}: {e}"))?;
    }
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.next() => match event {
                Some(event) => {
                    out.event(&event, args.echo);
                    if let (true, MeshEvent::Request { data, responder, .. }) = (args.echo, event) {
                        // Not awaited here: a slow answer must not hold up the events.
                        tokio::spawn(async move { responder.respond(data).await });
                    }
                }
                None => break,
            },
        }
    }
    mesh.shutdown().await;
    out.stopped();
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What `send` delivers.
struct Outgoing {
    to: NodeId,
    target: Target,
    request: bool,
    data: Bytes,
}

/// After a retryable failure (no route yet: the mesh is still converging), try again
/// this much later.
const SEND_RETRY: Duration = Duration::from_millis(100);

async fn send(
    seed: String,
    what: Outgoing,
    cluster: ClusterArgs,
    timeout: Duration,
) -> Result<(), String> {
    // One link, to the seed: everything else is relayed by the mesh. A one-shot client
    // should not dial the nodes it learns of (nor advertise itself: it does not listen).
    let mut builder = cluster
        .apply(Mesh::builder().seed(seed.clone()))
        .configure(|c| {
            c.redial_max = Duration::from_millis(500);
            c.max_links = 1;
            c.target_peers = 0;
            c.message_timeout = timeout;
        })
        .connect_timeout(timeout);
    let mut events = builder.subscribe();
    let mesh = builder.start().await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    let to = what.to;
    let (mut linked, mut last) = (false, None::<MeshError>);
    let result = tokio::time::timeout_at(deadline, async {
        // Nothing can leave before the seed's link is up.
        let mut attempt = None;
        let mut retry = None;
        loop {
            tokio::select! {
                r = async { attempt.as_mut().expect("guarded").await }, if attempt.is_some() => {
                    attempt = None;
                    match r {
                        Ok(reply) => return Ok(reply),
                        Err(MeshError::PeerClosed { reason, .. }) if is_final(reason) => {
                            return Err(describe(reason, &seed));
                        }
                        Err(e @ (MeshError::NoRoute(_)
                        | MeshError::PeerClosed { .. }
                        | MeshError::Timeout(_)
                        | MeshError::Full)) => {
                            last = Some(e);
                            retry = Some(Box::pin(tokio::time::sleep(SEND_RETRY)));
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                () = async { retry.as_mut().expect("guarded").await }, if retry.is_some() => {
                    retry = None;
                    attempt = Some(Box::pin(deliver(&mesh, &what, deadline)));
                }
                event = events.next() => match event {
                    Some(MeshEvent::PeerUp { .. }) if attempt.is_none() && retry.is_none() => {
                        linked = true;
                        attempt = Some(Box::pin(deliver(&mesh, &what, deadline)));
                    }
                    // An XX responder judges our hello after our side is up: if it
                    // refused, a PeerDown with the reason follows.
                    Some(MeshEvent::Rejected { reason, .. } | MeshEvent::PeerDown { reason, .. })
                        if is_final(reason) =>
                    {
                        return Err(describe(reason, &seed));
                    }
                    Some(_) => {}
                    None => return Err("stopped".into()),
                }
            }
        }
    })
    .await;
    mesh.shutdown().await;
    match result {
        Ok(Ok(Some(reply))) => {
            println!("{}", String::from_utf8_lossy(&reply));
            Ok(())
        }
        Ok(Ok(None)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "unreachable: {to} not reached through {seed} within {timeout:?} ({})",
            match (linked, last) {
                (false, _) => "no link to the seed".to_owned(),
                (true, Some(e)) => e.to_string(),
                (true, None) => "no answer".to_owned(),
            }
        )),
    }
}

/// One attempt: a message (`None` once acknowledged) or a request (its response).
async fn deliver(
    mesh: &Mesh,
    what: &Outgoing,
    deadline: tokio::time::Instant,
) -> Result<Option<Bytes>, MeshError> {
    let (to, target, data) = (what.to, what.target.clone(), what.data.clone());
    if what.request {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // The core retransmits a relayed request, and the destination answers a copy
        // with the response it already gave: one request can use all the time left.
        mesh.request(to, target, data, left).await.map(Some)
    } else {
        mesh.send(to, target, data).await.map(|()| None)
    }
}

/// Rejections that retrying cannot fix.
fn is_final(reason: CloseReason) -> bool {
    reason.is_handshake_rejection() && reason != CloseReason::HandshakeTimeout
}

fn describe(reason: CloseReason, seed: &str) -> String {
    match reason {
        CloseReason::GenesisMismatch => {
            format!("genesis mismatch: {seed} belongs to another cluster")
        }
        CloseReason::PolicyViolation => {
            format!("policy: {seed} does not accept this post-quantum policy")
        }
        other => format!("rejected by {seed}: {other}"),
    }
}
