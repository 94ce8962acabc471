//! The LMDB backend (heed), feature `lmdb`: the default engine.
//!
//! One LMDB environment per data dir (`data.mdb`, `lock.mdb`), one named database per
//! keyspace. LMDB allows one writer at a time, which is exactly the group-commit writer;
//! readers never block and see the last committed snapshot (MVCC). Every LMDB call runs in
//! `spawn_blocking` — a page fault on the memory map can block — and no transaction
//! outlives the blocking closure that opened it, so none is held across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, RwTxn};

use crate::group_commit::{
    CommitMetrics, CommitQueue, GroupApplier, OpOutcome, SyncTxn, WriteOp, apply_op,
};
use crate::{
    Error, KeyValue, Keyspace, Result, ScanRange, Storage, StorageConfig, StorageKind,
    StorageUsage, TxError, UpdateFn, WriteBatch,
};

const KIND: StorageKind = StorageKind::Lmdb;

/// The environment and its databases, shared by readers and the writer.
#[derive(Debug)]
struct LmdbInner {
    env: Env,
    /// One database per keyspace, indexed by [`Keyspace::index`].
    dbs: [Database<Bytes, Bytes>; 3],
    /// The data file, for error messages.
    path: PathBuf,
}

/// A store in an LMDB environment.
#[derive(Debug)]
pub struct LmdbStorage {
    /// `None` once closed. A std `RwLock`: it is only held to clone the `Arc`.
    inner: RwLock<Option<Arc<LmdbInner>>>,
    queue: CommitQueue,
}

impl LmdbStorage {
    /// Opens (creating if needed) the LMDB store in directory `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when `data.mdb` is not an LMDB file, [`Error::Io`] when the
    /// directory cannot be used, [`Error::Backend`] for other LMDB failures.
    pub async fn open(dir: &Path, config: &StorageConfig) -> Result<Self> {
        let dir = dir.to_path_buf();
        let max_group = config.group_commit_max_ops;
        let config = config.clone();
        let inner = tokio::task::spawn_blocking(move || open_env(&dir, &config))
            .await
            .map_err(|e| Error::backend(KIND, e))??;
        let inner = Arc::new(inner);
        let queue = CommitQueue::start(
            KIND,
            LmdbWriter {
                inner: Arc::clone(&inner),
            },
            max_group,
        );
        Ok(Self {
            inner: RwLock::new(Some(inner)),
            queue,
        })
    }

    fn inner(&self) -> Result<Arc<LmdbInner>> {
        self.inner
            .read()
            .expect("lmdb handle lock poisoned")
            .clone()
            .ok_or(Error::Closed)
    }

    /// Runs a read-only closure on the environment in the blocking pool.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&LmdbInner) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let inner = self.inner()?;
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::backend(KIND, e))?
    }
}

fn open_env(dir: &Path, config: &StorageConfig) -> Result<LmdbInner> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("data.mdb");
    let map_size = usize::try_from(config.lmdb_map_size_mb.saturating_mul(1 << 20))
        .map_err(|e| Error::backend(KIND, e))?;
    let mut options = EnvOpenOptions::new();
    options
        .map_size(map_size)
        .max_dbs(Keyspace::ALL.len() as u32);
    // SAFETY (heed marks flags and open unsafe): NO_SYNC only weakens durability, which is
    // what `storage.sync = false` asks for; and the environment is opened once per process
    // and data dir (heed refuses a second open), which is LMDB's requirement for soundness.
    #[allow(unsafe_code)]
    let env = unsafe {
        if !config.sync {
            options.flags(EnvFlags::NO_SYNC);
        }
        options.open(dir)
    }
    .map_err(|e| map_err(e, &path))?;
    let mut txn = env.write_txn().map_err(|e| map_err(e, &path))?;
    let mut create = |space: Keyspace| {
        env.create_database::<Bytes, Bytes>(&mut txn, Some(space.name()))
            .map_err(|e| map_err(e, &path))
    };
    let dbs = [
        create(Keyspace::Objects)?,
        create(Keyspace::Hints)?,
        create(Keyspace::Meta)?,
    ];
    txn.commit().map_err(|e| map_err(e, &path))?;
    Ok(LmdbInner { env, dbs, path })
}

/// Turns a heed error into a storage error that says what to do.
fn map_err(error: heed::Error, path: &Path) -> Error {
    let path = path.to_path_buf();
    match error {
        heed::Error::Mdb(MdbError::MapFull) => Error::Full {
            backend: KIND,
            path,
            hint: "the LMDB map is full; raise storage.lmdb_map_size_mb and restart",
        },
        heed::Error::Io(io) if io.raw_os_error() == Some(28 /* ENOSPC */) => Error::Full {
            backend: KIND,
            path,
            hint: "the disk is full; free space on the data dir's filesystem",
        },
        heed::Error::Mdb(
            MdbError::Invalid
            | MdbError::Corrupted
            | MdbError::VersionMismatch
            | MdbError::PageNotFound
            | MdbError::Panic,
        ) => Error::Corrupt {
            backend: KIND,
            path,
            source: Arc::new(error),
        },
        other => Error::backend(KIND, other),
    }
}

impl LmdbInner {
    fn db(&self, space: Keyspace) -> Database<Bytes, Bytes> {
        self.dbs[space.index()]
    }

