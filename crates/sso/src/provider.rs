//! One identity provider: its discovered metadata and keys, the authorization request, and the
//! checks on its answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreGenderClaim, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IdToken,
    LoginHint, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use portcullis_crypto::{ForeignAlgorithm, ForeignKeys, ct_eq, random_token, verify_foreign_jwt};
use portcullis_outbound::{FetchError, Fetcher, issuer};
use portcullis_types::Clock;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::{ClientCredential, ProviderSettings, SsoError};

/// Metadata is re-discovered at most this often; keys are re-read sooner when a token names a
/// key we do not have, but not more often than `KEY_REFRESH_MIN`.
const METADATA_MAX_AGE: Duration = Duration::from_secs(3600);
const KEY_REFRESH_MIN: Duration = Duration::from_secs(30);
/// Only asymmetric signatures: a provider's client secret never signs what we trust.
const ID_TOKEN_ALGS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];
/// The same algorithms, for statements verified by `portcullis-crypto`.
const ASSERTION_ALGS: &[ForeignAlgorithm] = &[
    ForeignAlgorithm::Rs256,
    ForeignAlgorithm::Ps256,
    ForeignAlgorithm::Es256,
    ForeignAlgorithm::Es384,
    ForeignAlgorithm::EdDsa,
];
/// Clock difference tolerated between us and the provider.
const LEEWAY_SECS: i64 = 60;
/// OpenID Connect Back-Channel Logout 1.0 §2.4: the event a logout token carries.
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Group names kept from one sign-in, at most; more is a misconfigured claim.
const MAX_GROUPS: usize = 500;

/// The claims of an ID token beyond the standard ones (groups, `sid`, Entra's `tid`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct ExtraClaims {
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

type ProviderIdToken =
    IdToken<ExtraClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// How the provider names itself in ID tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IssuerForm {
    Exact(String),
    /// Entra ID's multi-tenant form: `https://login.microsoftonline.com/{tenantid}/v2.0`.
    Tenant {
        template: String,
    },
}

impl IssuerForm {
    const PLACEHOLDER: &str = "{tenantid}";

    /// The issuer an ID token must carry, given its `tid` claim.
    fn expected(&self, tenant: Option<&str>) -> Option<String> {
        match self {
            Self::Exact(issuer) => Some(issuer.clone()),
            Self::Tenant { template } => {
                let tenant =
                    tenant.filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))?;
                Some(template.replace(Self::PLACEHOLDER, tenant))
            }
        }
    }

    /// Whether `presented` (an RFC 9207 `iss` parameter) is this provider.
    fn matches(&self, presented: &str) -> bool {
        match self {
            Self::Exact(issuer) => issuer == presented,
            Self::Tenant { template } => template
                .split_once(Self::PLACEHOLDER)
                .and_then(|(before, after)| presented.strip_prefix(before)?.strip_suffix(after))
                .is_some_and(|tenant| !tenant.is_empty() && tenant.chars().all(|c| c.is_ascii_hexdigit() || c == '-')),
        }
    }
}

/// A multi-tenant provider's statements must come from a tenant the configuration allows;
/// a single-tenant provider's are its own.
fn tenant_allowed(form: &IssuerForm, allowed: &[String], tenant: Option<&str>) -> Result<(), SsoError> {
    if !matches!(form, IssuerForm::Tenant { .. }) {
        return Ok(());
    }
    let tenant = tenant.unwrap_or_default();
    if !tenant.is_empty() && allowed.iter().any(|t| t.eq_ignore_ascii_case(tenant)) {
        Ok(())
    } else {
        Err(SsoError::TenantNotAllowed(printable(tenant, 64)))
    }
}

/// Decides how the discovery document's issuer relates to the configured one: identical, or
/// Entra ID's template behind one of its multi-tenant endpoints.
fn issuer_form(configured: &str, published: &str) -> Option<IssuerForm> {
    if configured == published {
        return Some(IssuerForm::Exact(published.to_owned()));
    }
    if published.contains(IssuerForm::PLACEHOLDER)
        && ["common", "organizations", "consumers"]
            .iter()
            .any(|segment| published.replace(IssuerForm::PLACEHOLDER, segment) == configured)
    {
        return Some(IssuerForm::Tenant { template: published.to_owned() });
    }
    None
}

