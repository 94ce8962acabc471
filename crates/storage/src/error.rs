//! The storage error type.
//!
//! Every variant a caller acts on has its own case with its context in fields (which
//! backend, which file, which key). Sources are held in `Arc` so that one failed group
//! commit can hand the same error to every writer of the group.

use std::path::PathBuf;
use std::sync::Arc;

use crate::StorageKind;

/// An opaque, shareable error cause.
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A storage result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured backend is known but was not compiled into this build.
    #[error(
        "storage.backend = \"{requested}\" is not compiled into this build \
         (available: {available}); rebuild with the `{requested}` feature of dotkv-storage"
    )]
    BackendNotCompiled {
        /// The backend asked for.
        requested: StorageKind,
        /// The backends this build has, comma separated.
        available: String,
    },

    /// The store has no room left: the LMDB map is full or the disk is full.
    #[error("{backend} store at {} is full: {hint}", path.display())]
    Full {
        /// Which backend.
        backend: StorageKind,
        /// The data file or directory.
        path: PathBuf,
        /// What the operator can do about it.
        hint: &'static str,
    },

    /// The data directory holds a store of another backend.
    #[error(
        "data dir {} holds a {found} store, but storage.backend = \"{expected}\"; \
         use the matching profile (--profile {found}) or another --data-dir",
        path.display()
    )]
    WrongBackend {
        /// The data directory.
        path: PathBuf,
        /// The configured backend.
        expected: StorageKind,
        /// What the directory's marker says it holds.
        found: String,
    },

    /// The data directory holds a store of an older on-disk format.
    #[error(
        "data dir {} holds a format {found} store; this dotkv reads format {expected} \
         (objects are keyed by anti-entropy segment since format 2): start the node on an \
         empty --data-dir and let anti-entropy and handoff refill it from its replicas",
        path.display()
    )]
    UnsupportedFormat {
        /// The data directory.
        path: PathBuf,
        /// The format this build reads.
        expected: u32,
        /// The format the directory's marker names.
        found: String,
    },

    /// A data file exists but cannot be read as a store of this backend.
    #[error(
        "{backend} store file {} is corrupt or not a {backend} store ({source}); \
         restore it from a replica (move the data dir away and let anti-entropy rebuild it)",
        path.display()
    )]
    Corrupt {
        /// Which backend.
        backend: StorageKind,
        /// The file that failed to open.
        path: PathBuf,
        /// The engine's own words.
        source: BoxError,
    },

    /// A key longer than any backend can hold ([`crate::MAX_STORE_KEY_BYTES`]).
    #[error("storage key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// The encoded key length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// An empty storage key (encoded object and hint keys are never empty).
    #[error("empty storage key")]
    EmptyKey,

    /// A stored key does not follow its keyspace's layout (see [`crate::keys`]).
    #[error("malformed {space} key of {len} bytes")]
    MalformedKey {
        /// The keyspace.
        space: crate::Keyspace,
        /// The key's length.
        len: usize,
    },

    /// The store was closed; no further operation is accepted.
    #[error("the store is closed")]
    Closed,

    /// A filesystem operation on the data directory failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },

    /// Any other engine failure.
    #[error("{backend} error: {source}")]
    Backend {
        /// Which backend.
        backend: StorageKind,
        /// The engine's error.
        source: BoxError,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn backend(
        backend: StorageKind,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            backend,
            source: Arc::new(source),
        }
    }
}

/// The error of a read-modify-write ([`crate::Storage::update`]): the caller's function
/// chose to abort, or the storage failed. Either way nothing was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxError {
    /// The update function returned an error; the stored value is unchanged.
    #[error("update aborted: {0}")]
    Abort(BoxError),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] Error),
}
