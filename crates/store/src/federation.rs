//! Federated identities: who an identity provider says signed in, and the local user that is.
//! Written only through [`Store::commit`]; these are the reads the sign-in and logout rules need.

use crate::users::UserRow;
use crate::{FederatedIdentityRecord, Result, Store, StoreError, UserRecord, on_pool, on_reader};

#[derive(sqlx::FromRow)]
struct IdentityRow {
    idp: String,
    issuer: String,
    subject: String,
    user_id: String,
    email: Option<String>,
    groups: String,
    groups_at: Option<i64>,
    created_at: i64,
    last_sign_in_at: i64,
}

impl From<IdentityRow> for FederatedIdentityRecord {
    fn from(r: IdentityRow) -> Self {
        Self {
            idp: r.idp,
            issuer: r.issuer,
            subject: r.subject,
            user_id: r.user_id,
            email: r.email,
            groups: r.groups.lines().filter(|g| !g.is_empty()).map(str::to_owned).collect(),
            groups_at: r.groups_at,
            created_at: r.created_at,
            last_sign_in_at: r.last_sign_in_at,
        }
    }
}

macro_rules! select_identities {
    ($where:literal) => {
        concat!(
            "SELECT idp, issuer, subject, user_id, email, groups, groups_at, created_at, last_sign_in_at \
             FROM federated_identities WHERE ",
            $where
        )
    };
}

impl Store {
    /// The identity (idp, issuer, subject), if it was seen before.
    pub async fn find_federated_identity(
        &self,
        idp: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<FederatedIdentityRecord>> {
        let sql = select_identities!("idp = $1 AND issuer = $2 AND subject = $3");
        let row: Option<IdentityRow> = on_reader!(self, pool => sqlx::query_as(sql)
            .bind(idp)
            .bind(issuer)
            .bind(subject)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(Into::into))
    }

    /// Every identity provider identity of a user.
    pub async fn federated_identities_of(&self, user_id: &str) -> Result<Vec<FederatedIdentityRecord>> {
        let sql = select_identities!("user_id = $1 ORDER BY idp");
        let rows: Vec<IdentityRow> = on_reader!(self, pool => sqlx::query_as(sql).bind(user_id).fetch_all(pool).await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The users whose email address is `email`, compared without regard to ASCII case (the
    /// domain part is case-insensitive, and no provider we link with treats the local part
    /// otherwise).
    pub async fn find_users_by_email(&self, email: &str) -> Result<Vec<UserRecord>> {
        let rows: Vec<UserRow> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at \
             FROM users WHERE LOWER(email) = LOWER($1) ORDER BY id")
            .bind(email)
            .fetch_all(pool)
            .await?);
        // PostgreSQL's LOWER folds beyond ASCII (the Kelvin sign becomes k), SQLite's does not:
        // the final word is ASCII case-folding, the same on both.
        Ok(rows
            .into_iter()
            .map(UserRecord::from)
            .filter(|u| u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email)))
            .collect())
    }

    /// Records a provider's signed statement (`issuer`, `jti`) until it expires; `false` if it
    /// was seen before (a replay), on this node or any other.
    pub async fn record_seen_assertion(&self, issuer: &str, jti: &str, expires_at: i64) -> Result<bool> {
        let res = on_pool!(self, pool => sqlx::query(
            "INSERT INTO seen_assertions (issuer, jti, expires_at) VALUES ($1, $2, $3)")
            .bind(issuer)
            .bind(jti)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()));
        match res.map_err(StoreError::from) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The users with a browser session that identity provider `idp` knows as `idp_session_id`.
    pub async fn users_of_idp_session(&self, idp: &str, idp_session_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT DISTINCT user_id FROM browser_sessions WHERE idp = $1 AND idp_session_id = $2")
            .bind(idp)
            .bind(idp_session_id)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
