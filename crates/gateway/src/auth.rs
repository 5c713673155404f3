//! Who is calling: bearer tokens from Portcullis's own authorization server or from the
//! external issuers the configuration trusts.
//!
//! Only the `Authorization` header is read (RFC 6750 §2.1; query and form tokens leak into
//! logs and are refused by construction). Our own tokens are checked against the database on
//! every call, so a revoked grant, a suspended client or a disabled user stops working at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_crypto::{
    ForeignAlgorithm, ForeignKeys, digest, unverified_kid, unverified_string_claim, verify_foreign_jwt,
};
use portcullis_oauth::AuthorizationServer;
use portcullis_types::ScopeSet;
use serde_json::{Map, Value};
use tokio::sync::Mutex as AsyncMutex;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub issuer: String,
    /// The user the token acts for (`None` for a client acting on its own behalf).
    pub subject: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    pub scopes: ScopeSet,
}

impl Principal {
    /// The caller of a route that has authentication switched off.
    pub fn anonymous() -> Self {
        Self { issuer: String::new(), subject: None, username: None, client_id: None, scopes: ScopeSet::new() }
    }

    /// Who a session belongs to: a session id presented with another identity is refused.
    pub fn owner(&self) -> (String, Option<String>, Option<String>) {
        (self.issuer.clone(), self.subject.clone(), self.client_id.clone())
    }
}

/// Why a token was refused (always 401 `invalid_token`; the text is for the client's developer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token was given")]
    Missing,
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    #[error("the access token is invalid, expired or revoked")]
    Invalid,
    #[error("the access token was not issued for this resource")]
    WrongAudience,
    #[error("the access token's issuer {0:?} is not trusted here")]
    UntrustedIssuer(String),
    #[error("the token issuer could not be reached to validate the token: {0}")]
    IssuerUnavailable(String),
}

/// How far an external issuer is trusted.
#[derive(Debug, Clone)]
pub struct TrustedIssuerSettings {
    pub issuer: String,
    /// The `aud` its tokens carry for a route, when it is not the route's resource URI (some
    /// identity providers mint their own audience forms). `None`: the route's resource.
    pub audience: Option<String>,
    pub algorithms: Vec<ForeignAlgorithm>,
    /// Accepted `typ` headers; RFC 9068 says `at+jwt`.
    pub token_types: Vec<String>,
    pub leeway_secs: i64,
    /// An unknown `kid` refreshes the JWKS at most this often.
    pub jwks_refresh_min: Duration,
    /// Credentials for RFC 7662 introspection of opaque tokens.
    pub introspection: Option<(String, String)>,
    pub introspection_cache_max: Duration,
    /// Routes whose tokens this issuer may mint; empty: every route.
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct IssuerEndpoints {
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
}

struct CachedIntrospection {
    principal: Principal,
    audiences: Vec<String>,
    until: Instant,
}

/// One trusted external issuer with its discovered endpoints and keys.
pub struct ForeignIssuer {
    pub settings: TrustedIssuerSettings,
    http: reqwest::Client,
    endpoints: AsyncMutex<Option<IssuerEndpoints>>,
    keys: Mutex<Arc<ForeignKeys>>,
    /// When the JWKS was last fetched; refreshes wait on this lock so only one is in flight.
    last_fetch: AsyncMutex<Option<Instant>>,
    introspected: Mutex<HashMap<[u8; 32], CachedIntrospection>>,
}

const INTROSPECTION_CACHE_ENTRIES: usize = 10_000;

impl ForeignIssuer {
    pub fn new(settings: TrustedIssuerSettings, http: reqwest::Client) -> Self {
        Self {
            settings,
            http,
            endpoints: AsyncMutex::new(None),
            keys: Mutex::new(Arc::new(ForeignKeys::default())),
            last_fetch: AsyncMutex::new(None),
            introspected: Mutex::new(HashMap::new()),
        }
    }

    pub fn serves(&self, route: &str) -> bool {
        self.settings.routes.is_empty() || self.settings.routes.iter().any(|r| r == route)
    }

    fn expected_audience<'a>(&'a self, resource: &'a str) -> &'a str {
        self.settings.audience.as_deref().unwrap_or(resource)
    }

    async fn get_json(&self, url: &str) -> Result<Value, TokenError> {
        let response = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| TokenError::IssuerUnavailable(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(TokenError::IssuerUnavailable(format!("{url} answered {}", response.status())));
        }
        response.json().await.map_err(|e| TokenError::IssuerUnavailable(format!("{url}: {e}")))
    }

