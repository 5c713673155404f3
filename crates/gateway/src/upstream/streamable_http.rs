//! The Streamable HTTP transport (2025-03-26 and later): each decided POST goes to the
//! upstream's one URL through the gateway's pooled client, with the upstream's own session id
//! in place of ours and the gateway's credentials (never the client's); the answer comes back
//! as one JSON message (read whole, bounded, filtered if it answers a list) or as an event
//! stream passed on event by event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyDataStream, BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use sse_stream::{SseBody, SseByteStream};

use super::Call;
use crate::auth::Principal;
use crate::filter::{ListFilter, ListKind};
use crate::protocol::{EVENT_STREAM, SESSION_HEADER};
use crate::sessions::{Session, SessionUpstream};
use crate::{Gateway, GatewayError, Reply, ReplyStatus, Route, upstream_oauth};

/// Which request-headers of the client go upstream: the MCP ones (unknown `Mcp-Param-*`
/// included) and content negotiation. Never `Authorization` or `Cookie`, never the client's
/// session id (the upstream's own is substituted).
pub(crate) fn forwardable(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    (n.starts_with("mcp-") && *name != SESSION_HEADER) || matches!(n, "accept" | "content-type" | "last-event-id")
}

/// The gateway's client for Streamable HTTP upstreams: hyper's pooled client, keep-alive
/// HTTP/1.1 (TLS by rustls with the platform's roots), no redirects followed.
pub(crate) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the one [`HttpClient`] every route shares.
pub(crate) fn http_client(connect_timeout: Duration) -> Result<HttpClient, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

/// The `Host` header of requests to `uri`: its host, and its port unless the scheme's default
/// (what the client would otherwise format on every request).
pub(crate) fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    match uri.port_u16().filter(|p| *p != default_port) {
        Some(port) => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        None => HeaderValue::from_str(host).ok(),
    }
}

/// A request to the upstream's endpoint.
fn upstream_request(method: Method, uri: &http::Uri, headers: HeaderMap, body: Bytes) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers;
    request
}

/// An SSE body whose events are passed on one by one as they arrive, list results filtered:
/// the answer to the one list request over its text, like a JSON answer (`ListFilter::apply_text`),
/// anything else that may hold a list parsed. When nothing may (no list was asked for, and this
/// is not a stream filtered by shape), no event is parsed at all.
fn filtered_event_stream(
    upstream: Incoming,
    lists: HashMap<String, ListKind>,
    by_shape: bool,
    filter: ListFilter,
) -> Body {
    let nothing_to_filter = lists.is_empty() && !by_shape;
    let events = SseByteStream::new(BodyDataStream::new(upstream)).map(move |event| {
        event.map(|mut event| {
            let Some(data) = event.data.as_deref().filter(|_| !nothing_to_filter) else { return event };
            if let Some(text) = filter.apply_text(data.as_bytes(), &lists) {
                event.data = Some(text);
            } else if let Ok(mut message) = serde_json::from_str::<Value>(data)
                && filter.apply(&mut message, &lists, by_shape)
                && let Ok(text) = serde_json::to_string(&message)
            {
                event.data = Some(text);
            }
            event
        })
    });
    Body::new(SseBody::new(events))
}

/// The most an upstream's JSON answer may hold.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

async fn read_bounded(body: Incoming) -> Result<Bytes, String> {
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(format!("its answer is larger than {MAX_RESPONSE_BYTES} bytes")),
        Err(e) => Err(format!("its answer could not be read: {e}")),
    }
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() {
        "the connection was refused or could not be made".to_owned()
    } else {
        // The error's own message is generic; what went wrong is in its source.
        match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        }
    }
}

