//! Anti-entropy hash trees for dotkv: one per partition replica, compared between replicas
//! to find the keys they disagree on (Dynamo §4.7, Riak's tictac AAE).
//!
//! A [`TictacTree`] summarizes a set of `(key, object digest)` items. Each key falls in one
//! of 65 536 *segments* (the low 16 bits of its XXH3-64 hash, [`segment_of`]; the store
//! keeps a partition's keys ordered by segment, so a segment range is one contiguous
//! scan). The tree has [`BRANCHES`] branches of [`LEAVES_PER_BRANCH`] leaves; a leaf
//! covers [`SEGMENTS_PER_LEAF`] consecutive segments, and its hash is the XOR of the
//! [`item_hash`]es of the items in those segments; a branch's hash is the XOR of its
//! leaves, the root the XOR of the branches.
//!
//! XOR makes the tree *order-independent* and every update O(1): adding an item and
//! removing it are the same operation ([`TictacTree::toggle`]), replacing one digest by
//! another is two ([`TictacTree::replace`]), and any sequence of updates that ends with the
//! same items gives the same tree, whatever the order. Two trees are compared top down
//! ([`TictacTree::differing_branches`], [`TictacTree::differing_leaves`]), descending only
//! into branches that differ, so a comparison costs in proportion to the differences; the
//! keys of the differing leaves are then compared item by item ([`differing_keys`]).
//!
//! ```text
//!  root ── branch 0 ── leaf 0 (segments 0..64) ── XOR of item_hash(key, digest)
//!       │           └─ leaf 1 (segments 64..128)
//!       └─ branch 31 ── ... leaf 1023 (segments 65472..65536)
//! ```
//!
//! The crate is pure: it hashes and compares; the node keeps the trees current and moves
//! the objects.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

use std::collections::BTreeMap;
use std::ops::Range;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Branches under the root.
pub const BRANCHES: usize = 32;
/// Leaves under each branch.
pub const LEAVES_PER_BRANCH: usize = 32;
/// Leaves of a tree.
pub const LEAVES: usize = BRANCHES * LEAVES_PER_BRANCH;
/// Segments a key can fall in.
pub const SEGMENTS: usize = 1 << 16;
/// Consecutive segments under one leaf.
pub const SEGMENTS_PER_LEAF: usize = SEGMENTS / LEAVES;

/// The segment of a key: the low 16 bits of its XXH3-64 hash (the partition takes the top
/// bits of the same hash, so segments spread evenly within a partition). Part of the
/// on-disk format: the store orders a partition's keys by it.
///
/// ```
/// assert_eq!(dotkv_merkle::segment_of(b"a"), (xxhash_rust::xxh3::xxh3_64(b"a") & 0xffff) as u16);
/// ```
#[inline]
pub fn segment_of(key: &[u8]) -> u16 {
    (xxh3_64(key) & 0xffff) as u16
}

/// The leaf covering `segment`.
#[inline]
pub const fn leaf_of(segment: u16) -> usize {
    segment as usize / SEGMENTS_PER_LEAF
}

/// The segments under `leaf`.
pub fn segments_of_leaf(leaf: usize) -> Range<u32> {
    let first = (leaf * SEGMENTS_PER_LEAF) as u32;
    first..first + SEGMENTS_PER_LEAF as u32
}

/// The digest of an object's bytes.
#[inline]
pub fn object_digest(object: &[u8]) -> u64 {
    xxh3_64(object)
}

/// An item's contribution to its leaf: a hash of the key seeded with the object's digest,
/// so that the same object under two keys, or two objects under one key, differ.
#[inline]
pub fn item_hash(key: &[u8], digest: u64) -> u64 {
    xxh3_64_with_seed(key, digest)
}

/// A tictac Merkle tree over one partition replica's `(key, object digest)` items.
///
/// Memory: 256 bytes of branch hashes, plus 8 KiB of leaf hashes once the tree holds an
/// item, whatever the number of items (a node with 256 partition replicas: about 2 MiB).
#[derive(Clone)]
pub struct TictacTree {
    branches: [u64; BRANCHES],
    /// Allocated at the first item, so that trees of empty partitions cost 256 bytes.
    leaves: Option<Box<[u64; LEAVES]>>,
}

/// The leaf hashes of a tree that never held an item.
static NO_LEAVES: [u64; LEAVES] = [0; LEAVES];

impl PartialEq for TictacTree {
    fn eq(&self, other: &Self) -> bool {
        self.branches == other.branches && self.all_leaves() == other.all_leaves()
    }
}

impl Eq for TictacTree {}

impl Default for TictacTree {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TictacTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TictacTree")
            .field("root", &format_args!("{:016x}", self.root()))
            .finish_non_exhaustive()
    }
}

impl TictacTree {
    /// The tree of no items: every hash is zero.
    pub fn new() -> Self {
        Self {
            branches: [0; BRANCHES],
            leaves: None,
        }
    }

    fn all_leaves(&self) -> &[u64; LEAVES] {
        self.leaves.as_deref().unwrap_or(&NO_LEAVES)
    }

