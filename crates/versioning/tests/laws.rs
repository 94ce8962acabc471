//! Property tests of the DVVS laws against a reference model of causal histories.
//!
//! The model: every write is a unique id; a replica's state is the set of writes in its
//! causal history; a write coordinated at replica `r` by a client that read replica `x`
//! (or nothing) has as context the history the client read. The values that must survive
//! in a history are exactly its writes that no write of the same history had in its
//! context. DVVS must match that exactly, at every replica, after any interleaving of
//! writes and syncs.

use std::collections::{BTreeMap, BTreeSet};

use dotkv_versioning::{ContextToken, DvvSet, ReplicaId, VersionVector, decode, encode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A client reads `read_from` (or nothing) and writes through coordinator `at`.
    Write { at: usize, read_from: Option<usize> },
    /// Replica `into` merges the state of replica `from`.
    Sync { into: usize, from: usize },
}

fn ops(replicas: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0..replicas, proptest::option::weighted(0.7, 0..replicas))
            .prop_map(|(at, read_from)| Op::Write { at, read_from }),
        2 => (0..replicas, 0..replicas).prop_map(|(into, from)| Op::Sync { into, from }),
    ];
    proptest::collection::vec(op, 0..60)
}

/// What the model and DVVS hold after running `ops` on `replicas` replicas.
struct Run {
    sets: Vec<DvvSet<u32>>,
    histories: Vec<BTreeSet<u32>>,
    /// The context (set of writes) of each write.
    contexts: BTreeMap<u32, BTreeSet<u32>>,
}

impl Run {
    fn new(replicas: usize, ops: &[Op]) -> Self {
        let mut run = Self {
            sets: vec![DvvSet::default(); replicas],
            histories: vec![BTreeSet::new(); replicas],
            contexts: BTreeMap::new(),
        };
        for (write, op) in (0u32..).zip(ops) {
            match *op {
                Op::Write { at, read_from } => {
                    let (context, history) = match read_from {
                        Some(x) => (run.sets[x].join(), run.histories[x].clone()),
                        None => (VersionVector::new(), BTreeSet::new()),
                    };
                    // The client's context travels as a token, as it would in dotkv.
                    let token: ContextToken =
                        ContextToken::from(&context).to_string().parse().unwrap();
                    run.sets[at] =
                        run.sets[at].update(token.version_vector(), write, ReplicaId(at as u64));
                    run.histories[at].extend(history.iter().copied());
                    run.histories[at].insert(write);
                    run.contexts.insert(write, history);
                }
                Op::Sync { into, from } => {
                    run.sets[into] = run.sets[into].sync(&run.sets[from]);
                    let from = run.histories[from].clone();
                    run.histories[into].extend(from);
                }
            }
        }
        run
    }

    /// The writes of `history` that no write of `history` overwrote.
    fn survivors(&self, history: &BTreeSet<u32>) -> BTreeSet<u32> {
        history
            .iter()
            .copied()
            .filter(|w| !history.iter().any(|later| self.contexts[later].contains(w)))
            .collect()
    }
}

fn values(set: &DvvSet<u32>) -> BTreeSet<u32> {
    let values: Vec<u32> = set.values().into_iter().copied().collect();
    let unique: BTreeSet<u32> = values.iter().copied().collect();
    assert_eq!(
        unique.len(),
        values.len(),
        "a value appears twice in {set:?}"
    );
    unique
}

