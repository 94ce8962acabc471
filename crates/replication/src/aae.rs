//! Active anti-entropy: Merkle-tree exchanges that repair replicas in the background, and
//! the reaping of tombstones (Dynamo §4.7; Riak's tictac AAE).
//!
//! ```text
//!  every write to an object (coordinator, replica merge, read repair, hint, handoff)
//!    └─ inside the storage transaction: tree[p].replace(key, old digest, new digest)
//!  start-up: each partition's tree is built from a scan, in the background
//!  every aae.interval_ms, for each partition p this node owns (no transition pending):
//!    with the next owner of p's preference list (so each pair is compared once a round):
//!      their 32 branch hashes ── differing branches ── their leaf hashes ── differing leaves
//!      (key, digest) lists of those leaves ── differing keys
//!      aae_sync(our objects of those keys) ── the peer merges them (DVVS sync) and returns
//!        its object where it holds something we lack ── we merge it
//!    then reap the tombstones of p past storage.tombstone_grace_s that every owner holds
//! ```
//!
//! A tree is updated inside the storage transaction that changes the object (the update
//! function sees the old and the new bytes), so it follows the store exactly even when
//! the request that wrote is cancelled, and updates commute (XOR), so their order does not
//! matter. While a tree is built, the writes to its partition are recorded and replayed
//! over what the scan saw, so a build needs no lock against writes.
//!
//! # Tombstones
//!
//! A tombstone carries the time of its delete. It is reaped (deleted from the store) once
//! `storage.tombstone_grace_s` has passed since then **and** every owner of its partition
//! answers that it holds the same tombstone or nothing for the key (never a value the
//! tombstone does not cover): until then, exchanges spread it. After the grace period an
//! exchange stops sending a tombstone to a replica that holds nothing for the key, so that
//! replicas reaping at slightly different times do not hand it back to each other.
//!
//! The window inside which a value can come back, as with Cassandra's `gc_grace_seconds`:
//! a copy of the old value that no owner holds when the tombstone is reaped, i.e. a hint
//! kept by a fallback that stays unreachable for longer than the grace period, or a node
//! whose data dir is restored from a backup older than the delete. Keep the grace period
//! longer than any outage you expect a fallback to come back from.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dotkv_merkle::{TictacTree, differing_keys, object_digest, segments_of_leaf};
use dotkv_storage::{StorageExt, Update, UpdateFn};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::object::{deleted_at_ms, merge_into};
use crate::{Error, Node, Result, Routing, decode_object};

/// Anti-entropy settings (`[aae]`, `DOTKV_AAE__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AaeConfig {
    /// Whether the node keeps trees, compares them with its replicas and reaps
    /// tombstones. Default `true`. Off, nothing repairs a replica but reads and hints,
    /// and tombstones are kept forever.
    pub enabled: bool,
    /// How often a node starts a round of exchanges over the partitions it owns, in
    /// milliseconds. Default 30 000.
    pub interval_ms: u64,
    /// How many partitions a node exchanges at once. Default 2.
    pub concurrency: usize,
    /// The most bytes of objects per second a node sends and receives in repairs, all
    /// exchanges together (0: unlimited). Default 16 MiB/s.
    pub max_bytes_per_sec: u64,
    /// The most keys repaired in one batch (one round trip). Default 256.
    pub batch_keys: usize,
    /// Seconds a tombstone is kept after its delete (`storage.tombstone_grace_s`; the
    /// server copies it here).
    #[serde(skip)]
    pub tombstone_grace_s: u64,
}

impl Default for AaeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 30_000,
            concurrency: 2,
            max_bytes_per_sec: 16 << 20,
            batch_keys: 256,
            tombstone_grace_s: 86_400,
        }
    }
}

