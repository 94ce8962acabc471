//! The `[rpc]` and `[http]` sections of the configuration.

use serde::{Deserialize, Serialize};

/// Wire settings (`[rpc]`, `DOTKV_RPC__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// The deadline of a call to a peer, in milliseconds. Default 2000.
    pub peer_timeout_ms: u64,
    /// The largest frame accepted, in bytes; a longer one is refused before its body is
    /// read. Default 8 MiB (a 4 MiB value with room for its envelope).
    pub max_frame_bytes: usize,
    /// The most connections a node accepts at once (RPC and HTTP listeners each); more
    /// are closed at once. Default 4096.
    pub max_connections: usize,
    /// The most connections from one IP address at once; more are closed at once, so that
    /// one address cannot take every connection. Default 256.
    pub max_connections_per_ip: usize,
    /// The time a new connection has for TLS and dotkv's handshake, in milliseconds.
    /// Default 5000.
    pub handshake_timeout_ms: u64,
    /// The time a frame has to arrive whole once its first byte has, in milliseconds; a
    /// slower sender is disconnected. Default 30000 (an 8 MiB frame at 300 KB/s).
    pub frame_timeout_ms: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            peer_timeout_ms: 2000,
            max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 4096,
            max_connections_per_ip: 256,
            handshake_timeout_ms: 5000,
            frame_timeout_ms: 30_000,
        }
    }
}

impl RpcConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.peer_timeout_ms == 0 {
            return Err("rpc.peer_timeout_ms = 0 must be at least 1".into());
        }
        if !(64 << 10..=1 << 30).contains(&self.max_frame_bytes) {
            return Err(format!(
                "rpc.max_frame_bytes = {} must be between 65536 and 1073741824",
                self.max_frame_bytes
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!(
                "rpc.max_connections = {} must be between 1 and 1000000",
                self.max_connections
            ));
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_ip) {
            return Err(format!(
                "rpc.max_connections_per_ip = {} must be between 1 and rpc.max_connections ({})",
                self.max_connections_per_ip, self.max_connections
            ));
        }
        for (key, value) in [
            ("rpc.handshake_timeout_ms", self.handshake_timeout_ms),
            ("rpc.frame_timeout_ms", self.frame_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&value) {
                return Err(format!("{key} = {value} must be between 100 and 3600000"));
            }
        }
        Ok(())
    }
}

/// The HTTP gateway (`[http]`, `DOTKV_HTTP__*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The address the HTTP/JSON gateway listens on, e.g. `127.0.0.1:8001`. Default none:
    /// the gateway is off.
    pub listen: Option<String>,
}
