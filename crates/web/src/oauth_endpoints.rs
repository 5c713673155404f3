//! The JSON endpoints: metadata, JWKS, token, introspection, revocation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use portcullis_oauth::{ClientCredentials, OAuthError, Params, TokenRequest};

use crate::AppState;
use crate::error::WebError;

fn cacheable(mut response: Response, seconds: u32) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={seconds}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}

pub(crate) async fn metadata(State(state): State<AppState>) -> Response {
    cacheable(Json(state.server.metadata()).into_response(), 300)
}

pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    // Short cache: a rotated key must reach verifiers quickly, and they refetch on unknown kid.
    cacheable(Json(state.server.keys().jwks()).into_response(), 60)
}

/// Whether the request's `Content-Type` is `media_type` (parameters such as charset aside).
pub(crate) fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type))
}

/// Parses an `application/x-www-form-urlencoded` body, insisting on that media type.
pub(crate) fn form_params(headers: &HeaderMap, body: &Bytes) -> Result<Params, OAuthError> {
    if !has_media_type(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("send the parameters as application/x-www-form-urlencoded"));
    }
    Ok(Params::from_pairs(form_urlencoded::parse(body).into_owned()))
}

/// Decodes one half of HTTP Basic client credentials: RFC 6749 §2.3.1 form-encodes them. No
/// client id or secret holds a NUL.
fn form_decode(part: &str) -> Option<String> {
    let spaced = part.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
        .filter(|s| !s.contains('\0'))
}

pub(crate) fn client_credentials(headers: &HeaderMap, params: &Params) -> Result<ClientCredentials, OAuthError> {
    let bad_header =
        || OAuthError::invalid_client("the Authorization header is not valid HTTP Basic client authentication");
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| bad_header())?;
            let (scheme, encoded) = value.split_once(' ').ok_or_else(bad_header)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client(
                    "only HTTP Basic client authentication is accepted in the Authorization header",
                ));
            }
            let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad_header())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad_header())?;
            let (id, secret) = decoded.split_once(':').ok_or_else(bad_header)?;
            Some((form_decode(id).ok_or_else(bad_header)?, form_decode(secret).ok_or_else(bad_header)?))
        }
    };
    let single = |name: &str| {
        params.single(name).map(|v| v.map(str::to_owned)).map_err(|e| OAuthError::invalid_request(e.to_string()))
    };
    Ok(ClientCredentials {
        basic,
        form_client_id: single("client_id")?,
        form_client_secret: single("client_secret")?,
        client_assertion_type: single("client_assertion_type")?,
        client_assertion: single("client_assertion")?,
    })
}

/// The form and client credentials of a request to a client-authenticated endpoint.
fn client_request(headers: &HeaderMap, body: &Bytes) -> Result<(Params, ClientCredentials), OAuthError> {
    let params = form_params(headers, body)?;
    let credentials = client_credentials(headers, &params)?;
    Ok((params, credentials))
}

pub(crate) async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let (params, credentials) = client_request(&headers, &body)?;
    let request = TokenRequest::from_params(&params)?;
    let outcome = state.server.token(&credentials, request).await?;
    let mut response = (StatusCode::OK, Json(outcome.response)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

pub(crate) async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let (params, credentials) = client_request(&headers, &body)?;
    let answer = state.server.introspect(&credentials, &params).await?;
    Ok(Json(answer).into_response())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let (params, credentials) = client_request(&headers, &body)?;
    state.server.revoke(&credentials, &params).await?;
    Ok(StatusCode::OK.into_response())
}
