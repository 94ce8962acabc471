//! The SQLite backend (sqlx), feature `sqlite`.
//!
//! One database file per data dir (`dotkv.sqlite`) in WAL mode, one `WITHOUT ROWID` table
//! per keyspace with a `BLOB` primary key, so rows are stored in key order and a partition
//! scan is a range scan of the primary key. Reads go through a pool of read-only
//! connections, which WAL lets run beside the writer; writes go through one dedicated
//! connection owned by the group-commit writer. With `storage.sync = true` the connection
//! uses `synchronous = FULL` (the WAL is fsynced at every commit); otherwise `NORMAL`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use crate::group_commit::{CommitMetrics, CommitQueue, GroupApplier, OpOutcome, WriteOp};
use crate::{
    BatchOp, Error, KeyValue, Keyspace, Result, ScanRange, Storage, StorageConfig, StorageKind,
    StorageUsage, TxError, Update, UpdateFn, WriteBatch,
};

const KIND: StorageKind = StorageKind::Sqlite;

/// The database file inside the data dir.
pub(crate) const FILE_NAME: &str = "dotkv.sqlite";

/// The SQL of one keyspace's table. sqlx caches prepared statements by their text, so each
/// statement is a fixed string.
struct Statements {
    create: &'static str,
    get: &'static str,
    put: &'static str,
    delete: &'static str,
    scan_to: &'static str,
    scan_to_end: &'static str,
    count_to: &'static str,
    count_to_end: &'static str,
}

macro_rules! statements {
    ($table:literal) => {
        Statements {
            create: concat!(
                "CREATE TABLE IF NOT EXISTS ",
                $table,
                " (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID"
            ),
            get: concat!("SELECT v FROM ", $table, " WHERE k = ?1"),
            put: concat!("INSERT OR REPLACE INTO ", $table, " (k, v) VALUES (?1, ?2)"),
            delete: concat!("DELETE FROM ", $table, " WHERE k = ?1"),
            scan_to: concat!(
                "SELECT k, v FROM ",
                $table,
                " WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3"
            ),
            scan_to_end: concat!(
                "SELECT k, v FROM ",
                $table,
                " WHERE k >= ?1 ORDER BY k LIMIT ?2"
            ),
            count_to: concat!("SELECT COUNT(*) FROM ", $table, " WHERE k >= ?1 AND k < ?2"),
            count_to_end: concat!("SELECT COUNT(*) FROM ", $table, " WHERE k >= ?1"),
        }
    };
}

/// Indexed by [`Keyspace::index`]; the table names are [`Keyspace::name`].
const STATEMENTS: [Statements; 3] = [
    statements!("objects"),
    statements!("hints"),
    statements!("meta"),
];

fn sql(space: Keyspace) -> &'static Statements {
    &STATEMENTS[space.index()]
}

