//! Grants and what hangs off them: authorization codes, refresh tokens (one family per grant),
//! and records of issued access tokens. The transitions here are the ones attackers race, so
//! each is a single conditional UPDATE inside a transaction.

/// A query over the grants for resource `$1` that are live at `$2`: not revoked, not expired,
/// held by an active client, for a user who is not disabled (or for the client itself). The
/// one statement of what "live" means, for every listing of who holds what.
macro_rules! live_grants {
    ($select:literal, $rest:literal) => {
        // Written as anti-joins against the few clients that are not active and the few users
        // who are disabled, rather than joins, so counting 100,000 grants stays a scan of one
        // index (bench/admin/run).
        concat!(
            $select,
            " FROM grants g WHERE g.resource = $1 AND g.revoked_at IS NULL AND g.expires_at > $2 \
             AND g.client_id NOT IN (SELECT c.client_id FROM clients c WHERE c.status <> 'active') \
             AND (g.user_id IS NULL OR g.user_id NOT IN (SELECT u.id FROM users u WHERE u.disabled_at IS NOT NULL)) ",
            $rest
        )
    };
}
use crate::{
    AccessTokenStatus, Actor, AuditKind, AuditOutcome, AuthorizationCodeRecord, ClientStatus, CodeRedemption,
    GrantKind, GrantRecord, NewAccessToken, NewAuditEvent, NewRefreshToken, RefreshTokenRecord, Result, Store,
    StoreError, on_pool, on_reader, stored, stored_scopes,
};

/// The audit record of a grant revoked because a credential was used twice: the system
/// detected it, on behalf of nobody.
pub(crate) fn replay_revocation(
    grant_id: &str,
    client_id: &str,
    user_id: Option<&str>,
    reason: &str,
    now: i64,
) -> NewAuditEvent {
    NewAuditEvent {
        client_id: Some(client_id.to_owned()),
        user_id: user_id.map(str::to_owned),
        target: Some(grant_id.to_owned()),
        reason: Some(reason.to_owned()),
        outcome: AuditOutcome::Succeeded,
        ..NewAuditEvent::action(AuditKind::GrantsRevoked, &Actor::System, now)
    }
}

