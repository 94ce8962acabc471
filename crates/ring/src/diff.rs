//! The difference between two rings: the partition replicas that ownership handoff moves.

use crate::Ring;

/// One partition replica changing hands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Move {
    /// The partition.
    pub partition: u32,
    /// The node that held the replica (and streams it out), or `None` when the number of
    /// replicas grew (a cluster with fewer than N nodes gaining one).
    pub from: Option<String>,
    /// The node that receives it.
    pub to: String,
}

/// The plan that turns one ring's ownership into another's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingDiff {
    /// The moves, by partition.
    pub moves: Vec<Move>,
    /// Replicas that are dropped without a new holder (the number of replicas shrank).
    pub dropped: Vec<(u32, String)>,
}

impl Ring {
    /// The moves that take `self`'s ownership to `next`'s. Both rings must have the same
    /// number of partitions. Within a partition, the nodes that lose it are paired with
    /// the nodes that gain it in preference-list order; a node in both lists stays put,
    /// whatever its position.
    ///
    /// ```
    /// use dotkv_ring::{Member, Ring};
    /// let three: Vec<Member> = (1..=3).map(|i| Member::new(format!("n{i}"), 1, "z")).collect();
    /// let mut four = three.clone();
    /// four.push(Member::new("n4", 1, "z"));
    /// let before = Ring::build(three, 3, 64, 1).unwrap();
    /// let after = Ring::build(four, 3, 64, 2).unwrap();
    /// let diff = before.diff(&after);
    /// assert!(diff.moves.iter().all(|m| m.to == "n4"));
    /// assert_eq!(diff.moves.len(), after.loads()[3]);
    /// ```
    pub fn diff(&self, next: &Self) -> RingDiff {
        assert_eq!(
            self.partitions, next.partitions,
            "rings of different sizes cannot be diffed"
        );
        let mut diff = RingDiff::default();
        for p in 0..self.partitions {
            let old: Vec<&str> = self
                .preference_list(p)
                .iter()
                .map(|&i| self.member(i).id.as_str())
                .collect();
            let new: Vec<&str> = next
                .preference_list(p)
                .iter()
                .map(|&i| next.member(i).id.as_str())
                .collect();
            let mut leaving = old.iter().filter(|id| !new.contains(id));
            for to in new.iter().filter(|id| !old.contains(id)) {
                let from = leaving.next().map(|id| id.to_string());
                diff.moves.push(Move {
                    partition: p,
                    from,
                    to: to.to_string(),
                });
            }
            diff.dropped.extend(leaving.map(|id| (p, id.to_string())));
        }
        diff
    }
}
