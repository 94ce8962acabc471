//! `dotkv bench`: a closed-loop load generator with the YCSB core workload mixes.
//!
//! `concurrency` workers each keep one request in flight over the connections to the
//! given nodes (one multiplexed connection per node, shared); each key's request goes to
//! one of its owners, by the ring learned from the nodes (`--round-robin`: to the
//! workers' nodes in turn, which forward what they do not own). Each worker records its
//! latencies in its own HdrHistogram; they are merged at the end, so recording costs no
//! lock. Updates are read-modify-writes with the read's context, as a Dynamo client does,
//! unless `--blind-writes` (which adds siblings instead of replacing values).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use dotkv_replication::{GetReply, GetRequest, PutReply, PutRequest};
use dotkv_rpc::{Client, Connector, RpcError, TokenAwareClient};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// The mix of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// YCSB A: 50% reads, 50% updates.
    A,
    /// YCSB B: 95% reads, 5% updates.
    B,
    /// YCSB C: 100% reads.
    C,
    /// 100% updates.
    W,
    /// A no-op round trip carrying a value-size payload: the RPC floor.
    Ping,
}

impl Workload {
    /// The share of reads, in percent.
    fn read_percent(self) -> u64 {
        match self {
            Self::A => 50,
            Self::B => 95,
            Self::C => 100,
            Self::W | Self::Ping => 0,
        }
    }
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled Zipfian, θ = 0.99: a few hot keys, spread over the ring.
    Zipfian,
}

/// `dotkv bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchOptions {
    /// Nodes to spread requests over, comma separated [default: --node].
    #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
    pub nodes: Vec<String>,
    /// The operation mix: a (50/50 read/update), b (95/5), c (reads), w (updates), ping.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// The number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// The size of each value, in bytes.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub value_size: usize,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to run, in seconds (ignored when --ops is given).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub duration: f64,
    /// Run this many operations instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// R of every read [default: the node's replication.r].
    #[arg(long)]
    pub r: Option<usize>,
    /// W of every write [default: the node's replication.w].
    #[arg(long)]
    pub w: Option<usize>,
    /// Write without reading first (no context: each write adds a sibling).
    #[arg(long)]
    pub blind_writes: bool,
    /// Skip the load phase (the keys were written by an earlier run).
    #[arg(long)]
    pub no_load: bool,
    /// Requests in flight while loading [default: --concurrency]; more fill larger group
    /// commits, which loads millions of keys faster.
    #[arg(long)]
    pub load_concurrency: Option<usize>,
    /// Send requests to the given nodes in turn (they forward writes of keys they do not
    /// own) instead of to an owner of each key, by the ring learned from them.
    #[arg(long)]
    pub round_robin: bool,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Operations measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest.
    pub max: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// What `dotkv bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The mix.
    pub workload: Workload,
    /// The nodes requests went to.
    pub nodes: Vec<String>,
    /// Distinct keys.
    pub keys: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key distribution.
    pub distribution: Distribution,
    /// Requests in flight.
    pub concurrency: usize,
    /// R and W asked for (`null`: the node's defaults).
    pub r: Option<usize>,
    /// See `r`.
    pub w: Option<usize>,
    /// Whether updates were blind.
    pub blind_writes: bool,
    /// Whether requests went to the nodes in turn, not to an owner of each key.
    pub round_robin: bool,
    /// The measured run's length, in seconds.
    pub elapsed_s: f64,
    /// Operations completed successfully.
    pub ops: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Every successful operation.
    pub latency_ms: Latency,
    /// By operation: `read`, `update` (an update's latency includes its read), `ping`.
    pub by_op: BTreeMap<&'static str, Latency>,
    /// Failed operations by error kind.
    pub errors: BTreeMap<&'static str, u64>,
}

