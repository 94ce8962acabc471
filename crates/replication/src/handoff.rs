//! Ownership handoff: moving partition replicas to their new owners when the ring changes
//! (DeCandia et al., SOSP 2007, §4.9; Riak's handoff, Cassandra's bootstrap streaming).
//!
//! ```text
//!  claimant publishes pending ring P (current ring C stays in force for reads)
//!    writes: to C's owners and P's owners, W of each (see the coordinator)
//!    each node gaining partition p in P:
//!        pull p from its source in pages (scan, bounded by keys and bytes, throttled),
//!        merge every object with DVVS sync, persist the cursor after every page
//!        all gained partitions done --> mark P synced (gossiped)
//!  claimant sees every receiver synced --> P becomes current
//!    each node holding a partition it does not own in the current ring (and no transition
//!    pending): offer its keys' digests to the owners, push what they lack or hold
//!    differently, then delete exactly what it pushed (compare-and-delete)
//! ```
//!
//! The receiver drives a transfer, as Cassandra's bootstrap does, so that one side's state
//! (the cursor, in the receiver's meta keyspace) is enough to resume after either side
//! restarts: a sender that restarts just answers the next page request. The source of a
//! partition is the node it moves from ([`Move::from`](dotkv_ring::Move)); when that node
//! was removed (or the replica count grew), every other current owner is a source, so a
//! removed node's replicas are rebuilt from all the survivors.
//!
//! Dropping a partition only after offering it to its owners is what keeps a write that
//! reached an old owner late (a coordinator with a stale ring, two claimants on both sides
//! of a network partition) from being lost; a key the owners already hold costs an
//! 8-byte digest, not its value.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dotkv_membership::{NodeStatus, RingId};
use dotkv_merkle::object_digest;
use dotkv_storage::{Keyspace, ScanRange, StorageExt, WriteBatch};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Error, Node, Result, Routing, decode_object};

/// Ownership handoff settings (`[handoff]`, `DOTKV_HANDOFF__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffConfig {
    /// The most bytes per second a node receives in partition transfers, all transfers
    /// together (0: unlimited). Default 64 MiB/s.
    pub max_bytes_per_sec: u64,
    /// How many partitions a node receives at once. Default 2 (Riak's
    /// `handoff_concurrency` default is 2 per node as well).
    pub concurrency: usize,
    /// The most keys in one page of a transfer. Default 512.
    pub page_keys: usize,
    /// The most bytes in one page (the first object of a page always goes, whatever its
    /// size). Default 1 MiB; keep it well under `rpc.max_frame_bytes`.
    pub page_bytes: usize,
    /// How often a node looks for partitions to receive or hand off, and hints to
    /// deliver, in milliseconds. Default 500.
    pub interval_ms: u64,
    /// The most bytes of hints a node keeps for unreachable owners; past it, it refuses
    /// hinted writes and the coordinator tries the next fallback. Default 1 GiB.
    pub max_hint_bytes: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_sec: 64 << 20,
            concurrency: 2,
            page_keys: 512,
            page_bytes: 1 << 20,
            interval_ms: 500,
            max_hint_bytes: 1 << 30,
        }
    }
}

impl HandoffConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=64).contains(&self.concurrency) {
            return Err(format!(
                "handoff.concurrency = {} must be between 1 and 64",
                self.concurrency
            ));
        }
        if !(1..=100_000).contains(&self.page_keys) {
            return Err(format!(
                "handoff.page_keys = {} must be between 1 and 100000",
                self.page_keys
            ));
        }
        if !(1024..=256 << 20).contains(&self.page_bytes) {
            return Err(format!(
                "handoff.page_bytes = {} must be between 1024 and 268435456",
                self.page_bytes
            ));
        }
        if !(10..=60_000).contains(&self.interval_ms) {
            return Err(format!(
                "handoff.interval_ms = {} must be between 10 and 60000",
                self.interval_ms
            ));
        }
        Ok(())
    }
}

/// What a page of a transfer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageMode {
    /// Each key's encoded object: from the partition's main source.
    Objects,
    /// Each key's object digest (8 bytes, little-endian): from the other current owners,
    /// whose objects the receiver fetches only where it lacks them or holds another
    /// version.
    Digests,
}

