//! The request path on an in-process cluster: quorum writes and reads through every node,
//! siblings and contexts, deletes, per-request R and W, forwarding, limits.

mod common;

use bytes::Bytes;
use common::harness::TestCluster;
use dotkv_replication::{Error, GetRequest, LimitsConfig, PutRequest, ReplicationConfig, Value};

fn values(reply: &dotkv_replication::GetReply) -> Vec<&[u8]> {
    let mut values: Vec<&[u8]> = reply.values.iter().map(|v| v.as_ref()).collect();
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_round_trip_through_every_node() {
    let cluster = TestCluster::start(3).await;
    for writer in 0..3 {
        let key = format!("key-{writer}");
        cluster
            .node(writer)
            .put(PutRequest::new(
                key.clone(),
                format!("from n{}", writer + 1),
            ))
            .await
            .unwrap();
        for reader in 0..3 {
            let reply = cluster
                .node(reader)
                .get(GetRequest::new(key.clone()))
                .await
                .unwrap();
            assert_eq!(values(&reply), [format!("from n{}", writer + 1).as_bytes()]);
        }
    }
    let absent = cluster.node(1).get(GetRequest::new("never")).await.unwrap();
    assert!(absent.values.is_empty());
    assert!(
        !absent.context.is_empty(),
        "an absent key still has a context"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_become_siblings_and_a_context_resolves_them() {
    let cluster = TestCluster::start(3).await;
    // Two writes without context, through different coordinators: both survive.
    cluster
        .node(0)
        .put(PutRequest::new("k", "red"))
        .await
        .unwrap();
    cluster
        .node(1)
        .put(PutRequest::new("k", "blue"))
        .await
        .unwrap();
    let read = cluster.node(2).get(GetRequest::new("k")).await.unwrap();
    assert_eq!(values(&read), [&b"blue"[..], b"red"]);

    // A put with that read's context replaces exactly those two.
    cluster
        .node(2)
        .put(PutRequest::new("k", "purple").with_context(read.context.clone()))
        .await
        .unwrap();
    let resolved = cluster.node(0).get(GetRequest::new("k")).await.unwrap();
    assert_eq!(values(&resolved), [b"purple"]);

    // A stale context (the first read's) does not cover purple: it stays as a sibling.
    cluster
        .node(1)
        .put(PutRequest::new("k", "green").with_context(read.context))
        .await
        .unwrap();
    let both = cluster
        .node(1)
        .get(GetRequest::new("k").with_r(3))
        .await
        .unwrap();
    assert_eq!(values(&both), [&b"green"[..], b"purple"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_leaves_a_tombstone_and_reads_absent_with_a_context() {
    let cluster = TestCluster::start(3).await;
    cluster
        .node(0)
        .put(PutRequest::new("k", "v"))
        .await
        .unwrap();
    let read = cluster.node(1).get(GetRequest::new("k")).await.unwrap();
    let deleted = cluster
        .node(2)
        // W = 3: every replica has the tombstone when the delete returns.
        .put(PutRequest::delete("k").with_context(read.context).with_w(3))
        .await
        .unwrap();
    let after = cluster
        .node(0)
        .get(GetRequest::new("k").with_r(3))
        .await
        .unwrap();
    assert!(after.values.is_empty());
    assert_eq!(after.context, deleted.context);
    // The replicas keep the tombstone (so a stale replica cannot bring the value back).
    for i in 0..3 {
        let held = cluster.stored(i, b"k").await.expect("a tombstone");
        assert!(
            matches!(held.values()[..], [Value::Tombstone { .. }]),
            "{held:?}"
        );
    }
    // A write after the delete, with its context, is the only value.
    cluster
        .node(1)
        .put(PutRequest::new("k", "again").with_context(after.context))
        .await
        .unwrap();
    let again = cluster.node(2).get(GetRequest::new("k")).await.unwrap();
    assert_eq!(values(&again), [b"again"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_and_w_outside_one_to_n_are_refused() {
    let cluster = TestCluster::start(3).await;
    for w in [0, 4] {
        let err = cluster
            .node(0)
            .put(PutRequest::new("k", "v").with_w(w))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_argument", "{err}");
    }
    let err = cluster
        .node(0)
        .get(GetRequest::new("k").with_r(4))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_argument", "{err}");
    assert!(cluster.stored(0, b"k").await.is_none(), "nothing stored");
    // Every legal value works on a healthy cluster.
    for q in 1..=3 {
        cluster
            .node(0)
            .put(PutRequest::new("k", "v").with_w(q))
            .await
            .unwrap();
        cluster
            .node(0)
            .get(GetRequest::new("k").with_r(q))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_malformed_contexts_store_nothing() {
    let limits = LimitsConfig {
        max_key_bytes: 16,
        max_value_bytes: 100,
        max_siblings: 3,
    };
    let cluster = TestCluster::start_with(3, ReplicationConfig::default(), limits).await;
    let node = cluster.node(0);
    let long_key = "k".repeat(17);
    let err = node
        .put(PutRequest::new(long_key.clone(), "v"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = node
        .put(PutRequest::new("k", vec![0u8; 101]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limits.max_value_bytes"), "{err}");
    let err = node
        .put(PutRequest::new("k", "v").with_context("not-a-token!"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_argument", "{err}");
    for i in 0..3 {
        assert!(cluster.stored(i, b"k").await.is_none());
        assert!(cluster.stored(i, long_key.as_bytes()).await.is_none());
    }

    // Sibling explosion: the 4th context-less value is refused, naming key and count; a
    // write with a covering context still succeeds.
    for v in ["a", "b", "c"] {
        node.put(PutRequest::new("hot", v)).await.unwrap();
    }
    let err = node.put(PutRequest::new("hot", "d")).await.unwrap_err();
    assert!(
        matches!(&err, Error::TooManySiblings { key, count: 4, max: 3 } if key == "hot"),
        "{err}"
    );
    let read = node.get(GetRequest::new("hot").with_r(3)).await.unwrap();
    assert_eq!(read.values.len(), 3, "the refused write stored nothing");
    node.put(PutRequest::new("hot", "merged").with_context(read.context))
        .await
        .unwrap();
    let read = node.get(GetRequest::new("hot")).await.unwrap();
    assert_eq!(read.values, vec![Bytes::from("merged")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_preference_list_forwards_the_write() {
    // Five nodes, N = 3: most keys have two nodes outside their preference list.
    let cluster = TestCluster::start(5).await;
    let (key, outsider) = (0..)
        .map(|i| format!("key-{i}"))
        .find_map(|key| {
            let owners = cluster.owners(key.as_bytes());
            (0..5).find(|i| !owners.contains(i)).map(|i| (key, i))
        })
        .expect("some key has a node outside its preference list");
    let owners = cluster.owners(key.as_bytes());
    cluster
        .node(outsider)
        .put(PutRequest::new(key.clone(), "forwarded").with_w(3))
        .await
        .unwrap();
    for i in 0..5 {
        let held = cluster.stored(i, key.as_bytes()).await;
        assert_eq!(
            held.is_some(),
            owners.contains(&i),
            "node {i}, owners {owners:?}"
        );
    }
    // The outsider can read it too: reads go to the owners from any node.
    let read = cluster
        .node(outsider)
        .get(GetRequest::new(key))
        .await
        .unwrap();
    assert_eq!(read.values, vec![Bytes::from("forwarded")]);
}
