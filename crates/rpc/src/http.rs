//! The HTTP/JSON gateway (`http.listen`; off by default): the client calls for curl and any
//! language's HTTP library, served by axum on the node's runtime beside the tarpc service.
//!
//! ```text
//!  GET    /kv/{key}?r=&pr=   200 {"key","values","context"}; 404 (same body) when no live value
//!                            Accept: application/octet-stream  200 the one value's bytes
//!                            Accept: multipart/mixed           300 one part per sibling
//!                            (several siblings without multipart: 300 with the JSON body)
//!  PUT    /kv/{key}?w=&pw=   body = the value's bytes           200 {"key","context"}
//!  DELETE /kv/{key}?w=&pw=   a tombstone                        200 {"key","context"}
//!  GET    /status, /ring     what `dotkv status --json` / `dotkv ring --json` print
//!  GET    /openapi.json      this API's OpenAPI 3 description
//!  GET    /metrics           the node's metrics for Prometheus (OpenMetrics text)
//! ```
//!
//! The causal context travels in the `X-Dotkv-Context` header both ways (Riak's
//! `X-Riak-Vclock`): a read returns it, a write that sends it replaces exactly the values
//! that read saw. JSON values are the value's text when it is UTF-8, else its base64 (as
//! the CLI prints them). Errors are `{"error","kind"}` with the CLI's kinds:
//! `invalid_argument` 400, `quorum_not_reached` and `unavailable` 503, `timeout` 504,
//! `internal` 500, `unauthorized` 401 (no valid token) or 403 (a token that grants too
//! little) when `security.tokens` is set.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dotkv_replication::{Error, GetReply, GetRequest, Node, PutRequest};
use serde::Deserialize;
use serde_json::json;

use crate::conn::{Admitted, Gate, Limits};
use crate::security::Needs;
use crate::{Access, RpcConfig, ServerSecurity};

/// The causal context header.
pub const CONTEXT_HEADER: &str = "x-dotkv-context";

/// The OpenAPI description served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Serves the gateway for `node` on `listener` until `shutdown` completes: HTTPS with the
/// node's certificate when `security` has TLS, the connection limits of `config`, and
/// `security`'s tokens as `Authorization: Bearer` credentials.
///
/// # Errors
///
/// An I/O error of the listener.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    node: Node,
    config: RpcConfig,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let gate = Gate::new(security.clone(), Limits::new(&config));
    let (admitted, rx) = tokio::sync::mpsc::channel(64);
    let accepting = tokio::spawn(admit(listener, gate, admitted));
    let result = axum::serve(GatedListener { rx, local }, router(node, security))
        .with_graceful_shutdown(shutdown)
        .await;
    accepting.abort();
    result
}

/// Accepts connections under the gate's limits; each one's TLS handshake runs in its own
/// task, so that a client slow to handshake delays nobody.
async fn admit(
    listener: tokio::net::TcpListener,
    gate: Arc<Gate>,
    admitted: tokio::sync::mpsc::Sender<(Admitted, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(permit) = gate.admit(peer) else {
            continue;
        };
        let (gate, admitted) = (Arc::clone(&gate), admitted.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            if let Some(stream) = gate.tls_only(tcp, peer).await {
                let connection = Admitted::new(stream, gate.limits.frame_timeout, permit);
                let _ = admitted.send((connection, peer)).await;
            }
        });
    }
}

