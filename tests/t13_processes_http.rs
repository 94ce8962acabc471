//! The HTTP/JSON gateway (`http.listen`) of real `dotkv-server` processes on loopback:
//! put, get, siblings (JSON, `300` with multipart), a resolving put with the context
//! header, delete, R/W parameters, binary values, errors and their statuses, `/status`,
//! `/ring` and `/openapi.json`. The client is a few lines of HTTP/1.1 over a socket, so
//! the test sees exactly the bytes a curl user gets.

mod common;

use std::time::Duration;

use common::http::{Response, http};
use common::{Server, free_port, sorted_values};

const WAIT: Duration = Duration::from_secs(30);

/// One sample of an OpenMetrics text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the OpenMetrics text format (the subset Prometheus scrapes): `# TYPE`, `# HELP`,
/// `# UNIT` lines, samples `name{label="value",...} number`, and the final `# EOF`. Panics
/// on anything else, on a sample of an undeclared family, or without the `# EOF`.
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "text after # EOF");
            return samples;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("a family name"));
            match kind {
                "TYPE" => {
                    let family_type = parts.next().expect("a type").to_owned();
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "unknown",
                        "info",
                    ];
                    assert!(known.contains(&family_type.as_str()), "{line}");
                    families.push((name.to_owned(), family_type));
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unexpected metadata line: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split(',')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect("a quoted label value");
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        let declared = families.iter().any(|(family, family_type)| {
            let suffixes: &[&str] = match family_type.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                _ => &[""],
            };
            suffixes.iter().any(|s| name == format!("{family}{s}"))
        });
        assert!(declared, "sample of an undeclared family: {line}");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    panic!("no # EOF at the end");
}

/// The value of the sample `name` with exactly `labels`.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

fn scrape(addr: &str) -> Vec<Sample> {
    let response = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text"))
    );
    parse_openmetrics(&String::from_utf8(response.body).expect("UTF-8 text"))
}

fn assert_error(response: &Response, status: u16, kind: &str) {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let json = response.json();
    assert_eq!(json["kind"], kind, "{json}");
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json}"
    );
}

