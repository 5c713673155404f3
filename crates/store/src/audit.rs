//! The gateway's audit trail: written in batches, read newest first.

use crate::{AuditEventRecord, NewAuditEvent, Result, Store, on_pool, on_reader};

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    occurred_at: i64,
    route: String,
    method: String,
    target: Option<String>,
    decision: String,
    reason: Option<String>,
    user_id: Option<String>,
    username: Option<String>,
    client_id: Option<String>,
    issuer: Option<String>,
    status: i64,
    latency_ms: i64,
}

impl From<Row> for AuditEventRecord {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            event: NewAuditEvent {
                occurred_at: r.occurred_at,
                route: r.route,
                method: r.method,
                target: r.target,
                decision: r.decision,
                reason: r.reason,
                user_id: r.user_id,
                username: r.username,
                client_id: r.client_id,
                issuer: r.issuer,
                status: r.status,
                latency_ms: r.latency_ms,
            },
        }
    }
}

impl Store {
    /// Appends a batch of events in one transaction (all of them or none), as multi-row
    /// INSERTs: the audit trail is written on every gateway request, and one statement per row
    /// would cost more than the request.
    pub async fn append_audit_events(&self, events: &[NewAuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // 13 columns x 200 rows stays far below both backends' limits on bound parameters.
        const ROWS_PER_STATEMENT: usize = 200;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_events (occurred_at, route, method, target, decision, reason, user_id, username, \
                     client_id, issuer, status, latency_ms) ",
                );
                insert.push_values(chunk, |mut row, e| {
                    row.push_bind(e.occurred_at)
                        .push_bind(&e.route)
                        .push_bind(&e.method)
                        .push_bind(&e.target)
                        .push_bind(&e.decision)
                        .push_bind(&e.reason)
                        .push_bind(&e.user_id)
                        .push_bind(&e.username)
                        .push_bind(&e.client_id)
                        .push_bind(&e.issuer)
                        .push_bind(e.status)
                        .push_bind(e.latency_ms);
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Events with an id above `after_id`, oldest first, at most `limit` of them; with
    /// `after_id = None`, the newest `limit` events (still oldest first).
    pub async fn audit_events(&self, after_id: Option<i64>, limit: i64) -> Result<Vec<AuditEventRecord>> {
        let rows: Vec<Row> = match after_id {
            Some(after) => on_reader!(self, pool => sqlx::query_as(
                "SELECT * FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?),
            None => {
                let mut rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(
                    "SELECT * FROM audit_events ORDER BY id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(pool)
                    .await?);
                rows.reverse();
                rows
            }
        };
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
