//! DVVS micro-benchmarks: `sync` and `update` of sets with 3 and 10 replica ids and 1 and
//! 10 siblings (1 KiB values), and context-token encode/decode.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dotkv::versioning::{ContextToken, DvvSet, ReplicaId, decode, encode};

type Value = Option<Vec<u8>>;

/// A set whose history names `ids` replicas and which holds `siblings` concurrent values.
fn set(ids: u64, siblings: usize) -> DvvSet<Value> {
    let mut set = DvvSet::default();
    // A history with events from every replica, all overwritten...
    for id in 0..ids {
        set = set.update(&set.join(), Some(vec![0; 1024]), ReplicaId(id));
    }
    let context = set.join();
    // ...then `siblings` concurrent writes with the same context.
    let mut out = set.clone();
    for i in 0..siblings {
        out = out.update(
            &context,
            Some(vec![i as u8; 1024]),
            ReplicaId(i as u64 % ids),
        );
    }
    out
}

fn dvvs(c: &mut Criterion) {
    let mut group = c.benchmark_group("dvvs");
    for (ids, siblings) in [(3, 1), (3, 10), (10, 1), (10, 10)] {
        let name = format!("{ids}ids_{siblings}siblings");
        let a = set(ids, siblings);
        // A replica that saw one more write than `a`.
        let b = a.update(&a.join(), Some(vec![9; 1024]), ReplicaId(0));
        group.bench_function(BenchmarkId::new("sync", &name), |bench| {
            bench.iter(|| black_box(&a).sync(black_box(&b)))
        });
        let context = a.join();
        group.bench_function(BenchmarkId::new("update", &name), |bench| {
            bench.iter(|| {
                black_box(&a).update(black_box(&context), Some(vec![1; 1024]), ReplicaId(1))
            })
        });
        let bytes = encode(&a);
        group.bench_function(BenchmarkId::new("encode", &name), |bench| {
            bench.iter(|| encode(black_box(&a)))
        });
        group.bench_function(BenchmarkId::new("decode", &name), |bench| {
            bench.iter(|| decode::<Value>(black_box(&bytes)).unwrap())
        });
        let token = ContextToken::from(&context).to_string();
        group.bench_function(BenchmarkId::new("token_encode", &name), |bench| {
            bench.iter(|| ContextToken::from(black_box(&context)).to_string())
        });
        group.bench_function(BenchmarkId::new("token_decode", &name), |bench| {
            bench.iter(|| black_box(&token).parse::<ContextToken>().unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = dvvs
}
criterion_main!(benches);
