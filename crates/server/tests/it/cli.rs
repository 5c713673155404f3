//! The `portcullis` command line, run as a user would run it.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::harness::*;

struct Cli {
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    async fn new() -> AnyResult<Self> {
        let dir = tempfile::tempdir()?;
        let url = database_url(dir.path()).await?;
        let config = dir.path().join("portcullis.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "[server]\nissuer = \"http://127.0.0.1:18080\"\ndata_dir = {data:?}\n[database]\nurl = {url:?}\n\
                 [[resources]]\nuri = \"http://127.0.0.1:18080/mcp/crm\"\nscopes = [{{ name = \"crm.contacts.read\", description = \"Read contacts\" }}]\n"
            ),
        )?;
        Ok(Self { config, _dir: dir })
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> AnyResult<Outcome> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("PORTCULLIS_MASTER_KEY")
            .env("PORTCULLIS_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(input.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        Ok(Outcome {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[tokio::test]
async fn users_clients_keys_and_config_from_the_command_line() -> TestResult {
    let cli = Cli::new().await?;
    let check = cli.run(&["check-config"], None)?;
    assert!(check.ok && check.stdout.contains("configuration is valid"), "{}", check.stderr);
    assert!(cli.run(&["migrate"], None)?.ok);

    // Users.
    let added = cli.run(&["user", "add", "alice", "--password-stdin", "--admin"], Some("a long enough password\n"))?;
    assert!(added.ok, "{}", added.stderr);
    assert!(!added.stdout.contains("a long enough password"), "the password is never echoed");
    let again = cli.run(&["user", "add", "alice", "--password-stdin"], Some("another password\n"))?;
    assert!(!again.ok && again.stderr.contains("a user with this username already exists"), "{}", again.stderr);
    let short = cli.run(&["user", "add", "bob", "--password-stdin"], Some("short\n"))?;
    assert!(!short.ok && short.stderr.contains("at least 8 characters"));
    let generated = cli.run(&["user", "add", "carol"], None)?;
    assert!(generated.ok && generated.stdout.contains("password: "), "{}", generated.stdout);
    assert!(cli.run(&["user", "disable", "alice"], None)?.ok);
    let list = cli.run(&["user", "list"], None)?;
    assert!(list.stdout.lines().any(|l| l.starts_with("alice") && l.contains("admin,disabled")), "{}", list.stdout);
    assert!(cli.run(&["user", "passwd", "carol", "--password-stdin"], Some("a new long password\n"))?.ok);
    let missing = cli.run(&["user", "disable", "nobody"], None)?;
    assert!(!missing.ok && missing.stderr.contains("there is no user \"nobody\""), "{}", missing.stderr);

    // Clients: http redirect URIs only on loopback; secrets shown once.
    let insecure =
        cli.run(&["client", "add", "--name", "Evil", "--redirect-uri", "http://evil.example.test/cb"], None)?;
    assert!(
        !insecure.ok && insecure.stderr.contains("uses http on a host that is not loopback"),
        "{}",
        insecure.stderr
    );
    let public = cli.run(&["client", "add", "--name", "Agent", "--redirect-uri", "http://127.0.0.1/callback"], None)?;
    assert!(public.ok && !public.stdout.contains("client_secret"), "{}", public.stderr);
    let machine =
        cli.run(&["client", "add", "--name", "Reporter", "--confidential", "--scope", "crm.contacts.read"], None)?;
    assert!(
        machine.ok && machine.stdout.contains("client_secret:") && machine.stdout.contains("client_credentials"),
        "{}",
        machine.stdout
    );
    let client_id = machine
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_id:").map(|v| v.trim().to_owned()))
        .ok_or("no client_id printed")?;
    let show = cli.run(&["client", "show", &client_id], None)?;
    assert!(show.stdout.contains("confidential") && show.stdout.contains("registered by:    admin"), "{}", show.stdout);
    assert!(!show.stdout.contains("client_secret"), "show never prints a secret");
    assert!(cli.run(&["client", "suspend", &client_id], None)?.ok);
    assert!(cli.run(&["client", "list"], None)?.stdout.contains("suspended"));
    assert!(cli.run(&["client", "remove", &client_id], None)?.ok);
    assert!(!cli.run(&["client", "show", &client_id], None)?.ok);

    // Initial access tokens: shown once, listed without the secret.
    let iat = cli.run(&["iat", "create", "--label", "onboarding", "--uses", "3", "--expires-in", "3600"], None)?;
    assert!(iat.ok && iat.stdout.contains("token: "), "{}", iat.stderr);
    let secret = iat.stdout.lines().find_map(|l| l.strip_prefix("token: ")).ok_or("token")?.to_owned();
    let listed = cli.run(&["iat", "list"], None)?;
    assert!(
        listed.stdout.contains("onboarding  3 use(s) left") && !listed.stdout.contains(&secret),
        "{}",
        listed.stdout
    );
    assert!(!cli.run(&["iat", "create", "--label", "x", "--uses", "0"], None)?.ok);

    // The approval queue.
    let store = portcullis_store::Store::connect(&database_url_of(&cli.config)?, 1).await?;
    let mut pending = store.find_client(&client_id_of(&public)?).await?.ok_or("client")?;
    pending.client_id = "pending-one".into();
    pending.status = portcullis_store::ClientStatus::Pending;
    pending.origin = portcullis_store::RegistrationOrigin::Dcr;
    insert_client(&store, &pending).await?;
    let mut second = pending.clone();
    second.client_id = "pending-two".into();
    insert_client(&store, &second).await?;
    let queue = cli.run(&["client", "pending"], None)?;
    assert!(queue.stdout.contains("pending-one") && queue.stdout.contains("pending-two"), "{}", queue.stdout);
    assert!(cli.run(&["client", "approve", "pending-one"], None)?.ok);
    assert!(cli.run(&["client", "reject", "pending-two"], None)?.ok);
    let again = cli.run(&["client", "approve", "pending-one"], None)?;
    assert!(!again.ok && again.stderr.contains("not pending approval"), "{}", again.stderr);
    assert_eq!(store.find_client("pending-one").await?.map(|c| c.status), Some(portcullis_store::ClientStatus::Active));
    assert!(store.find_client("pending-two").await?.is_none());

    // The kill switch works on any client id, even one that looks like an option (ids made
    // before ids began with a letter or digit, or chosen in the configuration).
    let mut dashed = pending.clone();
    dashed.client_id = "-Xk3".into();
    dashed.status = portcullis_store::ClientStatus::Active;
    insert_client(&store, &dashed).await?;
    let suspended = cli.run(&["client", "suspend", "-Xk3"], None)?;
    assert!(suspended.ok, "{}", suspended.stderr);
    assert_eq!(store.find_client("-Xk3").await?.map(|c| c.status), Some(portcullis_store::ClientStatus::Suspended));
    assert!(cli.run(&["client", "show", "-Xk3"], None)?.stdout.contains("suspended"));
    store.close().await;

    // Keys: the first start (any command that needs keys) creates one; rotation adds another.
    let rotated = cli.run(&["keys", "rotate"], None)?;
    assert!(rotated.ok, "{}", rotated.stderr);
    let rotated = cli.run(&["keys", "rotate"], None)?;
    assert!(rotated.ok);
    let keys = cli.run(&["keys", "list"], None)?;
    assert_eq!(keys.stdout.lines().filter(|l| l.contains("signing")).count(), 1, "{}", keys.stdout);
    assert_eq!(keys.stdout.lines().filter(|l| l.contains("retired")).count(), 1, "{}", keys.stdout);

    // The master key file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let data = cli.config.parent().ok_or("dir")?.join("data");
        let mode = std::fs::metadata(data.join("master.key"))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&data)?.permissions().mode() & 0o777, 0o700);
    }
    Ok(())
}

