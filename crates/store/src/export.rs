//! The audit trail as JSON lines that verify on their own.
//!
//! ```text
//! {"type":"header","format":"portcullis-audit-export/1","exported_at":…,"keys":[JWK…],"anchor":null|checkpoint}
//! {"type":"record",…every stored field, with "seq" and "hash"…}
//! {"type":"checkpoint","kind":"periodic","seq":…,"hash":…,"signed_at":…,"kid":…,"signature":…}
//! {"type":"end","head_seq":…,"head_hash":…}
//! ```
//!
//! Records keep their stored values exactly (times as Unix seconds, text as text), because the
//! hashes are over those. Each checkpoint follows the record at its place. The header carries
//! the public audit keys so that anyone can check the export with nothing else; whoever wants
//! to know the keys are the installation's compares their ids with `portcullis audit keys`, or
//! pins them (`audit verify --file … --keys …`). The same [`ChainWalk`] checks a file as
//! checks the database: one set of rules.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use portcullis_crypto::{ChainHash, PublicKey};
use portcullis_types::wire::Jwk;

use crate::chain::ChainItem;
use crate::{
    AuditCheckpoint, ChainHead, ChainReport, ChainWalk, ChainedRecord, CheckpointKeys, CheckpointKind, Store,
    StoreError, VerifyFrom,
};

/// The `format` of the header line.
pub const EXPORT_FORMAT: &str = "portcullis-audit-export/1";

/// Byte strings (hashes, signatures) as lower-case hex.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|h| hex::decode(h).map_err(serde::de::Error::custom)).transpose()
    }
}

/// The first line of an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportHeader {
    pub format: String,
    /// Unix seconds.
    pub exported_at: i64,
    /// The public audit keys that signed its checkpoints.
    pub keys: Vec<Jwk>,
    /// The checkpoint the export starts after (a pruned trail's base, or where `--from` put
    /// it); none when it starts at the first record.
    pub anchor: Option<CheckpointLine>,
}

/// A checkpoint as written in an export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointLine {
    pub kind: String,
    pub seq: i64,
    pub hash: String,
    pub signed_at: i64,
    pub kid: String,
    pub signature: String,
}

impl From<&AuditCheckpoint> for CheckpointLine {
    fn from(c: &AuditCheckpoint) -> Self {
        Self {
            kind: c.kind.as_str().to_owned(),
            seq: c.seq,
            hash: hex::encode(c.hash),
            signed_at: c.signed_at,
            kid: c.kid.clone(),
            signature: hex::encode(&c.signature),
        }
    }
}

