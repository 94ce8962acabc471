//! The read path on an in-process cluster: a get asks R replicas (one object, digests
//! from the others), fetches an object where a digest differs and repairs that replica,
//! asks the other owners only for a drawn read repair, R = N, a failure or a slow
//! replica (speculative retry).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::harness::{TestCluster, eventually};
use dotkv_replication::{GetRequest, LimitsConfig, PutRequest, ReplicationConfig};

/// The tests count calls and rely on no call timing out (300 ms in the harness), which a
/// busy machine could make happen when several clusters of this file run at once: they
/// run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(read_repair_chance: f64, speculative_retry_ms: u64) -> ReplicationConfig {
    ReplicationConfig {
        read_repair_chance,
        speculative_retry_ms,
        ..ReplicationConfig::default()
    }
}

/// A 3-node cluster where `k` = `v` is on all three owners; and the owners of `k` in
/// preference order (the first coordinates the reads of the tests).
async fn start(read_repair_chance: f64, speculative_retry_ms: u64) -> (TestCluster, [usize; 3]) {
    let config = config(read_repair_chance, speculative_retry_ms);
    let cluster = TestCluster::start_with(3, config, LimitsConfig::default()).await;
    let owners = cluster.owners(b"k");
    let owners = [owners[0], owners[1], owners[2]];
    cluster
        .node(owners[0])
        .put(PutRequest::new("k", "v").with_w(3))
        .await
        .unwrap();
    (cluster, owners)
}

/// Reads, by method, sent to node `i`.
fn reads(cluster: &TestCluster, i: usize) -> [u64; 2] {
    let addr = &cluster.nodes[i].addr;
    [
        cluster.network.calls(addr, "read_replica"),
        cluster.network.calls(addr, "read_digest"),
    ]
}

/// Reads `k` through node `i` with `r`, `times` times; each read answers `v`.
async fn read_k(cluster: &TestCluster, i: usize, r: usize, times: usize) {
    for _ in 0..times {
        let read = cluster
            .node(i)
            .get(GetRequest::new("k").with_r(r))
            .await
            .unwrap();
        assert_eq!(read.values, vec![Bytes::from("v")]);
    }
}

fn delta(after: [u64; 2], before: [u64; 2]) -> [u64; 2] {
    [after[0] - before[0], after[1] - before[1]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_asks_r_replicas_for_one_object_and_digests_and_r_equal_n_asks_all() {
    let _serial = SERIAL.lock().await;
    let (cluster, [coordinator, second, third]) = start(0.0, 0).await;

    let before = [reads(&cluster, second), reads(&cluster, third)];
    read_k(&cluster, coordinator, 2, 10).await;
    // The coordinator reads its own object; the second owner sends digests; the third is
    // not asked.
    assert_eq!(delta(reads(&cluster, second), before[0]), [0, 10]);
    assert_eq!(delta(reads(&cluster, third), before[1]), [0, 0]);

    // R = N reads every replica, whatever the read repair chance.
    let before = [reads(&cluster, second), reads(&cluster, third)];
    read_k(&cluster, coordinator, 3, 10).await;
    assert_eq!(delta(reads(&cluster, second), before[0]), [0, 10]);
    assert_eq!(delta(reads(&cluster, third), before[1]), [0, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_differing_digest_fetches_that_object_answers_the_merge_and_repairs() {
    let _serial = SERIAL.lock().await;
    let (mut cluster, [coordinator, second, third]) = start(0.0, 0).await;
    // The coordinator loses its disk after a write all three took: no hint exists for it,
    // so only the read can bring the key back.
    cluster.crash(coordinator).await;
    cluster.wipe(coordinator);
    cluster.restart(coordinator).await;
    assert!(cluster.stored(coordinator, b"k").await.is_none());

    let before = [reads(&cluster, second), reads(&cluster, third)];
    // Its own object (none) and the second owner's digest differ: the second owner's
    // object is fetched, and the answer has the write.
    read_k(&cluster, coordinator, 2, 1).await;
    assert_eq!(delta(reads(&cluster, second), before[0]), [1, 1]);
    assert_eq!(delta(reads(&cluster, third), before[1]), [0, 0]);
    // The coordinator's replica is repaired behind the answer.
    assert!(
        eventually(5, || async {
            cluster
                .stored(coordinator, b"k")
                .await
                .is_some_and(|held| format!("{:?}", held.values()).contains('v'))
        })
        .await,
        "the coordinator's replica was not repaired"
    );
}

/// The third owner loses its disk after a write all three took (so no hint exists for
/// it and only a read can bring the key back before anti-entropy, which the harness
/// runs hourly); `times` gets from the first owner follow. Whether the third owner holds
/// the key again afterwards.
async fn third_owner_after_reads(read_repair_chance: f64, times: usize) -> bool {
    let (mut cluster, [coordinator, _, third]) = start(read_repair_chance, 0).await;
    cluster.crash(third).await;
    cluster.wipe(third);
    cluster.restart(third).await;
    assert!(cluster.stored(third, b"k").await.is_none());
    read_k(&cluster, coordinator, 2, times).await;
    eventually(2, || async { cluster.stored(third, b"k").await.is_some() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_a_read_does_not_need_are_repaired_by_read_repair_chance_only() {
    let _serial = SERIAL.lock().await;
    assert!(
        !third_owner_after_reads(0.0, 10).await,
        "with read_repair_chance = 0 a read repaired an owner it need not ask"
    );
    assert!(
        third_owner_after_reads(1.0, 1).await,
        "with read_repair_chance = 1 a read did not repair the third owner"
    );
}

/// Node `second` (the owner asked for a digest) answers after `delay`; one read.
async fn read_with_a_slow_replica(speculative_retry_ms: u64) -> [u64; 2] {
    let (cluster, [coordinator, second, third]) = start(0.0, speculative_retry_ms).await;
    // Slower than the speculative delay, within the peer timeout (300 ms): it answers.
    cluster
        .network
        .set_slow(&cluster.nodes[second].addr, Duration::from_millis(250));
    let before = reads(&cluster, third);
    read_k(&cluster, coordinator, 2, 1).await;
    delta(reads(&cluster, third), before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_makes_the_read_ask_the_next_owner_after_the_speculative_delay() {
    let _serial = SERIAL.lock().await;
    assert_eq!(read_with_a_slow_replica(20).await, [0, 1]);
    // Off: the read waits for the slow replica and asks nobody else.
    assert_eq!(read_with_a_slow_replica(0).await, [0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replica_is_replaced_by_the_owner_not_asked() {
    let _serial = SERIAL.lock().await;
    let (mut cluster, [coordinator, second, third]) = start(0.0, 0).await;
    // Crashed, but not yet convicted by the detector: asked, refused, replaced.
    cluster.crash(second).await;
    let before = reads(&cluster, third);
    read_k(&cluster, coordinator, 2, 1).await;
    assert_eq!(delta(reads(&cluster, third), before), [0, 1]);
}
