//! The browser side of the authorization flow: the authorization endpoint, sign-in, consent,
//! sign-out. Every POST is CSRF-checked (a form token bound to a browser cookie, plus Origin
//! and Fetch-Metadata checks) and answered with 303 (RFC 9700 §4.12).
//!
//! Helpers here return `Result<_, Response>`: the error is the finished HTTP answer, handed
//! straight back by the handler, so its size does not matter.
#![allow(clippy::result_large_err)]

use portcullis_control::{Actor, ControlError};
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use http::{HeaderMap, StatusCode};
use portcullis_oauth::{AuthorizeRejection, ConsentDecision, LoginError, NextStep, OAuthError, Params};
use portcullis_store::BrowserSession;
use portcullis_types::OAuthErrorCode;

use crate::oauth_endpoints::form_params;
use crate::pages::{self, AccountPage, ConsentPage, ConsentView, HomePage, LoginPage, ScopeLineView, render};
use crate::{AppState, Peer};

const CSRF_PURPOSE: &str = "form";

impl AppState {
    fn cookie_name(&self, base: &str) -> String {
        if self.server.settings().secure_cookies { format!("__Host-{base}") } else { base.to_owned() }
    }

    fn cookie(&self, base: &str, value: String, max_age_secs: Option<i64>) -> Cookie<'static> {
        let mut cookie = Cookie::new(self.cookie_name(base), value);
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Lax);
        cookie.set_path("/");
        cookie.set_secure(self.server.settings().secure_cookies);
        if let Some(secs) = max_age_secs {
            cookie.set_max_age(time::Duration::seconds(secs));
        }
        cookie
    }

    fn page_error(&self, status: StatusCode, error: &OAuthError) -> Response {
        pages::error_page(&self.server.settings().issuer, &self.base_path, status, error)
    }

    fn rejection(&self, rejection: AuthorizeRejection) -> Response {
        match rejection {
            AuthorizeRejection::Redirect { location, .. } => Redirect::to(&location).into_response(),
            AuthorizeRejection::Fatal(error) => {
                let status = match error.code {
                    OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                self.page_error(status, &error)
            }
        }
    }

    fn path(&self, path: &str) -> String {
        format!("{}{}", self.base_path, path)
    }

    /// The browser's CSRF binding: a random cookie, created on first sight.
    fn browser_id(&self, jar: CookieJar) -> Result<(CookieJar, String), Response> {
        let name = self.cookie_name("portcullis_browser");
        if let Some(existing) = jar.get(&name).map(|c| c.value().to_owned()).filter(|v| v.len() >= 32) {
            return Ok((jar, existing));
        }
        let fresh = portcullis_crypto::random_token(32).map_err(|e| {
            tracing::error!(error = %e, "no randomness for a browser cookie");
            self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
        })?;
        let jar = jar.add(self.cookie("portcullis_browser", fresh.clone(), None));
        Ok((jar, fresh))
    }

    fn csrf_token(&self, browser_id: &str) -> String {
        self.master.mac(CSRF_PURPOSE, browser_id)
    }

    /// Checks a form POST came from our own page in this browser.
    fn check_csrf(&self, headers: &HeaderMap, jar: &CookieJar, params: &Params) -> Result<(), Response> {
        let forbidden = |why: &str| self.page_error(StatusCode::FORBIDDEN, &OAuthError::invalid_request(why));
        // Browsers send `Origin: null` on form posts from pages with `Referrer-Policy:
        // no-referrer` (ours), so a null Origin is left to Fetch Metadata and the form token.
        if let Some(origin) = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok())
            && origin != "null"
            && origin != self.origin
        {
            return Err(forbidden("this form was submitted from another site"));
        }
        // Anything but our own origin (or the user typing the URL) is refused, including
        // same-site pages on other ports of this host.
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
            && !matches!(site, "same-origin" | "none")
        {
            return Err(forbidden("this form was submitted from another site"));
        }
        let browser = jar.get(&self.cookie_name("portcullis_browser")).map(|c| c.value().to_owned());
        let presented = params.single("csrf").ok().flatten();
        match (browser, presented) {
            (Some(browser), Some(token)) if self.master.verify_mac(CSRF_PURPOSE, &browser, token) => Ok(()),
            _ => Err(forbidden("the form expired or cookies are blocked; go back to the application and try again")),
        }
    }

    /// The parameters of a form POST that passed the CSRF checks.
    fn checked_form(&self, headers: &HeaderMap, jar: &CookieJar, body: &Bytes) -> Result<Params, Response> {
        let params = form_params(headers, body).map_err(|e| self.page_error(StatusCode::BAD_REQUEST, &e))?;
        self.check_csrf(headers, jar, &params)?;
        Ok(params)
    }

    async fn session(&self, jar: &CookieJar) -> Result<Option<BrowserSession>, Response> {
        let Some(value) = jar.get(&self.cookie_name("portcullis_session")).map(|c| c.value().to_owned()) else {
            return Ok(None);
        };
        self.server.find_session(&value).await.map_err(|e| {
            tracing::error!(error = %e, "session lookup failed");
            self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
        })
    }

    async fn continue_authorization(&self, handle: &str, session: Option<&BrowserSession>) -> Response {
        match self.server.next_step(handle, session).await {
            Ok(NextStep::Login) => Redirect::to(&self.with_request("/login", handle)).into_response(),
            Ok(NextStep::Consent) => Redirect::to(&self.with_request("/consent", handle)).into_response(),
            Ok(NextStep::Redirect(location)) => Redirect::to(&location).into_response(),
            Err(rejection) => self.rejection(rejection),
        }
    }

    fn with_request(&self, path: &str, handle: &str) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("request", handle).finish();
        format!("{}?{query}", self.path(path))
    }
}

