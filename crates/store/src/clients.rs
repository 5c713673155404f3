//! OAuth clients.

use crate::{
    ApplicationType, ClientFilter, ClientRecord, ClientStatus, ClientType, GrantType, InitialAccessTokenRecord,
    RegistrationOrigin, Result, Store, StoreError, on_pool, on_reader, split_list, stored, stored_scopes,
};

#[derive(sqlx::FromRow)]
struct Row {
    client_id: String,
    client_name: String,
    client_type: String,
    secret_digest: Option<Vec<u8>>,
    redirect_uris: String,
    grant_types: String,
    allowed_scopes: String,
    allowed_resources: String,
    application_type: String,
    origin: String,
    verified: bool,
    status: String,
    can_introspect: bool,
    registration_token_digest: Option<Vec<u8>>,
    registered_from: Option<String>,
    client_uri: Option<String>,
    jwks: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_used_at: Option<i64>,
}

impl TryFrom<Row> for ClientRecord {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self> {
        let row = || format!("client {:?}", r.client_id);
        Ok(Self {
            client_type: stored(ClientType::parse, &r.client_type, "client type", row)?,
            application_type: stored(ApplicationType::parse, &r.application_type, "application type", row)?,
            origin: stored(RegistrationOrigin::parse, &r.origin, "registration origin", row)?,
            status: stored(ClientStatus::parse, &r.status, "status", row)?,
            grant_types: split_list(&r.grant_types)
                .iter()
                .map(|g| stored(GrantType::parse, g, "grant type", row))
                .collect::<Result<_>>()?,
            allowed_scopes: stored_scopes(&r.allowed_scopes, row)?,
            client_id: r.client_id,
            client_name: r.client_name,
            secret_digest: r.secret_digest,
            redirect_uris: split_list(&r.redirect_uris),
            allowed_resources: split_list(&r.allowed_resources),
            verified: r.verified,
            can_introspect: r.can_introspect,
            registration_token_digest: r.registration_token_digest,
            registered_from: r.registered_from,
            client_uri: r.client_uri,
            jwks: r.jwks,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_used_at: r.last_used_at,
        })
    }
}

pub(crate) fn grant_types_column(grant_types: &[GrantType]) -> String {
    grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(" ")
}

impl Store {
    pub async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        let row: Option<Row> = on_reader!(self, pool => sqlx::query_as("SELECT * FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(pool)
            .await?);
        row.map(TryInto::try_into).transpose()
    }

    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as("SELECT * FROM clients ORDER BY created_at, client_id")
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// One page of clients in `client_id` order, after `after` (a cursor: the last id of the
    /// page before), at most `limit`, only those `filter` matches.
    pub async fn clients_page(
        &self,
        filter: &ClientFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ClientRecord>> {
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT * FROM clients WHERE (CAST($1 AS TEXT) IS NULL OR client_id > $1) \
             AND (CAST($2 AS TEXT) IS NULL OR status = $2) AND (CAST($3 AS TEXT) IS NULL OR origin = $3) \
             AND (CAST($4 AS BOOLEAN) IS NULL OR verified = $4) ORDER BY client_id LIMIT $5")
            .bind(after)
            .bind(filter.status.map(ClientStatus::as_str))
            .bind(filter.origin.map(RegistrationOrigin::as_str))
            .bind(filter.verified)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// How many clients there are of each status and verification (the dashboard's overview).
    pub async fn client_counts(&self) -> Result<Vec<crate::ClientCount>> {
        let rows: Vec<(String, bool, i64)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT status, verified, COUNT(*) FROM clients GROUP BY status, verified ORDER BY status, verified")
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|(status, verified, count)| {
                let status = crate::stored(ClientStatus::parse, &status, "client status", || "clients".to_owned())?;
                Ok(crate::ClientCount { status, verified, count })
            })
            .collect()
    }

    /// Counts clients registered through `origin` (the cap on dynamic registrations).
    pub async fn count_clients(&self, origin: RegistrationOrigin) -> Result<i64> {
        let (n,): (i64,) = on_reader!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM clients WHERE origin = $1")
            .bind(origin.as_str())
            .fetch_one(pool)
            .await?);
        Ok(n)
    }

    /// Spends one use of an initial access token; `false` if it is unknown, used up or expired.
    pub async fn consume_initial_access_token(&self, token_digest: &[u8], now: i64) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE initial_access_tokens SET uses_left = uses_left - 1 WHERE token_digest = $1 AND uses_left > 0 AND expires_at > $2")
            .bind(token_digest)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    pub async fn list_initial_access_tokens(&self) -> Result<Vec<InitialAccessTokenRecord>> {
        let rows: Vec<(String, i64, i64, i64)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT label, uses_left, created_at, expires_at FROM initial_access_tokens ORDER BY created_at, label")
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(label, uses_left, created_at, expires_at)| InitialAccessTokenRecord {
                label,
                uses_left,
                created_at,
                expires_at,
            })
            .collect())
    }

    /// Records a client assertion's `jti`; `false` if this client used it before (a replay).
    pub async fn record_assertion_jti(&self, client_id: &str, jti: &str, expires_at: i64) -> Result<bool> {
        let res = on_pool!(self, pool => sqlx::query(
            "INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3)")
            .bind(client_id)
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

    pub async fn touch_client(&self, client_id: &str, now: i64) -> Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE clients SET last_used_at = $1 WHERE client_id = $2")
            .bind(now)
            .bind(client_id)
            .execute(pool)
            .await.map(|_| ()))?;
        Ok(())
    }
}
