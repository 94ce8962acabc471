//! An in-memory network for cluster tests: nodes in one process, messages delivered by
//! direct calls, with the faults a real network has — crashed nodes, dropped and delayed
//! messages, partitions. Unstable: for dotkv's own tests (feature `testing`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dotkv_membership::{GossipRequest, GossipResponse};

use crate::{Error, HandoffPage, Node, PageMode, PutReply, PutRequest, Transport, TransportError};

/// The network: which node answers at which address, and the faults in force.
#[derive(Debug, Default)]
pub struct MemNetwork {
    /// A std mutex: held only to look up a node or a fault, never across an `.await`.
    state: Mutex<NetState>,
}

#[derive(Debug, Default)]
struct NetState {
    /// Live nodes by address; a crashed node is absent (calls to it are refused).
    nodes: HashMap<String, Node>,
    /// Directed links `(from, to)` that lose every message.
    cut: HashSet<(String, String)>,
    /// Messages lost at random, per thousand.
    drop_per_mille: u64,
    /// Added to every delivery.
    delay: Duration,
    /// SplitMix64 state for the random drops (deterministic per test).
    rng: u64,
    /// Added to every delivery to one address (a slow node).
    slow: HashMap<String, Duration>,
    /// Calls delivered or attempted, by destination address and method.
    calls: HashMap<(String, &'static str), u64>,
}

impl NetState {
    fn random_drop(&mut self) -> bool {
        if self.drop_per_mille == 0 {
            return false;
        }
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % 1000 < self.drop_per_mille
    }
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().expect("network state poisoned")
    }

    /// A transport for the node at `from`; its calls give up after `timeout`.
    pub fn transport(self: &Arc<Self>, from: &str, timeout: Duration) -> Arc<MemTransport> {
        Arc::new(MemTransport {
            network: Arc::clone(self),
            from: from.into(),
            timeout,
        })
    }

    /// Makes `node` answer at `addr` (a start or a restart).
    pub fn register(&self, addr: &str, node: Node) {
        self.state().nodes.insert(addr.into(), node);
    }

    /// Removes the node at `addr`: calls to it are refused, as to a killed process.
    pub fn crash(&self, addr: &str) {
        self.state().nodes.remove(addr);
    }

    /// Cuts every link between the two sides, both ways: messages are lost.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        let mut state = self.state();
        for a in side_a {
            for b in side_b {
                state.cut.insert(((*a).into(), (*b).into()));
                state.cut.insert(((*b).into(), (*a).into()));
            }
        }
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.state().cut.clear();
    }

    /// Loses `per_mille` of all messages at random.
    pub fn set_drop_rate(&self, per_mille: u64) {
        self.state().drop_per_mille = per_mille;
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Delays every message to the node at `addr` by `delay` (zero: no longer slow).
    pub fn set_slow(&self, addr: &str, delay: Duration) {
        self.state().slow.insert(addr.into(), delay);
    }

    /// How many `method` calls (a [`Transport`] method's name) were sent to `addr`.
    pub fn calls(&self, addr: &str, method: &str) -> u64 {
        self.state()
            .calls
            .iter()
            .filter(|((to, m), _)| to == addr && *m == method)
            .map(|(_, n)| n)
            .sum()
    }

    /// Forgets every node (they hold the network through their transports; this breaks
    /// the cycle at the end of a test).
    pub fn clear(&self) {
        self.state().nodes.clear();
    }
}

/// One node's view of a [`MemNetwork`].
#[derive(Debug)]
pub struct MemTransport {
    network: Arc<MemNetwork>,
    /// The sender's address, for partitions.
    from: String,
    timeout: Duration,
}

