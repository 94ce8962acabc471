//! Group commit: many concurrent writers, one transaction, one fsync.
//!
//! Writers submit a [`WriteOp`] to a bounded queue and wait for its outcome. One writer
//! task takes the first op, then everything else already queued (up to
//! `storage.group_commit_max_ops`), and hands the group to the backend's [`GroupApplier`],
//! which applies the ops in queue order inside one transaction and commits once. While that
//! commit (and its fsync) runs, new ops queue up and form the next group, so the number of
//! fsyncs falls as concurrency rises.
//!
//! Ops cannot fail half-way: batches are validated before they are queued, and an update
//! function that aborts writes nothing. So one transaction serves the whole group, and only
//! an engine failure (full map, full disk, I/O) fails the group — every op of it, with the
//! same error.

use async_trait::async_trait;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{BatchOp, Error, Keyspace, Result, StorageKind, TxError, Update, UpdateFn, WriteBatch};

/// One write waiting for a group.
pub(crate) enum WriteOp {
    Batch(WriteBatch),
    Update {
        space: Keyspace,
        key: Vec<u8>,
        f: UpdateFn,
    },
}

/// The outcome of one op: for an update, the value stored afterwards.
pub(crate) type OpOutcome = Result<Option<Vec<u8>>, TxError>;

/// How a backend applies one group.
#[async_trait]
pub(crate) trait GroupApplier: Send + 'static {
    /// Applies `ops` in order inside one transaction and commits it. Returns one outcome per
    /// op, or an error when the transaction failed as a whole (then nothing was committed).
    async fn apply(&mut self, ops: Vec<WriteOp>) -> Result<Vec<OpOutcome>>;

    /// Called once when the queue closes, after the last group.
    async fn shutdown(&mut self) -> Result<()>;
}

struct Pending {
    op: WriteOp,
    reply: oneshot::Sender<OpOutcome>,
}

/// The submitting side of a group-commit queue.
#[derive(Debug)]
pub(crate) struct CommitQueue {
    /// The backend, for error messages.
    kind: StorageKind,
    /// `None` once closed. A std mutex: it is held only to clone or take the sender.
    sender: std::sync::Mutex<Option<mpsc::Sender<Pending>>>,
    /// The writer task, awaited by `close`.
    writer: tokio::sync::Mutex<Option<JoinHandle<Result<()>>>>,
    /// Group sizes and commit times, shared with the writer task.
    metrics: CommitMetrics,
}

/// What the group commit measures: ops per commit, and how long each commit took (its
/// fsyncs included when the store syncs). Clones share the values.
#[derive(Debug, Clone)]
pub struct CommitMetrics {
    group_size: Histogram,
    commit_seconds: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            // 1 to 512 ops, doubling.
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            // 50 µs to ~1.6 s, doubling.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

impl CommitMetrics {
    /// Registers both histograms in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "commit_group_size",
            "Write ops committed together by the group commit",
            self.group_size.clone(),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time of one group commit, its fsyncs included when storage.sync is on",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
    }
}

impl CommitQueue {
    /// Starts the writer task over `applier`.
    pub(crate) fn start<A: GroupApplier>(kind: StorageKind, applier: A, max_group: usize) -> Self {
        let (tx, rx) = mpsc::channel(max_group.max(1));
        let metrics = CommitMetrics::default();
        let writer = tokio::spawn(run_writer(rx, applier, max_group.max(1), metrics.clone()));
        Self {
            kind,
            sender: std::sync::Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(Some(writer)),
            metrics,
        }
    }

    /// The queue's group sizes and commit times.
    pub(crate) fn metrics(&self) -> &CommitMetrics {
        &self.metrics
    }

    /// Queues `op` and waits for its group to commit.
    pub(crate) async fn submit(&self, op: WriteOp) -> OpOutcome {
        let sender = self
            .sender
            .lock()
            .expect("commit queue mutex poisoned: a panic while cloning a sender")
            .clone()
            .ok_or(Error::Closed)?;
        let (reply, outcome) = oneshot::channel();
        sender
            .send(Pending { op, reply })
            .await
            .map_err(|_| Error::Closed)?;
        outcome.await.map_err(|_| Error::Closed)?
    }

    /// Validates and commits a batch.
    pub(crate) async fn submit_batch(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        batch_result(self.kind, self.submit(WriteOp::Batch(batch)).await)
    }

    /// Validates the key and commits a read-modify-write.
    pub(crate) async fn submit_update(
        &self,
        space: Keyspace,
        key: &[u8],
        f: UpdateFn,
    ) -> OpOutcome {
        crate::check_key(key)?;
        self.submit(WriteOp::Update {
            space,
            key: key.to_vec(),
            f,
        })
        .await
    }

