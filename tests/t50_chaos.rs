//! A nemesis and a checker (our Jepsen): 5 real `dotkv-server`s, each in its own network
//! namespace, 3 zones on 3 bridges joined by a router namespace; clients on the host run
//! read-modify-writes with contexts and blind writes on a small key set while faults are
//! injected — a node isolated, a zone partitioned from the rest (links taken down), a
//! zone split from the other zones while clients still reach both sides (split brain),
//! `kill -9` and restart, `SIGSTOP`/`SIGCONT`, a wiped data dir — one or two at a time,
//! chosen from a seed. After healing, a checker reads every key with R = N and checks the
//! recorded history: no acknowledged write lost (present, or superseded by a write whose
//! context saw it), no phantom value, no superseded value back, and every key's replicas
//! converged. It prints a report (and writes it to `target/chaos/`).
//!
//! `just test` runs 90 s with a fixed seed; `just chaos SECONDS SEED` runs any other. With
//! no permission for namespaces (or `DOTKV_CHAOS_LOOPBACK=1`), it runs on loopback with
//! process faults only and says so.
//! Addresses come from the ranges reserved for documentation (RFC 5737), whichever two of
//! 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24 the host does not route already: one
//! for the nodes, one for the link between the host and the router. Everything is torn
//! down afterwards, also on failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rng, Server};
use dotkv_replication::{GetRequest, PutRequest};
use dotkv_rpc::FailoverClient;

const NODES: usize = 5;
/// Zone of each node: n1 n2 in zone 0, n3 n4 in zone 1, n5 in zone 2.
const ZONE: [usize; NODES] = [0, 0, 1, 1, 2];
const PORT: u16 = 7000;
const KEYS: usize = 24;
const CLIENTS: usize = 6;

