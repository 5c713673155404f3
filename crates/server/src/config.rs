//! The static configuration: a TOML file (every key documented in `portcullis.reference.toml`)
//! with environment overrides, validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub tokens: TokenConfig,
    pub login: LoginConfig,
    pub registration: RegistrationConfig,
    pub cimd: CimdConfig,
    pub resources: Vec<ResourceConfig>,
    pub clients: Vec<ClientConfig>,
    pub gateway: GatewayConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub identity_providers: Vec<IdentityProviderConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub issuer: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Allows an http issuer on a non-loopback host. For development only.
    pub allow_insecure_issuer: bool,
    pub log_format: LogFormat,
    /// Proxies whose `X-Forwarded-For` is believed for the client address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("portcullis-data"),
            allow_insecure_issuer: false,
            log_format: LogFormat::Text,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://…`; empty means `sqlite://<data_dir>/portcullis.db`.
    pub url: String,
    pub max_connections: u32,
    /// The longest one statement (or transaction) may take, waiting for a connection included.
    pub query_timeout_ms: u64,
    /// How long a node may go without reading the change log before it refuses our own tokens
    /// (503) rather than trust state it can no longer check.
    pub fail_closed_after_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), max_connections: 8, query_timeout_ms: 5000, fail_closed_after_ms: 5000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    pub grant_max_lifetime_secs: i64,
    pub authorization_code_ttl_secs: i64,
    pub id_token_ttl_secs: i64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 300,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            grant_max_lifetime_secs: 90 * 24 * 3600,
            authorization_code_ttl_secs: 60,
            id_token_ttl_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    pub session_ttl_secs: i64,
    pub authorization_request_ttl_secs: i64,
    pub per_account_per_minute: u32,
    pub per_address_per_minute: u32,
    pub password_hashing_concurrency: usize,
    pub password_queue_timeout_secs: u64,
    /// Whether users may sign in with a local password; off makes the deployment
    /// single-sign-on only.
    pub local_passwords: bool,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            authorization_request_ttl_secs: 600,
            per_account_per_minute: 10,
            per_address_per_minute: 30,
            password_hashing_concurrency: 2,
            password_queue_timeout_secs: 5,
            local_passwords: true,
        }
    }
}

/// Dynamic Client Registration (RFC 7591/7592) and its hardening.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub enabled: bool,
    /// CIDR ranges allowed to register (the socket peer address); empty means any.
    pub allowed_networks: Vec<ipnet::IpNet>,
    pub initial_access_token: InitialAccessTokenMode,
    /// https redirect hosts allowed: exact names, or ".example.com" for subdomains.
    pub redirect_hosts: Vec<String>,
    pub allow_private_use_schemes: bool,
    /// The most scopes a public client may hold; empty means every scope of the resources.
    pub public_client_scopes: Vec<String>,
    /// What happens to confidential clients that register without an initial access token.
    pub confidential_without_token: ConfidentialWithoutTokenMode,
    pub max_clients: i64,
    pub per_address_per_minute: u32,
    pub session_max_age_secs: i64,
    pub refresh_token_ttl_secs: i64,
    pub unused_client_expiry_days: i64,
    pub software_statement_issuers: Vec<StatementIssuerConfig>,
}

/// When Dynamic Client Registration needs an initial access token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitialAccessTokenMode {
    #[default]
    Required,
    Optional,
}

/// What happens to a confidential client that registers without an initial access token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConfidentialWithoutTokenMode {
    #[default]
    Refuse,
    /// Registered, pending an administrator's approval.
    Approval,
}

/// How the gateway speaks to an HTTP upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTransport {
    /// Streamable HTTP (2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// The 2024-11-05 HTTP+SSE transport.
    Sse,
}

/// What the gateway presents to an upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAuthMode {
    /// Only the configured `headers`, if any: the same credentials for every caller.
    #[default]
    Static,
    /// Each user's own token, which they connect once in their browser (the token vault).
    User,
    /// The gateway's own token from the upstream's authorization server.
    ClientCredentials,
}

/// The gateway as an OAuth client of one upstream (`upstream_auth = "user"` or
/// `"client_credentials"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamOAuthConfig {
    /// A client registered at the upstream's authorization server by hand. Without one, the
    /// gateway uses its Client ID Metadata Document where the server supports them (an https
    /// issuer only), else registers dynamically.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret, from this environment variable...
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// ... or from this file. Without either, the client is public (PKCE only).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub client_auth: Option<String>,
    /// The authorization server, for an upstream that publishes no RFC 9728 metadata (or to
    /// pick one of several it lists).
    #[serde(default)]
    pub authorization_server: Option<String>,
    /// The scopes to ask for; default: what the upstream's metadata or challenge names.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Private networks the upstream and its authorization server may be reached on (as in
    /// `[cimd]`): metadata, registration and token requests go through the SSRF-safe fetcher.
    #[serde(default)]
    pub allowed_ranges: Vec<ipnet::IpNet>,
    /// http, only to loopback, for development.
    #[serde(default)]
    pub allow_http_loopback: bool,
    #[serde(default)]
    pub extra_ca_file: Option<PathBuf>,
    #[serde(default = "default_idp_timeout_secs")]
    pub timeout_secs: u64,
}

