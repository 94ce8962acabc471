//! dotkv's distributed machinery, written against a [`Transport`] it does not own.
//!
//! This crate is where the Dynamo protocols run (DeCandia et al., SOSP 2007, §4–§6): today
//! the membership driver ([`Cluster`]), which runs the gossip state machine of
//! `dotkv-membership` on a clock and a transport and persists the view; next, the request
//! coordinator with quorums, hinted handoff, read repair and anti-entropy.
//!
//! ```text
//!  dotkv-rpc (tarpc) --implements--> Transport <--calls-- Cluster (gossip loop)
//!                                                          |  persists the view
//!                                                          v
//!                                                    Storage (meta keyspace)
//! ```
//!
//! The crate never names tarpc: tests and simulations implement [`Transport`] in memory.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod cluster;
mod config;
mod transport;

pub use cluster::{Cluster, ClusterOptions, META_CLUSTER_STATE};
pub use config::ReplicationConfig;
pub use transport::{Transport, TransportError};
