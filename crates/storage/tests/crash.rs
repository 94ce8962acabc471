//! Crash durability: a child process writes with `storage.sync = true`, prints each
//! acknowledged write, and is killed with SIGKILL mid-stream. Reopening the store must find
//! every acknowledged write, and every batch whole or not at all.
//!
//! The child is this test binary itself, re-run with `DOTKV_CRASH_CHILD` set so that only
//! [`crash_child`] does anything.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use dotkv_storage::{Keyspace, StorageConfig, StorageKind, WriteBatch, keys};

const CHILD_ENV: &str = "DOTKV_CRASH_CHILD";
/// Acknowledgements to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 400;
/// The child stops by itself after this many batches, so the test is bounded even if the
/// parent never kills it.
const CHILD_MAX_BATCHES: u32 = 50_000;
const WRITERS: u32 = 16;

fn batch_key(i: u32, half: &[u8]) -> Vec<u8> {
    keys::object_key(i % 8, &[&i.to_be_bytes()[..], half].concat())
}

/// The child side: writes batches of two keys from 16 tasks and prints `ack N` for each
/// batch the store acknowledged. Does nothing unless `DOTKV_CRASH_CHILD` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (kind, dir) = spec.split_once(':').expect("DOTKV_CRASH_CHILD=kind:dir");
    let config = StorageConfig {
        sync: true,
        ..StorageConfig::with_backend(kind.parse().unwrap())
    };
    let store = dotkv_storage::open(Path::new(dir), &config)
        .await
        .expect("child opens store");
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (store, next) = (Arc::clone(&store), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= CHILD_MAX_BATCHES {
                    return;
                }
                let mut batch = WriteBatch::default();
                batch.put(
                    Keyspace::Objects,
                    batch_key(i, b"a"),
                    i.to_be_bytes().to_vec(),
                );
                batch.put(
                    Keyspace::Objects,
                    batch_key(i, b"b"),
                    i.to_be_bytes().to_vec(),
                );
                store.write(batch).await.expect("child write");
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {i}")
                    .and_then(|()| out.flush())
                    .expect("child stdout");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn crash_and_recover(kind: StorageKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, format!("{kind}:{}", dir.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        if let Some(i) = line.unwrap().strip_prefix("ack ") {
            acked.push(i.parse::<u32>().unwrap());
            if acked.len() == ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    assert_eq!(
        acked.len(),
        ACKS_BEFORE_KILL,
        "the child stopped before being killed"
    );
    child.kill().expect("SIGKILL the child"); // std sends SIGKILL on Unix
    child.wait().unwrap();
    // Acknowledgements printed before the kill are still in the pipe.
    acked.extend(
        lines
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("ack ")?.parse::<u32>().ok()),
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = StorageConfig::with_backend(kind);
        let store = dotkv_storage::open(dir.path(), &config)
            .await
            .expect("reopen after crash");
        for &i in &acked {
            let a = store
                .get(Keyspace::Objects, &batch_key(i, b"a"))
                .await
                .unwrap();
            assert_eq!(
                a,
                Some(i.to_be_bytes().to_vec()),
                "acknowledged batch {i} lost"
            );
        }
        let max = acked.iter().max().copied().unwrap_or(0) + 4 * WRITERS;
        let mut present = 0;
        for i in 0..max {
            let a = store
                .get(Keyspace::Objects, &batch_key(i, b"a"))
                .await
                .unwrap();
            let b = store
                .get(Keyspace::Objects, &batch_key(i, b"b"))
                .await
                .unwrap();
            assert_eq!(a.is_some(), b.is_some(), "batch {i} was applied in part");
            present += usize::from(a.is_some());
        }
        assert!(present >= acked.len());
        store.close().await.unwrap();
    });
}

#[test]
fn crash_lmdb_keeps_acknowledged_writes() {
    crash_and_recover(StorageKind::Lmdb);
}

#[test]
fn crash_sqlite_keeps_acknowledged_writes() {
    crash_and_recover(StorageKind::Sqlite);
}
