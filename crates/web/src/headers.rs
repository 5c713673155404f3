//! Security headers on every response (RFC 9700 §4.16, §4.2), and the refusal of requests that
//! repeat a header that must appear once (both applied by the edge middleware in `lib.rs`).

use axum::Json;
use axum::extract::Request;
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

/// Sets the security headers on a response. `secure` is whether the issuer is https, which
/// turns on HSTS.
pub(crate) fn add_security_headers(response: &mut Response, secure: bool) {
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
}

/// Headers a request may carry at most once. A proxy in front may read the first copy and we
/// the second (or the other way round), so a request that repeats one is refused whole rather
/// than served with either.
static SINGLETON_HEADERS: [HeaderName; 9] = [
    http::header::AUTHORIZATION,
    CONTENT_TYPE,
    http::header::HOST,
    http::header::ORIGIN,
    portcullis_gateway::SESSION_HEADER,
    portcullis_gateway::VERSION_HEADER,
    portcullis_gateway::METHOD_HEADER,
    portcullis_gateway::NAME_HEADER,
    HeaderName::from_static("last-event-id"),
];

/// The first header of [`SINGLETON_HEADERS`] that `headers` repeats.
pub(crate) fn repeated_singleton(headers: &http::HeaderMap) -> Option<&'static str> {
    // Nearly every request repeats no header at all: then as many names as values.
    if headers.keys_len() == headers.len() {
        return None;
    }
    SINGLETON_HEADERS.iter().find(|name| headers.get_all(*name).iter().nth(1).is_some()).map(HeaderName::as_str)
}

/// 400 for a request that repeats a singleton header, `None` for any other: a JSON-RPC error
/// on gateway routes (whose clients read JSON-RPC), an OAuth `invalid_request` everywhere
/// else. `gateway_prefix` is `<base>/mcp/`.
pub(crate) fn refuse_repeated(request: &Request, gateway_prefix: &str) -> Option<Response> {
    let name = repeated_singleton(request.headers())?;
    let message = format!("the {name} header was sent more than once; send it once");
    if request.uri().path().starts_with(gateway_prefix) {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": message}});
        return Some((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    Some(crate::error::WebError::from(portcullis_oauth::OAuthError::invalid_request(message)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&'static str, &'static str)], expected: Option<&str>) {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        assert_eq!(repeated_singleton(&headers), expected, "{pairs:?}");
    }

    #[test]
    fn only_a_repeated_singleton_is_refused() {
        check(&[], None);
        check(&[("authorization", "Bearer a"), ("mcp-name", "x")], None);
        check(&[("accept", "a/b"), ("accept", "c/d"), ("x-forwarded-for", "1"), ("x-forwarded-for", "2")], None);
        check(&[("authorization", "Bearer a"), ("authorization", "Bearer b")], Some("authorization"));
        check(&[("accept", "a/b"), ("accept", "c/d"), ("mcp-name", "x"), ("mcp-name", "y")], Some("mcp-name"));
        check(&[("last-event-id", "1"), ("host", "a"), ("last-event-id", "2")], Some("last-event-id"));
    }
}
