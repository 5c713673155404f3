//! What the authorization server is configured to do.

use portcullis_types::{Scope, ScopeSet};

/// Scope names were validated when the configuration was loaded; one that does not parse is
/// left out rather than trusted.
fn scope_set<'a>(names: impl Iterator<Item = &'a str>) -> ScopeSet {
    ScopeSet::from_scopes(names.filter_map(|n| Scope::parse(n).ok()))
}

/// Scopes every client may ask for, independent of the resource: OpenID Connect's.
pub const BUILTIN_SCOPES: &[(&str, &str)] = &[
    ("openid", "Confirm who you are to the application"),
    ("profile", "See your name and username"),
    ("email", "See your email address"),
    ("offline_access", "Stay connected when you are not using it"),
];

#[derive(Debug, Clone)]
pub struct ScopeSettings {
    pub name: String,
    /// Shown on the consent page, in plain words.
    pub description: String,
}

/// An MCP server (protected resource) that tokens can be issued for.
#[derive(Debug, Clone)]
pub struct ResourceSettings {
    /// The canonical resource URI; the `aud` of its tokens.
    pub uri: String,
    pub name: String,
    pub scopes: Vec<ScopeSettings>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer identifier: scheme, host, optional port and path, no trailing slash.
    pub issuer: String,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    /// Absolute lifetime of a grant, after which its refresh tokens stop working.
    pub grant_max_lifetime: i64,
    pub authorization_code_ttl: i64,
    /// How long a user has to sign in and consent once an authorization request arrives.
    pub authorization_request_ttl: i64,
    pub session_ttl: i64,
    pub id_token_ttl: i64,
    pub resources: Vec<ResourceSettings>,
    /// Whether the issuer is served over https (decides cookie prefixes and `Secure`).
    pub secure_cookies: bool,
    pub registration: crate::RegistrationPolicy,
    pub cimd: crate::CimdPolicy,
}

impl Settings {
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    pub fn resource(&self, uri: &str) -> Option<&ResourceSettings> {
        self.resources.iter().find(|r| r.uri == uri)
    }

    /// The OpenID Connect scopes every client may ask for.
    pub fn builtin_scopes() -> ScopeSet {
        scope_set(BUILTIN_SCOPES.iter().map(|(name, _)| *name))
    }

    /// The scopes a resource defines (none for an unknown resource).
    pub fn resource_scopes(&self, uri: &str) -> ScopeSet {
        self.resource(uri).map(|r| scope_set(r.scopes.iter().map(|s| s.name.as_str()))).unwrap_or_default()
    }

    /// Every scope this server knows: the built-in ones and those of every resource.
    pub fn known_scopes(&self) -> ScopeSet {
        self.resources.iter().fold(Self::builtin_scopes(), |all, r| all.union(&self.resource_scopes(&r.uri)))
    }

    /// Plain-words description of a scope, falling back to the scope name itself.
    pub fn describe_scope(&self, resource: &str, scope: &str) -> String {
        if let Some((_, d)) = BUILTIN_SCOPES.iter().find(|(name, _)| *name == scope) {
            return (*d).to_owned();
        }
        self.resource(resource)
            .and_then(|r| r.scopes.iter().find(|s| s.name == scope))
            .map(|s| s.description.clone())
            .unwrap_or_else(|| scope.to_owned())
    }

    /// The longest time a token signed now can stay valid: a retired key stays published at
    /// least this long.
    pub fn longest_signed_token_lifetime(&self) -> i64 {
        self.access_token_ttl.max(self.id_token_ttl)
    }
}
