//! `portcullis audit …`: read the trail, verify it (in the database, or an export on its own),
//! export it, prune it, show the audit keys.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use portcullis::app;
use portcullis::config::Config;
use portcullis_control::{Actor, AuditSigner, trusted_audit_keys};
use portcullis_crypto::PublicKey;
use portcullis_store::{AuditFilter, AuditKind, ChainFault, ChainReport, CheckpointKeys, VerifyFrom, verify_export};
use portcullis_types::{Clock, SystemClock};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Shows the newest records, gateway decisions and identity actions alike; with --follow,
    /// keeps printing new ones.
    Tail {
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: i64,
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only records of this kind (repeat): a kind such as client.suspended, or a family
        /// such as client, user, signin, consent, grants, key, mcp.
        #[arg(long = "kind", value_parser = parse_audit_kinds)]
        kinds: Vec<Vec<AuditKind>>,
        /// Only records about this user (username or id).
        #[arg(long, allow_hyphen_values = true)]
        user: Option<String>,
        /// Only records about this client.
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
    },
    /// Walks the trail's hash chain and its signed checkpoints and reports the first record
    /// that was altered, deleted, inserted or moved, a cut tail, a forged checkpoint or a
    /// rewritten stretch (exit status 1); otherwise how many records it checked. Reads a page
    /// at a time, so any length verifies in bounded memory.
    Verify {
        /// Start at the last signed checkpoint before this time (RFC 3339, or a date
        /// YYYY-MM-DD, UTC) instead of the first record.
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Verify an export (`portcullis audit export`) instead of the database, with nothing
        /// but the file.
        #[arg(long, conflicts_with = "from")]
        file: Option<PathBuf>,
        /// With --file: trust only these public audit keys (a JWK Set, as `audit keys` prints),
        /// not the ones the export carries.
        #[arg(long, requires = "file")]
        keys: Option<PathBuf>,
    },
    /// Writes the trail as JSON lines with every record's place and hash, the signed
    /// checkpoints and the public audit keys: it verifies on its own (`audit verify --file`).
    /// The head is signed first, so the whole export is vouched for.
    Export {
        /// Start at the last signed checkpoint before this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Where to write (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Removes the records before a time, after verifying the whole trail, and leaves a signed
    /// checkpoint where the trail now starts, so the rest still verifies. Export first to keep
    /// them.
    Prune {
        /// RFC 3339, or a date YYYY-MM-DD (midnight UTC).
        #[arg(long, value_parser = parse_time)]
        before: i64,
    },
    /// Prints the public audit keys (a JWK Set): pin them to verify an export with --keys.
    Keys,
}

/// A kind (`client.suspended`) or a family of kinds (`client`).
fn parse_audit_kinds(text: &str) -> Result<Vec<AuditKind>, String> {
    if let Some(kind) = AuditKind::parse(text) {
        return Ok(vec![kind]);
    }
    let family: Vec<AuditKind> =
        AuditKind::ALL.iter().copied().filter(|k| k.as_str().split('.').next() == Some(text)).collect();
    if family.is_empty() {
        let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(format!("no audit record kind {text:?}; use one of {}", known.join(", ")));
    }
    Ok(family)
}

/// RFC 3339, or a date (midnight UTC), as Unix seconds.
fn parse_time(text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &date_format)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| format!("{text:?} is not a time (RFC 3339, e.g. 2026-12-01T00:00:00Z) or a date (2026-12-01)"))
}

/// Unix seconds as RFC 3339, or as they are when out of range.
pub fn rfc3339(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| at.to_string())
}