    /// Refuses new ops, lets the queued ones commit, and stops the writer.
    pub(crate) async fn close(&self) -> Result<()> {
        drop(
            self.sender
                .lock()
                .expect("commit queue mutex poisoned")
                .take(),
        );
        let Some(writer) = self.writer.lock().await.take() else {
            return Ok(());
        };
        writer
            .await
            .map_err(|join| Error::backend(self.kind, join))?
    }
}

async fn run_writer<A: GroupApplier>(
    mut rx: mpsc::Receiver<Pending>,
    mut applier: A,
    max_group: usize,
    metrics: CommitMetrics,
) -> Result<()> {
    let mut group = Vec::with_capacity(max_group);
    while rx.recv_many(&mut group, max_group).await > 0 {
        let (ops, replies): (Vec<_>, Vec<_>) = group
            .drain(..)
            .map(|Pending { op, reply }| (op, reply))
            .unzip();
        let count = ops.len();
        let started = std::time::Instant::now();
        let applied = applier.apply(ops).await;
        metrics.group_size.observe(count as f64);
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match applied {
            Ok(outcomes) => {
                debug_assert_eq!(outcomes.len(), count);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A writer that stopped waiting is no reason to stop the others.
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, ops = count, "group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(TxError::Storage(error.clone())));
                }
            }
        }
    }
    applier.shutdown().await
}

/// The result of a batch op: only update functions abort, so a batch fails only with a
/// storage error.
pub(crate) fn batch_result(kind: StorageKind, outcome: OpOutcome) -> Result<()> {
    match outcome {
        Ok(_) => Ok(()),
        Err(TxError::Storage(error)) => Err(error),
        Err(TxError::Abort(source)) => Err(Error::Backend {
            backend: kind,
            source,
        }),
    }
}

/// A write transaction of a synchronous engine (LMDB, memory), as [`apply_op`] needs it.
pub(crate) trait SyncTxn {
    /// Calls `f` on the current value of `key` (borrowed from the transaction).
    fn with_value<R>(
        &mut self,
        space: Keyspace,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R>;
    fn put(&mut self, space: Keyspace, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&mut self, space: Keyspace, key: &[u8]) -> Result<()>;
}

/// Applies one op inside `txn`. The outer error is an engine failure (the transaction must
/// be abandoned); the inner outcome is the op's own (an update may abort).
pub(crate) fn apply_op(txn: &mut impl SyncTxn, op: WriteOp) -> Result<OpOutcome> {
    match op {
        WriteOp::Batch(batch) => {
            for op in batch.ops() {
                match op {
                    BatchOp::Put { space, key, value } => txn.put(*space, key, value)?,
                    BatchOp::Delete { space, key } => txn.delete(*space, key)?,
                }
            }
            Ok(Ok(None))
        }
        WriteOp::Update { space, key, f } => {
            let (decision, current) = txn.with_value(space, &key, |current| match f(current) {
                // Keep needs the current value as the answer: copy it only then.
                Ok(Update::Keep) => (Ok(Update::Keep), current.map(<[u8]>::to_vec)),
                other => (other, None),
            })?;
            Ok(match decision {
                Err(abort) => Err(TxError::Abort(abort)),
                Ok(Update::Keep) => Ok(current),
                Ok(Update::Put(value)) => {
                    txn.put(space, &key, &value)?;
                    Ok(Some(value))
                }
                Ok(Update::Delete) => {
                    txn.delete(space, &key)?;
                    Ok(None)
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// Records the size of every group and takes 20 ms per commit, like an fsync.
    struct SlowApplier(Arc<Mutex<Vec<usize>>>);

    #[async_trait]
    impl GroupApplier for SlowApplier {
        async fn apply(&mut self, ops: Vec<WriteOp>) -> Result<Vec<OpOutcome>> {
            self.0.lock().unwrap().push(ops.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(ops.iter().map(|_| Ok(None)).collect())
        }

        async fn shutdown(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_writers_share_commits() {
        let groups = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(CommitQueue::start(
            StorageKind::Memory,
            SlowApplier(Arc::clone(&groups)),
            1024,
        ));
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..64u32 {
            let queue = Arc::clone(&queue);
            writers.spawn(async move {
                let mut batch = WriteBatch::default();
                batch.put(Keyspace::Objects, i.to_be_bytes().to_vec(), vec![]);
                queue.submit_batch(batch).await
            });
        }
        while let Some(result) = writers.join_next().await {
            result.unwrap().unwrap();
        }
        queue.close().await.unwrap();
        let groups = groups.lock().unwrap().clone();
        assert_eq!(groups.iter().sum::<usize>(), 64);
        assert!(
            groups.len() <= 3,
            "64 concurrent writers took {} commits: {groups:?}",
            groups.len()
        );
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_writes() {
        let queue = CommitQueue::start(StorageKind::Memory, SlowApplier(Default::default()), 8);
        queue.close().await.unwrap();
        let err = queue.submit_batch(WriteBatch::default()).await.unwrap_err();
        assert!(matches!(err, Error::Closed));
    }
}
