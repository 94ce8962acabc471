//! The tarpc service and its wire types.

use bytes::Bytes;
use dotkv_membership::{GossipRequest, GossipResponse};
use dotkv_replication::{
    AaeView, Error, GetReply, GetRequest, HandoffPage, PageMode, PutReply, PutRequest,
    ReplicasReply, TransferView,
};
use serde::{Deserialize, Serialize};

/// The calls a node answers: client calls and peer calls on one service, so that a node
/// has one address and a peer needs one connection.
#[tarpc::service]
pub(crate) trait NodeService {
    /// A step of a gossip exchange (peers).
    async fn gossip(request: GossipRequest) -> GossipResponse;
    /// The members and their liveness as this node sees them (clients).
    async fn status() -> StatusReply;
    /// This node's ring (clients).
    async fn ring() -> RingReply;
    /// Reads a key (clients).
    async fn get(request: GetRequest) -> Result<GetReply, Error>;
    /// Writes or deletes a key (clients; peers forwarding a write to a coordinator).
    async fn put(request: PutRequest) -> Result<PutReply, Error>;
    /// What each replica of a key holds (clients).
    async fn replicas(key: Bytes) -> Result<ReplicasReply, Error>;
    /// Merges an object into this replica (peers).
    async fn write_replica(key: Bytes, object: Bytes) -> Result<(), Error>;
    /// This replica's object for a key (peers).
    async fn read_replica(key: Bytes) -> Result<Option<Bytes>, Error>;
    /// The digest of this replica's object for a key (peers: reads that need no object).
    async fn read_digest(key: Bytes) -> Result<Option<u64>, Error>;
    /// A page of a partition, for ownership handoff (peers).
    async fn handoff_page(
        partition: u32,
        after: Option<Bytes>,
        mode: PageMode,
    ) -> Result<HandoffPage, Error>;
    /// Which offered `(key, digest)` pairs of a partition this node lacks (peers).
    async fn wanted(partition: u32, offered: Vec<(Bytes, u64)>) -> Result<Vec<u32>, Error>;
    /// Merges handed-off objects of a partition (peers).
    async fn push_partition(partition: u32, entries: Vec<(Bytes, Bytes)>) -> Result<(), Error>;
    /// Keeps an object for an owner the coordinator could not reach (peers: hinted handoff).
    async fn write_hint(target: String, key: Bytes, object: Bytes) -> Result<(), Error>;
    /// The hints this node keeps for a key, by target (peers).
    async fn read_hints(key: Bytes) -> Result<Vec<(String, Bytes)>, Error>;
    /// Anti-entropy: branch hashes of a partition's tree, or leaf hashes of branches
    /// (peers).
    async fn aae_tree(partition: u32, branches: Vec<u32>) -> Option<Vec<u64>>;
    /// Anti-entropy: `(key, digest)` of the keys in leaves of a partition (peers).
    async fn aae_keys(partition: u32, leaves: Vec<u32>) -> Result<Vec<(Bytes, u64)>, Error>;
    /// Anti-entropy repair: merges the sent objects, answers what the sender lacks (peers).
    async fn aae_sync(
        partition: u32,
        objects: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<(Bytes, Bytes)>, Error>;
    /// This node's anti-entropy: trees, exchanges, repairs, reaped tombstones (clients).
    async fn aae() -> AaeView;
    /// Makes this node, alone in its cluster, join the cluster of `seed` (clients).
    async fn join(seed: String) -> Result<(), Error>;
    /// Makes this node leave the cluster once its data lives elsewhere (clients).
    async fn leave() -> Result<(), Error>;
    /// Removes a member that is dead for good; its replicas are rebuilt (clients).
    async fn remove(id: String) -> Result<(), Error>;
    /// Echoes `payload`: the round trip of the wire alone, the floor `dotkv bench
    /// --workload ping` measures (clients).
    async fn ping(payload: Bytes) -> Bytes;
}

/// The answer to `status`: `dotkv status --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The id of the node that answered.
    pub node: String,
    /// The members, by id.
    pub nodes: Vec<NodeView>,
    /// The ring as the answering node knows it (absent before the first ring).
    pub ring: Option<RingStatus>,
    /// The partition transfers the answering node is receiving.
    pub transfers: Vec<TransferView>,
    /// Hints the answering node holds, by target (sloppy quorum; empty until it lands).
    pub hints: Vec<HintView>,
}

/// The ring in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingStatus {
    /// The current ring's version.
    pub version: u64,
    /// The current ring's digest, in hex.
    pub digest: String,
    /// The transition in progress, if any.
    pub pending: Option<PendingStatus>,
}

/// A transition in progress, in a [`RingStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingStatus {
    /// The pending ring's version.
    pub version: u64,
    /// The pending ring's digest, in hex.
    pub digest: String,
    /// Partition replicas that change owner.
    pub moves: usize,
    /// Of them, those whose receiver has received all it gains.
    pub moved: usize,
}

/// Hints held for one target, in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HintView {
    /// The node the hints are for.
    pub target: String,
    /// How many keys.
    pub keys: u64,
}

/// One member in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node id.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// `down` while the answering node's failure detector convicts it, else its
    /// membership status (`joining`, `up`, `leaving`, `left`).
    pub status: String,
    /// Its weight.
    pub weight: u32,
    /// Its zone.
    pub zone: String,
    /// The partition replicas it holds in the answering node's ring.
    pub partitions: usize,
}

/// The answer to `ring`: `dotkv ring --json` prints it (without the pending fields while
/// no transition runs). No `skip_serializing_if` here: bincode, the wire format, is not
/// self-describing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingReply {
    /// The ring's version.
    pub version: u64,
    /// The ring's digest, in hex: equal on nodes that agree.
    pub digest: String,
    /// Each partition's preference list.
    pub partitions: Vec<PartitionView>,
    /// While a transition runs: the pending ring's version.
    pub pending_version: Option<u64>,
}

/// One partition in a [`RingReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionView {
    /// The partition number.
    pub id: u32,
    /// Its preference list, by node id.
    pub nodes: Vec<String>,
    /// While a transition runs: its preference list in the pending ring.
    pub pending: Option<Vec<String>>,
}
