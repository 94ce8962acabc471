//! Settling an assignment, and the successor of a ring: the fewest moves that take it to a
//! balanced ring of new members.
//!
//! [`Ring::build`] is a pure function of the members, and a pure function cannot know which
//! replicas a node held before: re-solving the balance for new members moves replicas
//! between old nodes too (see the crate docs for how much). [`Ring::next`] starts from the
//! previous assignment instead, as Riak's claim and Swift's ring builder do, and changes
//! only what the new members force. Both end in [`settle`]:
//!
//! 1. **Keep** the given owners (for `next`, every replica whose node is still a member
//!    and still fits the zone rule).
//! 2. **Fill** the holes that departed nodes (or a larger `N`) left, each with the eligible
//!    node furthest below its target; the holes that few such nodes can fill go first.
//! 3. **Rebalance**: while a node is outside its balance bound, move one replica from the
//!    node furthest above its target to the node furthest below (through a chain of
//!    nodes when the zone rule forbids a direct move); then, while two nodes' excesses
//!    differ by more than a spread, the same. Within a pair, the partition whose move
//!    restores or spares a kept replica is taken first, then the one the receiver's
//!    rendezvous score likes best.
//! 4. **Shorten**: where a node took one replica and gave away a kept one, let the node it
//!    gave to take the first instead, so it keeps its own (same loads, one move fewer).
//!
//! Excesses are measured in units of a node's balance slack, `max(1, 5% of target)`, so the
//! spread means the same for a node with 3 replicas and one with 3000. A join therefore
//! moves about the joiner's share (step 3 feeds it from the nodes furthest above their new
//! targets) and a leave about the leaver's replicas (step 2).

use std::collections::HashMap;

use crate::assign::{Zones, bounds, targets};
use crate::hash::{member_seed, score};
use crate::{Member, NodeIndex, Ring};

/// A slot of a preference list not yet filled.
const HOLE: usize = usize::MAX;

/// How far apart (in units of their balance slack) two nodes' loads may stay when
/// [`Ring::build`] settles a fresh assignment: 1, as centred as integers allow.
pub(crate) const BUILD_SPREAD: f64 = 1.0;

/// The same for [`Ring::next`]: 1.5, so that the small shift a join or leave gives every
/// target does not, by itself, move replicas between old nodes (hysteresis). With 1.0,
/// about 1% of random joins and leaves moved more than 1.3 × their share; with 1.5 none of
/// 2000 joins did (measured with `--example movement` when this was chosen).
const NEXT_SPREAD: f64 = 1.5;

/// The possible moves of a pair, best last (partition, slot), with the `gained` and `lost`
/// counts they were listed at.
type PairMoves = (u64, u64, Vec<(usize, usize)>);

/// The assignment being changed: `partitions × r` slots, loads, targets and bounds.
struct Plan<'a> {
    r: usize,
    zones: &'a Zones,
    seeds: Vec<u64>,
    slots: Vec<usize>,
    /// The slots as kept from the previous assignment: a move that puts a replica back
    /// where it was costs nothing, one that takes a kept replica away costs one.
    kept: Vec<usize>,
    loads: Vec<usize>,
    /// For a pair (giver, receiver), its possible moves, best last, listed when the giver
    /// had gained `gained[giver]` replicas and `lost[lost_key(receiver)]` had its value:
    /// until either changes no move for the pair can appear, so the list serves (skipping
    /// moves that other moves made invalid) instead of a scan of every partition per move.
    pair_moves: HashMap<(usize, usize), PairMoves>,
    gained: Vec<u64>,
    /// Replicas lost by each zone (under the zone rule) or each node (otherwise): what may
    /// let a receiver into partitions it could not enter.
    lost: Vec<u64>,
    targets: Vec<f64>,
    low: Vec<usize>,
    high: Vec<usize>,
}

