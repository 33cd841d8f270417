//! One simulated machine: a `Node` (absent while crashed), the identity and seeds that
//! survive a restart, its open connections and the events it reported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use weft_mesh::node::{ConnId, Node, NodeConfig, NodeEvent};
use weft_mesh::{Identity, Instant, Rng};

use super::network::{Side, WireId};
use super::NodeIdx;

/// A node event as the simulator recorded it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Recorded {
    /// When the node reported it.
    pub at: Instant,
    /// Which life of the node reported it (0 until the first restart).
    pub incarnation: u32,
    /// The event.
    pub event: NodeEvent,
}

pub(crate) struct Host {
    pub identity: Arc<Identity>,
    pub config: NodeConfig,
    /// Forked into a fresh generator for each incarnation.
    pub rng: Rng,
    /// `None` while crashed.
    pub node: Option<Node>,
    /// Bumped by every crash; timer events of older lives are ignored.
    pub incarnation: u32,
    /// Nodes this one keeps a connection to (re-added on restart).
    pub seeds: Vec<NodeIdx>,
    /// Open connection ends of the current life.
    pub conns: BTreeMap<ConnId, (WireId, Side)>,
    /// Connections with a `Transmit` outstanding (pulled when the socket has room).
    pub ready: BTreeSet<ConnId>,
    /// The timer deadline scheduled last.
    pub armed: Option<Instant>,
    /// Processing nothing until this instant.
    pub paused_until: Option<Instant>,
    /// Overloaded: each input is handled this long (uniform in `min..=max`) after it
    /// arrives ([`Sim::overload`](super::Sim::overload)).
    pub lag: Option<(Duration, Duration)>,
    /// When the last late input is handled (later inputs wait behind it).
    pub lagged_until: Option<Instant>,
    /// Shutting down in order: dropped once its last connection is gone.
    pub stopping: bool,
    /// Every event the node reported, across lives.
    pub events: Vec<Recorded>,
}

impl Host {
    pub fn new(identity: Arc<Identity>, config: NodeConfig, mut rng: Rng) -> Self {
        let node = Node::new(identity.clone(), config.clone(), rng.fork());
        Host {
            identity,
            config,
            rng,
            node: Some(node),
            incarnation: 0,
            seeds: Vec::new(),
            conns: BTreeMap::new(),
            ready: BTreeSet::new(),
            armed: None,
            paused_until: None,
            lag: None,
            lagged_until: None,
            stopping: false,
            events: Vec::new(),
        }
    }

    /// Whether the node is paused at `now`.
    pub fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }
}
