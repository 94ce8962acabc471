//! Who may talk to a node, and how the bytes are protected (`[security]`).
//!
//! - **Peers** prove membership with mutual TLS: every node holds a certificate signed by
//!   the cluster's CA (`dotkv cert` makes both for local clusters). A connection that
//!   presents one is a peer and may gossip, replicate, hand off and exchange trees; one
//!   that does not may make client calls only. Certificates are checked against the CA,
//!   not against host names: every node certificate carries the name [`SERVER_NAME`]
//!   (CockroachDB's `node` principal), so a node needs no certificate per address.
//! - **Clients** connect over TLS (verifying the node against the CA) and, when
//!   `security.tokens` is not empty, present a token that grants `read-only`,
//!   `read-write` or `admin` (membership changes) on every call of the connection.
//! - With `security.tls = false` (the `test` profile) nothing is encrypted or
//!   authenticated: the network itself must be trusted, and every connection is a peer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};

/// The name every node certificate carries and every connection verifies.
pub const SERVER_NAME: &str = "dotkv-node";

/// The longest token accepted (a handshake carrying more is refused before it is read).
pub const MAX_TOKEN_BYTES: usize = 256;
/// The shortest token a configuration may list: a guessable token is no credential.
const MIN_TOKEN_BYTES: usize = 16;

/// `[security]`, `DOTKV_SECURITY__*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// TLS on every connection: mutual TLS between nodes, TLS for clients. Default true;
    /// `false` trusts the network (no encryption, every connection is a peer).
    pub tls: bool,
    /// The cluster CA's certificate (PEM): peers' and this node's certificates are
    /// checked against it.
    pub ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA.
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub key: Option<PathBuf>,
    /// Client tokens; when empty, any client that completes TLS may read, write and change
    /// membership. Needs `tls` (peers are told from clients by their certificate).
    pub tokens: Vec<TokenConfig>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            tls: true,
            ca: None,
            cert: None,
            key: None,
            tokens: Vec::new(),
        }
    }
}

/// One client token (`security.tokens = [{ token = "...", access = "read-only" }]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret the client presents (`dotkv --token`, `DOTKV_TOKEN`, HTTP `Authorization:
    /// Bearer`).
    pub token: String,
    /// What it grants.
    pub access: Access,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs and panics.
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("access", &self.access)
            .finish()
    }
}

/// What a client token grants; each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// `get`, `replicas`, `status`, `ring`, `aae`, `ping`.
    ReadOnly,
    /// And `put`, `delete`.
    ReadWrite,
    /// And `join`, `leave`, `remove`.
    Admin,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ReadOnly => "read-only",
            Self::ReadWrite => "read-write",
            Self::Admin => "admin",
        })
    }
}

/// What a connection may do, settled once by its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cluster member (a CA-signed certificate, or any connection without TLS).
    Peer,
    /// A client with this access.
    Client(Access),
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Peer => f.write_str("a cluster member's access"),
            Self::Client(access) => write!(f, "{access}"),
        }
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// A client access level (peers have every one).
    Client(Access),
    /// Membership of the cluster.
    Peer,
}

impl Role {
    /// Whether this role may make a call that needs `needs`.
    pub fn allows(self, needs: Needs) -> bool {
        match (self, needs) {
            (Self::Peer, _) => true,
            (Self::Client(have), Needs::Client(want)) => have >= want,
            (Self::Client(_), Needs::Peer) => false,
        }
    }
}

impl std::fmt::Display for Needs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(access) => write!(f, "a {access} token"),
            Self::Peer => f.write_str("a cluster member's certificate"),
        }
    }
}