impl Gateway {
    /// A decided POST to a Streamable HTTP upstream, with the credential the route's
    /// `upstream_auth` gives (refreshed once if the upstream refuses it).
    pub(super) async fn post_http(&self, uri: &http::Uri, call: Call<'_>) -> Result<Reply, GatewayError> {
        let first_id = call.first_id();
        let Call {
            route, principal, headers, messages, batch, session, lists, initialize, url_elicitation, trace, ..
        } = call;
        // Bytes, so that a retry after a refresh resends it without a copy. Written by
        // `to_vec`: `Value`'s `Display` goes through the formatter piece by piece (2.6 times
        // the instructions for a `tools/call`).
        let written = match (batch, messages.as_slice()) {
            (false, [message]) => serde_json::to_vec(message),
            _ => serde_json::to_vec(&messages),
        };
        let body = written
            .map(Bytes::from)
            .map_err(|e| GatewayError::Internal(format!("the decided message could not be written: {e}")))?;
        let mut credential = self.upstream_credential(route, principal, first_id.as_ref(), url_elicitation).await?;
        // At most one retry: after a refresh, or with a renewed service token.
        let mut retried = false;
        let response = loop {
            let mut outgoing = self.upstream_headers(route, headers);
            for (name, value) in &trace {
                if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
                {
                    outgoing.insert(name, value);
                }
            }
            if let Some(c) = &credential {
                outgoing.insert(http::header::AUTHORIZATION, c.header()?);
            }
            let request = upstream_request(Method::POST, uri, outgoing, body.clone());
            match self.send(route, request, session.as_deref(), first_id.clone()).await {
                Err(GatewayError::UpstreamRefused { status, challenge, id }) if !retried => {
                    retried = true;
                    // Boxed: rare, and its future would otherwise enlarge every call's.
                    credential = Some(
                        Box::pin(self.after_refusal(
                            route,
                            principal,
                            credential.as_ref(),
                            status,
                            challenge,
                            id,
                            url_elicitation,
                        ))
                        .await?,
                    );
                }
                other => break other.map_err(super::credentials::settle_refusal)?,
            }
        };
        let status = response.status();
        let mut session_id = None;
        if initialize && status.is_success() {
            let upstream_id = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if upstream_id.is_some() {
                let mut s = Session::new(&route.settings.name, principal, SessionUpstream::Http { upstream_id })
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                s.url_elicitation = url_elicitation;
                session_id = Some(s.id.clone());
                self.0.sessions.insert(Arc::new(s));
            }
        }
        self.relay(route, principal, response, lists, false, session_id, first_id).await
    }

    fn upstream_headers(&self, route: &Route, headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        for (name, value) in headers {
            if forwardable(name) {
                out.append(name.clone(), value.clone());
            }
        }
        for (name, value) in &route.headers {
            out.insert(name.clone(), value.clone());
        }
        out
    }

