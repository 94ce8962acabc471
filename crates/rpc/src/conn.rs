//! A connection's life before and around tarpc: TCP, TLS when configured, dotkv's
//! handshake (the client's token, the node's verdict), then length-delimited frames.
//!
//! The accepting side defends itself before any call runs: at most
//! `rpc.max_connections` connections, `rpc.max_connections_per_ip` from one address (more
//! are closed at once), `rpc.handshake_timeout_ms` for TLS and the handshake, and
//! `rpc.frame_timeout_ms` for a frame to arrive whole once its first byte has (a
//! slowloris sender is cut off), and for an HTTP connection to show activity. Frames
//! longer than `rpc.max_frame_bytes` are refused by the codec from their length prefix,
//! before their body is allocated.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::RpcConfig;
use crate::security::{Connector, MAX_TOKEN_BYTES, Role, ServerSecurity, log_refused};

/// A TCP connection, plain or inside TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => match ready!(Pin::new(s.as_mut()).poll_read(cx, buf)) {
                // A peer that closes without TLS's close_notify (every client that just
                // exits) ends the stream like a TCP close: frames are length-delimited,
                // so a cut-off frame is still detected, and nothing is worth a warning.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
                result => Poll::Ready(result),
            },
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The handshake's first bytes: a protocol name and version.
pub(crate) const HELLO_MAGIC: &[u8; 6] = b"dotkv\x01";
/// The handshake header: the magic and the token's length (u16, big-endian).
pub(crate) const HELLO_HEADER_BYTES: usize = HELLO_MAGIC.len() + 2;

/// The length of the token that follows a handshake header.
///
/// # Errors
///
/// Not dotkv's handshake, or a token longer than [`MAX_TOKEN_BYTES`] (refused before it is
/// read).
pub(crate) fn hello_token_len(header: &[u8; HELLO_HEADER_BYTES]) -> Result<usize, String> {
    if header[..HELLO_MAGIC.len()] != HELLO_MAGIC[..] {
        return Err(
            "not a dotkv handshake (a TLS client talking to a node without TLS, or \
                    not a dotkv client)"
                .into(),
        );
    }
    let len = usize::from(u16::from_be_bytes([header[6], header[7]]));
    if len > MAX_TOKEN_BYTES {
        return Err(format!(
            "a token of {len} bytes is longer than {MAX_TOKEN_BYTES}"
        ));
    }
    Ok(len)
}

/// The token a handshake carries (`None` when empty).
///
/// # Errors
///
/// The token is not UTF-8.
pub(crate) fn hello_token(bytes: &[u8]) -> Result<Option<&str>, String> {
    match std::str::from_utf8(bytes) {
        Ok("") => Ok(None),
        Ok(token) => Ok(Some(token)),
        Err(_) => Err("the token is not UTF-8".into()),
    }
}

/// The client's handshake message.
pub(crate) fn encode_hello(token: Option<&str>) -> Vec<u8> {
    let token = token.unwrap_or_default().as_bytes();
    let len = u16::try_from(token.len()).expect("tokens are at most MAX_TOKEN_BYTES");
    let mut hello = Vec::with_capacity(HELLO_HEADER_BYTES + token.len());
    hello.extend_from_slice(HELLO_MAGIC);
    hello.extend_from_slice(&len.to_be_bytes());
    hello.extend_from_slice(token);
    hello
}

/// The node's verdict: `0` accepted, `1` refused, then a u16 length and the reason.
fn encode_verdict(refused: Option<&str>) -> Vec<u8> {
    let reason = refused.unwrap_or_default().as_bytes();
    let reason = &reason[..reason.len().min(1024)];
    let mut verdict = vec![u8::from(refused.is_some())];
    verdict.extend_from_slice(&u16::try_from(reason.len()).unwrap_or(0).to_be_bytes());
    verdict.extend_from_slice(reason);
    verdict
}

/// Why dialing failed.
#[derive(Debug)]
pub(crate) enum DialError {
    /// No connection, a failed TLS handshake, or a connection closed during the handshake.
    Unreachable(String),
    /// The node refused the credentials.
    Refused(String),
}