impl AaeConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=64).contains(&self.concurrency) {
            return Err(format!(
                "aae.concurrency = {} must be between 1 and 64",
                self.concurrency
            ));
        }
        if self.interval_ms < 10 {
            return Err(format!(
                "aae.interval_ms = {} must be at least 10",
                self.interval_ms
            ));
        }
        if !(1..=100_000).contains(&self.batch_keys) {
            return Err(format!(
                "aae.batch_keys = {} must be between 1 and 100000",
                self.batch_keys
            ));
        }
        Ok(())
    }
}

/// The last exchange of a partition this node started, as `dotkv aae` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeView {
    /// The partition.
    pub partition: u32,
    /// The replica compared with.
    pub peer: String,
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Keys that differed and were repaired (on either side).
    pub keys_repaired: u64,
    /// Bytes sent and received: hashes, key lists and objects.
    pub bytes: u64,
    /// Keys repaired in this partition since the node started.
    pub total_repaired: u64,
    /// Why it did not complete, if it did not.
    pub error: Option<String>,
}

/// What `dotkv aae` shows: the node's trees and its exchanges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AaeView {
    /// Whether exchanges run (`aae.enabled`).
    pub enabled: bool,
    /// Partitions whose tree is built.
    pub trees_built: u32,
    /// Partitions of the ring.
    pub partitions: u32,
    /// Keys repaired since the node started.
    pub keys_repaired: u64,
    /// Tombstones reaped since the node started.
    pub tombstones_reaped: u64,
    /// Tombstones waiting for their grace period or for every owner to hold them.
    pub tombstones_pending: u64,
    /// The last exchange of each partition, by partition.
    pub exchanges: Vec<ExchangeView>,
}

/// A partition's tree through its life: not built, being built (writes recorded), built.
#[derive(Debug)]
enum TreeState {
    NotBuilt,
    /// Writes during the scan: the last digest each key got (`None`: deleted).
    Building(HashMap<Vec<u8>, Option<u64>>),
    Built(Box<TictacTree>),
}

/// One partition's tree, shared with the update functions that keep it current.
type SharedTree = Arc<Mutex<TreeState>>;

/// The anti-entropy state of a node.
#[derive(Debug, Default)]
pub(crate) struct AaeState {
    /// One tree per partition, sized at the first ring.
    trees: OnceLock<Vec<SharedTree>>,
    budget: crate::handoff::ByteBudget,
    exchanges: Mutex<BTreeMap<u32, ExchangeView>>,
    /// Deleted keys to reap: (partition, key) → the time of the delete.
    tombstones: Mutex<BTreeMap<(u32, Bytes), u64>>,
    keys_repaired: AtomicU64,
    reaped: AtomicU64,
    /// Exchanges completed (both trees built, repairs done).
    exchanges_done: AtomicU64,
}

