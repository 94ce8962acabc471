//! The `[storage]` section of the configuration and the backend choice.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which storage engine a node uses (`storage.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// LMDB through heed: memory-mapped B+tree, the default.
    Lmdb,
    /// SQLite through sqlx, in WAL mode.
    Sqlite,
    /// In memory only: nothing survives a restart.
    Memory,
}

impl StorageKind {
    /// Every backend, compiled in or not.
    pub const ALL: [Self; 3] = [Self::Lmdb, Self::Sqlite, Self::Memory];

    /// The config name of the backend.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lmdb => "lmdb",
            Self::Sqlite => "sqlite",
            Self::Memory => "memory",
        }
    }

    /// Whether this build includes the backend.
    pub const fn is_compiled(self) -> bool {
        match self {
            Self::Lmdb => cfg!(feature = "lmdb"),
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Memory => true,
        }
    }

    /// Whether data survives closing the store.
    pub const fn is_durable(self) -> bool {
        !matches!(self, Self::Memory)
    }

    /// The backends this build includes, comma separated (for messages).
    pub fn compiled_list() -> String {
        let names: Vec<&str> = Self::ALL
            .into_iter()
            .filter(|k| k.is_compiled())
            .map(Self::name)
            .collect();
        names.join(", ")
    }
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StorageKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown backend `{s}`; accepted values: lmdb, sqlite, memory"))
    }
}

/// Storage settings (`[storage]` in `config/dotkv.toml`, `DOTKV_STORAGE__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The engine: `lmdb` (default), `sqlite` or `memory`.
    pub backend: StorageKind,
    /// Whether a write is on disk (fsync) before it is acknowledged. Default `true`. With
    /// `false` a crash of the machine (not of the process) can lose recent writes.
    pub sync: bool,
    /// The LMDB map size in MiB: the most data the store can hold. It is address space, not
    /// memory or disk, until it is used. Default 16384 (16 GiB).
    pub lmdb_map_size_mb: u64,
    /// The most writes one group commit may hold. Default 1024.
    pub group_commit_max_ops: usize,
    /// Read connections of the SQLite pool (writes have one connection of their own).
    /// Default 4.
    pub sqlite_read_connections: u32,
    /// Seconds a deleted key's tombstone is kept after the delete before anti-entropy
    /// reaps it (once every replica holds it). Default 86 400 (a day). A replica, or a
    /// fallback holding a hint, that comes back with an older value after the tombstone
    /// was reaped brings that value back: keep it longer than the outages you expect.
    pub tombstone_grace_s: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageKind::Lmdb,
            sync: true,
            lmdb_map_size_mb: 16 * 1024,
            group_commit_max_ops: 1024,
            sqlite_read_connections: 4,
            tombstone_grace_s: 86_400,
        }
    }
}

impl StorageConfig {
    /// A config for `backend` with the other settings at their defaults.
    pub fn with_backend(backend: StorageKind) -> Self {
        Self {
            backend,
            ..Self::default()
        }
    }

    /// Checks the values, naming the offending key: `Err("storage.x: reason")`.
    pub fn validate(&self) -> Result<(), String> {
        if !self.backend.is_compiled() {
            return Err(format!(
                "storage.backend: `{}` is not compiled into this build (available: {})",
                self.backend,
                StorageKind::compiled_list()
            ));
        }
        if self.lmdb_map_size_mb == 0 || self.lmdb_map_size_mb > (1 << 30) {
            return Err(format!(
                "storage.lmdb_map_size_mb = {} must be between 1 and 1073741824",
                self.lmdb_map_size_mb
            ));
        }
        if self.group_commit_max_ops == 0 {
            return Err("storage.group_commit_max_ops = 0 must be at least 1".into());
        }
        if self.sqlite_read_connections == 0 {
            return Err("storage.sqlite_read_connections = 0 must be at least 1".into());
        }
        Ok(())
    }
}