struct Discovered {
    metadata: CoreProviderMetadata,
    /// The same key set, for the provider's other signed statements (logout tokens,
    /// identity assertions), verified by `portcullis-crypto`.
    keys: ForeignKeys,
    issuer: IssuerForm,
    /// RFC 9207: the provider promises `iss` on every authorization response.
    sends_iss: bool,
    fetched_at: Instant,
    keys_fetched_at: Instant,
}

/// A sign-in in progress: what the browser must bring back. The caller keeps it sealed and
/// bound to the browser (it holds the PKCE verifier).
#[derive(Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    pub idp: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for PendingSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSignIn").field("idp", &self.idp).finish_non_exhaustive()
    }
}

/// The query of the provider's redirect back to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What a verified ID token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignIn {
    /// The token's `iss` (for a multi-tenant provider, the tenant's issuer).
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The provider's session id (`sid`), named by back-channel logout.
    pub session_id: Option<String>,
}

/// What a verified back-channel logout token says: who is logged out (a subject, a provider
/// session, or both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub issuer: String,
    pub subject: Option<String>,
    pub session_id: Option<String>,
    /// The token's id, spent once (`expires_at` says until when it must be remembered).
    pub jti: String,
    pub expires_at: i64,
}

/// What a verified identity assertion (an ID-JAG, SEP-990) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityAssertion {
    pub issuer: String,
    pub subject: String,
    /// The client the provider issued it to; it must be the one presenting it.
    pub client_id: String,
    pub jti: String,
    pub expires_at: i64,
    /// The MCP server it is for, when it names one.
    pub resource: Option<String>,
    /// The scopes the provider allows, when it names them.
    pub scope: Option<String>,
    pub email: Option<String>,
    /// The groups, when the configured groups claim is in it.
    pub groups: Option<Vec<String>>,
}

/// An identity assertion lives at most this long (`exp - iat`): it is a one-time ticket, not a
/// credential.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 600;

/// One configured identity provider, with what was discovered about it.
pub struct IdentityProvider {
    settings: ProviderSettings,
    fetcher: Fetcher,
    redirect_uri: RedirectUrl,
    clock: Arc<dyn Clock>,
    discovered: tokio::sync::Mutex<Option<Arc<Discovered>>>,
}

impl std::fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProvider").field("name", &self.settings.name).finish_non_exhaustive()
    }
}

