//! Wiring: configuration in, a running server out.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use portcullis_control::UnlinkableEmail;
use portcullis_control::{Actor, ChangeFeed, ClientAuth, ClientSpec, Control, FeedSettings};
use portcullis_crypto::{MasterKey, PasswordHasher, PasswordParams, digest};
use portcullis_oauth::{
    AuthorizationServer, CimdPolicy, ConfidentialWithoutToken, FederatedProvider, IdentityProviderAssertions,
    InitialAccessTokenPolicy, KeyRing, RegistrationPolicy, ResourceSettings, ScopeSettings, Settings, StatementIssuer,
};
use portcullis_sso::{ClientCredential, IdentityProvider, ProviderSettings};
use portcullis_store::{ApplicationType, AuditKind, ClientStatus, GrantType, RegistrationOrigin, Store};
use portcullis_types::Clock;
use portcullis_types::ScopeSet;
use tokio::sync::watch;

use crate::config::{ConfidentialWithoutTokenMode, Config, InitialAccessTokenMode, decode_hex};

/// Reads the master key from `PORTCULLIS_MASTER_KEY` (base64url, 32 bytes) or from
/// `<data_dir>/master.key`, creating that file (mode 0600) on first start.
pub fn load_master_key(data_dir: &Path) -> anyhow::Result<MasterKey> {
    if let Ok(encoded) = std::env::var("PORTCULLIS_MASTER_KEY") {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .context("PORTCULLIS_MASTER_KEY is not base64url")?;
        return MasterKey::from_bytes(&bytes).context("PORTCULLIS_MASTER_KEY");
    }
    let path = data_dir.join("master.key");
    if !path.exists() {
        ensure_data_dir(data_dir)?;
        let bytes = MasterKey::generate_bytes()?;
        write_private_file(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "created the master key");
    }
    check_private_file(&path)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    MasterKey::from_bytes(&bytes).with_context(|| format!("{} is not a master key", path.display()))
}

#[cfg(unix)]
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(unix)]
fn check_private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        anyhow::bail!("{} is readable by other users (mode {:o}); run chmod 600 on it", path.display(), mode & 0o777);
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_file(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Reads the JWKS files of the trusted software-statement publishers (P-256 keys only).
pub fn statement_issuers(config: &Config) -> anyhow::Result<Vec<StatementIssuer>> {
    let mut issuers = Vec::new();
    for entry in &config.registration.software_statement_issuers {
        let text = std::fs::read_to_string(&entry.jwks_file)
            .with_context(|| format!("reading the JWKS of software statement issuer {}", entry.issuer))?;
        let jwks: portcullis_types::wire::JwkSet = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JWKS of P-256 keys", entry.jwks_file.display()))?;
        let mut keys = Vec::new();
        for jwk in jwks.keys {
            if jwk.kty != "EC" || jwk.crv != "P-256" {
                anyhow::bail!("{}: only EC P-256 keys are supported", entry.jwks_file.display());
            }
            keys.push(Arc::new(portcullis_crypto::PublicKey::from_p256_jwk(&jwk.x, &jwk.y, Some(&jwk.kid))?));
        }
        issuers.push(StatementIssuer { issuer: entry.issuer.clone(), keys });
    }
    Ok(issuers)
}

/// How far an outbound peer may be reached, as each kind of peer's configuration says it
/// (`[cimd]`, `[[identity_providers]]`, `[[gateway.trusted_issuers]]`).
/// The control layer, knowing where the gateway's routes live (so that revoking a user's last
/// grant for a route forgets their upstream account there). Every command line and the server
/// make it here.
pub fn control(config: &Config, store: Store, clock: Arc<dyn Clock>) -> Control {
    Control::new(store, clock).with_route_resource_prefix(config.route_resource(""))
}

pub(crate) struct Reach<'a> {
    pub allowed_ranges: &'a [ipnet::IpNet],
    pub allow_http_loopback: bool,
    pub extra_ca_file: Option<&'a Path>,
    pub timeout_secs: u64,
}