/// One page of a partition, as a transfer's source sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffPage {
    /// `(key, encoded object)` or `(key, digest)` (see [`PageMode`]), in key order.
    pub entries: Vec<(Bytes, Bytes)>,
    /// Whether the partition ends with this page.
    pub done: bool,
}

/// A partition transfer this node is receiving, for `dotkv status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    /// The partition.
    pub partition: u32,
    /// The node it comes from.
    pub from: String,
    /// The node it goes to (this node).
    pub to: String,
    /// Keys received so far.
    pub keys: u64,
    /// Bytes (encoded objects) received so far.
    pub bytes: u64,
}

/// The receiver's running transfers and its byte budget.
#[derive(Debug, Default)]
pub(crate) struct HandoffState {
    /// Transfers in progress by (partition, source). A std mutex: held to update a count.
    transfers: Mutex<BTreeMap<(u32, String), TransferView>>,
    /// The throttle of every transfer together.
    budget: ByteBudget,
    /// The bytes of hints this node holds, once counted (at the first hinted write).
    pub(crate) hint_bytes: std::sync::atomic::AtomicU64,
    /// Whether `hint_bytes` was counted.
    pub(crate) hint_bytes_known: std::sync::atomic::AtomicBool,
}

/// The meta key of a transfer's cursor: the pending ring's digest, the partition, the
/// source. Its value is the last key merged; `DONE` once the source has no more.
fn cursor_key(ring: RingId, partition: u32, source: &str) -> String {
    format!("{CURSOR_PREFIX}{:016x}:{partition}:{source}", ring.digest)
}

const CURSOR_PREFIX: &str = "handoff:";
/// The cursor value of a finished transfer (no key is empty, so it cannot be a cursor).
const DONE: &[u8] = b"";

/// A byte rate shared by concurrent transfers: each waits until its bytes fit.
#[derive(Debug, Default)]
pub(crate) struct ByteBudget {
    /// When the budget is next free.
    next_free: Mutex<Option<Instant>>,
}

