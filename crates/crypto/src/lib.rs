//! Cryptography for Portcullis, behind one small API.
//!
//! Only this crate touches raw key material. It wraps aws-lc-rs (randomness, digests, AEAD,
//! HMAC, ECDSA key generation), jsonwebtoken (JWS signing and verification with the algorithm
//! pinned to the key) and argon2 (password hashing), so that the backends can change without
//! the rest of the workspace noticing.

mod chain;
mod jwt;
mod keys;
mod password;
mod secret;
mod vault;

pub use chain::{CHAIN_START, ChainHash, chain_link, checkpoint_message};
pub use jwt::{
    ForeignAlgorithm, ForeignKeys, JwtError, VerifiedJwt, sign_jwt, unverified_kid, unverified_string_claim,
    verify_foreign_jwt, verify_jwt,
};
pub use keys::{MasterKey, PublicKey, SigningKey};
pub use password::{PasswordCheckError, PasswordHasher, PasswordParams};
pub use secret::{
    SecretDigest, ct_eq, digest, is_valid_code_verifier, is_valid_s256_challenge, pkce_s256_matches, random_identifier,
    random_token, time_ordered_id,
};
pub use vault::{UpstreamTokens, VaultBinding};

/// Failures of the cryptographic layer. None of them carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("could not generate a signing key")]
    KeyGeneration,
    #[error("stored key material is malformed: {0}")]
    MalformedKey(&'static str),
    #[error("encrypted data could not be decrypted: wrong master key or tampered data")]
    Decrypt,
    #[error("could not sign a token: {0}")]
    Sign(String),
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
}
