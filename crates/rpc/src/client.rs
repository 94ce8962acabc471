//! Calling nodes: the Rust client library and the peer [`Transport`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::conn::{DialError, dial};
use crate::security::Connector;
use crate::server::{UNAUTHORIZED, framed};
use crate::service::{NodeServiceClient, RingReply, StatusReply};
use async_trait::async_trait;
use bytes::Bytes;
use dotkv_membership::{GossipRequest, GossipResponse};
use dotkv_replication::{
    AaeView, Error, GetReply, GetRequest, HandoffPage, PageMode, PutReply, PutRequest,
    ReplicasReply, Transport, TransportError,
};
use tarpc::client::RpcError as TarpcError;
use tarpc::context::Context;
use tarpc::tokio_serde::formats::Bincode;

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
    /// The request was refused before it was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The node refused the credentials, or the call needs more than they grant.
    #[error("unauthorized by {addr}: {reason}")]
    Unauthorized {
        /// The node's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{error}")]
    Remote {
        /// The node's address.
        addr: String,
        /// Its error.
        error: Error,
    },
}

impl RpcError {
    /// The contract's error kind: `invalid_argument`, `quorum_not_reached`, `timeout`,
    /// `unavailable`, `unauthorized` or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Timeout { .. } => "timeout",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Remote { error, .. } => error.kind(),
        }
    }
}

impl From<RpcError> for TransportError {
    fn from(error: RpcError) -> Self {
        match error {
            RpcError::Unavailable { addr, reason } => Self::Unreachable { addr, reason },
            // A peer that refuses this node is, to replication, a peer it cannot use.
            RpcError::Unauthorized { addr, reason } => Self::Unreachable {
                addr,
                reason: format!("unauthorized: {reason}"),
            },
            RpcError::Timeout { addr, timeout_ms } => Self::Timeout { addr, timeout_ms },
            RpcError::Remote { addr, error } => Self::Remote { addr, error },
            RpcError::InvalidArgument(reason) => Self::Remote {
                addr: String::new(),
                error: Error::InvalidArgument(reason),
            },
        }
    }
}

/// A connection to one node: one multiplexed TCP connection that concurrent calls share.
///
/// ```no_run
/// # async fn example() -> Result<(), dotkv_rpc::RpcError> {
/// use std::time::Duration;
/// let client = dotkv_rpc::Client::connect("127.0.0.1:7001", Duration::from_secs(5)).await?;
/// client.put("greeting", "hello", None).await?;
/// let read = client.get("greeting").await?;
/// assert_eq!(read.values, vec![bytes::Bytes::from("hello")]);
/// // Replace exactly what that read saw:
/// client.put("greeting", "hello again", Some(&read.context)).await?;
/// client.delete("greeting", None).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: NodeServiceClient,
    addr: String,
    timeout: Duration,
    /// The largest frame the connection carries; a longer request is refused here with a
    /// clear error instead of being cut off by the node.
    max_frame_bytes: usize,
}

