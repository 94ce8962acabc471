//! The request path under faults on an in-process cluster: a crashed replica, a
//! partition, lost messages; and read repair.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::harness::TestCluster;
use dotkv_replication::{Error, GetRequest, LimitsConfig, PutRequest, ReplicationConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_crashed_w2_succeeds_and_w3_fails() {
    let mut cluster = TestCluster::start(3).await;
    cluster.crash(2).await;
    cluster
        .node(0)
        .put(PutRequest::new("k", "v").with_w(2))
        .await
        .unwrap();
    let err = cluster
        .node(0)
        .put(PutRequest::new("k2", "v").with_w(3))
        .await
        .unwrap_err();
    match &err {
        Error::QuorumNotReached {
            required,
            succeeded,
            errors,
            ..
        } => {
            assert_eq!((*required, *succeeded), (3, 2), "{err}");
            assert!(
                errors[0].contains("n3"),
                "the error names the replica: {err}"
            );
        }
        other => panic!("expected quorum_not_reached, got {other}"),
    }
    assert_eq!(err.kind(), "quorum_not_reached");
    // Reads: R = 2 is served, R = 3 is not.
    let read = cluster.node(1).get(GetRequest::new("k")).await.unwrap();
    assert_eq!(read.values, vec![Bytes::from("v")]);
    let err = cluster
        .node(1)
        .get(GetRequest::new("k").with_r(3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "quorum_not_reached", "{err}");

    // After a restart the node has its old data and serves again.
    cluster.restart(2).await;
    cluster
        .node(0)
        .put(PutRequest::new("k3", "v").with_w(3))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_brings_a_stale_replica_up_to_date() {
    // Every read asks every owner (the default asks the N-R others for one read in ten).
    let config = ReplicationConfig {
        read_repair_chance: 1.0,
        ..ReplicationConfig::default()
    };
    let mut cluster = TestCluster::start_with(3, config, LimitsConfig::default()).await;
    cluster
        .node(0)
        .put(PutRequest::new("k", "old").with_w(3))
        .await
        .unwrap();
    cluster.crash(2).await;
    let read = cluster.node(0).get(GetRequest::new("k")).await.unwrap();
    cluster
        .node(0)
        .put(PutRequest::new("k", "new").with_context(read.context))
        .await
        .unwrap();
    cluster.restart(2).await;
    let stale = cluster.stored(2, b"k").await.expect("the old value");
    assert_eq!(stale.size(), 1);
    assert!(
        format!("{:?}", stale.values()).contains("old"),
        "n3 missed the write"
    );

    // A read (R = 2 may answer before n3 replies) repairs n3 behind the answer.
    let read = cluster.node(1).get(GetRequest::new("k")).await.unwrap();
    assert_eq!(read.values, vec![Bytes::from("new")]);
    let mut repaired = false;
    for _ in 0..100 {
        let held = cluster.stored(2, b"k").await.expect("an object");
        if format!("{:?}", held.values()).contains("new") && held.size() == 1 {
            repaired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(repaired, "n3 was not repaired by the read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_of_a_partition_accept_writes_and_the_heal_shows_siblings() {
    let cluster = TestCluster::start(3).await;
    let (n1, n2, n3) = (
        cluster.nodes[0].addr.clone(),
        cluster.nodes[1].addr.clone(),
        cluster.nodes[2].addr.clone(),
    );
    cluster.network.partition(&[&n3], &[&n1, &n2]);
    // The majority side writes with W = 2.
    cluster
        .node(0)
        .put(PutRequest::new("k", "majority"))
        .await
        .unwrap();
    // The minority side cannot get W = 2 ...
    let err = cluster
        .node(2)
        .put(PutRequest::new("k", "minority"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "quorum_not_reached", "{err}");
    // ... but is always writeable with W = 1. (The refused write above stays on n3 too:
    // a failed quorum does not undo the replicas that took it.)
    cluster
        .node(2)
        .put(PutRequest::new("k", "minority-w1").with_w(1))
        .await
        .unwrap();
    cluster.network.heal();
    let read = cluster
        .node(0)
        .get(GetRequest::new("k").with_r(3))
        .await
        .unwrap();
    let values: BTreeSet<&[u8]> = read.values.iter().map(|v| v.as_ref()).collect();
    assert!(values.contains(&b"majority"[..]), "{values:?}");
    assert!(values.contains(&b"minority-w1"[..]), "{values:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_when_messages_are_dropped_and_delayed() {
    let cluster = TestCluster::start(3).await;
    cluster.network.set_drop_rate(150);
    cluster.network.set_delay(Duration::from_millis(2));
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        let key = format!("k{}", i % 8);
        let value = format!("v{i}");
        match cluster
            .node(i % 3)
            .put(PutRequest::new(key.clone(), value.clone()))
            .await
        {
            Ok(_) => acknowledged.push((key, value)),
            Err(error) => {
                assert!(
                    matches!(
                        error.kind(),
                        "quorum_not_reached" | "timeout" | "unavailable"
                    ),
                    "{error}"
                );
                refused += 1;
            }
        }
    }
    cluster.network.set_drop_rate(0);
    cluster.network.set_delay(Duration::ZERO);
    assert!(acknowledged.len() > 20, "{refused} of 40 refused");
    // Every acknowledged write is a sibling of its key (none had a context, so none
    // supersedes another) when all replicas are read.
    for (key, value) in &acknowledged {
        let read = cluster
            .node(0)
            .get(GetRequest::new(key.clone()).with_r(3))
            .await
            .unwrap();
        assert!(
            read.values.iter().any(|v| v == value.as_bytes()),
            "{key}: acknowledged {value} is missing from {:?}",
            read.values
        );
    }
}
