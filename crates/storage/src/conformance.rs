//! The storage conformance suite: one function per behaviour every backend must have.
//!
//! **Unstable**: this module exists for dotkv's own tests (enable the `testing` feature to
//! use it from another crate) and may change at any time.
//!
//! Each check opens a fresh store of the given config in a temporary directory, exercises
//! one behaviour and panics with a message when the backend gets it wrong. Capability
//! differences are parameters, not forks: the memory backend skips only what needs
//! durability. [`conformance_tests!`](crate::conformance_tests) turns the suite into one
//! named `#[tokio::test]` per check for a backend, so one failure does not hide the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use tempfile::TempDir;

use crate::{
    BoxError, Error, HintKey, Keyspace, ScanRange, Storage, StorageConfig, StorageExt, TxError,
    Update, WriteBatch,
};

/// The default of `limits.max_key_bytes` (DESIGN.md): every backend must store such a key.
pub const MAX_USER_KEY_BYTES: usize = 1024;
/// The default of `limits.max_value_bytes` (DESIGN.md).
pub const MAX_USER_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// Opens a fresh store; the directory guard must outlive it.
pub async fn fresh(config: &StorageConfig) -> (TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().expect("create a temp dir for the store");
    let store = crate::open(dir.path(), config)
        .await
        .expect("open a fresh store");
    (dir, store)
}

fn config_for_test(config: &StorageConfig) -> StorageConfig {
    // fsync adds nothing to what these checks observe (crash tests keep sync on).
    StorageConfig {
        sync: false,
        ..config.clone()
    }
}

fn counter(value: Option<&[u8]>) -> u64 {
    value.map_or(0, |v| {
        u64::from_be_bytes(v.try_into().expect("an 8-byte counter"))
    })
}

/// put, get, overwrite, delete, and get of a missing key.
pub async fn put_get_overwrite_delete(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    assert_eq!(
        store.get_object(1, b"k").await.unwrap(),
        None,
        "missing key"
    );
    store.put_object(1, b"k", b"v1".to_vec()).await.unwrap();
    assert_eq!(
        store.get_object(1, b"k").await.unwrap(),
        Some(b"v1".to_vec())
    );
    store.put_object(1, b"k", b"v2".to_vec()).await.unwrap();
    assert_eq!(
        store.get_object(1, b"k").await.unwrap(),
        Some(b"v2".to_vec()),
        "overwrite"
    );
    assert_eq!(
        store.get_object(2, b"k").await.unwrap(),
        None,
        "same key, other partition"
    );
    store
        .delete(Keyspace::Objects, crate::keys::object_key(1, b"k"))
        .await
        .unwrap();
    assert_eq!(store.get_object(1, b"k").await.unwrap(), None, "deleted");
    store
        .delete(Keyspace::Objects, crate::keys::object_key(1, b"never"))
        .await
        .unwrap();
}

/// Keys and values are arbitrary bytes; an empty value is stored, not absent.
pub async fn binary_keys_and_values(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let cases: [(&[u8], &[u8]); 5] = [
        (b"", b"empty key"),
        (b"\x00", b""),
        (b"\x00\x00\xff", b"\xff\x00\x80"),
        (b"\xff\xff\xff\xff", b"\x00"),
        ("ключ".as_bytes(), "значение".as_bytes()),
    ];
    for (key, value) in cases {
        store
            .put_object(u32::MAX, key, value.to_vec())
            .await
            .unwrap();
    }
    for (key, value) in cases {
        assert_eq!(
            store.get_object(u32::MAX, key).await.unwrap().as_deref(),
            Some(value)
        );
    }
    assert_eq!(
        store.count_partition(u32::MAX).await.unwrap(),
        cases.len() as u64
    );
}

/// The configured maximum key and value sizes are stored and read back intact.
pub async fn maximum_sizes(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let key: Vec<u8> = (0..MAX_USER_KEY_BYTES).map(|i| (i % 251) as u8).collect();
    let value: Vec<u8> = (0..MAX_USER_VALUE_BYTES).map(|i| (i % 241) as u8).collect();
    store.put_object(3, &key, value.clone()).await.unwrap();
    let hint = HintKey {
        target: "n".repeat(64),
        partition: 3,
        key: key.clone(),
    };
    store.put_hint(&hint, value.clone()).await.unwrap();
    assert!(
        store.get_object(3, &key).await.unwrap() == Some(value.clone()),
        "max object"
    );
    let hints = store.scan_hints(&hint.target, None, 10).await.unwrap();
    assert!(
        hints.len() == 1 && hints[0].0 == hint && hints[0].1 == value,
        "max hint"
    );
}