impl Plan<'_> {
    fn partitions(&self) -> usize {
        self.slots.len() / self.r
    }

    fn list(&self, p: usize) -> &[usize] {
        &self.slots[p * self.r..(p + 1) * self.r]
    }

    /// How far `node` is above its target (negative: below), in units of its balance
    /// slack `max(1, 5% of target)`: the bounds are at ±1.
    fn excess(&self, node: usize) -> f64 {
        let target = self.targets[node];
        (self.loads[node] as f64 - target) / (0.05 * target).max(1.0)
    }

    /// Whether `node` may take the place of `leaving` (a node or a hole) in partition `p`:
    /// it is not there yet, and under the zone rule no other owner shares its zone.
    fn may_replace(&self, p: usize, leaving: usize, node: usize) -> bool {
        let list = self.list(p);
        let zone_taken = self.zones.rule
            && list
                .iter()
                .any(|&x| x != leaving && x != HOLE && self.zones.of[x] == self.zones.of[node]);
        !list.contains(&node) && !zone_taken
    }

    fn set(&mut self, p: usize, slot: usize, node: usize) {
        let old = std::mem::replace(&mut self.slots[p * self.r + slot], node);
        if old != HOLE {
            self.loads[old] -= 1;
            // A zone-mate taking the place keeps the zone in the partition.
            if !(self.zones.rule && self.zones.of[old] == self.zones.of[node]) {
                let key = self.lost_key(old);
                self.lost[key] += 1;
            }
        }
        self.loads[node] += 1;
        self.gained[node] += 1;
    }

    /// The nodes that may fill a hole of partition `p`.
    fn fillers(&self, p: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.loads.len()).filter(move |&node| self.may_replace(p, HOLE, node))
    }

    /// Fills every hole with the eligible node furthest below its target (ties: the higher
    /// rendezvous score, then the lower index).
    fn fill_holes(&mut self) {
        // The holes that few nodes below target can fill go first, so the nodes that
        // only they can feed are not filled up elsewhere beforehand.
        let mut holes: Vec<(usize, usize, usize)> = (0..self.slots.len())
            .filter(|&i| self.slots[i] == HOLE)
            .map(|i| {
                let p = i / self.r;
                let choices = self.fillers(p).filter(|&x| self.excess(x) < 0.0).count();
                (choices, p, i % self.r)
            })
            .collect();
        holes.sort_unstable();
        for (_, p, slot) in holes {
            let best = self
                .fillers(p)
                .min_by(|&a, &b| {
                    let full = |x: usize| self.loads[x] >= self.high[x];
                    full(a)
                        .cmp(&full(b))
                        .then(self.excess(a).total_cmp(&self.excess(b)))
                        .then(score(self.seeds[b], p as u32).cmp(&score(self.seeds[a], p as u32)))
                        .then(a.cmp(&b))
                })
                .expect("a partition with a hole has an eligible node");
            self.set(p, slot, best);
        }
    }

    /// What moving `giver`'s replica of `p` to `receiver` adds to the replicas that differ
    /// from the previous assignment: 1 for a kept replica, 0 for one placed in this
    /// transition, −1 when it returns to a node that held it.
    fn move_cost(&self, p: usize, giver: usize, receiver: usize) -> i32 {
        let kept = &self.kept[p * self.r..(p + 1) * self.r];
        i32::from(kept.contains(&giver)) - i32::from(kept.contains(&receiver))
    }

    /// Moves one replica from one of `givers` to one of `receivers`, trying givers (or, when
    /// `by_receiver`, receivers) in the order given; within a pair, the partition whose move
    /// costs least (see [`move_cost`](Self::move_cost)), then where the receiver's
    /// rendezvous score is highest. Returns false when no move is possible.
    fn move_one(
        &mut self,
        givers: &[usize],
        receivers: &[usize],
        by_receiver: bool,
        worth_it: impl Fn(&Self, usize, usize) -> bool,
    ) -> bool {
        let pairs: Vec<(usize, usize)> = if by_receiver {
            receivers
                .iter()
                .flat_map(|&u| givers.iter().map(move |&g| (g, u)))
                .collect()
        } else {
            givers
                .iter()
                .flat_map(|&g| receivers.iter().map(move |&u| (g, u)))
                .collect()
        };
        for (giver, receiver) in pairs {
            if giver == receiver || !worth_it(self, giver, receiver) {
                continue;
            }
            let marks = (self.gained[giver], self.lost[self.lost_key(receiver)]);
            let listed = self
                .pair_moves
                .get(&(giver, receiver))
                .is_some_and(|(g, z, _)| (*g, *z) == marks);
            if !listed {
                let moves = self.possible_moves(giver, receiver);
                self.pair_moves
                    .insert((giver, receiver), (marks.0, marks.1, moves));
            }
            let Some((_, _, moves)) = self.pair_moves.get_mut(&(giver, receiver)) else {
                continue;
            };
            let mut moves = std::mem::take(moves);
            let mut chosen = None;
            while let Some((p, slot)) = moves.pop() {
                if self.slots[p * self.r + slot] == giver && self.may_replace(p, giver, receiver) {
                    chosen = Some((p, slot));
                    break;
                }
            }
            if let Some((p, slot)) = chosen {
                self.set(p, slot, receiver);
                // The giver only lost a replica: no move for this pair appeared.
                let marks = (self.gained[giver], self.lost[self.lost_key(receiver)]);
                self.pair_moves
                    .insert((giver, receiver), (marks.0, marks.1, moves));
                return true;
            }
        }
        false
    }

    /// Which `lost` counter governs where `node` may enter: its zone's under the zone rule
    /// (a zone-mate leaving a partition lets it in), else its own.
    fn lost_key(&self, node: usize) -> usize {
        if self.zones.rule {
            self.zones.of[node]
        } else {
            node
        }
    }

    /// Every move from `giver` to `receiver`, best last: cheapest first (see
    /// [`move_cost`](Self::move_cost)), then the receiver's highest rendezvous score.
    fn possible_moves(&self, giver: usize, receiver: usize) -> Vec<(usize, usize)> {
        let mut moves: Vec<_> = (0..self.partitions())
            .filter_map(|p| {
                let slot = self.list(p).iter().position(|&x| x == giver)?;
                self.may_replace(p, giver, receiver).then(|| {
                    (
                        std::cmp::Reverse(self.move_cost(p, giver, receiver)),
                        score(self.seeds[receiver], p as u32),
                        p,
                        slot,
                    )
                })
            })
            .collect();
        moves.sort_unstable();
        moves.into_iter().map(|(_, _, p, slot)| (p, slot)).collect()
    }

    /// Step 4: undoes detours. Where node `a` took a replica at one slot and lost its kept
    /// replica at another slot to `b`, `b` can often take the first slot instead and `a`
    /// keep its replica: the loads stay, one move fewer (two if `b` held the first slot).
    fn shorten(&mut self) {
        let nodes = self.loads.len();
        loop {
            let mut lost_at: Vec<Vec<usize>> = vec![Vec::new(); nodes];
            for (i, (&kept, &now)) in self.kept.iter().zip(&self.slots).enumerate() {
                if kept != HOLE && now != kept {
                    lost_at[kept].push(i);
                }
            }
            let mut shortened = false;
            for gained in 0..self.slots.len() {
                let a = self.slots[gained];
                if a == self.kept[gained] {
                    continue;
                }
                let (p1, s1) = (gained / self.r, gained % self.r);
                for &lost in &lost_at[a] {
                    let (p2, s2) = (lost / self.r, lost % self.r);
                    let b = self.slots[lost];
                    if p1 == p2 || b == a || !self.may_replace(p1, a, b) {
                        continue;
                    }
                    self.set(p1, s1, b);
                    if self.may_replace(p2, b, a) {
                        self.set(p2, s2, a);
                        shortened = true;
                        break;
                    }
                    self.set(p1, s1, a);
                }
            }
            if !shortened {
                return;
            }
        }
    }

    /// Moves one replica along the shortest chain `source → x₁ → … → sink`, each hop on a
    /// different partition, for when no single move can (under the zone rule, a node may
    /// only take a partition whose other owners are in other zones). The nodes in between
    /// give one replica and take one, so only the ends change load.
    fn move_along_chain(
        &mut self,
        sources: &[usize],
        is_sink: impl Fn(&Self, usize) -> bool,
    ) -> bool {
        let nodes = self.loads.len();
        // reached[b] = (a, p, slot): b is reached by taking `a`'s replica at `slot` of `p`.
        let mut reached: Vec<Option<(usize, usize, usize)>> = vec![None; nodes];
        let mut seen = vec![false; nodes];
        let mut queue = std::collections::VecDeque::new();
        for &source in sources {
            seen[source] = true;
            queue.push_back(source);
        }
        while let Some(a) = queue.pop_front() {
            for p in 0..self.partitions() {
                let Some(slot) = self.list(p).iter().position(|&x| x == a) else {
                    continue;
                };
                for b in 0..nodes {
                    if seen[b] || !self.may_replace(p, a, b) {
                        continue;
                    }
                    seen[b] = true;
                    reached[b] = Some((a, p, slot));
                    if !is_sink(self, b) {
                        queue.push_back(b);
                        continue;
                    }
                    let mut hops = Vec::new();
                    let mut at = b;
                    while let Some((from, p, slot)) = reached[at] {
                        hops.push((p, slot, at));
                        at = from;
                    }
                    // Each hop was checked against the current lists; two hops on one
                    // partition would interfere, so such a chain is not taken.
                    let mut partitions: Vec<usize> = hops.iter().map(|h| h.0).collect();
                    partitions.sort_unstable();
                    partitions.dedup();
                    if partitions.len() < hops.len() {
                        return false;
                    }
                    for (p, slot, to) in hops {
                        self.set(p, slot, to);
                    }
                    return true;
                }
            }
        }
        false
    }

    /// Nodes matching `keep`, furthest above target first (`descending`) or furthest below.
    fn sorted(&self, keep: impl Fn(usize) -> bool, descending: bool) -> Vec<usize> {
        let mut nodes: Vec<usize> = (0..self.loads.len()).filter(|&i| keep(i)).collect();
        nodes.sort_by(|&a, &b| {
            let order = self.excess(a).total_cmp(&self.excess(b)).then(b.cmp(&a));
            if descending { order.reverse() } else { order }
        });
        nodes
    }

    /// Step 3: every load into its bounds, then no two excesses more than `spread` apart.
    fn rebalance(&mut self, spread: f64) {
        // Each move either fixes a bound or lowers Σ (load − target)² / slack, so the loop
        // ends; the cap is only a guard.
        for _ in 0..self.slots.len() * 4 {
            let over: Vec<usize> = self.sorted(|i| self.loads[i] > self.high[i], true);
            let moved = if !over.is_empty() {
                let receivers = self.sorted(|i| self.loads[i] < self.high[i], false);
                self.move_one(&over, &receivers, false, |_, _, _| true)
                    || self.move_along_chain(&over[..1], |plan, b| plan.loads[b] < plan.high[b])
            } else {
                let under = self.sorted(|i| self.loads[i] < self.low[i], false);
                if !under.is_empty() {
                    let givers = self.sorted(|i| self.loads[i] > self.low[i], true);
                    self.move_one(&givers, &under, true, |_, _, _| true)
                        || self.move_along_chain(&givers, |_, b| b == under[0])
                } else {
                    // A move from g to u lowers Σ (load − target)² / slack whenever
                    // excess(g) − excess(u) > 1 (spread ≥ 1); a larger spread leaves alone
                    // the small imbalances a join or leave causes by shifting every target.
                    let givers = self.sorted(|_| true, true);
                    let receivers = self.sorted(|_| true, false);
                    self.move_one(&givers, &receivers, false, |plan, g, u| {
                        plan.excess(g) - plan.excess(u) > spread + 1e-9
                    })
                }
            };
            if !moved {
                return;
            }
        }
    }
}

