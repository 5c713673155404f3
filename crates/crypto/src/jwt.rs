//! JWS signing and verification, ES256 only, with the algorithm pinned to the key.
//!
//! Verification follows RFC 8725: a length cap, exactly one expected `typ`, the header `alg`
//! must be the key's algorithm, the key is chosen by `kid` from keys we hold (never from the
//! token: `jwk`, `jku`, `x5u` and `x5c` headers are refused), and critical extensions are
//! refused because we implement none. Time and audience checks are the caller's, with its clock.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CryptoError, PublicKey, SigningKey};

/// Tokens longer than this are refused before any parsing.
pub const MAX_JWT_LEN: usize = 8 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is longer than {MAX_JWT_LEN} bytes")]
    TooLong,
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token header uses algorithm {0:?}; only ES256 is accepted")]
    Algorithm(String),
    #[error("token type {0:?} is not the expected type")]
    Type(Option<String>),
    #[error("token header has no key id")]
    MissingKeyId,
    #[error("token was signed by an unknown key")]
    UnknownKeyId,
    #[error("token header carries {0:?}, which is refused")]
    ForbiddenHeader(&'static str),
    #[error("token signature is invalid")]
    Signature,
    #[error("token claims are malformed")]
    Claims,
}

/// A token whose signature checked out, with its decoded claims.
#[derive(Debug)]
pub struct VerifiedJwt<C> {
    pub kid: String,
    pub claims: C,
}

/// A compact JWS (RFC 7515 §7.1) of `claims`, typed `typ`, signed ES256 with `key`.
///
/// jsonwebtoken's `encode` takes the key as PKCS#8 bytes and parses it again for every token,
/// which costs as much as the signature; the key's parsed pair signs here instead, and the
/// serialization around it is the three base64url parts joined by dots. The verifying side
/// stays jsonwebtoken's ([`verify_jwt`]), and the tests check our tokens against it.
pub fn sign_jwt<C: Serialize>(key: &SigningKey, typ: &str, claims: &C) -> Result<String, CryptoError> {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(typ.to_owned());
    header.kid = Some(key.kid().to_owned());
    let header = serde_json::to_vec(&header).map_err(|e| CryptoError::Sign(e.to_string()))?;
    let claims = serde_json::to_vec(claims).map_err(|e| CryptoError::Sign(e.to_string()))?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.sign_bytes(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

/// The raw header of a compact JWS, refused when the token is too long, not three parts, or
/// carries a header member that would change how it must be processed. jsonwebtoken's
/// `Header` ignores members it does not model, hence the look at the raw JSON.
fn checked_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let raw_header: serde_json::Map<String, serde_json::Value> = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Malformed)?;
    for forbidden in ["crit", "b64", "jwk", "jku", "x5u", "x5c", "enc", "zip"] {
        if raw_header.contains_key(forbidden) {
            return Err(JwtError::ForbiddenHeader(forbidden));
        }
    }
    Ok(raw_header)
}

/// Verifies `token` as a JWS of type `expected_typ` signed by one of `keys`. An empty
/// `expected_typ` accepts a plain JWT: `typ` absent or `JWT` (for documents such as software
/// statements, whose specifications name no type).
pub fn verify_jwt<'k, C: DeserializeOwned>(
    token: &str,
    expected_typ: &str,
    keys: impl IntoIterator<Item = &'k PublicKey>,
) -> Result<VerifiedJwt<C>, JwtError> {
    let raw_header = checked_header(token)?;
    match raw_header.get("alg").and_then(|v| v.as_str()) {
        Some("ES256") => {}
        other => return Err(JwtError::Algorithm(other.unwrap_or_default().to_owned())),
    }
    let typ = raw_header.get("typ").and_then(|v| v.as_str()).map(str::to_owned);
    let plain = expected_typ.is_empty() && typ.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("jwt"));
    if !plain && !typ_matches(typ.as_deref(), expected_typ) {
        return Err(JwtError::Type(typ));
    }
    let kid = raw_header.get("kid").and_then(|v| v.as_str()).ok_or(JwtError::MissingKeyId)?;
    let key = keys.into_iter().find(|k| k.kid() == kid).ok_or(JwtError::UnknownKeyId)?;

    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<C>(token, key.decoding_key(), &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => JwtError::Signature,
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => JwtError::Claims,
            _ => JwtError::Malformed,
        }
    })?;
    Ok(VerifiedJwt { kid: key.kid().to_owned(), claims: data.claims })
}

/// The signature algorithms an external issuer's tokens may use. HMAC is never accepted: a
/// resource server holding the issuer's "secret" could mint tokens itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForeignAlgorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl ForeignAlgorithm {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "EdDSA" | "Ed25519" => Self::EdDsa,
            _ => return None,
        })
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Rs384 => Algorithm::RS384,
            Self::Rs512 => Algorithm::RS512,
            Self::Ps256 => Algorithm::PS256,
            Self::Ps384 => Algorithm::PS384,
            Self::Ps512 => Algorithm::PS512,
            Self::Es256 => Algorithm::ES256,
            Self::Es384 => Algorithm::ES384,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// A published JWK Set of another issuer, parsed once, each key ready to verify with.
