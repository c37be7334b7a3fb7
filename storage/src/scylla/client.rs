//! The thin I/O layer: a tokio runtime on its own thread, the driver
//! session, the prepared statements, and blocking helpers the stores call.
//!
//! The stores' methods run on the gateway's storage threads, never inside
//! an async context. One current-thread runtime is driven by a dedicated
//! thread (`herald-scylla-io`, parked in `Runtime::block_on` until the
//! backend is dropped): it runs the driver's connection and metadata tasks
//! and the IO and timer drivers. Storage threads call `Handle::block_on`,
//! which polls their request on the calling thread while the IO thread
//! drives the sockets (tokio documents this pairing).

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_util::future::LocalBoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::batch::BatchValues;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::config::ScyllaConfig;
use super::cql;
use super::util::WriteClock;
use crate::{StorageError, StorageResult};

/// Most requests one store call keeps in flight at once.
const MAX_IN_FLIGHT: usize = 32;

pub(crate) type Op<'a> = LocalBoxFuture<'a, StorageResult<()>>;

/// A driver error as the storage error the gateway answers with.
pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("scylla: {what}: {e}"))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("scylla: {what}: {e}"))
}

/// The runtime and the thread driving it. Dropping it stops the thread
/// (the runtime's tasks, the driver's connections among them, end).
pub(crate) struct RuntimeThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RuntimeThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeThread").finish_non_exhaustive()
    }
}

