//! The in-memory backend: the reference implementation of [`Storage`], always compiled.
//!
//! One ordered map per keyspace behind one lock. Writes take the lock once per batch or
//! update, so they are atomic and serialized without a commit queue. Nothing survives
//! [`Storage::close`] or the process.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;

use crate::group_commit::{SyncTxn, WriteOp, apply_op, batch_result};
use crate::{
    Error, KeyValue, Keyspace, Result, ScanRange, Storage, StorageKind, TxError, UpdateFn,
    WriteBatch,
};

type Maps = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

/// A store held in memory.
#[derive(Debug)]
pub struct MemoryStorage {
    /// One map per keyspace ([`Keyspace::index`]); `None` once closed. A std lock: it is
    /// never held across an `.await`.
    maps: RwLock<Option<Maps>>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            maps: RwLock::new(Some(Default::default())),
        }
    }

    fn read<R>(&self, f: impl FnOnce(&Maps) -> R) -> Result<R> {
        let guard = self.maps.read().expect("memory store lock poisoned");
        guard.as_ref().map(f).ok_or(Error::Closed)
    }

    fn apply(&self, op: WriteOp) -> Result<Option<Vec<u8>>, TxError> {
        let mut guard = self.maps.write().expect("memory store lock poisoned");
        let maps = guard.as_mut().ok_or(Error::Closed)?;
        apply_op(&mut MemoryTxn(maps), op)?
    }
}

struct MemoryTxn<'a>(&'a mut Maps);

impl SyncTxn for MemoryTxn<'_> {
    fn with_value<R>(
        &mut self,
        space: Keyspace,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        Ok(f(self.0[space.index()].get(key).map(Vec::as_slice)))
    }

    fn put(&mut self, space: Keyspace, key: &[u8], value: &[u8]) -> Result<()> {
        self.0[space.index()].insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, space: Keyspace, key: &[u8]) -> Result<()> {
        self.0[space.index()].remove(key);
        Ok(())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn kind(&self) -> StorageKind {
        StorageKind::Memory
    }

    async fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(|maps| maps[space.index()].get(key).cloned())
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        batch_result(StorageKind::Memory, self.apply(WriteOp::Batch(batch)))
    }

    async fn update(
        &self,
        space: Keyspace,
        key: &[u8],
        f: UpdateFn,
    ) -> Result<Option<Vec<u8>>, TxError> {
        crate::check_key(key)?;
        self.apply(WriteOp::Update {
            space,
            key: key.to_vec(),
            f,
        })
    }

    async fn scan(&self, space: Keyspace, range: ScanRange) -> Result<Vec<KeyValue>> {
        let lower = range.lower_bound();
        let upper = range.upper_bound();
        self.read(|maps| {
            let bounds = crate::range_bounds(&lower, upper.as_deref());
            maps[space.index()]
                .range::<[u8], _>(bounds)
                .take(range.limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    async fn count(&self, space: Keyspace, prefix: &[u8]) -> Result<u64> {
        let upper = crate::keys::prefix_end(prefix);
        self.read(|maps| {
            let bounds = crate::range_bounds(prefix, upper.as_deref());
            maps[space.index()].range::<[u8], _>(bounds).count() as u64
        })
    }

    async fn close(&self) -> Result<()> {
        self.maps
            .write()
            .expect("memory store lock poisoned")
            .take();
        Ok(())
    }
}