impl MemTransport {
    /// Delivers one call to the node at `addr` through the network's faults.
    async fn call<T, F, Fut>(
        &self,
        addr: &str,
        method: &'static str,
        handler: F,
    ) -> Result<T, TransportError>
    where
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let timeout = || TransportError::Timeout {
            addr: addr.into(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let (node, request_lost, reply_lost, delay) = {
            let mut state = self.network.state();
            *state.calls.entry((addr.to_owned(), method)).or_default() += 1;
            let delay = state.delay + state.slow.get(addr).copied().unwrap_or_default();
            let node = state.nodes.get(addr).cloned();
            let request_lost =
                state.cut.contains(&(self.from.clone(), addr.to_owned())) || state.random_drop();
            let reply_lost =
                state.cut.contains(&(addr.to_owned(), self.from.clone())) || state.random_drop();
            (node, request_lost, reply_lost, delay)
        };
        if request_lost {
            tokio::time::sleep(self.timeout).await;
            return Err(timeout());
        }
        let node = node.ok_or_else(|| TransportError::Unreachable {
            addr: addr.into(),
            reason: "connection refused (no node at this address)".into(),
        })?;
        let delivery = async {
            // Even a zero sleep waits for the timer's next millisecond tick.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            handler(node).await
        };
        let result = tokio::time::timeout(self.timeout, delivery)
            .await
            .map_err(|_| timeout())?;
        if reply_lost {
            tokio::time::sleep(self.timeout).await;
            return Err(timeout());
        }
        result.map_err(|error| TransportError::Remote {
            addr: addr.into(),
            error,
        })
    }
}

#[async_trait]
impl Transport for MemTransport {
    async fn gossip(
        &self,
        addr: &str,
        request: GossipRequest,
    ) -> Result<GossipResponse, TransportError> {
        self.call(addr, "gossip", |node| async move {
            Ok(node.cluster().handle_gossip(request))
        })
        .await
    }

    async fn write_replica(
        &self,
        addr: &str,
        key: Bytes,
        object: Bytes,
    ) -> Result<(), TransportError> {
        self.call(addr, "write_replica", |node| async move {
            node.write_replica(key, object).await
        })
        .await
    }

    async fn read_replica(&self, addr: &str, key: Bytes) -> Result<Option<Bytes>, TransportError> {
        self.call(addr, "read_replica", |node| async move {
            node.read_replica(key).await
        })
        .await
    }

    async fn read_digest(&self, addr: &str, key: Bytes) -> Result<Option<u64>, TransportError> {
        self.call(addr, "read_digest", |node| async move {
            node.read_digest(key).await
        })
        .await
    }

    async fn forward_put(
        &self,
        addr: &str,
        request: PutRequest,
    ) -> Result<PutReply, TransportError> {
        self.call(addr, "forward_put", |node| async move {
            node.put(request).await
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
        self.call(addr, "handoff_page", |node| async move {
            node.handoff_page(partition, after, mode).await
        })
        .await
    }

    async fn wanted(
        &self,
        addr: &str,
        partition: u32,
        offered: Vec<(Bytes, u64)>,
    ) -> Result<Vec<u32>, TransportError> {
        self.call(addr, "wanted", |node| async move {
            node.wanted(partition, offered).await
        })
        .await
    }

    async fn aae_tree(
        &self,
        addr: &str,
        partition: u32,
        branches: Vec<u32>,
    ) -> Result<Option<Vec<u64>>, TransportError> {
        self.call(addr, "aae_tree", |node| async move {
            Ok(node.aae_tree(partition, &branches))
        })
        .await
    }

    async fn aae_keys(
        &self,
        addr: &str,
        partition: u32,
        leaves: Vec<u32>,
    ) -> Result<Vec<(Bytes, u64)>, TransportError> {
        self.call(addr, "aae_keys", |node| async move {
            node.aae_keys(partition, &leaves).await
        })
        .await
    }

    async fn aae_sync(
        &self,
        addr: &str,
        partition: u32,
        objects: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<(Bytes, Bytes)>, TransportError> {
        self.call(addr, "aae_sync", |node| async move {
            node.aae_sync(partition, objects).await
        })
        .await
    }

    async fn push_partition(
        &self,
        addr: &str,
        partition: u32,
        entries: Vec<(Bytes, Bytes)>,
    ) -> Result<(), TransportError> {
        self.call(addr, "push_partition", |node| async move {
            node.merge_page(partition, entries).await
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
        self.call(addr, "write_hint", |node| async move {
            node.write_hint(target, key, object).await
        })
        .await
    }

    async fn read_hints(
        &self,
        addr: &str,
        key: Bytes,
    ) -> Result<Vec<(String, Bytes)>, TransportError> {
        self.call(addr, "read_hints", |node| async move {
            node.read_hints(key).await
        })
        .await
    }
}
