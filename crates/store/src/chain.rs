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

use std::ops::ControlFlow;

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
            // Statements of a few fixed sizes, so that each backend prepares each once and
            // reuses it (a statement per batch size would be prepared again and again).
            let mut start = 0;
            while start < events.len() {
                let end = start + $crate::audit::insert_chunk(events.len() - start);
                $crate::audit::audit_insert!(
                    $tx,
                    events[start..end].iter().zip(links[start..end].iter().map(Some)),
                    end - start
                )
                .execute(&mut *$tx)
                .await?;
                start = end;
            }
            $crate::chain::move_chain_head!($tx, seq, hash);
        }
    }};
}
pub(crate) use audit_append;

/// The first place where the stored trail does not fit its chain or its checkpoints.
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
    /// A checkpoint that no audit key signed: forged, or altered after signing.
    Forged { seq: i64, kid: String },
    /// Every record fits the one before it, but the chain at a signed checkpoint is not what
    /// was signed: the records after `after_seq` up to the checkpoint were rewritten (with
    /// every hash after them).
    Rewritten { seq: i64, after_seq: i64, id: i64, occurred_at: i64, signed_at: i64 },
    /// A signed checkpoint vouches for a place the chain no longer reaches: its tail (and head)
    /// were cut back to `last_seq`.
    CutOff { seq: i64, signed_at: i64, last_seq: i64 },
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Altered { seq, id, .. } => write!(
                f,
                "record {id} (place {seq}) does not match its hash: it was altered, or moved from another place"
            ),
            Self::Deleted { seq, after_id: Some(id), .. } => {
                write!(f, "the record at place {seq}, after record {id}, was deleted")
            }
            Self::Deleted { seq, .. } => write!(f, "the record at place {seq}, the first, was deleted"),
            Self::Inserted { id, .. } => write!(f, "record {id} was inserted: it has no place in the chain"),
            Self::Truncated { last_seq, head_seq } => write!(
                f,
                "the chain ends at place {last_seq} but its head is at {head_seq}: the records after {last_seq} were \
                 deleted"
            ),
            Self::Forged { seq, kid } => write!(
                f,
                "the checkpoint at place {seq} is not signed by an audit key of this installation (key {kid}): it \
                 was forged or altered"
            ),
            Self::Rewritten { seq, after_seq, id, .. } => write!(
                f,
                "the chain at record {id} (place {seq}) is not what its signed checkpoint says: the records after \
                 place {after_seq} up to {seq} were rewritten"
            ),
            Self::CutOff { seq, last_seq, .. } => write!(
                f,
                "a signed checkpoint vouches for place {seq} but the chain ends at place {last_seq}: the records \
                 after {last_seq} were cut off"
            ),
        }
    }
}

impl ChainFault {
    /// When the record the fault names happened (or, for a checkpoint, when it was signed),
    /// Unix seconds: what a report shows beside the record's id.
    pub fn occurred_at(&self) -> Option<i64> {
        match self {
            Self::Altered { occurred_at, .. } | Self::Inserted { occurred_at, .. } => Some(*occurred_at),
            Self::Deleted { after_occurred_at, .. } => *after_occurred_at,
            Self::Rewritten { occurred_at, .. } => Some(*occurred_at),
            Self::CutOff { signed_at, .. } => Some(*signed_at),
            Self::Truncated { .. } | Self::Forged { .. } => None,
        }
    }
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Records that fit the chain, from where the walk started up to the first fault (or all).
    pub verified: u64,
    /// Signed checkpoints whose signature and place in the chain were checked.
    pub checkpoints: u64,
    /// The last checkpoint the walk passed (place, when signed).
    pub last_checkpoint: Option<(i64, i64)>,
    /// Records after the last checkpoint: they fit the chain, but no signature vouches for them
    /// yet (the next checkpoint will).
    pub unsigned: u64,
    /// The place the walk started after: 0, a pruned trail's base, or the checkpoint `--from`
    /// chose.
    pub started_after: i64,
    pub fault: Option<ChainFault>,
}

