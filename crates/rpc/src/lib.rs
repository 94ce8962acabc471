//! dotkv's wire: one tarpc service over TCP, the
//! [`Transport`](dotkv_replication::Transport) implementation that the replication layer
//! calls peers through, and the Rust clients.
//!
//! A connection is TCP, then TLS (mutual between nodes, against the cluster CA: see
//! [`security`]), then a handshake that carries a client's token, then length-delimited
//! bincode frames; a frame longer than `max_frame_bytes` is refused by the codec before
//! its body is allocated (`rpc.max_frame_bytes`). Each call is checked against the role
//! the handshake settled (peer, or a client's access); connections are bounded per
//! address and a frame must arrive whole within `rpc.frame_timeout_ms`. Each peer gets
//! one long-lived, multiplexed connection, replaced after a failure; every call carries a
//! deadline.
//! [`TokenAwareClient`] learns the ring and sends each key's request to one of its owners.
//! The HTTP/JSON gateway ([`serve_http`], `http.listen`) serves the client calls to curl.
//!
//! One service carries both the client calls (`get`, `put`, `replicas`, `status`, `ring`)
//! and the peer calls (`gossip`, `write_replica`, `read_replica`, and `put` for a
//! forwarded write): tarpc serves one service per connection, and one listening address
//! per node keeps operations simple. (DESIGN.md names two services; they share this one,
//! and the handlers are thin adapters into `dotkv_replication::Node`.)
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod client;
mod config;
mod conn;
pub mod fuzzing;
mod http;
mod routed;
pub mod security;
mod server;
mod service;

pub use client::{Client, FailoverClient, RpcError, TarpcTransport};
pub use config::{HttpConfig, RpcConfig};
pub use http::{CONTEXT_HEADER, OPENAPI, router, serve_http};
pub use routed::TokenAwareClient;
pub use security::{Access, Connector, SecurityConfig, ServerSecurity, TokenConfig};
pub use server::serve;
pub use service::{
    HintView, NodeView, PartitionView, PendingStatus, RingReply, RingStatus, StatusReply,
};

/// A value as the CLI and the HTTP gateway show it in JSON: its text when it is UTF-8,
/// else its base64.
pub fn printable(value: &[u8]) -> String {
    use base64::Engine as _;
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(value),
    }
}

/// The default largest frame: a 4 MiB value with room for its envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 << 20;
