//! Fuzz harnesses of tree sync ([`weft_mesh::sync::tree`]) and Merkle proofs
//! ([`weft_mesh::sync::merkle::Proof`]).
//!
//! * `tree_sync_messages`: raw bytes into [`TreeSyncMessage::decode`]; what decodes must
//!   encode back to the same bytes (one encoding), and a decoded request is answered by a
//!   [`Responder`] over a populated tree within its reply budget.
//! * `proofs`: raw bytes into [`Proof::decode`] (one encoding), then verified for a
//!   fuzz-chosen key and value against a real root: a proof that verifies must be true
//!   of the tree (soundness; only a SHA-256 collision could break it).
//! * `mutated_proofs`, `mutated_tree_sync_messages`: the same checks on genuine proofs
//!   and messages with bits flipped (random bytes rarely get past the first checks).
//! * `puller_fed_arbitrary_replies`: a [`Puller`] mirroring a source tree, with the
//!   source's root as its expected root, under a fuzz-chosen script of genuine, mutated,
//!   reordered, lost and arbitrary replies and time jumps. After every step: requests in
//!   flight and their paths stay within the configured bounds, and every local entry is
//!   either what it was before or the source's entry (nothing unverified is ever
//!   applied; a removed key is absent from the source). A pull still running at the end
//!   is finished with genuine replies and must converge.
//!
//! ```text
//! cargo test -p weft-mesh-fuzz --test tree_sync
//! cargo bolero test -p weft-mesh-fuzz --toolchain nightly -T 60s puller_fed_arbitrary_replies
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use bolero::{check, TypeGenerator};
use weft_mesh::sync::merkle::{MemoryStore, MerkleTree, Proof};
use weft_mesh::sync::tree::{
    GetNodes, Puller, Responder, SyncStatus, TreeSyncConfig, TreeSyncMessage,
};
use weft_mesh::Instant;

type Tree = MerkleTree<MemoryStore>;
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(i: u32) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// The source: 400 keys. The local tree: 350 of them, 20 with other values, and 30
/// keys the source lacks.
static SOURCE: LazyLock<Entries> = LazyLock::new(|| {
    (0..400)
        .map(|i| (key(i), vec![i as u8; 1 + i as usize % 5]))
        .collect()
});
static LOCAL: LazyLock<Entries> = LazyLock::new(|| {
    let mut local = SOURCE.clone();
    for i in 350..400 {
        local.remove(&key(i));
    }
    for i in 0..20 {
        local.insert(key(i * 7), b"stale".to_vec());
    }
    for i in 1000..1030 {
        local.insert(key(i), b"extra".to_vec());
    }
    local
});
static TREES: LazyLock<(Tree, Tree)> = LazyLock::new(|| {
    let tree = |e: &Entries| MerkleTree::new(MemoryStore::from(e.clone())).unwrap();
    (tree(&SOURCE), tree(&LOCAL))
});

fn config() -> TreeSyncConfig {
    TreeSyncConfig {
        max_in_flight: 3,
        max_paths_per_request: 8,
        max_reply_bytes: 600,
        request_timeout: Duration::from_secs(5),
        max_restarts: 2,
    }
}

#[test]
fn tree_sync_messages() {
    let (source, _) = &*TREES;
    check!().for_each(|bytes: &[u8]| {
        let Ok(message) = TreeSyncMessage::decode(bytes) else {
            return;
        };
        let encoded = message.encode();
        assert_eq!(&encoded[..], bytes, "one encoding");
        assert_eq!(message.encoded_len(), bytes.len());
        let mut responder = Responder::new(&config());
        match responder.handle_bytes(source, bytes) {
            Ok(reply) => {
                let Ok(TreeSyncMessage::Nodes(nodes)) = TreeSyncMessage::decode(&reply) else {
                    panic!("a reply that does not decode");
                };
                let TreeSyncMessage::GetNodes(request) = &message else {
                    panic!("a reply to a reply");
                };
                assert!(!nodes.nodes.is_empty() && nodes.nodes.len() <= request.paths.len());
                assert!(reply.len() <= 600 || nodes.nodes.len() == 1);
                for ((path, node), asked) in nodes.nodes.iter().zip(&request.paths) {
                    assert_eq!(path, asked);
                    assert_eq!(node.hash(), source.subtree_hash(path));
                }
            }
            Err(_) => assert!(matches!(message, TreeSyncMessage::Nodes(_))),
        }
    });
}

