//! Replication end to end over real loopback sockets, through the Mesh handle: a late
//! joiner catches up a chain (tokio, smol, and across the two), keeps up with entries
//! appended afterwards, a tree difference is repaired moving only the difference,
//! diverged trees are reported and settled by the application, forked chains are
//! reported with evidence, and misuse fails with typed errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use weft_mesh_driver::{Mesh, MeshBuilder, Runtime};
use weft_mesh_smol::Smol;
use weft_mesh_tokio::weft_mesh::node::{ChainWriteError, TreeWriteError};
use weft_mesh_tokio::weft_mesh::sync::chain::{ChainHead, ChainStore, MemoryChain};
use weft_mesh_tokio::weft_mesh::sync::merkle::MemoryStore;
use weft_mesh_tokio::weft_mesh::NodeId;
use weft_mesh_tokio::{Events, MeshError, MeshEvent, StartError, Tokio};

/// Longest wait for any one event.
const WAIT: Duration = Duration::from_secs(20);
/// Entries the late joiner catches up.
const ENTRIES: u32 = 5000;

async fn start<R: Runtime>(
    rt: R,
    f: impl FnOnce(MeshBuilder<R>) -> MeshBuilder<R>,
) -> (Mesh<R>, Events) {
    let mut builder = f(MeshBuilder::new(rt));
    let events = builder.subscribe();
    (builder.start().await.expect("start"), events)
}

/// `fut`, or a panic naming `what` after [`WAIT`] (on any executor: the timer has its
/// own reactor).
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    let timer = smol::Timer::after(WAIT);
    match futures::future::select(std::pin::pin!(fut), timer).await {
        futures::future::Either::Left((t, _)) => t,
        futures::future::Either::Right(_) => panic!("no {what} within {WAIT:?}"),
    }
}

/// Wait for the first event `pick` accepts; the events skipped go to `seen`.
async fn expect<T>(
    events: &mut Events,
    seen: &mut Vec<MeshEvent>,
    what: &str,
    mut pick: impl FnMut(&MeshEvent) -> Option<T>,
) -> T {
    within(what, async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(&e) {
                seen.push(e);
                return t;
            }
            seen.push(e);
        }
        panic!("the mesh stopped before {what}");
    })
    .await
}

fn chain_of(len: u32, tag: &str) -> MemoryChain {
    MemoryChain::from_payloads((0..len).map(|i| format!("{tag} entry {i}").into_bytes())).unwrap()
}

/// A node with `chain` listening on loopback, and one with an empty chain seeded with
/// it: the second catches up every entry, reporting progress and then the sync, and
/// then keeps up with an entry appended at the first.
async fn catch_up<A: Runtime, B: Runtime>(ra: A, rb: B) {
    let full = chain_of(ENTRIES, "source");
    let target = full.head();
    let (a, _ae) = start(ra, |b| b.listen("tcp://127.0.0.1:0").chain_store(full)).await;
    let seed = a.local_addrs()[0].to_string();
    // (b may have caught up before `start` returns: only its events tell.)
    let (b, mut be) = start(rb, |b| b.seed(seed).chain_store(MemoryChain::new())).await;

    let mut seen = Vec::new();
    let appended = expect(
        &mut be,
        &mut seen,
        "chain synced at the source's head",
        |e| match e {
            MeshEvent::ChainSynced {
                peer,
                head,
                appended,
            } if *head == target => {
                assert_eq!(*peer, a.node_id());
                Some(*appended)
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(appended, u64::from(ENTRIES), "every entry appended once");
    let progress: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            MeshEvent::ChainProgress { peer, head } if *peer == a.node_id() => Some(head.seq),
            _ => None,
        })
        .collect();
    assert!(progress.len() >= 2, "progress in batches: {progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress only grows: {progress:?}"
    );
    assert_eq!(progress.last(), Some(&target.seq));
    assert_eq!(b.chain_head().await.unwrap(), Some(target));
    for seq in [1, 2, u64::from(ENTRIES) / 2, u64::from(ENTRIES)] {
        let ours = b.chain_entry(seq).await.unwrap().expect("entry held");
        assert_eq!(Some(&ours), a.chain_entry(seq).await.unwrap().as_ref());
        assert_eq!(
            ours.payload(),
            &Bytes::from(format!("source entry {}", seq - 1))
        );
    }
    let read = b.chain_entries(4990, 100).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        (4990..=5000).collect::<Vec<_>>()
    );
    assert!(b.chain_entry(5001).await.unwrap().is_none());

    // Caught up, b keeps up: a's next entry reaches it.
    let next = a.append_chain(&b"one more"[..]).await.unwrap();
    assert_eq!(next.seq, target.seq + 1);
    expect(&mut be, &mut seen, "the appended entry", |e| {
        matches!(e, MeshEvent::ChainSynced { head, .. } if *head == next).then_some(())
    })
    .await;
    assert_eq!(
        b.chain_entry(next.seq).await.unwrap().unwrap().payload(),
        &b"one more"[..]
    );
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            MeshEvent::ChainForked { .. } | MeshEvent::ChainFailed { .. }
        )),
        "no fork, no failure: {seen:?}"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_tokio_node_catches_up_5000_entries_and_keeps_up() {
    catch_up(Tokio, Tokio).await;
}

