//! The gateway's own MCP sessions (protocol revisions up to 2025-11-25).
//!
//! Session ids are random and minted here, never the upstream's, and each is bound to the
//! identity that created it (issuer, subject, client): a session id is not a credential, and a
//! request that presents one with another identity's token is answered as if it did not exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::Principal;
use crate::upstream::ChannelSession;

pub enum SessionUpstream {
    /// A Streamable HTTP upstream's own session id (if it issued one).
    Http { upstream_id: Option<String> },
    /// A channel (stdio child or legacy SSE connection) that belongs to this session alone.
    Channel(Arc<ChannelSession>),
}

pub struct Session {
    pub id: String,
    pub route: String,
    owner: (String, Option<String>, Option<String>),
    pub upstream: SessionUpstream,
    /// The client declared URL-mode elicitation at `initialize` (2025-11-25).
    pub url_elicitation: bool,
    last_used: Mutex<Instant>,
}

impl Session {
    pub fn new(
        route: &str,
        principal: &Principal,
        upstream: SessionUpstream,
    ) -> Result<Self, portcullis_crypto::CryptoError> {
        Ok(Self {
            id: portcullis_crypto::random_token(32)?,
            route: route.to_owned(),
            owner: principal.owner(),
            upstream,
            url_elicitation: false,
            last_used: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    pub fn insert(&self, session: Arc<Session>) {
        if let Ok(mut map) = self.map.lock() {
            map.insert(session.id.clone(), session);
        }
    }

    /// The session, if it exists on this route, belongs to this caller and is still alive.
    pub fn find(&self, id: &str, route: &str, principal: &Principal) -> Option<Arc<Session>> {
        let mut map = self.map.lock().ok()?;
        let session = map.get(id)?.clone();
        if session.route != route {
            return None;
        }
        if session.owner != principal.owner() {
            tracing::warn!(route, "a session id was presented with another identity's token; refused");
            return None;
        }
        if let SessionUpstream::Channel(channel) = &session.upstream
            && channel.closed_reason().is_some()
        {
            map.remove(id);
            return None;
        }
        session.touch();
        Some(session)
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().ok()?.remove(id)
    }

    /// Ends sessions idle for longer than their route allows; returns how many.
    pub fn reap(&self, idle_limit: impl Fn(&str) -> Duration) -> usize {
        let Ok(mut map) = self.map.lock() else { return 0 };
        let before = map.len();
        map.retain(|_, s| {
            let dead = matches!(&s.upstream, SessionUpstream::Channel(c) if c.closed_reason().is_some());
            !dead && s.idle_for() < idle_limit(&s.route)
        });
        before - map.len()
    }

    /// Who each session of `issuer` belongs to: `(session id, user, client)`.
    pub fn owned_by_issuer(&self, issuer: &str) -> Vec<(String, Option<String>, Option<String>)> {
        let Ok(map) = self.map.lock() else { return Vec::new() };
        map.values()
            .filter(|s| s.owner.0 == issuer)
            .map(|s| (s.id.clone(), s.owner.1.clone(), s.owner.2.clone()))
            .collect()
    }

    /// Ends every session of these routes; returns how many.
    pub fn remove_routes(&self, routes: &[String]) -> usize {
        if routes.is_empty() {
            return 0;
        }
        let Ok(mut map) = self.map.lock() else { return 0 };
        let before = map.len();
        map.retain(|_, s| !routes.contains(&s.route));
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Live sessions per route, and how many of them hold a channel of their own (a stdio
    /// child or a legacy SSE connection).
    pub fn load(&self) -> HashMap<String, (usize, usize)> {
        let mut load: HashMap<String, (usize, usize)> = HashMap::new();
        if let Ok(map) = self.map.lock() {
            for s in map.values() {
                let entry = load.entry(s.route.clone()).or_default();
                entry.0 += 1;
                if matches!(s.upstream, SessionUpstream::Channel(_)) {
                    entry.1 += 1;
                }
            }
        }
        load
    }

    pub fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}
