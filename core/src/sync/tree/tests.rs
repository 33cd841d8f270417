//! Tree sync: two trees of 100,000 keys differing in 10 converge while moving bytes
//! bounded by the difference; random trees converge under every batching; replies that
//! were changed, misplaced, unasked or late are refused; decoders refuse truncations and
//! oversized counts.

extern crate std;

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::sync::merkle::{leaf_hash, value_hash, MemoryStore, MAX_DEPTH, MAX_KEY_LEN};

type Tree = MerkleTree<MemoryStore>;
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

const NOW: Instant = Instant::ZERO;

fn tree_of(entries: &Entries) -> Tree {
    MerkleTree::new(MemoryStore::from(entries.clone())).unwrap()
}

/// Run a pull of `theirs` into `ours` to the end, delivering the requests in flight in
/// the order given by `order` (0: oldest first, 1: newest first), with `tamper` applied
/// to every reply. Returns the puller and the responder.
fn pull_with(
    config: &TreeSyncConfig,
    ours: &mut Tree,
    theirs: &Tree,
    expected: Option<Hash>,
    mut tamper: impl FnMut(&mut Nodes),
) -> (Puller, Responder) {
    let mut puller = Puller::new(config, ours, expected);
    let mut responder = Responder::new(config);
    let mut rounds = 0;
    loop {
        let mut requests = Vec::new();
        while let Some(r) = puller.poll_transmit(NOW) {
            requests.push(r);
        }
        if requests.is_empty() {
            break;
        }
        for request in requests {
            let reply = responder.handle_bytes(theirs, &request).unwrap();
            let TreeSyncMessage::Nodes(mut nodes) = TreeSyncMessage::decode(&reply).unwrap() else {
                panic!("a reply")
            };
            tamper(&mut nodes);
            let _ = puller.handle_bytes(NOW, ours, &TreeSyncMessage::Nodes(nodes).encode());
        }
        rounds += 1;
        assert!(rounds < 10_000, "the pull ends");
    }
    (puller, responder)
}

fn pull(config: &TreeSyncConfig, ours: &mut Tree, theirs: &Tree) -> (Puller, Responder) {
    pull_with(config, ours, theirs, None, |_| {})
}

fn key(i: u32) -> Vec<u8> {
    std::format!("key-{i:08}").into_bytes()
}

fn value(i: u32, version: u32) -> Vec<u8> {
    std::format!("value of {i} at version {version}").into_bytes()
}