#[test]
fn a_late_smol_node_catches_up_5000_entries_and_keeps_up() {
    smol::block_on(catch_up(Smol, Smol));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_catch_up_across_runtimes() {
    catch_up(Tokio, Smol).await;
    catch_up(Smol, Tokio).await;
}

/// 10 000 keys on both sides, 10 differences: 5 values changed and 3 keys added at the
/// source since, 2 keys only at the replica.
fn trees() -> (MemoryStore, MemoryStore) {
    let mut source = BTreeMap::new();
    for i in 0..10_000u32 {
        source.insert(format!("key {i}").into_bytes(), i.to_be_bytes().to_vec());
    }
    let mut replica = source.clone();
    for i in 0..5u32 {
        source.insert(
            format!("key {}", i * 1999).into_bytes(),
            b"changed".to_vec(),
        );
    }
    for i in 0..3u32 {
        source.insert(
            format!("new {i}").into_bytes(),
            b"only at the source".to_vec(),
        );
    }
    for i in 0..2u32 {
        replica.insert(
            format!("stale {i}").into_bytes(),
            b"only at the replica".to_vec(),
        );
    }
    (source.into(), replica.into())
}

/// The source's tree has the higher version: the replica mirrors it, receiving a few
/// kilobytes where the tree holds well over a hundred, and a later write at the source
/// follows.
async fn tree_repair<A: Runtime, B: Runtime>(ra: A, rb: B) {
    let (source, replica) = trees();
    let (a, _ae) = start(ra, |b| b.listen("tcp://127.0.0.1:0").tree_store(source, 2)).await;
    let want = a.tree_state().await.unwrap().unwrap();
    assert_eq!(want.version, 2);
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(rb, |b| b.seed(seed).tree_store(replica, 1)).await;

    let mut seen = Vec::new();
    let (state, bytes, leaves) = expect(&mut be, &mut seen, "tree synced", |e| match e {
        MeshEvent::TreeSynced {
            peer,
            state,
            bytes_received,
            leaves,
        } if *peer == a.node_id() => Some((*state, *bytes_received, *leaves)),
        _ => None,
    })
    .await;
    assert_eq!(state, want);
    assert_eq!(b.tree_state().await.unwrap(), Some(want));
    // Keys and values alone are ~130 KB; each difference costs a path of inner nodes
    // (at most 16 hashes each) and a leaf.
    assert!(bytes < 20_000, "{bytes} bytes for 10 differences");
    assert!((8..=100).contains(&leaves), "{leaves} leaves");
    assert_eq!(
        b.tree_get("key 1999").await.unwrap().unwrap(),
        &b"changed"[..]
    );
    assert_eq!(
        b.tree_get("new 2").await.unwrap().unwrap(),
        &b"only at the source"[..]
    );
    assert_eq!(b.tree_get("stale 0").await.unwrap(), None);
    assert_eq!(
        b.tree_get("key 7").await.unwrap().unwrap(),
        &7u32.to_be_bytes()[..]
    );

    // A write at the source bumps its version: the replica follows.
    assert!(a.tree_insert("late", "write").await.unwrap());
    let later = a.tree_state().await.unwrap().unwrap();
    assert_eq!(later.version, 3);
    expect(&mut be, &mut seen, "the later write", |e| {
        matches!(e, MeshEvent::TreeSynced { state, .. } if *state == later).then_some(())
    })
    .await;
    assert_eq!(b.tree_get("late").await.unwrap().unwrap(), &b"write"[..]);
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            MeshEvent::TreeFailed { .. } | MeshEvent::TreeDiverged { .. }
        )),
        "{seen:?}"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_difference_is_repaired_moving_only_the_difference() {
    tree_repair(Tokio, Tokio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_difference_is_repaired_across_runtimes() {
    tree_repair(Smol, Tokio).await;
    tree_repair(Tokio, Smol).await;
}

/// Equal versions, different roots: both nodes report the divergence and neither
/// pulls, until one application decides to mirror the other with `pull_tree`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_trees_are_reported_and_settled_by_pull_tree() {
    let (source, replica) = trees();
    let (a, mut ae) = start(Tokio, |b| {
        b.listen("tcp://127.0.0.1:0").tree_store(source, 5)
    })
    .await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Tokio, |b| b.seed(seed).tree_store(replica, 5)).await;
    let (ours, theirs) = (
        a.tree_state().await.unwrap().unwrap(),
        b.tree_state().await.unwrap().unwrap(),
    );
    let mut seen = Vec::new();
    let diverged = |who: NodeId| {
        move |e: &MeshEvent| match e {
            MeshEvent::TreeDiverged { peer, ours, theirs } if *peer == who => {
                Some((*ours, *theirs))
            }
            _ => None,
        }
    };
    let at_a = expect(&mut ae, &mut seen, "divergence at a", diverged(b.node_id())).await;
    assert_eq!(at_a, (ours, theirs));
    let at_b = expect(&mut be, &mut seen, "divergence at b", diverged(a.node_id())).await;
    assert_eq!(at_b, (theirs, ours));
    assert_eq!(
        b.tree_state().await.unwrap(),
        Some(theirs),
        "b pulled nothing"
    );

    assert!(b.pull_tree(a.node_id()).await.unwrap());
    let state = expect(&mut be, &mut seen, "tree synced", |e| match e {
        MeshEvent::TreeSynced { state, .. } => Some(*state),
        _ => None,
    })
    .await;
    assert_eq!(state, ours);
    assert_eq!(b.tree_state().await.unwrap(), Some(ours));
    // Nothing to pull from a node with no tree state known.
    assert!(!b.pull_tree(NodeId::from_bytes([7; 32])).await.unwrap());
    b.shutdown().await;
    a.shutdown().await;
}