/// An issuer's metadata document or key set: a few kilobytes for the big providers.
pub(crate) const ISSUER_DOCUMENT_BYTES: usize = 256 * 1024;

/// The one translation of a peer's reach into the outbound fetcher's policy (`what` names the
/// configuration entry in errors).
pub(crate) fn fetch_policy(
    what: &str,
    reach: Reach<'_>,
    max_bytes: usize,
) -> anyhow::Result<portcullis_outbound::FetchPolicy> {
    let extra_roots_pem = match reach.extra_ca_file {
        Some(path) => vec![std::fs::read(path).with_context(|| format!("{what}: reading {}", path.display()))?],
        None => Vec::new(),
    };
    Ok(portcullis_outbound::FetchPolicy {
        allow_http_loopback: reach.allow_http_loopback,
        allowed_ranges: reach.allowed_ranges.to_vec(),
        connect_timeout: Duration::from_secs(reach.timeout_secs),
        total_timeout: Duration::from_secs(reach.timeout_secs),
        max_bytes,
        extra_roots_pem,
    })
}

/// The configured identity providers, each ready to discover its provider on first use.
pub fn identity_providers(
    config: &Config,
    clock: &Arc<dyn Clock>,
    keys: &KeyRing,
) -> anyhow::Result<Vec<FederatedProvider>> {
    let issuer = config.issuer();
    let mut providers = Vec::new();
    for p in &config.identity_providers {
        let key = format!("identity provider {:?}", p.name);
        let credential = if p.private_key_jwt {
            ClientCredential::PrivateKeyJwt(Arc::new(IdentityProviderAssertions {
                keys: keys.clone(),
                clock: Arc::clone(clock),
            }))
        } else {
            ClientCredential::Secret(crate::config::read_secret(
                &format!("{key}: client secret"),
                p.client_secret_env.as_ref(),
                p.client_secret_file.as_ref(),
            )?)
        };
        let group_scopes = p.group_scopes.iter().map(|(group, scopes)| (group.clone(), scope_names(scopes))).collect();
        let settings = ProviderSettings {
            name: p.name.clone(),
            display_name: if p.display_name.is_empty() { p.name.clone() } else { p.display_name.clone() },
            issuer: p.issuer.clone(),
            client_id: p.client_id.clone(),
            credential,
            scopes: p.scopes.clone(),
            email_domains: p.email_domains.clone(),
            groups_claim: p.groups_claim.clone(),
            group_scopes,
            max_session_secs: p.max_session_secs,
            accept_id_jag: p.accept_id_jag,
            allowed_tenants: p.allowed_tenants.clone(),
            fetch: fetch_policy(
                &key,
                Reach {
                    allowed_ranges: &p.allowed_ranges,
                    allow_http_loopback: p.allow_http_loopback,
                    extra_ca_file: p.extra_ca_file.as_deref(),
                    timeout_secs: p.timeout_secs,
                },
                ISSUER_DOCUMENT_BYTES,
            )?,
        };
        let provider = IdentityProvider::new(settings, &issuer, Arc::clone(clock)).with_context(|| key.clone())?;
        providers.push(FederatedProvider {
            provider: Arc::new(provider),
            jit: p.jit,
            unlinkable_email: match p.unlinkable_email {
                crate::config::UnlinkableEmailMode::Refuse => UnlinkableEmail::Refuse,
                crate::config::UnlinkableEmailMode::NewUser => UnlinkableEmail::NewUser,
            },
        });
    }
    Ok(providers)
}

