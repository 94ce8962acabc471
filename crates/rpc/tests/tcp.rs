//! The tarpc service and transport over real TCP on 127.0.0.1:0: two nodes learn each
//! other through `TarpcTransport`, and the client reads status and ring.

use std::sync::Arc;
use std::time::Duration;

use dotkv_membership::{MembershipConfig, NodeState, NodeStatus, RingParams};
use dotkv_replication::{
    Cluster, ClusterOptions, HandoffConfig, Node, NodeSettings, ReplicationConfig, Transport,
};
use dotkv_rpc::{Client, TarpcTransport};
use dotkv_storage::MemoryStorage;

async fn node(id: &str, seeds: Vec<String>) -> (Cluster, String, tokio::sync::watch::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let entry = NodeState {
        incarnation: 1,
        heartbeat: 0,
        addr: addr.clone(),
        status: if seeds.is_empty() {
            NodeStatus::Up
        } else {
            NodeStatus::Joining
        },
        weight: 1,
        zone: "z".into(),
        synced: Default::default(),
    };
    let options = ClusterOptions {
        node_id: id.into(),
        entry,
        seeds,
        config: MembershipConfig {
            gossip_interval_ms: 50,
            ..MembershipConfig::default()
        },
        params: RingParams {
            replicas: 2,
            partitions: 16,
        },
    };
    let transport: Arc<dyn Transport> =
        Arc::new(TarpcTransport::new(Duration::from_secs(2), 1 << 20));
    let store: Arc<dyn dotkv_storage::Storage> = Arc::new(MemoryStorage::new());
    let cluster = Cluster::start(options, Arc::clone(&store), Arc::clone(&transport))
        .await
        .unwrap();
    let config = ReplicationConfig {
        n: 2,
        r: 1,
        w: 2,
        ..ReplicationConfig::default()
    };
    let node = Node::new(
        cluster.clone(),
        store,
        transport,
        dotkv_versioning::ReplicaId::from_name(id),
        NodeSettings {
            replication: config,
            handoff: HandoffConfig {
                interval_ms: 50,
                ..HandoffConfig::default()
            },
            ..NodeSettings::default()
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(());
    let wait = |mut stopped: tokio::sync::watch::Receiver<()>| async move {
        let _ = stopped.changed().await;
    };
    tokio::spawn(dotkv_rpc::serve(
        listener,
        node.clone(),
        1 << 20,
        wait(stopped.clone()),
    ));
    let gossip = cluster.clone();
    let until = wait(stopped.clone());
    tokio::spawn(async move { gossip.run(until).await });
    let until = wait(stopped);
    tokio::spawn(async move { node.run_handoff(until).await });
    (cluster, addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_gossip_over_tcp_and_answer_clients() {
    let (a, a_addr, stop_a) = node("a", vec![]).await;
    let (b, b_addr, stop_b) = node("b", vec![a_addr.clone()]).await;
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
    let small = Client::connect_with(&a_addr, Duration::from_secs(2), 1 << 20)
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
