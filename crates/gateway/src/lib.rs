//! The MCP gateway: every upstream MCP server becomes an OAuth resource server at its own
//! route, and every message is checked against tool-level policy before it reaches it.
//!
//! The gateway decides; the web layer speaks HTTP. [`Gateway::post`], [`Gateway::get`] and
//! [`Gateway::delete`] take a request's headers and body and return a [`Reply`] or a
//! [`GatewayError`]; `portcullis-web` turns both into responses and picks every status code
//! (an upstream's own status is passed through as [`ReplyStatus::Upstream`]).
//!
//! Invariants:
//! - The client's `Authorization` header (and cookies) never go upstream; an upstream that
//!   needs credentials gets the gateway's own, from configuration.
//! - [`portcullis_authz::Policy::decide`] decides every named operation and filters every
//!   list, in JSON and SSE responses alike.
//! - What is decided is what is forwarded: bodies are parsed strictly (duplicate keys
//!   refused), mirrored headers must agree with the body, and the upstream receives the
//!   re-serialised message that was decided.

mod audit;
mod auth;
mod filter;
pub mod jsonrpc;
pub mod observed;
mod protocol;
mod proxy;
mod revocation;
mod sessions;
mod upstream;
mod vault;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use portcullis_authz::Policy;
use portcullis_oauth::AuthorizationServer;
use portcullis_store::NewAuditEvent;
use portcullis_types::ScopeSet;
use serde_json::Value;
use tokio::sync::Semaphore;

pub use auth::{Principal, TokenError, TrustedIssuerSettings};
pub use filter::{ListKind, filter_list_response, filter_list_text};
pub use portcullis_upstream_oauth as upstream_oauth;
pub use protocol::{METHOD_HEADER, NAME_HEADER, ProtocolVersion, SESSION_HEADER, VERSION_HEADER};
pub use upstream::StdioCommand;
pub use vault::VaultError;

use portcullis_upstream_oauth::{Challenge, UpstreamClient};

/// What the gateway presents to an upstream.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    /// Only the configured headers, if any: the same for every caller.
    Static,
    /// Each user's own token from the vault (`upstream_auth = "user"`).
    User(Arc<UpstreamClient>),
    /// The gateway's own token from the upstream's authorization server
    /// (`upstream_auth = "client_credentials"`).
    ClientCredentials(Arc<UpstreamClient>),
}

/// Where a route's messages go.
#[derive(Debug, Clone)]
pub enum UpstreamSettings {
    /// A local command, spawned once per MCP session.
    Stdio(StdioCommand),
    /// A Streamable HTTP endpoint (2025-03-26 and later).
    StreamableHttp { url: url::Url },
    /// A 2024-11-05 HTTP+SSE endpoint (the GET stream's URL).
    LegacySse { url: url::Url },
}

/// How a route reaches its upstream, as the control plane names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    StreamableHttp,
    LegacySse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::StreamableHttp => "streamable_http",
            Self::LegacySse => "legacy_sse",
        }
    }
}

/// A route with what its upstream offered lately: what the admin API and dashboard show.
#[derive(Debug, Clone)]
pub struct RouteOverview {
    pub name: String,
    pub resource: String,
    pub transport: Transport,
    /// The upstream's URL without user information or query, or the program a stdio route
    /// runs (never its arguments or environment): any of those may hold a secret.
    pub upstream: String,
    pub authentication: bool,
    /// `static`, `user` or `client_credentials`.
    pub upstream_auth: &'static str,
    pub policy: Arc<Policy>,
    pub offered: observed::Offered,
    pub health: observed::Health,
}

