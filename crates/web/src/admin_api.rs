//! The admin API, `/admin/api/v1`: JSON, described by an OpenAPI 3.1 document generated from
//! these handlers (`/admin/api/openapi.json`).
//!
//! It is a resource server of Portcullis's own authorization server: the resource is
//! `<issuer>/admin/api`, reading needs `portcullis.admin.read`, changing needs
//! `portcullis.admin.write`. Only administrators can consent to those scopes, and only clients
//! an operator registered can hold them by client credentials (`oauth/src/admin.rs`); a user's
//! token also stops working here the moment they are no longer an administrator. There is no
//! other way in (no cookies, so no CSRF surface). Every change goes through a command of the
//! control layer, audited with the administrator (or the operator's client) as the actor.
#![allow(clippy::result_large_err)]

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use portcullis_control::{Actor, ControlError};
use portcullis_store::{ClientFilter, ClientRecord, ClientStatus, ClientType, RegistrationOrigin};
use portcullis_types::admin::{
    ADMIN_API_PATH, ADMIN_READ_SCOPE, ADMIN_WRITE_SCOPE, Agent, AgentPage, AgentStatus, ApiError, AuditEvent,
    AuditPage, Consent, Grant, Holder, HolderPage, Registration, Revoked, Route, RouteHealth, RouteItem,
    RouteTransport, Session, TokenFamily, UpstreamConnection, User, UserPage,
};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::{AppState, Peer};

/// Pages hold this many items unless asked for fewer.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        version = "1",
        description = "Every agent, user, grant, token and call. A bearer token of this server for the resource \
                       <issuer>/admin/api: portcullis.admin.read to read, portcullis.admin.write to change."
    ),
    paths(
        list_agents,
        get_agent,
        suspend_agent,
        resume_agent,
        list_users,
        get_user,
        disable_user,
        enable_user,
        revoke_user_grants,
        route_holders,
        route_connections,
        list_audit,
        export_audit,
        approve_agent,
        reject_agent,
        delete_agent,
        agent_grants,
        list_routes,
        get_route,
        revoke_grant,
        revoke_agent_grants,
        revoke_route_grants,
        agent_consents,
        agent_tokens,
        user_consents,
        user_grants,
        user_tokens,
        user_sessions
    ),
    components(schemas(
        Agent,
        AgentPage,
        AgentStatus,
        Registration,
        ApiError,
        User,
        UserPage,
        Holder,
        HolderPage,
        UpstreamConnection,
        Revoked,
        AuditEvent,
        AuditPage,
        Grant,
        Route,
        RouteHealth,
        RouteItem,
        RouteTransport,
        Consent,
        TokenFamily,
        Session
    )),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

/// The document's security scheme: OAuth 2.0 bearer tokens of this server.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token of this server for <issuer>/admin/api"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, with this server as its server.
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    let mut document = ApiDoc::openapi();
    document.servers = Some(vec![utoipa::openapi::Server::new(state.server.settings().issuer.clone())]);
    Json(document).into_response()
}

/// RFC 9728 metadata of the admin API.
pub(crate) async fn protected_resource(State(state): State<AppState>) -> Response {
    let settings = state.server.settings();
    Json(serde_json::json!({
        "resource": settings.admin_resource(),
        "authorization_servers": [settings.issuer],
        "scopes_supported": [ADMIN_READ_SCOPE, ADMIN_WRITE_SCOPE],
        "bearer_methods_supported": ["header"],
        "resource_name": "Portcullis administration",
    }))
    .into_response()
}

/// A refusal, as the API answers every one.
fn refusal(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    (status, Json(ApiError { error: error.to_owned(), error_description: description.into() })).into_response()
}

fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin API request failed");
    refusal(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the request failed; see the server's log")
}

/// Who is calling, once admitted.
struct Caller {
    actor: Actor,
}

/// A caller admitted with `portcullis.admin.read`; extracted before anything else of the
/// request, so an unadmitted request is refused (401/403) before its parameters are judged.
pub(crate) struct AdminRead;

/// A caller admitted with `portcullis.admin.write`: who acts, for the audit trail.
pub(crate) struct AdminWrite(Caller);

async fn admit(parts: &mut http::request::Parts, state: &AppState, scope: &str) -> Result<Caller, Response> {
    use axum::extract::FromRequestParts as _;
    let peer = Peer::from_request_parts(parts, state).await.map_err(|e| server_error(e.body_text()))?;
    let caller = state.admin_caller(peer, &parts.headers, scope).await?;
    // No id, name or filter holds a NUL (and PostgreSQL cannot even compare one): refused here,
    // once, rather than failing deep in a query.
    if parts.uri.to_string().to_ascii_lowercase().contains("%00") {
        return Err(refusal(StatusCode::BAD_REQUEST, "invalid_request", "the request holds a NUL character"));
    }
    Ok(caller)
}

impl axum::extract::FromRequestParts<AppState> for AdminRead {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &AppState) -> Result<Self, Response> {
        admit(parts, state, ADMIN_READ_SCOPE).await.map(|_| Self)
    }
}

impl axum::extract::FromRequestParts<AppState> for AdminWrite {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &AppState) -> Result<Self, Response> {
        admit(parts, state, ADMIN_WRITE_SCOPE).await.map(Self)
    }
}

/// A query string, or the refusal that says what in it does not parse.
fn parsed<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Response> {
    query.map(|Query(q)| q).map_err(|e| refusal(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))
}

