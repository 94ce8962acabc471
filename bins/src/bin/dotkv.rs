//! `dotkv`: the dotkv client CLI.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dotkv_bins::admin;
use dotkv_bins::bench::{self, BenchOptions};
use dotkv_replication::{GetRequest, PutRequest};
use dotkv_rpc::{Client, Connector, FailoverClient, RpcError};
use serde_json::json;

/// The dotkv client: read and write keys, inspect the cluster, generate load.
///
/// Concurrent writes come back as siblings; pass the context printed by `get` to `put` to
/// replace exactly the values that read saw.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The node to talk to; with several, comma separated, a request goes to the next when
    /// one does not answer. `join`, `leave` and `remove` go to the first.
    #[arg(
        long,
        global = true,
        env = "DOTKV_NODE",
        default_value = "127.0.0.1:7001",
        value_name = "ADDR[,ADDR...]"
    )]
    node: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this many milliseconds.
    #[arg(long, global = true, default_value_t = 5000, value_name = "MS")]
    timeout: u64,
    /// Connect over TLS, verifying the node against this CA certificate (PEM; the
    /// `ca.pem` that `dotkv cert` made). Without it the connection is plaintext, which
    /// only a node with security.tls = false accepts.
    #[arg(long, global = true, env = "DOTKV_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// The client token to present, when the node lists security.tokens.
    #[arg(
        long,
        global = true,
        env = "DOTKV_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read KEY: all its sibling values and the context to write back with.
    Get {
        /// The key.
        key: String,
        /// Replies to wait for (1..=N) [default: replication.r].
        #[arg(long)]
        r: Option<u32>,
        /// Of them, replies that must come from the key's owners, not fallbacks (0 = off)
        /// [default: replication.pr].
        #[arg(long)]
        pr: Option<u32>,
    },
    /// Write VALUE under KEY (`-` reads the value from stdin).
    Put {
        /// The key.
        key: String,
        /// The value, or `-` for stdin.
        value: String,
        /// The context of the read this write supersedes.
        #[arg(long, value_name = "T")]
        context: Option<String>,
        /// Acknowledgements to wait for (1..=N) [default: replication.w].
        #[arg(long)]
        w: Option<u32>,
        /// Of them, acknowledgements that must come from the key's owners, not fallbacks
        /// holding hints (0 = off) [default: replication.pw].
        #[arg(long)]
        pw: Option<u32>,
    },
    /// Delete KEY (writes a tombstone).
    Delete {
        /// The key.
        key: String,
        /// The context of the read this delete supersedes.
        #[arg(long, value_name = "T")]
        context: Option<String>,
        /// Acknowledgements to wait for (1..=N) [default: replication.w].
        #[arg(long)]
        w: Option<u32>,
        /// Of them, acknowledgements that must come from the key's owners (0 = off)
        /// [default: replication.pw].
        #[arg(long)]
        pw: Option<u32>,
    },
    /// Show what each replica of KEY holds now, without repairing anything.
    Replicas {
        /// The key.
        key: String,
    },
    /// Show the members and their liveness as the node sees them.
    Status,
    /// Show the ring: each partition's preference list (and its pending one while a
    /// transition runs).
    Ring,
    /// Show the node's anti-entropy: trees built, and per partition the last exchange
    /// (when, with whom, keys repaired), plus tombstones reaped and pending.
    Aae,
    /// Make the node (--node), alone and empty, join the cluster SEED belongs to.
    ///
    /// It enters as `joining` and owns nothing until the claimant's next ring includes
    /// it; its partitions are then handed to it. A node started with --seeds joins by
    /// itself.
    Join {
        /// The address of a member.
        seed: String,
        /// Show progress until the transition completes.
        #[arg(long)]
        wait: bool,
    },
    /// Make the node (--node) leave the cluster: the next ring excludes it, its partitions
    /// move to their new owners, then it exits.
    Leave {
        /// Show progress until the node has left.
        #[arg(long)]
        wait: bool,
    },
    /// Remove member ID, dead for good: the next ring excludes it and each of its
    /// partition replicas is rebuilt from the surviving replicas.
    Remove {
        /// The member's node id (see `dotkv status`).
        id: String,
        /// Show progress until the transition completes.
        #[arg(long)]
        wait: bool,
    },
    /// Make a cluster CA in DIR (unless DIR/ca.pem exists) and a certificate and key for
    /// each NODE, signed by it: DIR/NODE.pem and DIR/NODE.key.
    ///
    /// A node uses them with security.ca = DIR/ca.pem, security.cert = DIR/NODE.pem,
    /// security.key = DIR/NODE.key; clients with --ca DIR/ca.pem. Each certificate holds
    /// the name `dotkv-node` (what peers and clients verify), localhost, the loopback
    /// addresses and each --host. Keep ca.key offline once the nodes have certificates:
    /// whoever holds it can make members.
    Cert {
        /// Where the files go (created if needed).
        #[arg(long, default_value = "certs")]
        dir: std::path::PathBuf,
        /// Further host names or addresses each certificate is valid for.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// The nodes to make certificates for (their ids, used as file names).
        #[arg(value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Generate load against the cluster and report throughput and latency.
    ///
    /// Loads the key set first (unless --no-load), then runs the workload for --duration
    /// seconds or --ops operations with --concurrency requests in flight.
    Bench(BenchOptions),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::Put { .. } => "put",
            Self::Delete { .. } => "delete",
            Self::Replicas { .. } => "replicas",
            Self::Status => "status",
            Self::Ring => "ring",
            Self::Aae => "aae",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Remove { .. } => "remove",
            Self::Bench(_) => "bench",
            Self::Cert { .. } => "cert",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dotkv_bins::logging::init("warn");
    // The load generator wants every core; one request needs one thread.
    let runtime = if matches!(cli.command, Command::Bench(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            return fail(
                cli.json,
                &format!("cannot start the async runtime: {error}"),
                "internal",
            );
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, kind)) => fail(cli.json, &message, kind),
    }
}