impl RuntimeThread {
    pub(crate) fn start() -> StorageResult<RuntimeThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unavailable("starting the runtime", e))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("herald-scylla-io".to_owned())
            .spawn(move || {
                // Either a stop or the sender's drop ends it.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| unavailable("starting the IO thread", e))?;
        Ok(RuntimeThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `future` to completion on the calling thread.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> StorageResult<F::Output> {
        if Handle::try_current().is_ok() {
            return Err(StorageError::Unavailable(
                "scylla: called from an async context; call the storage traits from a storage thread".to_owned(),
            ));
        }
        Ok(self.handle.block_on(future))
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Builds the session every connection uses: the contact points, the
/// driver's default token- and shard-aware load balancing (preferring the
/// configured datacenter), its default retry policy (which retries only
/// what is idempotent, and every statement here is), the configured
/// consistency and timeout, client-side monotonic write timestamps.
pub(crate) fn session_builder(config: &ScyllaConfig) -> SessionBuilder {
    let mut balancing = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_datacenter {
        balancing = balancing.prefer_datacenter(dc.clone()).permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency)
        .request_timeout(Some(config.request_timeout))
        .retry_policy(Arc::new(DefaultRetryPolicy::new()))
        .load_balancing_policy(balancing.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.hosts)
        .connection_timeout(config.connect_timeout)
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let Some(c) = &config.credentials {
        builder = builder.user(c.username.clone(), c.password.clone());
    }
    builder
}

macro_rules! statements {
    ($($field:ident = $cql:path,)*) => {
        /// Every statement, prepared once at connect: idempotent (the
        /// retry policy may resend them) and paged.
        pub(crate) struct Statements {
            $(pub(crate) $field: PreparedStatement,)*
        }

        impl Statements {
            async fn prepare_all(session: &Session, page_size: i32) -> StorageResult<Statements> {
                Ok(Statements {
                    $($field: prepare(session, $cql, page_size).await?,)*
                })
            }
        }
    };
}

statements! {
    insert_message = cql::INSERT_MESSAGE,
    bucket_first = cql::BUCKET_FIRST,
    bucket_last = cql::BUCKET_LAST,
    head_epoch = cql::HEAD_EPOCH,
    head_last = cql::HEAD_LAST,
    head_trim = cql::HEAD_TRIM,
    select_head = cql::SELECT_HEAD,
    delete_head_epoch = cql::DELETE_HEAD_EPOCH,
    select_buckets = cql::SELECT_BUCKETS,
    select_all_buckets = cql::SELECT_ALL_BUCKETS,
    select_messages_desc = cql::SELECT_MESSAGES_DESC,
    select_messages_asc = cql::SELECT_MESSAGES_ASC,
    select_offsets_asc = cql::SELECT_OFFSETS_ASC,
    delete_messages_through = cql::DELETE_MESSAGES_THROUGH,
    delete_message_partition = cql::DELETE_MESSAGE_PARTITION,
    delete_bucket = cql::DELETE_BUCKET,
    index_upsert = cql::INDEX_UPSERT,
    index_delete = cql::INDEX_DELETE,
    index_list_after = cql::INDEX_LIST_AFTER,
    index_list_from = cql::INDEX_LIST_FROM,
    notif_insert = cql::NOTIF_INSERT,
    notif_page = cql::NOTIF_PAGE,
    notif_flags_range = cql::NOTIF_FLAGS_RANGE,
    notif_flags_ids = cql::NOTIF_FLAGS_IDS,
    notif_mark = cql::NOTIF_MARK,
    notif_newest = cql::NOTIF_NEWEST,
    notif_trim_scan = cql::NOTIF_TRIM_SCAN,
    notif_delete_through = cql::NOTIF_DELETE_THROUGH,
    notif_delete_one = cql::NOTIF_DELETE_ONE,
    watermark_get = cql::WATERMARK_GET,
    watermark_add = cql::WATERMARK_ADD,
    watermark_prune = cql::WATERMARK_PRUNE,
    event_insert = cql::EVENT_INSERT,
    event_day_raw = cql::EVENT_DAY_RAW,
    event_day_trimmed = cql::EVENT_DAY_TRIMMED,
    event_days = cql::EVENT_DAYS,
    event_select = cql::EVENT_SELECT,
    event_scan_before = cql::EVENT_SCAN_BEFORE,
    event_delete_before = cql::EVENT_DELETE_BEFORE,
    rollup_upsert = cql::ROLLUP_UPSERT,
    rollup_select = cql::ROLLUP_SELECT,
}

async fn prepare(session: &Session, text: &str, page_size: i32) -> StorageResult<PreparedStatement> {
    let mut statement = session.prepare(text).await.map_err(|e| {
        unavailable(
            &format!("preparing {text:?} (has `herald migrate` created the schema?)"),
            e,
        )
    })?;
    statement.set_is_idempotent(true);
    statement.set_page_size(page_size);
    Ok(statement)
}

/// One connected backend, shared by its three stores.
pub(crate) struct Client {
    // Dropped first: the session's tasks still have their runtime.
    pub(crate) session: Session,
    pub(crate) st: Statements,
    pub(crate) config: ScyllaConfig,
    pub(crate) clock: WriteClock,
    runtime: RuntimeThread,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaClient")
            .field("hosts", &self.config.hosts)
            .field("keyspace", &self.config.keyspace)
            .field("consistency", &self.config.consistency)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the keyspace and prepares every statement.
    pub(crate) fn connect(config: ScyllaConfig) -> StorageResult<Client> {
        config.validate()?;
        let runtime = RuntimeThread::start()?;
        let (session, st) = runtime.block_on(async {
            let session = session_builder(&config)
                .use_keyspace(&config.keyspace, false)
                .build()
                .await
                .map_err(|e| {
                    unavailable(
                        &format!("connecting to {:?}, keyspace {}", config.hosts, config.keyspace),
                        e,
                    )
                })?;
            let st = Statements::prepare_all(&session, config.page_size).await?;
            Ok::<_, StorageError>((session, st))
        })??;
        Ok(Client {
            session,
            st,
            config,
            clock: WriteClock::default(),
            runtime,
        })
    }

    /// Runs a store operation on the calling (storage) thread.
    pub(crate) fn run<T>(&self, op: impl Future<Output = StorageResult<T>>) -> StorageResult<T> {
        self.runtime.block_on(op)?
    }

    /// Executes a write (or a read whose rows do not matter).
    pub(crate) async fn exec(&self, statement: &PreparedStatement, values: impl SerializeRow) -> StorageResult<()> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(statement.get_statement(), e))
    }

    /// Writes `values` with one statement as unlogged batches (the caller
    /// keeps each batch within one partition).
    pub(crate) async fn batch<V: SerializeRow>(
        &self,
        statement: &PreparedStatement,
        values: &[V],
    ) -> StorageResult<()> {
        match values {
            [] => Ok(()),
            [one] => self.exec(statement, one).await,
            _ => {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in values {
                    batch.append_statement(statement.clone());
                }
                batch.set_is_idempotent(true);
                self.session
                    .batch(&batch, values)
                    .await
                    .map(|_| ())
                    .map_err(|e| unavailable(statement.get_statement(), e))
            }
        }
    }

    /// Runs different statements as one unlogged batch: the caller keeps
    /// them within one partition, where ScyllaDB applies a batch
    /// atomically.
    pub(crate) async fn batch_of(
        &self,
        statements: &[&PreparedStatement],
        values: impl BatchValues,
    ) -> StorageResult<()> {
        let mut batch = Batch::new(BatchType::Unlogged);
        for statement in statements {
            batch.append_statement((*statement).clone());
        }
        batch.set_is_idempotent(true);
        self.session
            .batch(&batch, values)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(statements.first().map_or("batch", |s| s.get_statement()), e))
    }

    /// Reads rows page by page, handing each page to `page` until it
    /// returns false or the rows end.
    pub(crate) async fn scan<R, V>(
        &self,
        statement: &PreparedStatement,
        values: V,
        mut page: impl FnMut(Vec<R>) -> StorageResult<bool>,
    ) -> StorageResult<()>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
        V: SerializeRow,
    {
        let what = statement.get_statement();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(statement, &values, paging)
                .await
                .map_err(|e| unavailable(what, e))?;
            let rows = result.into_rows_result().map_err(|e| unavailable(what, e))?;
            let decoded: Vec<R> = rows
                .rows::<R>()
                .map_err(|e| corrupt(what, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt(what, e))?;
            if !page(decoded)? {
                return Ok(());
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok(()),
            }
        }
    }

    /// Reads at most `max` rows.
    pub(crate) async fn rows<R, V>(&self, statement: &PreparedStatement, values: V, max: usize) -> StorageResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
        V: SerializeRow,
    {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.scan(statement, values, |page: Vec<R>| {
            out.extend(page.into_iter().take(max - out.len()));
            Ok(out.len() < max)
        })
        .await?;
        Ok(out)
    }

    /// Reads at most one row.
    pub(crate) async fn row<R, V>(&self, statement: &PreparedStatement, values: V) -> StorageResult<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
        V: SerializeRow,
    {
        Ok(self.rows(statement, values, 1).await?.into_iter().next())
    }
}

/// Runs operations concurrently (at most [`MAX_IN_FLIGHT`] at once); the
/// first error wins, the others still finish or are dropped.
pub(crate) async fn all(ops: Vec<Op<'_>>) -> StorageResult<()> {
    futures_util::stream::iter(ops)
        .buffer_unordered(MAX_IN_FLIGHT)
        .try_for_each(|()| async { Ok(()) })
        .await
}

/// Runs operations concurrently and collects their values in order.
pub(crate) async fn all_values<'a, T: 'a>(ops: Vec<LocalBoxFuture<'a, StorageResult<T>>>) -> StorageResult<Vec<T>> {
    futures_util::stream::iter(ops)
        .buffered(MAX_IN_FLIGHT)
        .try_collect()
        .await
}

/// The migration runner: creates the keyspace, applies every schema file.
pub(crate) fn migrate(config: &ScyllaConfig, replication: &str) -> StorageResult<()> {
    use scylla::statement::Statement;

    config.validate()?;
    let create_keyspace = cql::create_keyspace(&config.keyspace, replication)?;
    let runtime = RuntimeThread::start()?;
    runtime.block_on(async {
        let session = session_builder(config)
            .build()
            .await
            .map_err(|e| unavailable(&format!("connecting to {:?}", config.hosts), e))?;
        let run = |text: String| {
            let session = &session;
            async move {
                let mut statement = Statement::new(text);
                statement.set_is_idempotent(true);
                session
                    .query_unpaged(statement.clone(), ())
                    .await
                    .map_err(|e| unavailable(&statement.contents, e))
            }
        };
        run(create_keyspace).await?;
        session
            .use_keyspace(&config.keyspace, false)
            .await
            .map_err(|e| unavailable("USE keyspace", e))?;
        for (name, file) in cql::MIGRATIONS {
            for statement in cql::split_statements(file) {
                run(statement).await?;
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let mut record = Statement::new(cql::MIGRATION_DONE);
            record.set_is_idempotent(true);
            session
                .query_unpaged(record, super::binds::migration(name, now_ms))
                .await
                .map_err(|e| unavailable(cql::MIGRATION_DONE, e))?;
            tracing::info!(keyspace = %config.keyspace, file = name, "scylla schema applied");
        }
        session
            .await_schema_agreement()
            .await
            .map_err(|e| unavailable("awaiting schema agreement", e))?;
        Ok(())
    })?
}
