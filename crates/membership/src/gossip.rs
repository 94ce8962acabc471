//! The gossip protocol as a state machine: no IO, no clock, no randomness of its own
//! beyond a seeded generator, so that simulations and tests drive it round by round.
//!
//! One exchange, initiated every `gossip_interval_ms` with one peer (Cassandra's
//! SYN/ACK/ACK2 push-pull):
//!
//! ```text
//!  A --Syn { from, digest(A) }-------------------> B   B merges nothing yet
//!  A <--Ack { what A lacks, digest(B) }----------- B
//!  A --Ack2 { what B lacks }---------------------> B
//! ```
//!
//! Every newer heartbeat of a peer, and every message from it, feeds that peer's
//! [`PhiAccrualDetector`]. A node is the only writer of its own entry: when gossip brings
//! back a version of its own entry newer than its own (from before a restart whose state
//! was lost), it raises its incarnation past it.

use std::collections::BTreeMap;
use std::time::Duration;

use dotkv_ring::Ring;
use serde::{Deserialize, Serialize};

use crate::{ClusterState, Digest, MembershipConfig, NodeState, PhiAccrualDetector};

/// A gossip request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GossipRequest {
    /// Opens an exchange: the sender's id and digest.
    Syn {
        /// The sender's node id.
        from: String,
        /// What the sender holds.
        digest: Digest,
    },
    /// Closes an exchange: what the receiver lacked.
    Ack2 {
        /// The sender's node id.
        from: String,
        /// Entries newer than the receiver's digest.
        state: ClusterState,
    },
}

/// A gossip reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GossipResponse {
    /// Answers a `Syn`: what its sender lacks, and the receiver's digest.
    Ack {
        /// The receiver's node id.
        from: String,
        /// Entries newer than the `Syn`'s digest.
        state: ClusterState,
        /// What the receiver holds.
        digest: Digest,
    },
    /// Answers an `Ack2`.
    Done,
}

/// The ring's shape: replicas per partition and partition count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingParams {
    /// N.
    pub replicas: usize,
    /// Q.
    pub partitions: u32,
}

/// A member as seen by this node.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// The node id.
    pub id: String,
    /// Its entry.
    pub state: NodeState,
    /// Whether this node's failure detector currently convicts it.
    pub down: bool,
}

/// One node's membership: its view of the cluster, its failure detectors, its ring.
#[derive(Debug)]
pub struct Gossiper {
    me: String,
    config: MembershipConfig,
    state: ClusterState,
    detectors: BTreeMap<String, PhiAccrualDetector>,
    /// Addresses to contact while no peer is known (or none is alive), and now and then.
    seeds: Vec<String>,
    /// Seeds this node has not exchanged with yet: contacted first, so that every node's
    /// first view joins its seed's (else nodes that happen to meet each other first could
    /// stay an island).
    unmet_seeds: Vec<String>,
    params: RingParams,
    ring: Option<Ring>,
    /// SplitMix64 state for choosing peers.
    rng: u64,
    rounds: u64,
    /// Whether the state changed since [`take_changed`](Self::take_changed).
    changed: bool,
}

impl Gossiper {
    /// Starts the membership of node `me` with its own `entry`, the `persisted` view of a
    /// previous run (if any) and `seeds`. On a restart, `entry.incarnation` is raised past
    /// the persisted one, so that the cluster takes the new entry.
    pub fn new(
        me: impl Into<String>,
        mut entry: NodeState,
        persisted: Option<ClusterState>,
        seeds: Vec<String>,
        config: MembershipConfig,
        params: RingParams,
        now: Duration,
    ) -> Self {
        let me = me.into();
        let mut state = persisted.unwrap_or_default();
        if let Some(old) = state.get(&me) {
            entry.incarnation = entry.incarnation.max(old.incarnation + 1);
        }
        state.merge_entry(&me, entry);
        let rng = me.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut gossiper = Self {
            me,
            config,
            state,
            detectors: BTreeMap::new(),
            unmet_seeds: seeds.clone(),
            seeds,
            params,
            ring: None,
            rng,
            rounds: 0,
            changed: true,
        };
        let peers: Vec<String> = gossiper.peer_ids().collect();
        for peer in peers {
            gossiper
                .detectors
                .insert(peer, PhiAccrualDetector::new(&gossiper.config, now));
        }
        gossiper.rebuild_ring();
        gossiper
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// The cluster state as this node knows it.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The ring computed from the owning members, if it could be built.
    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// Whether the state changed since the last call (for persisting it).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn peer_ids(&self) -> impl Iterator<Item = String> + '_ {
        self.state
            .iter()
            .filter(|(id, e)| **id != self.me && e.status != crate::NodeStatus::Left)
            .map(|(id, _)| id.clone())
    }

