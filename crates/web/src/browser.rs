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
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use portcullis_oauth::{AuthorizeRejection, ConsentDecision, LoginError, NextStep, OAuthError, Params};
use portcullis_store::BrowserSession;
use portcullis_types::OAuthErrorCode;

use crate::oauth_endpoints::form_params;
use crate::pages::{
    self, AccountPage, ConsentPage, ConsentView, HomePage, LoginPage, ProviderButton, ScopeLineView, UpstreamView,
    render,
};
use crate::{AppState, Peer};

const CSRF_PURPOSE: &str = "form";

impl AppState {
    pub(crate) fn cookie_name(&self, base: &str) -> String {
        if self.server.settings().secure_cookies { format!("__Host-{base}") } else { base.to_owned() }
    }

    pub(crate) fn cookie(&self, base: &str, value: String, max_age_secs: Option<i64>) -> Cookie<'static> {
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

    pub(crate) fn page_error(&self, status: StatusCode, error: &OAuthError) -> Response {
        pages::error_page(&self.server.settings().issuer, &self.base_path, status, error)
    }

    pub(crate) fn rejection(&self, rejection: AuthorizeRejection) -> Response {
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

    pub(crate) fn path(&self, path: &str) -> String {
        format!("{}{}", self.base_path, path)
    }

    /// Whether `target` (from a cookie or a form) is one of our own pages under one of
    /// `prefixes` (paths below the issuer's), and so safe to redirect to: never another host
    /// (`//host`, or `\` that browsers read as `/`).
    pub(crate) fn is_own_page(&self, target: &str, prefixes: &[&str]) -> bool {
        let page = target.split('?').next().unwrap_or_default();
        !target.contains("//")
            && !target.contains('\\')
            && prefixes.iter().any(|prefix| {
                let prefix = self.path(prefix);
                page == prefix.trim_end_matches('/') || target.starts_with(&prefix)
            })
    }

    /// The browser's CSRF binding: a random cookie, created on first sight.
    pub(crate) fn browser_id(&self, jar: CookieJar) -> Result<(CookieJar, String), Response> {
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

    /// Seals `plain` for a cookie that only this browser can bring back: the master key's AEAD,
    /// with `purpose` and the browser's own cookie as associated data.
    pub(crate) fn seal_for_browser(&self, purpose: &str, browser_id: &str, plain: &[u8]) -> Result<String, Response> {
        let context = format!("{purpose}\n{browser_id}");
        self.master
            .seal(plain, context.as_bytes())
            .map(|sealed| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
            .map_err(|e| {
                tracing::error!(error = %e, purpose, "could not seal a cookie");
                self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
            })
    }

    /// What `seal_for_browser` sealed into the cookie `cookie`, if this browser sealed it for
    /// `purpose`.
    pub(crate) fn open_from_browser(&self, jar: &CookieJar, cookie: &str, purpose: &str) -> Option<Vec<u8>> {
        let browser = jar.get(&self.cookie_name("portcullis_browser"))?.value().to_owned();
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jar.get(&self.cookie_name(cookie))?.value())
            .ok()?;
        let context = format!("{purpose}\n{browser}");
        self.master.open(&sealed, context.as_bytes()).ok()
    }

    pub(crate) fn csrf_token(&self, browser_id: &str) -> String {
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
    pub(crate) fn checked_form(&self, headers: &HeaderMap, jar: &CookieJar, body: &Bytes) -> Result<Params, Response> {
        let params = form_params(headers, body).map_err(|e| self.page_error(StatusCode::BAD_REQUEST, &e))?;
        self.check_csrf(headers, jar, &params)?;
        Ok(params)
    }

    pub(crate) async fn session(&self, jar: &CookieJar) -> Result<Option<BrowserSession>, Response> {
        let Some(value) = jar.get(&self.cookie_name("portcullis_session")).map(|c| c.value().to_owned()) else {
            return Ok(None);
        };
        self.server.find_session(&value).await.map_err(|e| {
            tracing::error!(error = %e, "session lookup failed");
            self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
        })
    }

    async fn continue_authorization(&self, handle: &str, session: Option<&BrowserSession>) -> Response {
        self.continue_with_hints(handle, session, &[]).await
    }

    /// As `continue_authorization`; the sign-in page, if needed, gets the request's
    /// `login_hint` and `idp_hint`.
    async fn continue_with_hints(
        &self,
        handle: &str,
        session: Option<&BrowserSession>,
        hints: &[(&str, &str)],
    ) -> Response {
        match self.server.next_step(handle, session).await {
            Ok(NextStep::Login) => {
                let mut login = self.with_request("/login", handle);
                for (name, value) in hints {
                    let pair: String =
                        form_urlencoded::Serializer::new(String::new()).append_pair(name, value).finish();
                    login = format!("{login}&{pair}");
                }
                Redirect::to(&login).into_response()
            }
            Ok(NextStep::Consent) => Redirect::to(&self.with_request("/consent", handle)).into_response(),
            Ok(NextStep::Redirect(location)) => Redirect::to(&location).into_response(),
            Err(rejection) => self.rejection(rejection),
        }
    }

    /// A form the signed-in user posts from their account page: its CSRF-checked parameters,
    /// their session (without one: off to sign in), and them as the actor.
    pub(crate) async fn account_form(
        &self,
        peer: Peer,
        headers: &HeaderMap,
        jar: &CookieJar,
        body: &Bytes,
    ) -> Result<(Params, BrowserSession, Actor), Response> {
        let params = self.checked_form(headers, jar, body)?;
        let session = self.session(jar).await?.ok_or_else(|| Redirect::to(&self.path("/login")).into_response())?;
        let actor =
            Actor::User { user_id: session.user.id.clone(), source: Some(self.client_address(peer.0, headers)) };
        Ok((params, session, actor))
    }

    /// Back to the sign-in page of request `handle` with an error code its page explains. What
    /// the user typed is not put in the URL: it would land in history and access logs.
    pub(crate) fn back_to_login(&self, handle: &str, error: &str) -> Response {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !handle.is_empty() {
            query.append_pair("request", handle);
        }
        let query: String = query.append_pair("error", error).finish();
        Redirect::to(&format!("{}?{query}", self.path("/login"))).into_response()
    }

    pub(crate) fn with_request(&self, path: &str, handle: &str) -> String {
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
    let hints: Vec<(&str, &str)> = ["login_hint", "idp_hint"]
        .into_iter()
        .filter_map(|name| params.single(name).ok().flatten().filter(|v| !v.is_empty()).map(|v| (name, v)))
        .collect();
    state.continue_with_hints(&pending.handle, session.as_ref(), &hints).await
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
    let settings = state.server.settings();
    // `idp_hint` (a provider's name) and `login_hint` (an email in a provider's domain) skip
    // the question; an error coming back from a provider must not loop into it again.
    let login_hint = q.get("login_hint").map(String::as_str).filter(|h| !h.is_empty() && h.len() <= 254);
    if !q.contains_key("error") {
        let hinted = q
            .get("idp_hint")
            .and_then(|name| settings.identity_provider(name))
            .or_else(|| login_hint.and_then(|email| settings.identity_provider_for_email(email)));
        if let Some(provider) = hinted {
            return Redirect::to(&state.sso_start_url(&provider.provider.settings().name, handle, login_hint))
                .into_response();
        }
    }
    let (jar, browser) = match state.browser_id(jar) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (error, status) = match q.get("error").map(String::as_str) {
        Some("invalid") => (Some("The username or password is incorrect."), StatusCode::UNAUTHORIZED),
        Some("limited") => {
            (Some("Too many sign-in attempts. Wait a minute and try again."), StatusCode::TOO_MANY_REQUESTS)
        }
        Some("busy") => (
            Some("The server is busy checking other sign-ins. Try again in a moment."),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        Some("unknown_domain") if settings.local_passwords => (
            Some("No single sign-on is set up for that email address. Sign in with your password instead."),
            StatusCode::OK,
        ),
        Some("unknown_domain") => (
            Some(
                "No single sign-on is set up for that email address. Check the address, or ask your administrator which sign-in to use.",
            ),
            StatusCode::BAD_REQUEST,
        ),
        Some("passwords_off") => (
            Some("This server does not accept passwords. Sign in with your organisation's account."),
            StatusCode::FORBIDDEN,
        ),
        _ => (None, StatusCode::OK),
    };
    let csrf = state.csrf_token(&browser);
    let email = login_hint.filter(|h| h.contains('@')).unwrap_or_default();
    let page = LoginPage {
        issuer: &settings.issuer,
        base_path: &state.base_path,
        client_name: client.as_ref().map(|c| c.client_name.as_str()).unwrap_or_default(),
        client_verified: client.as_ref().is_none_or(|c| c.verified),
        request: handle,
        csrf: &csrf,
        username: login_hint.unwrap_or_default(),
        error,
        email,
        providers: settings
            .identity_providers
            .iter()
            .map(|p| ProviderButton {
                name: p.provider.settings().name.clone(),
                display_name: p.provider.settings().display_name.clone(),
            })
            .collect(),
        local_passwords: settings.local_passwords,
    };
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
    let back = |error: &str| state.back_to_login(&handle, error);
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
        Err(LoginError::PasswordsDisabled) => return back("passwords_off"),
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
    state.finish_sign_in(jar, &handle, &user, session).await
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
        identity_provider: prompt.identity_provider.as_deref(),
        withheld: &prompt.withheld,
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

/// A timestamp as the day it fell on (UTC), as the account page shows dates.
fn day(timestamp: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(timestamp)
        .map(|t| format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_default()
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
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "the account page failed");
        state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
    };
    let mut views = Vec::with_capacity(consents.len());
    for c in consents {
        let (client_name, client_verified) = match store.find_client(&c.client_id).await {
            Ok(Some(client)) => (client.client_name, client.verified),
            Ok(None) => (c.client_id.clone(), false),
            Err(e) => return failed(&e),
        };
        let scopes = c.scope.iter().map(|s| state.server.settings().describe_scope(&c.resource, s.as_str())).collect();
        let tools = state.gateway.as_ref().map(|g| g.tools_unlocked(&c.resource, &c.scope)).unwrap_or_default();
        let last_acted = match store.last_acted(&session.user.id, &c.client_id).await {
            Ok(at) => at.map(crate::dashboard::when),
            Err(e) => return failed(&e),
        };
        let granted_on = day(c.updated_at);
        views.push(ConsentView {
            client_id: c.client_id,
            client_name,
            client_verified,
            resource: c.resource,
            scopes,
            tools,
            granted_on,
            last_acted,
        });
    }
    let upstreams = match store.upstream_credentials_of(&session.user.id).await {
        Ok(list) => list
            .into_iter()
            .map(|u| UpstreamView {
                route: u.route,
                issuer: u.issuer,
                subject: u.subject,
                scope: u.scope.to_string(),
                connected_on: day(u.updated_at),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "listing upstream accounts failed");
            return state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error());
        }
    };
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
        upstreams,
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
    let (params, session, actor) = match state.account_form(peer, &headers, &jar, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let client_id = params.single("client_id").ok().flatten().unwrap_or_default();
    let resource = params.single("resource").ok().flatten().unwrap_or_default();
    match state.server.control().revoke_consent(&actor, &session.user.id, client_id, resource).await {
        // Already gone (a second click): the page shows what is left either way.
        Ok(()) | Err(ControlError::ConsentNotFound) => Redirect::to(&state.path("/account")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "revoking consent failed");
            state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
        }
    }
}

/// The user disconnects an upstream account: revoked at the upstream where it offers RFC 7009
/// revocation, and forgotten here.
pub(crate) async fn disconnect_upstream(
    State(state): State<AppState>,
    peer: crate::Peer,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, session, actor) = match state.account_form(peer, &headers, &jar, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let route = params.single("route").ok().flatten().unwrap_or_default();
    // Only ever the signed-in user's own row: the user comes from the session, not the form.
    let disconnected = match &state.gateway {
        Some(gateway) => gateway.disconnect_upstream(route, &actor, &session.user.id).await.map_err(|e| e.to_string()),
        None => state
            .server
            .control()
            .disconnect_upstream(&actor, &session.user.id, route, None)
            .await
            .map_err(|e| e.to_string()),
    };
    match disconnected {
        Ok(_) => Redirect::to(&state.path("/account")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "disconnecting an upstream account failed");
            state.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
        }
    }
}
