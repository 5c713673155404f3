//! Signing in through the organisation's identity providers: home-realm discovery from an
//! email address, the start of a provider's sign-in, and its callback.
//!
//! What the browser must bring back from the provider (the provider's name, `state`, `nonce`,
//! the PKCE verifier and the parked authorization request) travels in one cookie, sealed by
//! the master key with the browser's own cookie as associated data: another browser cannot
//! use it, nobody can read the verifier from it, and any node can finish the sign-in.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use http::{HeaderMap, StatusCode};
use portcullis_oauth::{FederatedSignInError, OAuthError, Params};
use portcullis_sso::{CallbackParams, PendingSignIn, SsoError};
use portcullis_store::UserRecord;
use portcullis_types::OAuthErrorCode;

use crate::error::WebError;
use crate::{AppState, Peer};

const PENDING_COOKIE: &str = "portcullis_sso";
/// How long the browser has to come back from the provider.
const PENDING_TTL_SECS: i64 = 600;
const PENDING_CONTEXT: &str = "portcullis sso pending v1";

/// The sealed cookie's content: the sign-in in progress and the request it is for.
struct Pending {
    sign_in: PendingSignIn,
    request: String,
    expires_at: i64,
}

impl Pending {
    /// Fields are tokens (base64url), a provider name (`[a-z0-9-]`) and a number: a newline
    /// never occurs in one.
    fn encode(&self) -> String {
        let s = &self.sign_in;
        [s.idp.as_str(), &s.state, &s.nonce, &s.pkce_verifier, &self.request, &self.expires_at.to_string()].join("\n")
    }

    fn decode(text: &str) -> Option<Self> {
        let mut fields = text.split('\n');
        let mut next = || fields.next().map(str::to_owned);
        let sign_in = PendingSignIn { idp: next()?, state: next()?, nonce: next()?, pkce_verifier: next()? };
        let request = next()?;
        let expires_at = next()?.parse().ok()?;
        Some(Self { sign_in, request, expires_at })
    }
}

impl AppState {
    /// Where a sign-in at provider `name` starts, for request `handle` (may be empty).
    pub(crate) fn sso_start_url(&self, name: &str, handle: &str, login_hint: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !handle.is_empty() {
            query.append_pair("request", handle);
        }
        if let Some(hint) = login_hint {
            query.append_pair("login_hint", hint);
        }
        let query: String = query.finish();
        let path = self.path(&format!("/sso/{name}/start"));
        if query.is_empty() { path } else { format!("{path}?{query}") }
    }

    fn seal_pending(&self, browser: &str, pending: &Pending) -> Result<String, Response> {
        self.seal_for_browser(PENDING_CONTEXT, browser, pending.encode().as_bytes())
    }

    /// The pending sign-in this browser holds, if it is its own and still fresh.
    fn open_pending(&self, jar: &CookieJar) -> Option<Pending> {
        let plain = self.open_from_browser(jar, PENDING_COOKIE, PENDING_CONTEXT)?;
        let pending = Pending::decode(std::str::from_utf8(&plain).ok()?)?;
        (pending.expires_at > self.server.now()).then_some(pending)
    }

    /// The end of every successful sign-in, by password or through a provider: the browser's
    /// previous session ends, the request notes who signed in, the new session's cookie is
    /// set, and the browser continues the authorization (or goes to its account).
    pub(crate) async fn finish_sign_in(
        &self,
        jar: CookieJar,
        handle: &str,
        user: &UserRecord,
        session: portcullis_oauth::NewSession,
    ) -> Response {
        tracing::info!(user = %user.username, "signed in");
        if let Some(previous) = jar.get(&self.cookie_name("portcullis_session")).map(|c| c.value().to_owned())
            && let Err(e) = self.server.end_session(&previous).await
        {
            tracing::error!(error = %e, "could not end the previous session");
        }
        if !handle.is_empty()
            && let Err(e) = self.server.record_login(handle, user).await
        {
            tracing::error!(error = %e, "could not record the sign-in on its request");
            return self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
        }
        let ttl = session.expires_at - self.server.now();
        let jar = jar.add(self.cookie("portcullis_session", session.cookie_value, Some(ttl)));
        let (jar, next) = if handle.is_empty() {
            self.after_sign_in(jar)
        } else {
            (jar, self.with_request("/authorize/continue", handle))
        };
        (jar, Redirect::to(&next)).into_response()
    }
}

/// Home-realm discovery: the email's domain names the provider to sign in with.
pub(crate) async fn discover(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match state.checked_form(&headers, &jar, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let handle = params.single("request").ok().flatten().unwrap_or_default().to_owned();
    let email = params.single("email").ok().flatten().unwrap_or_default().trim().to_owned();
    let settings = state.server.settings();
    if let Some(provider) = settings.identity_provider_for_email(&email) {
        let url = state.sso_start_url(&provider.provider.settings().name, &handle, Some(&email));
        return Redirect::to(&url).into_response();
    }
    // The answer depends on the domain alone, never on whether such a user exists.
    state.back_to_login(&handle, "unknown_domain")
}

/// Sends the browser to provider `name`, holding what it must bring back.
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let handle = q.get("request").map(String::as_str).unwrap_or_default();
    let reauthentication = if handle.is_empty() {
        portcullis_sso::Reauthentication::default()
    } else {
        match state.server.pending_reauthentication(handle).await {
            Ok(r) => r,
            Err(rejection) => return state.rejection(rejection),
        }
    };
    let login_hint = q.get("login_hint").map(String::as_str).filter(|h| !h.is_empty() && h.len() <= 254);
    let (url, sign_in) = match state.server.begin_federated_sign_in(&name, login_hint, reauthentication).await {
        Ok(v) => v,
        Err(e) => return sso_error_page(&state, &name, &FederatedSignInError::Protocol(e)),
    };
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let pending = Pending { sign_in, request: handle.to_owned(), expires_at: state.server.now() + PENDING_TTL_SECS };
    let sealed = match state.seal_pending(&browser, &pending) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let jar = jar.add(state.cookie(PENDING_COOKIE, sealed, Some(PENDING_TTL_SECS)));
    (jar, Redirect::to(url.as_str())).into_response()
}