#[test]
fn proofs() {
    let (source, _) = &*TREES;
    let root = source.root();
    check!()
        .with_type::<(Vec<u8>, u16, Option<Vec<u8>>)>()
        .for_each(|(bytes, key_index, value)| {
            let Ok(proof) = Proof::decode(bytes) else {
                return;
            };
            assert_eq!(&proof.encode()[..], &bytes[..], "one encoding");
            // Keys of the source half the time, so that verification gets far.
            let key = key(u32::from(*key_index) % 800);
            if proof.verify(&root, &key, value.as_deref()).is_ok() {
                assert_eq!(
                    SOURCE.get(&key),
                    value.as_ref(),
                    "a proof verified a false claim"
                );
            }
            // A genuine proof with this one's steps grafted on must not verify a lie.
            let mut genuine = source.prove(&key);
            genuine.steps = proof.steps.clone();
            if genuine.verify(&root, &key, value.as_deref()).is_ok() {
                assert_eq!(SOURCE.get(&key), value.as_ref());
            }
        });
}

/// Bit flips (`(byte index, bit)`, indices taken modulo the length) applied to `bytes`.
fn flipped(bytes: &[u8], flips: &[(u16, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        for (at, bit) in flips {
            let i = usize::from(*at) % out.len();
            out[i] ^= 1 << (bit % 8);
        }
    }
    out
}

#[test]
fn mutated_proofs() {
    let (source, _) = &*TREES;
    let root = source.root();
    check!()
        .with_type::<(u16, Vec<(u16, u8)>, u16, Option<Vec<u8>>)>()
        .for_each(|(of, flips, claim_of, claimed)| {
            // A genuine proof (of presence or absence), mutated, checked for a claim
            // about a key that may not be the one it was made for.
            let bytes = flipped(&source.prove(&key(u32::from(*of) % 800)).encode(), flips);
            let Ok(proof) = Proof::decode(&bytes) else {
                return;
            };
            assert_eq!(&proof.encode()[..], &bytes[..], "one encoding");
            let claim = key(u32::from(*claim_of) % 800);
            let value = claimed.clone().or_else(|| SOURCE.get(&claim).cloned());
            for value in [value.as_deref(), None] {
                if proof.verify(&root, &claim, value).is_ok() {
                    assert_eq!(
                        SOURCE.get(&claim).map(|v| &v[..]),
                        value,
                        "a false claim verified"
                    );
                }
            }
        });
}

#[test]
fn mutated_tree_sync_messages() {
    let (source, _) = &*TREES;
    check!()
        .with_type::<(Vec<u16>, Vec<(u16, u8)>)>()
        .for_each(|(of, flips)| {
            // A genuine request for some keys' paths and its reply, mutated.
            let keys = source.keys();
            let paths = of
                .iter()
                .take(8)
                .map(|i| {
                    let k = &keys[usize::from(*i) % keys.len()];
                    weft_mesh::sync::merkle::Path::of_key_hash(
                        &weft_mesh::sync::merkle::key_hash(k),
                        usize::from(*i >> 10) % 5,
                    )
                })
                .collect::<Vec<_>>();
            if paths.is_empty() {
                return;
            }
            let request = GetNodes { id: 1, paths };
            let reply = Responder::new(&config()).answer(source, &request);
            for message in [
                TreeSyncMessage::GetNodes(request),
                TreeSyncMessage::Nodes(reply),
            ] {
                let bytes = flipped(&message.encode(), flips);
                if let Ok(decoded) = TreeSyncMessage::decode(&bytes) {
                    assert_eq!(&decoded.encode()[..], &bytes[..], "one encoding");
                }
            }
        });
}

/// One step of the script.
#[derive(Clone, Debug, TypeGenerator)]
enum Op {
    /// Answer the oldest request in flight truthfully.
    Genuine,
    /// Answer the newest request in flight truthfully.
    Newest,
    /// Answer the oldest request with some bits flipped.
    Mutated(Vec<(u16, u8)>),
    /// Answer the oldest request with a reply of other nodes at the asked paths.
    Forged { node_of: u16 },
    /// Lose the oldest request.
    Lose,
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// Move the clock on by this many milliseconds, then `handle_timeout`.
    Wait(u16),
}

struct Run {
    puller: Puller,
    tree: Tree,
    responder: Responder,
    queue: VecDeque<GetNodes>,
    now: Instant,
}

impl Run {
    fn pump(&mut self) {
        while let Some(request) = self.puller.poll_request(self.now) {
            assert!(!request.paths.is_empty() && request.paths.len() <= 8);
            self.queue.push_back(request);
        }
        // Lost requests stay in flight for the puller until they time out.
        assert!(
            self.queue.len() <= 3,
            "{} requests in flight",
            self.queue.len()
        );
    }

    fn reply(&mut self, request: &GetNodes) -> Vec<u8> {
        let (source, _) = &*TREES;
        TreeSyncMessage::Nodes(self.responder.answer(source, request))
            .encode()
            .to_vec()
    }

    fn deliver(&mut self, bytes: &[u8]) {
        let _ = self.puller.handle_bytes(self.now, &mut self.tree, bytes);
        self.check();
    }

    /// Nothing unverified was applied.
    fn check(&self) {
        let now = self.tree.store().map();
        for (k, v) in now {
            assert!(
                SOURCE.get(k) == Some(v) || LOCAL.get(k) == Some(v),
                "entry {k:?} holds a value from neither side"
            );
        }
        for k in LOCAL.keys() {
            if !now.contains_key(k) {
                assert!(
                    !SOURCE.contains_key(k),
                    "removed {k:?}, which the source has"
                );
            }
        }
        assert_eq!(self.tree.len(), now.len());
    }
}

#[test]
fn puller_fed_arbitrary_replies() {
    let (source, local) = &*TREES;
    check!().with_type::<Vec<Op>>().for_each(|ops| {
        let tree = local.clone();
        let mut run = Run {
            puller: Puller::new(&config(), &tree, Some(source.root())),
            tree,
            responder: Responder::new(&config()),
            queue: VecDeque::new(),
            now: Instant::ZERO,
        };
        run.pump();
        for op in ops {
            match op {
                Op::Genuine | Op::Newest => {
                    let request = if matches!(op, Op::Genuine) {
                        run.queue.pop_front()
                    } else {
                        run.queue.pop_back()
                    };
                    if let Some(request) = request {
                        let reply = run.reply(&request);
                        run.deliver(&reply);
                    }
                }
                Op::Mutated(flips) => {
                    if let Some(request) = run.queue.pop_front() {
                        let reply = flipped(&run.reply(&request), flips);
                        run.deliver(&reply);
                    }
                }
                Op::Forged { node_of } => {
                    if let Some(request) = run.queue.pop_front() {
                        // The right id and paths, another subtree's nodes.
                        let keys = source.keys();
                        let k = &keys[usize::from(*node_of) % keys.len()];
                        let depth = usize::from(*node_of) % 6;
                        let elsewhere = weft_mesh::sync::merkle::Path::of_key_hash(
                            &weft_mesh::sync::merkle::key_hash(k),
                            depth,
                        );
                        let mut nodes = run.responder.answer(source, &request);
                        for (_, node) in &mut nodes.nodes {
                            *node = source.node(&elsewhere);
                        }
                        run.deliver(&TreeSyncMessage::Nodes(nodes).encode());
                    }
                }
                Op::Lose => {
                    run.queue.pop_front();
                }
                Op::Raw(bytes) => run.deliver(bytes),
                Op::Wait(ms) => {
                    run.now = run.now + Duration::from_millis(u64::from(*ms));
                    run.puller.handle_timeout(run.now);
                    if let Some(deadline) = run.puller.poll_timeout() {
                        assert!(
                            deadline > run.now,
                            "an overdue deadline after handle_timeout"
                        );
                    }
                }
            }
            run.pump();
        }
        // Heal: answer everything truthfully.
        if run.puller.status() == SyncStatus::Running {
            let mut steps = 0;
            while let Some(request) = run.queue.pop_front() {
                let reply = run.reply(&request);
                run.deliver(&reply);
                run.pump();
                steps += 1;
                assert!(steps < 10_000);
            }
        }
        match run.puller.status() {
            SyncStatus::Done { converged, .. } => {
                assert!(converged);
                assert_eq!(run.tree.store().map(), &*SOURCE);
                REACHED[0].fetch_add(1, Ordering::Relaxed);
            }
            // Lost requests are never answered: those pulls wait for their timeout.
            SyncStatus::Running => {
                assert!(run.puller.poll_timeout().is_some());
                REACHED[1].fetch_add(1, Ordering::Relaxed);
            }
            SyncStatus::Failed(_) => {
                REACHED[2].fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let [done, waiting, failed] = REACHED.each_ref().map(|c| c.load(Ordering::Relaxed));
    println!("puller runs: {done} converged, {waiting} waiting on a lost request, {failed} failed");
}

/// Runs of `puller_fed_arbitrary_replies` that converged, were left waiting, failed.
static REACHED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
