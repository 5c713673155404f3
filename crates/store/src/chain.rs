//! The audit trail as a hash chain (tamper evidence).
//!
//! Every audit record has its place, `seq`, and `hash = chain_link(previous hash, canonical
//! form)`. Places are given out under the lock of the one `audit_chain_head` row, inside the
//! transaction that inserts the records, so every node appends to one chain in one order and a
//! batch stays one statement per 200 rows. [`Store::verify_audit_chain`] walks the chain in
//! `seq` order a page at a time (bounded memory) and names the first record that does not fit.
//!
//! What the chain alone proves: no record was changed, removed, added or moved without every
//! hash after it changing. What it cannot prove alone: that someone with write access did not
//! rewrite the whole suffix (the hash is public) or cut the tail and the head together; signed
//! checkpoints are for that.

use portcullis_crypto::{CHAIN_START, ChainHash, chain_link};

use crate::{NewAuditEvent, Result, Store, StoreError, on_pool, on_reader};

/// A record's fields as stored, borrowed: what its canonical form is made of.
pub(crate) struct Fields<'a> {
    pub occurred_at: i64,
    pub kind: &'a str,
    pub actor: Option<&'a str>,
    pub source_address: Option<&'a str>,
    pub route: Option<&'a str>,
    pub method: Option<&'a str>,
    pub target: Option<&'a str>,
    pub decision: &'a str,
    pub reason: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub username: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub status: Option<i64>,
    pub latency_ms: Option<i64>,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(e: &'a NewAuditEvent) -> Self {
        Self {
            occurred_at: e.occurred_at,
            kind: e.kind.as_str(),
            actor: e.actor.as_deref(),
            source_address: e.source_address.as_deref(),
            route: e.route.as_deref(),
            method: e.method.as_deref(),
            target: e.target.as_deref(),
            decision: e.outcome.as_str(),
            reason: e.reason.as_deref(),
            user_id: e.user_id.as_deref(),
            username: e.username.as_deref(),
            client_id: e.client_id.as_deref(),
            issuer: e.issuer.as_deref(),
            subject: e.subject.as_deref(),
            status: e.status,
            latency_ms: e.latency_ms,
        }
    }

    /// The canonical form: every field in a fixed order, each tagged (0 absent, 1 text with its
    /// length, 2 integer), so no two different records encode the same.
    pub(crate) fn canonical(&self, seq: i64) -> Vec<u8> {
        fn int(out: &mut Vec<u8>, v: Option<i64>) {
            match v {
                None => out.push(0),
                Some(n) => {
                    out.push(2);
                    out.extend_from_slice(&n.to_be_bytes());
                }
            }
        }
        fn text(out: &mut Vec<u8>, v: Option<&str>) {
            match v {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        let mut out = Vec::with_capacity(256);
        int(&mut out, Some(seq));
        int(&mut out, Some(self.occurred_at));
        text(&mut out, Some(self.kind));
        for v in [self.actor, self.source_address, self.route, self.method, self.target] {
            text(&mut out, v);
        }
        text(&mut out, Some(self.decision));
        for v in [self.reason, self.user_id, self.username, self.client_id, self.issuer, self.subject] {
            text(&mut out, v);
        }
        int(&mut out, self.status);
        int(&mut out, self.latency_ms);
        out
    }

    pub(crate) fn link(&self, previous: &ChainHash, seq: i64) -> ChainHash {
        chain_link(previous, &self.canonical(seq))
    }
}

/// A stored hash as a chain hash; the empty head is the start of the chain.
pub(crate) fn stored_hash(bytes: &[u8], row: impl FnOnce() -> String) -> Result<ChainHash> {
    if bytes.is_empty() {
        return Ok(CHAIN_START);
    }
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: "audit hash",
        row: row(),
        detail: format!("{} bytes, not 32", bytes.len()),
    })
}

