//! The `[replication]` section of the configuration.

use serde::{Deserialize, Serialize};

/// Replication settings (`[replication]`, `DOTKV_REPLICATION__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// N: the replicas of every key (the length of a preference list). Default 3.
    pub n: usize,
    /// The deadline of a call to a peer, in milliseconds. Default 2000.
    pub peer_timeout_ms: u64,
    /// The largest RPC frame accepted, in bytes. Default 8 MiB.
    pub max_frame_bytes: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            n: 3,
            peer_timeout_ms: 2000,
            max_frame_bytes: 8 << 20,
        }
    }
}

impl ReplicationConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.n) {
            return Err(format!(
                "replication.n = {} must be between 1 and 16",
                self.n
            ));
        }
        if self.peer_timeout_ms == 0 {
            return Err("replication.peer_timeout_ms = 0 must be at least 1".into());
        }
        if !(64 << 10..=1 << 30).contains(&self.max_frame_bytes) {
            return Err(format!(
                "replication.max_frame_bytes = {} must be between 65536 and 1073741824",
                self.max_frame_bytes
            ));
        }
        Ok(())
    }
}
