//! The tree's shape and hashes against their definitions, history independence,
//! incremental updates against a rebuild, and proofs: valid ones verify, any single-bit
//! change of proof, key, value or root fails.

use alloc::collections::BTreeMap;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

fn tree_of(entries: &Entries) -> MerkleTree<MemoryStore> {
    MerkleTree::new(MemoryStore::from(entries.clone())).unwrap()
}

fn empty() -> MerkleTree<MemoryStore> {
    MerkleTree::new(MemoryStore::new()).unwrap()
}

/// The root computed straight from the definition: recursively, over sorted key hashes.
fn model_root(entries: &Entries) -> Hash {
    let mut leaves: Vec<(Hash, Hash)> = entries
        .iter()
        .map(|(k, v)| (key_hash(k), value_hash(v)))
        .collect();
    leaves.sort();
    model_subtree(&leaves, 0)
}

fn model_subtree(leaves: &[(Hash, Hash)], depth: usize) -> Hash {
    match leaves {
        [] => EMPTY,
        [(kh, vh)] => leaf_hash(kh, vh),
        _ => {
            let mut bitmap = 0u16;
            let mut children = Vec::new();
            for i in 0..FANOUT {
                let part: Vec<(Hash, Hash)> = leaves
                    .iter()
                    .filter(|(kh, _)| nibble(kh, depth) == i)
                    .copied()
                    .collect();
                if !part.is_empty() {
                    bitmap |= 1 << i;
                    children.push(model_subtree(&part, depth + 1));
                }
            }
            inner_hash(bitmap, &children)
        }
    }
}

