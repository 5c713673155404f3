//! Browser sessions and parked authorization requests. Both are looked up by the digest of a
//! random handle the browser holds.

use crate::users::UserRow;
use crate::{
    AuthorizationRequestRecord, BrowserSession, Result, SessionFederation, Store, on_pool, on_reader, stored_scopes,
};

#[derive(sqlx::FromRow)]
struct SessionRow {
    auth_time: i64,
    session_created_at: i64,
    expires_at: i64,
    idp: Option<String>,
    idp_session_id: Option<String>,
    idp_groups: Option<String>,
    #[sqlx(flatten)]
    user: UserRow,
}

#[derive(sqlx::FromRow)]
struct RequestRow {
    client_id: String,
    redirect_uri: String,
    scope: String,
    resource: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    prompt: String,
    max_age: Option<i64>,
    login_user_id: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl Store {
    /// A new browser session; `federation` says which identity provider signed the user in.
    pub async fn insert_session(
        &self,
        id_digest: &[u8],
        user_id: &str,
        auth_time: i64,
        expires_at: i64,
        federation: Option<&SessionFederation>,
    ) -> Result<()> {
        // One group per line: group names are single lines (the sign-in drops any that are not).
        let groups = federation.map(|f| f.groups.join("\n"));
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO browser_sessions (id_digest, user_id, auth_time, created_at, expires_at, idp, idp_session_id, idp_groups) \
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7)")
            .bind(id_digest)
            .bind(user_id)
            .bind(auth_time)
            .bind(expires_at)
            .bind(federation.map(|f| f.idp.as_str()))
            .bind(federation.and_then(|f| f.idp_session_id.as_deref()))
            .bind(&groups)
            .execute(pool)
            .await.map(|_| ()))?;
        Ok(())
    }

    /// The live session with this digest, if its user is not disabled.
    pub async fn find_session(&self, id_digest: &[u8], now: i64) -> Result<Option<BrowserSession>> {
        let sql = "SELECT s.auth_time, s.created_at AS session_created_at, s.expires_at, s.idp, s.idp_session_id, s.idp_groups, \
                   u.id, u.username, u.display_name, u.email, u.password_hash, u.is_admin, u.disabled_at, u.created_at, u.updated_at \
                   FROM browser_sessions s JOIN users u ON u.id = s.user_id \
                   WHERE s.id_digest = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL";
        let row: Option<SessionRow> =
            on_reader!(self, pool => sqlx::query_as(sql).bind(id_digest).bind(now).fetch_optional(pool).await?);
        Ok(row.map(|r| BrowserSession {
            user: r.user.into(),
            auth_time: r.auth_time,
            created_at: r.session_created_at,
            expires_at: r.expires_at,
            federation: r.idp.map(|idp| SessionFederation {
                idp,
                idp_session_id: r.idp_session_id,
                groups: r.idp_groups.unwrap_or_default().lines().filter(|g| !g.is_empty()).map(str::to_owned).collect(),
            }),
        }))
    }

    /// A user's live browser sessions, newest first (never their ids).
    pub async fn sessions_of_user(&self, user_id: &str, now: i64) -> Result<Vec<crate::SessionSummary>> {
        let rows: Vec<(i64, i64, i64, Option<String>)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT created_at, expires_at, auth_time, idp FROM browser_sessions \
             WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC")
            .bind(user_id)
            .bind(now)
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(created_at, expires_at, auth_time, idp)| crate::SessionSummary {
                created_at,
                expires_at,
                auth_time,
                identity_provider: idp,
            })
            .collect())
    }

    pub async fn delete_session(&self, id_digest: &[u8]) -> Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM browser_sessions WHERE id_digest = $1").bind(id_digest).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_authorization_request(&self, id_digest: &[u8], r: &AuthorizationRequestRecord) -> Result<()> {
        let sql = "INSERT INTO authorization_requests (id_digest, client_id, redirect_uri, scope, resource, state, nonce, \
                   code_challenge, prompt, max_age, login_user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(id_digest)
            .bind(&r.client_id)
            .bind(&r.redirect_uri)
            .bind(r.scope.to_string())
            .bind(&r.resource)
            .bind(&r.state)
            .bind(&r.nonce)
            .bind(&r.code_challenge)
            .bind(&r.prompt)
            .bind(r.max_age)
            .bind(&r.login_user_id)
            .bind(r.created_at)
            .bind(r.expires_at)
            .execute(pool)
            .await.map(|_| ()))?;
        Ok(())
    }

    pub async fn find_authorization_request(
        &self,
        id_digest: &[u8],
        now: i64,
    ) -> Result<Option<AuthorizationRequestRecord>> {
        let sql = "SELECT client_id, redirect_uri, scope, resource, state, nonce, code_challenge, prompt, max_age, login_user_id, created_at, expires_at \
                   FROM authorization_requests WHERE id_digest = $1 AND expires_at > $2";
        let row: Option<RequestRow> =
            on_reader!(self, pool => sqlx::query_as(sql).bind(id_digest).bind(now).fetch_optional(pool).await?);
        row.map(|r| {
            Ok(AuthorizationRequestRecord {
                scope: stored_scopes(&r.scope, || format!("authorization request of client {:?}", r.client_id))?,
                client_id: r.client_id,
                redirect_uri: r.redirect_uri,
                resource: r.resource,
                state: r.state,
                nonce: r.nonce,
                code_challenge: r.code_challenge,
                prompt: r.prompt,
                max_age: r.max_age,
                login_user_id: r.login_user_id,
                created_at: r.created_at,
                expires_at: r.expires_at,
            })
        })
        .transpose()
    }

    /// Records who signed in for a parked request.
    pub async fn set_authorization_request_login(&self, id_digest: &[u8], user_id: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE authorization_requests SET login_user_id = $1 WHERE id_digest = $2")
            .bind(user_id)
            .bind(id_digest)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Removes a parked request; returns whether it was still there (so that a request is
    /// answered at most once).
    pub async fn take_authorization_request(&self, id_digest: &[u8]) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query("DELETE FROM authorization_requests WHERE id_digest = $1")
            .bind(id_digest)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }
}
