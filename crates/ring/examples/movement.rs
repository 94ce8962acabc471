//! Prints the balance and the movement of rings, for the crate docs and the issue notes.
//!
//! 1. For several clusters (N = 3): the max load / target ratio, and the partition replicas
//!    moved when one node joins, against the ideal (the joiner's target), both for a ring
//!    rebuilt from the members ([`Ring::build`]) and for the successor ring ([`Ring::next`]).
//! 2. Over random clusters like the property tests' (1–64 nodes, weights 1–8, 1–5 zones,
//!    N 1–5, Q 64–4096): how often one join or one leave (of any member) through
//!    [`Ring::next`] moves more than 1.3 × its share, and the worst ratio.
//!
//! `cargo run --release -p dotkv-ring --example movement [random cases] [seed]`

use std::collections::BTreeSet;

use dotkv_ring::{Member, Ring};

fn moved(before: &Ring, after: &Ring) -> usize {
    let owners = |ring: &Ring, p: u32| -> BTreeSet<String> {
        ring.preference_list(p)
            .iter()
            .map(|&i| ring.member(i).id.clone())
            .collect()
    };
    (0..before.partitions())
        .map(|p| owners(after, p).difference(&owners(before, p)).count())
        .sum()
}

fn max_ratio(ring: &Ring) -> f64 {
    ring.loads()
        .iter()
        .zip(ring.targets())
        .map(|(&l, t)| l as f64 / t)
        .fold(0.0, f64::max)
}

fn zones(members: &[Member]) -> usize {
    members
        .iter()
        .map(|m| &m.zone)
        .collect::<BTreeSet<_>>()
        .len()
}

/// SplitMix64: a seeded generator, so a run can be repeated.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

fn table() {
    println!(
        "| cluster | Q | max/target | moved on join, build | moved on join, next | ideal | build/ideal | next/ideal |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let clusters: Vec<(String, Vec<u32>)> = vec![
        ("3 equal".into(), vec![1; 3]),
        ("5 equal".into(), vec![1; 5]),
        ("10 equal".into(), vec![1; 10]),
        ("32 equal".into(), vec![1; 32]),
        ("9 mixed (1,2,4 ×3)".into(), vec![1, 2, 4, 1, 2, 4, 1, 2, 4]),
    ];
    for (name, weights) in clusters {
        for q in [256, 1024] {
            let members: Vec<Member> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Member::new(format!("n{i}"), w, "z"))
                .collect();
            let mut grown = members.clone();
            grown.push(Member::new("joiner", 1, "z"));
            let before = Ring::build(members, 3, q, 1).unwrap();
            let rebuilt = Ring::build(grown.clone(), 3, q, 2).unwrap();
            let next = before.next(grown, 3, 2).unwrap();
            let ideal = next.targets()[usize::from(next.index_of("joiner").unwrap())];
            let (by_build, by_next) = (moved(&before, &rebuilt), moved(&before, &next));
            println!(
                "| {name} | {q} | {:.3} | {by_build} | {by_next} | {ideal:.1} | {:.2} | {:.2} |",
                max_ratio(&before),
                by_build as f64 / ideal,
                by_next as f64 / ideal
            );
        }
    }
}

fn random(cases: usize, seed: u64) {
    let mut rng = SplitMix64(seed);
    let (mut transitions, mut over, mut worst) = (0, 0, 0.0f64);
    for _ in 0..cases {
        let zone_count = 1 + rng.below(5);
        let mut members: Vec<Member> = (0..1 + rng.below(63))
            .map(|i| {
                let weight = 1 + rng.below(8) as u32;
                Member::new(
                    format!("node-{i}"),
                    weight,
                    format!("z{}", rng.below(zone_count)),
                )
            })
            .collect();
        let n = 1 + rng.below(5) as usize;
        let q = [64, 256, 1024, 4096][rng.below(4) as usize];
        let zone_rule = |m: &[Member]| zones(m) >= n.min(m.len());
        let before = Ring::build(members.clone(), n, q, 1).unwrap();
        let mut grown = members.clone();
        let weight = 1 + rng.below(8) as u32;
        grown.push(Member::new(
            "joiner",
            weight,
            format!("z{}", rng.below(zone_count)),
        ));
        let joined = before.next(grown.clone(), n, 2).unwrap();
        let mut record = |moved: usize, share: f64, what: &str| {
            let ratio = moved as f64 / share.max(1.0);
            transitions += 1;
            worst = worst.max(ratio);
            if ratio > 1.3 {
                over += 1;
                println!("  {what}: {moved} moved, share {share:.1} (N = {n}, Q = {q})");
            }
        };
        if zone_rule(&members) == zone_rule(&grown) {
            let share = joined.targets()[usize::from(joined.index_of("joiner").unwrap())];
            record(moved(&before, &joined), share, "join");
        }
        let leaver = grown.remove(rng.below(grown.len() as u64) as usize);
        members = grown;
        if !members.is_empty() && zone_rule(&members) == zone_rule(joined.members()) {
            let left = joined.next(members, n, 3).unwrap();
            let share = joined.loads()[usize::from(joined.index_of(&leaver.id).unwrap())];
            record(moved(&joined, &left), share as f64, "leave");
        }
    }
    println!(
        "{transitions} random joins and leaves through Ring::next: {over} moved more than \
         1.3 × their share; worst {worst:.2} × the share"
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cases = args
        .next()
        .map_or(500, |s| s.parse().expect("a number of cases"));
    let seed = args.next().map_or(1, |s| s.parse().expect("a seed"));
    table();
    println!();
    random(cases, seed);
}
