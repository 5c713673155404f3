//! The change feed: how a node learns of every change committed anywhere.
//!
//! The log itself (`changes`, by revision) is the truth; notifications only say "read it now".
//! On PostgreSQL a `LISTEN` connection wakes the follower as soon as a change commits on any
//! node; on SQLite a local commit wakes it directly and another process's commit (the CLI while
//! `serve` runs) is found by reading the log every `poll_interval`. Either way the follower
//! also reads the log on every tick, so a lost notification, a dropped `LISTEN` connection or
//! a reconnect delays a change by at most one tick and loses nothing.
//!
//! A node that cannot read the log cannot know what was revoked. [`ChangeFeed::is_current`]
//! turns false once the log has not been read successfully for `fail_closed_after`, and the
//! node then refuses what depends on shared state (503) until it can read it again.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_store::{ChangeListener, ChangeRecord, Store, StoreError};
use tokio::sync::{Notify, broadcast, watch};

/// How closely a node follows the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// How often the log is read when nothing announces a change: the bound on how late a
    /// change made by another SQLite process, or one whose notification was lost, is applied.
    pub poll_interval: Duration,
    /// How long the node may go without reading the log before it fails closed.
    pub fail_closed_after: Duration,
}

impl FeedSettings {
    /// A quarter of a second on SQLite (nothing announces another process's changes), a
    /// second on PostgreSQL (where NOTIFY does, and the read is a safety net).
    pub fn for_store(store: &Store, fail_closed_after: Duration) -> Self {
        let poll_interval = if store.is_postgres() { Duration::from_secs(1) } else { Duration::from_millis(250) };
        Self { poll_interval, fail_closed_after }
    }
}

const READ_BATCH: i64 = 500;
const SUBSCRIBER_BACKLOG: usize = 4096;

struct Inner {
    sender: broadcast::Sender<ChangeRecord>,
    revision: AtomicI64,
    /// When the log was last read to its end.
    current_at: Mutex<Instant>,
    settings: FeedSettings,
    stop: watch::Sender<bool>,
}

/// Follows the change log and hands every change to subscribers; cheap to clone.
#[derive(Clone)]
pub struct ChangeFeed(Arc<Inner>);

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed").field("revision", &self.revision()).finish_non_exhaustive()
    }
}

impl ChangeFeed {
    /// Starts following from the log's current end: what a node loads at start is already
    /// current, so only later changes matter. `local` is woken by this node's own commits.
    pub async fn start(store: Store, local: Arc<Notify>, settings: FeedSettings) -> Result<Self, StoreError> {
        let revision = store.latest_revision().await?;
        let (sender, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        let (stop, stop_rx) = watch::channel(false);
        let feed = Self(Arc::new(Inner {
            sender,
            revision: AtomicI64::new(revision),
            current_at: Mutex::new(Instant::now()),
            settings,
            stop,
        }));
        tokio::spawn(feed.clone().follow(store, local, stop_rx));
        Ok(feed)
    }

    /// Every change from now on, in revision order. A receiver that falls more than a few
    /// thousand changes behind gets `Lagged` and must treat everything as changed.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeRecord> {
        self.0.sender.subscribe()
    }

    /// The last revision this node has applied.
    pub fn revision(&self) -> i64 {
        self.0.revision.load(Ordering::Acquire)
    }

    /// Whether the log was read to its end within `fail_closed_after`.
    pub fn is_current(&self) -> bool {
        self.0.current_at.lock().map(|at| at.elapsed() <= self.0.settings.fail_closed_after).unwrap_or(false)
    }

    /// How long since the log was last read to its end: how far behind this node may be.
    pub fn staleness(&self) -> Duration {
        self.0.current_at.lock().map(|at| at.elapsed()).unwrap_or(Duration::MAX)
    }

    /// Sets the change feed's gauges (for a scrape).
    pub fn report(&self) {
        portcullis_telemetry::set_change_feed(self.staleness().as_secs_f64(), self.is_current());
    }

    pub fn stop(&self) {
        let _ = self.0.stop.send(true);
    }

    /// Reads the log after the applied revision, to its end, and hands each change on.
    async fn catch_up(&self, store: &Store) -> Result<usize, StoreError> {
        let mut applied = 0;
        loop {
            let changes = store.changes_after(self.revision(), READ_BATCH).await?;
            let n = changes.len();
            for change in changes {
                self.0.revision.store(change.revision, Ordering::Release);
                // No subscriber is not an error: nothing on this node caches that state.
                let _ = self.0.sender.send(change);
            }
            applied += n;
            if i64::try_from(n).unwrap_or(i64::MAX) < READ_BATCH {
                if let Ok(mut at) = self.0.current_at.lock() {
                    *at = Instant::now();
                }
                return Ok(applied);
            }
        }
    }

    async fn follow(self, store: Store, local: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let mut listener: Option<ChangeListener> = None;
        let mut next_listen = Instant::now();
        let mut failing = false;
        loop {
            if store.is_postgres() && listener.is_none() && Instant::now() >= next_listen {
                match store.change_listener().await {
                    Ok(l) => listener = l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN for changes; reading the log every tick meanwhile");
                        next_listen = Instant::now() + self.0.settings.poll_interval;
                    }
                }
            }
            match self.catch_up(&store).await {
                Ok(applied) => {
                    if failing {
                        tracing::info!(revision = self.revision(), "the change log is readable again");
                    }
                    failing = false;
                    if applied > 0 {
                        tracing::debug!(applied, revision = self.revision(), "changes applied");
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot read the change log; failing closed if it lasts");
                    }
                    failing = true;
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = local.notified() => {}
                _ = tokio::time::sleep(self.0.settings.poll_interval) => {}
                heard = notified => {
                    if let Err(e) = heard {
                        tracing::warn!(error = %e, "the LISTEN connection was lost; reconnecting");
                        listener = None;
                    }
                }
            }
        }
    }
}
