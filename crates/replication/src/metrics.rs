//! A node's metrics, in the OpenMetrics text format that Prometheus scrapes (`/metrics` of
//! the HTTP gateway).
//!
//! What the request path counts as it goes (a counter and a histogram bucket per request:
//! atomic adds, a map lookup under a read lock) lives in [`Metrics`]; what other parts of
//! the node keep anyway (members, hints, transfers, anti-entropy, gossip rounds, the
//! storage's commits) is read when scraped. Each scrape registers both in a fresh registry
//! and encodes it.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::Node;

/// The labels of a client request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `get`, `put` or `delete`.
    op: &'static str,
    /// `ok`, or the error kind (`quorum_not_reached`, `invalid_argument`, ...).
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

/// 100 µs to ~3.3 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// What the request path records.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    forwarded_puts: Counter,
    read_repairs: Counter,
    speculative_reads: Counter,
    hints_delivered: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            forwarded_puts: Counter::default(),
            read_repairs: Counter::default(),
            speculative_reads: Counter::default(),
            hints_delivered: Counter::default(),
        }
    }
}

impl Metrics {
    /// Records one client request this node received.
    pub(crate) fn request(&self, op: &'static str, outcome: &'static str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { op, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn forwarded_put(&self) {
        self.forwarded_puts.inc();
    }

    pub(crate) fn forwarded_puts(&self) -> u64 {
        self.forwarded_puts.get()
    }

    pub(crate) fn read_repair(&self) {
        self.read_repairs.inc();
    }

    pub(crate) fn speculative_read(&self) {
        self.speculative_reads.inc();
    }

    pub(crate) fn hints_delivered(&self, count: u64) {
        self.hints_delivered.inc_by(count);
    }

    /// Registers the request path's metrics (clones share the values).
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Client requests this node received, by operation and outcome (a forwarded write counts where the client sent it)",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Latency of the client requests this node received, by operation",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "forwarded_puts",
            "Client writes forwarded to an owner of their key",
            self.forwarded_puts.clone(),
        );
        registry.register(
            "read_repairs",
            "Replicas a read wrote the merged object to",
            self.read_repairs.clone(),
        );
        registry.register(
            "speculative_reads",
            "Replicas a read asked because one it asked was slow",
            self.speculative_reads.clone(),
        );
        registry.register(
            "hints_delivered",
            "Hints delivered to their owner",
            self.hints_delivered.clone(),
        );
    }
}

/// A gauge holding `value`.
fn gauge(value: u64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    gauge
}

impl Node {
    /// The node's metrics in the OpenMetrics text format.
    pub async fn metrics_text(&self) -> String {
        let mut registry = Registry::with_prefix("dotkv");
        self.metrics().register(&mut registry);
        self.register_state(&mut registry).await;
        let storage = registry.sub_registry_with_prefix("storage");
        if let Some(commits) = self.store().commit_metrics() {
            commits.register(storage);
        }
        if let Ok(Some(usage)) = self.store().usage().await {
            let backend = self.store().kind().to_string();
            let bytes = Family::<BackendLabels, Gauge>::default();
            bytes
                .get_or_create(&BackendLabels {
                    backend: backend.clone(),
                })
                .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
            storage.register("bytes", "Bytes the store uses, by backend", bytes);
            if let Some(objects) = usage.objects {
                let count = Family::<BackendLabels, Gauge>::default();
                count
                    .get_or_create(&BackendLabels { backend })
                    .set(i64::try_from(objects).unwrap_or(i64::MAX));
                storage.register(
                    "objects",
                    "Objects (replicas) the store holds, by backend",
                    count,
                );
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// What the rest of the node keeps, read now.
    async fn register_state(&self, registry: &mut Registry) {
        let cluster = self.cluster();
        let members = Family::<StatusLabels, Gauge>::default();
        for status in ["up", "down", "joining", "leaving", "left"] {
            let _ = members.get_or_create(&StatusLabels {
                status: status.into(),
            });
        }
        for member in cluster.members() {
            let status = if member.down && member.state.status != dotkv_membership::NodeStatus::Left
            {
                "down".to_owned()
            } else {
                member.state.status.to_string()
            };
            members.get_or_create(&StatusLabels { status }).inc();
        }
        registry.register(
            "members",
            "Members by status, as this node sees them",
            members,
        );
        registry.register(
            "gossip_rounds",
            "Gossip rounds this node started",
            ConstCounter::new(cluster.gossip_rounds()),
        );

        let hints = Family::<TargetLabels, Gauge>::default();
        let pending: BTreeMap<String, u64> = self.hint_counts().await.unwrap_or_default();
        for (target, keys) in pending {
            hints
                .get_or_create(&TargetLabels { target })
                .set(i64::try_from(keys).unwrap_or(i64::MAX));
        }
        registry.register(
            "hints_pending",
            "Keys this node holds hints for, by the owner they are for",
            hints,
        );

        let (moves, moved) = cluster
            .transition_progress()
            .map_or((0, 0), |(_, moves, moved)| (moves, moved));
        registry.register(
            "handoff_moves",
            "Partition replicas that change owner in the ring transition in progress",
            gauge(moves as u64),
        );
        registry.register(
            "handoff_moved",
            "Of them, those whose receiver has all it gains",
            gauge(moved as u64),
        );
        registry.register(
            "handoff_transfers",
            "Partition transfers this node is receiving",
            gauge(self.transfers().len() as u64),
        );

        let aae = self.aae_view();
        registry.register(
            "aae_trees_built",
            "Partitions whose anti-entropy tree is built",
            gauge(u64::from(aae.trees_built)),
        );
        registry.register(
            "aae_exchanges",
            "Anti-entropy exchanges this node completed",
            ConstCounter::new(self.aae_exchanges()),
        );
        registry.register(
            "aae_keys_repaired",
            "Keys anti-entropy repaired on this node or its peers",
            ConstCounter::new(aae.keys_repaired),
        );
        registry.register(
            "tombstones_reaped",
            "Tombstones removed after the grace period",
            ConstCounter::new(aae.tombstones_reaped),
        );
    }
}