impl AppState {
    fn admin_metadata_url(&self) -> String {
        let origin = url::Url::parse(&self.server.settings().issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        format!("{origin}/.well-known/oauth-protected-resource{}{ADMIN_API_PATH}", self.base_path)
    }

    /// A 401 or 403 with the RFC 6750 challenge that says what to get.
    fn admin_challenge(&self, status: StatusCode, error: Option<&str>, scope: &str, description: &str) -> Response {
        let mut response = refusal(status, error.unwrap_or("invalid_token"), description);
        let mut challenge = format!("Bearer resource_metadata=\"{}\", scope=\"{scope}\"", self.admin_metadata_url());
        if let Some(error) = error {
            challenge.push_str(&format!(", error=\"{error}\", error_description=\"{description}\""));
        }
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    /// Admits a caller holding `scope` for the admin API, or answers why not.
    async fn admin_caller(&self, peer: Peer, headers: &HeaderMap, scope: &str) -> Result<Caller, Response> {
        let values: Vec<&HeaderValue> = headers.get_all(header::AUTHORIZATION).iter().collect();
        let token = match values.as_slice() {
            [] => {
                return Err(self.admin_challenge(
                    StatusCode::UNAUTHORIZED,
                    None,
                    scope,
                    "this API needs a bearer token for the admin API",
                ));
            }
            [one] => one.to_str().ok().and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            }),
            _ => None,
        };
        let invalid = |why: &str| self.admin_challenge(StatusCode::UNAUTHORIZED, Some("invalid_token"), scope, why);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(invalid("send one Authorization: Bearer header"));
        };
        let active = match self.server.active_access_token(token).await {
            Ok(Some(active)) => active,
            Ok(None) => return Err(invalid("the token is not active")),
            Err(e) => return Err(server_error(e)),
        };
        if active.claims.aud != self.server.settings().admin_resource() {
            return Err(invalid("the token is not for the admin API"));
        }
        if !active.status.scope.contains(scope) {
            return Err(self.admin_challenge(
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                scope,
                &format!("this request needs the scope {scope}"),
            ));
        }
        let source = Some(self.client_address(peer.0, headers));
        let actor = match &active.status.user_id {
            Some(user_id) => {
                // A user's token works only while they are an administrator.
                let user = self.server.store().find_user(user_id).await.map_err(server_error)?;
                if !user.is_some_and(|u| u.is_admin && !u.is_disabled()) {
                    return Err(refusal(
                        StatusCode::FORBIDDEN,
                        "access_denied",
                        "the admin API is for administrators only",
                    ));
                }
                Actor::Administrator { user_id: user_id.clone(), source }
            }
            None => Actor::Client { client_id: active.claims.client_id.clone(), source },
        };
        Ok(Caller { actor })
    }
}

pub(crate) fn registration(origin: RegistrationOrigin) -> Registration {
    match origin {
        RegistrationOrigin::Admin => Registration::Operator,
        RegistrationOrigin::Config => Registration::Configuration,
        RegistrationOrigin::Dcr => Registration::Dynamic,
        RegistrationOrigin::Cimd => Registration::MetadataDocument,
        RegistrationOrigin::SoftwareStatement => Registration::SoftwareStatement,
    }
}

pub(crate) fn origin_of(registration: Registration) -> RegistrationOrigin {
    match registration {
        Registration::Operator => RegistrationOrigin::Admin,
        Registration::Configuration => RegistrationOrigin::Config,
        Registration::Dynamic => RegistrationOrigin::Dcr,
        Registration::MetadataDocument => RegistrationOrigin::Cimd,
        Registration::SoftwareStatement => RegistrationOrigin::SoftwareStatement,
    }
}

pub(crate) fn agent_status(status: ClientStatus) -> AgentStatus {
    match status {
        ClientStatus::Active => AgentStatus::Active,
        ClientStatus::Pending => AgentStatus::Pending,
        ClientStatus::Suspended => AgentStatus::Suspended,
    }
}

pub(crate) fn status_of(status: AgentStatus) -> ClientStatus {
    match status {
        AgentStatus::Active => ClientStatus::Active,
        AgentStatus::Pending => ClientStatus::Pending,
        AgentStatus::Suspended => ClientStatus::Suspended,
    }
}

pub(crate) fn agent(c: ClientRecord) -> Agent {
    let mut redirect_hosts: Vec<String> =
        c.redirect_uris.iter().filter_map(|u| url::Url::parse(u).ok()?.host_str().map(str::to_owned)).collect();
    redirect_hosts.sort();
    redirect_hosts.dedup();
    let host = |u: &str| url::Url::parse(u).ok().and_then(|u| u.host_str().map(str::to_owned));
    let owner = match c.origin {
        RegistrationOrigin::Cimd => host(&c.client_id),
        RegistrationOrigin::Admin | RegistrationOrigin::Config => None,
        RegistrationOrigin::Dcr | RegistrationOrigin::SoftwareStatement => c.client_uri.as_deref().and_then(host),
    };
    Agent {
        owner,
        registered_from: c.registered_from,
        registration: registration(c.origin),
        status: agent_status(c.status),
        client_type: match c.client_type {
            ClientType::Public => "public".into(),
            ClientType::Confidential => "confidential".into(),
        },
        grant_types: c.grant_types.iter().map(|g| g.as_str().to_owned()).collect(),
        redirect_hosts,
        verified: c.verified,
        created_at: c.created_at,
        last_used_at: c.last_used_at,
        client_name: c.client_name,
        client_id: c.client_id,
    }
}

/// Cursors are opaque to callers: the last id of a page, base64url.
fn cursor_of(client_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(client_id)
}

fn after_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok()
}

/// Where a page starts (after the cursor's id) and how long it is, or the refusal.
fn paging(cursor: Option<&str>, limit: Option<u32>) -> Result<(Option<String>, u32), Response> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(refusal(StatusCode::BAD_REQUEST, "invalid_request", format!("limit must be 1 to {MAX_PAGE}")));
    }
    match cursor.map(after_cursor) {
        Some(None) => Err(refusal(StatusCode::BAD_REQUEST, "invalid_request", "the cursor is not one this API gave")),
        Some(Some(after)) => Ok((Some(after), limit)),
        None => Ok((None, limit)),
    }
}

