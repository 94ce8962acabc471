//! An in-process cluster: N nodes in one test over the in-memory network, each with its
//! own memory store, gossip loop and coordinator, and the faults of a real cluster —
//! crash and restart (the store survives, as a disk does), dropped and delayed messages,
//! partitions.

use std::sync::Arc;
use std::time::Duration;

use dotkv_membership::{MembershipConfig, NodeState, NodeStatus, RingParams};
use dotkv_replication::testing::MemNetwork;
use dotkv_replication::{
    AaeConfig, Cluster, ClusterOptions, HandoffConfig, LimitsConfig, Node, NodeSettings, Object,
    ReplicationConfig, decode_object,
};
use dotkv_storage::{MemoryStorage, Storage, StorageExt};
use dotkv_versioning::ReplicaId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Partitions of the test rings: small, so that a ring builds at once.
pub const PARTITIONS: u32 = 64;
/// The deadline of a call between in-process nodes.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(300);

/// One node of a [`TestCluster`].
pub struct TestNode {
    pub id: String,
    pub addr: String,
    store: Arc<MemoryStorage>,
    /// `None` while crashed.
    running: Option<Running>,
}

struct Running {
    node: Node,
    stop: watch::Sender<bool>,
    gossip: JoinHandle<()>,
    handoff: JoinHandle<()>,
    aae: JoinHandle<()>,
}

/// N in-process nodes over one [`MemNetwork`].
pub struct TestCluster {
    pub network: Arc<MemNetwork>,
    pub nodes: Vec<TestNode>,
    config: ReplicationConfig,
    limits: LimitsConfig,
    /// Ownership handoff settings of every node (small pages, so transfers take many).
    pub handoff: HandoffConfig,
    /// Anti-entropy settings of every node.
    pub aae: AaeConfig,
}

fn membership() -> MembershipConfig {
    MembershipConfig {
        gossip_interval_ms: 20,
        phi_min_std_dev_ms: 50,
        phi_acceptable_pause_ms: 200,
        ..MembershipConfig::default()
    }
}

