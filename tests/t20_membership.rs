//! Membership with real processes on loopback: three `dotkv-server`s started as a chain
//! (n2 seeds n1, n3 seeds n2) all see three members up; a SIGSTOPped node is seen down by
//! the others and up again after SIGCONT; a node restarted without seeds rejoins with its
//! old id from its persisted view.

mod common;

use std::time::Duration;

use common::{Server, client_json, eventually};

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    id: &'static str,
    addr: String,
    dir: String,
    server: Server,
}

fn start(id: &'static str, addr: &str, dir: &str, seeds: Option<&str>, with_id: bool) -> Server {
    let mut args = vec!["--profile", "test", "--listen", addr, "--data-dir", dir];
    if with_id {
        args.extend(["--node-id", id]);
    }
    if let Some(seeds) = seeds {
        args.extend(["--seeds", seeds]);
    }
    Server::start_ready(&args, WAIT)
}

/// The status of member `id` as the node at `addr` reports it, if listed.
fn status_of(addr: &str, id: &str) -> Option<String> {
    let status = client_json(addr, &["status"]);
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id)
        .map(|n| n["status"].as_str().unwrap_or("").to_owned())
}

fn all_up(addr: &str, ids: &[&str]) -> bool {
    ids.iter()
        .all(|id| status_of(addr, id).as_deref() == Some("up"))
}

#[test]
fn a_chain_converges_detects_a_stopped_node_and_a_restart_keeps_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["n1", "n2", "n3"];
    let mut nodes: Vec<Node> = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let addr = format!("127.0.0.1:{}", common::free_port());
        let data = dir.path().join(id).to_str().unwrap().to_owned();
        let seed = nodes.get(i.wrapping_sub(1)).map(|n: &Node| n.addr.clone());
        let server = start(id, &addr, &data, seed.as_deref(), true);
        nodes.push(Node {
            id,
            addr,
            dir: data,
            server,
        });
    }
    for node in &nodes {
        assert!(
            eventually(WAIT, || all_up(&node.addr, &ids)),
            "{} never saw all three up",
            node.id
        );
    }
    let ring = client_json(&nodes[0].addr, &["ring"]);
    assert_eq!(ring["partitions"].as_array().unwrap().len(), 256);
    let digests: Vec<_> = nodes
        .iter()
        .map(|n| client_json(&n.addr, &["ring"])["digest"].clone())
        .collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "rings differ: {digests:?}"
    );

    // SIGSTOP n2: n1 and n3 convict it; SIGCONT: it is up again.
    nodes[1].server.signal("STOP");
    for observer in [&nodes[0], &nodes[2]] {
        let down = eventually(WAIT, || {
            status_of(&observer.addr, "n2").as_deref() == Some("down")
        });
        assert!(down, "{} never saw the stopped n2 down", observer.id);
    }
    nodes[1].server.signal("CONT");
    for observer in [&nodes[0], &nodes[2]] {
        let up = eventually(WAIT, || {
            status_of(&observer.addr, "n2").as_deref() == Some("up")
        });
        assert!(up, "{} never saw the resumed n2 up", observer.id);
    }

    // Restart n3 with neither seeds nor --node-id: it comes back as n3 from its data dir.
    let n3 = nodes.pop().unwrap();
    n3.server.signal("TERM");
    let Node {
        id,
        addr,
        dir: data,
        mut server,
    } = n3;
    assert!(server.wait_exit(WAIT).success(), "{}", server.log_text());
    let mut restarted = start(id, &addr, &data, None, false);
    let ready = restarted
        .log
        .iter()
        .find(|l| l.contains("node ready"))
        .cloned()
        .unwrap_or_default();
    assert!(
        ready.contains("n3"),
        "restarted node has another id: {ready}"
    );
    assert!(
        eventually(WAIT, || all_up(&addr, &ids)),
        "restarted n3 never saw all three up"
    );
    assert!(
        eventually(WAIT, || all_up(&nodes[0].addr, &ids)),
        "n1 never saw the restarted n3 up"
    );
    restarted.stop(WAIT);
    for node in &mut nodes {
        node.server.stop(WAIT);
    }
}
