//! Users' own credentials for upstream servers (the token vault), sealed at rest.
//!
//! A user's upstream access and refresh tokens are sealed by the master key with the user, the
//! gateway route and the upstream's authorization server as associated data: a sealed row
//! copied to another user, route or issuer does not open. Nothing here prints a token.

use serde::{Deserialize, Serialize};

use crate::{CryptoError, MasterKey};

/// What a sealed vault row binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultBinding<'a> {
    pub user_id: &'a str,
    pub route: &'a str,
    /// The upstream's authorization server (its issuer).
    pub issuer: &'a str,
}

impl VaultBinding<'_> {
    /// The associated data: a label and each field with its length, so no two bindings share
    /// an encoding.
    fn context(&self) -> Vec<u8> {
        let mut context = b"portcullis upstream tokens v1".to_vec();
        for field in [self.user_id, self.route, self.issuer] {
            context.extend_from_slice(&(field.len() as u64).to_be_bytes());
            context.extend_from_slice(field.as_bytes());
        }
        context
    }
}

/// One user's tokens for one upstream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// The gateway's client id at the upstream's authorization server when these were issued:
    /// a refresh or a revocation must present the same one.
    #[serde(default)]
    pub client_id: String,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("access_token", &"..")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| ".."))
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// The associated data of a client secret the gateway got from an upstream's authorization
/// server by dynamic registration: bound to that server.
fn client_secret_context(issuer: &str) -> Vec<u8> {
    let mut context = b"portcullis upstream client secret v1".to_vec();
    context.extend_from_slice(issuer.as_bytes());
    context
}

impl MasterKey {
    pub fn seal_upstream_client_secret(&self, issuer: &str, secret: &str) -> Result<Vec<u8>, CryptoError> {
        self.seal(secret.as_bytes(), &client_secret_context(issuer))
    }

    pub fn open_upstream_client_secret(&self, issuer: &str, sealed: &[u8]) -> Result<String, CryptoError> {
        String::from_utf8(self.open(sealed, &client_secret_context(issuer))?).map_err(|_| CryptoError::Decrypt)
    }

    pub fn seal_upstream_tokens(
        &self,
        binding: VaultBinding<'_>,
        tokens: &UpstreamTokens,
    ) -> Result<Vec<u8>, CryptoError> {
        let plain = serde_json::to_vec(tokens).map_err(|_| CryptoError::Decrypt)?;
        self.seal(&plain, &binding.context())
    }

    /// The tokens of a sealed row; `Decrypt` if it was sealed for another user, route or
    /// issuer, or altered.
    pub fn open_upstream_tokens(
        &self,
        binding: VaultBinding<'_>,
        sealed: &[u8],
    ) -> Result<UpstreamTokens, CryptoError> {
        let plain = self.open(sealed, &binding.context())?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_row_opens_only_for_its_own_user_route_and_issuer() -> Result<(), CryptoError> {
        let master = MasterKey::from_bytes(&MasterKey::generate_bytes()?)?;
        let alice = VaultBinding { user_id: "alice", route: "github", issuer: "https://github.com/login/oauth" };
        let tokens = UpstreamTokens {
            access_token: "gho_secret".into(),
            refresh_token: Some("ghr_secret".into()),
            client_id: "Iv1.portcullis".into(),
        };
        let sealed = master.seal_upstream_tokens(alice, &tokens)?;
        assert_eq!(master.open_upstream_tokens(alice, &sealed)?, tokens);
        assert!(!String::from_utf8_lossy(&sealed).contains("secret"), "sealed, not encoded");
        for moved in [
            VaultBinding { user_id: "bob", ..alice },
            VaultBinding { route: "linear", ..alice },
            VaultBinding { issuer: "https://evil.example", ..alice },
            // The same bytes split differently between fields are another binding.
            VaultBinding { user_id: "alicegithub", route: "", ..alice },
        ] {
            assert!(master.open_upstream_tokens(moved, &sealed).is_err(), "{moved:?}");
        }
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert!(master.open_upstream_tokens(alice, &altered).is_err());
        let other_key = MasterKey::from_bytes(&MasterKey::generate_bytes()?)?;
        assert!(other_key.open_upstream_tokens(alice, &sealed).is_err());
        assert!(!format!("{tokens:?}").contains("secret"), "Debug prints no token");
        let sealed_secret = master.seal_upstream_client_secret("https://as.example", "client-secret")?;
        assert_eq!(master.open_upstream_client_secret("https://as.example", &sealed_secret)?, "client-secret");
        assert!(master.open_upstream_client_secret("https://evil.example", &sealed_secret).is_err());
        Ok(())
    }
}