    fn apply_group(&self, ops: Vec<WriteOp>) -> Result<Vec<OpOutcome>> {
        let map = |e| map_err(e, &self.path);
        let mut txn = LmdbTxn {
            txn: self.env.write_txn().map_err(map)?,
            inner: self,
        };
        let outcomes = ops
            .into_iter()
            .map(|op| apply_op(&mut txn, op))
            .collect::<Result<Vec<_>>>()?;
        txn.txn.commit().map_err(map)?;
        Ok(outcomes)
    }
}

struct LmdbTxn<'e> {
    txn: RwTxn<'e>,
    inner: &'e LmdbInner,
}

impl SyncTxn for LmdbTxn<'_> {
    fn with_value<R>(
        &mut self,
        space: Keyspace,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        let value = self
            .inner
            .db(space)
            .get(&self.txn, key)
            .map_err(|e| map_err(e, &self.inner.path))?;
        Ok(f(value))
    }

    fn put(&mut self, space: Keyspace, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner
            .db(space)
            .put(&mut self.txn, key, value)
            .map_err(|e| map_err(e, &self.inner.path))
    }

    fn delete(&mut self, space: Keyspace, key: &[u8]) -> Result<()> {
        self.inner
            .db(space)
            .delete(&mut self.txn, key)
            .map_err(|e| map_err(e, &self.inner.path))?;
        Ok(())
    }
}

/// The group-commit applier: each group is one LMDB write transaction.
struct LmdbWriter {
    inner: Arc<LmdbInner>,
}

#[async_trait]
impl GroupApplier for LmdbWriter {
    async fn apply(&mut self, ops: Vec<WriteOp>) -> Result<Vec<OpOutcome>> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.apply_group(ops))
            .await
            .map_err(|e| Error::backend(KIND, e))?
    }

    async fn shutdown(&mut self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Storage for LmdbStorage {
    fn kind(&self) -> StorageKind {
        KIND
    }

    fn commit_metrics(&self) -> Option<CommitMetrics> {
        Some(self.queue.metrics().clone())
    }

    async fn usage(&self) -> Result<Option<StorageUsage>> {
        self.read(|inner| {
            let map = |e| map_err(e, &inner.path);
            let txn = inner.env.read_txn().map_err(map)?;
            // Both from LMDB's own statistics: no scan.
            let info = inner.env.info();
            let stat = inner.env.stat();
            let pages = info.last_page_number as u64 + 1;
            let objects = inner.db(Keyspace::Objects).len(&txn).map_err(map)?;
            Ok(Some(StorageUsage {
                bytes: pages * u64::from(stat.page_size),
                objects: Some(objects),
            }))
        })
        .await
    }

    async fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // A point lookup runs inline, not in `spawn_blocking`: it is a B-tree descent in
        // a memory map (a few µs), and the thread hand-off cost more than the lookup —
        // the profile of a read-only cluster load showed most of a node's time in
        // futex wake-ups and context switches. The read txn lives only inside this
        // synchronous block, never across an `.await`. Scans and counts, which can be
        // long, stay on the blocking pool.
        let inner = self.inner()?;
        let map = |e| map_err(e, &inner.path);
        let txn = inner.env.read_txn().map_err(map)?;
        Ok(inner
            .db(space)
            .get(&txn, key)
            .map_err(map)?
            .map(<[u8]>::to_vec))
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.queue.submit_batch(batch).await
    }

    async fn update(
        &self,
        space: Keyspace,
        key: &[u8],
        f: UpdateFn,
    ) -> Result<Option<Vec<u8>>, TxError> {
        self.queue.submit_update(space, key, f).await
    }

    async fn scan(&self, space: Keyspace, range: ScanRange) -> Result<Vec<KeyValue>> {
        self.read(move |inner| {
            let map = |e| map_err(e, &inner.path);
            let txn = inner.env.read_txn().map_err(map)?;
            let lower = range.lower_bound();
            let upper = range.upper_bound();
            let bounds = crate::range_bounds(&lower, upper.as_deref());
            let mut page = Vec::with_capacity(range.limit.min(1024));
            for entry in inner
                .db(space)
                .range(&txn, &bounds)
                .map_err(map)?
                .take(range.limit)
            {
                let (key, value) = entry.map_err(map)?;
                page.push((key.to_vec(), value.to_vec()));
            }
            Ok(page)
        })
        .await
    }

    async fn count(&self, space: Keyspace, prefix: &[u8]) -> Result<u64> {
        let prefix = prefix.to_vec();
        let upper = crate::keys::prefix_end(&prefix);
        self.read(move |inner| {
            let map = |e| map_err(e, &inner.path);
            let txn = inner.env.read_txn().map_err(map)?;
            let bounds = crate::range_bounds(&prefix, upper.as_deref());
            let mut count = 0;
            for entry in inner.db(space).range(&txn, &bounds).map_err(map)? {
                entry.map_err(map)?;
                count += 1;
            }
            Ok(count)
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.queue.close().await?;
        let Some(inner) = self
            .inner
            .write()
            .expect("lmdb handle lock poisoned")
            .take()
        else {
            return Ok(());
        };
        // LMDB closes the environment when the last handle drops; wait for readers still in
        // flight so that a reopen of the same dir in this process finds it closed.
        let closing = inner.env.clone().prepare_for_closing();
        drop(inner);
        tokio::task::spawn_blocking(move || closing.wait())
            .await
            .map_err(|e| Error::backend(KIND, e))?;
        Ok(())
    }
}