fn sh(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

fn must(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip ARGS` inside namespace `ns`; panics with its message when it fails.
fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    must("ip", &all);
}

/// The namespaces, bridges and links of one run; dropping it removes them all.
struct Net {
    tag: String,
    /// The first three octets of the nodes' /24 (zones are /28s in it).
    nodes: String,
}

/// The documentation ranges (RFC 5737).
const RANGES: [&str; 3] = ["192.0.2", "198.51.100", "203.0.113"];

impl Net {
    fn router(&self) -> String {
        format!("{}r", self.tag)
    }

    fn node(&self, i: usize) -> String {
        format!("{}n{}", self.tag, i + 1)
    }

    /// Node `i`'s host number: in its zone's /28 (whose gateway, the router, is .1, .17,
    /// .33).
    fn host(i: usize) -> usize {
        16 * ZONE[i] + 2 + i
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{}:{PORT}", self.nodes, Self::host(i))
    }

    fn gateway(&self, zone: usize) -> String {
        format!("{}.{}", self.nodes, 1 + 16 * zone)
    }

    /// Builds the topology; `None` when namespaces cannot be made here, or the host
    /// already routes the documentation ranges.
    fn build() -> Option<Self> {
        let routes = Command::new("ip").args(["-4", "route"]).output().ok()?;
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        let mut free = RANGES
            .iter()
            .filter(|range| !routes.contains(&format!("{range}.")));
        let (nodes, link) = (free.next()?.to_string(), free.next()?.to_string());
        let tag = format!("dk{}", std::process::id() % 100_000);
        if !sh("ip", &["netns", "add", &format!("{tag}r")]) {
            return None;
        }
        let net = Self { tag, nodes };
        let r = net.router();
        let inr = |args: &[&str]| ip_in(&r, args);
        inr(&["link", "set", "lo", "up"]);
        must(
            "ip",
            &[
                "netns",
                "exec",
                &r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        // One bridge per zone in the router namespace; the router reaches each through a
        // veth whose bridge end is a port (cutting it partitions the zone from the rest).
        for zone in 0..3 {
            let (bridge, gw, port) = (
                format!("br{zone}"),
                format!("gw{zone}"),
                format!("gp{zone}"),
            );
            inr(&["link", "add", &bridge, "type", "bridge"]);
            inr(&["link", "set", &bridge, "up"]);
            inr(&["link", "add", &gw, "type", "veth", "peer", "name", &port]);
            inr(&["link", "set", &port, "master", &bridge]);
            inr(&["link", "set", &port, "up"]);
            inr(&[
                "addr",
                "add",
                &format!("{}/28", net.gateway(zone)),
                "dev",
                &gw,
            ]);
            inr(&["link", "set", &gw, "up"]);
        }
        for (i, &zone) in ZONE.iter().enumerate() {
            let ns = net.node(i);
            must("ip", &["netns", "add", &ns]);
            let (inside, outside) = (format!("{}e", ns), format!("p{}", i + 1));
            must(
                "ip",
                &[
                    "link", "add", &inside, "type", "veth", "peer", "name", &outside, "netns", &r,
                ],
            );
            must("ip", &["link", "set", &inside, "netns", &ns]);
            let inn = |args: &[&str]| ip_in(&ns, args);
            inn(&["link", "set", "lo", "up"]);
            inn(&["link", "set", &inside, "name", "eth0"]);
            let addr = format!("{}.{}/28", net.nodes, Self::host(i));
            inn(&["addr", "add", &addr, "dev", "eth0"]);
            inn(&["link", "set", "eth0", "up"]);
            inn(&["route", "add", "default", "via", &net.gateway(zone)]);
            inr(&["link", "set", &outside, "master", &format!("br{}", zone)]);
            inr(&["link", "set", &outside, "up"]);
        }
        // The host reaches the nodes through the router.
        let (host, peer) = (format!("{}h", net.tag), format!("{}x", net.tag));
        must(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &r,
            ],
        );
        must(
            "ip",
            &["addr", "add", &format!("{link}.1/30"), "dev", &host],
        );
        must("ip", &["link", "set", &host, "up"]);
        inr(&["addr", "add", &format!("{link}.2/30"), "dev", &peer]);
        inr(&["link", "set", &peer, "up"]);
        let (subnet, via) = (format!("{}.0/24", net.nodes), format!("{link}.2"));
        must("ip", &["route", "add", &subnet, "via", &via, "dev", &host]);
        Some(net)
    }

    /// Takes node `i`'s link down (`up` = false) or up.
    fn isolate(&self, i: usize, isolated: bool) {
        let state = if isolated { "down" } else { "up" };
        let ns = self.node(i);
        ip_in(&ns, &["link", "set", "eth0", state]);
        if !isolated {
            // A link brought up loses its routes: the default route again.
            ip_in(
                &ns,
                &["route", "replace", "default", "via", &self.gateway(ZONE[i])],
            );
        }
    }

    /// Splits zone `zone` from the other zones while the host still reaches every node
    /// (`split` = false: joins them again): the router drops what goes between them, so
    /// clients write on both sides — split brain, concurrent coordinators, siblings.
    fn split_zone(&self, zone: usize, split: bool) {
        let action = if split { "add" } else { "del" };
        let r = self.router();
        let subnet = |z: usize| format!("{}.{}/28", self.nodes, 16 * z);
        for other in (0..3).filter(|&z| z != zone) {
            for (from, to) in [(zone, other), (other, zone)] {
                let (from, to) = (subnet(from), subnet(to));
                ip_in(&r, &["rule", action, "from", &from, "to", &to, "blackhole"]);
            }
        }
    }

    /// Cuts zone `zone` from the router (`cut` = false: restores it).
    fn partition_zone(&self, zone: usize, cut: bool) {
        let state = if cut { "down" } else { "up" };
        ip_in(
            &self.router(),
            &["link", "set", &format!("gp{zone}"), state],
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its links, the host's veth peer and its route too.
        for i in 0..NODES {
            let _ = sh("ip", &["netns", "del", &self.node(i)]);
        }
        let _ = sh("ip", &["netns", "del", &self.router()]);
        let _ = sh("ip", &["link", "del", &format!("{}h", self.tag)]);
    }
}

struct Node {
    id: String,
    zone: usize,
    addr: String,
    dir: String,
    netns: Option<String>,
    server: Option<Server>,
}

impl Node {
    fn start(&mut self, seed: Option<&str>) {
        let zone = format!("z{}", self.zone);
        let mut args = vec![
            "--profile",
            "test",
            "--node-id",
            self.id.as_str(),
            "--listen",
            self.addr.as_str(),
            "--data-dir",
            self.dir.as_str(),
            "--zone",
            zone.as_str(),
        ];
        if let Some(seed) = seed {
            args.extend(["--seeds", seed]);
        }
        let envs = [
            ("DOTKV_MEMBERSHIP__GOSSIP_INTERVAL_MS", "200"),
            ("DOTKV_HANDOFF__INTERVAL_MS", "200"),
            ("DOTKV_AAE__INTERVAL_MS", "1000"),
            ("DOTKV_RPC__PEER_TIMEOUT_MS", "1000"),
        ];
        let mut server = Server::start_in(self.netns.as_deref(), &args, &envs);
        assert!(
            server
                .wait_for_log("node ready", Duration::from_secs(60))
                .is_some(),
            "{} did not get ready: {}",
            self.id,
            server.log_text()
        );
        self.server = Some(server);
    }

    fn signal(&self, signal: &str) {
        if let Some(server) = &self.server {
            server.signal(signal);
        }
    }

    fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.signal("KILL");
            let _ = server.wait_exit(Duration::from_secs(30));
        }
    }
}

/// One recorded operation.
#[derive(Debug, Clone)]
enum Op {
    /// A read: the values it returned.
    Read { key: usize, values: Vec<String> },
    /// A read that failed, with the error kind.
    ReadFailed { kind: String },
    /// A write of `value` to `key`; `saw` the values of the read whose context it carried
    /// (empty for a blind write); `ok` whether it was acknowledged (an error may still
    /// have landed: it is then "maybe written").
    Write {
        key: usize,
        value: String,
        saw: Vec<String>,
        outcome: String,
    },
}

#[derive(Default)]
struct History {
    ops: Vec<Op>,
}

fn key_name(key: usize) -> String {
    format!("chaos-{key}")
}

fn text(values: &[bytes::Bytes]) -> Vec<String> {
    values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

async fn client_loop(
    client: FailoverClient,
    id: usize,
    seed: u64,
    until: Instant,
    history: Arc<Mutex<History>>,
) {
    let mut rng = Rng(seed ^ (id as u64).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let mut seq = 0u64;
    while Instant::now() < until {
        let key = rng.below(KEYS as u64) as usize;
        seq += 1;
        let value = format!("c{id}-{seq}");
        let name = key_name(key);
        let (saw, context) = if rng.below(10) < 7 {
            // Read-modify-write: the read's context supersedes what it saw.
            let read = client
                .call(|c| {
                    let name = name.clone();
                    async move { c.get_with(GetRequest::new(name)).await }
                })
                .await;
            match read {
                Ok(read) => {
                    let values = text(&read.values);
                    history.lock().unwrap().ops.push(Op::Read {
                        key,
                        values: values.clone(),
                    });
                    (values, Some(read.context))
                }
                Err(error) => {
                    history.lock().unwrap().ops.push(Op::ReadFailed {
                        kind: error.kind().to_owned(),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        } else {
            (Vec::new(), None)
        };
        let mut request = PutRequest::new(name, value.clone());
        if let Some(context) = context {
            request = request.with_context(context);
        }
        let outcome = match client
            .call(|c| {
                let request = request.clone();
                async move { c.put_with(request).await }
            })
            .await
        {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.kind().to_owned(),
        };
        let failed = outcome != "ok";
        history.lock().unwrap().ops.push(Op::Write {
            key,
            value,
            saw,
            outcome,
        });
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the checker found.
#[derive(Debug, Default)]
struct Verdict {
    lost: Vec<String>,
    phantoms: Vec<String>,
    zombies: Vec<String>,
}

/// Checks the history against the final reads (R = N, after healing).
fn check(history: &History, finals: &BTreeMap<usize, Vec<String>>) -> Verdict {
    let mut written: BTreeSet<(usize, &str)> = BTreeSet::new();
    // Values some write's context saw: superseded by that write if it landed.
    let mut superseded_by_ack: BTreeSet<(usize, &str)> = BTreeSet::new();
    let mut superseded_maybe: BTreeSet<(usize, &str)> = BTreeSet::new();
    for op in &history.ops {
        if let Op::Write {
            key,
            value,
            saw,
            outcome,
        } = op
        {
            written.insert((*key, value));
            for seen in saw {
                superseded_maybe.insert((*key, seen));
                if outcome == "ok" {
                    superseded_by_ack.insert((*key, seen));
                }
            }
        }
    }
    let mut verdict = Verdict::default();
    for op in &history.ops {
        match op {
            Op::Write {
                key,
                value,
                outcome,
                ..
            } if outcome == "ok" => {
                let present = finals.get(key).is_some_and(|f| f.contains(value));
                if !present && !superseded_maybe.contains(&(*key, value.as_str())) {
                    verdict.lost.push(format!("{} = {value}", key_name(*key)));
                }
            }
            Op::Read { key, values } => {
                for v in values {
                    if !written.contains(&(*key, v.as_str())) {
                        verdict
                            .phantoms
                            .push(format!("{} = {v} (read)", key_name(*key)));
                    }
                }
            }
            Op::Write { .. } | Op::ReadFailed { .. } => {}
        }
    }
    for (key, values) in finals {
        for v in values {
            if !written.contains(&(*key, v.as_str())) {
                verdict
                    .phantoms
                    .push(format!("{} = {v} (final)", key_name(*key)));
            }
            if superseded_by_ack.contains(&(*key, v.as_str())) {
                verdict.zombies.push(format!("{} = {v}", key_name(*key)));
            }
        }
    }
    verdict
}

/// A fault in progress, healed by [`heal`].
#[derive(Debug, Clone)]
enum Fault {
    Isolate(usize),
    PartitionZone(usize),
    SplitZone(usize),
    Kill(usize),
    Stop(usize),
    Wipe(usize),
}

fn describe(fault: &Fault) -> String {
    match fault {
        Fault::Isolate(i) => format!("isolate n{}", i + 1),
        Fault::PartitionZone(z) => format!("partition zone z{z} from the rest"),
        Fault::SplitZone(z) => format!("split zone z{z} from the other zones (clients see both)"),
        Fault::Kill(i) => format!("kill -9 n{}", i + 1),
        Fault::Stop(i) => format!("SIGSTOP n{}", i + 1),
        Fault::Wipe(i) => format!("kill -9 n{} and wipe its data dir", i + 1),
    }
}

fn inject(fault: &Fault, nodes: &mut [Node], net: Option<&Net>) {
    match *fault {
        Fault::Isolate(i) => net.expect("namespaces").isolate(i, true),
        Fault::PartitionZone(z) => net.expect("namespaces").partition_zone(z, true),
        Fault::SplitZone(z) => net.expect("namespaces").split_zone(z, true),
        Fault::Kill(i) | Fault::Wipe(i) => nodes[i].kill(),
        Fault::Stop(i) => nodes[i].signal("STOP"),
    }
}

fn heal(fault: &Fault, nodes: &mut [Node], net: Option<&Net>) {
    match *fault {
        Fault::Isolate(i) => net.expect("namespaces").isolate(i, false),
        Fault::PartitionZone(z) => net.expect("namespaces").partition_zone(z, false),
        Fault::SplitZone(z) => net.expect("namespaces").split_zone(z, false),
        Fault::Kill(i) => nodes[i].start(None),
        Fault::Wipe(i) => {
            // An empty node joins through another member (its own address is no seed).
            let _ = std::fs::remove_dir_all(&nodes[i].dir);
            let seed = nodes[(i + 1) % NODES].addr.clone();
            nodes[i].start(Some(&seed));
        }
        Fault::Stop(i) => nodes[i].signal("CONT"),
    }
}

/// The faults to choose from: one or two at a time, never two on a node, and a wipe only
/// alone (two lost copies are more than W = 2 promises to survive).
fn choose(rng: &mut Rng, namespaces: bool) -> Vec<Fault> {
    let pick = |rng: &mut Rng| -> Fault {
        let node = rng.below(NODES as u64) as usize;
        let kinds = if namespaces { 6 } else { 3 };
        match rng.below(kinds) {
            0 => Fault::Kill(node),
            1 => Fault::Stop(node),
            2 => Fault::Wipe(node),
            3 => Fault::Isolate(node),
            4 => Fault::PartitionZone(rng.below(3) as usize),
            _ => Fault::SplitZone(rng.below(3) as usize),
        }
    };
    let first = pick(rng);
    if matches!(first, Fault::Wipe(_)) || rng.below(3) != 0 {
        return vec![first];
    }
    let node_of = |f: &Fault| match *f {
        Fault::Isolate(i) | Fault::Kill(i) | Fault::Stop(i) | Fault::Wipe(i) => Some(i),
        Fault::PartitionZone(_) | Fault::SplitZone(_) => None,
    };
    let second = pick(rng);
    let clash = matches!(second, Fault::Wipe(_))
        || (node_of(&first).is_none() && node_of(&second).is_none())
        || (node_of(&first).is_some() && node_of(&first) == node_of(&second));
    if clash {
        vec![first]
    } else {
        vec![first, second]
    }
}

#[test]
fn no_acknowledged_write_is_lost_under_partitions_crashes_and_pauses() {
    let seconds: u64 = std::env::var("DOTKV_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let seed: u64 = std::env::var("DOTKV_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8); // its 90 s schedule has every kind of fault
    // DOTKV_CHAOS_LOOPBACK=1 skips the namespaces (what happens where they cannot be made).
    let net = if std::env::var_os("DOTKV_CHAOS_LOOPBACK").is_some() {
        None
    } else {
        Net::build()
    };
    let namespaces = net.is_some();
    if !namespaces {
        println!(
            "chaos: no network namespaces (not root, or DOTKV_CHAOS_LOOPBACK): loopback, process faults only"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| Node {
            id: format!("n{}", i + 1),
            zone: ZONE[i],
            addr: match &net {
                Some(net) => net.addr(i),
                None => format!("127.0.0.1:{}", common::free_port()),
            },
            dir: dir
                .path()
                .join(format!("n{}", i + 1))
                .to_str()
                .unwrap()
                .to_owned(),
            netns: net.as_ref().map(|n| n.node(i)),
            server: None,
        })
        .collect();
    let seed_addr = nodes[0].addr.clone();
    for (i, node) in nodes.iter_mut().enumerate() {
        node.start((i > 0).then_some(seed_addr.as_str()));
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let settled = common::eventually(Duration::from_secs(60), || {
        common::settled(&addrs[0], NODES)
    });
    assert!(settled, "the cluster did not settle");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let history = Arc::new(Mutex::new(History::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            // Each client starts at another node, so that load spreads.
            let mut order = addrs.clone();
            order.rotate_left(id % NODES);
            let client = FailoverClient::new(&order, Duration::from_secs(2)).unwrap();
            runtime.spawn(client_loop(client, id, seed, until, Arc::clone(&history)))
        })
        .collect();

    // The nemesis: quiet, faults, heal, quiet...; the last 10 s without faults.
    let mut rng = Rng(seed);
    let mut faults_log: Vec<String> = Vec::new();
    let mut last_heal = Instant::now();
    let nemesis_end = until - Duration::from_secs(10.min(seconds / 3));
    while Instant::now() + Duration::from_secs(8) < nemesis_end {
        std::thread::sleep(Duration::from_millis(2_000 + rng.below(3_000)));
        let faults = choose(&mut rng, namespaces);
        let hold = Duration::from_millis(3_000 + rng.below(5_000));
        for fault in &faults {
            faults_log.push(format!(
                "{:>6.1} s  {}",
                started.elapsed().as_secs_f64(),
                describe(fault)
            ));
            inject(fault, &mut nodes, net.as_ref());
        }
        std::thread::sleep(hold);
        for fault in &faults {
            heal(fault, &mut nodes, net.as_ref());
            last_heal = Instant::now();
            faults_log.push(format!(
                "{:>6.1} s  heal: {}",
                started.elapsed().as_secs_f64(),
                describe(fault)
            ));
        }
    }
    for client in clients {
        runtime.block_on(client).unwrap();
    }

    // Converged: every key's 3 primaries hold the same values, no fallback holds a hint.
    let healed = Instant::now();
    let client = FailoverClient::new(&addrs, Duration::from_secs(5)).unwrap();
    let keys: Vec<String> = (0..KEYS).map(key_name).collect();
    let converged = common::eventually(Duration::from_secs(120), || {
        common::every_key(&client, &runtime, &keys, |_, view| {
            let primaries: Vec<BTreeSet<&[u8]>> = view
                .replicas
                .iter()
                .filter(|r| r.role == "primary" && r.error.is_none())
                .map(|r| r.values.iter().map(|v| &v[..]).collect())
                .collect();
            primaries.len() == 3
                && primaries.windows(2).all(|w| w[0] == w[1])
                && view.replicas.iter().all(|r| r.role != "fallback")
        })
    });
    let converge_s = healed.elapsed().as_secs_f64();
    let since_heal_s = last_heal.elapsed().as_secs_f64();
    let mut finals = BTreeMap::new();
    for key in 0..KEYS {
        let read = runtime
            .block_on(client.call(|c| async move {
                c.get_with(GetRequest::new(key_name(key)).with_r(3)).await
            }))
            .expect("a final read with R = N");
        finals.insert(key, text(&read.values));
    }
    let history = history.lock().unwrap();
    let verdict = check(&history, &finals);

    // The report.
    let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failed_reads: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut reads, mut writes) = (0, 0);
    for op in &history.ops {
        match op {
            Op::Read { .. } => reads += 1,
            Op::ReadFailed { kind } => *failed_reads.entry(kind.as_str()).or_default() += 1,
            Op::Write { outcome, .. } => {
                writes += 1;
                *by_outcome.entry(outcome.as_str()).or_default() += 1;
            }
        }
    }
    let max_siblings = finals.values().map(Vec::len).max().unwrap_or(0);
    let mut report = format!(
        "chaos report: seed {seed}, {seconds} s, {} nodes in 3 zones ({}), N = 3, R = W = 2, \
         {CLIENTS} clients, {KEYS} keys\n\
         operations: {reads} reads ok, failed by kind {failed_reads:?}; {writes} writes \
         attempted, by outcome {by_outcome:?}\n\
         faults:\n{}\n\
         lost acknowledged writes: {} {:?}\n\
         phantom values: {} {:?}\n\
         superseded values back: {} {:?}\n\
         most siblings in a final read: {max_siblings}\n\
         converged {} {converge_s:.1} s after the clients stopped ({since_heal_s:.1} s after \
         the last heal)\n\
         rerun: just chaos {seconds} {seed}\n",
        NODES,
        if namespaces {
            "network namespaces"
        } else {
            "loopback, process faults only"
        },
        faults_log.join("\n"),
        verdict.lost.len(),
        verdict.lost,
        verdict.phantoms.len(),
        verdict.phantoms,
        verdict.zombies.len(),
        verdict.zombies,
        if converged { "in" } else { "NOT within" },
    );
    report = report.replace("\n\n", "\n");
    println!("{report}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join(format!("report-{seed}-{seconds}s.txt")), &report);

    assert!(
        writes > 0 && by_outcome.get("ok").copied().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(verdict.lost.is_empty(), "{report}");
    assert!(verdict.phantoms.is_empty(), "{report}");
    assert!(verdict.zombies.is_empty(), "{report}");
    assert!(converged, "{report}");
    drop(nodes);
    drop(net);
}