#[test]
fn trees_of_100k_keys_differing_in_10_converge_moving_only_the_differing_paths() {
    const N: u32 = 100_000;
    let started = std::time::Instant::now();
    let entries: Entries = (0..N).map(|i| (key(i), value(i, 0))).collect();
    let mut theirs = tree_of(&entries);
    let built = started.elapsed();
    let mut ours = tree_of(&entries);
    // 10 differences: 4 values changed there, 3 keys only there, 3 keys only here.
    for i in [11, 22_222, 33_333, 99_999] {
        theirs.insert(&key(i), &value(i, 1)).unwrap();
    }
    for i in [N, N + 1, N + 2] {
        theirs.insert(&key(i), &value(i, 0)).unwrap();
    }
    for i in [N + 10, N + 11, N + 12] {
        ours.insert(&key(i), &value(i, 0)).unwrap();
    }
    let depth = theirs.depth().max(ours.depth());
    assert_ne!(ours.root(), theirs.root());

    let sync_started = std::time::Instant::now();
    let (puller, responder) = pull(&TreeSyncConfig::default(), &mut ours, &theirs);
    let synced = sync_started.elapsed();
    assert_eq!(
        puller.status(),
        SyncStatus::Done {
            remote_root: theirs.root(),
            converged: true
        }
    );
    assert_eq!(ours.root(), theirs.root());
    assert_eq!(ours.store(), theirs.store());
    let stats = *puller.stats();
    // The same pull against the root learned beforehand (from a digest, say).
    let mut again = tree_of(&entries);
    for i in [N + 10, N + 11, N + 12] {
        again.insert(&key(i), &value(i, 0)).unwrap();
    }
    let (checked, _) = pull_with(
        &TreeSyncConfig::default(),
        &mut again,
        &theirs,
        Some(theirs.root()),
        |_| {},
    );
    assert!(matches!(
        checked.status(),
        SyncStatus::Done {
            converged: true,
            ..
        }
    ));
    assert_eq!(again.root(), theirs.root());
    assert_eq!(stats.keys_set, 7);
    assert_eq!(stats.keys_removed, 3);
    assert_eq!(stats.bytes_sent, responder.stats().bytes_received);
    assert_eq!(stats.bytes_received, responder.stats().bytes_sent);

    // Bound: per differing key, one inner node per level (a path of at most 33 bytes, a
    // tag, a bitmap and 16 hashes) and its path in a request, the differing leaves
    // themselves, and a message header per request and reply; nothing that grows with
    // the 100,000 equal keys.
    let diff = 10u64;
    let levels = depth as u64 + 1;
    let leaf_bytes: u64 = [11, 22_222, 33_333, 99_999, N, N + 1, N + 2]
        .iter()
        .map(|&i| (34 + 1 + 2 + key(i).len() + 4 + value(i, 1).len()) as u64)
        .sum();
    let per_level = (34 + 1 + 2 + FANOUT as u64 * 32) + 34;
    let headers = 2 * MESSAGE_HEADER_LEN as u64 * (diff * levels + 1);
    let bound = diff * levels * per_level + leaf_bytes + headers;
    let total = stats.bytes_sent + stats.bytes_received;
    // Proof sizes over 2000 keys present and 2000 absent, each checked.
    let root = theirs.root();
    let sizes: Vec<usize> = (0..2000)
        .map(|i| {
            let proof = theirs.prove(&key(i * 50));
            assert!(proof
                .verify(&root, &key(i * 50), theirs.get(&key(i * 50)).as_deref())
                .is_ok());
            proof.encode().len()
        })
        .collect();
    let absent: Vec<usize> = (0..2000)
        .map(|i| {
            let proof = theirs.prove(&key(N + 1000 + i));
            assert!(proof.verify(&root, &key(N + 1000 + i), None).is_ok());
            proof.encode().len()
        })
        .collect();
    let proof = std::format!(
        "inclusion proofs {} bytes on average (max {}), absence {} (max {})",
        sizes.iter().sum::<usize>() / sizes.len(),
        sizes.iter().max().unwrap(),
        absent.iter().sum::<usize>() / absent.len(),
        absent.iter().max().unwrap()
    );
    std::println!(
        "tree sync, {N} keys differing in {diff}: depth {depth}, {} inner nodes; built in {:?}; \
         synced in {synced:?}: {} requests, {} nodes ({} leaves), {} bytes sent + {} received = {total} \
         (bound {bound}, {:.2} KB per difference); {proof}",
        theirs.inner_nodes(),
        built,
        stats.requests,
        stats.nodes,
        stats.leaves,
        stats.bytes_sent,
        stats.bytes_received,
        total as f64 / diff as f64 / 1000.0,
    );
    assert!(total <= bound, "{total} bytes moved, bound {bound}");
    // Sending every entry would take over 100 times more.
    let everything: u64 = entries
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum();
    assert!(total * 100 < everything, "{total} of {everything}");
}

