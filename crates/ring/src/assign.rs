//! The assignment: targets, load bounds, priced rendezvous selection, repair.
//!
//! See the crate docs for why. Steps:
//!
//! 1. **Targets**: each node's fair share of the `Q × r` replicas, proportional to weight,
//!    capped at `Q` (one replica per partition), by water-filling. Under the zone rule the
//!    shares are filled per zone first (a zone can hold at most `Q`), then per node inside
//!    each zone.
//! 2. **Bounds**: each node's load may be within `max(1, 5%)` of its target.
//! 3. **Prices**: each partition takes the `r` nodes with the highest
//!    `score(node, partition) + price(node)` (at most one per zone under the zone rule).
//!    Prices start at 0; each round moves the price of each node outside its bounds in
//!    proportion to how far outside it is, until every load is in bounds. Integer
//!    arithmetic throughout.
//! 4. **Repair**: should the rounds run out, move single replicas from nodes above their
//!    bounds to nodes below, on the partitions where it costs the least score.
//!
//! [`Ring::build`](crate::Ring::build) then hands the owners to `transition::settle`, which
//! centres the loads within their bounds and orders the fallbacks.

use crate::Member;
use crate::hash::{member_seed, score};

/// Price rounds before the repair pass takes over.
const MAX_ROUNDS: usize = 200;

/// The members' zones as small integers, and whether the zone rule applies (at least `r`
/// distinct zones).
pub(crate) struct Zones {
    pub(crate) of: Vec<usize>,
    pub(crate) count: usize,
    pub(crate) rule: bool,
}

impl Zones {
    pub(crate) fn new(members: &[Member], replicas: usize) -> Self {
        let mut names: Vec<&str> = members.iter().map(|m| m.zone.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let of = members
            .iter()
            .map(|m| {
                names
                    .binary_search(&m.zone.as_str())
                    .expect("every zone is listed")
            })
            .collect();
        Self {
            of,
            count: names.len(),
            rule: names.len() >= replicas && replicas > 1,
        }
    }
}

/// Shares of `total` in proportion to `weights`, none above `cap`.
fn water_fill(weights: &[f64], total: f64, cap: f64) -> Vec<f64> {
    let mut shares = vec![0.0; weights.len()];
    let mut capped = vec![false; weights.len()];
    loop {
        let free_weight: f64 = (0..weights.len())
            .filter(|&i| !capped[i])
            .map(|i| weights[i])
            .sum();
        let remaining = total - cap * capped.iter().filter(|&&c| c).count() as f64;
        if free_weight <= 0.0 {
            return shares;
        }
        let mut newly_capped = false;
        for i in 0..weights.len() {
            if capped[i] {
                continue;
            }
            shares[i] = remaining * weights[i] / free_weight;
            if shares[i] > cap {
                shares[i] = cap;
                capped[i] = true;
                newly_capped = true;
            }
        }
        if !newly_capped {
            return shares;
        }
    }
}

/// Each member's fair share of the `partitions × replicas` replicas.
pub(crate) fn targets(members: &[Member], replicas: usize, partitions: usize) -> Vec<f64> {
    let zones = Zones::new(members, replicas);
    let q = partitions as f64;
    let total = q * replicas as f64;
    let weights: Vec<f64> = members.iter().map(|m| f64::from(m.weight)).collect();
    if !zones.rule {
        return water_fill(&weights, total, q);
    }
    let mut zone_weights = vec![0.0; zones.count];
    for (i, w) in weights.iter().enumerate() {
        zone_weights[zones.of[i]] += w;
    }
    let zone_targets = water_fill(&zone_weights, total, q);
    let mut out = vec![0.0; members.len()];
    for (zone, &zone_target) in zone_targets.iter().enumerate() {
        let inside: Vec<usize> = (0..members.len())
            .filter(|&i| zones.of[i] == zone)
            .collect();
        let w: Vec<f64> = inside.iter().map(|&i| weights[i]).collect();
        for (&i, share) in inside.iter().zip(water_fill(&w, zone_target, q)) {
            out[i] = share;
        }
    }
    out
}

/// The assignment problem: scores, prices, and the current choice per partition.
struct Assignment<'a> {
    n: usize,
    r: usize,
    zones: &'a Zones,
    /// `partitions × n` rendezvous scores.
    scores: Vec<i64>,
    prices: Vec<i64>,
    /// `partitions × r` chosen nodes.
    chosen: Vec<usize>,
}

