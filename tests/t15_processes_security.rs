//! Security of real `dotkv-server` processes, configured as an operator would: certificates
//! from `dotkv cert`, `security.*` and the tokens from the environment. A node with another
//! CA's certificate cannot join and is refused in the log with its address; the CLI without
//! a token, or with one that grants too little, fails with kind `unauthorized` and a non-zero
//! exit; the HTTPS gateway answers 401 and 403 the same way.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::http::https;
use common::{Server, binary, eventually, free_port, start_node};

const WAIT: Duration = Duration::from_secs(30);
const READER: &str = "reader-0123456789abcdef";
const WRITER: &str = "writer-0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef";

/// `dotkv cert --dir DIR NODES...`.
fn make_certs(dir: &Path, nodes: &[&str]) {
    let output = Command::new(binary("dotkv"))
        .arg("cert")
        .arg("--dir")
        .arg(dir)
        .args(nodes)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// Starts node `id` with TLS from `certs` (its own certificate) and the three tokens.
fn start_secure(
    certs: &Path,
    id: &str,
    addr: &str,
    data: &Path,
    seed: Option<&str>,
    http: &str,
) -> Server {
    let file = |name: String| certs.join(name).display().to_string();
    let (ca, cert, key) = (
        file("ca.pem".into()),
        file(format!("{id}.pem")),
        file(format!("{id}.key")),
    );
    let tokens = format!(
        r#"[{{token="{READER}",access="read-only"}},{{token="{WRITER}",access="read-write"}},{{token="{ADMIN}",access="admin"}}]"#
    );
    start_node(
        "test",
        id,
        addr,
        &data.join(id).display().to_string(),
        seed,
        &[
            ("DOTKV_SECURITY__TLS", "true"),
            ("DOTKV_SECURITY__CA", &ca),
            ("DOTKV_SECURITY__CERT", &cert),
            ("DOTKV_SECURITY__KEY", &key),
            ("DOTKV_SECURITY__TOKENS", &tokens),
            ("DOTKV_HTTP__LISTEN", http),
        ],
        WAIT,
    )
}

/// `dotkv --node ADDR --json --ca CA [--token T] ARGS`: whether it exited 0, its JSON.
fn cli(
    addr: &str,
    ca: Option<&Path>,
    token: Option<&str>,
    args: &[&str],
) -> (bool, serde_json::Value) {
    let mut command = Command::new(binary("dotkv"));
    command
        .env_remove("DOTKV_CA")
        .env_remove("DOTKV_TOKEN")
        .args(["--node", addr, "--json", "--timeout", "5000"]);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let output = command.args(args).output().unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "dotkv {args:?}: no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.success(), json)
}

fn ids(status: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn credentials_keep_out_intruders_and_limit_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, other, data) = (
        tmp.path().join("certs"),
        tmp.path().join("other"),
        tmp.path().join("data"),
    );
    make_certs(&certs, &["n1", "n2"]);
    // Another CA's certificate: a wrong credential.
    make_certs(&other, &["rogue"]);
    let ca = certs.join("ca.pem");
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let https_addr = format!("127.0.0.1:{}", free_port());
    let mut n1 = start_secure(&certs, "n1", &addrs[0], &data, None, &https_addr);
    let http2 = format!("127.0.0.1:{}", free_port());
    let _n2 = start_secure(&certs, "n2", &addrs[1], &data, Some(&addrs[0]), &http2);
    let admin = |args: &[&str]| cli(&addrs[0], Some(&ca), Some(ADMIN), args);
    assert!(
        eventually(WAIT, || admin(&["status"]).1["nodes"]
            .as_array()
            .is_some_and(
                |n| n.iter().filter(|n| n["status"] == "up").count() == 2
            )),
        "n1 and n2 form a cluster over mutual TLS"
    );

    // The rogue, with another CA's certificate, tries to join through n1.
    let rogue_http = format!("127.0.0.1:{}", free_port());
    let _rogue = start_secure(
        &other,
        "rogue",
        &addrs[2],
        &data,
        Some(&addrs[0]),
        &rogue_http,
    );
    assert!(
        n1.wait_for_log("refused", WAIT)
            .is_some_and(|line| line.contains("peer=127.0.0.1:") && line.contains("TLS")),
        "n1 logs the refused handshake with the peer's address: {}",
        n1.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ids(&admin(&["status"]).1),
        ["n1", "n2"],
        "the rogue is not a member"
    );

    // Clients: no token, a wrong token, too little access.
    for token in [None, Some("not-a-token-0123456789")] {
        let (ok, json) = cli(&addrs[0], Some(&ca), token, &["get", "k"]);
        assert!(!ok && json["kind"] == "unauthorized", "{token:?}: {json}");
    }
    let (ok, json) = cli(&addrs[0], Some(&ca), Some(READER), &["put", "k", "v"]);
    assert!(!ok && json["kind"] == "unauthorized", "{json}");
    let (ok, json) = cli(&addrs[0], Some(&ca), Some(WRITER), &["put", "k", "v"]);
    assert!(ok, "{json}");
    let (ok, json) = cli(&addrs[0], Some(&ca), Some(READER), &["get", "k"]);
    assert!(ok && json["values"] == serde_json::json!(["v"]), "{json}");
    let (ok, json) = cli(&addrs[0], Some(&ca), Some(WRITER), &["remove", "rogue"]);
    assert!(
        !ok && json["kind"] == "unauthorized",
        "membership needs admin: {json}"
    );
    // Without --ca the client speaks plaintext, which the node refuses.
    let (ok, json) = cli(&addrs[0], None, Some(ADMIN), &["get", "k"]);
    assert!(
        !ok && json["kind"] == "unavailable" && json["error"].as_str().unwrap().contains("--ca"),
        "{json}"
    );

    // The gateway: HTTPS, bearer tokens, 401 without, 403 with too little.
    let bearer = |token: &str| format!("Bearer {token}");
    let response = https(&ca, &https_addr, "GET", "/kv/k", &[], b"");
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["kind"], "unauthorized");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    let reader = bearer(READER);
    let response = https(
        &ca,
        &https_addr,
        "PUT",
        "/kv/k",
        &[("Authorization", &reader)],
        b"w",
    );
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["kind"], "unauthorized");
    let writer = bearer(WRITER);
    let response = https(
        &ca,
        &https_addr,
        "PUT",
        "/kv/h",
        &[("Authorization", &writer)],
        b"over https",
    );
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let response = https(
        &ca,
        &https_addr,
        "GET",
        "/kv/h",
        &[("Authorization", &reader)],
        b"",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["values"], serde_json::json!(["over https"]));
}
