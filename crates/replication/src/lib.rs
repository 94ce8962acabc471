//! dotkv's distributed machinery, written against a [`Transport`] it does not own.
//!
//! This crate is where the Dynamo protocols run (DeCandia et al., SOSP 2007, §4–§6): the
//! membership driver ([`Cluster`]), which runs the gossip state machine of
//! `dotkv-membership` on a clock and a transport and persists the view (the ring included:
//! it is cluster state, published by the claimant); the request coordinator ([`Node`]):
//! quorum writes and reads over each key's preference list, with DVVS causality
//! (concurrent writes come back as siblings) and read repair; and ownership handoff
//! (`handoff`, [`Node::run_handoff`]): when a transition is pending, each incoming owner
//! pulls its partitions in resumable pages, writes go to the owners of both rings (W of
//! each), and old owners offer what they no longer own before deleting it; and sloppy
//! quorum with hinted handoff (`hints`): an owner that is convicted or refuses a call is
//! replaced by the next healthy fallback, which keeps a hint and delivers it when the owner
//! is back; and active anti-entropy (`aae`, [`Node::run_aae`]): a tictac Merkle tree per
//! partition, kept current inside every object write, compared with the other replicas
//! in the background to repair only the keys that differ, and the reaping of tombstones
//! that every owner holds once their grace period is over.
//!
//! ```text
//!  dotkv-rpc (tarpc) --implements--> Transport <--calls-- Node (coordinator, replica)
//!        |                                                 |    \
//!        +--serves--> Node::put/get/replicas,              |     Cluster (gossip loop,
//!                     write_replica/read_replica           |     ring, liveness)
//!                                                          v
//!                                                    Storage (objects, hints, meta)
//!                                                    + a Merkle tree per partition
//! ```
//!
//! Key types: [`Node`] (requests), [`Cluster`] / [`Routing`] (the view a request routes
//! by), [`Object`] / [`Value`] (the stored DVV set of values and tombstones), the request
//! and reply types, and [`Error`], whose [`kind`](Error::kind) is the client contract's.
//!
//! The crate never names tarpc: tests and simulations use the in-memory network of
//! `testing` (feature `testing`), which drops, delays and partitions messages.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod aae;
mod cluster;
mod config;
mod error;
mod handoff;
mod hints;
mod metrics;
mod node;
mod object;
mod quorum;
mod read;
mod request;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transport;

pub use aae::{AaeConfig, AaeView, ExchangeView};
pub use cluster::{Cluster, ClusterOptions, META_CLUSTER_STATE, Routing};
pub use config::{LimitsConfig, ReplicationConfig};
pub use error::{Error, Result};
pub use handoff::{HandoffConfig, HandoffPage, PageMode, TransferView};
pub use node::{Node, NodeSettings};
pub use object::{Object, Value, decode_object, encode_object};
pub use request::{GetReply, GetRequest, PutReply, PutRequest, ReplicaView, ReplicasReply};
pub use transport::{Transport, TransportError};