/// A key over [`crate::MAX_STORE_KEY_BYTES`] is refused, and a batch holding one stores
/// nothing at all.
pub async fn oversized_key_refused_whole(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let huge = vec![b'k'; crate::MAX_STORE_KEY_BYTES + 1];
    let mut batch = WriteBatch::default();
    batch.put(
        Keyspace::Objects,
        crate::keys::object_key(0, b"ok"),
        b"v".to_vec(),
    );
    batch.put(Keyspace::Objects, huge.clone(), b"v".to_vec());
    let err = store
        .write(batch)
        .await
        .expect_err("an oversized key must be refused");
    assert!(matches!(err, Error::KeyTooLarge { .. }), "got {err:?}");
    assert_eq!(
        store.get_object(0, b"ok").await.unwrap(),
        None,
        "nothing of the batch stored"
    );
    let f: crate::UpdateFn = Box::new(|_| Ok(Update::Put(vec![1])));
    let err = store
        .update(Keyspace::Objects, &huge, f)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, TxError::Storage(Error::KeyTooLarge { .. })),
        "got {err:?}"
    );
    let err = store
        .put(Keyspace::Meta, vec![], vec![])
        .await
        .expect_err("empty key refused");
    assert!(matches!(err, Error::EmptyKey), "got {err:?}");
}

/// Scans return keys in ascending order of their encoding (segment, then key bytes)
/// whatever the insertion order; a segment range is scanned alone.
pub async fn scan_is_ordered(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let mut expected = BTreeMap::new();
    let mut batch = WriteBatch::default();
    // A fixed pseudo-random insertion order with binary keys of varied lengths.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..200u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = x.to_be_bytes()[..(x % 8 + 1) as usize].to_vec();
        expected.insert(key.clone(), i.to_be_bytes().to_vec());
        batch.put(
            Keyspace::Objects,
            crate::keys::object_key(5, &key),
            i.to_be_bytes().to_vec(),
        );
    }
    store.write(batch).await.unwrap();
    let page = store.scan_partition(5, None, 10_000).await.unwrap();
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = expected.into_iter().collect();
    expected.sort_by_key(|(key, _)| (crate::keys::segment_of(key), key.clone()));
    assert_eq!(page, expected);
    // The keys of segments [2^15, 2^15 + 2^14), in pages of 3.
    let segments = 1 << 15..(1 << 15) + (1 << 14);
    let (mut seen, mut after) = (Vec::new(), None::<Vec<u8>>);
    loop {
        let page = store
            .scan_segments(5, segments.clone(), after.as_deref(), 3)
            .await
            .unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page);
    }
    let in_range: Vec<_> = expected
        .into_iter()
        .filter(|(key, _)| segments.contains(&u32::from(crate::keys::segment_of(key))))
        .collect();
    assert!(!in_range.is_empty());
    assert_eq!(seen, in_range);
}

/// Paging with `after` visits every key once, in order, with at most `limit` per page.
pub async fn scan_pages(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let mut batch = WriteBatch::default();
    for i in 0..50u32 {
        batch.put(
            Keyspace::Objects,
            crate::keys::object_key(9, &i.to_be_bytes()),
            vec![],
        );
    }
    store.write(batch).await.unwrap();
    let (mut seen, mut after, mut pages) = (Vec::new(), None::<Vec<u8>>, 0);
    loop {
        let page = store.scan_partition(9, after.as_deref(), 7).await.unwrap();
        assert!(page.len() <= 7, "a page holds at most `limit` pairs");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page.into_iter().map(|(k, _)| k));
        pages += 1;
    }
    let mut expected: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_be_bytes().to_vec()).collect();
    expected.sort_by_key(|key| (crate::keys::segment_of(key), key.clone()));
    assert_eq!(seen, expected);
    assert_eq!(pages, 8);
}

/// A partition scan sees only that partition's objects: not its neighbours' (including the
/// last partition, whose range runs to the end of the keyspace), not hints, not meta.
pub async fn scan_stays_in_partition_and_keyspace(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let keys = [
        &b""[..],
        b"\x00",
        b"\x01\xff",
        b"\xff",
        b"\xff\xff\xff\xff\xff",
    ];
    for partition in [0, 1, 2, u32::MAX - 1, u32::MAX] {
        for key in keys {
            store
                .put_object(partition, key, partition.to_be_bytes().to_vec())
                .await
                .unwrap();
        }
    }
    // The same bytes as object keys, in the other keyspaces.
    let raw = crate::keys::object_key(1, b"\x00");
    store
        .put(Keyspace::Hints, raw.clone(), b"hint".to_vec())
        .await
        .unwrap();
    store
        .put(Keyspace::Meta, raw, b"meta".to_vec())
        .await
        .unwrap();
    for partition in [0, 1, 2, u32::MAX - 1, u32::MAX] {
        let page = store.scan_partition(partition, None, 100).await.unwrap();
        assert_eq!(page.len(), keys.len(), "partition {partition}");
        assert!(
            page.iter().all(|(_, v)| v == &partition.to_be_bytes()),
            "partition {partition}"
        );
        let count = store.count_partition(partition).await.unwrap();
        assert_eq!(count, keys.len() as u64, "partition {partition}");
    }
    assert_eq!(store.count_partition(3).await.unwrap(), 0);
    assert_eq!(store.count(Keyspace::Hints, b"").await.unwrap(), 1);
    let all = ScanRange {
        prefix: vec![],
        after: None,
        limit: 1000,
    };
    assert_eq!(store.scan(Keyspace::Meta, all).await.unwrap().len(), 1);
}

