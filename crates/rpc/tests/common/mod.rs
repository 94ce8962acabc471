//! The in-process cluster of the rpc crate's tests: nodes over real TCP on 127.0.0.1:0,
//! with or without TLS.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dotkv_membership::{MembershipConfig, NodeState, NodeStatus, RingParams};
use dotkv_replication::{
    Cluster, ClusterOptions, HandoffConfig, Node, NodeSettings, ReplicationConfig, Transport,
};
use dotkv_rpc::security::{Pem, issue_node_cert, new_ca};
use dotkv_rpc::{Client, Connector, RpcConfig, SecurityConfig, ServerSecurity, TarpcTransport};
use dotkv_storage::MemoryStorage;

/// No TLS: every connection is a peer.
pub fn insecure() -> SecurityConfig {
    SecurityConfig {
        tls: false,
        ..SecurityConfig::default()
    }
}

/// A CA written to `dir/ca.pem` (and its key).
pub fn write_ca(dir: &Path) -> Pem {
    let ca = new_ca().unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    ca
}

/// TLS with a certificate for `name` signed by `ca` (whose certificate is `ca_file`),
/// written in `dir`.
pub fn tls(dir: &Path, ca: &Pem, ca_file: &Path, name: &str) -> SecurityConfig {
    let pem = issue_node_cert(ca, name, &[]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &pem.cert).unwrap();
    std::fs::write(&key, &pem.key).unwrap();
    SecurityConfig {
        tls: true,
        ca: Some(ca_file.to_path_buf()),
        cert: Some(cert),
        key: Some(key),
        tokens: Vec::new(),
    }
}

/// A node on 127.0.0.1 with `security` (frames of at most 1 MiB): its membership, its
/// coordinator, its address, and the sender whose drop stops it.
pub async fn node(
    id: &str,
    seeds: Vec<String>,
    security: &SecurityConfig,
) -> (Cluster, Node, String, tokio::sync::watch::Sender<()>) {
    let rpc = RpcConfig {
        max_frame_bytes: 1 << 20,
        ..RpcConfig::default()
    };
    node_with(id, seeds, security, rpc).await
}

/// [`node`] with these wire settings.
pub async fn node_with(
    id: &str,
    seeds: Vec<String>,
    security: &SecurityConfig,
    rpc: RpcConfig,
) -> (Cluster, Node, String, tokio::sync::watch::Sender<()>) {
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
    let transport: Arc<dyn Transport> = Arc::new(TarpcTransport::new(
        Duration::from_secs(2),
        Connector::for_peers(security, rpc.max_frame_bytes).unwrap(),
    ));
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
        rpc,
        ServerSecurity::new(security).unwrap(),
        wait(stopped.clone()),
    ));
    let gossip = cluster.clone();
    let until = wait(stopped.clone());
    tokio::spawn(async move { gossip.run(until).await });
    let until = wait(stopped);
    let handoff = node.clone();
    tokio::spawn(async move { handoff.run_handoff(until).await });
    (cluster, node, addr, stop)
}

/// Waits until the node behind `client` sees `n` members up and no transition; returns
/// its ring version.
pub async fn settled(client: &Client, n: usize) -> u64 {
    for _ in 0..400 {
        let status = client.status().await.unwrap();
        let ring = status.ring.as_ref().filter(|r| r.pending.is_none());
        if let Some(ring) = ring {
            if status.nodes.iter().filter(|n| n.status == "up").count() == n {
                return ring.version;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cluster did not settle with {n} members up");
}