/// Inside a transaction of either backend (`$tx`): locks the chain head until the transaction
/// ends and evaluates to its place and hash. An UPDATE (not a plain SELECT), so the row is
/// locked on PostgreSQL and the write lock taken on SQLite before the head is read.
macro_rules! lock_chain_head {
    ($tx:ident) => {{
        let (seq, head): (i64, Vec<u8>) =
            sqlx::query_as("UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut *$tx)
                .await?;
        (seq, $crate::chain::stored_hash(&head, || "audit_chain_head".to_owned())?)
    }};
}
pub(crate) use lock_chain_head;

/// Inside the transaction that locked it: moves the chain head to place `$seq`, hash `$hash`.
macro_rules! move_chain_head {
    ($tx:ident, $seq:expr, $hash:expr) => {
        sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind($seq)
            .bind(&$hash[..])
            .execute(&mut *$tx)
            .await?
    };
}
pub(crate) use move_chain_head;

/// Inside a transaction of either backend (`$tx`): appends `$events` to the chain, each with its
/// place and hash, holding the chain head's lock until the transaction ends.
macro_rules! audit_append {
    ($tx:ident, $events:expr) => {{
        let events: &[$crate::NewAuditEvent] = $events;
        if !events.is_empty() {
            let (mut seq, mut hash) = $crate::chain::lock_chain_head!($tx);
            let mut links = Vec::with_capacity(events.len());
            for e in events {
                seq += 1;
                hash = $crate::chain::Fields::of(e).link(&hash, seq);
                links.push((seq, hash));
            }
            // 17 columns x 200 rows stays far below both backends' limits on bound parameters.
            for (chunk, chunk_links) in events.chunks(200).zip(links.chunks(200)) {
                $crate::audit::audit_insert!(chunk.iter().zip(chunk_links)).build().execute(&mut *$tx).await?;
            }
            $crate::chain::move_chain_head!($tx, seq, hash);
        }
    }};
}
pub(crate) use audit_append;

/// The first place where the stored trail does not fit its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// The record at this place does not hash to what is stored: it was altered, or moved here
    /// from another place.
    Altered { seq: i64, id: i64, occurred_at: i64 },
    /// No record has this place (the first of the missing ones); the record before it, if any.
    Deleted { seq: i64, after_id: Option<i64>, after_occurred_at: Option<i64> },
    /// A record outside the chain: without a place, or past the chain's head.
    Inserted { id: i64, occurred_at: i64 },
    /// The chain ends before its head says it does: records after `last_seq` were removed.
    Truncated { last_seq: i64, head_seq: i64 },
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Altered { seq, id, occurred_at } => write!(
                f,
                "record {id} (place {seq}, at {occurred_at}) does not match its hash: it was altered, or moved from \
                 another place"
            ),
            Self::Deleted { seq, after_id: Some(id), after_occurred_at: Some(at) } => {
                write!(f, "the record at place {seq}, after record {id} (at {at}), was deleted")
            }
            Self::Deleted { seq, .. } => write!(f, "the record at place {seq}, the first, was deleted"),
            Self::Inserted { id, occurred_at } => {
                write!(f, "record {id} (at {occurred_at}) was inserted: it has no place in the chain")
            }
            Self::Truncated { last_seq, head_seq } => write!(
                f,
                "the chain ends at place {last_seq} but its head is at {head_seq}: the records after {last_seq} were \
                 deleted"
            ),
        }
    }
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Records that fit the chain, from the start up to the first fault (or all of them).
    pub verified: u64,
    pub fault: Option<ChainFault>,
}

/// Records read per step of a walk.
const VERIFY_STEP: i64 = 5000;

impl crate::audit::Row {
    pub(crate) fn fields(&self) -> Fields<'_> {
        Fields {
            occurred_at: self.occurred_at,
            kind: &self.kind,
            actor: self.actor.as_deref(),
            source_address: self.source_address.as_deref(),
            route: self.route.as_deref(),
            method: self.method.as_deref(),
            target: self.target.as_deref(),
            decision: &self.decision,
            reason: self.reason.as_deref(),
            user_id: self.user_id.as_deref(),
            username: self.username.as_deref(),
            client_id: self.client_id.as_deref(),
            issuer: self.issuer.as_deref(),
            subject: self.subject.as_deref(),
            status: self.status,
            latency_ms: self.latency_ms,
        }
    }
}

