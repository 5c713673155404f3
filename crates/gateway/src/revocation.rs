//! The kill switch on open connections.
//!
//! A revoked grant, a suspended client or a disabled user is refused on the next request
//! anyway (every request is authenticated). What this module adds is the end of what is
//! already open. When the change feed reports a change that can take access away, the gateway
//! asks the store about everything it holds open and ends:
//! - every event stream whose grant is no longer live (revoked, expired, its client
//!   suspended, its user disabled): no more data flows on a revoked grant;
//! - every MCP session (and its stdio child) whose client is no longer active or whose user
//!   is disabled or gone. A session outlives the revocation of one grant: it belongs to the
//!   user and client, whose next request must bring a new token anyway, and a client that
//!   re-authorizes after refresh-token reuse keeps its conversation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use axum::body::Body;
use futures_util::StreamExt;
use portcullis_control::ChangeFeed;
use portcullis_store::AuditKind;
use tokio::sync::{broadcast, watch};

use crate::Inner;

/// Event streams in flight that belong to a grant of ours.
#[derive(Default)]
pub(crate) struct LiveStreams {
    next: AtomicU64,
    map: Mutex<HashMap<u64, (String, watch::Sender<bool>)>>,
}

/// Forgets a stream when its body is dropped (finished, or the client went away).
struct Registered {
    streams: Arc<LiveStreams>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut map) = self.streams.map.lock() {
            map.remove(&self.id);
        }
    }
}

impl LiveStreams {
    /// Wraps a streaming body so that it ends as soon as `grant` stops being live.
    pub(crate) fn guard(self: &Arc<Self>, grant: String, body: Body) -> Body {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (stop, mut stopped) = watch::channel(false);
        if let Ok(mut map) = self.map.lock() {
            map.insert(id, (grant, stop));
        }
        let registered = Registered { streams: Arc::clone(self), id };
        let ended = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let stream = body.into_data_stream().take_until(ended).map(move |chunk| {
            let _keep = &registered;
            chunk
        });
        Body::from_stream(stream)
    }

    fn grants(&self) -> Vec<(u64, String)> {
        self.map.lock().map(|m| m.iter().map(|(id, (grant, _))| (*id, grant.clone())).collect()).unwrap_or_default()
    }

    fn end(&self, ids: &[u64]) {
        if let Ok(map) = self.map.lock() {
            for id in ids {
                if let Some((_, stop)) = map.get(id) {
                    let _ = stop.send(true);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Whether a change of this kind can take access away from a grant.
fn can_revoke(kind: AuditKind) -> bool {
    matches!(
        kind,
        AuditKind::ClientSuspended
            | AuditKind::ClientDeleted
            | AuditKind::ClientRejected
            | AuditKind::UserDisabled
            | AuditKind::UserDeleted
            | AuditKind::GrantsRevoked
            | AuditKind::ConsentRevoked
            | AuditKind::SignedOutByIdp
    )
}

impl Inner {
    /// Ends every session and stream that lost its access; returns how many.
    pub(crate) async fn end_revoked(&self) -> usize {
        let authorization = &self.validator.authorization;
        let sessions = self.sessions.owned_by_issuer(&authorization.settings().issuer);
        let streams = self.streams.grants();
        if sessions.is_empty() && streams.is_empty() {
            return 0;
        }
        let distinct = |items: Vec<String>| items.into_iter().collect::<HashSet<_>>().into_iter().collect::<Vec<_>>();
        let grants = distinct(streams.iter().map(|(_, g)| g.clone()).collect());
        let users = distinct(sessions.iter().filter_map(|(_, u, _)| u.clone()).collect());
        let clients = distinct(sessions.iter().filter_map(|(_, _, c)| c.clone()).collect());
        let store = authorization.store();
        let checked = async {
            let live = store.live_grants(&grants, authorization.now()).await?;
            let (dead_users, dead_clients) = store.inactive(&users, &clients).await?;
            Ok::<_, portcullis_store::StoreError>((live, dead_users, dead_clients))
        };
        let (live, dead_users, dead_clients) = match checked.await {
            Ok(found) => found,
            Err(e) => {
                // New requests fail closed on their own; what is open is checked again on the
                // next change.
                tracing::error!(error = %e, "cannot check which open sessions are still allowed");
                return 0;
            }
        };
        let mut ended = 0;
        for (session_id, user, client) in &sessions {
            let dead = user.as_ref().is_some_and(|u| dead_users.contains(u))
                || client.as_ref().is_some_and(|c| dead_clients.contains(c));
            if dead && self.sessions.remove(session_id).is_some() {
                ended += 1;
            }
        }
        let dead_streams: Vec<u64> = streams.iter().filter(|(_, g)| !live.contains(g)).map(|(id, _)| *id).collect();
        self.streams.end(&dead_streams);
        ended += dead_streams.len();
        if ended > 0 {
            tracing::info!(ended, "ended sessions and streams whose access was revoked");
        }
        ended
    }
}

/// Follows the change feed for as long as the gateway lives.
pub(crate) async fn follow(gateway: Weak<Inner>, feed: ChangeFeed) {
    let mut changes = feed.subscribe();
    loop {
        let received = changes.recv().await;
        // Any change may be one the remembered token states depend on.
        if let Some(inner) = gateway.upgrade() {
            inner.validator.states.forget_all();
        }
        let relevant = match received {
            Ok(change) => can_revoke(change.kind),
            // Too far behind to know what changed: check everything.
            Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !relevant {
            continue;
        }
        // One check answers a burst of changes.
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = changes.try_recv() {}
        let Some(inner) = gateway.upgrade() else { return };
        inner.end_revoked().await;
    }
}