impl TestCluster {
    /// Starts `n` nodes (`n1`..) with the default N = 3, R = W = 2, and waits until every
    /// node sees every other up with the same ring.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, ReplicationConfig::default(), LimitsConfig::default()).await
    }

    /// [`start`](Self::start) with the given replication settings and limits.
    pub async fn start_with(n: usize, config: ReplicationConfig, limits: LimitsConfig) -> Self {
        // Trees are kept (every write path updates them), but no exchange runs within a
        // test: it would repair what other tests wait for other paths to repair.
        let aae = AaeConfig {
            interval_ms: 3_600_000,
            ..AaeConfig::default()
        };
        Self::start_configured(n, config, limits, aae).await
    }

    /// [`start_with`](Self::start_with) and the given anti-entropy settings.
    pub async fn start_configured(
        n: usize,
        config: ReplicationConfig,
        limits: LimitsConfig,
        aae: AaeConfig,
    ) -> Self {
        let mut cluster = Self {
            network: MemNetwork::new(),
            nodes: Vec::new(),
            config,
            limits,
            handoff: HandoffConfig {
                interval_ms: 20,
                page_keys: 64,
                ..HandoffConfig::default()
            },
            aae,
        };
        for _ in 0..n {
            cluster.add_node();
            cluster.boot(cluster.nodes.len() - 1).await;
        }
        cluster.wait_converged().await;
        cluster
    }

    /// Adds node `n{len + 1}` (not started: [`start_node`](Self::start_node) boots it);
    /// returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len() + 1;
        self.nodes.push(TestNode {
            id: format!("n{i}"),
            addr: format!("mem:{i}"),
            store: Arc::new(MemoryStorage::new()),
            running: None,
        });
        i - 1
    }

    /// Boots node `i`, joining through node 0 (the first node founds the cluster), without
    /// waiting for anything.
    pub async fn start_node(&mut self, i: usize) {
        self.boot(i).await;
    }

    async fn boot(&mut self, i: usize) {
        let seeds = if i == 0 {
            vec![]
        } else {
            vec![self.nodes[0].addr.clone()]
        };
        let config = self.config.clone();
        let limits = self.limits.clone();
        let handoff = self.handoff.clone();
        let entry = &self.nodes[i];
        let transport = self.network.transport(&entry.addr, PEER_TIMEOUT);
        let store: Arc<dyn Storage> = Arc::clone(&entry.store) as _;
        let options = ClusterOptions {
            node_id: entry.id.clone(),
            entry: NodeState {
                incarnation: 1,
                heartbeat: 0,
                addr: entry.addr.clone(),
                status: if seeds.is_empty() {
                    NodeStatus::Up
                } else {
                    NodeStatus::Joining
                },
                weight: 1,
                zone: "z".into(),
                synced: Default::default(),
            },
            seeds,
            config: membership(),
            params: RingParams {
                replicas: config.n,
                partitions: PARTITIONS,
            },
        };
        let cluster = Cluster::start(options, Arc::clone(&store), Arc::clone(&transport) as _)
            .await
            .expect("start the membership");
        // The store survives a crash here, so the node id alone is a unique replica id.
        let replica = ReplicaId::from_name(&entry.id);
        let node = Node::new(
            cluster.clone(),
            store,
            transport,
            replica,
            NodeSettings {
                replication: config,
                limits,
                handoff,
                aae: self.aae.clone(),
            },
        );
        self.network.register(&entry.addr, node.clone());
        let (stop, stopped) = watch::channel(false);
        let until = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let stopped_gossip = until(stopped.clone());
        let gossip = tokio::spawn(async move { cluster.run(stopped_gossip).await });
        let handoff = {
            let node = node.clone();
            let stopped = until(stopped.clone());
            tokio::spawn(async move { node.run_handoff(stopped).await })
        };
        let aae = {
            let node = node.clone();
            let stopped = until(stopped);
            tokio::spawn(async move { node.run_aae(stopped).await })
        };
        self.nodes[i].running = Some(Running {
            node,
            stop,
            gossip,
            handoff,
            aae,
        });
    }

    /// The coordinator of node `i` (0-based). Panics if it is crashed.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
            .running
            .as_ref()
            .expect("node is crashed")
            .node
    }

    /// Waits (up to 20 s) until every running node sees every running node up, and all
    /// agree on the ring, with no transition pending.
    pub async fn wait_converged(&self) {
        let running: Vec<&TestNode> = self.nodes.iter().filter(|n| n.running.is_some()).collect();
        for _ in 0..1000 {
            let converged = running.iter().all(|n| {
                let node = &n.running.as_ref().expect("running").node;
                let members = node.cluster().members();
                running
                    .iter()
                    .all(|other| members.iter().any(|m| m.id == other.id && !m.down))
            });
            let digests: Vec<Option<u64>> = running
                .iter()
                .map(|n| {
                    let node = &n.running.as_ref().expect("running").node;
                    node.cluster().routing().map(|r| r.ring.digest())
                })
                .collect();
            let settled = running.iter().all(|n| {
                let node = &n.running.as_ref().expect("running").node;
                node.cluster()
                    .routing()
                    .is_some_and(|r| r.pending.is_none() && r.me.is_some())
            });
            if converged
                && settled
                && digests.windows(2).all(|w| w[0] == w[1])
                && digests[0].is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the cluster did not converge within 20 s");
    }

    /// Kills node `i`: it stops answering (calls to it are refused); its store survives.
    pub async fn crash(&mut self, i: usize) {
        self.network.crash(&self.nodes[i].addr);
        if let Some(running) = self.nodes[i].running.take() {
            let _ = running.stop.send(true);
            let _ = running.gossip.await;
            let _ = running.handoff.await;
            let _ = running.aae.await;
        }
    }

    /// Replaces crashed node `i`'s store by an empty one: a lost disk.
    pub fn wipe(&mut self, i: usize) {
        assert!(!self.is_running(i), "wipe a crashed node");
        self.nodes[i].store = Arc::new(MemoryStorage::new());
    }

    /// Restarts node `i` on its store, and waits for the cluster to see it again.
    pub async fn restart(&mut self, i: usize) {
        self.boot(i).await;
        self.wait_converged().await;
    }

    /// What node `i`'s own store holds for `key` (no network).
    pub async fn stored(&self, i: usize, key: &[u8]) -> Option<Object> {
        let routing = self
            .nodes
            .iter()
            .find_map(|n| n.running.as_ref())?
            .node
            .cluster()
            .routing()?;
        let partition = routing.ring.partition_of(key);
        self.nodes[i]
            .store
            .get_object(partition, key)
            .await
            .expect("read the store")
            .map(|bytes| decode_object(&bytes, "test").expect("a decodable object"))
    }

    /// Everything node `i`'s own store holds: key → object, over every partition.
    pub async fn held(&self, i: usize) -> std::collections::BTreeMap<Vec<u8>, Object> {
        let mut held = std::collections::BTreeMap::new();
        for partition in 0..PARTITIONS {
            let rows = self.nodes[i]
                .store
                .scan_partition(partition, None, usize::MAX)
                .await
                .expect("scan the store");
            for (key, bytes) in rows {
                let object = decode_object(&bytes, "test").expect("a decodable object");
                held.insert(key, object);
            }
        }
        held
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].running.is_some()
    }

    /// The routing snapshot of the first running node.
    pub fn routing(&self) -> std::sync::Arc<dotkv_replication::Routing> {
        self.nodes
            .iter()
            .find_map(|n| n.running.as_ref())
            .and_then(|r| r.node.cluster().routing())
            .expect("a running node with a ring")
    }

    /// The indices (0-based) of `key`'s preference list.
    pub fn owners(&self, key: &[u8]) -> Vec<usize> {
        let routing = self.node(0).cluster().routing().expect("a ring");
        let partition = routing.ring.partition_of(key);
        routing
            .ring
            .preference_list(partition)
            .iter()
            .map(|&n| {
                let id = routing.id(n);
                self.nodes
                    .iter()
                    .position(|t| t.id == id)
                    .expect("a member")
            })
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(running) = node.running.take() {
                let _ = running.stop.send(true);
                running.gossip.abort();
                running.handoff.abort();
                running.aae.abort();
            }
        }
        // The nodes hold the network through their transports: break the cycle.
        self.network.clear();
    }
}

/// Polls `check` every 25 ms for up to `seconds`; returns whether it held.
pub async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..seconds * 40 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
