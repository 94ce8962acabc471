//! A node's life: open the store, establish the node's identity, serve until asked to
//! stop, close the store.
//!
//! A node gossips with its peers, detects failures, keeps the ring, coordinates client
//! requests and serves its replicas, all over one tarpc listener.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dotkv_membership::{NodeState, NodeStatus, RingParams};
use dotkv_replication::{AaeConfig, Cluster, ClusterOptions, Node, NodeSettings};
use dotkv_rpc::{Connector, ServerSecurity, TarpcTransport};
use dotkv_storage::{Storage, StorageExt};
use dotkv_versioning::ReplicaId;

use crate::config::ServerConfig;

/// The meta entry that holds the node's id.
const META_NODE_ID: &str = "node_id";
/// The meta entry that holds the store's replica epoch: a random number made with the
/// store, part of the replica id the node's writes get dots of.
const META_REPLICA_EPOCH: &str = "replica_epoch";

/// Runs a node until `shutdown` completes, then closes its store.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let store = dotkv_storage::open(&config.data_dir, &config.storage)
        .await
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let result = serve(&config, &store, shutdown).await;
    // Close whatever happened, so acknowledged writes are committed and files released.
    let closed = store.close().await.context("closing the store");
    tracing::info!("store closed");
    result.and(closed)
}

async fn serve(
    config: &ServerConfig,
    store: &Arc<dyn Storage>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let node_id = establish_identity(store.as_ref(), config.node_id.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
    let addr = match &config.advertise {
        Some(advertise) => advertise.clone(),
        None => listener.local_addr()?.to_string(),
    };
    // Certificates are read once, before anything listens: a bad file stops the start.
    let security = ServerSecurity::new(&config.security).map_err(anyhow::Error::msg)?;
    let connector = Connector::for_peers(&config.security, config.rpc.max_frame_bytes)
        .map_err(anyhow::Error::msg)?;
    if !security.tls() {
        tracing::warn!(
            "security.tls is off: peer and client traffic is neither encrypted nor \
             authenticated, and anyone who reaches this node's port is a peer"
        );
    }
    let transport = Arc::new(TarpcTransport::new(
        Duration::from_millis(config.rpc.peer_timeout_ms),
        connector,
    ));
    // A first start with seeds joins their cluster; without, it founds one. On a restart
    // the status stored with the view wins.
    let status = if config.seeds.is_empty() {
        NodeStatus::Up
    } else {
        NodeStatus::Joining
    };
    let entry = NodeState {
        incarnation: 1,
        heartbeat: 0,
        addr: addr.clone(),
        status,
        weight: config.weight,
        zone: config.zone.clone(),
        synced: Default::default(),
    };
    let options = ClusterOptions {
        node_id: node_id.clone(),
        entry,
        seeds: config.seeds.clone(),
        config: config.membership.clone(),
        params: RingParams {
            replicas: config.replication.n,
            partitions: config.ring.partitions,
        },
    };
    let cluster = Cluster::start(options, Arc::clone(store), Arc::clone(&transport) as _).await?;
    if cluster.own_status() == NodeStatus::Left {
        bail!(
            "node `{node_id}` left the cluster (or was removed); its data dir cannot serve \
             again: start it with an empty --data-dir and --seeds to join anew"
        );
    }
    let replica = replica_id(store.as_ref(), &node_id).await?;
    let node = Node::new(
        cluster.clone(),
        Arc::clone(store),
        transport,
        replica,
        NodeSettings {
            replication: config.replication.clone(),
            limits: config.limits.clone(),
            handoff: config.handoff.clone(),
            aae: AaeConfig {
                tombstone_grace_s: config.storage.tombstone_grace_s,
                ..config.aae.clone()
            },
        },
    );
    let replication = &config.replication;
    if replication.r + replication.w <= replication.n {
        tracing::warn!(
            n = replication.n,
            r = replication.r,
            w = replication.w,
            "replication.r + replication.w <= replication.n: a read may miss the latest acknowledged write"
        );
    }
    let objects = store.count(dotkv_storage::Keyspace::Objects, &[]).await?;
    tracing::info!(
        node_id,
        listen = addr,
        backend = %store.kind(),
        data_dir = %config.data_dir.display(),
        objects,
        members = cluster.members().len(),
        tls = security.tls(),
        tokens = security.tokens_required(),
        "node ready"
    );
    // One signal fans out to the RPC server and the gossip loop.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let rpc = tokio::spawn(dotkv_rpc::serve(
        listener,
        node.clone(),
        config.rpc.clone(),
        security.clone(),
        wait(stopped.clone()),
    ));
    let http = match &config.http.listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (http.listen)"))?;
            tracing::info!(http = %listener.local_addr()?, "HTTP gateway ready");
            let stopped = wait(stopped.clone());
            Some(tokio::spawn(dotkv_rpc::serve_http(
                listener,
                node.clone(),
                config.rpc.clone(),
                security.clone(),
                stopped,
            )))
        }
    };
    let gossip = {
        let cluster = cluster.clone();
        let stopped = wait(stopped.clone());
        tokio::spawn(async move { cluster.run(stopped).await })
    };
    let handoff = {
        let node = node.clone();
        let stopped = wait(stopped.clone());
        tokio::spawn(async move { node.run_handoff(stopped).await })
    };
    let aae = {
        let node = node.clone();
        let stopped = wait(stopped);
        tokio::spawn(async move { node.run_aae(stopped).await })
    };
    let gossip_interval = Duration::from_millis(config.membership.gossip_interval_ms);
    tokio::select! {
        () = shutdown => {}
        () = departed(&node, gossip_interval) => {
            tracing::info!(node_id, "left the cluster: every partition it held lives on its new owners");
        }
    }
    tracing::info!(node_id, "shutting down");
    let _ = stop.send(true);
    rpc.await.context("the RPC server task failed")?;
    if let Some(http) = http {
        http.await
            .context("the HTTP gateway task failed")?
            .context("the HTTP gateway failed")?;
    }
    gossip.await.context("the gossip task failed")?;
    handoff.await.context("the handoff task failed")?;
    aae.await.context("the anti-entropy task failed")?;
    Ok(())
}

