//! What a client is allowed to be, however it was registered: the one place the rules about
//! grant types, credentials and redirect URIs are written. How a registration protocol reads
//! its input (RFC 7591 metadata, a metadata document, the CLI, the configuration file) stays
//! with that protocol; what the result must satisfy is decided here.

use portcullis_store::{ApplicationType, ClientRecord, ClientStatus, ClientType, GrantType, RegistrationOrigin};
use portcullis_types::ScopeSet;

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: no credentials (PKCE protects its codes).
    None,
    /// A shared secret, of which only the SHA-256 is kept.
    Secret { digest: Vec<u8> },
    /// `private_key_jwt` with the keys of this JWKS document.
    PrivateKeyJwt { jwks: String },
}

/// A client as someone asks for it to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub name: String,
    pub auth: ClientAuth,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// The most it may ask for; empty means every scope of the resources it may use.
    pub scopes: ScopeSet,
    /// Resources it may get tokens for; empty means all.
    pub resources: Vec<String>,
    pub application_type: ApplicationType,
    pub origin: RegistrationOrigin,
    pub verified: bool,
    pub status: ClientStatus,
    pub can_introspect: bool,
    pub client_uri: Option<String>,
    /// RFC 7592: the digest of the registration access token.
    pub registration_token_digest: Option<Vec<u8>>,
    /// The address a self-registering client registered from.
    pub registered_from: Option<String>,
}

/// Why a client cannot be what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSpecError {
    #[error(
        "grant type {0:?} is not supported; use authorization_code, refresh_token, client_credentials or urn:ietf:params:oauth:grant-type:jwt-bearer"
    )]
    UnsupportedGrantType(String),
    #[error("a client needs at least one grant type")]
    NoGrantTypes,
    #[error("a client using authorization_code needs at least one redirect URI")]
    RedirectUriRequired,
    #[error("client_credentials needs a confidential client (a secret or keys)")]
    ClientCredentialsNeedsCredentials,
    #[error("identity assertion grants (jwt-bearer) need a confidential client an operator registers")]
    JwtBearerNotAllowed,
    #[error("token exchange needs a confidential client (it must prove who it is to act for another)")]
    TokenExchangeNeedsCredentials,
    #[error("grant type {grant} is not available to clients registered by {origin}")]
    GrantNotForOrigin { grant: GrantType, origin: RegistrationOrigin },
    #[error("a client name must be 1 to 100 characters with no control characters")]
    Name,
    #[error("can_introspect is only for confidential clients an operator registers")]
    IntrospectionNotAllowed,
}

/// Reads grant type names given as text (CLI, configuration, RFC 7591 metadata).
pub fn parse_grant_types(names: &[impl AsRef<str>]) -> Result<Vec<GrantType>, ClientSpecError> {
    let mut types = Vec::with_capacity(names.len());
    for name in names {
        let grant = GrantType::parse(name.as_ref())
            .ok_or_else(|| ClientSpecError::UnsupportedGrantType(name.as_ref().into()))?;
        if !types.contains(&grant) {
            types.push(grant);
        }
    }
    Ok(types)
}

/// What an operator's client uses when no grant types are named: client credentials for a
/// confidential client without redirect URIs (a machine), otherwise the authorization code
/// flow with refresh tokens.
pub fn default_grant_types(confidential: bool, has_redirect_uris: bool) -> Vec<GrantType> {
    if confidential && !has_redirect_uris {
        vec![GrantType::ClientCredentials]
    } else {
        vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
    }
}

