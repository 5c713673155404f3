//! Client records, read through an in-memory cache that the change feed keeps exact.
//!
//! Every token request, authorization request and client authentication reads its client. A
//! node keeps the records it read, and drops one as soon as the change feed reports a change
//! to that client (any node's: registered, updated, suspended, resumed, approved, rejected,
//! deleted). The cache is used only while the feed is current: a node that cannot read the
//! change log reads the database (and fails closed with it), so a suspension made anywhere is
//! never served from a stale copy for longer than the feed's bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_store::{AuditKind, ClientRecord, StoreError};

use crate::AuthorizationServer;

const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub(crate) struct ClientCache {
    entries: Mutex<HashMap<String, ClientRecord>>,
    /// Bumped by every invalidation: a record read before one is not cached after it.
    generation: AtomicU64,
}

impl ClientCache {
    fn get(&self, client_id: &str) -> Option<ClientRecord> {
        let found = self.entries.lock().ok()?.get(client_id).cloned();
        portcullis_telemetry::cache_lookup(portcullis_telemetry::Cache::Clients, found.is_some());
        found
    }

    fn put(&self, record: ClientRecord, read_at_generation: u64) {
        let Ok(mut entries) = self.entries.lock() else { return };
        // Checked under the lock that invalidation also takes.
        if self.generation.load(Ordering::Acquire) != read_at_generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(record.client_id.clone(), record);
    }

    fn forget(&self, client_id: Option<&str>) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            match client_id {
                Some(id) => {
                    entries.remove(id);
                }
                None => entries.clear(),
            }
        }
    }

    fn touch(&self, client_id: &str, at: i64) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(record) = entries.get_mut(client_id)
        {
            record.last_used_at = Some(at);
        }
    }
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCache(..)")
    }
}

/// The cached record goes; a fetched metadata document goes too when an administrator or the
/// system acted on the client (its own re-declarations keep the document's lifetime).
pub(crate) fn forget_changed(
    cache: &ClientCache,
    documents: &crate::cimd::CimdCache,
    kind: AuditKind,
    client_id: &str,
) {
    match kind {
        AuditKind::ClientRegistered | AuditKind::ClientUpdated => cache.forget(Some(client_id)),
        AuditKind::ClientSuspended
        | AuditKind::ClientResumed
        | AuditKind::ClientApproved
        | AuditKind::ClientRejected
        | AuditKind::ClientDeleted => {
            cache.forget(Some(client_id));
            documents.forget(client_id);
        }
        _ => {}
    }
}

impl AuthorizationServer {
    /// The client with this id, from the cache while the change feed is current.
    pub(crate) async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let trusted = self.feed.as_ref().is_some_and(|f| f.is_current());
        if trusted && let Some(hit) = self.client_cache.get(client_id) {
            return Ok(Some(hit));
        }
        let generation = self.client_cache.generation.load(Ordering::Acquire);
        let found = self.store.find_client(client_id).await?;
        if let (true, Some(record)) = (trusted, &found) {
            self.client_cache.put(record.clone(), generation);
        }
        Ok(found)
    }

    /// Records that a client was used at `at` (minute precision is enough for the sweep).
    pub(crate) async fn touch_client(&self, client_id: &str, at: i64) -> Result<(), StoreError> {
        self.store.touch_client(client_id, at).await?;
        self.client_cache.touch(client_id, at);
        Ok(())
    }

    /// What a change to a client (made on any node) means for what this node holds.
    pub fn client_changed(&self, kind: AuditKind, client_id: &str) {
        forget_changed(&self.client_cache, &self.cimd_cache, kind, client_id);
    }

    /// Forgets every cached client (when too many changes went by to know which).
    pub fn forget_cached_clients(&self) {
        self.client_cache.forget(None);
        self.forget_cached_documents();
    }
}
