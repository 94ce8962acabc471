//! The server's configuration, loaded with figment in DESIGN.md's layers, lowest first:
//!
//! 1. built-in defaults (each crate's `*Config::default()`),
//! 2. `config/dotkv.toml` (or `--config PATH`), nested by profile: `[default]`, `[sqlite]`,
//!    `[memory]`, `[test]`; the selected profile (`--profile`, `DOTKV_PROFILE`) is layered
//!    over `[default]`,
//! 3. environment variables `DOTKV_*`, nested keys joined by `__`
//!    (`DOTKV_STORAGE__BACKEND=sqlite`),
//! 4. command-line flags.
//!
//! Every value is then checked; a bad one stops the server with one line naming the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dotkv_membership::MembershipConfig;
use dotkv_replication::{AaeConfig, HandoffConfig, LimitsConfig, ReplicationConfig};
use dotkv_ring::RingConfig;
use dotkv_rpc::{HttpConfig, RpcConfig, SecurityConfig};
use dotkv_storage::StorageConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Profile};
use serde::{Deserialize, Deserializer, Serialize};

/// The config file used when `--config` is not given (relative to the working directory;
/// a missing default file is not an error).
pub const DEFAULT_CONFIG_PATH: &str = "config/dotkv.toml";

/// Everything `dotkv-server` is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's id. Default: the id stored in the data dir, or a new random one on
    /// first start. Once stored it cannot change.
    pub node_id: Option<String>,
    /// The address this node listens on. Default `127.0.0.1:7001`.
    pub listen: SocketAddr,
    /// The address peers and clients are told to reach this node on (`host:port`), when
    /// it differs from `listen` (a node listening on `0.0.0.0`, behind NAT). Default: the
    /// `listen` address, which must then not be unspecified.
    pub advertise: Option<String>,
    /// Where the store lives. Default `data`.
    pub data_dir: PathBuf,
    /// Addresses of nodes to learn the cluster from on first start. Default none.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub seeds: Vec<String>,
    /// The node's capacity relative to others: it owns partitions in proportion. Default 1.
    pub weight: u32,
    /// The failure domain (rack, host): replicas go to distinct zones. Default `default`.
    pub zone: String,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[ring]`.
    pub ring: RingConfig,
    /// `[replication]`.
    pub replication: ReplicationConfig,
    /// `[membership]`.
    pub membership: MembershipConfig,
    /// `[handoff]`.
    pub handoff: HandoffConfig,
    /// `[aae]`.
    pub aae: AaeConfig,
    /// `[rpc]`.
    pub rpc: RpcConfig,
    /// `[http]`: the HTTP/JSON gateway (off unless `http.listen` is set).
    pub http: HttpConfig,
    /// `[security]`: TLS, the cluster CA and this node's certificate, client tokens.
    pub security: SecurityConfig,
    /// `[server]`: the process itself.
    pub server: ProcessConfig,
}

/// Settings of the server process (`[server]`, `DOTKV_SERVER__*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Threads of the async runtime; 0 (the default): one per core. Several servers on
    /// one machine (a local cluster, the benchmarks) do better with fewer each.
    pub worker_threads: usize,
}

impl ProcessConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.worker_threads > 1024 {
            return Err(format!(
                "server.worker_threads = {} must be at most 1024 (0: one per core)",
                self.worker_threads
            ));
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            advertise: None,
            data_dir: PathBuf::from("data"),
            seeds: Vec::new(),
            weight: 1,
            zone: "default".into(),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            ring: RingConfig::default(),
            replication: ReplicationConfig::default(),
            membership: MembershipConfig::default(),
            handoff: HandoffConfig::default(),
            aae: AaeConfig::default(),
            rpc: RpcConfig::default(),
            http: HttpConfig::default(),
            security: SecurityConfig::default(),
            server: ProcessConfig::default(),
        }
    }
}

/// `DOTKV_SEEDS=a:1,b:2` arrives as one string; the TOML file gives a list.
fn list_or_comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seeds {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Seeds::deserialize(d)? {
        Seeds::List(list) => list,
        Seeds::Text(text) => split_list(&text),
    })
}