/// Whether `object` is a deleted key whose tombstone is past its grace period at `now`.
fn past_grace(object: &crate::Object, grace_ms: u64, now: u64) -> bool {
    deleted_at_ms(object).is_some_and(|at| at + grace_ms <= now)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl TreeState {
    /// Records that `key`'s stored object changed from `old` to `new` bytes.
    fn record(&mut self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        match self {
            Self::NotBuilt => {}
            Self::Building(dirty) => {
                dirty.insert(key.to_vec(), new);
            }
            Self::Built(tree) => tree.replace(key, old, new),
        }
    }
}

impl Node {
    /// The tree of `partition`, once a ring says how many there are (none with
    /// `aae.enabled = false`).
    fn tree(&self, partition: u32) -> Option<&SharedTree> {
        if !self.aae_config().enabled {
            return None;
        }
        let trees = match self.aae_state().trees.get() {
            Some(trees) => trees,
            None => {
                let partitions = self.cluster().routing()?.ring.partitions();
                self.aae_state().trees.get_or_init(|| {
                    (0..partitions)
                        .map(|_| Arc::new(Mutex::new(TreeState::NotBuilt)))
                        .collect()
                })
            }
        };
        trees.get(partition as usize)
    }

    /// The one read-modify-write of a stored object: `f` decides, and the partition's
    /// tree records the change inside the same storage transaction.
    pub(crate) async fn update_object(
        &self,
        partition: u32,
        key: &[u8],
        f: UpdateFn,
    ) -> std::result::Result<Option<Vec<u8>>, dotkv_storage::TxError> {
        let Some(tree) = self.tree(partition).map(Arc::clone) else {
            return self.store().update_object(partition, key, f).await;
        };
        let owned_key = key.to_vec();
        let tracked: UpdateFn = Box::new(move |current: Option<&[u8]>| {
            let decision = f(current)?;
            let new = match &decision {
                Update::Keep => return Ok(decision),
                Update::Put(value) => Some(object_digest(value)),
                Update::Delete => None,
            };
            let old = current.map(object_digest);
            tree.lock()
                .expect("tree poisoned")
                .record(&owned_key, old, new);
            Ok(decision)
        });
        self.store().update_object(partition, key, tracked).await
    }

    /// Notes a key whose object may now be a tombstone, for the reaper.
    pub(crate) fn note_tombstone(&self, partition: u32, key: &[u8], deleted_at: u64) {
        if !self.aae_config().enabled {
            return; // nothing reaps
        }
        self.aae_state()
            .tombstones
            .lock()
            .expect("tombstones poisoned")
            .insert((partition, Bytes::copy_from_slice(key)), deleted_at);
    }

    /// Builds the tree of every partition that is not built yet, one at a time, from a
    /// scan of the store; requests are served meanwhile.
    pub async fn build_trees(&self) {
        let started = Instant::now();
        let Some(partitions) = self.cluster().routing().map(|r| r.ring.partitions()) else {
            return;
        };
        let mut keys = 0u64;
        for partition in 0..partitions {
            match self.build_tree(partition).await {
                Ok(built) => keys += built,
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot build the anti-entropy tree");
                }
            }
        }
        tracing::info!(
            partitions,
            keys,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "anti-entropy trees built"
        );
    }

    /// Builds `partition`'s tree if it is not built; returns the keys scanned.
    async fn build_tree(&self, partition: u32) -> Result<u64> {
        let Some(shared) = self.tree(partition).map(Arc::clone) else {
            return Ok(0);
        };
        {
            let mut state = shared.lock().expect("tree poisoned");
            if !matches!(*state, TreeState::NotBuilt) {
                return Ok(0);
            }
            *state = TreeState::Building(HashMap::new());
        }
        let mut tree = TictacTree::new();
        // What the scan saw of each key, to replace it with what a write left meanwhile.
        let mut scanned: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = match self
                .store()
                .scan_partition(partition, after.as_deref(), 1024)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    *shared.lock().expect("tree poisoned") = TreeState::NotBuilt;
                    return Err(error.into());
                }
            };
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, value) in page {
                let digest = object_digest(&value);
                tree.toggle(&key, digest);
                if let Some(deleted_at) = decode_object(&value, "the local store")
                    .ok()
                    .as_ref()
                    .and_then(deleted_at_ms)
                {
                    self.note_tombstone(partition, &key, deleted_at);
                }
                scanned.insert(key, digest);
            }
        }
        let keys = scanned.len() as u64;
        let mut state = shared.lock().expect("tree poisoned");
        if let TreeState::Building(dirty) = std::mem::replace(&mut *state, TreeState::NotBuilt) {
            for (key, latest) in dirty {
                tree.replace(&key, scanned.get(&key).copied(), latest);
            }
        }
        *state = TreeState::Built(Box::new(tree));
        Ok(keys)
    }

    /// A copy of `partition`'s tree, if it is built.
    fn built_tree(&self, partition: u32) -> Option<TictacTree> {
        match &*self.tree(partition)?.lock().expect("tree poisoned") {
            TreeState::Built(tree) => Some(TictacTree::clone(tree)),
            _ => None,
        }
    }

    /// A peer's tree request: the branch hashes of `partition` (`branches` empty), or the
    /// leaf hashes of `branches`, in order; `None` while the tree is not built.
    pub fn aae_tree(&self, partition: u32, branches: &[u32]) -> Option<Vec<u64>> {
        let tree = self.built_tree(partition)?;
        if branches.is_empty() {
            return Some(tree.branch_hashes().to_vec());
        }
        Some(
            branches
                .iter()
                .filter(|&&b| (b as usize) < dotkv_merkle::BRANCHES)
                .flat_map(|&b| tree.leaf_hashes(b as usize).iter().copied())
                .collect(),
        )
    }

    /// A peer's key-list request: `(key, object digest)` of every key this node holds in
    /// `leaves` of `partition`.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a storage failure.
    pub async fn aae_keys(&self, partition: u32, leaves: &[u32]) -> Result<Vec<(Bytes, u64)>> {
        let mut items = Vec::new();
        for &leaf in leaves {
            if leaf as usize >= dotkv_merkle::LEAVES {
                continue;
            }
            let segments = segments_of_leaf(leaf as usize);
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = self
                    .store()
                    .scan_segments(partition, segments.clone(), after.as_deref(), 1024)
                    .await?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                items.extend(
                    page.into_iter()
                        .map(|(key, value)| (Bytes::from(key), object_digest(&value))),
                );
            }
        }
        Ok(items)
    }

    /// A peer's repair request: merges each sent object, and answers, for each key, this
    /// node's object where it holds something the sender lacks (or all of it when the
    /// sender sent nothing), except a tombstone past its grace period, which the sender
    /// does not need.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an undecodable object; [`Error::Internal`] for a
    /// storage failure.
    pub async fn aae_sync(
        &self,
        partition: u32,
        objects: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let grace_ms = self.aae_config().tombstone_grace_s.saturating_mul(1000);
        let now = now_ms();
        let answers = objects.into_iter().map(|(key, sent)| async move {
            if let Some(sent) = &sent {
                let incoming = decode_object(sent, "an anti-entropy repair")
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                self.merge_local(partition, &key, incoming, sent.clone())
                    .await?;
            }
            let Some(held) = self.store().get_object(partition, &key).await? else {
                return Ok(None);
            };
            let object = decode_object(&held, "the local store")?;
            let answer = match &sent {
                // The merge left what was sent: the sender lacks nothing.
                Some(sent) if held == sent[..] => false,
                Some(sent) => {
                    let sent = decode_object(sent, "an anti-entropy repair")?;
                    merge_into(&sent, &object).is_some()
                }
                None => !past_grace(&object, grace_ms, now),
            };
            Ok::<_, Error>(answer.then(|| (key, Bytes::from(held))))
        });
        let answers: Vec<Option<(Bytes, Bytes)>> = futures::future::try_join_all(answers).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// How many anti-entropy exchanges this node completed.
    pub fn aae_exchanges(&self) -> u64 {
        self.aae_state().exchanges_done.load(Ordering::Relaxed)
    }

    /// What `dotkv aae` shows.
    pub fn aae_view(&self) -> AaeView {
        let state = self.aae_state();
        let (built, partitions) = state.trees.get().map_or((0, 0), |trees| {
            let built = trees
                .iter()
                .filter(|t| matches!(*t.lock().expect("tree poisoned"), TreeState::Built(_)))
                .count();
            (built as u32, trees.len() as u32)
        });
        AaeView {
            enabled: self.aae_config().enabled,
            trees_built: built,
            partitions,
            keys_repaired: state.keys_repaired.load(Ordering::Relaxed),
            tombstones_reaped: state.reaped.load(Ordering::Relaxed),
            tombstones_pending: state.tombstones.lock().expect("tombstones poisoned").len() as u64,
            exchanges: state
                .exchanges
                .lock()
                .expect("exchanges poisoned")
                .values()
                .cloned()
                .collect(),
        }
    }

    /// Builds the trees, then runs a round of exchanges and reaping every
    /// `aae.interval_ms` until `shutdown`.
    pub async fn run_aae(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        if !self.aae_config().enabled {
            return;
        }
        tokio::pin!(shutdown);
        // The trees need a ring to know the partitions.
        while self.cluster().routing().is_none() {
            tokio::select! {
                _ = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            () = self.build_trees() => {}
        }
        let period = Duration::from_millis(self.aae_config().interval_ms);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let Some(routing) = self.cluster().routing() else {
                continue;
            };
            tokio::select! {
                _ = &mut shutdown => return,
                () = self.aae_round(&routing) => {}
            }
        }
    }

    /// One round: every partition this node owns exchanges with the next owner, then
    /// reaps its tombstones.
    pub async fn aae_round(&self, routing: &Arc<Routing>) {
        let Some(me) = routing.me else { return };
        let settled = |partition: u32| {
            routing.pending.as_ref().is_none_or(|pending| {
                let ids = |r: &Routing| -> Vec<String> {
                    r.ring
                        .preference_list(partition)
                        .iter()
                        .map(|&n| r.id(n).to_owned())
                        .collect()
                };
                ids(pending) == ids(routing)
            })
        };
        // The partitions this node owns, each with the replica it compares with: the next
        // owner, so each pair once a round (of two owners, the first compares).
        let work: Vec<(u32, Option<dotkv_ring::NodeIndex>)> = (0..routing.ring.partitions())
            .filter(|&p| settled(p))
            .filter_map(|partition| {
                let owners = routing.ring.preference_list(partition);
                let at = owners.iter().position(|&n| n == me)?;
                let compares = owners.len() > 2 || (owners.len() == 2 && at == 0);
                Some((partition, compares.then(|| owners[(at + 1) % owners.len()])))
            })
            .collect();
        // Tombstones of partitions this node no longer owns left with their objects (a
        // handoff brings them back, noted again, if the partition returns).
        let owned: std::collections::HashSet<u32> = work.iter().map(|&(p, _)| p).collect();
        self.aae_state()
            .tombstones
            .lock()
            .expect("tombstones poisoned")
            .retain(|(partition, _), _| owned.contains(partition));
        futures::stream::iter(work)
            .for_each_concurrent(
                self.aae_config().concurrency,
                |(partition, peer)| async move {
                    // A tree whose build failed (a storage error) is built again here.
                    if let Err(error) = self.build_tree(partition).await {
                        tracing::warn!(partition, %error, "cannot build the anti-entropy tree");
                        return;
                    }
                    if let Some(peer) = peer.filter(|&p| !self.cluster().is_down(routing.id(p))) {
                        self.exchange(routing, partition, peer).await;
                    }
                    self.reap(routing, partition).await;
                },
            )
            .await;
    }

    /// Compares `partition` with `peer` and repairs what differs; records the outcome.
    async fn exchange(&self, routing: &Routing, partition: u32, peer: dotkv_ring::NodeIndex) {
        let peer_id = routing.id(peer).to_owned();
        let outcome = self.compare_and_repair(routing, partition, peer).await;
        let state = self.aae_state();
        let mut exchanges = state.exchanges.lock().expect("exchanges poisoned");
        let total = exchanges.get(&partition).map_or(0, |e| e.total_repaired);
        let view = match outcome {
            Ok(None) => return, // a tree is not built yet: nothing to record
            Ok(Some((keys, bytes))) => {
                state.exchanges_done.fetch_add(1, Ordering::Relaxed);
                if keys > 0 {
                    state.keys_repaired.fetch_add(keys, Ordering::Relaxed);
                    tracing::info!(
                        partition,
                        peer = %peer_id,
                        keys,
                        bytes,
                        "anti-entropy repaired keys"
                    );
                }
                ExchangeView {
                    partition,
                    peer: peer_id,
                    at_ms: now_ms(),
                    keys_repaired: keys,
                    bytes,
                    total_repaired: total + keys,
                    error: None,
                }
            }
            Err(error) => {
                tracing::debug!(partition, peer = %peer_id, %error, "anti-entropy exchange failed");
                ExchangeView {
                    partition,
                    peer: peer_id,
                    at_ms: now_ms(),
                    keys_repaired: 0,
                    bytes: 0,
                    total_repaired: total,
                    error: Some(error.to_string()),
                }
            }
        };
        exchanges.insert(partition, view);
    }

    /// The exchange itself: `None` when either tree is not built; else the keys repaired
    /// and the bytes exchanged (hashes, key lists, objects).
    async fn compare_and_repair(
        &self,
        routing: &Routing,
        partition: u32,
        peer: dotkv_ring::NodeIndex,
    ) -> Result<Option<(u64, u64)>> {
        let addr = routing.addr(peer);
        let transport = self.transport();
        let Some(ours) = self.built_tree(partition) else {
            return Ok(None);
        };
        let Some(theirs) = transport.aae_tree(addr, partition, Vec::new()).await? else {
            return Ok(None);
        };
        // Hashes and key lists count toward the bytes exchanged, as the objects do.
        let mut moved = (theirs.len() * 8) as u64;
        let branches = ours.differing_branches(&theirs);
        if branches.is_empty() {
            return Ok(Some((0, moved)));
        }
        let wire: Vec<u32> = branches.iter().map(|&b| b as u32).collect();
        let their_leaves = transport
            .aae_tree(addr, partition, wire)
            .await?
            .unwrap_or_default();
        moved += (branches.len() * 4 + their_leaves.len() * 8) as u64;
        let leaves: Vec<u32> = branches
            .iter()
            .zip(their_leaves.chunks(dotkv_merkle::LEAVES_PER_BRANCH))
            .flat_map(|(&branch, theirs)| ours.differing_leaves(branch, theirs))
            .map(|leaf| leaf as u32)
            .collect();
        let (our_items, their_items) =
            futures::future::try_join(self.aae_keys(partition, &leaves), async {
                transport
                    .aae_keys(addr, partition, leaves.clone())
                    .await
                    .map_err(Error::from)
            })
            .await?;
        let keys = differing_keys(
            our_items.iter().map(|(k, d)| (&k[..], *d)),
            their_items.iter().map(|(k, d)| (&k[..], *d)),
        );
        moved += (leaves.len() * 4) as u64
            + their_items
                .iter()
                .map(|(k, _)| k.len() as u64 + 8)
                .sum::<u64>();
        let they_hold: std::collections::HashSet<&[u8]> =
            their_items.iter().map(|(k, _)| &k[..]).collect();
        let grace_ms = self.aae_config().tombstone_grace_s.saturating_mul(1000);
        let mut repaired = 0u64;
        for chunk in keys.chunks(self.aae_config().batch_keys) {
            let mut batch = Vec::with_capacity(chunk.len());
            let now = now_ms();
            for key in chunk {
                let held = self.store().get_object(partition, key).await?;
                let expired = |object: &[u8]| {
                    decode_object(object, "the local store")
                        .is_ok_and(|object| past_grace(&object, grace_ms, now))
                };
                // A tombstone past its grace is not sent where nothing is held: it is
                // about to be reaped there too.
                let send = held.filter(|object| they_hold.contains(&key[..]) || !expired(object));
                batch.push((Bytes::copy_from_slice(key), send.map(Bytes::from)));
            }
            let sent: usize = batch
                .iter()
                .map(|(_, o)| o.as_ref().map_or(0, Bytes::len))
                .sum();
            self.aae_state()
                .budget
                .spend(sent, self.aae_config().max_bytes_per_sec)
                .await;
            let answers = transport.aae_sync(addr, partition, batch).await?;
            let received: usize = answers.iter().map(|(_, o)| o.len()).sum();
            let answers_keys: u64 = answers.iter().map(|(k, _)| k.len() as u64).sum();
            self.aae_state()
                .budget
                .spend(received, self.aae_config().max_bytes_per_sec)
                .await;
            for (key, object) in answers {
                let incoming = decode_object(&object, "an anti-entropy answer")?;
                self.merge_local(partition, &key, incoming, object).await?;
            }
            repaired += chunk.len() as u64;
            moved += chunk.iter().map(|k| k.len() as u64).sum::<u64>()
                + answers_keys
                + (sent + received) as u64;
        }
        Ok(Some((repaired, moved)))
    }

    /// Reaps `partition`'s tombstones whose grace period is over and that every owner
    /// holds (or holds nothing for): deletes them here, exactly as they are.
    async fn reap(&self, routing: &Routing, partition: u32) {
        let grace_ms = self.aae_config().tombstone_grace_s.saturating_mul(1000);
        let now = now_ms();
        let due: Vec<Bytes> = {
            let tombstones = self
                .aae_state()
                .tombstones
                .lock()
                .expect("tombstones poisoned");
            tombstones
                .range((partition, Bytes::new())..)
                .take_while(|((p, _), _)| *p == partition)
                .filter(|(_, at)| **at + grace_ms <= now)
                .map(|((_, key), _)| key.clone())
                .collect()
        };
        for key in due {
            match self.reap_one(routing, partition, &key, grace_ms, now).await {
                Ok(Some(true)) => {
                    self.aae_state().reaped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(false)) => continue, // an owner lacks it or did not answer: retry
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(partition, %error, "cannot reap a tombstone; will retry");
                    continue;
                }
            }
            self.aae_state()
                .tombstones
                .lock()
                .expect("tombstones poisoned")
                .remove(&(partition, key));
        }
    }

    /// Reaps one tombstone: `Some(true)` reaped, `Some(false)` not yet (keep it a
    /// candidate), `None` no longer a tombstone past its grace (forget it).
    async fn reap_one(
        &self,
        routing: &Routing,
        partition: u32,
        key: &Bytes,
        grace_ms: u64,
        now: u64,
    ) -> Result<Option<bool>> {
        let Some(held) = self.store().get_object(partition, key).await? else {
            return Ok(None);
        };
        let object = decode_object(&held, "the local store")?;
        match deleted_at_ms(&object) {
            Some(at) if at + grace_ms <= now => {}
            Some(at) => {
                // A later delete merged in: wait for its own grace.
                self.note_tombstone(partition, key, at);
                return Ok(Some(false));
            }
            None => return Ok(None),
        }
        for &owner in routing.ring.preference_list(partition) {
            if Some(owner) == routing.me {
                continue;
            }
            let theirs = self
                .transport()
                .read_replica(routing.addr(owner), key.clone())
                .await
                .map_err(Error::from)?;
            if let Some(theirs) = theirs {
                let theirs = decode_object(&theirs, "a replica")?;
                if merge_into(&object, &theirs).is_some() {
                    // It knows something this tombstone does not cover: no reaping
                    // until exchanges have merged both.
                    return Ok(Some(false));
                }
            }
        }
        let deleted = self
            .delete_if_unchanged(
                dotkv_storage::Keyspace::Objects,
                &dotkv_storage::keys::object_key(partition, key),
                Bytes::from(held),
            )
            .await?;
        Ok(Some(deleted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store orders keys by the segment the tree files them under: both crates must
    /// compute the same one (they cannot share the function: neither depends on the other).
    #[test]
    fn the_store_and_the_tree_agree_on_segments() {
        for i in 0..10_000u32 {
            let key = format!("key-{i}");
            assert_eq!(
                dotkv_storage::keys::segment_of(key.as_bytes()),
                dotkv_merkle::segment_of(key.as_bytes())
            );
        }
    }

    #[test]
    fn the_settings_are_checked() {
        assert!(AaeConfig::default().validate().is_ok());
        let bad = AaeConfig {
            concurrency: 0,
            ..AaeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("aae.concurrency"));
    }
}