/// An upstream URL as it may be shown: without user information or query, either of which
/// may carry a credential.
fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// One gateway route, `/mcp/NAME`.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub name: String,
    /// The canonical public URL of the route: the `resource` of its metadata and the `aud`
    /// its tokens must carry.
    pub resource: String,
    pub upstream: UpstreamSettings,
    /// `false` only for a route deliberately left open (a test bench, a public server).
    pub authentication: bool,
    pub policy: Arc<Policy>,
    /// RFC 9728 `scopes_supported` and the `scope` of a first challenge.
    pub scopes_supported: ScopeSet,
    /// Headers the gateway itself sends upstream (its own credentials).
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// OAuth toward the upstream (Streamable HTTP routes only).
    pub upstream_auth: UpstreamAuth,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Concurrent sessions (stdio children, SSE connections) at most.
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    /// Also publish this route's metadata at `/.well-known/oauth-protected-resource`.
    pub publish_at_root: bool,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Portcullis's own issuer, listed first in every route's `authorization_servers`.
    pub issuer: String,
    /// Browser origins allowed besides the issuer's own.
    pub allowed_origins: Vec<String>,
    /// `Host` values accepted besides the issuer's own.
    pub allowed_hosts: Vec<String>,
    pub max_request_bytes: usize,
    pub trusted_issuers: Vec<TrustedIssuerSettings>,
    pub routes: Vec<RouteSettings>,
}

/// Why a request was not forwarded. The web layer maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Unauthenticated(TokenError),
    #[error("this request needs the scope {required}")]
    InsufficientScope {
        /// What the refused operation needs.
        required: ScopeSet,
        /// What to ask for: `required` plus the route's scopes the token already holds, so a
        /// client that replaces its scopes on step-up (rather than adding, as 2026-07-28 asks)
        /// does not lose them (the 2025-11-25 recommendation).
        challenge: ScopeSet,
        id: Option<Value>,
    },
    #[error("requests from origin {0:?} are not allowed")]
    OriginNotAllowed(String),
    #[error("requests for host {0:?} are not allowed")]
    HostNotAllowed(String),
    #[error("{message}")]
    InvalidMessage { code: i64, message: String, id: Option<Value> },
    #[error("{0}")]
    HeaderMismatch(String),
    #[error("MCP protocol version {0:?} is not supported here")]
    UnsupportedProtocolVersion(String),
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the client must accept application/json or text/event-stream")]
    NotAcceptable,
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the MCP session does not exist (it ended, or belongs to someone else); initialize a new one")]
    SessionNotFound,
    #[error("this request needs an Mcp-Session-Id; send initialize first")]
    SessionRequired,
    #[error("too many concurrent sessions on this route; try again later")]
    TooManySessions,
    #[error("the upstream MCP server is unavailable: {message}")]
    UpstreamUnavailable { message: String, id: Option<Value> },
    #[error("the upstream MCP server did not answer within {seconds} s")]
    UpstreamTimeout { seconds: u64, id: Option<Value> },
    /// The route acts as each user at its upstream, and this user has not connected their
    /// account there (or must connect again, or grant more).
    #[error("{message}")]
    ConnectionRequired {
        message: String,
        url: String,
        /// Set when the client declared URL-mode elicitation: the error is then MCP's
        /// `URLElicitationRequiredError`.
        elicitation_id: Option<String>,
        id: Option<Value>,
    },
    #[error(
        "route {route:?} acts as each user at its upstream; a token that speaks for no Portcullis user (a \
         client's own, or another issuer's) cannot use it"
    )]
    UserRequired { route: String, id: Option<Value> },
    /// The upstream refused the credentials the gateway presented (401, or 403 with a
    /// challenge); the data path decides whether to refresh, step up or give up.
    #[error("the upstream MCP server refused the gateway's credentials ({status})")]
    UpstreamRefused { status: StatusCode, challenge: Option<Challenge>, id: Option<Value> },
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// The JSON-RPC error code the body carries.
    pub fn jsonrpc_code(&self) -> i64 {
        use jsonrpc::*;
        match self {
            Self::Unauthenticated(_) => UNAUTHORIZED,
            Self::InsufficientScope { .. } | Self::OriginNotAllowed(_) | Self::HostNotAllowed(_) => FORBIDDEN,
            Self::InvalidMessage { code, .. } => *code,
            Self::HeaderMismatch(_) => HEADER_MISMATCH,
            Self::UnsupportedProtocolVersion(_) => UNSUPPORTED_PROTOCOL_VERSION,
            Self::MethodNotAllowed(_) | Self::NotAcceptable | Self::UnsupportedMediaType | Self::SessionRequired => {
                INVALID_REQUEST
            }
            Self::PayloadTooLarge(_) => INVALID_REQUEST,
            Self::SessionNotFound => SESSION_NOT_FOUND,
            Self::TooManySessions | Self::UpstreamUnavailable { .. } => UPSTREAM_ERROR,
            Self::UpstreamTimeout { .. } => REQUEST_TIMEOUT,
            Self::ConnectionRequired { elicitation_id: Some(_), .. } => URL_ELICITATION_REQUIRED,
            Self::ConnectionRequired { elicitation_id: None, .. } => CONNECTION_REQUIRED,
            Self::UserRequired { .. } => FORBIDDEN,
            Self::UpstreamRefused { .. } => UPSTREAM_ERROR,
            Self::Internal(_) => INTERNAL_ERROR,
        }
    }

    /// The JSON-RPC id the error answers, when it answers one request.
    pub fn request_id(&self) -> Option<&Value> {
        match self {
            Self::InsufficientScope { id, .. }
            | Self::InvalidMessage { id, .. }
            | Self::UpstreamUnavailable { id, .. }
            | Self::UpstreamTimeout { id, .. }
            | Self::ConnectionRequired { id, .. }
            | Self::UserRequired { id, .. }
            | Self::UpstreamRefused { id, .. } => id.as_ref(),
            _ => None,
        }
    }

    /// A JSON-RPC error object for the body.
    pub fn to_jsonrpc(&self) -> Value {
        let mut response = jsonrpc::error_response(self.request_id(), self.jsonrpc_code(), &self.to_string());
        if let Self::ConnectionRequired { message, url, elicitation_id, .. } = self {
            // MCP 2025-11-25 URLElicitationRequiredError, or the same URL in plain data.
            let data = match elicitation_id {
                Some(elicitation_id) => serde_json::json!({"elicitations": [{
                    "mode": "url", "elicitationId": elicitation_id, "url": url, "message": message,
                }]}),
                None => serde_json::json!({"url": url}),
            };
            response["error"]["data"] = data;
        }
        response
    }
}