impl IdentityProvider {
    /// `our_issuer` is Portcullis's issuer: the callback is `<our_issuer>/sso/<name>/callback`,
    /// a distinct redirect URI per provider (the mix-up defence of RFC 9700 §4.4).
    pub fn new(settings: ProviderSettings, our_issuer: &str, clock: Arc<dyn Clock>) -> Result<Self, SsoError> {
        let redirect_uri = RedirectUrl::new(format!("{our_issuer}/sso/{}/callback", settings.name))
            .map_err(|e| SsoError::Unreachable(format!("the callback URL is not a URL: {e}")))?;
        Ok(Self {
            fetcher: Fetcher::new(settings.fetch.clone()),
            settings,
            redirect_uri,
            clock,
            discovered: tokio::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    /// Starts a sign-in: the URL to send the browser to, and what it must bring back.
    pub async fn begin(
        &self,
        login_hint: Option<&str>,
        reauthentication: crate::Reauthentication,
    ) -> Result<(Url, PendingSignIn), SsoError> {
        let discovered = self.discovered(false).await?;
        let client = self.client(&discovered)?;
        let random = |bytes| random_token(bytes).map_err(|e| SsoError::Unreachable(e.to_string()));
        let pending = PendingSignIn {
            idp: self.settings.name.clone(),
            state: random(32)?,
            nonce: random(32)?,
            pkce_verifier: random(48)?,
        };
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        let (state, nonce) = (pending.state.clone(), pending.nonce.clone());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(hint) = login_hint {
            request = request.set_login_hint(LoginHint::new(hint.to_owned()));
        }
        // A client that asked for a fresh or recent sign-in gets one at the provider too, not a
        // silent single sign-on from an old session there.
        if reauthentication.prompt_login {
            request = request.add_prompt(openidconnect::core::CoreAuthPrompt::Login);
        }
        if let Some(max_age) = reauthentication.max_age.and_then(|secs| u64::try_from(secs).ok()) {
            request = request.set_max_age(Duration::from_secs(max_age));
        }
        let (url, _, _) = request.url();
        Ok((url, pending))
    }

    /// Checks the provider's answer against the sign-in this browser started, redeems the code
    /// and verifies the ID token.
    pub async fn complete(
        &self,
        pending: &PendingSignIn,
        callback: &CallbackParams,
    ) -> Result<VerifiedSignIn, SsoError> {
        if pending.idp != self.settings.name {
            return Err(SsoError::MixUp);
        }
        let state_matches = callback.state.as_deref().is_some_and(|s| ct_eq(s.as_bytes(), pending.state.as_bytes()));
        if let Some(error) = &callback.error {
            // An error with a foreign state is not this sign-in's; either way nothing is signed in.
            return Err(if state_matches {
                SsoError::Refused {
                    error: printable(error, 64),
                    description: callback.error_description.as_deref().map(|d| printable(d, 200)),
                }
            } else {
                SsoError::StateMismatch
            });
        }
        if !state_matches {
            return Err(SsoError::StateMismatch);
        }
        let discovered = self.discovered(false).await?;
        match callback.iss.as_deref() {
            Some(iss) if !discovered.issuer.matches(iss) => {
                return Err(SsoError::IssuerMismatch { presented: printable(iss, 200) });
            }
            None if discovered.sends_iss => return Err(SsoError::IssuerMismatch { presented: String::new() }),
            _ => {}
        }
        let code = callback.code.clone().ok_or(SsoError::MissingCode)?;
        let client = self.client(&discovered)?;
        let fetcher = self.fetcher.clone();
        let http = move |request: openidconnect::HttpRequest| {
            let fetcher = fetcher.clone();
            async move { fetcher.send(request).await.map_err(HttpError) }
        };
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| SsoError::Unreachable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        if let ClientCredential::PrivateKeyJwt(signer) = &self.settings.credential {
            let audience = discovered
                .metadata
                .token_endpoint()
                .map(|t| t.as_str().to_owned())
                .ok_or_else(|| SsoError::Unreachable("its metadata names no token endpoint".into()))?;
            let assertion = signer
                .client_assertion(&self.settings.client_id, &audience)
                .map_err(|e| SsoError::TokenExchange(format!("could not sign the client assertion: {e}")))?;
            exchange = exchange
                .add_extra_param("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                .add_extra_param("client_assertion", assertion);
        }
        let response = exchange.request_async(&http).await.map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => SsoError::TokenExchange(printable(r.error().as_ref(), 64)),
            RequestTokenError::Request(HttpError(e)) => SsoError::Unreachable(e.to_string()),
            RequestTokenError::Parse(e, _) => SsoError::TokenExchange(format!("unreadable token response: {e}")),
            other => SsoError::TokenExchange(other.to_string()),
        })?;
        let raw = response.id_token().ok_or(SsoError::MissingIdToken)?.to_string();
        let id_token: ProviderIdToken = serde_json::from_value(serde_json::Value::String(raw))
            .map_err(|e| SsoError::InvalidIdToken(format!("unreadable: {e}")))?;
        let nonce = Nonce::new(pending.nonce.clone());
        match self.verify(&discovered, &client, &id_token, &nonce) {
            Err(SsoError::IdTokenSignature(_)) => {
                // Perhaps the provider rotated its keys: read them once more (bounded), then
                // decide for good.
                let refreshed = self.discovered(true).await?;
                let client = self.client(&refreshed)?;
                self.verify(&refreshed, &client, &id_token, &nonce)
            }
            other => other,
        }
    }

    /// Whether a statement naming issuer `iss` could be this provider's (before verifying it).
    pub async fn is_issuer(&self, iss: &str) -> bool {
        match self.discovered(false).await {
            Ok(d) => d.issuer.matches(iss),
            Err(_) => self.settings.issuer == iss,
        }
    }

    /// Verifies an identity assertion JWT authorization grant (draft-ietf-oauth-identity-
    /// assertion-authz-grant, as SEP-990 profiles it): signed by this provider with an allowed
    /// algorithm, typed `oauth-id-jag+jwt`, `iss` this provider, `aud` exactly `audience` (our
    /// issuer; one value), `iat` and `exp` with a lifetime of at most
    /// [`MAX_ASSERTION_LIFETIME_SECS`], and `sub`, `client_id` and `jti` present. No `cnf`:
    /// Portcullis does not bind tokens to keys (DPoP), so it refuses an assertion that asks
    /// for it. Whether the client, resource and scopes fit, and spending the `jti`, are the
    /// caller's.
    pub async fn verify_identity_assertion(&self, token: &str, audience: &str) -> Result<IdentityAssertion, SsoError> {
        if !self.settings.accept_id_jag {
            return Err(SsoError::InvalidStatement("this identity provider's assertions are not accepted".into()));
        }
        let claims = self.verify_statement_for(token, &["oauth-id-jag+jwt"], audience).await?;
        let bad = |why: &str| SsoError::InvalidStatement(why.to_owned());
        match claims.get("aud") {
            Some(serde_json::Value::String(_)) => {}
            Some(serde_json::Value::Array(all)) if all.len() == 1 => {}
            _ => return Err(bad("its audience must be this authorization server alone")),
        }
        if claims.contains_key("cnf") {
            return Err(bad("it asks for a key-bound token (cnf), which this server does not issue"));
        }
        // A claim of a type we do not read is refused, never ignored: an array `resource` or
        // `scope` must not quietly become "whatever the request says".
        let string = |name: &str| -> Result<Option<String>, SsoError> {
            match claims.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(v)) if !v.is_empty() => Ok(Some(v.clone())),
                Some(_) => Err(SsoError::InvalidStatement(format!("its {name} claim is not a non-empty string"))),
            }
        };
        let time = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64).unwrap_or_default();
        if time("exp").saturating_sub(time("iat")) > MAX_ASSERTION_LIFETIME_SECS {
            return Err(bad("it lives longer than an identity assertion may"));
        }
        let groups =
            self.settings.groups_claim.as_deref().and_then(|name| claims.get(name)).map(|claim| groups_of(Some(claim)));
        Ok(IdentityAssertion {
            issuer: string("iss")?.unwrap_or_default(),
            subject: string("sub")?.ok_or_else(|| bad("it names no subject"))?,
            client_id: string("client_id")?.ok_or_else(|| bad("it names no client_id"))?,
            jti: string("jti")?.ok_or_else(|| bad("it has no jti"))?,
            expires_at: time("exp"),
            resource: string("resource")?,
            scope: string("scope")?,
            email: string("email")?,
            groups,
        })
    }

    /// Verifies an OpenID Connect Back-Channel Logout 1.0 logout token (§2.6): signed by this
    /// provider (the same algorithms as ID tokens), typed `logout+jwt` (or plain `JWT`), its
    /// `iss`, `aud` (our client id), `iat`, `exp` and `jti`, the back-channel logout event, a
    /// `sub` or `sid`, and no `nonce`. Spending the `jti` once is the caller's.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutClaims, SsoError> {
        let claims = self.verify_statement(token, &["logout+jwt", "JWT"]).await?;
        let string = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let is_logout = claims
            .get("events")
            .and_then(|e| e.as_object())
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(serde_json::Value::is_object);
        if !is_logout {
            return Err(SsoError::InvalidStatement("it carries no back-channel logout event".into()));
        }
        if claims.contains_key("nonce") {
            return Err(SsoError::InvalidStatement("a logout token must not carry a nonce".into()));
        }
        let (subject, session_id) = (string("sub"), string("sid"));
        if subject.is_none() && session_id.is_none() {
            return Err(SsoError::InvalidStatement("it names neither a subject nor a session".into()));
        }
        Ok(LogoutClaims {
            issuer: string("iss").unwrap_or_default(),
            subject,
            session_id,
            jti: string("jti").ok_or_else(|| SsoError::InvalidStatement("it has no jti".into()))?,
            expires_at: claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or_default(),
        })
    }

    /// A JWT this provider signed for us: the signature (re-reading the keys once if it names
    /// a key we do not have), one of `types`, `iss` this provider, `aud` our client id, `iat`
    /// not in the future and `exp` not past (both required). Returns the claims.
    async fn verify_statement(
        &self,
        token: &str,
        types: &[&str],
    ) -> Result<serde_json::Map<String, serde_json::Value>, SsoError> {
        self.verify_statement_for(token, types, &self.settings.client_id).await
    }

    /// As `verify_statement`, with the audience given.
    async fn verify_statement_for(
        &self,
        token: &str,
        types: &[&str],
        audience: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, SsoError> {
        let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        let mut discovered = self.discovered(false).await?;
        let mut verified = verify_foreign_jwt(token, ASSERTION_ALGS, &types, &discovered.keys);
        if matches!(verified, Err(portcullis_crypto::JwtError::UnknownKeyId)) {
            discovered = self.discovered(true).await?;
            verified = verify_foreign_jwt(token, ASSERTION_ALGS, &types, &discovered.keys);
        }
        let claims = verified.map_err(|e| SsoError::InvalidStatement(e.to_string()))?;
        let tenant = claims.get("tid").and_then(|v| v.as_str());
        self.check_tenant(&discovered, tenant)?;
        let issuer = claims.get("iss").and_then(|v| v.as_str()).unwrap_or_default();
        if discovered.issuer.expected(tenant).as_deref() != Some(issuer) {
            return Err(SsoError::InvalidStatement(format!(
                "it was issued by {:?}, not this provider",
                printable(issuer, 200)
            )));
        }
        let audience_matches = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == audience,
            Some(serde_json::Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !audience_matches {
            return Err(SsoError::InvalidStatement(format!("it is not meant for {audience}")));
        }
        let now = self.clock.now();
        let time = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
        match (time("iat"), time("exp")) {
            (Some(iat), _) if iat > now.saturating_add(LEEWAY_SECS) => {
                Err(SsoError::InvalidStatement("it was issued in the future".into()))
            }
            (Some(_), Some(exp)) if exp.saturating_add(LEEWAY_SECS) > now => Ok(claims),
            (Some(_), Some(_)) => Err(SsoError::InvalidStatement("it has expired".into())),
            _ => Err(SsoError::InvalidStatement("it lacks iat or exp".into())),
        }
    }

    fn verify(
        &self,
        discovered: &Discovered,
        client: &ConfiguredClient,
        id_token: &ProviderIdToken,
        nonce: &Nonce,
    ) -> Result<VerifiedSignIn, SsoError> {
        let clock = self.clock.clone();
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(ID_TOKEN_ALGS.iter().cloned())
            // The issuer is checked below, where Entra's per-tenant form is understood.
            .require_issuer_match(false)
            // Our clock, not the system's; a time it cannot express makes every token expired.
            .set_time_fn(move || {
                chrono::DateTime::from_timestamp(clock.now(), 0).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            });
        let claims = id_token.claims(&verifier, nonce).map_err(|e| match e {
            ClaimsVerificationError::InvalidNonce(_) => SsoError::Nonce,
            ClaimsVerificationError::SignatureVerification(e) => SsoError::IdTokenSignature(e.to_string()),
            other => SsoError::InvalidIdToken(other.to_string()),
        })?;
        let extra = &claims.additional_claims().other;
        let tenant = extra.get("tid").and_then(|v| v.as_str());
        self.check_tenant(discovered, tenant)?;
        let issuer = claims.issuer().as_str();
        if discovered.issuer.expected(tenant).as_deref() != Some(issuer) {
            return Err(SsoError::InvalidIdToken(format!(
                "it was issued by {:?}, not this provider",
                printable(issuer, 200)
            )));
        }
        let groups = match &self.settings.groups_claim {
            Some(name) => groups_of(extra.get(name)),
            None => Vec::new(),
        };
        Ok(VerifiedSignIn {
            issuer: issuer.to_owned(),
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified() == Some(true),
            name: claims.name().and_then(|n| n.get(None)).map(|n| printable(n.as_str(), 200)),
            groups,
            session_id: extra.get("sid").and_then(|v| v.as_str()).map(|s| printable(s, 255)),
        })
    }

    fn check_tenant(&self, discovered: &Discovered, tenant: Option<&str>) -> Result<(), SsoError> {
        tenant_allowed(&discovered.issuer, &self.settings.allowed_tenants, tenant)
    }

    fn client(&self, discovered: &Discovered) -> Result<ConfiguredClient, SsoError> {
        let secret = match &self.settings.credential {
            ClientCredential::Secret(secret) => Some(ClientSecret::new(secret.clone())),
            ClientCredential::PrivateKeyJwt(_) => None,
        };
        let client = CoreClient::from_provider_metadata(
            discovered.metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            secret.clone(),
        )
        .set_redirect_uri(self.redirect_uri.clone());
        if secret.is_none() {
            // The assertion and client_id go in the body (RFC 7523 §2.2).
            return Ok(client.set_auth_type(AuthType::RequestBody));
        }
        // client_secret_basic unless the provider says it takes only client_secret_post.
        let post_only = discovered.metadata.token_endpoint_auth_methods_supported().is_some_and(|methods| {
            methods.contains(&CoreClientAuthMethod::ClientSecretPost)
                && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
        });
        Ok(if post_only { client.set_auth_type(AuthType::RequestBody) } else { client })
    }

    /// The provider's metadata and keys, from the cache while fresh. `refresh_keys` re-reads
    /// the keys unless they were read in the last `KEY_REFRESH_MIN`.
    async fn discovered(&self, refresh_keys: bool) -> Result<Arc<Discovered>, SsoError> {
        let mut cached = self.discovered.lock().await;
        if let Some(d) = cached.as_ref() {
            let fresh = d.fetched_at.elapsed() < METADATA_MAX_AGE;
            if fresh && (!refresh_keys || d.keys_fetched_at.elapsed() < KEY_REFRESH_MIN) {
                return Ok(d.clone());
            }
        }
        let discovered = Arc::new(self.discover().await?);
        *cached = Some(discovered.clone());
        Ok(discovered)
    }

    async fn discover(&self) -> Result<Discovered, SsoError> {
        // Exactly as configured: Auth0's issuer, for one, ends with a slash.
        let configured = self.settings.issuer.as_str();
        let document =
            issuer::fetch_metadata(&self.fetcher, configured, |published| issuer_form(configured, published).is_some())
                .await
                .map_err(|e| SsoError::Unreachable(e.to_string()))?;
        let sends_iss =
            document.get("authorization_response_iss_parameter_supported") == Some(&serde_json::Value::Bool(true));
        let metadata: CoreProviderMetadata = serde_json::from_value(document)
            .map_err(|e| SsoError::Unreachable(format!("its discovery document is not valid: {e}")))?;
        let published = metadata.issuer().as_str();
        let issuer = issuer_form(configured, published).ok_or_else(|| {
            SsoError::Unreachable(format!(
                "its discovery document names issuer {:?}, not the configured {configured:?}",
                printable(published, 200)
            ))
        })?;
        if matches!(issuer, IssuerForm::Tenant { .. }) && self.settings.allowed_tenants.is_empty() {
            return Err(SsoError::Unreachable(
                "it is a multi-tenant issuer: list the tenants whose users may sign in in allowed_tenants".into(),
            ));
        }
        let key_document = issuer::fetch_json(&self.fetcher, metadata.jwks_uri().as_str())
            .await
            .map_err(|e| SsoError::Unreachable(e.to_string()))?;
        let keys = ForeignKeys::from_jwks_json(key_document.to_string().as_bytes())
            .map_err(|e| SsoError::Unreachable(format!("its key set is not valid: {e}")))?;
        let key_set: CoreJsonWebKeySet = serde_json::from_value(key_document)
            .map_err(|e| SsoError::Unreachable(format!("its key set is not valid: {e}")))?;
        let now = Instant::now();
        Ok(Discovered {
            metadata: metadata.set_jwks(key_set),
            keys,
            issuer,
            sends_iss,
            fetched_at: now,
            keys_fetched_at: now,
        })
    }
}

type ConfiguredClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The outbound fetcher's error, as the HTTP client error `openidconnect` expects.
#[derive(Debug)]
struct HttpError(FetchError);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for HttpError {}

/// Groups from a claim that is a list of strings (or one string); names with control
/// characters are dropped (they are stored one per line), and the list is bounded.
fn groups_of(claim: Option<&serde_json::Value>) -> Vec<String> {
    let names: Vec<&str> = match claim {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    };
    names
        .into_iter()
        .filter(|g| !g.is_empty() && g.len() <= 256 && !g.chars().any(char::is_control))
        .take(MAX_GROUPS)
        .map(str::to_owned)
        .collect()
}

/// What a stranger sent, made safe to show and record: control characters out, bounded.
fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_exact_or_entra_templates() {
        let entra = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let check = |configured: &str, published: &str, expected: Option<IssuerForm>| {
            assert_eq!(issuer_form(configured, published), expected, "{configured} / {published}");
        };
        check("https://idp.test", "https://idp.test", Some(IssuerForm::Exact("https://idp.test".into())));
        check("https://idp.test", "https://idp.test/", None);
        check(
            "https://tenant.auth0.test/",
            "https://tenant.auth0.test/",
            Some(IssuerForm::Exact("https://tenant.auth0.test/".into())),
        );
        check("https://idp.test", "https://evil.test", None);
        check(
            "https://login.microsoftonline.com/common/v2.0",
            entra,
            Some(IssuerForm::Tenant { template: entra.into() }),
        );
        check("https://login.microsoftonline.com/evil/v2.0", entra, None);

        let tenant = IssuerForm::Tenant { template: entra.into() };
        let tid = "9188040d-6c67-4c5b-b112-36a304b66dad";
        assert_eq!(tenant.expected(Some(tid)), Some(format!("https://login.microsoftonline.com/{tid}/v2.0")));
        assert_eq!(tenant.expected(Some("../evil")), None);
        assert_eq!(tenant.expected(None), None);
        assert!(tenant.matches(&format!("https://login.microsoftonline.com/{tid}/v2.0")));
        assert!(!tenant.matches("https://login.microsoftonline.com//v2.0"));
        assert!(!tenant.matches("https://login.microsoftonline.com/x/y/v2.0"));
    }

    #[test]
    fn a_multi_tenant_provider_takes_only_the_allowed_tenants() {
        let tenant = IssuerForm::Tenant { template: "https://login.microsoftonline.com/{tenantid}/v2.0".into() };
        let exact = IssuerForm::Exact("https://idp.test".into());
        let allowed = vec!["9188040d-6c67-4c5b-b112-36a304b66dad".to_owned()];
        let check = |form: &IssuerForm, tid: Option<&str>, ok: bool| {
            assert_eq!(tenant_allowed(form, &allowed, tid).is_ok(), ok, "{form:?} {tid:?}");
        };
        check(&tenant, Some("9188040d-6c67-4c5b-b112-36a304b66dad"), true);
        check(&tenant, Some("9188040D-6C67-4C5B-B112-36A304B66DAD"), true);
        check(&tenant, Some("00000000-0000-0000-0000-000000000000"), false);
        check(&tenant, None, false);
        check(&exact, None, true);
        assert!(tenant_allowed(&tenant, &[], Some("9188040d-6c67-4c5b-b112-36a304b66dad")).is_err(), "none allowed");
    }

    #[test]
    fn groups_are_strings_and_bounded() {
        let check = |claim: serde_json::Value, expected: &[&str]| {
            assert_eq!(groups_of(Some(&claim)), expected, "{claim}");
        };
        check(serde_json::json!(["eng", "ops"]), &["eng", "ops"]);
        check(serde_json::json!("eng"), &["eng"]);
        check(serde_json::json!(["eng", 7, "", "two\nlines"]), &["eng"]);
        check(serde_json::json!({"eng": true}), &[]);
        let many: Vec<String> = (0..2 * MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert_eq!(groups_of(Some(&serde_json::json!(many))).len(), MAX_GROUPS);
    }
}
