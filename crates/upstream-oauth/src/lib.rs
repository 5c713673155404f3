//! The gateway as an OAuth client of upstream MCP servers.
//!
//! An upstream that wants each user's own account (`upstream_auth = "user"`) or the gateway's
//! own token (`"client_credentials"`) is reached the way the MCP authorization specification
//! asks of any MCP client: its Protected Resource Metadata (RFC 9728) → its authorization
//! server's metadata (RFC 8414) → a client registration (pre-configured, else the Client ID
//! Metadata Document Portcullis publishes, else Dynamic Client Registration) → the
//! authorization code grant with PKCE S256 and `resource` (RFC 8707) → tokens, refreshed with
//! rotation, revoked (RFC 7009) on disconnect.
//!
//! This crate speaks the protocol and checks the answers; it stores nothing. Which user's
//! tokens these are, sealing them, the refresh lease and the pages are the gateway's and the
//! web layer's. See README.md beside this crate for the decisions.

mod challenge;
mod discovery;
mod registration;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oauth2::basic::{BasicClient, BasicTokenType};
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use portcullis_crypto::{ct_eq, random_token};
use portcullis_outbound::{FetchError, FetchPolicy, Fetcher};
use serde::{Deserialize, Serialize};
use url::Url;

pub use challenge::Challenge;
pub use discovery::{Discovered, ProtectedResource, ServerMetadata, resource_covers, resource_metadata_urls};
pub use registration::{ClientAuth, RegisteredClient, Registration, client_metadata_document};

/// Discovered metadata is reused this long; a refusal that suggests it changed re-reads it
/// sooner (`discover(.., true)`).
const METADATA_MAX_AGE: Duration = Duration::from_secs(3600);

/// Why talking to an upstream's authorization server failed. Messages name what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamAuthError {
    #[error("the upstream's authorization metadata could not be read: {0}")]
    Discovery(String),
    #[error("the upstream's authorization metadata is not usable: {0}")]
    Metadata(String),
    #[error("the upstream's metadata is for {published:?}, not for {configured:?}")]
    ResourceMismatch { published: String, configured: String },
    #[error(
        "the gateway cannot register with the upstream's authorization server: it offers neither client ID \
         metadata documents nor dynamic registration; configure a client_id for this upstream"
    )]
    NoRegistration,
    #[error("registering with the upstream's authorization server failed: {0}")]
    Registration(String),
    #[error("the answer belongs to another connection attempt (state does not match)")]
    StateMismatch,
    #[error("the answer comes from another authorization server ({presented:?}); refused (mix-up)")]
    IssuerMismatch { presented: String },
    #[error("the upstream's authorization server refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { error: String, description: Option<String> },
    #[error("the upstream's authorization server sent no code")]
    MissingCode,
    #[error("the upstream's authorization server refused the token request: {0}")]
    TokenRequest(String),
    #[error("the upstream's authorization server returned a token for {audience:?}, not for {resource:?}; refused")]
    WrongAudience { audience: String, resource: String },
    #[error("the upstream's authorization server is unreachable: {0}")]
    Unreachable(String),
}

impl UpstreamAuthError {
    /// The authorization server said the grant is no good (RFC 6749 §5.2 `invalid_grant`):
    /// the user must connect again; retrying will not help.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::TokenRequest(e) if e == "invalid_grant")
    }
}

/// How the gateway identifies itself to an upstream's authorization server.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The upstream MCP endpoint (what the gateway's route forwards to).
    pub upstream: Url,
    /// `<issuer>/connect/callback`.
    pub redirect_uri: Url,
    /// Portcullis's own Client ID Metadata Document, when it can be published (an https
    /// issuer): used where the server supports it and no client is configured.
    pub metadata_document: Option<Url>,
    pub client_name: String,
    /// A client registered by an operator: always preferred.
    pub preconfigured: Option<RegisteredClient>,
    /// The authorization server, when the operator names it (an upstream without RFC 9728
    /// metadata); otherwise the first one the upstream's metadata lists.
    pub authorization_server: Option<String>,
    /// The scopes to ask for; empty: what the upstream's challenge or metadata suggests.
    pub scopes: Vec<String>,
    pub fetch: FetchPolicy,
}

