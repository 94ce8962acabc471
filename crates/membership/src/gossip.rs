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
//! was lost), it raises its incarnation past it. The one exception is `remove`: another
//! node marks a dead member `left`, and a removed node that comes back accepts it.
//!
//! # The ring as state, and the claimant
//!
//! The digest also carries the [`Topology`]'s id, and the topology travels when the peer's
//! is older. One node, the *claimant* (the smallest id among the members that are `up` and
//! that this node does not convict, as Riak's claimant), turns membership changes into
//! rings, at the start of its rounds:
//!
//! ```text
//!  no topology          --> current = Ring::build(joining + up members)     (first ring)
//!  members changed      --> pending = current.next(joining + up members)    (transition)
//!  every node gaining a
//!  partition has synced --> current = pending, no pending                  (complete)
//!  pending names a node
//!  that is gone         --> pending = current.next(...) again              (re-plan)
//! ```
//!
//! Every publication raises the topology's epoch. No other node computes rings. A node
//! turns itself `up` once a current ring includes it, and `left` once it was `leaving`
//! and the current ring, with no transition pending, excludes it.

use std::collections::BTreeMap;
use std::time::Duration;

use dotkv_ring::Ring;
use serde::{Deserialize, Serialize};

use crate::{
    ClusterState, Digest, MembershipConfig, NodeState, NodeStatus, PhiAccrualDetector, RingId,
    Topology, TopologyId,
};

/// A gossip request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GossipRequest {
    /// Opens an exchange: the sender's id and digest.
    Syn {
        /// The sender's node id.
        from: String,
        /// What the sender holds.
        digest: Digest,
        /// The id of the sender's topology.
        topology: Option<TopologyId>,
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
        /// The id of the receiver's topology.
        topology: Option<TopologyId>,
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
    /// Peers whose connection was refused since they were last heard from: down at once,
    /// whatever the detector says, until any sign of life.
    refused: std::collections::BTreeSet<String>,
    /// Addresses to contact while no peer is known (or none is alive), and now and then.
    seeds: Vec<String>,
    /// Seeds this node has not exchanged with yet: contacted first, so that every node's
    /// first view joins its seed's (else nodes that happen to meet each other first could
    /// stay an island).
    unmet_seeds: Vec<String>,
    params: RingParams,
    /// SplitMix64 state for choosing peers.
    rng: u64,
    rounds: u64,
    /// Whether the state changed since [`take_changed`](Self::take_changed).
    changed: bool,
}

impl Gossiper {
    /// Starts the membership of node `me` with its own `entry`, the `persisted` view of a
    /// previous run (if any) and `seeds`. On a restart, `entry.incarnation` is raised past
    /// the persisted one, so that the cluster takes the new entry, and the persisted
    /// status and sync mark are kept (`entry.status` is for a first start: `joining` for a
    /// node that joins through seeds, `up` for the first node of a cluster).
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
            entry.status = old.status;
            entry.synced = old.synced;
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
            refused: Default::default(),
            unmet_seeds: seeds.clone(),
            seeds,
            params,
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

    /// The current ring, once the claimant published one.
    pub fn ring(&self) -> Option<&Ring> {
        self.state.topology().map(|t| &t.current)
    }

    /// The current ring and the transition in progress.
    pub fn topology(&self) -> Option<&Topology> {
        self.state.topology()
    }

    /// This node's own status.
    pub fn own_status(&self) -> NodeStatus {
        self.state
            .get(&self.me)
            .map_or(NodeStatus::Up, |e| e.status)
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
            && (self.refused.contains(id)
                || self
                    .detectors
                    .get(id)
                    .is_some_and(|d| d.is_down(now, self.config.phi_convict_threshold)))
    }

