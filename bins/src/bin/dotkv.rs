//! `dotkv`: the dotkv client CLI.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dotkv_rpc::{Client, RpcError};

/// The dotkv client: read and write keys, inspect the cluster, generate load.
///
/// Concurrent writes come back as siblings; pass the context printed by `get` to `put` to
/// replace exactly the values that read saw.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        env = "DOTKV_NODE",
        default_value = "127.0.0.1:7001"
    )]
    node: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this many milliseconds.
    #[arg(long, global = true, default_value_t = 5000, value_name = "MS")]
    timeout: u64,
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
    },
    /// Show what each replica of KEY holds now, without repairing anything.
    Replicas {
        /// The key.
        key: String,
    },
    /// Show the members and their liveness as the node sees them.
    Status,
    /// Show the ring: each partition's preference list.
    Ring,
    /// Make the node join the cluster SEED belongs to.
    Join {
        /// The address of a member.
        seed: String,
    },
    /// Make the node leave the cluster, handing its data off first.
    Leave,
    /// Generate load against the cluster and report throughput and latency.
    Bench {
        /// Load-generator options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
            Self::Join { .. } => "join",
            Self::Leave => "leave",
            Self::Bench { .. } => "bench",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dotkv_bins::logging::init("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
    let kind = match error {
        RpcError::Timeout { .. } => "timeout",
        _ => "unavailable",
    };
    (error.to_string(), kind)
}

async fn run(cli: &Cli) -> CliResult {
    let timeout = Duration::from_millis(cli.timeout);
    match &cli.command {
        Command::Status => {
            let client = Client::connect(&cli.node, timeout)
                .await
                .map_err(rpc_error)?;
            let status = client.status().await.map_err(rpc_error)?;
            let text = if cli.json {
                serde_json::to_string(&status).expect("plain data encodes")
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
                text
            };
            print_out(&text);
            Ok(())
        }
        Command::Ring => {
            let client = Client::connect(&cli.node, timeout)
                .await
                .map_err(rpc_error)?;
            let ring = client.ring().await.map_err(rpc_error)?;
            let text = if cli.json {
                serde_json::to_string(&ring).expect("plain data encodes")
            } else {
                let mut text = format!(
                    "ring version {} digest {} ({} partitions)\n",
                    ring.version,
                    ring.digest,
                    ring.partitions.len()
                );
                for p in &ring.partitions {
                    text += &format!("{:>6}  {}\n", p.id, p.nodes.join(" "));
                }
                text
            };
            print_out(&text);
            Ok(())
        }
        // The key-value request path is the next piece of work; until it lands these
        // commands say so instead of pretending.
        other => Err((
            format!(
                "`{}` is not served by this build of dotkv-server yet (the request path is not in it)",
                other.name()
            ),
            "unavailable",
        )),
    }
}