pub fn settings(
    config: &Config,
    policies: &[Arc<portcullis_authz::Policy>],
    clock: &Arc<dyn Clock>,
    keys: &KeyRing,
) -> anyhow::Result<Settings> {
    let issuer = config.issuer();
    let reg = &config.registration;
    let registration = RegistrationPolicy {
        enabled: reg.enabled,
        allowed_networks: reg.allowed_networks.clone(),
        initial_access_token: match reg.initial_access_token {
            InitialAccessTokenMode::Optional => InitialAccessTokenPolicy::Optional,
            InitialAccessTokenMode::Required => InitialAccessTokenPolicy::Required,
        },
        redirect_hosts: reg.redirect_hosts.clone(),
        allow_private_use_schemes: reg.allow_private_use_schemes,
        public_client_scopes: ScopeSet::parse(&reg.public_client_scopes.join(" "))
            .context("registration.public_client_scopes")?,
        confidential_without_token: match reg.confidential_without_token {
            ConfidentialWithoutTokenMode::Approval => ConfidentialWithoutToken::PendingApproval,
            ConfidentialWithoutTokenMode::Refuse => ConfidentialWithoutToken::Refuse,
        },
        max_clients: reg.max_clients,
        session_max_age: reg.session_max_age_secs,
        refresh_token_ttl: reg.refresh_token_ttl_secs,
        unused_client_ttl: reg.unused_client_expiry_days * 24 * 3600,
        statement_issuers: Vec::new(),
    };
    let cimd = CimdPolicy {
        enabled: config.cimd.enabled,
        trusted_domains: config.cimd.trusted_domains.clone(),
        blocked_domains: config.cimd.blocked_domains.clone(),
        allow_any_https: config.cimd.allow_any_https,
        cache_min_secs: config.cimd.cache_min_secs,
        cache_max_secs: config.cimd.cache_max_secs,
    };
    Ok(Settings {
        identity_providers: identity_providers(config, clock, keys)?,
        local_passwords: config.login.local_passwords,
        registration,
        cimd,
        secure_cookies: issuer.starts_with("https://"),
        issuer,
        access_token_ttl: config.tokens.access_token_ttl_secs,
        refresh_token_ttl: config.tokens.refresh_token_ttl_secs,
        grant_max_lifetime: config.tokens.grant_max_lifetime_secs,
        authorization_code_ttl: config.tokens.authorization_code_ttl_secs,
        authorization_request_ttl: config.login.authorization_request_ttl_secs,
        session_ttl: config.login.session_ttl_secs,
        id_token_ttl: config.tokens.id_token_ttl_secs,
        resources: config
            .resources
            .iter()
            .map(|r| ResourceSettings {
                uri: r.uri.clone(),
                name: if r.name.is_empty() { r.uri.clone() } else { r.name.clone() },
                scopes: r
                    .scopes
                    .iter()
                    .map(|s| ScopeSettings { name: s.name.clone(), description: s.description.clone() })
                    .collect(),
                default_scopes: r.default_scopes.as_ref().map(|d| scope_names(d)),
            })
            .chain(crate::gateway::route_resources(config, policies))
            .chain(std::iter::once(admin_resource(config)))
            .collect(),
    })
}

/// The admin API as a resource of this authorization server: reading and changing, each its
/// own scope; a request that names none is offered reading only.
fn admin_resource(config: &Config) -> ResourceSettings {
    use portcullis_types::admin::{ADMIN_API_PATH, ADMIN_READ_SCOPE, ADMIN_WRITE_SCOPE};
    ResourceSettings {
        uri: format!("{}{ADMIN_API_PATH}", config.issuer().trim_end_matches('/')),
        name: "Portcullis administration".into(),
        scopes: vec![
            ScopeSettings {
                name: ADMIN_READ_SCOPE.into(),
                description: "See every agent, user, grant, token and call (administrators only)".into(),
            },
            ScopeSettings {
                name: ADMIN_WRITE_SCOPE.into(),
                description: "Suspend agents, disable users and revoke grants (administrators only)".into(),
            },
        ],
        default_scopes: Some(scope_names(&[ADMIN_READ_SCOPE.into()])),
    }
}