impl Default for UpstreamOAuthConfig {
    /// What a route with `upstream_auth` and no `[upstreams.oauth]` gets (as serde's defaults).
    fn default() -> Self {
        Self {
            client_id: None,
            client_secret_env: None,
            client_secret_file: None,
            client_auth: None,
            authorization_server: None,
            scopes: Vec::new(),
            allowed_ranges: Vec::new(),
            allow_http_loopback: false,
            extra_ca_file: None,
            timeout_secs: default_idp_timeout_secs(),
        }
    }
}

/// Whether a route asks for a token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuthentication {
    #[default]
    Required,
    /// No token is asked for: for test benches and deliberately public servers only.
    Off,
}

/// What a route does with tools, prompts and resources its maps do not name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnmappedPolicy {
    #[default]
    Deny,
    /// Allowed with `unmapped_scopes` (none: any valid token).
    Allow,
}

/// Reads a secret from exactly one of an environment variable and a file (its trailing
/// newline removed); `key` names the configuration key in errors.
pub fn read_secret(key: &str, env: Option<&String>, file: Option<&PathBuf>) -> Result<String, ConfigError> {
    let missing = |reason: String| ConfigError::Invalid(format!("{key}: {reason}"));
    match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(value),
            Ok(_) => Err(missing(format!("the environment variable {var} is empty"))),
            Err(_) => Err(missing(format!("the environment variable {var} is not set"))),
        },
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| missing(format!("cannot read {}: {e}", path.display())))?;
            let value = text.trim_end_matches(['\r', '\n']).to_owned();
            if value.is_empty() {
                return Err(missing(format!("{} is empty", path.display())));
            }
            Ok(value)
        }
        (Some(_), Some(_)) => Err(missing("give the secret in an environment variable or a file, not both".into())),
        (None, None) => Err(missing("no environment variable or file is given".into())),
    }
}

/// An organisation's OpenID Connect identity provider that users sign in with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// `[a-z0-9-]`; the callback is `<issuer>/sso/<name>/callback`.
    pub name: String,
    /// What the sign-in button and the consent page say; default: the name.
    #[serde(default)]
    pub display_name: String,
    /// Discovered at `<issuer>/.well-known/openid-configuration`; ID tokens' `iss` must equal it
    /// (Entra ID's multi-tenant endpoints: the tenant's issuer).
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Authenticate with `private_key_jwt` instead of a secret: register
    /// `<issuer>/jwks.json` at the provider as this client's key set (ES256).
    #[serde(default)]
    pub private_key_jwt: bool,
    #[serde(default = "default_idp_scopes")]
    pub scopes: Vec<String>,
    /// The email domains this provider is authoritative for: sign-in routes these addresses
    /// here, and only a verified address in one of them can reach an existing account.
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// The ID token claim listing the user's groups.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Create users at their first sign-in.
    #[serde(default)]
    pub jit: bool,
    /// A new identity whose email matches an account it may not be linked to: refuse the
    /// sign-in, or make a new user.
    #[serde(default)]
    pub unlinkable_email: UnlinkableEmailMode,
    /// Private networks this provider may be reached on (as in `[cimd]`).
    #[serde(default)]
    pub allowed_ranges: Vec<ipnet::IpNet>,
    /// http, only to loopback, for development (as in `[cimd]`).
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// PEM trust anchor for a provider with a private CA.
    #[serde(default)]
    pub extra_ca_file: Option<PathBuf>,
    /// SEP-990: accept this provider's identity assertion grants.
    #[serde(default)]
    pub accept_id_jag: bool,
    /// For a multi-tenant issuer (Entra ID's `common`, `organizations`, `consumers`): the
    /// tenant ids whose users may sign in. Required there.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// Group → the most a member may grant. No group: nothing.
    #[serde(default)]
    pub group_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// A federated sign-in (its browser session and the grants made in it) lasts at most this
    /// long; then the user signs in at the provider again, and group changes take effect.
    #[serde(default = "default_max_session_secs")]
    pub max_session_secs: i64,
    /// Each request to the provider (discovery, keys, token) gives up after this long.
    #[serde(default = "default_idp_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_idp_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_max_session_secs() -> i64 {
    8 * 3600
}

fn default_idp_timeout_secs() -> u64 {
    5
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnlinkableEmailMode {
    #[default]
    Refuse,
    NewUser,
}

impl IdentityProviderConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("identity provider {:?}: {m}", self.name)));
        if self.name.is_empty()
            || self.name.len() > 40
            || !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return invalid("name must be 1 to 40 of a-z, 0-9 and -".into());
        }
        let issuer = match url::Url::parse(&self.issuer) {
            Ok(u) => u,
            Err(e) => return invalid(format!("issuer is not a URL: {e}")),
        };
        let loopback = issuer.host().as_ref().is_some_and(portcullis_oauth::is_loopback_host);
        match issuer.scheme() {
            "https" => {}
            "http" if loopback && self.allow_http_loopback => {}
            _ => return invalid("issuer must be https (http only to loopback, with allow_http_loopback)".into()),
        }
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return invalid("issuer must not have a query or fragment".into());
        }
        if self.client_id.is_empty() {
            return invalid("client_id is required".into());
        }
        let credentials = [self.client_secret_env.is_some(), self.client_secret_file.is_some(), self.private_key_jwt];
        if credentials.iter().filter(|given| **given).count() != 1 {
            return invalid(
                "give exactly one of client_secret_env, client_secret_file and private_key_jwt = true".into(),
            );
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return invalid("scopes must include openid".into());
        }
        for d in &self.email_domains {
            if d.is_empty()
                || d.starts_with('.')
                || d.contains('@')
                || d.chars().any(|c| c.is_whitespace() || c.is_ascii_uppercase())
            {
                return invalid(format!("email domain {d:?} must be a lower-case domain name such as corp.example"));
            }
        }
        for (group, scopes) in &self.group_scopes {
            for s in scopes {
                if let Err(e) = portcullis_types::Scope::parse(s) {
                    return invalid(format!("group_scopes.{group}: {e}"));
                }
            }
        }
        if self.max_session_secs <= 0 || self.timeout_secs == 0 {
            return invalid("max_session_secs and timeout_secs must be positive".into());
        }
        Ok(())
    }
}