/// Cuts a page fetched with one item more than `limit`, and says where the next one starts.
fn page_of<T>(mut found: Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let next = if more { found.last().map(|last| cursor_of(id(last))) } else { None };
    (found, next)
}

/// What a list of agents shows.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AgentQuery {
    /// Only agents with this status.
    status: Option<AgentStatus>,
    /// Only agents registered this way.
    registration: Option<Registration>,
    /// Only verified (or only unverified) agents.
    verified: Option<bool>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// At most this many (1 to 200; default 50).
    limit: Option<u32>,
}

/// Every agent, by client id, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/api/v1/agents",
    params(AgentQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of agents", body = AgentPage),
        (status = 400, description = "A filter or cursor that does not parse", body = ApiError),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn list_agents(
    State(state): State<AppState>,
    _: AdminRead,
    query: Result<Query<AgentQuery>, QueryRejection>,
) -> Response {
    let q = match parsed(query) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (after, limit) = match paging(q.cursor.as_deref(), q.limit) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let filter =
        ClientFilter { status: q.status.map(status_of), origin: q.registration.map(origin_of), verified: q.verified };
    let found = match state.server.store().clients_page(&filter, after.as_deref(), i64::from(limit) + 1).await {
        Ok(found) => found,
        Err(e) => return server_error(e),
    };
    let (found, next_cursor) = page_of(found, limit, |c| &c.client_id);
    Json(AgentPage { items: found.into_iter().map(agent).collect(), next_cursor }).into_response()
}

/// One agent.
#[utoipa::path(
    get,
    path = "/admin/api/v1/agents/{client_id}",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn get_agent(State(state): State<AppState>, _: AdminRead, Path(client_id): Path<String>) -> Response {
    found_agent(&state, &client_id).await
}

async fn found_agent(state: &AppState, client_id: &str) -> Response {
    match state.server.store().find_client(client_id).await {
        Ok(Some(c)) => Json(agent(c)).into_response(),
        Ok(None) => refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no agent {client_id:?}")),
        Err(e) => server_error(e),
    }
}

/// The kill switch: the agent is refused everywhere at once, and every grant it holds is revoked.
#[utoipa::path(
    post,
    path = "/admin/api/v1/agents/{client_id}/suspend",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent, suspended", body = Agent),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn suspend_agent(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(client_id): Path<String>,
) -> Response {
    changed(&state, &client_id, state.server.control().suspend_client(&caller.actor, &client_id).await).await
}

/// Lets a suspended agent act again (its revoked grants stay revoked: users authorize it anew).
#[utoipa::path(
    post,
    path = "/admin/api/v1/agents/{client_id}/resume",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent, active", body = Agent),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn resume_agent(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(client_id): Path<String>,
) -> Response {
    changed(&state, &client_id, state.server.control().resume_client(&caller.actor, &client_id).await).await
}

async fn changed(state: &AppState, client_id: &str, outcome: Result<(), ControlError>) -> Response {
    match outcome {
        Ok(()) => found_agent(state, client_id).await,
        Err(e) => agent_refusal(client_id, e),
    }
}

fn agent_refusal(client_id: &str, e: ControlError) -> Response {
    match e {
        ControlError::ClientNotFound(_) => {
            refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no agent {client_id:?}"))
        }
        e @ ControlError::NotPending { .. } => refusal(StatusCode::CONFLICT, "not_pending", e.to_string()),
        e => server_error(e),
    }
}

/// Admits an agent waiting in the approval queue.
#[utoipa::path(
    post,
    path = "/admin/api/v1/agents/{client_id}/approve",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent, active", body = Agent),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
        (status = 409, description = "The agent is not waiting for approval", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn approve_agent(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(client_id): Path<String>,
) -> Response {
    changed(&state, &client_id, state.server.control().approve_client(&caller.actor, &client_id).await).await
}

/// Turns away an agent waiting in the approval queue; it is removed.
#[utoipa::path(
    post,
    path = "/admin/api/v1/agents/{client_id}/reject",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Rejected and removed"),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
        (status = 409, description = "The agent is not waiting for approval", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn reject_agent(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(client_id): Path<String>,
) -> Response {
    match state.server.control().reject_client(&caller.actor, &client_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => agent_refusal(&client_id, e),
    }
}

/// Removes an agent and everything it holds: grants, tokens, consents.
#[utoipa::path(
    delete,
    path = "/admin/api/v1/agents/{client_id}",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn delete_agent(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(client_id): Path<String>,
) -> Response {
    match state.server.control().delete_client(&caller.actor, &client_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => agent_refusal(&client_id, e),
    }
}

/// Every grant an agent holds or held, newest first (revoked ones say when and why).
#[utoipa::path(
    get,
    path = "/admin/api/v1/agents/{client_id}/grants",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent's grants", body = [Grant]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn agent_grants(
    State(state): State<AppState>,
    _: AdminRead,
    Path(client_id): Path<String>,
) -> Response {
    if let Err(r) = known_agent(&state, &client_id).await {
        return r;
    }
    listed(state.server.store().list_grants(Some(&client_id), None).await, grant_view)
}

pub(crate) fn grant_view(g: portcullis_store::GrantRecord) -> Grant {
    Grant {
        grant_id: g.id,
        client_id: g.client_id,
        user_id: g.user_id,
        kind: g.kind.as_str().to_owned(),
        resource: g.resource,
        scope: g.scope.to_string(),
        created_at: g.created_at,
        expires_at: g.expires_at,
        revoked_at: g.revoked_at,
        revoked_reason: g.revoked_reason,
    }
}

// ---- users ----

pub(crate) async fn user_view(state: &AppState, u: portcullis_store::UserRecord) -> Result<User, Response> {
    let identities = state.server.store().federated_identities_of(&u.id).await.map_err(server_error)?;
    let mut groups: Vec<String> = identities.iter().flat_map(|i| i.groups.iter().cloned()).collect();
    groups.sort();
    groups.dedup();
    Ok(User {
        disabled: u.is_disabled(),
        groups,
        identity_providers: identities.into_iter().map(|i| i.idp).collect(),
        user_id: u.id,
        username: u.username,
        display_name: u.display_name,
        email: u.email,
        administrator: u.is_admin,
        created_at: u.created_at,
    })
}

/// What a list of users shows.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserQuery {
    /// Only disabled (or only enabled) users.
    disabled: Option<bool>,
    /// Only administrators (or only the others).
    administrator: Option<bool>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// At most this many (1 to 200; default 50).
    limit: Option<u32>,
}

