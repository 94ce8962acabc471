//! dotkv's storage engine: where a node keeps its replicas, its hints and its identity.
//!
//! In the Dynamo design (DeCandia et al., SOSP 2007, §4.1 and §6) each node persists its
//! objects in a pluggable local engine ("Berkeley DB, MySQL, an in-memory buffer with a
//! persistent backing store"). dotkv does the same behind one object-safe trait,
//! [`Storage`], so the engine is a configuration choice ([`StorageConfig::backend`]) and
//! the rest of the system holds an `Arc<dyn Storage>`.
//!
//! ```text
//!  replication / membership
//!          |  StorageExt: objects (partition, key), hints (target, partition, key), meta
//!          v
//!  Storage (get, write, update, scan, count, close)       <- bytes in, owned bytes out
//!          |
//!  +-------+-----------+-------------+
//!  | LmdbStorage       | SqliteStorage | MemoryStorage
//!  | (heed, "lmdb")    | (sqlx, "sqlite") | (always on)
//!  +-------------------+---------------+
//!     group commit: concurrent writes share one transaction and one fsync
//! ```
//!
//! # Backends
//!
//! | backend | type | feature | durable |
//! | --- | --- | --- | --- |
//! | `lmdb` (default) | [`LmdbStorage`] | `lmdb` | yes |
//! | `sqlite` | [`SqliteStorage`] | `sqlite` | yes (WAL) |
//! | `memory` | [`MemoryStorage`] | always | no: the reference backend for tests |
//!
//! # Keyspaces and keys
//!
//! A store has the named keyspaces of [`Keyspace`]. Objects are keyed by
//! `(partition: u32, key)`, encoded as the partition in big-endian followed by the key, so a
//! partition is one contiguous, ordered range that can be scanned, counted, handed off or
//! rebuilt on its own. Hints are keyed by `(target node, partition, key)` so that a node can
//! stream everything it holds for one peer. The helpers of [`StorageExt`] do the encoding.
//!
//! # Invariants
//!
//! - A write ([`Storage::write`] or [`Storage::update`]) is visible to readers once its future
//!   completes, and on disk by then when `storage.sync = true`.
//! - Writes issued concurrently are committed in one transaction (group commit): with
//!   `sync = true`, 64 concurrent writers cost a handful of fsyncs, not 64.
//! - A read-modify-write of one key is serialized with every other write to that key, so a
//!   merge of concurrent updates never loses one.
//! - No LMDB transaction is held across an `.await`: LMDB work runs in `spawn_blocking`.
//!
//! Non-goals: secondary indexes, TTLs, multi-key transactions beyond one atomic batch.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod error;
mod group_commit;
pub mod keys;
#[cfg(feature = "lmdb")]
mod lmdb;
mod memory;
mod open;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

use std::fmt;

use async_trait::async_trait;

pub use config::{StorageConfig, StorageKind};
pub use error::{BoxError, Error, Result, TxError};
pub use group_commit::CommitMetrics;
pub use keys::{HintKey, Keyspace};
#[cfg(feature = "lmdb")]
pub use lmdb::LmdbStorage;
pub use memory::MemoryStorage;
pub use open::{MARKER_FILE, open};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStorage;

/// The longest encoded key (keyspace key, after [`keys`] encoding) any backend accepts.
///
/// LMDB bounds keys by its page size (heed is built with `longer-keys`: about 1.9 KiB on
/// 4 KiB pages); the limit is the same for every backend so that behaviour does not depend
/// on the profile. It leaves room for a 1 KiB user key (`limits.max_key_bytes` default) plus
/// the partition and hint prefixes.
pub const MAX_STORE_KEY_BYTES: usize = 1536;

/// One key/value pair as returned by scans: owned bytes.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// What an update function decides to do with the current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Leave the stored value as it is.
    Keep,
    /// Store this value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
}

/// A read-modify-write function: given the current value (if any), decide the new one, or
/// return an error to abort. It runs inside the write transaction, so it must be quick and
/// must not block.
pub type UpdateFn =
    Box<dyn FnOnce(Option<&[u8]>) -> std::result::Result<Update, BoxError> + Send + 'static>;

/// One change in a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Store `value` under `key` in `space`.
    Put {
        /// The keyspace.
        space: Keyspace,
        /// The encoded key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` from `space` (no error if absent).
    Delete {
        /// The keyspace.
        space: Keyspace,
        /// The encoded key.
        key: Vec<u8>,
    },
}

/// A set of puts and deletes applied atomically: all of them or none.
///
/// ```
/// use dotkv_storage::{Keyspace, WriteBatch};
/// let mut batch = WriteBatch::default();
/// batch.put(Keyspace::Meta, b"node_id".to_vec(), b"n1".to_vec());
/// batch.delete(Keyspace::Meta, b"old".to_vec());
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Adds a put.
    pub fn put(&mut self, space: Keyspace, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(BatchOp::Put { space, key, value });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, space: Keyspace, key: Vec<u8>) -> &mut Self {
        self.ops.push(BatchOp::Delete { space, key });
        self
    }

    /// The number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The changes, in the order they apply.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Checks every key against [`MAX_STORE_KEY_BYTES`] before anything is written, so a
    /// batch is refused whole rather than applied in part.
    pub(crate) fn validate(&self) -> Result<()> {
        self.ops.iter().try_for_each(|op| match op {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => check_key(key),
        })
    }
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        // LMDB cannot store an empty key; no backend does, so behaviour is the same on all.
        return Err(Error::EmptyKey);
    }
    if key.len() > MAX_STORE_KEY_BYTES {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: MAX_STORE_KEY_BYTES,
        });
    }
    Ok(())
}