    fn next_random(&mut self, below: usize) -> usize {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % below.max(1) as u64) as usize
    }

    /// Whether this node's detector convicts `id` at `now` (never itself).
    pub fn is_down(&self, id: &str, now: Duration) -> bool {
        id != self.me
            && self
                .detectors
                .get(id)
                .is_some_and(|d| d.is_down(now, self.config.phi_convict_threshold))
    }

    /// Every member with its liveness.
    pub fn members(&self, now: Duration) -> Vec<MemberView> {
        self.state
            .iter()
            .map(|(id, state)| MemberView {
                id: id.clone(),
                state: state.clone(),
                down: self.is_down(id, now),
            })
            .collect()
    }

    /// Any sign of life from `id` (a reply, a message).
    pub fn heard_from(&mut self, id: &str, now: Duration) {
        if id != self.me {
            let config = &self.config;
            self.detectors
                .entry(id.to_owned())
                .or_insert_with(|| PhiAccrualDetector::new(config, now))
                .heartbeat(now);
        }
    }

    /// Starts a round at `now`: bumps this node's heartbeat and picks whom to gossip with.
    /// Returns the peer's address and the request, or `None` with nobody to talk to.
    pub fn tick(&mut self, now: Duration) -> Option<(String, GossipRequest)> {
        self.rounds += 1;
        if let Some(me) = self.state.entry_mut(&self.me) {
            me.heartbeat += 1;
        }
        let peers: Vec<String> = self.peer_ids().collect();
        let (live, down): (Vec<String>, Vec<String>) =
            peers.into_iter().partition(|id| !self.is_down(id, now));
        // Mostly a live peer; every fourth round a down one (to notice its return); a seed
        // now and then (with chance 1 in live peers + 1), as Cassandra does, so that
        // nodes that first met each other do not stay an island apart from the seeds;
        // while nobody is alive, seeds and down peers in turn.
        let pick = |this: &mut Self, ids: &[String]| {
            let id = &ids[this.next_random(ids.len())];
            this.state.get(id).map(|e| e.addr.clone())
        };
        let seed_turn = if live.is_empty() {
            down.is_empty() || self.rounds % 2 == 0
        } else {
            self.next_random(live.len() + 1) == 0
        };
        let use_seed = !self.seeds.is_empty() && seed_turn;
        // Unmet seeds every other round at most, so that a seed that is gone for good
        // does not stop gossip with the live peers.
        let addr = if !self.unmet_seeds.is_empty() && (live.is_empty() || self.rounds % 2 == 1) {
            let at = self.next_random(self.unmet_seeds.len());
            Some(self.unmet_seeds[at].clone())
        } else if use_seed {
            let at = self.next_random(self.seeds.len());
            Some(self.seeds[at].clone())
        } else if !down.is_empty() && (live.is_empty() || self.rounds % 4 == 0) {
            pick(self, &down)
        } else if !live.is_empty() {
            pick(self, &live)
        } else {
            None
        }?;
        Some((
            addr,
            GossipRequest::Syn {
                from: self.me.clone(),
                digest: self.state.digest(),
            },
        ))
    }

    /// Handles a request from a peer.
    pub fn handle(&mut self, request: GossipRequest, now: Duration) -> GossipResponse {
        match request {
            GossipRequest::Syn { from, digest } => {
                self.heard_from(&from, now);
                GossipResponse::Ack {
                    from: self.me.clone(),
                    state: self.state.newer_than(&digest),
                    digest: self.state.digest(),
                }
            }
            GossipRequest::Ack2 { from, state } => {
                self.heard_from(&from, now);
                self.absorb(&state, now);
                GossipResponse::Done
            }
        }
    }

    /// Handles the `Ack` of an exchange this node opened; returns the `Ack2` to send.
    pub fn handle_ack(&mut self, response: GossipResponse, now: Duration) -> Option<GossipRequest> {
        let GossipResponse::Ack {
            from,
            state,
            digest,
        } = response
        else {
            return None;
        };
        self.heard_from(&from, now);
        self.absorb(&state, now);
        if let Some(addr) = self.state.get(&from).map(|e| e.addr.clone()) {
            self.unmet_seeds.retain(|seed| *seed != addr);
        }
        Some(GossipRequest::Ack2 {
            from: self.me.clone(),
            state: self.state.newer_than(&digest),
        })
    }

    /// Merges gossiped entries: newer heartbeats are signs of life, and a newer version
    /// of this node's own entry is refuted by a higher incarnation.
    fn absorb(&mut self, incoming: &ClusterState, now: Duration) {
        let before_owners = self.state.owners();
        // Refute a newer copy of our own entry. Our entry then outranks it, so the merge
        // below keeps ours.
        if let (Some(theirs), Some(me)) = (incoming.get(&self.me), self.state.entry_mut(&self.me)) {
            if theirs > me {
                me.incarnation = theirs.incarnation + 1;
                self.changed = true;
            }
        }
        for id in self.state.merge(incoming) {
            self.changed = true;
            self.heard_from(&id, now);
        }
        if self.state.owners() != before_owners {
            self.rebuild_ring();
        }
    }

    fn rebuild_ring(&mut self) {
        // The ring version: the sum of the members' incarnations, which only grows and is
        // the same on every node with the same view.
        let version = self.state.iter().map(|(_, e)| e.incarnation).sum();
        self.ring = Ring::build(
            self.state.owners(),
            self.params.replicas,
            self.params.partitions,
            version,
        )
        .ok();
    }
}
