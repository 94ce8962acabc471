//! Security over real TCP on loopback: peers need the cluster CA's certificate, clients
//! need a token that grants the call, the wire is TLS, and a flood of connections or a
//! slowloris sender from one address does not keep a normal client from its reads.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{insecure, node, node_with, settled, tls, write_ca};
use dotkv_rpc::{Access, Client, Connector, RpcConfig, RpcError, SecurityConfig, TokenConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(2);

/// The ids a node's status lists.
async fn members(client: &Client) -> Vec<String> {
    let mut ids: Vec<String> = client
        .status()
        .await
        .unwrap()
        .nodes
        .into_iter()
        .map(|n| n.id)
        .collect();
    ids.sort();
    ids
}

fn is_unauthorized(result: &Result<impl std::fmt::Debug, RpcError>) -> bool {
    matches!(result, Err(e) if e.kind() == "unauthorized")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_clusters_certificate_cannot_join_or_write_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path());
    let ca_file = dir.path().join("ca.pem");
    let (_a, _na, a_addr, _stop_a) = node("a", vec![], &tls(dir.path(), &ca, &ca_file, "a")).await;
    let (_b, _nb, _b_addr, _stop_b) = node(
        "b",
        vec![a_addr.clone()],
        &tls(dir.path(), &ca, &ca_file, "b"),
    )
    .await;
    let client_tls = Connector::tls_client(&ca_file).unwrap();
    let client = Client::connect_with(&a_addr, TIMEOUT, &client_tls)
        .await
        .unwrap();
    settled(&client, 2).await;

    // A certificate from another CA (wrong credential), and no TLS at all (missing one).
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = write_ca(other_dir.path());
    let other_file = other_dir.path().join("ca.pem");
    let wrong = tls(other_dir.path(), &other_ca, &other_file, "wrong");
    let (wrong_cluster, _nw, _w_addr, _stop_w) = node("wrong", vec![a_addr.clone()], &wrong).await;
    let (plain_cluster, _np, _p_addr, _stop_p) =
        node("plain", vec![a_addr.clone()], &insecure()).await;
    // Many gossip rounds (50 ms each) for the intruders to try.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        members(&client).await,
        ["a", "b"],
        "intruders are not listed"
    );
    for intruder in [&wrong_cluster, &plain_cluster] {
        let ids: Vec<String> = intruder.members().into_iter().map(|m| m.id).collect();
        assert!(
            !ids.iter().any(|id| id == "a" || id == "b"),
            "an intruder learned the cluster: {ids:?}"
        );
        assert!(
            intruder
                .routing()
                .is_none_or(|r| r.ring.index_of("a").is_none())
        );
    }

    // Their calls: refused at the handshake (wrong CA, no TLS), or as a client without
    // a member's certificate (TLS, no certificate): no replica write, no gossip.
    let wrong_peer = Connector::for_peers(&wrong, 1 << 20).unwrap();
    let refused = Client::connect_with(&a_addr, TIMEOUT, &wrong_peer).await;
    assert!(
        matches!(&refused, Err(RpcError::Unavailable { reason, .. }) if reason.contains("TLS")),
        "{refused:?}"
    );
    let plain = Client::connect_with(&a_addr, TIMEOUT, &Connector::plaintext()).await;
    assert!(
        matches!(plain, Err(RpcError::Unavailable { .. })),
        "{plain:?}"
    );
    let write = client
        .write_replica(Bytes::from_static(b"k"), Bytes::from_static(b"forged"))
        .await;
    assert!(is_unauthorized(&write), "{write:?}");
    let hint = client
        .write_hint(
            "a".into(),
            Bytes::from_static(b"k"),
            Bytes::from_static(b"x"),
        )
        .await;
    assert!(is_unauthorized(&hint), "{hint:?}");
    let page = client
        .handoff_page(0, None, dotkv_replication::PageMode::Objects)
        .await;
    assert!(is_unauthorized(&page), "{page:?}");
    let tree = client.aae_tree(0, vec![]).await;
    assert!(is_unauthorized(&tree), "{tree:?}");
    assert!(client.read_replica(Bytes::from_static(b"k")).await.is_err());
    assert!(
        client
            .replicas("k")
            .await
            .unwrap()
            .replicas
            .iter()
            .all(|r| r.values.is_empty())
    );

    // The members themselves still replicate: a write reaches both.
    client.put("k", "v", None).await.unwrap();
    let read = client.get("k").await.unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"v")]);
}

