//! Connecting a user's own account at an upstream MCP server (the token vault): the page that
//! explains what is being connected, the start of the upstream's authorization, its callback,
//! and Portcullis's own Client ID Metadata Document for upstreams that accept them.
//!
//! What the callback must find again (the route, the user, `state` and the PKCE verifier)
//! travels in one cookie sealed by the master key with the browser's own cookie as associated
//! data, as for single sign-on: another browser cannot use it, and any node can finish. The
//! callback is refused unless the signed-in user is the one who started: two users'
//! connection flows cannot be crossed.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use portcullis_gateway::VaultError;
use portcullis_gateway::upstream_oauth::{CallbackParams, PendingConnection, UpstreamAuthError};
use portcullis_oauth::OAuthError;
use portcullis_store::BrowserSession;
use portcullis_types::OAuthErrorCode;
use serde::{Deserialize, Serialize};

use crate::pages::{ConnectPage, ConnectedPage, render};
use crate::{AppState, Peer};

const PENDING_COOKIE: &str = "portcullis_connect";
const PENDING_CONTEXT: &str = "portcullis connect pending v1";
/// How long the browser has to come back from the upstream.
const PENDING_TTL_SECS: i64 = 600;
/// Where a browser that had to sign in first goes afterwards.
pub(crate) const RETURN_COOKIE: &str = "portcullis_return";

#[derive(Serialize, Deserialize)]
struct Pending {
    route: String,
    user_id: String,
    connection: PendingConnection,
    expires_at: i64,
}

impl AppState {
    fn seal_connect(&self, browser: &str, pending: &Pending) -> Result<String, Response> {
        let plain = serde_json::to_vec(pending).map_err(|e| {
            tracing::error!(error = %e, "could not encode a connection cookie");
            self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
        })?;
        self.seal_for_browser(PENDING_CONTEXT, browser, &plain)
    }

    fn open_connect(&self, jar: &CookieJar) -> Option<Pending> {
        let plain = self.open_from_browser(jar, PENDING_COOKIE, PENDING_CONTEXT)?;
        let pending: Pending = serde_json::from_slice(&plain).ok()?;
        (pending.expires_at > self.server.now()).then_some(pending)
    }

    /// A page that says why a connection cannot go on.
    fn connect_error(&self, status: StatusCode, message: impl Into<String>) -> Response {
        self.page_error(status, &OAuthError::new(OAuthErrorCode::InvalidRequest, message))
    }

    fn vault_error(&self, e: &VaultError) -> Response {
        match e {
            VaultError::NotConnectable(_) => self.connect_error(StatusCode::NOT_FOUND, e.to_string()),
            VaultError::Upstream(UpstreamAuthError::Refused { error, .. }) if error == "access_denied" => self
                .connect_error(
                    StatusCode::FORBIDDEN,
                    "You did not allow access at the upstream, so nothing was connected.",
                ),
            VaultError::Upstream(
                UpstreamAuthError::StateMismatch
                | UpstreamAuthError::IssuerMismatch { .. }
                | UpstreamAuthError::MissingCode
                | UpstreamAuthError::Refused { .. },
            ) => self.connect_error(StatusCode::BAD_REQUEST, e.to_string()),
            VaultError::Upstream(UpstreamAuthError::WrongAudience { .. }) => {
                tracing::warn!(error = %e, "an upstream's authorization server issued a token for another resource");
                self.connect_error(StatusCode::BAD_GATEWAY, e.to_string())
            }
            VaultError::Store(_) => {
                tracing::error!(error = %e, "the token vault failed");
                self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
            }
            _ => {
                tracing::warn!(error = %e, "connecting an upstream account failed");
                self.connect_error(StatusCode::BAD_GATEWAY, e.to_string())
            }
        }
    }

    /// The signed-in user, or the answer that sends the browser to sign in and come back.
    pub(crate) fn signed_in_or_login(
        &self,
        jar: CookieJar,
        session: Option<BrowserSession>,
        back: &str,
    ) -> Result<(CookieJar, BrowserSession), Response> {
        match session {
            Some(s) => Ok((jar, s)),
            None => {
                let jar = jar.add(self.cookie(RETURN_COOKIE, back.to_owned(), Some(PENDING_TTL_SECS)));
                Err((jar, Redirect::to(&self.path("/login"))).into_response())
            }
        }
    }

    /// Where to go after signing in without an authorization request: back to a connection
    /// or dashboard page the browser was on, else the account page. Only our own `/connect/`
    /// and `/admin` paths.
    pub(crate) fn after_sign_in(&self, jar: CookieJar) -> (CookieJar, String) {
        let name = self.cookie_name(RETURN_COOKIE);
        let back = jar.get(&name).map(|c| c.value().to_owned());
        let jar = jar.remove(self.cookie(RETURN_COOKIE, String::new(), None));
        match back {
            Some(path) if self.is_own_page(&path, &["/connect/", "/admin/"]) => (jar, path),
            _ => (jar, self.path("/account")),
        }
    }
}