impl Store {
    /// Walks the whole chain in order, a page at a time, and reports the first record that
    /// does not fit: altered, deleted, inserted or moved, or a cut tail.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        // The chain as far as its head says now; records appended while the walk goes on are
        // past it, and are left for the next walk.
        let (head_seq, head_hash) = self.audit_chain_head().await?;
        let mut previous = CHAIN_START;
        let mut expected = 1_i64;
        let mut last: Option<(i64, i64)> = None;
        let mut verified = 0_u64;
        let fault = |verified, fault| Ok(ChainReport { verified, fault: Some(fault) });
        while expected <= head_seq {
            let rows: Vec<crate::audit::Row> = on_reader!(self, pool => sqlx::query_as(
                "SELECT * FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3")
                .bind(expected)
                .bind(head_seq)
                .bind(VERIFY_STEP)
                .fetch_all(pool)
                .await?);
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let seq = row.seq.unwrap_or_default();
                if seq != expected {
                    return fault(
                        verified,
                        ChainFault::Deleted {
                            seq: expected,
                            after_id: last.map(|(id, _)| id),
                            after_occurred_at: last.map(|(_, at)| at),
                        },
                    );
                }
                let stored = row.hash.as_deref().and_then(|h| ChainHash::try_from(h).ok());
                let computed = row.fields().link(&previous, seq);
                if stored != Some(computed) {
                    return fault(verified, ChainFault::Altered { seq, id: row.id, occurred_at: row.occurred_at });
                }
                previous = computed;
                last = Some((row.id, row.occurred_at));
                expected += 1;
                verified += 1;
            }
        }
        let last_seq = expected - 1;
        if last_seq < head_seq || previous != head_hash {
            return fault(verified, ChainFault::Truncated { last_seq, head_seq });
        }
        // Records without a place, or past the head, were put there by hand. The head is read
        // again in the same statement (one snapshot): the chain may have grown meanwhile.
        let outside: Option<(i64, i64)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, occurred_at FROM audit_events WHERE seq IS NULL \
             OR seq > (SELECT h.seq FROM audit_chain_head h WHERE h.id = 1) ORDER BY id LIMIT 1")
            .fetch_optional(pool)
            .await?);
        Ok(ChainReport { verified, fault: outside.map(|(id, occurred_at)| ChainFault::Inserted { id, occurred_at }) })
    }

    /// Where the chain ends and the hash there.
    async fn audit_chain_head(&self) -> Result<(i64, ChainHash)> {
        let (seq, hash): (i64, Vec<u8>) = on_reader!(self, pool => sqlx::query_as(
            "SELECT seq, hash FROM audit_chain_head WHERE id = 1")
            .fetch_one(pool)
            .await?);
        Ok((seq, stored_hash(&hash, || "audit_chain_head".to_owned())?))
    }

    /// Chains the records written before the chain existed (in id order), once: when the chain
    /// is still empty. Runs as part of [`Store::migrate`].
    pub(crate) async fn chain_unchained_records(&self) -> Result<u64> {
        let mut chained = 0_u64;
        let mut after_id = 0_i64;
        loop {
            let done = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let (mut seq, mut hash) = lock_chain_head!(tx);
                // Only a chain that was never started takes old records in (this run's own steps
                // go on): later, a record without a place is one that was slipped in, and
                // verification says so.
                if seq > 0 && chained == 0 {
                    tx.commit().await?;
                    true
                } else {
                    // Forward from the last record chained, along the primary key: each step
                    // reads only its own records, however long the old trail.
                    let rows: Vec<crate::audit::Row> =
                        sqlx::query_as("SELECT * FROM audit_events WHERE id > $1 AND seq IS NULL ORDER BY id LIMIT 1000")
                            .bind(after_id)
                            .fetch_all(&mut *tx)
                            .await?;
                    let mut links = Vec::with_capacity(rows.len());
                    for row in &rows {
                        seq += 1;
                        hash = row.fields().link(&hash, seq);
                        links.push((row.id, seq, hash));
                    }
                    // One statement per step, not per record: an old trail may hold millions.
                    if !links.is_empty() {
                        let mut update = sqlx::QueryBuilder::new("WITH v (id, seq, hash) AS (");
                        update.push_values(&links, |mut b, (id, seq, hash)| {
                            b.push_bind(*id).push_bind(*seq).push_bind(hash.to_vec());
                        });
                        update.push(
                            ") UPDATE audit_events SET seq = v.seq, hash = v.hash FROM v WHERE audit_events.id = v.id",
                        );
                        update.build().execute(&mut *tx).await?;
                    }
                    move_chain_head!(tx, seq, hash);
                    tx.commit().await?;
                    chained += rows.len() as u64;
                    after_id = rows.last().map_or(after_id, |r| r.id);
                    rows.len() < 1000
                }
            });
            if done {
                return Ok(chained);
            }
        }
    }
}