async fn authorize(state: AppState, jar: CookieJar, params: Params) -> Response {
    let pending = match state.server.begin_authorization(&params).await {
        Ok(p) => p,
        Err(rejection) => return state.rejection(rejection),
    };
    let session = match state.session(&jar).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    state.continue_authorization(&pending.handle, session.as_ref()).await
}

pub(crate) async fn authorize_get(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::from_pairs(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned());
    authorize(state, jar, params).await
}

pub(crate) async fn authorize_post(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match form_params(&headers, &body) {
        Ok(params) => authorize(state, jar, params).await,
        Err(e) => state.page_error(StatusCode::BAD_REQUEST, &e),
    }
}

pub(crate) async fn authorize_continue(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(handle) = q.get("request") else {
        return state
            .page_error(StatusCode::BAD_REQUEST, &OAuthError::invalid_request("the request parameter is missing"));
    };
    let session = match state.session(&jar).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    state.continue_authorization(handle, session.as_ref()).await
}

pub(crate) async fn login_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // Without a request, this is a plain sign-in to the account page.
    let handle = q.get("request").map(String::as_str).unwrap_or_default();
    let client = if handle.is_empty() {
        None
    } else {
        match state.server.pending_client(handle).await {
            Ok(c) => Some(c),
            Err(rejection) => return state.rejection(rejection),
        }
    };
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let error = match q.get("error").map(String::as_str) {
        Some("invalid") => Some("The username or password is incorrect."),
        Some("limited") => Some("Too many sign-in attempts. Wait a minute and try again."),
        Some("busy") => Some("The server is busy checking other sign-ins. Try again in a moment."),
        _ => None,
    };
    let issuer = state.server.settings().issuer.clone();
    let csrf = state.csrf_token(&browser);
    let page = LoginPage {
        issuer: &issuer,
        base_path: &state.base_path,
        client_name: client.as_ref().map(|c| c.client_name.as_str()).unwrap_or_default(),
        client_verified: client.as_ref().is_none_or(|c| c.verified),
        request: handle,
        csrf: &csrf,
        username: "",
        error,
    };
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    (jar, render(status, &page)).into_response()
}