impl SecurityConfig {
    /// Checks the values, naming the offending key (files are read by
    /// [`ServerSecurity::new`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.tls {
            for (key, value) in [
                ("security.ca", &self.ca),
                ("security.cert", &self.cert),
                ("security.key", &self.key),
            ] {
                if value.is_none() {
                    return Err(format!(
                        "security.tls is on but {key} is not set: make a CA and node \
                         certificates with `dotkv cert --dir DIR NODE...` and set \
                         security.ca, security.cert and security.key (or set \
                         security.tls = false on a network you trust)"
                    ));
                }
            }
        } else if !self.tokens.is_empty() {
            return Err(
                "security.tokens needs security.tls = true: without TLS a node \
                        cannot tell its peers from clients, and tokens would cross the \
                        network in clear"
                    .into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let len = token.token.len();
            if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&len)
                || !token.token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "security.tokens[{i}]: a token must be {MIN_TOKEN_BYTES} to \
                     {MAX_TOKEN_BYTES} printable ASCII characters without spaces"
                ));
            }
            if !seen.insert(&token.token) {
                return Err(format!(
                    "security.tokens[{i}]: the same token is listed twice"
                ));
            }
        }
        Ok(())
    }
}

/// The accepting side: the TLS acceptor and the token table.
#[derive(Clone)]
pub struct ServerSecurity {
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Every token is compared (in constant time): a list, not a map.
    tokens: Arc<[(String, Access)]>,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecurity")
            .field("tls", &self.tls.is_some())
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl ServerSecurity {
    /// No TLS, no tokens: every connection is a peer.
    pub fn insecure() -> Self {
        Self {
            tls: None,
            tokens: Arc::new([]),
        }
    }

    /// Reads the CA, certificate and key `config` names.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, named with its key.
    pub fn new(config: &SecurityConfig) -> Result<Self, String> {
        config.validate()?;
        let tokens = config
            .tokens
            .iter()
            .map(|t| (t.token.clone(), t.access))
            .collect();
        if !config.tls {
            return Ok(Self { tls: None, tokens });
        }
        let files = TlsFiles::read(config)?;
        let provider = provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(files.roots.clone()),
            Arc::clone(&provider),
        )
        // Clients present no certificate; whoever presents one must be a member.
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("security.ca: {e}"))?;
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(files.chain, files.key)
            .map_err(|e| format!("security.cert / security.key: {e}"))?;
        Ok(Self {
            tls: Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
            tokens,
        })
    }

    /// Whether connections are TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(crate) fn acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    /// The role of a connection: `certified` when it presented a certificate the CA
    /// signed, `token` what its handshake carried.
    ///
    /// # Errors
    ///
    /// Why the connection is refused.
    pub fn role(&self, certified: bool, token: Option<&str>) -> Result<Role, String> {
        if self.tls.is_none() || certified {
            return Ok(Role::Peer);
        }
        if self.tokens.is_empty() {
            return Ok(Role::Client(Access::Admin));
        }
        match token {
            None => Err("a token is required".into()),
            Some(token) => self
                .access_of(token)
                .map(Role::Client)
                .ok_or_else(|| "the token is not valid".into()),
        }
    }

    /// What `token` grants, comparing against every configured token in constant time.
    fn access_of(&self, token: &str) -> Option<Access> {
        let mut found = None;
        for (known, access) in self.tokens.iter() {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(*access);
            }
        }
        found
    }

    /// Whether clients need a token.
    pub fn tokens_required(&self) -> bool {
        !self.tokens.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The dialing side: TLS (with this node's certificate when it is a peer), the token,
/// and the frame limit.
#[derive(Clone)]
pub struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<Arc<str>>,
    pub(crate) max_frame_bytes: usize,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

impl Default for Connector {
    fn default() -> Self {
        Self::plaintext()
    }
}

impl Connector {
    /// No TLS, no token.
    pub fn plaintext() -> Self {
        Self {
            tls: None,
            token: None,
            max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
        }
    }

    /// TLS, verifying nodes against the CA in PEM file `ca`; no client certificate.
    ///
    /// # Errors
    ///
    /// The file cannot be read or holds no certificate.
    pub fn tls_client(ca: &Path) -> Result<Self, String> {
        let roots = read_roots(ca, "--ca")?;
        let config = client_config(roots)?.with_no_client_auth();
        Ok(Self {
            tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
            ..Self::plaintext()
        })
    }

    /// How a node dials its peers: its own certificate as the client certificate (or
    /// plaintext when `config.tls` is off).
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, named with its key.
    pub fn for_peers(config: &SecurityConfig, max_frame_bytes: usize) -> Result<Self, String> {
        let mut connector = Self::plaintext().with_max_frame_bytes(max_frame_bytes);
        if !config.tls {
            return Ok(connector);
        }
        let files = TlsFiles::read(config)?;
        let client = client_config(files.roots)?
            .with_client_auth_cert(files.chain, files.key)
            .map_err(|e| format!("security.cert / security.key: {e}"))?;
        connector.tls = Some(tokio_rustls::TlsConnector::from(Arc::new(client)));
        Ok(connector)
    }

    /// The same, presenting `token` in every handshake.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.map(Arc::from);
        self
    }

    /// The same, with this frame limit.
    pub fn with_max_frame_bytes(mut self, max_frame_bytes: usize) -> Self {
        self.max_frame_bytes = max_frame_bytes;
        self
    }

    pub(crate) fn tls(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.tls.as_ref()
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub(crate) fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
    }
}

/// rustls with the `ring` provider (no process-wide default needed).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A dialing side's TLS trusting `roots`, before its choice of client certificate.
fn client_config(
    roots: rustls::RootCertStore,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots))
}