    /// RFC 8414 metadata, then OpenID discovery; the document's `issuer` must be this issuer.
    async fn endpoints(&self) -> Result<IssuerEndpoints, TokenError> {
        let mut cached = self.endpoints.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let issuer = self.settings.issuer.trim_end_matches('/');
        let (origin, path) = match url::Url::parse(issuer) {
            Ok(u) => (u.origin().ascii_serialization(), u.path().trim_end_matches('/').to_owned()),
            Err(e) => return Err(TokenError::IssuerUnavailable(format!("issuer is not a URL: {e}"))),
        };
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{issuer}/.well-known/openid-configuration"),
        ];
        let mut last_error = TokenError::IssuerUnavailable("no metadata".into());
        for url in candidates {
            match self.get_json(&url).await {
                Ok(doc) => {
                    if doc.get("issuer").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
                        last_error = TokenError::IssuerUnavailable(format!("{url} names another issuer"));
                        continue;
                    }
                    let found = IssuerEndpoints {
                        jwks_uri: doc.get("jwks_uri").and_then(Value::as_str).map(str::to_owned),
                        introspection_endpoint: doc
                            .get("introspection_endpoint")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    };
                    *cached = Some(found.clone());
                    return Ok(found);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// The current keys; fetched on first use and again, at a bounded rate, when a token names
    /// a key we do not have (the issuer rotated).
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<ForeignKeys>, TokenError> {
        let current = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        let known = match kid {
            Some(kid) => current.has_kid(kid),
            None => !current.is_empty(),
        };
        if known {
            return Ok(current);
        }
        let mut last = self.last_fetch.lock().await;
        // Another request may have refreshed while this one waited.
        let current = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        if kid.is_some_and(|kid| current.has_kid(kid)) {
            return Ok(current);
        }
        if last.is_some_and(|t| t.elapsed() < self.settings.jwks_refresh_min) {
            return Ok(current);
        }
        *last = Some(Instant::now());
        let endpoints = self.endpoints().await?;
        let jwks_uri = endpoints
            .jwks_uri
            .ok_or_else(|| TokenError::IssuerUnavailable("the issuer publishes no jwks_uri".into()))?;
        let response = self
            .http
            .get(&jwks_uri)
            .send()
            .await
            .map_err(|e| TokenError::IssuerUnavailable(format!("{jwks_uri}: {e}")))?;
        let body = response.bytes().await.map_err(|e| TokenError::IssuerUnavailable(format!("{jwks_uri}: {e}")))?;
        let fresh = Arc::new(
            ForeignKeys::from_jwks_json(&body)
                .map_err(|_| TokenError::IssuerUnavailable(format!("{jwks_uri} is not a JWK Set")))?,
        );
        if let Ok(mut keys) = self.keys.lock() {
            *keys = fresh.clone();
        }
        Ok(fresh)
    }

    async fn validate_jwt(&self, token: &str, resource: &str, now: i64) -> Result<Principal, TokenError> {
        let kid = unverified_kid(token);
        let keys = self.keys_for(kid.as_deref()).await?;
        let claims =
            verify_foreign_jwt(token, &self.settings.algorithms, &self.settings.token_types, &keys).map_err(|e| {
                tracing::debug!(issuer = %self.settings.issuer, error = %e, "external token refused");
                TokenError::Invalid
            })?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(TokenError::Invalid);
        }
        let leeway = self.settings.leeway_secs;
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or(TokenError::Invalid)?;
        if exp + leeway <= now {
            return Err(TokenError::Invalid);
        }
        if claims.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| nbf > now + leeway) {
            return Err(TokenError::Invalid);
        }
        if !audiences(&claims).iter().any(|a| a == self.expected_audience(resource)) {
            return Err(TokenError::WrongAudience);
        }
        Ok(self.principal(&claims))
    }

