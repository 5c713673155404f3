//! The audit trail: gateway decisions (written in batches, off the request path) and identity
//! actions (written by [`Store::commit`] in the transaction of the change they record), read
//! oldest first with optional filters.

use crate::{
    AuditEventRecord, AuditFilter, AuditKind, AuditOutcome, NewAuditEvent, Result, Store, StoreError, on_pool,
    on_reader, stored,
};

/// An audit record exactly as stored, with its place and hash: what the chain walk reads
/// (`chain.rs`) and what an export writes, one JSON line each (`export.rs`). Text stays text
/// here (not parsed into enums), so a value changed by hand is caught by the chain, not lost.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct ChainedRecord {
    pub id: i64,
    /// Its place in the hash chain and its hash (absent only on records slipped in by hand).
    pub seq: Option<i64>,
    #[serde(with = "crate::export::hex_bytes")]
    pub hash: Option<Vec<u8>>,
    pub occurred_at: i64,
    pub kind: String,
    pub actor: Option<String>,
    pub source_address: Option<String>,
    pub route: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    pub decision: String,
    pub reason: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub status: Option<i64>,
    pub latency_ms: Option<i64>,
}

impl TryFrom<ChainedRecord> for AuditEventRecord {
    type Error = StoreError;

    fn try_from(r: ChainedRecord) -> Result<Self> {
        let row = || format!("audit record {}", r.id);
        Ok(Self {
            id: r.id,
            event: NewAuditEvent {
                kind: stored(AuditKind::parse, &r.kind, "kind", row)?,
                outcome: stored(AuditOutcome::parse, &r.decision, "decision", row)?,
                occurred_at: r.occurred_at,
                actor: r.actor,
                source_address: r.source_address,
                route: r.route,
                method: r.method,
                target: r.target,
                reason: r.reason,
                user_id: r.user_id,
                username: r.username,
                client_id: r.client_id,
                issuer: r.issuer,
                subject: r.subject,
                status: r.status,
                latency_ms: r.latency_ms,
            },
        })
    }
}

/// How many of `remaining` records the next INSERT takes: the largest power of two up to 128
/// (18 columns x 128 rows stays far below both backends' limits on bound parameters), so a
/// batch of any size is written with at most eight statement shapes, each prepared once.
pub(crate) fn insert_chunk(remaining: usize) -> usize {
    const LARGEST: usize = 128;
    if remaining >= LARGEST { LARGEST } else { 1 << remaining.max(1).ilog2() }
}

/// The columns of an audit record as stored, in the order every INSERT binds them.
const AUDIT_COLUMNS: [&str; 18] = [
    "occurred_at",
    "kind",
    "actor",
    "source_address",
    "route",
    "method",
    "target",
    "decision",
    "reason",
    "user_id",
    "username",
    "client_id",
    "issuer",
    "subject",
    "status",
    "latency_ms",
    "seq",
    "hash",
];

/// The text of an INSERT of `rows` audit records, `rows` a size [`insert_chunk`] gives, for the
/// backend of `_tx`: built once per size, not once per batch. PostgreSQL numbers its
/// placeholders (`$n`); SQLite gets plain `?`s, bound in order (sqlx looks every `$n` up by
/// name on SQLite, which grows with the square of a 2,304-parameter statement).
pub(crate) fn audit_insert_sql<DB: sqlx::Database>(_tx: &sqlx::Transaction<'_, DB>, rows: usize) -> &'static str {
    static NUMBERED: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| insert_texts(true));
    static PLAIN: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| insert_texts(false));
    debug_assert!(rows.is_power_of_two() && rows <= 128, "{rows} is not a size insert_chunk gives");
    let texts = if DB::NAME == <sqlx::Postgres as sqlx::Database>::NAME { &NUMBERED } else { &PLAIN };
    &texts[rows.ilog2() as usize]
}

/// The INSERT's text for each size [`insert_chunk`] gives (1, 2, 4 ... 128 rows).
fn insert_texts(numbered: bool) -> Vec<String> {
    (0..8)
        .map(|k| {
            let rows = 1usize << k;
            let mut sql = format!("INSERT INTO audit_events ({}) VALUES ", AUDIT_COLUMNS.join(", "));
            for row in 0..rows {
                sql.push_str(if row == 0 { "(" } else { ", (" });
                for column in 0..AUDIT_COLUMNS.len() {
                    if column > 0 {
                        sql.push_str(", ");
                    }
                    if numbered {
                        sql.push_str(&format!("${}", row * AUDIT_COLUMNS.len() + column + 1));
                    } else {
                        sql.push('?');
                    }
                }
                sql.push(')');
            }
            sql
        })
        .collect()
}

