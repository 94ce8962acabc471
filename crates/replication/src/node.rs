//! The request coordinator (DeCandia et al., SOSP 2007, §4.5): what a node does with a
//! client's get, put or delete, and with a peer's replica read or write.
//!
//! ```text
//!  put  --> not in the preference list? forward to the first reachable one that is
//!       --> coordinator: DVVS update with its own replica id, under the storage's
//!           read-modify-write (one group commit)
//!       --> the object to the other N-1 replicas (each merges with `sync`)
//!       --> answer after W acknowledgements, its own included; the rest complete behind
//!  get  --> read the N replicas, answer after R replies with their merge
//!       --> behind the answer: wait for the rest, write the merge to replicas that
//!           answered stale or missing (read repair)
//! ```

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dotkv_ring::NodeIndex;
use dotkv_storage::{BoxError, Storage, StorageExt, TxError, Update, UpdateFn};
use dotkv_versioning::{ContextToken, ReplicaId, VersionVector};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::handoff::{HandoffConfig, HandoffState};
use crate::object::{context_of, decode_object, encode_object, is_stale, live_values, merge_into};
use crate::quorum::{Progress, Quorum, WriteQuorums};
use crate::{
    Cluster, Error, GetReply, GetRequest, LimitsConfig, Object, PutReply, PutRequest, ReplicaView,
    ReplicasReply, ReplicationConfig, Result, Routing, Transport, TransportError, Value,
};

/// A node's request handling: the coordinator for clients, the replica for peers
/// (handle pattern: clones share one node).
#[derive(Debug, Clone)]
pub struct Node(Arc<NodeInner>);

#[derive(Debug)]
struct NodeInner {
    /// This node's id.
    id: String,
    /// The replica id its writes get dots of (see [`Node::new`]).
    replica: ReplicaId,
    /// Membership: the ring and the members' liveness.
    cluster: Cluster,
    store: Arc<dyn Storage>,
    transport: Arc<dyn Transport>,
    config: ReplicationConfig,
    limits: LimitsConfig,
    /// Ownership handoff: its settings and its running transfers.
    handoff: HandoffConfig,
    handoff_state: HandoffState,
}

/// The result of one replica's read: who, and what it holds.
type ReplicaRead = (NodeIndex, Result<Option<Object>>);
/// The result of one replica's write.
type ReplicaWrite = (NodeIndex, Result<(), TransportError>);

impl Node {
    /// A node serving requests with `cluster`'s view, `store` for its replicas and
    /// `transport` to reach its peers. `replica` is the id its writes get dots of: it must
    /// be unique to this store, so that a node that comes back with an empty store under
    /// the same node id cannot mint dots that its old self already used.
    pub fn new(
        cluster: Cluster,
        store: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
        replica: ReplicaId,
        config: ReplicationConfig,
        limits: LimitsConfig,
        handoff: HandoffConfig,
    ) -> Self {
        let id = cluster.node_id();
        Self(Arc::new(NodeInner {
            replica,
            id,
            cluster,
            store,
            transport,
            config,
            limits,
            handoff,
            handoff_state: HandoffState::default(),
        }))
    }

    /// The node's membership.
    pub fn cluster(&self) -> &Cluster {
        &self.0.cluster
    }