impl ClientSpec {
    /// The rules every client obeys.
    pub fn check(&self) -> Result<(), ClientSpecError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ClientSpecError::Name);
        }
        if self.grant_types.is_empty() {
            return Err(ClientSpecError::NoGrantTypes);
        }
        let confidential = self.auth != ClientAuth::None;
        let operator = matches!(self.origin, RegistrationOrigin::Admin | RegistrationOrigin::Config);
        for grant in &self.grant_types {
            match grant {
                GrantType::AuthorizationCode if self.redirect_uris.is_empty() => {
                    return Err(ClientSpecError::RedirectUriRequired);
                }
                GrantType::ClientCredentials if self.origin == RegistrationOrigin::Cimd => {
                    // A metadata document is public: anyone can publish one naming any keys,
                    // so it never vouches for a client acting on its own behalf.
                    return Err(ClientSpecError::GrantNotForOrigin { grant: *grant, origin: self.origin });
                }
                GrantType::ClientCredentials if !confidential => {
                    return Err(ClientSpecError::ClientCredentialsNeedsCredentials);
                }
                // An identity assertion lets a client act for a user with no consent screen:
                // only a client an operator vetted, which can prove who it is, may present one.
                GrantType::JwtBearer if !(operator && confidential) => {
                    return Err(ClientSpecError::JwtBearerNotAllowed);
                }
                // A delegate acts for whoever's token it holds: it must at least prove that it
                // is the client the delegation names.
                GrantType::TokenExchange if !confidential => {
                    return Err(ClientSpecError::TokenExchangeNeedsCredentials);
                }
                _ => {}
            }
        }
        if self.can_introspect && !(operator && confidential) {
            return Err(ClientSpecError::IntrospectionNotAllowed);
        }
        Ok(())
    }

    pub(crate) fn into_record(self, client_id: String, now: i64) -> ClientRecord {
        let (client_type, secret_digest, jwks) = match self.auth {
            ClientAuth::None => (ClientType::Public, None, None),
            ClientAuth::Secret { digest } => (ClientType::Confidential, Some(digest), None),
            ClientAuth::PrivateKeyJwt { jwks } => (ClientType::Confidential, None, Some(jwks)),
        };
        ClientRecord {
            client_id,
            client_name: self.name.trim().to_owned(),
            client_type,
            secret_digest,
            redirect_uris: self.redirect_uris,
            grant_types: self.grant_types,
            allowed_scopes: self.scopes,
            allowed_resources: self.resources,
            application_type: self.application_type,
            origin: self.origin,
            verified: self.verified,
            status: self.status,
            can_introspect: self.can_introspect,
            registration_token_digest: self.registration_token_digest,
            registered_from: self.registered_from,
            client_uri: self.client_uri,
            jwks,
            created_at: now,
            updated_at: now,
            last_used_at: None,
        }
    }

    /// The spec a stored client satisfies (to check an update against the same rules).
    pub fn from_record(c: &ClientRecord) -> Self {
        let auth = match (&c.secret_digest, &c.jwks) {
            (Some(digest), _) => ClientAuth::Secret { digest: digest.clone() },
            (None, Some(jwks)) => ClientAuth::PrivateKeyJwt { jwks: jwks.clone() },
            (None, None) if c.client_type == ClientType::Confidential => ClientAuth::Secret { digest: Vec::new() },
            (None, None) => ClientAuth::None,
        };
        Self {
            name: c.client_name.clone(),
            auth,
            redirect_uris: c.redirect_uris.clone(),
            grant_types: c.grant_types.clone(),
            scopes: c.allowed_scopes.clone(),
            resources: c.allowed_resources.clone(),
            application_type: c.application_type,
            origin: c.origin,
            verified: c.verified,
            status: c.status,
            can_introspect: c.can_introspect,
            client_uri: c.client_uri.clone(),
            registration_token_digest: c.registration_token_digest.clone(),
            registered_from: c.registered_from.clone(),
        }
    }
}