/// Scope names that `Config::validate` already checked; one that does not parse is left out.
pub(crate) fn scope_names(names: &[String]) -> ScopeSet {
    ScopeSet::from_scopes(names.iter().filter_map(|n| portcullis_types::Scope::parse(n).ok()))
}

/// Creates the data directory, readable by its owner only: it holds the master key and, by
/// default, the database.
pub fn ensure_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    if !data_dir.exists() {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", data_dir.display()))?;
        }
    }
    Ok(())
}

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.database.url.is_empty() {
        ensure_data_dir(&config.server.data_dir)?;
    }
    let url = config.database_url();
    let store = Store::connect(&url, config.database.max_connections)
        .await?
        .with_query_deadline(Duration::from_millis(config.database.query_timeout_ms));
    store.migrate().await?;
    Ok(store)
}

pub fn password_hasher(config: &Config) -> anyhow::Result<PasswordHasher> {
    Ok(PasswordHasher::new(
        PasswordParams::default(),
        config.login.password_hashing_concurrency,
        Duration::from_secs(config.login.password_queue_timeout_secs),
    )?)
}

/// A client an operator sets up, in the configuration file or with `portcullis client add`.
pub struct OperatorClient {
    pub client_name: String,
    /// SHA-256 of the secret; `None` makes a public client.
    pub secret_digest: Option<Vec<u8>>,
    pub redirect_uris: Vec<String>,
    /// Empty: the defaults for the kind of client (`default_grant_types`).
    pub grant_types: Vec<GrantType>,
    pub scopes: ScopeSet,
    pub resources: Vec<String>,
    pub origin: RegistrationOrigin,
    pub verified: bool,
    pub can_introspect: bool,
}

/// The spec of an operator's client: active from the start, with none of the artefacts of
/// self-registration. Any non-https redirect URI (loopback or a private-use scheme) makes it a
/// native application.
pub fn operator_client(c: OperatorClient) -> ClientSpec {
    let native = c.redirect_uris.iter().any(|u| !u.starts_with("https://"));
    let grant_types = if c.grant_types.is_empty() {
        portcullis_control::default_grant_types(c.secret_digest.is_some(), !c.redirect_uris.is_empty())
    } else {
        c.grant_types
    };
    ClientSpec {
        name: c.client_name,
        auth: match c.secret_digest {
            Some(digest) => ClientAuth::Secret { digest },
            None => ClientAuth::None,
        },
        redirect_uris: c.redirect_uris,
        grant_types,
        scopes: c.scopes,
        resources: c.resources,
        application_type: if native { ApplicationType::Native } else { ApplicationType::Web },
        origin: c.origin,
        verified: c.verified,
        status: ClientStatus::Active,
        can_introspect: c.can_introspect,
        client_uri: None,
        registration_token_digest: None,
        registered_from: None,
    }
}

/// Makes the clients declared in the configuration exist, as declared (through the control
/// layer: a client that changed is audited, one that did not is left alone).
/// Forgets the users' upstream accounts (the token vault) of routes the configuration no
/// longer has: at start, and after each reload.
pub async fn forget_removed_routes(control: &Control, config: &Config) -> anyhow::Result<()> {
    for route in control.store().upstream_credential_routes().await? {
        if !config.upstreams.iter().any(|u| u.name == route) {
            let forgotten = control.forget_route_credentials(&Actor::Configuration, &route).await?;
            tracing::info!(route = %route, forgotten, "forgot the upstream accounts of a removed route");
        }
    }
    Ok(())
}