/// How the web layer should answer a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// Notifications or responses only (202).
    Accepted,
    /// The gateway's own answer (200).
    Ok,
    /// A session ended (204).
    Ended,
    /// The upstream's status, passed through.
    Upstream(StatusCode),
}

pub struct Reply {
    pub status: ReplyStatus,
    pub content_type: Option<HeaderValue>,
    /// Set on the answer to `initialize`: the gateway's session id.
    pub session_id: Option<String>,
    pub body: Body,
}

impl Reply {
    /// Notifications or responses only: nothing to answer (202).
    pub(crate) fn accepted() -> Self {
        Self { status: ReplyStatus::Accepted, content_type: None, session_id: None, body: Body::empty() }
    }

    /// The gateway's own JSON answer.
    pub(crate) fn json(status: ReplyStatus, value: &Value, session_id: Option<String>) -> Self {
        Self {
            status,
            content_type: Some(HeaderValue::from_static("application/json")),
            session_id,
            body: Body::from(value.to_string()),
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").field("status", &self.status).field("session_id", &self.session_id.is_some()).finish()
    }
}

/// One message's decision, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub method: String,
    pub target: Option<String>,
    pub allowed: bool,
    pub reason: Option<String>,
    /// Why it was refused, as a bounded label for metrics.
    pub denial: Option<portcullis_telemetry::Refusal>,
}

/// A POST's outcome and what was decided on the way.
#[derive(Debug)]
pub struct Handled {
    pub reply: Result<Reply, GatewayError>,
    pub decisions: Vec<Decided>,
}

pub(crate) struct Route {
    pub settings: RouteSettings,
    /// How the data path reaches the upstream, compiled from `settings.upstream`.
    pub endpoint: upstream::Endpoint,
    pub slots: Arc<Semaphore>,
    /// What its upstream offered and how it answered (kept over reloads).
    pub observed: Arc<observed::Observed>,
    /// Headers every request upstream carries: the configured ones, and for Streamable HTTP
    /// the upstream's `Host` (computed once here rather than by the client on every call).
    pub headers: HeaderMap,
}

/// What the configuration says about routes and issuers, compiled: immutable, and replaced
/// whole on a reload. A request reads one snapshot from start to end.
pub(crate) struct Routing {
    pub settings: GatewaySettings,
    pub routes: HashMap<String, Arc<Route>>,
    pub foreign: Vec<Arc<auth::ForeignIssuer>>,
}