/// The CA, the chain and the key a node's TLS is made of.
struct TlsFiles {
    roots: rustls::RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsFiles {
    fn read(config: &SecurityConfig) -> Result<Self, String> {
        let path = |value: &Option<PathBuf>, key: &str| {
            value
                .clone()
                .ok_or_else(|| format!("{key} is not set (needed with security.tls)"))
        };
        let roots = read_roots(&path(&config.ca, "security.ca")?, "security.ca")?;
        let cert = path(&config.cert, "security.cert")?;
        let chain = read_certs(&cert, "security.cert")?;
        let key_path = path(&config.key, "security.key")?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| format!("security.key = {}: {e}", key_path.display()))?;
        Ok(Self { roots, chain, key })
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{key} = {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} = {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn read_roots(path: &Path, key: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path, key)? {
        roots
            .add(cert)
            .map_err(|e| format!("{key} = {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem").field("cert", &self.cert).finish()
    }
}

/// Makes a cluster CA (ECDSA P-256, valid for ten years from the start of this year).
///
/// # Errors
///
/// Key generation or signing failed.
pub fn new_ca() -> Result<Pem, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "dotkv cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 10);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issues node `name` a certificate signed by `ca`, for [`SERVER_NAME`], `localhost`,
/// the loopback addresses and `hosts` (valid for five years), usable as server and as
/// client certificate.
///
/// # Errors
///
/// The CA does not parse, a host is not a valid name, or signing failed.
pub fn issue_node_cert(ca: &Pem, name: &str, hosts: &[String]) -> Result<Pem, String> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::from_pem(&ca.key).map_err(|e| format!("the CA key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(|e| format!("the CA: {e}"))?;
    let mut names: Vec<String> = [SERVER_NAME, "localhost", "127.0.0.1", "::1"]
        .map(String::from)
        .to_vec();
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let mut params = CertificateParams::new(names).map_err(|e| format!("a host name: {e}"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, 5);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// From January 1st of this year (so clocks a little behind still accept it) for `years`.
fn set_validity(params: &mut rcgen::CertificateParams, years: i32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days to years, good to a day, which January 1st absorbs.
    let year = 1970 + i32::try_from(now / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// Logs a refused connection or call once per line, with the peer's address.
pub(crate) fn log_refused(peer: SocketAddr, what: &str, reason: &str) {
    tracing::warn!(%peer, what, reason, "refused");
}
