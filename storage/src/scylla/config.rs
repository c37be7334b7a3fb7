//! Connection settings of the ScyllaDB backend and the `scylla://` URL.
//!
//! ```text
//! scylla://host:9042,host2:9042/keyspace
//! scylla://10.0.0.1,10.0.0.2/herald?dc=eu-west&consistency=local_quorum
//! ```
//!
//! Hosts are comma-separated, each `host`, `host:port` or `[ipv6]:port`
//! (port 9042 when absent); the path is the keyspace (required). Optional
//! query parameters: `dc` (the local datacenter the load balancer prefers)
//! and `consistency`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use scylla::statement::Consistency;

use crate::{StorageError, StorageResult};

/// The CQL native protocol's default port.
pub const DEFAULT_PORT: u16 = 9042;

/// One day in milliseconds: the default message bucket.
pub const DAY_MS: u64 = 86_400_000;

/// The largest TTL ScyllaDB accepts (20 years, in seconds).
pub const MAX_TTL_SECS: i32 = 630_720_000;

/// Keyspace names are CQL identifiers of at most this many characters.
const MAX_KEYSPACE_LEN: usize = 48;

/// Username and password for clusters with authentication. The password is
/// never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ScyllaCredentials {
    /// Role name.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for ScyllaCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Settings of the ScyllaDB backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` (the driver discovers the other nodes).
    pub hosts: Vec<String>,
    /// Keyspace holding Herald's tables (created by `migrate`).
    pub keyspace: String,
    /// Consistency of every read and write (default LOCAL_QUORUM).
    pub consistency: Consistency,
    /// Datacenter the load balancer prefers (None: all nodes alike).
    pub local_datacenter: Option<String>,
    /// Credentials, for clusters with authentication.
    pub credentials: Option<ScyllaCredentials>,
    /// Width of a message partition's time bucket in ms (default one day):
    /// a room's messages are partitioned by `(room, epoch, timestamp_ms /
    /// bucket_ms)` so no partition grows without limit.
    pub bucket_ms: u64,
    /// Maximum message age per namespace (the part of a room's name before
    /// the first `:`), turned into a per-insert TTL. `Duration::ZERO`:
    /// messages of that namespace never expire.
    pub namespace_max_age: BTreeMap<String, Duration>,
    /// Maximum message age of rooms whose namespace is not in
    /// `namespace_max_age` (None: never expire).
    pub default_max_age: Option<Duration>,
    /// Client-side timeout of one request, retries included.
    pub request_timeout: Duration,
    /// Timeout of establishing one connection.
    pub connect_timeout: Duration,
    /// Rows fetched per page by every paged read.
    pub page_size: i32,
    /// Most notifications above a user's read watermark examined to count
    /// the unread ones (the count saturates there).
    pub unread_scan_limit: u64,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            hosts: vec![format!("127.0.0.1:{DEFAULT_PORT}")],
            keyspace: "herald".to_owned(),
            consistency: Consistency::LocalQuorum,
            local_datacenter: None,
            credentials: None,
            bucket_ms: DAY_MS,
            namespace_max_age: BTreeMap::new(),
            default_max_age: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            page_size: 1000,
            unread_scan_limit: 10_000,
        }
    }
}