pub async fn run(config: Config, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Tail { lines, follow, json, kinds, user, client } => {
            let filter = AuditFilter {
                kinds: kinds.into_iter().flatten().collect(),
                user,
                client_id: client,
                ..Default::default()
            };
            tail(&config, lines, follow, json, &filter).await
        }
        AuditCommand::Verify { file: Some(file), keys, .. } => verify_file(&file, keys.as_deref()),
        AuditCommand::Verify { from, .. } => {
            let store = app::open_store(&config).await?;
            let master = app::load_master_key(&config.server.data_dir)?;
            let trusted = trusted_audit_keys(&store, &master).await?;
            warn_untrusted(&trusted.untrusted);
            let started = std::time::Instant::now();
            let from = from.map_or(VerifyFrom::Start, VerifyFrom::Time);
            let report = store.verify_audit_chain(&trusted.keys, from).await?;
            store.close().await;
            conclude(&report, started)
        }
        AuditCommand::Export { from, output } => {
            let store = app::open_store(&config).await?;
            let master = app::load_master_key(&config.server.data_dir)?;
            let now = SystemClock.now();
            let signer = AuditSigner::load_or_create(&store, &master, now).await?;
            signer.checkpoint(&store, now).await?;
            let trusted = trusted_audit_keys(&store, &master).await?;
            warn_untrusted(&trusted.untrusted);
            let from = from.map_or(VerifyFrom::Start, VerifyFrom::Time);
            let summary = match &output {
                Some(path) => {
                    let file =
                        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
                    let mut out = std::io::BufWriter::new(file);
                    store.export_audit(&mut out, from, &trusted.keys, now).await?
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    store.export_audit(&mut out, from, &trusted.keys, now).await?
                }
            };
            store.close().await;
            eprintln!(
                "exported {} records and {} signed checkpoints up to place {}",
                summary.records, summary.checkpoints, summary.head_seq
            );
            Ok(())
        }
        AuditCommand::Prune { before } => {
            let store = app::open_store(&config).await?;
            let master = app::load_master_key(&config.server.data_dir)?;
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let control = app::control(&config, store.clone(), Arc::clone(&clock));
            let signer = AuditSigner::load_or_create(&store, &master, clock.now()).await?;
            let trusted = trusted_audit_keys(&store, &master).await?;
            warn_untrusted(&trusted.untrusted);
            let report = control.prune_audit(&Actor::Operator, &signer, &trusted.keys, before).await?;
            store.close().await;
            if report.removed == 0 {
                println!(
                    "no audit records before {} (the trail starts after place {})",
                    rfc3339(before),
                    report.base_seq
                );
            } else {
                println!(
                    "removed {} audit records before {}; the trail now starts after place {}, at a signed checkpoint",
                    report.removed,
                    rfc3339(before),
                    report.base_seq
                );
            }
            Ok(())
        }
        AuditCommand::Keys => {
            let store = app::open_store(&config).await?;
            let master = app::load_master_key(&config.server.data_dir)?;
            let trusted = trusted_audit_keys(&store, &master).await?;
            warn_untrusted(&trusted.untrusted);
            store.close().await;
            let keys: Vec<_> = trusted.keys.iter().map(PublicKey::jwk).collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "keys": keys }))?);
            Ok(())
        }
    }
}

fn warn_untrusted(untrusted: &[String]) {
    for kid in untrusted {
        eprintln!(
            "warning: audit key {kid} in the database does not open with this master key; what it signed is not \
             trusted"
        );
    }
}

fn verify_file(path: &std::path::Path, keys: Option<&std::path::Path>) -> anyhow::Result<()> {
    let pinned = keys
        .map(|path| -> anyhow::Result<CheckpointKeys> {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let set: portcullis_types::wire::JwkSet =
                serde_json::from_str(&text).with_context(|| format!("{} is not a JWK Set", path.display()))?;
            let keys: Result<Vec<_>, _> =
                set.keys.iter().map(|k| PublicKey::from_p256_jwk(&k.x, &k.y, Some(&k.kid))).collect();
            Ok(CheckpointKeys::new(keys?))
        })
        .transpose()?;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let started = std::time::Instant::now();
    let (header, report) = verify_export(std::io::BufReader::new(file), pinned.as_ref())?;
    if pinned.is_none() {
        let kids: Vec<&str> = header.keys.iter().map(|k| k.kid.as_str()).collect();
        eprintln!(
            "checked with the keys the export carries ({}); compare them with `portcullis audit keys`, or pin them \
             with --keys",
            kids.join(", ")
        );
    }
    conclude(&report, started)
}

