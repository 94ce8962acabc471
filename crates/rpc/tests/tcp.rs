//! The tarpc service and transport over real TCP on 127.0.0.1:0: two nodes learn each
//! other through `TarpcTransport`, and the client reads status and ring.

mod common;

use std::time::Duration;

use common::{insecure, settled};
use dotkv_replication::{Cluster, Node, PutRequest};
use dotkv_rpc::{Client, Connector, TokenAwareClient};

/// A node on 127.0.0.1 without TLS.
async fn node(
    id: &str,
    seeds: Vec<String>,
) -> (Cluster, Node, String, tokio::sync::watch::Sender<()>) {
    common::node(id, seeds, &insecure()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_gossip_over_tcp_and_answer_clients() {
    let (a, _, a_addr, stop_a) = node("a", vec![]).await;
    let (b, _, b_addr, stop_b) = node("b", vec![a_addr.clone()]).await;
    // b joins through its seed a: a, the claimant, puts it in the next ring, b receives
    // its partitions and turns up.
    let client = Client::connect(&a_addr, Duration::from_secs(2))
        .await
        .unwrap();
    let mut status = client.status().await.unwrap();
    for _ in 0..200 {
        let settled = status.ring.as_ref().is_some_and(|r| r.pending.is_none());
        if settled && status.nodes.iter().filter(|n| n.status == "up").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = client.status().await.unwrap();
    }
    assert_eq!(a.members().len(), 2);
    assert_eq!(b.members().len(), 2);
    let ids: Vec<&str> = status.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(
        status
            .nodes
            .iter()
            .all(|n| n.status == "up" && n.partitions == 16)
    );
    let ring = client.ring().await.unwrap();
    assert_eq!(ring.partitions.len(), 16);
    let other = Client::connect(&b_addr, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        other.ring().await.unwrap().digest,
        ring.digest,
        "both nodes compute one ring"
    );

    // The request path over TCP: a write through a, acknowledged by both replicas (W = 2
    // over TarpcTransport), is on b's own replica (R = 1 reads it locally first or remotely).
    let written = client.put("k", "v1", None).await.unwrap();
    let read = other
        .get_with(dotkv_replication::GetRequest::new("k").with_r(1))
        .await
        .unwrap();
    assert_eq!(read.values, vec![bytes::Bytes::from("v1")]);
    assert_eq!(read.context, written.context);
    let replicas = other.replicas("k").await.unwrap();
    assert!(replicas.replicas.iter().all(|r| r.values.len() == 1));
    // A frame over the node's 1 MiB limit is refused by the node (the connection drops
    // before the body is read), nothing stored; the client refuses one over its own limit.
    let small = Client::connect_with(
        &a_addr,
        Duration::from_secs(2),
        &Connector::plaintext().with_max_frame_bytes(1 << 20),
    )
    .await
    .unwrap();
    let err = small
        .put("big", vec![7u8; 2 << 20], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_argument", "{err}");
    let err = client
        .put("big", vec![7u8; 2 << 20], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "unavailable", "{err}");
    let fresh = Client::connect(&a_addr, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(fresh.get("big").await.unwrap().values.is_empty());

    // A node that is gone: the client gets a clear error, not a hang.
    drop(stop_a);
    drop(stop_b);

    let err = Client::connect("127.0.0.1:1", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot reach 127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_aware_client_sends_each_key_to_an_owner_and_follows_a_new_ring() {
    let (_, a, a_addr, _stop_a) = node("a", vec![]).await;
    let (_, b, _, _stop_b) = node("b", vec![a_addr.clone()]).await;
    let (_, c, _, _stop_c) = node("c", vec![a_addr.clone()]).await;
    let plain = Client::connect(&a_addr, Duration::from_secs(2))
        .await
        .unwrap();
    let first_ring = settled(&plain, 3).await;
    let nodes = [a, b, c];
    let forwarded = |nodes: &[Node]| nodes.iter().map(Node::forwarded_puts).sum::<u64>();

    // N = 2 of 3: a plain client of a has a forward the writes of keys a does not own.
    for i in 0..30 {
        plain.put(format!("plain{i}"), "v", None).await.unwrap();
    }
    assert!(forwarded(&nodes) > 0, "a owns every key?");

    // The token-aware client sends each write to an owner: nothing is forwarded.
    let seeds = [a_addr.clone()];
    let client = TokenAwareClient::connect(&seeds, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(client.ring_version(), first_ring);
    let before = forwarded(&nodes);
    for i in 0..30 {
        client
            .put_with(PutRequest::new(format!("aware{i}"), "v"))
            .await
            .unwrap();
    }
    assert_eq!(
        forwarded(&nodes),
        before,
        "a token-aware write was forwarded"
    );

    // A fourth node joins: the ring changes under the client, which learns the new one
    // from the version its replies carry, then again sends every write to an owner.
    let (_, d, _, _stop_d) = node("d", vec![a_addr.clone()]).await;
    let second_ring = settled(&plain, 4).await;
    assert!(second_ring > first_ring);
    let nodes = [nodes[0].clone(), nodes[1].clone(), nodes[2].clone(), d];
    for i in 0..5 {
        let read = client
            .get_with(dotkv_replication::GetRequest::new(format!("aware{i}")))
            .await
            .unwrap();
        assert_eq!(read.values, vec![bytes::Bytes::from("v")]);
    }
    assert_eq!(
        client.ring_version(),
        second_ring,
        "the client kept its old ring"
    );
    let before = forwarded(&nodes);
    for i in 0..30 {
        client
            .put_with(PutRequest::new(format!("after{i}"), "v"))
            .await
            .unwrap();
    }
    assert_eq!(
        forwarded(&nodes),
        before,
        "a write was forwarded after the refresh"
    );
}