#[test]
fn bytes_grow_with_the_difference_not_the_tree() {
    let mut last = 0;
    for diff in [1u32, 10, 100] {
        for size in [10_000u32, 40_000] {
            let entries: Entries = (0..size).map(|i| (key(i), value(i, 0))).collect();
            let mut theirs = tree_of(&entries);
            let mut ours = theirs.clone();
            for i in 0..diff {
                theirs.insert(&key(i * 97), &value(i, 1)).unwrap();
            }
            let (puller, _) = pull(&TreeSyncConfig::default(), &mut ours, &theirs);
            assert_eq!(ours.root(), theirs.root());
            let s = puller.stats();
            let total = s.bytes_sent + s.bytes_received;
            std::println!(
                "tree sync: {size} keys, {diff} differing: {total} bytes, {} requests",
                s.requests
            );
            let per_diff = total / u64::from(diff);
            assert!(per_diff < 4000, "{per_diff} bytes per difference");
            last = total;
        }
    }
    assert!(last > 0);
}

#[test]
fn an_empty_tree_pulls_everything_and_a_full_one_empties() {
    let entries: Entries = (0..3000).map(|i| (key(i), value(i, 0))).collect();
    let theirs = tree_of(&entries);
    let mut ours = tree_of(&Entries::new());
    let config = TreeSyncConfig {
        max_reply_bytes: 2000,
        ..TreeSyncConfig::default()
    };
    let (puller, _) = pull(&config, &mut ours, &theirs);
    assert!(matches!(
        puller.status(),
        SyncStatus::Done {
            converged: true,
            ..
        }
    ));
    assert_eq!(ours.store(), theirs.store());
    assert_eq!(puller.stats().keys_set, 3000);

    let nothing = tree_of(&Entries::new());
    let (puller, _) = pull(&config, &mut ours, &nothing);
    assert_eq!(ours.len(), 0);
    assert_eq!(ours.root(), EMPTY);
    assert_eq!(puller.stats().keys_removed, 3000);
    assert_eq!(puller.stats().requests, 1, "one request: the root is empty");
}

#[test]
fn an_expected_root_already_held_costs_nothing() {
    let entries: Entries = (0..10).map(|i| (key(i), value(i, 0))).collect();
    let mut ours = tree_of(&entries);
    let mut puller = Puller::new(&TreeSyncConfig::default(), &ours, Some(ours.root()));
    assert_eq!(puller.poll_transmit(NOW), None);
    assert!(matches!(
        puller.status(),
        SyncStatus::Done {
            converged: true,
            ..
        }
    ));
    // Equal trees without an expected root: one request, one reply of the root.
    let theirs = ours.clone();
    let (puller, _) = pull(&TreeSyncConfig::default(), &mut ours, &theirs);
    assert_eq!(puller.stats().requests, 1);
    assert_eq!(puller.stats().nodes, 1);
}

#[test]
fn a_responder_changing_mid_pull_restarts_then_converges() {
    let entries: Entries = (0..2000).map(|i| (key(i), value(i, 0))).collect();
    let mut theirs = tree_of(&entries);
    let mut ours = tree_of(&Entries::new());
    let config = TreeSyncConfig {
        max_in_flight: 1,
        max_paths_per_request: 4,
        ..TreeSyncConfig::default()
    };
    let mut puller = Puller::new(&config, &ours, None);
    let mut responder = Responder::new(&config);
    let mut step = 0;
    while let Some(request) = puller.poll_transmit(NOW) {
        step += 1;
        if step == 3 {
            // Writes on the responder while the puller descends.
            for i in 0..50 {
                theirs.insert(&key(i), &value(i, 9)).unwrap();
            }
            theirs.remove(&key(1999));
        }
        let reply = responder.handle_bytes(&theirs, &request).unwrap();
        puller.handle_bytes(NOW, &mut ours, &reply).unwrap();
    }
    assert_eq!(
        puller.status(),
        SyncStatus::Done {
            remote_root: theirs.root(),
            converged: true
        }
    );
    assert_eq!(puller.stats().restarts, 1);
    assert_eq!(ours.store(), theirs.store());
}

