//! The data path: decide each message, then forward it to the route's upstream and filter
//! what comes back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use portcullis_authz::{Decision, DenyReason, Operation, Policy};
use portcullis_telemetry::{Refusal, UpstreamError};
use portcullis_types::ScopeSet;
use serde_json::Value;
use sse_stream::{Sse, SseBody, SseByteStream};
use tracing::Instrument as _;

use crate::auth::Principal;
use crate::channel::{self, ChannelSession, Delivery};
use crate::filter::{ListKind, filter_list_response};
use crate::jsonrpc::{self, Kind};
use crate::observed::Observed;
use crate::sessions::{Session, SessionUpstream};
use crate::vault::Credential;
use crate::{
    Decided, Gateway, GatewayError, Handled, Reply, ReplyStatus, Route, UpstreamAuth, UpstreamSettings, VaultError,
    upstream_oauth,
};

/// Protocol revisions the gateway speaks downstream.
pub const SUPPORTED_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];
/// From this revision on there are no sessions and mirrored headers are required.
const STATELESS_FROM: &str = "2026-07-28";

const SESSION_HEADER: &str = "mcp-session-id";
const EVENT_STREAM: &str = "text/event-stream";

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn protocol_version(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    match headers.get("mcp-protocol-version") {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| GatewayError::UnsupportedProtocolVersion("(not text)".into()))?;
            if SUPPORTED_VERSIONS.contains(&v) {
                Ok(Some(v))
            } else {
                Err(GatewayError::UnsupportedProtocolVersion(jsonrpc::excerpt(v, 32)))
            }
        }
    }
}

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers.get_all(http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|part| {
            let m = part.split(';').next().unwrap_or_default().trim();
            m.eq_ignore_ascii_case(media) || m == "*/*"
        })
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    header(headers, "content-type")
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// RFC 2047-style sentinel MCP uses for header values that are not plain ASCII.
fn decode_mirrored(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => {
            base64::engine::general_purpose::STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok())
        }
        None => Some(value.to_owned()),
    }
}

/// The operation a request asks for, and the name it names.
fn operation<'a>(method: &'a str, params: Option<&'a Value>) -> Result<(Operation<'a>, Option<&'a str>), String> {
    let field = |name: &str| params.and_then(|p| p.get(name)).and_then(Value::as_str);
    let need = |name: &'static str| {
        field(name).ok_or_else(|| format!("{} needs params.{name} as a string", jsonrpc::excerpt(method, 64)))
    };
    Ok(match method {
        "tools/call" => need("name").map(|n| (Operation::CallTool(n), Some(n)))?,
        "prompts/get" => need("name").map(|n| (Operation::GetPrompt(n), Some(n)))?,
        "resources/read" => need("uri").map(|u| (Operation::ReadResource(u), Some(u)))?,
        "resources/subscribe" => need("uri").map(|u| (Operation::SubscribeResource(u), Some(u)))?,
        "completion/complete" => {
            let reference = params.and_then(|p| p.get("ref"));
            let get = |name: &str| reference.and_then(|r| r.get(name)).and_then(Value::as_str);
            match get("type") {
                Some("ref/prompt") => get("name").map(|n| (Operation::GetPrompt(n), Some(n))),
                Some("ref/resource") => get("uri").map(|u| (Operation::ReadResource(u), Some(u))),
                _ => None,
            }
            .ok_or_else(|| "completion/complete needs params.ref naming a prompt or a resource".to_owned())?
        }
        other => (Operation::Method(other), None),
    })
}

/// Whether client capabilities declare URL-mode elicitation (`elicitation.url`, 2025-11-25).
fn declares_url_elicitation(capabilities: Option<&Value>) -> bool {
    capabilities.and_then(|c| c.get("elicitation")).and_then(|e| e.get("url")).is_some_and(Value::is_object)
}

/// The capabilities a message's client declares: at `initialize`, or (2026-07-28, no
/// sessions) in each request's `_meta`.
fn declared_capabilities(message: &Value) -> Option<&Value> {
    let params = message.get("params")?;
    params
        .get("capabilities")
        .or_else(|| params.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities")))
}

/// The name mirrored in `Mcp-Name` for a method, if it has one.
fn mirrored_name<'a>(method: &str, params: Option<&'a Value>) -> Option<&'a str> {
    let member = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" => "uri",
        _ => return None,
    };
    params.and_then(|p| p.get(member)).and_then(Value::as_str)
}

/// Headers that describe the body must describe this body.
fn check_mirrored_headers(
    headers: &HeaderMap,
    message: &Value,
    kind: &Kind,
    batch: bool,
    stateless: bool,
    version: Option<&str>,
) -> Result<(), GatewayError> {
    let method_header = header(headers, "mcp-method");
    let name_header = header(headers, "mcp-name").map(decode_mirrored);
    if batch {
        if method_header.is_some() || name_header.is_some() {
            return Err(GatewayError::HeaderMismatch("Mcp-Method and Mcp-Name cannot describe a batch".into()));
        }
        return Ok(());
    }
    let method = match kind {
        Kind::Request { method, .. } | Kind::Notification { method } => Some(method.as_str()),
        Kind::Response { .. } => None,
    };
    let params = message.get("params");
    let name = method.and_then(|m| mirrored_name(m, params));
    if stateless && method.is_some() && method_header.is_none() {
        return Err(GatewayError::HeaderMismatch("the Mcp-Method header is required".into()));
    }
    if stateless && name.is_some() && name_header.is_none() {
        return Err(GatewayError::HeaderMismatch("the Mcp-Name header is required".into()));
    }
    if let Some(h) = method_header
        && Some(h) != method
    {
        return Err(GatewayError::HeaderMismatch(format!(
            "the Mcp-Method header {:?} does not match the body's method {:?}",
            jsonrpc::excerpt(h, 64),
            jsonrpc::excerpt(method.unwrap_or("(none)"), 64)
        )));
    }
    if let Some(h) = name_header
        && h.as_deref() != name
    {
        return Err(GatewayError::HeaderMismatch(format!(
            "the Mcp-Name header does not match the body's {:?}",
            jsonrpc::excerpt(name.unwrap_or("(none)"), 64)
        )));
    }
    if let (true, Some(version)) = (stateless, version) {
        let meta = params
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
            .and_then(Value::as_str);
        if meta.is_some_and(|m| m != version) {
            return Err(GatewayError::HeaderMismatch(
                "the MCP-Protocol-Version header does not match params._meta".into(),
            ));
        }
    }
    Ok(())
}