/// Tokens an authorization server issued (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    /// The scope granted, when the server said (RFC 6749 §5.1: else what was asked).
    pub scope: Option<String>,
    /// Who the account is at the upstream, when the access token says (`sub` of a JWT).
    pub subject: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A connection started in a browser: what the callback must find again. Sealed by the caller
/// while it travels (it holds the PKCE verifier).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConnection {
    pub state: String,
    pub pkce_verifier: String,
    /// The authorization server the request went to (mix-up defence).
    pub issuer: String,
    pub client_id: String,
    pub resource: String,
    pub scope: Vec<String>,
}

impl std::fmt::Debug for PendingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConnection").field("issuer", &self.issuer).field("scope", &self.scope).finish()
    }
}

/// The authorization response's parameters (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// One upstream's OAuth client: its discovered metadata, cached.
pub struct UpstreamClient {
    settings: ClientSettings,
    fetcher: Fetcher,
    http: Http,
    discovered: Mutex<Option<(Instant, Arc<Discovered>)>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").field("upstream", &self.settings.upstream.as_str()).finish_non_exhaustive()
    }
}

type OAuthClient = BasicClient<EndpointMaybeSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The outbound fetcher's error, as the HTTP client error `oauth2` expects.
#[derive(Debug)]
struct HttpError(FetchError);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for HttpError {}

/// `oauth2`'s HTTP client: the outbound fetcher.
struct Http(Fetcher);

impl<'c> oauth2::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move { self.0.send(request).await.map_err(HttpError) })
    }
}

fn token_error<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    e: RequestTokenError<RE, T>,
) -> UpstreamAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let text = serde_json::to_value(&r).ok();
            let code = text.as_ref().and_then(|v| v.get("error")).and_then(serde_json::Value::as_str);
            UpstreamAuthError::TokenRequest(discovery::printable(code.unwrap_or("an error")))
        }
        RequestTokenError::Request(e) => UpstreamAuthError::Unreachable(e.to_string()),
        RequestTokenError::Parse(e, _) => UpstreamAuthError::TokenRequest(format!("unreadable token response: {e}")),
        RequestTokenError::Other(e) => UpstreamAuthError::TokenRequest(discovery::printable(&e)),
    }
}