impl CheckpointLine {
    fn parse(&self, line: u64) -> Result<AuditCheckpoint, ExportError> {
        let malformed = |what: &'static str| ExportError::Malformed { line, what };
        let hash: ChainHash = hex::decode(&self.hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or(malformed("a checkpoint's hash is not 32 bytes of hex"))?;
        Ok(AuditCheckpoint {
            kind: CheckpointKind::parse(&self.kind).ok_or(malformed("a checkpoint's kind is not periodic or base"))?,
            seq: self.seq,
            hash,
            signed_at: self.signed_at,
            kid: self.kid.clone(),
            signature: hex::decode(&self.signature).map_err(|_| malformed("a checkpoint's signature is not hex"))?,
        })
    }
}

/// One line of an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    Header(ExportHeader),
    Record(Box<ChainedRecord>),
    Checkpoint(CheckpointLine),
    /// Where the chain ended when it was exported.
    End {
        head_seq: i64,
        head_hash: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not read or write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line} of the export is not an export line: {source}")]
    Json { line: u64, source: serde_json::Error },
    #[error("line {line} of the export: {what}")]
    Malformed { line: u64, what: &'static str },
    #[error("the export does not start with a {EXPORT_FORMAT} header")]
    NoHeader,
    #[error("a key in the export's header is not a P-256 public key: {0}")]
    Key(String),
    #[error("the export ends after line {lines} without its end line: it was cut short")]
    Unterminated { lines: u64 },
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub records: u64,
    pub checkpoints: u64,
    pub head_seq: i64,
}

fn write_line(out: &mut impl Write, line: &ExportLine) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

impl Store {
    /// Writes the chain (from its start, or from the checkpoint `from` chooses) up to its
    /// current head as JSON lines to `out`, a page at a time.
    pub async fn export_audit(
        &self,
        out: &mut impl Write,
        from: VerifyFrom,
        keys: &CheckpointKeys,
        exported_at: i64,
    ) -> Result<ExportSummary, ExportError> {
        let head = self.audit_chain_head().await?;
        let anchor = self.walk_anchor(from).await?;
        let header = ExportHeader {
            format: EXPORT_FORMAT.to_owned(),
            exported_at,
            keys: keys.iter().map(PublicKey::jwk).collect(),
            anchor: anchor.as_ref().map(CheckpointLine::from),
        };
        write_line(out, &ExportLine::Header(header))?;
        let mut summary = ExportSummary { records: 0, checkpoints: 0, head_seq: head.seq };
        let written = self
            .stream_chain(anchor.as_ref().map_or(0, |a| a.seq), head.seq, |item| {
                let (line, count) = match item {
                    ChainItem::Record(r) => (ExportLine::Record(Box::new(r.clone())), &mut summary.records),
                    // A checkpoint past the head was signed after the head was read; the next
                    // export carries it.
                    ChainItem::Checkpoint(c) if c.seq > head.seq => return ControlFlow::Continue(()),
                    ChainItem::Checkpoint(c) => (ExportLine::Checkpoint(c.into()), &mut summary.checkpoints),
                };
                *count += 1;
                write_line(out, &line).map_or_else(ControlFlow::Break, ControlFlow::Continue)
            })
            .await?;
        if let ControlFlow::Break(e) = written {
            return Err(e.into());
        }
        write_line(out, &ExportLine::End { head_seq: head.seq, head_hash: hex::encode(head.hash) })?;
        out.flush()?;
        Ok(summary)
    }
}

/// Checks an export line by line (bounded memory) with the same rules as the store's walk.
/// The keys are those of its header, or `pinned` when given (then a checkpoint signed by any
/// other key is forged). Returns the header and what the walk found.
pub fn verify_export(
    input: impl BufRead,
    pinned: Option<&CheckpointKeys>,
) -> Result<(ExportHeader, ChainReport), ExportError> {
    let mut lines = input.lines();
    let mut number = 0_u64;
    let mut next = || -> Result<Option<ExportLine>, ExportError> {
        let Some(text) = lines.next().transpose()? else { return Ok(None) };
        number += 1;
        let line = number;
        serde_json::from_str(&text).map(Some).map_err(|source| ExportError::Json { line, source })
    };
    let header = match next()? {
        Some(ExportLine::Header(h)) if h.format == EXPORT_FORMAT => h,
        _ => return Err(ExportError::NoHeader),
    };
    let own_keys;
    let keys = match pinned {
        Some(keys) => keys,
        None => {
            let keys: Result<Vec<PublicKey>, _> =
                header.keys.iter().map(|k| PublicKey::from_p256_jwk(&k.x, &k.y, None)).collect();
            own_keys = CheckpointKeys::new(keys.map_err(|e| ExportError::Key(e.to_string()))?);
            &own_keys
        }
    };
    let anchor = header.anchor.as_ref().map(|a| a.parse(1)).transpose()?;
    let mut walk = match ChainWalk::new(keys, anchor.as_ref()) {
        Ok(walk) => walk,
        Err(fault) => return Ok((header, ChainWalk::from_start(keys).report(Some(fault)))),
    };
    let mut line_number = 1_u64;
    loop {
        let line = next()?;
        line_number += 1;
        let fit = match line {
            None => return Err(ExportError::Unterminated { lines: line_number - 1 }),
            Some(ExportLine::Header(_)) => {
                return Err(ExportError::Malformed { line: line_number, what: "a second header" });
            }
            Some(ExportLine::Record(record)) => walk.record(&record),
            Some(ExportLine::Checkpoint(c)) => walk.checkpoint(&c.parse(line_number)?),
            Some(ExportLine::End { head_seq, head_hash }) => {
                let hash: ChainHash =
                    hex::decode(&head_hash).ok().and_then(|h| h.try_into().ok()).ok_or(ExportError::Malformed {
                        line: line_number,
                        what: "the head's hash is not 32 bytes of hex",
                    })?;
                let end = walk.finish(&ChainHead { seq: head_seq, hash });
                let report = walk.report(end.err());
                return Ok((header, report));
            }
        };
        if let Err(fault) = fit {
            return Ok((header, walk.report(Some(fault))));
        }
    }
}
