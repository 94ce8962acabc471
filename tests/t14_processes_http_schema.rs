//! The gateway against its own OpenAPI description: the description is checked (every
//! `$ref` resolves, every operation documents a success), then requests generated from it
//! — every operation, random keys (escaped, over-long, invalid UTF-8), random parameter
//! values of the documented names and odd ones, random and stale contexts, random bodies —
//! go to a live node. No answer may be a server error, every status must be one the
//! description documents for the operation, and every JSON body must carry the fields its
//! documented schema requires. (schemathesis does this from PyPI; this is the same idea
//! without a Python dependency in CI.)

mod common;

use std::time::Duration;

use common::http::http;
use common::{Rng, free_port};
use serde_json::Value;

/// Resolves a local `$ref` (`#/components/...`), or returns `value` itself.
fn resolve<'a>(api: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        None => value,
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            let target = api
                .pointer(pointer)
                .unwrap_or_else(|| panic!("$ref {reference} does not resolve"));
            resolve(api, target)
        }
    }
}

/// Every `$ref` anywhere in `value` resolves.
fn check_refs(api: &Value, value: &Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("$ref") {
                resolve(api, value);
            }
            map.values().for_each(|v| check_refs(api, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(api, v)),
        _ => {}
    }
}

/// A key, percent-encoded for the path: mostly ordinary, sometimes odd.
fn random_key(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "%FF%FE".into(),    // not UTF-8
        1 => "k".repeat(1_500),  // over limits.max_key_bytes
        2 => "a/b/c".into(),     // slashes are part of the key
        3 => "%00%0A%20".into(), // control characters and a space
        _ => {
            let length = 1 + rng.below(24);
            (0..length)
                .map(|_| {
                    let byte = 0x21 + rng.below(0x5e) as u8; // printable ASCII
                    if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                        char::from(byte).to_string()
                    } else {
                        format!("%{byte:02X}")
                    }
                })
                .collect()
        }
    }
}

/// A value for a parameter of `schema`: in range, out of range, or not of its type.
fn random_value(rng: &mut Rng, schema: &Value) -> String {
    if schema["type"] == "integer" {
        return rng
            .pick(&[
                "0",
                "1",
                "2",
                "3",
                "-1",
                "99",
                "18446744073709551616",
                "two",
                "",
            ])
            .to_string();
    }
    rng.pick(&["", "x", "AQHkv6jV3ZyngWcB", "%%%", "a b"])
        .to_string()
}

#[test]
fn requests_generated_from_the_openapi_description_get_documented_answers_and_no_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = format!("127.0.0.1:{}", free_port());
    let envs = [
        ("DOTKV_HTTP__LISTEN", gateway.as_str()),
        ("DOTKV_REPLICATION__N", "1"),
        ("DOTKV_REPLICATION__R", "1"),
        ("DOTKV_REPLICATION__W", "1"),
    ];
    let data = dir.path().join("n1");
    let _server = common::start_node(
        "test",
        "n1",
        &addr,
        data.to_str().unwrap(),
        None,
        &envs,
        Duration::from_secs(30),
    );
    assert!(
        common::eventually(Duration::from_secs(30), || common::settled(&addr, 1)),
        "the node has no ring"
    );

    let api = http(&gateway, "GET", "/openapi.json", &[], b"").json();
    assert!(api["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    check_refs(&api, &api);
    let paths = api["paths"].as_object().expect("paths");
    let mut rng = Rng(0x5eed_0016);
    let mut contexts = vec![String::new()];
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for (template, item) in paths {
        let shared = item["parameters"].as_array().cloned().unwrap_or_default();
        for method in ["get", "put", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {template} documents no success"
            );
            let mut parameters: Vec<&Value> = shared.iter().map(|p| resolve(&api, p)).collect();
            if let Some(own) = operation["parameters"].as_array() {
                parameters.extend(own.iter().map(|p| resolve(&api, p)));
            }
            for _ in 0..40 {
                let mut path = template.replace("{key}", &random_key(&mut rng));
                let mut query = Vec::new();
                let mut headers: Vec<(String, String)> = Vec::new();
                for parameter in &parameters {
                    let name = parameter["name"].as_str().unwrap();
                    match parameter["in"].as_str().unwrap() {
                        "query" if rng.below(3) == 0 => {
                            query.push(format!(
                                "{name}={}",
                                random_value(&mut rng, &parameter["schema"])
                            ));
                        }
                        "header" if rng.below(2) == 0 => {
                            let context = if rng.below(2) == 0 {
                                rng.pick(&contexts).clone()
                            } else {
                                random_value(&mut rng, &parameter["schema"])
                            };
                            headers.push((name.to_owned(), context));
                        }
                        _ => {}
                    }
                }
                if rng.below(10) == 0 {
                    query.push("colour=red".into()); // a parameter nobody documents
                }
                if !query.is_empty() {
                    path = format!("{path}?{}", query.join("&"));
                }
                let body: Vec<u8> = if method == "put" {
                    (0..rng.below(2_000)).map(|_| rng.next() as u8).collect()
                } else {
                    Vec::new()
                };
                let header_refs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let response = http(&gateway, &method.to_uppercase(), &path, &header_refs, &body);
                *seen.entry(response.status).or_default() += 1;
                let what = format!(
                    "{} {path} -> {}: {}",
                    method.to_uppercase(),
                    response.status,
                    String::from_utf8_lossy(&response.body)
                );
                assert!(
                    response.status < 500 || response.status == 503,
                    "server error: {what}"
                );
                let documented = responses.get(&response.status.to_string());
                let documented =
                    documented.unwrap_or_else(|| panic!("undocumented status: {what}"));
                let documented = resolve(&api, documented);
                let is_json = response
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("application/json"));
                if is_json {
                    let body = response.json();
                    let schema =
                        resolve(&api, &documented["content"]["application/json"]["schema"]);
                    for field in schema["required"].as_array().into_iter().flatten() {
                        let field = field.as_str().unwrap();
                        assert!(body.get(field).is_some(), "no `{field}` in {what}");
                    }
                }
                if let Some(context) = response.header("x-dotkv-context") {
                    contexts.push(context.to_owned());
                }
            }
        }
    }
    // The generator reaches the successes, the refusals and the misses alike.
    for status in [200, 400, 404] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
    assert!(
        contexts.len() > 10,
        "no write succeeded: the generated requests are all refused"
    );
}