    /// Sends a request upstream within the route's timeout, with the upstream's own id of
    /// `session`; an upstream that no longer knows that session ends ours too (404).
    async fn send(
        &self,
        route: &Route,
        mut request: http::Request<Full<Bytes>>,
        session: Option<&Session>,
        id: Option<Value>,
    ) -> Result<http::Response<Incoming>, GatewayError> {
        if let Some(SessionUpstream::Http { upstream_id: Some(upstream_id) }) = session.map(|s| &s.upstream)
            && let Ok(value) = HeaderValue::from_str(upstream_id)
        {
            request.headers_mut().insert(SESSION_HEADER, value);
        }
        let seconds = route.settings.request_timeout.as_secs();
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(route.settings.request_timeout, self.0.upstream_http.request(request)).await;
        portcullis_telemetry::gateway_upstream_duration(&route.settings.name, started.elapsed().as_secs_f64());
        let response = match sent {
            Err(_) => return Err(GatewayError::UpstreamTimeout { seconds, id }),
            Ok(Err(e)) => return Err(GatewayError::UpstreamUnavailable { message: describe(&e), id }),
            Ok(Ok(r)) => r,
        };
        route.observed.answered();
        if response.status() == StatusCode::NOT_FOUND
            && let Some(s) = session
        {
            self.0.sessions.remove(&s.id);
            return Err(GatewayError::SessionNotFound);
        }
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // The upstream's challenge is about the gateway's credentials, not the client's:
            // passing it on would send the client to the wrong authorization server.
            let challenge = upstream_oauth::Challenge::from_headers(response.headers());
            return Err(GatewayError::UpstreamRefused { status, challenge, id });
        }
        Ok(response)
    }

    /// Passes an upstream response on: SSE event by event, JSON filtered when it answers a list.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &self,
        route: &Route,
        principal: &Principal,
        response: http::Response<Incoming>,
        lists: HashMap<String, ListKind>,
        by_shape: bool,
        session_id: Option<String>,
        id: Option<Value>,
    ) -> Result<Reply, GatewayError> {
        let (head, body) = response.into_parts();
        let status = head.status;
        if status == StatusCode::ACCEPTED {
            return Ok(Reply { session_id, ..Reply::accepted() });
        }
        let content_type = head.headers.get(http::header::CONTENT_TYPE).cloned();
        let media = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media == EVENT_STREAM {
            let body = filtered_event_stream(body, lists, by_shape, ListFilter::new(route, principal));
            return Ok(Reply { status: ReplyStatus::Upstream(status), content_type, session_id, body });
        }
        if media == "application/json" {
            // One JSON message: read it whole (bounded), so it goes on with a length in one
            // write, and so a list can be filtered.
            let seconds = route.settings.request_timeout.as_secs();
            let bytes = match tokio::time::timeout(route.settings.request_timeout, read_bounded(body)).await {
                Err(_) => return Err(GatewayError::UpstreamTimeout { seconds, id }),
                Ok(Err(message)) => return Err(GatewayError::UpstreamUnavailable { message, id }),
                Ok(Ok(b)) => b,
            };
            if lists.is_empty() && !by_shape {
                return Ok(Reply {
                    status: ReplyStatus::Upstream(status),
                    content_type,
                    session_id,
                    body: Body::from(bytes),
                });
            }
            let filter = ListFilter::new(route, principal);
            // The answer to one list request is filtered over its text; anything else is parsed.
            if let Some(text) = filter.apply_text(&bytes, &lists) {
                return Ok(Reply {
                    status: ReplyStatus::Upstream(status),
                    content_type,
                    session_id,
                    body: Body::from(text),
                });
            }
            let body = match serde_json::from_slice::<Value>(&bytes) {
                Ok(mut message) => {
                    filter.apply(&mut message, &lists, by_shape);
                    Body::from(serde_json::to_vec(&message).map_err(|e| GatewayError::Internal(e.to_string()))?)
                }
                // Not JSON after all: a list answer that cannot be filtered is not passed on.
                Err(_) => {
                    return Err(GatewayError::UpstreamUnavailable {
                        message: "it answered with a body that is not JSON".into(),
                        id,
                    });
                }
            };
            return Ok(Reply { status: ReplyStatus::Upstream(status), content_type, session_id, body });
        }
        Ok(Reply { status: ReplyStatus::Upstream(status), content_type, session_id, body: Body::new(body) })
    }

    /// The session's stream of server messages from a Streamable HTTP upstream (answers
    /// replayed on a resumed stream are filtered by their shape).
    pub(super) async fn listen_http(
        &self,
        route: &Route,
        principal: &Principal,
        headers: &HeaderMap,
        uri: &http::Uri,
        session: Option<&Session>,
    ) -> Result<Reply, GatewayError> {
        let url_elicitation = session.is_some_and(|s| s.url_elicitation);
        let mut outgoing = self.upstream_headers(route, headers);
        if let Some(c) = self.upstream_credential(route, principal, None, url_elicitation).await? {
            outgoing.insert(http::header::AUTHORIZATION, c.header()?);
        }
        let request = upstream_request(Method::GET, uri, outgoing, Bytes::new());
        let response = self.send(route, request, session, None).await.map_err(super::credentials::settle_refusal)?;
        self.relay(route, principal, response, HashMap::new(), true, None, None).await
    }

    /// Ends the upstream's own session, if it issued one. Without a usable credential the
    /// upstream's session simply expires there.
    pub(super) async fn end_http_session(
        &self,
        route: &Route,
        principal: &Principal,
        headers: &HeaderMap,
        uri: &http::Uri,
        session: &Session,
    ) {
        if !matches!(session.upstream, SessionUpstream::Http { upstream_id: Some(_) }) {
            return;
        }
        let mut outgoing = self.upstream_headers(route, headers);
        if let Ok(Some(c)) = self.upstream_credential(route, principal, None, false).await
            && let Ok(value) = c.header()
        {
            outgoing.insert(http::header::AUTHORIZATION, value);
        }
        let request = upstream_request(Method::DELETE, uri, outgoing, Bytes::new());
        if let Err(e) = self.send(route, request, Some(session), None).await {
            tracing::info!(route = %route.settings.name, error = %e, "the upstream did not confirm the end of a session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_names_a_port_only_when_it_is_not_the_default() {
        for (url, host) in [
            ("http://127.0.0.1:8080/mcp", "127.0.0.1:8080"),
            ("http://crm.internal/mcp", "crm.internal"),
            ("http://crm.internal:80/mcp", "crm.internal"),
            ("https://crm.example:443/mcp", "crm.example"),
            ("https://crm.example:8443/mcp", "crm.example:8443"),
            ("http://[::1]:9000/mcp", "[::1]:9000"),
        ] {
            let uri: http::Uri = url.parse().expect("a valid URL");
            assert_eq!(host_header(&uri).as_ref().and_then(|h| h.to_str().ok()), Some(host), "{url}");
        }
    }

    #[test]
    fn only_mcp_and_content_headers_are_forwarded() {
        for (name, forwarded) in [
            ("authorization", false),
            ("cookie", false),
            ("mcp-session-id", false),
            ("x-forwarded-for", false),
            ("host", false),
            ("mcp-protocol-version", true),
            ("mcp-param-region", true),
            ("accept", true),
            ("content-type", true),
            ("last-event-id", true),
        ] {
            assert_eq!(forwardable(&http::HeaderName::from_static(name)), forwarded, "{name}");
        }
    }
}