/// A multi-row INSERT of `$rows` audit records, in transaction `$tx`, with their places and hashes (from
/// [`crate::chain::audit_append`]; without them only in the benchmark's baseline), bound in
/// [`AUDIT_COLUMNS`]' order: the one place their values are listed.
macro_rules! audit_insert {
    ($tx:ident, $linked:expr, $rows:expr) => {{
        let mut insert = sqlx::query($crate::audit::audit_insert_sql(&$tx, $rows));
        for (e, link) in $linked {
            let (e, link): (&$crate::NewAuditEvent, Option<&(i64, [u8; 32])>) = (e, link);
            insert = insert
                .bind(e.occurred_at)
                .bind(e.kind.as_str())
                .bind(&e.actor)
                .bind(&e.source_address)
                .bind(&e.route)
                .bind(&e.method)
                .bind(&e.target)
                .bind(e.outcome.as_str())
                .bind(&e.reason)
                .bind(&e.user_id)
                .bind(&e.username)
                .bind(&e.client_id)
                .bind(&e.issuer)
                .bind(&e.subject)
                .bind(e.status)
                .bind(e.latency_ms)
                .bind(link.map(|(seq, _)| *seq))
                .bind(link.map(|(_, hash)| &hash[..]));
        }
        insert
    }};
}
pub(crate) use audit_insert;

/// Appends the filter's conditions (each after `AND`) to a query whose WHERE clause is open.
fn push_filter<DB: sqlx::Database>(query: &mut sqlx::QueryBuilder<DB>, filter: &AuditFilter)
where
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    if !filter.kinds.is_empty() {
        query.push(" AND kind IN (");
        let mut kinds = query.separated(", ");
        for kind in &filter.kinds {
            kinds.push_bind(kind.as_str());
        }
        query.push(")");
    }
    if let Some(user) = &filter.user {
        query.push(" AND (user_id = ").push_bind(user.as_str()).push(" OR username = ").push_bind(user.as_str());
        query.push(")");
    }
    if let Some(client) = &filter.client_id {
        query.push(" AND client_id = ").push_bind(client.as_str());
    }
    if let Some(from) = filter.from {
        query.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        query.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(route) = &filter.route {
        query.push(" AND route = ").push_bind(route.as_str());
    }
    if let Some(target) = &filter.target {
        query.push(" AND target = ").push_bind(target.as_str());
    }
    if let Some(outcome) = filter.outcome {
        query.push(" AND decision = ").push_bind(outcome.as_str());
    }
}

