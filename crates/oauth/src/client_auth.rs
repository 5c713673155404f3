//! Client authentication at the token, introspection and revocation endpoints
//! (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post`, `private_key_jwt` (RFC 7523
//! §2.2, for clients that publish keys), or `none` for public clients. Secrets are compared as
//! SHA-256 digests in constant time; assertions are single-use.

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
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest lifetime accepted for a client assertion: they are meant to be minted per request.
const MAX_ASSERTION_LIFETIME: i64 = 300;

impl AuthorizationServer {
    /// Authenticates the calling client. Public clients identify themselves with `client_id`
    /// alone; confidential clients must prove their secret.
    pub async fn authenticate_client(&self, credentials: &ClientCredentials) -> Result<ClientRecord, OAuthError> {
        if credentials.client_assertion.is_some() || credentials.client_assertion_type.is_some() {
            return self.authenticate_by_assertion(credentials).await;
        }
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
        let found = self.client(client_id).await?;
        // Hash even when the client is unknown, so the timing does not say which ids exist.
        let presented_digest = secret.map(digest);
        let Some(client) = found else {
            return Err(OAuthError::invalid_client("client authentication failed"));
        };
        if client.jwks.is_some() {
            return Err(OAuthError::invalid_client(
                "this client authenticates with private_key_jwt: send a client_assertion",
            ));
        }
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
        active(client)
    }
}

impl AuthorizationServer {
    /// RFC 7523 §2.2 and §3: a JWT signed with one of the client's published keys, naming the
    /// client as `iss` and `sub` and us as `aud`, short-lived, and never seen before.
    async fn authenticate_by_assertion(&self, credentials: &ClientCredentials) -> Result<ClientRecord, OAuthError> {
        if credentials.basic.is_some() || credentials.form_client_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not a secret and an assertion",
            ));
        }
        if credentials.client_assertion_type.as_deref() != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_client(format!("client_assertion_type must be {JWT_BEARER}")));
        }
        let assertion = credentials
            .client_assertion
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("client_assertion is missing"))?;
        let failed = || OAuthError::invalid_client("client authentication failed");
        let client_id =
            match (&credentials.form_client_id, portcullis_crypto::unverified_string_claim(assertion, "sub")) {
                (Some(id), _) => id.clone(),
                (None, Some(sub)) => sub,
                (None, None) => return Err(failed()),
            };
        let client = self.client(&client_id).await?.ok_or_else(failed)?;
        let jwks: portcullis_types::wire::JwkSet = client
            .jwks
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .ok_or_else(|| OAuthError::invalid_client("this client has no keys for private_key_jwt"))?;
        let keys: Vec<portcullis_crypto::PublicKey> = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "EC" && k.crv == "P-256")
            .filter_map(|k| portcullis_crypto::PublicKey::from_p256_jwk(&k.x, &k.y, Some(&k.kid)).ok())
            .collect();
        let verified =
            portcullis_crypto::verify_jwt::<serde_json::Map<String, serde_json::Value>>(assertion, "", keys.iter())
                .map_err(|e| {
                    tracing::info!(client_id = %client.client_id, error = %e, "client assertion refused");
                    failed()
                })?;
        let claims = verified.claims;
        let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
        if text("iss") != Some(client.client_id.as_str()) || text("sub") != Some(client.client_id.as_str()) {
            return Err(OAuthError::invalid_client("the client assertion's iss and sub must both be the client_id"));
        }
        let token_endpoint = self.settings().endpoint("/token");
        let audience_ok =
            |v: &serde_json::Value| v.as_str().is_some_and(|a| a == token_endpoint || a == self.settings().issuer);
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::Array(values)) => values.iter().any(audience_ok),
            Some(value) => audience_ok(value),
            None => false,
        };
        if !aud_ok {
            return Err(OAuthError::invalid_client(
                "the client assertion's aud must be this server's token endpoint or issuer",
            ));
        }
        let now = self.clock.now();
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| OAuthError::invalid_client("the client assertion has no exp"))?;
        if exp <= now || exp > now + MAX_ASSERTION_LIFETIME + 60 {
            return Err(OAuthError::invalid_client(
                "the client assertion is expired or lives too long (at most 5 minutes)",
            ));
        }
        let jti = text("jti")
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| OAuthError::invalid_client("the client assertion has no jti"))?;
        if !self.store.record_assertion_jti(&client.client_id, jti, exp).await? {
            return Err(OAuthError::invalid_client("this client assertion was already used"));
        }
        active(client)
    }
}

/// An authenticated client may act only while it is active.
fn active(client: ClientRecord) -> Result<ClientRecord, OAuthError> {
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