/// A publisher of software statements: its `iss` and a JWKS file of its ES256 (P-256) keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementIssuerConfig {
    pub issuer: String,
    pub jwks_file: PathBuf,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_networks: Vec::new(),
            initial_access_token: InitialAccessTokenMode::Required,
            redirect_hosts: Vec::new(),
            allow_private_use_schemes: false,
            public_client_scopes: Vec::new(),
            confidential_without_token: ConfidentialWithoutTokenMode::Refuse,
            max_clients: 1000,
            per_address_per_minute: 10,
            session_max_age_secs: 3600,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            unused_client_expiry_days: 30,
            software_statement_issuers: Vec::new(),
        }
    }
}

/// Client ID Metadata Documents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CimdConfig {
    pub enabled: bool,
    pub trusted_domains: Vec<String>,
    pub blocked_domains: Vec<String>,
    pub allow_any_https: bool,
    /// Development only: fetch `http://` documents from loopback hosts.
    pub allow_http_loopback: bool,
    /// Address ranges fetches may reach although they are not public.
    pub allowed_ranges: Vec<ipnet::IpNet>,
    /// PEM file of extra CA certificates to trust for document hosts (besides the system's).
    pub extra_ca_file: Option<PathBuf>,
    pub max_document_bytes: usize,
    pub fetch_timeout_secs: u64,
    pub cache_min_secs: i64,
    pub cache_max_secs: i64,
}

impl Default for CimdConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            trusted_domains: Vec::new(),
            blocked_domains: Vec::new(),
            allow_any_https: false,
            allow_http_loopback: false,
            allowed_ranges: Vec::new(),
            extra_ca_file: None,
            max_document_bytes: 16 * 1024,
            fetch_timeout_secs: 5,
            cache_min_secs: 60,
            cache_max_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Browser origins allowed to call `/mcp/` routes, besides the issuer's own.
    pub allowed_origins: Vec<String>,
    /// `Host` header values accepted besides the issuer's host (DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    pub max_request_bytes: usize,
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    /// Where Portcullis's Client ID Metadata Document (served at `<issuer>/connect-client.json`)
    /// is published for upstreams' authorization servers, when not at the issuer itself: an
    /// https URL that serves that document (a proxy or a static copy). Default: the issuer's own
    /// URL when the issuer is https; otherwise none, and upstreams get dynamic registration.
    pub client_metadata_document_url: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_request_bytes: 4 * 1024 * 1024,
            trusted_issuers: Vec::new(),
            client_metadata_document_url: None,
        }
    }
}

/// OpenTelemetry traces, exported over OTLP/HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP/HTTP receiver's base URL (spans go to `<it>/v1/traces`); off when absent.
    pub otlp_endpoint: Option<url::Url>,
    pub service_name: String,
    /// The share of new traces kept (0 to 1); a trace a client started follows its decision.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "portcullis".into(), sample_ratio: 1.0 }
    }
}

/// Prometheus metrics on a listener of their own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (off when absent). Keep it on a private interface: it needs
    /// no token.
    pub listen: Option<SocketAddr>,
}

/// The audit trail's signed checkpoints (`portcullis audit verify`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often a serving node signs the chain's head when it moved: records newer than the
    /// last checkpoint are chained but not yet signed.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { checkpoint_interval_secs: 60 }
    }
}

/// An external authorization server whose access tokens the gateway accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    pub issuer: String,
    /// The `aud` its tokens carry, when it is not the route's resource URI.
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_token_types")]
    pub token_types: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: i64,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_min_secs: u64,
    #[serde(default)]
    pub introspection_client_id: Option<String>,
    /// The introspection secret, from this environment variable...
    #[serde(default)]
    pub introspection_client_secret_env: Option<String>,
    /// ... or from this file.
    #[serde(default)]
    pub introspection_client_secret_file: Option<PathBuf>,
    #[serde(default = "default_introspection_cache")]
    pub introspection_cache_max_secs: u64,
    /// Routes that accept this issuer's tokens; empty means all.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Private networks this issuer may be reached on (as in `[cimd]`); discovery, keys and
    /// introspection go through the same SSRF-safe fetcher as everything else.
    #[serde(default)]
    pub allowed_ranges: Vec<ipnet::IpNet>,
    /// http, only to loopback, for development (as in `[cimd]`).
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// PEM trust anchor for an issuer with a private CA.
    #[serde(default)]
    pub extra_ca_file: Option<PathBuf>,
    /// Each request to the issuer gives up after this long.
    #[serde(default = "default_idp_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_token_types() -> Vec<String> {
    vec!["at+jwt".into()]
}
fn default_leeway() -> i64 {
    30
}
fn default_jwks_refresh() -> u64 {
    60
}
fn default_introspection_cache() -> u64 {
    60
}

