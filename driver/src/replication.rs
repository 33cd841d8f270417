//! Replication through the handle: the chain and tree the application plugs in with
//! [`crate::MeshBuilder::chain_store`] and [`crate::MeshBuilder::tree_store`], the
//! [`Mesh`] calls that read and write them through the event loop, and the
//! [`MeshEvent`]s the core's [`SyncEvent`]s become.

use bytes::Bytes;
use futures::channel::oneshot;
use tracing::{debug, info, warn};
use weft_mesh::node::{Node, SyncEvent, TreeWrite};
use weft_mesh::sync::chain::{ChainEntry, ChainHead};
use weft_mesh::sync::TreeState;
use weft_mesh::{Instant, NodeId};

use crate::event_loop::Command;
use crate::{Mesh, MeshError, MeshEvent};

/// Most entries one [`Mesh::chain_entries`] call returns.
pub const MAX_CHAIN_READ: usize = 4096;

/// A store plugged into the node before it starts (see [`crate::MeshBuilder`]).
pub(crate) type Plug = Box<dyn FnOnce(&mut Node) -> Result<(), crate::StartError> + Send>;

/// A replication call of a [`Mesh`] handle, carried out by the event loop.
pub(crate) enum SyncCommand {
    Append {
        payload: Bytes,
        reply: oneshot::Sender<Result<ChainHead, MeshError>>,
    },
    ChainHead {
        reply: oneshot::Sender<Option<ChainHead>>,
    },
    ChainEntries {
        from: u64,
        max: usize,
        reply: oneshot::Sender<Vec<ChainEntry>>,
    },
    TreeWrite {
        /// Keys with their new values (`None`: remove the key).
        writes: Vec<(Bytes, Option<Bytes>)>,
        version: Option<u64>,
        reply: oneshot::Sender<Result<usize, MeshError>>,
    },
    TreeGet {
        key: Bytes,
        reply: oneshot::Sender<Option<Bytes>>,
    },
    TreeState {
        reply: oneshot::Sender<Option<TreeState>>,
    },
    PullTree {
        peer: NodeId,
        reply: oneshot::Sender<bool>,
    },
}

impl SyncCommand {
    /// Carry the call out on `node` at `now` and answer the handle.
    pub(crate) fn run(self, node: &mut Node, now: Instant) {
        match self {
            SyncCommand::Append { payload, reply } => {
                let result = node.append_chain(now, payload);
                let _ = reply.send(result.map_err(MeshError::Chain));
            }
            SyncCommand::ChainHead { reply } => {
                let _ = reply.send(node.chain().map(|c| c.head()));
            }
            SyncCommand::ChainEntries { from, max, reply } => {
                let entries = node.chain().map_or_else(Vec::new, |chain| {
                    let head = chain.head().seq;
                    (from.max(1)..=head)
                        .take(max.min(MAX_CHAIN_READ))
                        .map_while(|seq| chain.get(seq))
                        .collect()
                });
                let _ = reply.send(entries);
            }
            SyncCommand::TreeWrite {
                writes,
                version,
                reply,
            } => {
                let batch = writes.iter().map(|(key, value)| match value {
                    Some(value) => TreeWrite::insert(key, value),
                    None => TreeWrite::remove(key),
                });
                let result = node.write_tree(now, batch, version);
                let _ = reply.send(result.map_err(MeshError::Tree));
            }
            SyncCommand::TreeGet { key, reply } => {
                let value = node
                    .tree()
                    .and_then(|t| t.get(&key))
                    .map(|v| Bytes::copy_from_slice(&v));
                let _ = reply.send(value);
            }
            SyncCommand::TreeState { reply } => {
                let _ = reply.send(node.tree_state());
            }
            SyncCommand::PullTree { peer, reply } => {
                let _ = reply.send(node.pull_tree(now, peer));
            }
        }
    }
}

/// The event a core [`SyncEvent`] becomes (logged), `None` for kinds this driver does
/// not know (a newer core).
pub(crate) fn mesh_event(event: SyncEvent) -> Option<MeshEvent> {
    Some(match event {
        SyncEvent::ChainProgress { peer, head } => {
            debug!(peer = %peer.short(), seq = head.seq, "chain progress");
            MeshEvent::ChainProgress { peer, head }
        }
        SyncEvent::ChainSynced {
            peer,
            head,
            appended,
        } => {
            info!(peer = %peer.short(), seq = head.seq, appended, "chain synced");
            MeshEvent::ChainSynced {
                peer,
                head,
                appended,
            }
        }
        SyncEvent::ChainForked { peer, fork } => {
            warn!(peer = %peer.short(), seq = fork.seq(), "chain forked: no more pulls from this peer");
            MeshEvent::ChainForked { peer, fork }
        }
        SyncEvent::ChainFailed { peer, error } => {
            info!(peer = %peer.short(), %error, "chain pull failed");
            MeshEvent::ChainFailed { peer, error }
        }
        SyncEvent::TreeSynced {
            peer,
            state,
            bytes_received,
            leaves,
        } => {
            info!(
                peer = %peer.short(),
                version = state.version,
                bytes_received,
                leaves,
                "tree synced"
            );
            MeshEvent::TreeSynced {
                peer,
                state,
                bytes_received,
                leaves,
            }
        }
        SyncEvent::TreeFailed { peer, error } => {
            info!(peer = %peer.short(), %error, "tree pull failed");
            MeshEvent::TreeFailed { peer, error }
        }
        SyncEvent::TreeDiverged { peer, ours, theirs } => {
            warn!(
                peer = %peer.short(),
                version = ours.version,
                "tree diverged: same version, another root"
            );
            MeshEvent::TreeDiverged { peer, ours, theirs }
        }
        other => {
            debug!(event = ?other, "sync event unknown to this driver");
            return None;
        }
    })
}

