//! HTTP surfaces of Portcullis.
//!
//! Thin by design: handlers parse HTTP, call `portcullis-oauth`, and render. This is the only
//! crate that chooses HTTP status codes ([`error::WebError`] and the page renderers), sets
//! cookies, and applies the security headers every response carries.

mod admin_api;
mod browser;
mod connect;
mod dashboard;
mod error;
mod headers;
mod limits;
mod mcp;
mod oauth_endpoints;
mod pages;
mod registration;
mod sso;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use portcullis_crypto::MasterKey;
use portcullis_oauth::AuthorizationServer;
use tower_http::cors::{Any, CorsLayer};

pub use limits::LoginLimits;

/// What every handler can reach. axum hands each handler and middleware its own copy of the
/// state, so it is one pointer: cloning it is one atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Clone)]
pub struct Shared {
    pub server: AuthorizationServer,
    pub master: Arc<MasterKey>,
    pub limits: Arc<limits::LoginLimiter>,
    pub registration_limit: Arc<limits::RegistrationLimiter>,
    /// The issuer's path (`""` or `/tenant`), under which every endpoint is mounted.
    pub base_path: String,
    /// The issuer's origin, which `Origin` headers of form posts must equal.
    pub origin: String,
    /// Peers whose `X-Forwarded-For` is believed (RFC 9700 §4.13: only from trusted proxies).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// The MCP gateway, when any upstream is configured.
    pub gateway: Option<portcullis_gateway::Gateway>,
}

impl AppState {
    pub fn new(server: AuthorizationServer, master: Arc<MasterKey>, limits: LoginLimits) -> Self {
        let issuer = server.settings().issuer.clone();
        let (origin, base_path) = match url::Url::parse(&issuer) {
            Ok(u) => (u.origin().ascii_serialization(), u.path().trim_end_matches('/').to_owned()),
            Err(_) => (issuer.clone(), String::new()),
        };
        Self(Arc::new(Shared {
            server,
            master,
            registration_limit: Arc::new(limits::RegistrationLimiter::new(limits.registrations_per_address_per_minute)),
            limits: Arc::new(limits::LoginLimiter::new(limits)),
            base_path,
            origin,
            trusted_proxies: Arc::new(Vec::new()),
            gateway: None,
        }))
    }

    /// Serves the gateway's routes under `/mcp/`.
    pub fn with_gateway(mut self, gateway: portcullis_gateway::Gateway) -> Self {
        Arc::make_mut(&mut self.0).gateway = Some(gateway);
        self
    }

    /// Believes `X-Forwarded-For` from these peers.
    pub fn with_trusted_proxies(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        Arc::make_mut(&mut self.0).trusted_proxies = Arc::new(proxies);
        self
    }

    /// The address of whoever is really on the other end: the TCP peer, unless that is a
    /// trusted proxy, in which case the rightmost address in `X-Forwarded-For` that is not
    /// itself a trusted proxy.
    pub(crate) fn client_address(&self, peer: SocketAddr, headers: &http::HeaderMap) -> std::net::IpAddr {
        let trusted = |ip: &std::net::IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer.ip()) {
            return peer.ip();
        }
        let mut hops: Vec<std::net::IpAddr> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else { return peer.ip() };
            for part in text.split(',') {
                match part.trim().parse() {
                    Ok(ip) => hops.push(ip),
                    // A malformed chain cannot be trusted at all.
                    Err(_) => return peer.ip(),
                }
            }
        }
        hops.into_iter().rev().find(|ip| !trusted(ip)).unwrap_or(peer.ip())
    }
}

