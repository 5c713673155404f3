//! Signing keys and the master key that protects them at rest.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_jwk::PublicJwk;

use crate::CryptoError;
use crate::secret::{ct_eq, random_bytes};

mod portcullis_jwk {
    /// The public half of a P-256 key as JWK coordinates.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PublicJwk {
        pub x: String,
        pub y: String,
    }
}

/// The key-encryption key: 32 random bytes kept outside the database (a 0600 file in the data
/// directory, or an environment variable). It encrypts signing keys at rest and keys the HMACs
/// that bind CSRF tokens.
pub struct MasterKey {
    aead: LessSafeKey,
    hmac: hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub const LEN: usize = 32;

    pub fn generate_bytes() -> Result<[u8; 32], CryptoError> {
        random_bytes::<32>()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != Self::LEN {
            return Err(CryptoError::MalformedKey("the master key must be exactly 32 bytes"));
        }
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::MalformedKey("master key"))?,
        );
        // Separate the HMAC key from the AEAD key by deriving it under its own label.
        let derive = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let hmac_bytes = hmac::sign(&derive, b"portcullis/v1/hmac-key");
        let hmac = hmac::Key::new(hmac::HMAC_SHA256, hmac_bytes.as_ref());
        Ok(Self { aead, hmac })
    }

    /// AES-256-GCM with a random 96-bit nonce, laid out as `nonce || ciphertext || tag`.
    /// `context` is bound as associated data, so a blob cannot be moved to another row.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut buf = plaintext.to_vec();
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(context), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
        let mut buf = ciphertext.to_vec();
        let plain = self.aead.open_in_place(nonce, Aad::from(context), &mut buf).map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }

    /// A MAC over `purpose` and `binding`, base64url. Used for CSRF tokens bound to a browser.
    pub fn mac(&self, purpose: &str, binding: &str) -> String {
        let mut msg = Vec::with_capacity(purpose.len() + binding.len() + 1);
        msg.extend_from_slice(purpose.as_bytes());
        msg.push(0);
        msg.extend_from_slice(binding.as_bytes());
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.hmac, &msg))
    }

    pub fn verify_mac(&self, purpose: &str, binding: &str, presented: &str) -> bool {
        ct_eq(self.mac(purpose, binding).as_bytes(), presented.as_bytes())
    }
}

/// A P-256 public key that verifies ES256 signatures: ours, or a trusted third party's.
pub struct PublicKey {
    kid: String,
    decoding: jsonwebtoken::DecodingKey,
    /// The uncompressed SEC1 point, for signatures over raw messages (audit checkpoints).
    point: Vec<u8>,
    jwk: PublicJwk,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl PublicKey {
    /// From JWK coordinates (base64url `x` and `y` of a P-256 point). Without a `kid`, the
    /// RFC 7638 thumbprint is used.
    pub fn from_p256_jwk(x: &str, y: &str, kid: Option<&str>) -> Result<Self, CryptoError> {
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(x, y)
            .map_err(|_| CryptoError::MalformedKey("public key components"))?;
        let coordinate = |c: &str| match URL_SAFE_NO_PAD.decode(c) {
            Ok(bytes) if bytes.len() == 32 => Ok(bytes),
            _ => Err(CryptoError::MalformedKey("a P-256 coordinate is 32 bytes, base64url")),
        };
        let mut point = vec![0x04];
        point.extend(coordinate(x)?);
        point.extend(coordinate(y)?);
        Ok(Self {
            kid: kid.map(str::to_owned).unwrap_or_else(|| thumbprint(x, y)),
            decoding,
            point,
            jwk: PublicJwk { x: x.to_owned(), y: y.to_owned() },
        })
    }

    /// The RFC 7638 thumbprint of the key itself, whatever `kid` it was given.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.jwk.x, &self.jwk.y)
    }

    /// As a JWK (`alg` ES256, `use` sig).
    pub fn jwk(&self) -> portcullis_types::wire::Jwk {
        portcullis_types::wire::Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: self.jwk.x.clone(),
            y: self.jwk.y.clone(),
            kid: self.kid.clone(),
            use_: "sig".into(),
            alg: SigningKey::ALG.into(),
        }
    }

    /// Whether `signature` (64 bytes, r || s) is this key's ECDSA P-256 SHA-256 signature of
    /// `message`.
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point).verify(message, signature).is_ok()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn decoding_key(&self) -> &jsonwebtoken::DecodingKey {
        &self.decoding
    }
}

