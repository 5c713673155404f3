//! The token vault: users' sealed credentials for upstream servers. Connecting and
//! disconnecting go through [`Store::commit`]; reading, and the refresh lease and rotation
//! (the raced transitions of a refresh, on the request path), are here.

use crate::{Result, Store, UpstreamCredentialRecord, on_pool, on_reader, stored_scopes};

#[derive(sqlx::FromRow)]
struct CredentialRow {
    user_id: String,
    route: String,
    issuer: String,
    subject: Option<String>,
    scope: String,
    tokens_sealed: Vec<u8>,
    access_expires_at: Option<i64>,
    refresh_lease_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<CredentialRow> for UpstreamCredentialRecord {
    type Error = crate::StoreError;

    fn try_from(r: CredentialRow) -> Result<Self> {
        Ok(Self {
            scope: stored_scopes(&r.scope, || {
                format!("upstream credential of user {:?} for {:?}", r.user_id, r.route)
            })?,
            user_id: r.user_id,
            route: r.route,
            issuer: r.issuer,
            subject: r.subject,
            tokens_sealed: r.tokens_sealed,
            access_expires_at: r.access_expires_at,
            refresh_lease_until: r.refresh_lease_until,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

macro_rules! select_credentials {
    ($where:literal) => {
        concat!(
            "SELECT user_id, route, issuer, subject, scope, tokens_sealed, access_expires_at, refresh_lease_until, \
             created_at, updated_at FROM upstream_credentials WHERE ",
            $where
        )
    };
}

/// The one statement of which upstream accounts no agent can use any more: those (of user $2,
/// or everyone's) for a route (whose resource is $1 followed by its name) on which the user
/// holds no grant that is unrevoked and unexpired at $3. Counted here, deleted by
/// `Mutation::DeleteUngrantedUpstreamCredentials`.
macro_rules! ungranted_credentials {
    ($verb:literal) => {
        concat!(
            $verb,
            " FROM upstream_credentials WHERE (CAST($2 AS TEXT) IS NULL OR user_id = $2) \
             AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.user_id = upstream_credentials.user_id \
             AND g.resource = CAST($1 AS TEXT) || upstream_credentials.route \
             AND g.revoked_at IS NULL AND g.expires_at > $3)"
        )
    };
}
pub(crate) use ungranted_credentials;

impl Store {
    /// A user's credential for a route, if they connected it.
    pub async fn find_upstream_credential(
        &self,
        user_id: &str,
        route: &str,
    ) -> Result<Option<UpstreamCredentialRecord>> {
        let row: Option<CredentialRow> = on_reader!(self, pool => sqlx::query_as(select_credentials!("user_id = $1 AND route = $2"))
            .bind(user_id)
            .bind(route)
            .fetch_optional(pool)
            .await?);
        row.map(TryInto::try_into).transpose()
    }

    /// Every upstream a user connected, by route.
    pub async fn upstream_credentials_of(&self, user_id: &str) -> Result<Vec<UpstreamCredentialRecord>> {
        let rows: Vec<CredentialRow> = on_reader!(self, pool => sqlx::query_as(select_credentials!("user_id = $1 ORDER BY route"))
            .bind(user_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// How many upstream accounts (of one user, or all) are for routes on which the user holds
    /// no live grant any more (what `DeleteUngrantedUpstreamCredentials` would forget).
    pub async fn count_ungranted_upstream_credentials(
        &self,
        resource_prefix: &str,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        let (count,): (i64,) = on_reader!(self, pool => sqlx::query_as(ungranted_credentials!("SELECT COUNT(*)"))
            .bind(resource_prefix)
            .bind(user_id)
            .bind(now)
            .fetch_one(pool)
            .await?);
        Ok(count)
    }

    /// Who connected which upstream account (never the tokens): one route's, or every one,
    /// for "who holds what".
    pub async fn upstream_connections(&self, route: Option<&str>) -> Result<Vec<UpstreamCredentialRecord>> {
        let rows: Vec<CredentialRow> = on_reader!(self, pool => sqlx::query_as(select_credentials!(
            "(CAST($1 AS TEXT) IS NULL OR route = $1) ORDER BY route, user_id"))
            .bind(route)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The routes any user has an upstream credential for.
    pub async fn upstream_credential_routes(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT DISTINCT route FROM upstream_credentials ORDER BY route")
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(|(route,)| route).collect())
    }

    /// Takes the refresh lease of a credential until `until`, if nobody holds it now: one node
    /// refreshes, the others wait for its result. `false` when another holds it.
    pub async fn take_refresh_lease(&self, user_id: &str, route: &str, now: i64, until: i64) -> Result<bool> {
        let taken = on_pool!(self, pool => sqlx::query(
            "UPDATE upstream_credentials SET refresh_lease_until = $1 \
             WHERE user_id = $2 AND route = $3 AND (refresh_lease_until IS NULL OR refresh_lease_until <= $4)")
            .bind(until)
            .bind(user_id)
            .bind(route)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(taken == 1)
    }

    /// Gives the refresh lease back without new tokens (the refresh failed for a reason that
    /// may pass): the next request tries again.
    pub async fn release_refresh_lease(&self, user_id: &str, route: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE upstream_credentials SET refresh_lease_until = NULL WHERE user_id = $1 AND route = $2")
            .bind(user_id)
            .bind(route)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// The refreshed tokens of a credential, written by the lease holder, which gives the lease
    /// back. `false` when the credential is gone (disconnected meanwhile): nothing is revived.
    pub async fn store_refreshed_tokens(
        &self,
        user_id: &str,
        route: &str,
        tokens_sealed: &[u8],
        access_expires_at: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let written = on_pool!(self, pool => sqlx::query(
            "UPDATE upstream_credentials SET tokens_sealed = $1, access_expires_at = $2, refresh_lease_until = NULL, \
             updated_at = $3 WHERE user_id = $4 AND route = $5")
            .bind(tokens_sealed)
            .bind(access_expires_at)
            .bind(now)
            .bind(user_id)
            .bind(route)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(written == 1)
    }
}

/// A client the gateway registered with an upstream's authorization server.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamClientRecord {
    pub issuer: String,
    pub redirect_uri: String,
    pub client_id: String,
    pub client_secret_sealed: Option<Vec<u8>>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    pub registered_at: i64,
}

impl std::fmt::Debug for UpstreamClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClientRecord")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

type UpstreamClientRow = (String, String, String, Option<Vec<u8>>, String, i64);

impl Store {
    /// The client registered with `issuer` for `redirect_uri`, if there is one.
    pub async fn find_upstream_client(&self, issuer: &str, redirect_uri: &str) -> Result<Option<UpstreamClientRecord>> {
        let row: Option<UpstreamClientRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT issuer, redirect_uri, client_id, client_secret_sealed, auth_method, registered_at \
             FROM upstream_clients WHERE issuer = $1 AND redirect_uri = $2")
            .bind(issuer)
            .bind(redirect_uri)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|(issuer, redirect_uri, client_id, client_secret_sealed, auth_method, registered_at)| {
            UpstreamClientRecord { issuer, redirect_uri, client_id, client_secret_sealed, auth_method, registered_at }
        }))
    }

    /// Keeps a registration unless another node stored one first; returns the one that counts.
    pub async fn save_upstream_client(&self, record: &UpstreamClientRecord) -> Result<UpstreamClientRecord> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO upstream_clients (issuer, redirect_uri, client_id, client_secret_sealed, auth_method, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (issuer, redirect_uri) DO NOTHING")
            .bind(&record.issuer)
            .bind(&record.redirect_uri)
            .bind(&record.client_id)
            .bind(&record.client_secret_sealed)
            .bind(&record.auth_method)
            .bind(record.registered_at)
            .execute(pool)
            .await?
            .rows_affected());
        self.find_upstream_client(&record.issuer, &record.redirect_uri)
            .await?
            .ok_or(crate::StoreError::NotFound("the upstream client registration just stored"))
    }

    /// Forgets a registration the server no longer knows (it answered `invalid_client`).
    pub async fn forget_upstream_client(&self, issuer: &str, redirect_uri: &str, client_id: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM upstream_clients WHERE issuer = $1 AND redirect_uri = $2 AND client_id = $3")
            .bind(issuer)
            .bind(redirect_uri)
            .bind(client_id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }
}
