//! Where a node's configuration comes from: built-in defaults, then a TOML
//! file, then `HERALD_*` environment variables, then command-line flags (each
//! layer overrides the one before). Nested keys use `__` in variable names:
//! `HERALD_LIMITS__MAX_FRAME_BYTES=131072` sets `[limits] max_frame_bytes`.
//!
//! Every error is a message for the operator; `herald serve` prints it and
//! exits with code 64. An unknown key in a file is an error (a typo there
//! must not go unnoticed); an unknown `HERALD_*` variable is only a warning,
//! since the environment also holds variables meant for other programs
//! (`HERALD_BIN` of a script, say).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::config::{
    AllowedOrigins, AuthConfig, ClusterConfig, NamespaceConfig, NodeConfig, StorageBackend, SyncPolicy, random_key,
};

/// Everything a TOML file, the environment or flags can set. Absent keys
/// keep the defaults documented on [`NodeConfig`] and in docs/CONFIG.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP + WebSocket address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Operator address: metrics and the server API move here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_listen: Option<SocketAddr>,
    /// Browser origins allowed: `"*"`, `"same-origin"`, or a list (an array
    /// or a comma-separated string) of `scheme://host[:port]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<OriginsSetting>,
    /// Directory served at `/app/` (development).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<PathBuf>,
    /// Shards (threads); default the number of cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    /// Node id reported to clients and in metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Directory for durable data (created if missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// HS256 secret for client JWTs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    /// Path of a PEM public key (RSA or Ed25519) for client JWTs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<PathBuf>,
    /// Server API key (random when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Log as JSON lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_json: Option<bool>,
    /// Size, rate and time limits.
    #[serde(skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Options per room namespace (`[namespaces.chat]`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, NamespaceSettings>,
    /// `[storage]`: where history, notifications and events are kept.
    #[serde(skip_serializing_if = "StorageSettings::is_empty")]
    pub storage: StorageSettings,
    /// Redis URL(s), separated by commas: join the cluster of the nodes
    /// that name the same ones (needs an explicit `node_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// `[cluster]`: timings and bounds of the cluster bridge.
    #[serde(skip_serializing_if = "ClusterSettings::is_empty")]
    pub cluster: ClusterSettings,
}

/// `[cluster]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // documented in docs/CONFIG.md, one line each
pub struct ClusterSettings {
    /// e.g. "15s" (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_max: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
}

