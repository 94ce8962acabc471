//! Sloppy quorum and hinted handoff on an in-process cluster of 5 nodes, N = 3: writes
//! whose owners are down land on fallbacks as hints, count toward W, are readable, and
//! reach their owners once they are back; PW refuses what only fallbacks took; a cut link
//! behaves like a crash, also when it fails after W was reached; hints survive a fallback's restart and reach the new owner when
//! their owner was removed.

mod common;

use bytes::Bytes;
use common::harness::{TestCluster, eventually};
use dotkv_replication::{GetRequest, PutRequest, Value};

/// A key whose owners are exactly `owners` (0-based node indices, any order).
fn key_owned_by(cluster: &TestCluster, owners: &[usize]) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| {
            let mut held = cluster.owners(key.as_bytes());
            held.sort_unstable();
            held == owners
        })
        .expect("some key has these owners")
}

/// Whether node `i`'s own store holds `value` for `key`.
async fn holds(cluster: &TestCluster, i: usize, key: &str, value: &str) -> bool {
    cluster.stored(i, key.as_bytes()).await.is_some_and(|o| {
        o.values()
            .iter()
            .any(|v| matches!(v, Value::Data(d) if d == value.as_bytes()))
    })
}

/// Whether, within 20 s, each of `nodes` holds `value` for `key` and no hint is left: the
/// hints reached their owners.
async fn delivered(cluster: &TestCluster, nodes: &[usize], key: &str, value: &str) -> bool {
    eventually(20, || async move {
        for &i in nodes {
            if !holds(cluster, i, key, value).await {
                return false;
            }
        }
        hints_left(cluster).await == 0
    })
    .await
}