fn entries() -> impl Strategy<Value = Entries> {
    prop::collection::btree_map(
        prop::collection::vec(any::<u8>(), 0..6),
        prop::collection::vec(any::<u8>(), 0..6),
        0..40,
    )
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

#[test]
fn hashes_follow_their_definitions() {
    let mut tree = empty();
    assert_eq!(tree.root(), EMPTY);
    assert_eq!(tree.depth(), 0);
    tree.insert(b"k", b"v").unwrap();
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(Sha256::digest(b"k"));
    h.update(Sha256::digest(b"v"));
    let leaf: Hash = h.finalize().into();
    assert_eq!(tree.root(), leaf, "one entry: the root is its leaf");

    tree.insert(b"other", b"w").unwrap();
    let (a, b) = (key_hash(b"k"), key_hash(b"other"));
    // Both keys' first nibbles, to place them.
    let (na, nb) = (nibble(&a, 0), nibble(&b, 0));
    assert_ne!(na, nb, "these two keys part at the first nibble");
    let other = leaf_hash(&b, &value_hash(b"w"));
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(((1u16 << na) | (1u16 << nb)).to_be_bytes());
    let (first, second) = if na < nb {
        (leaf, other)
    } else {
        (other, leaf)
    };
    h.update(first);
    h.update(second);
    let inner: Hash = h.finalize().into();
    assert_eq!(tree.root(), inner);
    assert_eq!(tree.depth(), 1);
    assert_eq!(tree.inner_nodes(), 1);
}

#[test]
fn leaf_and_inner_domains_are_separate() {
    // The same 66 bytes after the prefix hash differently as a leaf and as an inner node.
    let kh = [0xab; 32];
    let vh = [0xcd; 32];
    let as_leaf = leaf_hash(&kh, &vh);
    let mut children = [[0u8; 32]; 2];
    children[0][..30].copy_from_slice(&kh[2..]);
    assert_ne!(
        as_leaf,
        inner_hash(u16::from_be_bytes([0xab, 0xab]), &children)
    );
    assert_ne!(as_leaf, EMPTY);
}

#[test]
fn oversized_entries_are_refused_and_change_nothing() {
    let mut tree = empty();
    tree.insert(b"a", b"1").unwrap();
    let root = tree.root();
    assert_eq!(
        tree.insert(&vec![0; MAX_KEY_LEN + 1], b""),
        Err(EntryError::KeyTooLarge)
    );
    assert_eq!(
        tree.insert(b"k", &vec![0; MAX_VALUE_LEN + 1]),
        Err(EntryError::ValueTooLarge)
    );
    assert_eq!(tree.root(), root);
    assert_eq!(tree.store().len(), 1);
    assert!(tree.insert(&vec![0; MAX_KEY_LEN], b"").is_ok());
    let mut big = MemoryStore::new();
    big.insert(&vec![1; MAX_KEY_LEN + 1], b"");
    assert_eq!(MerkleTree::new(big).err(), Some(EntryError::KeyTooLarge));
}

#[test]
fn rewriting_a_value_touches_nothing() {
    let mut tree = empty();
    assert_eq!(tree.insert(b"a", b"1"), Ok(true));
    assert_eq!(tree.insert(b"a", b"1"), Ok(false));
    assert_eq!(tree.insert(b"a", b"2"), Ok(true));
    assert_eq!(tree.len(), 1);
    assert_eq!(tree.get(b"a").as_deref(), Some(&b"2"[..]));
    assert_eq!(tree.value_hash(b"a"), Some(value_hash(b"2")));
    assert!(tree.remove(b"a"));
    assert!(!tree.remove(b"a"));
    assert_eq!(tree.root(), EMPTY);
    assert!(tree.is_empty());
}

#[test]
fn paths_pack_and_parse() {
    let kh = [0x5a; 32];
    let p = Path::of_key_hash(&kh, 3);
    assert_eq!(p.packed(), &[0x5a, 0x50]);
    assert_eq!(p.to_string(), "5a5");
    assert_eq!(Path::ROOT.to_string(), "/");
    assert!(p.contains(&kh));
    assert!(!p.contains(&[0x5b; 32]));
    assert_eq!(Path::from_packed(3, &[0x5a, 0x50]), Some(p));
    assert_eq!(
        Path::from_packed(3, &[0x5a, 0x51]),
        None,
        "padding nibble must be 0"
    );
    assert_eq!(Path::from_packed(3, &[0x5a]), None);
    assert_eq!(Path::from_packed(65, &[0; 33]), None);
    assert_eq!(p.child(0xa), Some(Path::of_key_hash(&kh, 4)));
    assert_eq!(p.child(16), None);
    let full = Path::of_key_hash(&kh, MAX_DEPTH);
    assert_eq!(full.child(0), None);
    assert!(full.contains(&kh));
    assert_eq!(Path::from_packed(64, full.packed()), Some(full));
}

#[test]
fn absence_proofs_of_both_kinds_and_wrong_claims() {
    let entries: Entries = (0u32..200)
        .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8]))
        .collect();
    let tree = tree_of(&entries);
    let root = tree.root();
    let (mut empty_end, mut other_end) = (0, 0);
    for i in 1000u32..1200 {
        let key = i.to_be_bytes();
        let proof = tree.prove(&key);
        match proof.end {
            ProofEnd::Empty => empty_end += 1,
            ProofEnd::Other { .. } => other_end += 1,
            ProofEnd::Present => panic!("absent key proved present"),
        }
        assert_eq!(proof.verify(&root, &key, None), Ok(()));
        assert_eq!(
            proof.verify(&root, &key, Some(b"")),
            Err(ProofError::WrongClaim)
        );
        assert_eq!(Proof::decode(&proof.encode()), Ok(proof));
    }
    assert!(empty_end > 0 && other_end > 0, "{empty_end} {other_end}");
    // A presence proof cannot claim absence, and a stale absence proof fails.
    let key = 5u32.to_be_bytes();
    let present = tree.prove(&key);
    assert_eq!(
        present.verify(&root, &key, None),
        Err(ProofError::WrongClaim)
    );
    let mut smaller = tree.clone();
    smaller.remove(&key);
    let absent = smaller.prove(&key);
    assert_eq!(absent.verify(&smaller.root(), &key, None), Ok(()));
    assert_eq!(
        absent.verify(&root, &key, None),
        Err(ProofError::RootMismatch)
    );
    // An "other leaf" that is the key itself is refused.
    let mut forged = present.clone();
    forged.end = ProofEnd::Other {
        key_hash: key_hash(&key),
        value_hash: value_hash(&[5]),
    };
    assert_eq!(
        forged.verify(&root, &key, None),
        Err(ProofError::Inconsistent)
    );
}

#[test]
fn empty_and_single_entry_trees_prove() {
    let tree = empty();
    let proof = tree.prove(b"x");
    assert_eq!(proof.encode().as_ref(), &[0x01, 0x00]);
    assert_eq!(proof.verify(&EMPTY, b"x", None), Ok(()));
    let mut one = empty();
    one.insert(b"x", b"1").unwrap();
    let proof = one.prove(b"x");
    assert_eq!(proof.encode().as_ref(), &[0x00, 0x00]);
    assert_eq!(proof.verify(&one.root(), b"x", Some(b"1")), Ok(()));
    assert_eq!(
        one.prove(b"y").verify(&one.root(), b"y", None),
        Ok(()),
        "absent beside the only leaf"
    );
}