#[derive(Clone, Default)]
pub struct ForeignKeys {
    keys: Vec<(jsonwebtoken::jwk::Jwk, jsonwebtoken::DecodingKey)>,
}

impl std::fmt::Debug for ForeignKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|(k, _)| k.common.key_id.as_deref())).finish()
    }
}

impl ForeignKeys {
    /// Parses a JWKS document; keys this library cannot use are skipped, not fatal.
    pub fn from_jwks_json(document: &[u8]) -> Result<Self, JwtError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document = serde_json::from_slice(document).map_err(|_| JwtError::Claims)?;
        let keys = doc
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k).ok())
            .filter(|k| !matches!(k.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)))
            .filter_map(|k| jsonwebtoken::DecodingKey::from_jwk(&k).ok().map(|d| (k, d)))
            .collect();
        Ok(Self { keys })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k.common.key_id.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key id a token names, read before verification to decide whether a JWKS refresh could
/// help. Never trust it otherwise.
pub fn unverified_kid(token: &str) -> Option<String> {
    if token.len() > MAX_JWT_LEN {
        return None;
    }
    let header = token.split('.').next()?;
    let raw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    raw.get("kid")?.as_str().map(str::to_owned)
}

/// Verifies a JWT of another issuer with the same rules as [`verify_jwt`]: the header `alg`
/// must be one of `allowed`, and the key's own `alg` (when it has one) must agree; `typ` must
/// be one of `allowed_types` (compared as media types); the key is chosen by `kid`, or is the
/// only key when the token names none. Claims are returned undecoded for the caller to check.
pub fn verify_foreign_jwt(
    token: &str,
    allowed: &[ForeignAlgorithm],
    allowed_types: &[String],
    keys: &ForeignKeys,
) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    let raw_header = checked_header(token)?;
    let alg_name = raw_header.get("alg").and_then(|v| v.as_str()).unwrap_or_default();
    let alg = ForeignAlgorithm::parse(alg_name)
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| JwtError::Algorithm(alg_name.to_owned()))?;
    let typ = raw_header.get("typ").and_then(|v| v.as_str()).map(str::to_owned);
    if !allowed_types.iter().any(|t| typ_matches(typ.as_deref(), t)) {
        return Err(JwtError::Type(typ));
    }
    let (key, decoding) = match raw_header.get("kid").and_then(|v| v.as_str()) {
        Some(kid) => keys.keys.iter().find(|(k, _)| k.common.key_id.as_deref() == Some(kid)),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => return Err(JwtError::MissingKeyId),
    }
    .ok_or(JwtError::UnknownKeyId)?;
    if let Some(key_alg) = key.common.key_algorithm
        && key_alg.to_string() != alg_name
    {
        return Err(JwtError::Algorithm(alg_name.to_owned()));
    }
    let mut validation = Validation::new(alg.jsonwebtoken());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, decoding, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                    JwtError::Signature
                }
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => JwtError::Claims,
                _ => JwtError::Malformed,
            }
        })?;
    Ok(data.claims)
}

/// Reads one string claim of a JWT **without verifying it**, to pick the key to verify it
/// with (a client assertion names its client in `sub`). Never trust the result otherwise.
pub fn unverified_string_claim(token: &str, claim: &str) -> Option<String> {
    if token.len() > MAX_JWT_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get(claim)?.as_str().map(str::to_owned)
}

