//! The request coordinator (DeCandia et al., SOSP 2007, §4.5): what a node does with a
//! client's get, put or delete, and with a peer's replica read or write.
//!
//! ```text
//!  put  --> not in the preference list? forward to the first reachable one that is
//!       --> coordinator: DVVS update with its own replica id, under the storage's
//!           read-modify-write (one group commit)
//!       --> the object to the other N-1 replicas (each merges with `sync`); an owner
//!           the failure detector convicts, or whose call fails, is replaced by the next
//!           healthy fallback of the ring, which keeps the object as a hint (§4.6)
//!       --> during a transition, also to the pending ring's owners
//!       --> answer after W acknowledgements, its own and fallbacks' included (W of the
//!           pending owners too; PW of them from owners, when asked); the rest complete
//!           behind
//!  get  --> the object of one owner (this node when it owns the key), digests of R-1
//!           others; answer after R replies agree (PR from owners, when asked) with the
//!           merge; owners that answered with less are repaired behind the answer
//!           (see the `read` module)
//! ```

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dotkv_ring::NodeIndex;
use dotkv_storage::{BoxError, Keyspace, Storage, StorageExt, TxError, Update, UpdateFn};
use dotkv_versioning::{ContextToken, ReplicaId, VersionVector};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::aae::{AaeConfig, AaeState};
use crate::handoff::{HandoffConfig, HandoffState};
use crate::metrics::Metrics;
use crate::object::{
    context_of, decode_object, deleted_at_ms, encode_object, live_values, merge_into,
};
use crate::quorum::{Counts, Progress, Quorums};
use crate::read::{ReadPlan, ReadRound};
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
    /// Anti-entropy: its settings, the partitions' trees and the exchanges.
    aae: AaeConfig,
    aae_state: AaeState,
    /// What the request path counts (see the `metrics` module).
    metrics: Metrics,
}

