//! The one mapping from protocol errors to HTTP for the JSON endpoints (RFC 6749 §5.2).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use portcullis_oauth::OAuthError;
use portcullis_types::OAuthErrorCode;
use portcullis_types::wire::ErrorResponse;

#[derive(Debug)]
pub(crate) struct WebError(pub OAuthError);

impl From<OAuthError> for WebError {
    fn from(e: OAuthError) -> Self {
        Self(e)
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
        let status = status_for(self.0.code);
        let body =
            ErrorResponse { error: self.0.code.as_str().to_owned(), error_description: Some(self.0.description) };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"portcullis\""));
        }
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
