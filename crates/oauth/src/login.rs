//! Signing users in and keeping them signed in.

use portcullis_crypto::{PasswordCheckError, digest, random_token};
use portcullis_store::{BrowserSession, UserRecord};

use crate::{AuthorizationServer, ServerError};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The same for unknown users, wrong passwords and disabled accounts.
    #[error("the username or password is incorrect")]
    InvalidCredentials,
    #[error("too many sign-ins are being checked right now; try again in a moment")]
    Busy,
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A new browser session: the cookie value (a secret) and when it expires.
#[derive(Debug)]
pub struct NewSession {
    pub cookie_value: String,
    pub expires_at: i64,
}

impl AuthorizationServer {
    /// Checks a username and password. Unknown and disabled users cost the same argon2 work
    /// as real ones and fail the same way.
    pub async fn authenticate_user(&self, username: &str, password: &str) -> Result<UserRecord, LoginError> {
        let user = self.store.find_user_by_username(username).await.map_err(ServerError::from)?;
        let stored = user.as_ref().filter(|u| !u.is_disabled()).and_then(|u| u.password_hash.clone());
        let ok = self.passwords.verify(password.to_owned(), stored).await.map_err(|e| match e {
            PasswordCheckError::Busy => LoginError::Busy,
            PasswordCheckError::Crypto(c) => LoginError::Server(c.into()),
        })?;
        match user {
            Some(user) if ok => Ok(user),
            _ => Err(LoginError::InvalidCredentials),
        }
    }

    pub async fn start_session(&self, user: &UserRecord) -> Result<NewSession, ServerError> {
        let now = self.clock.now();
        let cookie_value = random_token(32)?;
        let expires_at = now + self.settings.session_ttl;
        self.store.insert_session(&digest(&cookie_value), &user.id, now, expires_at).await?;
        Ok(NewSession { cookie_value, expires_at })
    }

    pub async fn find_session(&self, cookie_value: &str) -> Result<Option<BrowserSession>, ServerError> {
        Ok(self.store.find_session(&digest(cookie_value), self.clock.now()).await?)
    }

    pub async fn end_session(&self, cookie_value: &str) -> Result<(), ServerError> {
        Ok(self.store.delete_session(&digest(cookie_value)).await?)
    }
}