impl ClusterSettings {
    fn is_empty(&self) -> bool {
        *self == ClusterSettings::default()
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // documented in docs/CONFIG.md, one line each
pub struct StorageSettings {
    /// "embedded" (default: under data_dir), "memory", or
    /// "scylla://host:9042,host2:9042/keyspace".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// "always" (default), "interval:10ms", "none".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_queue_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications_per_user: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_max_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_interval: Option<String>,
}

impl StorageSettings {
    fn is_empty(&self) -> bool {
        *self == StorageSettings::default()
    }
}

/// `allowed_origins` as written: a string or a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
#[allow(missing_docs)]
pub enum OriginsSetting {
    One(String),
    List(Vec<String>),
}

/// `[limits]`: durations are strings like "10s", "1m", "500ms".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // documented in docs/CONFIG.md, one line each
pub struct Limits {
    pub max_frame_bytes: Option<usize>,
    pub max_payload_bytes: Option<usize>,
    pub rooms_per_connection: Option<usize>,
    pub max_room_name_bytes: Option<usize>,
    pub publish_rate_per_sec: Option<u32>,
    pub publish_burst: Option<u32>,
    pub typing_rate_per_sec: Option<u32>,
    pub typing_burst: Option<u32>,
    pub max_outbound_bytes: Option<usize>,
    pub handshake_timeout: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_http_connections: Option<usize>,
    pub max_rooms: Option<usize>,
    pub dedup_per_room: Option<usize>,
    pub shutdown_grace: Option<String>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// `[namespaces.NAME]`: overrides of one namespace's options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceSettings {
    /// Messages kept per room.
    pub history: Option<usize>,
    /// Age after which messages leave the history ("1h").
    pub history_max_age: Option<String>,
    /// Track presence.
    pub presence: Option<bool>,
    /// Who may publish: "clients" or "server".
    pub publish: Option<String>,
    /// Allow volatile publishes.
    pub volatile: Option<bool>,
    /// Subscribers per room.
    pub max_subscribers: Option<usize>,
    /// Readers that fall behind get the newest message per room instead of
    /// every one (tickers, gauges).
    pub conflate: Option<bool>,
    /// Messages are stored (history survives restarts); false keeps the
    /// namespace's rooms in memory only.
    pub durable: Option<bool>,
    /// Rooms are shared by a cluster's nodes (default true; false: each
    /// node has its own).
    pub cluster: Option<bool>,
    /// Stored messages kept per room (0: no bound).
    pub retain_messages: Option<u64>,
    /// Stored messages older than this are removed ("30d").
    pub retain_max_age: Option<String>,
}

/// A node configuration and what else `herald serve` needs to know.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The node's configuration.
    pub node: NodeConfig,
    /// Durable data directory.
    pub data_dir: PathBuf,
    /// JSON logs.
    pub log_json: bool,
    /// The API key was generated (log it for the developer).
    pub api_key_generated: bool,
}

/// Merges the layers: `file` (if given) < `HERALD_*` environment < `flags`.
/// Variables that name no setting are left out (see [`unknown_env_vars`]).
pub fn figment(file: Option<&Path>, flags: &Settings) -> Figment {
    let mut f = Figment::new();
    if let Some(path) = file {
        f = f.merge(Toml::file_exact(path));
    }
    let unknown: Vec<String> = unknown_env_vars().iter().map(|v| env_key(v)).collect();
    let env = herald_env().filter(move |key| !unknown.iter().any(|u| key == u.as_str()));
    f.merge(env).merge(Serialized::defaults(flags))
}

/// `HERALD_*` variables, as figment reads them (`__` nests).
fn herald_env() -> Env {
    Env::prefixed("HERALD_").split("__").ignore(&["config", "log"])
}

/// The figment key of a `HERALD_*` variable.
fn env_key(var: &str) -> String {
    var.trim_start_matches("HERALD_")
        .replace("__", ".")
        .to_ascii_lowercase()
}

/// `HERALD_*` variables in the environment that name no setting; the node
/// warns about each and ignores it.
pub fn unknown_env_vars() -> Vec<String> {
    let mut unknown = Vec::new();
    for (var, _) in std::env::vars() {
        if !var.starts_with("HERALD_") || var == "HERALD_CONFIG" || var == "HERALD_LOG" {
            continue;
        }
        // Settings' own field checks are the judge: extract it alone.
        let key = env_key(&var);
        let alone = Figment::new().merge(herald_env().filter(move |k| k == key.as_str()));
        if let Err(e) = alone.extract::<Settings>()
            && e.into_iter()
                .any(|e| matches!(e.kind, figment::error::Kind::UnknownField(..)))
        {
            unknown.push(var);
        }
    }
    unknown.sort();
    unknown
}

/// Reads and checks the merged settings.
pub fn load(figment: &Figment) -> Result<Loaded, String> {
    // figment puts the source ("in FILE") on a line of its own; one line
    // reads better in a terminal and in a log collector.
    let s: Settings = figment.extract().map_err(|e| {
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        format!("configuration: {}", lines.join(" "))
    })?;
    resolve(s)
}

fn duration(name: &str, value: &Option<String>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v).map_err(|e| format!("{name}: {e}")),
    }
}

/// Parses "500ms", "10s", "5m", "1h", "2d".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms, 10s, 5m, 1h or 2d"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1_000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(format!("'{s}' is not a duration like 500ms, 10s, 5m, 1h or 2d")),
    };
    Ok(Duration::from_millis(ms))
}