#[test]
fn changed_replies_are_never_applied() {
    let entries: Entries = (0..500).map(|i| (key(i), value(i, 0))).collect();
    let theirs = tree_of(&entries);
    let original = tree_of(&(0..500).map(|i| (key(i), value(i, 7))).collect());
    let tamper = |nodes: &mut Nodes| {
        for (_, node) in &mut nodes.nodes {
            if let TreeNode::Leaf { value, .. } = node {
                value.push(b'!');
            }
        }
    };
    // Without an expected root: restarts, then gives up; no forged value is stored.
    let mut ours = original.clone();
    let (puller, _) = pull_with(&TreeSyncConfig::default(), &mut ours, &theirs, None, tamper);
    assert_eq!(puller.status(), SyncStatus::Failed(SyncError::Unstable));
    assert_eq!(
        puller.stats().restarts,
        TreeSyncConfig::default().max_restarts
    );
    assert_eq!(puller.stats().keys_set, 0);
    assert_eq!(ours.store(), original.store());
    // With one: the first forged node fails the pull.
    let mut ours = original.clone();
    let (puller, _) = pull_with(
        &TreeSyncConfig::default(),
        &mut ours,
        &theirs,
        Some(theirs.root()),
        tamper,
    );
    assert_eq!(puller.status(), SyncStatus::Failed(SyncError::Mismatch));
    assert_eq!(ours.store(), original.store());
    // A forged root, against an expected root.
    let mut ours = original.clone();
    let (puller, _) = pull_with(
        &TreeSyncConfig::default(),
        &mut ours,
        &theirs,
        Some([9; 32]),
        |_| {},
    );
    assert_eq!(puller.status(), SyncStatus::Failed(SyncError::Mismatch));
}

#[test]
fn a_leaf_outside_its_path_is_refused() {
    // A responder advertising a root whose child 0 is a leaf that belongs elsewhere.
    let mut ours = tree_of(&Entries::new());
    let misplaced = (0u32..)
        .map(|i| i.to_be_bytes().to_vec())
        .find(|k| crate::sync::merkle::nibble(&key_hash(k), 0) != 0)
        .unwrap();
    let leaf = leaf_hash(&key_hash(&misplaced), &value_hash(b"v"));
    let mut puller = Puller::new(&TreeSyncConfig::default(), &ours, None);
    let first = puller.poll_request(NOW).unwrap();
    let root = Nodes {
        id: first.id,
        nodes: vec![(
            Path::ROOT,
            TreeNode::Inner {
                bitmap: 0b11,
                children: vec![leaf, [5; 32]],
            },
        )],
    };
    puller.handle_nodes(NOW, &mut ours, root).unwrap();
    let second = puller.poll_request(NOW).unwrap();
    let child0 = Path::ROOT.child(0).unwrap();
    assert!(second.paths.contains(&child0));
    let nodes = second
        .paths
        .iter()
        .map(|p| {
            if *p == child0 {
                (
                    *p,
                    TreeNode::Leaf {
                        key: misplaced.clone(),
                        value: b"v".to_vec(),
                    },
                )
            } else {
                (*p, TreeNode::Empty)
            }
        })
        .collect();
    let result = puller.handle_nodes(
        NOW,
        &mut ours,
        Nodes {
            id: second.id,
            nodes,
        },
    );
    assert_eq!(result, Err(SyncError::Misplaced));
    assert_eq!(puller.status(), SyncStatus::Failed(SyncError::Misplaced));
    assert!(ours.is_empty());
}

