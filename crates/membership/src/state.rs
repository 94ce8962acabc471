//! The cluster state: what every node knows about every member, merged entry by entry.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A member's place in the cluster's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Announced, receiving its partitions; owns them once up.
    Joining,
    /// A full member.
    Up,
    /// Handing its partitions off; still serves until done.
    Leaving,
    /// Gone; kept so that the departure spreads and is not undone by stale gossip.
    Left,
}

impl NodeStatus {
    /// Whether a member in this status owns partitions in the ring.
    pub fn owns_partitions(self) -> bool {
        matches!(self, Self::Joining | Self::Up | Self::Leaving)
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Joining => "joining",
            Self::Up => "up",
            Self::Leaving => "leaving",
            Self::Left => "left",
        })
    }
}

/// One member's entry. Only the member itself writes it; others copy newer versions.
///
/// Versions are ordered by `(incarnation, heartbeat)`: a node raises `incarnation` when it
/// restarts or changes its own entry, and `heartbeat` every gossip round.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeState {
    /// Bumped by the node on every restart and every change of the fields below.
    pub incarnation: u64,
    /// Bumped by the node every gossip round: proof of life.
    pub heartbeat: u64,
    /// Where peers and clients reach it.
    pub addr: String,
    /// Its life-cycle status.
    pub status: NodeStatus,
    /// Its capacity relative to others.
    pub weight: u32,
    /// Its failure domain.
    pub zone: String,
}

impl NodeState {
    /// The entry's version, the order in which entries replace one another.
    pub fn version(&self) -> Version {
        Version {
            incarnation: self.incarnation,
            heartbeat: self.heartbeat,
        }
    }
}

/// The version of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// See [`NodeState::incarnation`].
    pub incarnation: u64,
    /// See [`NodeState::heartbeat`].
    pub heartbeat: u64,
}

/// For each member, the version a node holds: what gossip exchanges first.
pub type Digest = BTreeMap<String, Version>;

/// Node id → entry.
///
/// # Laws
///
/// [`merge`](Self::merge) keeps, for each id, the greatest entry (by version, then by
/// content, a total order), so it is commutative, associative and idempotent, and any
/// order of delivering the same entries converges to the same state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    nodes: BTreeMap<String, NodeState>,
}

impl ClusterState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of `id`.
    pub fn get(&self, id: &str) -> Option<&NodeState> {
        self.nodes.get(id)
    }

    /// All entries, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &NodeState)> {
        self.nodes.iter()
    }

    /// The number of members known (in any status).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no member is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Merges one entry; returns whether it changed the state.
    pub fn merge_entry(&mut self, id: &str, entry: NodeState) -> bool {
        match self.nodes.get_mut(id) {
            Some(current) if *current >= entry => false,
            Some(current) => {
                *current = entry;
                true
            }
            None => {
                self.nodes.insert(id.to_owned(), entry);
                true
            }
        }
    }

    /// Merges another state; returns the ids whose entries changed.
    pub fn merge(&mut self, other: &Self) -> Vec<String> {
        other
            .nodes
            .iter()
            .filter(|&(id, entry)| self.merge_entry(id, entry.clone()))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The versions held, for a digest exchange.
    pub fn digest(&self) -> Digest {
        self.nodes
            .iter()
            .map(|(id, entry)| (id.clone(), entry.version()))
            .collect()
    }

    /// The entries newer than what `digest` holds (or absent from it): what its sender
    /// lacks.
    pub fn newer_than(&self, digest: &Digest) -> Self {
        let nodes = self
            .nodes
            .iter()
            .filter(|(id, entry)| digest.get(*id).is_none_or(|&v| entry.version() > v))
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        Self { nodes }
    }

    /// The members that own partitions, as the ring takes them.
    pub fn owners(&self) -> Vec<dotkv_ring::Member> {
        self.nodes
            .iter()
            .filter(|(_, e)| e.status.owns_partitions())
            .map(|(id, e)| dotkv_ring::Member::new(id.clone(), e.weight, e.zone.clone()))
            .collect()
    }

    /// Mutable access to this node's own entry (only the node itself may change it).
    pub(crate) fn entry_mut(&mut self, id: &str) -> Option<&mut NodeState> {
        self.nodes.get_mut(id)
    }
}