fn resolve(s: Settings) -> Result<Loaded, String> {
    let mut node = NodeConfig::default();
    if let Some(listen) = s.listen {
        node.listen = listen;
    }
    if let Some(internal) = s.internal_listen {
        if internal == node.listen {
            return Err(format!("internal_listen must differ from listen ({internal})"));
        }
        node.internal_listen = Some(internal);
    }
    if let Some(shards) = s.shards {
        if !(1..=1024).contains(&shards) {
            return Err(format!("shards must be between 1 and 1024 (got {shards})"));
        }
        node.shards = shards;
    }
    let node_id_given = s.node_id.is_some();
    if let Some(id) = s.node_id {
        if id.is_empty() || id.len() > 64 || !herald_protocol::valid_room_name(&id, 64) {
            return Err("node_id must be 1-64 characters of [A-Za-z0-9:_-.@/]".into());
        }
        node.node_id = id;
    }
    node.auth = match (s.jwt_secret, s.jwt_public_key) {
        (Some(_), Some(_)) => return Err("give either jwt_secret or jwt_public_key, not both".into()),
        (Some(secret), None) => {
            if secret.len() < 32 {
                return Err("jwt_secret must be at least 32 bytes".into());
            }
            AuthConfig::Hs256Secret(secret.into_bytes())
        }
        (None, Some(path)) => {
            let pem = std::fs::read(&path).map_err(|e| format!("jwt_public_key {}: {e}", path.display()))?;
            crate::auth::Verifier::public_key_pem(&pem)
                .map_err(|e| format!("jwt_public_key {}: {e}", path.display()))?;
            AuthConfig::PublicKeyPem(pem)
        }
        (None, None) => AuthConfig::Development,
    };
    if matches!(node.auth, AuthConfig::Development) && !node.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {} without jwt_secret or jwt_public_key: development tokens are \
             accepted only on loopback addresses",
            node.listen
        ));
    }
    let api_key_generated = s.api_key.is_none();
    if let Some(key) = s.api_key {
        if key.len() < 16 {
            return Err("api_key must be at least 16 characters".into());
        }
        node.api_key = key;
    } else {
        node.api_key = random_key();
    }
    node.allowed_origins = match s.allowed_origins {
        Some(setting) => parse_origins(setting)?,
        // Pages from anywhere may use a development node; a node with real
        // tokens serves its own pages only until told otherwise.
        None if matches!(node.auth, AuthConfig::Development) => AllowedOrigins::Any,
        None => AllowedOrigins::SameOrigin,
    };
    if let Some(dir) = s.static_dir {
        if !dir.is_dir() {
            return Err(format!("static_dir {}: not a directory", dir.display()));
        }
        node.static_dir = Some(dir);
    }
    apply_limits(&mut node, &s.limits)?;
    for (name, ns) in &s.namespaces {
        if name.is_empty() || name.contains(':') || !herald_protocol::valid_room_name(name, 64) {
            return Err(format!("namespace '{name}': invalid name"));
        }
        let base = node
            .namespaces
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| node.default_namespace.clone(), |(_, c)| c.clone());
        let merged = apply_namespace(name, base, ns)?;
        match node.namespaces.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = merged,
            None => node.namespaces.push((name.clone(), merged)),
        }
    }
    let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("herald-data"));
    apply_storage(&mut node, &s.storage, &data_dir)?;
    node.cluster = cluster_config(s.redis.as_deref(), &s.cluster, node_id_given)?;
    Ok(Loaded {
        node,
        data_dir,
        log_json: s.log_json.unwrap_or(false),
        api_key_generated,
    })
}

fn parse_origins(setting: OriginsSetting) -> Result<AllowedOrigins, String> {
    let items: Vec<String> = match setting {
        OriginsSetting::One(s) => s.split(',').map(|o| o.trim().to_owned()).collect(),
        OriginsSetting::List(v) => v.into_iter().map(|o| o.trim().to_owned()).collect(),
    };
    match items.as_slice() {
        [one] if one == "*" => return Ok(AllowedOrigins::Any),
        [one] if one == "same-origin" => return Ok(AllowedOrigins::SameOrigin),
        _ => {}
    }
    let mut list = Vec::with_capacity(items.len());
    for o in items {
        let valid = o.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
        });
        if !valid {
            return Err(format!(
                "allowed_origins: '{o}' is not an origin like https://app.example.com (or \"*\", or \"same-origin\")"
            ));
        }
        list.push(o);
    }
    if list.is_empty() {
        return Err("allowed_origins: empty; give \"*\", \"same-origin\" or origins".into());
    }
    Ok(AllowedOrigins::List(list))
}

