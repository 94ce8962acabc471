//! The `[membership]` section of the configuration.

use serde::{Deserialize, Serialize};

/// Gossip and failure-detection settings (`[membership]`, `DOTKV_MEMBERSHIP__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// How often a node gossips with one peer, in milliseconds. Default 500.
    pub gossip_interval_ms: u64,
    /// The phi at which a silent peer is considered down (Cassandra's
    /// `phi_convict_threshold`). Default 8.
    pub phi_convict_threshold: f64,
    /// How many heartbeat intervals the detector remembers. Default 1000.
    pub phi_window: usize,
    /// The least standard deviation assumed for heartbeat intervals, in milliseconds, so
    /// that very regular heartbeats do not make the detector twitchy. Default 250.
    pub phi_min_std_dev_ms: u64,
    /// Silence tolerated on top of the mean interval (GC pauses, scheduling), in
    /// milliseconds. Default 1000.
    pub phi_acceptable_pause_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            gossip_interval_ms: 500,
            phi_convict_threshold: 8.0,
            phi_window: 1000,
            phi_min_std_dev_ms: 250,
            phi_acceptable_pause_ms: 1000,
        }
    }
}

impl MembershipConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if !(10..=60_000).contains(&self.gossip_interval_ms) {
            return Err(format!(
                "membership.gossip_interval_ms = {} must be between 10 and 60000",
                self.gossip_interval_ms
            ));
        }
        if !(self.phi_convict_threshold.is_finite() && self.phi_convict_threshold > 0.0) {
            return Err(format!(
                "membership.phi_convict_threshold = {} must be a positive number",
                self.phi_convict_threshold
            ));
        }
        if !(2..=100_000).contains(&self.phi_window) {
            return Err(format!(
                "membership.phi_window = {} must be between 2 and 100000",
                self.phi_window
            ));
        }
        Ok(())
    }
}