/// Hints are grouped by target; meta entries round-trip.
pub async fn hints_by_target_and_meta(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    for target in ["n1", "n10", "n2"] {
        for partition in [2u32, 1] {
            let hint = HintKey {
                target: target.into(),
                partition,
                key: b"k".to_vec(),
            };
            store
                .put_hint(&hint, target.as_bytes().to_vec())
                .await
                .unwrap();
        }
    }
    let hints = store.scan_hints("n1", None, 100).await.unwrap();
    let got: Vec<(String, u32)> = hints
        .iter()
        .map(|(h, _)| (h.target.clone(), h.partition))
        .collect();
    assert_eq!(got, [("n1".to_string(), 1), ("n1".to_string(), 2)]);
    let page = store
        .scan_hints("n1", Some(&hints[0].0), 100)
        .await
        .unwrap();
    assert_eq!(page.len(), 1, "paging resumes after the given hint");
    store.delete_hint(&hints[0].0).await.unwrap();
    assert_eq!(store.scan_hints("n1", None, 100).await.unwrap().len(), 1);
    assert_eq!(store.scan_hints("n10", None, 100).await.unwrap().len(), 2);
    store.put_meta("node_id", b"n1".to_vec()).await.unwrap();
    assert_eq!(
        store.get_meta("node_id").await.unwrap(),
        Some(b"n1".to_vec())
    );
    assert_eq!(store.get_meta("cluster_state").await.unwrap(), None);
}

/// Update applies the function's decision; an abort writes nothing.
pub async fn update_applies_or_aborts(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let put: crate::UpdateFn = Box::new(|old| {
        assert_eq!(old, None);
        Ok(Update::Put(b"one".to_vec()))
    });
    assert_eq!(
        store.update_object(0, b"k", put).await.unwrap(),
        Some(b"one".to_vec())
    );
    let abort: crate::UpdateFn = Box::new(|_| Err(BoxError::from(Box::from("refused"))));
    let err = store
        .update_object(0, b"k", abort)
        .await
        .expect_err("abort");
    assert!(matches!(err, TxError::Abort(_)), "got {err:?}");
    assert_eq!(
        store.get_object(0, b"k").await.unwrap(),
        Some(b"one".to_vec()),
        "unchanged"
    );
    let keep: crate::UpdateFn = Box::new(|_| Ok(Update::Keep));
    assert_eq!(
        store.update_object(0, b"k", keep).await.unwrap(),
        Some(b"one".to_vec())
    );
    let delete: crate::UpdateFn = Box::new(|_| Ok(Update::Delete));
    assert_eq!(store.update_object(0, b"k", delete).await.unwrap(), None);
    assert_eq!(store.get_object(0, b"k").await.unwrap(), None);
}

/// 16 tasks incrementing one counter by read-modify-write lose no increment.
pub async fn rmw_concurrent_updates_serialize(config: &StorageConfig) {
    const TASKS: u64 = 16;
    const EACH: u64 = 25;
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for _ in 0..EACH {
                let increment: crate::UpdateFn =
                    Box::new(|old| Ok(Update::Put((counter(old) + 1).to_be_bytes().to_vec())));
                store.update_object(0, b"counter", increment).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("an incrementing task panicked");
    }
    let value = store.get_object(0, b"counter").await.unwrap();
    assert_eq!(counter(value.as_deref()), TASKS * EACH);
}

/// 64 concurrent writers (one group commit or several) all land.
pub async fn concurrent_writes_all_land(config: &StorageConfig) {
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for i in 0..10u32 {
                let key = [task.to_be_bytes(), i.to_be_bytes()].concat();
                store.put_object(4, &key, key.clone()).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a writer task panicked");
    }
    assert_eq!(store.count_partition(4).await.unwrap(), 640);
    let page = store.scan_partition(4, None, 1000).await.unwrap();
    assert!(page.iter().all(|(k, v)| k == v));
}

