//! The membership driver: the gossip loop of one node, its persisted view, its ring.

use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dotkv_membership::{
    ClusterState, GossipRequest, GossipResponse, Gossiper, MemberView, MembershipConfig, NodeState,
    NodeStatus, RingId, RingParams, Topology,
};
use dotkv_ring::{NodeIndex, Ring};
use dotkv_storage::{Storage, StorageExt};

use crate::Transport;

/// The meta entry holding the persisted cluster view: a format byte, then the
/// postcard-encoded [`ClusterState`].
pub const META_CLUSTER_STATE: &str = "cluster_state";

/// The format byte of the persisted view.
/// 2: the view holds the topology (the ring as state) and each member's sync mark.
const VIEW_FORMAT: u8 = 2;

fn encode_view(state: &ClusterState) -> Vec<u8> {
    let mut out = vec![VIEW_FORMAT];
    postcard::to_io(state, &mut out).expect("encoding plain data into a Vec");
    out
}

fn decode_view(bytes: &[u8]) -> Result<ClusterState, String> {
    match bytes.split_first() {
        Some((&VIEW_FORMAT, body)) => postcard::from_bytes(body).map_err(|e| e.to_string()),
        Some((version, _)) => Err(format!("unknown format version {version}")),
        None => Err("empty".into()),
    }
}

/// What a node brings to the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's id.
    pub node_id: String,
    /// This node's entry: address, weight, zone (incarnation and heartbeat are managed).
    pub entry: NodeState,
    /// Seed addresses (this node's own address is ignored).
    pub seeds: Vec<String>,
    /// Gossip and failure detection.
    pub config: MembershipConfig,
    /// The ring's shape.
    pub params: RingParams,
}

/// What a request needs to route itself: the ring and the members' addresses, as one
/// immutable snapshot shared by every request until the view changes.
#[derive(Debug)]
pub struct Routing {
    /// The current ring: reads go to its owners; writes to its owners and, during a
    /// transition, to the pending ring's too.
    pub ring: Ring,
    /// The ring a transition moves to, with its own addresses and index of this node.
    pub pending: Option<Arc<Self>>,
    /// Each ring member's address, by [`NodeIndex`]; shared so that a request's replica
    /// calls take a refcount, not a copy.
    pub addrs: Vec<Arc<str>>,
    /// This node's index in the ring, if it is a member.
    pub me: Option<NodeIndex>,
}

impl Routing {
    /// The address of ring member `node`.
    pub fn addr(&self, node: NodeIndex) -> &str {
        &self.addrs[usize::from(node)]
    }

    /// The address of ring member `node`, shared.
    pub fn shared_addr(&self, node: NodeIndex) -> Arc<str> {
        Arc::clone(&self.addrs[usize::from(node)])
    }

    /// The id of ring member `node`.
    pub fn id(&self, node: NodeIndex) -> &str {
        &self.ring.member(node).id
    }

    /// The snapshot of one ring, addresses looked up in `state`.
    fn of(ring: &Ring, me: &str, state: &ClusterState) -> Self {
        let addrs = ring
            .members()
            .iter()
            .map(|m| state.get(&m.id).map_or("", |e| e.addr.as_str()).into())
            .collect();
        Self {
            ring: ring.clone(),
            pending: None,
            me: ring.index_of(me),
            addrs,
        }
    }

    fn same_as(&self, other: &Self) -> bool {
        self.ring.digest() == other.ring.digest()
            && self.ring.version() == other.ring.version()
            && self.addrs == other.addrs
            && match (&self.pending, &other.pending) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_as(b),
                _ => false,
            }
    }
}

/// A node's membership, shared by the gossip loop and the RPC handlers (handle pattern).
#[derive(Debug, Clone)]
pub struct Cluster(Arc<ClusterInner>);

