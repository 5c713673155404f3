//! Who is calling: bearer tokens from Portcullis's own authorization server or from the
//! external issuers the configuration trusts.
//!
//! Only the `Authorization` header is read (RFC 6750 §2.1; query and form tokens leak into
//! logs and are refused by construction). Our own tokens are checked against the database on
//! every call, so a revoked grant, a suspended client or a disabled user stops working at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use portcullis_crypto::{
    ForeignAlgorithm, ForeignKeys, digest, unverified_kid, unverified_string_claim, verify_foreign_jwt,
};
use portcullis_oauth::AuthorizationServer;
use portcullis_outbound::{FetchPolicy, Fetcher, issuer};
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
    /// The grant behind one of our own tokens: when it stops being live (revoked, its client
    /// suspended, its user disabled), the caller's sessions and streams end.
    pub grant_id: Option<String>,
    /// A delegated token's clients (token exchange, RFC 8693 `act`): the one calling first,
    /// then whoever delegated to it. Empty for a token used by the client it was issued to.
    pub delegation: Vec<String>,
}

impl Principal {
    /// The caller of a route that has authentication switched off.
    pub fn anonymous() -> Self {
        Self {
            issuer: String::new(),
            subject: None,
            username: None,
            client_id: None,
            scopes: ScopeSet::new(),
            grant_id: None,
            delegation: Vec::new(),
        }
    }

    /// For the audit trail: who acts, when a token was delegated (`client:B, delegated by
    /// client:A`); `None` for a token used by the client it was issued to.
    pub fn acting(&self) -> Option<String> {
        let (holder, delegators) = self.delegation.split_first()?;
        let by: Vec<String> = delegators.iter().map(|c| format!("client:{c}")).collect();
        Some(format!("client:{holder}, delegated by {}", by.join(" via ")))
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
    /// One of our tokens, genuinely signed, whose grant, client or user no longer allows it:
    /// the same answer to the client, but the audit trail can say whose it was.
    #[error("the access token is invalid, expired or revoked")]
    Inactive { client_id: String, subject: String },
    #[error("the access token was not issued for this resource")]
    WrongAudience,
    #[error("the access token's issuer {0:?} is not trusted here")]
    UntrustedIssuer(String),
    #[error("the token issuer could not be reached to validate the token: {0}")]
    IssuerUnavailable(String),
}

/// Why one of our own tokens cannot be checked: the node fails closed.
const UNREACHABLE_DATABASE: &str =
    "Portcullis cannot reach its database, so it cannot tell whether the token was revoked; try again shortly";

/// How far an external issuer is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// How the issuer may be reached (discovery, keys, introspection): through
    /// `portcullis-outbound`, private networks and http only where allowed.
    pub fetch: FetchPolicy,
}

#[derive(Debug, Clone, Default)]
struct IssuerEndpoints {
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
}

/// One trusted external issuer with its discovered endpoints and keys.
pub struct ForeignIssuer {
    pub settings: TrustedIssuerSettings,
    fetcher: Fetcher,
    endpoints: AsyncMutex<Option<IssuerEndpoints>>,
    keys: Mutex<Arc<ForeignKeys>>,
    /// When the JWKS was last fetched; refreshes wait on this lock so only one is in flight.
    last_fetch: AsyncMutex<Option<Instant>>,
}

impl ForeignIssuer {
    pub fn new(settings: TrustedIssuerSettings) -> Self {
        Self {
            fetcher: Fetcher::new(settings.fetch.clone()),
            settings,
            endpoints: AsyncMutex::new(None),
            keys: Mutex::new(Arc::new(ForeignKeys::default())),
            last_fetch: AsyncMutex::new(None),
        }
    }

    pub fn serves(&self, route: &str) -> bool {
        self.settings.routes.is_empty() || self.settings.routes.iter().any(|r| r == route)
    }

    /// Whether a token for `audiences` is meant for `resource`: its audience is the issuer's
    /// configured one, else the route's resource URL.
    fn is_for(&self, audiences: &[String], resource: &str) -> bool {
        let expected = self.settings.audience.as_deref().unwrap_or(resource);
        audiences.iter().any(|a| a == expected)
    }

