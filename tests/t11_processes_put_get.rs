//! The request path with real processes on loopback, driven by the `dotkv` binary: three
//! `dotkv-server`s (once on LMDB, once on SQLite) serve puts, gets, siblings, contexts and
//! deletes through every node; bad input is refused with `invalid_argument` and stores
//! nothing; with one node stopped (`SIGSTOP`) or killed (`kill -9`) R = 2 / W = 2 are
//! still served, and the killed node restarts with its data.

mod common;

use std::time::Duration;

use common::{Server, client_json, client_run, eventually, sorted_values};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    addr: String,
    dir: String,
    id: String,
    server: Server,
}

fn start(profile: &str, id: &str, addr: &str, dir: &str, seed: Option<&str>) -> Server {
    common::start_node(profile, id, addr, dir, seed, &[], WAIT)
}

fn up_count(addr: &str) -> usize {
    let status = client_json(addr, &["status"]);
    status["nodes"].as_array().map_or(0, |nodes| {
        nodes.iter().filter(|n| n["status"] == "up").count()
    })
}

fn ok(addr: &str, args: &[&str]) -> Value {
    let (success, json) = client_run(addr, args, b"");
    assert!(success, "dotkv {args:?} failed: {json}");
    json
}

fn refused(addr: &str, args: &[&str], stdin: &[u8]) -> Value {
    let (success, json) = client_run(addr, args, stdin);
    assert!(!success, "dotkv {args:?} should fail: {json}");
    json
}

