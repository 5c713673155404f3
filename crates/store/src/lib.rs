//! Persistence for Portcullis on SQLite (the default, one file in WAL mode) or PostgreSQL.
//!
//! One [`Store`] API over an enum of the two concrete sqlx pools: each query is written once
//! with `$N` placeholders (which both engines accept) and expanded for each backend by the
//! [`on_pool!`] macro, so the two cannot drift apart in logic. Where the engines could still
//! differ (types, locking, `RETURNING`), the conformance suite in `tests/` runs every case
//! against both. Every state transition that must not half-happen (redeeming a code, rotating a
//! refresh token) is one transaction.
//!
//! Every statement runs under a deadline ([`Store::with_query_deadline`]): a database that
//! stops answering without closing its connections (a black hole) makes calls fail promptly
//! with [`StoreError::Timeout`] instead of hanging on the pool.

mod audit;
mod chain;
mod changes;
mod checkpoints;
mod clients;
mod consents;
mod export;
mod federation;
mod grants;
mod group_commit;
mod keys;
mod model;
mod sessions;
mod users;
mod vault;
pub use vault::UpstreamClientRecord;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use audit::ChainedRecord;
pub use chain::{ChainFault, ChainHead, ChainReport, ChainWalk, VerifyFrom};
pub use changes::{ChangeListener, Committed, GrantSelector, Mutation};
pub use checkpoints::{AuditCheckpoint, AuditSigningKeyRecord, CheckpointKeys, PruneReport};
pub use export::{CheckpointLine, EXPORT_FORMAT, ExportError, ExportHeader, ExportLine, ExportSummary, verify_export};
pub use model::*;

/// Expands `$body` once per backend with `$pool` bound to the concrete pool, within the store's
/// query deadline. On SQLite this is the single writer connection: SQLite admits one writer at
/// a time, and queueing writers in the pool (fairly, without blocking a thread) beats letting
/// them collide and sleep in SQLite's busy handler.
///
/// The body runs in an async block: `?` and `return Err(..)` leave the block, and the macro
/// then propagates the error; the block's value is the macro's value.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        $store
            .within_deadline(async {
                match &$store.backend {
                    $crate::Backend::Sqlite { writer: $pool, .. } => Ok::<_, $crate::StoreError>($body),
                    $crate::Backend::Postgres($pool) => Ok::<_, $crate::StoreError>($body),
                }
            })
            .await?
    };
}
pub(crate) use on_pool;

/// Like [`on_pool!`], for statements that only read: on SQLite they use the reader pool, which
/// WAL lets run alongside the writer.
macro_rules! on_reader {
    ($store:expr, $pool:ident => $body:expr) => {
        $store
            .within_deadline(async {
                match &$store.backend {
                    $crate::Backend::Sqlite { reader: $pool, .. } => Ok::<_, $crate::StoreError>($body),
                    $crate::Backend::Postgres($pool) => Ok::<_, $crate::StoreError>($body),
                }
            })
            .await?
    };
}
pub(crate) use on_reader;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is neither sqlite: nor postgres:")]
    UnsupportedUrl(String),
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("{0} was not found")]
    NotFound(&'static str),
    #[error("the stored {what} of {row} is malformed ({detail}); repair or remove that row")]
    Corrupt { what: &'static str, row: String, detail: String },
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not sign the audit checkpoint: {0}; nothing was changed")]
    Signing(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("the token writer stopped before confirming the write (the server is shutting down); retry the request")]
    WriterStopped,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return StoreError::Conflict("a record with this key");
        }
        StoreError::Database(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite { writer: SqlitePool, reader: SqlitePool, _checkpoints: Arc<WalCheckpoints> },
    Postgres(PgPool),
}

/// How often the WAL is copied back into the database file.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Most of SQLite's WAL is copied back into the database file by a task of its own. SQLite
/// checkpoints in the commit that takes the WAL past 1,000 pages, on the only write
/// connection, and every writer queued behind it waits while it copies the pages and syncs the
/// file. A PASSIVE checkpoint on a reader connection blocks no writer and no reader, so run
/// every 250 ms it leaves that automatic checkpoint (which is still what lets the WAL restart
/// and stay a few MiB) little to copy. Under token load: 7,300 grants a second instead of
/// 6,700–7,000. Not every 50 ms: the syncs then cost more than the stalls they saved. Ends
/// when the last clone of the store is dropped.
#[derive(Debug)]
pub(crate) struct WalCheckpoints(tokio::task::JoinHandle<()>);

impl WalCheckpoints {
    fn start(reader: SqlitePool) -> Self {
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval(WAL_CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if reader.is_closed() {
                    return;
                }
                let checkpoint = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&reader);
                match tokio::time::timeout(DEFAULT_QUERY_DEADLINE, checkpoint).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "checkpointing the SQLite WAL failed; retrying"),
                    Err(_) => {
                        tracing::warn!("checkpointing the SQLite WAL took longer than {DEFAULT_QUERY_DEADLINE:?}")
                    }
                }
            }
        }))
    }
}

