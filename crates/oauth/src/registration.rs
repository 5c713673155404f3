//! Dynamic Client Registration (RFC 7591) and its management protocol (RFC 7592), behind a
//! policy: who may register (source networks, initial access tokens), which redirect URIs are
//! acceptable, how public and confidential clients are treated, and how many may exist.
//!
//! Portcullis chooses every identifier and secret; what the client chooses (name, URIs) is
//! validated and only ever displayed escaped. Secrets and registration access tokens are stored
//! as digests.

use std::net::IpAddr;

use ipnet::IpNet;
use portcullis_control::{Actor, ClientAuth, ClientSpec, ClientSpecError, ControlError, parse_grant_types};
use portcullis_crypto::{ct_eq, digest, random_token};
use portcullis_store::{ApplicationType, ClientRecord, ClientStatus, ClientType, GrantType, RegistrationOrigin};
use portcullis_types::wire::{ClientInformation, ClientMetadata};
use portcullis_types::{OAuthErrorCode, ScopeSet};
use url::Url;

use crate::redirect_uri::is_loopback_host;
use crate::{AuthorizationServer, OAuthError};

/// When an initial access token is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialAccessTokenPolicy {
    /// Registration is open (within the other rules); a token, if sent, must be valid.
    Optional,
    Required,
}

/// What happens to a confidential client that registers without an initial access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfidentialWithoutToken {
    Refuse,
    /// Registered, but pending an administrator's approval before it can do anything.
    PendingApproval,
}

/// A publisher whose signed software statements (RFC 7591 §2.3) vouch for a client.
#[derive(Debug, Clone)]
pub struct StatementIssuer {
    /// The statement's `iss` must be exactly this.
    pub issuer: String,
    pub keys: Vec<std::sync::Arc<portcullis_crypto::PublicKey>>,
}

#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    pub enabled: bool,
    /// Source addresses allowed to register; empty means any.
    pub allowed_networks: Vec<IpNet>,
    pub initial_access_token: InitialAccessTokenPolicy,
    /// Hosts allowed in https redirect URIs: exact names, or `.example.com` for any subdomain.
    pub redirect_hosts: Vec<String>,
    pub allow_private_use_schemes: bool,
    /// The most a public client may be allowed; empty means every scope of the resources.
    pub public_client_scopes: ScopeSet,
    pub confidential_without_token: ConfidentialWithoutToken,
    pub max_clients: i64,
    /// Users must have signed in at most this long ago to authorize a self-registered client.
    pub session_max_age: i64,
    /// Refresh-token lifetime for self-registered clients (capped by the global one).
    pub refresh_token_ttl: i64,
    /// Self-registered clients unused this long are removed with everything they hold.
    pub unused_client_ttl: i64,
    /// Trusted software-statement publishers; a valid statement marks the client verified.
    pub statement_issuers: Vec<StatementIssuer>,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_networks: Vec::new(),
            initial_access_token: InitialAccessTokenPolicy::Required,
            redirect_hosts: Vec::new(),
            allow_private_use_schemes: false,
            public_client_scopes: ScopeSet::new(),
            confidential_without_token: ConfidentialWithoutToken::Refuse,
            max_clients: 1000,
            session_max_age: 3600,
            refresh_token_ttl: 7 * 24 * 3600,
            unused_client_ttl: 30 * 24 * 3600,
            statement_issuers: Vec::new(),
        }
    }
}

/// A registration attempt's context, as the web layer saw it.
#[derive(Debug, Clone)]
pub struct RegistrationContext {
    pub source: IpAddr,
    /// The bearer token presented, if any (an initial access token).
    pub initial_access_token: Option<String>,
}

fn metadata_error(d: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidClientMetadata, d)
}

fn redirect_error(d: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidRedirectUri, d)
}

/// RFC 7591 §3.2.2: a broken client rule is `invalid_redirect_uri` when redirect URIs are what
/// is missing, `invalid_client_metadata` otherwise.
fn client_spec_error(e: ClientSpecError) -> OAuthError {
    match e {
        ClientSpecError::RedirectUriRequired => redirect_error(e.to_string()),
        other => metadata_error(other.to_string()),
    }
}