#[derive(Debug)]
struct ClusterInner {
    /// The state machine. A std mutex: it is held only for pure, short calls, never
    /// across an `.await`.
    gossiper: Mutex<Gossiper>,
    /// The origin of the gossip clock.
    epoch: Instant,
    /// The routing snapshot of the current view. Requests take an `Arc` of it (a read
    /// lock held for a clone), so they never wait on the gossiper's mutex; gossip replaces
    /// it when the ring or an address changes.
    routing: RwLock<Option<Arc<Routing>>>,
    store: Arc<dyn Storage>,
    transport: Arc<dyn Transport>,
    interval: Duration,
    /// Gossip rounds started (a metric).
    rounds: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// Loads the persisted view from `store` (if any) and sets up the membership. A node
    /// with a persisted view needs no seeds.
    ///
    /// # Errors
    ///
    /// A storage error, or an undecodable persisted view.
    pub async fn start(
        options: ClusterOptions,
        store: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, dotkv_storage::Error> {
        let persisted = match store.get_meta(META_CLUSTER_STATE).await? {
            Some(bytes) => match decode_view(&bytes) {
                Ok(state) => Some(state),
                Err(error) => {
                    tracing::warn!(%error, "the persisted cluster view does not decode; starting from the seeds");
                    None
                }
            },
            None => None,
        };
        let own_addr = options.entry.addr.clone();
        let seeds = options
            .seeds
            .into_iter()
            .filter(|seed| *seed != own_addr)
            .collect();
        let interval = Duration::from_millis(options.config.gossip_interval_ms);
        let gossiper = Gossiper::new(
            options.node_id,
            options.entry,
            persisted,
            seeds,
            options.config,
            options.params,
            Duration::ZERO,
        );
        let cluster = Self(Arc::new(ClusterInner {
            gossiper: Mutex::new(gossiper),
            epoch: Instant::now(),
            routing: RwLock::new(None),
            store,
            transport,
            interval,
            rounds: std::sync::atomic::AtomicU64::new(0),
        }));
        cluster.refresh_routing();
        cluster.persist_if_changed().await;
        Ok(cluster)
    }

    fn now(&self) -> Duration {
        self.0.epoch.elapsed()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Gossiper) -> R) -> R {
        f(&mut self
            .0
            .gossiper
            .lock()
            .expect("gossiper mutex poisoned: a panic in membership code"))
    }

    /// Answers a peer's gossip request.
    pub fn handle_gossip(&self, request: GossipRequest) -> GossipResponse {
        let now = self.now();
        let response = self.with(|g| g.handle(request, now));
        self.refresh_routing();
        response
    }

    /// The routing snapshot of the current view, or `None` while there is no ring.
    pub fn routing(&self) -> Option<Arc<Routing>> {
        self.0
            .routing
            .read()
            .expect("routing lock poisoned: a panic while replacing it")
            .clone()
    }

    /// Replaces the routing snapshot if the ring or an address changed. The snapshot is
    /// computed and stored under the gossiper's mutex, so that two concurrent refreshes
    /// cannot store an older view over a newer one (lock order: gossiper, then routing;
    /// readers take only the routing lock).
    fn refresh_routing(&self) {
        self.with(|g| {
            let Some(topology) = g.topology() else {
                return;
            };
            let mut fresh = Routing::of(&topology.current, g.id(), g.state());
            fresh.pending = topology
                .pending
                .as_ref()
                .map(|pending| Arc::new(Routing::of(pending, g.id(), g.state())));
            let mut routing = self
                .0
                .routing
                .write()
                .expect("routing lock poisoned: a panic while replacing it");
            if !routing.as_ref().is_some_and(|r| r.same_as(&fresh)) {
                *routing = Some(Arc::new(fresh));
            }
        });
    }

    /// Whether this node's failure detector convicts member `id` now.
    pub fn is_down(&self, id: &str) -> bool {
        let now = self.now();
        self.with(|g| g.is_down(id, now))
    }

    /// Every member with its liveness, as this node sees it.
    pub fn members(&self) -> Vec<MemberView> {
        let now = self.now();
        self.with(|g| g.members(now))
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.with(|g| g.id().to_owned())
    }

    /// This node's own membership status.
    pub fn own_status(&self) -> NodeStatus {
        self.with(|g| g.own_status())
    }

    /// The current ring and the transition in progress, as this node knows them.
    pub fn topology(&self) -> Option<Topology> {
        self.with(|g| g.topology().cloned())
    }