/// Where a chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: ChainHash,
}

/// Where a walk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyFrom {
    /// From the start of the trail (after the base checkpoint, if it was pruned).
    #[default]
    Start,
    /// From the last signed checkpoint before the first record at or after this time (Unix
    /// seconds): that checkpoint, once its signature is checked, stands for everything before.
    Time(i64),
}

/// The rules of the chain, in one place: fed records and checkpoints in chain order (each
/// checkpoint right after the record at its place), it names the first that does not fit. The
/// store's walk and an export's walk both drive it.
pub struct ChainWalk<'k> {
    keys: &'k crate::CheckpointKeys,
    previous: ChainHash,
    /// The place the next record must have.
    expected: i64,
    started_after: i64,
    /// The record before (id, time).
    last: Option<(i64, i64)>,
    verified: u64,
    checkpoints: u64,
    last_checkpoint: Option<(i64, i64)>,
}

impl<'k> ChainWalk<'k> {
    /// A walk from the start of the chain, or from `anchor` (a base or a `--from` checkpoint,
    /// whose signature is checked here).
    pub fn new(keys: &'k crate::CheckpointKeys, anchor: Option<&crate::AuditCheckpoint>) -> Result<Self, ChainFault> {
        let mut walk = Self::from_start(keys);
        if let Some(anchor) = anchor {
            walk.check_signature(anchor)?;
            walk.previous = anchor.hash;
            walk.expected = anchor.seq + 1;
            walk.started_after = anchor.seq;
            walk.checkpoints = 1;
            walk.last_checkpoint = Some((anchor.seq, anchor.signed_at));
        }
        Ok(walk)
    }

    /// A walk from the first record of the chain.
    pub fn from_start(keys: &'k crate::CheckpointKeys) -> Self {
        Self {
            keys,
            previous: CHAIN_START,
            expected: 1,
            started_after: 0,
            last: None,
            verified: 0,
            checkpoints: 0,
            last_checkpoint: None,
        }
    }

    fn check_signature(&self, checkpoint: &crate::AuditCheckpoint) -> Result<(), ChainFault> {
        if self.keys.verify(checkpoint) {
            Ok(())
        } else {
            Err(ChainFault::Forged { seq: checkpoint.seq, kid: checkpoint.kid.clone() })
        }
    }

    /// The next record of the chain.
    pub fn record(&mut self, record: &crate::ChainedRecord) -> Result<(), ChainFault> {
        let Some(seq) = record.seq else {
            return Err(ChainFault::Inserted { id: record.id, occurred_at: record.occurred_at });
        };
        if seq != self.expected {
            return Err(ChainFault::Deleted {
                seq: self.expected,
                after_id: self.last.map(|(id, _)| id),
                after_occurred_at: self.last.map(|(_, at)| at),
            });
        }
        let computed = record.fields().link(&self.previous, seq);
        if record.hash.as_deref() != Some(&computed[..]) {
            return Err(ChainFault::Altered { seq, id: record.id, occurred_at: record.occurred_at });
        }
        self.previous = computed;
        self.last = Some((record.id, record.occurred_at));
        self.expected += 1;
        self.verified += 1;
        Ok(())
    }

    /// A checkpoint; it must come right after the record at its place.
    pub fn checkpoint(&mut self, checkpoint: &crate::AuditCheckpoint) -> Result<(), ChainFault> {
        self.check_signature(checkpoint)?;
        if checkpoint.seq != self.expected - 1 {
            // Its record was not the last one fed: past the end of what the walk saw.
            return Err(ChainFault::CutOff {
                seq: checkpoint.seq,
                signed_at: checkpoint.signed_at,
                last_seq: self.expected - 1,
            });
        }
        if checkpoint.hash != self.previous {
            let (id, occurred_at) = self.last.unwrap_or_default();
            return Err(ChainFault::Rewritten {
                seq: checkpoint.seq,
                after_seq: self.last_checkpoint.map_or(self.started_after, |(seq, _)| seq),
                id,
                occurred_at,
                signed_at: checkpoint.signed_at,
            });
        }
        self.checkpoints += 1;
        self.last_checkpoint = Some((checkpoint.seq, checkpoint.signed_at));
        Ok(())
    }