/// An ES256 signing key. The private half is PKCS#8 DER and never leaves this crate except
/// sealed by the master key.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: PublicJwk,
    /// Parsed once: parsing PKCS#8 derives the public point (a scalar multiplication), which
    /// would double the cost of every signature if done per token.
    pair: EcdsaKeyPair,
    verifying: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub const ALG: &'static str = "ES256";

    pub fn generate() -> Result<Self, CryptoError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| CryptoError::KeyGeneration)?;
        let der = pair.to_pkcs8v1().map_err(|_| CryptoError::KeyGeneration)?;
        Self::from_pkcs8(der.as_ref())
    }

    /// Loads a key from PKCS#8 DER (as produced by [`SigningKey::generate`]).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| CryptoError::MalformedKey("not a P-256 PKCS#8 key"))?;
        let point = pair.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
        if point.len() != 65 || point.first() != Some(&0x04) {
            return Err(CryptoError::MalformedKey("unexpected public key encoding"));
        }
        let x = URL_SAFE_NO_PAD.encode(point.get(1..33).ok_or(CryptoError::MalformedKey("x"))?);
        let y = URL_SAFE_NO_PAD.encode(point.get(33..65).ok_or(CryptoError::MalformedKey("y"))?);
        let kid = thumbprint(&x, &y);
        let verifying = PublicKey::from_p256_jwk(&x, &y, Some(&kid))?;
        Ok(Self { kid, pkcs8: pkcs8.to_vec(), public: PublicJwk { x, y }, pair, verifying })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_jwk(&self) -> portcullis_types::wire::Jwk {
        portcullis_types::wire::Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: self.public.x.clone(),
            y: self.public.y.clone(),
            kid: self.kid.clone(),
            use_: "sig".into(),
            alg: Self::ALG.into(),
        }
    }

    /// An ECDSA P-256 SHA-256 signature of `message`, 64 bytes (r || s): the form JWS ES256
    /// uses (RFC 7518 §3.4), and the audit checkpoints' too.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| CryptoError::Sign("ECDSA signing failed".into()))?;
        Ok(signature.as_ref().to_vec())
    }

    /// The public half, for verification.
    pub fn public(&self) -> &PublicKey {
        &self.verifying
    }
}

/// RFC 7638 JWK thumbprint over the required EC members in lexicographic order.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blobs_round_trip_and_bind_context() -> Result<(), CryptoError> {
        let key = MasterKey::from_bytes(&MasterKey::generate_bytes()?)?;
        let sealed = key.seal(b"secret", b"row-1")?;
        assert_eq!(key.open(&sealed, b"row-1")?, b"secret");
        assert!(key.open(&sealed, b"row-2").is_err());
        let other = MasterKey::from_bytes(&MasterKey::generate_bytes()?)?;
        assert!(other.open(&sealed, b"row-1").is_err());
        Ok(())
    }

    #[test]
    fn signing_key_round_trips_through_pkcs8() -> Result<(), CryptoError> {
        let key = SigningKey::generate()?;
        let again = SigningKey::from_pkcs8(key.pkcs8_der())?;
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.public_jwk(), again.public_jwk());
        Ok(())
    }

    #[test]
    fn raw_signatures_verify_only_for_the_same_message_and_key() -> Result<(), CryptoError> {
        let key = SigningKey::generate()?;
        let signature = key.sign_bytes(b"checkpoint 7")?;
        assert!(key.public().verify_bytes(b"checkpoint 7", &signature));
        assert!(!key.public().verify_bytes(b"checkpoint 8", &signature));
        let jwk = key.public_jwk();
        let again = PublicKey::from_p256_jwk(&jwk.x, &jwk.y, None)?;
        assert!(again.verify_bytes(b"checkpoint 7", &signature));
        assert_eq!(again.thumbprint(), key.kid());
        assert!(!SigningKey::generate()?.public().verify_bytes(b"checkpoint 7", &signature));
        Ok(())
    }

    #[test]
    fn macs_verify_only_for_same_binding() -> Result<(), CryptoError> {
        let key = MasterKey::from_bytes(&MasterKey::generate_bytes()?)?;
        let mac = key.mac("csrf", "browser-a");
        assert!(key.verify_mac("csrf", "browser-a", &mac));
        assert!(!key.verify_mac("csrf", "browser-b", &mac));
        assert!(!key.verify_mac("other", "browser-a", &mac));
        Ok(())
    }
}