impl<R> Mesh<R> {
    async fn sync<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> SyncCommand,
    ) -> Result<T, MeshError> {
        self.ask(|reply| Command::Sync(make(reply))).await
    }

    /// Append an entry with `payload` to this node's chain and return the new head;
    /// peers keeping a chain hear of it and pull it. Fails with [`MeshError::Chain`]
    /// without a chain store, for a payload over 1 MiB, or if the store refuses it.
    pub async fn append_chain(&self, payload: impl Into<Bytes>) -> Result<ChainHead, MeshError> {
        let payload = payload.into();
        self.sync(|reply| SyncCommand::Append { payload, reply })
            .await?
    }

    /// The head of this node's chain (sequence number and hash of its last entry), if
    /// a chain store is plugged in.
    pub async fn chain_head(&self) -> Result<Option<ChainHead>, MeshError> {
        self.sync(|reply| SyncCommand::ChainHead { reply }).await
    }

    /// Entries of this node's chain from sequence number `from` (entries count from 1)
    /// up to the head, at most `max` of them and at most [`MAX_CHAIN_READ`]; empty
    /// without a chain store or above the head.
    pub async fn chain_entries(&self, from: u64, max: usize) -> Result<Vec<ChainEntry>, MeshError> {
        self.sync(|reply| SyncCommand::ChainEntries { from, max, reply })
            .await
    }

    /// Entry `seq` of this node's chain, if it has one.
    pub async fn chain_entry(&self, seq: u64) -> Result<Option<ChainEntry>, MeshError> {
        if seq == 0 {
            return Ok(None);
        }
        Ok(self.chain_entries(seq, 1).await?.pop())
    }

    /// Apply `writes` (keys with their new values; `None` removes the key) to this
    /// node's tree as one change, every key and value checked before any is written:
    /// the version becomes `version` if given, else grows by one if anything changed.
    /// Peers with a lower version pull the result. Returns how many writes changed the
    /// tree; fails with [`MeshError::Tree`] without a tree store or for a key over
    /// 1 KiB or a value over 1 MiB.
    pub async fn write_tree(
        &self,
        writes: Vec<(Bytes, Option<Bytes>)>,
        version: Option<u64>,
    ) -> Result<usize, MeshError> {
        self.sync(|reply| SyncCommand::TreeWrite {
            writes,
            version,
            reply,
        })
        .await?
    }

    /// Write `key` = `value` into this node's tree (one [`Mesh::write_tree`]): the
    /// version grows by one if the value changed. Returns whether it changed.
    pub async fn tree_insert(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<bool, MeshError> {
        let write = (key.into(), Some(value.into()));
        Ok(self.write_tree(vec![write], None).await? > 0)
    }

    /// Remove `key` from this node's tree (one [`Mesh::write_tree`]): the version grows
    /// by one if it was there. Returns whether it was.
    pub async fn tree_remove(&self, key: impl Into<Bytes>) -> Result<bool, MeshError> {
        Ok(self.write_tree(vec![(key.into(), None)], None).await? > 0)
    }

    /// The value under `key` in this node's tree (`None` also without a tree store).
    pub async fn tree_get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, MeshError> {
        let key = key.into();
        self.sync(|reply| SyncCommand::TreeGet { key, reply }).await
    }

    /// This node's tree version and Merkle root, if a tree store is plugged in. Two
    /// nodes whose roots are equal hold the same keys and values.
    pub async fn tree_state(&self) -> Result<Option<TreeState>, MeshError> {
        self.sync(|reply| SyncCommand::TreeState { reply }).await
    }

    /// Set this node's tree version (say, to the chain entry whose effects the tree
    /// holds); peers with a lower version and another root then mirror this tree.
    pub async fn set_tree_version(&self, version: u64) -> Result<(), MeshError> {
        self.write_tree(Vec::new(), Some(version)).await.map(|_| ())
    }

    /// Mirror `peer`'s tree whatever the versions (after a [`MeshEvent::TreeDiverged`],
    /// say). False without a tree store, if `peer` has told no tree state yet, or while
    /// another tree pull runs; the outcome is a [`MeshEvent::TreeSynced`] or
    /// [`MeshEvent::TreeFailed`].
    pub async fn pull_tree(&self, peer: NodeId) -> Result<bool, MeshError> {
        self.sync(|reply| SyncCommand::PullTree { peer, reply })
            .await
    }
}
