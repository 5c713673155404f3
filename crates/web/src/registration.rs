//! The registration endpoint (RFC 7591) and client configuration endpoint (RFC 7592).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use portcullis_oauth::{OAuthError, RegistrationContext};
use portcullis_types::OAuthErrorCode;
use portcullis_types::wire::ClientMetadata;

use crate::error::WebError;
use crate::oauth_endpoints::has_media_type;
use crate::{AppState, Peer};

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|t| !t.is_empty())
}

fn metadata(headers: &HeaderMap, body: &Bytes) -> Result<ClientMetadata, OAuthError> {
    if !has_media_type(headers, "application/json") {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidClientMetadata,
            "send the client metadata as application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        OAuthError::new(
            OAuthErrorCode::InvalidClientMetadata,
            format!("the client metadata is not valid JSON of the right shape: {e}"),
        )
    })
}

pub(crate) async fn register(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let address = state.client_address(peer.0, &headers);
    if !state.registration_limit.allow(address) {
        tracing::warn!(peer = %address, "registration rate limit reached");
        return Err(WebError::from(OAuthError::new(
            OAuthErrorCode::TemporarilyUnavailable,
            "too many registrations from this address; try again later",
        ))
        .with_status(StatusCode::TOO_MANY_REQUESTS));
    }
    let metadata = metadata(&headers, &body)?;
    let ctx = RegistrationContext { source: address, initial_access_token: bearer(&headers) };
    let info = state.server.register_client(&ctx, metadata).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub(crate) async fn read(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let client = state.server.managed_client(&client_id, bearer(&headers).as_deref()).await?;
    Ok(Json(state.server.client_information(&client, None, None)).into_response())
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let client = state.server.managed_client(&client_id, bearer(&headers).as_deref()).await?;
    let metadata = metadata(&headers, &body)?;
    Ok(Json(state.server.update_registered_client(client, metadata).await?).into_response())
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let client = state.server.managed_client(&client_id, bearer(&headers).as_deref()).await?;
    state.server.delete_registered_client(&client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