fn client_rules_error(e: ControlError) -> OAuthError {
    match e {
        ControlError::InvalidClient(spec) => client_spec_error(spec),
        other => other.into(),
    }
}

const MAX_NAME_LEN: usize = 100;
const MAX_REDIRECT_URIS: usize = 10;

impl AuthorizationServer {
    /// RFC 7591 §3: registers a client. Errors carry RFC 7591 codes, `access_denied` for a
    /// source or policy refusal, and `invalid_token` for a bad initial access token.
    pub async fn register_client(
        &self,
        ctx: &RegistrationContext,
        metadata: ClientMetadata,
    ) -> Result<ClientInformation, OAuthError> {
        let policy = &self.settings().registration;
        if !policy.enabled {
            return Err(OAuthError::new(
                OAuthErrorCode::AccessDenied,
                "dynamic client registration is not enabled on this server",
            ));
        }
        let now = self.clock.now();
        // An initial access token is an administrator's permission: it admits a registration
        // from anywhere. Without one, the source network must be allowed (and the token policy
        // must not require one).
        let with_token = match ctx.initial_access_token.as_deref() {
            Some(token) => {
                if !self.store.consume_initial_access_token(&digest(token), now).await? {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidToken,
                        "the initial access token is invalid, expired or used up",
                    ));
                }
                true
            }
            None => {
                if !policy.allowed_networks.is_empty()
                    && !policy.allowed_networks.iter().any(|n| n.contains(&ctx.source))
                {
                    return Err(OAuthError::new(
                        OAuthErrorCode::AccessDenied,
                        "registration is not allowed from this network",
                    ));
                }
                if policy.initial_access_token == InitialAccessTokenPolicy::Required {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidToken,
                        "an initial access token is required to register",
                    ));
                }
                false
            }
        };
        // RFC 7591 §3.1.1: the statement's claims take precedence over the plain metadata.
        let (metadata, vouched) = match metadata.software_statement.as_deref() {
            Some(statement) => (self.apply_software_statement(statement, metadata.clone(), now)?, true),
            None => (metadata, false),
        };
        if self.store.count_clients(RegistrationOrigin::Dcr).await? >= policy.max_clients {
            return Err(OAuthError::new(
                OAuthErrorCode::AccessDenied,
                "this server accepts no more dynamically registered clients",
            ));
        }
        let validated = self.validate_metadata(&metadata)?;
        let status = match (validated.client_type, with_token || vouched) {
            (ClientType::Public, _) | (ClientType::Confidential, true) => ClientStatus::Active,
            (ClientType::Confidential, false) => match policy.confidential_without_token {
                ConfidentialWithoutToken::PendingApproval => ClientStatus::Pending,
                ConfidentialWithoutToken::Refuse => {
                    return Err(metadata_error("confidential clients may register only with an initial access token"));
                }
            },
        };
        let secret = match validated.client_type {
            ClientType::Confidential => Some(random_token(32)?),
            ClientType::Public => None,
        };
        let registration_token = random_token(32)?;
        let spec = ClientSpec {
            name: validated.client_name,
            auth: match &secret {
                Some(s) => ClientAuth::Secret { digest: digest(s).to_vec() },
                None => ClientAuth::None,
            },
            redirect_uris: validated.redirect_uris,
            grant_types: validated.grant_types,
            scopes: validated.scope,
            resources: Vec::new(),
            application_type: validated.application_type,
            origin: if vouched { RegistrationOrigin::SoftwareStatement } else { RegistrationOrigin::Dcr },
            // An initial access token is an administrator vouching for the client; a software
            // statement is a trusted publisher doing so.
            verified: with_token || vouched,
            status,
            can_introspect: false,
            client_uri: validated.client_uri,
            registration_token_digest: Some(digest(&registration_token).to_vec()),
            registered_from: Some(ctx.source.to_string()),
        };
        let actor = Actor::Registrant { source: Some(ctx.source) };
        let record = self.control.register_client(&actor, spec).await.map_err(client_rules_error)?;
        tracing::info!(client_id = %record.client_id, source = %ctx.source, status = %record.status, "client registered dynamically");
        Ok(self.client_information(&record, secret, Some(registration_token)))
    }

    /// Verifies a software statement against the trusted publishers and overlays its claims
    /// on the metadata.
    fn apply_software_statement(
        &self,
        statement: &str,
        metadata: ClientMetadata,
        now: i64,
    ) -> Result<ClientMetadata, OAuthError> {
        let issuers = &self.settings().registration.statement_issuers;
        let invalid = |d: &str| OAuthError::new(OAuthErrorCode::InvalidSoftwareStatement, d);
        let unapproved = |d: &str| OAuthError::new(OAuthErrorCode::UnapprovedSoftwareStatement, d);
        let keys = issuers.iter().flat_map(|i| i.keys.iter().map(|k| k.as_ref()));
        let verified = portcullis_crypto::verify_jwt::<serde_json::Map<String, serde_json::Value>>(statement, "", keys)
            .map_err(|e| match e {
                portcullis_crypto::JwtError::UnknownKeyId | portcullis_crypto::JwtError::MissingKeyId => {
                    unapproved("the software statement is not signed by a publisher this server trusts")
                }
                other => {
                    tracing::info!(error = %other, "software statement refused");
                    invalid("the software statement is not a valid ES256-signed JWT")
                }
            })?;
        let owner = issuers
            .iter()
            .find(|i| i.keys.iter().any(|k| k.kid() == verified.kid))
            .ok_or_else(|| unapproved("the software statement's key belongs to no trusted publisher"))?;
        let claims = verified.claims;
        if claims.get("iss").and_then(serde_json::Value::as_str) != Some(owner.issuer.as_str()) {
            return Err(unapproved("the software statement's iss is not the publisher whose key signed it"));
        }
        if let Some(exp) = claims.get("exp") {
            match exp.as_i64() {
                Some(exp) if exp > now => {}
                _ => return Err(invalid("the software statement has expired")),
            }
        }
        if claims.get("iat").and_then(serde_json::Value::as_i64).is_some_and(|iat| iat > now + 60) {
            return Err(invalid("the software statement was issued in the future"));
        }
        let from_statement: ClientMetadata = serde_json::from_value(serde_json::Value::Object(claims))
            .map_err(|_| invalid("the software statement's claims are not client metadata"))?;
        Ok(ClientMetadata {
            redirect_uris: if from_statement.redirect_uris.is_empty() {
                metadata.redirect_uris
            } else {
                from_statement.redirect_uris
            },
            token_endpoint_auth_method: from_statement
                .token_endpoint_auth_method
                .or(metadata.token_endpoint_auth_method),
            grant_types: from_statement.grant_types.or(metadata.grant_types),
            response_types: from_statement.response_types.or(metadata.response_types),
            client_name: from_statement.client_name.or(metadata.client_name),
            client_uri: from_statement.client_uri.or(metadata.client_uri),
            scope: from_statement.scope.or(metadata.scope),
            application_type: from_statement.application_type.or(metadata.application_type),
            software_statement: None,
            jwks_uri: from_statement.jwks_uri.or(metadata.jwks_uri),
            jwks: from_statement.jwks.or(metadata.jwks),
            client_id: metadata.client_id,
        })
    }

    /// RFC 7592 §2: authenticates a management request by its registration access token.
    pub async fn managed_client(
        &self,
        client_id: &str,
        registration_token: Option<&str>,
    ) -> Result<ClientRecord, OAuthError> {
        let unauthorized = || {
            OAuthError::new(OAuthErrorCode::InvalidToken, "the registration access token is invalid for this client")
        };
        let token = registration_token.ok_or_else(unauthorized)?;
        let client = self.store.find_client(client_id).await?.ok_or_else(unauthorized)?;
        match &client.registration_token_digest {
            Some(stored) if ct_eq(stored, &digest(token)) => Ok(client),
            _ => Err(unauthorized()),
        }
    }

    pub fn client_information(
        &self,
        c: &ClientRecord,
        secret: Option<String>,
        registration_token: Option<String>,
    ) -> ClientInformation {
        ClientInformation {
            client_id: c.client_id.clone(),
            client_secret_expires_at: secret.as_ref().map(|_| 0),
            client_secret: secret,
            client_id_issued_at: c.created_at,
            registration_access_token: registration_token,
            registration_client_uri: self.settings().endpoint(&format!("/register/{}", c.client_id)),
            client_name: c.client_name.clone(),
            redirect_uris: c.redirect_uris.clone(),
            grant_types: c.grant_types.iter().map(|g| g.as_str().to_owned()).collect(),
            response_types: vec!["code".into()],
            token_endpoint_auth_method: match c.client_type {
                ClientType::Public => "none".into(),
                ClientType::Confidential => "client_secret_basic".into(),
            },
            application_type: c.application_type.to_string(),
            scope: c.allowed_scopes.to_string(),
            client_uri: c.client_uri.clone(),
            portcullis_status: c.status.to_string(),
        }
    }

    /// RFC 7592 §2.2: replaces the client's metadata. The auth method (and so the client
    /// type) cannot change; the secret and registration access token stay as they are.
    pub async fn update_registered_client(
        &self,
        client: ClientRecord,
        metadata: ClientMetadata,
    ) -> Result<ClientInformation, OAuthError> {
        if metadata.client_id.as_deref().is_some_and(|id| id != client.client_id) {
            return Err(metadata_error("client_id in the body must be the client being updated"));
        }
        let validated = self.validate_metadata(&metadata)?;
        if validated.client_type != client.client_type {
            return Err(metadata_error("token_endpoint_auth_method cannot change; register a new client instead"));
        }
        let actor = Actor::Client { client_id: client.client_id.clone(), source: None };
        let updated = ClientRecord {
            client_name: validated.client_name,
            redirect_uris: validated.redirect_uris,
            grant_types: validated.grant_types,
            allowed_scopes: validated.scope,
            application_type: validated.application_type,
            client_uri: validated.client_uri,
            ..client
        };
        let updated = self.control.update_client_metadata(&actor, updated).await.map_err(client_rules_error)?;
        Ok(self.client_information(&updated, None, None))
    }

    /// Removes self-registered clients unused for longer than the policy allows, with
    /// everything they hold. Returns how many went.
    pub async fn sweep(&self) -> Result<portcullis_control::SweepReport, OAuthError> {
        Ok(self.control.sweep(self.settings().registration.unused_client_ttl).await?)
    }

    /// RFC 7592 §2.3.
    pub async fn delete_registered_client(&self, client: &ClientRecord) -> Result<(), OAuthError> {
        let actor = Actor::Client { client_id: client.client_id.clone(), source: None };
        self.control.delete_client(&actor, &client.client_id).await?;
        tracing::info!(client_id = %client.client_id, "dynamically registered client deleted itself");
        Ok(())
    }

    fn validate_metadata(&self, m: &ClientMetadata) -> Result<ValidatedMetadata, OAuthError> {
        let policy = &self.settings().registration;
        let client_type = match m.token_endpoint_auth_method.as_deref() {
            None | Some("client_secret_basic") | Some("client_secret_post") => {
                // RFC 7591 §2: the default is client_secret_basic.
                ClientType::Confidential
            }
            Some("none") => ClientType::Public,
            Some(other) => {
                return Err(metadata_error(format!(
                    "token_endpoint_auth_method {other:?} is not supported; use none, client_secret_basic or client_secret_post"
                )));
            }
        };
        if m.jwks.is_some() || m.jwks_uri.is_some() {
            return Err(metadata_error(
                "jwks and jwks_uri are not supported: this server does not accept private_key_jwt",
            ));
        }
        // RFC 7591 §2: the default is authorization_code. What each grant type requires is the
        // control layer's rule (`ClientSpec::check`), applied when the client is written.
        let grant_types = match &m.grant_types {
            Some(names) => parse_grant_types(names).map_err(client_spec_error)?,
            None => vec![GrantType::AuthorizationCode],
        };
        if let Some(types) = &m.response_types
            && types.iter().any(|t| t != "code")
        {
            return Err(metadata_error("only the response type \"code\" is supported"));
        }
        if m.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(redirect_error(format!("at most {MAX_REDIRECT_URIS} redirect URIs")));
        }
        let mut kinds = Vec::with_capacity(m.redirect_uris.len());
        for uri in &m.redirect_uris {
            kinds.push(self.classify_redirect_uri(uri)?);
        }
        // OIDC Registration §2 application_type. MCP 2025-11-25 and older clients often omit it,
        // so it is inferred from the redirect URIs when absent.
        let application_type = match m.application_type.as_deref() {
            Some("web") => ApplicationType::Web,
            Some("native") => ApplicationType::Native,
            Some(other) => return Err(metadata_error(format!("application_type {other:?} is not web or native"))),
            None if !kinds.is_empty() && kinds.iter().all(|k| *k != RedirectKind::Https) => ApplicationType::Native,
            None => ApplicationType::Web,
        };
        match application_type {
            ApplicationType::Web if kinds.iter().any(|k| *k != RedirectKind::Https) => {
                return Err(redirect_error(
                    "web applications must use https redirect URIs on a public host (not localhost)",
                ));
            }
            _ => {}
        }
        let requested_scope = match m.scope.as_deref() {
            Some(s) => ScopeSet::parse(s).map_err(|e| metadata_error(e.to_string()))?,
            None => ScopeSet::new(),
        };
        let known = self.settings().known_scopes();
        let unknown = requested_scope.difference(&known);
        if !unknown.is_empty() {
            return Err(metadata_error(format!("scope {unknown} is not offered by this server")));
        }
        let ceiling = if client_type == ClientType::Public && !policy.public_client_scopes.is_empty() {
            Some(&policy.public_client_scopes)
        } else {
            None
        };
        // The stored scopes are the client's ceiling: what it asked for, within the policy.
        let scope = match (requested_scope.is_empty(), ceiling) {
            (true, Some(ceiling)) => ceiling.clone(),
            (true, None) => ScopeSet::new(),
            (false, Some(ceiling)) => requested_scope.intersection(ceiling),
            (false, None) => requested_scope,
        };
        let client_name = match m.client_name.as_deref().map(str::trim) {
            None | Some("") => "Unnamed application".to_owned(),
            Some(name) if name.chars().count() > MAX_NAME_LEN => {
                return Err(metadata_error(format!("client_name is longer than {MAX_NAME_LEN} characters")));
            }
            Some(name) if name.chars().any(char::is_control) => {
                return Err(metadata_error("client_name contains control characters"));
            }
            Some(name) => name.to_owned(),
        };
        let client_uri = match m.client_uri.as_deref() {
            None => None,
            Some(uri) => {
                let parsed = Url::parse(uri).map_err(|_| metadata_error("client_uri is not a URL"))?;
                if parsed.scheme() != "https" {
                    return Err(metadata_error("client_uri must be an https URL"));
                }
                Some(parsed.to_string())
            }
        };
        Ok(ValidatedMetadata {
            client_type,
            grant_types,
            redirect_uris: m.redirect_uris.clone(),
            application_type,
            scope,
            client_name,
            client_uri,
        })
    }

    fn classify_redirect_uri(&self, uri: &str) -> Result<RedirectKind, OAuthError> {
        let policy = &self.settings().registration;
        crate::validate_redirect_uri(uri, policy.allow_private_use_schemes)
            .map_err(|e| redirect_error(e.to_string()))?;
        let parsed = Url::parse(uri).map_err(|_| redirect_error(format!("{uri:?} is not a URL")))?;
        match parsed.scheme() {
            "http" => Ok(RedirectKind::Loopback),
            "https" => {
                let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
                if parsed.host().as_ref().is_some_and(is_loopback_host) {
                    return Ok(RedirectKind::Loopback);
                }
                let allowed = policy.redirect_hosts.iter().any(|h| {
                    let h = h.to_ascii_lowercase();
                    match h.strip_prefix('.') {
                        Some(suffix) => host.ends_with(&format!(".{suffix}")),
                        None => host == h,
                    }
                });
                if allowed {
                    Ok(RedirectKind::Https)
                } else {
                    Err(redirect_error(format!(
                        "redirect URIs on {host} are not allowed for dynamically registered clients"
                    )))
                }
            }
            _ => Ok(RedirectKind::PrivateUse),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedirectKind {
    Https,
    Loopback,
    PrivateUse,
}

struct ValidatedMetadata {
    client_type: ClientType,
    grant_types: Vec<GrantType>,
    redirect_uris: Vec<String>,
    application_type: ApplicationType,
    scope: ScopeSet,
    client_name: String,
    client_uri: Option<String>,
}