/// Connects to `addr` as `connector` says: TCP, TLS, then the handshake.
pub(crate) async fn dial(addr: &str, connector: &Connector) -> Result<Stream, DialError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| DialError::Unreachable(e.to_string()))?;
    // Small RPCs: do not wait to fill a packet.
    let _ = tcp.set_nodelay(true);
    let mut stream = match connector.tls() {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let tls = tls
                .connect(Connector::server_name(), tcp)
                .await
                .map_err(|e| {
                    DialError::Unreachable(format!(
                        "TLS handshake failed: {e} (does the node have security.tls on, \
                         and a certificate from this CA?)"
                    ))
                })?;
            Stream::Tls(Box::new(tls.into()))
        }
    };
    let closed = |e: io::Error| {
        DialError::Unreachable(format!(
            "the node closed the connection during the handshake ({e}): it may need TLS \
             (--ca) or a certificate; its log says why"
        ))
    };
    stream
        .write_all(&encode_hello(connector.token()))
        .await
        .map_err(closed)?;
    stream.flush().await.map_err(closed)?;
    let mut header = [0u8; 3];
    stream.read_exact(&mut header).await.map_err(closed)?;
    let mut reason = vec![0u8; usize::from(u16::from_be_bytes([header[1], header[2]]))];
    stream.read_exact(&mut reason).await.map_err(closed)?;
    match header[0] {
        0 => Ok(stream),
        _ => Err(DialError::Refused(
            String::from_utf8_lossy(&reason).into_owned(),
        )),
    }
}

/// The accepting side's limits, from `[rpc]`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    max_connections: usize,
    max_per_ip: usize,
    handshake_timeout: Duration,
    pub(crate) frame_timeout: Duration,
}

impl Limits {
    pub(crate) fn new(config: &RpcConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
            frame_timeout: Duration::from_millis(config.frame_timeout_ms),
        }
    }
}

/// Admits connections: counts them per address, runs TLS and the handshake.
#[derive(Debug)]
pub(crate) struct Gate {
    security: ServerSecurity,
    pub(crate) limits: Limits,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
    /// When a refusal for being over a limit was last logged (one line a second at most:
    /// a flood must not flood the log).
    last_warned: Option<Instant>,
}

/// A connection's place under the limits, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.open();
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    pub(crate) fn new(security: ServerSecurity, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            security,
            limits,
            open: Mutex::default(),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().expect("connection counts poisoned")
    }

    /// A permit for a connection from `peer`, or `None` when over a limit.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Permit> {
        let ip = peer.ip();
        let mut open = self.open();
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        let over = if open.total >= self.limits.max_connections {
            Some("rpc.max_connections")
        } else if from_ip >= self.limits.max_per_ip {
            Some("rpc.max_connections_per_ip")
        } else {
            None
        };
        if let Some(limit) = over {
            let now = Instant::now();
            if open
                .last_warned
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
            {
                open.last_warned = Some(now);
                log_refused(peer, "connection", &format!("over {limit}"));
            }
            return None;
        }
        open.total += 1;
        *open.by_ip.entry(ip).or_default() += 1;
        Some(Permit {
            gate: Arc::clone(self),
            ip,
        })
    }

    /// TLS (when configured) within the handshake timeout: the HTTP gateway's admission.
    pub(crate) async fn tls_only(&self, tcp: TcpStream, peer: SocketAddr) -> Option<Stream> {
        let accepted = self.within_timeout(peer, self.accept_tls(tcp)).await;
        accepted.map(|(stream, _)| stream)
    }

    /// TLS and the handshake within the handshake timeout: the stream and its role, or
    /// `None` when refused (logged with `peer`'s address).
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(Stream, Role)> {
        let _ = tcp.set_nodelay(true);
        self.within_timeout(peer, self.handshake_within(tcp)).await
    }

    /// Runs an admission within the handshake timeout; a refusal or the timeout is logged
    /// with `peer`'s address.
    async fn within_timeout<T>(
        &self,
        peer: SocketAddr,
        admission: impl Future<Output = Result<T, String>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.limits.handshake_timeout, admission).await {
            Ok(Ok(admitted)) => Some(admitted),
            Ok(Err(reason)) => {
                log_refused(peer, "connection", &reason);
                None
            }
            Err(_) => {
                log_refused(
                    peer,
                    "connection",
                    "handshake not completed in rpc.handshake_timeout_ms",
                );
                None
            }
        }
    }

    /// TLS when configured: the stream, and whether the peer presented a certificate
    /// (which the verifier checked against the CA).
    async fn accept_tls(&self, tcp: TcpStream) -> Result<(Stream, bool), String> {
        let Some(acceptor) = self.security.acceptor() else {
            return Ok((Stream::Plain(tcp), false));
        };
        let tls = acceptor.accept(tcp).await.map_err(|e| {
            if e.to_string().contains("InvalidContentType") {
                "not TLS (a node with security.tls off, or a client without --ca)".to_owned()
            } else {
                format!("TLS handshake: {e}")
            }
        })?;
        let certified = tls
            .get_ref()
            .1
            .peer_certificates()
            .is_some_and(|certs| !certs.is_empty());
        Ok((Stream::Tls(Box::new(tls.into())), certified))
    }

    async fn handshake_within(&self, tcp: TcpStream) -> Result<(Stream, Role), String> {
        let (mut stream, certified) = self.accept_tls(tcp).await?;
        let mut header = [0u8; HELLO_HEADER_BYTES];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let len = hello_token_len(&header)?;
        let mut token = vec![0u8; len];
        stream
            .read_exact(&mut token)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let role = hello_token(&token).and_then(|token| self.security.role(certified, token));
        let verdict = encode_verdict(role.as_ref().err().map(String::as_str));
        stream
            .write_all(&verdict)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        stream
            .flush()
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        role.map(|role| (stream, role))
    }
}

