//! Hinted handoff (DeCandia et al., SOSP 2007, §4.6): a fallback keeps a write meant for an
//! owner it could not reach, and delivers it once that owner is back.
//!
//! ```text
//!  coordinator --write_hint(owner, key, object)--> fallback: merged into the hints
//!      keyspace at (owner, partition, key), same group commit and fsync as a replica
//!  every handoff round, on each node holding hints, for each owner with hints:
//!      owner up and still owning the partition --> write_replica to it
//!      owner gone (left, removed) or no longer an owner --> to the partition's owners
//!      every receiver acknowledged --> delete the hint if it is unchanged
//! ```
//!
//! A hint is a DVVS object like a replica, so delivering it twice merges to the same
//! object, and a hint is only deleted when the bytes that were delivered are still the
//! bytes stored (a write that merged into it meanwhile stays for the next round). Hints
//! have a bound (`handoff.max_hint_bytes`): past it a fallback refuses the write and the
//! coordinator tries the next one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use dotkv_membership::NodeStatus;
use dotkv_storage::{HintKey, Keyspace, ScanRange, StorageExt, keys};
use futures::StreamExt;

use crate::{Error, Node, Result, Routing, Value, decode_object};

/// Hints delivered per page.
const HINT_PAGE: usize = 256;
/// Hints of a page delivered at once.
const HINT_CONCURRENCY: usize = 64;

impl Node {
    /// A coordinator's write meant for `target`, which it could not reach: merged into
    /// this node's hints for (`target`, `key`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an undecodable object; [`Error::Unavailable`] when
    /// this node holds `handoff.max_hint_bytes` of hints already; [`Error::Internal`] for
    /// a storage failure.
    pub async fn write_hint(&self, target: String, key: Bytes, object: Bytes) -> Result<()> {
        self.check_hint_room(object.len()).await?;
        let incoming = dotkv_versioning::decode::<Value>(&object)
            .map_err(|error| Error::InvalidArgument(format!("hinted object: {error}")))?;
        let partition = self.routing()?.ring.partition_of(&key);
        let hint = HintKey {
            target,
            partition,
            key: key.to_vec(),
        };
        let added = self
            .merge_stored(Keyspace::Hints, &hint.encode(), incoming, object)
            .await?;
        let bytes = &self.handoff_state().hint_bytes;
        if added >= 0 {
            bytes.fetch_add(added as u64, Ordering::Relaxed);
        } else {
            bytes.fetch_sub(added.unsigned_abs(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every hint this node holds for `key`, by the owner it is meant for: what a read
    /// asks a fallback, and what `replicas` shows as its holding.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a storage failure.
    pub async fn read_hints(&self, key: Bytes) -> Result<Vec<(String, Bytes)>> {
        let routing = self.routing()?;
        let partition = routing.ring.partition_of(&key);
        let mut found = Vec::new();
        for target in self.cluster().member_ids() {
            let hint = HintKey {
                target,
                partition,
                key: key.to_vec(),
            };
            if let Some(object) = self.store().get(Keyspace::Hints, &hint.encode()).await? {
                found.push((hint.target, Bytes::from(object)));
            }
        }
        Ok(found)
    }

    /// How many hints this node holds, by target.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for a storage failure.
    pub async fn hint_counts(&self) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for target in self.hint_targets().await? {
            let count = self
                .store()
                .count(Keyspace::Hints, &keys::hint_target_prefix(&target))
                .await?;
            counts.insert(target, count);
        }
        Ok(counts)
    }

    /// The targets this node holds hints for, walking the keyspace one target at a time.
    async fn hint_targets(&self) -> Result<Vec<String>> {
        let mut targets = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let range = ScanRange {
                prefix: Vec::new(),
                after: after.clone(),
                limit: 1,
            };
            let Some((key, _)) = self.store().scan(Keyspace::Hints, range).await?.pop() else {
                return Ok(targets);
            };
            let hint = HintKey::decode(&key)?;
            // Skip past every key of this target.
            let Some(end) = keys::prefix_end(&keys::hint_target_prefix(&hint.target)) else {
                targets.push(hint.target);
                return Ok(targets);
            };
            after = Some(end);
            targets.push(hint.target);
        }
    }

    /// Refuses a hint that would take this node past `handoff.max_hint_bytes`.
    async fn check_hint_room(&self, bytes: usize) -> Result<()> {
        let max = self.handoff_config().max_hint_bytes;
        let state = self.handoff_state();
        if !state.hint_bytes_known.load(Ordering::Acquire) {
            let mut total = 0u64;
            for target in self.hint_targets().await? {
                let mut after: Option<HintKey> = None;
                loop {
                    let page = self
                        .store()
                        .scan_hints(&target, after.as_ref(), 1024)
                        .await?;
                    let Some((last, _)) = page.last() else {
                        break;
                    };
                    after = Some(last.clone());
                    total += page.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
                }
            }
            state.hint_bytes.store(total, Ordering::Relaxed);
            state.hint_bytes_known.store(true, Ordering::Release);
        }
        let held = state.hint_bytes.load(Ordering::Relaxed);
        if held + bytes as u64 > max {
            return Err(Error::Unavailable(format!(
                "node {} holds {held} bytes of hints; handoff.max_hint_bytes = {max}",
                self.cluster().node_id()
            )));
        }
        Ok(())
    }

    /// Delivers this node's hints to their owners (or, when an owner is gone or no longer
    /// owns the partition, to the partition's owners); returns how many were delivered.
    pub(crate) async fn deliver_hints(&self, routing: &Arc<Routing>) -> usize {
        let targets = match self.hint_targets().await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!(%error, "cannot list hints");
                return 0;
            }
        };
        let mut delivered = 0;
        for target in targets {
            let gone = self
                .cluster()
                .member(&target)
                .is_none_or(|e| e.status == NodeStatus::Left);
            if !gone && self.cluster().is_down(&target) {
                continue;
            }
            match self.deliver_to(routing, &target, gone).await {
                Ok(0) => {}
                Ok(count) => {
                    delivered += count;
                    self.metrics().hints_delivered(count as u64);
                    tracing::info!(target, hints = count, "delivered hints");
                }
                Err(error) => tracing::debug!(target, %error, "hint delivery failed; will retry"),
            }
        }
        delivered
    }

