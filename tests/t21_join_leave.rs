//! Incremental scalability on an in-process cluster (memory transport): a node joins and
//! a node leaves while a writer runs, a crashed node is removed, transfers survive the
//! restart of either side, and two claimants on both sides of a network partition
//! resolve to one ring. After each change every key acknowledged before or during it is
//! on exactly its N owners of the new ring, and nowhere else.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::harness::{TestCluster, eventually};
use dotkv_membership::NodeStatus;
use dotkv_replication::{GetRequest, Node, PutRequest, Value};

/// Key → the value acknowledged for it (each key is written once).
type Written = BTreeMap<Vec<u8>, Bytes>;

/// Writes `count` keys `prefix-i` through the given coordinators, 64 at a time, each
/// acknowledged by all three replicas (so that a fault injected right after cannot catch
/// a replica write still in flight).
async fn load(coordinators: &[Node], prefix: &str, count: usize) -> Written {
    let mut written = Written::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(64) {
        let puts = chunk.iter().map(|&i| {
            let node = coordinators[i % coordinators.len()].clone();
            let key = format!("{prefix}-{i}");
            async move {
                node.put(PutRequest::new(key.clone(), format!("v-{key}")).with_w(3))
                    .await
                    .map(|_| key)
            }
        });
        for key in futures::future::join_all(puts).await {
            let key = key.expect("a write with every node up");
            let value = Bytes::from(format!("v-{key}"));
            written.insert(key.into_bytes(), value);
        }
    }
    written
}

/// A writer that keeps writing new keys through `coordinators` until stopped, and
/// records what was acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Written>>,
    task: tokio::task::JoinHandle<usize>,
}

impl Writer {
    fn start(coordinators: Vec<Node>, prefix: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Written::new()));
        let task = {
            let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
            tokio::spawn(async move {
                let mut refused = 0;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}-{i}");
                    let value = Bytes::from(format!("v-{key}"));
                    let node = &coordinators[i % coordinators.len()];
                    match node.put(PutRequest::new(key.clone(), value.clone())).await {
                        Ok(_) => {
                            acknowledged.lock().unwrap().insert(key.into_bytes(), value);
                        }
                        Err(_) => refused += 1,
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                refused
            })
        };
        Self {
            stop,
            acknowledged,
            task,
        }
    }

    async fn finish(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        let refused = self.task.await.unwrap();
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        assert!(
            acknowledged.len() > 20,
            "the writer got only {} writes through ({refused} refused)",
            acknowledged.len()
        );
        acknowledged
    }
}