/// A client made as a self-registering one would be (the CLI cannot make pending clients).
async fn insert_client(store: &portcullis_store::Store, client: &portcullis_store::ClientRecord) -> TestResult {
    let audit = portcullis_store::NewAuditEvent::action(
        portcullis_store::AuditKind::ClientRegistered,
        &Actor::Registrant { source: None },
        client.created_at,
    );
    store.commit(&portcullis_store::Mutation::InsertClient(Box::new(client.clone())), &audit).await?;
    Ok(())
}

fn client_id_of(outcome: &Outcome) -> AnyResult<String> {
    Ok(outcome
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_id:").map(|v| v.trim().to_owned()))
        .ok_or("no client_id printed")?)
}

fn database_url_of(config: &std::path::Path) -> AnyResult<String> {
    let text = std::fs::read_to_string(config)?;
    let value: toml::Value = toml::from_str(&text)?;
    Ok(value.get("database").and_then(|d| d.get("url")).and_then(|u| u.as_str()).ok_or("no url")?.to_owned())
}

#[tokio::test]
async fn check_config_explains_what_is_wrong() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cases = [
        ("[server]\nissuer = \"http://auth.example.test\"\n", "non-loopback host"),
        ("[server]\nissuer = \"https://auth.example.test/?x=1\"\n", "must not have a query"),
        ("[server]\nissuerr = \"https://auth.example.test\"\n", "unknown field `issuerr`"),
        ("[tokens]\nauthorization_code_ttl_secs = 3600\n", "at most 600"),
        ("[database]\nurl = \"mysql://x\"\n", "sqlite:// or postgres://"),
        (
            "[[clients]]\nclient_id = \"c\"\nclient_name = \"C\"\nredirect_uris = [\"http://evil.example.test/cb\"]\n",
            "not loopback",
        ),
    ];
    for (text, expect) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text)?;
        let output =
            Command::new(env!("CARGO_BIN_EXE_portcullis")).arg("--config").arg(&path).arg("check-config").output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        assert!(stderr.contains(expect), "{text}: {stderr}");
    }
    Ok(())
}

