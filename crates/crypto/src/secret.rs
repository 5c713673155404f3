//! Opaque secrets (codes, refresh tokens, client secrets, session ids) and their digests.
//!
//! Secrets Portcullis generates carry 256 bits of entropy, so a single SHA-256 is a sound
//! at-rest digest: there is nothing to brute-force, and no slow KDF is needed. That is what
//! keeps the token endpoint fast.

use aws_lc_rs::digest as lc_digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::CryptoError;

/// SHA-256 of a secret, the only form in which secrets are stored.
pub type SecretDigest = [u8; 32];

/// A fresh random value of `bytes` bytes, base64url without padding.
pub fn random_token(bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A fresh random identifier (client ids, user ids): like [`random_token`], but it always
/// begins with a letter or digit, so that it can never be mistaken for a command-line option
/// (about one base64url token in 32 begins with `-`).
pub fn random_identifier(bytes: usize) -> Result<String, CryptoError> {
    const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = vec![0u8; bytes.max(1) + 1];
    SystemRandom::new().fill(&mut buf).map_err(|_| CryptoError::Random)?;
    let (first, rest) = buf.split_first().ok_or(CryptoError::Random)?;
    let lead = ALNUM.get(usize::from(*first) % ALNUM.len()).copied().ok_or(CryptoError::Random)?;
    let mut id = String::with_capacity(bytes * 4 / 3 + 2);
    id.push(char::from(lead));
    id.push_str(&URL_SAFE_NO_PAD.encode(rest));
    Ok(id)
}

/// A fresh identifier for a record written at `now` (Unix seconds): grants and access tokens.
/// It begins with the time as ten hex digits, then the wall clock's nanoseconds within its
/// second as eight, so the ids a node writes sort in the order it wrote them and each insert
/// lands at the end of every index, on the page the last one dirtied. (Random ids put every
/// token on a page of its own in each index, and under load that was most of what a commit
/// wrote; the second alone still scattered a second's tokens over that second's pages.) A
/// running count would order them as well, but would tell every holder of two tokens how
/// many were issued between them. The 18 random bytes after it (base64url, as in
/// [`random_token`]) keep it unguessable; the time it shows is the record's creation time,
/// which its record and token (`iat`) state anyway.
pub fn time_ordered_id(now: i64) -> Result<String, CryptoError> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    time_ordered_id_at(now, nanos)
}

fn time_ordered_id_at(seconds: i64, nanos: u32) -> Result<String, CryptoError> {
    let mut id = format!("{:010x}{nanos:08x}", seconds.max(0));
    URL_SAFE_NO_PAD.encode_string(random_bytes::<18>()?, &mut id);
    Ok(id)
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut buf = [0u8; N];
    SystemRandom::new().fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(buf)
}

pub fn digest(secret: &str) -> SecretDigest {
    let d = lc_digest::digest(&lc_digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
pub fn is_valid_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the base64url (no padding) of a SHA-256: exactly 43 characters.
pub fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && URL_SAFE_NO_PAD.decode(challenge).is_ok_and(|b| b.len() == 32)
}

/// RFC 7636 §4.6: `BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge`, compared in
/// constant time.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    if !is_valid_code_verifier(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(lc_digest::digest(&lc_digest::SHA256, verifier.as_bytes()));
    ct_eq(computed.as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_valid_s256_challenge(challenge));
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj", challenge));
        assert!(!pkce_s256_matches("short", challenge));
    }

    #[test]
    fn random_tokens_differ_and_have_full_entropy() -> Result<(), CryptoError> {
        let a = random_token(32)?;
        let b = random_token(32)?;
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        Ok(())
    }

    #[test]
    fn identifiers_never_look_like_options() -> Result<(), CryptoError> {
        for _ in 0..2000 {
            let id = random_identifier(16)?;
            assert!(id.starts_with(|c: char| c.is_ascii_alphanumeric()), "{id}");
            assert_eq!(id.len(), 23);
        }
        Ok(())
    }

    #[test]
    fn time_ordered_ids_sort_by_time_and_stay_random() -> Result<(), CryptoError> {
        let earlier = time_ordered_id_at(1_765_000_000, 999_999_999)?;
        let later = time_ordered_id_at(1_765_000_001, 5)?;
        let same_second = time_ordered_id_at(1_765_000_001, 6)?;
        let same_nanosecond = time_ordered_id_at(1_765_000_001, 6)?;
        assert!(earlier < later && later < same_second, "{earlier} {later} {same_second}");
        assert_ne!(same_second, same_nanosecond);
        assert!(later.starts_with("006933c34100000005") && same_second.starts_with("006933c34100000006"), "{later}");
        assert_eq!(later.len(), 42);
        assert_eq!(time_ordered_id(1_765_000_001)?.len(), 42);
        // A clock before 1970 cannot make an id that sorts first or breaks the format.
        assert!(time_ordered_id(-5)?.starts_with("0000000000"));
        Ok(())
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