/// One worker's measurements.
struct Recorder {
    all: Histogram<u64>,
    by_op: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<&'static str, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Recorder {
    fn new() -> Self {
        Self {
            all: histogram(),
            by_op: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, op: &'static str, started: Instant, result: Result<(), RpcError>) {
        match result {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.all.saturating_record(micros);
                self.by_op
                    .entry(op)
                    .or_insert_with(histogram)
                    .saturating_record(micros);
            }
            Err(error) => *self.errors.entry(error.kind()).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Self) {
        self.all.add(&other.all).expect("same bounds");
        for (op, h) in other.by_op {
            self.by_op
                .entry(op)
                .or_insert_with(histogram)
                .add(&h)
                .expect("same bounds");
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// SplitMix64: a small, fast generator; each worker seeds its own.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"), scrambled by a hash so that the hot keys are spread over the ring.
#[derive(Debug, Clone)]
struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    const THETA: f64 = 0.99;

    fn new(items: u64) -> Self {
        let theta = Self::THETA;
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(items);
        let zeta2 = zeta(2.min(items));
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Self {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        // FNV-1a of the rank: the most popular keys land anywhere in the key space.
        let hash = rank
            .to_le_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        hash % self.items
    }
}

fn key_name(index: u64) -> Bytes {
    Bytes::from(format!("bench:{index:010}"))
}

/// Runs the load phase (unless skipped) and the measured run.
///
/// # Errors
///
/// Bad options, or no node reachable.
pub async fn run(
    options: BenchOptions,
    default_node: &str,
    timeout: Duration,
    connector: &Connector,
    quiet: bool,
) -> anyhow::Result<Report> {
    if options.keys == 0 || options.concurrency == 0 || options.load_concurrency == Some(0) {
        bail!("--keys, --concurrency and --load-concurrency must be at least 1");
    }
    if !(options.duration.is_finite() && options.duration > 0.0) && options.ops.is_none() {
        bail!("--duration must be positive");
    }
    let nodes = if options.nodes.is_empty() {
        vec![default_node.to_owned()]
    } else {
        options.nodes.clone()
    };
    let mut clients = Vec::new();
    for node in &nodes {
        let client = Client::connect_with(node, timeout, connector)
            .await
            .with_context(|| format!("cannot connect to {node}"))?;
        clients.push(client);
    }
    let routed = if options.round_robin {
        None
    } else {
        let client = TokenAwareClient::connect_with(&nodes, timeout, connector.clone())
            .await
            .context("cannot learn the ring")?;
        Some(Arc::new(client))
    };
    let targets: Vec<Target> = clients
        .into_iter()
        .map(|node| Target {
            node,
            routed: routed.clone(),
        })
        .collect();
    let value = Bytes::from(vec![b'x'; options.value_size]);
    let needs_data = options.workload.read_percent() > 0 && !options.no_load;
    if needs_data {
        load(&options, &targets, &value, quiet).await?;
    }

    let zipfian =
        (options.distribution == Distribution::Zipfian).then(|| Zipfian::new(options.keys));
    let budget = options.ops.map(AtomicU64::new).map(Arc::new);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(quiet, options.ops, options.duration);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency {
        let client = targets[worker % targets.len()].clone();
        let options = options.clone();
        let (value, zipfian) = (value.clone(), zipfian.clone());
        let (budget, stop, done) = (budget.clone(), Arc::clone(&stop), Arc::clone(&done));
        workers.spawn(async move {
            let mut rng = Rng(0x5eed_0000 + worker as u64);
            let mut recorder = Recorder::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(budget) = &budget {
                    if budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                        .is_err()
                    {
                        break;
                    }
                }
                let index = match &zipfian {
                    Some(z) => z.next(&mut rng),
                    None => rng.next() % options.keys,
                };
                let read = rng.next() % 100 < options.workload.read_percent();
                let began = Instant::now();
                let (op, result) = one_op(&client, &options, index, read, &value).await;
                recorder.record(op, began, result);
                done.fetch_add(1, Ordering::Relaxed);
            }
            recorder
        });
    }
    if options.ops.is_none() {
        let deadline = started + Duration::from_secs_f64(options.duration);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress.set_position(started.elapsed().as_secs());
        }
        stop.store(true, Ordering::Relaxed);
    } else {
        while !workers.is_empty() && done.load(Ordering::Relaxed) < options.ops.unwrap_or(0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress.set_position(done.load(Ordering::Relaxed));
        }
    }
    let mut total = Recorder::new();
    while let Some(recorder) = workers.join_next().await {
        total.merge(recorder.context("a bench worker panicked")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    Ok(Report {
        workload: options.workload,
        nodes,
        keys: options.keys,
        value_size: options.value_size,
        distribution: options.distribution,
        concurrency: options.concurrency,
        r: options.r,
        w: options.w,
        blind_writes: options.blind_writes,
        round_robin: options.round_robin,
        elapsed_s: elapsed,
        ops: total.all.len(),
        throughput: total.all.len() as f64 / elapsed,
        latency_ms: Latency::of(&total.all),
        by_op: total
            .by_op
            .iter()
            .map(|(op, h)| (*op, Latency::of(h)))
            .collect(),
        errors: total.errors,
    })
}

/// One operation of the mix.
async fn one_op(
    client: &Target,
    options: &BenchOptions,
    index: u64,
    read: bool,
    value: &Bytes,
) -> (&'static str, Result<(), RpcError>) {
    let key = key_name(index);
    if options.workload == Workload::Ping {
        return ("ping", client.node.ping(value.clone()).await.map(drop));
    }
    let get = |key: Bytes| {
        let mut request = GetRequest::new(key);
        request.r = options.r;
        client.get_with(request)
    };
    if read {
        return ("read", get(key).await.map(drop));
    }
    let mut request = PutRequest::new(key.clone(), value.clone());
    request.w = options.w;
    if !options.blind_writes {
        match get(key).await {
            Ok(read) => request.context = Some(read.context),
            Err(error) => return ("update", Err(error)),
        }
    }
    ("update", client.put_with(request).await.map(drop))
}

/// Where a worker's requests go: an owner of each key (by the shared token-aware
/// client), or its node of the `--nodes` list with `--round-robin`; pings always go to
/// its node.
#[derive(Debug, Clone)]
struct Target {
    node: Client,
    routed: Option<Arc<TokenAwareClient>>,
}

impl Target {
    async fn get_with(&self, request: GetRequest) -> Result<GetReply, RpcError> {
        match &self.routed {
            Some(routed) => routed.get_with(request).await,
            None => self.node.get_with(request).await,
        }
    }

    async fn put_with(&self, request: PutRequest) -> Result<PutReply, RpcError> {
        match &self.routed {
            Some(routed) => routed.put_with(request).await,
            None => self.node.put_with(request).await,
        }
    }
}

/// Writes every key once (resolving what is there, so reruns do not pile up siblings).
async fn load(
    options: &BenchOptions,
    clients: &[Target],
    value: &Bytes,
    quiet: bool,
) -> anyhow::Result<()> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(options.keys)
    };
    bar.set_style(
        ProgressStyle::with_template("loading {pos}/{len} keys [{bar:40}] {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..options.load_concurrency.unwrap_or(options.concurrency) {
        let client = clients[worker % clients.len()].clone();
        let (next, value, bar) = (Arc::clone(&next), value.clone(), bar.clone());
        let keys = options.keys;
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= keys {
                    return Ok::<(), RpcError>(());
                }
                let key = key_name(index);
                let context = client.get_with(GetRequest::new(key.clone())).await?.context;
                let write = PutRequest::new(key, value.clone()).with_context(context);
                client.put_with(write).await?;
                bar.inc(1);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result
            .context("a load worker panicked")?
            .context("the load phase failed")?;
    }
    bar.finish_and_clear();
    Ok(())
}

fn progress_bar(quiet: bool, ops: Option<u64>, duration: f64) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let (len, template) = match ops {
        Some(ops) => (ops, "running {pos}/{len} ops [{bar:40}] eta {eta}"),
        None => (duration.ceil() as u64, "running {pos}/{len} s [{bar:40}]"),
    };
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar
}

/// The report as text for a person.
pub fn render(report: &Report) -> String {
    let mut text = format!(
        "workload {:?} on {} node(s), {} keys ({:?}), {} B values, {} in flight{}\n",
        report.workload,
        report.nodes.len(),
        report.keys,
        report.distribution,
        report.value_size,
        report.concurrency,
        if report.blind_writes {
            ", blind writes"
        } else {
            ""
        },
    );
    text += &format!(
        "{} ops in {:.1} s: {:.0} ops/s\n",
        report.ops, report.elapsed_s, report.throughput
    );
    text += "op         count    p50 ms   p90 ms   p99 ms p99.9 ms   max ms\n";
    let row = |name: &str, l: &Latency| {
        format!(
            "{name:<8} {:>7} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
            l.count, l.p50, l.p90, l.p99, l.p999, l.max
        )
    };
    for (op, latency) in &report.by_op {
        text += &row(op, latency);
    }
    text += &row("all", &report.latency_ms);
    if report.errors.is_empty() {
        text += "no errors\n";
    } else {
        for (kind, n) in &report.errors {
            text += &format!("errors {kind}: {n}\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let zipfian = Zipfian::new(1000);
        let mut rng = Rng(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipfian.next(&mut rng) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // θ = 0.99 over 1000 items: the hottest key takes about 13% of the draws; a
        // uniform choice would give each 0.1%.
        assert!(counts[0] > 8_000, "hottest key drawn {} times", counts[0]);
        assert!(counts[999] < 100);
    }

    #[test]
    fn workload_mixes_match_ycsb() {
        assert_eq!(Workload::A.read_percent(), 50);
        assert_eq!(Workload::B.read_percent(), 95);
        assert_eq!(Workload::C.read_percent(), 100);
        assert_eq!(Workload::W.read_percent(), 0);
    }
}
