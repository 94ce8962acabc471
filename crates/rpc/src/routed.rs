//! The token-aware client: it learns the ring from any node and sends each key's request
//! to a healthy owner of the key, so that no node forwards it (one hop fewer for writes on
//! clusters larger than N, and reads whose coordinator holds a replica).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dotkv_replication::{GetReply, GetRequest, PutReply, PutRequest};

use crate::{Client, Connector, RpcError};

/// How long an address that could not be reached is tried last.
const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

/// A client that routes each key to an owner, by the ring it learned.
///
/// Requests go to the first owner of the key's partition (in preference order) that is
/// not known to be down; when that node cannot be reached, the next owner, then any other
/// member, then the seeds. A reply that carries a newer ring version than the client's
/// makes it fetch the ring again (one `ring` and one `status` call). Only calls that did
/// not reach a node are retried elsewhere, as with [`FailoverClient`](crate::FailoverClient).
///
/// ```no_run
/// # async fn example() -> Result<(), dotkv_rpc::RpcError> {
/// use std::time::Duration;
/// let seeds = ["127.0.0.1:7001".to_owned()];
/// let client = dotkv_rpc::TokenAwareClient::connect(&seeds, Duration::from_secs(5)).await?;
/// let read = client.get_with(dotkv_replication::GetRequest::new("greeting")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TokenAwareClient {
    seeds: Vec<String>,
    timeout: Duration,
    connector: Connector,
    /// The ring as last learned; replaced whole on a refresh. A std lock: held to clone
    /// the `Arc`, never across an `.await`.
    view: RwLock<Arc<RingView>>,
    /// One multiplexed connection per node, by address.
    connections: Mutex<HashMap<Arc<str>, Client>>,
    /// Addresses that could not be reached, and when.
    unreachable: Mutex<HashMap<Arc<str>, Instant>>,
    /// Set while one request refreshes the ring (the others go on with the old one).
    refreshing: AtomicBool,
}

/// The ring as a client needs it: each partition's owners' addresses.
#[derive(Debug, Default)]
struct RingView {
    version: u64,
    /// log2 of the partition count.
    bits: u32,
    /// Each partition's owners' addresses, in preference order.
    owners: Vec<Vec<Arc<str>>>,
    /// Every member not known to be down or gone, in id order.
    members: Vec<Arc<str>>,
}

impl TokenAwareClient {
    /// Learns the ring from the first of `seeds` that answers; every call gets `timeout`
    /// as its deadline.
    ///
    /// # Errors
    ///
    /// [`RpcError::InvalidArgument`] for an empty list; the last seed's error when none
    /// answers.
    pub async fn connect(seeds: &[String], timeout: Duration) -> Result<Self, RpcError> {
        Self::connect_with(seeds, timeout, Connector::plaintext()).await
    }

