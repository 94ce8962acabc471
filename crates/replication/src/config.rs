//! The `[replication]` section of the configuration.

use serde::{Deserialize, Serialize};

/// Replication settings (`[replication]`, `DOTKV_REPLICATION__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// N: the replicas of every key (the length of a preference list). Default 3.
    pub n: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self { n: 3 }
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
        Ok(())
    }
}
