//! The signing keys in memory. The store holds them sealed by the master key; this ring holds
//! the opened keys, signs with the newest, verifies with any published one, and reloads from the
//! store so that a key rotated on one node (or by the CLI) is picked up by all.

use std::sync::{Arc, RwLock};

use portcullis_control::{Actor, Control, ControlError};
use portcullis_crypto::{CryptoError, MasterKey, SigningKey};
use portcullis_store::{SigningKeyRecord, Store, StoreError};
use portcullis_types::wire::JwkSet;

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("signing key {kid} cannot be opened: {source}. Is this the master key the keys were created with?")]
    Open { kid: String, source: CryptoError },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("there is no active signing key; run `portcullis keys rotate`")]
    NoActiveKey,
}

#[derive(Default)]
struct Keys {
    /// Newest first; the first is the signing key.
    published: Vec<Arc<SigningKey>>,
    signing: Option<Arc<SigningKey>>,
}

#[derive(Clone)]
pub struct KeyRing {
    master: Arc<MasterKey>,
    keys: Arc<RwLock<Keys>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyRing(..)")
    }
}

fn seal_context(kid: &str) -> Vec<u8> {
    format!("portcullis/signing-key/{kid}").into_bytes()
}

impl KeyRing {
    pub fn new(master: Arc<MasterKey>) -> Self {
        Self { master, keys: Arc::default() }
    }

    /// The master key, for what else is sealed at rest (the token vault).
    pub fn master(&self) -> &Arc<MasterKey> {
        &self.master
    }

    /// Makes sure there is an active key (generating the first one on first start) and loads.
    /// Nodes that start together on an empty database may each generate one: the keys they
    /// retire stay published for `token_lifetime`, so every node's first tokens verify
    /// everywhere until the nodes agree on the newest key (the change feed tells them).
    pub async fn initialize(&self, control: &Control, now: i64, token_lifetime: i64) -> Result<(), KeyRingError> {
        let store = control.store();
        if !store.published_signing_keys(now).await?.iter().any(|k| k.retired_at.is_none()) {
            self.rotate(control, &Actor::System, now, now.saturating_add(token_lifetime)).await?;
            tracing::info!("generated the first signing key");
        }
        self.reload(store, now).await
    }

    /// Adds a new signing key; the previous ones stay published until `old_publish_until`.
    pub async fn rotate(
        &self,
        control: &Control,
        actor: &Actor,
        now: i64,
        old_publish_until: i64,
    ) -> Result<String, KeyRingError> {
        let key = SigningKey::generate()?;
        let sealed = self.master.seal(key.pkcs8_der(), &seal_context(key.kid()))?;
        let record = SigningKeyRecord {
            kid: key.kid().to_owned(),
            alg: SigningKey::ALG.to_owned(),
            private_key_sealed: sealed,
            created_at: now,
            retired_at: None,
            publish_until: None,
        };
        let kid = record.kid.clone();
        control.add_signing_key(actor, record, old_publish_until).await?;
        Ok(kid)
    }

    /// Re-reads the published keys from the store.
    pub async fn reload(&self, store: &Store, now: i64) -> Result<(), KeyRingError> {
        let records = store.published_signing_keys(now).await?;
        let mut published = Vec::with_capacity(records.len());
        let mut signing = None;
        {
            let current = self.keys.read().map_err(|_| KeyRingError::NoActiveKey)?;
            for record in records {
                // Reuse already-opened keys: opening is cheap but not free.
                let key = match current.published.iter().find(|k| k.kid() == record.kid) {
                    Some(k) => Arc::clone(k),
                    None => {
                        let der = self
                            .master
                            .open(&record.private_key_sealed, &seal_context(&record.kid))
                            .map_err(|source| KeyRingError::Open { kid: record.kid.clone(), source })?;
                        Arc::new(SigningKey::from_pkcs8(&der)?)
                    }
                };
                if record.retired_at.is_none() && signing.is_none() {
                    signing = Some(Arc::clone(&key));
                }
                published.push(key);
            }
        }
        let signing = signing.ok_or(KeyRingError::NoActiveKey)?;
        let mut keys = self.keys.write().map_err(|_| KeyRingError::NoActiveKey)?;
        *keys = Keys { published, signing: Some(signing) };
        Ok(())
    }

    pub fn signing_key(&self) -> Result<Arc<SigningKey>, KeyRingError> {
        self.keys.read().ok().and_then(|k| k.signing.clone()).ok_or(KeyRingError::NoActiveKey)
    }

    pub fn published(&self) -> Vec<Arc<SigningKey>> {
        self.keys.read().map(|k| k.published.clone()).unwrap_or_default()
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.published().iter().map(|k| k.public_jwk()).collect() }
    }
}

/// Portcullis's `private_key_jwt` client assertions toward identity providers, signed with the
/// current signing key (so the provider verifies them from `<issuer>/jwks.json`, and rotation
/// needs nothing more). They are typed `JWT`, name the provider's token endpoint as their only
/// audience, and live one minute, so none can pass for an access or ID token of ours.
#[derive(Clone)]
pub struct IdentityProviderAssertions {
    pub keys: KeyRing,
    pub clock: Arc<dyn portcullis_types::Clock>,
}

impl portcullis_sso::ClientAssertionSigner for IdentityProviderAssertions {
    fn client_assertion(&self, client_id: &str, audience: &str) -> Result<String, String> {
        let now = self.clock.now();
        let claims = portcullis_types::wire::ClientAssertionClaims {
            iss: client_id.to_owned(),
            sub: client_id.to_owned(),
            aud: audience.to_owned(),
            jti: portcullis_crypto::random_token(18).map_err(|e| e.to_string())?,
            iat: now,
            exp: now + 60,
        };
        let key = self.keys.signing_key().map_err(|e| e.to_string())?;
        portcullis_crypto::sign_jwt(&key, "JWT", &claims).map_err(|e| e.to_string())
    }
}
