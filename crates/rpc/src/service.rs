//! The tarpc service and its wire types.

use bytes::Bytes;
use dotkv_membership::{GossipRequest, GossipResponse};
use dotkv_replication::{Error, GetReply, GetRequest, PutReply, PutRequest, ReplicasReply};
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
    /// Echoes `payload`: the round trip of the wire alone, the floor `dotkv bench
    /// --workload ping` measures (clients).
    async fn ping(payload: Bytes) -> Bytes;
}

/// The answer to `status`: `dotkv status --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The members, by id.
    pub nodes: Vec<NodeView>,
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

/// The answer to `ring`: `dotkv ring --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingReply {
    /// The ring's version.
    pub version: u64,
    /// The ring's digest, in hex: equal on nodes that agree.
    pub digest: String,
    /// Each partition's preference list.
    pub partitions: Vec<PartitionView>,
}

/// One partition in a [`RingReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionView {
    /// The partition number.
    pub id: u32,
    /// Its preference list, by node id.
    pub nodes: Vec<String>,
}