#[test]
fn every_truncation_of_a_proof_fails_to_decode() {
    let entries: Entries = (0u32..500)
        .map(|i| (i.to_be_bytes().to_vec(), vec![1]))
        .collect();
    let tree = tree_of(&entries);
    for key in [7u32, 100_000] {
        let bytes = tree.prove(&key.to_be_bytes()).encode();
        assert!(bytes.len() <= MAX_PROOF_LEN);
        for cut in 0..bytes.len() {
            assert_eq!(Proof::decode(&bytes[..cut]), Err(ProofError::Malformed));
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(Proof::decode(&longer), Err(ProofError::Malformed));
    }
    assert_eq!(Proof::decode(&[0x03, 0x00]), Err(ProofError::Malformed));
    assert_eq!(Proof::decode(&[0x00, 65]), Err(ProofError::Malformed));
    assert_eq!(Proof::decode(&[0x00, 1, 0, 0]), Err(ProofError::Malformed));
}

#[test]
fn removing_a_prefix_removes_exactly_the_keys_under_it() {
    let entries: Entries = (0u32..3000)
        .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8]))
        .collect();
    for depth in [0, 1, 2, 3, 5] {
        let mut tree = tree_of(&entries);
        let path = Path::of_key_hash(&key_hash(&42u32.to_be_bytes()), depth);
        let under = tree.keys_under(&path);
        let removed = tree.remove_prefix(&path);
        assert_eq!(removed, under.len());
        assert!(removed >= 1);
        let rest: Entries = entries
            .iter()
            .filter(|(k, _)| !path.contains(&key_hash(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(tree.store().map(), &rest);
        assert_eq!(tree.len(), rest.len());
        assert_eq!(tree.root(), model_root(&rest), "depth {depth}");
        assert_eq!(tree.subtree_hash(&path), EMPTY);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn root_matches_the_definition_and_ignores_insertion_order(
        entries in entries(),
        seed in any::<u64>(),
    ) {
        let built = tree_of(&entries);
        prop_assert_eq!(built.root(), model_root(&entries));
        // Insert in a shuffled order, through an overwritten value for some keys.
        let mut order: Vec<(&Vec<u8>, &Vec<u8>)> = entries.iter().collect();
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut tree = empty();
        for (i, (k, v)) in order.iter().enumerate() {
            if i % 3 == 0 {
                tree.insert(k, b"placeholder").unwrap();
            }
            tree.insert(k, v).unwrap();
        }
        prop_assert_eq!(tree.root(), built.root());
        prop_assert_eq!(tree.len(), entries.len());
        prop_assert_eq!(tree.depth(), built.depth());
        prop_assert_eq!(tree.inner_nodes(), built.inner_nodes());
        prop_assert_eq!(tree.store().map(), &entries);
    }

    #[test]
    fn insert_then_remove_restores_the_root(
        entries in entries(),
        key in prop::collection::vec(any::<u8>(), 0..8),
        value in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut tree = tree_of(&entries);
        let before = tree.root();
        let old = entries.get(&key).cloned();
        tree.insert(&key, &value).unwrap();
        match old {
            Some(old) => { tree.insert(&key, &old).unwrap(); }
            None => { prop_assert!(tree.remove(&key)); }
        }
        prop_assert_eq!(tree.root(), before);
        prop_assert_eq!(tree.store().map(), &entries);
        // Removing every key, in any order, empties the tree.
        for k in entries.keys().rev() {
            prop_assert!(tree.remove(k));
        }
        prop_assert_eq!(tree.root(), EMPTY);
        prop_assert_eq!(tree.inner_nodes(), 0);
    }

    #[test]
    fn subtree_hashes_and_nodes_agree_at_every_path(
        entries in entries(),
        probe in any::<[u8; 32]>(),
        depth in 0usize..=MAX_DEPTH,
    ) {
        let tree = tree_of(&entries);
        let path = Path::of_key_hash(&probe, depth);
        let under: Entries = entries
            .iter()
            .filter(|(k, _)| path.contains(&key_hash(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        prop_assert_eq!(tree.subtree_hash(&path), model_subtree_at(&under, depth));
        prop_assert_eq!(tree.node(&path).hash(), tree.subtree_hash(&path));
        prop_assert_eq!(tree.keys_under(&path).len(), under.len());
    }

    #[test]
    fn valid_proofs_verify_and_round_trip(
        entries in entries(),
        absent in prop::collection::vec(any::<u8>(), 6..9),
    ) {
        let tree = tree_of(&entries);
        let root = tree.root();
        for (k, v) in &entries {
            let proof = tree.prove(k);
            prop_assert_eq!(&proof.end, &ProofEnd::Present);
            prop_assert_eq!(proof.verify(&root, k, Some(v)), Ok(()));
            prop_assert_eq!(Proof::decode(&proof.encode()), Ok(proof.clone()));
            prop_assert_eq!(proof.encoded_len(), proof.encode().len());
        }
        // Keys of 6 bytes or more are never in `entries`.
        let proof = tree.prove(&absent);
        prop_assert_eq!(proof.verify(&root, &absent, None), Ok(()));
        prop_assert_eq!(Proof::decode(&proof.encode()), Ok(proof));
    }

    #[test]
    fn any_single_bit_change_fails(
        entries in entries().prop_filter("non-empty", |e| !e.is_empty()),
        pick in any::<prop::sample::Index>(),
        absent in prop::collection::vec(any::<u8>(), 6..9),
    ) {
        let tree = tree_of(&entries);
        let root = tree.root();
        let (key, value) = entries.iter().nth(pick.index(entries.len())).unwrap();
        let bytes = tree.prove(key).encode();
        // Every bit of the proof.
        for bit in 0..bytes.len() * 8 {
            let tampered = flip(&bytes, bit);
            let ok = Proof::decode(&tampered)
                .is_ok_and(|p| p.verify(&root, key, Some(value)).is_ok());
            prop_assert!(!ok, "proof bit {} flipped still verifies", bit);
        }
        let proof = Proof::decode(&bytes).unwrap();
        // Every bit of the key, the value and the root.
        for bit in 0..key.len() * 8 {
            prop_assert!(proof.verify(&root, &flip(key, bit), Some(value)).is_err());
        }
        for bit in 0..value.len() * 8 {
            prop_assert!(proof.verify(&root, key, Some(&flip(value, bit))).is_err());
        }
        for bit in 0..256 {
            let other: Hash = flip(&root, bit).try_into().unwrap();
            prop_assert_eq!(
                proof.verify(&other, key, Some(value)),
                Err(ProofError::RootMismatch)
            );
        }
        // Absence proofs: every bit of the proof and of the root.
        let bytes = tree.prove(&absent).encode();
        for bit in 0..bytes.len() * 8 {
            let ok = Proof::decode(&flip(&bytes, bit))
                .is_ok_and(|p| p.verify(&root, &absent, None).is_ok());
            prop_assert!(!ok, "absence proof bit {} flipped still verifies", bit);
        }
        for bit in 0..256 {
            let other: Hash = flip(&root, bit).try_into().unwrap();
            prop_assert!(tree.prove(&absent).verify(&other, &absent, None).is_err());
        }
    }

    #[test]
    fn tampered_siblings_fail(
        entries in prop::collection::btree_map(
            prop::collection::vec(any::<u8>(), 0..6),
            prop::collection::vec(any::<u8>(), 0..6),
            20..60,
        ),
        pick in any::<prop::sample::Index>(),
        replacement in any::<[u8; 32]>(),
    ) {
        let tree = tree_of(&entries);
        let (key, value) = entries.iter().nth(pick.index(entries.len())).unwrap();
        let mut proof = tree.prove(key);
        let Some(step) = proof.steps.iter_mut().find(|s| !s.siblings.is_empty()) else {
            return Ok(());
        };
        prop_assume!(step.siblings[0] != replacement);
        step.siblings[0] = replacement;
        prop_assert_eq!(
            proof.verify(&tree.root(), key, Some(value)),
            Err(ProofError::RootMismatch)
        );
    }

    #[test]
    fn garbage_proofs_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = Proof::decode(&bytes) {
            prop_assert_eq!(p.encode().to_vec(), bytes);
            let _ = p.verify(&EMPTY, b"k", None);
            let _ = p.verify(&EMPTY, b"k", Some(b"v"));
        }
    }
}

/// [`model_subtree`] of entries under a path of `depth` nibbles.
fn model_subtree_at(entries: &Entries, depth: usize) -> Hash {
    let mut leaves: Vec<(Hash, Hash)> = entries
        .iter()
        .map(|(k, v)| (key_hash(k), value_hash(v)))
        .collect();
    leaves.sort();
    model_subtree(&leaves, depth)
}
