//! The coordinator path without a network: a 3-node in-process cluster over the in-memory
//! transport and memory stores, N = 3, R = W = 2, 1 KiB values. What is left is the
//! coordinator's own cost: routing, DVVS update and merge, encoding, quorum bookkeeping,
//! and keeping the anti-entropy trees current (measured with and without them).

#[path = "../tests/common/harness.rs"]
#[allow(dead_code, unreachable_pub)]
mod harness;

use criterion::{Criterion, criterion_group, criterion_main};
use dotkv_replication::{AaeConfig, GetRequest, LimitsConfig, PutRequest, ReplicationConfig};
use harness::TestCluster;

fn coordinator(c: &mut Criterion) {
    run(c, "coordinator", true);
    run(c, "coordinator, aae.enabled = false", false);
}

fn run(c: &mut Criterion, name: &str, trees: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Trees kept current (or not); no exchange runs during the benchmark.
    let aae = AaeConfig {
        enabled: trees,
        interval_ms: 3_600_000,
        ..AaeConfig::default()
    };
    let cluster = runtime.block_on(TestCluster::start_configured(
        3,
        ReplicationConfig::default(),
        LimitsConfig::default(),
        aae,
    ));
    let value = vec![b'x'; 1024];
    runtime.block_on(async {
        for i in 0..1000 {
            let request = PutRequest::new(format!("key-{i}"), value.clone());
            cluster.node(0).put(request).await.expect("load");
        }
    });
    let mut group = c.benchmark_group(name);
    let mut i = 0u64;
    group.bench_function("put 1 KiB (read-modify-write context)", |b| {
        b.to_async(&runtime).iter(|| {
            i += 1;
            let node = cluster.node((i % 3) as usize).clone();
            let key = format!("key-{}", i % 1000);
            let value = value.clone();
            async move {
                let read = node.get(GetRequest::new(key.clone())).await.expect("get");
                let request = PutRequest::new(key, value).with_context(read.context);
                node.put(request).await.expect("put")
            }
        });
    });
    group.bench_function("get 1 KiB", |b| {
        b.to_async(&runtime).iter(|| {
            i += 1;
            let node = cluster.node((i % 3) as usize).clone();
            let key = format!("key-{}", i % 1000);
            async move { node.get(GetRequest::new(key)).await.expect("get") }
        });
    });
    group.finish();
    drop(cluster);
}

criterion_group!(benches, coordinator);
criterion_main!(benches);