impl ByteBudget {
    /// Waits until `bytes` fit `rate` bytes per second (0: unlimited).
    pub(crate) async fn spend(&self, bytes: usize, rate: u64) {
        if rate == 0 || bytes == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let start = {
            let mut next_free = self.next_free.lock().expect("budget poisoned");
            let now = Instant::now();
            let start = next_free.map_or(now, |free| free.max(now));
            *next_free = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

impl Node {
    /// A page of `partition` after `after` (a transfer's source side): at most
    /// `handoff.page_keys` keys and about `handoff.page_bytes` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a storage failure.
    pub async fn handoff_page(
        &self,
        partition: u32,
        after: Option<Bytes>,
        mode: PageMode,
    ) -> Result<HandoffPage> {
        let config = self.handoff_config();
        let rows = self
            .store()
            .scan_partition(partition, after.as_deref(), config.page_keys)
            .await?;
        let full = rows.len() == config.page_keys;
        let mut size = 0;
        let mut entries = Vec::with_capacity(rows.len());
        for (key, object) in rows {
            let object = match mode {
                PageMode::Objects => Bytes::from(object),
                PageMode::Digests => Bytes::copy_from_slice(&object_digest(&object).to_le_bytes()),
            };
            if !entries.is_empty() && size + key.len() + object.len() > config.page_bytes {
                return Ok(HandoffPage {
                    entries,
                    done: false,
                });
            }
            size += key.len() + object.len();
            entries.push((Bytes::from(key), object));
        }
        Ok(HandoffPage {
            entries,
            done: !full,
        })
    }

    /// Merges handed-off objects into this node's replicas of `partition` (a transfer's
    /// receiving side, and the target of an old owner's push).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an undecodable object; [`Error::Internal`] for a
    /// storage failure.
    pub async fn merge_page(&self, partition: u32, entries: Vec<(Bytes, Bytes)>) -> Result<()> {
        // Concurrent merges share the storage's group commit: one fsync a page, not a key.
        let merges = entries.into_iter().map(|(key, object)| async move {
            let incoming = decode_object(&object, "a handed-off object")
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            self.merge_local(partition, &key, incoming, object).await
        });
        futures::future::try_join_all(merges).await?;
        Ok(())
    }

    /// Which of the offered `(key, digest)` pairs of `partition` this node lacks or holds
    /// differently: the indices an old owner must push before it drops the partition.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a storage failure.
    pub async fn wanted(&self, partition: u32, offered: Vec<(Bytes, u64)>) -> Result<Vec<u32>> {
        let mut wanted = Vec::new();
        for (at, (key, digest)) in offered.into_iter().enumerate() {
            let held = self.store().get_object(partition, &key).await?;
            if held.is_none_or(|held| object_digest(&held) != digest) {
                wanted.push(at as u32);
            }
        }
        Ok(wanted)
    }

    /// The transfers this node is receiving now.
    pub fn transfers(&self) -> Vec<TransferView> {
        self.handoff_state()
            .transfers
            .lock()
            .expect("transfers poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Delivers hints, receives and hands off partitions every `handoff.interval_ms` until
    /// `shutdown`.
    pub async fn run_handoff(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.handoff_config().interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut last_drop: Option<(u64, u64)> = None;
        let mut rounds = 0u64;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            rounds += 1;
            let Some(routing) = self.cluster().routing() else {
                continue;
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.deliver_hints(&routing) => {}
            }
            if routing.pending.is_some() {
                // Cancel-safe enough: a page merged but not yet in the cursor is merged
                // again on resume, which a DVVS merge absorbs.
                tokio::select! {
                    _ = &mut shutdown => return,
                    () = self.receive_round(&routing) => {}
                }
                continue;
            }
            // Settled: hand off what this node no longer owns, right after a change and
            // then now and then (late writes from coordinators with an older ring).
            let ring = (routing.ring.version(), routing.ring.digest());
            if last_drop != Some(ring) || rounds % 20 == 0 {
                tokio::select! {
                    _ = &mut shutdown => return,
                    clear = self.hand_off_foreign(&routing) => {
                        if clear {
                            last_drop = Some(ring);
                            self.forget_cursors().await;
                        }
                    }
                }
            }
        }
    }

    /// Receives every partition this node gains in the pending ring; marks it synced when
    /// all are in.
    async fn receive_round(&self, routing: &Arc<Routing>) {
        let Some(pending) = &routing.pending else {
            return;
        };
        let Some(me) = pending.me else {
            return;
        };
        let ring = RingId::of(&pending.ring);
        let my_id = pending.id(me).to_owned();
        if self
            .cluster()
            .member(&my_id)
            .is_some_and(|e| e.synced == ring)
        {
            return;
        }
        let diff = routing.ring.diff(&pending.ring);
        let gains: Vec<(u32, Option<String>)> = diff
            .moves
            .into_iter()
            .filter(|m| m.to == my_id)
            .map(|m| (m.partition, m.from))
            .collect();
        let concurrency = self.handoff_config().concurrency;
        let results: Vec<Result<()>> = futures::stream::iter(gains.iter().cloned())
            .map(|(partition, from)| {
                let sources = self.sources(routing, partition, from.as_deref());
                async move { self.receive_partition(ring, partition, sources).await }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        if failed.is_empty() {
            tracing::info!(
                ring = ring.version,
                partitions = gains.len(),
                "received every partition of the pending ring"
            );
            self.cluster().mark_synced(ring).await;
        } else {
            tracing::debug!(failed = failed.len(), first = %failed[0], "partition transfers to retry");
        }
    }

    /// Where to pull `partition` from, main source first: the node it moves from, unless
    /// that node is gone (removed) or there is none (more replicas); then every other
    /// current owner that is not gone, whose differences the receiver fetches by digest.
    /// So the receiver ends with the merge of every surviving replica, even one that
    /// missed a write the others took.
    fn sources(
        &self,
        routing: &Routing,
        partition: u32,
        from: Option<&str>,
    ) -> Vec<(String, Arc<str>)> {
        let alive = |id: &str| {
            self.cluster()
                .member(id)
                .is_some_and(|e| e.status != NodeStatus::Left)
        };
        let mut sources: Vec<(String, Arc<str>)> = routing
            .ring
            .preference_list(partition)
            .iter()
            .filter(|&&n| Some(n) != routing.me && alive(routing.id(n)))
            .map(|&n| (routing.id(n).to_owned(), routing.shared_addr(n)))
            .collect();
        if let Some(at) = from.and_then(|from| sources.iter().position(|(id, _)| id == from)) {
            sources[..=at].rotate_right(1);
        }
        sources
    }

    /// Pulls `partition` from each of `sources` to its end, resuming from the persisted
    /// cursors.
    async fn receive_partition(
        &self,
        ring: RingId,
        partition: u32,
        sources: Vec<(String, Arc<str>)>,
    ) -> Result<()> {
        if sources.is_empty() {
            // Nobody holds it (a replica of a partition every owner of which was removed):
            // there is nothing to receive.
            return Ok(());
        }
        let started = Instant::now();
        let (mut keys, mut bytes, mut pulled) = (0, 0, false);
        for (at, (source, addr)) in sources.iter().enumerate() {
            let mode = if at == 0 {
                PageMode::Objects
            } else {
                PageMode::Digests
            };
            if let Some((k, b)) = self.pull_from(ring, partition, source, addr, mode).await? {
                (keys, bytes, pulled) = (keys + k, bytes + b, true);
            }
        }
        if !pulled {
            // Finished in an earlier round (this one retries the partitions that failed).
            return Ok(());
        }
        tracing::info!(
            partition,
            from = %sources[0].0,
            keys,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "partition transfer finished"
        );
        Ok(())
    }

    /// Pulls `partition` from one source to its end; returns the keys and bytes merged, or
    /// `None` when its cursor says it was done before.
    async fn pull_from(
        &self,
        ring: RingId,
        partition: u32,
        source: &str,
        addr: &str,
        mode: PageMode,
    ) -> Result<Option<(u64, u64)>> {
        let cursor_key = cursor_key(ring, partition, source);
        let mut after = match self.store().get_meta(&cursor_key).await? {
            Some(cursor) if cursor == DONE => return Ok(None),
            Some(cursor) => Some(Bytes::from(cursor)),
            None => None,
        };
        let me = self.cluster().node_id();
        let slot = (partition, source.to_owned());
        self.handoff_state()
            .transfers
            .lock()
            .expect("transfers poisoned")
            .entry(slot.clone())
            .or_insert_with(|| TransferView {
                partition,
                from: source.to_owned(),
                to: me,
                keys: 0,
                bytes: 0,
            });
        let result = async {
            loop {
                let page = self
                    .transport()
                    .handoff_page(addr, partition, after.clone(), mode)
                    .await
                    .map_err(Error::from)?;
                let last = page.entries.last().map(|(key, _)| key.clone());
                let entries = match mode {
                    PageMode::Objects => page.entries,
                    PageMode::Digests => {
                        self.fetch_differing(partition, addr, page.entries).await?
                    }
                };
                let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
                self.throttle(bytes).await;
                let keys = entries.len();
                self.merge_page(partition, entries).await?;
                if let Some(view) = self
                    .handoff_state()
                    .transfers
                    .lock()
                    .expect("transfers poisoned")
                    .get_mut(&slot)
                {
                    view.keys += keys as u64;
                    view.bytes += bytes as u64;
                }
                if page.done || last.is_none() {
                    self.store().put_meta(&cursor_key, DONE.to_vec()).await?;
                    return Ok::<(), Error>(());
                }
                after = last;
                let cursor = after.as_ref().map(|k| k.to_vec()).unwrap_or_default();
                self.store().put_meta(&cursor_key, cursor).await?;
            }
        }
        .await;
        let view = self
            .handoff_state()
            .transfers
            .lock()
            .expect("transfers poisoned")
            .remove(&slot);
        result.map(|()| Some(view.map_or((0, 0), |v| (v.keys, v.bytes))))
    }

    /// The objects of a digest page that this node lacks or holds in another version,
    /// read from the source at `addr`.
    async fn fetch_differing(
        &self,
        partition: u32,
        addr: &str,
        digests: Vec<(Bytes, Bytes)>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        // A digest travels as 8 little-endian bytes (`handoff_page` sends nothing else).
        let offered = digests
            .into_iter()
            .map(|(key, digest)| {
                let digest = <[u8; 8]>::try_from(&digest[..]).map_or(!0, u64::from_le_bytes);
                (key, digest)
            })
            .collect::<Vec<_>>();
        let wanted = self.wanted(partition, offered.clone()).await?;
        let mut fetched = Vec::with_capacity(wanted.len());
        for at in wanted {
            let key = offered[at as usize].0.clone();
            let object = self
                .transport()
                .read_replica(addr, key.clone())
                .await
                .map_err(Error::from)?;
            if let Some(object) = object {
                fetched.push((key, object));
            }
        }
        Ok(fetched)
    }

    /// Waits until `bytes` fit the shared byte budget (`handoff.max_bytes_per_sec`).
    pub(crate) async fn throttle(&self, bytes: usize) {
        let rate = self.handoff_config().max_bytes_per_sec;
        self.handoff_state().budget.spend(bytes, rate).await;
    }

    /// Hands off every partition this node holds but does not own in the settled ring:
    /// offers each page's digests to every owner, pushes what an owner wants, then
    /// deletes exactly the objects it pushed. Returns whether nothing foreign is left.
    ///
    /// It stops (returning `false`) as soon as the ring changes: a transition that starts
    /// meanwhile may make this node an incoming owner of a partition, whose writes must
    /// stay.
    pub async fn hand_off_foreign(&self, routing: &Arc<Routing>) -> bool {
        if self.cluster().own_status() == NodeStatus::Joining {
            // A joining node holds nothing of the current ring's: what it holds arrived
            // as an incoming owner, whose ring it may not have heard of yet.
            return true;
        }
        let mut clear = true;
        for partition in 0..routing.ring.partitions() {
            let current = self.cluster().routing();
            if !current.is_some_and(|current| Arc::ptr_eq(&current, routing)) {
                return false;
            }
            let owners = routing.ring.preference_list(partition);
            if routing.me.is_some_and(|me| owners.contains(&me)) {
                continue;
            }
            match self.hand_off_partition(routing, partition).await {
                Ok(()) => {}
                Err(error) => {
                    clear = false;
                    tracing::debug!(partition, %error, "handing off a partition failed; will retry");
                }
            }
        }
        clear
    }

    async fn hand_off_partition(&self, routing: &Routing, partition: u32) -> Result<()> {
        let owners = routing.ring.preference_list(partition);
        let mut handed = 0usize;
        loop {
            // Always the first page: what was handed off is deleted; what changed since
            // stays and is offered again.
            let page = self
                .handoff_page(partition, None, PageMode::Objects)
                .await?;
            if page.entries.is_empty() {
                break;
            }
            for &owner in owners {
                let addr = routing.shared_addr(owner);
                let offered = page
                    .entries
                    .iter()
                    .map(|(key, object)| (key.clone(), object_digest(object)))
                    .collect();
                let wanted = self
                    .transport()
                    .wanted(&addr, partition, offered)
                    .await
                    .map_err(Error::from)?;
                if wanted.is_empty() {
                    continue;
                }
                let push = wanted
                    .iter()
                    .filter_map(|&i| page.entries.get(i as usize).cloned())
                    .collect();
                self.transport()
                    .push_partition(&addr, partition, push)
                    .await
                    .map_err(Error::from)?;
            }
            // Concurrent deletes share the storage's group commit.
            let deletes = page.entries.into_iter().map(|(key, object)| async move {
                let key = dotkv_storage::keys::object_key(partition, &key);
                self.delete_if_unchanged(Keyspace::Objects, &key, object)
                    .await
            });
            let deleted = futures::future::try_join_all(deletes)
                .await?
                .into_iter()
                .filter(|&deleted| deleted)
                .count();
            handed += deleted;
            if deleted == 0 {
                // Every object changed under us: come back next round.
                break;
            }
        }
        if handed > 0 {
            tracing::info!(
                partition,
                keys = handed,
                "handed off a partition this node no longer owns"
            );
        }
        Ok(())
    }

    /// Deletes the transfer cursors of transitions that are over.
    async fn forget_cursors(&self) {
        let range = ScanRange {
            prefix: CURSOR_PREFIX.as_bytes().to_vec(),
            after: None,
            limit: 100_000,
        };
        let Ok(rows) = self.store().scan(Keyspace::Meta, range).await else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        let mut batch = WriteBatch::default();
        for (key, _) in rows {
            batch.delete(Keyspace::Meta, key);
        }
        if let Err(error) = self.store().write(batch).await {
            tracing::debug!(%error, "cannot delete finished transfer cursors");
        }
    }
}
