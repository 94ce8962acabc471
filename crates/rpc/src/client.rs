//! Calling nodes: the peer [`Transport`] and the client library.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dotkv_membership::{GossipRequest, GossipResponse};
use dotkv_replication::{Transport, TransportError};
use tarpc::client::RpcError as TarpcError;
use tarpc::context::Context;
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::TcpStream;

use crate::server::framed;
use crate::service::{NodeClient, RingReply, StatusReply};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The node could not be reached or the connection broke.
    #[error("cannot reach {addr}: {reason}")]
    Unavailable {
        /// The node's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// No answer before the deadline.
    #[error("{addr} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The node's address.
        addr: String,
        /// The deadline.
        timeout_ms: u64,
    },
}

impl From<RpcError> for TransportError {
    fn from(error: RpcError) -> Self {
        match error {
            RpcError::Unavailable { addr, reason } => Self::Unreachable { addr, reason },
            RpcError::Timeout { addr, timeout_ms } => Self::Timeout { addr, timeout_ms },
        }
    }
}

/// A connection to one node.
///
/// ```no_run
/// # async fn example() -> Result<(), dotkv_rpc::RpcError> {
/// use std::time::Duration;
/// let client = dotkv_rpc::Client::connect("127.0.0.1:7001", Duration::from_secs(5)).await?;
/// for node in client.status().await?.nodes {
///     println!("{} {} {}", node.id, node.addr, node.status);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: NodeClient,
    addr: String,
    timeout: Duration,
}

impl Client {
    /// Connects to the node at `addr`; every call gets `timeout` as its deadline.
    ///
    /// # Errors
    ///
    /// [`RpcError::Unavailable`] when the connection fails, [`RpcError::Timeout`] when it
    /// takes longer than `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, RpcError> {
        Self::connect_with(addr, timeout, crate::DEFAULT_MAX_FRAME_BYTES).await
    }

    /// [`connect`](Self::connect) with a frame limit.
    pub async fn connect_with(
        addr: &str,
        timeout: Duration,
        max_frame_bytes: usize,
    ) -> Result<Self, RpcError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| RpcError::Timeout {
                addr: addr.into(),
                timeout_ms: millis(timeout),
            })?
            .map_err(|e| RpcError::Unavailable {
                addr: addr.into(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let transport =
            tarpc::serde_transport::new(framed(stream, max_frame_bytes), Bincode::default());
        let inner = NodeClient::new(tarpc::client::Config::default(), transport).spawn();
        Ok(Self {
            inner,
            addr: addr.into(),
            timeout,
        })
    }

    fn context(&self) -> Context {
        let mut context = tarpc::context::current();
        context.deadline = Instant::now() + self.timeout;
        context
    }

    fn error(&self, error: TarpcError) -> RpcError {
        match error {
            TarpcError::DeadlineExceeded => RpcError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: millis(self.timeout),
            },
            other => RpcError::Unavailable {
                addr: self.addr.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// The members and their liveness as the node sees them.
    pub async fn status(&self) -> Result<StatusReply, RpcError> {
        self.inner
            .status(self.context())
            .await
            .map_err(|e| self.error(e))
    }

    /// The node's ring.
    pub async fn ring(&self) -> Result<RingReply, RpcError> {
        self.inner
            .ring(self.context())
            .await
            .map_err(|e| self.error(e))
    }

    /// A gossip step (peers).
    pub async fn gossip(&self, request: GossipRequest) -> Result<GossipResponse, RpcError> {
        self.inner
            .gossip(self.context(), request)
            .await
            .map_err(|e| self.error(e))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The peer [`Transport`] over tarpc: one connection per peer, kept open and reused,
/// dropped after a failure so that the next call reconnects.
#[derive(Debug)]
pub struct TarpcTransport {
    /// Open connections by address. A std mutex: held only to clone or insert a client.
    clients: Mutex<HashMap<String, Client>>,
    timeout: Duration,
    max_frame_bytes: usize,
}

impl TarpcTransport {
    /// A transport whose calls have `timeout` as deadline.
    pub fn new(timeout: Duration, max_frame_bytes: usize) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            timeout,
            max_frame_bytes,
        }
    }

    async fn client(&self, addr: &str) -> Result<Client, RpcError> {
        if let Some(client) = self.clients.lock().expect("client map poisoned").get(addr) {
            return Ok(client.clone());
        }
        let client = Client::connect_with(addr, self.timeout, self.max_frame_bytes).await?;
        self.clients
            .lock()
            .expect("client map poisoned")
            .insert(addr.into(), client.clone());
        Ok(client)
    }

    fn forget(&self, addr: &str) {
        self.clients
            .lock()
            .expect("client map poisoned")
            .remove(addr);
    }
}

#[async_trait]
impl Transport for TarpcTransport {
    async fn gossip(
        &self,
        addr: &str,
        request: GossipRequest,
    ) -> Result<GossipResponse, TransportError> {
        let client = self.client(addr).await?;
        match client.gossip(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                self.forget(addr);
                Err(error.into())
            }
        }
    }
}