/// What is misplaced: a key missing on one of its owners, or still held by a node that
/// does not own it (only running nodes are looked at).
async fn misplaced(cluster: &TestCluster, written: &Written) -> Vec<String> {
    let routing = cluster.routing();
    if routing.pending.is_some() {
        return vec!["a transition is still pending".into()];
    }
    let mut held = BTreeMap::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if cluster.is_running(i) {
            held.insert(node.id.clone(), cluster.held(i).await);
        }
    }
    let mut errors = Vec::new();
    for (key, value) in written {
        let partition = routing.ring.partition_of(key);
        let owners: Vec<&str> = routing
            .ring
            .preference_list(partition)
            .iter()
            .map(|&n| routing.id(n))
            .collect();
        for (id, objects) in &held {
            let has = objects.get(key).is_some_and(|o| {
                o.values()
                    .iter()
                    .any(|v| matches!(v, Value::Data(d) if d == value))
            });
            let owner = owners.contains(&id.as_str());
            if owner && !has {
                errors.push(format!(
                    "{} missing on owner {id}",
                    String::from_utf8_lossy(key)
                ));
            }
            if !owner && objects.contains_key(key) {
                errors.push(format!(
                    "{} still on non-owner {id}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
    }
    errors
}

/// Waits (up to 60 s) until nothing is misplaced; panics with what is.
async fn wait_placed(cluster: &TestCluster, written: &Written) {
    let mut errors = Vec::new();
    for _ in 0..600 {
        errors = misplaced(cluster, written).await;
        if errors.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} misplaced keys, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

fn union(a: &Written, b: &Written) -> Written {
    a.iter()
        .chain(b)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn running_nodes(cluster: &TestCluster) -> Vec<Node> {
    (0..cluster.nodes.len())
        .filter(|&i| cluster.is_running(i))
        .map(|i| cluster.node(i).clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_another_leaves_under_load_and_every_write_lands_on_its_owners() {
    let mut cluster = TestCluster::start(3).await;
    let keys = 10_000;
    let loaded = load(&running_nodes(&cluster), "k", keys).await;
    let before = cluster.routing();

    // A fourth node joins while a writer runs.
    let writer = Writer::start(running_nodes(&cluster), "join");
    let joiner = cluster.add_node();
    cluster.start_node(joiner).await;
    cluster.wait_converged().await;
    // The joiner received its partitions before the new ring became current: as soon as
    // it is, the joiner holds every loaded key it owns (old owners only hand off
    // leftovers after the switch).
    let ring = cluster.routing();
    let me = ring.ring.index_of("n4").expect("n4 in the ring");
    let holds = cluster.held(joiner).await;
    let lacking = loaded
        .keys()
        .filter(|key| {
            ring.ring
                .preference_list(ring.ring.partition_of(key))
                .contains(&me)
        })
        .filter(|key| !holds.contains_key(*key))
        .count();
    assert_eq!(
        lacking, 0,
        "the joiner lacks keys of its partitions at the switch"
    );
    let during_join = writer.finish().await;
    let written = union(&loaded, &during_join);
    wait_placed(&cluster, &written).await;

    let after = cluster.routing();
    assert!(after.ring.index_of("n4").is_some());
    // Every move went to the joiner; what it received is about its share of the keys.
    let diff = before.ring.diff(&after.ring);
    assert!(diff.moves.iter().all(|m| m.to == "n4"), "{diff:?}");
    let moved_keys = loaded
        .keys()
        .filter(|key| {
            let p = after.ring.partition_of(key);
            diff.moves.iter().any(|m| m.partition == p)
        })
        .count() as f64;
    let ideal = keys as f64 * 3.0 / 4.0;
    assert!(
        moved_keys <= 1.3 * ideal,
        "{moved_keys} keys moved to the joiner, ideal {ideal}"
    );
    let joiner_holds = cluster.held(joiner).await.len() as f64;
    assert!(joiner_holds >= moved_keys, "{joiner_holds} < {moved_keys}");

    // Then n1 leaves under load — the node that founded the cluster and its claimant, so
    // n2 takes over as claimant: n1's replicas move to the others, and it ends up `left`
    // holding nothing.
    let coordinators: Vec<Node> = [1, 2, 3].iter().map(|&i| cluster.node(i).clone()).collect();
    let writer = Writer::start(coordinators, "leave");
    cluster.node(0).cluster().leave().await.unwrap();
    let c = &cluster;
    let left = eventually(60, || async move {
        c.node(0).cluster().own_status() == NodeStatus::Left && c.held(0).await.is_empty()
    })
    .await;
    let during_leave = writer.finish().await;
    assert!(left, "n1 did not reach `left` with an empty store");
    cluster.crash(0).await;
    cluster.wait_converged().await;
    let written = union(&written, &during_leave);
    wait_placed(&cluster, &written).await;
    let after_leave = cluster.routing();
    assert!(after_leave.ring.index_of("n1").is_none());
    // The keys that moved are about what the leaver held: each move takes one of its
    // partition replicas to one node.
    let diff = after.ring.diff(&after_leave.ring);
    assert!(
        diff.moves.iter().all(|m| m.from.as_deref() == Some("n1")),
        "{diff:?}"
    );
    let n1 = after.ring.index_of("n1").unwrap();
    let held_by_n1 = loaded
        .keys()
        .filter(|key| {
            let p = after.ring.partition_of(key);
            after.ring.preference_list(p).contains(&n1)
        })
        .count() as f64;
    let moved_keys = loaded
        .keys()
        .map(|key| {
            let p = after.ring.partition_of(key);
            diff.moves.iter().filter(|m| m.partition == p).count()
        })
        .sum::<usize>() as f64;
    assert!(
        moved_keys <= 1.3 * held_by_n1,
        "{moved_keys} keys moved when n1 left, it held {held_by_n1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_s_replicas_are_rebuilt_from_the_survivors() {
    let mut cluster = TestCluster::start(4).await;
    let written = load(&running_nodes(&cluster), "k", 2_000).await;
    cluster.crash(3).await;
    // Dead for good: removed through another node.
    cluster.node(1).cluster().remove("n4").await.unwrap();
    assert_eq!(
        cluster
            .node(1)
            .cluster()
            .remove("n4")
            .await
            .unwrap_err()
            .kind(),
        "invalid_argument"
    );
    let c = &cluster;
    let excluded = eventually(20, || async move {
        let routing = c.routing();
        routing.pending.is_none() && routing.ring.index_of("n4").is_none()
    })
    .await;
    assert!(excluded, "the ring still names the removed node");
    cluster.wait_converged().await;
    // Every key is back on three live owners (N = 3 of the 3 survivors).
    wait_placed(&cluster, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_resumes_after_the_receiver_and_then_a_sender_restart() {
    let mut cluster = TestCluster::start(3).await;
    let written = load(&running_nodes(&cluster), "k", 4_000).await;
    // Slow transfers (about 1 MB of objects at 200 KB/s), so restarts land mid-way.
    cluster.handoff.max_bytes_per_sec = 200_000;
    let joiner = cluster.add_node();
    cluster.start_node(joiner).await;

    // Wait until the joiner is receiving, then kill and restart it.
    let c = &cluster;
    let receiving = eventually(10, || async move {
        !c.node(joiner).transfers().is_empty() && !c.held(joiner).await.is_empty()
    })
    .await;
    assert!(receiving, "the joiner never started receiving");
    cluster.crash(joiner).await;
    let kept = cluster.held(joiner).await.len();
    assert!(kept > 0 && kept < written.len(), "kept {kept}");
    cluster.start_node(joiner).await;

    // Then kill and restart a node it is receiving from.
    let mut source = None;
    for _ in 0..400 {
        source = cluster
            .node(joiner)
            .transfers()
            .first()
            .map(|t| t.from.clone());
        if source.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let source = source.expect("a transfer after the restart");
    let source = cluster.nodes.iter().position(|n| n.id == source).unwrap();
    cluster.crash(source).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.start_node(source).await;

    cluster.wait_converged().await;
    wait_placed(&cluster, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimants_on_both_sides_of_a_partition_resolve_to_one_ring_after_the_heal() {
    let mut cluster = TestCluster::start(4).await;
    let written = load(&running_nodes(&cluster), "k", 1_000).await;
    let epoch_before = cluster.node(0).cluster().topology().unwrap().epoch;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    // n5 is added now, so that it sits on n1's side.
    let n5 = cluster.add_node();
    let n5_addr = cluster.nodes[n5].addr.clone();
    cluster
        .network
        .partition(&[&addrs[0], &addrs[1], &n5_addr], &[&addrs[2], &addrs[3]]);
    // Side A: n5 joins through n1, the claimant there.
    cluster.start_node(n5).await;
    // Side B: n4 leaves; once n3 convicts n1 and n2, it is the claimant there.
    cluster.node(3).cluster().leave().await.unwrap();

    let c = &cluster;
    let published_on = move |i: usize| {
        c.node(i)
            .cluster()
            .topology()
            .is_some_and(|t| t.epoch > epoch_before)
    };
    let both = eventually(10, || async move { published_on(0) && published_on(2) }).await;
    assert!(both, "each side's claimant publishes a ring");
    let side_a = cluster.node(0).cluster().topology().unwrap();
    let side_b = cluster.node(2).cluster().topology().unwrap();
    assert_ne!(
        side_a.id(),
        side_b.id(),
        "two different rings were published"
    );
    // Writes go on on the majority side meanwhile (W = 2 in each ring it knows).
    let mut during = Written::new();
    for i in 0..50 {
        let key = format!("during-{i}");
        let value = Bytes::from(format!("v-{key}"));
        if cluster
            .node(i % 2)
            .put(PutRequest::new(key.clone(), value.clone()))
            .await
            .is_ok()
        {
            during.insert(key.into_bytes(), value);
        }
    }

    cluster.network.heal();
    // After the heal: n4 leaves for good, n5 is in; one ring everywhere.
    let c = &cluster;
    let settled = eventually(60, || async move {
        let n4_left = c.node(3).cluster().own_status() == NodeStatus::Left;
        let rings: Vec<_> = [0, 1, 2, 4]
            .iter()
            .map(|&i| c.node(i).cluster().topology().map(|t| t.id()))
            .collect();
        let one = rings.windows(2).all(|w| w[0] == w[1]);
        let routing = c.routing();
        n4_left && one && routing.pending.is_none() && routing.ring.index_of("n5").is_some()
    })
    .await;
    assert!(
        settled,
        "the cluster did not settle on one ring after the heal"
    );
    let emptied = eventually(20, || async move { c.held(3).await.is_empty() }).await;
    assert!(emptied, "n4 did not hand off everything it held");
    cluster.crash(3).await;
    cluster.wait_converged().await;
    // What was written before the partition is on exactly its owners of the final ring.
    // A write acknowledged on one side during the partition may be missing on an owner
    // that was on the other side and kept its partition (no transfer concerns it): read
    // repair, hinted handoff and anti-entropy bring it there. It is never lost: a read of
    // all N replicas returns it.
    wait_placed(&cluster, &written).await;
    assert!(
        !during.is_empty(),
        "the majority side took writes during the partition"
    );
    let all = union(&written, &during);
    for (key, value) in during.iter().chain(all.iter().step_by(7)) {
        let read = cluster
            .node(0)
            .get(GetRequest::new(key.clone()).with_r(3))
            .await
            .unwrap();
        assert!(read.values.contains(value), "{key:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_move_needs_w_of_the_incoming_owners_too() {
    let mut cluster = TestCluster::start(3).await;
    let written = load(&running_nodes(&cluster), "k", 2_000).await;
    // Transfers crawl, so the transition stays pending while the joiner is down.
    cluster.handoff.max_bytes_per_sec = 2_000;
    let joiner = cluster.add_node();
    cluster.start_node(joiner).await;
    let c = &cluster;
    let pending = eventually(10, || async move {
        c.node(0)
            .cluster()
            .routing()
            .and_then(|r| r.pending.clone())
            .is_some_and(|p| p.ring.index_of("n4").is_some())
    })
    .await;
    assert!(pending, "no transition to a ring with n4");
    cluster.crash(joiner).await;

    let routing = cluster.node(0).cluster().routing().unwrap();
    let incoming = routing.pending.clone().unwrap();
    let n4 = incoming.ring.index_of("n4").unwrap();
    let to_n4 = |key: &str| {
        let p = incoming.ring.partition_of(key.as_bytes());
        incoming.ring.preference_list(p).contains(&n4)
    };
    let moving = (0..).map(|i| format!("m-{i}")).find(|k| to_n4(k)).unwrap();
    let staying = (0..).map(|i| format!("s-{i}")).find(|k| !to_n4(k)).unwrap();
    // All three current owners are up, but one of the incoming owners is not: W = 3 is
    // not met among the incoming owners, so the write is not acknowledged.
    let error = cluster
        .node(0)
        .put(PutRequest::new(moving.clone(), "v").with_w(3))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "quorum_not_reached", "{error}");
    assert!(error.to_string().contains("incoming"), "{error}");
    // A key that does not move is written as before.
    cluster
        .node(0)
        .put(PutRequest::new(staying, "v").with_w(3))
        .await
        .unwrap();
    // W = 2 is met on both sides (two owners are in both rings).
    cluster
        .node(0)
        .put(PutRequest::new(moving, "v2").with_w(2))
        .await
        .unwrap();

    // The joiner comes back with fast transfers and the move completes.
    cluster.handoff.max_bytes_per_sec = 0;
    cluster.start_node(joiner).await;
    cluster.wait_converged().await;
    wait_placed(&cluster, &written).await;
}