    /// [`connect`](Self::connect), dialing as `connector` says (TLS, a token).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(
        seeds: &[String],
        timeout: Duration,
        connector: Connector,
    ) -> Result<Self, RpcError> {
        if seeds.is_empty() {
            return Err(RpcError::InvalidArgument("no node address given".into()));
        }
        let client = Self {
            seeds: seeds.to_vec(),
            timeout,
            connector,
            view: RwLock::new(Arc::default()),
            connections: Mutex::default(),
            unreachable: Mutex::default(),
            refreshing: AtomicBool::new(false),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// The version of the ring the client routes by (0 before the cluster has one).
    pub fn ring_version(&self) -> u64 {
        self.view().version
    }

    /// Reads a key at one of its owners.
    ///
    /// # Errors
    ///
    /// As [`Client::get_with`]; [`RpcError::Unavailable`] when no node could be reached.
    pub async fn get_with(&self, request: GetRequest) -> Result<GetReply, RpcError> {
        let key = request.key.clone();
        let reply = self
            .call_for(&key, |client| {
                let request = request.clone();
                async move { client.get_with(request).await }
            })
            .await?;
        self.saw_version(reply.ring_version).await;
        Ok(reply)
    }

    /// Writes or deletes a key at one of its owners.
    ///
    /// # Errors
    ///
    /// As [`Client::put_with`]; [`RpcError::Unavailable`] when no node could be reached.
    pub async fn put_with(&self, request: PutRequest) -> Result<PutReply, RpcError> {
        let key = request.key.clone();
        let reply = self
            .call_for(&key, |client| {
                let request = request.clone();
                async move { client.put_with(request).await }
            })
            .await?;
        self.saw_version(reply.ring_version).await;
        Ok(reply)
    }

    /// Runs `call` on the nodes `key` should go to, in turn, until one is reached.
    ///
    /// # Errors
    ///
    /// The call's error, or the last node's when none could be reached.
    pub async fn call_for<T, F, Fut>(&self, key: &[u8], call: F) -> Result<T, RpcError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        // The common case: the key's first reachable owner, connected already.
        let view = self.view();
        if let Some(owner) = view.first_owner(key, |addr| !self.recently_unreachable(addr)) {
            let cached = self.cached(owner);
            if let Some(client) = cached {
                match call(client).await {
                    Err(error @ RpcError::Unavailable { .. }) => {
                        tracing::debug!(%error, "node unreachable; trying the next");
                        self.mark_unreachable(owner);
                    }
                    result => return result,
                }
            }
        }
        let mut last = None;
        for addr in self.candidates(key) {
            let client = match self.connection(&addr).await {
                Ok(client) => client,
                Err(error) => {
                    self.mark_unreachable(&addr);
                    last = Some(error);
                    continue;
                }
            };
            match call(client).await {
                Err(error @ RpcError::Unavailable { .. }) => {
                    tracing::debug!(%error, "node unreachable; trying the next");
                    self.mark_unreachable(&addr);
                    last = Some(error);
                }
                result => return result,
            }
        }
        Err(last.unwrap_or_else(|| RpcError::Unavailable {
            addr: self.seeds.join(","),
            reason: "no node to send the request to".into(),
        }))
    }

    fn view(&self) -> Arc<RingView> {
        Arc::clone(&self.view.read().expect("ring view poisoned"))
    }

    /// Where a request for `key` goes, in order: its owners, the other members, the
    /// seeds; addresses recently unreachable last.
    fn candidates(&self, key: &[u8]) -> Vec<Arc<str>> {
        let view = self.view();
        let mut order: Vec<Arc<str>> = Vec::with_capacity(view.members.len() + self.seeds.len());
        let partition = dotkv_ring::partition_of(dotkv_ring::key_hash(key), view.bits);
        if let Some(owners) = view.owners.get(partition as usize) {
            order.extend(owners.iter().cloned());
        }
        let seeds = self.seeds.iter().map(|s| Arc::<str>::from(s.as_str()));
        for addr in view.members.iter().cloned().chain(seeds) {
            if !order.contains(&addr) {
                order.push(addr);
            }
        }
        // A stable sort: owners stay first among the reachable, in preference order.
        order.sort_by_key(|addr| self.recently_unreachable(addr));
        order
    }

    fn recently_unreachable(&self, addr: &str) -> bool {
        let unreachable = self.unreachable.lock().expect("unreachable set poisoned");
        // Most of the time nothing is unreachable: no hashing then.
        !unreachable.is_empty()
            && unreachable
                .get(addr)
                .is_some_and(|at| at.elapsed() < UNREACHABLE_FOR)
    }

    fn cached(&self, addr: &str) -> Option<Client> {
        self.connections
            .lock()
            .expect("connections poisoned")
            .get(addr)
            .cloned()
    }

    async fn connection(&self, addr: &Arc<str>) -> Result<Client, RpcError> {
        if let Some(client) = self.cached(addr) {
            return Ok(client);
        }
        let client = Client::connect_with(addr, self.timeout, &self.connector).await?;
        self.connections
            .lock()
            .expect("connections poisoned")
            .insert(Arc::clone(addr), client.clone());
        Ok(client)
    }

    fn mark_unreachable(&self, addr: &Arc<str>) {
        self.connections
            .lock()
            .expect("connections poisoned")
            .remove(addr);
        self.unreachable
            .lock()
            .expect("unreachable set poisoned")
            .insert(Arc::clone(addr), Instant::now());
    }

    /// A reply named ring `version`: a newer one than the client's is fetched (by one
    /// request at a time; a failed refresh keeps the old ring).
    async fn saw_version(&self, version: u64) {
        if version <= self.view().version || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(error) = self.refresh().await {
            tracing::debug!(%error, "ring refresh failed; keeping the old ring");
        }
        self.refreshing.store(false, Ordering::Release);
    }

    /// Fetches the ring and the members' addresses from the first node that answers
    /// (members first, then seeds).
    async fn refresh(&self) -> Result<(), RpcError> {
        let view = self.view();
        let seeds = self.seeds.iter().map(|s| Arc::<str>::from(s.as_str()));
        let mut last = None;
        for addr in view.members.iter().cloned().chain(seeds) {
            let learned = async {
                let client = self.connection(&addr).await?;
                let (status, ring) = futures::try_join!(client.status(), client.ring())?;
                Ok::<_, RpcError>(RingView::of(&status, &ring))
            };
            match learned.await {
                Ok(view) => {
                    tracing::debug!(version = view.version, "learned the ring");
                    *self.view.write().expect("ring view poisoned") = Arc::new(view);
                    return Ok(());
                }
                Err(error) => {
                    self.mark_unreachable(&addr);
                    last = Some(error);
                }
            }
        }
        Err(last.expect("at least one address was tried"))
    }
}

impl RingView {
    /// The first owner of `key` that passes `usable`.
    fn first_owner(&self, key: &[u8], usable: impl Fn(&str) -> bool) -> Option<&Arc<str>> {
        let partition = dotkv_ring::partition_of(dotkv_ring::key_hash(key), self.bits);
        self.owners
            .get(partition as usize)?
            .iter()
            .find(|addr| usable(addr))
    }

    fn of(status: &crate::StatusReply, ring: &crate::RingReply) -> Self {
        let addr_of: HashMap<&str, Arc<str>> = status
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), Arc::from(n.addr.as_str())))
            .collect();
        let healthy = |id: &str| {
            status
                .nodes
                .iter()
                .any(|n| n.id == id && n.status != "down" && n.status != "left")
        };
        // A node without a ring (a new cluster's first moments) answers no partitions.
        let owners: Vec<Vec<Arc<str>>> = ring
            .partitions
            .iter()
            .map(|p| {
                // Healthy owners first, in preference order; convicted ones after them.
                let (up, down): (Vec<&String>, Vec<&String>) =
                    p.nodes.iter().partition(|id| healthy(id));
                up.into_iter()
                    .chain(down)
                    .filter_map(|id| addr_of.get(id.as_str()).cloned())
                    .collect()
            })
            .collect();
        let members = status
            .nodes
            .iter()
            .filter(|n| healthy(&n.id))
            .map(|n| Arc::from(n.addr.as_str()))
            .collect();
        Self {
            version: ring.version,
            bits: ring.partitions.len().max(1).trailing_zeros(),
            owners,
            members,
        }
    }
}