#[test]
fn the_http_gateway_serves_reads_writes_siblings_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<Server> = Vec::new();
    let mut rpc: Vec<String> = Vec::new();
    let mut gateways: Vec<String> = Vec::new();
    for i in 1..=3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let gateway = format!("127.0.0.1:{}", free_port());
        let data = dir.path().join(format!("n{i}"));
        let seed = (i > 1).then(|| rpc[0].clone());
        let envs = [("DOTKV_HTTP__LISTEN", gateway.as_str())];
        let server = common::start_node(
            "test",
            &format!("n{i}"),
            &addr,
            data.to_str().unwrap(),
            seed.as_deref(),
            &envs,
            WAIT,
        );
        servers.push(server);
        rpc.push(addr);
        gateways.push(gateway);
    }
    assert!(
        common::eventually(WAIT, || common::settled(&rpc[0], 3)),
        "the cluster did not settle"
    );
    let (a, b) = (gateways[0].as_str(), gateways[1].as_str());
    let before = scrape(a);

    // Put and get; the context comes back in the header and the body.
    let put = http(a, "PUT", "/kv/greeting", &[], b"hello");
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.json()["context"], put.context());
    let read = http(b, "GET", "/kv/greeting", &[], b"");
    assert_eq!(read.status, 200);
    assert_eq!(sorted_values(&read.json()), ["hello"]);
    assert_eq!(read.json()["context"], read.context());

    // Two writes without a context are concurrent: siblings.
    for value in ["left", "right"] {
        let put = http(a, "PUT", "/kv/fork", &[], value.as_bytes());
        assert_eq!(put.status, 200);
    }
    let read = http(b, "GET", "/kv/fork", &[], b"");
    assert_eq!(read.status, 200);
    assert_eq!(sorted_values(&read.json()), ["left", "right"]);
    // As multipart: 300 Multiple Choices, one part per sibling.
    let multi = http(b, "GET", "/kv/fork", &[("Accept", "multipart/mixed")], b"");
    assert_eq!(multi.status, 300);
    let content_type = multi.header("content-type").unwrap().to_owned();
    let boundary = content_type.split("boundary=").nth(1).expect("a boundary");
    let body = String::from_utf8(multi.body.clone()).unwrap();
    let parts: Vec<&str> = body
        .split(&format!("--{boundary}"))
        .filter(|p| p.contains("application/octet-stream"))
        .collect();
    assert_eq!(parts.len(), 2, "{body}");
    assert!(body.contains("\r\n\r\nleft\r\n") && body.contains("\r\n\r\nright\r\n"));
    // One value asked for, several there: 300 with the JSON body.
    let one = http(
        b,
        "GET",
        "/kv/fork",
        &[("Accept", "application/octet-stream")],
        b"",
    );
    assert_eq!(one.status, 300);
    assert_eq!(sorted_values(&one.json()), ["left", "right"]);

    // A write with the read's context replaces both siblings.
    let context = read.context();
    let put = http(
        a,
        "PUT",
        "/kv/fork",
        &[("X-Dotkv-Context", &context)],
        b"merged",
    );
    assert_eq!(put.status, 200);
    let read = http(b, "GET", "/kv/fork?r=3", &[], b"");
    assert_eq!(sorted_values(&read.json()), ["merged"]);

    // Delete with the context: 404 afterwards, with a context to write after it.
    let deleted = http(
        a,
        "DELETE",
        "/kv/fork",
        &[("X-Dotkv-Context", &read.context())],
        b"",
    );
    assert_eq!(deleted.status, 200);
    let gone = http(b, "GET", "/kv/fork", &[], b"");
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["values"], serde_json::json!([]));
    assert!(!gone.context().is_empty());

    // Binary values: the exact bytes with application/octet-stream, base64 in JSON.
    let bytes = [0u8, 159, 146, 150, 255, b'\r', b'\n'];
    let headers = [("Content-Type", "application/octet-stream")];
    assert_eq!(http(a, "PUT", "/kv/blob?w=3", &headers, &bytes).status, 200);
    let raw = http(
        b,
        "GET",
        "/kv/blob",
        &[("Accept", "application/octet-stream")],
        b"",
    );
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, bytes);
    assert_eq!(raw.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        http(b, "GET", "/kv/blob", &[], b"").json()["values"][0],
        "AJ+Slv8NCg=="
    );

    // Keys with slashes and escapes.
    assert_eq!(http(a, "PUT", "/kv/a/b%20c", &[], b"nested").status, 200);
    let nested = http(b, "GET", "/kv/a/b%20c", &[], b"");
    assert_eq!(nested.json()["key"], "a/b c");
    assert_eq!(sorted_values(&nested.json()), ["nested"]);

    // Bad input: 400 invalid_argument, nothing stored.
    assert_error(
        &http(a, "PUT", "/kv/bad?w=4", &[], b"v"),
        400,
        "invalid_argument",
    );
    assert_error(
        &http(a, "PUT", "/kv/bad?w=two", &[], b"v"),
        400,
        "invalid_argument",
    );
    assert_error(
        &http(a, "GET", "/kv/bad?r=0", &[], b""),
        400,
        "invalid_argument",
    );
    assert_error(
        &http(a, "GET", "/kv/bad?w=2", &[], b""),
        400,
        "invalid_argument",
    );
    assert_error(
        &http(a, "GET", "/kv/bad?colour=red", &[], b""),
        400,
        "invalid_argument",
    );
    let context = [("X-Dotkv-Context", "not-a-context")];
    assert_error(
        &http(a, "PUT", "/kv/bad", &context, b"v"),
        400,
        "invalid_argument",
    );
    let long_key = format!("/kv/{}", "k".repeat(2000));
    assert_error(
        &http(a, "PUT", &long_key, &[], b"v"),
        400,
        "invalid_argument",
    );
    assert_eq!(http(b, "GET", "/kv/bad?r=3", &[], b"").status, 404);
    assert_error(&http(a, "GET", "/nowhere", &[], b""), 404, "not_found");

    // Status, ring, and the API description.
    let status = http(a, "GET", "/status", &[], b"").json();
    assert_eq!(status["node"], "n1");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    let ring = http(a, "GET", "/ring", &[], b"").json();
    assert!(ring["version"].as_u64().unwrap() > 0);
    assert!(!ring["partitions"].as_array().unwrap().is_empty());
    let api = http(a, "GET", "/openapi.json", &[], b"").json();
    assert_eq!(api["openapi"], "3.0.3");
    for path in ["/kv/{key}", "/status", "/ring", "/metrics", "/openapi.json"] {
        assert!(api["paths"][path].is_object(), "{path} is not described");
    }

    // The metrics parse and moved with the traffic above.
    let after = scrape(a);
    let puts = |samples: &[Sample]| {
        sample(
            samples,
            "dotkv_requests_total",
            &[("op", "put"), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        puts(&after) >= puts(&before) + 6.0,
        "puts: {} -> {}",
        puts(&before),
        puts(&after)
    );
    let refused = sample(
        &after,
        "dotkv_requests_total",
        &[("op", "put"), ("outcome", "invalid_argument")],
    );
    assert!(refused.unwrap_or(0.0) >= 3.0, "{refused:?}");
    let timed = sample(
        &after,
        "dotkv_request_duration_seconds_count",
        &[("op", "put")],
    );
    assert!(timed.unwrap_or(0.0) >= puts(&after), "{timed:?}");
    assert_eq!(
        sample(&after, "dotkv_members", &[("status", "up")]),
        Some(3.0)
    );
    assert!(sample(&after, "dotkv_gossip_rounds_total", &[]).unwrap() > 0.0);
    let commits = sample(&after, "dotkv_storage_commit_group_size_count", &[]);
    assert!(commits.unwrap_or(0.0) > 0.0, "{commits:?}");
    assert!(sample(&after, "dotkv_storage_commit_duration_seconds_sum", &[]).is_some());
    let lmdb = [("backend", "lmdb")];
    assert!(sample(&after, "dotkv_storage_bytes", &lmdb).is_some_and(|b| b > 0.0));
    // n1 holds a replica of each of the four keys written above (N = 3 of 3 nodes; the
    // deleted one as a tombstone).
    let objects = sample(&after, "dotkv_storage_objects", &lmdb);
    assert_eq!(objects, Some(4.0));

    // Every series the Grafana dashboard queries is exposed (but hints_pending, a family
    // labelled by target that has no series while no hints exist).
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana-dashboard.json"),
    )
    .unwrap();
    let exposition = String::from_utf8(http(a, "GET", "/metrics", &[], b"").body).unwrap();
    let mut queried: Vec<&str> = dashboard
        .match_indices("dotkv_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    queried.sort_unstable();
    queried.dedup();
    queried.retain(|series| *series != "dotkv_hints_pending");
    assert!(queried.len() >= 10, "{queried:?}");
    for series in queried {
        let family = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|suffix| series.strip_suffix(suffix))
            .unwrap_or(series);
        assert!(
            exposition.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {series}, which /metrics does not expose"
        );
    }

    // Two of three nodes gone: W = 2 cannot be met, 503 quorum_not_reached.
    servers[1].signal("KILL");
    servers[2].signal("KILL");
    let refused = http(a, "PUT", "/kv/lonely?w=2", &[], b"v");
    assert_error(&refused, 503, "quorum_not_reached");
}