/// The hints every running node holds, summed.
async fn hints_left(cluster: &TestCluster) -> u64 {
    let mut total = 0;
    for i in 0..cluster.nodes.len() {
        if cluster.is_running(i) {
            total += cluster
                .node(i)
                .hint_counts()
                .await
                .unwrap()
                .values()
                .sum::<u64>();
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_down_writes_go_to_fallbacks_and_come_back_to_the_owners() {
    let mut cluster = TestCluster::start(5).await;
    let key = key_owned_by(&cluster, &[0, 1, 2]);
    cluster.crash(1).await;
    cluster.crash(2).await;

    // W = 2: the coordinator and a fallback standing in for a dead owner.
    cluster
        .node(0)
        .put(PutRequest::new(key.clone(), "v1"))
        .await
        .expect("a sloppy quorum");
    let read = cluster
        .node(3)
        .get(GetRequest::new(key.clone()))
        .await
        .unwrap();
    assert_eq!(read.values, vec![Bytes::from("v1")]);
    assert!(hints_left(&cluster).await > 0, "a fallback keeps a hint");
    let replicas = cluster
        .node(0)
        .replicas(Bytes::from(key.clone()))
        .await
        .unwrap();
    assert!(
        replicas
            .replicas
            .iter()
            .any(|r| r.role == "fallback" && r.values == vec![Bytes::from("v1")]),
        "{replicas:?}"
    );

    // PW = 2 insists on two owners: refused, naming the primaries.
    let error = cluster
        .node(0)
        .put(PutRequest::new(key.clone(), "v2").with_pw(2))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "quorum_not_reached", "{error}");
    assert!(error.to_string().contains("primaries"), "{error}");
    let error = cluster
        .node(0)
        .get(GetRequest::new(key.clone()).with_pr(2))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("primaries"), "{error}");

    // The owners return: the hints reach them and are deleted.
    cluster.restart(1).await;
    cluster.restart(2).await;
    assert!(
        delivered(&cluster, &[1, 2], &key, "v1").await,
        "the owners did not get their hints back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_survive_a_fallback_restart_and_a_second_delivery_changes_nothing() {
    let mut cluster = TestCluster::start(5).await;
    let key = key_owned_by(&cluster, &[0, 1, 2]);
    cluster.crash(2).await;
    cluster
        .node(0)
        .put(PutRequest::new(key.clone(), "kept").with_w(3))
        .await
        .expect("W = 3 with a fallback");
    // The fallback holding the hint restarts (its store survives, as a disk does).
    let mut holder = None;
    for i in [3, 4] {
        if !cluster
            .node(i)
            .read_hints(Bytes::from(key.clone()))
            .await
            .unwrap()
            .is_empty()
        {
            holder = Some(i);
        }
    }
    let holder = holder.expect("a fallback holds the hint");
    let (_, hinted) = cluster
        .node(holder)
        .read_hints(Bytes::from(key.clone()))
        .await
        .unwrap()
        .remove(0);
    cluster.crash(holder).await;
    cluster.restart(holder).await;
    assert!(
        hints_left(&cluster).await > 0,
        "the hint survived the restart"
    );

    cluster.restart(2).await;
    assert!(
        delivered(&cluster, &[2], &key, "kept").await,
        "the hint was not delivered after the fallback's restart"
    );
    // Delivering the same hint again merges to what the owner holds already.
    let before = cluster.stored(2, key.as_bytes()).await.unwrap();
    cluster
        .node(2)
        .write_replica(Bytes::from(key.clone()), hinted)
        .await
        .unwrap();
    assert_eq!(cluster.stored(2, key.as_bytes()).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_to_an_owner_is_routed_around_like_a_crash() {
    let cluster = TestCluster::start(5).await;
    let key = key_owned_by(&cluster, &[0, 1, 2]);
    let (n1, n2) = (cluster.nodes[0].addr.clone(), cluster.nodes[1].addr.clone());
    cluster.network.partition(&[&n1], &[&n2]);
    // n2 does not answer n1: after the call's deadline, a fallback takes its place.
    cluster
        .node(0)
        .put(PutRequest::new(key.clone(), "around").with_w(3))
        .await
        .expect("W = 3 through a fallback");
    assert!(!holds(&cluster, 1, &key, "around").await);
    cluster.network.heal();
    assert!(
        delivered(&cluster, &[1], &key, "around").await,
        "the hint did not reach n2 after the heal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_failing_after_w_was_reached_still_gets_a_hint() {
    let cluster = TestCluster::start(5).await;
    let key = key_owned_by(&cluster, &[0, 1, 2]);
    let (n1, n2) = (cluster.nodes[0].addr.clone(), cluster.nodes[1].addr.clone());
    cluster.network.partition(&[&n1], &[&n2]);
    // W = 2 is reached by n1 and n3 before n2's call times out; the write to n2 fails
    // after the client has its answer, and a fallback still takes n2's place: its hint
    // reaches n2 over a link that works, while n1 still cannot reach n2.
    cluster
        .node(0)
        .put(PutRequest::new(key.clone(), "late"))
        .await
        .expect("W = 2 from n1 and n3");
    assert!(
        delivered(&cluster, &[1], &key, "late").await,
        "no hint for n2 reached it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_for_a_removed_owner_reaches_the_new_owner() {
    let mut cluster = TestCluster::start(5).await;
    let key = key_owned_by(&cluster, &[0, 1, 2]);
    cluster.crash(2).await;
    cluster
        .node(0)
        .put(PutRequest::new(key.clone(), "rehomed").with_w(3))
        .await
        .expect("W = 3 with a fallback");
    // n3 is dead for good: removed, its partitions move to the others.
    cluster.node(0).cluster().remove("n3").await.unwrap();
    let c = &cluster;
    let settled = eventually(20, || async move {
        let routing = c.routing();
        routing.pending.is_none() && routing.ring.index_of("n3").is_none()
    })
    .await;
    assert!(settled, "the ring still names n3");
    let owners = cluster.owners(key.as_bytes());
    assert!(
        delivered(&cluster, &owners, &key, "rehomed").await,
        "the hint for n3 did not reach the key's new owners"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_full_of_hints_refuses_and_the_next_one_takes_the_write() {
    let mut cluster = TestCluster::start(5).await;
    let key = key_owned_by(&cluster, &[0, 1, 2]);
    let routing = cluster.routing();
    let partition = routing.ring.partition_of(key.as_bytes());
    let order: Vec<usize> = routing
        .ring
        .fallbacks(partition)
        .iter()
        .map(|&n| {
            let id = routing.id(n);
            cluster.nodes.iter().position(|t| t.id == id).unwrap()
        })
        .collect();
    let (first, second) = (order[0], order[1]);
    // The first fallback comes back with room for no hint at all.
    cluster.handoff.max_hint_bytes = 1;
    cluster.crash(first).await;
    cluster.restart(first).await;
    cluster.handoff.max_hint_bytes = 1 << 30;

    cluster.crash(2).await;
    cluster
        .node(0)
        .put(PutRequest::new(key.clone(), "elsewhere").with_w(3))
        .await
        .expect("the second fallback takes the hint");
    let hints = |i: usize| cluster.node(i).read_hints(Bytes::from(key.clone()));
    assert!(
        hints(first).await.unwrap().is_empty(),
        "the full fallback kept nothing"
    );
    assert_eq!(hints(second).await.unwrap().len(), 1);
}
