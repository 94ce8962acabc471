//! The peer transport: how a node talks to another, whatever the wire.

use std::fmt;

use async_trait::async_trait;
use dotkv_membership::{GossipRequest, GossipResponse};

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
}

/// Calls to peers, by address.
///
/// # Contract
///
/// A call either returns the peer's reply or an error within the implementation's
/// deadline; implementations keep connections open and reuse them, and reconnect after a
/// failure.
///
/// # Cancel safety
///
/// Dropping a call abandons it; the peer may still have acted on the request.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// One gossip exchange step with the node at `addr`.
    async fn gossip(
        &self,
        addr: &str,
        request: GossipRequest,
    ) -> Result<GossipResponse, TransportError>;
}
