//! The peer transport: how a node talks to another, whatever the wire.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use dotkv_membership::{GossipRequest, GossipResponse};

use crate::{Error, HandoffPage, PageMode, PutReply, PutRequest};

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer could not be reached (refused, reset, no route).
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The peer did not answer before the deadline.
    #[error("peer {addr} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// The deadline.
        timeout_ms: u64,
    },
    /// The peer answered with an error.
    #[error("peer {addr}: {error}")]
    Remote {
        /// The peer's address.
        addr: String,
        /// Its error.
        error: Error,
    },
}

impl From<TransportError> for Error {
    /// A forwarded request's failure, as the client sees it: the coordinator's own error
    /// when it answered, else the transport's.
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::Remote { error, .. } => error,
            TransportError::Timeout { .. } => Self::Timeout(error.to_string()),
            TransportError::Unreachable { .. } => Self::Unavailable(error.to_string()),
        }
    }
}

/// Calls to peers, by address.
///
/// # Contract
///
/// A call either returns the peer's reply or an error within the implementation's
/// deadline (`rpc.peer_timeout_ms`); implementations keep one connection per peer open
/// and reuse it for concurrent calls, and reconnect after a failure.
///
/// # Cancel safety
///
/// Dropping a call abandons it; the peer may still have acted on the request. The
/// coordinator therefore drives replica writes to completion even after its quorum.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// One gossip exchange step with the node at `addr`.
    async fn gossip(
        &self,
        addr: &str,
        request: GossipRequest,
    ) -> Result<GossipResponse, TransportError>;

    /// Asks the replica at `addr` to merge `object` (an encoded [`Object`](crate::Object))
    /// into what it holds for `key`. `Ok` means it is stored (durably when the peer syncs).
    async fn write_replica(
        &self,
        addr: &str,
        key: Bytes,
        object: Bytes,
    ) -> Result<(), TransportError>;

    /// Reads what the replica at `addr` holds for `key`: an encoded object, or `None`.
    async fn read_replica(&self, addr: &str, key: Bytes) -> Result<Option<Bytes>, TransportError>;

    /// The digest ([`object_digest`](dotkv_merkle::object_digest)) of what the replica at
    /// `addr` holds for `key`, or `None`: what a read asks of replicas whose object it does
    /// not need, since equal states encode to equal bytes.
    async fn read_digest(&self, addr: &str, key: Bytes) -> Result<Option<u64>, TransportError>;

    /// Hands a client's write to the node at `addr`, a member of the key's preference
    /// list, to coordinate (`request.forwarded` is set).
    async fn forward_put(
        &self,
        addr: &str,
        request: PutRequest,
    ) -> Result<PutReply, TransportError>;

    /// A page of `partition` after `after` from the node at `addr` (ownership handoff's
    /// receiving side pulls with it).
    async fn handoff_page(
        &self,
        addr: &str,
        partition: u32,
        after: Option<Bytes>,
        mode: PageMode,
    ) -> Result<HandoffPage, TransportError>;

    /// Which of the offered `(key, object digest)` pairs of `partition` the node at `addr`
    /// lacks or holds differently (indices into `offered`).
    async fn wanted(
        &self,
        addr: &str,
        partition: u32,
        offered: Vec<(Bytes, u64)>,
    ) -> Result<Vec<u32>, TransportError>;

    /// Merges handed-off objects into the node at `addr` (an old owner handing off a
    /// partition before it drops it).
    async fn push_partition(
        &self,
        addr: &str,
        partition: u32,
        entries: Vec<(Bytes, Bytes)>,
    ) -> Result<(), TransportError>;

    /// Asks the node at `addr`, a fallback, to keep `object` for `target`, an owner the
    /// coordinator could not reach (hinted handoff). `Ok` means it is stored.
    async fn write_hint(
        &self,
        addr: &str,
        target: String,
        key: Bytes,
        object: Bytes,
    ) -> Result<(), TransportError>;

    /// The hints the node at `addr` holds for `key`, by target.
    async fn read_hints(
        &self,
        addr: &str,
        key: Bytes,
    ) -> Result<Vec<(String, Bytes)>, TransportError>;

    /// Anti-entropy: the branch hashes of the tree of `partition` at `addr` (`branches`
    /// empty), or the leaf hashes of `branches`; `None` while that tree is not built.
    async fn aae_tree(
        &self,
        addr: &str,
        partition: u32,
        branches: Vec<u32>,
    ) -> Result<Option<Vec<u64>>, TransportError>;

    /// Anti-entropy: `(key, object digest)` of every key the node at `addr` holds in
    /// `leaves` of `partition`.
    async fn aae_keys(
        &self,
        addr: &str,
        partition: u32,
        leaves: Vec<u32>,
    ) -> Result<Vec<(Bytes, u64)>, TransportError>;

    /// Anti-entropy repair: the node at `addr` merges each sent object and answers its own
    /// object for the keys where it holds something the sender lacks.
    async fn aae_sync(
        &self,
        addr: &str,
        partition: u32,
        objects: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<(Bytes, Bytes)>, TransportError>;
}
