//! Anti-entropy on in-process clusters: every write path (coordinator, replica, read
//! repair, hints, handoff, reaping) keeps the trees equal to the stores; a replica that
//! lost its store refills without reads or hints; an exchange moves exactly the keys that differ; tombstones are reaped
//! after their grace period once every replica holds them, and not before, so a replica
//! that comes back with the old value does not bring it back.

mod common;

use bytes::Bytes;
use common::harness::{TestCluster, eventually};
use dotkv_merkle::{BRANCHES, TictacTree, object_digest};
use dotkv_replication::{
    AaeConfig, GetRequest, LimitsConfig, Object, PutRequest, ReplicationConfig, Value,
    encode_object,
};
use dotkv_versioning::ReplicaId;

fn aae_on(grace_s: u64) -> AaeConfig {
    AaeConfig {
        enabled: true,
        interval_ms: 100,
        tombstone_grace_s: grace_s,
        ..AaeConfig::default()
    }
}

async fn start(nodes: usize, n: usize, aae: AaeConfig) -> TestCluster {
    let config = ReplicationConfig {
        n,
        r: n.min(2),
        w: n.min(2),
        ..ReplicationConfig::default()
    };
    TestCluster::start_configured(nodes, config, LimitsConfig::default(), aae).await
}

/// Writes `keys` through node 0, 64 at a time.
async fn write_all(cluster: &TestCluster, keys: &[String]) {
    use futures::StreamExt;
    let node = cluster.node(0);
    futures::stream::iter(keys)
        .for_each_concurrent(64, |key| async move {
            node.put(PutRequest::new(key.clone(), key.clone()))
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        })
        .await;
}

/// Deletes `key` through node 0 with the context of a read, so that the tombstone
/// supersedes the value (without a context it would be a concurrent sibling).
async fn delete(cluster: &TestCluster, key: &str) {
    let node = cluster.node(0);
    let read = node.get(GetRequest::new(key.to_owned())).await.unwrap();
    node.put(PutRequest::delete(key.to_owned()).with_context(read.context))
        .await
        .unwrap();
}

/// Keys repaired by every running node's exchanges so far.
fn repaired(cluster: &TestCluster) -> u64 {
    (0..cluster.nodes.len())
        .filter(|&i| cluster.is_running(i))
        .map(|i| cluster.node(i).aae_view().keys_repaired)
        .sum()
}

/// Waits until no exchange repairs anything for a few rounds; returns the count then.
async fn quiet(cluster: &TestCluster) -> u64 {
    let mut last = repaired(cluster);
    let mut still = 0;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let now = repaired(cluster);
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still >= 5 {
            return now;
        }
    }
    panic!("anti-entropy kept repairing");
}