pub async fn sync_config_clients(control: &Control, config: &Config) -> anyhow::Result<()> {
    for c in &config.clients {
        let secret_digest = match (&c.client_secret_env, &c.client_secret_sha256) {
            (Some(var), _) => {
                let secret = crate::config::read_secret(
                    &format!("client {:?}: client_secret_env", c.client_id),
                    Some(var),
                    None,
                )?;
                Some(digest(&secret).to_vec())
            }
            (None, Some(hex)) => decode_hex(hex),
            (None, None) => None,
        };
        let spec = operator_client(OperatorClient {
            client_name: c.client_name.clone(),
            secret_digest,
            redirect_uris: c.redirect_uris.clone(),
            grant_types: portcullis_control::parse_grant_types(&c.grant_types)
                .with_context(|| format!("client {:?}: grant_types", c.client_id))?,
            scopes: ScopeSet::parse(&c.scopes.join(" "))
                .with_context(|| format!("client {:?}: scopes", c.client_id))?,
            resources: c.resources.clone(),
            origin: RegistrationOrigin::Config,
            verified: c.verified,
            can_introspect: c.can_introspect,
        });
        control
            .declare_client(&Actor::Configuration, &c.client_id, spec)
            .await
            .with_context(|| format!("client {:?}", c.client_id))?;
    }
    Ok(())
}

/// A server that is accepting connections.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when `[metrics] listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub issuer: String,
    pub server: AuthorizationServer,
    pub feed: ChangeFeed,
    pub reloader: Reloader,
    pub gateway: Option<portcullis_gateway::Gateway>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, finishes in-flight requests, writes the audit trail, and closes the
    /// database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Resolves when the server stops (after a shutdown signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.task.await.context("server task panicked")?;
        if let Some(gateway) = &self.gateway {
            gateway.shutdown().await;
        }
        self.feed.stop();
        self.server.store().close().await;
        result
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens everything and starts serving on `config.server.listen` (port 0 picks one).
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    start_on(listener, config, clock).await
}