    fn principal(&self, claims: &Map<String, Value>) -> Principal {
        let scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => s.split(' ').collect::<Vec<_>>().join(" "),
            (None, Some(Value::Array(a))) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
            _ => String::new(),
        };
        let client_id =
            ["client_id", "azp", "cid"].iter().find_map(|c| claims.get(*c).and_then(Value::as_str)).map(str::to_owned);
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        // A client-credentials token's subject is the client itself.
        let subject = subject.filter(|s| Some(s) != client_id.as_ref());
        Principal {
            issuer: self.settings.issuer.clone(),
            username: claims
                .get("preferred_username")
                .or_else(|| claims.get("username"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            subject,
            client_id,
            scopes: ScopeSet::parse(&scopes).unwrap_or_default(),
        }
    }

    /// RFC 7662 for an opaque token; `None` when this issuer does not know it.
    async fn introspect(&self, token: &str, resource: &str, now: i64) -> Result<Option<Principal>, TokenError> {
        let Some((client_id, secret)) = &self.settings.introspection else { return Ok(None) };
        let key = digest(token);
        if let Ok(mut cache) = self.introspected.lock()
            && let Some(hit) = cache.get(&key)
        {
            if hit.until > Instant::now() {
                return if hit.audiences.iter().any(|a| a == self.expected_audience(resource)) {
                    Ok(Some(hit.principal.clone()))
                } else {
                    Err(TokenError::WrongAudience)
                };
            }
            cache.remove(&key);
        }
        let endpoints = self.endpoints().await?;
        let Some(endpoint) = endpoints.introspection_endpoint else { return Ok(None) };
        let response = self
            .http
            .post(&endpoint)
            .basic_auth(client_id, Some(secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| TokenError::IssuerUnavailable(format!("{endpoint}: {e}")))?;
        if !response.status().is_success() {
            return Err(TokenError::IssuerUnavailable(format!("{endpoint} answered {}", response.status())));
        }
        let claims: Map<String, Value> =
            response.json().await.map_err(|e| TokenError::IssuerUnavailable(format!("{endpoint}: {e}")))?;
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        if claims.get("iss").and_then(Value::as_str).is_some_and(|iss| iss != self.settings.issuer) {
            return Ok(None);
        }
        let Some(exp) = claims.get("exp").and_then(Value::as_i64) else { return Ok(None) };
        if exp <= now {
            return Ok(None);
        }
        let principal = self.principal(&claims);
        let auds = audiences(&claims);
        // Cached no longer than the token lives, and no longer than the configured bound.
        let ttl = Duration::from_secs(u64::try_from(exp - now).unwrap_or(0)).min(self.settings.introspection_cache_max);
        if let Ok(mut cache) = self.introspected.lock() {
            if cache.len() >= INTROSPECTION_CACHE_ENTRIES {
                let instant = Instant::now();
                cache.retain(|_, v| v.until > instant);
            }
            if cache.len() < INTROSPECTION_CACHE_ENTRIES {
                cache.insert(
                    key,
                    CachedIntrospection {
                        principal: principal.clone(),
                        audiences: auds.clone(),
                        until: Instant::now() + ttl,
                    },
                );
            }
        }
        if auds.iter().any(|a| a == self.expected_audience(resource)) {
            Ok(Some(principal))
        } else {
            Err(TokenError::WrongAudience)
        }
    }
}

fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Validates bearer tokens for gateway routes.
pub struct TokenValidator {
    pub(crate) authorization: AuthorizationServer,
    pub(crate) foreign: Vec<Arc<ForeignIssuer>>,
}

impl TokenValidator {
    /// The bearer token of an `Authorization` header value (RFC 6750 §2.1: scheme is
    /// case-insensitive, exactly one space, a token68 credential).
    pub fn bearer(header: Option<&http::HeaderValue>) -> Result<&str, TokenError> {
        let Some(value) = header else { return Err(TokenError::Missing) };
        let text = value.to_str().map_err(|_| TokenError::NotBearer)?;
        let (scheme, token) = text.split_once(' ').ok_or(TokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(TokenError::NotBearer);
        }
        Ok(token)
    }

    pub async fn validate(&self, token: &str, route: &str, resource: &str) -> Result<Principal, TokenError> {
        let now = self.authorization.now();
        let is_jwt = token.split('.').count() == 3;
        if is_jwt {
            let issuer = unverified_string_claim(token, "iss").ok_or(TokenError::Invalid)?;
            if issuer == self.authorization.settings().issuer {
                return self.validate_own(token, resource).await;
            }
            let Some(foreign) = self.foreign.iter().find(|f| f.settings.issuer == issuer) else {
                return Err(TokenError::UntrustedIssuer(issuer));
            };
            if !foreign.serves(route) {
                return Err(TokenError::UntrustedIssuer(issuer));
            }
            return foreign.validate_jwt(token, resource, now).await;
        }
        for foreign in self.foreign.iter().filter(|f| f.serves(route)) {
            if let Some(principal) = foreign.introspect(token, resource, now).await? {
                return Ok(principal);
            }
        }
        Err(TokenError::Invalid)
    }

    async fn validate_own(&self, token: &str, resource: &str) -> Result<Principal, TokenError> {
        let active = match self.authorization.active_access_token(token).await {
            Ok(Some(active)) => active,
            Ok(None) => return Err(TokenError::Invalid),
            Err(e) => {
                tracing::error!(error = %e, "token check failed");
                return Err(TokenError::IssuerUnavailable("the token store is unavailable".into()));
            }
        };
        if active.claims.aud != resource {
            return Err(TokenError::WrongAudience);
        }
        Ok(Principal {
            issuer: active.claims.iss,
            subject: active.status.user_id,
            username: active.status.username,
            client_id: Some(active.claims.client_id),
            scopes: ScopeSet::parse(&active.claims.scope).unwrap_or_default(),
        })
    }
}