#[test]
fn unasked_replies_requests_and_late_replies() {
    let entries: Entries = (0..300).map(|i| (key(i), value(i, 0))).collect();
    let theirs = tree_of(&entries);
    let config = TreeSyncConfig::default();
    let mut responder = Responder::new(&config);

    // A reply to no request.
    let mut ours = tree_of(&Entries::new());
    let mut puller = Puller::new(&config, &ours, None);
    let request = puller.poll_request(NOW).unwrap();
    let mut reply = responder.answer(&theirs, &request);
    reply.id += 1;
    assert_eq!(
        puller.handle_nodes(NOW, &mut ours, reply),
        Err(SyncError::UnknownRequest(request.id + 1))
    );

    // Paths other than those asked.
    let mut puller = Puller::new(&config, &ours, None);
    let request = puller.poll_request(NOW).unwrap();
    let mut reply = responder.answer(&theirs, &request);
    reply.nodes[0].0 = Path::ROOT.child(3).unwrap();
    assert_eq!(
        puller.handle_nodes(NOW, &mut ours, reply),
        Err(SyncError::WrongPath)
    );

    // More nodes than asked.
    let mut puller = Puller::new(&config, &ours, None);
    let request = puller.poll_request(NOW).unwrap();
    let mut reply = responder.answer(&theirs, &request);
    reply.nodes.push(reply.nodes[0].clone());
    assert_eq!(
        puller.handle_nodes(NOW, &mut ours, reply),
        Err(SyncError::WrongPath)
    );

    // A request where a reply was expected, and garbage.
    let mut puller = Puller::new(&config, &ours, None);
    let request = puller.poll_transmit(NOW).unwrap();
    assert_eq!(
        puller.handle_bytes(NOW, &mut ours, &request),
        Err(SyncError::Unexpected)
    );
    let mut puller = Puller::new(&config, &ours, None);
    puller.poll_transmit(NOW).unwrap();
    assert_eq!(
        puller.handle_bytes(NOW, &mut ours, &[0x02, 0, 0]),
        Err(SyncError::Decode(DecodeError::Truncated))
    );
    // After failing, replies are ignored.
    let late = TreeSyncMessage::Nodes(responder.answer(&theirs, &request_for_root()));
    assert_eq!(puller.handle_bytes(NOW, &mut ours, &late.encode()), Ok(()));
    assert!(ours.is_empty());
    assert_eq!(
        responder.handle_bytes(&theirs, &late.encode()),
        Err(SyncError::Unexpected)
    );
}

fn request_for_root() -> GetNodes {
    GetNodes {
        id: 0,
        paths: vec![Path::ROOT],
    }
}

#[test]
fn requests_time_out() {
    let ours = tree_of(&Entries::new());
    let config = TreeSyncConfig::default();
    let mut puller = Puller::new(&config, &ours, None);
    assert_eq!(puller.poll_timeout(), None);
    let sent = Instant::from_micros(5);
    puller.poll_request(sent).unwrap();
    let deadline = sent + config.request_timeout;
    assert_eq!(puller.poll_timeout(), Some(deadline));
    puller.handle_timeout(Instant::from_micros(deadline.as_micros() - 1));
    assert_eq!(puller.status(), SyncStatus::Running);
    puller.handle_timeout(deadline);
    assert_eq!(puller.status(), SyncStatus::Failed(SyncError::Timeout));
    assert_eq!(puller.poll_timeout(), None);
}

#[test]
fn in_flight_and_batch_bounds_hold() {
    let entries: Entries = (0..5000).map(|i| (key(i), value(i, 0))).collect();
    let theirs = tree_of(&entries);
    let mut ours = tree_of(&Entries::new());
    let config = TreeSyncConfig {
        max_in_flight: 3,
        max_paths_per_request: 5,
        max_reply_bytes: 700,
        request_timeout: Duration::from_secs(1),
        max_restarts: 0,
    };
    let mut puller = Puller::new(&config, &ours, None);
    let mut responder = Responder::new(&config);
    let mut queue: Vec<GetNodes> = Vec::new();
    loop {
        while let Some(r) = puller.poll_request(NOW) {
            assert!(r.paths.len() <= 5);
            queue.push(r);
        }
        assert!(queue.len() <= 3, "{} requests in flight", queue.len());
        let Some(r) = queue.pop() else { break };
        let reply = responder.answer(&theirs, &r);
        assert!(!reply.nodes.is_empty());
        let len = TreeSyncMessage::Nodes(reply.clone()).encoded_len();
        assert!(len <= 700 || reply.nodes.len() == 1, "{len} bytes");
        puller.handle_nodes(NOW, &mut ours, reply).unwrap();
    }
    assert!(matches!(
        puller.status(),
        SyncStatus::Done {
            converged: true,
            ..
        }
    ));
    assert_eq!(ours.store(), theirs.store());
}

