//! `dotkv-server`: one dotkv node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dotkv_bins::config::{self, Overrides};

/// A dotkv node: a Dynamo-style key-value store server.
///
/// Configuration comes from built-in defaults, then config/dotkv.toml (profile sections),
/// then DOTKV_* environment variables (nested keys joined by `__`, e.g.
/// DOTKV_STORAGE__BACKEND=sqlite), then these flags. Logs go to stderr; set RUST_LOG or
/// DOTKV_LOG (e.g. `debug`) for more. SIGTERM or SIGINT stops the node cleanly.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The configuration file [default: config/dotkv.toml, if present].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The configuration profile: default (LMDB), sqlite, memory, test.
    #[arg(
        long,
        env = "DOTKV_PROFILE",
        default_value = "default",
        value_name = "NAME"
    )]
    profile: String,
    /// This node's id (stored in the data dir on first start; fixed afterwards).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// The address to serve peers and clients on [default: 127.0.0.1:7001].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The address peers and clients are told to use, when it differs from --listen (e.g.
    /// listening on 0.0.0.0) [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Where this node keeps its data [default: data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Members of the cluster to join on first start, comma separated: the node enters as
    /// `joining` and owns nothing until the claimant's ring includes it. Without seeds
    /// (and no stored view) a node starts a new cluster.
    #[arg(long, value_name = "ADDR,...")]
    seeds: Option<String>,
    /// This node's capacity relative to the others [default: 1].
    #[arg(long, value_name = "W")]
    weight: Option<u32>,
    /// This node's failure domain; replicas go to distinct zones [default: default].
    #[arg(long, value_name = "Z")]
    zone: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // tarpc logs every closed connection at INFO; keep that for RUST_LOG=tarpc=info.
    dotkv_bins::logging::init("info,tarpc=warn");
    let overrides = Overrides {
        node_id: args.node_id,
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        seeds: args.seeds.as_deref().map(config::split_list),
        weight: args.weight,
        zone: args.zone,
    };
    let config = match config::load(args.config.as_deref(), &args.profile, &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if config.server.worker_threads > 0 {
        builder.worker_threads(config.server.worker_threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dotkv_bins::node::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("dotkv-server: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
