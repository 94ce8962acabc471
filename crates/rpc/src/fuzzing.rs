//! The wire's decoders as a node runs them on bytes from the network, for the fuzz
//! targets in `fuzz/` and their corpus replay in `just test` (`dotkv::fuzz`).

use std::pin::Pin;

use bytes::BytesMut;
use dotkv_membership::GossipRequest;
use tarpc::ClientMessage;
use tarpc::tokio_serde::Deserializer;
use tarpc::tokio_serde::formats::Bincode;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use crate::conn::{HELLO_HEADER_BYTES, hello_token, hello_token_len};
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
        let mut format = Bincode::<ClientMessage<NodeServiceRequest>, ()>::default();
        if Pin::new(&mut format).deserialize(&frame).is_ok() {
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