/// Completes once this node has left the cluster (`leave`, or removed while alive) and
/// handed off everything it still held: the ring excludes it, so every partition it holds
/// is offered to its owners first. It then gossips a few more rounds so that its `left`
/// spreads before it exits.
async fn departed(node: &Node, gossip_interval: Duration) {
    let cluster = node.cluster();
    loop {
        tokio::time::sleep(gossip_interval).await;
        if cluster.own_status() != NodeStatus::Left {
            continue;
        }
        let Some(routing) = cluster.routing() else {
            continue;
        };
        if node.hand_off_foreign(&routing).await {
            break;
        }
    }
    tokio::time::sleep(gossip_interval * 6).await;
}

/// The node id stored in the data dir, or `configured`, or a new random id, stored on first
/// start. A data dir belongs to one node: starting it under another id is refused.
pub async fn establish_identity(
    store: &dyn Storage,
    configured: Option<&str>,
) -> anyhow::Result<String> {
    let stored = store.get_meta(META_NODE_ID).await?;
    let stored = stored
        .map(String::from_utf8)
        .transpose()
        .context("the node id stored in the data dir is not UTF-8")?;
    match (stored, configured) {
        (Some(stored), Some(configured)) if stored != configured => bail!(
            "this data dir belongs to node `{stored}`, not `{configured}`; \
             start it with --node-id {stored} or use another --data-dir"
        ),
        (Some(stored), _) => Ok(stored),
        (None, configured) => {
            let id = configured.map_or_else(random_node_id, str::to_owned);
            store
                .put_meta(META_NODE_ID, id.clone().into_bytes())
                .await?;
            tracing::info!(node_id = id, "new node id stored");
            Ok(id)
        }
    }
}

/// The replica id of this node's writes: its id and the store's epoch, made once with the
/// store. A node whose data dir is lost comes back, under the same node id, with a new
/// epoch and so a new replica id: it cannot mint a dot (id, counter) its old store used
/// for another value, which other replicas would take for the same write.
async fn replica_id(store: &dyn Storage, node_id: &str) -> anyhow::Result<ReplicaId> {
    let epoch = match store.get_meta(META_REPLICA_EPOCH).await? {
        Some(bytes) => String::from_utf8(bytes).context("the stored replica epoch is not UTF-8")?,
        None => {
            let epoch = format!(
                "{:016x}",
                RandomState::new().hash_one(std::time::SystemTime::now())
            );
            store
                .put_meta(META_REPLICA_EPOCH, epoch.clone().into_bytes())
                .await?;
            epoch
        }
    };
    Ok(ReplicaId::from_name(&format!("{node_id}/{epoch}")))
}

/// `n-` and 12 hex digits from the process's random hasher seed.
fn random_node_id() -> String {
    let seed = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    format!("n-{:012x}", seed & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use dotkv_storage::MemoryStorage;

    use super::*;

    #[tokio::test]
    async fn the_replica_id_is_stable_for_a_store_and_new_for_a_new_one() {
        let store = MemoryStorage::new();
        let first = replica_id(&store, "n1").await.unwrap();
        assert_eq!(replica_id(&store, "n1").await.unwrap(), first);
        let wiped = MemoryStorage::new();
        assert_ne!(replica_id(&wiped, "n1").await.unwrap(), first);
    }

    #[tokio::test]
    async fn identity_is_stored_once_and_guarded() {
        let store = MemoryStorage::new();
        let id = establish_identity(&store, None).await.unwrap();
        assert!(id.starts_with("n-"));
        assert_eq!(establish_identity(&store, None).await.unwrap(), id);
        assert_eq!(establish_identity(&store, Some(&id)).await.unwrap(), id);
        let err = establish_identity(&store, Some("other")).await.unwrap_err();
        assert!(err.to_string().contains("belongs to node"), "{err}");
    }
}
