//! Signed checkpoints of the audit chain, the keys that sign them, and pruning.
//!
//! A checkpoint says "at place `seq` the chain's hash was `hash`", signed with a dedicated audit
//! key. The keys are stored sealed by the master key, which the database does not hold: someone
//! who can write every table can recompute every hash, but cannot sign, so a rewritten chain
//! no longer matches its checkpoints, and a checkpoint past the end shows a cut tail. The
//! signing itself happens outside the store (it never sees a key in the clear); the caller
//! hands it signed checkpoints, and [`CheckpointKeys`] to check them with.

use std::collections::HashMap;

use portcullis_crypto::{ChainHash, PublicKey, checkpoint_message};

use crate::chain::{audit_append, lock_chain_head, stored_hash};
use crate::{CheckpointKind, NewAuditEvent, Result, Store, StoreError, on_pool, on_reader, stored};

/// A signed checkpoint of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub kind: CheckpointKind,
    pub seq: i64,
    pub hash: ChainHash,
    pub signed_at: i64,
    /// The audit key that signed it (its RFC 7638 thumbprint).
    pub kid: String,
    /// ECDSA P-256 SHA-256 over [`checkpoint_message`], r || s.
    pub signature: Vec<u8>,
}

impl AuditCheckpoint {
    /// The bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(self.kind.as_str(), self.seq, &self.hash, self.signed_at)
    }
}

/// An audit signing key as stored: sealed by the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSigningKeyRecord {
    pub kid: String,
    pub private_key_sealed: Vec<u8>,
    pub created_at: i64,
}

/// The public audit keys a walk trusts, by key id.
#[derive(Debug, Default)]
pub struct CheckpointKeys {
    keys: HashMap<String, PublicKey>,
}

impl CheckpointKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self { keys: keys.into_iter().map(|k| (k.kid().to_owned(), k)).collect() }
    }

    /// Whether one of these keys signed `checkpoint` as it is.
    pub fn verify(&self, checkpoint: &AuditCheckpoint) -> bool {
        self.keys.get(&checkpoint.kid).is_some_and(|key| key.verify_bytes(&checkpoint.message(), &checkpoint.signature))
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: u64,
    /// The place the trail now starts after (its base checkpoint's).
    pub base_seq: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    kind: String,
    hash: Vec<u8>,
    signed_at: i64,
    kid: String,
    signature: Vec<u8>,
}

impl TryFrom<Row> for AuditCheckpoint {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self> {
        let row = || format!("audit checkpoint at place {}", r.seq);
        Ok(Self {
            kind: stored(CheckpointKind::parse, &r.kind, "kind", row)?,
            seq: r.seq,
            hash: stored_hash(&r.hash, row)?,
            signed_at: r.signed_at,
            kid: r.kid,
            signature: r.signature,
        })
    }
}

/// The INSERT of a checkpoint, with what to do when one is at its place already (`$conflict`):
/// the one place its columns are listed.
macro_rules! insert_checkpoint {
    ($checkpoint:expr, $conflict:literal) => {{
        let checkpoint: &AuditCheckpoint = $checkpoint;
        sqlx::query(concat!(
            "INSERT INTO audit_checkpoints (seq, kind, hash, signed_at, kid, signature) VALUES ($1, $2, $3, $4, $5, $6) ",
            $conflict
        ))
        .bind(checkpoint.seq)
        .bind(checkpoint.kind.as_str())
        .bind(checkpoint.hash.to_vec())
        .bind(checkpoint.signed_at)
        .bind(checkpoint.kid.clone())
        .bind(checkpoint.signature.clone())
    }};
}

fn checkpoints(rows: Vec<Row>) -> Result<Vec<AuditCheckpoint>> {
    rows.into_iter().map(TryInto::try_into).collect()
}

