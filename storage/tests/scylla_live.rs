//! The ScyllaDB backend against a live cluster, when one is given:
//!
//! ```text
//! docker compose -f deploy/scylla/compose.yml up -d
//! HERALD_TEST_SCYLLA=127.0.0.1:9042 cargo test -p herald-storage --test scylla_live
//! ```
//!
//! `HERALD_TEST_SCYLLA` is `host:port` (or several, comma-separated). The
//! tests create the keyspace `herald_test` (SimpleStrategy, replication
//! factor 1) and never empty it: the conformance suite names everything
//! uniquely per run. Without the variable every test prints that it was
//! skipped and passes: nothing here then says anything about the backend.

#![cfg(feature = "scylla")]

use std::time::Duration;

use herald_storage::scylla::{ScyllaConfig, ScyllaStorage, migrate};
use herald_storage::{Storage, StorageError, conformance};

const KEYSPACE: &str = "herald_test";
const REPLICATION: &str = "{'class': 'SimpleStrategy', 'replication_factor': 1}";

/// The cluster's config, or None (after saying so) when no cluster is given.
fn live_config() -> Option<ScyllaConfig> {
    let Ok(hosts) = std::env::var("HERALD_TEST_SCYLLA") else {
        eprintln!("SKIPPED: HERALD_TEST_SCYLLA not set; the ScyllaDB backend was not run against a live cluster");
        return None;
    };
    let url = format!("scylla://{hosts}/{KEYSPACE}");
    let mut config = ScyllaConfig::parse(&url).unwrap_or_else(|e| panic!("HERALD_TEST_SCYLLA={hosts:?}: {e}"));
    // A single test node answers LOCAL_QUORUM with itself; generous
    // timeouts for a node started with --overprovisioned.
    config.request_timeout = Duration::from_secs(30);
    config.connect_timeout = Duration::from_secs(10);
    migrate(&config, REPLICATION).expect("migrate the test keyspace");
    Some(config)
}

fn connect(config: ScyllaConfig) -> Storage {
    ScyllaStorage::connect(config).expect("connect to the test keyspace")
}

#[test]
fn conforms() {
    let Some(config) = live_config() else { return };
    let storage = connect(config);
    conformance::run_all(&mut || storage.clone());
}

#[test]
fn conforms_with_small_buckets() {
    // Three-second buckets: the suite's messages (a second apart) spread
    // over many partitions, so reads merge buckets and trims span them.
    let Some(mut config) = live_config() else { return };
    config.bucket_ms = 3_000;
    let storage = connect(config);
    conformance::run_all(&mut || storage.clone());
}

#[test]
fn conforms_on_fresh_connections() {
    // A new session (and new rollup writers) per check.
    let Some(config) = live_config() else { return };
    conformance::run_all(&mut || connect(config.clone()));
}

#[test]
fn migrate_is_idempotent() {
    let Some(config) = live_config() else { return };
    migrate(&config, REPLICATION).expect("a second migrate");
    migrate(&config, "{'class': 'SimpleStrategy', 'replication_factor': 1}").expect("a third migrate");
}

#[test]
fn a_missing_keyspace_is_an_error() {
    let Some(mut config) = live_config() else { return };
    config.keyspace = "herald_test_never_created".to_owned();
    match ScyllaStorage::connect(config) {
        Err(StorageError::Unavailable(message)) => eprintln!("as expected: {message}"),
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("connected to a keyspace that does not exist"),
    }
}

#[test]
fn nothing_listens_is_an_error() {
    // Needs no cluster: port 1 on localhost refuses connections.
    let mut config = ScyllaConfig::parse("scylla://127.0.0.1:1/herald_test").expect("a valid URL");
    config.connect_timeout = Duration::from_secs(2);
    match ScyllaStorage::connect(config) {
        Err(StorageError::Unavailable(message)) => assert!(message.contains("127.0.0.1:1"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn migrate_without_a_cluster_is_an_error() {
    let mut config = ScyllaConfig::parse("scylla://127.0.0.1:1/herald_test").expect("a valid URL");
    config.connect_timeout = Duration::from_secs(2);
    assert!(matches!(
        migrate(&config, REPLICATION),
        Err(StorageError::Unavailable(_))
    ));
    assert!(
        matches!(
            migrate(&config, "{'replication_factor': 1}"),
            Err(StorageError::Invalid(_))
        ),
        "a bad replication map is refused before connecting"
    );
}