impl Routing {
    /// Compiles `settings`; routes and issuers that did not change keep their state (a
    /// route's session slots, an issuer's fetched keys).
    fn compile(settings: GatewaySettings, previous: Option<&Routing>) -> Result<Self, GatewayConfigError> {
        let mut routes = HashMap::new();
        for r in &settings.routes {
            let mut headers = HeaderMap::new();
            for (k, v) in &r.upstream_headers {
                headers.append(k.clone(), v.clone());
            }
            let slots = previous
                .and_then(|p| p.routes.get(&r.name))
                .filter(|old| old.settings.max_sessions == r.max_sessions)
                .map(|old| Arc::clone(&old.slots))
                .unwrap_or_else(|| Arc::new(Semaphore::new(r.max_sessions.max(1))));
            let observed =
                previous.and_then(|p| p.routes.get(&r.name)).map(|old| Arc::clone(&old.observed)).unwrap_or_default();
            let endpoint = upstream::Endpoint::compile(&r.upstream)
                .map_err(|reason| GatewayConfigError::UpstreamUrl(r.name.clone(), reason))?;
            if let upstream::Endpoint::Http(uri) = &endpoint
                && !headers.contains_key(http::header::HOST)
                && let Some(host) = upstream::host_header(uri)
            {
                headers.insert(http::header::HOST, host);
            }
            let route = Arc::new(Route { settings: r.clone(), endpoint, slots, headers, observed });
            if routes.insert(r.name.clone(), route).is_some() {
                return Err(GatewayConfigError::DuplicateRoute(r.name.clone()));
            }
        }
        let foreign = settings
            .trusted_issuers
            .iter()
            .map(|t| {
                previous
                    .and_then(|p| p.foreign.iter().find(|f| f.settings == *t))
                    .map(Arc::clone)
                    .unwrap_or_else(|| Arc::new(auth::ForeignIssuer::new(t.clone())))
            })
            .collect();
        Ok(Self { settings, routes, foreign })
    }
}

struct Inner {
    issuer_origin: String,
    issuer_host: String,
    base_path: String,
    routing: std::sync::RwLock<Arc<Routing>>,
    validator: auth::TokenValidator,
    sessions: sessions::Sessions,
    streams: Arc<revocation::LiveStreams>,
    audit: audit::AuditLog,
    vault: vault::Vault,
    /// Streamable HTTP upstreams' pooled client (the data path).
    upstream_http: upstream::HttpClient,
    /// Legacy HTTP+SSE upstreams' client (a stream and a POST per message, per session).
    legacy_http: reqwest::Client,
    reaper: tokio::task::AbortHandle,
}

impl Inner {
    /// The current routing snapshot.
    fn routing(&self) -> Arc<Routing> {
        match self.routing.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reaper.abort();
    }
}

/// The gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    #[error("route {0:?} is configured twice")]
    DuplicateRoute(String),
    #[error("the issuer {0:?} is not a URL")]
    Issuer(String),
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
    #[error("route {0:?}: its upstream URL cannot be used: {1}")]
    UpstreamUrl(String, String),
}