    async fn deliver_to(&self, routing: &Routing, target: &str, gone: bool) -> Result<usize> {
        let mut delivered = 0;
        let mut after: Option<HintKey> = None;
        loop {
            let page = self
                .store()
                .scan_hints(target, after.as_ref(), HINT_PAGE)
                .await?;
            let Some((last, _)) = page.last() else {
                return Ok(delivered);
            };
            after = Some(last.clone());
            let bytes: usize = page.iter().map(|(h, v)| h.key.len() + v.len()).sum();
            self.throttle(bytes).await;
            // Hints of a page go out concurrently, so that the owners' writes and this
            // node's deletes share group commits instead of costing an fsync each.
            let deliveries = page.into_iter().map(|(hint, object)| async move {
                let object = Bytes::from(object);
                self.deliver_one(routing, target, gone, &hint, object.clone())
                    .await?;
                self.delete_hint_if_unchanged(&hint, object).await
            });
            let results: Vec<Result<bool>> = futures::stream::iter(deliveries)
                .buffer_unordered(HINT_CONCURRENCY)
                .collect()
                .await;
            for result in results {
                if result? {
                    delivered += 1;
                }
            }
        }
    }

    /// Delivers one hint: to its owner when that is back and still owns the key, else to
    /// every current owner of the key, so that the hint is never dropped.
    async fn deliver_one(
        &self,
        routing: &Routing,
        target: &str,
        gone: bool,
        hint: &HintKey,
        object: Bytes,
    ) -> Result<()> {
        let key = Bytes::from(hint.key.clone());
        let owners = routing.ring.preference_list(hint.partition);
        let still_owner = owners.iter().any(|&n| routing.id(n) == target);
        for &owner in owners {
            let id = routing.id(owner);
            if still_owner && !gone && id != target {
                continue;
            }
            if Some(owner) == routing.me {
                let incoming = decode_object(&object, "a hint")?;
                self.merge_local(hint.partition, &key, incoming, object.clone())
                    .await?;
            } else {
                self.transport()
                    .write_replica(routing.addr(owner), key.clone(), object.clone())
                    .await
                    .map_err(Error::from)?;
                self.cluster().heard_from(id);
            }
        }
        Ok(())
    }

    /// Deletes a delivered hint if it still holds exactly what was delivered.
    async fn delete_hint_if_unchanged(&self, hint: &HintKey, delivered: Bytes) -> Result<bool> {
        let size = delivered.len() as u64;
        let deleted = self
            .delete_if_unchanged(Keyspace::Hints, &hint.encode(), delivered)
            .await?;
        if deleted {
            let bytes = &self.handoff_state().hint_bytes;
            let _ = bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(size))
            });
        }
        Ok(deleted)
    }
}
