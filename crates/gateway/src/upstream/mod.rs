//! A route's upstream: one module per transport, behind one interface.
//!
//! `proxy.rs` decides; what it hands on is a [`Call`] (a decided POST), a GET for the
//! session's stream, or the end of a session. [`Gateway::forward`], [`Gateway::listen`] and
//! [`Gateway::end_upstream_session`] are the whole interface, and the only place that asks
//! which transport a route has:
//!
//! - `streamable_http.rs`: Streamable HTTP (2025-03-26 and later): one pooled client, the
//!   upstream's session id swapped for ours, its answer relayed as JSON or SSE, lists
//!   filtered; the credentials `upstream_auth` gives come from `credentials.rs`.
//! - `stdio.rs` (a child per session) and `legacy_sse.rs` (a 2024-11-05 HTTP+SSE connection
//!   per session) each open a message channel; `channel.rs` is the bridge both share, which
//!   routes answers back to the POST that asked and serves the rest on the session's streams.

mod channel;
mod credentials;
mod legacy_sse;
mod stdio;
mod streamable_http;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;

pub(crate) use channel::ChannelSession;
pub use stdio::StdioCommand;
pub(crate) use streamable_http::{HttpClient, host_header, http_client};

use crate::auth::Principal;
use crate::filter::ListKind;
use crate::protocol::Declared;
use crate::sessions::Session;
use crate::{Gateway, GatewayError, Reply, Route, UpstreamSettings};

/// How the data path reaches a route's upstream, compiled once from its settings.
pub(crate) enum Endpoint {
    /// Streamable HTTP: the one URL, as the client sends it (parsed once, not per call).
    Http(http::Uri),
    /// Stdio or legacy SSE: a channel per session, which `channel.rs` opens and serves.
    Channel,
}

impl Endpoint {
    pub fn compile(settings: &UpstreamSettings) -> Result<Self, String> {
        match settings {
            UpstreamSettings::StreamableHttp { url } => {
                url.as_str().parse::<http::Uri>().map(Self::Http).map_err(|e| e.to_string())
            }
            UpstreamSettings::Stdio(_) | UpstreamSettings::LegacySse { .. } => Ok(Self::Channel),
        }
    }
}

/// A decided POST, on its way upstream.
pub(crate) struct Call<'a> {
    pub route: &'a Route,
    pub principal: &'a Principal,
    /// The client's headers (only what `streamable_http::forwardable` allows goes on).
    pub headers: &'a HeaderMap,
    pub version: Declared,
    /// The messages as decided, in order; a batch when `batch`.
    pub messages: Vec<Value>,
    pub batch: bool,
    /// The caller's session, when the request named one.
    pub session: Option<Arc<Session>>,
    /// The ids of the requests among `messages`, in order.
    pub request_ids: Vec<Value>,
    /// List requests by id, so their answers can be filtered.
    pub lists: HashMap<String, ListKind>,
    /// The one message is `initialize`: a session starts if the answer is a success.
    pub initialize: bool,
    /// The client can be asked to open a URL (MCP URL-mode elicitation).
    pub url_elicitation: bool,
    /// `traceparent`/`tracestate` naming the gateway's upstream span (empty when traces are
    /// off): sent as headers to HTTP upstreams (and already in each message's `_meta`).
    pub trace: Vec<(String, String)>,
}

impl Call<'_> {
    pub fn first_id(&self) -> Option<Value> {
        self.request_ids.first().cloned()
    }
}

impl Gateway {
    /// Sends a decided POST to the route's upstream and relays what comes back.
    pub(crate) async fn forward(&self, call: Call<'_>) -> Result<Reply, GatewayError> {
        match &call.route.endpoint {
            Endpoint::Http(uri) => self.post_http(uri, call).await,
            Endpoint::Channel => self.post_channel(call).await,
        }
    }

    /// The session's stream of server messages (a GET).
    pub(crate) async fn listen(
        &self,
        route: &Route,
        principal: &Principal,
        headers: &HeaderMap,
        session: Option<Arc<Session>>,
    ) -> Result<Reply, GatewayError> {
        match &route.endpoint {
            Endpoint::Http(uri) => self.listen_http(route, principal, headers, uri, session.as_deref()).await,
            Endpoint::Channel => self.listen_channel(route, principal, session.ok_or(GatewayError::SessionRequired)?),
        }
    }

    /// Tells the upstream that a session (already removed from ours) ended. A channel needs
    /// nothing: the session was its only owner, and dropping it stops the child or closes the
    /// connection.
    pub(crate) async fn end_upstream_session(
        &self,
        route: &Route,
        principal: &Principal,
        headers: &HeaderMap,
        session: &Session,
    ) {
        if let Endpoint::Http(uri) = &route.endpoint {
            self.end_http_session(route, principal, headers, uri, session).await;
        }
    }
}