/// One page of an ordered scan: keys starting with `prefix`, strictly after `after` (when
/// given), at most `limit` of them, in ascending byte order.
///
/// Paging: pass the last key of a page as `after` of the next. Memory stays bounded by
/// `limit` whatever the size of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange {
    /// Only keys that start with these bytes.
    pub prefix: Vec<u8>,
    /// Resume strictly after this key (a key returned by the previous page).
    pub after: Option<Vec<u8>>,
    /// The most pairs to return; at least 1.
    pub limit: usize,
}

impl ScanRange {
    /// The first key the scan may return (inclusive).
    pub(crate) fn lower_bound(&self) -> Vec<u8> {
        match &self.after {
            // The smallest key greater than `after` is `after` followed by a zero byte.
            Some(after) if after.as_slice() >= self.prefix.as_slice() => {
                let mut lower = Vec::with_capacity(after.len() + 1);
                lower.extend_from_slice(after);
                lower.push(0);
                lower
            }
            _ => self.prefix.clone(),
        }
    }

    /// The first key past the range (exclusive), or `None` when the range runs to the end.
    pub(crate) fn upper_bound(&self) -> Option<Vec<u8>> {
        keys::prefix_end(&self.prefix)
    }
}

/// The `(lower, upper)` bounds of an ordered range as the engines' range APIs take them.
pub(crate) fn range_bounds<'a>(
    lower: &'a [u8],
    upper: Option<&'a [u8]>,
) -> (std::ops::Bound<&'a [u8]>, std::ops::Bound<&'a [u8]>) {
    use std::ops::Bound;
    // An empty lower bound is the start of the keyspace; LMDB refuses it as a cursor key.
    let lower = if lower.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Included(lower)
    };
    (lower, upper.map_or(Bound::Unbounded, Bound::Excluded))
}

/// How much a store holds (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageUsage {
    /// Bytes in use: LMDB's pages in use, SQLite's pages.
    pub bytes: u64,
    /// Objects (replicas) it holds, when the backend counts them without a scan.
    pub objects: Option<u64>,
}

/// A node's local store.
///
/// # Contract
///
/// - Keys are at most [`MAX_STORE_KEY_BYTES`]; values are any bytes, the empty value
///   included (it is distinct from an absent key).
/// - A completed [`write`](Self::write) or [`update`](Self::update) is visible to every later
///   read, and with `storage.sync = true` it survives a crash of the process or the machine.
/// - Each read sees a consistent snapshot: never half of a batch.
///
/// ### To ensure correctness
///
/// Implementations commit concurrent writes together (group commit) but must apply them in
/// one serial order, so that an [`update`](Self::update) sees the result of every write
/// committed before it.
///
/// # Errors
///
/// [`Error::Full`] when the store has no room, [`Error::KeyTooLarge`] for an oversized key,
/// [`Error::Closed`] after [`close`](Self::close), and [`Error::Backend`] / [`Error::Io`]
/// for engine failures.
///
/// # Cancel safety
///
/// Dropping a write future does not cancel the write: once submitted it is committed (or
/// fails) as a whole. Reads are cancel safe.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Which backend this is.
    fn kind(&self) -> StorageKind;

    /// The group commit's measurements, for backends that commit in groups.
    fn commit_metrics(&self) -> Option<CommitMetrics> {
        None
    }

    /// How much the store holds, for backends that can tell cheaply (no scan).
    async fn usage(&self) -> Result<Option<StorageUsage>> {
        Ok(None)
    }

    /// Reads one key.
    async fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Applies a batch atomically.
    async fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Atomically reads `key`, calls `f` on its value and applies what `f` decides,
    /// serialized with every other write. Returns the value stored afterwards.
    async fn update(
        &self,
        space: Keyspace,
        key: &[u8],
        f: UpdateFn,
    ) -> Result<Option<Vec<u8>>, TxError>;

    /// Reads one page of an ordered scan.
    async fn scan(&self, space: Keyspace, range: ScanRange) -> Result<Vec<KeyValue>>;

    /// Counts the keys of `space` that start with `prefix`.
    async fn count(&self, space: Keyspace, prefix: &[u8]) -> Result<u64>;

    /// Commits what is pending, releases the files and refuses further operations.
    /// Closing twice is not an error.
    async fn close(&self) -> Result<()>;
}