impl Assignment<'_> {
    fn adjusted(&self, partition: usize, node: usize) -> i64 {
        self.scores[partition * self.n + node].saturating_add(self.prices[node])
    }

    /// Whether `a` ranks before `b` in `partition`: higher adjusted score, then lower index.
    fn before(&self, partition: usize, a: usize, b: usize) -> bool {
        let (sa, sb) = (self.adjusted(partition, a), self.adjusted(partition, b));
        sa > sb || (sa == sb && a < b)
    }

    /// Chooses the `r` best nodes of every partition under the current prices; returns
    /// the loads.
    fn select(&mut self) -> Vec<usize> {
        let partitions = self.scores.len() / self.n;
        let mut loads = vec![0; self.n];
        // Candidates: every node, or under the zone rule the best node of each zone.
        let mut best_of_zone = vec![usize::MAX; self.zones.count];
        let mut top: Vec<usize> = Vec::with_capacity(self.r + 1);
        for p in 0..partitions {
            top.clear();
            let offer = |top: &mut Vec<usize>, node: usize, this: &Self| {
                let at = top
                    .iter()
                    .position(|&t| this.before(p, node, t))
                    .unwrap_or(top.len());
                if at < this.r {
                    top.insert(at, node);
                    top.truncate(this.r);
                }
            };
            if self.zones.rule {
                best_of_zone.fill(usize::MAX);
                for node in 0..self.n {
                    let best = &mut best_of_zone[self.zones.of[node]];
                    if *best == usize::MAX || self.before(p, node, *best) {
                        *best = node;
                    }
                }
                for &node in best_of_zone.iter().filter(|&&b| b != usize::MAX) {
                    offer(&mut top, node, self);
                }
            } else {
                for node in 0..self.n {
                    offer(&mut top, node, self);
                }
            }
            for (slot, &node) in top.iter().enumerate() {
                self.chosen[p * self.r + slot] = node;
                loads[node] += 1;
            }
        }
        loads
    }

    /// Moves single replicas, cheapest first, until every load is within `[low, high]`:
    /// from a node above its `high` to one below its `high`, or from a node above its
    /// `low` to one below its `low`.
    fn repair(&mut self, loads: &mut [usize], low: &[usize], high: &[usize]) {
        let partitions = self.scores.len() / self.n;
        loop {
            let over_high: Vec<usize> = (0..self.n).filter(|&i| loads[i] > high[i]).collect();
            let under_low: Vec<usize> = (0..self.n).filter(|&i| loads[i] < low[i]).collect();
            let (from, to): (Vec<usize>, Vec<usize>) = if !over_high.is_empty() {
                (
                    over_high,
                    (0..self.n).filter(|&i| loads[i] < high[i]).collect(),
                )
            } else if !under_low.is_empty() {
                (
                    (0..self.n).filter(|&i| loads[i] > low[i]).collect(),
                    under_low,
                )
            } else {
                return;
            };
            let mut best: Option<(i64, usize, usize, usize)> = None; // (cost, p, slot, to)
            for &from in &from {
                for &to in &to {
                    for p in 0..partitions {
                        let set = &self.chosen[p * self.r..(p + 1) * self.r];
                        let Some(slot) = set.iter().position(|&x| x == from) else {
                            continue;
                        };
                        if set.contains(&to) {
                            continue;
                        }
                        if self.zones.rule
                            && set
                                .iter()
                                .any(|&x| x != from && self.zones.of[x] == self.zones.of[to])
                        {
                            continue;
                        }
                        let cost = self.adjusted(p, from) - self.adjusted(p, to);
                        if best.is_none_or(|(c, ..)| cost < c) {
                            best = Some((cost, p, slot, to));
                        }
                    }
                }
            }
            let Some((_, p, slot, to)) = best else { return };
            let from = self.chosen[p * self.r + slot];
            self.chosen[p * self.r + slot] = to;
            loads[from] -= 1;
            loads[to] += 1;
        }
    }
}