/// The admitted connections, as axum's listener.
struct GatedListener {
    rx: tokio::sync::mpsc::Receiver<(Admitted, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for GatedListener {
    type Io = Admitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Admitted, SocketAddr) {
        match self.rx.recv().await {
            Some(connection) => connection,
            // The accepting task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The gateway's routes, for `node`; with tokens in `security`, each request needs an
/// `Authorization: Bearer` token granting what it does (`PUT` and `DELETE` read-write,
/// the rest read-only).
pub fn router(node: Node, security: ServerSecurity) -> Router {
    let security = Arc::new(security);
    let body_limit = node.limits().max_value_bytes + 1;
    Router::new()
        .route("/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/status", get(status))
        .route("/ring", get(ring))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such route", "not_found") })
        // A body over the node's value limit is refused once that much has arrived,
        // never buffered whole.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(move |request, next| {
            authorize(Arc::clone(&security), request, next)
        }))
        .with_state(node)
}

/// Refuses a request whose token does not grant what it does: `401` without a valid token
/// (with `WWW-Authenticate: Bearer`), `403` with one that grants too little; both with
/// kind `unauthorized`.
async fn authorize(
    security: Arc<ServerSecurity>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let needs = if matches!(*request.method(), Method::PUT | Method::DELETE) {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    // The RPC handshake's decision, over HTTP: no certificate, the bearer token.
    match security.role(false, token) {
        Ok(role) if role.allows(Needs::Client(needs)) => next.run(request).await,
        Ok(role) => error_response(
            StatusCode::FORBIDDEN,
            &format!(
                "this token grants {role}; {} needs {needs}",
                request.method()
            ),
            "unauthorized",
        ),
        Err(reason) => {
            let message = format!("{reason}: Authorization: Bearer TOKEN");
            let mut response = error_response(StatusCode::UNAUTHORIZED, &message, "unauthorized");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The quorum parameters of a request (`?r=2&w=3`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Quorum {
    r: Option<usize>,
    pr: Option<usize>,
    w: Option<usize>,
    pw: Option<usize>,
}

/// The key and quorum parameters, or why they are refused.
fn request_parts(
    key: Result<Path<String>, PathRejection>,
    quorum: Result<Query<Quorum>, QueryRejection>,
) -> Result<(String, Quorum), String> {
    let Path(key) = key.map_err(|e| format!("key: {}", e.body_text()))?;
    let Query(quorum) = quorum.map_err(|e| format!("query: {}", e.body_text()))?;
    Ok((key, quorum))
}

async fn get_key(
    State(node): State<Node>,
    key: Result<Path<String>, PathRejection>,
    quorum: Result<Query<Quorum>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (key, quorum) = match request_parts(key, quorum) {
        Ok(parts) => parts,
        Err(refused) => return invalid(&refused),
    };
    if quorum.w.is_some() || quorum.pw.is_some() {
        return invalid("w and pw apply to writes");
    }
    let mut request = GetRequest::new(key.clone());
    request.r = quorum.r;
    request.pr = quorum.pr;
    match node.get(request).await {
        Ok(reply) => read_response(&key, reply, &headers),
        Err(error) => node_error(&error),
    }
}

async fn put_key(
    State(node): State<Node>,
    key: Result<Path<String>, PathRejection>,
    quorum: Result<Query<Quorum>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(node, key, quorum, &headers, Some(body)).await
}

async fn delete_key(
    State(node): State<Node>,
    key: Result<Path<String>, PathRejection>,
    quorum: Result<Query<Quorum>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    write(node, key, quorum, &headers, None).await
}

/// A put (`value`) or a delete (`None`).
async fn write(
    node: Node,
    key: Result<Path<String>, PathRejection>,
    quorum: Result<Query<Quorum>, QueryRejection>,
    headers: &HeaderMap,
    value: Option<Bytes>,
) -> Response {
    let (key, quorum) = match request_parts(key, quorum) {
        Ok(parts) => parts,
        Err(refused) => return invalid(&refused),
    };
    if quorum.r.is_some() || quorum.pr.is_some() {
        return invalid("r and pr apply to reads");
    }
    let mut request = match value {
        Some(value) => PutRequest::new(key.clone(), value),
        None => PutRequest::delete(key.clone()),
    };
    request.w = quorum.w;
    request.pw = quorum.pw;
    if let Some(context) = headers.get(CONTEXT_HEADER) {
        match context.to_str() {
            Ok(context) if !context.is_empty() => request.context = Some(context.to_owned()),
            Ok(_) => {}
            Err(_) => return invalid("the X-Dotkv-Context header is not a context token"),
        }
    }
    match node.put(request).await {
        Ok(reply) => {
            let body = json!({ "key": key, "context": reply.context });
            with_context(StatusCode::OK, &reply.context, axum::Json(body))
        }
        Err(error) => node_error(&error),
    }
}

/// A read's answer in the representation the client accepts.
fn read_response(key: &str, reply: GetReply, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    let context = reply.context.clone();
    if reply.values.is_empty() {
        // Not found, but with the context: a write after a delete passes it.
        return with_context(StatusCode::NOT_FOUND, &context, json_values(key, &reply));
    }
    if accept.contains("multipart/mixed") && reply.values.len() > 1 {
        return with_context(StatusCode::MULTIPLE_CHOICES, &context, multipart(&reply));
    }
    if accept.contains("application/octet-stream") && !accept.contains("application/json") {
        if let [value] = reply.values.as_slice() {
            let body = (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                value.clone(),
            );
            return with_context(StatusCode::OK, &context, body);
        }
        return with_context(
            StatusCode::MULTIPLE_CHOICES,
            &context,
            json_values(key, &reply),
        );
    }
    with_context(StatusCode::OK, &context, json_values(key, &reply))
}

fn json_values(key: &str, reply: &GetReply) -> axum::Json<serde_json::Value> {
    let values: Vec<String> = reply.values.iter().map(|v| crate::printable(v)).collect();
    axum::Json(json!({ "key": key, "values": values, "context": reply.context }))
}

/// Siblings as `multipart/mixed`, one `application/octet-stream` part each.
fn multipart(reply: &GetReply) -> impl IntoResponse {
    // A boundary that no sibling contains.
    let mut boundary = String::from("dotkv-siblings");
    while reply
        .values
        .iter()
        .any(|v| v.windows(boundary.len()).any(|w| w == boundary.as_bytes()))
    {
        boundary.push('x');
    }
    let mut body = Vec::new();
    for value in &reply.values {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/mixed; boundary={boundary}");
    ([(header::CONTENT_TYPE, content_type)], body)
}

fn with_context(status: StatusCode, context: &str, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(value) = HeaderValue::from_str(context) {
        response.headers_mut().insert(CONTEXT_HEADER, value);
    }
    response
}

async fn status(State(node): State<Node>) -> Response {
    axum::Json(crate::server::status_of(&node).await).into_response()
}

async fn ring(State(node): State<Node>) -> Response {
    axum::Json(crate::server::ring_of(&node)).into_response()
}

async fn metrics(State(node): State<Node>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let text = node.metrics_text().await;
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The HTTP status of a node error's kind.
fn node_error(error: &Error) -> Response {
    let status = match error.kind() {
        "invalid_argument" => StatusCode::BAD_REQUEST,
        "quorum_not_reached" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, &error.to_string(), error.kind())
}

fn invalid(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, message, "invalid_argument")
}

fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": message, "kind": kind })),
    )
        .into_response()
}
