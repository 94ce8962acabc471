//! Shared helpers of the cluster tests: locating the built binaries and running
//! `dotkv-server` processes that are always cleaned up.
#![allow(dead_code, unreachable_pub)] // each test binary uses part of this module

pub mod http;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The path of a binary of `dotkv-bins`.
///
/// `cargo test` does not rebuild another package's binaries, so the first call in a test
/// process runs `cargo build -p dotkv-bins` (a no-op when they are up to date): a test
/// never runs a stale server.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec!["build", "--quiet", "-p", "dotkv-bins", "--bins"];
        if !cfg!(debug_assertions) {
            args.push("--release"); // a release test run looks in target/release
        }
        let status = Command::new(cargo)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building dotkv-bins failed");
    });
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    dir.join(name)
}

/// A free loopback port (bound once, then released for the server to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// `dotkv --node ADDR --json --timeout MS`, without the caller's `DOTKV_CA` and
/// `DOTKV_TOKEN` (a test passes `--ca` and `--token` itself when it wants them).
fn cli(addr: &str, timeout_ms: &str) -> Command {
    let mut command = Command::new(binary("dotkv"));
    command
        .env_remove("DOTKV_CA")
        .env_remove("DOTKV_TOKEN")
        .args(["--node", addr, "--json", "--timeout", timeout_ms]);
    command
}

/// Runs `dotkv --node ADDR --json ARGS` and parses its output.
pub fn client_json(addr: &str, args: &[&str]) -> serde_json::Value {
    let output = cli(addr, "2000").args(args).output().expect("run dotkv");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "dotkv {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs `dotkv --node ADDR --json ARGS` with `stdin` as its input; returns whether it
/// exited 0, and its output parsed.
pub fn client_run(addr: &str, args: &[&str], stdin: &[u8]) -> (bool, serde_json::Value) {
    use std::io::Write;
    let mut child = cli(addr, "5000")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run dotkv");
    let mut input = child.stdin.take().expect("piped stdin");
    // A refused argument may end the client before it reads stdin: ignore a broken pipe.
    let _ = input.write_all(stdin);
    drop(input);
    parsed(args, child.wait_with_output().expect("wait for dotkv"))
}

/// A finished `dotkv --json` run: whether it exited 0, and its output parsed.
fn parsed(args: &[&str], output: std::process::Output) -> (bool, serde_json::Value) {
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "dotkv {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.success(), json)
}

/// [`client_run`] for a command that may wait (`--wait`): killed, and the test failed,
/// when it has not finished within `timeout`.
pub fn client_run_within(
    addr: &str,
    args: &[&str],
    timeout: Duration,
) -> (bool, serde_json::Value) {
    let mut child = cli(addr, "5000")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run dotkv");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dotkv {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    parsed(args, child.wait_with_output().expect("wait for dotkv"))
}

/// Polls `check` every 200 ms until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    check()
}

/// Starts node `id` (`--profile`, `--node-id`, `--listen`, `--data-dir`, and `--seeds` when
/// `seed` is given) with `envs`, and waits for its "node ready" line.
pub fn start_node(
    profile: &str,
    id: &str,
    addr: &str,
    dir: &str,
    seed: Option<&str>,
    envs: &[(&str, &str)],
    timeout: Duration,
) -> Server {
    let mut args = vec![
        "--profile",
        profile,
        "--node-id",
        id,
        "--listen",
        addr,
        "--data-dir",
        dir,
    ];
    if let Some(seed) = seed {
        args.extend(["--seeds", seed]);
    }
    let mut server = Server::start(&args, envs);
    assert!(
        server.wait_for_log("node ready", timeout).is_some(),
        "{id} did not get ready: {}",
        server.log_text()
    );
    server
}

/// A `dotkv-server` child process. Dropping it kills the process (SIGKILL) if it still runs.
pub struct Server {
    child: Child,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl Server {
    /// Starts `dotkv-server ARGS` with `envs`, from the workspace root (so that
    /// `config/dotkv.toml` is found).
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_in(None, args, envs)
    }

    /// [`start`](Self::start) inside network namespace `netns` (`ip netns exec`, which
    /// execs the server: the child's PID is the server's).
    pub fn start_in(netns: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let server = binary("dotkv-server");
        let mut command = match netns {
            None => Command::new(server),
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(server);
                command
            }
        };
        command
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .env_remove("DOTKV_PROFILE")
            .env("DOTKV_LOG", "info")
            // Servers in tests talk plaintext on loopback whatever their profile, unless
            // a test turns security on (its `envs` come after, and win).
            .env("DOTKV_SECURITY__TLS", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn dotkv-server");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stderr,
            log: Vec::new(),
        }
    }

    /// Starts `dotkv-server ARGS` and waits (up to `timeout`) for its "node ready" line;
    /// panics with its log if it does not come.
    pub fn start_ready(args: &[&str], timeout: Duration) -> Self {
        let mut server = Self::start(args, &[]);
        assert!(
            server.wait_for_log("node ready", timeout).is_some(),
            "dotkv-server {args:?} did not get ready: {}",
            server.log_text()
        );
        server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to `timeout`) for a stderr line containing `needle`, and returns it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends `signal` (e.g. "TERM", "STOP") to this process, by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits (up to `timeout`) for the process to exit, then drains its stderr.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "dotkv-server did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        status
    }

    /// Stops the process with SIGTERM and asserts (up to `timeout`) that it exits cleanly,
    /// with its log in the failure message.
    pub fn stop(&mut self, timeout: Duration) {
        self.signal("TERM");
        let status = self.wait_exit(timeout);
        assert!(
            status.success(),
            "clean exit on SIGTERM: {status:?}\n{}",
            self.log_text()
        );
    }

    /// Everything the process wrote to stderr so far, one string.
    pub fn log_text(&self) -> String {
        self.log.join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
pub mod harness;

/// Whether `check` holds for the replicas of every key, as `dotkv replicas` shows them
/// through `client` (false as soon as a call fails or a key fails the check).
pub fn every_key(
    client: &dotkv_rpc::FailoverClient,
    runtime: &tokio::runtime::Runtime,
    keys: &[String],
    check: impl Fn(&str, &dotkv_replication::ReplicasReply) -> bool,
) -> bool {
    runtime.block_on(async {
        for key in keys {
            let view = client
                .call(|c| {
                    let key = key.clone();
                    async move { c.replicas(key).await }
                })
                .await;
            if !view.is_ok_and(|view| check(key, &view)) {
                return false;
            }
        }
        true
    })
}

/// Whether the node at `addr` sees `members` members up, in a ring with no transition
/// pending.
pub fn settled(addr: &str, members: usize) -> bool {
    let status = client_json(addr, &["status"]);
    let up = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["status"] == "up")
        .count();
    up == members && status["ring"]["pending"].is_null()
}

/// A small deterministic generator (SplitMix64): the seed decides every choice, so a
/// failing run reruns the same way.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The `values` of a `get --json` (CLI or HTTP), sorted: siblings have no order.
pub fn sorted_values(json: &serde_json::Value) -> Vec<String> {
    let mut values: Vec<String> = json["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect();
    values.sort();
    values
}