/// Splits a comma-separated list, dropping blanks.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl ServerConfig {
    /// Checks every value; the error names the key and the reason.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.node_id {
            validate_node_id(id).map_err(|reason| format!("node_id = {id:?}: {reason}"))?;
        }
        if self.weight == 0 || self.weight > 1000 {
            return Err(format!(
                "weight = {} must be between 1 and 1000",
                self.weight
            ));
        }
        if self.zone.is_empty() || self.zone.len() > 64 {
            return Err(format!(
                "zone = {:?} must have 1 to 64 characters",
                self.zone
            ));
        }
        match &self.advertise {
            Some(advertise) => validate_advertise(advertise)
                .map_err(|reason| format!("advertise = {advertise:?}: {reason}"))?,
            None if self.listen.ip().is_unspecified() => {
                return Err(format!(
                    "listen = {} is not an address peers can reach; set advertise \
                     (--advertise HOST:PORT) to the address they should use",
                    self.listen
                ));
            }
            None => {}
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        self.storage.validate()?;
        self.ring.validate()?;
        self.replication.validate()?;
        self.membership.validate()?;
        self.handoff.validate()?;
        self.aae.validate()?;
        self.rpc.validate()?;
        self.server.validate()?;
        self.limits.validate()?;
        // Last: a config without certificates reports its other mistakes first.
        self.security.validate()?;
        Ok(())
    }
}

/// A node id is 1 to 64 characters of `[A-Za-z0-9._-]`: it appears in keys, logs and
/// file names.
pub fn validate_node_id(id: &str) -> Result<(), &'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 64 || !id.chars().all(allowed) {
        return Err("must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// An advertised address is `host:port` with a non-empty host and a port from 1 to 65535.
fn validate_advertise(advertise: &str) -> Result<(), &'static str> {
    let (host, port) = advertise.rsplit_once(':').ok_or("must be HOST:PORT")?;
    if host.is_empty() || host == "0.0.0.0" || host == "[::]" {
        return Err("the host must be an address or name peers can reach");
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

/// The flags that override the configuration (layer 4). `None` leaves the lower layers'
/// value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--node-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--advertise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--seeds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<String>>,
    /// `--weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// `--zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// A configuration that cannot be used. Its `Display` is one line per problem, each
/// naming the key.
#[derive(Debug)]
pub struct ConfigError(Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(message: impl Into<String>) -> Self {
        Self(vec![format!("invalid configuration: {}", message.into())])
    }

    fn from_figment(error: figment::Error) -> Self {
        Self(
            error
                .into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name));
                    let source = source.unwrap_or_default();
                    if key.is_empty() {
                        format!("invalid configuration: {}{source}", e.kind)
                    } else {
                        format!("invalid configuration: {key}: {}{source}", e.kind)
                    }
                })
                .collect(),
        )
    }
}

/// Loads the configuration: `file` (else [`DEFAULT_CONFIG_PATH`] if it exists), profile
/// `profile`, the environment, then `overrides`; and validates it.
pub fn load(
    file: Option<&Path>,
    profile: &str,
    overrides: &Overrides,
) -> Result<ServerConfig, ConfigError> {
    let path = match file {
        Some(path) if !path.is_file() => {
            return Err(ConfigError::one(format!(
                "--config {}: no such file",
                path.display()
            )));
        }
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(DEFAULT_CONFIG_PATH),
    };
    let figment = Figment::from(Serialized::defaults(ServerConfig::default()))
        .merge(Toml::file(&path).nested())
        .merge(environment())
        .merge(Serialized::globals(overrides));
    extract(&figment, profile, &path.display().to_string())
}

/// Parses `text` as a config file (nested by profile) and selects `profile`: the file
/// layer alone, without the environment or flags. What the `config` fuzz target runs.
pub fn parse(text: &str, profile: &str) -> Result<ServerConfig, ConfigError> {
    let figment = Figment::from(Serialized::defaults(ServerConfig::default()))
        .merge(Toml::string(text).nested());
    extract(&figment, profile, "the text")
}