/// Sends SIGTERM (directly: spawning `kill` would give the child a millisecond's grace) and
/// waits (bounded) for the exit status.
async fn stop_with_sigterm(child: &mut tokio::process::Child) -> AnyResult<std::process::ExitStatus> {
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).and_then(rustix::process::Pid::from_raw);
    rustix::process::kill_process(pid.ok_or("no pid")?, rustix::process::Signal::TERM)?;
    Ok(tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .map_err(|_| "no exit after SIGTERM")??)
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Starts `portcullis` with `args` (listening on a free loopback port), its output read line by
/// line.
fn spawn_portcullis(args: &[&std::ffi::OsStr]) -> AnyResult<(tokio::process::Child, Lines)> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("PORTCULLIS_LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS_DEMO_PASSWORD", "a demo password")
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    Ok((child, tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout))))
}

/// The first line that contains `wanted` (each line awaited for 30 s at most).
async fn line_containing(lines: &mut Lines, wanted: &str) -> AnyResult<String> {
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| format!("no line with {wanted:?} in 30 s"))??
            .ok_or_else(|| format!("exited before printing {wanted:?}"))?;
        if line.contains(wanted) {
            return Ok(line);
        }
    }
}

#[tokio::test]
async fn serve_answers_then_stops_cleanly_on_sigterm() -> TestResult {
    let cli = Cli::new().await?;
    let (mut child, mut lines) = spawn_portcullis(&["--config".as_ref(), cli.config.as_os_str(), "serve".as_ref()])?;
    let line = line_containing(&mut lines, "is serving").await?;
    let addr = line.rsplit("http://").next().ok_or("no address printed")?.trim().to_owned();
    let metadata: serde_json::Value =
        reqwest::get(format!("http://{addr}/.well-known/oauth-authorization-server")).await?.json().await?;
    assert_eq!(metadata["issuer"], "http://127.0.0.1:18080");

    let status = stop_with_sigterm(&mut child).await?;
    assert!(status.success(), "serve should exit 0 on SIGTERM, got {status}");
    Ok(())
}

