//! Membership for dotkv: who is in the cluster, who is alive, and the ring that follows.
//!
//! Dynamo has no central registry (DeCandia et al., SOSP 2007, §4.8): each node persists
//! its view, gossips it every interval with a random peer, and so every node learns every
//! other within O(log n) rounds. Seeds only bootstrap the first view. Liveness is a local
//! opinion, given by a phi-accrual failure detector per peer; "down" steers requests to
//! fallbacks (sloppy quorum) but never changes ownership — only `join`, `leave` and
//! `remove` do, through the members' statuses and the claimant's next ring.
//!
//! The ring is part of the gossiped state ([`Topology`]: the current ring and the one a
//! transition moves to), published only by the claimant (see [`Gossiper`]) and adopted
//! everywhere by a total order, `(epoch, digest)`.
//!
//! Key types:
//! - [`ClusterState`]: node id → [`NodeState`] (address, status, weight, zone,
//!   incarnation, heartbeat), a join-semilattice merged entry by entry.
//! - [`PhiAccrualDetector`]: suspicion of one peer's silence.
//! - [`Gossiper`]: one node's membership as a state machine (push-pull SYN/ACK/ACK2),
//!   driven by a clock and a transport it does not own, which keeps it testable with
//!   simulated time and an in-memory network; as the claimant it computes the next
//!   [`dotkv_ring::Ring`] when members join or leave.
//!
//! Non-goals here: the network (the RPC layer carries [`GossipRequest`] /
//! [`GossipResponse`]), data handoff on join and leave (replication moves the partitions
//! and reports back through [`Gossiper::mark_synced`]).
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod detector;
mod gossip;
mod state;

pub use config::MembershipConfig;
pub use detector::PhiAccrualDetector;
pub use gossip::{GossipRequest, GossipResponse, Gossiper, MemberView, RingParams};
pub use state::{
    ClusterState, Digest, NodeState, NodeStatus, RingId, Topology, TopologyId, Version,
};