/// Revokes, inside the open transaction `$tx`, the grant whose credential was just presented a
/// second time (a code replayed, a spent refresh token reused), and audits and announces it if
/// it was live until now.
macro_rules! revoke_replayed_grant {
    ($tx:ident, $grant_id:expr, $client_id:expr, $user_id:expr, $reason:expr, $now:expr) => {{
        let (grant_id, client_id, user_id, reason, now): (&str, &str, Option<&str>, &str, i64) =
            ($grant_id, $client_id, $user_id, $reason, $now);
        let revoked =
            sqlx::query("UPDATE grants SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
                .bind(now)
                .bind(reason)
                .bind(grant_id)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
        if revoked > 0 {
            $crate::changes::record_in_tx!(
                $tx,
                &$crate::grants::replay_revocation(grant_id, client_id, user_id, reason, now),
                true
            );
        }
    }};
}
pub(crate) use revoke_replayed_grant;

#[derive(sqlx::FromRow)]
struct CodeRow {
    grant_id: String,
    client_id: String,
    user_id: String,
    redirect_uri: String,
    resource: String,
    scope: String,
    code_challenge: String,
    nonce: Option<String>,
    auth_time: i64,
    created_at: i64,
    expires_at: i64,
    redeemed_at: Option<i64>,
    grant_not_after: Option<i64>,
}

impl TryFrom<CodeRow> for AuthorizationCodeRecord {
    type Error = StoreError;

    fn try_from(r: CodeRow) -> Result<Self> {
        Ok(Self {
            scope: stored_scopes(&r.scope, || format!("authorization code of grant {:?}", r.grant_id))?,
            grant_id: r.grant_id,
            client_id: r.client_id,
            user_id: r.user_id,
            redirect_uri: r.redirect_uri,
            resource: r.resource,
            code_challenge: r.code_challenge,
            nonce: r.nonce,
            auth_time: r.auth_time,
            created_at: r.created_at,
            expires_at: r.expires_at,
            redeemed_at: r.redeemed_at,
            grant_not_after: r.grant_not_after,
        })
    }
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    client_id: String,
    user_id: Option<String>,
    kind: String,
    resource: String,
    scope: String,
    auth_time: Option<i64>,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    revoked_reason: Option<String>,
}

impl TryFrom<GrantRow> for GrantRecord {
    type Error = StoreError;

    fn try_from(r: GrantRow) -> Result<Self> {
        let row = || format!("grant {:?}", r.id);
        Ok(Self {
            kind: stored(GrantKind::parse, &r.kind, "grant kind", row)?,
            scope: stored_scopes(&r.scope, row)?,
            id: r.id,
            client_id: r.client_id,
            user_id: r.user_id,
            resource: r.resource,
            auth_time: r.auth_time,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            revoked_reason: r.revoked_reason,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    rt_scope: String,
    rt_created_at: i64,
    rt_expires_at: i64,
    rotated_at: Option<i64>,
    #[sqlx(flatten)]
    grant: GrantRow,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    jti: String,
    grant_id: String,
    client_id: String,
    user_id: Option<String>,
    username: Option<String>,
    scope: String,
    resource: String,
    issued_at: i64,
    expires_at: i64,
    token_revoked_at: Option<i64>,
    grant_revoked_at: Option<i64>,
    user_disabled_at: Option<i64>,
    client_status: String,
    holder: Option<String>,
    inactive_actors: i64,
}

/// The one INSERT of new grants (`&GrantRecord`s, live: not revoked), as many rows as given:
/// one for a redeemed code, a batch for the group commit.
macro_rules! insert_grants {
    ($grants:expr) => {{
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO grants (id, client_id, user_id, kind, resource, scope, auth_time, created_at, expires_at) ",
        );
        insert.push_values($grants, |mut row, grant: &$crate::GrantRecord| {
            row.push_bind(&grant.id)
                .push_bind(&grant.client_id)
                .push_bind(&grant.user_id)
                .push_bind(grant.kind.as_str())
                .push_bind(&grant.resource)
                .push_bind(grant.scope.to_string())
                .push_bind(grant.auth_time)
                .push_bind(grant.created_at)
                .push_bind(grant.expires_at);
        });
        insert
    }};
}
pub(crate) use insert_grants;

/// The one INSERT of access-token records, each `(grant id, &NewAccessToken)`, as many rows as
/// given.
macro_rules! insert_access_tokens {
    ($tokens:expr) => {{
        let mut insert =
            sqlx::QueryBuilder::new("INSERT INTO access_tokens (jti, grant_id, scope, issued_at, expires_at) ");
        insert.push_values($tokens, |mut row, (grant_id, access): (&str, &$crate::NewAccessToken)| {
            row.push_bind(&access.jti)
                .push_bind(grant_id)
                .push_bind(access.scope.to_string())
                .push_bind(access.issued_at)
                .push_bind(access.expires_at);
        });
        insert
    }};
}
pub(crate) use insert_access_tokens;

/// Inserts a refresh token of the grant `$grant_id` inside the open transaction `$tx`.
macro_rules! insert_refresh_token {
    ($tx:ident, $grant_id:expr, $refresh:expr) => {{
        let (grant_id, refresh): (&str, &$crate::NewRefreshToken) = ($grant_id, $refresh);
        sqlx::query(
            "INSERT INTO refresh_tokens (token_digest, grant_id, scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&refresh.digest)
        .bind(grant_id)
        .bind(refresh.scope.to_string())
        .bind(refresh.created_at)
        .bind(refresh.expires_at)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use insert_refresh_token;

/// Spends a refresh token that is unspent, unexpired and of a live grant. EXISTS, not
/// `grant_id IN (SELECT id FROM grants WHERE …)`: SQLite runs that IN as a list built by
/// scanning every grant, so each rotation cost grew with the grants table (12 rotations a
/// second after 80,000 client-credentials grants).
pub(crate) const SPEND_REFRESH_TOKEN: &str = "UPDATE refresh_tokens SET rotated_at = $1 \
     WHERE token_digest = $2 AND rotated_at IS NULL AND expires_at > $1 \
     AND EXISTS (SELECT 1 FROM grants g WHERE g.id = refresh_tokens.grant_id AND g.revoked_at IS NULL AND g.expires_at > $1) \
     RETURNING grant_id";

/// One refresh token rotation inside the open transaction `$tx`, evaluating to its
/// [`RefreshRotation`]: the old token is spent and its successor and access token inserted, or,
/// when it was spent already, its whole grant is revoked (a replay, RFC 9700 §4.14.2). Shared by
/// the group commit, which runs several in one transaction, and the write of one alone.
macro_rules! rotate_in_tx {
    ($tx:ident, $old_digest:expr, $now:expr, $refresh:expr, $access:expr) => {{
        let (old_digest, now, refresh, access): (&[u8], i64, &$crate::NewRefreshToken, &$crate::NewAccessToken) =
            ($old_digest, $now, $refresh, $access);
        let spent: Option<(String,)> = sqlx::query_as($crate::grants::SPEND_REFRESH_TOKEN)
            .bind(now)
            .bind(old_digest)
            .fetch_optional(&mut *$tx)
            .await?;
        if let Some((grant_id,)) = spent {
            $crate::grants::insert_refresh_token!($tx, &grant_id, refresh);
            $crate::grants::insert_access_tokens!([(grant_id.as_str(), access)]).build().execute(&mut *$tx).await?;
            $crate::RefreshRotation::Rotated
        } else {
            let previous: Option<(String, String, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT r.grant_id, g.client_id, g.user_id, r.rotated_at FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id \
                 WHERE r.token_digest = $1")
                .bind(old_digest)
                .fetch_optional(&mut *$tx)
                .await?;
            match previous {
                Some((grant_id, client_id, user_id, Some(_))) => {
                    $crate::grants::revoke_replayed_grant!($tx, &grant_id, &client_id, user_id.as_deref(), "refresh token reused", now);
                    $crate::RefreshRotation::Reused { grant_id }
                }
                _ => $crate::RefreshRotation::Invalid,
            }
        }
    }};
}
pub(crate) use rotate_in_tx;

impl Store {
    pub async fn insert_authorization_code(&self, code_digest: &[u8], c: &AuthorizationCodeRecord) -> Result<()> {
        let sql = "INSERT INTO authorization_codes (code_digest, grant_id, client_id, user_id, redirect_uri, resource, scope, \
                   code_challenge, nonce, auth_time, created_at, expires_at, redeemed_at, grant_not_after) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, $13)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(code_digest)
            .bind(&c.grant_id)
            .bind(&c.client_id)
            .bind(&c.user_id)
            .bind(&c.redirect_uri)
            .bind(&c.resource)
            .bind(c.scope.to_string())
            .bind(&c.code_challenge)
            .bind(&c.nonce)
            .bind(c.auth_time)
            .bind(c.created_at)
            .bind(c.expires_at)
            .bind(c.grant_not_after)
            .execute(pool)
            .await.map(|_| ()))?;
        Ok(())
    }

    pub async fn find_authorization_code(&self, code_digest: &[u8]) -> Result<Option<AuthorizationCodeRecord>> {
        let row: Option<CodeRow> = on_reader!(self, pool => sqlx::query_as(
            "SELECT grant_id, client_id, user_id, redirect_uri, resource, scope, code_challenge, nonce, auth_time, created_at, expires_at, redeemed_at, grant_not_after \
             FROM authorization_codes WHERE code_digest = $1")
            .bind(code_digest)
            .fetch_optional(pool)
            .await?);
        row.map(TryInto::try_into).transpose()
    }

    /// Marks a code redeemed and creates its grant, atomically. A code that was redeemed
    /// before is a replay: the grant the first redemption created is revoked (RFC 9700 §4.5).
    pub async fn redeem_authorization_code(
        &self,
        code_digest: &[u8],
        now: i64,
        grant_expires_at: i64,
    ) -> Result<CodeRedemption> {
        let redemption = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let claimed: Option<CodeRow> = sqlx::query_as(
                "UPDATE authorization_codes SET redeemed_at = $1 WHERE code_digest = $2 AND redeemed_at IS NULL AND expires_at > $1 \
                 RETURNING grant_id, client_id, user_id, redirect_uri, resource, scope, code_challenge, nonce, auth_time, created_at, expires_at, redeemed_at, grant_not_after")
                .bind(now)
                .bind(code_digest)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(code) = claimed {
                let code = AuthorizationCodeRecord::try_from(code)?;
                let grant = GrantRecord {
                    id: code.grant_id.clone(),
                    client_id: code.client_id.clone(),
                    user_id: Some(code.user_id.clone()),
                    kind: GrantKind::AuthorizationCode,
                    resource: code.resource.clone(),
                    scope: code.scope.clone(),
                    auth_time: Some(code.auth_time),
                    created_at: now,
                    expires_at: code.grant_expires_at(grant_expires_at),
                    revoked_at: None,
                    revoked_reason: None,
                };
                insert_grants!([&grant]).build().execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(CodeRedemption::Redeemed(Box::new(code)));
            }
            let previous: Option<(String, String, String, Option<i64>)> = sqlx::query_as(
                "SELECT grant_id, client_id, user_id, redeemed_at FROM authorization_codes WHERE code_digest = $1")
                .bind(code_digest)
                .fetch_optional(&mut *tx)
                .await?;
            match previous {
                Some((grant_id, client_id, user_id, Some(_))) => {
                    revoke_replayed_grant!(tx, &grant_id, &client_id, Some(&user_id), "authorization code replayed", now);
                    tx.commit().await?;
                    CodeRedemption::Replayed { grant_id }
                }
                _ => {
                    tx.commit().await?;
                    CodeRedemption::NotFound
                }
            }
        });
        Ok(redemption)
    }

    /// Records the tokens issued for a grant (the refresh token starts its family).
    pub async fn insert_grant_tokens(
        &self,
        grant_id: &str,
        refresh: Option<&NewRefreshToken>,
        access: &NewAccessToken,
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some(refresh) = refresh {
                insert_refresh_token!(tx, grant_id, refresh);
            }
            insert_access_tokens!([(grant_id, access)]).build().execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// An access token drawn from an existing grant by token exchange (RFC 8693): for
    /// `audience`, held by `actors[0]`, each next actor having delegated to the one before.
    pub async fn insert_delegated_access_token(
        &self,
        grant_id: &str,
        access: &NewAccessToken,
        audience: &str,
        actors: &[String],
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO access_tokens (jti, grant_id, scope, issued_at, expires_at, revoked_at, audience) \
                 VALUES ($1, $2, $3, $4, $5, NULL, $6)")
                .bind(&access.jti)
                .bind(grant_id)
                .bind(access.scope.to_string())
                .bind(access.issued_at)
                .bind(access.expires_at)
                .bind(audience)
                .execute(&mut *tx)
                .await?;
            for (position, client_id) in actors.iter().enumerate() {
                sqlx::query("INSERT INTO access_token_actors (jti, position, client_id) VALUES ($1, $2, $3)")
                    .bind(&access.jti)
                    .bind(i64::try_from(position).unwrap_or(i64::MAX))
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn find_refresh_token(&self, token_digest: &[u8]) -> Result<Option<RefreshTokenRecord>> {
        let sql = "SELECT r.scope AS rt_scope, r.created_at AS rt_created_at, r.expires_at AS rt_expires_at, r.rotated_at, \
                   g.id, g.client_id, g.user_id, g.kind, g.resource, g.scope, g.auth_time, g.created_at, g.expires_at, g.revoked_at, g.revoked_reason \
                   FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.token_digest = $1";
        let row: Option<RefreshRow> =
            on_reader!(self, pool => sqlx::query_as(sql).bind(token_digest).fetch_optional(pool).await?);
        row.map(|r| {
            Ok(RefreshTokenRecord {
                scope: stored_scopes(&r.rt_scope, || format!("refresh token of grant {:?}", r.grant.id))?,
                grant: r.grant.try_into()?,
                created_at: r.rt_created_at,
                expires_at: r.rt_expires_at,
                rotated_at: r.rotated_at,
            })
        })
        .transpose()
    }

    /// The state of everything an access token depends on.
    pub async fn access_token_status(&self, jti: &str) -> Result<Option<AccessTokenStatus>> {
        // A delegated token (token exchange) has its own audience and a chain of clients, each
        // of which must still be active; a deleted one counts as inactive.
        let sql = "SELECT a.jti, a.grant_id, g.client_id, g.user_id, u.username, a.scope, \
                   COALESCE(a.audience, g.resource) AS resource, a.issued_at, a.expires_at, \
                   a.revoked_at AS token_revoked_at, g.revoked_at AS grant_revoked_at, u.disabled_at AS user_disabled_at, \
                   c.status AS client_status, \
                   (SELECT x.client_id FROM access_token_actors x WHERE x.jti = a.jti AND x.position = 0) AS holder, \
                   (SELECT COUNT(*) FROM access_token_actors x LEFT JOIN clients ac ON ac.client_id = x.client_id \
                    WHERE x.jti = a.jti AND (ac.status IS NULL OR ac.status <> 'active')) AS inactive_actors \
                   FROM access_tokens a JOIN grants g ON g.id = a.grant_id JOIN clients c ON c.client_id = g.client_id \
                   LEFT JOIN users u ON u.id = g.user_id WHERE a.jti = $1";
        let row: Option<StatusRow> =
            on_reader!(self, pool => sqlx::query_as(sql).bind(jti).fetch_optional(pool).await?);
        row.map(|r| {
            Ok(AccessTokenStatus {
                client_status: stored(ClientStatus::parse, &r.client_status, "status", || {
                    format!("client {:?}", r.client_id)
                })?,
                scope: stored_scopes(&r.scope, || format!("access token {:?}", r.jti))?,
                jti: r.jti,
                grant_id: r.grant_id,
                client_id: r.client_id,
                user_disabled: r.user_disabled_at.is_some(),
                user_id: r.user_id,
                username: r.username,
                resource: r.resource,
                issued_at: r.issued_at,
                expires_at: r.expires_at,
                token_revoked: r.token_revoked_at.is_some(),
                grant_revoked: r.grant_revoked_at.is_some(),
                holder: r.holder,
                inactive_actors: r.inactive_actors,
            })
        })
        .transpose()
    }

    pub async fn find_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        let row: Option<GrantRow> = on_reader!(self, pool => sqlx::query_as("SELECT * FROM grants WHERE id = $1").bind(grant_id).fetch_optional(pool).await?);
        row.map(TryInto::try_into).transpose()
    }

    /// Grants, newest first, optionally only those of one client or one user.
    pub async fn list_grants(&self, client_id: Option<&str>, user_id: Option<&str>) -> Result<Vec<GrantRecord>> {
        let rows: Vec<GrantRow> = on_reader!(self, pool => sqlx::query_as(
            "SELECT * FROM grants WHERE ($1 IS NULL OR client_id = $1) AND ($2 IS NULL OR user_id = $2) ORDER BY created_at DESC, id")
            .bind(client_id)
            .bind(user_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// One page (by grant id, after `after`) of the grants that are live now for `resource`:
    /// unrevoked, unexpired, their client active and their user (if any) enabled, each with
    /// when a token of it was last issued. What "who holds what" reads.
    /// The live grants for `resource` (as [`Store::live_grants_page`] counts them live),
    /// counted per distinct scope set: what "who can call this tool" sums over.
    pub async fn live_grant_scopes(&self, resource: &str, now: i64) -> Result<Vec<crate::ScopeHolders>> {
        let rows: Vec<(String, i64, i64)> = on_reader!(self, pool => sqlx::query_as(
            live_grants!("SELECT g.scope, COUNT(*), COUNT(DISTINCT g.user_id)", "GROUP BY g.scope ORDER BY g.scope"))
            .bind(resource)
            .bind(now)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|(scope, grants, users)| {
                let scope = crate::stored_scopes(&scope, || format!("grants of {resource}"))?;
                Ok(crate::ScopeHolders { scope, grants, users })
            })
            .collect()
    }

    /// The live token families (one per grant) of a client or a user: each grant not revoked
    /// or expired, with its unrotated refresh token's expiry and its unexpired access tokens.
    pub async fn token_families(&self, of: crate::FamiliesOf<'_>, now: i64) -> Result<Vec<crate::TokenFamily>> {
        macro_rules! families {
            ($holder:literal) => {
                concat!(
                    "SELECT g.*, \
                     (SELECT MAX(r.expires_at) FROM refresh_tokens r WHERE r.grant_id = g.id AND r.rotated_at IS NULL \
                      AND r.expires_at > $2) AS refresh_expires_at, \
                     (SELECT COUNT(*) FROM access_tokens a WHERE a.grant_id = g.id AND a.expires_at > $2 \
                      AND a.revoked_at IS NULL) AS live_access_tokens, \
                     (SELECT MAX(a.issued_at) FROM access_tokens a WHERE a.grant_id = g.id) AS last_issued_at \
                     FROM grants g WHERE ",
                    $holder,
                    " = $1 AND g.revoked_at IS NULL AND g.expires_at > $2 ORDER BY g.created_at DESC, g.id"
                )
            };
        }
        // One statement per holder, so each is planned on its own index.
        let (sql, id) = match of {
            crate::FamiliesOf::Client(id) => (families!("g.client_id"), id),
            crate::FamiliesOf::User(id) => (families!("g.user_id"), id),
        };
        let rows: Vec<FamilyRow> =
            on_reader!(self, pool => sqlx::query_as(sql).bind(id).bind(now).fetch_all(pool).await?);
        rows.into_iter()
            .map(|r| {
                Ok(crate::TokenFamily {
                    grant: r.grant.try_into()?,
                    refresh_expires_at: r.refresh_expires_at,
                    live_access_tokens: r.live_access_tokens,
                    last_issued_at: r.last_issued_at,
                })
            })
            .collect()
    }

    pub async fn live_grants_page(
        &self,
        resource: &str,
        now: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<crate::LiveGrant>> {
        let rows: Vec<LiveGrantRow> = on_reader!(self, pool => sqlx::query_as(
            live_grants!(
                "SELECT g.*, (SELECT MAX(a.issued_at) FROM access_tokens a WHERE a.grant_id = g.id) AS last_token_at, \
                 (SELECT u.username FROM users u WHERE u.id = g.user_id) AS username",
                "AND (CAST($3 AS TEXT) IS NULL OR g.id > $3) ORDER BY g.id LIMIT $4"
            ))
            .bind(resource)
            .bind(now)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok(crate::LiveGrant {
                    grant: r.grant.try_into()?,
                    username: r.username,
                    last_token_at: r.last_token_at,
                })
            })
            .collect()
    }
}

#[derive(sqlx::FromRow)]
struct FamilyRow {
    #[sqlx(flatten)]
    grant: GrantRow,
    refresh_expires_at: Option<i64>,
    live_access_tokens: i64,
    last_issued_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct LiveGrantRow {
    #[sqlx(flatten)]
    grant: GrantRow,
    last_token_at: Option<i64>,
    username: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::{Backend, Store};

    /// Every statement on the token endpoint's path finds its rows through an index; a SCAN
    /// of a table that grows with every token would make each request slower than the last.
    #[tokio::test]
    async fn token_path_statements_use_indexes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("plan.db").display()), 1).await?;
        store.migrate().await?;
        let Backend::Sqlite { writer, .. } = &store.backend else { return Err("not SQLite".into()) };
        for sql in [super::SPEND_REFRESH_TOKEN] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(1_i64)
                    .bind(b"digest".as_slice())
                    .fetch_all(writer)
                    .await?;
            let steps: Vec<&str> = plan.iter().map(|(_, _, _, step)| step.as_str()).collect();
            assert!(steps.iter().all(|step| !step.starts_with("SCAN")), "{sql}: {steps:?}");
        }
        Ok(())
    }
}
