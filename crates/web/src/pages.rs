//! HTML pages (askama templates, auto-escaped) and how they are sent.

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use portcullis_oauth::OAuthError;

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginPage<'a> {
    pub issuer: &'a str,
    pub base_path: &'a str,
    pub client_name: &'a str,
    pub client_verified: bool,
    pub request: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    /// The email home-realm discovery was asked about, shown back.
    pub email: &'a str,
    /// A button per identity provider, and the email question when there is any.
    pub providers: Vec<ProviderButton>,
    /// Whether the password form is shown.
    pub local_passwords: bool,
}

pub(crate) struct ProviderButton {
    pub name: String,
    pub display_name: String,
}

pub(crate) struct ScopeLineView {
    pub scope: String,
    pub description: String,
    pub previously_granted: bool,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub(crate) struct ConsentPage<'a> {
    pub issuer: &'a str,
    pub base_path: &'a str,
    pub client_id: &'a str,
    pub client_name: &'a str,
    pub client_verified: bool,
    pub client_origin: &'a str,
    pub redirect_host: &'a str,
    pub redirect_is_local: bool,
    pub resource: &'a str,
    pub resource_name: &'a str,
    pub username: &'a str,
    pub scopes: Vec<ScopeLineView>,
    pub request: &'a str,
    pub csrf: &'a str,
    pub client_id_host: Option<&'a str>,
    pub localhost_only: bool,
    pub identity_provider: Option<&'a str>,
    pub withheld: &'a [String],
}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage<'a> {
    pub issuer: &'a str,
    pub base_path: &'a str,
    pub heading: &'a str,
    pub message: &'a str,
    pub code: Option<&'a str>,
}

pub(crate) struct ConsentView {
    pub client_id: String,
    pub client_name: String,
    pub client_verified: bool,
    pub resource: String,
    /// Each scope in plain words.
    pub scopes: Vec<String>,
    /// The gateway tools those scopes let the agent call.
    pub tools: Vec<String>,
    pub granted_on: String,
    /// When the agent last acted for the user through the gateway.
    pub last_acted: Option<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
pub(crate) struct AccountPage<'a> {
    pub issuer: &'a str,
    pub base_path: &'a str,
    pub username: &'a str,
    pub consents: Vec<ConsentView>,
    pub upstreams: Vec<UpstreamView>,
    pub csrf: &'a str,
}

/// An upstream account the user connected (never its tokens).
pub(crate) struct UpstreamView {
    pub route: String,
    pub issuer: String,
    pub subject: Option<String>,
    pub scope: String,
    pub connected_on: String,
}

#[derive(Template)]
#[template(path = "connect.html")]
pub(crate) struct ConnectPage<'a> {
    pub issuer: &'a str,
    pub base_path: &'a str,
    pub route: &'a str,
    /// The upstream's origin.
    pub upstream: &'a str,
    pub username: &'a str,
    /// What a step-up asks for besides (may be empty).
    pub scope: &'a str,
    pub connected: bool,
    pub csrf: &'a str,
}

#[derive(Template)]
#[template(path = "connected.html")]
pub(crate) struct ConnectedPage<'a> {
    pub issuer: &'a str,
    pub base_path: &'a str,
    pub route: &'a str,
}

#[derive(Template)]
#[template(path = "home.html")]
pub(crate) struct HomePage<'a> {
    pub issuer: &'a str,
    pub base_path: &'a str,
    pub username: Option<&'a str>,
    pub csrf: &'a str,
}

pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// An error shown to the user rather than sent to a client: used whenever redirecting could
/// make us an open redirector.
pub(crate) fn error_page(issuer: &str, base_path: &str, status: StatusCode, error: &OAuthError) -> Response {
    let heading = match status {
        StatusCode::TOO_MANY_REQUESTS => "Slow down",
        s if s.is_server_error() => "Something went wrong",
        _ => "This sign-in request cannot continue",
    };
    render(
        status,
        &ErrorPage { issuer, base_path, heading, message: &error.description, code: Some(error.code.as_str()) },
    )
}

pub(crate) async fn stylesheet() -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../assets/portcullis.css")).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found", "error_description": "no such endpoint"})),
    )
        .into_response()
}
