//! Security headers on every response (RFC 9700 §4.16, §4.2), and the refusal of requests that
//! repeat a header that must appear once.

use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderName, HeaderValue, StatusCode};

/// Pages may load our stylesheet and nothing else, and may not be framed.
pub(crate) const PAGE_CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The dashboard's pages may also run our own script (the audit viewer's live tail) and fetch
/// from our own origin.
pub(crate) const DASHBOARD_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                                        connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// `secure` is whether the issuer is https, which turns on HSTS.
pub(crate) async fn security_headers(State(secure): State<bool>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let is_html =
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
    let h = response.headers_mut();
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A handler may have chosen the dashboard's policy; any other is replaced.
    let dashboard = h.get(CONTENT_SECURITY_POLICY).is_some_and(|v| v == DASHBOARD_CSP);
    if !(is_html && dashboard) {
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(if is_html { PAGE_CSP } else { API_CSP }));
    }
    if secure {
        h.insert(http::header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Headers a request may carry at most once. A proxy in front may read the first copy and we
/// the second (or the other way round), so a request that repeats one is refused whole rather
/// than served with either.
const SINGLETON_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "host",
    "origin",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// The first header of [`SINGLETON_HEADERS`] that `headers` repeats.
pub(crate) fn repeated_singleton(headers: &http::HeaderMap) -> Option<&'static str> {
    SINGLETON_HEADERS
        .iter()
        .copied()
        .find(|name| headers.get_all(HeaderName::from_static(name)).iter().nth(1).is_some())
}

/// 400 for a repeated singleton header: a JSON-RPC error on gateway routes (whose clients read
/// JSON-RPC), an OAuth `invalid_request` everywhere else. `gateway_prefix` is `<base>/mcp/`.
pub(crate) async fn refuse_repeated_headers(
    State(gateway_prefix): State<std::sync::Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(name) = repeated_singleton(request.headers()) else { return next.run(request).await };
    let message = format!("the {name} header was sent more than once; send it once");
    if request.uri().path().starts_with(&*gateway_prefix) {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": message}});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    crate::error::WebError::from(portcullis_oauth::OAuthError::invalid_request(message)).into_response()
}
