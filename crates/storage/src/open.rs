//! Picking and opening the configured backend (`storage.backend`).
//!
//! A data dir carries a marker file, `dotkv-store`, naming the backend that created it, so
//! that a node started with the wrong profile is stopped with a clear message instead of
//! creating a second, empty store beside its data.

use std::path::Path;
use std::sync::Arc;

use crate::{Error, MemoryStorage, Result, Storage, StorageConfig, StorageKind};

/// The marker file in a data dir.
pub const MARKER_FILE: &str = "dotkv-store";

/// Opens the store that `config` selects in directory `dir` (created if needed; the memory
/// backend does not touch it).
///
/// # Errors
///
/// [`Error::BackendNotCompiled`] for a backend this build lacks, [`Error::WrongBackend`]
/// when `dir` holds another backend's store, and the backend's own open errors.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use dotkv_storage::{StorageConfig, StorageKind};
/// let config = StorageConfig::with_backend(StorageKind::Memory);
/// let store = dotkv_storage::open(std::path::Path::new("unused"), &config).await?;
/// assert_eq!(store.kind(), StorageKind::Memory);
/// # Ok::<_, dotkv_storage::Error>(()) }).unwrap();
/// ```
pub async fn open(dir: &Path, config: &StorageConfig) -> Result<Arc<dyn Storage>> {
    let kind = config.backend;
    if !kind.is_compiled() {
        return Err(Error::BackendNotCompiled {
            requested: kind,
            available: StorageKind::compiled_list(),
        });
    }
    if kind == StorageKind::Memory {
        return Ok(Arc::new(MemoryStorage::new()));
    }
    check_marker(dir, kind)?;
    check_format(dir)?;
    let store: Arc<dyn Storage> = match kind {
        #[cfg(feature = "lmdb")]
        StorageKind::Lmdb => Arc::new(crate::LmdbStorage::open(dir, config).await?),
        #[cfg(feature = "sqlite")]
        StorageKind::Sqlite => Arc::new(crate::SqliteStorage::open(dir, config).await?),
        _ => unreachable!("is_compiled() checked above"),
    };
    write_marker(dir, kind)?;
    Ok(store)
}

/// The on-disk format: 2 since object keys carry their anti-entropy segment.
const FORMAT: u32 = 2;

fn marker_text(kind: StorageKind) -> String {
    format!("dotkv store\nbackend = {kind}\nformat = {FORMAT}\n")
}

/// Refuses a store whose marker names another format.
fn check_format(dir: &Path) -> Result<()> {
    let marker = dir.join(MARKER_FILE);
    let text = match std::fs::read_to_string(&marker) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(marker, e)),
    };
    let found = text
        .lines()
        .find_map(|line| line.strip_prefix("format = "))
        .map_or("unknown", str::trim);
    if found == FORMAT.to_string() {
        return Ok(());
    }
    Err(Error::UnsupportedFormat {
        path: dir.to_path_buf(),
        expected: FORMAT,
        found: found.to_owned(),
    })
}

/// Which backend a data dir holds: its marker, else the files a backend leaves.
fn detect(dir: &Path) -> Result<Option<String>> {
    let marker = dir.join(MARKER_FILE);
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let backend = text
                .lines()
                .find_map(|line| line.strip_prefix("backend = "))
                .map(str::trim)
                .unwrap_or("unknown");
            return Ok(Some(backend.to_owned()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(marker, e)),
    }
    Ok(if dir.join("data.mdb").exists() {
        Some("lmdb".into())
    } else if dir.join("dotkv.sqlite").exists() {
        Some("sqlite".into())
    } else {
        None
    })
}

fn check_marker(dir: &Path, kind: StorageKind) -> Result<()> {
    match detect(dir)? {
        Some(found) if found != kind.name() => Err(Error::WrongBackend {
            path: dir.to_path_buf(),
            expected: kind,
            found,
        }),
        _ => Ok(()),
    }
}

fn write_marker(dir: &Path, kind: StorageKind) -> Result<()> {
    let marker = dir.join(MARKER_FILE);
    if marker.exists() {
        return Ok(());
    }
    std::fs::write(&marker, marker_text(kind)).map_err(|e| Error::io(marker, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_of_an_older_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MARKER_FILE),
            "dotkv store\nbackend = memory\nformat = 1\n",
        )
        .unwrap();
        let error = check_format(dir.path()).unwrap_err();
        assert!(matches!(error, Error::UnsupportedFormat { .. }), "{error}");
        assert!(error.to_string().contains("format 1"), "{error}");
        std::fs::write(
            dir.path().join(MARKER_FILE),
            marker_text(StorageKind::Memory),
        )
        .unwrap();
        check_format(dir.path()).unwrap();
    }
}