pub(crate) async fn login_submit(
    State(state): State<AppState>,
    peer: Peer,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match state.checked_form(&headers, &jar, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let handle = params.single("request").ok().flatten().unwrap_or_default().to_owned();
    let username = params.single("username").ok().flatten().unwrap_or_default().to_owned();
    let password = params.single("password").ok().flatten().unwrap_or_default().to_owned();
    let back = |error: &str| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !handle.is_empty() {
            query.append_pair("request", &handle);
        }
        // The username is not put in the URL: it would land in history and access logs.
        let query: String = query.append_pair("error", error).finish();
        Redirect::to(&format!("{}?{query}", state.path("/login"))).into_response()
    };
    let address = state.client_address(peer.0, &headers);
    if !state.limits.allow(&username, address) {
        tracing::warn!(peer = %address, "sign-in rate limit reached");
        return back("limited");
    }
    let user = match state.server.authenticate_user(&username, &password, Some(address)).await {
        Ok(user) => user,
        Err(LoginError::InvalidCredentials) => {
            tracing::info!(peer = %address, "failed sign-in");
            return back("invalid");
        }
        Err(LoginError::Busy) => return back("busy"),
        Err(LoginError::Server(e)) => {
            tracing::error!(error = %e, "sign-in failed internally");
            return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
        }
    };
    let session = match state.server.start_session(&user).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not start a session");
            return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
        }
    };
    tracing::info!(user = %user.username, "signed in");
    // A new sign-in gets a new session; whatever session this browser had before ends.
    if let Some(previous) = jar.get(&state.cookie_name("portcullis_session")).map(|c| c.value().to_owned())
        && let Err(e) = state.server.end_session(&previous).await
    {
        tracing::error!(error = %e, "could not end the previous session");
    }
    if !handle.is_empty()
        && let Err(e) = state.server.record_login(&handle, &user).await
    {
        tracing::error!(error = %e, "could not record the sign-in on its request");
        return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
    }
    let ttl = session.expires_at - state.server.now();
    let jar = jar.add(state.cookie("portcullis_session", session.cookie_value, Some(ttl)));
    let next =
        if handle.is_empty() { state.path("/account") } else { state.with_request("/authorize/continue", &handle) };
    (jar, Redirect::to(&next)).into_response()
}

pub(crate) async fn consent_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(handle) = q.get("request") else {
        return state.page_error(
            StatusCode::BAD_REQUEST,
            &OAuthError::invalid_request("open the consent page from an application"),
        );
    };
    let session = match state.session(&jar).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to(&state.with_request("/login", handle)).into_response(),
        Err(r) => return r,
    };
    let prompt = match state.server.consent_prompt(handle, &session).await {
        Ok(p) => p,
        Err(rejection) => return state.rejection(rejection),
    };
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let issuer = state.server.settings().issuer.clone();
    let csrf = state.csrf_token(&browser);
    let redirect_is_local = url::Url::parse(&prompt.redirect_uri)
        .ok()
        .and_then(|u| u.host().map(|h| portcullis_oauth::is_loopback_host(&h)))
        .unwrap_or(false);
    let page = ConsentPage {
        issuer: &issuer,
        base_path: &state.base_path,
        client_id: &prompt.client_id,
        client_name: &prompt.client_name,
        client_verified: prompt.client_verified,
        client_origin: match prompt.client_origin.as_str() {
            "admin" => "an administrator",
            "config" => "the server's configuration",
            "dcr" => "dynamic client registration",
            "cimd" => "its published metadata document",
            "software_statement" => "a signed software statement",
            _ => "an unknown route",
        },
        redirect_host: &prompt.redirect_host,
        redirect_is_local,
        resource: &prompt.resource,
        resource_name: &prompt.resource_name,
        username: &prompt.user.username,
        scopes: prompt
            .scopes
            .into_iter()
            .map(|l| ScopeLineView {
                scope: l.scope,
                description: l.description,
                previously_granted: l.previously_granted,
            })
            .collect(),
        request: handle,
        csrf: &csrf,
        client_id_host: prompt.client_id_host.as_deref(),
        localhost_only: prompt.localhost_only,
    };
    (jar, render(StatusCode::OK, &page)).into_response()
}