/// A write a one-node cluster acknowledges (the test nodes have N = W = 2).
fn one_ack(key: &str, value: &str) -> dotkv_replication::PutRequest {
    let mut put = dotkv_replication::PutRequest::new(key.to_owned(), value.to_owned());
    put.w = Some(1);
    put
}

fn token(token: &str, access: Access) -> TokenConfig {
    TokenConfig {
        token: token.into(),
        access,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_need_a_token_that_grants_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path());
    let ca_file = dir.path().join("ca.pem");
    let mut security = tls(dir.path(), &ca, &ca_file, "a");
    security.tokens = vec![
        token("reader-0123456789abcdef", Access::ReadOnly),
        token("writer-0123456789abcdef", Access::ReadWrite),
        token("admin-0123456789abcdef", Access::Admin),
    ];
    let (_a, _na, addr, _stop) = node("a", vec![], &security).await;
    let with = |token: Option<&str>| {
        Connector::tls_client(&ca_file)
            .unwrap()
            .with_token(token.map(String::from))
    };
    for token in [None, Some("not-a-token-0123456789")] {
        let refused = Client::connect_with(&addr, TIMEOUT, &with(token)).await;
        assert!(is_unauthorized(&refused), "{token:?}: {refused:?}");
    }

    let reader = Client::connect_with(&addr, TIMEOUT, &with(Some("reader-0123456789abcdef")))
        .await
        .unwrap();
    let writer = Client::connect_with(&addr, TIMEOUT, &with(Some("writer-0123456789abcdef")))
        .await
        .unwrap();
    let admin = Client::connect_with(&addr, TIMEOUT, &with(Some("admin-0123456789abcdef")))
        .await
        .unwrap();
    settled(&reader, 1).await;
    let put = reader.put_with(one_ack("k", "from the reader")).await;
    assert!(is_unauthorized(&put), "{put:?}");
    assert!(is_unauthorized(&reader.delete("k", None).await));
    writer
        .put_with(one_ack("k", "from the writer"))
        .await
        .unwrap();
    let read = reader.get("k").await.unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"from the writer")]);
    assert!(reader.status().await.is_ok() && reader.ring().await.is_ok());

    // Membership changes need the admin token; a writer is no peer either.
    assert!(is_unauthorized(&writer.remove("nobody").await));
    assert!(is_unauthorized(&writer.join("127.0.0.1:1").await));
    assert!(is_unauthorized(&writer.leave().await));
    let removed = admin.remove("nobody").await;
    assert!(
        matches!(&removed, Err(e) if e.kind() == "invalid_argument"),
        "admin may remove (an unknown id is refused as such): {removed:?}"
    );
    let forged = admin
        .write_replica(Bytes::from_static(b"k"), Bytes::from_static(b"x"))
        .await;
    assert!(is_unauthorized(&forged), "{forged:?}");
}

/// A TCP relay from a fresh port to `target` that keeps every byte it relays, both ways.
async fn recording_relay(target: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                continue;
            };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pump(in_read, out_write, Arc::clone(&record)));
            tokio::spawn(pump(out_read, in_write, Arc::clone(&record)));
        }
    });
    (addr, seen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        record.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes a canary through a relay to a node and joins a second node through another
/// relay; returns what each relay saw.
async fn wire_bytes(
    security: impl Fn(&str) -> SecurityConfig,
    client: Connector,
) -> (Vec<u8>, Vec<u8>) {
    let (_a, _na, a_addr, _stop_a) = node("a", vec![], &security("a")).await;
    let (client_relay, client_seen) = recording_relay(a_addr.clone()).await;
    let (peer_relay, peer_seen) = recording_relay(a_addr.clone()).await;
    let client = Client::connect_with(&client_relay, TIMEOUT, &client)
        .await
        .unwrap();
    // b's first gossip goes to its seed: the relay.
    let (_b, _nb, _b_addr, _stop_b) = node(
        "canary-node-b",
        vec![peer_relay],
        &security("canary-node-b"),
    )
    .await;
    settled(&client, 2).await;
    client
        .put("canary-key-5f1d", "canary-value-9c2e", None)
        .await
        .unwrap();
    let read = client.get("canary-key-5f1d").await.unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"canary-value-9c2e")]);
    let client_bytes = client_seen.lock().unwrap().clone();
    let peer_bytes = peer_seen.lock().unwrap().clone();
    (client_bytes, peer_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_on_the_wire_is_not_plaintext() {
    // Without TLS the canaries cross the wire as they are: what the relay can see.
    let (client, peer) = wire_bytes(|_| insecure(), Connector::plaintext()).await;
    assert!(contains(&client, b"canary-key-5f1d") && contains(&client, b"canary-value-9c2e"));
    assert!(contains(&peer, b"canary-node-b"));

    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path());
    let ca_file = dir.path().join("ca.pem");
    let (client, peer) = wire_bytes(
        |name| tls(dir.path(), &ca, &ca_file, name),
        Connector::tls_client(&ca_file).unwrap(),
    )
    .await;
    for (what, bytes) in [("client", &client), ("peer", &peer)] {
        assert!(bytes.len() > 1000, "{what}: {} bytes relayed", bytes.len());
        // A TLS handshake record opens the connection: 0x16, version 3.x.
        assert_eq!(&bytes[..2], &[0x16, 0x03], "{what} traffic starts with TLS");
        for canary in [
            &b"canary-key-5f1d"[..],
            b"canary-value-9c2e",
            b"canary-node-b",
            b"dotkv\x01",
        ] {
            assert!(
                !contains(bytes, canary),
                "{what} traffic shows {:?}",
                String::from_utf8_lossy(canary)
            );
        }
    }
}

