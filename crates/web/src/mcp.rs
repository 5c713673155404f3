//! The gateway's HTTP face: `/mcp/{route}` and its RFC 9728 metadata. The gateway decides;
//! this module picks every status code and writes the challenges.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use portcullis_gateway::{Gateway, GatewayError, Principal, ReplyStatus, TokenError};
use portcullis_store::{AuditKind, AuditOutcome, NewAuditEvent};
use portcullis_telemetry::{Decision, Refusal};
use tracing::Instrument as _;

use crate::AppState;

fn status_of(e: &GatewayError) -> StatusCode {
    match e {
        GatewayError::Unauthenticated(TokenError::IssuerUnavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        GatewayError::InsufficientScope { .. }
        | GatewayError::OriginNotAllowed(_)
        | GatewayError::HostNotAllowed(_) => StatusCode::FORBIDDEN,
        GatewayError::InvalidMessage { .. }
        | GatewayError::HeaderMismatch(_)
        | GatewayError::UnsupportedProtocolVersion(_)
        | GatewayError::SessionRequired => StatusCode::BAD_REQUEST,
        GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        GatewayError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        GatewayError::SessionNotFound => StatusCode::NOT_FOUND,
        GatewayError::TooManySessions => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::UpstreamUnavailable { .. } | GatewayError::UpstreamRefused { .. } => StatusCode::BAD_GATEWAY,
        // Answers to the request, in JSON-RPC: the user has something to do first.
        GatewayError::ConnectionRequired { .. } | GatewayError::UserRequired { .. } => StatusCode::OK,
        GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Why a request the gateway answered with an error was refused, when it was a refusal (not
/// an upstream failure or an internal error), as a metric label.
fn refusal_of(e: &GatewayError) -> Option<Refusal> {
    Some(match e {
        GatewayError::Unauthenticated(TokenError::Missing) => Refusal::TokenMissing,
        GatewayError::Unauthenticated(TokenError::IssuerUnavailable(_)) => Refusal::IssuerUnavailable,
        GatewayError::Unauthenticated(_) => Refusal::InvalidToken,
        GatewayError::InsufficientScope { .. } => Refusal::InsufficientScope,
        GatewayError::OriginNotAllowed(_) | GatewayError::HostNotAllowed(_) => Refusal::OriginOrHost,
        GatewayError::InvalidMessage { .. }
        | GatewayError::HeaderMismatch(_)
        | GatewayError::UnsupportedProtocolVersion(_)
        | GatewayError::SessionRequired
        | GatewayError::MethodNotAllowed(_)
        | GatewayError::PayloadTooLarge(_)
        | GatewayError::NotAcceptable
        | GatewayError::UnsupportedMediaType
        | GatewayError::SessionNotFound => Refusal::InvalidMessage,
        GatewayError::TooManySessions => Refusal::TooManySessions,
        GatewayError::ConnectionRequired { .. } | GatewayError::UserRequired { .. } => Refusal::ConnectionRequired,
        GatewayError::UpstreamUnavailable { .. }
        | GatewayError::UpstreamRefused { .. }
        | GatewayError::UpstreamTimeout { .. }
        | GatewayError::Internal(_) => return None,
    })
}

/// Counts what was decided about one request on `route`: each message, each refusal, and how
/// long the whole request took.
fn measure(route: &str, events: &[NewAuditEvent], refusals: impl IntoIterator<Item = Refusal>, started: Instant) {
    for e in events {
        let decision = if e.outcome == AuditOutcome::Allowed { Decision::Allowed } else { Decision::Denied };
        let status = e.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
        portcullis_telemetry::gateway_message(route, e.method.as_deref().unwrap_or_default(), decision, status);
    }
    for refusal in refusals {
        portcullis_telemetry::gateway_refusal(refusal);
    }
    portcullis_telemetry::gateway_request_duration(route, started.elapsed().as_secs_f64());
}

/// Queues the request's audit records (a span of its own when traces are on).
fn enqueue(gateway: &Gateway, events: Vec<NewAuditEvent>) {
    portcullis_telemetry::span!("audit.enqueue", records = events.len()).in_scope(|| gateway.record(events));
}

/// An RFC 6750 §3 quoted-string value: our messages never hold quotes or backslashes, but a
/// token's issuer (echoed in a description) might.
fn quoted(text: &str) -> String {
    text.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect()
}

fn error_response(gateway: &Gateway, route: &str, e: &GatewayError) -> Response {
    let status = status_of(e);
    let mut response = (status, Json(e.to_jsonrpc())).into_response();
    let metadata = gateway.resource_metadata_url(route);
    let challenge = match e {
        GatewayError::Unauthenticated(TokenError::Missing) => {
            Some(format!("Bearer resource_metadata=\"{metadata}\", scope=\"{}\"", gateway.challenge_scopes(route)))
        }
        GatewayError::Unauthenticated(TokenError::IssuerUnavailable(_)) => None,
        GatewayError::Unauthenticated(reason) => Some(format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\", resource_metadata=\"{metadata}\", scope=\"{}\"",
            quoted(&reason.to_string()),
            gateway.challenge_scopes(route)
        )),
        GatewayError::InsufficientScope { required, challenge, .. } => Some(format!(
            "Bearer error=\"insufficient_scope\", scope=\"{challenge}\", resource_metadata=\"{metadata}\", \
             error_description=\"this request needs the scope {required}\""
        )),
        _ => None,
    };
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// What every audit event of one request shares: where, who, and when it started.
struct Audit<'a> {
    route: &'a str,
    principal: Option<&'a Principal>,
    started: Instant,
    now: i64,
}

impl Audit<'_> {
    fn event(
        &self,
        method: &str,
        target: Option<String>,
        allowed: bool,
        reason: Option<String>,
        status: StatusCode,
    ) -> NewAuditEvent {
        let p = self.principal;
        NewAuditEvent {
            occurred_at: self.now,
            kind: AuditKind::McpMessage,
            // A delegated token's chain; otherwise the caller is the user and client below.
            actor: p.and_then(Principal::acting),
            source_address: None,
            route: Some(self.route.to_owned()),
            method: Some(method.to_owned()),
            target,
            outcome: if allowed { AuditOutcome::Allowed } else { AuditOutcome::Denied },
            reason,
            user_id: p.and_then(|p| p.subject.clone()),
            username: p.and_then(|p| p.username.clone()),
            client_id: p.and_then(|p| p.client_id.clone()),
            issuer: p.map(|p| p.issuer.clone()).filter(|i| !i.is_empty()),
            subject: None,
            status: Some(i64::from(status.as_u16())),
            latency_ms: Some(i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// Everything before the method-specific work: the route, the Host and Origin, the token.
async fn admit(
    state: &AppState,
    route: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    started: Instant,
) -> Result<(Gateway, Principal), Response> {
    let Some(gateway) = state.gateway.clone().filter(|g| g.has_route(route)) else {
        return Err((StatusCode::NOT_FOUND, "no such MCP route\n").into_response());
    };
    let refused = |e: GatewayError| {
        let response = error_response(&gateway, route, &e);
        let label = headers
            .get(portcullis_gateway::METHOD_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(method.as_str())
            .to_owned();
        // A genuine token of ours that is no longer active still says whose it was.
        let claimed = match &e {
            GatewayError::Unauthenticated(TokenError::Inactive { client_id, subject }) => Some(Principal {
                issuer: state.server.settings().issuer.clone(),
                subject: (subject != client_id).then(|| subject.clone()),
                username: None,
                client_id: Some(client_id.clone()),
                scopes: Default::default(),
                grant_id: None,
                delegation: Vec::new(),
            }),
            _ => None,
        };
        let audit = Audit { route, principal: claimed.as_ref(), started, now: state.server.now() };
        let events = vec![audit.event(&label, None, false, Some(e.to_string()), response.status())];
        measure(route, &events, refusal_of(&e), started);
        enqueue(&gateway, events);
        response
    };
    if let Err(e) = gateway.check_host_and_origin(headers, uri.authority().map(|a| a.as_str())) {
        return Err(refused(e));
    }
    let authenticating = portcullis_telemetry::span!("authenticate", route);
    match gateway.authenticate(route, headers.get(header::AUTHORIZATION)).instrument(authenticating).await {
        Ok(principal) => Ok((gateway, principal)),
        Err(e) => Err(refused(e)),
    }
}

fn render(gateway: &Gateway, route: &str, reply: Result<portcullis_gateway::Reply, GatewayError>) -> Response {
    let reply = match reply {
        Ok(r) => r,
        Err(e) => return error_response(gateway, route, &e),
    };
    let status = match reply.status {
        ReplyStatus::Accepted => StatusCode::ACCEPTED,
        ReplyStatus::Ok => StatusCode::OK,
        ReplyStatus::Ended => StatusCode::NO_CONTENT,
        ReplyStatus::Upstream(s) => s,
    };
    let mut response = Response::new(reply.body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(ct) = reply.content_type {
        if ct.to_str().is_ok_and(|v| v.starts_with("text/event-stream")) {
            // Reverse proxies must pass each event on as it comes.
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
        headers.insert(header::CONTENT_TYPE, ct);
    }
    if let Some(id) = reply.session_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        headers.insert(portcullis_gateway::SESSION_HEADER, id);
    }
    response
}

/// An answer sent before the request body was read (a refused caller, a body over the limit):
/// on HTTP/1.1 the connection cannot carry another request after it (the unread body is in the
/// way), so the client is told not to reuse it rather than finding it closed under its next
/// request.
fn unread_body(version: http::Version, mut response: Response) -> Response {
    if version <= http::Version::HTTP_11 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pub(crate) async fn post(State(state): State<AppState>, Path(route): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    // The request's parts taken whole rather than extracted one by one (which copies them).
    let (http::request::Parts { version, uri, headers, .. }, body) = request.into_parts();
    let (gateway, principal) = match admit(&state, &route, &Method::POST, &uri, &headers, started).await {
        Ok(admitted) => admitted,
        Err(response) => return unread_body(version, response),
    };
    let limit = gateway.max_request_bytes();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return unread_body(version, error_response(&gateway, &route, &GatewayError::PayloadTooLarge(limit)));
        }
    };
    // A client without a traceparent header may carry its trace in the message's `_meta`: the
    // message is then a span of that trace (disabled otherwise, and the request's span goes on).
    let message = portcullis_telemetry::message_span(&tracing::Span::current(), &headers, &bytes);
    // Boxed: the gateway's future is large, and moving it by value through the handler's own
    // states showed as a tenth of the call's time in memcpy.
    let handled = Box::pin(gateway.post(&route, &principal, &headers, bytes)).instrument(message.clone()).await;
    let failure = handled.reply.as_ref().err().map(ToString::to_string);
    let mut refusals: Vec<Refusal> = handled.decisions.iter().filter_map(|d| d.denial).collect();
    if refusals.is_empty()
        && let Some(refusal) = handled.reply.as_ref().err().and_then(refusal_of)
    {
        refusals.push(refusal);
    }
    let response = render(&gateway, &route, handled.reply);
    let audit = Audit { route: &route, principal: Some(&principal), started, now: state.server.now() };
    let status = response.status();
    let mut events: Vec<NewAuditEvent> = handled
        .decisions
        .into_iter()
        .map(|d| {
            // A message that was allowed but not delivered (upstream down) is recorded with
            // the error as its reason.
            let reason = d.reason.or_else(|| failure.clone());
            audit.event(&d.method, d.target, d.allowed, reason, status)
        })
        .collect();
    if events.is_empty()
        && let Some(reason) = failure
    {
        events.push(audit.event("POST", None, false, Some(reason), status));
    }
    measure(&route, &events, refusals, started);
    message.in_scope(|| enqueue(&gateway, events));
    response
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(route): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let (gateway, principal) = match admit(&state, &route, &Method::GET, &uri, &headers, started).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let reply = gateway.get(&route, &principal, &headers).await;
    render(&gateway, &route, reply)
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(route): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let (gateway, principal) = match admit(&state, &route, &Method::DELETE, &uri, &headers, started).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let reply = gateway.delete(&route, &principal, &headers).await;
    let response = render(&gateway, &route, reply);
    let audit = Audit { route: &route, principal: Some(&principal), started, now: state.server.now() };
    let events = vec![audit.event("DELETE", None, response.status().is_success(), None, response.status())];
    measure(&route, &events, None, started);
    enqueue(&gateway, events);
    response
}

/// Anything but GET, POST and DELETE on a route.
pub(crate) async fn other_method() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, POST, DELETE")]).into_response()
}

pub(crate) async fn protected_resource(State(state): State<AppState>, Path(route): Path<String>) -> Response {
    match state.gateway.as_ref().and_then(|g| g.protected_resource_metadata(&route)) {
        Some(doc) => Json(doc).into_response(),
        None => (StatusCode::NOT_FOUND, "no such protected resource\n").into_response(),
    }
}

pub(crate) async fn protected_resource_root(State(state): State<AppState>) -> Response {
    let doc = state.gateway.as_ref().and_then(|g| g.root_route().and_then(|r| g.protected_resource_metadata(&r)));
    match doc {
        Some(doc) => Json(doc).into_response(),
        None => (StatusCode::NOT_FOUND, "no protected resource is published at the root\n").into_response(),
    }
}