/// The accepting side's reader: a frame must arrive whole within `frame_timeout` of its
/// first byte, or the connection fails with `TimedOut`. Between frames a connection may
/// idle (peers keep theirs open).
///
/// It follows the length-delimited framing (a 4-byte big-endian length, then the body)
/// on the bytes it passes on, so it knows where frames begin without buffering them.
#[derive(Debug)]
pub(crate) struct FrameDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a frame is partly read.
    deadline: Pin<Box<Sleep>>,
    /// Bytes of the current frame's length prefix read so far (0..4).
    prefix: [u8; 4],
    prefix_read: usize,
    /// Body bytes of the current frame still to come.
    body_left: usize,
    /// The permit this connection holds (released with it).
    _permit: Option<Permit>,
}

impl<S> FrameDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration, permit: Option<Permit>) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(0))),
            prefix: [0; 4],
            prefix_read: 0,
            body_left: 0,
            _permit: permit,
        }
    }

    fn mid_frame(&self) -> bool {
        self.prefix_read > 0 || self.body_left > 0
    }

    /// Follows the framing over `bytes`; arms the deadline when a frame starts.
    fn track(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                if self.body_left == 0 {
                    self.prefix_read = 0;
                }
                continue;
            }
            if self.prefix_read == 0 {
                self.deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.timeout);
            }
            let n = (4 - self.prefix_read).min(bytes.len());
            self.prefix[self.prefix_read..self.prefix_read + n].copy_from_slice(&bytes[..n]);
            self.prefix_read += n;
            bytes = &bytes[n..];
            if self.prefix_read == 4 {
                self.body_left =
                    usize::try_from(u32::from_be_bytes(self.prefix)).unwrap_or(usize::MAX);
                if self.body_left == 0 {
                    self.prefix_read = 0;
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.track(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.mid_frame() {
                    ready!(this.deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "a frame did not arrive whole within rpc.frame_timeout_ms",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The HTTP gateway's connection: the stream, its permit, and an idle deadline. A
/// connection on which nothing is read or written for `idle` fails with `TimedOut` when
/// next read (nginx's `client_header_timeout` and keep-alive timeout in one): a client
/// trickling a request's headers, or holding an idle keep-alive, gives its place back.
#[derive(Debug)]
pub(crate) struct Admitted {
    stream: Stream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: Permit,
}

impl Admitted {
    pub(crate) fn new(stream: Stream, idle: Duration, permit: Permit) -> Self {
        Self {
            stream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _permit: permit,
        }
    }

    fn active(&mut self) {
        self.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + self.idle);
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.active();
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "an HTTP connection idle for rpc.frame_timeout_ms",
                )))
            }
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.stream).poll_write(cx, buf));
        this.active();
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