impl ScyllaConfig {
    /// Parses `scylla://host:9042,host2:9042/keyspace[?dc=..&consistency=..]`;
    /// every other setting keeps its default.
    pub fn parse(url: &str) -> StorageResult<ScyllaConfig> {
        let rest = url
            .strip_prefix("scylla://")
            .ok_or_else(|| invalid(format!("{url:?}: expected scylla://host[:port][,host..]/keyspace")))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, keyspace) = rest
            .split_once('/')
            .ok_or_else(|| invalid(format!("{url:?}: the keyspace is missing (scylla://host/keyspace)")))?;
        let mut config = ScyllaConfig {
            hosts: parse_hosts(authority)?,
            keyspace: parse_keyspace(keyspace)?,
            ..ScyllaConfig::default()
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "dc" if !value.is_empty() && value.chars().all(is_dc_char) => {
                    config.local_datacenter = Some(value.to_owned());
                }
                "consistency" => config.consistency = parse_consistency(value)?,
                _ => return Err(invalid(format!("{url:?}: unknown or invalid parameter {pair:?}"))),
            }
        }
        Ok(config)
    }

    /// Checks the settings a URL cannot express wrongly but code can.
    pub fn validate(&self) -> StorageResult<()> {
        if self.hosts.is_empty() {
            return Err(invalid("no ScyllaDB host".to_owned()));
        }
        parse_keyspace(&self.keyspace)?;
        if self.bucket_ms == 0 {
            return Err(invalid("bucket_ms must be positive".to_owned()));
        }
        if self.page_size <= 0 {
            return Err(invalid("page_size must be positive".to_owned()));
        }
        Ok(())
    }

    /// The TTL in seconds for a message of `room` (0: none), from its
    /// namespace's maximum age. Rounded up to whole seconds, at most
    /// [`MAX_TTL_SECS`].
    pub fn ttl_secs(&self, room: &str) -> i32 {
        let namespace = room.split_once(':').map_or("", |(ns, _)| ns);
        let max_age = self.namespace_max_age.get(namespace).copied().or(self.default_max_age);
        max_age.map_or(0, ttl_of)
    }
}

/// A maximum age as a CQL TTL (0: none).
pub(crate) fn ttl_of(max_age: Duration) -> i32 {
    if max_age.is_zero() {
        return 0;
    }
    let secs = max_age.as_millis().div_ceil(1000);
    i32::try_from(secs).map_or(MAX_TTL_SECS, |s| s.clamp(1, MAX_TTL_SECS))
}

fn invalid(message: String) -> StorageError {
    StorageError::Invalid(message)
}

fn is_dc_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn parse_hosts(authority: &str) -> StorageResult<Vec<String>> {
    let mut hosts = Vec::new();
    for spec in authority.split(',') {
        if spec.is_empty() {
            return Err(invalid(format!("empty host in {authority:?}")));
        }
        hosts.push(parse_host(spec)?);
    }
    Ok(hosts)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, as `host:port`.
fn parse_host(spec: &str) -> StorageResult<String> {
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(format!("host {spec:?}: unclosed '['")))?;
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err(invalid(format!("host {spec:?}: bad IPv6 address")));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid(format!("host {spec:?}: expected ':' after ']'")))?,
            ),
        };
        (format!("[{v6}]"), port)
    } else {
        let (host, port) = match spec.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (spec, None),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            && !host.starts_with(['-', '.'])
            && !host.ends_with('-');
        if !valid {
            return Err(invalid(format!("host {spec:?}: bad host name")));
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.chars().all(|c| c.is_ascii_digit()) => n,
            _ => return Err(invalid(format!("host {spec:?}: bad port {p:?}"))),
        },
    };
    Ok(format!("{host}:{port}"))
}