fn sync_all(sets: &[DvvSet<u32>]) -> DvvSet<u32> {
    sets.iter()
        .fold(DvvSet::default(), |acc, set| acc.sync(set))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No lost update, no zombie value: at every replica, and after syncing all replicas,
    /// the values are exactly the writes no later write's context covered.
    #[test]
    fn values_match_the_causal_model(replicas in 1usize..5, ops in ops(4)) {
        let ops: Vec<Op> = ops.into_iter().filter(|op| match *op {
            Op::Write { at, read_from } => at < replicas && read_from.is_none_or(|x| x < replicas),
            Op::Sync { into, from } => into < replicas && from < replicas,
        }).collect();
        let run = Run::new(replicas, &ops);
        for (set, history) in run.sets.iter().zip(&run.histories) {
            prop_assert_eq!(values(set), run.survivors(history));
            // Size is decoupled from the number of updates: one entry per replica id.
            prop_assert!(set.ids().len() <= replicas);
        }
        let all: BTreeSet<u32> = run.histories.iter().flatten().copied().collect();
        prop_assert_eq!(values(&sync_all(&run.sets)), run.survivors(&all));
    }

    #[test]
    fn sync_is_commutative_associative_idempotent(ops in ops(3)) {
        let run = Run::new(3, &ops);
        let [a, b, c] = [&run.sets[0], &run.sets[1], &run.sets[2]];
        prop_assert_eq!(values(&a.sync(b)), values(&b.sync(a)));
        prop_assert!(a.sync(b).equal(&b.sync(a)));
        prop_assert_eq!(a.sync(b).sync(c), a.sync(&b.sync(c)));
        prop_assert_eq!(a.sync(a), a.clone());
        prop_assert_eq!(a.sync(b).sync(b), a.sync(b));
    }

    #[test]
    fn join_of_sync_is_merge_of_joins(ops in ops(3)) {
        let run = Run::new(3, &ops);
        let (a, b) = (&run.sets[0], &run.sets[1]);
        prop_assert_eq!(a.sync(b).join(), a.join().merge(&b.join()));
        prop_assert!(a.sync(b).join().descends(&a.join()));
    }

    /// However many updates, the set holds at most one entry per replica and no more
    /// values than concurrent writes.
    #[test]
    fn size_is_bounded_by_replicas_and_siblings(rounds in 1usize..200, stale_every in 2usize..10) {
        let mut set = DvvSet::default();
        let mut stale = VersionVector::new();
        for i in 0..rounds {
            let context = if i % stale_every == 0 { stale.clone() } else { set.join() };
            set = set.update(&context, i, ReplicaId((i % 3) as u64));
            if i % stale_every == 0 { stale = set.join(); }
        }
        prop_assert!(set.ids().len() <= 3);
        prop_assert!(set.size() <= 2, "size {} after {} rounds", set.size(), rounds);
    }

    #[test]
    fn encoding_round_trips(ops in ops(4)) {
        let run = Run::new(4, &ops);
        for set in &run.sets {
            prop_assert_eq!(&decode::<u32>(&encode(set)).unwrap(), set);
            let token = ContextToken::from(&set.join());
            let parsed: ContextToken = token.as_str().parse().unwrap();
            prop_assert_eq!(parsed.version_vector(), &set.join());
        }
    }

    /// Arbitrary bytes never panic the decoders.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<Option<Vec<u8>>>(&bytes);
        let _ = decode::<u32>(&bytes);
        let _ = ContextToken::decode_bytes(&bytes);
        let _ = String::from_utf8_lossy(&bytes).parse::<ContextToken>();
    }

    /// Truncated or corrupted valid encodings give an error or a valid set, never a panic.
    #[test]
    fn decoding_mutated_encodings_never_panics(ops in ops(4), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let run = Run::new(4, &ops);
        let bytes = encode(&sync_all(&run.sets));
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(decode::<u32>(truncated).is_err() || truncated.len() == bytes.len());
        let mut flipped = bytes.clone();
        let at = flip.0.index(flipped.len());
        flipped[at] ^= flip.1.max(1);
        if let Ok(set) = decode::<u32>(&flipped) {
            // Whatever decodes is a usable set.
            let _ = set.sync(&set).join();
        }
    }
}

#[test]
fn hostile_inputs_are_refused() {
    // A length prefix claiming 2^60 entries must not allocate that much.
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(decode::<u32>(&bytes).is_err());
    // Unsorted entries, more values than events, unknown version, empty, trailing bytes.
    let unsorted = DvvSet::default()
        .update(&VersionVector::new(), 1u32, ReplicaId(2))
        .sync(&DvvSet::default().update(&VersionVector::new(), 2u32, ReplicaId(1)));
    let mut encoded = encode(&unsorted);
    assert!(decode::<u32>(&encoded).is_ok());
    encoded.push(0);
    assert!(decode::<u32>(&encoded).is_err(), "trailing bytes");
    assert!(decode::<u32>(&[]).is_err());
    assert!(decode::<u32>(&[9, 0, 0]).is_err());
    assert!("".parse::<ContextToken>().is_err());
    assert!(
        "A".repeat(dotkv_versioning::MAX_TOKEN_CHARS + 1)
            .parse::<ContextToken>()
            .is_err()
    );
    // A token whose ids are not ascending.
    let bad = [1u8, 2, 5, 1, 3, 1];
    assert!(ContextToken::decode_bytes(&bad).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Replicas that synced with each other, in any order, hold the same bytes: anti-entropy
    /// compares digests of the encoded objects, so equal states must encode equally.
    #[test]
    fn synced_states_encode_to_the_same_bytes(ops in ops(3)) {
        let run = Run::new(3, &ops);
        let [a, b, c] = [&run.sets[0], &run.sets[1], &run.sets[2]];
        prop_assert_eq!(encode(&a.sync(b)), encode(&b.sync(a)));
        prop_assert_eq!(encode(&a.sync(b).sync(c)), encode(&c.sync(&b.sync(a))));
    }
}