    /// RFC 8414 metadata, then OpenID discovery; the document's `issuer` must be this issuer.
    async fn endpoints(&self) -> Result<IssuerEndpoints, TokenError> {
        let mut cached = self.endpoints.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let issuer = self.settings.issuer.as_str();
        let doc = issuer::fetch_metadata(&self.fetcher, issuer, |named| named == issuer)
            .await
            .map_err(|e| TokenError::IssuerUnavailable(e.to_string()))?;
        let found = IssuerEndpoints {
            jwks_uri: doc.get("jwks_uri").and_then(Value::as_str).map(str::to_owned),
            introspection_endpoint: doc.get("introspection_endpoint").and_then(Value::as_str).map(str::to_owned),
        };
        *cached = Some(found.clone());
        Ok(found)
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
        let document = issuer::fetch_json(&self.fetcher, &jwks_uri)
            .await
            .map_err(|e| TokenError::IssuerUnavailable(e.to_string()))?;
        let fresh = Arc::new(
            ForeignKeys::from_jwks_json(document.to_string().as_bytes())
                .map_err(|_| TokenError::IssuerUnavailable(format!("{jwks_uri} is not a JWK Set")))?,
        );
        if let Ok(mut keys) = self.keys.lock() {
            *keys = fresh.clone();
        }
        Ok(fresh)
    }

    /// Verifies one of this issuer's JWTs (signature, `iss`, time); the audience is the
    /// caller's to check, per route.
    async fn verify_jwt(&self, token: &str, now: i64) -> Result<(Principal, Vec<String>, i64), TokenError> {
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
        Ok((self.principal(&claims), audiences(&claims), exp))
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
            // A scope claim that is not RFC 6749 syntax grants nothing (default deny).
            scopes: ScopeSet::parse(&scopes).unwrap_or_default(),
            grant_id: None,
            delegation: Vec::new(),
        }
    }

    /// RFC 7662 for an opaque token: its principal, audiences and expiry, or `None` when
    /// this issuer does not know it. The caller caches the answer.
    async fn introspect(&self, token: &str, now: i64) -> Result<Option<(Principal, Vec<String>, i64)>, TokenError> {
        let Some((client_id, secret)) = &self.settings.introspection else { return Ok(None) };
        let endpoints = self.endpoints().await?;
        let Some(endpoint) = endpoints.introspection_endpoint else { return Ok(None) };
        // RFC 6749 §2.3.1: the credentials are form-encoded before they are joined.
        let encode = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", encode(client_id), encode(secret)));
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let request = http::Request::post(&endpoint)
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(body.into_bytes())
            .map_err(|e| TokenError::IssuerUnavailable(format!("{endpoint}: {e}")))?;
        let response =
            self.fetcher.send(request).await.map_err(|e| TokenError::IssuerUnavailable(format!("{endpoint}: {e}")))?;
        if !response.status().is_success() {
            return Err(TokenError::IssuerUnavailable(format!("{endpoint} answered {}", response.status())));
        }
        let claims: Map<String, Value> = serde_json::from_slice(response.body())
            .map_err(|e| TokenError::IssuerUnavailable(format!("{endpoint}: {e}")))?;
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
        Ok(Some((self.principal(&claims), audiences(&claims), exp)))
    }
}

fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// A validated token, remembered by the digest of the token so its signature (about 100 µs for
/// ES256 on a small machine) or introspection is done once, not per call.
#[derive(Clone)]
enum Verified {
    /// Ours: the signature is checked; the live state comes from `TokenStates` (shared, not
    /// copied, on every call).
    Own(Arc<portcullis_types::wire::AccessTokenClaims>),
    /// An external token (a JWT, or an introspection answer): valid until the entry expires,
    /// and while its issuer is still trusted (the configuration may have been reloaded).
    Foreign(Arc<ForeignToken>),
}

