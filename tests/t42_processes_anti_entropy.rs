//! Anti-entropy with real processes on loopback: 3 `dotkv-server`s, N = 3. A node is
//! killed (`kill -9`), its data dir deleted, and it is restarted empty; without any read,
//! `dotkv replicas` shows every key back on it, and `dotkv aae` shows the repairs.

mod common;

use std::time::Duration;

use common::{client_json, eventually};
use dotkv_rpc::FailoverClient;

const WAIT: Duration = Duration::from_secs(90);

fn start(id: &str, addr: &str, dir: &str, seed: Option<&str>) -> common::Server {
    let envs = [
        ("DOTKV_MEMBERSHIP__GOSSIP_INTERVAL_MS", "100"),
        ("DOTKV_HANDOFF__INTERVAL_MS", "100"),
        ("DOTKV_AAE__INTERVAL_MS", "200"),
    ];
    common::start_node("test", id, addr, dir, seed, &envs, WAIT)
}

/// Whether the replica `node` holds `key`'s value, for every key.
fn held_by(
    client: &FailoverClient,
    runtime: &tokio::runtime::Runtime,
    keys: &[String],
    node: &str,
) -> bool {
    common::every_key(client, runtime, keys, |key, view| {
        view.replicas
            .iter()
            .any(|r| r.node == node && r.values.iter().any(|v| v == key.as_bytes()))
    })
}

#[test]
fn a_node_restarted_on_an_empty_data_dir_gets_every_key_back_without_reads() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect();
    let data = |id: &str| dir.path().join(id).to_str().unwrap().to_owned();
    let _n1 = start("n1", &addrs[0], &data("n1"), None);
    let _n2 = start("n2", &addrs[1], &data("n2"), Some(&addrs[0]));
    let mut n3 = start("n3", &addrs[2], &data("n3"), Some(&addrs[0]));
    let settled = eventually(WAIT, || common::settled(&addrs[0], 3));
    assert!(settled, "the three nodes did not settle");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = FailoverClient::new(&addrs[..2], Duration::from_secs(5)).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("aae-{i}")).collect();
    runtime.block_on(async {
        for key in &keys {
            let request = dotkv_replication::PutRequest::new(key.clone(), key.clone()).with_w(3);
            client
                .call(|c| {
                    let request = request.clone();
                    async move { c.put_with(request).await }
                })
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    });
    assert!(held_by(&client, &runtime, &keys, "n3"));

    // A lost disk: kill -9, delete the data dir, start again with a seed.
    n3.signal("KILL");
    let _ = n3.wait_exit(WAIT);
    std::fs::remove_dir_all(data("n3")).unwrap();
    let _n3 = start("n3", &addrs[2], &data("n3"), Some(&addrs[0]));

    assert!(
        eventually(WAIT, || held_by(&client, &runtime, &keys, "n3")),
        "n3 did not get its keys back"
    );
    let aae = client_json(&addrs[2], &["aae"]);
    let repaired_on = |addr: &str| client_json(addr, &["aae"])["keys_repaired"].as_u64();
    let total: u64 = addrs.iter().filter_map(|a| repaired_on(a)).sum();
    assert!(total >= keys.len() as u64, "repaired {total}: {aae}");
    assert_eq!(aae["trees_built"], aae["partitions"], "{aae}");
}
