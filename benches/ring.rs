//! Ring micro-benchmarks: key → partition → preference list, and computing a ring.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dotkv::ring::{Member, Ring};

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            Member::new(
                format!("node-{i}"),
                1 + (i % 4) as u32,
                format!("z{}", i % 5),
            )
        })
        .collect()
}

fn ring(c: &mut Criterion) {
    let ring = Ring::build(members(10), 3, 1024, 1).unwrap();
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("user:{i:08}").into_bytes())
        .collect();
    let mut i = 0;
    c.bench_function("ring/lookup_16B_key_10_nodes_q1024", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let partition = ring.partition_of(black_box(&keys[i]));
            black_box(ring.preference_list(partition));
        })
    });
    let mut group = c.benchmark_group("ring");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("build_100_nodes_q4096_n3", |b| {
        b.iter(|| Ring::build(black_box(members(100)), 3, 4096, 1).unwrap())
    });
    let before = Ring::build(members(100), 3, 4096, 1).unwrap();
    group.bench_function("next_join_101st_node_q4096_n3", |b| {
        b.iter(|| before.next(black_box(members(101)), 3, 2).unwrap())
    });
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