impl Drop for WalCheckpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The database. Cheap to clone (it holds a pool).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) backend: Backend,
    /// The writer task that commits the token endpoint's writes together.
    group_commit: group_commit::GroupCommit,
    /// The longest any one statement (or transaction) may take, waiting for a connection
    /// included.
    deadline: Duration,
}

/// The default [`Store::with_query_deadline`].
pub const DEFAULT_QUERY_DEADLINE: Duration = Duration::from_secs(10);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens `url` (`sqlite://PATH` or `postgres://…`). Does not migrate; see [`Store::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Connect)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // After a burst, the WAL file shrinks back to this when it restarts.
                .pragma("journal_size_limit", "67108864")
                // A batch's statement journal (a multi-row INSERT in a transaction of several)
                // outgrows SQLite's 64 KiB in memory and would spill into a temporary file
                // created and unlinked for that one statement; keep it in memory.
                .pragma("temp_store", "MEMORY");
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(DEFAULT_QUERY_DEADLINE)
                .connect_with(options.clone())
                .await
                .map_err(StoreError::Connect)?;
            let reader = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(DEFAULT_QUERY_DEADLINE)
                .connect_with(options.create_if_missing(false))
                .await
                .map_err(StoreError::Connect)?;
            let checkpoints = Arc::new(WalCheckpoints::start(reader.clone()));
            Backend::Sqlite { writer, reader, _checkpoints: checkpoints }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(StoreError::Connect)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(DEFAULT_QUERY_DEADLINE)
                .connect_with(options)
                .await
                .map_err(StoreError::Connect)?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Self { backend, deadline: DEFAULT_QUERY_DEADLINE, group_commit: Default::default() })
    }

    /// Bounds every statement (and every transaction) by `deadline`, waiting for a connection
    /// included.
    pub fn with_query_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn query_deadline(&self) -> Duration {
        self.deadline
    }

    /// Runs `work` (one statement or one transaction) under the query deadline. A transaction
    /// cut short is rolled back when its connection is dropped.
    pub(crate) async fn within_deadline<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.deadline)),
        }
    }

    /// Whether the database answers, within the deadline.
    pub async fn ping(&self) -> Result<()> {
        on_reader!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Applies the embedded migrations of this backend. Idempotent.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => SQLITE_MIGRATIONS.run(writer).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        let chained = self.chain_unchained_records().await?;
        if chained > 0 {
            tracing::info!(chained, "audit records written before the hash chain existed are now chained");
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Deletes what has expired: authorization requests, codes, sessions, refresh tokens, and
    /// access-token records past their lifetime. Grants stay (they are the history).
    pub async fn purge_expired(&self, now: i64) -> Result<u64> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM authorization_requests WHERE expires_at <= $1",
            // Spent codes are kept a day past expiry so a late replay still revokes its grant.
            "DELETE FROM authorization_codes WHERE expires_at <= $1 - 86400",
            "DELETE FROM browser_sessions WHERE expires_at <= $1",
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
            "DELETE FROM access_tokens WHERE expires_at <= $1",
            "DELETE FROM client_assertion_jtis WHERE expires_at <= $1",
            "DELETE FROM seen_assertions WHERE expires_at <= $1",
        ] {
            removed += on_pool!(self, pool => sqlx::query(sql).bind(now).execute(pool).await?.rows_affected());
        }
        Ok(removed)
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { writer, reader, .. } => {
                reader.close().await;
                writer.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// A database URL fit for a log line: the password, if any, is replaced.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// Splits a space-separated list column.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Parses a stored scope column; a value that is not a scope set names its row.
pub(crate) fn stored_scopes(value: &str, row: impl FnOnce() -> String) -> Result<portcullis_types::ScopeSet> {
    portcullis_types::ScopeSet::parse(value).map_err(|e| StoreError::Corrupt {
        what: "scope",
        row: row(),
        detail: e.to_string(),
    })
}

/// Parses a stored closed-set value (`ClientStatus`, `GrantType`, ...) with its `parse`.
pub(crate) fn stored<T>(
    parse: impl FnOnce(&str) -> Option<T>,
    value: &str,
    what: &'static str,
    row: impl FnOnce() -> String,
) -> Result<T> {
    parse(value).ok_or_else(|| StoreError::Corrupt { what, row: row(), detail: format!("{value:?} is not one") })
}

impl Store {
    /// Runs one administrative statement (for instance `CREATE SCHEMA`) given at run time.
    /// Only for trusted input: test harnesses and operators' tooling.
    pub async fn execute_admin_sql(&self, statement: &str) -> Result<()> {
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        on_pool!(self, pool => sqlx::raw_sql(statement).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}