/// Which request-headers of the client go upstream: the MCP ones (unknown `Mcp-Param-*`
/// included) and content negotiation. Never `Authorization` or `Cookie`, never the client's
/// session id (the upstream's own is substituted).
fn forwardable(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    (n.starts_with("mcp-") && n != SESSION_HEADER) || matches!(n, "accept" | "content-type" | "last-event-id")
}

fn json_body(value: &Value) -> Body {
    Body::from(value.to_string())
}

fn json_reply(status: ReplyStatus, value: &Value, session_id: Option<String>) -> Reply {
    Reply {
        status,
        content_type: Some(HeaderValue::from_static("application/json")),
        session_id,
        body: json_body(value),
    }
}

fn accepted() -> Reply {
    Reply { status: ReplyStatus::Accepted, content_type: None, session_id: None, body: Body::empty() }
}

/// What a decided POST carries forward.
struct Forward {
    /// List requests by id, so their answers can be filtered.
    lists: HashMap<String, ListKind>,
    request_ids: Vec<Value>,
    initialize: bool,
    /// The client can be asked to open a URL (MCP URL-mode elicitation).
    url_elicitation: bool,
    /// `traceparent`/`tracestate` naming the gateway's upstream span (empty when traces are
    /// off): sent as headers to HTTP upstreams (and in `_meta`, already in the messages).
    trace: Vec<(String, String)>,
}

/// What filtering one caller's list answers on a route needs: the route's policy, the
/// caller's scopes, and where the names the upstream offered are noted.
#[derive(Clone)]
struct ListFilter {
    policy: Arc<Policy>,
    scopes: ScopeSet,
    observed: Arc<Observed>,
}

impl ListFilter {
    fn new(route: &Route, principal: &Principal) -> Self {
        Self {
            policy: Arc::clone(&route.settings.policy),
            scopes: principal.scopes.clone(),
            observed: Arc::clone(&route.observed),
        }
    }

    /// Removes what the policy would not allow from one message or a batch of them.
    fn apply(&self, message: &mut Value, lists: &HashMap<String, ListKind>, by_shape: bool) -> bool {
        if let Value::Array(items) = message {
            let mut changed = false;
            for item in items {
                changed |= self.apply(item, lists, by_shape);
            }
            return changed;
        }
        let Ok(Kind::Response { id }) = jsonrpc::classify(message) else { return false };
        let kind = lists
            .get(&jsonrpc::id_key(&id))
            .copied()
            .or_else(|| if by_shape { message.get("result").and_then(ListKind::from_shape) } else { None });
        let Some(kind) = kind else { return false };
        if let Some(items) = message.get("result").and_then(|r| r.get(kind.members().0)).and_then(Value::as_array) {
            self.observed.listed(kind, items);
        }
        filter_list_response(message, kind, &self.policy, &self.scopes) > 0
    }
}

/// An SSE body whose events are passed on one by one as they arrive, list results filtered.
fn filtered_event_stream(
    upstream: reqwest::Response,
    lists: HashMap<String, ListKind>,
    by_shape: bool,
    filter: ListFilter,
) -> Body {
    let events = SseByteStream::new(upstream.bytes_stream()).map(move |event| {
        event.map(|mut event| {
            if let Some(data) = event.data.as_deref()
                && let Ok(mut message) = serde_json::from_str::<Value>(data)
                && filter.apply(&mut message, &lists, by_shape)
            {
                event.data = Some(message.to_string());
            }
            event
        })
    });
    Body::new(SseBody::new(events))
}

/// The most an upstream's JSON answer may hold.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

async fn read_bounded(mut response: reqwest::Response) -> Result<Bytes, String> {
    let mut buffer = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if buffer.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("its answer is larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "the connection was refused or could not be made".to_owned()
    } else if e.is_timeout() {
        "the request timed out".to_owned()
    } else {
        e.to_string()
    }
}

impl Gateway {
    fn route_of(&self, name: &str) -> Result<Arc<Route>, GatewayError> {
        self.0.routing().routes.get(name).cloned().ok_or(GatewayError::SessionNotFound)
    }

    /// Handles a POST: one JSON-RPC message, or a 2025-03-26 batch.
    pub async fn post(&self, route: &str, principal: &Principal, headers: &HeaderMap, body: Bytes) -> Handled {
        let mut decisions = Vec::new();
        let reply = self.post_inner(route, principal, headers, body, &mut decisions).await;
        if let Err(e) = &reply {
            self.note_failure(route, e);
        }
        Handled { reply: reply.map(|r| self.guarded(principal, r)), decisions }
    }

    /// Notes on the route's health an error that says its upstream failed.
    fn note_failure(&self, route: &str, e: &GatewayError) {
        let (why, kind) = match e {
            GatewayError::UpstreamUnavailable { message, .. } => (message.clone(), UpstreamError::Unavailable),
            GatewayError::UpstreamTimeout { seconds, .. } => {
                (format!("did not answer within {seconds} s"), UpstreamError::Timeout)
            }
            GatewayError::UpstreamRefused { .. } => {
                portcullis_telemetry::upstream_error(route, UpstreamError::Refused);
                return;
            }
            _ => return,
        };
        portcullis_telemetry::upstream_error(route, kind);
        if let Some(route) = self.0.routing().routes.get(route) {
            route.observed.failed(&why);
        }
    }