/// A store in a SQLite database file.
#[derive(Debug)]
pub struct SqliteStorage {
    /// Read-only connections for gets, scans and counts.
    readers: SqlitePool,
    queue: CommitQueue,
    /// The database file, for error messages.
    path: Arc<PathBuf>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the SQLite store in directory `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when `dotkv.sqlite` is not a SQLite database, [`Error::Io`] when
    /// the directory cannot be used, [`Error::Backend`] for other SQLite failures.
    pub async fn open(dir: &Path, config: &StorageConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = Arc::new(dir.join(FILE_NAME));
        let map = |e| map_err(e, &path);
        let options = SqliteConnectOptions::new()
            .filename(path.as_path())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if config.sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(30))
            // One log line per statement would flood the server's log.
            .disable_statement_logging();
        let mut writer = options.connect().await.map_err(map)?;
        for space in Keyspace::ALL {
            sqlx::query(sql(space).create)
                .execute(&mut writer)
                .await
                .map_err(map)?;
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(config.sqlite_read_connections)
            .connect_with(options.read_only(true))
            .await
            .map_err(map)?;
        let queue = CommitQueue::start(
            KIND,
            SqliteWriter {
                conn: Some(writer),
                path: Arc::clone(&path),
            },
            config.group_commit_max_ops,
        );
        Ok(Self {
            readers,
            queue,
            path,
        })
    }

    fn map(&self) -> impl Fn(sqlx::Error) -> Error + '_ {
        |e| map_err(e, &self.path)
    }
}

/// Turns a sqlx error into a storage error that says what to do.
fn map_err(error: sqlx::Error, path: &Path) -> Error {
    // SQLite primary result codes (the low byte of an extended code).
    const SQLITE_CORRUPT: u32 = 11;
    const SQLITE_FULL: u32 = 13;
    const SQLITE_NOTADB: u32 = 26;
    let path = path.to_path_buf();
    let code = match &error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<u32>().ok())
            .map(|c| c & 0xff),
        sqlx::Error::PoolClosed => return Error::Closed,
        _ => None,
    };
    match code {
        Some(SQLITE_FULL) => Error::Full {
            backend: KIND,
            path,
            hint: "the disk is full; free space on the data dir's filesystem",
        },
        Some(SQLITE_CORRUPT | SQLITE_NOTADB) => Error::Corrupt {
            backend: KIND,
            path,
            source: Arc::new(error),
        },
        _ => Error::backend(KIND, error),
    }
}

/// The group-commit applier: each group is one SQLite transaction on the writer connection.
struct SqliteWriter {
    /// `None` after shutdown.
    conn: Option<SqliteConnection>,
    path: Arc<PathBuf>,
}

impl SqliteWriter {
    async fn apply_group(
        conn: &mut SqliteConnection,
        ops: Vec<WriteOp>,
    ) -> sqlx::Result<Vec<OpOutcome>> {
        let mut tx = conn.begin().await?;
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let outcome = match op {
                WriteOp::Batch(batch) => {
                    for op in batch.ops() {
                        match op {
                            BatchOp::Put { space, key, value } => {
                                sqlx::query(sql(*space).put)
                                    .bind(key)
                                    .bind(value)
                                    .execute(&mut *tx)
                                    .await?
                            }
                            BatchOp::Delete { space, key } => {
                                sqlx::query(sql(*space).delete)
                                    .bind(key)
                                    .execute(&mut *tx)
                                    .await?
                            }
                        };
                    }
                    Ok(None)
                }
                WriteOp::Update { space, key, f } => {
                    let current: Option<Vec<u8>> = sqlx::query_scalar(sql(space).get)
                        .bind(&key)
                        .fetch_optional(&mut *tx)
                        .await?;
                    match f(current.as_deref()) {
                        Err(abort) => Err(TxError::Abort(abort)),
                        Ok(Update::Keep) => Ok(current),
                        Ok(Update::Put(value)) => {
                            sqlx::query(sql(space).put)
                                .bind(&key)
                                .bind(&value)
                                .execute(&mut *tx)
                                .await?;
                            Ok(Some(value))
                        }
                        Ok(Update::Delete) => {
                            sqlx::query(sql(space).delete)
                                .bind(&key)
                                .execute(&mut *tx)
                                .await?;
                            Ok(None)
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

#[async_trait]
impl GroupApplier for SqliteWriter {
    async fn apply(&mut self, ops: Vec<WriteOp>) -> Result<Vec<OpOutcome>> {
        let conn = self.conn.as_mut().ok_or(Error::Closed)?;
        Self::apply_group(conn, ops)
            .await
            .map_err(|e| map_err(e, &self.path))
    }

    async fn shutdown(&mut self) -> Result<()> {
        match self.conn.take() {
            Some(conn) => conn.close().await.map_err(|e| map_err(e, &self.path)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    fn kind(&self) -> StorageKind {
        KIND
    }

    fn commit_metrics(&self) -> Option<CommitMetrics> {
        Some(self.queue.metrics().clone())
    }

    async fn usage(&self) -> Result<Option<StorageUsage>> {
        // Counting rows would scan the table: only the size.
        let bytes: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&self.readers)
        .await
        .map_err(self.map())?;
        Ok(Some(StorageUsage {
            bytes: u64::try_from(bytes).unwrap_or(0),
            objects: None,
        }))
    }

    async fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(sql(space).get)
            .bind(key)
            .fetch_optional(&self.readers)
            .await
            .map_err(self.map())
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
        let limit = i64::try_from(range.limit).unwrap_or(i64::MAX);
        let lower = range.lower_bound();
        let query = match range.upper_bound() {
            Some(upper) => sqlx::query_as(sql(space).scan_to)
                .bind(lower)
                .bind(upper)
                .bind(limit),
            None => sqlx::query_as(sql(space).scan_to_end)
                .bind(lower)
                .bind(limit),
        };
        query.fetch_all(&self.readers).await.map_err(self.map())
    }

    async fn count(&self, space: Keyspace, prefix: &[u8]) -> Result<u64> {
        let query = match crate::keys::prefix_end(prefix) {
            Some(upper) => sqlx::query_scalar(sql(space).count_to)
                .bind(prefix)
                .bind(upper),
            None => sqlx::query_scalar(sql(space).count_to_end).bind(prefix),
        };
        let count: i64 = query.fetch_one(&self.readers).await.map_err(self.map())?;
        Ok(count.unsigned_abs())
    }

    async fn close(&self) -> Result<()> {
        self.queue.close().await?;
        self.readers.close().await;
        Ok(())
    }
}