/// The integer loads allowed around each target: those with `|load - target| <=
/// max(1, 5% of target)`, never below 0.
///
/// The bounds are checked with that very expression, not just rounded: at a target such
/// as 4096 × 5/84, `target + slack` is 256 in exact arithmetic but rounds differently
/// from `256 - target <= slack`, and the two must agree.
pub(crate) fn bounds(targets: &[f64]) -> (Vec<usize>, Vec<usize>) {
    let within = |load: usize, t: f64| (load as f64 - t).abs() <= (0.05 * t).max(1.0);
    let slack = |t: f64| (0.05 * t).max(1.0);
    let low = targets
        .iter()
        .map(|&t| {
            let mut low = (t - slack(t)).ceil().max(0.0) as usize;
            while !within(low, t) {
                low += 1;
            }
            low
        })
        .collect();
    let high = targets
        .iter()
        .map(|&t| {
            let mut high = (t + slack(t)).floor() as usize;
            while high > 0 && !within(high, t) {
                high -= 1;
            }
            high
        })
        .collect();
    (low, high)
}

/// For every partition, its `replicas` owners, best adjusted score first (`partitions ×
/// replicas` member indices).
pub(crate) fn assign(members: &[Member], replicas: usize, partitions: usize) -> Vec<usize> {
    let n = members.len();
    let zones = Zones::new(members, replicas);
    let seeds: Vec<u64> = members.iter().map(|m| member_seed(&m.id)).collect();
    let mut scores = Vec::with_capacity(partitions * n);
    for p in 0..partitions {
        scores.extend(seeds.iter().map(|&seed| score(seed, p as u32)));
    }
    let mut a = Assignment {
        n,
        r: replicas,
        zones: &zones,
        scores,
        prices: vec![0; n],
        chosen: vec![0; partitions * replicas],
    };
    // One unit of load is worth about 1/Q of the score range; half a unit per unit of
    // error damps the oscillation of simultaneous updates.
    let unit = (1i64 << 62) / partitions as i64 / 2;
    // A load is good enough within the balance bound: chasing exact quotas would move
    // prices, and so replicas, more than balance needs.
    let (low, high) = bounds(&targets(members, replicas, partitions));
    let balanced = |loads: &[usize]| (0..n).all(|i| low[i] <= loads[i] && loads[i] <= high[i]);
    let mut loads = a.select();
    for _ in 0..MAX_ROUNDS {
        if balanced(&loads) {
            break;
        }
        for node in 0..n {
            // Only a node outside its bounds changes price, so nodes inside keep their
            // plain rendezvous choices and a join disturbs them as little as it can.
            let error = if loads[node] > high[node] {
                high[node] as i64 - loads[node] as i64
            } else if loads[node] < low[node] {
                low[node] as i64 - loads[node] as i64
            } else {
                0
            };
            a.prices[node] = a.prices[node].saturating_add(error.saturating_mul(unit));
        }
        loads = a.select();
    }
    a.repair(&mut loads, &low, &high);

    for p in 0..partitions {
        let chosen = &mut a.chosen[p * replicas..(p + 1) * replicas];
        let adjusted = |x: usize| a.scores[p * n + x].saturating_add(a.prices[x]);
        chosen.sort_by(|&x, &y| adjusted(y).cmp(&adjusted(x)).then(x.cmp(&y)));
    }
    a.chosen
}
