//! Property tests of the ring's laws over random clusters.

use std::collections::BTreeSet;

use dotkv_ring::{Member, Ring};
use proptest::prelude::*;

fn cluster(max_nodes: usize) -> impl Strategy<Value = Vec<Member>> {
    (1..=max_nodes, 1usize..=5).prop_flat_map(|(nodes, zones)| {
        proptest::collection::vec((1u32..=8, 0..zones), nodes).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (weight, zone))| {
                    Member::new(format!("node-{i}"), weight, format!("z{zone}"))
                })
                .collect()
        })
    })
}

fn partitions() -> impl Strategy<Value = u32> {
    prop_oneof![Just(64u32), Just(256), Just(1024), Just(4096)]
}

fn owners(ring: &Ring, p: u32) -> BTreeSet<String> {
    ring.preference_list(p)
        .iter()
        .map(|&i| ring.member(i).id.clone())
        .collect()
}

fn zone_count(members: &[Member]) -> usize {
    members
        .iter()
        .map(|m| m.zone.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Partition replicas present in `after` but not in `before`.
fn moved(before: &Ring, after: &Ring) -> usize {
    (0..before.partitions())
        .map(|p| owners(after, p).difference(&owners(before, p)).count())
        .sum()
}

fn check_balance(ring: &Ring) -> Result<(), TestCaseError> {
    for ((member, load), target) in ring.members().iter().zip(ring.loads()).zip(ring.targets()) {
        let slack = (target * 0.05).max(1.0);
        prop_assert!(
            (load as f64 - target).abs() <= slack,
            "{} (weight {}, zone {}) holds {} replicas, target {:.1}",
            member.id,
            member.weight,
            member.zone,
            load,
            target
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn owners_are_distinct_zoned_and_balanced(members in cluster(64), n in 1usize..=5, q in partitions()) {
        let ring = Ring::build(members.clone(), n, q, 1).unwrap();
        let r = n.min(members.len());
        let zone_rule = zone_count(&members) >= r;
        for p in 0..q {
            let list = ring.preference_list(p);
            prop_assert_eq!(list.len(), r);
            prop_assert_eq!(owners(&ring, p).len(), r, "owners of {} not distinct", p);
            prop_assert_eq!(ring.order(p).iter().collect::<BTreeSet<_>>().len(), members.len());
            if zone_rule {
                let zones: BTreeSet<&str> = list.iter().map(|&i| ring.member(i).zone.as_str()).collect();
                prop_assert_eq!(zones.len(), r, "partition {} repeats a zone", p);
            }
        }
        check_balance(&ring)?;
    }

    #[test]
    fn permutation_of_members_gives_the_same_ring(members in cluster(24), n in 1usize..=5, seed in any::<u64>()) {
        let mut shuffled = members.clone();
        // A deterministic shuffle from the seed.
        let len = shuffled.len();
        for i in (1..len).rev() {
            shuffled.swap(i, (seed.rotate_left(i as u32) % (i as u64 + 1)) as usize);
        }
        let a = Ring::build(members, n, 256, 7).unwrap();
        let b = Ring::build(shuffled, n, 256, 7).unwrap();
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert_eq!(a, b);
    }

    /// Adding or removing one node moves at most 1.3 × the ideal number of replicas: the
    /// joining node's share, or the leaving node's.
    ///
    /// Not met yet for large clusters with few replicas per node (see the crate docs);
    /// run with `cargo test -p dotkv-ring -- --ignored`.
    #[test]
    #[ignore = "the movement bound is not met for large clusters yet (issue 4 note)"]
    fn one_node_joining_or_leaving_moves_little(members in cluster(63), weight in 1u32..=8, zone in 0usize..5, n in 1usize..=5, q in partitions()) {
        let mut grown = members.clone();
        let zones = zone_count(&members);
        grown.push(Member::new("joiner", weight, format!("z{}", zone % zones.max(1))));
        // The zone rule must hold (or not) on both sides, else every list changes anyway.
        prop_assume!((zone_count(&members) >= n.min(members.len())) == (zone_count(&grown) >= n.min(grown.len())));
        let before = Ring::build(members, n, q, 1).unwrap();
        let after = Ring::build(grown, n, q, 2).unwrap();
        let joiner = after.index_of("joiner").unwrap();
        let ideal = after.targets()[usize::from(joiner)];
        let joined = moved(&before, &after) as f64;
        prop_assert!(joined <= 1.3 * ideal.max(1.0), "join moved {} replicas, ideal {:.1}", joined, ideal);
        let left = moved(&after, &before) as f64;
        prop_assert!(left <= 1.3 * ideal.max(1.0), "leave moved {} replicas, ideal {:.1}", left, ideal);
    }
}
