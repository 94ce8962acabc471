//! The `[replication]` and `[limits]` sections of the configuration.

use serde::{Deserialize, Serialize};

/// Replication settings (`[replication]`, `DOTKV_REPLICATION__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// N: the replicas of every key (the length of a preference list). Default 3.
    pub n: usize,
    /// R: the replies a read waits for, unless the request says otherwise. Default 2.
    pub r: usize,
    /// W: the acknowledgements a write waits for (the coordinator's own included), unless
    /// the request says otherwise. Default 2.
    pub w: usize,
    /// PR: of a read's R replies, how many must come from primaries (the key's owners, not
    /// fallbacks), unless the request says otherwise; 0 is off. Default 0.
    pub pr: usize,
    /// PW: of a write's W acknowledgements, how many must come from primaries; 0 is off.
    /// Default 0.
    pub pw: usize,
    /// The share of reads that also ask the N-R owners a read does not need, for a digest,
    /// and repair those that differ behind the answer (Cassandra's `read_repair_chance`).
    /// The other reads repair only the R replicas they consult; anti-entropy covers the
    /// rest. 0 to 1; default 0.1.
    pub read_repair_chance: f64,
    /// How long a read waits for one of its first R replicas before it also asks the next
    /// owner (speculative retry), so that one slow replica does not set the read's
    /// latency. 0 turns it off (the next owner is asked only when a replica fails).
    /// Default 10.
    pub speculative_retry_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            n: 3,
            r: 2,
            w: 2,
            pr: 0,
            pw: 0,
            read_repair_chance: 0.1,
            speculative_retry_ms: 10,
        }
    }
}

impl ReplicationConfig {
    /// Checks the values, naming the offending key. `R + W <= N` (reads that may miss the
    /// latest write) is allowed; the server logs a warning for it.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.n) {
            return Err(format!(
                "replication.n = {} must be between 1 and 16",
                self.n
            ));
        }
        if !(0.0..=1.0).contains(&self.read_repair_chance) {
            return Err(format!(
                "replication.read_repair_chance = {} must be between 0 and 1",
                self.read_repair_chance
            ));
        }
        if self.speculative_retry_ms > 60_000 {
            return Err(format!(
                "replication.speculative_retry_ms = {} must be at most 60000",
                self.speculative_retry_ms
            ));
        }
        for (name, value) in [("pr", self.pr), ("pw", self.pw)] {
            if value > self.n {
                return Err(format!(
                    "replication.{name} = {value} exceeds replication.n = {}",
                    self.n
                ));
            }
        }
        for (name, value) in [("r", self.r), ("w", self.w)] {
            if value == 0 {
                return Err(format!("replication.{name} = 0 must be at least 1"));
            }
            if value > self.n {
                return Err(format!(
                    "replication.{name} = {value} exceeds replication.n = {}",
                    self.n
                ));
            }
        }
        Ok(())
    }
}

/// Request limits (`[limits]`, `DOTKV_LIMITS__*`), checked before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The longest key in bytes. Default 1024; at most 1200 (what every backend can index
    /// with the partition and hint prefixes).
    pub max_key_bytes: usize,
    /// The largest value in bytes. Default 4 MiB; at most 64 MiB.
    pub max_value_bytes: usize,
    /// The most concurrent values (siblings) a key may hold; a write that would leave more
    /// is refused (a write whose context covers them replaces them and succeeds). A warning
    /// is logged from a quarter of it. Default 100.
    pub max_siblings: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 4 * 1024 * 1024,
            max_siblings: 100,
        }
    }
}

impl LimitsConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1200).contains(&self.max_key_bytes) {
            return Err(format!(
                "limits.max_key_bytes = {} must be between 1 and 1200",
                self.max_key_bytes
            ));
        }
        if !(1..=64 << 20).contains(&self.max_value_bytes) {
            return Err(format!(
                "limits.max_value_bytes = {} must be between 1 and 67108864 (64 MiB)",
                self.max_value_bytes
            ));
        }
        if !(1..=10_000).contains(&self.max_siblings) {
            return Err(format!(
                "limits.max_siblings = {} must be between 1 and 10000",
                self.max_siblings
            ));
        }
        Ok(())
    }
}
