//! Gossip over a simulated network: convergence in O(log n) rounds, with and without
//! message loss, failure detection, merge laws. Time is simulated (rounds of
//! `gossip_interval_ms`), never read from a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use dotkv_membership::{
    ClusterState, GossipRequest, Gossiper, MembershipConfig, NodeState, NodeStatus, RingParams,
};
use proptest::prelude::*;

const PARAMS: RingParams = RingParams {
    replicas: 3,
    partitions: 64,
};

fn entry(i: usize) -> NodeState {
    NodeState {
        incarnation: 1,
        heartbeat: 0,
        addr: format!("addr-{i}"),
        status: NodeStatus::Up,
        weight: 1,
        zone: "z".into(),
        synced: Default::default(),
    }
}

/// A simulated cluster: nodes by address, a deterministic loss generator.
struct Sim {
    nodes: BTreeMap<String, Gossiper>,
    /// Nodes that neither send nor answer (SIGSTOP-like).
    paused: Vec<String>,
    loss_percent: u64,
    rng: u64,
    now: Duration,
    interval: Duration,
}

impl Sim {
    /// `n` nodes, each but the first seeded with one node started before it, chosen at
    /// random (so that the seeds connect the cluster, as an operator's would).
    fn new(n: usize, loss_percent: u64, seed: u64) -> Self {
        let config = MembershipConfig::default();
        let interval = Duration::from_millis(config.gossip_interval_ms);
        let mut sim = Self {
            nodes: BTreeMap::new(),
            paused: Vec::new(),
            loss_percent,
            rng: seed,
            now: Duration::ZERO,
            interval,
        };
        for i in 0..n {
            let seeds = if i > 0 {
                vec![format!("addr-{}", sim.random(i as u64))]
            } else {
                vec![]
            };
            let g = Gossiper::new(
                format!("n{i}"),
                entry(i),
                None,
                seeds,
                config.clone(),
                PARAMS,
                Duration::ZERO,
            );
            sim.nodes.insert(format!("addr-{i}"), g);
        }
        sim
    }

    fn random(&mut self, below: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below
    }

    fn lost(&mut self) -> bool {
        self.random(100) < self.loss_percent
    }

    /// One gossip round: every running node opens one exchange.
    fn round(&mut self) {
        self.now += self.interval;
        let now = self.now;
        let addrs: Vec<String> = self.nodes.keys().cloned().collect();
        for addr in addrs {
            if self.paused.contains(&addr) {
                continue;
            }
            let Some((to, syn)) = self.nodes.get_mut(&addr).unwrap().tick(now) else {
                continue;
            };
            if self.paused.contains(&to) || self.lost() {
                continue;
            }
            let Some(peer) = self.nodes.get_mut(&to) else {
                continue;
            };
            let ack = peer.handle(syn, now);
            if self.lost() {
                continue;
            }
            let Some(ack2) = self.nodes.get_mut(&addr).unwrap().handle_ack(ack, now) else {
                continue;
            };
            if self.lost() {
                continue;
            }
            assert!(matches!(ack2, GossipRequest::Ack2 { .. }));
            self.nodes.get_mut(&to).unwrap().handle(ack2, now);
        }
    }

    fn converged(&self) -> bool {
        let n = self.nodes.len();
        self.nodes.values().all(|g| g.state().len() == n)
    }

    /// Rounds until every node knows every node, at most `limit`.
    fn rounds_to_converge(&mut self, limit: usize) -> Option<usize> {
        for round in 1..=limit {
            self.round();
            if self.converged() {
                return Some(round);
            }
        }
        None
    }
}

fn bound(n: usize) -> usize {
    3 * (n as f64).log2().ceil() as usize + 5
}

#[test]
fn sixty_four_nodes_converge_in_logarithmic_rounds() {
    for seed in [1, 2, 3] {
        let mut sim = Sim::new(64, 0, seed);
        let rounds = sim.rounds_to_converge(200).expect("converges");
        assert!(
            rounds <= bound(64),
            "seed {seed}: {rounds} rounds > {}",
            bound(64)
        );
        // Everyone computes the same ring.
        let digests: Vec<u64> = sim
            .nodes
            .values()
            .map(|g| g.ring().unwrap().digest())
            .collect();
        assert!(digests.windows(2).all(|w| w[0] == w[1]));
    }
}