/// While a writer commits batches, readers never see half of one: a scan sees both keys of
/// a batch with the same generation, and a get never sees a torn value.
pub async fn readers_see_consistent_snapshots(config: &StorageConfig) {
    const ROUNDS: u32 = 200;
    let (_dir, store) = fresh(&config_for_test(config)).await;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for generation in 1..=ROUNDS {
                let mut batch = WriteBatch::default();
                let big = vec![(generation % 251) as u8; 64 * 1024];
                batch.put(
                    Keyspace::Objects,
                    crate::keys::object_key(6, b"a"),
                    generation.to_be_bytes().to_vec(),
                );
                batch.put(
                    Keyspace::Objects,
                    crate::keys::object_key(6, b"b"),
                    generation.to_be_bytes().to_vec(),
                );
                batch.put(Keyspace::Objects, crate::keys::object_key(7, b"big"), big);
                store.write(batch).await.unwrap();
            }
        })
    };
    let mut reads = 0u32;
    let mut last_seen = 0u32;
    while !writer.is_finished() || reads == 0 {
        let page = store.scan_partition(6, None, 10).await.unwrap();
        if let [(_, a), (_, b)] = page.as_slice() {
            assert_eq!(a, b, "a scan saw half of a batch");
            let generation = u32::from_be_bytes(a.as_slice().try_into().unwrap());
            assert!(
                generation >= last_seen,
                "a later read saw an older generation"
            );
            last_seen = generation;
        } else {
            assert!(page.is_empty(), "a scan saw one key of a two-key batch");
        }
        if let Some(big) = store.get_object(7, b"big").await.unwrap() {
            assert!(big.iter().all(|&b| b == big[0]), "a get saw a torn value");
        }
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer panicked");
    let page = store.scan_partition(6, None, 10).await.unwrap();
    assert_eq!(page[0].1, ROUNDS.to_be_bytes());
}

/// Close, reopen the same directory: everything is there. For durable backends only
/// (`durable = false` checks that a closed store refuses operations instead).
pub async fn reopen_persists(config: &StorageConfig) {
    let config = config_for_test(config);
    let (dir, store) = fresh(&config).await;
    for i in 0..100u32 {
        store
            .put_object(i % 4, &i.to_be_bytes(), vec![i as u8; 100])
            .await
            .unwrap();
    }
    store.put_meta("node_id", b"n7".to_vec()).await.unwrap();
    let hint = HintKey {
        target: "n2".into(),
        partition: 1,
        key: b"h".to_vec(),
    };
    store.put_hint(&hint, b"obj".to_vec()).await.unwrap();
    store.close().await.unwrap();
    store.close().await.expect("closing twice is not an error");
    let err = store
        .get_meta("node_id")
        .await
        .expect_err("a closed store refuses reads");
    assert!(matches!(err, Error::Closed), "got {err:?}");
    let err = store
        .put_meta("x", vec![])
        .await
        .expect_err("a closed store refuses writes");
    assert!(matches!(err, Error::Closed), "got {err:?}");
    drop(store);
    if !config.backend.is_durable() {
        return;
    }
    let store = crate::open(dir.path(), &config).await.expect("reopen");
    for partition in 0..4 {
        assert_eq!(store.count_partition(partition).await.unwrap(), 25);
    }
    assert_eq!(
        store.get_object(3, &7u32.to_be_bytes()).await.unwrap(),
        Some(vec![7; 100])
    );
    assert_eq!(
        store.get_meta("node_id").await.unwrap(),
        Some(b"n7".to_vec())
    );
    assert_eq!(
        store.scan_hints("n2", None, 10).await.unwrap(),
        vec![(hint, b"obj".to_vec())]
    );
    store.close().await.unwrap();
}

/// Makes one `#[tokio::test]` per conformance check for one backend, in a module named
/// `$name`:
///
/// ```ignore
/// dotkv_storage::conformance_tests!(lmdb, dotkv_storage::StorageKind::Lmdb);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $kind:expr) => {
        mod $name {
            $crate::conformance_tests!(@checks $kind;
                put_get_overwrite_delete,
                binary_keys_and_values,
                maximum_sizes,
                oversized_key_refused_whole,
                scan_is_ordered,
                scan_pages,
                scan_stays_in_partition_and_keyspace,
                hints_by_target_and_meta,
                update_applies_or_aborts,
                rmw_concurrent_updates_serialize,
                concurrent_writes_all_land,
                readers_see_consistent_snapshots,
                reopen_persists,
            );
        }
    };
    (@checks $kind:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let config = $crate::StorageConfig::with_backend($kind);
                $crate::conformance::$check(&config).await;
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "lmdb")]
    crate::conformance_tests!(lmdb, crate::StorageKind::Lmdb);
    #[cfg(feature = "sqlite")]
    crate::conformance_tests!(sqlite, crate::StorageKind::Sqlite);
    crate::conformance_tests!(memory, crate::StorageKind::Memory);
}