    /// Every member's id, whatever its status.
    pub fn member_ids(&self) -> Vec<String> {
        self.with(|g| g.state().iter().map(|(id, _)| id.clone()).collect())
    }

    /// Member `id` refused a connection: it counts as down until it is heard from again.
    pub fn refused(&self, id: &str) {
        self.with(|g| g.refused(id));
    }

    /// A sign of life from member `id` outside gossip (it answered a replica call).
    pub fn heard_from(&self, id: &str) {
        let now = self.now();
        self.with(|g| g.answered(id, now));
    }

    /// The member `id`'s entry, as this node knows it.
    pub fn member(&self, id: &str) -> Option<NodeState> {
        self.with(|g| g.state().get(id).cloned())
    }

    /// Runs a membership change and persists it at once, so a restart right after it
    /// keeps it.
    async fn change(
        &self,
        change: impl FnOnce(&mut Gossiper) -> Result<(), String>,
    ) -> crate::Result<()> {
        self.with(change).map_err(crate::Error::InvalidArgument)?;
        self.refresh_routing();
        self.persist_if_changed().await;
        Ok(())
    }

    /// This node asks to leave (see [`Gossiper::leave`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when it already left.
    pub async fn leave(&self) -> crate::Result<()> {
        self.change(Gossiper::leave).await
    }

    /// Marks member `id` removed (see [`Gossiper::remove`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an unknown id, this
    /// node, or a member that already left.
    pub async fn remove(&self, id: &str) -> crate::Result<()> {
        self.change(|g| g.remove(id)).await
    }

    /// Makes this lone node join the cluster of `seed` (see [`Gossiper::join`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when it knows other
    /// members already.
    pub async fn join(&self, seed: String) -> crate::Result<()> {
        self.with(|g| g.join(seed))
            .map_err(crate::Error::InvalidArgument)?;
        // Its own ring is forgotten: it owns nothing until the cluster's ring includes it.
        *self
            .0
            .routing
            .write()
            .expect("routing lock poisoned: a panic while replacing it") = None;
        self.persist_if_changed().await;
        Ok(())
    }

    /// How many gossip rounds this node started.
    pub fn gossip_rounds(&self) -> u64 {
        self.0.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The transition in progress: the pending ring's id, the partition replicas that
    /// change owner, and how many of them their receiver has synced.
    pub fn transition_progress(&self) -> Option<(RingId, usize, usize)> {
        self.with(|g| g.transition_progress())
    }

    /// Records that this node received every partition it gains in the pending ring `ring`.
    pub async fn mark_synced(&self, ring: RingId) {
        self.with(|g| g.mark_synced(ring));
        self.persist_if_changed().await;
    }

    /// One gossip exchange with one peer.
    pub async fn gossip_round(&self) {
        self.0
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = self.now();
        let tick = self.with(|g| g.tick(now));
        // As the claimant, the tick may have published a ring.
        self.refresh_routing();
        let Some((addr, syn)) = tick else {
            self.persist_if_changed().await;
            return;
        };
        let ack = match self.0.transport.gossip(&addr, syn).await {
            Ok(ack) => ack,
            Err(error) => {
                tracing::debug!(%error, "gossip failed");
                return;
            }
        };
        let now = self.now();
        let ack2 = self.with(|g| g.handle_ack(ack, now));
        self.refresh_routing();
        if let Some(ack2) = ack2 {
            if let Err(error) = self.0.transport.gossip(&addr, ack2).await {
                tracing::debug!(%error, "gossip ack2 failed");
            }
        }
        self.persist_if_changed().await;
    }

    /// Writes the view to the store when it changed, so a restart resumes from it.
    async fn persist_if_changed(&self) {
        let Some(bytes) = self.with(|g| g.take_changed().then(|| encode_view(g.state()))) else {
            return;
        };
        if let Err(error) = self.0.store.put_meta(META_CLUSTER_STATE, bytes).await {
            tracing::warn!(%error, "cannot persist the cluster view");
        }
    }

    /// Gossips every interval until `shutdown` completes, then persists the view.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        let mut ticker = tokio::time::interval(self.0.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => self.gossip_round().await,
            }
        }
        self.persist_if_changed().await;
    }
}