/// Like [`start`], on a listener the caller already bound (so it can know the port first).
pub async fn start_on(
    listener: tokio::net::TcpListener,
    config: Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<RunningServer> {
    let master = Arc::new(load_master_key(&config.server.data_dir)?);
    let store = open_store(&config).await?;
    let control = control(&config, store.clone(), Arc::clone(&clock));
    let now = clock.now();
    sync_config_clients(&control, &config).await?;
    forget_removed_routes(&control, &config).await?;
    let keys = KeyRing::new(Arc::clone(&master));
    keys.initialize(&control, now, config.longest_token_lifetime()).await?;
    let audit_signer = portcullis_control::AuditSigner::load_or_create(&store, &master, now)
        .await
        .context("opening the audit signing key")?;
    let feed = ChangeFeed::start(
        store.clone(),
        control.local_commits(),
        FeedSettings::for_store(&store, Duration::from_millis(config.database.fail_closed_after_ms)),
    )
    .await
    .context("following the change log")?;
    let cimd = &config.cimd;
    let fetcher = portcullis_outbound::Fetcher::new(fetch_policy(
        "cimd",
        Reach {
            allowed_ranges: &cimd.allowed_ranges,
            allow_http_loopback: cimd.allow_http_loopback,
            extra_ca_file: cimd.extra_ca_file.as_deref(),
            timeout_secs: cimd.fetch_timeout_secs,
        },
        cimd.max_document_bytes,
    )?);
    config.check_secrets()?;
    let policies = crate::gateway::compile_policies(&config)?;
    let mut server_settings = settings(&config, &policies, &clock, &keys)?;
    server_settings.registration.statement_issuers = statement_issuers(&config)?;
    let server = AuthorizationServer::new(
        control.clone(),
        keys.clone(),
        Arc::clone(&clock),
        server_settings,
        password_hasher(&config)?,
    )
    .with_fetcher(fetcher)
    .with_change_feed(feed.clone());
    let limits = portcullis_web::LoginLimits {
        per_account_per_minute: config.login.per_account_per_minute,
        per_address_per_minute: config.login.per_address_per_minute,
        registrations_per_address_per_minute: config.registration.per_address_per_minute,
    };
    let mut state = portcullis_web::AppState::new(server.clone(), master, limits)
        .with_trusted_proxies(config.server.trusted_proxies.clone());
    // The gateway exists even without routes, so that a reload can add some.
    let gateway = {
        let settings = crate::gateway::gateway_settings(&config, &policies)?;
        let gateway = portcullis_gateway::Gateway::new(settings, server.clone(), Some(feed.clone()))
            .context("starting the MCP gateway")?;
        state = state.with_gateway(gateway.clone());
        Some(gateway)
    };
    let router = portcullis_web::router(state);

    let addr = listener.local_addr()?;
    let (shutdown, mut shutdown_rx) = watch::channel(false);

    let reloader = Reloader {
        started: Arc::new(config.clone()),
        path: Arc::default(),
        control: control.clone(),
        server: server.clone(),
        gateway: gateway.clone(),
        one_at_a_time: Arc::default(),
    };
    tokio::spawn(apply_changes(feed.clone(), server.clone(), reloader.clone(), shutdown.subscribe()));
    tokio::spawn(maintain(server.clone(), shutdown.subscribe()));
    let metrics_addr = match config.metrics.listen {
        Some(listen) => {
            let sources = crate::metrics::Sources { gateway: gateway.clone(), feed: feed.clone() };
            Some(crate::metrics::serve(listen, sources, shutdown.subscribe()).await?)
        }
        None => None,
    };
    tokio::spawn(sign_audit_checkpoints(
        audit_signer,
        store.clone(),
        Arc::clone(&clock),
        Duration::from_secs(config.audit.checkpoint_interval_secs),
        shutdown.subscribe(),
    ));

    let draining = gateway.clone();
    let mut deadline_rx = shutdown.subscribe();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
                // Ending the sessions ends their streams, so in-flight requests can finish.
                if let Some(gateway) = &draining {
                    gateway.end_sessions();
                }
            })
            .into_future();
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => return result.context("HTTP server failed"),
            _ = deadline_rx.wait_for(|stop| *stop) => {}
        }
        // Streams passed through from HTTP upstreams may never end by themselves.
        match tokio::time::timeout(Duration::from_secs(10), serve).await {
            Ok(result) => result.context("HTTP server failed"),
            Err(_) => {
                tracing::warn!("open streams did not end within 10 s of the shutdown signal; closing them");
                Ok(())
            }
        }
    });
    tracing::info!(%addr, issuer = %config.issuer(), backend = store.backend_name(), "Portcullis is listening");
    Ok(RunningServer { addr, metrics_addr, issuer: config.issuer(), server, feed, gateway, reloader, shutdown, task })
}

/// Takes a changed configuration file without a restart: routes and their policies, trusted
/// issuers, resources and scopes, registration and metadata-document policy, the clients it
/// declares. Each is compiled into a new snapshot and swapped in whole; a file that does not
/// validate, or that changes what only a restart can (issuer, listen address, data directory,
/// database), is refused and the running configuration stays. Every attempt is audited.
#[derive(Clone)]
pub struct Reloader {
    started: Arc<Config>,
    path: Arc<std::sync::Mutex<Option<std::path::PathBuf>>>,
    control: Control,
    server: AuthorizationServer,
    gateway: Option<portcullis_gateway::Gateway>,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    /// The file a reload reads (none: defaults and environment only, as at start).
    pub fn set_path(&self, path: Option<std::path::PathBuf>) {
        if let Ok(mut current) = self.path.lock() {
            *current = path;
        }
    }

