//! Replica ids, dots and version vectors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of a replica (a server that coordinates writes), compact so that sets and
/// tokens stay small. dotkv derives it from the node id with [`ReplicaId::from_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaId(pub u64);

impl ReplicaId {
    /// The id of the node named `name`: 64-bit FNV-1a of its bytes. The function is part
    /// of the stored format and never changes. With 64 bits, a collision among even
    /// thousands of node names has a probability below 1e-12.
    ///
    /// ```
    /// use dotkv_versioning::ReplicaId;
    /// assert_eq!(ReplicaId::from_name("n1"), ReplicaId::from_name("n1"));
    /// assert_ne!(ReplicaId::from_name("n1"), ReplicaId::from_name("n2"));
    /// ```
    pub fn from_name(name: &str) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        Self(name.bytes().fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        }))
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One event: the `counter`-th write coordinated by `replica`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot {
    /// The coordinator.
    pub replica: ReplicaId,
    /// Its event number, from 1.
    pub counter: u64,
}

/// A version vector: for each replica, how many of its events a history contains. It is
/// what a client holds as the context of a read.
///
/// Kept as a vector sorted by replica id, without zero counters, so that equal histories
/// have equal (and equally encoded) vectors.
///
/// # Laws
///
/// [`merge`](Self::merge) is commutative, associative and idempotent; `a.descends(&b)`
/// is a partial order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(ReplicaId, u64)>", into = "Vec<(ReplicaId, u64)>")]
pub struct VersionVector(Vec<(ReplicaId, u64)>);

impl VersionVector {
    /// The empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// From pairs already sorted by id without duplicates (an internal invariant).
    pub(crate) fn from_sorted(pairs: impl Iterator<Item = (ReplicaId, u64)>) -> Self {
        Self(pairs.filter(|&(_, counter)| counter > 0).collect())
    }

    /// Whether the history is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of replicas with events.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `(replica, counter)` pairs, ascending by replica.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.0.iter().copied()
    }

    /// The counter of `replica` (0 if absent).
    pub fn get(&self, replica: ReplicaId) -> u64 {
        self.0
            .binary_search_by(|(id, _)| id.cmp(&replica))
            .map_or(0, |at| self.0[at].1)
    }

    /// Whether the history contains the event `dot`.
    pub fn contains(&self, dot: Dot) -> bool {
        self.get(dot.replica) >= dot.counter
    }

    /// Whether this history contains all of `other`'s.
    pub fn descends(&self, other: &Self) -> bool {
        other.iter().all(|(id, counter)| self.get(id) >= counter)
    }

    /// The union of two histories: the pointwise maximum.
    pub fn merge(&self, other: &Self) -> Self {
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => a.next().copied(),
                (None, Some(_)) => b.next().copied(),
                (Some(x), Some(y)) if x.0 < y.0 => a.next().copied(),
                (Some(x), Some(y)) if x.0 > y.0 => b.next().copied(),
                (Some(_), Some(_)) => a.next().zip(b.next()).map(|(x, y)| (x.0, x.1.max(y.1))),
            };
            out.extend(next);
        }
        Self(out)
    }
}

impl From<VersionVector> for Vec<(ReplicaId, u64)> {
    fn from(vv: VersionVector) -> Self {
        vv.0
    }
}

impl TryFrom<Vec<(ReplicaId, u64)>> for VersionVector {
    type Error = &'static str;

    /// Accepts only the canonical form: ids strictly ascending, no zero counter.
    fn try_from(pairs: Vec<(ReplicaId, u64)>) -> Result<Self, Self::Error> {
        if pairs.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("version vector ids not strictly ascending");
        }
        if pairs.iter().any(|&(_, counter)| counter == 0) {
            return Err("version vector with a zero counter");
        }
        Ok(Self(pairs))
    }
}

impl FromIterator<(ReplicaId, u64)> for VersionVector {
    /// Collects pairs in any order; a replica named twice keeps its larger counter.
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> Self {
        let mut pairs: Vec<_> = iter.into_iter().filter(|&(_, c)| c > 0).collect();
        pairs.sort_unstable();
        // After sorting, the last pair of each id has the largest counter.
        pairs.reverse();
        pairs.dedup_by_key(|(id, _)| *id);
        pairs.reverse();
        Self(pairs)
    }
}
