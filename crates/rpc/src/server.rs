//! Serving the node's service on a TCP listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use bytes::BytesMut;
use dotkv_membership::{GossipRequest, GossipResponse};
use dotkv_replication::{
    AaeView, Error, GetReply, GetRequest, HandoffPage, Node, PageMode, PutReply, PutRequest,
    ReplicasReply,
};
use futures::StreamExt;
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel, Serve};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_serde::{Deserializer, Serializer};
use tarpc::{ClientMessage, RequestName, ServerError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::RpcConfig;
use crate::conn::{FrameDeadline, Gate, Limits};
use crate::security::{Access, Needs, Role, ServerSecurity, log_refused};
use crate::service::{
    HintView, NodeService, NodeServiceRequest, NodeServiceResponse, NodeView, PartitionView,
    PendingStatus, RingReply, RingStatus, StatusReply,
};

/// The handlers: thin adapters into the replication layer.
#[derive(Debug, Clone)]
struct NodeServer {
    node: Node,
}

impl NodeService for NodeServer {
    async fn gossip(self, _: Context, request: GossipRequest) -> GossipResponse {
        self.node.cluster().handle_gossip(request)
    }

    async fn get(self, _: Context, request: GetRequest) -> Result<GetReply, Error> {
        self.node.get(request).await
    }

    async fn put(self, context: Context, mut request: PutRequest) -> Result<PutReply, Error> {
        let left = context
            .deadline
            .checked_duration_since(std::time::Instant::now())
            .unwrap_or_default();
        request.deadline_ms = Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        self.node.put(request).await
    }

    async fn replicas(self, _: Context, key: Bytes) -> Result<ReplicasReply, Error> {
        self.node.replicas(key).await
    }

    async fn write_replica(self, _: Context, key: Bytes, object: Bytes) -> Result<(), Error> {
        self.node.write_replica(key, object).await
    }

    async fn read_replica(self, _: Context, key: Bytes) -> Result<Option<Bytes>, Error> {
        self.node.read_replica(key).await
    }

    async fn read_digest(self, _: Context, key: Bytes) -> Result<Option<u64>, Error> {
        self.node.read_digest(key).await
    }

    async fn ping(self, _: Context, payload: Bytes) -> Bytes {
        payload
    }

    async fn handoff_page(
        self,
        _: Context,
        partition: u32,
        after: Option<Bytes>,
        mode: PageMode,
    ) -> Result<HandoffPage, Error> {
        self.node.handoff_page(partition, after, mode).await
    }

    async fn wanted(
        self,
        _: Context,
        partition: u32,
        offered: Vec<(Bytes, u64)>,
    ) -> Result<Vec<u32>, Error> {
        self.node.wanted(partition, offered).await
    }

    async fn push_partition(
        self,
        _: Context,
        partition: u32,
        entries: Vec<(Bytes, Bytes)>,
    ) -> Result<(), Error> {
        self.node.merge_page(partition, entries).await
    }

    async fn write_hint(
        self,
        _: Context,
        target: String,
        key: Bytes,
        object: Bytes,
    ) -> Result<(), Error> {
        self.node.write_hint(target, key, object).await
    }

    async fn read_hints(self, _: Context, key: Bytes) -> Result<Vec<(String, Bytes)>, Error> {
        self.node.read_hints(key).await
    }

    async fn aae_tree(self, _: Context, partition: u32, branches: Vec<u32>) -> Option<Vec<u64>> {
        self.node.aae_tree(partition, &branches)
    }

    async fn aae_keys(
        self,
        _: Context,
        partition: u32,
        leaves: Vec<u32>,
    ) -> Result<Vec<(Bytes, u64)>, Error> {
        self.node.aae_keys(partition, &leaves).await
    }

    async fn aae_sync(
        self,
        _: Context,
        partition: u32,
        objects: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<(Bytes, Bytes)>, Error> {
        self.node.aae_sync(partition, objects).await
    }

    async fn aae(self, _: Context) -> AaeView {
        self.node.aae_view()
    }

    async fn join(self, _: Context, seed: String) -> Result<(), Error> {
        self.node.join(seed).await
    }

    async fn leave(self, _: Context) -> Result<(), Error> {
        self.node.cluster().leave().await
    }

    async fn remove(self, _: Context, id: String) -> Result<(), Error> {
        self.node.cluster().remove(&id).await
    }

    async fn status(self, _: Context) -> StatusReply {
        status_of(&self.node).await
    }

    async fn ring(self, _: Context) -> RingReply {
        ring_of(&self.node)
    }
}

/// The answer to `status` (tarpc and HTTP).
pub(crate) async fn status_of(node: &Node) -> StatusReply {
    let cluster = node.cluster();
    let routing = cluster.routing();
    let ring = routing.as_ref().map(|r| &r.ring);
    let loads = ring.map(|r| r.loads()).unwrap_or_default();
    let nodes = cluster
        .members()
        .into_iter()
        .map(|m| {
            let partitions = ring
                .and_then(|r| r.index_of(&m.id))
                .map_or(0, |i| loads[usize::from(i)]);
            NodeView {
                // A member that left is gone by design, not down.
                status: if m.down && m.state.status != dotkv_membership::NodeStatus::Left {
                    "down".into()
                } else {
                    m.state.status.to_string()
                },
                id: m.id,
                addr: m.state.addr,
                weight: m.state.weight,
                zone: m.state.zone,
                partitions,
            }
        })
        .collect();
    let ring = ring.map(|ring| RingStatus {
        version: ring.version(),
        digest: format!("{:016x}", ring.digest()),
        pending: cluster
            .transition_progress()
            .map(|(id, moves, moved)| PendingStatus {
                version: id.version,
                digest: format!("{:016x}", id.digest),
                moves,
                moved,
            }),
    });
    StatusReply {
        node: cluster.node_id(),
        nodes,
        ring,
        transfers: node.transfers(),
        hints: node
            .hint_counts()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(target, keys)| HintView { target, keys })
            .collect(),
    }
}

/// The answer to `ring` (tarpc and HTTP).
pub(crate) fn ring_of(node: &Node) -> RingReply {
    let Some(routing) = node.cluster().routing() else {
        return RingReply {
            version: 0,
            digest: String::new(),
            partitions: vec![],
            pending_version: None,
        };
    };
    let ring = &routing.ring;
    let pending = routing.pending.as_ref().map(|p| &p.ring);
    let ids = |ring: &dotkv_ring::Ring, id: u32| {
        ring.preference_list(id)
            .iter()
            .map(|&i| ring.member(i).id.clone())
            .collect::<Vec<_>>()
    };
    let partitions = (0..ring.partitions())
        .map(|id| PartitionView {
            id,
            nodes: ids(ring, id),
            pending: pending.map(|p| ids(p, id)),
        })
        .collect();
    RingReply {
        version: ring.version(),
        digest: format!("{:016x}", ring.digest()),
        partitions,
        pending_version: pending.map(dotkv_ring::Ring::version),
    }
}

/// Length-delimited bincode framing with a frame limit: a longer frame is refused from
/// its length prefix, before its body is allocated.
pub(crate) fn framed<S: AsyncRead + AsyncWrite>(
    stream: S,
    max_frame_bytes: usize,
) -> Framed<S, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec();
    Framed::new(stream, codec)
}