    /// A connection to `id` was refused (an RPC, not gossip): it counts as down until it
    /// is heard from again.
    pub fn refused(&mut self, id: &str) {
        if id != self.me {
            self.refused.insert(id.to_owned());
        }
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
            self.refused.remove(id);
            let config = &self.config;
            self.detectors
                .entry(id.to_owned())
                .or_insert_with(|| PhiAccrualDetector::new(config, now))
                .heartbeat(now);
        }
    }

    /// `id` answered a call that is not gossip (a replica call): it is not suspected any
    /// more, and it counts as a heartbeat at most every half gossip interval.
    pub fn answered(&mut self, id: &str, now: Duration) {
        if id == self.me {
            return;
        }
        self.refused.remove(id);
        let config = &self.config;
        let min_gap = Duration::from_millis(config.gossip_interval_ms / 2);
        self.detectors
            .entry(id.to_owned())
            .or_insert_with(|| PhiAccrualDetector::new(config, now))
            .heartbeat_at_most_every(now, min_gap);
    }

    /// Starts a round at `now`: bumps this node's heartbeat and picks whom to gossip with.
    /// Returns the peer's address and the request, or `None` with nobody to talk to.
    pub fn tick(&mut self, now: Duration) -> Option<(String, GossipRequest)> {
        self.rounds += 1;
        if let Some(me) = self.state.entry_mut(&self.me) {
            me.heartbeat += 1;
        }
        if self.claimant(now).as_deref() == Some(self.me.as_str()) {
            self.claim();
        }
        self.follow_topology();
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
                topology: self.state.topology_id(),
            },
        ))
    }

    /// Handles a request from a peer.
    pub fn handle(&mut self, request: GossipRequest, now: Duration) -> GossipResponse {
        match request {
            GossipRequest::Syn {
                from,
                digest,
                topology,
            } => {
                self.heard_from(&from, now);
                GossipResponse::Ack {
                    from: self.me.clone(),
                    state: self.state.newer_than(&digest, topology),
                    digest: self.state.digest(),
                    topology: self.state.topology_id(),
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
            topology,
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
            state: self.state.newer_than(&digest, topology),
        })
    }

    /// Merges gossiped entries: newer heartbeats are signs of life, and a newer version
    /// of this node's own entry is refuted by a higher incarnation — unless it says the
    /// node was removed, which it accepts.
    fn absorb(&mut self, incoming: &ClusterState, now: Duration) {
        let topology_before = self.state.topology_id();
        // Refute a newer copy of our own entry. Our entry then outranks it, so the merge
        // below keeps ours.
        if let (Some(theirs), Some(me)) = (incoming.get(&self.me), self.state.entry_mut(&self.me)) {
            if theirs > me && theirs.status != NodeStatus::Left {
                me.incarnation = theirs.incarnation + 1;
                self.changed = true;
            }
        }
        for id in self.state.merge(incoming) {
            self.changed = true;
            self.heard_from(&id, now);
        }
        if self.state.topology_id() != topology_before {
            self.changed = true;
            self.follow_topology();
        }
    }

    /// Changes this node's own entry (raising its incarnation, so the change spreads).
    fn update_own(&mut self, change: impl FnOnce(&mut NodeState)) {
        if let Some(me) = self.state.entry_mut(&self.me) {
            change(me);
            me.incarnation += 1;
            self.changed = true;
        }
    }

    /// Moves this node's status along the topology: `joining` to `up` once the current
    /// ring includes it, `leaving` to `left` once it excludes it and nothing is pending.
    fn follow_topology(&mut self) {
        let Some(topology) = self.state.topology() else {
            return;
        };
        let in_current = topology.current.index_of(&self.me).is_some();
        let settled = topology.pending.is_none();
        match self.own_status() {
            NodeStatus::Joining if in_current => self.update_own(|me| me.status = NodeStatus::Up),
            NodeStatus::Leaving if !in_current && settled => {
                self.update_own(|me| me.status = NodeStatus::Left);
            }
            _ => {}
        }
    }

    /// The claimant as this node sees it: the smallest id among the members that are up
    /// and not convicted by this node's failure detector.
    pub fn claimant(&self, now: Duration) -> Option<String> {
        self.state
            .iter()
            .find(|(id, e)| e.status == NodeStatus::Up && !self.is_down(id, now))
            .map(|(id, _)| id.clone())
    }

    /// The claimant's step: publishes what [`next_topology`](Self::next_topology) says.
    fn claim(&mut self) {
        let Some(published) = self.next_topology() else {
            return;
        };
        tracing::info!(
            epoch = published.epoch,
            ring = published.current.version(),
            pending = published.pending.as_ref().map(Ring::version),
            members = published
                .pending
                .as_ref()
                .unwrap_or(&published.current)
                .members()
                .len(),
            "claimant published the ring"
        );
        self.state.set_topology(Some(published));
        self.changed = true;
        self.follow_topology();
    }

    /// What the claimant publishes next, if anything: the first ring, a transition, its
    /// completion or a re-plan (see the module docs).
    fn next_topology(&self) -> Option<Topology> {
        let desired = self.state.desired_members();
        if desired.is_empty() {
            return None;
        }
        let (n, q) = (self.params.replicas, self.params.partitions);
        let Some(topology) = self.state.topology() else {
            let current = Ring::build(desired, n, q, 1)
                .inspect_err(|error| tracing::warn!(%error, "cannot build the first ring"))
                .ok()?;
            return Some(Topology {
                epoch: 1,
                current,
                pending: None,
            });
        };
        let epoch = topology.epoch + 1;
        let settled = |current| Topology {
            epoch,
            current,
            pending: None,
        };
        let moving = |pending| Topology {
            epoch,
            current: topology.current.clone(),
            pending: Some(pending),
        };
        let next = |desired| {
            topology
                .current
                .next(desired, n, epoch)
                .inspect_err(|error| tracing::warn!(%error, "cannot compute the next ring"))
                .ok()
        };
        match &topology.pending {
            Some(pending) if self.pending_is_stale(pending) => next(desired).map(moving),
            Some(pending)
                if self
                    .transition_progress()
                    .is_some_and(|(_, moves, moved)| moved == moves) =>
            {
                Some(settled(pending.clone()))
            }
            Some(_) => None,
            None if topology.current.members() == desired.as_slice() => None,
            None => {
                let next = next(desired)?;
                // Nothing to hand off (a weight change that moves nothing, a member
                // leaving whose replicas stay): switch at once.
                Some(if topology.current.diff(&next).moves.is_empty() {
                    settled(next)
                } else {
                    moving(next)
                })
            }
        }
    }

    /// Whether a pending ring names a member that is gone (left or removed since it was
    /// planned): it can never complete, so the claimant plans again from the current ring.
    fn pending_is_stale(&self, pending: &Ring) -> bool {
        pending.members().iter().any(|m| {
            self.state
                .get(&m.id)
                .is_none_or(|e| e.status == NodeStatus::Left)
        })
    }

    /// The transition in progress: the pending ring's id, the partition replicas that
    /// change owner, and how many of them their receiver has synced.
    pub fn transition_progress(&self) -> Option<(RingId, usize, usize)> {
        let topology = self.state.topology()?;
        let pending = topology.pending.as_ref()?;
        let id = RingId::of(pending);
        let moves = topology.current.diff(pending).moves;
        let moved = moves
            .iter()
            .filter(|m| self.state.get(&m.to).is_some_and(|e| e.synced == id))
            .count();
        Some((id, moves.len(), moved))
    }

    /// Records that this node received every partition it gains in `ring` (ownership
    /// handoff done), so that the claimant can complete the transition.
    pub fn mark_synced(&mut self, ring: RingId) {
        if self.state.get(&self.me).is_some_and(|e| e.synced != ring) {
            self.update_own(|me| me.synced = ring);
        }
    }

    /// Asks to leave: this node becomes `leaving`; the claimant's next ring excludes it.
    ///
    /// # Errors
    ///
    /// When the node already left, or is the last member.
    pub fn leave(&mut self) -> Result<(), String> {
        match self.own_status() {
            NodeStatus::Leaving => Ok(()),
            NodeStatus::Left => Err(format!("node {} already left the cluster", self.me)),
            NodeStatus::Joining | NodeStatus::Up => {
                // This node is one of the desired members: it needs another.
                if self.state.desired_members().len() < 2 {
                    return Err(format!(
                        "node {} is the last member: there is nobody to hand its data to",
                        self.me
                    ));
                }
                self.update_own(|me| me.status = NodeStatus::Leaving);
                self.follow_topology();
                Ok(())
            }
        }
    }

    /// Removes member `id`, dead for good: marks it `left` on its behalf, so the
    /// claimant's next ring excludes it and its replicas are rebuilt from the survivors.
    ///
    /// # Errors
    ///
    /// An unknown id, this node itself (use [`leave`](Self::leave)), or a member that
    /// already left.
    pub fn remove(&mut self, id: &str) -> Result<(), String> {
        if id == self.me {
            return Err(format!(
                "node {id} cannot remove itself; ask it to leave instead"
            ));
        }
        let Some(entry) = self.state.entry_mut(id) else {
            return Err(format!("no member has the id {id:?}"));
        };
        if entry.status == NodeStatus::Left {
            return Err(format!("member {id} already left the cluster"));
        }
        entry.status = NodeStatus::Left;
        entry.incarnation += 1;
        self.changed = true;
        Ok(())
    }

    /// Makes a node that is alone in its cluster join the cluster of `seed`: it forgets
    /// its own ring and enters as `joining`.
    ///
    /// # Errors
    ///
    /// When the node already knows other members.
    pub fn join(&mut self, seed: String) -> Result<(), String> {
        let others = self.state.len().saturating_sub(1);
        if others > 0 {
            return Err(format!(
                "node {} is already a member of a cluster of {} nodes",
                self.me,
                others + 1
            ));
        }
        self.state.set_topology(None);
        self.update_own(|me| {
            me.status = NodeStatus::Joining;
            me.synced = RingId::default();
        });
        self.seeds = vec![seed.clone()];
        self.unmet_seeds = vec![seed];
        Ok(())
    }
}