    async fn post_inner(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
        body: Bytes,
        decisions: &mut Vec<Decided>,
    ) -> Result<Reply, GatewayError> {
        let route = &*self.route_of(route_name)?;
        let version = protocol_version(headers)?;
        let stateless = version.is_some_and(|v| v >= STATELESS_FROM);
        if !accepts(headers, "application/json") && !accepts(headers, EVENT_STREAM) {
            return Err(GatewayError::NotAcceptable);
        }
        if !is_json(headers) {
            return Err(GatewayError::UnsupportedMediaType);
        }
        let parsed = jsonrpc::parse_strict(&body).map_err(|e| GatewayError::InvalidMessage {
            code: jsonrpc::PARSE_ERROR,
            message: format!("the body is not valid JSON: {e}"),
            id: None,
        })?;
        let (messages, batch) = match parsed {
            Value::Array(items) => (items, true),
            other => (vec![other], false),
        };
        let invalid = |message: String, id: Option<&Value>| GatewayError::InvalidMessage {
            code: jsonrpc::INVALID_REQUEST,
            message,
            id: id.cloned(),
        };
        if batch {
            if messages.is_empty() {
                return Err(invalid("an empty batch is not a request".into(), None));
            }
            if version.is_some_and(|v| v != "2025-03-26") {
                return Err(invalid("JSON-RPC batches exist only in protocol revision 2025-03-26".into(), None));
            }
        }
        let mut kinds = Vec::with_capacity(messages.len());
        for m in &messages {
            kinds.push(jsonrpc::classify(m).map_err(|e| invalid(e.to_owned(), jsonrpc::echoable_id(m.get("id"))))?);
        }
        if batch && kinds.iter().any(|k| matches!(k, Kind::Request { method, .. } if method == "initialize")) {
            return Err(invalid("initialize must not be part of a batch".into(), None));
        }
        if stateless && kinds.iter().any(|k| matches!(k, Kind::Response { .. })) {
            return Err(invalid("clients of protocol 2026-07-28 send no JSON-RPC responses".into(), None));
        }
        if let (false, Some(m), Some(k)) = (batch, messages.first(), kinds.first()) {
            check_mirrored_headers(headers, m, k, false, stateless, version)?;
        } else if batch {
            check_mirrored_headers(
                headers,
                &Value::Null,
                &Kind::Notification { method: String::new() },
                true,
                false,
                None,
            )?;
        }

        // Decide every message before anything is forwarded.
        let deciding = portcullis_telemetry::span!("decide", messages = messages.len()).entered();
        let mut needed = ScopeSet::new();
        let mut refusals: Vec<(Option<Value>, i64, String)> = Vec::new();
        let mut lists = HashMap::new();
        let mut request_ids = Vec::new();
        for (message, kind) in messages.iter().zip(&kinds) {
            let (method, id) = match kind {
                Kind::Request { id, method } => (method.as_str(), Some(id)),
                Kind::Notification { method } => (method.as_str(), None),
                Kind::Response { .. } => continue,
            };
            if let Some(id) = id {
                request_ids.push(id.clone());
            }
            let (op, target) = operation(method, message.get("params")).map_err(|message| {
                GatewayError::InvalidMessage { code: jsonrpc::INVALID_PARAMS, message, id: id.cloned() }
            })?;
            let decision = route.settings.policy.decide(&principal.scopes, op);
            let (allowed, reason) = match &decision {
                Decision::Allow => (true, None),
                Decision::Deny { reason: DenyReason::InsufficientScope, required } => {
                    needed = needed.union(required);
                    (false, Some(format!("insufficient_scope: needs {required}")))
                }
                Decision::Deny { reason: DenyReason::Unmapped, .. } => {
                    let what =
                        if target.is_some() { "not mapped by the policy" } else { "method not allowed by the policy" };
                    let code = match op {
                        Operation::Method(_) => jsonrpc::METHOD_NOT_FOUND,
                        Operation::ReadResource(_) | Operation::SubscribeResource(_) => jsonrpc::RESOURCE_NOT_FOUND,
                        _ => jsonrpc::INVALID_PARAMS,
                    };
                    refusals.push((
                        id.cloned(),
                        code,
                        format!(
                            "{} {:?} is not available through this gateway",
                            describe_op(op),
                            jsonrpc::excerpt(target.unwrap_or(method), 128)
                        ),
                    ));
                    (false, Some(what.to_owned()))
                }
                Decision::Deny { reason: DenyReason::Confusable { mapped }, .. } => {
                    let code = if matches!(op, Operation::Method(_)) {
                        jsonrpc::METHOD_NOT_FOUND
                    } else {
                        jsonrpc::INVALID_PARAMS
                    };
                    refusals.push((
                        id.cloned(),
                        code,
                        format!(
                            "{} {:?} is not available through this gateway",
                            describe_op(op),
                            jsonrpc::excerpt(target.unwrap_or(method), 128)
                        ),
                    ));
                    (false, Some(format!("looks like {mapped:?} but is not")))
                }
            };
            let denial = match &decision {
                Decision::Allow => None,
                Decision::Deny { reason: DenyReason::InsufficientScope, .. } => Some(Refusal::InsufficientScope),
                Decision::Deny { reason: DenyReason::Unmapped, .. } => Some(Refusal::NotMapped),
                Decision::Deny { reason: DenyReason::Confusable { .. }, .. } => Some(Refusal::Confusable),
            };
            decisions.push(Decided {
                method: method.to_owned(),
                target: target.map(str::to_owned),
                allowed,
                reason,
                denial,
            });
            if let (true, Some(kind), Some(id)) = (allowed, ListKind::for_method(method), id) {
                lists.insert(jsonrpc::id_key(id), kind);
            }
        }
        drop(deciding);
        if !needed.is_empty() {
            let id = if batch { None } else { request_ids.first().cloned() };
            let route_scopes = route.settings.policy.all_scopes();
            let mut challenge = needed.clone();
            for held in principal.scopes.iter().filter(|s| route_scopes.contains(s.as_str())) {
                challenge.insert(held.clone());
            }
            return Err(GatewayError::InsufficientScope { required: needed, challenge, id });
        }
        if !refusals.is_empty() {
            return Ok(refusal_reply(batch, &kinds, refusals));
        }
        let initialize =
            !batch && matches!(kinds.first(), Some(Kind::Request { method, .. }) if method == "initialize");
        let session = if stateless { None } else { self.presented_session(headers, route_name, principal)? };
        if initialize && session.is_some() {
            return Err(invalid(
                "initialize starts a new session; send it without Mcp-Session-Id".into(),
                request_ids.first(),
            ));
        }
        let url_elicitation = match (&session, batch) {
            (Some(s), _) => s.url_elicitation,
            (None, false) => declares_url_elicitation(messages.first().and_then(declared_capabilities)),
            (None, true) => false,
        };
        let upstream = portcullis_telemetry::span!("upstream", route = %route_name);
        let trace = portcullis_telemetry::propagation(&upstream);
        let mut messages = messages;
        portcullis_telemetry::into_meta(&mut messages, &trace);
        let forward = Forward { lists, request_ids, initialize, url_elicitation, trace };
        let outgoing = if batch { Value::Array(messages) } else { messages.into_iter().next().unwrap_or(Value::Null) };
        match &route.settings.upstream {
            UpstreamSettings::StreamableHttp { url } => {
                // Bytes, so that a retry after a refresh resends it without a copy.
                let body = Bytes::from(outgoing.to_string());
                self.forward_http(route, principal, headers, url, body, session, forward).instrument(upstream).await
            }
            UpstreamSettings::Stdio(_) | UpstreamSettings::LegacySse { .. } => {
                if stateless {
                    return Err(GatewayError::UnsupportedProtocolVersion(format!(
                        "{} (route {route_name:?} bridges a session-based upstream; use 2025-11-25 or earlier)",
                        version.unwrap_or_default()
                    )));
                }
                let outgoing = match outgoing {
                    Value::Array(items) => items,
                    one => vec![one],
                };
                self.forward_channel(route, principal, headers, outgoing, session, forward).instrument(upstream).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward_http(
        &self,
        route: &Route,
        principal: &Principal,
        headers: &HeaderMap,
        url: &url::Url,
        body: Bytes,
        session: Option<Arc<Session>>,
        forward: Forward,
    ) -> Result<Reply, GatewayError> {
        let first_id = forward.request_ids.first().cloned();
        let mut credential =
            self.upstream_credential(route, principal, first_id.as_ref(), forward.url_elicitation).await?;
        // At most one retry: after a refresh, or with a renewed service token.
        let mut retried = false;
        let response = loop {
            let mut outgoing = self.upstream_headers(route, headers);
            for (name, value) in &forward.trace {
                if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
                {
                    outgoing.insert(name, value);
                }
            }
            if let Some(c) = &credential {
                outgoing.insert(http::header::AUTHORIZATION, c.header()?);
            }
            let request = self.0.upstream_http.post(url.clone()).headers(outgoing).body(body.clone());
            match self.send(route, request, session.as_deref(), first_id.clone()).await {
                Err(GatewayError::UpstreamRefused { status, challenge, id }) if !retried => {
                    retried = true;
                    credential = Some(
                        self.after_refusal(
                            route,
                            principal,
                            credential.as_ref(),
                            status,
                            challenge,
                            id,
                            forward.url_elicitation,
                        )
                        .await?,
                    );
                }
                other => break other.map_err(settle_refusal)?,
            }
        };
        let status = response.status();
        let mut session_id = None;
        if forward.initialize && status.is_success() {
            let upstream_id = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if upstream_id.is_some() {
                let mut s = Session::new(&route.settings.name, principal, SessionUpstream::Http { upstream_id })
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                s.url_elicitation = forward.url_elicitation;
                session_id = Some(s.id.clone());
                self.0.sessions.insert(Arc::new(s));
            }
        }
        self.relay(route, principal, response, forward.lists, false, session_id, first_id).await
    }

    /// The user this principal speaks for, on a route that acts as each user.
    fn user_of<'p>(route: &Route, principal: &'p Principal, id: Option<&Value>) -> Result<&'p str, GatewayError> {
        match (&principal.grant_id, principal.subject.as_deref()) {
            (Some(_), Some(user_id)) => Ok(user_id),
            _ => Err(GatewayError::UserRequired { route: route.settings.name.clone(), id: id.cloned() }),
        }
    }

    /// What the gateway presents upstream besides the configured headers: the user's own token
    /// or the gateway's, per the route's `upstream_auth`.
    async fn upstream_credential(
        &self,
        route: &Route,
        principal: &Principal,
        id: Option<&Value>,
        url_elicitation: bool,
    ) -> Result<Option<Credential>, GatewayError> {
        let name = &route.settings.name;
        let unavailable = |e: VaultError| GatewayError::UpstreamUnavailable { message: e.to_string(), id: id.cloned() };
        match &route.settings.upstream_auth {
            UpstreamAuth::Static => Ok(None),
            UpstreamAuth::ClientCredentials(client) => {
                self.0.vault.service_token(name, client, None).await.map(Some).map_err(unavailable)
            }
            UpstreamAuth::User(client) => {
                let user_id = Self::user_of(route, principal, id)?;
                match self.0.vault.user_token(name, client, user_id).await.map_err(unavailable)? {
                    Some(credential) => Ok(Some(credential)),
                    None => Err(self.connection_required(route, user_id, None, id, url_elicitation)),
                }
            }
        }
    }

    /// The upstream refused what the gateway presented: refresh (or renew the service token)
    /// once; on a 403 that asks for more scope, ask the user to grant it.
    #[allow(clippy::too_many_arguments)]
    async fn after_refusal(
        &self,
        route: &Route,
        principal: &Principal,
        presented: Option<&Credential>,
        status: StatusCode,
        challenge: Option<upstream_oauth::Challenge>,
        id: Option<Value>,
        url_elicitation: bool,
    ) -> Result<Credential, GatewayError> {
        let name = &route.settings.name;
        let unavailable = |e: VaultError| GatewayError::UpstreamUnavailable { message: e.to_string(), id: id.clone() };
        let refused = || GatewayError::UpstreamUnavailable {
            message: format!("it refused the gateway's own credentials ({status})"),
            id: id.clone(),
        };
        match &route.settings.upstream_auth {
            UpstreamAuth::Static => Err(refused()),
            UpstreamAuth::ClientCredentials(client) => {
                let stale = presented.map(|c| c.access_token.as_str());
                self.0.vault.service_token(name, client, stale).await.map_err(unavailable)
            }
            UpstreamAuth::User(client) => {
                let user_id = Self::user_of(route, principal, id.as_ref())?;
                if status == StatusCode::UNAUTHORIZED {
                    // A refused token may mean the upstream changed authorization servers.
                    client.forget_discovery();
                }
                if status == StatusCode::FORBIDDEN {
                    let Some(c) = challenge.filter(upstream_oauth::Challenge::is_insufficient_scope) else {
                        return Err(refused());
                    };
                    // Asking the user again for what their account already granted would loop.
                    let scope = c.scope.as_deref().unwrap_or_default();
                    if self.0.vault.already_granted(name, user_id, scope).await.map_err(unavailable)? {
                        return Err(GatewayError::UpstreamUnavailable {
                            message: format!(
                                "it asks for scope {scope:?}, which your account there already granted; not asking again"
                            ),
                            id: id.clone(),
                        });
                    }
                    // Step-up: the user grants the upstream more, in the browser.
                    return Err(self.connection_required(
                        route,
                        user_id,
                        c.scope.as_deref(),
                        id.as_ref(),
                        url_elicitation,
                    ));
                }
                let stale = presented.map(|c| c.access_token.as_str()).unwrap_or_default();
                match self.0.vault.refresh(name, client, user_id, stale).await.map_err(unavailable)? {
                    Some(credential) => Ok(credential),
                    None => Err(self.connection_required(route, user_id, None, id.as_ref(), url_elicitation)),
                }
            }
        }
    }

    /// Asks the user to connect (or grant more): MCP URL-mode elicitation where the client
    /// declared it, else a JSON-RPC error carrying the URL.
    fn connection_required(
        &self,
        route: &Route,
        user_id: &str,
        scope: Option<&str>,
        id: Option<&Value>,
        url_elicitation: bool,
    ) -> GatewayError {
        let name = &route.settings.name;
        let url = self.connect_url(name, user_id, scope);
        let message = match scope {
            Some(scope) => format!(
                "The {name} server needs more access from your account there ({scope}). Open {url} to grant it, then try again."
            ),
            None => format!("Connect your {name} account first: open {url}, then try again."),
        };
        let elicitation_id = url_elicitation.then(|| portcullis_crypto::random_token(16).unwrap_or_default());
        GatewayError::ConnectionRequired { message, url, elicitation_id, id: id.cloned() }
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

    /// The session the request names, if it names one (sessions exist before 2026-07-28 only).
    fn presented_session(
        &self,
        headers: &HeaderMap,
        route_name: &str,
        principal: &Principal,
    ) -> Result<Option<Arc<Session>>, GatewayError> {
        match header(headers, SESSION_HEADER) {
            Some(id) => self.0.sessions.find(id, route_name, principal).map(Some).ok_or(GatewayError::SessionNotFound),
            None => Ok(None),
        }
    }

    /// Sends a request upstream within the route's timeout, with the upstream's own id of
    /// `session`; an upstream that no longer knows that session ends ours too (404).
    async fn send(
        &self,
        route: &Route,
        mut request: reqwest::RequestBuilder,
        session: Option<&Session>,
        id: Option<Value>,
    ) -> Result<reqwest::Response, GatewayError> {
        if let Some(SessionUpstream::Http { upstream_id: Some(upstream_id) }) = session.map(|s| &s.upstream) {
            request = request.header(SESSION_HEADER, upstream_id);
        }
        let seconds = route.settings.request_timeout.as_secs();
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(route.settings.request_timeout, request.send()).await;
        portcullis_telemetry::gateway_upstream_duration(&route.settings.name, started.elapsed().as_secs_f64());
        let response = match sent {
            Err(_) => return Err(GatewayError::UpstreamTimeout { seconds, id }),
            Ok(Err(e)) if e.is_timeout() => return Err(GatewayError::UpstreamTimeout { seconds, id }),
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
        response: reqwest::Response,
        lists: HashMap<String, ListKind>,
        by_shape: bool,
        session_id: Option<String>,
        id: Option<Value>,
    ) -> Result<Reply, GatewayError> {
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return Ok(Reply { session_id, ..accepted() });
        }
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let media = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media == EVENT_STREAM {
            let body = filtered_event_stream(response, lists, by_shape, ListFilter::new(route, principal));
            return Ok(Reply { status: ReplyStatus::Upstream(status), content_type, session_id, body });
        }
        if media == "application/json" {
            // One JSON message: read it whole (bounded), so it goes on with a length in one
            // write, and so a list can be filtered.
            let seconds = route.settings.request_timeout.as_secs();
            let bytes = match tokio::time::timeout(route.settings.request_timeout, read_bounded(response)).await {
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
            let body = match serde_json::from_slice::<Value>(&bytes) {
                Ok(mut message) => {
                    ListFilter::new(route, principal).apply(&mut message, &lists, by_shape);
                    Body::from(message.to_string())
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
        Ok(Reply {
            status: ReplyStatus::Upstream(status),
            content_type,
            session_id,
            body: Body::from_stream(response.bytes_stream()),
        })
    }

    async fn forward_channel(
        &self,
        route: &Route,
        principal: &Principal,
        headers: &HeaderMap,
        messages: Vec<Value>,
        session: Option<Arc<Session>>,
        forward: Forward,
    ) -> Result<Reply, GatewayError> {
        let first_id = forward.request_ids.first().cloned();
        let (session, created) = match session {
            Some(s) => (s, false),
            None if forward.initialize => (self.open_channel_session(route, principal, first_id.clone()).await?, true),
            None => return Err(GatewayError::SessionRequired),
        };
        let SessionUpstream::Channel(channel) = &session.upstream else {
            return Err(GatewayError::Internal("a channel route holds an HTTP session".into()));
        };
        let wants_events = accepts(headers, EVENT_STREAM) && !forward.initialize;
        let lines: Vec<String> = messages.iter().map(Value::to_string).collect();
        let started = std::time::Instant::now();
        let mut answers = match channel.send(lines, &forward.request_ids, wants_events).await {
            Ok(a) => {
                route.observed.answered();
                a
            }
            Err(reason) => {
                self.0.sessions.remove(&session.id);
                return Err(GatewayError::UpstreamUnavailable { message: reason, id: first_id });
            }
        };
        if forward.request_ids.is_empty() {
            return Ok(accepted());
        }
        let session_id = created.then(|| session.id.clone());
        let timeout = route.settings.request_timeout;
        let filter = ListFilter::new(route, principal);
        let mut remaining: HashSet<String> = forward.request_ids.iter().map(jsonrpc::id_key).collect();
        if !wants_events {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut collected = Vec::new();
            while !remaining.is_empty() {
                match tokio::time::timeout_at(deadline, answers.next()).await {
                    Ok(Some(Delivery::Message(mut m))) => {
                        if let Ok(Kind::Response { id }) = jsonrpc::classify(&m)
                            && remaining.remove(&jsonrpc::id_key(&id))
                        {
                            filter.apply(&mut m, &forward.lists, false);
                            collected.push(m);
                        }
                    }
                    Ok(Some(Delivery::Closed(reason))) => {
                        self.0.sessions.remove(&session.id);
                        return Err(GatewayError::UpstreamUnavailable { message: reason, id: first_id });
                    }
                    Ok(None) => {
                        self.0.sessions.remove(&session.id);
                        return Err(GatewayError::UpstreamUnavailable {
                            message: "the upstream has stopped".into(),
                            id: first_id,
                        });
                    }
                    Err(_) => {
                        return Err(GatewayError::UpstreamTimeout { seconds: timeout.as_secs(), id: first_id });
                    }
                }
            }
            portcullis_telemetry::gateway_upstream_duration(&route.settings.name, started.elapsed().as_secs_f64());
            let body = if collected.len() == 1 && forward.request_ids.len() == 1 {
                collected.remove(0)
            } else {
                Value::Array(collected)
            };
            return Ok(json_reply(ReplyStatus::Ok, &body, session_id));
        }

        // An event stream: server messages and answers as they come, then the end. The
        // upstream's share counted is what it took to accept the messages.
        portcullis_telemetry::gateway_upstream_duration(&route.settings.name, started.elapsed().as_secs_f64());
        struct State {
            answers: channel::PostStream,
            remaining: HashSet<String>,
            deadline: tokio::time::Instant,
            lists: HashMap<String, ListKind>,
            filter: ListFilter,
            seconds: u64,
            gateway: Gateway,
            session_id: String,
            pending_errors: Vec<Value>,
        }
        let state = State {
            answers,
            remaining,
            deadline: tokio::time::Instant::now() + timeout,
            lists: forward.lists,
            filter,
            seconds: timeout.as_secs(),
            gateway: self.clone(),
            session_id: session.id.clone(),
            pending_errors: Vec::new(),
        };
        let events = futures_util::stream::unfold(state, |mut st| async move {
            if let Some(e) = st.pending_errors.pop() {
                return Some((
                    Ok::<_, std::convert::Infallible>(Sse::default().event("message").data(e.to_string())),
                    st,
                ));
            }
            if st.remaining.is_empty() {
                return None;
            }
            let fail_all = |st: &mut State, code: i64, message: &str| {
                let ids: Vec<String> = st.remaining.drain().collect();
                st.pending_errors = ids
                    .iter()
                    .filter_map(|k| serde_json::from_str::<Value>(k).ok())
                    .map(|id| jsonrpc::error_response(Some(&id), code, message))
                    .collect();
            };
            match tokio::time::timeout_at(st.deadline, st.answers.next()).await {
                Ok(Some(Delivery::Message(mut m))) => {
                    if let Ok(Kind::Response { id }) = jsonrpc::classify(&m) {
                        st.remaining.remove(&jsonrpc::id_key(&id));
                        st.filter.apply(&mut m, &st.lists, false);
                    }
                    Some((Ok(Sse::default().event("message").data(m.to_string())), st))
                }
                Ok(Some(Delivery::Closed(reason))) => {
                    st.gateway.0.sessions.remove(&st.session_id);
                    fail_all(
                        &mut st,
                        jsonrpc::UPSTREAM_ERROR,
                        &format!("the upstream MCP server is unavailable: {reason}"),
                    );
                    let first = st.pending_errors.pop()?;
                    Some((Ok(Sse::default().event("message").data(first.to_string())), st))
                }
                Ok(None) => None,
                Err(_) => {
                    let message = format!("the upstream MCP server did not answer within {} s", st.seconds);
                    fail_all(&mut st, jsonrpc::REQUEST_TIMEOUT, &message);
                    let first = st.pending_errors.pop()?;
                    Some((Ok(Sse::default().event("message").data(first.to_string())), st))
                }
            }
        });
        Ok(Reply {
            status: ReplyStatus::Ok,
            content_type: Some(HeaderValue::from_static(EVENT_STREAM)),
            session_id,
            body: Body::new(SseBody::new(events)),
        })
    }

    /// Handles a GET: the session's stream of server messages.
    pub async fn get(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<Reply, GatewayError> {
        let reply =
            self.get_inner(route_name, principal, headers).await.inspect_err(|e| self.note_failure(route_name, e))?;
        Ok(self.guarded(principal, reply))
    }

    async fn get_inner(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<Reply, GatewayError> {
        let route = &*self.route_of(route_name)?;
        if protocol_version(headers)?.is_some_and(|v| v >= STATELESS_FROM) {
            return Err(GatewayError::MethodNotAllowed("protocol 2026-07-28 has no GET stream"));
        }
        if !accepts(headers, EVENT_STREAM) {
            return Err(GatewayError::NotAcceptable);
        }
        let session = self.presented_session(headers, route_name, principal)?;
        match &route.settings.upstream {
            UpstreamSettings::StreamableHttp { url } => {
                let url_elicitation = session.as_ref().is_some_and(|s| s.url_elicitation);
                let mut outgoing = self.upstream_headers(route, headers);
                if let Some(c) = self.upstream_credential(route, principal, None, url_elicitation).await? {
                    outgoing.insert(http::header::AUTHORIZATION, c.header()?);
                }
                let request = self.0.upstream_http.get(url.clone()).headers(outgoing);
                let response = self.send(route, request, session.as_deref(), None).await.map_err(settle_refusal)?;
                // Answers replayed on a resumed stream are filtered by their shape.
                self.relay(route, principal, response, HashMap::new(), true, None, None).await
            }
            UpstreamSettings::Stdio(_) | UpstreamSettings::LegacySse { .. } => {
                let session = session.ok_or(GatewayError::SessionRequired)?;
                let SessionUpstream::Channel(channel) = &session.upstream else {
                    return Err(GatewayError::Internal("a channel route holds an HTTP session".into()));
                };
                let (backlog, receiver) = channel.attach_get_stream().map_err(|message| {
                    self.0.sessions.remove(&session.id);
                    GatewayError::UpstreamUnavailable { message, id: None }
                })?;
                let filter = ListFilter::new(route, principal);
                let lists = HashMap::new();
                let backlog = futures_util::stream::iter(backlog.into_iter().map(Delivery::Message));
                let live = futures_util::stream::unfold(receiver, |mut rx| async move {
                    match rx.recv().await {
                        Some(Delivery::Message(m)) => Some((Delivery::Message(m), rx)),
                        Some(Delivery::Closed(_)) | None => None,
                    }
                });
                let events = backlog.chain(live).map(move |delivery| {
                    let Delivery::Message(mut m) = delivery else {
                        return Ok::<_, std::convert::Infallible>(Sse::default().event("message").data("{}"));
                    };
                    filter.apply(&mut m, &lists, true);
                    Ok(Sse::default().event("message").data(m.to_string()))
                });
                Ok(Reply {
                    status: ReplyStatus::Ok,
                    content_type: Some(HeaderValue::from_static(EVENT_STREAM)),
                    session_id: None,
                    body: Body::new(SseBody::new(events)),
                })
            }
        }
    }

    /// Handles a DELETE: ends the caller's session (and its stdio child).
    pub async fn delete(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<Reply, GatewayError> {
        let route = &*self.route_of(route_name)?;
        if protocol_version(headers)?.is_some_and(|v| v >= STATELESS_FROM) {
            return Err(GatewayError::MethodNotAllowed("protocol 2026-07-28 has no sessions to end"));
        }
        let id = header(headers, SESSION_HEADER).ok_or(GatewayError::SessionRequired)?;
        let session = self.0.sessions.find(id, route_name, principal).ok_or(GatewayError::SessionNotFound)?;
        self.0.sessions.remove(&session.id);
        if let (UpstreamSettings::StreamableHttp { url }, SessionUpstream::Http { upstream_id: Some(_) }) =
            (&route.settings.upstream, &session.upstream)
        {
            let mut outgoing = self.upstream_headers(route, headers);
            // Without a usable credential the upstream's session simply expires there.
            if let Ok(Some(c)) = self.upstream_credential(route, principal, None, false).await
                && let Ok(value) = c.header()
            {
                outgoing.insert(http::header::AUTHORIZATION, value);
            }
            let request = self.0.upstream_http.delete(url.clone()).headers(outgoing);
            if let Err(e) = self.send(route, request, Some(&session), None).await {
                tracing::info!(route = route_name, error = %e, "the upstream did not confirm the end of a session");
            }
        }
        Ok(Reply { status: ReplyStatus::Ended, content_type: None, session_id: None, body: Body::empty() })
    }

    async fn open_channel_session(
        &self,
        route: &Route,
        principal: &Principal,
        id: Option<Value>,
    ) -> Result<Arc<Session>, GatewayError> {
        let permit = route.slots.clone().try_acquire_owned().map_err(|_| GatewayError::TooManySessions)?;
        let channel = match &route.settings.upstream {
            UpstreamSettings::Stdio(command) => channel::spawn_stdio(command, &route.settings.name),
            UpstreamSettings::LegacySse { url } => {
                channel::connect_legacy_sse(&self.0.upstream_http, url, &route.headers, route.settings.connect_timeout)
                    .await
            }
            UpstreamSettings::StreamableHttp { .. } => {
                return Err(GatewayError::Internal("an HTTP route has no channel".into()));
            }
        }
        .map_err(|e| {
            tracing::warn!(route = %route.settings.name, error = %e, "upstream could not be started");
            GatewayError::UpstreamUnavailable { message: e.to_string(), id }
        })?;
        let channel = ChannelSession::start(channel, Some(permit));
        let session = Session::new(&route.settings.name, principal, SessionUpstream::Channel(channel))
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let session = Arc::new(session);
        self.0.sessions.insert(session.clone());
        Ok(session)
    }
}

/// A refusal the data path does not retry (a GET stream, a DELETE) is the upstream being
/// unavailable to this caller.
fn settle_refusal(e: GatewayError) -> GatewayError {
    match e {
        GatewayError::UpstreamRefused { status, id, .. } => GatewayError::UpstreamUnavailable {
            message: format!("it refused the gateway's own credentials ({status})"),
            id,
        },
        other => other,
    }
}

fn describe_op(op: Operation<'_>) -> &'static str {
    match op {
        Operation::CallTool(_) => "tool",
        Operation::GetPrompt(_) => "prompt",
        Operation::ReadResource(_) | Operation::SubscribeResource(_) => "resource",
        Operation::Method(_) => "method",
    }
}

/// The gateway's own answer to messages the policy refused: a JSON-RPC error for each
/// request (in a batch, the others are refused with it: a batch is forwarded whole or not at
/// all).
fn refusal_reply(batch: bool, kinds: &[Kind], refusals: Vec<(Option<Value>, i64, String)>) -> Reply {
    let requests: Vec<&Value> = kinds
        .iter()
        .filter_map(|k| match k {
            Kind::Request { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    if requests.is_empty() {
        return accepted();
    }
    let errors: Vec<Value> = requests
        .iter()
        .map(|id| match refusals.iter().find(|(rid, _, _)| rid.as_ref() == Some(*id)) {
            Some((_, code, message)) => jsonrpc::error_response(Some(id), *code, message),
            None => jsonrpc::error_response(
                Some(id),
                jsonrpc::INVALID_REQUEST,
                "not forwarded: another message of this batch was refused",
            ),
        })
        .collect();
    let body = if batch { Value::Array(errors) } else { errors.into_iter().next().unwrap_or(Value::Null) };
    json_reply(ReplyStatus::Ok, &body, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn check(pairs: &[(&'static str, &'static str)], message: Value, stateless: bool) -> Result<(), String> {
        let kind = jsonrpc::classify(&message).map_err(str::to_owned)?;
        let version = if stateless { Some("2026-07-28") } else { None };
        check_mirrored_headers(&headers(pairs), &message, &kind, false, stateless, version).map_err(|e| e.to_string())
    }

    #[test]
    fn mirrored_headers_must_describe_the_body() {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}});
        assert!(check(&[], call.clone(), false).is_ok(), "optional before 2026-07-28");
        assert!(check(&[("mcp-method", "tools/call"), ("mcp-name", "a")], call.clone(), true).is_ok());
        assert!(
            check(&[("mcp-method", "tools/call")], call.clone(), true)
                .unwrap_err()
                .contains("Mcp-Name header is required")
        );
        assert!(check(&[("mcp-name", "a")], call.clone(), true).unwrap_err().contains("Mcp-Method header is required"));
        assert!(check(&[("mcp-method", "tools/call"), ("mcp-name", "b")], call.clone(), false).is_err());
        assert!(check(&[("mcp-method", "Tools/Call")], call.clone(), false).is_err(), "compared exactly");
        assert!(check(&[("mcp-name", "=?base64?YQ==?=")], call.clone(), false).is_ok(), "base64 sentinel");
        assert!(check(&[("mcp-name", "=?base64?Yg==?=")], call, false).is_err());
        let read = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x://1"}});
        assert!(check(&[("mcp-method", "resources/read"), ("mcp-name", "x://1")], read, true).is_ok());
        let meta = json!({"jsonrpc":"2.0","id":1,"method":"tools/list",
            "params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}});
        assert!(check(&[("mcp-method", "tools/list")], meta, true).unwrap_err().contains("_meta"));
        let batch = check_mirrored_headers(
            &headers(&[("mcp-method", "tools/list")]),
            &Value::Null,
            &Kind::Notification { method: String::new() },
            true,
            false,
            None,
        );
        assert!(batch.is_err(), "headers cannot describe a batch");
    }

    #[test]
    fn each_method_maps_to_the_operation_the_policy_decides() {
        let p = json!({"name":"t","uri":"x://1","ref":{"type":"ref/prompt","name":"p"}});
        assert_eq!(operation("tools/call", Some(&p)), Ok((Operation::CallTool("t"), Some("t"))));
        assert_eq!(operation("prompts/get", Some(&p)), Ok((Operation::GetPrompt("t"), Some("t"))));
        assert_eq!(operation("resources/read", Some(&p)), Ok((Operation::ReadResource("x://1"), Some("x://1"))));
        assert_eq!(
            operation("resources/subscribe", Some(&p)),
            Ok((Operation::SubscribeResource("x://1"), Some("x://1")))
        );
        assert_eq!(operation("completion/complete", Some(&p)), Ok((Operation::GetPrompt("p"), Some("p"))));
        let r = json!({"ref":{"type":"ref/resource","uri":"x://{id}"}});
        assert_eq!(
            operation("completion/complete", Some(&r)),
            Ok((Operation::ReadResource("x://{id}"), Some("x://{id}")))
        );
        assert_eq!(operation("ping", None), Ok((Operation::Method("ping"), None)));
        assert!(operation("tools/call", None).is_err());
        assert!(operation("tools/call", Some(&json!({"name": 7}))).is_err());
        assert!(operation("completion/complete", Some(&json!({"ref":{"type":"ref/other"}}))).is_err());
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

    #[test]
    fn content_negotiation() {
        assert!(accepts(&headers(&[("accept", "application/json, text/event-stream")]), "text/event-stream"));
        assert!(accepts(&headers(&[("accept", "text/event-stream;q=0.9")]), "text/event-stream"));
        assert!(accepts(&headers(&[("accept", "*/*")]), "application/json"));
        assert!(!accepts(&headers(&[("accept", "text/html")]), "application/json"));
        assert!(is_json(&headers(&[("content-type", "Application/JSON; charset=utf-8")])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert_eq!(
            protocol_version(&headers(&[("mcp-protocol-version", "2025-06-18")])).ok(),
            Some(Some("2025-06-18"))
        );
        assert!(protocol_version(&headers(&[("mcp-protocol-version", "2025-13-01")])).is_err());
    }
}