/// The server side's serde codec: bincode, after refusing a request whose deadline an
/// `Instant` cannot hold (tarpc adds it to now and panics on the overflow: found by the
/// `rpc_frames` fuzz target, kept in `fuzz/regressions/rpc_frames/`).
#[derive(Debug, Default)]
pub(crate) struct RequestCodec(
    Bincode<ClientMessage<NodeServiceRequest>, tarpc::Response<NodeServiceResponse>>,
);

/// The longest request deadline accepted, in seconds (a century: no `Instant` overflows).
const MAX_DEADLINE_SECS: u64 = 100 * 365 * 24 * 3600;

impl Deserializer<ClientMessage<NodeServiceRequest>> for RequestCodec {
    type Error = io::Error;

    fn deserialize(
        self: Pin<&mut Self>,
        frame: &BytesMut,
    ) -> Result<ClientMessage<NodeServiceRequest>, io::Error> {
        if deadline_secs(frame).is_some_and(|secs| secs > MAX_DEADLINE_SECS) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a request deadline beyond a century",
            ));
        }
        Pin::new(&mut self.get_mut().0).deserialize(frame)
    }
}

impl Serializer<tarpc::Response<NodeServiceResponse>> for RequestCodec {
    type Error = io::Error;

    fn serialize(
        self: Pin<&mut Self>,
        item: &tarpc::Response<NodeServiceResponse>,
    ) -> Result<Bytes, io::Error> {
        Pin::new(&mut self.get_mut().0).serialize(item)
    }
}

