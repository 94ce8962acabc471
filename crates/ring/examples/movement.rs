//! Prints, for several clusters, the balance (max load / target) and the partition
//! replicas moved when one node joins, against the ideal (the joiner's target).
//!
//! `cargo run --release -p dotkv-ring --example movement`

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

fn main() {
    println!("| cluster | Q | max/target | moved on join | ideal | moved/ideal |");
    println!("| --- | --- | --- | --- | --- | --- |");
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
            let after = Ring::build(grown, 3, q, 2).unwrap();
            let ideal = after.targets()[usize::from(after.index_of("joiner").unwrap())];
            let m = moved(&before, &after);
            println!(
                "| {name} | {q} | {:.3} | {m} | {ideal:.1} | {:.2} |",
                max_ratio(&before),
                m as f64 / ideal
            );
        }
    }
}