/// Two chains that share 100 entries and then each append their own: both sides report
/// the fork with evidence that proves it, and neither appends the other's entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_chains_are_reported_with_evidence_and_not_merged() {
    let common = chain_of(100, "common");
    let (mut left, mut right) = (common.clone(), common);
    for i in 0..10 {
        left.push(format!("left {i}").into_bytes()).unwrap();
        right.push(format!("right {i}").into_bytes()).unwrap();
    }
    let (lh, rh) = (left.head(), right.head());
    let (a, mut ae) = start(Tokio, |b| b.listen("tcp://127.0.0.1:0").chain_store(left)).await;
    let seed = a.local_addrs()[0].to_string();
    let (b, mut be) = start(Tokio, |b| b.seed(seed).chain_store(right)).await;
    let mut seen = Vec::new();
    for (events, peer) in [(&mut ae, b.node_id()), (&mut be, a.node_id())] {
        let fork = expect(events, &mut seen, "a fork", |e| match e {
            MeshEvent::ChainForked { peer: p, fork } if *p == peer => Some(fork.clone()),
            _ => None,
        })
        .await;
        assert!(fork.is_valid(), "{fork:?}");
        assert!((101..=110).contains(&fork.seq()), "{fork:?}");
    }
    assert_eq!(a.chain_head().await.unwrap(), Some(lh));
    assert_eq!(b.chain_head().await.unwrap(), Some(rh));
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, MeshEvent::ChainProgress { .. })),
        "nothing appended across the fork: {seen:?}"
    );
    b.shutdown().await;
    a.shutdown().await;
}

/// Without stores, reads answer `None` and writes fail with typed errors; a tree store
/// holding a key too long for a tree stops the node from starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stores_writes_fail_with_typed_errors() {
    let (a, _events) = start(Tokio, |b| b).await;
    assert_eq!(
        a.append_chain(&b"x"[..]).await,
        Err(MeshError::Chain(ChainWriteError::NoChain))
    );
    assert_eq!(
        a.tree_insert("k", "v").await,
        Err(MeshError::Tree(TreeWriteError::NoTree))
    );
    assert_eq!(
        a.tree_remove("k").await,
        Err(MeshError::Tree(TreeWriteError::NoTree))
    );
    assert_eq!(a.chain_head().await, Ok(None));
    assert_eq!(a.chain_entry(1).await, Ok(None));
    assert_eq!(a.tree_state().await, Ok(None));
    assert_eq!(a.tree_get("k").await, Ok(None));
    a.shutdown().await;

    let (c, _events) = start(Tokio, |b| b.chain_store(MemoryChain::new())).await;
    assert!(matches!(
        c.append_chain(vec![0u8; (1 << 20) + 1]).await,
        Err(MeshError::Chain(ChainWriteError::Entry(_)))
    ));
    assert_eq!(c.chain_head().await, Ok(Some(ChainHead::EMPTY)));
    c.shutdown().await;

    let too_long: MemoryStore = [(vec![b'k'; 2000], b"v".to_vec())].into_iter().collect();
    let started = MeshBuilder::new(Tokio)
        .tree_store(too_long, 1)
        .start()
        .await;
    assert!(
        matches!(started, Err(StartError::Tree(_))),
        "a key of 2000 bytes is refused"
    );
}