/// Prints an error in the contract's shape and returns the failing exit code.
fn fail(json: bool, message: &str, kind: &str) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({ "error": message, "kind": kind }));
    } else {
        eprintln!("dotkv: {message}");
    }
    ExitCode::FAILURE
}

/// Writes `text` (plus a newline if it lacks one) to stdout. A closed pipe (`| head`) is
/// not an error worth a panic: the reader has what it wanted.
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let newline = if text.ends_with('\n') { "" } else { "\n" };
    let _ = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(newline.as_bytes()));
}

type CliResult = Result<(), (String, &'static str)>;

fn rpc_error(error: RpcError) -> (String, &'static str) {
    match error.kind() {
        // The node says what is missing; the CLI says how to give it.
        "unauthorized" => (format!("{error} (--token, DOTKV_TOKEN)"), error.kind()),
        kind => (error.to_string(), kind),
    }
}

/// Values as the contract prints them: UTF-8 text when they are, base64 otherwise.
fn printable_all(values: &[bytes::Bytes]) -> Vec<String> {
    values.iter().map(|v| dotkv_rpc::printable(v)).collect()
}

/// A value argument: the text itself, or stdin's bytes for `-`.
fn read_value(value: &str) -> Result<Vec<u8>, (String, &'static str)> {
    if value != "-" {
        return Ok(value.as_bytes().to_vec());
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map_err(|e| {
        (
            format!("cannot read the value from stdin: {e}"),
            "invalid_argument",
        )
    })?;
    Ok(bytes)
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("plain data encodes")
}

async fn run(cli: &Cli) -> CliResult {
    let timeout = Duration::from_millis(cli.timeout);
    if let Command::Cert { dir, hosts, nodes } = &cli.command {
        let written = dotkv_bins::certs::make(dir, nodes, hosts)
            .map_err(|e| (format!("{e:#}"), "invalid_argument"))?;
        print_out(&if cli.json {
            to_json(&json!({ "written": written }))
        } else {
            written
                .iter()
                .map(|f| format!("wrote {f}\n"))
                .collect::<String>()
        });
        return Ok(());
    }
    let connector = match &cli.ca {
        Some(ca) => Connector::tls_client(ca).map_err(|e| (e, "invalid_argument"))?,
        None => Connector::plaintext(),
    }
    .with_token(cli.token.clone());
    let nodes = dotkv_bins::config::split_list(&cli.node);
    let Some(first) = nodes.first() else {
        return Err(("--node names no address".into(), "invalid_argument"));
    };
    if let Command::Bench(options) = &cli.command {
        let report = bench::run(options.clone(), first, timeout, &connector, cli.json)
            .await
            .map_err(|e| (format!("{e:#}"), "unavailable"))?;
        print_out(&if cli.json {
            to_json(&report)
        } else {
            bench::render(&report)
        });
        return Ok(());
    }
    let membership = matches!(
        cli.command,
        Command::Join { .. } | Command::Leave { .. } | Command::Remove { .. }
    );
    if membership {
        let client = Client::connect_with(first, timeout, &connector)
            .await
            .map_err(rpc_error)?;
        let (change, wait) = match &cli.command {
            Command::Join { seed, wait } => {
                client.join(seed).await.map_err(rpc_error)?;
                (admin::Change::Join, *wait)
            }
            Command::Leave { wait } => {
                client.leave().await.map_err(rpc_error)?;
                (admin::Change::Leave, *wait)
            }
            Command::Remove { id, wait } => {
                client.remove(id).await.map_err(rpc_error)?;
                (admin::Change::Remove(id.clone()), *wait)
            }
            _ => unreachable!("matched above"),
        };
        if wait {
            admin::wait(first, timeout, &connector, change, cli.json)
                .await
                .map_err(|e| (format!("{e:#}"), "unavailable"))?;
        }
        print_out(&if cli.json {
            to_json(&json!({ "ok": true }))
        } else if wait {
            format!("{}: done", cli.command.name())
        } else {
            format!(
                "{}: requested; `dotkv status` shows the transition",
                cli.command.name()
            )
        });
        return Ok(());
    }
    let client = FailoverClient::with_connector(&nodes, timeout, connector).map_err(rpc_error)?;
    let text = match &cli.command {
        Command::Get { key, r, pr } => {
            let mut request = GetRequest::new(key.clone().into_bytes());
            request.r = r.map(|r| r as usize);
            request.pr = pr.map(|pr| pr as usize);
            let reply = client
                .call(|c| {
                    let request = request.clone();
                    async move { c.get_with(request).await }
                })
                .await
                .map_err(rpc_error)?;
            let values = printable_all(&reply.values);
            if cli.json {
                to_json(&json!({ "key": key, "values": values, "context": reply.context }))
            } else {
                let mut text = match values.as_slice() {
                    [] => format!("{key} is absent\n"),
                    [value] => format!("{value}\n"),
                    values => {
                        let mut text = format!("{} siblings:\n", values.len());
                        for (i, value) in values.iter().enumerate() {
                            text += &format!("[{}] {value}\n", i + 1);
                        }
                        text
                    }
                };
                text += &format!("context: {}\n", reply.context);
                text
            }
        }
        Command::Put {
            key,
            value,
            context,
            w,
            pw,
        } => {
            let mut request = PutRequest::new(key.clone().into_bytes(), read_value(value)?);
            request.context.clone_from(context);
            request.w = w.map(|w| w as usize);
            request.pw = pw.map(|pw| pw as usize);
            let reply = client
                .call(|c| {
                    let request = request.clone();
                    async move { c.put_with(request).await }
                })
                .await
                .map_err(rpc_error)?;
            written(cli.json, key, &reply.context)
        }
        Command::Delete {
            key,
            context,
            w,
            pw,
        } => {
            let mut request = PutRequest::delete(key.clone().into_bytes());
            request.context.clone_from(context);
            request.w = w.map(|w| w as usize);
            request.pw = pw.map(|pw| pw as usize);
            let reply = client
                .call(|c| {
                    let request = request.clone();
                    async move { c.put_with(request).await }
                })
                .await
                .map_err(rpc_error)?;
            written(cli.json, key, &reply.context)
        }
        Command::Replicas { key } => {
            let reply = client
                .call(|c| {
                    let key = key.clone().into_bytes();
                    async move { c.replicas(key).await }
                })
                .await
                .map_err(rpc_error)?;
            if cli.json {
                let replicas: Vec<_> = reply
                    .replicas
                    .iter()
                    .map(|r| {
                        json!({
                            "node": r.node, "addr": r.addr, "role": r.role,
                            "values": printable_all(&r.values),
                            "context": r.context, "error": r.error,
                        })
                    })
                    .collect();
                to_json(&json!({ "key": key, "replicas": replicas }))
            } else {
                let mut text = String::new();
                for r in &reply.replicas {
                    text += &format!("{} {} ({}): ", r.node, r.addr, r.role);
                    text += &match &r.error {
                        Some(error) => format!("error: {error}\n"),
                        None if r.values.is_empty() => "nothing\n".into(),
                        None => format!("{}\n", printable_all(&r.values).join(" | ")),
                    };
                }
                text
            }
        }
        Command::Status => {
            let status = client
                .call(|c| async move { c.status().await })
                .await
                .map_err(rpc_error)?;
            if cli.json {
                to_json(&status)
            } else {
                let row = |c: [&str; 6]| {
                    format!(
                        "{:<20} {:<22} {:<8} {:>6} {:<12} {:>10}\n",
                        c[0], c[1], c[2], c[3], c[4], c[5]
                    )
                };
                let mut text = row(["ID", "ADDR", "STATUS", "WEIGHT", "ZONE", "PARTITIONS"]);
                for n in &status.nodes {
                    let (weight, partitions) = (n.weight.to_string(), n.partitions.to_string());
                    text += &row([&n.id, &n.addr, &n.status, &weight, &n.zone, &partitions]);
                }
                match &status.ring {
                    None => text += "ring: none yet\n",
                    Some(ring) => {
                        text += &format!("ring: version {} digest {}", ring.version, ring.digest);
                        if let Some(p) = &ring.pending {
                            text += &format!(
                                "; moving to version {}: {}/{} partition replicas moved",
                                p.version, p.moved, p.moves
                            );
                        }
                        text += "\n";
                    }
                }
                for t in &status.transfers {
                    text += &format!(
                        "transfer: partition {} {} -> {}: {} keys, {} bytes\n",
                        t.partition, t.from, t.to, t.keys, t.bytes
                    );
                }
                text
            }
        }
        Command::Aae => {
            let aae = client
                .call(|c| async move { c.aae().await })
                .await
                .map_err(rpc_error)?;
            if cli.json {
                to_json(&aae)
            } else {
                let mut text = format!(
                    "anti-entropy {}: {}/{} trees built; {} keys repaired, {} tombstones reaped, {} tombstones pending\n",
                    if aae.enabled { "on" } else { "off" },
                    aae.trees_built,
                    aae.partitions,
                    aae.keys_repaired,
                    aae.tombstones_reaped,
                    aae.tombstones_pending
                );
                if !aae.exchanges.is_empty() {
                    text += &format!(
                        "{:>9}  {:<20} {:>8} {:>12} {:>8}  {}\n",
                        "PARTITION", "PEER", "AGO", "REPAIRED", "TOTAL", "ERROR"
                    );
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                for e in &aae.exchanges {
                    let ago = format!("{:.1}s", now.saturating_sub(e.at_ms) as f64 / 1000.0);
                    text += &format!(
                        "{:>9}  {:<20} {:>8} {:>12} {:>8}  {}\n",
                        e.partition,
                        e.peer,
                        ago,
                        e.keys_repaired,
                        e.total_repaired,
                        e.error.as_deref().unwrap_or("")
                    );
                }
                text
            }
        }
        Command::Ring => {
            let ring = client
                .call(|c| async move { c.ring().await })
                .await
                .map_err(rpc_error)?;
            if cli.json {
                let mut value = serde_json::to_value(&ring).expect("plain data encodes");
                // The pending fields only while a transition runs.
                if ring.pending_version.is_none() {
                    if let Some(object) = value.as_object_mut() {
                        object.remove("pending_version");
                    }
                    for partition in value["partitions"].as_array_mut().into_iter().flatten() {
                        if let Some(object) = partition.as_object_mut() {
                            object.remove("pending");
                        }
                    }
                }
                to_json(&value)
            } else {
                let mut text = format!(
                    "ring version {} digest {} ({} partitions)\n",
                    ring.version,
                    ring.digest,
                    ring.partitions.len()
                );
                if let Some(pending) = ring.pending_version {
                    text += &format!("moving to version {pending} (pending owners after ->)\n");
                }
                for p in &ring.partitions {
                    text += &format!("{:>6}  {}", p.id, p.nodes.join(" "));
                    if let Some(next) = p.pending.as_ref().filter(|next| **next != p.nodes) {
                        text += &format!("  -> {}", next.join(" "));
                    }
                    text += "\n";
                }
                text
            }
        }
        Command::Join { .. }
        | Command::Leave { .. }
        | Command::Remove { .. }
        | Command::Bench(_)
        | Command::Cert { .. } => {
            unreachable!("answered above")
        }
    };
    print_out(&text);
    Ok(())
}

/// The output of a put or delete.
fn written(json: bool, key: &str, context: &str) -> String {
    if json {
        to_json(&json!({ "key": key, "context": context }))
    } else {
        format!("ok\ncontext: {context}\n")
    }
}
