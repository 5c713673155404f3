//! The audit trail's signing: the dedicated audit key (sealed by the master key like every
//! other key), the signed checkpoints every serving node writes at an interval, the keys a
//! verification trusts, and pruning, which leaves a signed base so the rest still verifies.

use portcullis_crypto::{MasterKey, PublicKey, SigningKey};
use portcullis_store::{
    AuditCheckpoint, AuditKind, AuditSigningKeyRecord, CheckpointKeys, CheckpointKind, PruneReport, Store, VerifyFrom,
};

use crate::{Actor, Control, ControlError, Result};

fn seal_context(kid: &str) -> Vec<u8> {
    format!("portcullis/audit-signing-key/{kid}").into_bytes()
}

/// Signs audit checkpoints with this installation's audit key.
pub struct AuditSigner {
    key: SigningKey,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner").field("kid", &self.key.kid()).finish()
    }
}

/// The audit keys stored and sealed by the master key, and any stored key that does not open
/// with it (put there by someone without the master key, or sealed by another installation's):
/// those are not trusted, and what they signed counts as forged.
#[derive(Debug)]
pub struct TrustedAuditKeys {
    pub keys: CheckpointKeys,
    pub untrusted: Vec<String>,
}

/// The stored audit keys that open with `master`.
pub async fn trusted_audit_keys(store: &Store, master: &MasterKey) -> Result<TrustedAuditKeys> {
    let mut keys = Vec::new();
    let mut untrusted = Vec::new();
    for record in store.audit_signing_keys().await? {
        match open_audit_key(master, &record) {
            Some(key) => keys.push(public_of(&key)?),
            None => untrusted.push(record.kid),
        }
    }
    Ok(TrustedAuditKeys { keys: CheckpointKeys::new(keys), untrusted })
}

/// A stored audit key, if it opens with `master` and its id is its own thumbprint (else a row
/// could claim another key's id): the one rule for which stored keys count.
fn open_audit_key(master: &MasterKey, record: &AuditSigningKeyRecord) -> Option<SigningKey> {
    let der = master.open(&record.private_key_sealed, &seal_context(&record.kid)).ok()?;
    SigningKey::from_pkcs8(&der).ok().filter(|key| key.kid() == record.kid)
}

fn public_of(key: &SigningKey) -> Result<PublicKey> {
    let jwk = key.public_jwk();
    Ok(PublicKey::from_p256_jwk(&jwk.x, &jwk.y, Some(key.kid()))?)
}

impl AuditSigner {
    /// The newest audit key that opens with `master`, made (and stored sealed) on first use.
    pub async fn load_or_create(store: &Store, master: &MasterKey, now: i64) -> Result<Self> {
        if let Some(key) = store.audit_signing_keys().await?.iter().find_map(|record| open_audit_key(master, record)) {
            return Ok(Self { key });
        }
        let key = SigningKey::generate()?;
        let record = AuditSigningKeyRecord {
            kid: key.kid().to_owned(),
            private_key_sealed: master.seal(key.pkcs8_der(), &seal_context(key.kid()))?,
            created_at: now,
        };
        store.add_audit_signing_key(&record).await?;
        tracing::info!(kid = key.kid(), "generated the audit signing key");
        Ok(Self { key })
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// A signed checkpoint for place `seq`, whose hash is `hash`.
    pub fn sign(
        &self,
        kind: CheckpointKind,
        seq: i64,
        hash: portcullis_crypto::ChainHash,
        signed_at: i64,
    ) -> Result<AuditCheckpoint> {
        let mut checkpoint =
            AuditCheckpoint { kind, seq, hash, signed_at, kid: self.key.kid().to_owned(), signature: Vec::new() };
        checkpoint.signature = self.key.sign_bytes(&checkpoint.message())?;
        Ok(checkpoint)
    }

    /// Signs the chain's head if it moved since the last checkpoint. Several nodes may race to
    /// sign the same head; one checkpoint per place is kept. Returns what was written.
    pub async fn checkpoint(&self, store: &Store, now: i64) -> Result<Option<AuditCheckpoint>> {
        let head = store.audit_chain_head().await?;
        let latest = store.latest_audit_checkpoint_at_or_before(i64::MAX).await?;
        if head.seq == 0 || latest.is_some_and(|c| c.seq >= head.seq) {
            return Ok(None);
        }
        let checkpoint = self.sign(CheckpointKind::Periodic, head.seq, head.hash, now)?;
        Ok(store.add_audit_checkpoint(&checkpoint).await?.then_some(checkpoint))
    }
}

impl Control {
    /// Removes the audit records before `before` (Unix seconds), after checking the whole
    /// trail is intact (a prune must not destroy the evidence of tampering), leaving a signed
    /// base checkpoint and an `audit.pruned` record.
    pub async fn prune_audit(
        &self,
        actor: &Actor,
        signer: &AuditSigner,
        keys: &CheckpointKeys,
        before: i64,
    ) -> Result<PruneReport> {
        let report = self.store.verify_audit_chain(keys, VerifyFrom::Start).await?;
        if let Some(fault) = report.fault {
            return Err(ControlError::AuditTampered(fault));
        }
        let now = self.clock.now();
        let event = portcullis_store::NewAuditEvent {
            target: Some(format!("before {before}")),
            ..self.event(AuditKind::AuditPruned, actor)
        };
        let report = self
            .store
            .prune_audit(
                before,
                |seq, hash| signer.sign(CheckpointKind::Base, seq, hash, now).map_err(|e| e.to_string()),
                &event,
            )
            .await?;
        Ok(report)
    }
}
