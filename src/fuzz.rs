//! The fuzz targets' bodies: each takes bytes an attacker could send or write and runs
//! them through what dotkv does with such bytes. `fuzz/fuzz_targets/*.rs` hand libFuzzer's
//! inputs to them (`cargo +nightly fuzz run NAME`); `tests/t60_fuzz_corpus.rs` replays
//! the seed corpora and the kept crash inputs through them in `just test`.
//!
//! A body panics only when dotkv breaks a law (an encoding that does not decode back);
//! input that dotkv refuses is fine, input that makes it panic or allocate without bound
//! is a bug.

use std::time::Duration;

use dotkv_membership::{
    ClusterState, GossipRequest, Gossiper, MembershipConfig, NodeState, NodeStatus, RingParams,
};
use dotkv_replication::{Object, Value, decode_object, encode_object};
use dotkv_versioning::{ContextToken, ReplicaId, VersionVector};

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// The fuzz targets, by name: the directories of `fuzz/corpus/`.
pub const TARGETS: [(&str, Body); 5] = [
    ("rpc_frames", rpc_frames),
    ("context_token", context_token),
    ("stored_object", stored_object),
    ("gossip_message", gossip_message),
    ("config", config),
];

/// What a node does with a connection's bytes: the handshake, then frames (1 MiB limit)
/// decoded as requests.
pub fn rpc_frames(data: &[u8]) {
    let _ = dotkv_rpc::fuzzing::server_input(data, 1 << 20);
}

/// A client's context token, as `put --context` and `X-Dotkv-Context` take it: text, or
/// its binary form. A token that decodes encodes back to the same version vector.
pub fn context_token(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = text.parse::<ContextToken>() {
            let again = ContextToken::from(token.version_vector());
            let reparsed: ContextToken = again.as_str().parse().expect("an encoded token parses");
            assert_eq!(reparsed.version_vector(), token.version_vector());
        }
    }
    if let Ok(vv) = ContextToken::decode_bytes(data) {
        let bytes = ContextToken::encode_bytes(&vv);
        assert_eq!(ContextToken::decode_bytes(&bytes).expect("re-encoded"), vv);
    }
}

/// A stored or replicated object (a replica's write, a handoff page, a disk): an object
/// that decodes encodes back to itself, and merging it with itself changes nothing.
pub fn stored_object(data: &[u8]) {
    if let Ok(object) = decode_object(data, "fuzz") {
        let again = decode_object(&encode_object(&object), "fuzz").expect("re-encoded");
        assert_eq!(again, object);
        assert_eq!(object.sync(&object), object, "merging is idempotent");
    }
}

/// A gossip message from a peer, handled by a node and followed by a gossip round (which
/// may compute a ring from the members it introduced).
pub fn gossip_message(data: &[u8]) {
    let Some(request) = dotkv_rpc::fuzzing::gossip_message(data) else {
        return;
    };
    let mut gossiper = Gossiper::new(
        "fuzz",
        node_state("127.0.0.1:1"),
        None,
        vec![],
        MembershipConfig::default(),
        RingParams {
            replicas: 3,
            partitions: 64,
        },
        Duration::from_secs(1),
    );
    let _ = gossiper.handle(request, Duration::from_secs(2));
    let _ = gossiper.tick(Duration::from_secs(3));
}

/// A configuration file's text, with each profile it names selected.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for profile in ["default", "test", "sqlite"] {
        let _ = dotkv_bins::config::parse(text, profile);
    }
}

fn node_state(addr: &str) -> NodeState {
    NodeState {
        incarnation: 1,
        heartbeat: 1,
        addr: addr.into(),
        status: NodeStatus::Up,
        weight: 1,
        zone: "z".into(),
        synced: Default::default(),
    }
}

/// Valid inputs for each target, the start of its corpus (`fuzz/corpus/NAME/`).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let vv: VersionVector = [(ReplicaId(1), 3), (ReplicaId(9), 1)].into_iter().collect();
    match target {
        "rpc_frames" => dotkv_rpc::fuzzing::seed_inputs(),
        "context_token" => vec![
            ContextToken::from(&vv).as_str().as_bytes().to_vec(),
            ContextToken::from(&VersionVector::default())
                .as_str()
                .as_bytes()
                .to_vec(),
            ContextToken::encode_bytes(&vv),
        ],
        "stored_object" => {
            let one = Object::new(Value::Data(bytes::Bytes::from_static(b"hello")));
            let two = one.update(
                &VersionVector::default(),
                Value::Data(bytes::Bytes::from_static(b"sibling")),
                ReplicaId(7),
            );
            let deleted = two.update(
                &two.join(),
                Value::Tombstone {
                    deleted_at_ms: 1_700_000_000_000,
                },
                ReplicaId(7),
            );
            [one, two, deleted].iter().map(encode_object).collect()
        }
        "gossip_message" => {
            let mut state = ClusterState::new();
            state.merge_entry("a", node_state("127.0.0.1:7001"));
            state.merge_entry("b", node_state("127.0.0.1:7002"));
            let digest = state.digest();
            [
                GossipRequest::Syn {
                    from: "a".into(),
                    digest,
                    topology: None,
                },
                GossipRequest::Ack2 {
                    from: "a".into(),
                    state,
                },
            ]
            .iter()
            .map(dotkv_rpc::fuzzing::encode_gossip_message)
            .collect()
        }
        "config" => vec![
            include_bytes!("../config/dotkv.toml").to_vec(),
            b"[default]\nweight = 3\nzone = \"a\"\nseeds = [\"127.0.0.1:7001\"]\nsecurity.tls = false\n"
                .to_vec(),
            b"[default]\nsecurity.tls = false\nrpc.max_connections_per_ip = 8\n[test]\nreplication.n = 5\n".to_vec(),
            b"[default]\nsecurity = { ca = \"ca.pem\", cert = \"n1.pem\", key = \"n1.key\", tokens = [{ token = \"0123456789abcdef\", access = \"read-only\" }] }\n".to_vec(),
        ],
        _ => Vec::new(),
    }
}