/// Every user, by id, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/api/v1/users",
    params(UserQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "A filter or cursor that does not parse", body = ApiError),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    _: AdminRead,
    query: Result<Query<UserQuery>, QueryRejection>,
) -> Response {
    let q = match parsed(query) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (after, limit) = match paging(q.cursor.as_deref(), q.limit) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let store = state.server.store();
    let found = match store.users_page(q.disabled, q.administrator, after.as_deref(), i64::from(limit) + 1).await {
        Ok(found) => found,
        Err(e) => return server_error(e),
    };
    let (found, next_cursor) = page_of(found, limit, |u| &u.id);
    let mut items = Vec::with_capacity(found.len());
    for u in found {
        match user_view(&state, u).await {
            Ok(view) => items.push(view),
            Err(r) => return r,
        }
    }
    Json(UserPage { items, next_cursor }).into_response()
}

async fn found_user(state: &AppState, user_id: &str) -> Response {
    match state.server.store().find_user(user_id).await {
        Ok(Some(u)) => match user_view(state, u).await {
            Ok(view) => Json(view).into_response(),
            Err(r) => r,
        },
        Ok(None) => refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no user {user_id:?}")),
        Err(e) => server_error(e),
    }
}

/// One user.
#[utoipa::path(
    get,
    path = "/admin/api/v1/users/{user_id}",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn get_user(State(state): State<AppState>, _: AdminRead, Path(user_id): Path<String>) -> Response {
    found_user(&state, &user_id).await
}

/// Disables (or enables) a user: every token of theirs stops at once, their sessions end and
/// their upstream accounts are forgotten; enabling lets them sign in again.
async fn set_disabled(state: AppState, caller: Caller, user_id: String, disabled: bool) -> Response {
    let username = match state.server.store().find_user(&user_id).await {
        Ok(Some(u)) => u.username,
        Ok(None) => return refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no user {user_id:?}")),
        Err(e) => return server_error(e),
    };
    let control = state.server.control();
    let outcome = if disabled {
        control.disable_user(&caller.actor, &username).await
    } else {
        control.enable_user(&caller.actor, &username).await
    };
    match outcome {
        Ok(_) => found_user(&state, &user_id).await,
        Err(ControlError::UserNotFound(_)) => {
            refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no user {user_id:?}"))
        }
        Err(e) => server_error(e),
    }
}

/// Disables a user: refused everywhere at once.
#[utoipa::path(
    post,
    path = "/admin/api/v1/users/{user_id}/disable",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user, disabled", body = User),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(user_id): Path<String>,
) -> Response {
    set_disabled(state, caller, user_id, true).await
}

/// Enables a disabled user.
#[utoipa::path(
    post,
    path = "/admin/api/v1/users/{user_id}/enable",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user, enabled", body = User),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn enable_user(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(user_id): Path<String>,
) -> Response {
    set_disabled(state, caller, user_id, false).await
}

/// Revokes every grant a user gave, to every agent, and every token of theirs.
#[utoipa::path(
    post,
    path = "/admin/api/v1/users/{user_id}/revoke-grants",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many grants were revoked", body = Revoked),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn revoke_user_grants(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(user_id): Path<String>,
) -> Response {
    if let Err(r) = known_user(&state, &user_id).await {
        return r;
    }
    revoke(&state, &caller, portcullis_store::GrantSelector::User(user_id)).await
}

// ---- who holds what ----

/// Which grants on a route to show.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HolderQuery {
    /// Only grants whose scopes let them call this tool (as the route's policy decides).
    tool: Option<String>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// At most this many (1 to 200; default 50).
    limit: Option<u32>,
}

/// Who holds what on a route: the live grants that reach it now (and, for a tool, those whose
/// scopes let them call it), with whom they act for and when they were last used.
#[utoipa::path(
    get,
    path = "/admin/api/v1/routes/{route}/holders",
    params(("route" = String, Path, description = "The gateway route"), HolderQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of live grants", body = HolderPage),
        (status = 400, description = "A filter or cursor that does not parse", body = ApiError),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such route", body = ApiError),
    ),
    tag = "who holds what"
)]
pub(crate) async fn route_holders(
    State(state): State<AppState>,
    _: AdminRead,
    Path(route): Path<String>,
    query: Result<Query<HolderQuery>, QueryRejection>,
) -> Response {
    let q = match parsed(query) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (after, limit) = match paging(q.cursor.as_deref(), q.limit) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some((resource, policy)) = state.gateway.as_ref().and_then(|g| g.route_policy(&route)) else {
        return refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no route {route:?}"));
    };
    let store = state.server.store();
    let now = state.server.now();
    // A page is cut from live grants in id order; with a tool, the policy keeps those that
    // may call it, so a page may hold fewer than `limit` and still have a next one.
    let found = match store.live_grants_page(&resource, now, after.as_deref(), i64::from(limit) + 1).await {
        Ok(found) => found,
        Err(e) => return server_error(e),
    };
    let (found, next_cursor) = page_of(found, limit, |live| &live.grant.id);
    let items = found
        .into_iter()
        .filter(|live| {
            q.tool.as_deref().is_none_or(|tool| {
                policy.decide(&live.grant.scope, portcullis_authz::Operation::CallTool(tool)).is_allowed()
            })
        })
        .map(|live| Holder {
            grant_id: live.grant.id,
            user_id: live.grant.user_id,
            username: live.username,
            client_id: live.grant.client_id,
            scope: live.grant.scope.to_string(),
            since: live.grant.created_at,
            expires_at: live.grant.expires_at,
            last_token_at: live.last_token_at,
        })
        .collect();
    Json(HolderPage { route, tool: q.tool, items, next_cursor }).into_response()
}