/// Selects `profile` of `figment` (which must exist in `source` unless it is `default`),
/// extracts the configuration and validates it.
fn extract(figment: &Figment, profile: &str, source: &str) -> Result<ServerConfig, ConfigError> {
    let profile = Profile::from(profile);
    let known: Vec<String> = figment.profiles().map(|p| p.as_str().to_string()).collect();
    if profile != Profile::Default && !known.iter().any(|p| p.as_str() == profile.as_str()) {
        return Err(ConfigError::one(format!(
            "profile `{profile}` is not in {source} (profiles there: {})",
            known
                .iter()
                .filter(|p| p.as_str() != "global")
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let config: ServerConfig = figment
        .clone()
        .select(profile)
        .extract()
        .map_err(ConfigError::from_figment)?;
    config.validate().map_err(ConfigError::one)?;
    Ok(config)
}

/// `DOTKV_*` variables that name a config key, as a global layer (over every profile).
///
/// A variable names a config key when its first segment is a top-level key of
/// [`ServerConfig`] (taken from the type itself, so a new section needs no list to be
/// kept up to date); the others (`DOTKV_PROFILE`, `DOTKV_LOG`, `DOTKV_NODE`,
/// `DOTKV_TEST_SLOW`, ...) are not configuration.
fn environment() -> Env {
    let top_level: Vec<String> = match serde_json::to_value(ServerConfig::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Env::prefixed("DOTKV_")
        .filter(move |key| {
            let key = key.as_str().to_ascii_lowercase();
            let top = key.split("__").next().unwrap_or_default();
            top_level.iter().any(|k| k == top)
        })
        .split("__")
        .global()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    const PROFILES: &str = r#"
        [default]
        storage.backend = "lmdb"
        security.tls = false
        [sqlite]
        storage.backend = "sqlite"
        weight = 3
    "#;

    #[test]
    fn profile_layers_over_default_and_flags_win() {
        let file = write_config(PROFILES);
        let config = load(Some(file.path()), "sqlite", &Overrides::default()).unwrap();
        assert_eq!(config.storage.backend, dotkv_storage::StorageKind::Sqlite);
        assert_eq!(config.weight, 3);
        let flags = Overrides {
            weight: Some(5),
            ..Overrides::default()
        };
        assert_eq!(load(Some(file.path()), "sqlite", &flags).unwrap().weight, 5);
        let config = load(Some(file.path()), "default", &Overrides::default()).unwrap();
        assert_eq!(config.storage.backend, dotkv_storage::StorageKind::Lmdb);
    }

    #[test]
    fn bad_values_name_their_key() {
        let file = write_config("[default]\nstorage.backend = \"rocksdb\"\n");
        let err = load(Some(file.path()), "default", &Overrides::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("storage.backend") && text.contains("sqlite"),
            "{text}"
        );

        let file = write_config("[default]\nlimits.max_key_bytes = 0\n");
        let err = load(Some(file.path()), "default", &Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_key_bytes = 0"),
            "{err}"
        );

        let file = write_config("[default]\nserver.worker_threads = 5000\naae.concurrency = 1\n");
        let err = load(Some(file.path()), "default", &Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("server.worker_threads = 5000"),
            "{err}"
        );
        let file = write_config("[default]\naae.concurrency = 0\n");
        let err = load(Some(file.path()), "default", &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("aae.concurrency = 0"), "{err}");

        let file = write_config("[default]\nstorage.bakend = \"lmdb\"\n");
        let err = load(Some(file.path()), "default", &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("bakend"), "{err}");

        let file = write_config(PROFILES);
        let err = load(Some(file.path()), "prod", &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("profile `prod`"), "{err}");
    }

    #[test]
    fn an_unreachable_listen_address_needs_an_advertised_one() {
        let file = write_config("[default]\nlisten = \"0.0.0.0:7001\"\nsecurity.tls = false\n");
        let err = load(Some(file.path()), "default", &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("advertise"), "{err}");
        let flags = Overrides {
            advertise: Some("10.0.0.5:7001".into()),
            ..Overrides::default()
        };
        let config = load(Some(file.path()), "default", &flags).unwrap();
        assert_eq!(config.advertise.as_deref(), Some("10.0.0.5:7001"));
        for bad in ["nohost", ":7001", "0.0.0.0:7001", "h:0", "h:x"] {
            let flags = Overrides {
                advertise: Some(bad.into()),
                ..Overrides::default()
            };
            let err = load(Some(file.path()), "default", &flags).unwrap_err();
            assert!(err.to_string().contains("advertise"), "{bad}: {err}");
        }
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(validate_node_id("n1").is_ok());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id("a/b").is_err());
    }
}
