//! Log setup shared by the binaries: `tracing` events to stderr, filtered by `RUST_LOG`,
//! else `DOTKV_LOG`, else the binary's default level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default` is the filter when neither variable is set
/// (e.g. `"info"` for the server, `"warn"` for the client).
pub fn init(default: &str) {
    let filter = ["RUST_LOG", "DOTKV_LOG"]
        .into_iter()
        .find_map(|var| EnvFilter::try_from_env(var).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