/// The users who connected their own account at a route's upstream (the token vault).
#[utoipa::path(
    get,
    path = "/admin/api/v1/routes/{route}/connections",
    params(("route" = String, Path, description = "The gateway route")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every connected account, never its tokens", body = [UpstreamConnection]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such route", body = ApiError),
    ),
    tag = "who holds what"
)]
pub(crate) async fn route_connections(
    State(state): State<AppState>,
    _: AdminRead,
    Path(route): Path<String>,
) -> Response {
    if state.gateway.as_ref().and_then(|g| g.route_policy(&route)).is_none() {
        return refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no route {route:?}"));
    }
    match state.server.store().upstream_connections(Some(&route)).await {
        Ok(rows) => Json(
            rows.into_iter()
                .map(|r| UpstreamConnection {
                    user_id: r.user_id,
                    route: r.route,
                    issuer: r.issuer,
                    subject: r.subject,
                    scope: r.scope.to_string(),
                    connected_at: r.updated_at,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => server_error(e),
    }
}

// ---- the audit trail ----

/// Which records of the audit trail to show.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Unix seconds: from (inclusive).
    pub(crate) from: Option<i64>,
    /// Unix seconds: to (exclusive).
    pub(crate) to: Option<i64>,
    /// Kinds, comma-separated (`mcp.message`, `client.suspended`, ...).
    pub(crate) kind: Option<String>,
    /// A user id or username.
    pub(crate) user: Option<String>,
    /// A client id.
    pub(crate) client: Option<String>,
    pub(crate) route: Option<String>,
    /// The tool (or prompt, or resource) a gateway decision named.
    pub(crate) tool: Option<String>,
    /// `allowed`, `denied`, `succeeded` or `failed`.
    pub(crate) decision: Option<String>,
    /// The `next_cursor` of the page before (list only).
    pub(crate) cursor: Option<String>,
    /// At most this many (1 to 200; default 50; list only).
    pub(crate) limit: Option<u32>,
    /// `jsonl` (default) or `csv` (export only).
    pub(crate) format: Option<String>,
}

/// The store's filter for a query, or what in it does not parse.
pub(crate) fn audit_filter(q: &AuditQuery) -> Result<portcullis_store::AuditFilter, String> {
    let mut kinds = Vec::new();
    for name in q.kind.iter().flat_map(|k| k.split(',')).map(str::trim).filter(|k| !k.is_empty()) {
        kinds.push(portcullis_store::AuditKind::parse(name).ok_or_else(|| format!("there is no kind {name:?}"))?);
    }
    let outcome = match q.decision.as_deref() {
        None => None,
        Some(d) => Some(
            portcullis_store::AuditOutcome::parse(d)
                .ok_or_else(|| format!("decision must be allowed, denied, succeeded or failed, not {d:?}"))?,
        ),
    };
    Ok(portcullis_store::AuditFilter {
        kinds,
        user: q.user.clone(),
        client_id: q.client.clone(),
        from: q.from,
        to: q.to,
        route: q.route.clone(),
        target: q.tool.clone(),
        outcome,
    })
}

pub(crate) fn audit_view(record: portcullis_store::AuditEventRecord) -> AuditEvent {
    let e = record.event;
    AuditEvent {
        id: record.id,
        occurred_at: e.occurred_at,
        kind: e.kind.as_str().to_owned(),
        actor: e.actor,
        source_address: e.source_address,
        route: e.route,
        method: e.method,
        target: e.target,
        outcome: e.outcome.as_str().to_owned(),
        reason: e.reason,
        user_id: e.user_id,
        username: e.username,
        client_id: e.client_id,
        issuer: e.issuer,
        status: e.status,
        latency_ms: e.latency_ms,
    }
}

/// The audit trail, newest first, searched by time, kind, user, client, route, tool and
/// decision.
#[utoipa::path(
    get,
    path = "/admin/api/v1/audit",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of records, newest first", body = AuditPage),
        (status = 400, description = "A filter or cursor that does not parse", body = ApiError),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
    ),
    tag = "audit"
)]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    _: AdminRead,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let q = match parsed(query) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (before, limit) = match paging(q.cursor.as_deref(), q.limit) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let before = match before.map(|b| b.parse::<i64>()) {
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return refusal(StatusCode::BAD_REQUEST, "invalid_request", "the cursor is not one this API gave");
        }
        None => None,
    };
    let filter = match audit_filter(&q) {
        Ok(f) => f,
        Err(why) => return refusal(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let found = match state.server.store().audit_events_before(before, i64::from(limit) + 1, &filter).await {
        Ok(found) => found,
        Err(e) => return server_error(e),
    };
    let ids: Vec<String> = found.iter().map(|r| r.id.to_string()).collect();
    let (found, next_cursor) = {
        let more = found.len() > limit as usize;
        let mut found = found;
        found.truncate(limit as usize);
        let next = if more { ids.get(limit as usize - 1).map(|id| cursor_of(id)) } else { None };
        (found, next)
    };
    Json(AuditPage { items: found.into_iter().map(audit_view).collect(), next_cursor }).into_response()
}

/// Rows read per step of an export: the export streams, so memory stays bounded.
const EXPORT_STEP: i64 = 1000;
const CSV_COLUMNS: [&str; 16] = [
    "id",
    "occurred_at",
    "kind",
    "actor",
    "source_address",
    "route",
    "method",
    "target",
    "outcome",
    "reason",
    "user_id",
    "username",
    "client_id",
    "issuer",
    "status",
    "latency_ms",
];

fn csv_line(row: Option<&AuditEvent>) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    match row {
        None => writer.write_record(CSV_COLUMNS)?,
        Some(e) => {
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
            writer.write_record([
                e.id.to_string(),
                e.occurred_at.to_string(),
                e.kind.clone(),
                opt(&e.actor),
                opt(&e.source_address),
                opt(&e.route),
                opt(&e.method),
                opt(&e.target),
                e.outcome.clone(),
                opt(&e.reason),
                opt(&e.user_id),
                opt(&e.username),
                opt(&e.client_id),
                opt(&e.issuer),
                num(e.status),
                num(e.latency_ms),
            ])?
        }
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// The audit trail as a file, oldest first: JSON lines (one record per line) or CSV, streamed
/// (bounded memory whatever its length), with the same filters as the list.
#[utoipa::path(
    get,
    path = "/admin/api/v1/audit/export",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every matching record, oldest first: JSON lines, or CSV with format=csv",
         content((String = "application/jsonl"), (String = "text/csv"))),
        (status = 400, description = "A filter or format that does not parse", body = ApiError),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
    ),
    tag = "audit"
)]
pub(crate) async fn export_audit(
    State(state): State<AppState>,
    _: AdminRead,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let q = match parsed(query) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(other) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("format must be jsonl or csv, not {other:?}"),
            );
        }
    };
    if q.cursor.is_some() || q.limit.is_some() {
        return refusal(StatusCode::BAD_REQUEST, "invalid_request", "an export has no cursor or limit: it is whole");
    }
    let filter = match audit_filter(&q) {
        Ok(f) => f,
        Err(why) => return refusal(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    export(state.server.store().clone(), filter, csv)
}

/// The audit records `filter` matches as a file, oldest first, streamed in steps (bounded
/// memory whatever their number): JSON lines, or CSV.
pub(crate) fn export(store: portcullis_store::Store, filter: portcullis_store::AuditFilter, csv: bool) -> Response {
    struct Export {
        store: portcullis_store::Store,
        filter: portcullis_store::AuditFilter,
        after: i64,
        header: bool,
        done: bool,
    }
    let start = Export { store, filter, after: 0, header: csv, done: false };
    let chunks = futures_util::stream::unfold(start, move |mut st| async move {
        if st.header {
            st.header = false;
            return Some((csv_line(None).map(axum::body::Bytes::from).map_err(std::io::Error::other), st));
        }
        if st.done {
            return None;
        }
        let page = match st.store.audit_events(Some(st.after), EXPORT_STEP, &st.filter).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "audit export failed");
                st.done = true;
                return Some((Err(std::io::Error::other("the audit export failed; see the server's log")), st));
            }
        };
        if page.is_empty() {
            return None;
        }
        st.done = (page.len() as i64) < EXPORT_STEP;
        st.after = page.last().map_or(st.after, |r| r.id);
        let mut chunk = Vec::new();
        for record in page {
            let view = audit_view(record);
            let line = if csv {
                csv_line(Some(&view)).map_err(std::io::Error::other)
            } else {
                serde_json::to_vec(&view)
                    .map(|mut v| {
                        v.push(b'\n');
                        v
                    })
                    .map_err(std::io::Error::other)
            };
            match line {
                Ok(bytes) => chunk.extend_from_slice(&bytes),
                Err(e) => return Some((Err(e), st)),
            }
        }
        Some((Ok(axum::body::Bytes::from(chunk)), st))
    });
    let (content_type, name) =
        if csv { ("text/csv; charset=utf-8", "audit.csv") } else { ("application/jsonl", "audit.jsonl") };
    let mut response = axum::body::Body::from_stream(chunks).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

