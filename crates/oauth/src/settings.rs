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
    /// What an authorization request that names no scope asks for (the MCP specification
    /// lets a client that found no `scopes_supported` leave `scope` out); `None`: every scope
    /// of the resource. The user can still untick any of them on the consent page.
    pub default_scopes: Option<ScopeSet>,
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
    /// The organisation's identity providers users may sign in with.
    pub identity_providers: Vec<crate::FederatedProvider>,
    /// Whether users may sign in with a local password (off: single sign-on only).
    pub local_passwords: bool,
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

    /// The scopes a request for `uri` that names none gets (none for an unknown resource).
    pub fn default_scopes(&self, uri: &str) -> ScopeSet {
        match self.resource(uri) {
            Some(ResourceSettings { default_scopes: Some(defaults), .. }) => defaults.clone(),
            Some(_) => self.resource_scopes(uri),
            None => ScopeSet::new(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(uri: &str, scopes: &[&str], defaults: Option<&[&str]>) -> ResourceSettings {
        ResourceSettings {
            uri: uri.into(),
            name: uri.into(),
            scopes: scopes.iter().map(|s| ScopeSettings { name: (*s).into(), description: String::new() }).collect(),
            default_scopes: defaults.map(|d| scope_set(d.iter().copied())),
        }
    }

    #[test]
    fn default_scopes_are_the_configured_ones_or_all() {
        let resources = vec![
            resource("https://a.test/mcp", &["a.read", "a.write"], Some(&["a.read"])),
            resource("https://b.test/mcp", &["b.read", "b.write"], None),
        ];
        let check = |uri: &str, expected: &str| {
            let got = default_scopes_of(&resources, uri).to_string();
            assert_eq!(got, expected, "{uri}");
        };
        check("https://a.test/mcp", "a.read");
        check("https://b.test/mcp", "b.read b.write");
        check("https://unknown.test/mcp", "");
    }

    fn default_scopes_of(resources: &[ResourceSettings], uri: &str) -> ScopeSet {
        let settings = Settings {
            issuer: "https://as.test".into(),
            access_token_ttl: 1,
            refresh_token_ttl: 1,
            grant_max_lifetime: 1,
            authorization_code_ttl: 1,
            authorization_request_ttl: 1,
            session_ttl: 1,
            id_token_ttl: 1,
            resources: resources.to_vec(),
            secure_cookies: true,
            registration: crate::RegistrationPolicy::default(),
            cimd: crate::CimdPolicy::default(),
            identity_providers: Vec::new(),
            local_passwords: true,
        };
        settings.default_scopes(uri)
    }
}
