//! `dotkv-server` as a process: it opens the store its profile selects, shuts down cleanly
//! on SIGTERM, reopens with its data, and refuses bad configuration with one clear line.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Server;
use dotkv::storage::{StorageConfig, StorageExt, StorageKind};

const START: Duration = Duration::from_secs(30);

fn start(profile: &str, dir: &Path, extra: &[&str]) -> Server {
    let dir = dir.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut args = vec!["--profile", profile, "--data-dir", dir, "--listen", &listen];
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

async fn read_back(dir: &Path, kind: StorageKind) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let store = dotkv::storage::open(dir, &StorageConfig::with_backend(kind))
        .await
        .unwrap();
    let values = (
        store.get_meta("node_id").await.unwrap(),
        store.get_object(3, b"k").await.unwrap(),
    );
    store.close().await.unwrap();
    values
}

/// Start, SIGTERM, check the store on disk, restart, SIGTERM again.
async fn lifecycle(profile: &str, kind: StorageKind, file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // An object written before the node ever ran must survive the node's open and close.
    let store = dotkv::storage::open(&data, &StorageConfig::with_backend(kind))
        .await
        .unwrap();
    store.put_object(3, b"k", b"before".to_vec()).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let mut server = start(profile, &data, &["--node-id", "n1"]);
    let ready = server
        .wait_for_log("node ready", START)
        .unwrap_or_else(|| server.log_text());
    assert!(ready.contains(&format!("backend={}", kind)), "{ready}");
    assert!(ready.contains("objects=1"), "{ready}");
    assert!(data.join(file).exists(), "{profile} should create {file}");
    server.stop(START);
    assert!(server.log_text().contains("store closed"));

    assert_eq!(
        read_back(&data, kind).await,
        (Some(b"n1".to_vec()), Some(b"before".to_vec()))
    );

    // Restart without --node-id: the node keeps its id and its data.
    let mut server = start(profile, &data, &[]);
    let ready = server
        .wait_for_log("node ready", START)
        .unwrap_or_else(|| server.log_text());
    assert!(
        ready.contains("node_id=\"n1\"") || ready.contains("node_id=n1"),
        "{ready}"
    );
    server.signal("INT");
    assert!(server.wait_exit(START).success(), "{}", server.log_text());
}

#[tokio::test]
async fn sqlite_profile_creates_and_reopens_a_sqlite_store() {
    lifecycle("sqlite", StorageKind::Sqlite, "dotkv.sqlite").await;
}

#[tokio::test]
async fn default_profile_creates_and_reopens_an_lmdb_store() {
    lifecycle("default", StorageKind::Lmdb, "data.mdb").await;
}

/// Runs the server with a bad setting; it must exit non-zero at once, and its stderr must
/// hold a line with every `needle`.
fn refused(args: &[&str], envs: &[(&str, &str)], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut all = vec!["--data-dir", data.to_str().unwrap(), "--listen", &listen];
    all.extend_from_slice(args);
    let mut server = Server::start(&all, envs);
    let status = server.wait_exit(START);
    assert!(!status.success(), "must fail: {args:?} {envs:?}");
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|line| needles.iter().all(|n| line.contains(n))),
        "no line of stderr has all of {needles:?}:\n{log}"
    );
}

#[test]
fn unknown_backend_names_the_key_and_the_accepted_values() {
    refused(
        &[],
        &[("DOTKV_STORAGE__BACKEND", "rocksdb")],
        &["storage.backend", "rocksdb", "lmdb", "sqlite", "memory"],
    );
}

#[test]
fn other_invalid_values_name_their_key() {
    refused(&[], &[("DOTKV_WEIGHT", "0")], &["weight = 0"]);
    refused(&[], &[("DOTKV_WEIGHT", "heavy")], &["weight"]);
    refused(
        &[],
        &[("DOTKV_LIMITS__MAX_VALUE_BYTES", "0")],
        &["limits.max_value_bytes"],
    );
    refused(&[], &[("DOTKV_STORAGE__SYNC", "maybe")], &["storage.sync"]);
    refused(
        &[],
        &[("DOTKV_RING__PARTITIONS", "100")],
        &["ring.partitions = 100"],
    );
    refused(
        &[],
        &[("DOTKV_RPC__MAX_FRAME_BYTES", "10")],
        &["rpc.max_frame_bytes = 10"],
    );
    refused(
        &[],
        &[("DOTKV_MEMBERSHIP__PHI_WINDOW", "1")],
        &["membership.phi_window = 1"],
    );
    refused(&["--node-id", "a/b"], &[], &["node_id"]);
    refused(&["--profile", "nosuch"], &[], &["profile `nosuch`"]);
    refused(&["--config", "/nonexistent/dotkv.toml"], &[], &["--config"]);
    refused(
        &[],
        &[("DOTKV_RPC__MAX_CONNECTIONS_PER_IP", "0")],
        &["rpc.max_connections_per_ip = 0"],
    );
}

#[test]
fn security_on_without_usable_certificates_is_refused_naming_the_key() {
    // The default profile turns TLS on: without certificates the node does not start.
    refused(
        &[],
        &[("DOTKV_SECURITY__TLS", "true")],
        &["security.ca", "dotkv cert"],
    );
    let tls = [
        ("DOTKV_SECURITY__TLS", "true"),
        ("DOTKV_SECURITY__CA", "/nonexistent/ca.pem"),
        ("DOTKV_SECURITY__CERT", "/nonexistent/n1.pem"),
        ("DOTKV_SECURITY__KEY", "/nonexistent/n1.key"),
    ];
    refused(&[], &tls, &["security.ca = /nonexistent/ca.pem"]);
    // Tokens without TLS would cross the network in clear, and peers could not be told
    // from clients.
    refused(
        &[],
        &[(
            "DOTKV_SECURITY__TOKENS",
            r#"[{token="0123456789abcdef",access="admin"}]"#,
        )],
        &["security.tokens needs security.tls"],
    );
}

#[tokio::test]
async fn a_data_dir_of_another_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let store = dotkv::storage::open(&data, &StorageConfig::with_backend(StorageKind::Lmdb))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let mut server = start("sqlite", &data, &[]);
    assert!(!server.wait_exit(START).success());
    let log = server.log_text();
    assert!(
        log.contains("holds a lmdb store") && log.contains("--profile lmdb"),
        "{log}"
    );
}

#[test]
fn a_corrupt_store_file_is_reported_not_panicked() {
    for (profile, file) in [("default", "data.mdb"), ("sqlite", "dotkv.sqlite")] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join(file), vec![0x5a; 64 * 1024]).unwrap();
        let mut server = start(profile, &data, &[]);
        assert!(!server.wait_exit(START).success());
        let log = server.log_text();
        assert!(
            log.contains("corrupt") && log.contains(file),
            "{profile}: {log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}