/// What an external token was found to say.
struct ForeignToken {
    issuer: String,
    principal: Principal,
    audiences: Vec<String>,
    exp: i64,
}

struct CachedVerification {
    verified: Verified,
    /// No entry outlives its token; a checked signature is trusted for `VERIFIED_CACHE_SECS` at
    /// most (so a key withdrawn by its issuer stops being trusted within it), an introspection
    /// answer for the issuer's `introspection_cache_max`.
    until: i64,
}

const VERIFIED_CACHE_ENTRIES: usize = 10_000;
const VERIFIED_CACHE_SECS: i64 = 60;

/// The live state of our own tokens (token, grant, client, user), remembered so that a call
/// does not read the database. Exact, not eventually right: every change this node commits
/// empties it before the command returns (a `Control` observer, and `announce_local` for the
/// protocol's own revocations), every change another node commits empties it when the change
/// feed delivers it, and an entry is trusted for `TOKEN_STATE_MAX_AGE` at most whatever
/// happens. A state read while a change lands is not kept (`generation`). A node that stops
/// following the feed refuses our tokens anyway (`own_state`).
#[derive(Default)]
pub(crate) struct TokenStates {
    entries: Mutex<HashMap<String, (Arc<portcullis_store::AccessTokenStatus>, Instant)>>,
    /// Bumped by every invalidation.
    generation: AtomicU64,
}

const TOKEN_STATES: usize = 10_000;
const TOKEN_STATE_MAX_AGE: Duration = Duration::from_secs(1);

impl TokenStates {
    fn get(&self, jti: &str) -> Option<Arc<portcullis_store::AccessTokenStatus>> {
        let entries = self.entries.lock().ok()?;
        entries.get(jti).filter(|(_, read_at)| read_at.elapsed() < TOKEN_STATE_MAX_AGE).map(|(s, _)| Arc::clone(s))
    }

    /// Keeps a state read when the generation was `read_at_generation`, unless a change
    /// landed since.
    fn put(&self, status: Arc<portcullis_store::AccessTokenStatus>, read_at: Instant, read_at_generation: u64) {
        let Ok(mut entries) = self.entries.lock() else { return };
        // Checked under the lock that invalidation also takes.
        if self.generation.load(Ordering::Acquire) != read_at_generation {
            return;
        }
        if entries.len() >= TOKEN_STATES {
            entries.retain(|_, (_, at)| at.elapsed() < TOKEN_STATE_MAX_AGE);
            if entries.len() >= TOKEN_STATES {
                entries.clear();
            }
        }
        entries.insert(status.jti.clone(), (status, read_at));
    }

    pub(crate) fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }
}

/// Validates bearer tokens for gateway routes.
pub struct TokenValidator {
    pub(crate) authorization: AuthorizationServer,
    /// Whether this node still follows the change log; without it our own tokens are refused
    /// (fail closed) rather than checked against a database that may not answer.
    pub(crate) feed: Option<portcullis_control::ChangeFeed>,
    verified: Mutex<HashMap<[u8; 32], CachedVerification>>,
    pub(crate) states: Arc<TokenStates>,
}

impl TokenValidator {
    pub fn new(authorization: AuthorizationServer) -> Self {
        let states: Arc<TokenStates> = Arc::default();
        // This node's own changes reach the cache before the command that made them returns.
        let weak = Arc::downgrade(&states);
        authorization.control().observe(Arc::new(move |_, _| {
            if let Some(states) = weak.upgrade() {
                states.forget_all();
            }
        }));
        Self { authorization, feed: None, verified: Mutex::new(HashMap::new()), states }
    }

    /// Remembers a validation until `until`, which the caller bounds by the token's expiry and
    /// by how long this kind of answer may be trusted.
    fn remember(&self, key: [u8; 32], verified: Verified, until: i64, now: i64) {
        let Ok(mut cache) = self.verified.lock() else { return };
        if cache.len() >= VERIFIED_CACHE_ENTRIES {
            cache.retain(|_, v| v.until > now);
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, CachedVerification { verified, until });
    }