impl Store {
    pub async fn audit_signing_keys(&self) -> Result<Vec<AuditSigningKeyRecord>> {
        let rows: Vec<(String, Vec<u8>, i64)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT kid, private_key_sealed, created_at FROM audit_signing_keys ORDER BY created_at DESC, kid")
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(kid, private_key_sealed, created_at)| AuditSigningKeyRecord { kid, private_key_sealed, created_at })
            .collect())
    }

    /// Keeps a new audit signing key (nodes that start together may each add one: every key
    /// stored and sealed by the master key is trusted).
    pub async fn add_audit_signing_key(&self, key: &AuditSigningKeyRecord) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO audit_signing_keys (kid, private_key_sealed, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (kid) DO NOTHING")
            .bind(&key.kid)
            .bind(&key.private_key_sealed)
            .bind(key.created_at)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Keeps a signed checkpoint; false if one is already at its place (another node signed
    /// the same head).
    pub async fn add_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<bool> {
        let added = on_pool!(self, pool => insert_checkpoint!(checkpoint, "ON CONFLICT (seq) DO NOTHING")
            .execute(pool)
            .await?
            .rows_affected());
        Ok(added == 1)
    }

    /// Checkpoints at places `from..=to`, in order.
    pub async fn audit_checkpoints_between(&self, from: i64, to: i64) -> Result<Vec<AuditCheckpoint>> {
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT seq, kind, hash, signed_at, kid, signature FROM audit_checkpoints \
             WHERE seq >= $1 AND seq <= $2 ORDER BY seq")
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?);
        checkpoints(rows)
    }

    /// The latest checkpoint at or before place `seq`.
    pub async fn latest_audit_checkpoint_at_or_before(&self, seq: i64) -> Result<Option<AuditCheckpoint>> {
        let row: Option<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT seq, kind, hash, signed_at, kid, signature FROM audit_checkpoints \
             WHERE seq <= $1 ORDER BY seq DESC LIMIT 1")
            .bind(seq)
            .fetch_optional(pool)
            .await?);
        row.map(TryInto::try_into).transpose()
    }

    /// Where a pruned trail starts, if it was pruned.
    pub async fn audit_base_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        let row: Option<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT seq, kind, hash, signed_at, kid, signature FROM audit_checkpoints \
             WHERE kind = 'base' ORDER BY seq DESC LIMIT 1")
            .fetch_optional(pool)
            .await?);
        row.map(TryInto::try_into).transpose()
    }

    /// Removes the records before the first one at or after `before` (Unix seconds) and the
    /// checkpoints among them, leaving a base checkpoint (made by `sign` for the place and hash
    /// of the last record removed) where the trail now starts, and `event` recording the prune
    /// appended to the chain. One transaction, under the chain head's lock.
    pub async fn prune_audit(
        &self,
        before: i64,
        sign: impl FnOnce(i64, ChainHash) -> std::result::Result<AuditCheckpoint, String>,
        event: &NewAuditEvent,
    ) -> Result<PruneReport> {
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let (head_seq, _) = lock_chain_head!(tx);
            let first_kept: Option<i64> =
                sqlx::query_scalar("SELECT MIN(seq) FROM audit_events WHERE occurred_at >= $1")
                    .bind(before)
                    .fetch_one(&mut *tx)
                    .await?;
            let base_seq = first_kept.map_or(head_seq, |seq| seq - 1);
            let current_base: Option<i64> =
                sqlx::query_scalar("SELECT MAX(seq) FROM audit_checkpoints WHERE kind = 'base'")
                    .fetch_one(&mut *tx)
                    .await?;
            if base_seq <= current_base.unwrap_or(0) {
                tx.commit().await?;
                return Ok(PruneReport { removed: 0, base_seq: current_base.unwrap_or(0) });
            }
            let hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
                .bind(base_seq)
                .fetch_optional(&mut *tx)
                .await?
                .flatten()
                .ok_or_else(|| StoreError::Corrupt {
                    what: "audit chain",
                    row: format!("place {base_seq}"),
                    detail: "no record with a hash at the place the prune would start after; run `portcullis audit \
                             verify`"
                        .into(),
                })?;
            let hash = stored_hash(&hash, || format!("audit record at place {base_seq}"))?;
            let base = sign(base_seq, hash).map_err(StoreError::Signing)?;
            // The base replaces a periodic checkpoint at the same place.
            insert_checkpoint!(&base, "ON CONFLICT (seq) DO UPDATE SET kind = excluded.kind, hash = excluded.hash, \
                signed_at = excluded.signed_at, kid = excluded.kid, signature = excluded.signature")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM audit_checkpoints WHERE seq < $1").bind(base_seq).execute(&mut *tx).await?;
            let removed = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
                .bind(base_seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let event = NewAuditEvent {
                reason: Some(format!("{removed} record(s) removed; the trail now starts after place {base_seq}")),
                ..event.clone()
            };
            audit_append!(tx, std::slice::from_ref(&event));
            tx.commit().await?;
            PruneReport { removed, base_seq }
        }))
    }
}