/// The running nodes whose tree of some partition differs from one built from scratch
/// from their store.
async fn stale_trees(cluster: &TestCluster) -> Vec<String> {
    let routing = cluster.routing();
    let all: Vec<u32> = (0..BRANCHES as u32).collect();
    let mut stale = Vec::new();
    for i in (0..cluster.nodes.len()).filter(|&i| cluster.is_running(i)) {
        let mut expected = vec![TictacTree::new(); routing.ring.partitions() as usize];
        for (key, object) in cluster.held(i).await {
            let partition = routing.ring.partition_of(&key) as usize;
            expected[partition].toggle(&key, object_digest(&encode_object(&object)));
        }
        for (partition, tree) in expected.iter().enumerate() {
            let leaves: Vec<u64> = (0..BRANCHES)
                .flat_map(|b| tree.leaf_hashes(b).to_vec())
                .collect();
            if cluster.node(i).aae_tree(partition as u32, &all) != Some(leaves) {
                stale.push(format!("{} partition {partition}", cluster.nodes[i].id));
            }
        }
    }
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_keeps_the_trees_equal_to_the_stores() {
    // Exchanges off (the harness's default): only the write paths change the stores.
    let mut cluster = TestCluster::start(4).await;
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    write_all(&cluster, &keys).await; // coordinators and replicas
    // Node 2 is down: writes go to fallbacks as hints, delivered when it is back.
    cluster.crash(1).await;
    let more: Vec<String> = (0..100).map(|i| format!("more-{i}")).collect();
    write_all(&cluster, &more).await;
    for key in &keys[..50] {
        delete(&cluster, key).await;
    }
    cluster.restart(1).await;
    // Reads with R = 3 repair what node 2 missed, if its hints did not arrive first.
    for key in &more {
        let _ = cluster
            .node(2)
            .get(GetRequest::new(key.clone()).with_r(3))
            .await;
    }
    // A fifth node joins: partitions are handed to it and dropped by their old owners.
    let joiner = cluster.add_node();
    cluster.start_node(joiner).await;
    cluster.wait_converged().await;
    let c = &cluster;
    let settled = eventually(30, || async move {
        let mut hints = 0;
        for i in 0..c.nodes.len() {
            hints += c.node(i).hint_counts().await.unwrap().values().sum::<u64>();
        }
        hints == 0 && stale_trees(c).await.is_empty()
    })
    .await;
    assert!(settled, "stale trees: {:?}", stale_trees(&cluster).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_refills_without_reads_or_hints() {
    let mut cluster = start(3, 3, aae_on(86_400)).await;
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    write_all(&cluster, &keys).await;
    let expected = cluster.held(0).await;
    assert_eq!(expected.len(), keys.len());

    cluster.crash(2).await;
    cluster.wipe(2);
    cluster.restart(2).await;
    assert!(cluster.held(2).await.len() < 100, "the wipe left data");
    let c = &cluster;
    let refilled = eventually(60, || async move { c.held(2).await.len() == 10_000 }).await;
    assert!(
        refilled,
        "node 3 holds {} of 10000 keys",
        cluster.held(2).await.len()
    );
    // Exactly what the others hold: the objects, not just the keys.
    assert_eq!(cluster.held(2).await, expected);
    let view = cluster.node(2).aae_view();
    assert_eq!(view.trees_built, view.partitions);
    // No hint was involved: none was written while node 3 was down (no write happened).
    for i in 0..3 {
        assert!(cluster.node(i).hint_counts().await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_moves_exactly_the_keys_that_differ() {
    // Two nodes, N = 2: each partition has one pair of replicas, compared once a round.
    let cluster = start(2, 2, aae_on(86_400)).await;
    let keys: Vec<String> = (0..2_000).map(|i| format!("key-{i}")).collect();
    write_all(&cluster, &keys).await;
    let before = quiet(&cluster).await;

    // 10 keys get a sibling on node 2 only, as a write that reached one replica would.
    let changed: Vec<&String> = keys.iter().step_by(97).take(10).collect();
    for key in &changed {
        let held: Object = cluster.stored(1, key.as_bytes()).await.unwrap();
        let diverged = held.sync(&Object::default().update(
            &Default::default(),
            Value::Data(Bytes::from("only-on-n2")),
            ReplicaId(0xdead),
        ));
        cluster
            .node(1)
            .write_replica(
                Bytes::from((*key).clone()),
                Bytes::from(encode_object(&diverged)),
            )
            .await
            .unwrap();
    }
    let c = &cluster;
    let changed_ref = &changed;
    let spread = eventually(30, || async move {
        for key in changed_ref {
            let held = c.stored(0, key.as_bytes()).await.unwrap();
            if !held
                .values()
                .contains(&&Value::Data(Bytes::from("only-on-n2")))
            {
                return false;
            }
        }
        true
    })
    .await;
    assert!(spread, "the siblings did not reach node 1");
    let after = quiet(&cluster).await;
    assert_eq!(after - before, 10, "keys repaired: {}", after - before);
    // Both siblings survive the repair on both replicas.
    let read = cluster
        .node(0)
        .get(GetRequest::new(changed[0].clone()))
        .await
        .unwrap();
    assert_eq!(read.values.len(), 2, "{read:?}");
    assert_eq!(cluster.held(0).await, cluster.held(1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_reaped_once_every_replica_holds_them_and_not_before() {
    let mut cluster = start(3, 3, aae_on(1)).await;
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    write_all(&cluster, &keys).await;
    // Node 3 is down during the deletes: it keeps the old values.
    cluster.crash(2).await;
    let (deleted, kept) = keys.split_at(10);
    for key in deleted {
        delete(&cluster, key).await;
    }
    // Past the grace period, the tombstones stay: node 3 does not hold them.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    for key in deleted {
        for i in [0, 1] {
            assert!(
                cluster.stored(i, key.as_bytes()).await.is_some(),
                "{key} reaped on node {} while node 3 lacked its tombstone",
                i + 1
            );
        }
    }
    // Node 3 comes back with the old values: anti-entropy gives it the tombstones, then
    // every replica reaps them, and the old values do not come back.
    cluster.restart(2).await;
    let c = &cluster;
    let reaped = eventually(30, || async move {
        for key in deleted {
            for i in 0..3 {
                if c.stored(i, key.as_bytes()).await.is_some() {
                    return false;
                }
            }
        }
        true
    })
    .await;
    assert!(reaped, "the tombstones were not reaped everywhere");
    // Some more rounds: nothing comes back, and the other keys stay.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    for key in deleted {
        let read = cluster
            .node(2)
            .get(GetRequest::new(key.clone()).with_r(3))
            .await
            .unwrap();
        assert!(read.values.is_empty(), "{key} came back: {read:?}");
        for i in 0..3 {
            assert!(cluster.stored(i, key.as_bytes()).await.is_none());
        }
    }
    for key in kept {
        for i in 0..3 {
            assert!(cluster.stored(i, key.as_bytes()).await.is_some(), "{key}");
        }
    }
    // Nodes 1 and 2 held the 10 tombstones; node 3 held those whose value it had before
    // its crash (a write still in flight to it then may have missed it).
    let reaped: Vec<u64> = (0..3)
        .map(|i| cluster.node(i).aae_view().tombstones_reaped)
        .collect();
    assert_eq!(reaped[..2], [10, 10], "{reaped:?}");
    assert!(reaped[2] <= 10, "{reaped:?}");
    assert!(stale_trees(&cluster).await.is_empty());
}
