//! Protocol errors. An [`OAuthError`] is what the client is told (an RFC 6749 error code and a
//! description a developer can act on); a [`ServerError`] is our fault and is logged, with only
//! `server_error` shown.

use portcullis_types::OAuthErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: description.into() }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, d)
    }

    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidClient, d)
    }

    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, d)
    }

    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidScope, d)
    }

    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidTarget, d)
    }

    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::UnauthorizedClient, d)
    }

    pub fn server_error() -> Self {
        Self::new(OAuthErrorCode::ServerError, "the authorization server hit an internal error; it has been logged")
    }
}

/// An internal failure: storage or cryptography. Never shown to clients beyond `server_error`.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] portcullis_store::StoreError),
    #[error(transparent)]
    Crypto(#[from] portcullis_crypto::CryptoError),
    #[error(transparent)]
    Keys(#[from] crate::KeyRingError),
    #[error(transparent)]
    Control(#[from] portcullis_control::ControlError),
}

impl From<ServerError> for OAuthError {
    fn from(e: ServerError) -> Self {
        let unavailable = matches!(
            &e,
            ServerError::Store(portcullis_store::StoreError::Timeout(_) | portcullis_store::StoreError::WriterStopped)
                | ServerError::Control(portcullis_control::ControlError::Store(portcullis_store::StoreError::Timeout(
                    _
                )))
        );
        if unavailable {
            // Fail closed, and say so: the client may retry.
            tracing::error!(error = %e, "the database did not answer in time");
            return OAuthError::new(
                portcullis_types::OAuthErrorCode::TemporarilyUnavailable,
                "the authorization server cannot reach its database; try again shortly",
            );
        }
        tracing::error!(error = %e, "internal error while handling an OAuth request");
        OAuthError::server_error()
    }
}

impl From<portcullis_control::ControlError> for OAuthError {
    fn from(e: portcullis_control::ControlError) -> Self {
        ServerError::from(e).into()
    }
}

impl From<portcullis_store::StoreError> for OAuthError {
    fn from(e: portcullis_store::StoreError) -> Self {
        ServerError::from(e).into()
    }
}

impl From<portcullis_crypto::CryptoError> for OAuthError {
    fn from(e: portcullis_crypto::CryptoError) -> Self {
        ServerError::from(e).into()
    }
}
