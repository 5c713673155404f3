//! Portcullis as a relying party of the organisation's identity providers (OpenID Connect).
//!
//! Each configured [`IdentityProvider`] discovers its provider's metadata and keys through
//! `portcullis-outbound` (the provider may be on a private network only where its
//! configuration allows it), runs the authorization code flow with PKCE S256, a `state` and a
//! `nonce` that the caller binds to the browser, checks RFC 9207 `iss` on the response, and
//! verifies the ID token with `openidconnect` (algorithm allowlist, `iss`, `aud`, `azp`,
//! `exp`, `nonce`). What it returns is what the provider asserted; who that is locally is the
//! control layer's rule (`portcullis_control::decide_link`). See README.md beside this crate.

mod provider;

use std::collections::BTreeMap;
use std::sync::Arc;

use portcullis_outbound::FetchPolicy;
use portcullis_types::ScopeSet;
pub use provider::{
    CallbackParams, IdentityAssertion, IdentityProvider, LogoutClaims, MAX_ASSERTION_LIFETIME_SECS, PendingSignIn,
    VerifiedSignIn,
};

/// How Portcullis authenticates itself at the provider's token endpoint.
#[derive(Clone)]
pub enum ClientCredential {
    /// `client_secret_basic`, or `client_secret_post` where the provider supports only that.
    Secret(String),
    /// `private_key_jwt` (RFC 7523 §2.2): an assertion signed with Portcullis's own key, which
    /// the provider reads from Portcullis's published key set.
    PrivateKeyJwt(Arc<dyn ClientAssertionSigner>),
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(..)"),
            Self::PrivateKeyJwt(_) => f.write_str("PrivateKeyJwt"),
        }
    }
}

/// What the sign-in must be, passed on from the client's request to the provider: a fresh
/// sign-in (`prompt=login`), and at most how old (`max_age`, seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reauthentication {
    pub prompt_login: bool,
    pub max_age: Option<i64>,
}

/// Signs the client assertions of `private_key_jwt`.
pub trait ClientAssertionSigner: Send + Sync {
    /// A signed assertion with `iss` and `sub` = `client_id`, `aud` = `audience` (the
    /// provider's token endpoint), a fresh `jti` and an expiry a minute away.
    fn client_assertion(&self, client_id: &str, audience: &str) -> Result<String, String>;
}

/// One identity provider, as configured.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// `[a-z0-9-]`; the callback is `<issuer>/sso/<name>/callback`.
    pub name: String,
    pub display_name: String,
    /// The issuer to discover from. Entra ID's multi-tenant endpoints
    /// (`https://login.microsoftonline.com/common/v2.0`, `organizations`, `consumers`) publish
    /// a templated issuer; each ID token's issuer is then the template with its `tid`.
    pub issuer: String,
    pub client_id: String,
    pub credential: ClientCredential,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The email domains this provider is authoritative for, lower case.
    pub email_domains: Vec<String>,
    /// The ID token claim that lists the user's groups.
    pub groups_claim: Option<String>,
    /// Group → the most a member may grant. A user in no listed group may grant no scope of
    /// any resource.
    pub group_scopes: BTreeMap<String, ScopeSet>,
    /// A federated sign-in, and the grants made from it, last at most this long.
    pub max_session_secs: i64,
    /// Accept this provider's identity assertion grants (SEP-990).
    pub accept_id_jag: bool,
    /// For a multi-tenant issuer (Entra ID's `common`, `organizations`, `consumers`): the
    /// tenants (`tid`) whose users may sign in. Required there; without it, anyone with an
    /// account at the provider could.
    pub allowed_tenants: Vec<String>,
    /// Where the provider may be reached (private ranges, http to loopback) and time limits.
    pub fetch: FetchPolicy,
}

impl ProviderSettings {
    /// The most a user in `groups` may grant: the union of their groups' scopes, and of what
    /// the group `*` (every user of this provider) may grant.
    pub fn scope_ceiling(&self, groups: &[String]) -> ScopeSet {
        groups
            .iter()
            .map(String::as_str)
            .chain([EVERYONE])
            .filter_map(|g| self.group_scopes.get(g))
            .fold(ScopeSet::new(), |all, scopes| all.union(scopes))
    }

    /// Whether this provider is authoritative for the domain of `email`.
    pub fn is_authoritative_for(&self, email: &str) -> bool {
        portcullis_types::email_in_domains(email, &self.email_domains)
    }
}

/// The `group_scopes` key that applies to every user of a provider (for providers whose ID
/// tokens carry no groups, such as Google's).
pub const EVERYONE: &str = "*";

/// Why a federated sign-in failed. Each says, in words a user can act on, what went wrong;
/// the audit record keeps the same words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsoError {
    #[error("there is no identity provider {0:?}")]
    UnknownProvider(String),
    #[error("the identity provider could not be reached or answered wrongly ({0}); try again later")]
    Unreachable(String),
    #[error("the identity provider refused the sign-in: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { error: String, description: Option<String> },
    #[error("this sign-in was not started in this browser, or it was already finished; start again")]
    StateMismatch,
    #[error("this sign-in was started with another identity provider; start again")]
    MixUp,
    #[error("the response names issuer {presented:?}, not this identity provider's; start again")]
    IssuerMismatch { presented: String },
    #[error("the identity provider sent no authorization code")]
    MissingCode,
    #[error("the identity provider did not redeem the code: {0}")]
    TokenExchange(String),
    #[error("the identity provider sent no ID token")]
    MissingIdToken,
    #[error("the ID token does not belong to this sign-in (its nonce does not match)")]
    Nonce,
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    #[error("the ID token's signature does not verify against the provider's keys ({0})")]
    IdTokenSignature(String),
    #[error("the ID token is from tenant {0:?}, which this provider does not accept")]
    TenantNotAllowed(String),
    #[error("the provider's signed statement is not valid: {0}")]
    InvalidStatement(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(group_scopes: &[(&str, &str)]) -> ProviderSettings {
        ProviderSettings {
            name: "corp".into(),
            display_name: "Corp".into(),
            issuer: "https://corp.test".into(),
            client_id: "portcullis".into(),
            credential: ClientCredential::Secret("s".into()),
            scopes: vec!["openid".into()],
            email_domains: vec!["corp.test".into()],
            groups_claim: Some("groups".into()),
            group_scopes: group_scopes
                .iter()
                .filter_map(|(g, s)| Some(((*g).to_owned(), ScopeSet::parse(s).ok()?)))
                .collect(),
            max_session_secs: 3600,
            accept_id_jag: false,
            allowed_tenants: Vec::new(),
            fetch: FetchPolicy::default(),
        }
    }

    #[test]
    fn the_ceiling_is_the_union_of_the_users_groups_and_everyone() {
        let check = |group_scopes: &[(&str, &str)], groups: &[&str], expected: &str| {
            let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
            assert_eq!(
                settings(group_scopes).scope_ceiling(&groups).to_string(),
                expected,
                "{group_scopes:?} {groups:?}"
            );
        };
        let map = [("eng", "a.read a.write"), ("sales", "a.read b.read")];
        check(&map, &["eng"], "a.read a.write");
        check(&map, &["eng", "sales"], "a.read a.write b.read");
        check(&map, &["nobody"], "");
        check(&map, &[], "");
        check(&[("*", "a.read"), ("eng", "a.write")], &[], "a.read");
        check(&[("*", "a.read"), ("eng", "a.write")], &["eng"], "a.read a.write");
        // A group literally named "*" in a token is no more than everyone.
        check(&[("*", "a.read")], &["*"], "a.read");
    }
}