    /// Re-reads the configuration and applies it, or refuses it; records the outcome.
    pub async fn reload(&self, actor: &Actor) -> anyhow::Result<()> {
        let _one = self.one_at_a_time.lock().await;
        let outcome = self.apply().await;
        match &outcome {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "configuration reload refused; the running configuration stays")
            }
        }
        let recorded = outcome.as_ref().map(|_| ()).map_err(|e| format!("{e:#}"));
        self.control.record_config_reload(actor, recorded).await?;
        outcome
    }

    async fn apply(&self) -> anyhow::Result<()> {
        let path = self.path.lock().ok().and_then(|p| p.clone());
        let config = Config::load(path.as_deref())?;
        let started = &self.started;
        for (key, same) in [
            ("server.issuer", config.issuer() == started.issuer()),
            ("server.listen", config.server.listen == started.server.listen),
            ("server.data_dir", config.server.data_dir == started.server.data_dir),
            ("database.url", config.database_url() == started.database_url()),
        ] {
            if !same {
                anyhow::bail!("{key} changed; that takes a restart");
            }
        }
        config.check_secrets()?;
        let policies = crate::gateway::compile_policies(&config)?;
        let mut settings = settings(&config, &policies, &self.server.clock(), self.server.keys())?;
        settings.registration.statement_issuers = statement_issuers(&config)?;
        let gateway_settings = crate::gateway::gateway_settings(&config, &policies)?;
        sync_config_clients(&self.control, &config).await?;
        self.server.replace_settings(settings)?;
        if let Some(gateway) = &self.gateway {
            gateway.reload(gateway_settings).context("the gateway refused the new routes")?;
        }
        forget_removed_routes(&self.control, &config).await?;
        Ok(())
    }
}

/// Keeps what this node holds in memory in step with the change log: a key rotated anywhere
/// is loaded, a client changed anywhere is read afresh. (The gateway follows the feed itself,
/// to end what a revocation takes away.)
async fn apply_changes(
    feed: ChangeFeed,
    server: AuthorizationServer,
    reloader: Reloader,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = feed.subscribe();
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = stop.changed() => return,
        };
        let reload_keys = match &change {
            Ok(c) if c.kind == AuditKind::KeyRotated => true,
            Ok(c) if c.kind == AuditKind::ConfigReloadRequested => {
                let reloader = reloader.clone();
                // Off this loop: a reload waits for its audit write, and changes keep coming.
                tokio::spawn(async move { reloader.reload(&Actor::Operator).await });
                false
            }
            Ok(c) => {
                if let Some(client_id) = &c.client_id {
                    server.client_changed(c.kind, client_id);
                }
                false
            }
            Err(RecvError::Lagged(_)) => {
                server.forget_cached_clients();
                true
            }
            Err(RecvError::Closed) => return,
        };
        if reload_keys && let Err(e) = server.keys().reload(server.store(), server.now()).await {
            tracing::error!(error = %e, "reloading signing keys failed");
        }
    }
}

/// Purges what has expired and sweeps unused self-registered clients, every ten minutes.
/// Signs the audit chain's head at every interval when it moved. Each checkpoint is also a log
/// line: a witness outside the database, for the one thing signatures alone cannot show (the
/// tail, its checkpoints and the head all cut back together).
async fn sign_audit_checkpoints(
    signer: portcullis_control::AuditSigner,
    store: Store,
    clock: Arc<dyn Clock>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sign = async |store: &Store| match signer.checkpoint(store, clock.now()).await {
        Ok(Some(c)) => {
            portcullis_telemetry::audit_checkpoint(c.seq);
            tracing::info!(
                target: "portcullis::audit",
                seq = c.seq,
                hash = %hex::encode(c.hash),
                kid = %c.kid,
                "signed an audit checkpoint"
            )
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "could not sign an audit checkpoint"),
    };
    loop {
        tokio::select! {
            _ = tick.tick() => sign(&store).await,
            _ = stop.changed() => return,
        }
    }
}

async fn maintain(server: AuthorizationServer, mut stop: watch::Receiver<bool>) {
    let mut purge = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = purge.tick() => {
                match server.sweep().await {
                    Ok(report) if report.expired_rows > 0 => tracing::debug!(removed = report.expired_rows, "purged expired records"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "the maintenance sweep failed"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}