/// Whether `current` already is what `wanted` declares: what an upsert would change is the
/// same (status, times and registration artefacts are the store's to keep).
pub(crate) fn same_declaration(current: &ClientRecord, wanted: &ClientRecord) -> bool {
    current.client_name == wanted.client_name
        && current.client_type == wanted.client_type
        && current.secret_digest == wanted.secret_digest
        && current.redirect_uris == wanted.redirect_uris
        && current.grant_types == wanted.grant_types
        && current.allowed_scopes == wanted.allowed_scopes
        && current.allowed_resources == wanted.allowed_resources
        && current.application_type == wanted.application_type
        && current.verified == wanted.verified
        && current.can_introspect == wanted.can_introspect
        && current.client_uri == wanted.client_uri
        && current.jwks == wanted.jwks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(origin: RegistrationOrigin, auth: ClientAuth, grants: &[&str], redirects: &[&str]) -> ClientSpec {
        ClientSpec {
            name: "Agent".into(),
            auth,
            redirect_uris: redirects.iter().map(|s| (*s).to_owned()).collect(),
            grant_types: parse_grant_types(grants).unwrap_or_default(),
            scopes: ScopeSet::new(),
            resources: vec![],
            application_type: ApplicationType::Native,
            origin,
            verified: false,
            status: ClientStatus::Active,
            can_introspect: false,
            client_uri: None,
            registration_token_digest: None,
            registered_from: None,
        }
    }

    #[track_caller]
    fn check(spec: ClientSpec, expect: &str) {
        let got = match spec.check() {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn the_rules_every_client_obeys() {
        use ClientAuth::*;
        use RegistrationOrigin::*;
        let secret = || Secret { digest: vec![1; 32] };
        let keys = || PrivateKeyJwt { jwks: "{}".into() };
        let cb = &["http://127.0.0.1/cb"][..];
        check(spec(Admin, None, &["authorization_code", "refresh_token"], cb), "ok");
        check(spec(Admin, secret(), &["client_credentials"], &[]), "ok");
        check(spec(Dcr, secret(), &["client_credentials", "authorization_code"], cb), "ok");
        check(
            spec(Admin, None, &["authorization_code"], &[]),
            "a client using authorization_code needs at least one redirect URI",
        );
        check(
            spec(Config, None, &["client_credentials"], &[]),
            "client_credentials needs a confidential client (a secret or keys)",
        );
        check(
            spec(Dcr, None, &["client_credentials"], cb),
            "client_credentials needs a confidential client (a secret or keys)",
        );
        check(
            spec(Cimd, keys(), &["client_credentials"], cb),
            "grant type client_credentials is not available to clients registered by cimd",
        );
        check(spec(Cimd, keys(), &["authorization_code"], cb), "ok");
        let jwt_bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer";
        check(spec(Admin, secret(), &[jwt_bearer], &[]), "ok");
        check(spec(Config, keys(), &[jwt_bearer], &[]), "ok");
        for (origin, auth) in [(Admin, None), (Dcr, secret()), (Cimd, keys())] {
            check(
                spec(origin, auth, &[jwt_bearer], cb),
                "identity assertion grants (jwt-bearer) need a confidential client an operator registers",
            );
        }
        check(spec(Admin, None, &[], cb), "a client needs at least one grant type");
        check(
            ClientSpec { name: " ".into(), ..spec(Admin, None, &["authorization_code"], cb) },
            "a client name must be 1 to 100 characters with no control characters",
        );
        check(ClientSpec { can_introspect: true, ..spec(Admin, secret(), &["client_credentials"], &[]) }, "ok");
        check(
            ClientSpec { can_introspect: true, ..spec(Dcr, secret(), &["client_credentials"], &[]) },
            "can_introspect is only for confidential clients an operator registers",
        );
        assert_eq!(
            parse_grant_types(&["authorization_code", "implicit"]),
            Err(ClientSpecError::UnsupportedGrantType("implicit".into()))
        );
        assert_eq!(parse_grant_types(&["refresh_token", "refresh_token"]).map(|g| g.len()), Ok(1));
        assert_eq!(default_grant_types(true, false), [GrantType::ClientCredentials]);
        assert_eq!(default_grant_types(false, true), [GrantType::AuthorizationCode, GrantType::RefreshToken]);
    }
}