fn apply_limits(node: &mut NodeConfig, l: &Limits) -> Result<(), String> {
    let limits = &mut node.session.limits;
    let positive = |name: &str, v: usize| {
        if v == 0 {
            Err(format!("limits.{name} must be at least 1"))
        } else {
            Ok(v)
        }
    };
    if let Some(v) = l.max_frame_bytes {
        if !(1024..=16 * 1024 * 1024).contains(&v) {
            return Err("limits.max_frame_bytes must be between 1024 and 16777216".into());
        }
        limits.decode.max_frame_bytes = v;
    }
    if let Some(v) = l.max_payload_bytes {
        limits.max_payload_bytes = positive("max_payload_bytes", v)?;
    }
    if limits.max_payload_bytes >= limits.decode.max_frame_bytes {
        return Err("limits.max_payload_bytes must be smaller than limits.max_frame_bytes".into());
    }
    if let Some(v) = l.rooms_per_connection {
        limits.max_rooms = positive("rooms_per_connection", v)?;
    }
    if let Some(v) = l.max_room_name_bytes {
        if !(1..=1024).contains(&v) {
            return Err("limits.max_room_name_bytes must be between 1 and 1024".into());
        }
        limits.max_room_name_bytes = v;
    }
    if let Some(v) = l.publish_rate_per_sec {
        limits.publish_rate_per_sec = positive("publish_rate_per_sec", v as usize)? as u32;
    }
    if let Some(v) = l.publish_burst {
        limits.publish_burst = positive("publish_burst", v as usize)? as u32;
    }
    if let Some(v) = l.typing_rate_per_sec {
        limits.typing_rate_per_sec = positive("typing_rate_per_sec", v as usize)? as u32;
    }
    if let Some(v) = l.typing_burst {
        limits.typing_burst = positive("typing_burst", v as usize)? as u32;
    }
    if let Some(v) = l.max_outbound_bytes {
        limits.max_outbound_bytes = v;
    }
    if limits.max_outbound_bytes < limits.decode.max_frame_bytes {
        // One frame must fit, or every large answer would close its connection.
        return Err(format!(
            "limits.max_outbound_bytes ({}) must be at least limits.max_frame_bytes ({})",
            limits.max_outbound_bytes, limits.decode.max_frame_bytes
        ));
    }
    let s = &mut node.session;
    s.handshake_timeout = duration("limits.handshake_timeout", &l.handshake_timeout, s.handshake_timeout)?;
    s.heartbeat_interval = duration("limits.heartbeat_interval", &l.heartbeat_interval, s.heartbeat_interval)?;
    s.idle_timeout = duration("limits.idle_timeout", &l.idle_timeout, s.idle_timeout)?;
    if s.heartbeat_interval.is_zero() || s.idle_timeout <= s.heartbeat_interval {
        return Err("limits.idle_timeout must be longer than limits.heartbeat_interval (> 0)".into());
    }
    if let Some(v) = l.max_connections {
        node.max_connections = positive("max_connections", v)?;
    }
    if let Some(v) = l.max_http_connections {
        node.max_http_connections = positive("max_http_connections", v)?;
    }
    if let Some(v) = l.max_rooms {
        node.max_rooms = positive("max_rooms", v)?;
    }
    if let Some(v) = l.dedup_per_room {
        node.dedup_per_room = v;
    }
    node.shutdown_grace = duration("limits.shutdown_grace", &l.shutdown_grace, node.shutdown_grace)?;
    Ok(())
}

