//! `dotkv`: the dotkv client CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    // The server has no network service in this build yet, so every command reports that
    // the node cannot be reached, in the contract's error shape.
    let message = format!(
        "cannot run `{}` against {}: this build of dotkv-server has no client service yet",
        cli.command.name(),
        cli.node
    );
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "error": message, "kind": "unavailable" })
        );
    } else {
        eprintln!("{message}");
    }
    ExitCode::FAILURE
}