/// An MCP server behind the gateway, at `/mcp/NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// A stdio server: the program and its arguments, spawned once per MCP session.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment of the stdio child (it inherits only PATH, HOME and LANG otherwise).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// An HTTP server: its MCP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub transport: UpstreamTransport,
    #[serde(default)]
    pub authentication: RouteAuthentication,
    /// Tool → scopes it needs. Likewise prompts and resources (URI, or prefix ending in `*`).
    #[serde(default)]
    pub tools: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub prompts: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub unmapped: UnmappedPolicy,
    #[serde(default)]
    pub unmapped_scopes: Vec<String>,
    /// What each scope means, in words for the consent page.
    #[serde(default)]
    pub scope_descriptions: std::collections::BTreeMap<String, String>,
    /// RFC 9728 `scopes_supported`; default: every scope the maps use.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// What a user is asked to grant when an authorization request names no scope; default:
    /// every scope the maps use.
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    /// The gateway's own credentials for the upstream.
    #[serde(default)]
    pub headers: Vec<UpstreamHeaderConfig>,
    /// OAuth toward the upstream: each user's own account, or the gateway's own token.
    #[serde(default)]
    pub upstream_auth: UpstreamAuthMode,
    #[serde(default)]
    pub oauth: Option<UpstreamOAuthConfig>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default)]
    pub publish_at_root: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHeaderConfig {
    pub name: String,
    /// The value is read from this environment variable...
    #[serde(default)]
    pub value_env: Option<String>,
    /// ... or from this file (trailing newline removed).
    #[serde(default)]
    pub value_file: Option<PathBuf>,
}

fn default_connect_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    30
}
fn default_max_sessions() -> usize {
    32
}
fn default_idle_timeout() -> u64 {
    1800
}

impl UpstreamConfig {
    /// The tool-level policy this upstream's maps describe.
    pub fn policy_source(&self) -> portcullis_authz::PolicySource {
        let entries = |m: &std::collections::BTreeMap<String, Vec<String>>| {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
        };
        portcullis_authz::PolicySource {
            tools: entries(&self.tools),
            prompts: entries(&self.prompts),
            resources: entries(&self.resources),
            unmapped_requires: (self.unmapped == UnmappedPolicy::Allow).then(|| self.unmapped_scopes.clone()),
        }
    }

    pub fn requires_authentication(&self) -> bool {
        self.authentication == RouteAuthentication::Required
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub uri: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<ScopeConfig>,
    /// What a user is asked to grant when an authorization request names no scope; default:
    /// all of `scopes`.
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    pub client_name: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    /// Name of an environment variable holding the secret (confidential clients).
    pub client_secret_env: Option<String>,
    /// Hex SHA-256 of the secret, when the secret itself should not be on this machine.
    pub client_secret_sha256: Option<String>,
    #[serde(default)]
    pub can_introspect: bool,
    #[serde(default = "default_true")]
    pub verified: bool,
}

fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".into(), "refresh_token".into()]
}

fn default_true() -> bool {
    true
}

impl Config {
    /// The canonical URL of an upstream's route: the `resource` its tokens are issued for.
    pub fn route_resource(&self, name: &str) -> String {
        format!("{}/mcp/{name}", self.issuer().trim_end_matches('/'))
    }