impl Store {
    /// Appends a batch of events to the chain in one transaction (all of them or none), as
    /// multi-row INSERTs: the audit trail is written on every gateway request, and one
    /// statement per row would cost more than the request.
    pub async fn append_audit_events(&self, events: &[NewAuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            crate::chain::audit_append!(tx, events);
            tx.commit().await?
        });
        Ok(())
    }

    /// The audit write as it was before the chain (no places, no hashes, no head lock), for
    /// the benchmark that prices the chain (`bench/audit-append`); never built into the server.
    #[cfg(feature = "bench-baseline")]
    pub async fn append_audit_events_unchained(&self, events: &[NewAuditEvent]) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut start = 0;
            while start < events.len() {
                let end = start + insert_chunk(events.len() - start);
                audit_insert!(tx, events[start..end].iter().map(|e| (e, None)), end - start).execute(&mut *tx).await?;
                start = end;
            }
            tx.commit().await?
        });
        Ok(())
    }

    /// Events with an id above `after_id`, oldest first, at most `limit` of them; with
    /// `after_id = None`, the newest `limit` events (still oldest first). Only events that
    /// match `filter`.
    pub async fn audit_events(
        &self,
        after_id: Option<i64>,
        limit: i64,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventRecord>> {
        let rows: Vec<ChainedRecord> = on_reader!(self, pool => {
            let mut query = sqlx::QueryBuilder::new("SELECT * FROM audit_events WHERE id > ");
            query.push_bind(after_id.unwrap_or(0));
            push_filter(&mut query, filter);
            query.push(if after_id.is_some() { " ORDER BY id LIMIT " } else { " ORDER BY id DESC LIMIT " });
            query.push_bind(limit);
            query.build_query_as::<ChainedRecord>().fetch_all(pool).await?
        });
        let mut records = rows.into_iter().map(TryInto::try_into).collect::<Result<Vec<AuditEventRecord>>>()?;
        if after_id.is_none() {
            records.reverse();
        }
        Ok(records)
    }

    /// Gateway decisions since `since`, counted per `bucket_secs`-long interval (aligned to
    /// multiples of it), oldest first; intervals without any are left out.
    pub async fn decision_histogram(&self, since: i64, bucket_secs: i64) -> Result<Vec<crate::DecisionBucket>> {
        let bucket_secs = bucket_secs.max(1);
        let rows: Vec<(i64, i64, i64)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT (occurred_at / $2) * $2 AS bucket, \
             COUNT(CASE WHEN decision = 'allowed' THEN 1 END), COUNT(CASE WHEN decision = 'denied' THEN 1 END) \
             FROM audit_events WHERE occurred_at >= $1 AND kind = 'mcp.message' GROUP BY bucket ORDER BY bucket")
            .bind(since)
            .bind(bucket_secs)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(|(start, allowed, denied)| crate::DecisionBucket { start, allowed, denied }).collect())
    }

    /// When `client_id` last acted for `user_id` through the gateway (unix seconds).
    pub async fn last_acted(&self, user_id: &str, client_id: &str) -> Result<Option<i64>> {
        let row: Option<(i64,)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT occurred_at FROM audit_events WHERE user_id = $1 AND client_id = $2 AND kind = 'mcp.message' \
             ORDER BY id DESC LIMIT 1")
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|(at,)| at))
    }

    /// Events newest first, below `before_id` (a cursor: the last id of the page before), at
    /// most `limit`, only those that match `filter`.
    pub async fn audit_events_before(
        &self,
        before_id: Option<i64>,
        limit: i64,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventRecord>> {
        let rows: Vec<ChainedRecord> = on_reader!(self, pool => {
            let mut query = sqlx::QueryBuilder::new("SELECT * FROM audit_events WHERE id < ");
            query.push_bind(before_id.unwrap_or(i64::MAX));
            push_filter(&mut query, filter);
            query.push(" ORDER BY id DESC LIMIT ");
            query.push_bind(limit);
            query.build_query_as::<ChainedRecord>().fetch_all(pool).await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_come_in_eight_sizes_that_add_up() {
        for total in [1, 2, 3, 7, 127, 128, 129, 200, 511, 512, 1000, 2048] {
            let (mut left, mut sizes) = (total, Vec::new());
            while left > 0 {
                let n = insert_chunk(left);
                assert!(n >= 1 && n <= left, "{total}: {n} of {left}");
                sizes.push(n);
                left -= n;
            }
            assert!(sizes.iter().all(|n| n.is_power_of_two() && *n <= 128), "{total}: {sizes:?}");
            assert!(sizes.len() <= total / 128 + 7, "{total}: {} statements", sizes.len());
        }
    }

    #[test]
    fn each_insert_size_binds_every_column_of_every_row_once() {
        let columns = AUDIT_COLUMNS.join(", ");
        let (numbered, plain) = (insert_texts(true), insert_texts(false));
        assert_eq!(
            numbered[0],
            format!(
                "INSERT INTO audit_events ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                 $14, $15, $16, $17, $18)"
            )
        );
        assert_eq!(plain[0], format!("INSERT INTO audit_events ({columns}) VALUES ({})", ["?"; 18].join(", ")));
        for (k, (numbered, plain)) in numbered.iter().zip(&plain).enumerate() {
            let rows = 1usize << k;
            let placeholders: Vec<usize> = numbered
                .split('$')
                .skip(1)
                .map(|p| p.trim_end_matches([',', ' ', ')', '(']).parse().unwrap_or(0))
                .collect();
            assert_eq!(placeholders, (1..=rows * AUDIT_COLUMNS.len()).collect::<Vec<_>>(), "{rows} rows");
            assert_eq!(plain.matches('?').count(), rows * AUDIT_COLUMNS.len(), "{rows} rows");
            assert_eq!(numbered.matches('(').count(), rows + 1, "{rows} rows");
            assert_eq!(plain.matches('(').count(), rows + 1, "{rows} rows");
        }
    }
}