/// RFC 8725 §3.11 and RFC 9068 §2.1: `at+jwt` and `application/at+jwt` are the same type;
/// media types compare case-insensitively.
fn typ_matches(presented: Option<&str>, expected: &str) -> bool {
    let Some(presented) = presented.filter(|_| !expected.is_empty()) else { return false };
    let presented = presented.to_ascii_lowercase();
    let presented = presented.strip_prefix("application/").unwrap_or(&presented);
    presented == expected.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn round_trip_and_attacks() -> Result<(), CryptoError> {
        let key = SigningKey::generate()?;
        let other = SigningKey::generate()?;
        let token = sign_jwt(&key, "at+jwt", &Claims { sub: "alice".into() })?;
        let ok: VerifiedJwt<Claims> =
            verify_jwt(&token, "at+jwt", [key.public()]).map_err(|e| CryptoError::Sign(e.to_string()))?;
        assert_eq!(ok.claims.sub, "alice");

        // Wrong type.
        assert_eq!(
            verify_jwt::<Claims>(&token, "jwt", [key.public()]).err(),
            Some(JwtError::Type(Some("at+jwt".into())))
        );
        // Unknown key.
        assert_eq!(verify_jwt::<Claims>(&token, "at+jwt", [other.public()]).err(), Some(JwtError::UnknownKeyId));
        // One changed signature character (in the middle, where every bit is significant:
        // the last character of a 64-byte signature also carries padding bits).
        let mut chars: Vec<char> = token.chars().collect();
        let at = token.rfind('.').unwrap_or_default() + 10;
        if let Some(c) = chars.get_mut(at) {
            *c = if *c == 'A' { 'B' } else { 'A' };
        }
        let tampered: String = chars.into_iter().collect();
        assert_eq!(verify_jwt::<Claims>(&tampered, "at+jwt", [key.public()]).err(), Some(JwtError::Signature));
        // A changed last character (possibly non-canonical base64url) is refused either way.
        let mut last = token.clone();
        let c = last.pop().map(|c| if c == 'A' { 'B' } else { 'A' }).unwrap_or('A');
        last.push(c);
        assert!(verify_jwt::<Claims>(&last, "at+jwt", [key.public()]).is_err());
        // Signature stripped.
        let stripped = format!("{}.", token.rsplit_once('.').map(|(head, _)| head).unwrap_or_default());
        assert!(verify_jwt::<Claims>(&stripped, "at+jwt", [key.public()]).is_err());

        let payload = token.split('.').nth(1).unwrap_or_default().to_owned();
        // alg none, in several spellings.
        for alg in ["none", "None", "NONE", "nOnE", "HS256"] {
            let header = b64(&serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": key.kid()}));
            let forged = format!("{header}.{payload}.");
            assert_eq!(
                verify_jwt::<Claims>(&forged, "at+jwt", [key.public()]).err(),
                Some(JwtError::Algorithm(alg.into()))
            );
        }
        // Embedded keys and critical extensions.
        for (name, value) in [
            ("jwk", serde_json::json!({"kty": "EC"})),
            ("jku", serde_json::json!("http://127.0.0.2/jwks")),
            ("crit", serde_json::json!(["exp"])),
            ("b64", serde_json::json!(false)),
        ] {
            let mut header = serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid()});
            header[name] = value;
            let forged = format!("{}.{payload}.{}", b64(&header), token.split('.').nth(2).unwrap_or_default());
            assert!(matches!(
                verify_jwt::<Claims>(&forged, "at+jwt", [key.public()]),
                Err(JwtError::ForbiddenHeader(_))
            ));
        }
        // Structure and size.
        assert_eq!(verify_jwt::<Claims>("a.b", "at+jwt", [key.public()]).err(), Some(JwtError::Malformed));
        assert_eq!(
            verify_jwt::<Claims>(&format!("{token}.x"), "at+jwt", [key.public()]).err(),
            Some(JwtError::Malformed)
        );
        assert_eq!(
            verify_jwt::<Claims>(&"a".repeat(MAX_JWT_LEN + 1), "at+jwt", [key.public()]).err(),
            Some(JwtError::TooLong)
        );
        // The same claims signed by a key we do not trust but claiming our kid.
        let header = b64(&serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid()}));
        let foreign = sign_jwt(&other, "at+jwt", &Claims { sub: "mallory".into() })?;
        let forged = format!(
            "{header}.{}.{}",
            foreign.split('.').nth(1).unwrap_or_default(),
            foreign.split('.').nth(2).unwrap_or_default()
        );
        assert_eq!(verify_jwt::<Claims>(&forged, "at+jwt", [key.public()]).err(), Some(JwtError::Signature));
        Ok(())
    }

    /// Our serialization is what jsonwebtoken reads: its own header parser and its decode with
    /// the public key (not only our `verify_jwt`), and the header names exactly alg, typ, kid.
    #[test]
    fn signed_tokens_are_read_by_jsonwebtoken() -> Result<(), Box<dyn std::error::Error>> {
        let key = SigningKey::generate()?;
        let claims = Claims { sub: "ünïcødé / \"quoted\"".into() };
        let token = sign_jwt(&key, "at+jwt", &claims)?;
        let header = jsonwebtoken::decode_header(&token)?;
        assert_eq!(
            (header.alg, header.typ.as_deref(), header.kid.as_deref()),
            (Algorithm::ES256, Some("at+jwt"), Some(key.kid()))
        );
        let raw = checked_header(&token).map_err(|e| e.to_string())?;
        assert_eq!(raw.keys().map(String::as_str).collect::<Vec<_>>(), ["alg", "kid", "typ"]);
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<Claims>(&token, key.public().decoding_key(), &validation)?;
        assert_eq!(decoded.claims, claims);
        // ECDSA signatures are randomized: the same claims never give the same token twice.
        assert_ne!(sign_jwt(&key, "at+jwt", &claims)?, token);
        Ok(())
    }
}