impl Client {
    /// Connects to the node at `addr`; every call gets `timeout` as its deadline.
    ///
    /// # Errors
    ///
    /// [`RpcError::Unavailable`] when the connection fails, [`RpcError::Timeout`] when it
    /// takes longer than `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, RpcError> {
        Self::connect_with(addr, timeout, &Connector::plaintext()).await
    }

    /// [`connect`](Self::connect) as `connector` says: TLS, a token, a frame limit.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`RpcError::Unauthorized`] when the node refuses
    /// the credentials.
    pub async fn connect_with(
        addr: &str,
        timeout: Duration,
        connector: &Connector,
    ) -> Result<Self, RpcError> {
        let max_frame_bytes = connector.max_frame_bytes;
        let stream = tokio::time::timeout(timeout, dial(addr, connector))
            .await
            .map_err(|_| RpcError::Timeout {
                addr: addr.into(),
                timeout_ms: millis(timeout),
            })?
            .map_err(|e| match e {
                DialError::Unreachable(reason) => RpcError::Unavailable {
                    addr: addr.into(),
                    reason,
                },
                DialError::Refused(reason) => RpcError::Unauthorized {
                    addr: addr.into(),
                    reason,
                },
            })?;
        let transport =
            tarpc::serde_transport::new(framed(stream, max_frame_bytes), Bincode::default());
        let inner = NodeServiceClient::new(tarpc::client::Config::default(), transport).spawn();
        Ok(Self {
            inner,
            addr: addr.into(),
            timeout,
            max_frame_bytes,
        })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
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
            // tarpc carries a refusal's kind unreliably across its own encoding: the
            // detail's prefix says it.
            TarpcError::Server(error) if error.detail.starts_with(UNAUTHORIZED) => {
                RpcError::Unauthorized {
                    addr: self.addr.clone(),
                    reason: error.detail[UNAUTHORIZED.len()..].to_owned(),
                }
            }
            other => RpcError::Unavailable {
                addr: self.addr.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// Awaits a call whose reply is itself a result, folding both failures into one.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<Result<T, Error>, TarpcError>>,
    ) -> Result<T, RpcError> {
        match call.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(RpcError::Remote {
                addr: self.addr.clone(),
                error,
            }),
            Err(error) => Err(self.error(error)),
        }
    }

    /// Reads `key` with the node's default R.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<GetReply, RpcError> {
        self.get_with(GetRequest::new(key)).await
    }

    /// Reads a key with the request's options.
    pub async fn get_with(&self, request: GetRequest) -> Result<GetReply, RpcError> {
        self.call(self.inner.get(self.context(), request)).await
    }

    /// Writes `value` under `key`, superseding what `context` (from a read) covers.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        context: Option<&str>,
    ) -> Result<PutReply, RpcError> {
        let mut request = PutRequest::new(key, value);
        request.context = context.map(str::to_owned);
        self.put_with(request).await
    }

    /// Deletes `key` (a tombstone superseding what `context` covers).
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        context: Option<&str>,
    ) -> Result<PutReply, RpcError> {
        let mut request = PutRequest::delete(key);
        request.context = context.map(str::to_owned);
        self.put_with(request).await
    }

    /// A write or delete with the request's options.
    pub async fn put_with(&self, request: PutRequest) -> Result<PutReply, RpcError> {
        self.put_within(request, self.timeout).await
    }

    /// [`put_with`](Self::put_with) with `timeout` as this call's deadline.
    pub async fn put_within(
        &self,
        request: PutRequest,
        timeout: Duration,
    ) -> Result<PutReply, RpcError> {
        let size = request.key.len() + request.value.as_ref().map_or(0, |v| v.len());
        // The envelope (context, options, tarpc's framing) fits in a few KiB.
        if size + ENVELOPE_BYTES > self.max_frame_bytes {
            return Err(RpcError::InvalidArgument(format!(
                "a request of {size} bytes exceeds the frame limit of {} bytes (rpc.max_frame_bytes)",
                self.max_frame_bytes
            )));
        }
        let mut context = tarpc::context::current();
        context.deadline = Instant::now() + timeout;
        match self.inner.put(context, request).await {
            Err(TarpcError::DeadlineExceeded) => Err(RpcError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: millis(timeout),
            }),
            result => self.call(async { result }).await,
        }
    }

    /// What each replica of `key` holds now (no repair).
    pub async fn replicas(&self, key: impl Into<Bytes>) -> Result<ReplicasReply, RpcError> {
        self.call(self.inner.replicas(self.context(), key.into()))
            .await
    }

    /// Sends `payload` to the node and back (no storage, no replication).
    pub async fn ping(&self, payload: Bytes) -> Result<Bytes, RpcError> {
        self.inner
            .ping(self.context(), payload)
            .await
            .map_err(|e| self.error(e))
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

    /// Merges an object into the node's replica (peers).
    pub async fn write_replica(&self, key: Bytes, object: Bytes) -> Result<(), RpcError> {
        self.call(self.inner.write_replica(self.context(), key, object))
            .await
    }

    /// The node's replica of a key (peers).
    pub async fn read_replica(&self, key: Bytes) -> Result<Option<Bytes>, RpcError> {
        self.call(self.inner.read_replica(self.context(), key))
            .await
    }

    /// The digest of the node's replica of a key (peers).
    pub async fn read_digest(&self, key: Bytes) -> Result<Option<u64>, RpcError> {
        self.call(self.inner.read_digest(self.context(), key)).await
    }

    /// A page of a partition (peers: ownership handoff).
    pub async fn handoff_page(
        &self,
        partition: u32,
        after: Option<Bytes>,
        mode: PageMode,
    ) -> Result<HandoffPage, RpcError> {
        self.call(
            self.inner
                .handoff_page(self.context(), partition, after, mode),
        )
        .await
    }

    /// Which offered `(key, digest)` pairs of a partition the node lacks (peers).
    pub async fn wanted(
        &self,
        partition: u32,
        offered: Vec<(Bytes, u64)>,
    ) -> Result<Vec<u32>, RpcError> {
        self.call(self.inner.wanted(self.context(), partition, offered))
            .await
    }

    /// Merges handed-off objects of a partition into the node (peers).
    pub async fn push_partition(
        &self,
        partition: u32,
        entries: Vec<(Bytes, Bytes)>,
    ) -> Result<(), RpcError> {
        self.call(
            self.inner
                .push_partition(self.context(), partition, entries),
        )
        .await
    }

    /// Asks the node, a fallback, to keep `object` for `target` (peers: hinted handoff).
    pub async fn write_hint(
        &self,
        target: String,
        key: Bytes,
        object: Bytes,
    ) -> Result<(), RpcError> {
        self.call(self.inner.write_hint(self.context(), target, key, object))
            .await
    }

    /// The hints the node keeps for `key`, by target (peers).
    pub async fn read_hints(&self, key: Bytes) -> Result<Vec<(String, Bytes)>, RpcError> {
        self.call(self.inner.read_hints(self.context(), key)).await
    }

    /// The node's anti-entropy: trees, exchanges, repairs, reaped tombstones.
    pub async fn aae(&self) -> Result<AaeView, RpcError> {
        self.inner
            .aae(self.context())
            .await
            .map_err(|e| self.error(e))
    }

    /// Anti-entropy: branch or leaf hashes of a partition's tree (peers).
    pub async fn aae_tree(
        &self,
        partition: u32,
        branches: Vec<u32>,
    ) -> Result<Option<Vec<u64>>, RpcError> {
        self.inner
            .aae_tree(self.context(), partition, branches)
            .await
            .map_err(|e| self.error(e))
    }

    /// Anti-entropy: `(key, digest)` of the keys in leaves of a partition (peers).
    pub async fn aae_keys(
        &self,
        partition: u32,
        leaves: Vec<u32>,
    ) -> Result<Vec<(Bytes, u64)>, RpcError> {
        self.call(self.inner.aae_keys(self.context(), partition, leaves))
            .await
    }

    /// Anti-entropy repair (peers).
    pub async fn aae_sync(
        &self,
        partition: u32,
        objects: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<(Bytes, Bytes)>, RpcError> {
        self.call(self.inner.aae_sync(self.context(), partition, objects))
            .await
    }

    /// Makes the node, alone in its cluster and empty, join the cluster of `seed`.
    pub async fn join(&self, seed: &str) -> Result<(), RpcError> {
        self.call(self.inner.join(self.context(), seed.to_owned()))
            .await
    }

    /// Makes the node leave the cluster (it exits once its data lives elsewhere).
    pub async fn leave(&self) -> Result<(), RpcError> {
        self.call(self.inner.leave(self.context())).await
    }

    /// Removes member `id`, dead for good; its replicas are rebuilt from the survivors.
    pub async fn remove(&self, id: &str) -> Result<(), RpcError> {
        self.call(self.inner.remove(self.context(), id.to_owned()))
            .await
    }
}

/// Room for a request's envelope within a frame.
const ENVELOPE_BYTES: usize = 32 << 10;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The first wait before reconnecting to a peer whose connection failed.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// What the transport knows of one peer.
#[derive(Debug)]
enum Peer {
    /// An open connection, shared by every call.
    Connected(Client),
    /// The last connection attempt failed: calls fail at once until `retry_at`, so that a
    /// dead peer costs neither a connect per request nor a wait.
    Backoff {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// The peer [`Transport`] over tarpc: one long-lived connection per peer, multiplexed by
/// every concurrent call; after a failure it reconnects, with exponential backoff while
/// the peer stays unreachable.
#[derive(Debug)]
pub struct TarpcTransport {
    /// Peers by address. A std mutex: held only to look up or replace an entry.
    peers: Mutex<HashMap<String, Peer>>,
    timeout: Duration,
    /// How peers are dialed: this node's certificate, the frame limit.
    connector: Connector,
}

impl TarpcTransport {
    /// A transport whose calls have `timeout` as deadline and dial as `connector` says.
    pub fn new(timeout: Duration, connector: Connector) -> Self {
        Self {
            peers: Mutex::new(HashMap::new()),
            timeout,
            connector,
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Peer>> {
        self.peers.lock().expect("peer map poisoned")
    }

    /// The connection to `addr`, and whether it was opened by this call.
    async fn client(&self, addr: &str) -> Result<(Client, bool), RpcError> {
        let previous_backoff = match self.peers().get(addr) {
            Some(Peer::Connected(client)) => return Ok((client.clone(), false)),
            Some(Peer::Backoff { retry_at, backoff }) => {
                if let Some(left) = retry_at.checked_duration_since(Instant::now()) {
                    return Err(RpcError::Unavailable {
                        addr: addr.into(),
                        reason: format!(
                            "unreachable at the last attempt; next try in {} ms",
                            left.as_millis()
                        ),
                    });
                }
                Some(*backoff)
            }
            None => None,
        };
        match Client::connect_with(addr, self.timeout, &self.connector).await {
            Ok(client) => {
                let mut peers = self.peers();
                // Another call may have connected meanwhile: keep one connection.
                if let Some(Peer::Connected(existing)) = peers.get(addr) {
                    return Ok((existing.clone(), false));
                }
                peers.insert(addr.into(), Peer::Connected(client.clone()));
                Ok((client, true))
            }
            Err(error) => {
                let backoff = previous_backoff.map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                self.peers().insert(
                    addr.into(),
                    Peer::Backoff {
                        retry_at: Instant::now() + backoff,
                        backoff,
                    },
                );
                Err(error)
            }
        }
    }

    /// Runs one call on `addr`'s connection. A broken connection is dropped so that the
    /// next call reconnects; a timeout keeps it (a slow peer is not a dead connection).
    ///
    /// A kept connection can be dead without anyone knowing (the peer restarted since the
    /// last call): when a call on a connection that this call did not open fails that way,
    /// it is made once more on a fresh connection. Only idempotent calls may pass
    /// `retry` (a replica merge or read, a gossip step).
    async fn call<T, F, Fut>(&self, addr: &str, retry: bool, call: F) -> Result<T, TransportError>
    where
        F: Fn(Client) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, RpcError>> + Send,
    {
        let (client, fresh) = self.client(addr).await?;
        let mut result = call(client).await;
        if let Err(RpcError::Unavailable { .. }) = &result {
            self.drop_connection(addr);
            if retry && !fresh {
                let (client, _) = self.client(addr).await?;
                result = call(client).await;
                if let Err(RpcError::Unavailable { .. }) = &result {
                    self.drop_connection(addr);
                }
            }
        }
        result.map_err(TransportError::from)
    }

    fn drop_connection(&self, addr: &str) {
        let mut peers = self.peers();
        if let Some(Peer::Connected(_)) = peers.get(addr) {
            peers.remove(addr);
        }
    }
}

#[async_trait]
impl Transport for TarpcTransport {
    async fn gossip(
        &self,
        addr: &str,
        request: GossipRequest,
    ) -> Result<GossipResponse, TransportError> {
        self.call(addr, true, |client| {
            let request = request.clone();
            async move { client.gossip(request).await }
        })
        .await
    }

    async fn write_replica(
        &self,
        addr: &str,
        key: Bytes,
        object: Bytes,
    ) -> Result<(), TransportError> {
        // A merge is idempotent: sending it twice stores it once.
        self.call(addr, true, |client| {
            let (key, object) = (key.clone(), object.clone());
            async move { client.write_replica(key, object).await }
        })
        .await
    }

    async fn read_replica(&self, addr: &str, key: Bytes) -> Result<Option<Bytes>, TransportError> {
        self.call(addr, true, |client| {
            let key = key.clone();
            async move { client.read_replica(key).await }
        })
        .await
    }

    async fn read_digest(&self, addr: &str, key: Bytes) -> Result<Option<u64>, TransportError> {
        self.call(addr, true, |client| {
            let key = key.clone();
            async move { client.read_digest(key).await }
        })
        .await
    }

    async fn forward_put(
        &self,
        addr: &str,
        request: PutRequest,
    ) -> Result<PutReply, TransportError> {
        // Not retried: a write coordinated twice would be two siblings. The forwarding
        // node tries the next owner instead.
        // The client's remaining deadline, less a margin for the answer to travel back.
        let timeout = request.deadline_ms.map_or(self.timeout, |left| {
            Duration::from_millis(left.saturating_sub(50).max(100))
        });
        self.call(addr, false, |client| {
            let request = request.clone();
            async move { client.put_within(request, timeout).await }
        })
        .await
    }

    async fn handoff_page(
        &self,
        addr: &str,
        partition: u32,
        after: Option<Bytes>,
        mode: PageMode,
    ) -> Result<HandoffPage, TransportError> {
        self.call(addr, true, |client| {
            let after = after.clone();
            async move { client.handoff_page(partition, after, mode).await }
        })
        .await
    }

    async fn wanted(
        &self,
        addr: &str,
        partition: u32,
        offered: Vec<(Bytes, u64)>,
    ) -> Result<Vec<u32>, TransportError> {
        self.call(addr, true, |client| {
            let offered = offered.clone();
            async move { client.wanted(partition, offered).await }
        })
        .await
    }

    async fn push_partition(
        &self,
        addr: &str,
        partition: u32,
        entries: Vec<(Bytes, Bytes)>,
    ) -> Result<(), TransportError> {
        // Merges are idempotent: a retried push stores each object once.
        self.call(addr, true, |client| {
            let entries = entries.clone();
            async move { client.push_partition(partition, entries).await }
        })
        .await
    }

    async fn write_hint(
        &self,
        addr: &str,
        target: String,
        key: Bytes,
        object: Bytes,
    ) -> Result<(), TransportError> {
        // A hint merge is idempotent too.
        self.call(addr, true, |client| {
            let (target, key, object) = (target.clone(), key.clone(), object.clone());
            async move { client.write_hint(target, key, object).await }
        })
        .await
    }

    async fn read_hints(
        &self,
        addr: &str,
        key: Bytes,
    ) -> Result<Vec<(String, Bytes)>, TransportError> {
        self.call(addr, true, |client| {
            let key = key.clone();
            async move { client.read_hints(key).await }
        })
        .await
    }

    async fn aae_tree(
        &self,
        addr: &str,
        partition: u32,
        branches: Vec<u32>,
    ) -> Result<Option<Vec<u64>>, TransportError> {
        self.call(addr, true, |client| {
            let branches = branches.clone();
            async move { client.aae_tree(partition, branches).await }
        })
        .await
    }

    async fn aae_keys(
        &self,
        addr: &str,
        partition: u32,
        leaves: Vec<u32>,
    ) -> Result<Vec<(Bytes, u64)>, TransportError> {
        self.call(addr, true, |client| {
            let leaves = leaves.clone();
            async move { client.aae_keys(partition, leaves).await }
        })
        .await
    }

    async fn aae_sync(
        &self,
        addr: &str,
        partition: u32,
        objects: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<(Bytes, Bytes)>, TransportError> {
        // Merges are idempotent: a retried repair changes nothing more.
        self.call(addr, true, |client| {
            let objects = objects.clone();
            async move { client.aae_sync(partition, objects).await }
        })
        .await
    }
}

/// A client of several nodes: calls go to one, and move to the next when it does not
/// answer (refused, reset, or no connection within the deadline). What the CLI's
/// `--node a,b,c` uses.
///
/// Only calls that did not reach a node are retried elsewhere; a call that timed out may
/// have been applied, so its error is returned (a retried write without a context would
/// add a sibling).
///
/// ```no_run
/// # async fn example() -> Result<(), dotkv_rpc::RpcError> {
/// use std::time::Duration;
/// let nodes = ["127.0.0.1:7001".to_owned(), "127.0.0.1:7002".to_owned()];
/// let client = dotkv_rpc::FailoverClient::new(&nodes, Duration::from_secs(5))?;
/// let read = client.call(|c| async move { c.get("greeting").await }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FailoverClient {
    addrs: Vec<String>,
    timeout: Duration,
    connector: Connector,
    /// The node answering now, by index into `addrs`, and its connection. A std mutex:
    /// held to read or replace it.
    current: Mutex<Option<(usize, Client)>>,
}

impl FailoverClient {
    /// A client of `addrs`, tried in order; every call gets `timeout` as its deadline.
    ///
    /// # Errors
    ///
    /// [`RpcError::InvalidArgument`] for an empty list.
    pub fn new(addrs: &[String], timeout: Duration) -> Result<Self, RpcError> {
        Self::with_connector(addrs, timeout, Connector::plaintext())
    }

    /// [`new`](Self::new), dialing as `connector` says (TLS, a token).
    ///
    /// # Errors
    ///
    /// [`RpcError::InvalidArgument`] for an empty list.
    pub fn with_connector(
        addrs: &[String],
        timeout: Duration,
        connector: Connector,
    ) -> Result<Self, RpcError> {
        if addrs.is_empty() {
            return Err(RpcError::InvalidArgument("no node address given".into()));
        }
        Ok(Self {
            addrs: addrs.to_vec(),
            timeout,
            connector,
            current: Mutex::new(None),
        })
    }

    /// The address of the node answering now (the first one before any call).
    pub fn addr(&self) -> String {
        let current = self.current.lock().expect("failover state poisoned");
        let at = current.as_ref().map_or(0, |(at, _)| *at);
        self.addrs[at].clone()
    }

    /// Runs `call` on the node answering now; when it cannot be reached, on the next
    /// nodes in turn.
    ///
    /// # Errors
    ///
    /// The call's error, or the last node's when none could be reached.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, RpcError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let start = self
            .current
            .lock()
            .expect("failover state poisoned")
            .as_ref()
            .map_or(0, |(at, _)| *at);
        let mut last = None;
        for step in 0..self.addrs.len() {
            let at = (start + step) % self.addrs.len();
            let cached = self
                .current
                .lock()
                .expect("failover state poisoned")
                .as_ref()
                .filter(|(i, _)| *i == at)
                .map(|(_, client)| client.clone());
            let client = match cached {
                Some(client) => client,
                None => match Client::connect_with(&self.addrs[at], self.timeout, &self.connector)
                    .await
                {
                    Ok(client) => client,
                    Err(error) => {
                        tracing::debug!(%error, "node unreachable; trying the next");
                        last = Some(error);
                        continue;
                    }
                },
            };
            match call(client.clone()).await {
                Err(error @ RpcError::Unavailable { .. }) => {
                    tracing::debug!(%error, "node unreachable; trying the next");
                    *self.current.lock().expect("failover state poisoned") = None;
                    last = Some(error);
                }
                result => {
                    *self.current.lock().expect("failover state poisoned") = Some((at, client));
                    return result;
                }
            }
        }
        Err(last.expect("at least one address was tried"))
    }
}