pub(crate) async fn consent_submit(
    State(state): State<AppState>,
    peer: crate::Peer,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match state.checked_form(&headers, &jar, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let handle = params.single("request").ok().flatten().unwrap_or_default().to_owned();
    let session = match state.session(&jar).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to(&state.with_request("/login", &handle)).into_response(),
        Err(r) => return r,
    };
    let decision = match params.single("decision").ok().flatten() {
        Some("approve") => ConsentDecision::Approve(params.all("scope").into_iter().map(str::to_owned).collect()),
        _ => ConsentDecision::Deny,
    };
    let source = Some(state.client_address(peer.0, &headers));
    match state.server.decide_consent(&handle, &session, decision, source).await {
        Ok(location) => Redirect::to(&location).into_response(),
        Err(rejection) => state.rejection(rejection),
    }
}

pub(crate) async fn logout(State(state): State<AppState>, jar: CookieJar, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = state.checked_form(&headers, &jar, &body) {
        return r;
    }
    let name = state.cookie_name("portcullis_session");
    if let Some(value) = jar.get(&name).map(|c| c.value().to_owned())
        && let Err(e) = state.server.end_session(&value).await
    {
        tracing::error!(error = %e, "could not end a session");
    }
    let jar = jar.remove(state.cookie("portcullis_session", String::new(), None));
    (jar, Redirect::to(&state.path("/"))).into_response()
}

pub(crate) async fn home(State(state): State<AppState>, jar: CookieJar) -> Response {
    let session = match state.session(&jar).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let issuer = state.server.settings().issuer.clone();
    let csrf = state.csrf_token(&browser);
    let page = HomePage {
        issuer: &issuer,
        base_path: &state.base_path,
        username: session.as_ref().map(|s| s.user.username.as_str()),
        csrf: &csrf,
    };
    (jar, render(StatusCode::OK, &page)).into_response()
}

/// The user's own view of what they allowed, with a way to take it back.
pub(crate) async fn account(State(state): State<AppState>, jar: CookieJar) -> Response {
    let session = match state.session(&jar).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to(&state.path("/login")).into_response(),
        Err(r) => return r,
    };
    let store = state.server.store();
    let consents = match store.list_consents(&session.user.id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "listing consents failed");
            return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
        }
    };
    let mut views = Vec::with_capacity(consents.len());
    for c in consents {
        let client_name = match store.find_client(&c.client_id).await {
            Ok(Some(client)) => client.client_name,
            Ok(None) => c.client_id.clone(),
            Err(e) => {
                tracing::error!(error = %e, "client lookup failed");
                return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
            }
        };
        let scopes = c.scope.iter().map(|s| state.server.settings().describe_scope(&c.resource, s.as_str())).collect();
        let granted_on = time::OffsetDateTime::from_unix_timestamp(c.updated_at)
            .map(|t| format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
            .unwrap_or_default();
        views.push(ConsentView { client_id: c.client_id, client_name, resource: c.resource, scopes, granted_on });
    }
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let issuer = state.server.settings().issuer.clone();
    let csrf = state.csrf_token(&browser);
    let page = AccountPage {
        issuer: &issuer,
        base_path: &state.base_path,
        username: &session.user.username,
        consents: views,
        csrf: &csrf,
    };
    (jar, render(StatusCode::OK, &page)).into_response()
}

pub(crate) async fn revoke_consent(
    State(state): State<AppState>,
    peer: crate::Peer,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match state.checked_form(&headers, &jar, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let session = match state.session(&jar).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to(&state.path("/login")).into_response(),
        Err(r) => return r,
    };
    let client_id = params.single("client_id").ok().flatten().unwrap_or_default();
    let resource = params.single("resource").ok().flatten().unwrap_or_default();
    let actor = Actor::User { user_id: session.user.id.clone(), source: Some(state.client_address(peer.0, &headers)) };
    match state.server.control().revoke_consent(&actor, &session.user.id, client_id, resource).await {
        // Already gone (a second click): the page shows what is left either way.
        Ok(()) | Err(ControlError::ConsentNotFound) => Redirect::to(&state.path("/account")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "revoking consent failed");
            state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
        }
    }
}