/// The page that explains which account is being connected.
pub(crate) async fn page(
    State(state): State<AppState>,
    Path(route): Path<String>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(upstream) = state.gateway.as_ref().and_then(|g| g.connectable_upstream(&route)) else {
        return state.connect_error(StatusCode::NOT_FOUND, format!("there is no upstream {route:?} to connect"));
    };
    let session = match state.session(&jar).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let back = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.iter().filter(|(k, _)| matches!(k.as_str(), "for" | "scope")) {
            query.append_pair(k, v);
        }
        format!("{}?{}", state.path(&format!("/connect/{route}")), query.finish())
    };
    let (jar, session) = match state.signed_in_or_login(jar, session, &back) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // A link an application made for one user is not followed by another (who might connect
    // their own account thinking it is for someone else's request).
    if let Some(intended) = q.get("for")
        && intended != &session.user.id
    {
        return state.connect_error(
            StatusCode::FORBIDDEN,
            "This link was made for another user. Sign out and sign in as that user, or ask your application to start again.",
        );
    }
    let connected = match state.server.store().find_upstream_credential(&session.user.id, &route).await {
        Ok(found) => found.is_some(),
        Err(e) => {
            tracing::error!(error = %e, "reading the token vault failed");
            return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
        }
    };
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let issuer = state.server.settings().issuer.clone();
    let csrf = state.csrf_token(&browser);
    let scope: String =
        q.get("scope").map(|s| s.split_whitespace().take(50).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    let page = ConnectPage {
        issuer: &issuer,
        base_path: &state.base_path,
        route: &route,
        upstream: &upstream,
        username: &session.user.username,
        scope: &scope,
        connected,
        csrf: &csrf,
    };
    (jar, render(StatusCode::OK, &page)).into_response()
}

/// The user chose to connect: off to the upstream's authorization server.
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(route): Path<String>,
    peer: Peer,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, session, _actor) = match state.account_form(peer, &headers, &jar, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(gateway) = state.gateway.clone() else {
        return state.connect_error(StatusCode::NOT_FOUND, format!("there is no upstream {route:?} to connect"));
    };
    let scope = params.single("scope").ok().flatten().filter(|s| !s.trim().is_empty());
    let (url, connection) = match gateway.begin_connect(&route, &session.user.id, scope).await {
        Ok(v) => v,
        Err(e) => return state.vault_error(&e),
    };
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let pending =
        Pending { route, user_id: session.user.id, connection, expires_at: state.server.now() + PENDING_TTL_SECS };
    let sealed = match state.seal_connect(&browser, &pending) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let jar = jar.add(state.cookie(PENDING_COOKIE, sealed, Some(PENDING_TTL_SECS)));
    (jar, Redirect::to(url.as_str())).into_response()
}

/// The upstream's authorization server sends the browser back here.
pub(crate) async fn callback(
    State(state): State<AppState>,
    peer: Peer,
    jar: CookieJar,
    headers: HeaderMap,
    Query(callback): Query<CallbackParams>,
) -> Response {
    let Some(pending) = state.open_connect(&jar) else {
        return state.connect_error(
            StatusCode::BAD_REQUEST,
            "This connection was not started in this browser, or it expired. Start again from your application.",
        );
    };
    let jar = jar.remove(state.cookie(PENDING_COOKIE, String::new(), None));
    let session = match state.session(&jar).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return (
                jar,
                state.connect_error(
                    StatusCode::FORBIDDEN,
                    "You signed out before the connection finished. Start again.",
                ),
            )
                .into_response();
        }
        Err(r) => return r,
    };
    if session.user.id != pending.user_id {
        tracing::warn!(route = %pending.route, "a connection started by one user came back signed in as another; refused");
        return (
            jar,
            state.connect_error(
                StatusCode::FORBIDDEN,
                "This connection was started by another user of this browser. Start again while signed in as yourself.",
            ),
        )
            .into_response();
    }
    let Some(gateway) = state.gateway.clone() else {
        return state.connect_error(StatusCode::NOT_FOUND, "there is no gateway");
    };
    let actor = portcullis_control::Actor::User {
        user_id: session.user.id.clone(),
        source: Some(state.client_address(peer.0, &headers)),
    };
    if let Err(e) =
        gateway.finish_connect(&pending.route, &actor, &session.user.id, &pending.connection, &callback).await
    {
        return (jar, state.vault_error(&e)).into_response();
    }
    let issuer = state.server.settings().issuer.clone();
    let page = ConnectedPage { issuer: &issuer, base_path: &state.base_path, route: &pending.route };
    (jar, render(StatusCode::OK, &page)).into_response()
}

/// Portcullis's Client ID Metadata Document (its client id at upstreams that accept them).
pub(crate) async fn client_metadata(State(state): State<AppState>) -> Response {
    match state.gateway.as_ref().and_then(|g| g.client_metadata_document()) {
        Some(document) => {
            let mut response = axum::Json(document).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
            response
        }
        None => crate::pages::not_found().await,
    }
}