    /// Adds the item `(key, digest)`, or removes it if it is there: XOR is its own inverse.
    ///
    /// ```
    /// use dotkv_merkle::TictacTree;
    /// let mut tree = TictacTree::new();
    /// tree.toggle(b"k", 7);
    /// assert_ne!(tree.root(), 0);
    /// tree.toggle(b"k", 7);
    /// assert_eq!(tree, TictacTree::new());
    /// ```
    pub fn toggle(&mut self, key: &[u8], digest: u64) {
        let leaf = leaf_of(segment_of(key));
        let hash = item_hash(key, digest);
        self.leaves.get_or_insert_with(|| Box::new([0; LEAVES]))[leaf] ^= hash;
        self.branches[leaf / LEAVES_PER_BRANCH] ^= hash;
    }

    /// Records that `key`'s object changed from `old` to `new` (`None`: absent).
    pub fn replace(&mut self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.toggle(key, old);
        }
        if let Some(new) = new {
            self.toggle(key, new);
        }
    }

    /// The root hash: zero for a tree of no items.
    pub fn root(&self) -> u64 {
        self.branches.iter().fold(0, |root, branch| root ^ branch)
    }

    /// The hashes of the branches, in order.
    pub fn branch_hashes(&self) -> &[u64; BRANCHES] {
        &self.branches
    }

    /// The hashes of the leaves of `branch`, in order.
    pub fn leaf_hashes(&self, branch: usize) -> &[u64] {
        &self.all_leaves()[branch * LEAVES_PER_BRANCH..(branch + 1) * LEAVES_PER_BRANCH]
    }

    /// The branches whose hash differs from `theirs` (another tree's branch hashes).
    pub fn differing_branches(&self, theirs: &[u64]) -> Vec<usize> {
        differing(&self.branches, theirs)
    }

    /// The leaves (tree-wide indices) of `branch` whose hash differs from `theirs` (the
    /// other tree's [`leaf_hashes`](Self::leaf_hashes) of the same branch).
    pub fn differing_leaves(&self, branch: usize, theirs: &[u64]) -> Vec<usize> {
        differing(self.leaf_hashes(branch), theirs)
            .into_iter()
            .map(|i| branch * LEAVES_PER_BRANCH + i)
            .collect()
    }

    /// The leaves where `self` and `other` differ, descending only into differing branches.
    pub fn diff(&self, other: &Self) -> Vec<usize> {
        self.differing_branches(&other.branches)
            .into_iter()
            .flat_map(|branch| self.differing_leaves(branch, other.leaf_hashes(branch)))
            .collect()
    }
}

/// The positions where `ours` and `theirs` differ; a position only one side has differs.
fn differing(ours: &[u64], theirs: &[u64]) -> Vec<usize> {
    (0..ours.len().max(theirs.len()))
        .filter(|&i| ours.get(i) != theirs.get(i))
        .collect()
}

/// The keys on which two replicas' item lists (of the same leaves) disagree: present on
/// one side only, or with different digests. Sorted, each once.
pub fn differing_keys<'a>(
    ours: impl IntoIterator<Item = (&'a [u8], u64)>,
    theirs: impl IntoIterator<Item = (&'a [u8], u64)>,
) -> Vec<Vec<u8>> {
    let mut items: BTreeMap<&[u8], (Option<u64>, Option<u64>)> = BTreeMap::new();
    for (key, digest) in ours {
        items.entry(key).or_default().0 = Some(digest);
    }
    for (key, digest) in theirs {
        items.entry(key).or_default().1 = Some(digest);
    }
    items
        .into_iter()
        .filter(|(_, (a, b))| a != b)
        .map(|(key, _)| key.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_covers_a_contiguous_range_of_segments() {
        assert_eq!(SEGMENTS_PER_LEAF, 64);
        assert_eq!(segments_of_leaf(0), 0..64);
        assert_eq!(segments_of_leaf(LEAVES - 1), 65472..65536);
        for segment in [0u16, 63, 64, 65535] {
            assert!(segments_of_leaf(leaf_of(segment)).contains(&u32::from(segment)));
        }
    }

    #[test]
    fn replace_is_remove_then_add() {
        let mut a = TictacTree::new();
        a.toggle(b"k", 1);
        a.replace(b"k", Some(1), Some(2));
        let mut b = TictacTree::new();
        b.toggle(b"k", 2);
        assert_eq!(a, b);
        a.replace(b"k", Some(2), None);
        assert_eq!(a, TictacTree::new());
    }

    #[test]
    fn one_changed_item_makes_one_leaf_differ() {
        let mut a = TictacTree::new();
        for i in 0..1000u32 {
            a.toggle(&i.to_be_bytes(), u64::from(i));
        }
        let mut b = a.clone();
        b.replace(&7u32.to_be_bytes(), Some(7), Some(8));
        let leaf = leaf_of(segment_of(&7u32.to_be_bytes()));
        assert_eq!(a.diff(&b), vec![leaf]);
        assert_eq!(
            a.differing_branches(b.branch_hashes()),
            vec![leaf / LEAVES_PER_BRANCH]
        );
    }

    #[test]
    fn differing_keys_are_the_ones_missing_or_changed() {
        let ours: Vec<(&[u8], u64)> = vec![(b"a", 1), (b"b", 2), (b"c", 3)];
        let theirs: Vec<(&[u8], u64)> = vec![(b"b", 2), (b"c", 4), (b"d", 5)];
        assert_eq!(
            differing_keys(ours, theirs),
            vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
    }
}