#[tokio::test]
async fn a_sigterm_sent_as_soon_as_a_server_is_ready_stops_it_cleanly() -> TestResult {
    let cli = Cli::new().await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("demo");
    let config = cli.config.as_os_str();
    let commands: [(&[&std::ffi::OsStr], &str); 3] = [
        (&["--config".as_ref(), config, "serve".as_ref()], "is serving"),
        (&["demo-crm".as_ref(), "--listen".as_ref(), "127.0.0.1:0".as_ref()], "demo CRM on"),
        (
            &["demo".as_ref(), "--listen".as_ref(), "127.0.0.1:0".as_ref(), "--data-dir".as_ref(), data.as_os_str()],
            "Ctrl-C stops",
        ),
    ];
    // A few rounds each (bounded): the race this guards against depends on timing.
    for (args, ready) in commands {
        for round in 0..3 {
            let (mut child, mut lines) = spawn_portcullis(args)?;
            line_containing(&mut lines, ready).await.map_err(|e| format!("{args:?}: {e}"))?;
            let status = stop_with_sigterm(&mut child).await?;
            assert!(status.success(), "{args:?} round {round}: exit on SIGTERM was {status}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn audit_tail_shows_the_newest_decisions() -> TestResult {
    let cli = Cli::new().await?;
    assert!(cli.run(&["migrate"], None)?.ok);
    let store = portcullis_store::Store::connect(&database_url_of(&cli.config)?, 1).await?;
    let event = |n: i64, tool: &str, decision: &str| portcullis_store::NewAuditEvent {
        occurred_at: 1_900_000_000 + n,
        kind: portcullis_store::AuditKind::McpMessage,
        actor: None,
        source_address: None,
        route: Some("crm".into()),
        method: Some("tools/call".into()),
        target: Some(tool.into()),
        outcome: portcullis_store::AuditOutcome::parse(decision).unwrap_or(portcullis_store::AuditOutcome::Denied),
        reason: (decision == "denied").then(|| "insufficient_scope: needs crm.deals.write".into()),
        user_id: Some("u1".into()),
        username: Some("alice".into()),
        client_id: Some("agent".into()),
        issuer: Some("http://127.0.0.1:18080".into()),
        subject: None,
        status: Some(if decision == "denied" { 403 } else { 200 }),
        latency_ms: Some(3),
    };
    store
        .append_audit_events(&[
            event(1, "list_contacts", "allowed"),
            event(2, "update_deal", "denied"),
            event(3, "export_contacts", "allowed"),
        ])
        .await?;
    store.close().await;
    let tail = cli.run(&["audit", "tail", "-n", "2"], None)?;
    assert!(tail.ok, "{}", tail.stderr);
    let lines: Vec<&str> = tail.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", tail.stdout);
    assert!(
        lines[0].contains("denied") && lines[0].contains("403") && lines[0].contains("update_deal"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("user=alice client=agent") && lines[0].contains("needs crm.deals.write"));
    assert!(lines[1].contains("export_contacts"), "oldest first: {}", tail.stdout);
    let json = cli.run(&["audit", "tail", "-n", "1", "--json"], None)?;
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim())?;
    assert_eq!((value["target"].as_str(), value["status"].as_i64()), (Some("export_contacts"), Some(200)));
    Ok(())
}

#[tokio::test]
async fn demo_serves_the_crm_route_and_stops_cleanly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("demo"))
        .env("PORTCULLIS_DEMO_PASSWORD", "a demo password")
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut printed = String::new();
    let mut url = None;
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "demo printed nothing for 30 s")??
            .ok_or("demo exited early")?;
        printed.push_str(&line);
        printed.push('\n');
        if let Some(u) = line.trim().strip_prefix("MCP server URL:") {
            url = Some(u.trim().to_owned());
        }
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    let url = url.ok_or("no MCP server URL printed")?;
    let base = url.strip_suffix("/mcp/crm").ok_or("route")?.to_owned();
    let http = reqwest::Client::new();
    let prm: serde_json::Value =
        http.get(format!("{base}/.well-known/oauth-protected-resource/mcp/crm")).send().await?.json().await?;
    assert_eq!(prm["resource"], url);
    assert_eq!(prm["authorization_servers"][0], base);
    let challenge = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await?;
    assert_eq!(challenge.status(), 401);
    // Registration is open to loopback clients, without an initial access token.
    let registered = http
        .post(format!("{base}/register"))
        .json(&serde_json::json!({
            "client_name": "Some MCP client", "redirect_uris": ["http://127.0.0.1:33418/callback"],
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "scope": "crm.contacts.read"
        }))
        .send()
        .await?;
    assert_eq!(registered.status(), 201, "{}", registered.text().await?);
    let dashboard = format!("Dashboard:       {base}/admin");
    for line in
        ["Sign in as:      alice (an administrator)", "Password:        (from PORTCULLIS_DEMO_PASSWORD)", &dashboard]
    {
        assert!(printed.contains(line), "{printed}");
    }
    // The dashboard is there, behind sign-in.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let dashboard = no_redirects.get(format!("{base}/admin")).send().await?;
    assert_eq!(dashboard.status(), 303);
    assert_eq!(dashboard.headers()["location"], "/login");
    // Metrics beside it, in Prometheus text format: the refused ping and the registration.
    let metrics = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("Metrics:"))
        .map(str::trim)
        .ok_or(format!("no metrics URL printed: {printed}"))?;
    assert!(metrics.starts_with("http://127.0.0.1:") && metrics.ends_with("/metrics"), "{metrics}");
    let scraped = http.get(metrics).send().await?;
    assert_eq!(scraped.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = scraped.text().await?;
    for series in [
        r#"portcullis_gateway_refusals_total{reason="token_missing"} 1"#,
        r#"portcullis_http_requests_total{endpoint="/register",method="POST",status="201"} 1"#,
        "\nportcullis_audit_records_dropped_total 0\n",
    ] {
        assert!(text.contains(series), "{series} not in {text}");
    }
    let status = stop_with_sigterm(&mut child).await?;
    assert!(status.success(), "demo should exit 0 on SIGTERM, got {status}");
    Ok(())
}