/// A node's settings, as the server's configuration gives them.
#[derive(Debug, Clone, Default)]
pub struct NodeSettings {
    /// N, R, W, PR, PW (`[replication]`).
    pub replication: ReplicationConfig,
    /// Key, value and sibling limits (`[limits]`).
    pub limits: LimitsConfig,
    /// Ownership handoff and hint delivery (`[handoff]`).
    pub handoff: HandoffConfig,
    /// Anti-entropy (`[aae]`, and `storage.tombstone_grace_s`).
    pub aae: AaeConfig,
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
        settings: NodeSettings,
    ) -> Self {
        let id = cluster.node_id();
        let NodeSettings {
            replication,
            limits,
            handoff,
            aae,
        } = settings;
        Self(Arc::new(NodeInner {
            replica,
            id,
            cluster,
            store,
            transport,
            config: replication,
            limits,
            handoff,
            handoff_state: HandoffState::default(),
            aae,
            aae_state: AaeState::default(),
            metrics: Metrics::default(),
        }))
    }

    /// How many client writes this node forwarded to an owner of their key.
    pub fn forwarded_puts(&self) -> u64 {
        self.0.metrics.forwarded_puts()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The node's membership.
    pub fn cluster(&self) -> &Cluster {
        &self.0.cluster
    }

    /// The sizes it accepts (`[limits]`).
    pub fn limits(&self) -> &LimitsConfig {
        &self.0.limits
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

    pub(crate) fn aae_config(&self) -> &AaeConfig {
        &self.0.aae
    }

    pub(crate) fn aae_state(&self) -> &AaeState {
        &self.0.aae_state
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
        // Counted where the client sent it: a forwarded write is the forwarder's.
        if request.forwarded {
            return self.put_request(request).await;
        }
        let op = if request.value.is_some() {
            "put"
        } else {
            "delete"
        };
        let started = Instant::now();
        let result = self.put_request(request).await;
        self.0
            .metrics
            .request(op, outcome(&result), started.elapsed());
        result
    }

    async fn put_request(&self, request: PutRequest) -> Result<PutReply> {
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
        let pw = self.primary_quorum(request.pw, self.0.config.pw, w, "pw")?;
        self.coordinate_put(&routing, partition, request, context, (w, pw))
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
        let started = Instant::now();
        let result = self.get_request(request).await;
        self.0
            .metrics
            .request("get", outcome(&result), started.elapsed());
        result
    }

    async fn get_request(&self, request: GetRequest) -> Result<GetReply> {
        self.check_key(&request.key)?;
        let r = self.quorum_size(request.r, self.0.config.r, "r")?;
        let pr = self.primary_quorum(request.pr, self.0.config.pr, r, "pr")?;
        let routing = self.routing()?;
        let config = &self.0.config;
        let plan = ReadPlan {
            r,
            pr,
            every_owner: r >= routing.ring.replicas()
                || (config.read_repair_chance > 0.0 && fastrand::f64() < config.read_repair_chance),
            speculative: (config.speculative_retry_ms > 0)
                .then(|| Duration::from_millis(config.speculative_retry_ms)),
        };
        let speculative = plan.speculative;
        let ring_version = routing.ring.version();
        let merged = ReadRound::start(self.clone(), routing, request.key, &plan)
            .run(speculative)
            .await?;
        Ok(GetReply {
            values: live_values(&merged),
            context: ContextToken::from(&context_of(&merged)).to_string(),
            ring_version,
        })
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
        let primaries = owners
            .iter()
            .map(|&node| self.read_from(&routing, node, partition, key.clone()));
        // Every other member is asked for hints it keeps for the key; only those holding
        // one are listed, as fallbacks.
        let fallbacks = routing
            .ring
            .fallbacks(partition)
            .iter()
            .map(|&node| self.read_hinted(&routing, node, key.clone()));
        let (primaries, fallbacks) = futures::future::join(
            futures::future::join_all(primaries),
            futures::future::join_all(fallbacks),
        )
        .await;
        let view = |node: NodeIndex, role: &str, result: Result<Option<Object>>| {
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
                role: role.into(),
                values,
                context,
                error,
            }
        };
        let mut replicas: Vec<ReplicaView> = primaries
            .into_iter()
            .map(|(node, result)| view(node, "primary", result))
            .collect();
        replicas.extend(
            fallbacks
                .into_iter()
                .filter(|(_, result)| matches!(result, Ok(Some(_))))
                .map(|(node, result)| view(node, "fallback", result)),
        );
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

    /// A peer's digest read: the digest of the encoded object this node holds for `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a storage failure.
    pub async fn read_digest(&self, key: Bytes) -> Result<Option<u64>> {
        self.check_key(&key)?;
        let partition = self.partition_of(&key)?;
        self.local_digest(partition, &key).await
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

    pub(crate) fn routing(&self) -> Result<Arc<Routing>> {
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

    /// A request's PR or PW, or the configured default; 0 (off) ≤ it ≤ its R or W.
    fn primary_quorum(
        &self,
        requested: Option<usize>,
        default: usize,
        quorum: usize,
        name: &str,
    ) -> Result<usize> {
        match requested {
            Some(size) if size > quorum => Err(Error::InvalidArgument(format!(
                "{name} = {size} must not exceed {} = {quorum}",
                &name[1..]
            ))),
            Some(size) => Ok(size),
            // A configured default above a request's smaller quorum applies as that quorum.
            None => Ok(default.min(quorum)),
        }
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
        self.0.metrics.forwarded_put();
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
                    self.0.cluster.refused(routing.id(node));
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
        (w, pw): (usize, usize),
    ) -> Result<PutReply> {
        let PutRequest { key, value, .. } = request;
        let value = value.map_or_else(
            || Value::Tombstone {
                deleted_at_ms: crate::aae::now_ms(),
            },
            Value::Data,
        );
        let (object, context) = self.update_local(partition, &key, context, value).await?;
        let targets = WriteTargets::of(routing, partition, |id| self.0.cluster.is_down(id));
        let mut quorums = Quorums::new(
            w,
            pw,
            routing.ring.replicas(),
            routing.pending.as_ref().map(|p| p.ring.replicas()),
        );
        for owner in &targets.skipped {
            quorums.skip_primary(format!("{}: down", routing.id(*owner)));
        }
        // The coordinator's own replica counts in every ring that has it, as a primary.
        quorums.record(
            Counts {
                current: true,
                pending: targets.me_in_pending,
                primary: true,
            },
            Ok(()),
        );
        let mut round = WriteRound {
            node: self.clone(),
            routing: Arc::clone(routing),
            targets,
            quorums,
            writes: FuturesUnordered::new(),
            key,
            object: Bytes::from(object),
        };
        for i in 0..round.targets.peers.len() {
            round.launch(i);
        }
        let mut progress = round.quorums.progress();
        while progress == Progress::Pending {
            let Some((i, result)) = round.writes.next().await else {
                break;
            };
            progress = round.count(i, result);
        }
        if progress != Progress::Reached {
            // The replies still coming are counted too (within their deadline), so that
            // the error tells how many were obtained. The write stays where it landed.
            while let Some((i, result)) = round.writes.next().await {
                round.count(i, result);
            }
            return Err(round.quorums.into_error());
        }
        if !round.writes.is_empty() {
            // The remaining replicas still get the write: their calls are driven to the
            // end, a failed one still replaced by a fallback.
            tokio::spawn(async move {
                while let Some((i, result)) = round.writes.next().await {
                    round.count(i, result);
                }
            });
        }
        Ok(PutReply {
            context: ContextToken::from(&context).to_string(),
            ring_version: routing.ring.version(),
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
        let deleted_at = match value {
            Value::Tombstone { deleted_at_ms } => Some(deleted_at_ms),
            Value::Data(_) => None,
        };
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
            .update_object(partition, key, update)
            .await
            .map_err(tx_error)?
            .ok_or_else(|| Error::Internal("the update stored nothing".into()))?;
        if let Some(deleted_at) = deleted_at {
            self.note_tombstone(partition, key, deleted_at);
        }
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
        let deleted_at = deleted_at_ms(&incoming);
        let encoded_key = dotkv_storage::keys::object_key(partition, key);
        self.merge_stored(Keyspace::Objects, &encoded_key, incoming, encoded)
            .await?;
        if let Some(deleted_at) = deleted_at {
            self.note_tombstone(partition, key, deleted_at);
        }
        Ok(())
    }

    /// Merges `incoming` into the object stored at `key` of `space` (a replica, or a
    /// hint), in one read-modify-write; `encoded` is stored as is when there is none.
    /// Returns how many bytes the stored object grew by (negative: shrank).
    pub(crate) async fn merge_stored(
        &self,
        space: Keyspace,
        key: &[u8],
        incoming: Object,
        encoded: Bytes,
    ) -> Result<i64> {
        let growth = Arc::new(AtomicI64::new(0));
        let grew = Arc::clone(&growth);
        let update: UpdateFn = Box::new(move |current: Option<&[u8]>| {
            let Some(current) = current else {
                grew.store(encoded.len() as i64, Ordering::Relaxed);
                return Ok(Update::Put(Vec::from(encoded)));
            };
            let stored = decode_object(current, "the local store").map_err(abort)?;
            Ok(match merge_into(&stored, &incoming) {
                None => Update::Keep,
                Some(merged) => {
                    let merged = encode_object(&merged);
                    grew.store(
                        merged.len() as i64 - current.len() as i64,
                        Ordering::Relaxed,
                    );
                    Update::Put(merged)
                }
            })
        });
        self.update_stored(space, key, update)
            .await
            .map_err(tx_error)?;
        Ok(growth.load(Ordering::Relaxed))
    }

    /// Deletes the object stored at `key` of `space` if it is still exactly `expected`
    /// (what was handed off or delivered); returns whether it did.
    pub(crate) async fn delete_if_unchanged(
        &self,
        space: Keyspace,
        key: &[u8],
        expected: Bytes,
    ) -> Result<bool> {
        let deleted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&deleted);
        let update: UpdateFn = Box::new(move |current: Option<&[u8]>| {
            Ok(if current == Some(&expected[..]) {
                flag.store(true, Ordering::Relaxed);
                Update::Delete
            } else {
                Update::Keep
            })
        });
        self.update_stored(space, key, update)
            .await
            .map_err(tx_error)?;
        Ok(deleted.load(Ordering::Relaxed))
    }

    /// A read-modify-write of `key` (encoded) in `space`; an object's goes through
    /// [`update_object`](Self::update_object), which keeps its tree current.
    async fn update_stored(
        &self,
        space: Keyspace,
        key: &[u8],
        update: UpdateFn,
    ) -> std::result::Result<Option<Vec<u8>>, dotkv_storage::TxError> {
        if space == Keyspace::Objects {
            let (partition, key) = dotkv_storage::keys::split_object_key(key)?;
            return self.update_object(partition, key, update).await;
        }
        self.0.store.update(space, key, update).await
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

    /// Reads fallback `node`'s hints for `key`, merged: what it keeps for owners it stands
    /// in for.
    pub(crate) fn read_hinted(
        &self,
        routing: &Routing,
        node: NodeIndex,
        key: Bytes,
    ) -> BoxFuture<'static, ReplicaRead> {
        let this = self.clone();
        let addr = routing.shared_addr(node);
        let local = Some(node) == routing.me;
        Box::pin(async move {
            let hints = if local {
                this.read_hints(key).await
            } else {
                this.0
                    .transport
                    .read_hints(&addr, key)
                    .await
                    .map_err(Error::from)
            };
            let held = hints.and_then(|hints| {
                let mut merged: Option<Object> = None;
                for (_, bytes) in hints {
                    let object = decode_object(&bytes, &addr)?;
                    merged = Some(merged.map_or_else(|| object.clone(), |m| m.sync(&object)));
                }
                Ok(merged)
            });
            (node, held)
        })
    }

    /// Sends `object` to replica `node` (never this node).
    pub(crate) fn write_to(
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
}

/// One write's replica calls in flight and the quorums they count toward.
struct WriteRound {
    node: Node,
    routing: Arc<Routing>,
    targets: WriteTargets,
    quorums: Quorums,
    writes: FuturesUnordered<BoxFuture<'static, (usize, Result<(), TransportError>)>>,
    key: Bytes,
    object: Bytes,
}

impl WriteRound {
    /// Starts the call to target `i`: a replica write to an owner, a hinted write to a
    /// fallback.
    fn launch(&mut self, i: usize) {
        let target = &self.targets.peers[i];
        let transport = Arc::clone(&self.node.0.transport);
        let (addr, key, object) = (
            Arc::clone(&target.addr),
            self.key.clone(),
            self.object.clone(),
        );
        let hint_for = target.hint_for.clone();
        self.writes.push(Box::pin(async move {
            let result = match hint_for {
                None => transport.write_replica(&addr, key, object).await,
                Some(owner) => transport.write_hint(&addr, owner, key, object).await,
            };
            (i, result)
        }));
    }

    /// Counts target `i`'s answer; when a replica of the current ring failed, tries the
    /// next healthy fallback in its place (sloppy quorum), which keeps a hint for the
    /// owner, also once the quorum is reached: the write keeps a copy (or a hint) for
    /// each owner even when W was reached without it.
    fn count(&mut self, i: usize, result: std::result::Result<(), TransportError>) -> Progress {
        let cluster = &self.node.0.cluster;
        let failed = result.is_err();
        if let Some(id) = self.targets.id(&self.routing, i) {
            match &result {
                Ok(()) => cluster.heard_from(id),
                Err(TransportError::Unreachable { .. }) => cluster.refused(id),
                Err(_) => {}
            }
        }
        let progress = self
            .targets
            .record(&mut self.quorums, &self.routing, i, result);
        if failed {
            let is_down = |id: &str| cluster.is_down(id);
            if let Some(next) = self.targets.fallback_for(&self.routing, i, is_down) {
                self.quorums.add_fallback();
                self.launch(next);
                return self.quorums.progress();
            }
        }
        progress
    }
}

/// A partition's fallbacks in the ring's order, handed out to reads as owners fail.
pub(crate) struct Fallbacks {
    left: std::collections::VecDeque<NodeIndex>,
}

impl Fallbacks {
    pub(crate) fn of(routing: &Routing, partition: u32) -> Self {
        Self {
            left: routing.ring.fallbacks(partition).iter().copied().collect(),
        }
    }

    /// The next fallback the failure detector does not convict (reads and writes).
    pub(crate) fn next(
        &mut self,
        routing: &Routing,
        is_down: impl Fn(&str) -> bool,
    ) -> Option<NodeIndex> {
        while let Some(node) = self.left.pop_front() {
            if !is_down(routing.id(node)) {
                return Some(node);
            }
        }
        None
    }
}

/// A write's replica other than the coordinator.
struct WriteTarget {
    addr: Arc<str>,
    /// Its index in the current ring, if it owns the key there or stands in for an owner.
    current: Option<NodeIndex>,
    /// Its index in the pending ring, if it owns the key there.
    pending: Option<NodeIndex>,
    /// For a fallback: the id of the owner it keeps a hint for.
    hint_for: Option<String>,
    /// For a fallback: the owner (current-ring index) it stands in for.
    stands_in_for: Option<NodeIndex>,
}

/// A write's replicas other than the coordinator: the key's owners in the current ring
/// (a convicted one replaced by the next healthy fallback) and, during a transition, in
/// the pending ring (each node once, told apart by address, which both rings take from
/// the same view).
struct WriteTargets {
    peers: Vec<WriteTarget>,
    /// Whether the coordinator is an owner of the key in the pending ring too.
    me_in_pending: bool,
    /// The partition's fallbacks not tried yet, in the ring's order.
    fallbacks: Fallbacks,
    /// Owners not asked because the failure detector convicts them.
    skipped: Vec<NodeIndex>,
}

impl WriteTargets {
    fn of(routing: &Routing, partition: u32, is_down: impl Fn(&str) -> bool) -> Self {
        let mut targets = Self {
            peers: Vec::new(),
            me_in_pending: false,
            fallbacks: Fallbacks::of(routing, partition),
            skipped: Vec::new(),
        };
        for &node in routing.ring.preference_list(partition) {
            if Some(node) == routing.me {
                continue;
            }
            targets.peers.push(WriteTarget {
                addr: routing.shared_addr(node),
                current: Some(node),
                pending: None,
                hint_for: None,
                stands_in_for: None,
            });
        }
        if let Some(pending) = &routing.pending {
            for &node in pending.ring.preference_list(partition) {
                if Some(node) == pending.me {
                    targets.me_in_pending = true;
                    continue;
                }
                let addr = pending.addr(node);
                match targets.peers.iter_mut().find(|t| &*t.addr == addr) {
                    Some(target) => target.pending = Some(node),
                    None => targets.peers.push(WriteTarget {
                        addr: pending.shared_addr(node),
                        current: None,
                        pending: Some(node),
                        hint_for: None,
                        stands_in_for: None,
                    }),
                }
            }
        }
        // An owner the failure detector convicts, and that no pending ring needs, is not
        // called: the next healthy fallback takes its place at once.
        for i in 0..targets.peers.len() {
            let target = &targets.peers[i];
            let skip = target.pending.is_none()
                && target.current.is_some_and(|node| is_down(routing.id(node)));
            if skip {
                if let Some(fallback) = targets.next_fallback(routing, &is_down) {
                    let owner = targets.peers[i].current.expect("checked above");
                    targets.peers[i] = Self::fallback(routing, fallback, owner);
                    targets.skipped.push(owner);
                }
            }
        }
        targets
    }

    fn fallback(routing: &Routing, node: NodeIndex, owner: NodeIndex) -> WriteTarget {
        WriteTarget {
            addr: routing.shared_addr(node),
            current: Some(node),
            pending: None,
            hint_for: Some(routing.id(owner).to_owned()),
            stands_in_for: Some(owner),
        }
    }

    /// The next healthy fallback not already written to.
    fn next_fallback(
        &mut self,
        routing: &Routing,
        is_down: impl Fn(&str) -> bool,
    ) -> Option<NodeIndex> {
        // The coordinator and pending-ring owners written to already are passed over.
        while let Some(node) = self.fallbacks.next(routing, &is_down) {
            let addr = routing.addr(node);
            let used = self.peers.iter().any(|t| &*t.addr == addr);
            if !used && Some(node) != routing.me {
                return Some(node);
            }
        }
        None
    }

    /// A fallback in place of target `i` (of the current ring) that failed; its index.
    fn fallback_for(
        &mut self,
        routing: &Routing,
        i: usize,
        is_down: impl Fn(&str) -> bool,
    ) -> Option<usize> {
        let target = &self.peers[i];
        let owner = target.stands_in_for.or(target.current)?;
        let node = self.next_fallback(routing, is_down)?;
        self.peers.push(Self::fallback(routing, node, owner));
        Some(self.peers.len() - 1)
    }

    /// The id of target `i`.
    fn id<'r>(&self, routing: &'r Routing, i: usize) -> Option<&'r str> {
        let target = &self.peers[i];
        match (target.current, &routing.pending, target.pending) {
            (Some(node), _, _) => Some(routing.id(node)),
            (None, Some(pending), Some(node)) => Some(pending.id(node)),
            _ => None,
        }
    }

    /// Counts target `i`'s answer toward the quorums it belongs to.
    fn record(
        &self,
        quorums: &mut Quorums,
        routing: &Routing,
        i: usize,
        result: std::result::Result<(), TransportError>,
    ) -> Progress {
        let target = &self.peers[i];
        let outcome = result.map_err(|error| {
            let id = self.id(routing, i).unwrap_or("?");
            match &target.hint_for {
                Some(owner) => format!("{id} (fallback for {owner}): {error}"),
                None => format!("{id}: {error}"),
            }
        });
        let counts = Counts {
            current: target.current.is_some(),
            pending: target.pending.is_some(),
            primary: target.current.is_some() && target.hint_for.is_none(),
        };
        quorums.record(counts, outcome)
    }
}

/// A request's outcome label: `ok` or the error kind.
fn outcome<T>(result: &Result<T>) -> &'static str {
    result.as_ref().map_or_else(Error::kind, |_| "ok")
}

/// Aborts a storage update with a request error, which [`tx_error`] recovers.
fn abort(error: Error) -> BoxError {
    Arc::new(error)
}

/// A storage transaction's failure as a request error: the update's own error when it
/// aborted, else the storage's.
fn tx_error(error: TxError) -> Error {
    match error {
        TxError::Abort(cause) => cause
            .downcast_ref::<Error>()
            .cloned()
            .unwrap_or_else(|| Error::Internal(cause.to_string())),
        TxError::Storage(error) => error.into(),
    }
}
