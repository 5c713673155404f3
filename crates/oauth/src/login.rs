//! Signing users in and keeping them signed in.

use portcullis_control::Actor;
use portcullis_crypto::{PasswordCheckError, digest};
use portcullis_store::{BrowserSession, UserRecord};

use crate::{AuthorizationServer, ServerError};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The same for unknown users, wrong passwords and disabled accounts.
    #[error("the username or password is incorrect")]
    InvalidCredentials,
    #[error("too many sign-ins are being checked right now; try again in a moment")]
    Busy,
    #[error("this server does not accept passwords; sign in with your organisation's identity provider")]
    PasswordsDisabled,
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
    /// Checks a username and password, and records the attempt in the audit trail. Unknown
    /// and disabled users cost the same argon2 work as real ones and fail the same way; only
    /// the audit record says which it was.
    pub async fn authenticate_user(
        &self,
        username: &str,
        password: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<UserRecord, LoginError> {
        if !self.settings().local_passwords {
            return Err(LoginError::PasswordsDisabled);
        }
        let user = self.store.find_user_by_username(username).await.map_err(ServerError::from)?;
        let stored = user.as_ref().filter(|u| !u.is_disabled()).and_then(|u| u.password_hash.clone());
        let ok = self.passwords.verify(password.to_owned(), stored).await.map_err(|e| match e {
            PasswordCheckError::Busy => LoginError::Busy,
            PasswordCheckError::Crypto(c) => LoginError::Server(c.into()),
        })?;
        let outcome = match &user {
            Some(_) if ok => Ok(()),
            None => Err("no such user".to_owned()),
            Some(u) if u.is_disabled() => Err("the account is disabled".to_owned()),
            Some(u) if u.password_hash.is_none() => Err("the account has no password".to_owned()),
            Some(_) => Err("wrong password".to_owned()),
        };
        let actor = match &user {
            Some(u) => Actor::User { user_id: u.id.clone(), source },
            None => Actor::Anonymous { source },
        };
        let signed_in = outcome.is_ok();
        self.control.record_sign_in(&actor, user.as_ref(), username, outcome).await.map_err(ServerError::from)?;
        match user {
            Some(user) if signed_in => Ok(user),
            _ => Err(LoginError::InvalidCredentials),
        }
    }

    /// A browser session for a user who signed in with their password.
    pub async fn start_session(&self, user: &UserRecord) -> Result<NewSession, ServerError> {
        self.start_session_bounded(user, None, None).await
    }

    pub async fn find_session(&self, cookie_value: &str) -> Result<Option<BrowserSession>, ServerError> {
        Ok(self.store.find_session(&digest(cookie_value), self.clock.now()).await?)
    }

    pub async fn end_session(&self, cookie_value: &str) -> Result<(), ServerError> {
        Ok(self.store.delete_session(&digest(cookie_value)).await?)
    }
}