/// Every identity action an operator takes is in the audit trail, in order, with the operator
/// as its actor, and `audit tail` filters by kind, user and client.
#[tokio::test]
async fn every_operator_action_is_audited() -> TestResult {
    let cli = Cli::new().await?;
    let ok = |args: &[&str], stdin: Option<&str>| -> AnyResult<String> {
        let out = cli.run(args, stdin)?;
        if !out.ok {
            return Err(format!("{}: {}", args.join(" "), out.stderr).into());
        }
        Ok(out.stdout)
    };
    ok(&["user", "add", "bob", "--password-stdin"], Some("bob's long password\n"))?;
    ok(&["user", "disable", "bob"], None)?;
    ok(&["user", "enable", "bob"], None)?;
    ok(&["user", "passwd", "bob", "--password-stdin"], Some("bob's new long password\n"))?;
    let added = ok(&["client", "add", "--name", "Agent", "--redirect-uri", "http://127.0.0.1/cb"], None)?;
    let client_id = added
        .lines()
        .find_map(|l| l.strip_prefix("client_id:").map(|v| v.trim().to_owned()))
        .ok_or("no client_id printed")?;
    ok(&["client", "suspend", &client_id], None)?;
    ok(&["client", "activate", &client_id], None)?;
    ok(&["client", "remove", &client_id], None)?;
    ok(&["keys", "rotate"], None)?;
    ok(&["iat", "create", "--label", "onboarding"], None)?;
    assert!(ok(&["grant", "revoke", "--user", "bob"], None)?.contains("revoked 0 grant(s)"));
    ok(&["grant", "revoke", "--resource", "http://127.0.0.1:18080/mcp/crm"], None)?;
    let neither = cli.run(&["grant", "revoke"], None)?;
    assert!(!neither.ok && neither.stderr.contains("give --grant, --user"), "{}", neither.stderr);
    ok(&["user", "remove", "bob"], None)?;

    let rows = |args: &[&str]| -> AnyResult<Vec<serde_json::Value>> {
        let mut all = vec!["audit", "tail", "--json", "-n", "100"];
        all.extend_from_slice(args);
        Ok(ok(&all, None)?.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    };
    let trail = rows(&[])?;
    let kinds: Vec<&str> = trail.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user.added",
            "user.disabled",
            "user.enabled",
            "user.updated",
            "client.registered",
            "client.suspended",
            "client.resumed",
            "client.deleted",
            "key.rotated",
            "iat.created",
            "grants.revoked",
            "grants.revoked",
            "user.deleted"
        ]
    );
    assert!(trail.iter().all(|r| r["actor"] == "operator" && r["decision"] == "succeeded"), "{trail:?}");
    assert!(trail.iter().all(|r| r["route"].is_null() && r["status"].is_null()), "no gateway fields on actions");
    let bob: Vec<_> = rows(&["--user", "bob"])?;
    assert_eq!(bob.len(), 6, "{bob:?}");
    assert_eq!(rows(&["--client", &client_id])?.len(), 4);
    assert_eq!(rows(&["--kind", "client"])?.len(), 4);
    assert_eq!(rows(&["--kind", "user.disabled", "--kind", "key"])?.len(), 2);
    let text = ok(&["audit", "tail", "--kind", "client.suspended"], None)?;
    assert!(text.contains("client.suspended  by operator") && text.contains(&client_id), "{text}");
    let unknown = cli.run(&["audit", "tail", "--kind", "nonsense"], None)?;
    assert!(!unknown.ok && unknown.stderr.contains("no audit record kind \"nonsense\""), "{}", unknown.stderr);
    Ok(())
}

