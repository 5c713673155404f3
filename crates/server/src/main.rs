//! The `portcullis` command.

mod audit_cli;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use portcullis::app;
use portcullis::config::{Config, LogFormat};
use portcullis_control::{Actor, NewUser, RevocationReason, parse_grant_types};
use portcullis_crypto::{digest, random_token};

/// mimalloc rather than the system allocator: the data path allocates and frees small
/// buffers on every call, which glibc's allocator made a tenth of a call's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use portcullis_oauth::KeyRing;
use portcullis_store::{ClientRecord, ClientStatus, GrantSelector, RegistrationOrigin};
use portcullis_types::{Clock, ScopeSet, SystemClock};

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Identity and security gateway for MCP servers")]
struct Cli {
    /// Configuration file (see portcullis.reference.toml). Without one, defaults and
    /// PORTCULLIS_* environment variables apply.
    #[arg(long, short, global = true, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Ask every running node to re-read its configuration file (as SIGHUP asks one); the
    /// outcome on each is in the audit trail (`audit tail --kind config`).
    Reload,
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Local users.
    #[command(subcommand)]
    User(UserCommand),
    /// OAuth clients registered by an administrator.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Users' remembered consents.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Grants (and every token hanging off them).
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Initial access tokens for Dynamic Client Registration.
    #[command(subcommand)]
    Iat(IatCommand),
    /// The gateway's audit trail.
    #[command(subcommand)]
    Audit(audit_cli::AuditCommand),
    /// Everything in one command: the authorization server, the gateway at /mcp/crm and the
    /// demo CRM behind it, user alice, registration open to loopback clients.
    Demo {
        /// Where to listen (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the demo keeps its database and keys.
        #[arg(long, default_value = "portcullis-demo")]
        data_dir: PathBuf,
    },
    /// The demo CRM MCP server on stdio, or on Streamable HTTP with --listen.
    #[command(hide = true)]
    DemoCrm {
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
enum IatCommand {
    /// Create a token; it is shown once.
    Create {
        #[arg(long)]
        label: String,
        /// How many registrations it allows.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86400)]
        expires_in: i64,
    },
    List,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new signing key; the old one stays published until its tokens have expired.
    Rotate,
    /// List published keys.
    List,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from standard input (one line) or generated.
    Add {
        #[arg(allow_hyphen_values = true)]
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    List,
    /// Disable a user: sessions end and tokens stop working at once.
    Disable {
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    Enable {
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    /// Remove a user with their sessions, consents and grants.
    Remove {
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    /// Set a new password (read from standard input, or generated and printed).
    Passwd {
        #[arg(allow_hyphen_values = true)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client. Confidential clients get a secret, shown once.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long)]
        confidential: bool,
        /// Allowed scopes (repeat); none means every scope of its resources.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Allowed resources (repeat); none means all.
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Grant types (repeat); default authorization_code and refresh_token, or
        /// client_credentials for a confidential client without redirect URIs.
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        /// Allow this client to introspect tokens of other clients (for resource servers).
        #[arg(long)]
        introspect_any: bool,
    },
    List,
    Show {
        /// Any client id, even one that begins with `-`.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Remove a client and everything it holds.
    Remove {
        /// Any client id, even one that begins with `-`.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Suspend a client: refused everywhere, its grants revoked.
    Suspend {
        /// Any client id, even one that begins with `-`.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    Activate {
        /// Any client id, even one that begins with `-`.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Clients waiting for approval.
    Pending,
    /// Approve a pending client.
    Approve {
        /// Any client id, even one that begins with `-`.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Reject a pending client (it is removed).
    Reject {
        /// Any client id, even one that begins with `-`.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Subcommand)]
enum ConsentCommand {
    List {
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    /// Forget a consent and revoke the grants it produced.
    Revoke {
        #[arg(allow_hyphen_values = true)]
        username: String,
        #[arg(long, allow_hyphen_values = true)]
        client: String,
        #[arg(long)]
        resource: String,
    },
}

#[derive(Subcommand)]
enum GrantCommand {
    /// Grants, newest first, optionally of one client or one user.
    List {
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
        /// Username.
        #[arg(long, allow_hyphen_values = true)]
        user: Option<String>,
    },
    /// Revoke grants and their tokens: one grant, or all of a user, of a client, or for a
    /// route's resource (give exactly one).
    Revoke {
        #[arg(long, allow_hyphen_values = true)]
        grant: Option<String>,
        /// Username.
        #[arg(long, allow_hyphen_values = true)]
        user: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
        /// A resource URI (a gateway route's URL).
        #[arg(long)]
        resource: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::DemoCrm { listen: None } => return portcullis::demo_crm::run_stdio().await,
        Command::DemoCrm { listen: Some(addr) } => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let signals = StopSignals::listen()?;
            println!("demo CRM on http://{}/mcp", listener.local_addr()?);
            axum::serve(listener, portcullis::demo_crm::http_router())
                .with_graceful_shutdown(signals.received())
                .await?;
            return Ok(());
        }
        Command::Demo { listen, data_dir } => {
            let _traces = portcullis::telemetry::init(LogFormat::Text, &Default::default())?;
            return demo(listen, data_dir).await;
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    // Spans are exported by the server only; the CLI's commands log and leave.
    let traces = if matches!(cli.command, Command::Serve) { config.tracing.clone() } else { Default::default() };
    let _traces = portcullis::telemetry::init(config.server.log_format, &traces)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Command::Audit(cmd) => audit_cli::run(config, cmd).await,
        Command::Demo { .. } | Command::DemoCrm { .. } => Ok(()),
        Command::Serve => serve(config, clock, cli.config.clone()).await,
        Command::Reload => {
            let control = app::control(&config, app::open_store(&config).await?, clock);
            let revision = control.request_config_reload(&Actor::Operator).await?;
            println!("asked every node to re-read its configuration (change {revision});");
            println!("each records the outcome: portcullis audit tail --kind config");
            Ok(())
        }
        Command::CheckConfig => {
            config.check_secrets()?;
            portcullis::gateway::compile_policies(&config)?;
            println!(
                "configuration is valid: issuer {}, database {}",
                config.issuer(),
                portcullis_store::redact_url(&config.database_url())
            );
            Ok(())
        }
        Command::Migrate => {
            let store = app::open_store(&config).await?;
            println!("database is up to date ({})", store.backend_name());
            Ok(())
        }
        Command::Keys(cmd) => keys(config, clock, cmd).await,
        Command::User(cmd) => users(config, clock, cmd).await,
        Command::Client(cmd) => clients(config, clock, cmd).await,
        Command::Consent(cmd) => consents(config, clock, cmd).await,
        Command::Grant(cmd) => grants(config, clock, cmd).await,
        Command::Iat(cmd) => initial_access_tokens(config, clock, cmd).await,
    }
}

async fn serve(config: Config, clock: Arc<dyn Clock>, path: Option<PathBuf>) -> anyhow::Result<()> {
    let signals = StopSignals::listen()?;
    let running = app::start(config, clock).await?;
    running.reloader.set_path(path);
    println!("Portcullis is serving {} on http://{}", running.issuer, running.addr);
    reload_on_hangup(running.reloader.clone());
    run_until_signal(running, signals).await
}

/// SIGHUP re-reads the configuration file (a file that does not validate is refused, and the
/// running configuration stays).
fn reload_on_hangup(reloader: app::Reloader) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; use `portcullis reload`");
            return;
        };
        while hangups.recv().await.is_some() {
            // The outcome is logged and audited by the reloader.
            let _ = reloader.reload(&Actor::Operator).await;
        }
    });
    #[cfg(not(unix))]
    let _ = reloader;
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
async fn run_until_signal(running: app::RunningServer, signals: StopSignals) -> anyhow::Result<()> {
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        signals.received().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await
}

/// `portcullis demo`: the quickstart of PRODUCT.md, on the embedded defaults.
async fn demo(listen: std::net::SocketAddr, data_dir: PathBuf) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let program = std::env::current_exe().context("locating the portcullis binary for the demo CRM")?;
    let mut config = Config::default();
    config.server.listen = addr;
    config.server.issuer = format!("http://{addr}");
    config.server.data_dir = data_dir;
    config.registration.enabled = true;
    config.registration.initial_access_token = portcullis::config::InitialAccessTokenMode::Optional;
    config.registration.allowed_networks = vec!["127.0.0.0/8".parse()?, "::1/128".parse()?];
    config.upstreams = vec![portcullis::demo_crm::demo_upstream(program.to_string_lossy().into_owned())];
    // Metrics beside the demo: the port after the demo's (any free one when that is taken).
    let metrics_port = addr.port().checked_add(1).filter(|_| listen.port() != 0).unwrap_or(0);
    let metrics_listen = std::net::SocketAddr::new(addr.ip(), metrics_port);
    config.metrics.listen = Some(match std::net::TcpListener::bind(metrics_listen) {
        Ok(_) => metrics_listen,
        Err(_) => std::net::SocketAddr::new(addr.ip(), 0),
    });
    config.validate()?;

    // alice: the password from PORTCULLIS_DEMO_PASSWORD, else a fresh one printed below.
    let (password, generated) = match std::env::var("PORTCULLIS_DEMO_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (random_token(12)?, true),
    };
    {
        app::ensure_data_dir(&config.server.data_dir)?;
        let control = app::control(&config, app::open_store(&config).await?, Arc::new(SystemClock));
        let hash = app::password_hasher(&config)?.hash_blocking(&password)?;
        match control.store().find_user_by_username("alice").await? {
            Some(_) => {
                control.set_password(&Actor::Operator, "alice", hash).await?;
            }
            None => {
                let alice = NewUser {
                    username: "alice".into(),
                    display_name: Some("Alice Example".into()),
                    email: Some("alice@example.com".into()),
                    password_hash: Some(hash),
                    is_admin: true,
                };
                control.add_user(&Actor::Operator, alice).await?;
            }
        }
        control.store().close().await;
    }
    let issuer = config.issuer();
    let signals = StopSignals::listen()?;
    let running = app::start_on(listener, config, Arc::new(SystemClock)).await?;
    println!();
    println!("  Portcullis demo is running.");
    println!();
    println!("  MCP server URL:  {issuer}/mcp/crm");
    println!("  Dashboard:       {issuer}/admin");
    if let Some(metrics) = running.metrics_addr {
        println!("  Metrics:         http://{metrics}/metrics");
    }
    println!("  Your account:    {issuer}/account");
    println!("  Sign in as:      alice (an administrator)");
    if generated {
        println!("  Password:        {password}");
    } else {
        println!("  Password:        (from PORTCULLIS_DEMO_PASSWORD)");
    }
    println!();
    println!("  Tools: list_contacts (crm.contacts.read), update_deal (crm.deals.write),");
    println!("         export_contacts (crm.contacts.export). Ctrl-C stops.");
    println!();
    run_until_signal(running, signals).await
}

/// SIGINT and SIGTERM, listened for from the moment this is made. Made before a command says it
/// is ready, so a signal sent on seeing that line finds its handler installed (a handler
/// installed later, by a spawned task, lost such a signal to the default action).
pub(crate) struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn listen() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the first SIGINT or SIGTERM.
    pub(crate) async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn keys(config: Config, clock: Arc<dyn Clock>, cmd: KeysCommand) -> anyhow::Result<()> {
    let control = app::control(&config, app::open_store(&config).await?, Arc::clone(&clock));
    let store = control.store();
    let now = clock.now();
    match cmd {
        KeysCommand::Rotate => {
            let ring = KeyRing::new(Arc::new(app::load_master_key(&config.server.data_dir)?));
            let publish_until = now + config.longest_token_lifetime();
            let kid = ring.rotate(&control, &Actor::Operator, now, publish_until).await?;
            println!("new signing key {kid}; previous keys stay published for {}s", publish_until - now);
        }
        KeysCommand::List => {
            for k in store.published_signing_keys(now).await? {
                let state = match (k.retired_at, k.publish_until) {
                    (None, _) => "signing".to_owned(),
                    (Some(_), Some(until)) => format!("retired, published for {}s more", until - now),
                    (Some(_), None) => "retired".to_owned(),
                };
                println!("{}  {}  created {}  {state}", k.kid, k.alg, k.created_at);
            }
        }
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.chars().count() < 8 {
            bail!("the password must be at least 8 characters");
        }
        Ok((password, false))
    } else {
        Ok((random_token(15)?, true))
    }
}

async fn users(config: Config, clock: Arc<dyn Clock>, cmd: UserCommand) -> anyhow::Result<()> {
    let control = app::control(&config, app::open_store(&config).await?, clock);
    let hasher = app::password_hasher(&config)?;
    let operator = Actor::Operator;
    match cmd {
        UserCommand::Add { username, display_name, email, admin, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            let new = NewUser {
                username,
                display_name,
                email,
                password_hash: Some(hasher.hash_blocking(&password)?),
                is_admin: admin,
            };
            let user = control.add_user(&operator, new).await?;
            println!("created user {} ({})", user.username, user.id);
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            for u in control.store().list_users().await? {
                let flags = [u.is_admin.then_some("admin"), u.is_disabled().then_some("disabled")];
                let flags: Vec<&str> = flags.into_iter().flatten().collect();
                println!("{}  {}  {}", u.username, u.id, flags.join(","));
            }
        }
        UserCommand::Disable { username } => {
            control.disable_user(&operator, &username).await?;
            println!("disabled {username}; their sessions ended and their tokens no longer work");
        }
        UserCommand::Enable { username } => {
            control.enable_user(&operator, &username).await?;
            println!("enabled {username}");
        }
        UserCommand::Remove { username } => {
            control.delete_user(&operator, &username).await?;
            println!("removed {username} with their sessions, consents and grants");
        }
        UserCommand::Passwd { username, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            control.set_password(&operator, &username, hasher.hash_blocking(&password)?).await?;
            println!("password changed for {username}; their sessions ended");
            if generated {
                println!("password: {password}");
            }
        }
    }
    Ok(())
}

fn print_client(c: &ClientRecord) {
    println!("client_id:        {}", c.client_id);
    println!("name:             {}", c.client_name);
    println!("type:             {}", c.client_type);
    println!("status:           {}", c.status);
    println!("registered by:    {}", c.origin);
    println!("verified:         {}", if c.verified { "yes" } else { "no" });
    println!("application type: {}", c.application_type);
    println!("redirect URIs:    {}", c.redirect_uris.join(" "));
    println!("grant types:      {}", c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(" "));
    println!(
        "scopes:           {}",
        if c.allowed_scopes.is_empty() {
            "(every scope of its resources)".to_owned()
        } else {
            c.allowed_scopes.to_string()
        }
    );
    println!(
        "resources:        {}",
        if c.allowed_resources.is_empty() { "(all)".to_owned() } else { c.allowed_resources.join(" ") }
    );
    println!("last used:        {}", c.last_used_at.map_or("never".to_owned(), |t| t.to_string()));
}

async fn clients(config: Config, clock: Arc<dyn Clock>, cmd: ClientCommand) -> anyhow::Result<()> {
    let control = app::control(&config, app::open_store(&config).await?, clock);
    let store = control.store();
    let operator = Actor::Operator;
    match cmd {
        ClientCommand::Add { name, redirect_uris, confidential, scopes, resources, grant_types, introspect_any } => {
            for uri in &redirect_uris {
                portcullis_oauth::validate_redirect_uri(uri, true)?;
            }
            let secret = if confidential { Some(random_token(32)?) } else { None };
            let spec = app::operator_client(app::OperatorClient {
                client_name: name,
                secret_digest: secret.as_deref().map(|s| digest(s).to_vec()),
                redirect_uris,
                grant_types: parse_grant_types(&grant_types)?,
                scopes: ScopeSet::parse(&scopes.join(" ")).context("--scope")?,
                resources,
                origin: RegistrationOrigin::Admin,
                verified: true,
                can_introspect: introspect_any,
            });
            let client = control.register_client(&operator, spec).await?;
            print_client(&client);
            if let Some(secret) = secret {
                println!("client_secret:    {secret}");
                println!("(the secret is shown only now; Portcullis keeps only its digest)");
            }
        }
        ClientCommand::List => {
            for c in store.list_clients().await? {
                println!("{}  {}  {}  {}  {}", c.client_id, c.client_type, c.status, c.origin, c.client_name);
            }
        }
        ClientCommand::Show { client_id } => {
            let client = store.find_client(&client_id).await?.with_context(|| format!("no client {client_id}"))?;
            print_client(&client);
        }
        ClientCommand::Remove { client_id } => {
            control.delete_client(&operator, &client_id).await?;
            println!("removed {client_id} and everything it held");
        }
        ClientCommand::Suspend { client_id } => {
            control.suspend_client(&operator, &client_id).await?;
            println!("suspended {client_id}; its grants and tokens are revoked");
        }
        ClientCommand::Activate { client_id } => {
            control.resume_client(&operator, &client_id).await?;
            println!("activated {client_id}");
        }
        ClientCommand::Pending => {
            for c in store.list_clients().await?.into_iter().filter(|c| c.status == ClientStatus::Pending) {
                println!(
                    "{}  {}  {}  from {}  redirect {}",
                    c.client_id,
                    c.client_type,
                    c.client_name,
                    c.registered_from.as_deref().unwrap_or("?"),
                    c.redirect_uris.join(" ")
                );
            }
        }
        ClientCommand::Approve { client_id } => {
            control.approve_client(&operator, &client_id).await?;
            println!("approved {client_id}");
        }
        ClientCommand::Reject { client_id } => {
            control.reject_client(&operator, &client_id).await?;
            println!("rejected and removed {client_id}");
        }
    }
    Ok(())
}

async fn consents(config: Config, clock: Arc<dyn Clock>, cmd: ConsentCommand) -> anyhow::Result<()> {
    let control = app::control(&config, app::open_store(&config).await?, clock);
    let user_of = |name: String| {
        let store = control.store().clone();
        async move { store.find_user_by_username(&name).await?.with_context(|| format!("no user {name}")) }
    };
    match cmd {
        ConsentCommand::List { username } => {
            let user = user_of(username).await?;
            for c in control.store().list_consents(&user.id).await? {
                println!("{}  {}  {}", c.client_id, c.resource, c.scope);
            }
        }
        ConsentCommand::Revoke { username, client, resource } => {
            let user = user_of(username).await?;
            control.revoke_consent(&Actor::Operator, &user.id, &client, &resource).await?;
            println!("consent revoked; the grants it produced are revoked too");
        }
    }
    Ok(())
}

async fn grants(config: Config, clock: Arc<dyn Clock>, cmd: GrantCommand) -> anyhow::Result<()> {
    let control = app::control(&config, app::open_store(&config).await?, clock);
    let store = control.store();
    let user_id = |name: Option<String>| {
        let store = store.clone();
        async move {
            match name {
                Some(name) => Ok::<_, anyhow::Error>(Some(
                    store.find_user_by_username(&name).await?.with_context(|| format!("no user {name}"))?.id,
                )),
                None => Ok(None),
            }
        }
    };
    match cmd {
        GrantCommand::List { client, user } => {
            let user = user_id(user).await?;
            for g in store.list_grants(client.as_deref(), user.as_deref()).await? {
                let state = match (&g.revoked_at, &g.revoked_reason) {
                    (Some(_), Some(reason)) => format!("revoked ({reason})"),
                    (Some(_), None) => "revoked".to_owned(),
                    (None, _) => "live".to_owned(),
                };
                println!(
                    "{}  {}  client={}  user={}  {}  {}  {state}",
                    g.id,
                    g.kind,
                    g.client_id,
                    g.user_id.as_deref().unwrap_or("-"),
                    g.resource,
                    g.scope
                );
            }
        }
        GrantCommand::Revoke { grant, user, client, resource } => {
            let selector = match (grant, user_id(user).await?, client, resource) {
                (Some(id), None, None, None) => GrantSelector::Grant(id),
                (None, Some(user), None, None) => GrantSelector::User(user),
                (None, None, Some(client), None) => GrantSelector::Client(client),
                (None, Some(user_id), Some(client_id), resource) => {
                    GrantSelector::UserClient { user_id, client_id, resource }
                }
                (None, None, None, Some(resource)) => GrantSelector::Resource(resource),
                _ => bail!("give --grant, --user, --client (with --user, optionally --resource) or --resource"),
            };
            let revoked =
                control.revoke_grants(&Actor::Operator, selector, RevocationReason::AdministratorRequest).await?;
            println!("revoked {revoked} grant(s) and every token they held");
        }
    }
    Ok(())
}

async fn initial_access_tokens(config: Config, clock: Arc<dyn Clock>, cmd: IatCommand) -> anyhow::Result<()> {
    let control = app::control(&config, app::open_store(&config).await?, Arc::clone(&clock));
    let now = clock.now();
    match cmd {
        IatCommand::Create { label, uses, expires_in } => {
            let token = control.create_initial_access_token(&Actor::Operator, &label, uses, expires_in).await?;
            println!("initial access token {label:?}: {uses} use(s), expires in {expires_in}s");
            println!("token: {token}");
            println!("(shown only now; send it as `Authorization: Bearer` to the registration endpoint)");
        }
        IatCommand::List => {
            for t in control.store().list_initial_access_tokens().await? {
                let state = if t.expires_at <= now {
                    "expired"
                } else if t.uses_left == 0 {
                    "used up"
                } else {
                    "usable"
                };
                println!("{}  {} use(s) left  expires {}  {state}", t.label, t.uses_left, t.expires_at);
            }
        }
    }
    Ok(())
}