#[test]
fn convergence_survives_ten_percent_message_loss() {
    for seed in [4, 5, 6] {
        let mut sim = Sim::new(64, 10, seed);
        let rounds = sim.rounds_to_converge(200).expect("converges despite loss");
        assert!(
            rounds <= bound(64),
            "seed {seed}: {rounds} rounds > {}",
            bound(64)
        );
    }
}

/// Prints the rounds for the note: `cargo test -p dotkv-membership --test convergence
/// -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn measure_convergence_rounds() {
    for n in [16, 64, 256] {
        for loss in [0, 10] {
            let rounds: Vec<usize> = (1..=5)
                .map(|seed| Sim::new(n, loss, seed).rounds_to_converge(500).unwrap())
                .collect();
            println!("n={n} loss={loss}% rounds={rounds:?} bound={}", bound(n));
        }
    }
}

#[test]
fn a_paused_node_is_convicted_and_back_up_after_it_resumes() {
    let mut sim = Sim::new(8, 0, 9);
    sim.rounds_to_converge(100).expect("converges");
    for _ in 0..10 {
        sim.round();
    }
    let victim = "addr-3".to_string();
    sim.paused.push(victim.clone());
    let mut convicted_after = None;
    for round in 1..=200 {
        sim.round();
        let now = sim.now;
        let others_see_down = sim
            .nodes
            .iter()
            .filter(|(a, _)| **a != victim)
            .all(|(_, g)| g.is_down("n3", now));
        if others_see_down {
            convicted_after = Some(round);
            break;
        }
    }
    let rounds = convicted_after.expect("every other node convicts the paused node");
    assert!(rounds > 2, "convicted after only {rounds} rounds");
    println!(
        "convicted by every other node after {rounds} rounds of {:?}",
        sim.interval
    );
    sim.paused.clear();
    let mut recovered = false;
    for _ in 0..40 {
        sim.round();
        let now = sim.now;
        if sim.nodes.values().all(|g| !g.is_down("n3", now)) {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the resumed node is up again everywhere");
}

#[test]
fn a_restarted_node_keeps_its_view_and_wins_with_a_new_incarnation() {
    let mut sim = Sim::new(4, 0, 11);
    sim.rounds_to_converge(100).expect("converges");
    let old = sim.nodes.remove("addr-2").unwrap();
    let persisted = old.state().clone();
    // Restart without seeds: the persisted view is enough.
    let restarted = Gossiper::new(
        "n2",
        entry(2),
        Some(persisted),
        vec![],
        MembershipConfig::default(),
        PARAMS,
        sim.now,
    );
    assert_eq!(restarted.state().len(), 4);
    assert_eq!(restarted.state().get("n2").unwrap().incarnation, 2);
    sim.nodes.insert("addr-2".into(), restarted);
    for _ in 0..20 {
        sim.round();
    }
    assert!(
        sim.nodes
            .values()
            .all(|g| g.state().get("n2").unwrap().incarnation >= 2)
    );
}

/// An entry whose content follows from its version, as it does in a cluster where only
/// the node writes its entry and bumps the incarnation on every change.
fn arb_entry() -> impl Strategy<Value = NodeState> {
    (0u64..4, 0u64..4).prop_map(|(incarnation, heartbeat)| NodeState {
        incarnation,
        heartbeat,
        addr: format!("a{}", incarnation % 3),
        status: if incarnation % 2 == 0 {
            NodeStatus::Up
        } else {
            NodeStatus::Leaving
        },
        weight: 1 + (incarnation % 2) as u32,
        zone: "z".into(),
        synced: Default::default(),
    })
}

fn arb_updates() -> impl Strategy<Value = Vec<(String, NodeState)>> {
    proptest::collection::vec(((0..4).prop_map(|i| format!("n{i}")), arb_entry()), 0..20)
}

fn state_of(updates: &[(String, NodeState)]) -> ClusterState {
    let mut state = ClusterState::new();
    for (id, entry) in updates {
        state.merge_entry(id, entry.clone());
    }
    state
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_idempotent(a in arb_updates(), b in arb_updates(), c in arb_updates()) {
        let (a, b, c) = (state_of(&a), state_of(&b), state_of(&c));
        let merged = |x: &ClusterState, y: &ClusterState| { let mut m = x.clone(); m.merge(y); m };
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
    }

    #[test]
    fn any_delivery_order_converges(updates in arb_updates(), seed in any::<u64>()) {
        let mut shuffled = updates.clone();
        let len = shuffled.len();
        for i in (1..len).rev() {
            shuffled.swap(i, (seed.rotate_left(i as u32) % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(state_of(&updates), state_of(&shuffled));
        // Delivering through digests and deltas gives the same as direct merges.
        let full = state_of(&updates);
        let mut partial = state_of(&updates[..len / 2]);
        let delta = full.newer_than(&partial.digest(), partial.topology_id());
        partial.merge(&delta);
        prop_assert_eq!(partial, full);
    }
}

#[test]
fn a_node_that_lost_its_view_refutes_its_stale_entry() {
    let mut sim = Sim::new(4, 0, 13);
    sim.rounds_to_converge(100).expect("converges");
    for _ in 0..20 {
        sim.round();
    }
    // n2 comes back with an empty data dir: incarnation 1, heartbeat 0, while the others
    // hold its old entry with a higher heartbeat.
    sim.nodes.remove("addr-2");
    let fresh = Gossiper::new(
        "n2",
        entry(2),
        None,
        vec!["addr-0".into()],
        MembershipConfig::default(),
        PARAMS,
        sim.now,
    );
    sim.nodes.insert("addr-2".into(), fresh);
    for _ in 0..20 {
        sim.round();
    }
    let own = sim.nodes["addr-2"].state().get("n2").unwrap().incarnation;
    assert!(
        own >= 2,
        "n2 did not raise its incarnation past the stale entry"
    );
    assert!(
        sim.nodes
            .values()
            .all(|g| g.state().get("n2").unwrap().incarnation == own)
    );
}

/// Five nodes, the first founding the cluster (`up`), the others joining through seeds.
/// Handoff is simulated as instant: a node that gains partitions in a pending ring marks
/// it synced on its next round.
fn joining_sim(seed: u64) -> Sim {
    let mut sim = Sim::new(5, 0, seed);
    for (addr, g) in std::mem::take(&mut sim.nodes) {
        let i: usize = addr.trim_start_matches("addr-").parse().unwrap();
        let mut own = entry(i);
        if i > 0 {
            own.status = NodeStatus::Joining;
        }
        let seeds = if i > 0 { vec!["addr-0".into()] } else { vec![] };
        let fresh = Gossiper::new(
            g.id().to_owned(),
            own,
            None,
            seeds,
            MembershipConfig::default(),
            PARAMS,
            sim.now,
        );
        sim.nodes.insert(addr, fresh);
    }
    sim
}

/// A round of [`Sim::round`] plus the instant handoff of every node gaining partitions.
fn round_with_handoff(sim: &mut Sim) {
    sim.round();
    for g in sim.nodes.values_mut() {
        let Some(topology) = g.topology() else {
            continue;
        };
        if let Some(pending) = &topology.pending {
            let id = dotkv_membership::RingId::of(pending);
            g.mark_synced(id);
        }
    }
}

fn settled(sim: &Sim, members: usize) -> bool {
    let ids: Vec<_> = sim
        .nodes
        .values()
        .map(|g| g.state().topology_id())
        .collect();
    sim.nodes.values().all(|g| {
        g.topology()
            .is_some_and(|t| t.pending.is_none() && t.current.members().len() == members)
    }) && ids.windows(2).all(|w| w[0] == w[1])
}

#[test]
fn the_claimant_brings_joining_nodes_in_and_lets_a_leaving_one_go() {
    let mut sim = joining_sim(5);
    for _ in 0..300 {
        round_with_handoff(&mut sim);
        if settled(&sim, 5) && sim.nodes.values().all(|g| g.own_status() == NodeStatus::Up) {
            break;
        }
    }
    assert!(
        settled(&sim, 5),
        "the ring did not settle on the five members"
    );
    assert!(sim.nodes.values().all(|g| g.own_status() == NodeStatus::Up));
    // Only the claimant computes rings: every node holds the one topology it published.
    let claimant = sim.nodes["addr-0"].claimant(sim.now);
    assert_eq!(claimant.as_deref(), Some("n0"));

    sim.nodes.get_mut("addr-3").unwrap().leave().unwrap();
    // The claimant itself leaves too: the next smallest id that is up takes over.
    sim.nodes.get_mut("addr-0").unwrap().leave().unwrap();
    for _ in 0..300 {
        round_with_handoff(&mut sim);
        if settled(&sim, 3) && sim.nodes["addr-3"].own_status() == NodeStatus::Left {
            break;
        }
    }
    assert!(
        settled(&sim, 3),
        "the ring did not settle without the leavers"
    );
    assert_eq!(sim.nodes["addr-3"].own_status(), NodeStatus::Left);
    assert_eq!(sim.nodes["addr-0"].own_status(), NodeStatus::Left);
    let ring = sim.nodes["addr-1"].ring().unwrap();
    assert!(ring.index_of("n3").is_none() && ring.index_of("n0").is_none());
    assert_eq!(sim.nodes["addr-1"].claimant(sim.now).as_deref(), Some("n1"));
}

#[test]
fn the_last_member_cannot_leave() {
    let mut lone = Gossiper::new(
        "n0",
        entry(0),
        None,
        vec![],
        MembershipConfig::default(),
        PARAMS,
        Duration::ZERO,
    );
    lone.tick(Duration::ZERO);
    let error = lone.leave().unwrap_err();
    assert!(error.contains("last member"), "{error}");
    assert_eq!(lone.own_status(), NodeStatus::Up);
}

#[test]
fn a_transition_waits_for_every_receiver_to_sync() {
    let mut sim = joining_sim(7);
    // Without handoff, nobody syncs: the joiners stay out of the current ring.
    for _ in 0..100 {
        sim.round();
    }
    let topology = sim.nodes["addr-0"].topology().unwrap();
    assert_eq!(topology.current.members().len(), 1);
    assert!(topology.pending.is_some());
    assert!(
        sim.nodes
            .iter()
            .filter(|(a, _)| *a != "addr-0")
            .all(|(_, g)| g.own_status() == NodeStatus::Joining)
    );
}

#[test]
fn a_removed_member_is_left_everywhere_and_accepts_it_when_it_returns() {
    let mut sim = joining_sim(9);
    for _ in 0..300 {
        round_with_handoff(&mut sim);
        if settled(&sim, 5) {
            break;
        }
    }
    let removed = sim.nodes.remove("addr-4").unwrap();
    sim.nodes.get_mut("addr-1").unwrap().remove("n4").unwrap();
    assert!(
        sim.nodes.get_mut("addr-1").unwrap().remove("n1").is_err(),
        "self-removal is refused"
    );
    assert!(
        sim.nodes
            .get_mut("addr-1")
            .unwrap()
            .remove("nobody")
            .is_err()
    );
    for _ in 0..300 {
        round_with_handoff(&mut sim);
        if settled(&sim, 4) {
            break;
        }
    }
    assert!(settled(&sim, 4));
    // n4 comes back with its old view: it learns it was removed instead of refuting it.
    let mut back = Gossiper::new(
        "n4",
        entry(4),
        Some(removed.state().clone()),
        vec![],
        MembershipConfig::default(),
        PARAMS,
        sim.now,
    );
    let peer = sim.nodes.get_mut("addr-0").unwrap();
    let syn = back.tick(sim.now).unwrap().1;
    let ack = peer.handle(syn, sim.now);
    back.handle_ack(ack, sim.now);
    assert_eq!(back.own_status(), NodeStatus::Left);
}

#[test]
fn a_refused_connection_is_down_until_the_peer_is_heard_from() {
    let mut sim = Sim::new(3, 0, 21);
    sim.rounds_to_converge(100).expect("converges");
    let now = sim.now;
    let g = sim.nodes.get_mut("addr-0").unwrap();
    assert!(!g.is_down("n1", now));
    g.refused("n1");
    assert!(
        g.is_down("n1", now),
        "a refused connection convicts at once"
    );
    g.answered("n1", now);
    assert!(!g.is_down("n1", now), "an answer clears it");
    g.refused("n0");
    assert!(!g.is_down("n0", now), "a node never suspects itself");
}