impl Gateway {
    /// Builds the gateway; must be called within a Tokio runtime (it starts the audit writer
    /// and the idle-session reaper). With a change feed, sessions and streams end when their
    /// grant is revoked, and our own tokens are refused while the feed cannot read the log.
    pub fn new(
        settings: GatewaySettings,
        authorization: AuthorizationServer,
        feed: Option<portcullis_control::ChangeFeed>,
    ) -> Result<Self, GatewayConfigError> {
        let issuer_url =
            url::Url::parse(&settings.issuer).map_err(|_| GatewayConfigError::Issuer(settings.issuer.clone()))?;
        let issuer_host = match (issuer_url.host_str(), issuer_url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return Err(GatewayConfigError::Issuer(settings.issuer.clone())),
        };
        // Upstream requests never follow redirects: a redirect could carry the gateway's own
        // credentials to another host.
        let upstream_http = upstream::http_client(Duration::from_secs(10)).map_err(GatewayConfigError::Client)?;
        let legacy_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| GatewayConfigError::Client(e.to_string()))?;
        let routing = Routing::compile(settings, None)?;
        let audit = audit::AuditLog::start(authorization.store().clone());
        let vault = vault::Vault::new(authorization.clone());
        let mut validator = auth::TokenValidator::new(authorization);
        validator.feed = feed.clone();
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            if let Some(feed) = feed {
                tokio::spawn(revocation::follow(weak.clone(), feed));
            }
            let weak = weak.clone();
            let reaper = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let routing = inner.routing();
                    let ended = inner
                        .sessions
                        .reap(|route| routing.routes.get(route).map_or(Duration::ZERO, |r| r.settings.idle_timeout));
                    if ended > 0 {
                        tracing::info!(ended, "idle MCP sessions ended");
                    }
                }
            })
            .abort_handle();

            Inner {
                issuer_origin: issuer_url.origin().ascii_serialization(),
                issuer_host,
                base_path: issuer_url.path().trim_end_matches('/').to_owned(),
                routing: std::sync::RwLock::new(Arc::new(routing)),
                validator,
                sessions: sessions::Sessions::default(),
                streams: Arc::default(),
                audit,
                vault,
                upstream_http,
                legacy_http,
                reaper,
            }
        });
        Ok(Self(inner))
    }

    /// Replaces routes, policies and trusted issuers with those of `settings`, atomically:
    /// requests already running finish with what they started with. Sessions of routes that
    /// are gone end; the others, and their streams, go on.
    pub fn reload(&self, settings: GatewaySettings) -> Result<(), GatewayConfigError> {
        if settings.issuer != self.0.routing().settings.issuer {
            return Err(GatewayConfigError::Issuer(settings.issuer));
        }
        let previous = self.0.routing();
        let routing = Arc::new(Routing::compile(settings, Some(&previous))?);
        let removed: Vec<String> =
            previous.routes.keys().filter(|r| !routing.routes.contains_key(*r)).cloned().collect();
        if let Ok(mut current) = self.0.routing.write() {
            *current = Arc::clone(&routing);
        }
        let ended = self.0.sessions.remove_routes(&removed);
        tracing::info!(routes = routing.routes.len(), removed = removed.len(), ended, "gateway configuration reloaded");
        Ok(())
    }

    /// A route's resource (its tokens' audience) and its compiled policy.
    pub fn route_policy(&self, name: &str) -> Option<(String, Arc<Policy>)> {
        self.0.routing().routes.get(name).map(|r| (r.settings.resource.clone(), Arc::clone(&r.settings.policy)))
    }

    /// The tools of the route whose resource is `resource` that `scopes` let a token call (as
    /// the route's policy decides), by name; empty when no route has that resource.
    pub fn tools_unlocked(&self, resource: &str, scopes: &ScopeSet) -> Vec<String> {
        let routing = self.0.routing();
        let Some(route) = routing.routes.values().find(|r| r.settings.resource == resource) else { return Vec::new() };
        let policy = &route.settings.policy;
        policy
            .tools()
            .filter(|(name, _)| policy.decide(scopes, portcullis_authz::Operation::CallTool(name)).is_allowed())
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    pub fn has_route(&self, name: &str) -> bool {
        self.0.routing().routes.contains_key(name)
    }

    /// Every route as the control plane shows it, by name.
    pub fn route_overviews(&self) -> Vec<RouteOverview> {
        let routing = self.0.routing();
        let mut overviews: Vec<RouteOverview> = routing
            .routes
            .values()
            .map(|r| {
                let s = &r.settings;
                let (transport, upstream) = match &s.upstream {
                    UpstreamSettings::Stdio(command) => (Transport::Stdio, command.program.clone()),
                    UpstreamSettings::StreamableHttp { url } => (Transport::StreamableHttp, shown_url(url)),
                    UpstreamSettings::LegacySse { url } => (Transport::LegacySse, shown_url(url)),
                };
                let (offered, health) = r.observed.snapshot();
                RouteOverview {
                    name: s.name.clone(),
                    resource: s.resource.clone(),
                    transport,
                    upstream,
                    authentication: s.authentication,
                    upstream_auth: match &s.upstream_auth {
                        UpstreamAuth::Static => "static",
                        UpstreamAuth::User(_) => "user",
                        UpstreamAuth::ClientCredentials(_) => "client_credentials",
                    },
                    policy: Arc::clone(&s.policy),
                    offered,
                    health,
                }
            })
            .collect();
        overviews.sort_by(|a, b| a.name.cmp(&b.name));
        overviews
    }

    pub fn route_names(&self) -> Vec<String> {
        self.0.routing().routes.keys().cloned().collect()
    }

    pub fn requires_authentication(&self, route: &str) -> bool {
        self.0.routing().routes.get(route).is_none_or(|r| r.settings.authentication)
    }

    pub fn max_request_bytes(&self) -> usize {
        self.0.routing().settings.max_request_bytes
    }

    pub fn base_path(&self) -> &str {
        &self.0.base_path
    }

    /// The route whose metadata is also published at the root well-known URI.
    pub fn root_route(&self) -> Option<String> {
        self.0.routing().routes.values().find(|r| r.settings.publish_at_root).map(|r| r.settings.name.clone())
    }

    /// RFC 9728 metadata of a route (`None` for unknown or open routes).
    pub fn protected_resource_metadata(&self, route: &str) -> Option<Value> {
        let routing = self.0.routing();
        let r = routing.routes.get(route).filter(|r| r.settings.authentication)?;
        let mut servers = vec![routing.settings.issuer.clone()];
        servers.extend(routing.foreign.iter().filter(|f| f.serves(route)).map(|f| f.settings.issuer.clone()));
        Some(serde_json::json!({
            "resource": r.settings.resource,
            "authorization_servers": servers,
            "scopes_supported": r.settings.scopes_supported.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": r.settings.name,
        }))
    }

    /// The URL of a route's metadata, for `resource_metadata` in challenges.
    pub fn resource_metadata_url(&self, route: &str) -> String {
        format!("{}/.well-known/oauth-protected-resource{}/mcp/{route}", self.0.issuer_origin, self.0.base_path)
    }

    /// The scopes of a first challenge on a route.
    pub fn challenge_scopes(&self, route: &str) -> ScopeSet {
        self.0.routing().routes.get(route).map(|r| r.settings.scopes_supported.clone()).unwrap_or_default()
    }

    /// DNS-rebinding defence: the `Host` must be ours and an `Origin`, when sent, allowed.
    pub fn check_host_and_origin(&self, headers: &HeaderMap, authority: Option<&str>) -> Result<(), GatewayError> {
        let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).or(authority).unwrap_or_default();
        let host_ok = host.eq_ignore_ascii_case(&self.0.issuer_host)
            || self.0.routing().settings.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host));
        if !host_ok {
            return Err(GatewayError::HostNotAllowed(host.to_owned()));
        }
        if let Some(origin) = headers.get(http::header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            let allowed = origin.eq_ignore_ascii_case(&self.0.issuer_origin)
                || self
                    .0
                    .routing()
                    .settings
                    .allowed_origins
                    .iter()
                    .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin));
            if !allowed {
                return Err(GatewayError::OriginNotAllowed(origin.to_owned()));
            }
        }
        Ok(())
    }

    /// Validates the bearer token for a route.
    pub async fn authenticate(
        &self,
        route: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, GatewayError> {
        let routing = self.0.routing();
        let Some(r) = routing.routes.get(route) else { return Err(GatewayError::SessionNotFound) };
        if !r.settings.authentication {
            return Ok(Principal::anonymous());
        }
        let token = auth::TokenValidator::bearer(authorization).map_err(GatewayError::Unauthenticated)?;
        self.0
            .validator
            .validate(token, route, &r.settings.resource, &routing.foreign)
            .await
            .map_err(GatewayError::Unauthenticated)
    }

    /// The OAuth client of a route that connects each user's own account.
    fn connectable(&self, route: &str) -> Result<Arc<UpstreamClient>, VaultError> {
        match self.0.routing().routes.get(route).map(|r| &r.settings.upstream_auth) {
            Some(UpstreamAuth::User(client)) => Ok(Arc::clone(client)),
            _ => Err(VaultError::NotConnectable(route.to_owned())),
        }
    }

    /// Whether users connect their own accounts on `route`, and if so the upstream's origin
    /// (what the connect page shows).
    pub fn connectable_upstream(&self, route: &str) -> Option<String> {
        self.connectable(route).ok().map(|c| c.settings().upstream.origin().ascii_serialization())
    }

    /// Where a user connects their account for `route` (in a browser, signed in as themselves);
    /// `scope`, on a step-up, is what the upstream asked for besides.
    pub fn connect_url(&self, route: &str, user_id: &str, scope: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("for", user_id);
        if let Some(scope) = scope {
            query.append_pair("scope", scope);
        }
        format!("{}{}/connect/{route}?{}", self.0.issuer_origin, self.0.base_path, query.finish())
    }

    /// Starts connecting a user's account: the upstream authorization request to send their
    /// browser to, and what its callback must find again.
    pub async fn begin_connect(
        &self,
        route: &str,
        user_id: &str,
        more_scope: Option<&str>,
    ) -> Result<(url::Url, upstream_oauth::PendingConnection), VaultError> {
        let client = self.connectable(route)?;
        self.0.vault.begin_connect(route, &client, user_id, more_scope).await
    }

    /// Finishes connecting: redeems the code and keeps the tokens, sealed, for this user.
    pub async fn finish_connect(
        &self,
        route: &str,
        actor: &portcullis_store::Actor,
        user_id: &str,
        pending: &upstream_oauth::PendingConnection,
        callback: &upstream_oauth::CallbackParams,
    ) -> Result<(), VaultError> {
        let client = self.connectable(route)?;
        self.0.vault.finish_connect(route, &client, actor, user_id, pending, callback).await
    }

    /// Disconnects a user's account for `route`: revoked at the upstream where it can be, and
    /// forgotten. Also for a route no longer configured (then only forgotten).
    pub async fn disconnect_upstream(
        &self,
        route: &str,
        actor: &portcullis_store::Actor,
        user_id: &str,
    ) -> Result<bool, VaultError> {
        let client = self.connectable(route).ok();
        self.0.vault.disconnect(route, client.as_deref(), actor, user_id).await
    }

    /// Portcullis's Client ID Metadata Document, when a route connects users' accounts.
    pub fn client_metadata_document(&self) -> Option<Value> {
        let routing = self.0.routing();
        let client = routing.routes.values().find_map(|r| match &r.settings.upstream_auth {
            UpstreamAuth::User(c) => Some(Arc::clone(c)),
            _ => None,
        })?;
        let document = client.settings().metadata_document.clone()?;
        Some(upstream_oauth::client_metadata_document(client.settings(), document.as_str(), &routing.settings.issuer))
    }

    /// Sets the gauges a scrape reads: each route's live sessions and channel children, and
    /// the audit queue's depth.
    pub fn report_load(&self) {
        let load = self.0.sessions.load();
        for name in self.0.routing().routes.keys() {
            let (sessions, children) = load.get(name).copied().unwrap_or_default();
            portcullis_telemetry::set_route_load(name, sessions, children);
        }
        portcullis_telemetry::set_audit_queue_depth(self.0.audit.depth());
    }

    /// Queues audit events (written off the request path).
    pub fn record(&self, events: Vec<NewAuditEvent>) {
        self.0.audit.record(events);
    }

    /// Ends every session (stdio children are stopped, their streams end).
    pub fn end_sessions(&self) {
        self.0.sessions.clear();
    }

    /// Ends every session and writes every queued audit event.
    pub async fn shutdown(&self) {
        self.0.sessions.clear();
        self.0.audit.shutdown().await;
    }

    pub fn session_count(&self) -> usize {
        self.0.sessions.len()
    }

    /// Event streams in flight that belong to one of our grants.
    pub fn stream_count(&self) -> usize {
        self.0.streams.len()
    }

    /// Ends every session and stream whose grant is no longer live (what the change feed
    /// triggers); returns how many ended.
    pub async fn end_revoked(&self) -> usize {
        self.0.end_revoked().await
    }

    /// An event stream of one of our grants ends when the grant stops being live.
    pub(crate) fn guarded(&self, principal: &Principal, mut reply: Reply) -> Reply {
        let streaming =
            reply.content_type.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
            });
        if let (true, Some(grant)) = (streaming, &principal.grant_id) {
            let body = std::mem::take(&mut reply.body);
            reply.body = self.0.streams.guard(grant.clone(), body);
        }
        reply
    }
}
