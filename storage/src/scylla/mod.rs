//! The ScyllaDB backend, for clusters (feature `scylla`).
//!
//! ```no_run
//! use herald_storage::scylla::{ScyllaConfig, ScyllaStorage, migrate};
//!
//! let config = ScyllaConfig::parse("scylla://127.0.0.1:9042/herald")?;
//! migrate(&config, "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}")?;
//! let storage = ScyllaStorage::connect(config)?;
//! # Ok::<(), herald_storage::StorageError>(())
//! ```
//!
//! The stores are synchronous like every backend's: each call blocks its
//! (storage) thread on the driver while a dedicated IO thread runs the
//! driver's runtime. docs/SCYLLA.md describes the data model, consistency,
//! retries, bucketing and retention. Layout: `config` (settings, URL),
//! `cql` (statements, schema files), `binds` (the values bound to each
//! statement and the rows each returns, type-checked against the schema),
//! `log_plan`, `notif_plan`, `event_plan` and `util` (pure logic,
//! unit-tested without a cluster), `client` (runtime, session, prepared
//! statements, helpers) and the three thin stores `room_log`,
//! `notifications`, `events`.

mod binds;
mod client;
mod config;
mod cql;
mod event_plan;
mod events;
mod log_plan;
mod notif_plan;
mod notifications;
mod room_log;
mod util;

use std::sync::Arc;

pub use config::{DAY_MS, DEFAULT_PORT, MAX_TTL_SECS, ScyllaConfig, ScyllaCredentials};
pub use cql::{MIGRATIONS, create_keyspace, split_statements};
pub use scylla::statement::Consistency;

use crate::{Storage, StorageResult};

/// The ScyllaDB backend's constructor.
#[derive(Debug, Clone, Copy)]
pub struct ScyllaStorage;

impl ScyllaStorage {
    /// Connects to `config.keyspace` (created by [`migrate`]), prepares
    /// every statement once, and returns the three stores sharing one
    /// session. Fails when no contact point answers, the keyspace or a
    /// table is missing, or the credentials are refused.
    pub fn connect(config: ScyllaConfig) -> StorageResult<Storage> {
        let client = Arc::new(client::Client::connect(config)?);
        Ok(Storage {
            log: Arc::new(room_log::ScyllaRoomLog::new(client.clone())),
            notifications: Arc::new(notifications::ScyllaNotifications::new(client.clone())),
            events: Arc::new(events::ScyllaEvents::new(client)),
        })
    }
}

/// Creates `config.keyspace` if missing, with `replication` (a CQL map,
/// e.g. `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`;
/// an existing keyspace keeps its replication), then applies every schema
/// file of `schemas/cql` in order ([`MIGRATIONS`], embedded at build time)
/// and waits for schema agreement. Idempotent: every statement is `IF NOT
/// EXISTS`, so it may run at every deploy. `herald migrate` calls it.
pub fn migrate(config: &ScyllaConfig, replication: &str) -> StorageResult<()> {
    client::migrate(config, replication)
}
