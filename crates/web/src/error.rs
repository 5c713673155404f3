//! The one mapping from protocol errors to HTTP for the JSON endpoints (RFC 6749 §5.2).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use portcullis_oauth::OAuthError;
use portcullis_types::OAuthErrorCode;
use portcullis_types::wire::ErrorResponse;

#[derive(Debug)]
pub(crate) struct WebError(pub OAuthError, pub Option<StatusCode>);

impl WebError {
    /// Overrides the status the error code would get (e.g. 429 for a rate limit).
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.1 = Some(status);
        self
    }
}

impl From<OAuthError> for WebError {
    fn from(e: OAuthError) -> Self {
        Self(e, None)
    }
}

pub(crate) fn status_for(code: OAuthErrorCode) -> StatusCode {
    match code {
        OAuthErrorCode::InvalidClient | OAuthErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        OAuthErrorCode::InsufficientScope | OAuthErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let status = self.1.unwrap_or_else(|| status_for(code));
        let body = ErrorResponse { error: code.as_str().to_owned(), error_description: Some(self.0.description) };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // A bad bearer token (registration) is challenged as such (RFC 6750 §3); a bad
            // client (token, introspection, revocation) with Basic (RFC 6749 §5.2).
            let challenge = if code == OAuthErrorCode::InvalidToken {
                HeaderValue::from_static("Bearer error=\"invalid_token\"")
            } else {
                HeaderValue::from_static("Basic realm=\"portcullis\"")
            };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
