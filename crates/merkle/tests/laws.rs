//! Property tests of the tictac tree: the diff finds exactly the keys that differ, the
//! tree does not depend on the order of updates, and removing what was added restores it.

use std::collections::BTreeMap;

use dotkv_merkle::{TictacTree, differing_keys, leaf_of, segment_of};
use proptest::prelude::*;

type Items = BTreeMap<Vec<u8>, u64>;

fn items() -> impl Strategy<Value = Items> {
    proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 1..12),
        0..4u64,
        0..300,
    )
}

fn tree_of(items: &Items) -> TictacTree {
    let mut tree = TictacTree::new();
    for (key, &digest) in items {
        tree.toggle(key, digest);
    }
    tree
}

/// The items of `items` that fall under `leaves`.
fn in_leaves<'a>(items: &'a Items, leaves: &[usize]) -> Vec<(&'a [u8], u64)> {
    items
        .iter()
        .filter(|(key, _)| leaves.contains(&leaf_of(segment_of(key))))
        .map(|(key, &digest)| (key.as_slice(), digest))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Descending into the differing leaves and comparing their items finds exactly the
    /// keys missing on one side or held with different digests.
    #[test]
    fn the_diff_finds_exactly_the_differing_keys(a in items(), b in items()) {
        let leaves = tree_of(&a).diff(&tree_of(&b));
        let found = differing_keys(in_leaves(&a, &leaves), in_leaves(&b, &leaves));
        let expected: Vec<Vec<u8>> = a
            .keys()
            .chain(b.keys())
            .filter(|key| a.get(*key) != b.get(*key))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        prop_assert_eq!(found, expected);
    }

    /// Equal item sets give equal trees, and no differing leaf.
    #[test]
    fn any_order_of_updates_gives_the_same_root(a in items(), seed in any::<u64>()) {
        let mut shuffled: Vec<(&Vec<u8>, &u64)> = a.iter().collect();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut tree = TictacTree::new();
        for (key, &digest) in shuffled {
            tree.toggle(key, digest);
        }
        prop_assert_eq!(tree.root(), tree_of(&a).root());
        prop_assert!(tree.diff(&tree_of(&a)).is_empty());
    }

    /// Adding items and removing them again gives back the tree before.
    #[test]
    fn insert_then_remove_restores_the_root(a in items(), extra in items()) {
        let before = tree_of(&a);
        let mut tree = before.clone();
        let added: Vec<_> = extra.iter().filter(|(k, _)| !a.contains_key(*k)).collect();
        for (key, digest) in &added {
            tree.toggle(key, **digest);
        }
        for (key, digest) in &added {
            tree.replace(key, Some(**digest), None);
        }
        prop_assert_eq!(tree.root(), before.root());
        prop_assert_eq!(tree, before);
    }
}
