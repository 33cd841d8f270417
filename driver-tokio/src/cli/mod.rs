//! The command line: argument parsing and the four commands.

mod demo;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use weft_mesh::handshake::PqPolicy;
use weft_mesh::node::SendFailure;
use weft_mesh::{CloseReason, NodeId};
use weft_mesh_tokio::{identity_file, Mesh, MeshBuilder, MeshError, MeshEvent, DEV_GENESIS};

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
        #[command(flatten)]
        cluster: ClusterArgs,
        /// One JSON object per line on stdout instead of human-readable lines.
        #[arg(long)]
        json: bool,
    },
    /// Connect to a seed, deliver DATA to a node, and exit once it is acknowledged.
    Send {
        /// The peer to connect to.
        #[arg(long)]
        seed: String,
        /// The recipient's node id (64 hex digits).
        #[arg(long)]
        to: NodeId,
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
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| "warn".into());
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
            cluster,
            json,
        } => node(identity, listen, seed, cluster, json).await,
        Command::Send {
            seed,
            to,
            cluster,
            timeout,
            data,
        } => send(seed, to, cluster, Duration::from_secs_f64(timeout), data).await,
        Command::Demo { nodes } => demo::run(nodes.into()).await,
    }
}

async fn node(
    identity: PathBuf,
    listen: Vec<String>,
    seeds: Vec<String>,
    cluster: ClusterArgs,
    json: bool,
) -> Result<(), String> {
    let (id, created) = identity_file::load_or_create(&identity).map_err(|e| e.to_string())?;
    let out = Output::new(json);
    let mut builder = cluster.apply(Mesh::builder().identity(id));
    for addr in listen {
        builder = builder.listen(addr);
    }
    for addr in seeds {
        builder = builder.seed(addr);
    }
    let mut events = builder.subscribe();
    let mesh = builder.start().await.map_err(|e| e.to_string())?;
    out.started(mesh.node_id(), created.then_some(identity.as_path()));
    for addr in mesh.local_addrs() {
        out.listening(addr);
    }
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.next() => match event {
                Some(event) => out.event(&event),
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

async fn send(
    seed: String,
    to: NodeId,
    cluster: ClusterArgs,
    timeout: Duration,
    data: String,
) -> Result<(), String> {
    let mut builder = cluster
        .apply(Mesh::builder().seed(seed.clone()))
        .configure(|c| c.redial_max = Duration::from_millis(500))
        .connect_timeout(timeout);
    let mut events = builder.subscribe();
    let mesh = builder.start().await.map_err(|e| e.to_string())?;
    let data = Bytes::from(data.into_bytes());
    let result = tokio::time::timeout(timeout, async {
        loop {
            match events.next().await {
                Some(MeshEvent::PeerUp { node, .. }) if node == to => {
                    match mesh.send(to, data.clone()).await {
                        Ok(()) => return Ok(()),
                        // An XX responder judges our hello after our side is up: if it
                        // refused, the link is gone before the send and a PeerDown with
                        // the reason follows.
                        Err(MeshError::NotConnected(_)) => {}
                        Err(MeshError::Undelivered(SendFailure::LinkClosed(reason)))
                            if is_final(reason) =>
                        {
                            return Err(describe(reason, &seed));
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Some(MeshEvent::PeerUp { node, .. }) => {
                    return Err(format!(
                        "{seed} is node {node}, not {to} (relaying arrives with the mesh layer)"
                    ));
                }
                Some(MeshEvent::Rejected { reason, .. } | MeshEvent::PeerDown { reason, .. })
                    if is_final(reason) =>
                {
                    return Err(describe(reason, &seed));
                }
                Some(_) => {}
                None => return Err("stopped".into()),
            }
        }
    })
    .await;
    mesh.shutdown().await;
    match result {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout: {to} not reached through {seed} within {timeout:?} (unreachable?)"
        )),
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