/// `audit verify` walks the hash chain: intact, it says how many records it checked (exit 0);
/// after a record is changed in the database, it names that record (exit 1).
#[tokio::test]
async fn audit_verify_names_the_record_that_was_changed() -> TestResult {
    let cli = Cli::new().await?;
    for name in ["carol", "dave", "erin"] {
        let out = cli.run(&["user", "add", name, "--password-stdin"], Some("a long enough password\n"))?;
        assert!(out.ok, "{}", out.stderr);
    }
    let intact = cli.run(&["audit", "verify"], None)?;
    assert!(intact.ok, "{}", intact.stderr);
    assert!(intact.stdout.starts_with("audit trail intact: "), "{}", intact.stdout);

    // Someone with database access makes Dave's addition look like Erin's.
    let store = portcullis_store::Store::connect(&database_url_of(&cli.config)?, 1).await?;
    let filter = portcullis_store::AuditFilter { user: Some("dave".into()), ..Default::default() };
    let dave = store.audit_events(None, 10, &filter).await?;
    let record = dave.first().ok_or("no record of dave")?;
    store.execute_admin_sql(&format!("UPDATE audit_events SET username = 'erin' WHERE id = {}", record.id)).await?;
    store.close().await;
    let caught = cli.run(&["audit", "verify"], None)?;
    assert!(!caught.ok, "{}", caught.stdout);
    assert!(
        caught.stderr.contains("the audit trail was tampered with")
            && caught.stderr.contains(&format!("record {} ", record.id)),
        "{}",
        caught.stderr
    );
    Ok(())
}