/// The deadline's seconds of a request frame: bincode's varints (tarpc's default
/// options), `ClientMessage::Request` being variant 0 and its context's deadline (a
/// `Duration`, seconds first) its first field. `None` for anything else, which bincode
/// itself then judges.
fn deadline_secs(frame: &[u8]) -> Option<u64> {
    let (variant, rest) = varint(frame)?;
    if variant != 0 {
        return None;
    }
    varint(rest).map(|(secs, _)| secs)
}

/// A bincode varint: below 251 one byte; 251, 252, 253 then a u16, u32, u64 little-endian.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    let width = match first {
        0..=250 => return Some((u64::from(first), rest)),
        251 => 2,
        252 => 4,
        253 => 8,
        _ => return None,
    };
    let (value, rest) = (rest.get(..width)?, &rest[width..]);
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(value);
    Some((u64::from_le_bytes(le), rest))
}

/// How a refused call's error detail begins (what clients map to `unauthorized`).
pub(crate) const UNAUTHORIZED: &str = "unauthorized: ";

/// What each call needs of its connection's role.
fn needs(request: &NodeServiceRequest) -> Needs {
    use NodeServiceRequest as R;
    match request {
        R::Status {}
        | R::Ring {}
        | R::Get { .. }
        | R::Replicas { .. }
        | R::Aae {}
        | R::Ping { .. } => Needs::Client(Access::ReadOnly),
        R::Put { .. } => Needs::Client(Access::ReadWrite),
        R::Join { .. } | R::Leave {} | R::Remove { .. } => Needs::Client(Access::Admin),
        R::Gossip { .. }
        | R::WriteReplica { .. }
        | R::ReadReplica { .. }
        | R::ReadDigest { .. }
        | R::HandoffPage { .. }
        | R::Wanted { .. }
        | R::PushPartition { .. }
        | R::WriteHint { .. }
        | R::ReadHints { .. }
        | R::AaeTree { .. }
        | R::AaeKeys { .. }
        | R::AaeSync { .. } => Needs::Peer,
    }
}

/// The service behind a connection's role: a call the role does not allow is refused
/// (`PermissionDenied`, which clients report as `unauthorized`) and logged with the
/// peer's address, before any handler runs.
#[derive(Debug, Clone)]
struct Guarded {
    inner: NodeServer,
    role: Role,
    peer: SocketAddr,
}

impl Serve for Guarded {
    type Req = NodeServiceRequest;
    type Resp = NodeServiceResponse;

    async fn serve(
        self,
        context: Context,
        request: NodeServiceRequest,
    ) -> Result<NodeServiceResponse, ServerError> {
        let needs = needs(&request);
        if !self.role.allows(needs) {
            let call = request.name().trim_start_matches("NodeService.").to_owned();
            log_refused(self.peer, &call, &format!("needs {needs}"));
            return Err(ServerError::new(
                io::ErrorKind::PermissionDenied,
                format!("{UNAUTHORIZED}{call} needs {needs}"),
            ));
        }
        Serve::serve(NodeService::serve(self.inner), context, request).await
    }
}

/// Serves `node` on `listener` until `shutdown` completes. Each connection is admitted
/// (limits, TLS, handshake: see `conn`), then is one multiplexed tarpc channel whose
/// requests each run in their own task.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    config: RpcConfig,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send,
) {
    let server = NodeServer { node };
    let gate = Gate::new(security, Limits::new(&config));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: do not spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Some(permit) = gate.admit(peer) else {
            continue;
        };
        let gate = Arc::clone(&gate);
        let server = server.clone();
        let max_frame_bytes = config.max_frame_bytes;
        tokio::spawn(async move {
            let Some((stream, role)) = gate.handshake(tcp, peer).await else {
                return;
            };
            let stream = FrameDeadline::new(stream, gate.limits.frame_timeout, Some(permit));
            let transport = tarpc::serde_transport::new(
                framed(stream, max_frame_bytes),
                RequestCodec::default(),
            );
            let service = Guarded {
                inner: server,
                role,
                peer,
            };
            BaseChannel::with_defaults(transport)
                .execute(service)
                .for_each(|response| async move {
                    tokio::spawn(response);
                })
                .await;
        });
    }
}