// ---- routes ----

fn requirement_view(requirement: portcullis_authz::Requirement<'_>) -> (Option<String>, &'static str) {
    use portcullis_authz::Requirement;
    match requirement {
        Requirement::Protocol => (Some(String::new()), "mapped"),
        Requirement::Mapped(scopes) => (Some(scopes.to_string()), "mapped"),
        Requirement::Unmapped(Some(scopes)) => (Some(scopes.to_string()), "unmapped_allowed"),
        Requirement::Unmapped(None) => (None, "unmapped"),
        Requirement::Confusable { .. } => (None, "confusable"),
    }
}

#[derive(Clone, Copy)]
enum ItemKind {
    Tool,
    Prompt,
    Resource,
}

/// The items of one kind: every name the policy maps and every name the upstream offered.
fn route_items(
    policy: &portcullis_authz::Policy,
    mapped: impl Iterator<Item = String>,
    offered: &std::collections::BTreeMap<String, i64>,
    kind: ItemKind,
) -> Vec<RouteItem> {
    use portcullis_authz::Operation;
    let operation = |name: &str| -> (Option<String>, &'static str) {
        requirement_view(policy.requirement(match kind {
            ItemKind::Tool => Operation::CallTool(name),
            ItemKind::Prompt => Operation::GetPrompt(name),
            ItemKind::Resource => Operation::ReadResource(name),
        }))
    };
    let mut names: std::collections::BTreeSet<String> = mapped.collect();
    names.extend(offered.keys().cloned());
    names
        .into_iter()
        .map(|name| {
            let (scopes, mapping) = operation(&name);
            RouteItem { scopes, mapping: mapping.to_owned(), last_listed_at: offered.get(&name).copied(), name }
        })
        .collect()
}