/// The complete router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// the login rate limits need the peer address.
pub fn router(state: AppState) -> Router {
    // Browser-based MCP clients call these cross-origin; the authorization endpoint and the
    // pages must not be readable cross-origin (RFC 9700 §2.6).
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([http::Method::GET, http::Method::POST])
        .allow_headers([http::header::AUTHORIZATION, http::header::CONTENT_TYPE, portcullis_gateway::VERSION_HEADER]);
    let api = Router::new()
        .route("/token", post(oauth_endpoints::token))
        .route("/introspect", post(oauth_endpoints::introspect))
        .route("/revoke", post(oauth_endpoints::revoke))
        .route("/jwks.json", get(oauth_endpoints::jwks))
        .route("/register", post(registration::register))
        .route("/register/{client_id}", get(registration::read).put(registration::update).delete(registration::delete))
        .route("/sso/{name}/backchannel-logout", post(sso::backchannel_logout))
        .layer(cors.clone());
    // Bearer tokens only, from tools and the dashboard's own server side: no CORS.
    let admin = Router::new()
        .route("/admin/api/openapi.json", get(admin_api::openapi))
        .route("/admin/api/v1/agents", get(admin_api::list_agents))
        .route("/admin/api/v1/agents/{client_id}", get(admin_api::get_agent).delete(admin_api::delete_agent))
        .route("/admin/api/v1/agents/{client_id}/approve", post(admin_api::approve_agent))
        .route("/admin/api/v1/agents/{client_id}/reject", post(admin_api::reject_agent))
        .route("/admin/api/v1/agents/{client_id}/grants", get(admin_api::agent_grants))
        .route("/admin/api/v1/agents/{client_id}/consents", get(admin_api::agent_consents))
        .route("/admin/api/v1/agents/{client_id}/tokens", get(admin_api::agent_tokens))
        .route("/admin/api/v1/users/{user_id}/consents", get(admin_api::user_consents))
        .route("/admin/api/v1/users/{user_id}/grants", get(admin_api::user_grants))
        .route("/admin/api/v1/users/{user_id}/tokens", get(admin_api::user_tokens))
        .route("/admin/api/v1/users/{user_id}/sessions", get(admin_api::user_sessions))
        .route("/admin/api/v1/agents/{client_id}/suspend", post(admin_api::suspend_agent))
        .route("/admin/api/v1/agents/{client_id}/resume", post(admin_api::resume_agent))
        .route("/admin/api/v1/agents/{client_id}/revoke-grants", post(admin_api::revoke_agent_grants))
        .route("/admin/api/v1/grants/{grant_id}/revoke", post(admin_api::revoke_grant))
        .route("/admin/api/v1/routes/{route}/revoke-grants", post(admin_api::revoke_route_grants))
        .route("/admin/api/v1/users", get(admin_api::list_users))
        .route("/admin/api/v1/users/{user_id}", get(admin_api::get_user))
        .route("/admin/api/v1/users/{user_id}/disable", post(admin_api::disable_user))
        .route("/admin/api/v1/users/{user_id}/enable", post(admin_api::enable_user))
        .route("/admin/api/v1/users/{user_id}/revoke-grants", post(admin_api::revoke_user_grants))
        .route("/admin/api/v1/routes", get(admin_api::list_routes))
        .route("/admin/api/v1/routes/{route}", get(admin_api::get_route))
        .route("/admin/api/v1/routes/{route}/holders", get(admin_api::route_holders))
        .route("/admin/api/v1/routes/{route}/connections", get(admin_api::route_connections))
        .route("/admin/api/v1/audit", get(admin_api::list_audit))
        .route("/admin/api/v1/audit/export", get(admin_api::export_audit));
    let pages = Router::new()
        .route("/", get(browser::home))
        .route("/authorize", get(browser::authorize_get).post(browser::authorize_post))
        .route("/authorize/continue", get(browser::authorize_continue))
        .route("/login", get(browser::login_page).post(browser::login_submit))
        .route("/login/discover", post(sso::discover))
        .route("/sso/{name}/start", get(sso::start))
        .route("/sso/{name}/callback", get(sso::callback))
        .route("/consent", get(browser::consent_page).post(browser::consent_submit))
        .route("/logout", post(browser::logout))
        .route("/account", get(browser::account))
        .route("/account/consents/revoke", post(browser::revoke_consent))
        .route("/account/upstreams/disconnect", post(browser::disconnect_upstream))
        .route("/connect/{route}", get(connect::page).post(connect::start))
        .route("/connect-callback", get(connect::callback))
        .route("/connect-client.json", get(connect::client_metadata))
        .route("/assets/portcullis.css", get(pages::stylesheet))
        .route("/assets/admin.js", get(dashboard::script))
        .route("/admin", get(dashboard::overview))
        .route("/admin/agents", get(dashboard::agents))
        .route("/admin/agents/{client_id}", get(dashboard::agent))
        .route("/admin/agents/{client_id}/{action}", get(dashboard::confirm_agent_action).post(dashboard::agent_action))
        .route("/admin/users", get(dashboard::users))
        .route("/admin/users/{user_id}", get(dashboard::user))
        .route("/admin/users/{user_id}/{action}", post(dashboard::user_action))
        .route("/admin/tools", get(dashboard::tools))
        .route("/admin/routes", get(dashboard::routes))
        .route("/admin/routes/{route}/holders", get(dashboard::holders))
        .route("/admin/grants/{grant_id}/revoke", post(dashboard::revoke_grant))
        .route("/admin/audit", get(dashboard::audit))
        .route("/admin/audit/tail", get(dashboard::audit_tail))
        .route("/admin/audit/export", get(dashboard::audit_export));
    let base = state.base_path.clone();
    let secure = state.server.settings().secure_cookies;
    let issuer_routes = api.merge(pages).merge(admin);
    let issuer_routes = if base.is_empty() { issuer_routes } else { Router::new().nest(&base, issuer_routes) };

    // Metadata: RFC 8414 (path-inserted for issuers with a path), OIDC discovery (both the
    // path-inserted form the MCP spec probes and the path-appended form OIDC defines).
    let mut well_known = Router::new()
        .route(&format!("/.well-known/oauth-authorization-server{base}"), get(oauth_endpoints::metadata))
        .route(&format!("/.well-known/openid-configuration{base}"), get(oauth_endpoints::metadata));
    if !base.is_empty() {
        well_known =
            well_known.route(&format!("{base}/.well-known/openid-configuration"), get(oauth_endpoints::metadata));
    }
    well_known = well_known
        .route(&format!("/.well-known/oauth-protected-resource{base}/mcp/{{route}}"), get(mcp::protected_resource))
        .route("/.well-known/oauth-protected-resource", get(mcp::protected_resource_root))
        .route(&format!("/.well-known/oauth-protected-resource{base}/admin/api"), get(admin_api::protected_resource));
    // The gateway sets its own body limit (gateway.max_request_bytes); everything else is
    // small forms and JSON.
    let gateway = Router::new().route(
        &format!("{base}/mcp/{{route}}"),
        axum::routing::post(mcp::post).get(mcp::get).delete(mcp::delete).fallback(mcp::other_method),
    );
    issuer_routes
        .merge(well_known.layer(cors))
        .fallback(pages::not_found)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
        .merge(gateway)
        // One middleware, not one per concern: each layer of `from_fn` costs every request
        // its own boxed future and service clones (three of them were a tenth of a gateway
        // call's time).
        .layer(axum::middleware::from_fn_with_state(
            Edge { gateway_prefix: format!("{base}/mcp/").into(), secure },
            edge,
        ))
        .with_state(state)
}