fn scenario(profile: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=3 {
        let id = format!("n{i}");
        let addr = format!("127.0.0.1:{}", common::free_port());
        let data = dir.path().join(&id).to_str().unwrap().to_owned();
        let seed = nodes.first().map(|n| n.addr.clone());
        let server = start(profile, &id, &addr, &data, seed.as_deref());
        nodes.push(Node {
            addr,
            dir: data,
            id,
            server,
        });
    }
    for node in &nodes {
        assert!(
            eventually(WAIT, || up_count(&node.addr) == 3),
            "{} never saw three up",
            node.id
        );
    }
    let [a, b, c] = [0, 1, 2].map(|i| nodes[i].addr.clone());
    let [a, b, c] = [a.as_str(), b.as_str(), c.as_str()];

    // Round trip, through different nodes.
    let put = ok(a, &["put", "greeting", "hello"]);
    assert_eq!(put["key"], "greeting");
    assert!(put["context"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(sorted_values(&ok(b, &["get", "greeting"])), ["hello"]);

    // Two writes without context: siblings.
    ok(b, &["put", "greeting", "bonjour"]);
    let read = ok(c, &["get", "greeting"]);
    assert_eq!(sorted_values(&read), ["bonjour", "hello"]);
    let context = read["context"].as_str().unwrap().to_owned();

    // A put with the read's context resolves them; a stale context keeps the unseen one.
    ok(
        c,
        &["put", "greeting", "hello+bonjour", "--context", &context],
    );
    assert_eq!(
        sorted_values(&ok(a, &["get", "greeting"])),
        ["hello+bonjour"]
    );
    ok(a, &["put", "greeting", "hallo", "--context", &context]);
    let read = ok(b, &["get", "greeting", "--r", "3"]);
    assert_eq!(sorted_values(&read), ["hallo", "hello+bonjour"]);

    // Delete with the context: absent, with a context.
    let latest = read["context"].as_str().unwrap().to_owned();
    ok(b, &["delete", "greeting", "--context", &latest]);
    let read = ok(c, &["get", "greeting"]);
    assert!(sorted_values(&read).is_empty());
    assert!(read["context"].as_str().is_some_and(|t| !t.is_empty()));

    // Binary-safe values from stdin; non-UTF-8 prints as base64.
    let (success, _) = client_run(a, &["put", "bin", "-"], &[0xff, 0x00, 0x01]);
    assert!(success);
    assert_eq!(sorted_values(&ok(b, &["get", "bin"])), ["/wAB"]);

    // Bad input: refused, nothing stored, the node stays up.
    let oversized = vec![b'x'; 4 * 1024 * 1024 + 1];
    let error = refused(a, &["put", "big", "-"], &oversized);
    assert_eq!(error["kind"], "invalid_argument", "{error}");
    assert!(sorted_values(&ok(a, &["get", "big", "--r", "3"])).is_empty());
    let error = refused(a, &["put", "k", "v", "--context", "%%not-a-token%%"], b"");
    assert_eq!(error["kind"], "invalid_argument", "{error}");
    let error = refused(a, &["put", "k", "v", "--w", "4"], b"");
    assert_eq!(error["kind"], "invalid_argument", "{error}");
    assert!(sorted_values(&ok(a, &["get", "k", "--r", "3"])).is_empty());

    // SIGSTOP one node: it neither answers nor refuses. W = 2 and R = 2 are served by the
    // other two; after SIGCONT it takes writes again.
    nodes[1].server.signal("STOP");
    ok(a, &["put", "paused", "v", "--w", "2"]);
    assert_eq!(sorted_values(&ok(c, &["get", "paused", "--r", "2"])), ["v"]);
    nodes[1].server.signal("CONT");
    ok(b, &["put", "paused", "after", "--w", "3"]);

    // Every node holds the key written before the kill.
    ok(a, &["put", "durable", "before-kill", "--w", "3"]);

    // kill -9 one node: R = 2 and W = 2 are still served by the other two.
    nodes[2].server.signal("KILL");
    nodes[2].server.wait_exit(WAIT);
    ok(a, &["put", "during", "outage", "--w", "2"]);
    assert_eq!(
        sorted_values(&ok(b, &["get", "during", "--r", "2"])),
        ["outage"]
    );
    let error = refused(a, &["put", "during", "w3", "--w", "3"], b"");
    assert_eq!(error["kind"], "quorum_not_reached", "{error}");

    // Restarted on its data dir (no seeds needed: it has its view), n3 has its data.
    let restarted = start(profile, "n3", c, &nodes[2].dir, None);
    nodes[2].server = restarted;
    assert!(eventually(WAIT, || up_count(c) == 3), "n3 did not rejoin");
    // n1 reconnects to n3 after its backoff: then n3 answers with what it held.
    let n3_holds = |key: &str| {
        let replicas = ok(a, &["replicas", key]);
        replicas["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == "n3" && r["role"] == "primary")
            .and_then(|r| r["values"].as_array().cloned())
            .unwrap_or_default()
    };
    assert!(
        eventually(WAIT, || n3_holds("durable") == [Value::from("before-kill")]),
        "n3 lost its data: {:?}",
        n3_holds("durable")
    );
    // It missed the writes made while it was down (the refused W = 3 write stayed on the
    // two replicas that took it: a failed quorum does not undo a write); a read repairs it.
    assert!(n3_holds("during").is_empty());
    let read = ok(b, &["get", "during", "--r", "3"]);
    assert_eq!(sorted_values(&read), ["outage", "w3"]);
    assert!(
        eventually(WAIT, || n3_holds("during").len() == 2),
        "read repair did not reach n3: {:?}",
        n3_holds("during")
    );

    // n3 loses its data dir and comes back empty under the same node id. Its new writes
    // get a new replica id (the store's epoch), so they cannot reuse a dot its old store
    // gave an earlier write: both writes survive as siblings.
    ok(c, &["put", "reborn", "before-wipe", "--w", "3"]);
    nodes[2].server.signal("KILL");
    nodes[2].server.wait_exit(WAIT);
    let wiped = format!("{}-wiped", nodes[2].dir);
    nodes[2].server = start(profile, "n3", c, &wiped, Some(a));
    assert!(
        eventually(WAIT, || up_count(c) == 3 && up_count(a) == 3),
        "n3 did not come back"
    );
    ok(c, &["put", "reborn", "after-wipe", "--w", "3"]);
    let read = ok(a, &["get", "reborn", "--r", "3"]);
    assert_eq!(
        sorted_values(&read),
        ["after-wipe", "before-wipe"],
        "{read}"
    );

    // The load generator: a short YCSB-A run over all three nodes, its JSON report.
    let all = format!("{a},{b},{c}");
    let report = ok(
        a,
        &[
            "bench",
            "--nodes",
            &all,
            "--workload",
            "a",
            "--keys",
            "50",
            "--ops",
            "300",
            "--concurrency",
            "4",
            "--value-size",
            "100",
        ],
    );
    assert_eq!(report["ops"], 300, "{report}");
    assert!(report["throughput"].as_f64().is_some_and(|t| t > 0.0));
    for field in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_ms"][field].as_f64().is_some(),
            "{field}: {report}"
        );
    }
    assert!(
        report["by_op"]["read"]["count"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert!(
        report["by_op"]["update"]["count"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");

    for node in &mut nodes {
        node.server.stop(WAIT);
    }
}

#[test]
fn three_lmdb_processes_serve_the_request_path() {
    scenario("test");
}

#[test]
fn three_sqlite_processes_serve_the_request_path() {
    scenario("sqlite");
}
