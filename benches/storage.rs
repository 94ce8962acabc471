//! Storage micro-benchmarks, per backend: batched puts, single gets, and 64 concurrent
//! single puts with `storage.sync = true` (what group commit is for).
//!
//! Run with `just bench` or `cargo bench --bench storage`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dotkv::storage::{Keyspace, StorageConfig, StorageExt, StorageKind, WriteBatch, keys};

const VALUE: usize = 1024;
const BATCH: usize = 100;
const PRELOADED: u32 = 10_000;

fn backends() -> [StorageKind; 3] {
    [StorageKind::Lmdb, StorageKind::Sqlite, StorageKind::Memory]
}

fn storage(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("storage");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    for kind in backends() {
        let config = StorageConfig {
            sync: true,
            ..StorageConfig::with_backend(kind)
        };
        let dir = tempfile::tempdir().unwrap();
        let store = runtime
            .block_on(dotkv::storage::open(dir.path(), &config))
            .unwrap();
        runtime.block_on(async {
            for chunk in (0..PRELOADED).collect::<Vec<_>>().chunks(1000) {
                let mut batch = WriteBatch::default();
                for &i in chunk {
                    let key = keys::object_key(i % 256, &i.to_be_bytes());
                    batch.put(Keyspace::Objects, key, vec![7; VALUE]);
                }
                store.write(batch).await.unwrap();
            }
        });

        let mut next = PRELOADED;
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(BenchmarkId::new("put_batch_100x1KiB_sync", kind), |b| {
            b.to_async(&runtime).iter(|| {
                let mut batch = WriteBatch::default();
                for _ in 0..BATCH {
                    next += 1;
                    batch.put(
                        Keyspace::Objects,
                        keys::object_key(next % 256, &next.to_be_bytes()),
                        vec![1; VALUE],
                    );
                }
                let store = Arc::clone(&store);
                async move { store.write(batch).await.unwrap() }
            })
        });

        group.throughput(Throughput::Elements(64));
        group.bench_function(BenchmarkId::new("put_64_concurrent_1KiB_sync", kind), |b| {
            b.to_async(&runtime).iter(|| {
                let store = Arc::clone(&store);
                next += 64;
                let base = next;
                async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..64u32 {
                        let store = Arc::clone(&store);
                        let key = base - i;
                        tasks.spawn(async move {
                            store
                                .put_object(key % 256, &key.to_be_bytes(), vec![2; VALUE])
                                .await
                        });
                    }
                    while let Some(done) = tasks.join_next().await {
                        done.unwrap().unwrap();
                    }
                }
            })
        });

        let mut probe = 0u32;
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("get_1KiB", kind), |b| {
            b.to_async(&runtime).iter(|| {
                probe = probe.wrapping_mul(2_654_435_761).wrapping_add(1) % PRELOADED;
                let store = Arc::clone(&store);
                let key = probe;
                async move {
                    store
                        .get_object(key % 256, &key.to_be_bytes())
                        .await
                        .unwrap()
                        .unwrap()
                }
            })
        });
        runtime.block_on(store.close()).unwrap();
    }
    group.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