/// What the edge middleware needs to know: where gateway routes start (`<base>/mcp/`), and
/// whether the issuer is https.
#[derive(Clone)]
struct Edge {
    gateway_prefix: std::sync::Arc<str>,
    secure: bool,
}

/// Every request passes here once, in this order: it is measured (below); a request that
/// repeats a singleton header is refused (`headers::refuse_repeated`); the response, whoever
/// wrote it, gets the security headers (`headers::add_security_headers`).
///
/// Measured: counted by endpoint (the route template, never the path itself: paths carry
/// ids), method and status, with how long it took to answer (to the response's head). When
/// traces are on, the request is a span that continues the client's `traceparent`, and log
/// lines inside it carry its trace id.
async fn edge(
    axum::extract::State(edge): axum::extract::State<Edge>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    // The route template (an Arc inside: cloning it allocates nothing).
    let matched = request.extensions().get::<axum::extract::MatchedPath>().cloned();
    let endpoint = matched.as_ref().map_or("unmatched", axum::extract::MatchedPath::as_str);
    let method = request.method().clone();
    let span = portcullis_telemetry::span!(
        "request",
        otel.name = %format_args!("{method} {endpoint}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %endpoint,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    portcullis_telemetry::continue_trace(&span, request.headers());
    let mut response = match headers::refuse_repeated(&request, &edge.gateway_prefix) {
        Some(refusal) => refusal,
        None => next.run(request).instrument(span.clone()).await,
    };
    headers::add_security_headers(&mut response, edge.secure);
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    // The trace id is a field of the line itself too: a log filter that leaves the request's
    // span out (it is info level) must not lose it.
    match portcullis_telemetry::trace_id(&span) {
        Some(trace_id) => {
            span.in_scope(|| tracing::debug!(target: "portcullis::access", %trace_id, status, "answered"))
        }
        None => tracing::debug!(target: "portcullis::access", status, "answered"),
    }
    portcullis_telemetry::http_request(endpoint, method.as_str(), status, started.elapsed().as_secs_f64());
    response
}

/// The peer address, as the login limits see it.
pub(crate) type Peer = axum::extract::ConnectInfo<SocketAddr>;
