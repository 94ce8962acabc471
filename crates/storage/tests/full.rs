//! A full LMDB map is reported as `Error::Full` naming the file and what to do; the store
//! stays readable, earlier writes stay, and nothing panics.

use dotkv_storage::{Error, StorageConfig, StorageExt, StorageKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lmdb_map_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        lmdb_map_size_mb: 1,
        sync: false,
        ..StorageConfig::with_backend(StorageKind::Lmdb)
    };
    let store = dotkv_storage::open(dir.path(), &config).await.unwrap();
    let mut written = 0u32;
    let err = loop {
        match store
            .put_object(0, &written.to_be_bytes(), vec![7; 16 * 1024])
            .await
        {
            Ok(()) => written += 1,
            Err(err) => break err,
        }
        assert!(written < 1000, "a 1 MiB map cannot hold 16 MiB");
    };
    let Error::Full { ref path, hint, .. } = err else {
        panic!("expected Error::Full, got {err:?}")
    };
    assert!(path.ends_with("data.mdb"), "{err}");
    assert!(hint.contains("storage.lmdb_map_size_mb"), "{err}");
    assert!(err.to_string().contains("is full"), "{err}");
    // Earlier writes are intact and the store still serves reads and small deletes.
    assert!(written > 0);
    assert_eq!(
        store.get_object(0, &0u32.to_be_bytes()).await.unwrap(),
        Some(vec![7; 16 * 1024])
    );
    assert_eq!(store.count_partition(0).await.unwrap(), u64::from(written));
    store.close().await.unwrap();
}
