//! The audit trail: every decided message is queued here and written to the store in batches
//! by one background task, off the request path. Shutting down drains the queue, so a clean
//! stop loses nothing.
//!
//! Each write is one transaction, whose fixed cost (the chain head's lock, the commit, on
//! SQLite the WAL pages of every index touched) dwarfs a record's own. So under load the
//! writer commits at most once every [`PACE`] and what arrives meanwhile joins the batch; a
//! quiet trail is still written at once (the first record after a pause does not wait).

use std::sync::Mutex;

use portcullis_store::{NewAuditEvent, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const QUEUE: usize = 8192;
const BATCH: usize = 2048;
/// The shortest time between two writes' starts.
const PACE: std::time::Duration = std::time::Duration::from_millis(10);

pub struct AuditLog {
    sender: Mutex<Option<mpsc::Sender<NewAuditEvent>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<NewAuditEvent>(QUEUE);
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut last_write: Option<tokio::time::Instant> = None;
            while let Some(first) = rx.recv().await {
                batch.push(first);
                if let Some(last) = last_write {
                    tokio::time::sleep_until(last + PACE).await;
                }
                last_write = Some(tokio::time::Instant::now());
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let mut attempt = 0;
                loop {
                    match store.append_audit_events(&batch).await {
                        Ok(()) => {
                            portcullis_telemetry::audit_written(batch.len());
                            break;
                        }
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing::warn!(error = %e, attempt, "writing the audit trail failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, events = batch.len(), "audit events could not be written");
                            portcullis_telemetry::audit_dropped(batch.len());
                            break;
                        }
                    }
                }
                batch.clear();
            }
        });
        Self { sender: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)) }
    }

    /// Queues events without waiting; when the queue is full the event waits in a task of its
    /// own rather than being dropped or slowing the request.
    pub fn record(&self, events: Vec<NewAuditEvent>) {
        let Some(tx) = self.sender.lock().ok().and_then(|s| s.clone()) else {
            tracing::warn!(events = events.len(), "audit event after shutdown");
            portcullis_telemetry::audit_dropped(events.len());
            return;
        };
        for event in events {
            if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event) {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(event).await;
                });
            }
        }
    }

    /// Records queued and not yet taken by the writer.
    pub fn depth(&self) -> usize {
        self.sender.lock().ok().and_then(|s| s.as_ref().map(|tx| tx.max_capacity() - tx.capacity())).unwrap_or(0)
    }

    /// Stops accepting events and waits until every queued one is written.
    pub async fn shutdown(&self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}