impl UpstreamClient {
    pub fn new(settings: ClientSettings) -> Self {
        let fetcher = Fetcher::new(settings.fetch.clone());
        Self { settings, http: Http(fetcher.clone()), fetcher, discovered: Mutex::new(None) }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The upstream's metadata and its authorization server's, from the cache unless `fresh`
    /// or stale. `challenge` is the upstream's own 401, when there was one.
    pub async fn discover(
        &self,
        challenge: Option<&Challenge>,
        fresh: bool,
    ) -> Result<Arc<Discovered>, UpstreamAuthError> {
        if !fresh
            && let Ok(cached) = self.discovered.lock()
            && let Some((at, d)) = cached.as_ref()
            && at.elapsed() < METADATA_MAX_AGE
        {
            return Ok(Arc::clone(d));
        }
        let (resource, challenge) =
            match discovery::protected_resource(&self.fetcher, &self.settings.upstream, challenge).await {
                Ok(found) => found,
                // An upstream without RFC 9728 metadata works only with an operator-named server.
                Err(e) => match &self.settings.authorization_server {
                    Some(issuer) => (
                        ProtectedResource {
                            resource: self.settings.upstream.to_string(),
                            authorization_servers: vec![issuer.clone()],
                            scopes_supported: Vec::new(),
                        },
                        None,
                    ),
                    None => return Err(e),
                },
            };
        let issuer = match &self.settings.authorization_server {
            Some(named) if resource.authorization_servers.contains(named) => named.clone(),
            Some(named) => {
                return Err(UpstreamAuthError::Metadata(format!(
                    "the upstream does not list the configured authorization server {named:?}"
                )));
            }
            None => resource.authorization_servers.first().cloned().unwrap_or_default(),
        };
        let server = discovery::authorization_server(&self.fetcher, &issuer).await?;
        let discovered = Arc::new(Discovered { resource, server, challenge });
        if let Ok(mut cached) = self.discovered.lock() {
            *cached = Some((Instant::now(), Arc::clone(&discovered)));
        }
        Ok(discovered)
    }

    /// Forgets the discovered metadata: the next use reads it again (after the upstream
    /// refused a token, which may mean it moved to another authorization server).
    pub fn forget_discovery(&self) {
        if let Ok(mut cached) = self.discovered.lock() {
            *cached = None;
        }
    }

    /// How the gateway registers with `discovered`'s server, by preference.
    pub fn registration(&self, discovered: &Discovered) -> Result<Registration, UpstreamAuthError> {
        registration::choose(&self.settings, &discovered.server)
    }

    /// Registers dynamically (RFC 7591) with `discovered`'s server.
    pub async fn register(&self, discovered: &Discovered) -> Result<RegisteredClient, UpstreamAuthError> {
        registration::register(&self.fetcher, &self.settings, &discovered.server).await
    }

    /// The scopes to ask for: the configured ones, else the upstream's challenge (this one, or
    /// the one discovery met), else the scopes its metadata lists (the MCP specification's
    /// scope selection).
    pub fn scopes_to_request(&self, discovered: &Discovered, challenge: Option<&Challenge>) -> Vec<String> {
        if !self.settings.scopes.is_empty() {
            return self.settings.scopes.clone();
        }
        if let Some(scope) = challenge.or(discovered.challenge.as_ref()).and_then(|c| c.scope.as_deref()) {
            return scope.split_whitespace().map(str::to_owned).collect();
        }
        discovered.resource.scopes_supported.clone()
    }

    fn oauth_client(
        &self,
        discovered: &Discovered,
        client: &RegisteredClient,
    ) -> Result<OAuthClient, UpstreamAuthError> {
        let server = &discovered.server;
        let token = TokenUrl::from_url(server.token_endpoint.clone());
        let mut oauth = BasicClient::new(ClientId::new(client.client_id.clone()))
            .set_auth_uri_option(server.authorization_endpoint.clone().map(oauth2::AuthUrl::from_url))
            .set_token_uri(token)
            .set_redirect_uri(RedirectUrl::from_url(self.settings.redirect_uri.clone()));
        match (&client.client_secret, client.auth) {
            (Some(secret), ClientAuth::Post) => {
                oauth = oauth.set_client_secret(ClientSecret::new(secret.clone())).set_auth_type(AuthType::RequestBody);
            }
            (Some(secret), _) => oauth = oauth.set_client_secret(ClientSecret::new(secret.clone())),
            (None, _) => {}
        }
        Ok(oauth)
    }

    /// The authorization request to send the user's browser to, and what its callback must
    /// find again.
    pub fn begin(
        &self,
        discovered: &Discovered,
        client: &RegisteredClient,
        scope: &[String],
    ) -> Result<(Url, PendingConnection), UpstreamAuthError> {
        if discovered.server.authorization_endpoint.is_none() {
            return Err(UpstreamAuthError::Metadata("its authorization server has no authorization endpoint".into()));
        }
        let random = |bytes| random_token(bytes).map_err(|e| UpstreamAuthError::Unreachable(e.to_string()));
        let pending = PendingConnection {
            state: random(32)?,
            pkce_verifier: random(48)?,
            issuer: discovered.server.issuer.clone(),
            client_id: client.client_id.clone(),
            resource: discovered.resource.resource.clone(),
            scope: scope.to_vec(),
        };
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        let state = pending.state.clone();
        let oauth = self.oauth_client(discovered, client)?;
        let mut request = oauth
            .authorize_url(move || CsrfToken::new(state))
            .map_err(|e| UpstreamAuthError::Metadata(e.to_string()))?
            .set_pkce_challenge(challenge)
            .add_extra_param("resource", pending.resource.clone());
        for s in scope {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let (url, _) = request.url();
        Ok((url, pending))
    }

    /// Checks the authorization response against the connection this browser started and
    /// redeems the code.
    pub async fn complete(
        &self,
        discovered: &Discovered,
        client: &RegisteredClient,
        pending: &PendingConnection,
        callback: &CallbackParams,
    ) -> Result<TokenSet, UpstreamAuthError> {
        let state_matches = callback.state.as_deref().is_some_and(|s| ct_eq(s.as_bytes(), pending.state.as_bytes()));
        if !state_matches {
            return Err(UpstreamAuthError::StateMismatch);
        }
        if pending.issuer != discovered.server.issuer || pending.client_id != client.client_id {
            return Err(UpstreamAuthError::IssuerMismatch {
                presented: discovery::printable(&discovered.server.issuer),
            });
        }
        match callback.iss.as_deref() {
            Some(iss) if iss != pending.issuer => {
                return Err(UpstreamAuthError::IssuerMismatch { presented: discovery::printable(iss) });
            }
            None if discovered.server.sends_iss => {
                return Err(UpstreamAuthError::IssuerMismatch { presented: String::new() });
            }
            _ => {}
        }
        if let Some(error) = &callback.error {
            return Err(UpstreamAuthError::Refused {
                error: discovery::printable(error),
                description: callback.error_description.as_deref().map(discovery::printable),
            });
        }
        let code = callback.code.clone().ok_or(UpstreamAuthError::MissingCode)?;
        let response = self
            .oauth_client(discovered, client)?
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .add_extra_param("resource", pending.resource.clone())
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        accept(response, &pending.resource, None)
    }

    /// Redeems a refresh token (rotation: a new refresh token replaces the old one when the
    /// server sends one, else the old one stays).
    pub async fn refresh(
        &self,
        discovered: &Discovered,
        client: &RegisteredClient,
        refresh_token: &str,
    ) -> Result<TokenSet, UpstreamAuthError> {
        let resource = discovered.resource.resource.clone();
        let response = self
            .oauth_client(discovered, client)?
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
            .add_extra_param("resource", resource.clone())
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        accept(response, &resource, Some(refresh_token))
    }

    /// The gateway's own token (client credentials, RFC 6749 §4.4) for the upstream.
    pub async fn client_credentials(
        &self,
        discovered: &Discovered,
        client: &RegisteredClient,
        scope: &[String],
    ) -> Result<TokenSet, UpstreamAuthError> {
        let resource = discovered.resource.resource.clone();
        let oauth = self.oauth_client(discovered, client)?;
        let mut request = oauth.exchange_client_credentials().add_extra_param("resource", resource.clone());
        for s in scope {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let response = request.request_async(&self.http).await.map_err(token_error)?;
        accept(response, &resource, None)
    }

    /// Revokes (RFC 7009) the refresh token, else the access token, where the server offers
    /// revocation. `Ok(false)`: it does not.
    ///
    /// The request is ours, not `oauth2`'s: that crate refuses any http endpoint, and the
    /// outbound fetcher already decides what may be reached (https, or http to loopback with the
    /// operator's development flag), as for every other request here.
    pub async fn revoke(
        &self,
        discovered: &Discovered,
        client: &RegisteredClient,
        access_token: &str,
        refresh_token: Option<&str>,
    ) -> Result<bool, UpstreamAuthError> {
        let Some(endpoint) = &discovered.server.revocation_endpoint else { return Ok(false) };
        let (token, hint) = match refresh_token {
            Some(r) => (r, "refresh_token"),
            None => (access_token, "access_token"),
        };
        // Built whole before anything is awaited (the serializer is not Send).
        let request = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token).append_pair("token_type_hint", hint);
            let mut request = http::Request::post(endpoint.as_str())
                .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(http::header::ACCEPT, "application/json");
            match (&client.client_secret, client.auth) {
                (Some(secret), ClientAuth::Basic) => {
                    // RFC 6749 §2.3.1: each part form-encoded, then Basic.
                    let encode = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                    let credentials = format!("{}:{}", encode(&client.client_id), encode(secret));
                    let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
                    request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
                }
                (Some(secret), _) => {
                    form.append_pair("client_id", &client.client_id).append_pair("client_secret", secret);
                }
                (None, _) => {
                    form.append_pair("client_id", &client.client_id);
                }
            }
            request.body(form.finish().into_bytes()).map_err(|e| UpstreamAuthError::Metadata(e.to_string()))?
        };
        let response = self.fetcher.send(request).await.map_err(|e| UpstreamAuthError::Unreachable(e.to_string()))?;
        if response.status().is_success() {
            return Ok(true);
        }
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap_or_default();
        let code = body.get("error").and_then(serde_json::Value::as_str).unwrap_or("an error");
        Err(UpstreamAuthError::TokenRequest(discovery::printable(code)))
    }
}

/// What a token response must be to be kept: a Bearer token, and, when the access token is a
/// JWT that names its audience, one for this resource (a token for another resource would be
/// refused upstream at best, and used against another server at worst).
fn accept(
    response: oauth2::basic::BasicTokenResponse,
    resource: &str,
    previous_refresh: Option<&str>,
) -> Result<TokenSet, UpstreamAuthError> {
    if *response.token_type() != BasicTokenType::Bearer {
        return Err(UpstreamAuthError::TokenRequest("the token is not a Bearer token".into()));
    }
    let access_token = response.access_token().secret().clone();
    if access_token.is_empty() {
        return Err(UpstreamAuthError::TokenRequest("the access token is empty".into()));
    }
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(&access_token).ok();
    if let Some(aud) = claims.as_ref().and_then(|c| c.get("aud")) {
        let audiences: Vec<&str> = match aud {
            serde_json::Value::String(one) => vec![one.as_str()],
            serde_json::Value::Array(all) => all.iter().filter_map(serde_json::Value::as_str).collect(),
            _ => Vec::new(),
        };
        let matches = |a: &str| a.trim_end_matches('/') == resource.trim_end_matches('/');
        if !audiences.iter().any(|a| matches(a)) {
            return Err(UpstreamAuthError::WrongAudience {
                audience: discovery::printable(&audiences.join(" ")),
                resource: resource.to_owned(),
            });
        }
    }
    let subject =
        claims.as_ref().and_then(|c| c.get("sub")).and_then(serde_json::Value::as_str).map(discovery::printable);
    Ok(TokenSet {
        access_token,
        refresh_token: response
            .refresh_token()
            .map(|r| r.secret().clone())
            .or_else(|| previous_refresh.map(str::to_owned)),
        expires_in: response.expires_in().map(|d| d.as_secs()),
        scope: response.scopes().map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(access_token: &str) -> oauth2::basic::BasicTokenResponse {
        serde_json::from_value(serde_json::json!({
            "access_token": access_token, "token_type": "Bearer", "expires_in": 60, "refresh_token": "r2"
        }))
        .unwrap_or_else(|_| {
            oauth2::basic::BasicTokenResponse::new(
                oauth2::AccessToken::new(String::new()),
                BasicTokenType::Bearer,
                oauth2::EmptyExtraTokenFields {},
            )
        })
    }

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", b64(&serde_json::json!({"alg": "RS256", "typ": "at+jwt"})), b64(&claims))
    }

    #[test]
    fn a_token_for_another_resource_is_refused() {
        let resource = "https://mcp.example/mcp";
        let check = |token: String, ok: bool| {
            let accepted = accept(response(&token), resource, None);
            assert_eq!(accepted.is_ok(), ok, "{token}: {accepted:?}");
        };
        check(jwt(serde_json::json!({"aud": resource, "sub": "u1"})), true);
        check(jwt(serde_json::json!({"aud": [resource, "other"]})), true);
        check(jwt(serde_json::json!({"aud": "https://mcp.example/mcp/"})), true);
        check(jwt(serde_json::json!({"aud": "https://other.example/mcp"})), false);
        check(jwt(serde_json::json!({"aud": ["https://other.example/mcp"]})), false);
        check(jwt(serde_json::json!({"aud": 7})), false);
        check(jwt(serde_json::json!({"sub": "no audience named"})), true);
        check("opaque-token".into(), true);
        let kept = accept(response(&jwt(serde_json::json!({"aud": resource, "sub": "u1"}))), resource, Some("r1"));
        assert_eq!(kept.as_ref().ok().and_then(|t| t.subject.clone()).as_deref(), Some("u1"));
        assert_eq!(kept.ok().and_then(|t| t.refresh_token).as_deref(), Some("r2"), "rotated");
    }

    #[test]
    fn token_sets_print_no_token() {
        let t = TokenSet {
            access_token: "secret-a".into(),
            refresh_token: Some("secret-r".into()),
            expires_in: None,
            scope: None,
            subject: None,
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