/// Opens a connection to `addr` from source address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// Whether the node closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_and_a_slowloris_do_not_starve_a_normal_client() {
    const FLOOD: usize = 1000;
    let rpc = RpcConfig {
        max_connections_per_ip: 64,
        handshake_timeout_ms: 5000,
        frame_timeout_ms: 1000,
        ..RpcConfig::default()
    };
    let (_a, _na, addr, _stop) = node_with("a", vec![], &insecure(), rpc).await;
    let target: SocketAddr = addr.parse().unwrap();
    let client = Client::connect(&addr, TIMEOUT).await.unwrap();
    settled(&client, 1).await;
    client.put_with(one_ack("k", "v")).await.unwrap();

    // 1 000 idle connections from 127.0.0.2: they never say a word.
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect_from([127, 0, 0, 2], target).await.unwrap());
    }
    // A slowloris from 127.0.0.3: a valid handshake, then a frame of 100 bytes sent one
    // byte every 100 ms.
    let mut slow = connect_from([127, 0, 0, 3], target).await.unwrap();
    slow.write_all(b"dotkv\x01\x00\x00").await.unwrap();
    let mut verdict = [0u8; 3];
    slow.read_exact(&mut verdict).await.unwrap();
    assert_eq!(verdict, [0, 0, 0], "the handshake is accepted");
    slow.write_all(&100u32.to_be_bytes()).await.unwrap();
    let slowloris = tokio::spawn(async move {
        let started = Instant::now();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"x").await.is_err() {
                return Some(started.elapsed());
            }
        }
        if closed_within(&mut slow, Duration::from_secs(1)).await {
            Some(started.elapsed())
        } else {
            None
        }
    });

    // A normal client (127.0.0.1, a connection made now) reads meanwhile, each read within
    // its deadline.
    let normal = Client::connect(&addr, TIMEOUT).await.unwrap();
    for _ in 0..20 {
        let read = tokio::time::timeout(TIMEOUT, normal.get("k")).await;
        assert!(
            matches!(&read, Ok(Ok(r)) if r.values == vec![Bytes::from_static(b"v")]),
            "{read:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The node closed every flood connection over the per-address limit at once, keeping
    // at most 64 (which the handshake timeout ends later).
    let mut open = 0;
    for stream in &mut flood {
        if !closed_within(stream, Duration::from_millis(5)).await {
            open += 1;
        }
    }
    assert!(open <= 64, "{open} flood connections still open (limit 64)");
    // And cut the slowloris off once its frame was late (rpc.frame_timeout_ms = 1000): the
    // whole frame would have taken 10 s.
    let cut = slowloris.await.unwrap();
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(8)),
        "slowloris cut after {cut:?}"
    );
    // Still serving.
    assert!(normal.get("k").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_that_trickles_its_request_is_disconnected() {
    let rpc = RpcConfig {
        frame_timeout_ms: 1000,
        ..RpcConfig::default()
    };
    let (_a, node, _addr, _stop) = node_with("a", vec![], &insecure(), rpc.clone()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(dotkv_rpc::serve_http(
        listener,
        node,
        rpc,
        dotkv_rpc::ServerSecurity::insecure(),
        std::future::pending(),
    ));
    // A request head that never ends: the gateway lets go of it after 1 s of silence.
    let mut slow = TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the trickling connection is still open after 10 s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A whole request is answered.
    let mut normal = TcpStream::connect(http).await.unwrap();
    normal
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    normal.read_to_end(&mut response).await.unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}
