//! Client authentication at the token, introspection and revocation endpoints
//! (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post`, or `none` for public clients.
//! Secrets are compared as SHA-256 digests in constant time.

use portcullis_crypto::{ct_eq, digest};
use portcullis_store::{ClientRecord, ClientStatus, ClientType};

use crate::{AuthorizationServer, OAuthError};

/// What the request presented. The web layer fills this from the `Authorization: Basic`
/// header (already URL-decoded, RFC 6749 §2.3.1) and the form body.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    pub basic: Option<(String, String)>,
    pub form_client_id: Option<String>,
    pub form_client_secret: Option<String>,
}

impl AuthorizationServer {
    /// Authenticates the calling client. Public clients identify themselves with `client_id`
    /// alone; confidential clients must prove their secret.
    pub async fn authenticate_client(&self, credentials: &ClientCredentials) -> Result<ClientRecord, OAuthError> {
        let (client_id, secret) =
            match (&credentials.basic, &credentials.form_client_id, &credentials.form_client_secret) {
                (Some(_), _, Some(_)) => {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method, not both Basic and client_secret in the body",
                    ));
                }
                (Some((id, _)), Some(form_id), None) if form_id != id => {
                    return Err(OAuthError::invalid_request(
                        "client_id in the body differs from the one in the Authorization header",
                    ));
                }
                (Some((id, secret)), _, None) => (id.as_str(), Some(secret.as_str())),
                (None, Some(id), secret) => (id.as_str(), secret.as_deref()),
                (None, None, _) => {
                    return Err(OAuthError::invalid_client(
                        "client authentication is required: send client_id (and the secret, for confidential clients)",
                    ));
                }
            };
        let found = self.store.find_client(client_id).await?;
        // Hash even when the client is unknown, so the timing does not say which ids exist.
        let presented_digest = secret.map(digest);
        let Some(client) = found else {
            return Err(OAuthError::invalid_client("client authentication failed"));
        };
        match (client.client_type, &client.secret_digest, presented_digest) {
            (ClientType::Confidential, Some(stored), Some(presented)) if ct_eq(stored, &presented) => {}
            (ClientType::Confidential, _, None) => {
                return Err(OAuthError::invalid_client(
                    "this is a confidential client: authenticate with its client secret",
                ));
            }
            (ClientType::Confidential, _, Some(_)) => {
                return Err(OAuthError::invalid_client("client authentication failed"));
            }
            (ClientType::Public, _, None) => {}
            (ClientType::Public, _, Some(_)) => {
                return Err(OAuthError::invalid_client("this is a public client; it has no secret to send"));
            }
        }
        match client.status {
            ClientStatus::Active => Ok(client),
            ClientStatus::Suspended => {
                Err(OAuthError::invalid_client("this client has been suspended by an administrator"))
            }
            ClientStatus::Pending => {
                Err(OAuthError::invalid_client("this client is waiting for an administrator's approval"))
            }
        }
    }
}
