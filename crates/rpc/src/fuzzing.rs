//! The wire's decoders as a node runs them on bytes from the network, for the fuzz
//! targets in `fuzz/` and their corpus replay in `just test` (`dotkv::fuzz`).

use std::pin::Pin;

use bytes::BytesMut;
use dotkv_membership::GossipRequest;
use tarpc::ClientMessage;
use tarpc::tokio_serde::Deserializer;
use tarpc::tokio_serde::formats::Bincode;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::conn::{HELLO_HEADER_BYTES, hello_token, hello_token_len};
use crate::server::RequestCodec;
use crate::service::NodeServiceRequest;

/// What [`server_input`] made of its bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Whether the handshake header was accepted.
    pub hello: bool,
    /// Frames cut from the rest.
    pub frames: usize,
    /// Of them, requests that decoded.
    pub requests: usize,
}

/// Runs `data` through what a node does with a connection's bytes: the handshake header
/// and token, then length-delimited frames (limit `max_frame_bytes`), each decoded as a
/// tarpc request of the node's service.
pub fn server_input(data: &[u8], max_frame_bytes: usize) -> Decoded {
    let mut decoded = Decoded::default();
    let mut rest = data;
    if let Some(header) = data.get(..HELLO_HEADER_BYTES) {
        let header: &[u8; HELLO_HEADER_BYTES] = header.try_into().expect("sliced to length");
        if let Ok(len) = hello_token_len(header) {
            let end = (HELLO_HEADER_BYTES + len).min(data.len());
            decoded.hello = hello_token(&data[HELLO_HEADER_BYTES..end]).is_ok();
            rest = &data[end..];
        }
    }
    let mut codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec();
    let mut buffer = BytesMut::from(rest);
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        decoded.frames += 1;
        // The server's own codec: what a connection's frames go through.
        let mut codec = RequestCodec::default();
        if Pin::new(&mut codec).deserialize(&frame).is_ok() {
            decoded.requests += 1;
        }
    }
    decoded
}

/// Decodes `data` as the gossip message of a `gossip` call, as the node's transport does.
pub fn gossip_message(data: &[u8]) -> Option<GossipRequest> {
    let mut format = Bincode::<GossipRequest, ()>::default();
    Pin::new(&mut format)
        .deserialize(&BytesMut::from(data))
        .ok()
}

/// Encodes a gossip message as [`gossip_message`] decodes it (seed corpora).
pub fn encode_gossip_message(request: &GossipRequest) -> Vec<u8> {
    use tarpc::tokio_serde::Serializer;
    let mut format = Bincode::<(), GossipRequest>::default();
    Pin::new(&mut format)
        .serialize(request)
        .expect("a gossip message encodes")
        .to_vec()
}

/// Valid connection inputs: a handshake (with and without a token) followed by frames of
/// several requests, as a client sends them (the `rpc_frames` corpus).
pub fn seed_inputs() -> Vec<Vec<u8>> {
    use bytes::Bytes;
    use dotkv_replication::{GetRequest, PutRequest};
    use tarpc::tokio_serde::Serializer;
    use tarpc::{Request, context};
    let requests = [
        NodeServiceRequest::Get {
            request: GetRequest::new("greeting"),
        },
        NodeServiceRequest::Put {
            request: PutRequest::new("greeting", "hello"),
        },
        NodeServiceRequest::WriteReplica {
            key: Bytes::from_static(b"k"),
            object: Bytes::from_static(b"\x01\x00"),
        },
        NodeServiceRequest::Status {},
        NodeServiceRequest::Gossip {
            request: GossipRequest::Syn {
                from: "a".into(),
                digest: Default::default(),
                topology: None,
            },
        },
    ];
    let mut frames = Vec::new();
    for (id, message) in requests.into_iter().enumerate() {
        let message = ClientMessage::Request(Request {
            context: context::current(),
            id: id as u64,
            message,
        });
        let mut format = Bincode::<(), ClientMessage<NodeServiceRequest>>::default();
        let body = Pin::new(&mut format)
            .serialize(&message)
            .expect("a request encodes");
        // The framing the server's codec cuts.
        let mut frame = BytesMut::new();
        LengthDelimitedCodec::new()
            .encode(body, &mut frame)
            .expect("a small frame");
        frames.push(frame.to_vec());
    }
    let hello = |token| crate::conn::encode_hello(token);
    let mut seeds = vec![hello(None), hello(Some("reader-0123456789abcdef"))];
    for frame in &frames {
        let mut input = hello(None);
        input.extend_from_slice(frame);
        seeds.push(input);
    }
    let mut all = hello(Some("admin-0123456789abcdef"));
    all.extend(frames.concat());
    seeds.push(all);
    seeds
}
