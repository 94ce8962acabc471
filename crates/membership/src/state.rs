//! The cluster state: what every node knows about every member, merged entry by entry.

use std::collections::BTreeMap;
use std::fmt;

use dotkv_ring::Ring;
use serde::{Deserialize, Serialize};

/// A member's place in the cluster's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Announced; owns nothing until the claimant's ring includes it, then turns up.
    Joining,
    /// A full member.
    Up,
    /// Asked to leave: the next ring excludes it; it serves until that ring is current.
    Leaving,
    /// Gone (left, or removed by `dotkv remove`); kept so that the departure spreads and
    /// is not undone by stale gossip.
    Left,
}

impl NodeStatus {}

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
    /// The pending ring whose partitions this node has finished receiving (ownership
    /// handoff), or the default while it has received none: what tells the claimant that
    /// a transition can complete.
    pub synced: RingId,
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

/// Names one ring: its version and digest. Two claimants on both sides of a network
/// partition may give different rings the same version; the digest tells them apart.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct RingId {
    /// [`Ring::version`].
    pub version: u64,
    /// [`Ring::digest`].
    pub digest: u64,
}

impl RingId {
    /// The id of `ring`.
    pub fn of(ring: &Ring) -> Self {
        Self {
            version: ring.version(),
            digest: ring.digest(),
        }
    }
}

/// The ring as cluster state: the current ring and the transition in progress, if any.
///
/// Only the claimant publishes a topology, each with a higher `epoch`; nodes keep the
/// greatest by [`id`](Self::id), `(epoch, digest)`, a total order every node evaluates
/// alike, so two topologies published on both sides of a network partition resolve to one
/// after it heals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Bumped by the claimant on every publication.
    pub epoch: u64,
    /// The ring requests route by.
    pub current: Ring,
    /// The ring being moved to: its new owners receive their partitions (ownership
    /// handoff) and get writes meanwhile; it becomes current once they all have.
    pub pending: Option<Ring>,
}

/// The order of topologies: `(epoch, digest of both rings)`.
pub type TopologyId = (u64, u64);

impl Topology {
    /// Its place in the total order of topologies.
    pub fn id(&self) -> TopologyId {
        let pending = self.pending.as_ref().map_or(0, Ring::digest);
        let digest =
            self.current.digest() ^ pending.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (self.epoch, digest)
    }
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
///
/// The [`Topology`] merges the same way: the greater [`Topology::id`] wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    nodes: BTreeMap<String, NodeState>,
    /// Boxed: two rings are large, and most gossip messages carry none.
    topology: Option<Box<Topology>>,
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

    /// The ring and the transition in progress, once the claimant published one.
    pub fn topology(&self) -> Option<&Topology> {
        self.topology.as_deref()
    }

    /// The id of [`topology`](Self::topology), for a gossip digest.
    pub fn topology_id(&self) -> Option<TopologyId> {
        self.topology().map(Topology::id)
    }

    /// Merges a topology; returns whether it replaced the one held.
    pub fn merge_topology(&mut self, topology: &Topology) -> bool {
        if self.topology_id() >= Some(topology.id()) {
            return false;
        }
        self.topology = Some(Box::new(topology.clone()));
        true
    }

    /// Sets the topology, whatever was held (a claimant's publication, or a node joining
    /// another cluster forgetting its own).
    pub(crate) fn set_topology(&mut self, topology: Option<Topology>) {
        self.topology = topology.map(Box::new);
    }

    /// Merges another state; returns the ids whose entries changed (the topology merges
    /// too: compare [`topology_id`](Self::topology_id) to see whether it changed).
    pub fn merge(&mut self, other: &Self) -> Vec<String> {
        if let Some(topology) = &other.topology {
            self.merge_topology(topology);
        }
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

    /// The entries newer than what `digest` holds (or absent from it), and the topology
    /// when it is newer than `topology`: what their sender lacks.
    pub fn newer_than(&self, digest: &Digest, topology: Option<TopologyId>) -> Self {
        let nodes = self
            .nodes
            .iter()
            .filter(|(id, entry)| digest.get(*id).is_none_or(|&v| entry.version() > v))
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        let topology = self
            .topology
            .as_ref()
            .filter(|t| Some(t.id()) > topology)
            .cloned();
        Self { nodes, topology }
    }

    /// The members the next ring should have: those joining or up (not leaving, not
    /// gone), as the ring takes them.
    pub fn desired_members(&self) -> Vec<dotkv_ring::Member> {
        self.nodes
            .iter()
            .filter(|(_, e)| matches!(e.status, NodeStatus::Joining | NodeStatus::Up))
            .map(|(id, e)| dotkv_ring::Member::new(id.clone(), e.weight, e.zone.clone()))
            .collect()
    }

    /// Mutable access to this node's own entry (only the node itself may change it).
    pub(crate) fn entry_mut(&mut self, id: &str) -> Option<&mut NodeState> {
        self.nodes.get_mut(id)
    }
}