    fn validate_identity_providers(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        // One provider is authoritative for a domain, or home-realm discovery would guess.
        let mut domains = std::collections::BTreeMap::new();
        for p in &self.identity_providers {
            p.validate()?;
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid(format!("identity provider {:?} is configured twice", p.name)));
            }
            for d in &p.email_domains {
                if let Some(other) = domains.insert(d.as_str(), p.name.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "email domain {d:?} is claimed by identity providers {other:?} and {:?}; each domain has one",
                        p.name
                    )));
                }
            }
        }
        if !self.login.local_passwords && self.identity_providers.is_empty() {
            return Err(ConfigError::Invalid(
                "login.local_passwords = false needs at least one [[identity_providers]], or nobody could sign in"
                    .into(),
            ));
        }
        Ok(())
    }

    fn validate_upstream_auth(&self, u: &UpstreamConfig) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("upstream {:?}: {m}", u.name)));
        let oauth = u.oauth.clone().unwrap_or_default();
        match u.upstream_auth {
            UpstreamAuthMode::Static => {
                if u.oauth.is_some() {
                    return invalid(
                        "[upstreams.oauth] needs upstream_auth = \"user\" or \"client_credentials\"".into(),
                    );
                }
                return Ok(());
            }
            UpstreamAuthMode::User if !u.requires_authentication() => {
                return invalid("upstream_auth = \"user\" needs authentication: the gateway must know the user".into());
            }
            UpstreamAuthMode::ClientCredentials if oauth.client_id.is_none() => {
                return invalid("upstream_auth = \"client_credentials\" needs oauth.client_id and its secret".into());
            }
            _ => {}
        }
        if u.url.is_none() || u.transport != UpstreamTransport::StreamableHttp {
            return invalid("upstream_auth other than \"static\" needs a Streamable HTTP url".into());
        }
        if u.headers.iter().any(|h| h.name.eq_ignore_ascii_case("authorization")) {
            return invalid("an Authorization header and upstream_auth cannot both be set".into());
        }
        if oauth.client_secret_env.is_some() && oauth.client_secret_file.is_some() {
            return invalid("oauth needs at most one of client_secret_env and client_secret_file".into());
        }
        if oauth.client_id.is_none() && (oauth.client_secret_env.is_some() || oauth.client_secret_file.is_some()) {
            return invalid("oauth.client_secret_* needs oauth.client_id".into());
        }
        if u.upstream_auth == UpstreamAuthMode::ClientCredentials
            && oauth.client_secret_env.is_none()
            && oauth.client_secret_file.is_none()
        {
            return invalid("upstream_auth = \"client_credentials\" needs a client secret".into());
        }
        if let Some(method) = &oauth.client_auth
            && !matches!(method.as_str(), "client_secret_basic" | "client_secret_post")
        {
            return invalid(format!("oauth.client_auth {method:?} must be client_secret_basic or client_secret_post"));
        }
        if let Some(issuer) = &oauth.authorization_server {
            url::Url::parse(issuer)
                .map_err(|e| ConfigError::Invalid(format!("upstream {:?}: oauth.authorization_server: {e}", u.name)))?;
        }
        if oauth.timeout_secs == 0 {
            return invalid("oauth.timeout_secs must be positive".into());
        }
        Ok(())
    }

    fn validate_gateway(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::BTreeSet::new();
        for u in &self.upstreams {
            if u.name.is_empty()
                || !u.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            {
                return invalid(format!("upstream name {:?} must be lowercase letters, digits, - and _", u.name));
            }
            if !names.insert(u.name.as_str()) {
                return invalid(format!("upstream {:?} is configured twice", u.name));
            }
            match (u.command.is_empty(), &u.url) {
                (false, None) => {}
                (true, Some(url)) => {
                    let parsed = url::Url::parse(url)
                        .map_err(|e| ConfigError::Invalid(format!("upstream {:?}: url: {e}", u.name)))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return invalid(format!("upstream {:?}: url must be http or https", u.name));
                    }
                }
                _ => return invalid(format!("upstream {:?} needs exactly one of command and url", u.name)),
            }
            let policy = portcullis_authz::Policy::compile(&u.policy_source())
                .map_err(|e| ConfigError::Invalid(format!("upstream {:?}: {e}", u.name)))?;
            let scopes = policy.all_scopes();
            let scope_names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            check_default_scopes(&format!("upstream {:?}", u.name), u.default_scopes.as_deref(), &scope_names)?;
            for h in &u.headers {
                if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                    return invalid(format!("upstream {:?}: {:?} is not a header name", u.name, h.name));
                }
                if h.name.eq_ignore_ascii_case("host") || h.name.to_ascii_lowercase().starts_with("mcp-") {
                    return invalid(format!("upstream {:?}: header {:?} cannot be set", u.name, h.name));
                }
                if h.value_env.is_some() == h.value_file.is_some() {
                    return invalid(format!(
                        "upstream {:?}: header {:?} needs exactly one of value_env and value_file",
                        u.name, h.name
                    ));
                }
            }
            self.validate_upstream_auth(u)?;
            if u.request_timeout_secs == 0 || u.connect_timeout_secs == 0 || u.max_sessions == 0 {
                return invalid(format!("upstream {:?}: timeouts and max_sessions must be positive", u.name));
            }
        }
        for u in self.upstreams.iter().filter(|u| u.requires_authentication()) {
            let route = self.route_resource(&u.name);
            if self.resources.iter().any(|r| r.uri == route) {
                return invalid(format!(
                    "resource {route:?} is also the route of upstream {:?}; describe its scopes with scope_descriptions there",
                    u.name
                ));
            }
        }
        if self.upstreams.iter().filter(|u| u.publish_at_root).count() > 1 {
            return invalid("only one upstream can have publish_at_root".into());
        }
        for t in &self.gateway.trusted_issuers {
            url::Url::parse(&t.issuer)
                .map_err(|e| ConfigError::Invalid(format!("trusted issuer {:?}: {e}", t.issuer)))?;
            if t.issuer == self.issuer() {
                return invalid("gateway.trusted_issuers must not list this server's own issuer".into());
            }
            for a in &t.algorithms {
                if portcullis_crypto::ForeignAlgorithm::parse(a).is_none() {
                    return invalid(format!(
                        "trusted issuer {:?}: algorithm {a:?} is not accepted (HMAC never is)",
                        t.issuer
                    ));
                }
            }
            let secrets = usize::from(t.introspection_client_secret_env.is_some())
                + usize::from(t.introspection_client_secret_file.is_some());
            if t.introspection_client_id.is_some() != (secrets == 1) || secrets > 1 {
                return invalid(format!(
                    "trusted issuer {:?}: introspection needs introspection_client_id and one of \
                     introspection_client_secret_env and introspection_client_secret_file",
                    t.issuer
                ));
            }
        }
        if let Some(url) = &self.gateway.client_metadata_document_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("gateway.client_metadata_document_url: {e}")))?;
            if parsed.scheme() != "https" || parsed.path().len() <= 1 || parsed.fragment().is_some() {
                return invalid(
                    "gateway.client_metadata_document_url must be an https URL with a path (a client metadata document's URL is its client id)".into(),
                );
            }
        }
        if self.gateway.max_request_bytes == 0 {
            return invalid("gateway.max_request_bytes must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid configuration: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads every secret the configuration names (client secrets, the gateway's upstream
    /// credentials, introspection secrets), so that one that is missing is refused now, by
    /// name, rather than when it is first needed.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        for c in &self.clients {
            if let Some(var) = &c.client_secret_env {
                read_secret(&format!("client {:?}: client_secret_env", c.client_id), Some(var), None)?;
            }
        }
        for u in &self.upstreams {
            for h in &u.headers {
                read_secret(
                    &format!("upstream {:?}: header {}", u.name, h.name),
                    h.value_env.as_ref(),
                    h.value_file.as_ref(),
                )?;
            }
        }
        for (u, oauth) in self.upstreams.iter().filter_map(|u| u.oauth.as_ref().map(|o| (u, o))) {
            if oauth.client_secret_env.is_some() || oauth.client_secret_file.is_some() {
                read_secret(
                    &format!("upstream {:?}: oauth client secret", u.name),
                    oauth.client_secret_env.as_ref(),
                    oauth.client_secret_file.as_ref(),
                )?;
            }
        }
        for p in self.identity_providers.iter().filter(|p| !p.private_key_jwt) {
            read_secret(
                &format!("identity provider {:?}: client secret", p.name),
                p.client_secret_env.as_ref(),
                p.client_secret_file.as_ref(),
            )?;
        }
        for t in &self.gateway.trusted_issuers {
            if t.introspection_client_id.is_some() {
                read_secret(
                    &format!("trusted issuer {:?}: introspection secret", t.issuer),
                    t.introspection_client_secret_env.as_ref(),
                    t.introspection_client_secret_file.as_ref(),
                )?;
            }
        }
        Ok(())
    }

    /// Reads `path` (or starts from the defaults), then applies `PORTCULLIS_*` overrides.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env { name: name.into(), reason: e.to_string() })
        }
        if let Some(v) = get("PORTCULLIS_ISSUER") {
            self.server.issuer = v;
        }
        if let Some(v) = get("PORTCULLIS_LISTEN") {
            self.server.listen = parse("PORTCULLIS_LISTEN", v)?;
        }
        if let Some(v) = get("PORTCULLIS_OTLP_ENDPOINT") {
            self.tracing.otlp_endpoint = Some(parse("PORTCULLIS_OTLP_ENDPOINT", v)?);
        }
        if let Some(v) = get("PORTCULLIS_METRICS_LISTEN") {
            self.metrics.listen = Some(parse("PORTCULLIS_METRICS_LISTEN", v)?);
        }
        if let Some(v) = get("PORTCULLIS_DATA_DIR") {
            self.server.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("PORTCULLIS_ALLOW_INSECURE_ISSUER") {
            self.server.allow_insecure_issuer = parse("PORTCULLIS_ALLOW_INSECURE_ISSUER", v)?;
        }
        if let Some(v) = get("PORTCULLIS_LOG_FORMAT") {
            self.server.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Env {
                        name: "PORTCULLIS_LOG_FORMAT".into(),
                        reason: "use text or json".into(),
                    });
                }
            };
        }
        if let Some(v) = get("PORTCULLIS_DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = get("PORTCULLIS_DATABASE_MAX_CONNECTIONS") {
            self.database.max_connections = parse("PORTCULLIS_DATABASE_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = get("PORTCULLIS_ACCESS_TOKEN_TTL_SECS") {
            self.tokens.access_token_ttl_secs = parse("PORTCULLIS_ACCESS_TOKEN_TTL_SECS", v)?;
        }
        if let Some(v) = get("PORTCULLIS_REFRESH_TOKEN_TTL_SECS") {
            self.tokens.refresh_token_ttl_secs = parse("PORTCULLIS_REFRESH_TOKEN_TTL_SECS", v)?;
        }
        if let Some(v) = get("PORTCULLIS_REGISTRATION_ENABLED") {
            self.registration.enabled = parse("PORTCULLIS_REGISTRATION_ENABLED", v)?;
        }
        if let Some(v) = get("PORTCULLIS_CIMD_ENABLED") {
            self.cimd.enabled = parse("PORTCULLIS_CIMD_ENABLED", v)?;
        }
        if let Some(v) = get("PORTCULLIS_SESSION_TTL_SECS") {
            self.login.session_ttl_secs = parse("PORTCULLIS_SESSION_TTL_SECS", v)?;
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.server.data_dir.join("portcullis.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The longest a token signed now can stay valid (with a minute of clock skew): how long a
    /// retired signing key stays published.
    pub fn longest_token_lifetime(&self) -> i64 {
        self.tokens.access_token_ttl_secs.max(self.tokens.id_token_ttl_secs) + 60
    }

    /// The issuer with no trailing slash.
    pub fn issuer(&self) -> String {
        self.server.issuer.trim_end_matches('/').to_owned()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let issuer = url::Url::parse(&self.server.issuer)
            .map_err(|e| ConfigError::Invalid(format!("server.issuer {:?} is not a URL: {e}", self.server.issuer)))?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(ConfigError::Invalid("server.issuer must not have a query or fragment (RFC 8414 §2)".into()));
        }
        let loopback = issuer.host().as_ref().is_some_and(portcullis_oauth::is_loopback_host);
        match issuer.scheme() {
            "https" => {}
            "http" if loopback || self.server.allow_insecure_issuer => {}
            "http" => {
                return Err(ConfigError::Invalid(format!(
                    "server.issuer {} uses http on a non-loopback host; use https, or set server.allow_insecure_issuer = true for development",
                    self.server.issuer
                )));
            }
            other => return Err(ConfigError::Invalid(format!("server.issuer scheme {other:?} is not http or https"))),
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err(ConfigError::Invalid("tracing.sample_ratio must be between 0 and 1".into()));
        }
        if let Some(endpoint) = &self.tracing.otlp_endpoint
            && !matches!(endpoint.scheme(), "http" | "https")
        {
            return Err(ConfigError::Invalid("tracing.otlp_endpoint must be an http or https URL".into()));
        }
        if !(1..=86_400).contains(&self.audit.checkpoint_interval_secs) {
            return Err(ConfigError::Invalid("audit.checkpoint_interval_secs must be 1 to 86400".into()));
        }
        let t = &self.tokens;
        for (name, v) in [
            ("tokens.access_token_ttl_secs", t.access_token_ttl_secs),
            ("tokens.refresh_token_ttl_secs", t.refresh_token_ttl_secs),
            ("tokens.grant_max_lifetime_secs", t.grant_max_lifetime_secs),
            ("tokens.authorization_code_ttl_secs", t.authorization_code_ttl_secs),
            ("tokens.id_token_ttl_secs", t.id_token_ttl_secs),
            ("login.session_ttl_secs", self.login.session_ttl_secs),
            ("login.authorization_request_ttl_secs", self.login.authorization_request_ttl_secs),
            ("registration.session_max_age_secs", self.registration.session_max_age_secs),
            ("registration.refresh_token_ttl_secs", self.registration.refresh_token_ttl_secs),
            ("registration.unused_client_expiry_days", self.registration.unused_client_expiry_days),
        ] {
            if v <= 0 {
                return Err(ConfigError::Invalid(format!("{name} must be a positive number of seconds")));
            }
        }
        if t.authorization_code_ttl_secs > 600 {
            return Err(ConfigError::Invalid(
                "tokens.authorization_code_ttl_secs must be at most 600 (RFC 6749 §4.1.2)".into(),
            ));
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return Err(ConfigError::Invalid("database.url must start with sqlite:// or postgres://".into()));
        }
        let reg = &self.registration;
        if self.database.query_timeout_ms == 0 || self.database.fail_closed_after_ms == 0 {
            return Err(ConfigError::Invalid(
                "database.query_timeout_ms and database.fail_closed_after_ms must be positive".into(),
            ));
        }
        for s in &reg.public_client_scopes {
            portcullis_types::Scope::parse(s)
                .map_err(|e| ConfigError::Invalid(format!("registration.public_client_scopes: {e}")))?;
        }
        if self.cimd.cache_min_secs < 0 || self.cimd.cache_max_secs < self.cimd.cache_min_secs {
            return Err(ConfigError::Invalid(
                "cimd.cache_min_secs must be at least 0 and at most cimd.cache_max_secs".into(),
            ));
        }
        if self.cimd.fetch_timeout_secs == 0 || self.cimd.max_document_bytes == 0 {
            return Err(ConfigError::Invalid(
                "cimd.fetch_timeout_secs and cimd.max_document_bytes must be positive".into(),
            ));
        }
        for r in &self.resources {
            let parsed = url::Url::parse(&r.uri)
                .map_err(|e| ConfigError::Invalid(format!("resource {:?} is not a URL: {e}", r.uri)))?;
            if parsed.fragment().is_some() {
                return Err(ConfigError::Invalid(format!(
                    "resource {:?} must not have a fragment (RFC 8707 §2)",
                    r.uri
                )));
            }
            for s in &r.scopes {
                portcullis_types::Scope::parse(&s.name)
                    .map_err(|e| ConfigError::Invalid(format!("resource {:?}: {e}", r.uri)))?;
            }
            let names: Vec<&str> = r.scopes.iter().map(|s| s.name.as_str()).collect();
            check_default_scopes(&format!("resource {:?}", r.uri), r.default_scopes.as_deref(), &names)?;
        }
        self.validate_gateway()?;
        self.validate_identity_providers()?;
        for c in &self.clients {
            let grant_types = portcullis_control::parse_grant_types(&c.grant_types)
                .map_err(|e| ConfigError::Invalid(format!("client {:?}: grant_types: {e}", c.client_id)))?;
            let scopes = portcullis_types::ScopeSet::parse(&c.scopes.join(" "))
                .map_err(|e| ConfigError::Invalid(format!("client {:?}: scopes: {e}", c.client_id)))?;
            if c.client_id.is_empty() || c.client_id.starts_with('-') || c.client_id.chars().any(char::is_whitespace) {
                return Err(ConfigError::Invalid(format!(
                    "client {:?}: client_id must not be empty, contain spaces or begin with -",
                    c.client_id
                )));
            }
            // The rules every client obeys are the control layer's; a placeholder digest stands
            // for the secret, which is read at start.
            let has_secret = c.client_secret_env.is_some() || c.client_secret_sha256.is_some();
            let spec = crate::app::operator_client(crate::app::OperatorClient {
                client_name: c.client_name.clone(),
                secret_digest: has_secret.then(|| vec![0; 32]),
                redirect_uris: c.redirect_uris.clone(),
                grant_types,
                scopes,
                resources: c.resources.clone(),
                origin: portcullis_store::RegistrationOrigin::Config,
                verified: c.verified,
                can_introspect: c.can_introspect,
            });
            spec.check().map_err(|e| ConfigError::Invalid(format!("client {:?}: {e}", c.client_id)))?;
            for uri in &c.redirect_uris {
                portcullis_oauth::validate_redirect_uri(uri, true)
                    .map_err(|e| ConfigError::Invalid(format!("client {:?}: {e}", c.client_id)))?;
            }
            if c.client_secret_env.is_some() && c.client_secret_sha256.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "client {:?}: set client_secret_env or client_secret_sha256, not both",
                    c.client_id
                )));
            }
            if let Some(hex) = &c.client_secret_sha256
                && decode_hex(hex).is_none_or(|d| d.len() != 32)
            {
                return Err(ConfigError::Invalid(format!(
                    "client {:?}: client_secret_sha256 must be 64 hex digits",
                    c.client_id
                )));
            }
        }
        Ok(())
    }
}