/// Prints what a walk found: exit 0 when intact, 1 (an error) naming the first fault.
fn conclude(report: &ChainReport, started: std::time::Instant) -> anyhow::Result<()> {
    let Some(fault) = &report.fault else {
        let from = match report.started_after {
            0 => String::new(),
            seq => format!(" after place {seq}"),
        };
        println!(
            "audit trail intact: {} records{from} verified in {:.1} s, {} signed checkpoints",
            report.verified,
            started.elapsed().as_secs_f64(),
            report.checkpoints
        );
        match report.last_checkpoint {
            Some((seq, at)) if report.unsigned > 0 => println!(
                "the last checkpoint (place {seq}) was signed at {}; {} records after it are chained but not yet \
                 signed",
                rfc3339(at),
                report.unsigned
            ),
            Some((seq, at)) => println!("the last checkpoint (place {seq}) was signed at {}", rfc3339(at)),
            None if report.verified > 0 => {
                println!("no signed checkpoint yet: {} records are chained only", report.unsigned)
            }
            None => {}
        }
        return Ok(());
    };
    let when = match (fault, fault.occurred_at()) {
        (ChainFault::CutOff { .. }, Some(at)) => format!(" (that checkpoint was signed at {})", rfc3339(at)),
        (ChainFault::Deleted { .. }, Some(at)) => format!(" (the record before it: {})", rfc3339(at)),
        (_, Some(at)) => format!(" (record time {})", rfc3339(at)),
        (_, None) => String::new(),
    };
    anyhow::bail!("the audit trail was tampered with: {fault}{when}; {} records before it verified", report.verified)
}

async fn tail(config: &Config, lines: i64, follow: bool, json: bool, filter: &AuditFilter) -> anyhow::Result<()> {
    let store = app::open_store(config).await?;
    let print = |e: &portcullis_store::AuditEventRecord| {
        let ev = &e.event;
        if json {
            let value = serde_json::json!({
                "id": e.id, "occurred_at": ev.occurred_at, "kind": ev.kind.as_str(), "actor": ev.actor,
                "source_address": ev.source_address, "route": ev.route, "method": ev.method,
                "target": ev.target, "decision": ev.outcome.as_str(), "reason": ev.reason, "user_id": ev.user_id,
                "username": ev.username, "client_id": ev.client_id, "issuer": ev.issuer,
                "status": ev.status, "latency_ms": ev.latency_ms,
            });
            println!("{value}");
            return;
        }
        let when = rfc3339(ev.occurred_at);
        let who = ev.username.clone().or_else(|| ev.user_id.clone()).unwrap_or_else(|| "-".into());
        let client = ev.client_id.as_deref().unwrap_or("-");
        let target = ev.target.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
        let reason = ev.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
        if ev.kind == AuditKind::McpMessage {
            println!(
                "{when}  {:<9} {:>3}  {:>5}ms  {}  user={who} client={client}  {}{target}{reason}",
                ev.outcome,
                ev.status.unwrap_or(0),
                ev.latency_ms.unwrap_or(0),
                ev.route.as_deref().unwrap_or("-"),
                ev.method.as_deref().unwrap_or("-"),
            );
        } else {
            println!(
                "{when}  {:<9} {}  by {}{}  user={who} client={client}{target}{reason}",
                ev.outcome,
                ev.kind,
                ev.actor.as_deref().unwrap_or("-"),
                ev.source_address.as_deref().map(|a| format!(" from {a}")).unwrap_or_default(),
            );
        }
    };
    // Listening before the first line is printed: a reader may stop us as soon as it sees one.
    let signals = if follow { Some(crate::StopSignals::listen()?) } else { None };
    let mut last = None;
    for e in store.audit_events(None, lines.max(1), filter).await? {
        print(&e);
        last = Some(e.id);
    }
    if let Some(signals) = signals {
        let mut stop = Box::pin(signals.received());
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
            for e in store.audit_events(Some(last.unwrap_or(0)), 1000, filter).await? {
                print(&e);
                last = Some(e.id);
            }
        }
    }
    store.close().await;
    let _ = std::io::stdout().flush();
    Ok(())
}
