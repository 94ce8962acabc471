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
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            peer_timeout_ms: 2000,
            max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
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
