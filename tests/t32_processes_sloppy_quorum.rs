//! Sloppy quorum and hinted handoff with real processes on loopback: 5 `dotkv-server`s,
//! N = 3. Two nodes are killed (`kill -9`) and 1 000 keys are written with W = 2 (all
//! succeed, through a client given a dead node first); after the restart every key is on
//! its 3 owners and no hint is left. Then a fallback holding hints is killed before it
//! could deliver them; after its restart it still delivers them.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Server, client_json, client_run, eventually};
use dotkv_rpc::FailoverClient;

const WAIT: Duration = Duration::from_secs(60);

struct Node {
    id: String,
    addr: String,
    dir: String,
    server: Option<Server>,
}

fn start(id: &str, addr: &str, dir: &str, seed: Option<&str>) -> Server {
    let envs = [
        ("DOTKV_MEMBERSHIP__GOSSIP_INTERVAL_MS", "100"),
        ("DOTKV_HANDOFF__INTERVAL_MS", "100"),
    ];
    common::start_node("test", id, addr, dir, seed, &envs, WAIT)
}

/// Hints each running node holds, by node id; `None` for a node that does not answer.
fn hints(nodes: &[Node]) -> BTreeMap<String, Option<u64>> {
    let mut held = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.server.is_some()) {
        let (ok, status) = client_run(&node.addr, &["status"], b"");
        if !ok {
            held.insert(node.id.clone(), None);
            continue;
        }
        let count: u64 = status["hints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["keys"].as_u64())
            .sum();
        held.insert(node.id.clone(), Some(count));
    }
    held
}

/// Whether every running node answers and holds no hint.
fn drained(nodes: &[Node]) -> bool {
    hints(nodes).values().all(|&n| n == Some(0))
}

/// Whether every key has its value on its 3 primaries and on no fallback.
fn placed(client: &FailoverClient, runtime: &tokio::runtime::Runtime, keys: &[String]) -> bool {
    common::every_key(client, runtime, keys, |key, view| {
        let primaries = view
            .replicas
            .iter()
            .filter(|r| r.role == "primary" && r.values.iter().any(|v| v == key.as_bytes()))
            .count();
        primaries == 3 && view.replicas.iter().all(|r| r.role != "fallback")
    })
}

fn write(client: &FailoverClient, runtime: &tokio::runtime::Runtime, keys: &[String]) {
    runtime.block_on(async {
        for key in keys {
            let request = dotkv_replication::PutRequest::new(key.clone(), key.clone()).with_w(2);
            client
                .call(|c| {
                    let request = request.clone();
                    async move { c.put_with(request).await }
                })
                .await
                .unwrap_or_else(|e| panic!("{key}: W = 2 with two nodes down: {e}"));
        }
    });
}

#[test]
fn writes_survive_two_killed_nodes_and_hints_reach_them_even_after_a_fallback_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=5 {
        let id = format!("n{i}");
        let addr = format!("127.0.0.1:{}", common::free_port());
        let data = dir.path().join(&id).to_str().unwrap().to_owned();
        let seed = nodes.first().map(|n| n.addr.clone());
        let server = start(&id, &addr, &data, seed.as_deref());
        nodes.push(Node {
            id,
            addr,
            dir: data,
            server: Some(server),
        });
    }
    let settled = eventually(WAIT, || common::settled(&nodes[0].addr, 5));
    assert!(settled, "the five nodes did not settle");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Kill n4 and n5; the client is given n4 first, so every request fails over to n1.
    for i in [3, 4] {
        nodes[i].server.take().unwrap().signal("KILL");
    }
    let client = FailoverClient::new(
        &[
            nodes[3].addr.clone(),
            nodes[0].addr.clone(),
            nodes[1].addr.clone(),
        ],
        Duration::from_secs(5),
    )
    .unwrap();
    let keys: Vec<String> = (0..1000).map(|i| format!("sloppy-{i}")).collect();
    write(&client, &runtime, &keys);
    assert!(
        hints(&nodes).values().flatten().sum::<u64>() > 0,
        "fallbacks hold hints"
    );

    for i in [3, 4] {
        let (id, addr, dir) = (
            nodes[i].id.clone(),
            nodes[i].addr.clone(),
            nodes[i].dir.clone(),
        );
        nodes[i].server = Some(start(&id, &addr, &dir, None));
    }
    assert!(
        eventually(WAIT, || drained(&nodes)),
        "hints left: {:?}",
        hints(&nodes)
    );
    assert!(
        eventually(WAIT, || placed(&client, &runtime, &keys)),
        "a key is not on its 3 owners"
    );
    let (ok, json) = client_run(&nodes[0].addr, &["replicas", &keys[7]], b"");
    assert!(ok, "{json}");
    assert_eq!(json["replicas"].as_array().unwrap().len(), 3, "{json}");

    // n2 is killed; writes go to fallbacks; the fallback holding most hints is killed
    // before n2 returns; after its restart it still delivers them.
    nodes[1].server.take().unwrap().signal("KILL");
    let more: Vec<String> = (0..200).map(|i| format!("later-{i}")).collect();
    write(&client, &runtime, &more);
    let (holder, count) = hints(&nodes)
        .into_iter()
        .filter_map(|(id, n)| Some((id, n?)))
        .max_by_key(|(_, n)| *n)
        .expect("a node answers");
    assert!(count > 0, "no hints for n2");
    let holder = nodes.iter().position(|n| n.id == holder).unwrap();
    nodes[holder].server.take().unwrap().signal("KILL");
    let (id, addr, dir) = (
        nodes[1].id.clone(),
        nodes[1].addr.clone(),
        nodes[1].dir.clone(),
    );
    nodes[1].server = Some(start(&id, &addr, &dir, None));
    let (id, addr, dir) = (
        nodes[holder].id.clone(),
        nodes[holder].addr.clone(),
        nodes[holder].dir.clone(),
    );
    nodes[holder].server = Some(start(&id, &addr, &dir, None));
    assert!(
        eventually(WAIT, || drained(&nodes)),
        "hints left after the fallback's restart: {:?}",
        hints(&nodes)
    );
    let all: Vec<String> = keys.iter().chain(&more).cloned().collect();
    assert!(
        eventually(WAIT, || placed(&client, &runtime, &all)),
        "a key is not on its 3 owners"
    );

    // A forwarded write waits for the client's deadline, not a peer call's: with an owner
    // stopped (SIGSTOP), the coordinator needs the 2 s peer deadline before a fallback
    // takes its place; the node that forwarded the write keeps waiting and succeeds.
    let key = "forwarded";
    let view = client_json(&nodes[0].addr, &["replicas", key]);
    let owners: Vec<&str> = view["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "primary")
        .filter_map(|r| r["node"].as_str())
        .collect();
    let outsider = nodes
        .iter()
        .find(|n| !owners.contains(&n.id.as_str()))
        .unwrap();
    let stopped = nodes.iter().find(|n| n.id == owners[1]).unwrap();
    stopped.server.as_ref().unwrap().signal("STOP");
    let output = std::process::Command::new(common::binary("dotkv"))
        .args(["--node", &outsider.addr, "--json", "--timeout", "8000"])
        .args(["put", key, "v", "--w", "3"])
        .output()
        .expect("run dotkv");
    stopped.server.as_ref().unwrap().signal("CONT");
    assert!(
        output.status.success(),
        "the forwarded W = 3 write failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    for node in &mut nodes {
        if let Some(mut server) = node.server.take() {
            server.stop(WAIT);
        }
    }
}