/// Export, verify the export on its own (with the keys it carries, and pinned), prune, and a
/// rewritten copy or a trail cut back with its head are caught.
#[tokio::test]
async fn audit_export_verifies_on_its_own_and_prune_leaves_a_trail_that_verifies() -> TestResult {
    let cli = Cli::new().await?;
    for name in ["carol", "dave", "erin"] {
        let out = cli.run(&["user", "add", name, "--password-stdin"], Some("a long enough password\n"))?;
        assert!(out.ok, "{}", out.stderr);
    }
    let dir = tempfile::tempdir()?;
    let export = dir.path().join("trail.jsonl");
    let export_arg = export.to_str().ok_or("path")?;
    let out = cli.run(&["audit", "export", "--output", export_arg], None)?;
    assert!(out.ok, "{}", out.stderr);
    // The export signs the head first: every record is vouched for.
    assert!(out.stderr.contains("exported 3 records and 1 signed checkpoints up to place 3"), "{}", out.stderr);
    let text = std::fs::read_to_string(&export)?;
    let lines: Vec<serde_json::Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1 + 3 + 1 + 1, "{text}");
    assert_eq!(lines[0]["format"], "portcullis-audit-export/1");
    assert_eq!(lines[1]["type"], "record");
    assert_eq!(lines[1]["kind"], "user.added");
    assert_eq!(lines[1]["hash"].as_str().map(str::len), Some(64));
    assert_eq!(lines[4]["type"], "checkpoint");

    let verified = cli.run(&["audit", "verify", "--file", export_arg], None)?;
    assert!(verified.ok, "{}", verified.stderr);
    assert!(verified.stdout.starts_with("audit trail intact: 3 records verified in "), "{}", verified.stdout);
    assert!(verified.stdout.contains(", 1 signed checkpoints"), "{}", verified.stdout);
    // Pinned to the installation's own keys.
    let keys = cli.run(&["audit", "keys"], None)?;
    assert!(keys.ok, "{}", keys.stderr);
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, &keys.stdout)?;
    let keys_arg = keys_file.to_str().ok_or("path")?;
    let pinned = cli.run(&["audit", "verify", "--file", export_arg, "--keys", keys_arg], None)?;
    assert!(pinned.ok, "{}", pinned.stderr);

    // A copy with a username changed is caught, by line's record id.
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, text.replacen("\"username\":\"dave\"", "\"username\":\"mallory\"", 1))?;
    let caught = cli.run(&["audit", "verify", "--file", edited.to_str().ok_or("path")?], None)?;
    assert!(!caught.ok);
    assert!(caught.stderr.contains("the audit trail was tampered with: record 2 (place 2)"), "{}", caught.stderr);
    // A file that is not an export.
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "hello\n")?;
    let refused = cli.run(&["audit", "verify", "--file", garbage.to_str().ok_or("path")?], None)?;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("line 1 of the export is not an export line"), "{}", refused.stderr);

    // Someone cuts the trail back to its first record and moves the head with it: the signed
    // checkpoint at place 3 shows it.
    let store = portcullis_store::Store::connect(&database_url_of(&cli.config)?, 1).await?;
    store.execute_admin_sql("DELETE FROM audit_events WHERE seq > 1").await?;
    store
        .execute_admin_sql("UPDATE audit_chain_head SET seq = 1, hash = (SELECT hash FROM audit_events WHERE seq = 1)")
        .await?;
    let cut = cli.run(&["audit", "verify"], None)?;
    assert!(!cut.ok);
    assert!(
        cut.stderr.contains("a signed checkpoint vouches for place 3 but the chain ends at place 1"),
        "{}",
        cut.stderr
    );
    store.close().await;
    // A prune refuses a trail that was tampered with: it would destroy the evidence.
    let refused = cli.run(&["audit", "prune", "--before", "2100-01-01"], None)?;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("nothing was pruned"), "{}", refused.stderr);

    // On an intact trail, prune everything before tomorrow.
    let cli = Cli::new().await?;
    let added = cli.run(&["user", "add", "frank", "--password-stdin"], Some("a long enough password\n"))?;
    assert!(added.ok, "{}", added.stderr);
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date().to_string();
    let pruned = cli.run(&["audit", "prune", "--before", &tomorrow], None)?;
    assert!(pruned.ok, "{}", pruned.stderr);
    assert!(pruned.stdout.starts_with("removed 1 audit records before "), "{}", pruned.stdout);
    let after = cli.run(&["audit", "verify"], None)?;
    assert!(after.ok, "{}", after.stderr);
    // The record of the prune itself remains, after the signed base.
    assert!(after.stdout.starts_with("audit trail intact: 1 records after place 1 verified"), "{}", after.stdout);
    let trail = cli.run(&["audit", "tail", "--json", "--kind", "audit"], None)?;
    assert!(trail.stdout.contains("\"kind\":\"audit.pruned\""), "{}", trail.stdout);
    let bad = cli.run(&["audit", "prune", "--before", "last tuesday"], None)?;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("is not a time (RFC 3339"), "{}", bad.stderr);
    Ok(())
}