/// A route as the admin API and the dashboard show it.
pub(crate) fn route_view(o: portcullis_gateway::RouteOverview) -> Route {
    let policy = &*o.policy;
    let tools = route_items(policy, policy.tools().map(|(n, _)| n.to_owned()), &o.offered.tools, ItemKind::Tool);
    let prompts =
        route_items(policy, policy.prompts().map(|(n, _)| n.to_owned()), &o.offered.prompts, ItemKind::Prompt);
    let resources = route_items(policy, policy.resources().map(|(p, _)| p), &o.offered.resources, ItemKind::Resource);
    let unmapped_tools = tools
        .iter()
        .filter(|t| t.last_listed_at.is_some() && matches!(t.mapping.as_str(), "unmapped" | "confusable"))
        .map(|t| t.name.clone())
        .collect();
    let health = RouteHealth {
        state: match (o.health.failing(), o.health.last_ok_at) {
            (true, _) => "failing",
            (false, Some(_)) => "up",
            (false, None) => "unknown",
        }
        .to_owned(),
        last_ok_at: o.health.last_ok_at,
        last_error_at: o.health.last_error_at,
        last_error: o.health.last_error,
    };
    Route {
        name: o.name,
        resource: o.resource,
        transport: match o.transport {
            portcullis_gateway::Transport::Stdio => RouteTransport::Stdio,
            portcullis_gateway::Transport::StreamableHttp => RouteTransport::StreamableHttp,
            portcullis_gateway::Transport::LegacySse => RouteTransport::LegacySse,
        },
        upstream: o.upstream,
        authentication: o.authentication,
        upstream_auth: o.upstream_auth.to_owned(),
        health,
        tools,
        prompts,
        resources,
        unmapped_tools,
        truncated: o.offered.truncated,
    }
}

/// Every route, its upstream's transport and health, and the tools, prompts and resources it
/// offers (as last seen in a list answer) with the scopes each needs; tools no policy maps are
/// flagged.
#[utoipa::path(
    get,
    path = "/admin/api/v1/routes",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every route, by name", body = [Route]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
    ),
    tag = "routes"
)]
pub(crate) async fn list_routes(State(state): State<AppState>, _: AdminRead) -> Response {
    let routes: Vec<Route> =
        state.gateway.as_ref().map(|g| g.route_overviews().into_iter().map(route_view).collect()).unwrap_or_default();
    Json(routes).into_response()
}

/// One route.
#[utoipa::path(
    get,
    path = "/admin/api/v1/routes/{route}",
    params(("route" = String, Path, description = "The gateway route")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The route", body = Route),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such route", body = ApiError),
    ),
    tag = "routes"
)]
pub(crate) async fn get_route(State(state): State<AppState>, _: AdminRead, Path(route): Path<String>) -> Response {
    let found = state.gateway.as_ref().and_then(|g| g.route_overviews().into_iter().find(|o| o.name == route));
    match found {
        Some(o) => Json(route_view(o)).into_response(),
        None => refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no route {route:?}")),
    }
}

// ---- revocation ----

/// Revokes the grants `selector` picks, as the administrator.
async fn revoke(state: &AppState, caller: &Caller, selector: portcullis_store::GrantSelector) -> Response {
    match state
        .server
        .control()
        .revoke_grants(&caller.actor, selector, portcullis_control::RevocationReason::AdministratorRequest)
        .await
    {
        Ok(revoked) => Json(Revoked { revoked }).into_response(),
        Err(e) => server_error(e),
    }
}

/// Revokes one grant (its tokens stop at once, on every node).
#[utoipa::path(
    post,
    path = "/admin/api/v1/grants/{grant_id}/revoke",
    params(("grant_id" = String, Path, description = "The grant's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many grants were revoked (0 when it was revoked before)", body = Revoked),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such grant", body = ApiError),
    ),
    tag = "who holds what"
)]
pub(crate) async fn revoke_grant(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(grant_id): Path<String>,
) -> Response {
    match state.server.store().find_grant(&grant_id).await {
        Ok(Some(_)) => revoke(&state, &caller, portcullis_store::GrantSelector::Grant(grant_id)).await,
        Ok(None) => refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no grant {grant_id:?}")),
        Err(e) => server_error(e),
    }
}

/// Revokes every grant an agent holds; unlike suspending, it may be authorized again.
#[utoipa::path(
    post,
    path = "/admin/api/v1/agents/{client_id}/revoke-grants",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many grants were revoked", body = Revoked),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn revoke_agent_grants(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(client_id): Path<String>,
) -> Response {
    if let Err(r) = known_agent(&state, &client_id).await {
        return r;
    }
    revoke(&state, &caller, portcullis_store::GrantSelector::Client(client_id)).await
}

/// Revokes every grant for a route: nobody can call it until they are authorized again.
#[utoipa::path(
    post,
    path = "/admin/api/v1/routes/{route}/revoke-grants",
    params(("route" = String, Path, description = "The gateway route")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many grants were revoked", body = Revoked),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.write", body = ApiError),
        (status = 404, description = "No such route", body = ApiError),
    ),
    tag = "who holds what"
)]
pub(crate) async fn revoke_route_grants(
    State(state): State<AppState>,
    AdminWrite(caller): AdminWrite,
    Path(route): Path<String>,
) -> Response {
    match state.gateway.as_ref().and_then(|g| g.route_policy(&route)) {
        Some((resource, _)) => revoke(&state, &caller, portcullis_store::GrantSelector::Resource(resource)).await,
        None => refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no route {route:?}")),
    }
}