/// The provider's answer: checked against the sign-in this browser started, then the user is
/// signed in here. The browser's pending sign-in is dropped whatever the outcome (the sealed
/// value could be replayed from elsewhere only with this browser's cookie, and then only to
/// redeem a code the provider accepts once).
pub(crate) async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Peer,
    jar: CookieJar,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::from_pairs(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned());
    // A repeated parameter is someone else's construction, not a provider's answer.
    let single = |key: &str| params.single(key).map(|v| v.map(str::to_owned));
    let callback = match (single("code"), single("state"), single("iss"), single("error"), single("error_description"))
    {
        (Ok(code), Ok(state_param), Ok(iss), Ok(error), Ok(error_description)) => {
            CallbackParams { code, state: state_param, iss, error, error_description }
        }
        _ => CallbackParams { state: None, ..CallbackParams::default() },
    };
    let pending = state.open_pending(&jar);
    let jar = jar.remove(state.cookie(PENDING_COOKIE, String::new(), None));
    let source = Some(state.client_address(peer.0, &headers));
    let outcome =
        state.server.finish_federated_sign_in(&name, pending.as_ref().map(|p| &p.sign_in), &callback, source).await;
    match outcome {
        Ok(signed_in) => {
            let handle = pending.map(|p| p.request).unwrap_or_default();
            state.finish_sign_in(jar, &handle, &signed_in.user, signed_in.session).await
        }
        Err(e) => (jar, sso_error_page(&state, &name, &e)).into_response(),
    }
}

/// OpenID Connect Back-Channel Logout 1.0 §2.8: the provider POSTs a logout token; 200 when
/// it was honoured, 400 with an OAuth-style error when it was not. No cookies or CSRF: this is
/// the provider's server speaking, authenticated by its signature.
pub(crate) async fn backchannel_logout(
    State(state): State<AppState>,
    Path(name): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match crate::oauth_endpoints::form_params(&headers, &body) {
        Ok(p) => p,
        Err(e) => return WebError::from(e).into_response(),
    };
    let token = match params.single("logout_token") {
        Ok(Some(t)) if !t.is_empty() => t.to_owned(),
        _ => return WebError::from(OAuthError::invalid_request("logout_token is required, once")).into_response(),
    };
    let source = Some(state.client_address(peer.0, &headers));
    match state.server.backchannel_logout(&name, &token, source).await {
        Ok(_) => ([(http::header::CACHE_CONTROL, "no-store")], StatusCode::OK).into_response(),
        Err(FederatedSignInError::Server(e)) => {
            tracing::error!(error = %e, idp = %name, "back-channel logout failed internally");
            WebError::from(OAuthError::server_error()).into_response()
        }
        Err(e) => WebError::from(OAuthError::invalid_request(e.to_string())).into_response(),
    }
}

/// A failed federated sign-in, on a page that says what happened and what to do. Nothing is
/// redirected to the client: the user can start again from the application.
fn sso_error_page(state: &AppState, name: &str, error: &FederatedSignInError) -> Response {
    let provider = state
        .server
        .settings()
        .identity_provider(name)
        .map(|p| p.provider.settings().display_name.clone())
        .unwrap_or_else(|| name.to_owned());
    let (status, code) = match error {
        FederatedSignInError::Protocol(SsoError::UnknownProvider(_)) => {
            (StatusCode::NOT_FOUND, OAuthErrorCode::InvalidRequest)
        }
        FederatedSignInError::Protocol(SsoError::Unreachable(_)) => {
            (StatusCode::BAD_GATEWAY, OAuthErrorCode::TemporarilyUnavailable)
        }
        FederatedSignInError::Protocol(SsoError::Refused { .. }) | FederatedSignInError::Refused(_) => {
            (StatusCode::FORBIDDEN, OAuthErrorCode::AccessDenied)
        }
        FederatedSignInError::Protocol(_) => (StatusCode::BAD_REQUEST, OAuthErrorCode::InvalidRequest),
        FederatedSignInError::Server(e) => {
            tracing::error!(error = %e, idp = name, "federated sign-in failed internally");
            return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
        }
    };
    let message = match error {
        // Which address or URL failed is for the log and the audit trail, not for the page.
        FederatedSignInError::Protocol(SsoError::Unreachable(detail)) => {
            tracing::warn!(idp = name, %detail, "identity provider unreachable");
            format!(
                "Signing in with {provider} did not work: the identity provider could not be reached. Try again later."
            )
        }
        _ => format!("Signing in with {provider} did not work: {error}."),
    };
    state.page_error(status, &OAuthError::new(code, message))
}