fn apply_storage(node: &mut NodeConfig, s: &StorageSettings, data_dir: &Path) -> Result<(), String> {
    let c = &mut node.storage;
    c.backend = match s.backend.as_deref().map(str::trim) {
        None | Some("embedded") => StorageBackend::Embedded(data_dir.join("store")),
        Some("memory") => StorageBackend::Memory,
        Some(url) if url.starts_with("scylla://") => StorageBackend::Scylla(url.to_owned()),
        Some(other) => {
            return Err(format!(
                "storage.backend: '{other}' is not \"embedded\", \"memory\" or scylla://host:port/keyspace"
            ));
        }
    };
    if let Some(v) = &s.sync {
        c.sync = parse_sync(v)?;
    }
    for (name, value, slot) in [
        ("write_queue", s.write_queue, &mut c.write_queue),
        ("writers", s.writers, &mut c.writers),
        ("write_queue_bytes", s.write_queue_bytes, &mut c.write_queue_bytes),
        ("read_queue", s.read_queue, &mut c.read_queue),
        ("readers", s.readers, &mut c.readers),
    ] {
        if let Some(v) = value {
            if v == 0 {
                return Err(format!("storage.{name} must be at least 1"));
            }
            *slot = v;
        }
    }
    if let Some(v) = s.notifications_per_user {
        c.notifications_per_user = v.max(1);
    }
    c.events_max_age = duration("storage.events_max_age", &s.events_max_age, c.events_max_age)?;
    c.retention_interval = duration(
        "storage.retention_interval",
        &s.retention_interval,
        c.retention_interval,
    )?;
    if c.retention_interval.is_zero() {
        return Err("storage.retention_interval must be more than 0".into());
    }
    Ok(())
}

/// "always", "none" or "interval:10ms".
fn cluster_config(
    redis: Option<&str>,
    s: &ClusterSettings,
    node_id_given: bool,
) -> Result<Option<ClusterConfig>, String> {
    let Some(redis) = redis.filter(|r| !r.trim().is_empty()) else {
        if !s.is_empty() {
            return Err("[cluster] settings need redis = \"redis://...\"".into());
        }
        return Ok(None);
    };
    if !node_id_given {
        // Presence and the storage consumer group know nodes by id: two
        // nodes with the default one would erase each other's entries.
        return Err("a node in a cluster (redis) needs its own node_id (--node-id)".into());
    }
    let urls: Vec<String> = redis.split(',').map(|u| u.trim().to_owned()).collect();
    for u in &urls {
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            return Err(format!("redis: '{u}' is not a redis:// URL"));
        }
    }
    let mut c = ClusterConfig::new(urls);
    c.presence_ttl = duration("cluster.presence_ttl", &s.presence_ttl, c.presence_ttl)?;
    if c.presence_ttl < Duration::from_secs(1) {
        return Err("cluster.presence_ttl must be at least 1s".into());
    }
    for (name, value, slot) in [
        ("pipeline_max", s.pipeline_max, &mut c.pipeline_max),
        ("queue", s.queue, &mut c.queue),
    ] {
        if let Some(v) = value {
            if v == 0 {
                return Err(format!("cluster.{name} must be at least 1"));
            }
            *slot = v;
        }
    }
    Ok(Some(c))
}

pub fn parse_sync(v: &str) -> Result<SyncPolicy, String> {
    match v.trim() {
        "always" => Ok(SyncPolicy::Always),
        "none" => Ok(SyncPolicy::Never),
        other => match other.strip_prefix("interval:") {
            Some(d) => {
                let d = parse_duration(d).map_err(|e| format!("storage.sync: {e}"))?;
                if d.is_zero() {
                    return Err("storage.sync: the interval must be more than 0".into());
                }
                Ok(SyncPolicy::Interval(d))
            }
            None => Err(format!(
                "storage.sync: '{other}' is not \"always\", \"none\" or \"interval:10ms\""
            )),
        },
    }
}