// ---- what an agent or a user holds ----

pub(crate) fn consent_view(c: portcullis_store::ConsentRecord) -> Consent {
    Consent {
        user_id: c.user_id,
        client_id: c.client_id,
        resource: c.resource,
        scope: c.scope.to_string(),
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

pub(crate) fn family_view(f: portcullis_store::TokenFamily) -> TokenFamily {
    TokenFamily {
        grant_id: f.grant.id,
        client_id: f.grant.client_id,
        user_id: f.grant.user_id,
        resource: f.grant.resource,
        scope: f.grant.scope.to_string(),
        refresh_token_expires_at: f.refresh_expires_at,
        live_access_tokens: f.live_access_tokens,
        last_issued_at: f.last_issued_at,
    }
}

/// 404 unless the agent exists.
async fn known_agent(state: &AppState, client_id: &str) -> Result<(), Response> {
    match state.server.store().find_client(client_id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no agent {client_id:?}"))),
        Err(e) => Err(server_error(e)),
    }
}

/// 404 unless the user exists.
async fn known_user(state: &AppState, user_id: &str) -> Result<(), Response> {
    match state.server.store().find_user(user_id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(refusal(StatusCode::NOT_FOUND, "not_found", format!("there is no user {user_id:?}"))),
        Err(e) => Err(server_error(e)),
    }
}

/// A list read from the store, or the refusal.
fn listed<R, T: serde::Serialize>(
    found: Result<Vec<R>, portcullis_store::StoreError>,
    view: impl Fn(R) -> T,
) -> Response {
    match found {
        Ok(rows) => Json(rows.into_iter().map(view).collect::<Vec<T>>()).into_response(),
        Err(e) => server_error(e),
    }
}

/// Every user's remembered consent to an agent.
#[utoipa::path(
    get,
    path = "/admin/api/v1/agents/{client_id}/consents",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Its consents", body = [Consent]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn agent_consents(
    State(state): State<AppState>,
    _: AdminRead,
    Path(client_id): Path<String>,
) -> Response {
    if let Err(r) = known_agent(&state, &client_id).await {
        return r;
    }
    listed(state.server.store().consents_to_client(&client_id).await, consent_view)
}

/// An agent's live token families: each live grant, its refresh token and live access tokens.
#[utoipa::path(
    get,
    path = "/admin/api/v1/agents/{client_id}/tokens",
    params(("client_id" = String, Path, description = "The agent's client id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Its live token families, newest first", body = [TokenFamily]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such agent", body = ApiError),
    ),
    tag = "agents"
)]
pub(crate) async fn agent_tokens(
    State(state): State<AppState>,
    _: AdminRead,
    Path(client_id): Path<String>,
) -> Response {
    if let Err(r) = known_agent(&state, &client_id).await {
        return r;
    }
    let found =
        state.server.store().token_families(portcullis_store::FamiliesOf::Client(&client_id), state.server.now()).await;
    listed(found, family_view)
}

/// A user's remembered consents.
#[utoipa::path(
    get,
    path = "/admin/api/v1/users/{user_id}/consents",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their consents", body = [Consent]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn user_consents(
    State(state): State<AppState>,
    _: AdminRead,
    Path(user_id): Path<String>,
) -> Response {
    if let Err(r) = known_user(&state, &user_id).await {
        return r;
    }
    listed(state.server.store().list_consents(&user_id).await, consent_view)
}

/// Every grant a user made or makes, newest first (revoked ones say when and why).
#[utoipa::path(
    get,
    path = "/admin/api/v1/users/{user_id}/grants",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their grants", body = [Grant]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn user_grants(State(state): State<AppState>, _: AdminRead, Path(user_id): Path<String>) -> Response {
    if let Err(r) = known_user(&state, &user_id).await {
        return r;
    }
    listed(state.server.store().list_grants(None, Some(&user_id)).await, grant_view)
}

/// The live token families of the agents a user allowed.
#[utoipa::path(
    get,
    path = "/admin/api/v1/users/{user_id}/tokens",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their live token families, newest first", body = [TokenFamily]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn user_tokens(State(state): State<AppState>, _: AdminRead, Path(user_id): Path<String>) -> Response {
    if let Err(r) = known_user(&state, &user_id).await {
        return r;
    }
    let found =
        state.server.store().token_families(portcullis_store::FamiliesOf::User(&user_id), state.server.now()).await;
    listed(found, family_view)
}

/// A user's live browser sessions at Portcullis (never their ids).
#[utoipa::path(
    get,
    path = "/admin/api/v1/users/{user_id}/sessions",
    params(("user_id" = String, Path, description = "The user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their live sessions, newest first", body = [Session]),
        (status = 401, description = "No token, or not an active token for the admin API", body = ApiError),
        (status = 403, description = "Not an administrator, or without portcullis.admin.read", body = ApiError),
        (status = 404, description = "No such user", body = ApiError),
    ),
    tag = "users"
)]
pub(crate) async fn user_sessions(
    State(state): State<AppState>,
    _: AdminRead,
    Path(user_id): Path<String>,
) -> Response {
    if let Err(r) = known_user(&state, &user_id).await {
        return r;
    }
    let found = state.server.store().sessions_of_user(&user_id, state.server.now()).await;
    listed(found, session_view)
}

pub(crate) fn session_view(s: portcullis_store::SessionSummary) -> Session {
    Session {
        created_at: s.created_at,
        expires_at: s.expires_at,
        auth_time: s.auth_time,
        identity_provider: s.identity_provider,
    }
}
