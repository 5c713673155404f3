//! Password hashing with Argon2id.
//!
//! Hashing is deliberately slow, so it runs on the blocking pool behind a semaphore: a flood of
//! logins queues for a bounded number of hashing slots instead of starving the async workers.
//! Unknown users are checked against a dummy hash so that a failed login takes the same time
//! whether or not the account exists.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::CryptoError;
use crate::secret::random_bytes;

/// Argon2id cost parameters. The default is OWASP's first recommendation:
/// m = 19 MiB, t = 2, p = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

/// Hashes and verifies passwords off the async threads, a bounded number at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    slots: Arc<tokio::sync::Semaphore>,
    dummy_hash: Arc<String>,
    queue_timeout: Duration,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("slots", &self.slots.available_permits()).finish_non_exhaustive()
    }
}

/// Why a password check produced no verdict.
#[derive(Debug, thiserror::Error)]
pub enum PasswordCheckError {
    #[error("too many sign-ins are being checked right now; try again shortly")]
    Busy,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl PasswordHasher {
    pub fn new(params: PasswordParams, concurrent: usize, queue_timeout: Duration) -> Result<Self, CryptoError> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon2, "portcullis-dummy-password")?;
        Ok(Self {
            argon2: Arc::new(argon2),
            slots: Arc::new(tokio::sync::Semaphore::new(concurrent.max(1))),
            dummy_hash: Arc::new(dummy_hash),
            queue_timeout,
        })
    }

    /// Hashes synchronously; for the CLI, which has nothing else to do meanwhile.
    pub fn hash_blocking(&self, password: &str) -> Result<String, CryptoError> {
        hash_with(&self.argon2, password)
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordCheckError> {
        let _permit = self.acquire().await?;
        let argon2 = Arc::clone(&self.argon2);
        tokio::task::spawn_blocking(move || hash_with(&argon2, &password))
            .await
            .map_err(|e| CryptoError::PasswordHash(e.to_string()))?
            .map_err(Into::into)
    }

    /// Checks `password` against `stored` (a PHC string), or against a dummy hash when there
    /// is no such account, so both cases cost the same.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, PasswordCheckError> {
        let _permit = self.acquire().await?;
        let argon2 = Arc::clone(&self.argon2);
        let account_exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc).is_ok_and(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
        Ok(matched && account_exists)
    }

    async fn acquire(&self) -> Result<tokio::sync::OwnedSemaphorePermit, PasswordCheckError> {
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(PasswordCheckError::Busy),
        }
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, CryptoError> {
    let salt_bytes = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() -> Result<(), Box<dyn std::error::Error>> {
        let hasher = PasswordHasher::new(
            PasswordParams { memory_kib: 1024, iterations: 1, parallelism: 1 },
            2,
            Duration::from_secs(5),
        )?;
        let hash = hasher.hash("correct horse".into()).await?;
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(hasher.verify("correct horse".into(), Some(hash.clone())).await?);
        assert!(!hasher.verify("wrong".into(), Some(hash)).await?);
        assert!(!hasher.verify("portcullis-dummy-password".into(), None).await?);
        Ok(())
    }

    #[tokio::test]
    async fn a_flood_waits_for_a_bounded_time_then_is_told_busy() -> Result<(), Box<dyn std::error::Error>> {
        // One hashing slot, no queueing: while one check runs, the next is refused at once
        // instead of piling up work on the blocking pool.
        let hasher =
            PasswordHasher::new(PasswordParams { memory_kib: 8192, iterations: 4, parallelism: 1 }, 1, Duration::ZERO)?;
        let hash = hasher.hash("correct horse".into()).await?;
        let permit = std::sync::Arc::clone(&hasher.slots).acquire_owned().await?;
        assert!(matches!(
            hasher.verify("correct horse".into(), Some(hash.clone())).await,
            Err(PasswordCheckError::Busy)
        ));
        drop(permit);
        assert!(hasher.verify("correct horse".into(), Some(hash)).await?);
        Ok(())
    }

    #[test]
    fn default_parameters_are_owasp() {
        assert_eq!(PasswordParams::default(), PasswordParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }
}