    pub(crate) fn store(&self) -> &Arc<dyn Storage> {
        &self.0.store
    }

    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.0.transport
    }

    pub(crate) fn handoff_config(&self) -> &HandoffConfig {
        &self.0.handoff
    }

    pub(crate) fn handoff_state(&self) -> &HandoffState {
        &self.0.handoff_state
    }

    /// Writes or deletes a key (see the module docs for the protocol).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a key or value over the limits, a W outside 1..=N or
    /// a malformed context (nothing is stored); [`Error::TooManySiblings`];
    /// [`Error::QuorumNotReached`] with fewer than W acknowledgements;
    /// [`Error::Unavailable`] when no preference-list node can coordinate.
    // Debug level: an enabled span per request costs a key copy and registry work.
    #[tracing::instrument(level = "debug", skip_all, fields(key = %String::from_utf8_lossy(&request.key)))]
    pub async fn put(&self, request: PutRequest) -> Result<PutReply> {
        self.check_key(&request.key)?;
        if let Some(value) = &request.value {
            if value.len() > self.0.limits.max_value_bytes {
                return Err(Error::InvalidArgument(format!(
                    "value of {} bytes exceeds limits.max_value_bytes = {}",
                    value.len(),
                    self.0.limits.max_value_bytes
                )));
            }
        }
        let w = self.quorum_size(request.w, self.0.config.w, "w")?;
        let context = match &request.context {
            None => VersionVector::new(),
            Some(token) => token
                .parse::<ContextToken>()
                .map_err(|error| Error::InvalidArgument(format!("context token: {error}")))?
                .into_version_vector(),
        };
        let routing = self.routing()?;
        let partition = routing.ring.partition_of(&request.key);
        let owners = routing.ring.preference_list(partition);
        let coordinates = routing.me.is_some_and(|me| owners.contains(&me));
        if !coordinates && !request.forwarded {
            return self.forward_put(&routing, partition, request).await;
        }
        self.coordinate_put(&routing, partition, request, context, w)
            .await
    }

    /// Reads a key: the merge of R replicas' objects (see the module docs).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a key over the limit or an R outside 1..=N;
    /// [`Error::QuorumNotReached`] with fewer than R replies.
    // Debug level: an enabled span per request costs a key copy and registry work.
    #[tracing::instrument(level = "debug", skip_all, fields(key = %String::from_utf8_lossy(&request.key)))]
    pub async fn get(&self, request: GetRequest) -> Result<GetReply> {
        self.check_key(&request.key)?;
        let r = self.quorum_size(request.r, self.0.config.r, "r")?;
        let routing = self.routing()?;
        let partition = routing.ring.partition_of(&request.key);
        let owners = routing.ring.preference_list(partition);
        let mut reads: FuturesUnordered<BoxFuture<'static, ReplicaRead>> = owners
            .iter()
            .map(|&node| self.read_from(&routing, node, partition, request.key.clone()))
            .collect();
        let mut quorum = Quorum::new(r, owners.len());
        let mut replies = Vec::with_capacity(owners.len());
        let mut merged = Object::default();
        let progress = gather(&mut quorum, &mut reads, &routing, |node, result| {
            if let Ok(Some(held)) = &result {
                merged = merged.sync(held);
            }
            replies.push((node, result));
        })
        .await;
        if progress != Progress::Reached {
            return Err(quorum.into_error("replies"));
        }
        let reply = GetReply {
            values: live_values(&merged),
            context: ContextToken::from(&context_of(&merged)).to_string(),
        };
        // Read repair runs behind the answer: it waits for the slower replicas too.
        let node = self.clone();
        tokio::spawn(async move {
            node.read_repair(routing, partition, request.key, replies, reads, merged)
                .await;
        });
        Ok(reply)
    }

    /// What each replica of `key` holds now, without repairing anything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a key over the limit; [`Error::Unavailable`] without
    /// a ring.
    pub async fn replicas(&self, key: Bytes) -> Result<ReplicasReply> {
        self.check_key(&key)?;
        let routing = self.routing()?;
        let partition = routing.ring.partition_of(&key);
        let owners = routing.ring.preference_list(partition);
        let reads = owners
            .iter()
            .map(|&node| self.read_from(&routing, node, partition, key.clone()));
        let replicas = futures::future::join_all(reads)
            .await
            .into_iter()
            .map(|(node, result)| {
                let (values, context, error) = match result {
                    Ok(held) => {
                        let held = held.unwrap_or_default();
                        let context = ContextToken::from(&context_of(&held)).to_string();
                        (live_values(&held), Some(context), None)
                    }
                    Err(error) => (Vec::new(), None, Some(error.to_string())),
                };
                ReplicaView {
                    node: routing.id(node).to_owned(),
                    addr: routing.addr(node).to_owned(),
                    role: "primary".into(),
                    values,
                    context,
                    error,
                }
            })
            .collect();
        Ok(ReplicasReply { replicas })
    }

    /// A peer's replica write: merges `object` into what this node holds for `key`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an undecodable object; [`Error::Internal`] for a
    /// storage failure.
    pub async fn write_replica(&self, key: Bytes, object: Bytes) -> Result<()> {
        self.check_key(&key)?;
        let incoming = dotkv_versioning::decode::<Value>(&object)
            .map_err(|error| Error::InvalidArgument(format!("replica object: {error}")))?;
        let partition = self.partition_of(&key)?;
        self.merge_local(partition, &key, incoming, object).await
    }

    /// A peer's replica read: the encoded object this node holds for `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a storage failure.
    pub async fn read_replica(&self, key: Bytes) -> Result<Option<Bytes>> {
        self.check_key(&key)?;
        let partition = self.partition_of(&key)?;
        Ok(self
            .0
            .store
            .get_object(partition, &key)
            .await?
            .map(Bytes::from))
    }

    /// Makes this node, alone in its cluster and holding no data, join the cluster of
    /// `seed`: it enters as `joining` and owns nothing until the claimant's ring includes
    /// it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the node knows other members or holds objects
    /// (its data would not be handed to anyone).
    pub async fn join(&self, seed: String) -> Result<()> {
        let objects = self
            .0
            .store
            .count(dotkv_storage::Keyspace::Objects, &[])
            .await?;
        if objects > 0 {
            return Err(Error::InvalidArgument(format!(
                "node {} holds {objects} objects; only an empty node can join another \
                 cluster (start it with an empty data dir and --seeds)",
                self.0.id
            )));
        }
        self.0.cluster.join(seed).await
    }

    fn routing(&self) -> Result<Arc<Routing>> {
        self.0.cluster.routing().ok_or_else(|| {
            Error::Unavailable(format!(
                "node {} has no ring yet: it knows no member that owns partitions",
                self.0.id
            ))
        })
    }

    fn partition_of(&self, key: &[u8]) -> Result<u32> {
        Ok(self.routing()?.ring.partition_of(key))
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.0.limits.max_key_bytes;
        if key.is_empty() {
            return Err(Error::InvalidArgument("the key is empty".into()));
        }
        if key.len() > max {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes exceeds limits.max_key_bytes = {max}",
                key.len()
            )));
        }
        Ok(())
    }

    /// A request's R or W, or the configured default; 1 ≤ it ≤ N.
    fn quorum_size(&self, requested: Option<usize>, default: usize, name: &str) -> Result<usize> {
        let n = self.0.config.n;
        let size = requested.unwrap_or(default);
        if !(1..=n).contains(&size) {
            return Err(Error::InvalidArgument(format!(
                "{name} = {size} must be between 1 and N = {n}"
            )));
        }
        Ok(size)
    }

    /// Hands the write to the first preference-list node that answers, skipping those the
    /// failure detector convicts unless every one of them is convicted.
    async fn forward_put(
        &self,
        routing: &Routing,
        partition: u32,
        mut request: PutRequest,
    ) -> Result<PutReply> {
        request.forwarded = true;
        let owners = routing.ring.preference_list(partition);
        let (live, down): (Vec<NodeIndex>, Vec<NodeIndex>) = owners
            .iter()
            .partition(|&&node| !self.0.cluster.is_down(routing.id(node)));
        let mut errors = Vec::new();
        for node in live.into_iter().chain(down) {
            let addr = routing.addr(node);
            match self.0.transport.forward_put(addr, request.clone()).await {
                Ok(reply) => return Ok(reply),
                // Nothing reached it: the next owner can coordinate instead.
                Err(error @ TransportError::Unreachable { .. }) => {
                    tracing::debug!(%error, "forward failed; trying the next owner");
                    errors.push(error.to_string());
                }
                // It may have coordinated the write: retrying elsewhere could apply it
                // twice (as a sibling), so the client decides.
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Unavailable(format!(
            "no preference-list node of the key could coordinate the write: {}",
            errors.join("; ")
        )))
    }

    async fn coordinate_put(
        &self,
        routing: &Arc<Routing>,
        partition: u32,
        request: PutRequest,
        context: VersionVector,
        w: usize,
    ) -> Result<PutReply> {
        let PutRequest { key, value, .. } = request;
        let value = value.map_or(Value::Tombstone, Value::Data);
        let (object, context) = self.update_local(partition, &key, context, value).await?;
        let object = Bytes::from(object);
        let targets = WriteTargets::of(routing, partition);
        let mut quorums = WriteQuorums::new(
            w,
            routing.ring.replicas(),
            routing.pending.as_ref().map(|p| p.ring.replicas()),
        );
        // The coordinator's own replica counts in every ring that has it.
        quorums.record(true, targets.me_in_pending, Ok(()));
        let mut writes: FuturesUnordered<BoxFuture<'static, (usize, Result<(), TransportError>)>> =
            targets
                .peers
                .iter()
                .enumerate()
                .map(|(i, target)| {
                    let transport = Arc::clone(&self.0.transport);
                    let (addr, key, object) =
                        (Arc::clone(&target.addr), key.clone(), object.clone());
                    Box::pin(async move { (i, transport.write_replica(&addr, key, object).await) })
                        as BoxFuture<'static, _>
                })
                .collect();
        let mut progress = quorums.progress();
        while progress == Progress::Pending {
            let Some((i, result)) = writes.next().await else {
                break;
            };
            progress = targets.record(&mut quorums, routing, i, result);
        }
        if progress != Progress::Reached {
            // The replies still coming are counted too (within their deadline), so that
            // the error tells how many were obtained. The write stays where it landed.
            while let Some((i, result)) = writes.next().await {
                targets.record(&mut quorums, routing, i, result);
            }
            return Err(quorums.into_error());
        }
        if !writes.is_empty() {
            // The remaining replicas still get the write: drive their calls to the end.
            tokio::spawn(async move { while writes.next().await.is_some() {} });
        }
        Ok(PutReply {
            context: ContextToken::from(&context).to_string(),
        })
    }

    /// The coordinator's DVVS update of its own replica, in one read-modify-write.
    /// Returns the encoded object and its context.
    async fn update_local(
        &self,
        partition: u32,
        key: &Bytes,
        context: VersionVector,
        value: Value,
    ) -> Result<(Vec<u8>, VersionVector)> {
        let replica = self.0.replica;
        let max = self.0.limits.max_siblings;
        // The update runs inside the storage's write transaction; it leaves the new
        // object's context here for the reply.
        let joined = Arc::new(Mutex::new(VersionVector::new()));
        let slot = Arc::clone(&joined);
        // The key's text is needed only for the error: a refcount, not a copy, per write.
        let key_bytes = key.clone();
        let update: UpdateFn = Box::new(move |current: Option<&[u8]>| {
            let stored = match current {
                Some(bytes) => decode_object(bytes, "the local store").map_err(abort)?,
                None => Object::default(),
            };
            let updated = stored.update(&context, value, replica);
            let count = updated.size();
            if count > max {
                return Err(abort(Error::TooManySiblings {
                    key: String::from_utf8_lossy(&key_bytes).into_owned(),
                    count,
                    max,
                }));
            }
            if count > max / 4 && count > 1 {
                tracing::warn!(
                    key = %String::from_utf8_lossy(&key_bytes),
                    siblings = count,
                    "many sibling values"
                );
            }
            *slot.lock().expect("context slot poisoned") = context_of(&updated);
            Ok(Update::Put(encode_object(&updated)))
        });
        let stored = self
            .0
            .store
            .update_object(partition, key, update)
            .await
            .map_err(tx_error)?
            .ok_or_else(|| Error::Internal("the update stored nothing".into()))?;
        let context = std::mem::take(&mut *joined.lock().expect("context slot poisoned"));
        Ok((stored, context))
    }

    /// Merges `incoming` into this node's replica of `key`. `encoded` is `incoming`'s
    /// encoding, stored as is when the replica holds nothing.
    pub(crate) async fn merge_local(
        &self,
        partition: u32,
        key: &[u8],
        incoming: Object,
        encoded: Bytes,
    ) -> Result<()> {
        let update: UpdateFn = Box::new(move |current: Option<&[u8]>| {
            let Some(current) = current else {
                return Ok(Update::Put(Vec::from(encoded)));
            };
            let stored = decode_object(current, "the local store").map_err(abort)?;
            Ok(match merge_into(&stored, &incoming) {
                None => Update::Keep,
                Some(merged) => Update::Put(encode_object(&merged)),
            })
        });
        self.0
            .store
            .update_object(partition, key, update)
            .await
            .map_err(tx_error)?;
        Ok(())
    }

    /// Reads replica `node`'s object: from the local store for this node, else over the
    /// transport.
    fn read_from(
        &self,
        routing: &Routing,
        node: NodeIndex,
        partition: u32,
        key: Bytes,
    ) -> BoxFuture<'static, ReplicaRead> {
        let this = self.clone();
        if Some(node) == routing.me {
            return Box::pin(async move {
                let held = match this.0.store.get_object(partition, &key).await {
                    Ok(held) => held
                        .map(|bytes| decode_object(&bytes, "the local store"))
                        .transpose(),
                    Err(error) => Err(error.into()),
                };
                (node, held)
            });
        }
        let addr = routing.shared_addr(node);
        Box::pin(async move {
            let held = match this.0.transport.read_replica(&addr, key).await {
                Ok(held) => held.map(|bytes| decode_object(&bytes, &addr)).transpose(),
                Err(error) => Err(Error::from(error)),
            };
            (node, held)
        })
    }

    /// Sends `object` to replica `node` (never this node).
    fn write_to(
        &self,
        routing: &Routing,
        node: NodeIndex,
        key: Bytes,
        object: Bytes,
    ) -> BoxFuture<'static, ReplicaWrite> {
        let transport = Arc::clone(&self.0.transport);
        let addr = routing.shared_addr(node);
        Box::pin(async move { (node, transport.write_replica(&addr, key, object).await) })
    }

    /// Waits for the replies a get did not wait for, then writes the merge of all of them
    /// to every replica that answered with less.
    async fn read_repair(
        &self,
        routing: Arc<Routing>,
        partition: u32,
        key: Bytes,
        mut replies: Vec<ReplicaRead>,
        mut reads: FuturesUnordered<BoxFuture<'static, ReplicaRead>>,
        mut merged: Object,
    ) {
        while let Some((node, result)) = reads.next().await {
            if let Ok(Some(held)) = &result {
                merged = merged.sync(held);
            }
            replies.push((node, result));
        }
        let stale: Vec<NodeIndex> = replies
            .iter()
            .filter_map(|(node, result)| match result {
                Ok(held) if is_stale(held.as_ref(), &merged) => Some(*node),
                _ => None,
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let object = Bytes::from(encode_object(&merged));
        for node in stale {
            tracing::debug!(replica = routing.id(node), "read repair");
            let result = if Some(node) == routing.me {
                self.merge_local(partition, &key, merged.clone(), object.clone())
                    .await
            } else {
                self.write_to(&routing, node, key.clone(), object.clone())
                    .await
                    .1
                    .map_err(Error::from)
            };
            if let Err(error) = result {
                tracing::debug!(replica = routing.id(node), %error, "read repair failed");
            }
        }
    }
}

/// A write's replicas other than the coordinator: the key's owners in the current ring and,
/// during a transition, in the pending ring (each node once, told apart by address, which
/// both rings take from the same view).
struct WriteTarget {
    addr: Arc<str>,
    /// Its index in the current ring, if it owns the key there.
    current: Option<NodeIndex>,
    /// Its index in the pending ring, if it owns the key there.
    pending: Option<NodeIndex>,
}

struct WriteTargets {
    peers: Vec<WriteTarget>,
    /// Whether the coordinator is an owner of the key in the pending ring too.
    me_in_pending: bool,
}

impl WriteTargets {
    fn of(routing: &Routing, partition: u32) -> Self {
        let mut peers: Vec<WriteTarget> = routing
            .ring
            .preference_list(partition)
            .iter()
            .filter(|&&node| Some(node) != routing.me)
            .map(|&node| WriteTarget {
                addr: routing.shared_addr(node),
                current: Some(node),
                pending: None,
            })
            .collect();
        let mut me_in_pending = false;
        if let Some(pending) = &routing.pending {
            for &node in pending.ring.preference_list(partition) {
                if Some(node) == pending.me {
                    me_in_pending = true;
                    continue;
                }
                let addr = pending.addr(node);
                match peers.iter_mut().find(|t| &*t.addr == addr) {
                    Some(target) => target.pending = Some(node),
                    None => peers.push(WriteTarget {
                        addr: pending.shared_addr(node),
                        current: None,
                        pending: Some(node),
                    }),
                }
            }
        }
        Self {
            peers,
            me_in_pending,
        }
    }

    /// Counts target `i`'s answer toward the quorums of the rings it owns the key in.
    fn record(
        &self,
        quorums: &mut WriteQuorums,
        routing: &Routing,
        i: usize,
        result: std::result::Result<(), TransportError>,
    ) -> Progress {
        let target = &self.peers[i];
        let outcome = result.map_err(|error| {
            let id = match (target.current, &routing.pending, target.pending) {
                (Some(node), _, _) => routing.id(node),
                (None, Some(pending), Some(node)) => pending.id(node),
                _ => "?",
            };
            format!("{id}: {error}")
        });
        quorums.record(target.current.is_some(), target.pending.is_some(), outcome)
    }
}

/// Counts replica replies into `quorum` until it is decided, handing each to `seen`.
/// When it fails, the replies still coming are counted too (within their deadline), so
/// that the error tells how many were obtained; when it is reached, the rest stay in
/// `pending` for the caller.
async fn gather<T, E: std::fmt::Display>(
    quorum: &mut Quorum,
    pending: &mut FuturesUnordered<BoxFuture<'static, (NodeIndex, std::result::Result<T, E>)>>,
    routing: &Routing,
    mut seen: impl FnMut(NodeIndex, std::result::Result<T, E>),
) -> Progress {
    let mut progress = quorum.progress();
    while progress != Progress::Reached {
        let Some((node, result)) = pending.next().await else {
            break;
        };
        progress = match &result {
            Ok(_) => quorum.success(),
            Err(error) => quorum.failure(format!("{}: {error}", routing.id(node))),
        };
        seen(node, result);
    }
    progress
}

/// Aborts a storage update with a request error, which [`tx_error`] recovers.
fn abort(error: Error) -> BoxError {
    Arc::new(error)
}

/// A storage transaction's failure as a request error: the update's own error when it
/// aborted, else the storage's.
pub(crate) fn tx_error(error: TxError) -> Error {
    match error {
        TxError::Abort(cause) => cause
            .downcast_ref::<Error>()
            .cloned()
            .unwrap_or_else(|| Error::Internal(cause.to_string())),
        TxError::Storage(error) => error.into(),
    }
}