/// The successor of `prev` for `members` (sorted by id, validated) with `replicas` owners per
/// partition: for every partition, every member index, the owners first, then the
/// fallbacks by rendezvous score.
pub(crate) fn transition(prev: &Ring, members: &[Member], replicas: usize) -> Vec<NodeIndex> {
    let survivor: Vec<Option<usize>> = prev
        .members()
        .iter()
        .map(|m| members.binary_search_by(|x| x.id.cmp(&m.id)).ok())
        .collect();
    let partitions = prev.partitions() as usize;
    let lists = (0..partitions).map(|p| {
        prev.preference_list(p as u32)
            .iter()
            .filter_map(|&old| survivor[usize::from(old)])
    });
    settle(members, replicas, partitions, lists, NEXT_SPREAD)
}

/// Completes and balances an assignment: `lists` gives, for every partition, the owners
/// to keep (in order, possibly more than `replicas` or none), then holes are filled and
/// loads rebalanced until no two nodes' excesses differ by more than `spread` (in units of
/// their balance slack).
pub(crate) fn settle<L, I>(
    members: &[Member],
    replicas: usize,
    partitions: usize,
    lists: L,
    spread: f64,
) -> Vec<NodeIndex>
where
    L: Iterator<Item = I>,
    I: Iterator<Item = usize>,
{
    let nodes = members.len();
    let zones = Zones::new(members, replicas);
    let targets = targets(members, replicas, partitions);
    let (low, high) = bounds(&targets);
    let mut plan = Plan {
        r: replicas,
        zones: &zones,
        seeds: members.iter().map(|m| member_seed(&m.id)).collect(),
        slots: vec![HOLE; partitions * replicas],
        kept: Vec::new(),
        loads: vec![0; nodes],
        pair_moves: Default::default(),
        gained: vec![0; nodes],
        lost: vec![0; nodes.max(zones.count)],
        targets,
        low,
        high,
    };
    // Step 1: keep the surviving owners, in their order.
    for (p, list) in lists.enumerate() {
        let mut slot = 0;
        for node in list {
            if slot < replicas && plan.may_replace(p, HOLE, node) {
                plan.set(p, slot, node);
                slot += 1;
            }
        }
    }
    plan.kept = plan.slots.clone();
    plan.fill_holes();
    plan.rebalance(spread);
    plan.shorten();

    let slots: Vec<NodeIndex> = plan.slots.iter().map(|&i| i as NodeIndex).collect();
    order_of(members, replicas, &slots)
}

/// The full order of every partition from its owners (`slots`, `replicas` a partition):
/// the owners first, then the other members by rendezvous score, the fallbacks of a
/// sloppy quorum. A function of the members and the owners alone, so a ring can be sent
/// as its owners and rebuilt alike everywhere.
pub(crate) fn order_of(members: &[Member], replicas: usize, slots: &[NodeIndex]) -> Vec<NodeIndex> {
    let nodes = members.len();
    let partitions = slots.len() / replicas.max(1);
    let seeds: Vec<u64> = members.iter().map(|m| member_seed(&m.id)).collect();
    let mut order = Vec::with_capacity(partitions * nodes);
    let mut rest: Vec<(i64, usize)> = Vec::with_capacity(nodes);
    for p in 0..partitions {
        let list = &slots[p * replicas..(p + 1) * replicas];
        rest.clear();
        rest.extend(
            (0..nodes)
                .filter(|&i| !list.contains(&(i as NodeIndex)))
                .map(|i| (score(seeds[i], p as u32), i)),
        );
        rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        order.extend(
            list.iter()
                .copied()
                .chain(rest.iter().map(|&(_, i)| i as NodeIndex)),
        );
    }
    order
}
