//! What the audit chain costs the writer: the same gateway decisions appended in the gateway's
//! batches (512) through the chained write, and through the write as it was before the chain
//! into a second fresh database of the same backend without the chain's index, alternating
//! batch by batch. Prints microseconds per record for each and their ratio. Run by
//! `bench/audit-append/run`.
//!
//!     cargo run --release -p portcullis-store --features bench-baseline --example audit_append -- \
//!         <chained-database-url> <unchained-database-url> [records]

use std::time::{Duration, Instant};

use portcullis_store::{AuditKind, AuditOutcome, NewAuditEvent, Store};

const BATCH: usize = 512;

fn decision(n: usize) -> NewAuditEvent {
    NewAuditEvent {
        occurred_at: 1_900_000_000 + i64::try_from(n).unwrap_or_default(),
        kind: AuditKind::McpMessage,
        actor: None,
        source_address: Some("127.0.0.1".into()),
        route: Some("crm".into()),
        method: Some("tools/call".into()),
        target: Some("list_contacts".into()),
        outcome: AuditOutcome::Allowed,
        reason: None,
        user_id: Some("9f0c2a4e-user".into()),
        username: Some("alice".into()),
        client_id: Some("bench-agent".into()),
        issuer: Some("http://127.0.0.1:18091".into()),
        subject: None,
        status: Some(200),
        latency_ms: Some(1),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: audit_append <chained-database-url> <unchained-database-url> [records]";
    let chained_url = args.next().ok_or(usage)?;
    let unchained_url = args.next().ok_or(usage)?;
    let records: usize = args.next().map_or(Ok(200_000), |n| n.parse())?;
    let store = Store::connect(&chained_url, 1).await?;
    store.migrate().await?;
    // The baseline's table as before the chain: no unique index on the place.
    let baseline = Store::connect(&unchained_url, 1).await?;
    baseline.migrate().await?;
    baseline.execute_admin_sql("DROP INDEX audit_events_seq").await?;
    let batch: Vec<NewAuditEvent> = (0..BATCH).map(decision).collect();
    let (mut chained, mut unchained) = (Duration::ZERO, Duration::ZERO);
    let rounds = records.div_ceil(BATCH);
    // Alternating batches (and which goes first), so that both see the same table sizes, the
    // same disk and the same background work.
    for round in 0..rounds {
        for first in [round % 2 == 0, round % 2 == 1] {
            let started = Instant::now();
            if first {
                store.append_audit_events(&batch).await?;
                chained += started.elapsed();
            } else {
                baseline.append_audit_events_unchained(&batch).await?;
                unchained += started.elapsed();
            }
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * BATCH) as f64;
    println!(
        "RESULT backend={} records={} chained_us={:.2} unchained_us={:.2} added_us={:.2} ratio={:.2}",
        store.backend_name(),
        rounds * BATCH,
        per(chained),
        per(unchained),
        per(chained) - per(unchained),
        chained.as_secs_f64() / unchained.as_secs_f64()
    );
    store.close().await;
    baseline.close().await;
    Ok(())
}