fn sample_messages() -> Vec<TreeSyncMessage> {
    let entries: Entries = (0..40).map(|i| (key(i), value(i, 0))).collect();
    let tree = tree_of(&entries);
    let kh = key_hash(&key(3));
    let vacant = (0..=255u8)
        .map(|b| Path::from_packed(2, &[b]).unwrap())
        .find(|p| tree.subtree_hash(p) == EMPTY)
        .unwrap();
    let paths = vec![
        Path::ROOT,
        vacant,
        Path::of_key_hash(&kh, 1),
        Path::of_key_hash(&kh, 2),
        Path::of_key_hash(&kh, 3),
        Path::of_key_hash(&kh, MAX_DEPTH),
    ];
    let nodes = paths.iter().map(|p| (*p, tree.node(p))).collect();
    vec![
        TreeSyncMessage::GetNodes(GetNodes {
            id: 0x0102_0304,
            paths,
        }),
        TreeSyncMessage::Nodes(Nodes { id: 7, nodes }),
    ]
}

#[test]
fn messages_round_trip_and_every_truncation_fails() {
    let messages = sample_messages();
    let TreeSyncMessage::Nodes(nodes) = &messages[1] else {
        unreachable!()
    };
    let kinds: Vec<u8> = nodes
        .nodes
        .iter()
        .map(|(_, n)| match n {
            TreeNode::Empty => 0,
            TreeNode::Leaf { .. } => 1,
            TreeNode::Inner { .. } => 2,
        })
        .collect();
    assert!(kinds.contains(&0) && kinds.contains(&1) && kinds.contains(&2));
    for m in &messages {
        let bytes = m.encode();
        assert_eq!(bytes.len(), m.encoded_len());
        assert_eq!(TreeSyncMessage::decode(&bytes).as_ref(), Ok(m));
        for cut in 0..bytes.len() {
            assert_eq!(
                TreeSyncMessage::decode(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            TreeSyncMessage::decode(&longer),
            Err(DecodeError::TrailingBytes)
        );
    }
}

#[test]
fn a_worked_example_of_the_encoding() {
    let get = TreeSyncMessage::GetNodes(GetNodes {
        id: 1,
        paths: vec![Path::ROOT, Path::from_packed(3, &[0xa5, 0xc0]).unwrap()],
    });
    assert_eq!(
        get.encode().as_ref(),
        &[0x01, 0, 0, 0, 1, 0, 2, 0x00, 0x03, 0xa5, 0xc0]
    );
    let nodes = TreeSyncMessage::Nodes(Nodes {
        id: 1,
        nodes: vec![
            (Path::from_packed(1, &[0x70]).unwrap(), TreeNode::Empty),
            (
                Path::ROOT,
                TreeNode::Leaf {
                    key: b"k".to_vec(),
                    value: b"vv".to_vec(),
                },
            ),
            (
                Path::ROOT,
                TreeNode::Inner {
                    bitmap: 0x8001,
                    children: vec![[0x11; 32], [0x22; 32]],
                },
            ),
        ],
    });
    let mut expected = vec![0x02, 0, 0, 0, 1, 0, 3];
    expected.extend([0x01, 0x70, 0x00]);
    expected.extend([0x00, 0x01, 0, 1, b'k', 0, 0, 0, 2, b'v', b'v']);
    expected.extend([0x00, 0x02, 0x80, 0x01]);
    expected.extend([0x11; 32]);
    expected.extend([0x22; 32]);
    assert_eq!(nodes.encode().as_ref(), &expected[..]);
}

#[test]
fn oversized_counts_and_lengths_are_refused_before_allocating() {
    use DecodeError::*;
    let d = TreeSyncMessage::decode;
    assert_eq!(d(&[]), Err(Truncated));
    assert_eq!(d(&[0x03]), Err(UnknownKind(0x03)));
    // Counts: zero, and one over the limit, with nothing after them.
    assert_eq!(d(&[0x01, 0, 0, 0, 0, 0, 0]), Err(Count));
    assert_eq!(d(&[0x01, 0, 0, 0, 0, 0x01, 0x01]), Err(Count));
    assert_eq!(d(&[0x02, 0, 0, 0, 0, 0xff, 0xff]), Err(Count));
    // 256 paths is the most; they must all be there.
    assert_eq!(d(&[0x01, 0, 0, 0, 0, 0x01, 0x00]), Err(Truncated));
    let mut max = vec![0x01, 0, 0, 0, 0, 0x01, 0x00];
    max.extend([0u8; 256]);
    assert!(d(&max).is_ok());
    // Paths: too deep, padding nibble set.
    assert_eq!(d(&[0x01, 0, 0, 0, 0, 0, 1, 65]), Err(Path));
    assert_eq!(d(&[0x01, 0, 0, 0, 0, 0, 1, 1, 0x71]), Err(Path));
    // Leaves: a key or value length over the limit fails before its bytes are read.
    let leaf = |kl: u16, vl: u32| {
        let mut b = vec![0x02, 0, 0, 0, 0, 0, 1, 0, 0x01];
        b.extend(kl.to_be_bytes());
        b.extend(vec![b'k'; usize::from(kl).min(MAX_KEY_LEN)]);
        b.extend(vl.to_be_bytes());
        b
    };
    assert_eq!(d(&leaf(MAX_KEY_LEN as u16 + 1, 0)), Err(KeyTooLarge));
    assert_eq!(d(&leaf(u16::MAX, 0)), Err(KeyTooLarge));
    assert_eq!(d(&leaf(1, u32::MAX)), Err(ValueTooLarge));
    assert_eq!(d(&leaf(1, (1 << 20) + 1)), Err(ValueTooLarge));
    assert_eq!(d(&leaf(1, 1 << 20)), Err(Truncated));
    assert_eq!(
        d(&leaf(1, 0)),
        Ok(TreeSyncMessage::Nodes(Nodes {
            id: 0,
            nodes: vec![(
                crate::sync::merkle::Path::ROOT,
                TreeNode::Leaf {
                    key: b"k".to_vec(),
                    value: vec![]
                }
            )],
        }))
    );
    // Inner nodes: no children, at depth 64, unknown tag.
    assert_eq!(d(&[0x02, 0, 0, 0, 0, 0, 1, 0, 0x02, 0, 0]), Err(Inner));
    let mut deep = vec![0x02, 0, 0, 0, 0, 0, 1, 64];
    deep.extend([0u8; 32]);
    deep.extend([0x02, 0, 1]);
    deep.extend([0u8; 32]);
    assert_eq!(d(&deep), Err(Inner));
    assert_eq!(
        d(&[0x02, 0, 0, 0, 0, 0, 1, 0, 0x03]),
        Err(UnknownNode(0x03))
    );
    assert_eq!(
        d(&[0x02, 0, 0, 0, 0, 0, 1, 0, 0x02, 0xff, 0xff]),
        Err(Truncated)
    );
}

#[test]
fn responder_replies_fit_the_budget_but_always_carry_one_node() {
    let entries: Entries = (0..200).map(|i| (key(i), vec![i as u8; 300])).collect();
    let tree = tree_of(&entries);
    let paths: Vec<Path> = tree
        .keys()
        .iter()
        .take(20)
        .map(|k| Path::of_key_hash(&key_hash(k), MAX_DEPTH))
        .collect();
    let request = GetNodes { id: 9, paths };
    for budget in [0, 100, 1000, 5000, 1 << 20] {
        let mut responder = Responder::new(&TreeSyncConfig {
            max_reply_bytes: budget,
            ..TreeSyncConfig::default()
        });
        let reply = responder.answer(&tree, &request);
        let len = TreeSyncMessage::Nodes(reply.clone()).encoded_len();
        assert!(!reply.nodes.is_empty());
        assert!(len <= budget.max(MESSAGE_HEADER_LEN + 33 + 1 + 2 + 12 + 4 + 300));
        assert_eq!(reply.id, 9);
        for (p, n) in &reply.nodes {
            assert!(matches!(n, TreeNode::Leaf { .. }));
            assert_eq!(n.hash(), tree.subtree_hash(p));
        }
        if budget >= 1 << 20 {
            assert_eq!(reply.nodes.len(), 20);
        }
    }
}

fn small_entries() -> impl Strategy<Value = Entries> {
    prop::collection::btree_map(
        prop::collection::vec(0u8..4, 0..4),
        prop::collection::vec(any::<u8>(), 0..4),
        0..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_two_trees_converge_under_any_batching(
        ours in small_entries(),
        theirs in small_entries(),
        in_flight in 1usize..4,
        paths in 1usize..6,
        reply in prop_oneof![Just(0usize), 10usize..400, Just(1 << 20)],
        with_root in any::<bool>(),
    ) {
        let config = TreeSyncConfig {
            max_in_flight: in_flight,
            max_paths_per_request: paths,
            max_reply_bytes: reply,
            ..TreeSyncConfig::default()
        };
        let mut mine = tree_of(&ours);
        let source = tree_of(&theirs);
        let expected = with_root.then(|| source.root());
        let (puller, responder) = pull_with(&config, &mut mine, &source, expected, |_| {});
        prop_assert_eq!(
            puller.status(),
            SyncStatus::Done { remote_root: source.root(), converged: true }
        );
        prop_assert_eq!(mine.store().map(), &theirs);
        prop_assert_eq!(mine.root(), tree_of(&theirs).root());
        let changed = ours.iter().filter(|(k, v)| theirs.get(*k) != Some(v)).count()
            + theirs.keys().filter(|k| !ours.contains_key(*k)).count();
        prop_assert!(puller.stats().keys_set + puller.stats().keys_removed == changed as u64);
        prop_assert_eq!(puller.stats().bytes_sent, responder.stats().bytes_received);
        prop_assert_eq!(puller.stats().bytes_received, responder.stats().bytes_sent);
    }

    #[test]
    fn garbage_never_panics_and_what_decodes_re_encodes_identically(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Ok(m) = TreeSyncMessage::decode(&bytes) {
            prop_assert_eq!(m.encode().to_vec(), bytes);
        }
    }

    #[test]
    fn mutated_replies_never_panic_nor_corrupt(
        theirs in small_entries(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        which in 0usize..4,
    ) {
        let source = tree_of(&theirs);
        let mut mine = tree_of(&Entries::new());
        let config = TreeSyncConfig::default();
        let mut puller = Puller::new(&config, &mine, Some(source.root()));
        let mut responder = Responder::new(&config);
        let mut replies = 0;
        while let Some(request) = puller.poll_transmit(NOW) {
            let mut reply = responder.handle_bytes(&source, &request).unwrap().to_vec();
            if replies == which {
                for (at, bit) in &flips {
                    let i = at.index(reply.len());
                    reply[i] ^= 1 << bit;
                }
            }
            replies += 1;
            let _ = puller.handle_bytes(NOW, &mut mine, &reply);
        }
        // Whatever happened, every entry held is one of the source's, as it is there.
        for (k, v) in mine.store().map() {
            prop_assert_eq!(theirs.get(k), Some(v));
        }
    }
}