/// Conveniences over [`Storage`]: single puts and deletes, and the typed key layouts of
/// objects, hints and meta. Implemented for every `Storage`; nobody implements it by hand.
///
/// ```
/// # tokio_test_block_on(async {
/// use dotkv_storage::{MemoryStorage, StorageExt};
/// let store = MemoryStorage::new();
/// store.put_object(7, b"user:1", b"alice".to_vec()).await?;
/// assert_eq!(store.get_object(7, b"user:1").await?, Some(b"alice".to_vec()));
/// assert_eq!(store.count_partition(7).await?, 1);
/// # Ok::<_, dotkv_storage::Error>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
/// ```
#[async_trait]
pub trait StorageExt: Storage {
    /// Stores one key.
    async fn put(&self, space: Keyspace, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(space, key, value);
        self.write(batch).await
    }

    /// Removes one key.
    async fn delete(&self, space: Keyspace, key: Vec<u8>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete(space, key);
        self.write(batch).await
    }

    /// Reads the object `key` of `partition`.
    async fn get_object(&self, partition: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(Keyspace::Objects, &keys::object_key(partition, key))
            .await
    }

    /// Stores the object `key` of `partition`.
    async fn put_object(&self, partition: u32, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.put(Keyspace::Objects, keys::object_key(partition, key), value)
            .await
    }

    /// Read-modify-write of the object `key` of `partition`.
    async fn update_object(
        &self,
        partition: u32,
        key: &[u8],
        f: UpdateFn,
    ) -> Result<Option<Vec<u8>>, TxError> {
        self.update(Keyspace::Objects, &keys::object_key(partition, key), f)
            .await
    }

    /// One page of the objects of `partition`, in storage order (by segment, then key), as
    /// `(key, value)` with the partition and segment prefix removed. Pass the last key of a
    /// page as `after` for the next.
    async fn scan_partition(
        &self,
        partition: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let prefix = keys::partition_prefix(partition).to_vec();
        let after = after.map(|key| keys::object_key(partition, key));
        let range = ScanRange {
            prefix,
            after,
            limit,
        };
        Ok(strip_object_keys(
            self.scan(Keyspace::Objects, range).await?,
        ))
    }

    /// One page of the objects of `partition` whose segment ([`keys::segment_of`]) is in
    /// `segments`, like [`scan_partition`](Self::scan_partition): what a Merkle leaf
    /// covers, in one contiguous scan. Empty keys (which replication never stores) are not
    /// returned.
    async fn scan_segments(
        &self,
        partition: u32,
        segments: std::ops::Range<u32>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let Ok(first) = u16::try_from(segments.start) else {
            return Ok(Vec::new());
        };
        let after = match after {
            Some(key) => keys::object_key(partition, key),
            None => keys::segment_prefix(partition, first).to_vec(),
        };
        let range = ScanRange {
            prefix: keys::partition_prefix(partition).to_vec(),
            after: Some(after),
            limit,
        };
        let mut page = self.scan(Keyspace::Objects, range).await?;
        // The page may run into the segments after the range: cut it there.
        let end = page.partition_point(|(key, _)| {
            key.get(keys::PARTITION_PREFIX_LEN..keys::OBJECT_PREFIX_LEN)
                .is_some_and(|segment| {
                    u32::from(u16::from_be_bytes([segment[0], segment[1]])) < segments.end
                })
        });
        page.truncate(end);
        Ok(strip_object_keys(page))
    }

    /// The number of objects stored for `partition`.
    async fn count_partition(&self, partition: u32) -> Result<u64> {
        self.count(Keyspace::Objects, &keys::partition_prefix(partition))
            .await
    }

    /// Stores a hint: an object held for `target` until it can be delivered.
    async fn put_hint(&self, hint: &HintKey, value: Vec<u8>) -> Result<()> {
        self.put(Keyspace::Hints, hint.encode(), value).await
    }

    /// One page of the hints held for `target`, in (partition, key) order.
    async fn scan_hints(
        &self,
        target: &str,
        after: Option<&HintKey>,
        limit: usize,
    ) -> Result<Vec<(HintKey, Vec<u8>)>> {
        let prefix = keys::hint_target_prefix(target);
        let after = after.map(HintKey::encode);
        let page = self
            .scan(
                Keyspace::Hints,
                ScanRange {
                    prefix,
                    after,
                    limit,
                },
            )
            .await?;
        page.into_iter()
            .map(|(key, value)| Ok((HintKey::decode(&key)?, value)))
            .collect()
    }

    /// Removes a delivered hint.
    async fn delete_hint(&self, hint: &HintKey) -> Result<()> {
        self.delete(Keyspace::Hints, hint.encode()).await
    }

    /// Reads a meta entry (node identity, cluster state).
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get(Keyspace::Meta, name.as_bytes()).await
    }

    /// Stores a meta entry.
    async fn put_meta(&self, name: &str, value: Vec<u8>) -> Result<()> {
        self.put(Keyspace::Meta, name.as_bytes().to_vec(), value)
            .await
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}

/// Removes the partition and segment prefix of scanned object keys.
fn strip_object_keys(page: Vec<KeyValue>) -> Vec<KeyValue> {
    page.into_iter()
        .map(|(mut key, value)| {
            key.drain(..keys::OBJECT_PREFIX_LEN.min(key.len()));
            (key, value)
        })
        .collect()
}
