//! Elasticity with real processes on loopback, driven by the `dotkv` binary while a
//! `dotkv bench` and a recording writer run: a node started alone joins with `dotkv join
//! --wait`, another leaves with `dotkv leave --wait` and exits 0, a third is killed
//! (`kill -9`) and removed with `dotkv remove --wait`. Every acknowledged write is
//! readable afterwards.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, binary, client_json, client_run, eventually};
use dotkv_rpc::Client;

const WAIT: Duration = Duration::from_secs(60);

fn start(id: &str, addr: &str, dir: &str, seed: Option<&str>) -> Server {
    // Quick gossip and handoff rounds keep the test short.
    let envs = [
        ("DOTKV_MEMBERSHIP__GOSSIP_INTERVAL_MS", "100"),
        ("DOTKV_HANDOFF__INTERVAL_MS", "100"),
    ];
    common::start_node("test", id, addr, dir, seed, &envs, WAIT)
}

/// Whether the node at `addr` sees exactly `ids` up, in a ring with no transition pending.
fn settled_with(addr: &str, ids: &[&str]) -> bool {
    let status = client_json(addr, &["status"]);
    let up: Vec<&str> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["status"] == "up")
        .filter_map(|n| n["id"].as_str())
        .collect();
    status["ring"]["pending"].is_null() && up == ids
}

fn ok(addr: &str, args: &[&str]) {
    let (success, json) = common::client_run_within(addr, args, WAIT);
    assert!(success, "dotkv {args:?} failed: {json}");
    assert_eq!(json["ok"], true, "{json}");
}

#[test]
fn join_leave_and_remove_with_real_processes_under_load_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect();
    let data = |id: &str| dir.path().join(id).to_str().unwrap().to_owned();
    let n1 = start("n1", &addrs[0], &data("n1"), None);
    let mut n2 = start("n2", &addrs[1], &data("n2"), Some(&addrs[0]));
    let n3 = start("n3", &addrs[2], &data("n3"), Some(&addrs[0]));
    assert!(
        eventually(WAIT, || settled_with(&addrs[0], &["n1", "n2", "n3"])),
        "the three nodes did not settle"
    );

    // Load: `dotkv bench` (updates through n1), plus a writer that records what was
    // acknowledged.
    let mut bench = Command::new(binary("dotkv"))
        .args(["--node", &addrs[0], "--json", "bench", "--workload", "w"])
        .args(["--keys", "500", "--value-size", "256", "--concurrency", "4"])
        .args(["--duration", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run dotkv bench");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let writer = {
        let (stop, acknowledged, addr) = (
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
            addrs[0].clone(),
        );
        runtime.spawn(async move {
            let client = Client::connect(&addr, Duration::from_secs(5))
                .await
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("proc-{i}"), format!("value-{i}"));
                if client.put(key.clone(), value.clone(), None).await.is_ok() {
                    acknowledged.lock().unwrap().insert(key, value);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // n4 starts alone (a cluster of its own), then joins n1's.
    let mut n4 = start("n4", &addrs[3], &data("n4"), None);
    ok(&addrs[3], &["join", &addrs[0], "--wait"]);
    assert!(
        eventually(WAIT, || settled_with(&addrs[0], &["n1", "n2", "n3", "n4"])),
        "n4 did not end up in the ring"
    );
    let ring = client_json(&addrs[0], &["ring"]);
    assert!(ring.to_string().contains("\"n4\""), "{ring}");
    // A node that is a member already cannot join again.
    let (success, json) = client_run(&addrs[3], &["join", &addrs[1]], b"");
    assert!(!success && json["kind"] == "invalid_argument", "{json}");

    // n2 leaves: its partitions move, then it exits 0.
    ok(&addrs[1], &["leave", "--wait"]);
    let status = n2.wait_exit(WAIT);
    assert!(status.success(), "n2 exits 0 after leaving: {status:?}");
    assert!(
        n2.log_text().contains("left the cluster"),
        "{}",
        n2.log_text()
    );

    // n3 dies for good and is removed: its replicas are rebuilt from n1 and n4.
    n3.signal("KILL");
    ok(&addrs[0], &["remove", "n3", "--wait"]);
    assert!(
        eventually(WAIT, || settled_with(&addrs[0], &["n1", "n4"])),
        "the ring did not settle on n1 and n4"
    );

    stop.store(true, Ordering::Relaxed);
    runtime.block_on(writer).unwrap();
    let _ = bench.kill();
    let _ = bench.wait();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "only {} writes",
        acknowledged.len()
    );
    let missing: Vec<&String> = runtime.block_on(async {
        let client = Client::connect(&addrs[3], Duration::from_secs(5))
            .await
            .unwrap();
        let mut missing = Vec::new();
        for (key, value) in &acknowledged {
            let read = client.get(key.clone()).await.unwrap();
            if !read.values.iter().any(|v| v == value.as_bytes()) {
                missing.push(key);
            }
        }
        missing
    });
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are missing, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    drop(n1);
    n4.stop(WAIT);
}