    /// Remembers what an external token was found to say (until `until`), then answers for
    /// `resource` as a remembered one would be answered.
    fn remember_foreign(
        &self,
        key: [u8; 32],
        foreign: &ForeignIssuer,
        (principal, audiences, exp): (Principal, Vec<String>, i64),
        until: i64,
        now: i64,
        resource: &str,
    ) -> Result<Principal, TokenError> {
        let meant_here = foreign.is_for(&audiences, resource);
        let found =
            ForeignToken { issuer: foreign.settings.issuer.clone(), principal: principal.clone(), audiences, exp };
        self.remember(key, Verified::Foreign(Arc::new(found)), until, now);
        if !meant_here {
            return Err(TokenError::WrongAudience);
        }
        Ok(principal)
    }

    fn recall(&self, key: &[u8; 32], now: i64) -> Option<Verified> {
        let mut cache = self.verified.lock().ok()?;
        let found = match cache.get(key) {
            Some(hit) if hit.until > now => Some(hit.verified.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        };
        portcullis_telemetry::cache_lookup(portcullis_telemetry::Cache::VerifiedTokens, found.is_some());
        found
    }

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

    /// Validates `token` for `route` (whose canonical URL is `resource`), trusting the
    /// external issuers `foreign` of the current configuration.
    pub async fn validate(
        &self,
        token: &str,
        route: &str,
        resource: &str,
        foreign: &[Arc<ForeignIssuer>],
    ) -> Result<Principal, TokenError> {
        let now = self.authorization.now();
        let key = digest(token);
        match self.recall(&key, now) {
            Some(Verified::Own(claims)) => return self.own_state(claims, resource).await,
            Some(Verified::Foreign(token)) => {
                let Some(foreign) = foreign.iter().find(|f| f.settings.issuer == token.issuer) else {
                    return Err(TokenError::UntrustedIssuer(token.issuer.clone()));
                };
                if !foreign.serves(route) {
                    return Err(TokenError::UntrustedIssuer(foreign.settings.issuer.clone()));
                }
                if token.exp + foreign.settings.leeway_secs <= now {
                    return Err(TokenError::Invalid);
                }
                if !foreign.is_for(&token.audiences, resource) {
                    return Err(TokenError::WrongAudience);
                }
                return Ok(token.principal.clone());
            }
            None => {}
        }
        let is_jwt = token.split('.').count() == 3;
        if is_jwt {
            let issuer = unverified_string_claim(token, "iss").ok_or(TokenError::Invalid)?;
            if issuer == self.authorization.settings().issuer {
                let claims = Arc::new(self.authorization.verify_access_token(token).ok_or(TokenError::Invalid)?);
                self.remember(key, Verified::Own(Arc::clone(&claims)), claims.exp.min(now + VERIFIED_CACHE_SECS), now);
                return self.own_state(claims, resource).await;
            }
            let Some(foreign) = foreign.iter().find(|f| f.settings.issuer == issuer) else {
                return Err(TokenError::UntrustedIssuer(issuer));
            };
            if !foreign.serves(route) {
                return Err(TokenError::UntrustedIssuer(issuer));
            }
            // Boxed, as every path that may go to the network or the database: their futures
            // are large, and inline they would make every call's future (and its moves) large.
            let found = Box::pin(foreign.verify_jwt(token, now)).await?;
            let until = found.2.min(now + VERIFIED_CACHE_SECS);
            return self.remember_foreign(key, foreign, found, until, now, resource);
        }
        for foreign in foreign.iter().filter(|f| f.serves(route)) {
            if let Some(found) = Box::pin(foreign.introspect(token, now)).await? {
                // Cached no longer than the token lives, nor than the issuer's configured bound.
                let bound = i64::try_from(foreign.settings.introspection_cache_max.as_secs()).unwrap_or(i64::MAX);
                let until = found.2.min(now.saturating_add(bound));
                return self.remember_foreign(key, foreign, found, until, now, resource);
            }
        }
        Err(TokenError::Invalid)
    }

    async fn own_state(
        &self,
        claims: Arc<portcullis_types::wire::AccessTokenClaims>,
        resource: &str,
    ) -> Result<Principal, TokenError> {
        if self.feed.as_ref().is_some_and(|f| !f.is_current()) {
            return Err(TokenError::IssuerUnavailable(UNREACHABLE_DATABASE.into()));
        }
        let status = match self.states.get(&claims.jti) {
            Some(status) => {
                portcullis_telemetry::cache_lookup(portcullis_telemetry::Cache::TokenStates, true);
                Some(status)
            }
            None => {
                portcullis_telemetry::cache_lookup(portcullis_telemetry::Cache::TokenStates, false);
                let generation = self.states.generation.load(Ordering::Acquire);
                let read_at = Instant::now();
                match Box::pin(self.authorization.store().access_token_status(&claims.jti)).await {
                    Ok(Some(status)) => {
                        let status = Arc::new(status);
                        self.states.put(Arc::clone(&status), read_at, generation);
                        Some(status)
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(error = %e, "token check failed");
                        return Err(TokenError::IssuerUnavailable(UNREACHABLE_DATABASE.into()));
                    }
                }
            }
        };
        let Some(status) = status.filter(|status| self.authorization.is_active_access_token(&claims, status)) else {
            return Err(TokenError::Inactive { client_id: claims.client_id.clone(), subject: claims.sub.clone() });
        };
        if claims.aud != resource {
            return Err(TokenError::WrongAudience);
        }
        let delegation =
            claims.act.as_ref().map(|a| a.chain().into_iter().map(str::to_owned).collect()).unwrap_or_default();
        Ok(Principal {
            issuer: claims.iss.clone(),
            subject: status.user_id.clone(),
            username: status.username.clone(),
            client_id: Some(claims.client_id.clone()),
            scopes: status.scope.clone(),
            grant_id: Some(status.grant_id.clone()),
            delegation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_credentials_in_the_authorization_header_count() {
        let h = |v: &'static str| http::HeaderValue::from_static(v);
        assert_eq!(TokenValidator::bearer(Some(&h("Bearer abc.def"))), Ok("abc.def"));
        assert_eq!(TokenValidator::bearer(Some(&h("bearer abc"))), Ok("abc"), "the scheme is case-insensitive");
        assert_eq!(TokenValidator::bearer(None), Err(TokenError::Missing));
        for bad in ["Basic YWxpY2U6eA==", "Bearer", "Bearer ", "Bearer a b", "Bearerabc"] {
            assert_eq!(TokenValidator::bearer(Some(&h(bad))), Err(TokenError::NotBearer), "{bad}");
        }
    }

    #[test]
    fn audiences_and_scopes_are_read_in_every_common_form() {
        let issuer = ForeignIssuer::new(TrustedIssuerSettings {
            issuer: "https://idp.example".into(),
            audience: None,
            algorithms: vec![ForeignAlgorithm::Rs256],
            token_types: vec!["at+jwt".into()],
            leeway_secs: 30,
            jwks_refresh_min: Duration::from_secs(60),
            introspection: None,
            introspection_cache_max: Duration::from_secs(60),
            routes: vec![],
            fetch: FetchPolicy::default(),
        });
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let c = claims(serde_json::json!({"aud": ["a", "b"], "scp": ["x.read", "x.write"], "azp": "app", "sub": "u"}));
        assert_eq!(audiences(&c), ["a", "b"]);
        let p = issuer.principal(&c);
        assert_eq!(p.scopes.to_string(), "x.read x.write");
        assert_eq!((p.client_id.as_deref(), p.subject.as_deref()), (Some("app"), Some("u")));
        let machine = issuer.principal(&claims(serde_json::json!({"scope": "x.read", "client_id": "m", "sub": "m"})));
        assert_eq!(machine.subject, None, "a client acting for itself has no user");
        assert!(audiences(&claims(serde_json::json!({"aud": 5}))).is_empty());
    }
}