/// A keyspace name: a CQL identifier (letter, then letters, digits, `_`),
/// folded to lower case as CQL folds unquoted names.
pub(crate) fn parse_keyspace(name: &str) -> StorageResult<String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_KEYSPACE_LEN;
    if !valid {
        return Err(invalid(format!(
            "keyspace {name:?}: expected a letter then letters, digits or '_' (at most {MAX_KEYSPACE_LEN})"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

fn parse_consistency(value: &str) -> StorageResult<Consistency> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => return Err(invalid(format!("unknown consistency {value:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_hosts_and_default_port() {
        let c = ScyllaConfig::parse("scylla://a.example:9043,10.0.0.2,[::1]:9044,[fe80::1]/herald").unwrap();
        assert_eq!(
            c.hosts,
            ["a.example:9043", "10.0.0.2:9042", "[::1]:9044", "[fe80::1]:9042"]
        );
        assert_eq!(c.keyspace, "herald");
        assert_eq!(c.consistency, Consistency::LocalQuorum);
        assert_eq!(c.bucket_ms, DAY_MS);
        c.validate().unwrap();
    }

    #[test]
    fn single_host() {
        let c = ScyllaConfig::parse("scylla://127.0.0.1:9042/herald_test").unwrap();
        assert_eq!(c.hosts, ["127.0.0.1:9042"]);
        assert_eq!(c.keyspace, "herald_test");
    }

    #[test]
    fn keyspace_is_required() {
        for url in ["scylla://h:9042", "scylla://h:9042/", "scylla://h/?dc=x"] {
            let e = ScyllaConfig::parse(url).unwrap_err();
            assert!(matches!(e, StorageError::Invalid(_)), "{url}: {e}");
        }
    }

    #[test]
    fn keyspace_is_folded_and_checked() {
        assert_eq!(ScyllaConfig::parse("scylla://h/Herald_1").unwrap().keyspace, "herald_1");
        for ks in [
            "1herald",
            "her-ald",
            "her ald",
            "herald;drop",
            "_x",
            "h/x",
            &"k".repeat(49),
        ] {
            assert!(ScyllaConfig::parse(&format!("scylla://h/{ks}")).is_err(), "{ks}");
        }
    }

    #[test]
    fn bad_hosts_and_ports() {
        for url in [
            "scylla:///herald",
            "scylla://,h/herald",
            "scylla://h,,h2/herald",
            "scylla://h:/herald",
            "scylla://h:0/herald",
            "scylla://h:65536/herald",
            "scylla://h:+1/herald",
            "scylla://h:90x/herald",
            "scylla://ho st/herald",
            "scylla://h$t/herald",
            "scylla://-h/herald",
            "scylla://user@h/herald",
            "scylla://[::1/herald",
            "scylla://[zz::1]/herald",
            "scylla://[::1]9042/herald",
            "cassandra://h/herald",
            "h:9042/herald",
        ] {
            let e = ScyllaConfig::parse(url);
            assert!(matches!(e, Err(StorageError::Invalid(_))), "{url}: {e:?}");
        }
    }

    #[test]
    fn query_parameters() {
        let c = ScyllaConfig::parse("scylla://h/herald?dc=eu-west_1&consistency=QUORUM").unwrap();
        assert_eq!(c.local_datacenter.as_deref(), Some("eu-west_1"));
        assert_eq!(c.consistency, Consistency::Quorum);
        let c = ScyllaConfig::parse("scylla://h/herald?consistency=local_one").unwrap();
        assert_eq!(c.consistency, Consistency::LocalOne);
        for url in [
            "scylla://h/herald?consistency=serial",
            "scylla://h/herald?consistency=any",
            "scylla://h/herald?dc=",
            "scylla://h/herald?dc=a%20b",
            "scylla://h/herald?colour=red",
        ] {
            assert!(ScyllaConfig::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn ttl_by_namespace() {
        let mut c = ScyllaConfig::default();
        assert_eq!(c.ttl_secs("chat:lobby"), 0, "no max age: no TTL");
        c.namespace_max_age.insert("chat".into(), Duration::from_secs(3600));
        c.namespace_max_age.insert("ticker".into(), Duration::from_millis(1500));
        c.namespace_max_age.insert("forever".into(), Duration::ZERO);
        c.default_max_age = Some(Duration::from_secs(86_400 * 7));
        assert_eq!(c.ttl_secs("chat:lobby"), 3600);
        assert_eq!(c.ttl_secs("ticker:eurusd"), 2, "rounded up to whole seconds");
        assert_eq!(c.ttl_secs("forever:x"), 0);
        assert_eq!(c.ttl_secs("other:x"), 86_400 * 7);
        assert_eq!(c.ttl_secs("no-namespace"), 86_400 * 7, "the default namespace");
        c.default_max_age = Some(Duration::from_secs(u64::MAX / 4));
        assert_eq!(c.ttl_secs("other:x"), MAX_TTL_SECS, "clamped to ScyllaDB's maximum");
        assert_eq!(ttl_of(Duration::from_millis(1)), 1);
    }

    #[test]
    fn validate_catches_code_built_configs() {
        let mut c = ScyllaConfig::default();
        c.validate().unwrap();
        c.bucket_ms = 0;
        assert!(c.validate().is_err());
        let c = ScyllaConfig {
            hosts: vec![],
            ..ScyllaConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn password_is_not_printed() {
        let c = ScyllaCredentials {
            username: "herald".into(),
            password: "s3cret".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("herald") && !shown.contains("s3cret"), "{shown}");
    }
}