/// `default_scopes` must name scopes the resource has: a default nobody can be granted would
/// turn every request without `scope` into an error.
pub(crate) fn check_default_scopes(what: &str, defaults: Option<&[String]>, known: &[&str]) -> Result<(), ConfigError> {
    let Some(defaults) = defaults else { return Ok(()) };
    if defaults.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{what}: default_scopes is empty; leave it out to offer every scope of the resource"
        )));
    }
    for d in defaults {
        portcullis_types::Scope::parse(d).map_err(|e| ConfigError::Invalid(format!("{what}: default_scopes: {e}")))?;
        if !known.contains(&d.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "{what}: default_scopes names {d:?}, which is not one of its scopes"
            )));
        }
    }
    Ok(())
}

pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_issuer_needs_the_flag() {
        let mut c = Config::default();
        c.server.issuer = "http://auth.example.com".into();
        assert!(matches!(c.validate(), Err(ConfigError::Invalid(m)) if m.contains("non-loopback")));
        c.server.allow_insecure_issuer = true;
        assert!(c.validate().is_ok());
        c.server.issuer = "https://auth.example.com/tenant".into();
        c.server.allow_insecure_issuer = false;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn env_overrides_apply() -> Result<(), ConfigError> {
        let mut c = Config::default();
        c.apply_env(|name| match name {
            "PORTCULLIS_ISSUER" => Some("https://id.example.com".into()),
            "PORTCULLIS_ACCESS_TOKEN_TTL_SECS" => Some("42".into()),
            _ => None,
        })?;
        assert_eq!((c.server.issuer.as_str(), c.tokens.access_token_ttl_secs), ("https://id.example.com", 42));
        assert!(c.apply_env(|n| (n == "PORTCULLIS_LISTEN").then(|| "nope".into())).is_err());
        Ok(())
    }

    #[test]
    fn the_reference_config_parses_and_validates() -> Result<(), Box<dyn std::error::Error>> {
        let text = include_str!("../../../portcullis.reference.toml");
        let c: Config = toml::from_str(text)?;
        c.validate()?;
        Ok(())
    }

    /// A route's `upstream_auth` and `[upstreams.oauth]`, from TOML, against what validation
    /// says (`None`: valid; `Some(text)`: refused with a message containing it).
    #[test]
    fn upstream_auth_is_checked_where_it_is_configured() {
        let check = |route: &str, gateway: &str, expected: Option<&str>| {
            let text = format!(
                "[server]\nissuer = \"https://auth.example.com\"\n[gateway]\n{gateway}\n[[upstreams]]\nname = \"up\"\n\
                 tools = {{ t = [\"s\"] }}\n{route}"
            );
            let parsed: Result<Config, _> = toml::from_str(&text);
            let outcome = parsed.map_err(|e| e.to_string()).and_then(|c| c.validate().map_err(|e| e.to_string()));
            let agrees = match (&expected, &outcome) {
                (None, Ok(())) => true,
                (Some(want), Err(got)) => got.contains(want),
                _ => false,
            };
            assert!(agrees, "{route} {gateway}: expected {expected:?}, got {outcome:?}");
        };
        let url = "url = \"https://mcp.example.com/mcp\"";
        check(&format!("{url}\nupstream_auth = \"user\""), "", None);
        check(&format!("{url}\nupstream_auth = \"user\"\n[upstreams.oauth]\nclient_id = \"x\""), "", None);
        check(&format!("{url}\nupstream_auth = \"user\"\nauthentication = \"off\""), "", Some("needs authentication"));
        check("command = [\"srv\"]\nupstream_auth = \"user\"", "", Some("needs a Streamable HTTP url"));
        check(
            &format!("{url}\ntransport = \"sse\"\nupstream_auth = \"user\""),
            "",
            Some("needs a Streamable HTTP url"),
        );
        check(&format!("{url}\n[upstreams.oauth]\nclient_id = \"x\""), "", Some("needs upstream_auth"));
        check(&format!("{url}\nupstream_auth = \"client_credentials\""), "", Some("needs oauth.client_id"));
        check(
            &format!("{url}\nupstream_auth = \"client_credentials\"\n[upstreams.oauth]\nclient_id = \"x\""),
            "",
            Some("needs a client secret"),
        );
        check(
            &format!("{url}\nupstream_auth = \"user\"\n[upstreams.oauth]\nclient_secret_env = \"S\""),
            "",
            Some("needs oauth.client_id"),
        );
        check(
            &format!(
                "{url}\nupstream_auth = \"user\"\n[upstreams.oauth]\nclient_id = \"x\"\nclient_auth = \"private_key_jwt\""
            ),
            "",
            Some("must be client_secret_basic or client_secret_post"),
        );
        check(
            &format!("{url}\nupstream_auth = \"user\"\nheaders = [{{ name = \"Authorization\", value_env = \"T\" }}]"),
            "",
            Some("cannot both be set"),
        );
        check(&format!("{url}\nupstream_auth = \"users\""), "", Some("unknown variant"));
        check(url, "client_metadata_document_url = \"http://gw.example.com/c.json\"", Some("must be an https URL"));
        check(url, "client_metadata_document_url = \"https://gw.example.com/c.json\"", None);
    }
}