    /// The place of the last record that fit.
    pub fn last_seq(&self) -> i64 {
        self.expected - 1
    }

    /// The end of the walk: the chain must reach `head` (where the store, or the export, says
    /// it ends) with the same hash.
    pub fn finish(&self, head: &ChainHead) -> Result<(), ChainFault> {
        let last_seq = self.last_seq();
        if last_seq != head.seq || self.previous != head.hash {
            return Err(ChainFault::Truncated { last_seq, head_seq: head.seq });
        }
        Ok(())
    }

    /// What the walk found, ending in `fault` (or none).
    pub fn report(&self, fault: Option<ChainFault>) -> ChainReport {
        let signed_up_to = self.last_checkpoint.map_or(self.started_after, |(seq, _)| seq);
        ChainReport {
            verified: self.verified,
            checkpoints: self.checkpoints,
            last_checkpoint: self.last_checkpoint,
            unsigned: u64::try_from(self.last_seq() - signed_up_to).unwrap_or(0),
            started_after: self.started_after,
            fault,
        }
    }
}

/// One step of the chain in order.
pub(crate) enum ChainItem<'a> {
    Record(&'a crate::ChainedRecord),
    Checkpoint(&'a crate::AuditCheckpoint),
}

/// Records read per step of a walk.
const VERIFY_STEP: i64 = 5000;

impl crate::ChainedRecord {
    /// The hash this record has after `previous` at its place (none without a place). Public
    /// so that anyone can check a chain by hand; no secret is involved, which is why the
    /// checkpoints are signed.
    pub fn chain_hash(&self, previous: &ChainHash) -> Option<ChainHash> {
        self.seq.map(|seq| self.fields().link(previous, seq))
    }

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
    /// Walks the chain in order, a page at a time (bounded memory), with its signed
    /// checkpoints, and reports the first record that does not fit: altered, deleted, inserted
    /// or moved, a cut tail, a forged checkpoint or a rewritten stretch.
    pub async fn verify_audit_chain(&self, keys: &crate::CheckpointKeys, from: VerifyFrom) -> Result<ChainReport> {
        // The chain as far as its head says now; records appended while the walk goes on are
        // past it, and are left for the next walk.
        let head = self.audit_chain_head().await?;
        let anchor = self.walk_anchor(from).await?;
        let mut walk = match ChainWalk::new(keys, anchor.as_ref()) {
            Ok(walk) => walk,
            Err(fault) => return Ok(ChainWalk::from_start(keys).report(Some(fault))),
        };
        let outcome = self.walk_stored(&mut walk, &head).await?;
        if let Err(fault) = outcome {
            return Ok(walk.report(Some(fault)));
        }
        // Records without a place, past the head, or (in a pruned trail walked from its start)
        // at or before its base were put there by hand. The head is read again in the same
        // statement (one snapshot): the chain may have grown meanwhile.
        let base_seq = match (from, &anchor) {
            (VerifyFrom::Start, Some(base)) => base.seq,
            _ => 0,
        };
        let outside: Option<(i64, i64)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, occurred_at FROM audit_events WHERE seq IS NULL OR seq <= $1 \
             OR seq > (SELECT h.seq FROM audit_chain_head h WHERE h.id = 1) ORDER BY id LIMIT 1")
            .bind(base_seq)
            .fetch_optional(pool)
            .await?);
        Ok(walk.report(outside.map(|(id, occurred_at)| ChainFault::Inserted { id, occurred_at })))
    }

    /// Feeds the stored chain after the walk's start up to `head` to `walk`, then checks it
    /// reaches the head.
    async fn walk_stored(
        &self,
        walk: &mut ChainWalk<'_>,
        head: &ChainHead,
    ) -> Result<std::result::Result<(), ChainFault>> {
        let visited = self
            .stream_chain(walk.last_seq(), head.seq, |item| {
                let fit = match item {
                    ChainItem::Record(record) => walk.record(record),
                    ChainItem::Checkpoint(checkpoint) => walk.checkpoint(checkpoint),
                };
                fit.map_or_else(ControlFlow::Break, ControlFlow::Continue)
            })
            .await?;
        Ok(match visited {
            ControlFlow::Break(fault) => Err(fault),
            ControlFlow::Continue(()) => walk.finish(head),
        })
    }

    /// Hands `visit` the stored chain after place `after` up to `head_seq`, in order, a page
    /// at a time: each record, each checkpoint right after the record at its place, and last
    /// the checkpoints past where the records end (they show a cut tail). Stops when `visit`
    /// breaks.
    pub(crate) async fn stream_chain<B>(
        &self,
        after: i64,
        head_seq: i64,
        mut visit: impl FnMut(ChainItem<'_>) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>> {
        let mut from = after + 1;
        while from <= head_seq {
            let rows: Vec<crate::ChainedRecord> = on_reader!(self, pool => sqlx::query_as(
                "SELECT * FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3")
                .bind(from)
                .bind(head_seq)
                .bind(VERIFY_STEP)
                .fetch_all(pool)
                .await?);
            let Some(last) = rows.last().and_then(|r| r.seq) else { break };
            let checkpoints = self.audit_checkpoints_between(from, last).await?;
            let mut checkpoints = checkpoints.iter().peekable();
            for row in &rows {
                if let ControlFlow::Break(b) = visit(ChainItem::Record(row)) {
                    return Ok(ControlFlow::Break(b));
                }
                while let Some(checkpoint) = checkpoints.next_if(|c| Some(c.seq) <= row.seq) {
                    if let ControlFlow::Break(b) = visit(ChainItem::Checkpoint(checkpoint)) {
                        return Ok(ControlFlow::Break(b));
                    }
                }
            }
            from = last + 1;
        }
        for checkpoint in self.audit_checkpoints_between(from, i64::MAX).await? {
            if let ControlFlow::Break(b) = visit(ChainItem::Checkpoint(&checkpoint)) {
                return Ok(ControlFlow::Break(b));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The checkpoint a walk starts from: the latest base (where a pruned trail starts), or,
    /// from a time, the latest checkpoint before the first record at or after it.
    pub(crate) async fn walk_anchor(&self, from: VerifyFrom) -> Result<Option<crate::AuditCheckpoint>> {
        let base = self.audit_base_checkpoint().await?;
        let VerifyFrom::Time(at) = from else { return Ok(base) };
        let first: Option<i64> = on_reader!(self, pool => sqlx::query_scalar(
            "SELECT MIN(seq) FROM audit_events WHERE occurred_at >= $1")
            .bind(at)
            .fetch_one(pool)
            .await?);
        let before = first.map_or(i64::MAX, |seq| seq - 1);
        let latest = self.latest_audit_checkpoint_at_or_before(before).await?;
        Ok(match (base, latest) {
            (Some(base), Some(latest)) if latest.seq < base.seq => Some(base),
            (base, None) => base,
            (_, latest) => latest,
        })
    }

    /// Where the chain ends and the hash there.
    pub async fn audit_chain_head(&self) -> Result<ChainHead> {
        let (seq, hash): (i64, Vec<u8>) = on_reader!(self, pool => sqlx::query_as(
            "SELECT seq, hash FROM audit_chain_head WHERE id = 1")
            .fetch_one(pool)
            .await?);
        Ok(ChainHead { seq, hash: stored_hash(&hash, || "audit_chain_head".to_owned())? })
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
                    let rows: Vec<crate::ChainedRecord> =
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