fn apply_namespace(name: &str, mut c: NamespaceConfig, s: &NamespaceSettings) -> Result<NamespaceConfig, String> {
    if let Some(v) = s.history {
        if v == 0 {
            return Err(format!("namespaces.{name}.history must be at least 1"));
        }
        c.history = v;
    }
    if let Some(v) = &s.history_max_age {
        c.history_max_age = Some(parse_duration(v).map_err(|e| format!("namespaces.{name}.history_max_age: {e}"))?);
    }
    if let Some(v) = s.presence {
        c.presence = v;
    }
    if let Some(v) = &s.publish {
        c.client_publish = match v.as_str() {
            "clients" => true,
            "server" => false,
            other => {
                return Err(format!(
                    "namespaces.{name}.publish must be \"clients\" or \"server\" (got \"{other}\")"
                ));
            }
        };
    }
    if let Some(v) = s.volatile {
        c.volatile = v;
    }
    if let Some(v) = s.conflate {
        c.conflate = v;
    }
    if let Some(v) = s.cluster {
        c.cluster = v;
    }
    if let Some(v) = s.durable {
        c.durable = v;
    }
    if let Some(v) = s.retain_messages {
        c.retain_messages = (v > 0).then_some(v);
    }
    if let Some(v) = &s.retain_max_age {
        c.retain_max_age = Some(parse_duration(v).map_err(|e| format!("namespaces.{name}.retain_max_age: {e}"))?);
    }
    if let Some(v) = s.max_subscribers {
        if v == 0 {
            return Err(format!("namespaces.{name}.max_subscribers must be at least 1"));
        }
        c.max_subscribers = v;
    }
    Ok(c)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closure signature
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn flags_beat_environment_beats_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                r#"
                listen = "127.0.0.1:9001"
                node_id = "from-file"
                shards = 3
                [limits]
                max_frame_bytes = 131072
                idle_timeout = "90s"
                [namespaces.chat]
                history = 50
                [namespaces.metrics]
                publish = "server"
                presence = false
                conflate = true
                "#,
            )?;
            jail.set_env("HERALD_NODE_ID", "from-env");
            jail.set_env("HERALD_SHARDS", "5");
            jail.set_env("HERALD_LIMITS__PUBLISH_BURST", "7");
            jail.set_env("HERALD_LIMITS__MAX_HTTP_CONNECTIONS", "500");
            let flags = Settings {
                shards: Some(2),
                ..Settings::default()
            };
            let loaded = load(&figment(Some(Path::new("herald.toml")), &flags)).map_err(|e| e.to_string())?;
            let n = loaded.node;
            assert_eq!(n.listen.port(), 9001, "file");
            assert_eq!(n.node_id, "from-env", "env beats file");
            assert_eq!(n.shards, 2, "flag beats env and file");
            assert_eq!(n.session.limits.decode.max_frame_bytes, 131_072);
            assert_eq!(n.session.limits.publish_burst, 7);
            assert_eq!(n.max_http_connections, 500);
            assert_eq!(n.session.idle_timeout, Duration::from_secs(90));
            assert_eq!(n.namespace("chat:x").history, 50);
            assert!(n.namespace("chat:x").presence, "unset keys keep the namespace default");
            assert!(!n.namespace("metrics:cpu").client_publish);
            assert!(n.namespace("metrics:cpu").conflate);
            assert!(!n.namespace("chat:x").conflate, "conflation is asked for");
            assert!(n.namespace("other:x").client_publish);
            assert!(loaded.api_key_generated && n.api_key.len() == 32);
            Ok(())
        });
    }

    #[test]
    fn storage_settings_choose_the_backend_and_the_sync_policy() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                r#"
                data_dir = "/var/lib/herald"
                [storage]
                sync = "interval:10ms"
                write_queue = 128
                [namespaces.chat]
                retain_messages = 500
                retain_max_age = "30d"
                [namespaces.ticks]
                durable = false
                "#,
            )?;
            let loaded =
                load(&figment(Some(Path::new("herald.toml")), &Settings::default())).map_err(|e| e.to_string())?;
            let n = loaded.node;
            assert!(
                matches!(&n.storage.backend, StorageBackend::Embedded(d) if d == Path::new("/var/lib/herald/store")),
                "{:?}",
                n.storage.backend
            );
            assert_eq!(n.storage.sync, SyncPolicy::Interval(Duration::from_millis(10)));
            assert_eq!(n.storage.write_queue, 128);
            assert_eq!(n.namespace("chat:x").retain_messages, Some(500));
            assert_eq!(
                n.namespace("chat:x").retain_max_age,
                Some(Duration::from_secs(30 * 86_400))
            );
            assert!(!n.namespace("ticks:x").durable);
            assert!(n.namespace("dash:x").durable, "stored unless turned off");
            assert!(!n.namespace("game:x").durable, "game state is memory-only by default");
            jail.set_env("HERALD_STORAGE__BACKEND", "scylla://10.0.0.1:9042,10.0.0.2/herald");
            jail.set_env("HERALD_STORAGE__SYNC", "none");
            let n = load(&figment(Some(Path::new("herald.toml")), &Settings::default()))
                .map_err(|e| e.to_string())?
                .node;
            assert!(matches!(&n.storage.backend, StorageBackend::Scylla(u) if u.starts_with("scylla://10.0.0.1")));
            assert_eq!(n.storage.sync, SyncPolicy::Never);
            let flags = Settings {
                storage: StorageSettings {
                    backend: Some("memory".into()),
                    ..StorageSettings::default()
                },
                ..Settings::default()
            };
            let n = load(&figment(None, &flags)).map_err(|e| e.to_string())?.node;
            assert!(
                matches!(n.storage.backend, StorageBackend::Memory),
                "the flag beats the environment"
            );
            assert_eq!(
                n.storage.sync,
                SyncPolicy::Never,
                "a flag left unset does not hide the environment"
            );
            Ok(())
        });
    }

    #[test]
    fn a_cluster_is_joined_with_redis_urls_and_a_node_id() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "node_id = \"n7\"\nredis = \"redis://10.0.0.1:6379, redis://10.0.0.2:6379/1\"\n\
                 [cluster]\npresence_ttl = \"30s\"\n[namespaces.local]\ncluster = false",
            )?;
            let n = load(&figment(Some(Path::new("h.toml")), &Settings::default()))?.node;
            let c = n.cluster.clone().expect("a cluster");
            assert_eq!(c.redis, vec!["redis://10.0.0.1:6379", "redis://10.0.0.2:6379/1"]);
            assert_eq!(c.presence_ttl, Duration::from_secs(30));
            assert_eq!(c.queue, ClusterConfig::new(vec![]).queue);
            assert!(!n.namespace("local:x").cluster);
            assert!(n.namespace("chat:x").cluster);
            // The environment names the same setting.
            jail.set_env("HERALD_REDIS", "redis://10.0.0.3:6379");
            let n = load(&figment(Some(Path::new("h.toml")), &Settings::default()))?.node;
            assert_eq!(n.cluster.expect("a cluster").redis, vec!["redis://10.0.0.3:6379"]);
            Ok(())
        });
        Jail::expect_with(|_| {
            let n = load(&figment(None, &Settings::default()))?.node;
            assert!(n.cluster.is_none(), "no redis, no cluster");
            Ok(())
        });
    }

    #[test]
    fn bad_settings_are_explained() {
        let cases: [(&str, &str); 24] = [
            ("redis = \"redis://127.0.0.1:6379\"", "needs its own node_id"),
            ("node_id = \"n1\"\nredis = \"http://x\"", "not a redis:// URL"),
            ("[cluster]\npresence_ttl = \"5s\"", "need redis"),
            (
                "node_id = \"n1\"\nredis = \"redis://a\"\n[cluster]\npresence_ttl = \"10ms\"",
                "at least 1s",
            ),
            (
                "node_id = \"n1\"\nredis = \"redis://a\"\n[cluster]\nqueue = 0",
                "cluster.queue",
            ),
            ("[storage]\nbackend = \"postgres://x\"", "scylla://"),
            ("[storage]\nsync = \"sometimes\"", "interval:10ms"),
            ("[storage]\nsync = \"interval:0ms\"", "more than 0"),
            ("[storage]\nwrite_queue = 0", "storage.write_queue"),
            ("[namespaces.chat]\nretain_max_age = \"forever\"", "retain_max_age"),
            ("allowed_origins = \"app.example.com\"", "not an origin"),
            ("static_dir = \"/nonexistent-herald-dir\"", "not a directory"),
            ("listen = \"0.0.0.0:8080\"", "loopback"),
            ("internal_listen = \"127.0.0.1:8080\"", "differ"),
            ("[limits]\nmax_room_name_bytes = 5000", "between 1 and 1024"),
            ("[limits]\nmax_outbound_bytes = 1000", "at least limits.max_frame_bytes"),
            ("[namespaces.chat]\nhistory = 0", "at least 1"),
            ("shards = 0", "shards"),
            ("api_key = \"short\"", "api_key"),
            ("jwt_secret = \"too short\"", "32 bytes"),
            ("[limits]\nidle_timeout = \"soon\"", "idle_timeout"),
            ("[limits]\nmax_http_connections = 0", "max_http_connections"),
            ("[namespaces.chat]\npublish = \"anyone\"", "clients"),
            ("unknown_key = 1", "unknown"),
        ];
        for (toml, needle) in cases {
            Jail::expect_with(|jail| {
                jail.create_file("h.toml", toml)?;
                let err = load(&figment(Some(Path::new("h.toml")), &Settings::default())).unwrap_err();
                assert!(err.contains(needle), "{toml:?} -> {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn unknown_environment_variables_are_ignored_with_a_warning_not_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("HERALD_BIN", "/usr/local/bin/herald");
            jail.set_env("HERALD_LIMITS__MAX_FRAME_BYTE", "1");
            jail.set_env("HERALD_NODE_ID", "from-env");
            jail.set_env("HERALD_LIMITS__PUBLISH_BURST", "9");
            let unknown = unknown_env_vars();
            assert!(unknown.contains(&"HERALD_BIN".to_owned()), "{unknown:?}");
            assert!(
                unknown.contains(&"HERALD_LIMITS__MAX_FRAME_BYTE".to_owned()),
                "{unknown:?}"
            );
            assert!(
                !unknown
                    .iter()
                    .any(|v| v == "HERALD_NODE_ID" || v == "HERALD_LIMITS__PUBLISH_BURST")
            );
            let loaded = load(&figment(None, &Settings::default())).map_err(|e| e.to_string())?;
            assert_eq!(loaded.node.node_id, "from-env");
            assert_eq!(loaded.node.session.limits.publish_burst, 9);
            // A bad value of a real setting is still an error.
            jail.set_env("HERALD_SHARDS", "many");
            assert!(load(&figment(None, &Settings::default())).is_err());
            Ok(())
        });
    }

    #[test]
    fn allowed_origins_default_by_mode_and_parse_every_form() {
        let dev = resolve(Settings::default()).unwrap();
        assert_eq!(dev.node.allowed_origins, AllowedOrigins::Any, "development: any page");
        let prod = resolve(Settings {
            jwt_secret: Some("x".repeat(32)),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(prod.node.allowed_origins, AllowedOrigins::SameOrigin);
        let parse = |s: OriginsSetting| parse_origins(s).unwrap();
        assert_eq!(parse(OriginsSetting::One("*".into())), AllowedOrigins::Any);
        assert_eq!(
            parse(OriginsSetting::One("same-origin".into())),
            AllowedOrigins::SameOrigin
        );
        assert_eq!(
            parse(OriginsSetting::One("https://a.example, http://b.example:8080".into())),
            AllowedOrigins::List(vec!["https://a.example".into(), "http://b.example:8080".into()])
        );
        assert_eq!(
            parse(OriginsSetting::List(vec!["https://a.example".into()])),
            AllowedOrigins::List(vec!["https://a.example".into()])
        );
        assert!(parse_origins(OriginsSetting::One("https://a.example/path".into())).is_err());
    }

    #[test]
    fn a_secret_allows_public_addresses() {
        let s = Settings {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            jwt_secret: Some("x".repeat(32)),
            api_key: Some("k".repeat(16)),
            ..Settings::default()
        };
        let loaded = resolve(s).unwrap();
        assert!(matches!(loaded.node.auth, AuthConfig::Hs256Secret(_)));
        assert!(!loaded.api_key_generated);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
    }
}
