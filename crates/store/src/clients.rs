//! OAuth clients.

use crate::{
    ApplicationType, ClientRecord, ClientStatus, ClientType, InitialAccessTokenRecord, RegistrationOrigin, Result,
    Store, StoreError, on_pool, on_reader, split_list,
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
        Ok(Self {
            client_type: ClientType::parse(&r.client_type).ok_or(StoreError::Corrupt("client type"))?,
            application_type: ApplicationType::parse(&r.application_type)
                .ok_or(StoreError::Corrupt("client application type"))?,
            origin: RegistrationOrigin::parse(&r.origin).ok_or(StoreError::Corrupt("client origin"))?,
            status: ClientStatus::parse(&r.status).ok_or(StoreError::Corrupt("client status"))?,
            client_id: r.client_id,
            client_name: r.client_name,
            secret_digest: r.secret_digest,
            redirect_uris: split_list(&r.redirect_uris),
            grant_types: split_list(&r.grant_types),
            allowed_scopes: r.allowed_scopes,
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

const INSERT: &str = "INSERT INTO clients (client_id, client_name, client_type, secret_digest, redirect_uris, grant_types, \
     allowed_scopes, allowed_resources, application_type, origin, verified, status, can_introspect, created_at, updated_at, last_used_at, \
     registration_token_digest, registered_from, client_uri, jwks) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)";

const UPSERT: &str = "INSERT INTO clients (client_id, client_name, client_type, secret_digest, redirect_uris, grant_types, \
     allowed_scopes, allowed_resources, application_type, origin, verified, status, can_introspect, created_at, updated_at, last_used_at, \
     registration_token_digest, registered_from, client_uri, jwks) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
     ON CONFLICT (client_id) DO UPDATE SET client_name = excluded.client_name, client_type = excluded.client_type, \
     secret_digest = excluded.secret_digest, redirect_uris = excluded.redirect_uris, grant_types = excluded.grant_types, \
     allowed_scopes = excluded.allowed_scopes, allowed_resources = excluded.allowed_resources, \
     application_type = excluded.application_type, verified = excluded.verified, \
     can_introspect = excluded.can_introspect, client_uri = excluded.client_uri, jwks = excluded.jwks, updated_at = excluded.updated_at";

impl Store {
    pub async fn insert_client(&self, client: &ClientRecord) -> Result<()> {
        match self.write_client(INSERT, client).await {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict("a client with this client_id")),
            other => other,
        }
    }

    /// Inserts or updates a client declared in the configuration file. Its status (an
    /// administrator may have suspended it) and creation time are kept.
    pub async fn upsert_client(&self, client: &ClientRecord) -> Result<()> {
        self.write_client(UPSERT, client).await
    }

    async fn write_client(&self, sql: &'static str, c: &ClientRecord) -> Result<()> {
        on_pool!(self, pool => sqlx::query(sql)
            .bind(&c.client_id)
            .bind(&c.client_name)
            .bind(c.client_type.as_str())
            .bind(&c.secret_digest)
            .bind(c.redirect_uris.join(" "))
            .bind(c.grant_types.join(" "))
            .bind(&c.allowed_scopes)
            .bind(c.allowed_resources.join(" "))
            .bind(c.application_type.as_str())
            .bind(c.origin.as_str())
            .bind(c.verified)
            .bind(c.status.as_str())
            .bind(c.can_introspect)
            .bind(c.created_at)
            .bind(c.updated_at)
            .bind(c.last_used_at)
            .bind(&c.registration_token_digest)
            .bind(&c.registered_from)
            .bind(&c.client_uri)
            .bind(&c.jwks)
            .execute(pool)
            .await.map(|_| ()))?;
        Ok(())
    }

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

    /// Removes a client and, by cascade, everything it holds: grants, tokens, consents, codes.
    pub async fn delete_client(&self, client_id: &str) -> Result<()> {
        let n = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Access and refresh tokens cascade from grants; grants, codes, consents and
            // parked requests cascade from the client.
            let n = sqlx::query("DELETE FROM clients WHERE client_id = $1").bind(client_id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(StoreError::NotFound("client"));
        }
        Ok(())
    }

    /// Changes a client's status. Suspending revokes every grant it holds, in the same
    /// transaction, so its tokens die with it.
    pub async fn set_client_status(&self, client_id: &str, status: ClientStatus, now: i64) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("UPDATE clients SET status = $1, updated_at = $2 WHERE client_id = $3")
                .bind(status.as_str())
                .bind(now)
                .bind(client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound("client"));
            }
            if status == ClientStatus::Suspended {
                sqlx::query("UPDATE grants SET revoked_at = $1, revoked_reason = 'client suspended' WHERE client_id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Counts clients registered through `origin` (the cap on dynamic registrations).
    pub async fn count_clients(&self, origin: RegistrationOrigin) -> Result<i64> {
        let (n,): (i64,) = on_reader!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM clients WHERE origin = $1")
            .bind(origin.as_str())
            .fetch_one(pool)
            .await?);
        Ok(n)
    }

    pub async fn insert_initial_access_token(
        &self,
        token_digest: &[u8],
        token: &InitialAccessTokenRecord,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO initial_access_tokens (token_digest, label, uses_left, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(token_digest)
            .bind(&token.label)
            .bind(token.uses_left)
            .bind(token.created_at)
            .bind(token.expires_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
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

    /// Replaces a dynamically registered client's metadata (RFC 7592 update).
    pub async fn update_client_metadata(&self, c: &ClientRecord) -> Result<()> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE clients SET client_name = $1, redirect_uris = $2, grant_types = $3, allowed_scopes = $4, application_type = $5, \
             client_uri = $6, updated_at = $7 WHERE client_id = $8")
            .bind(&c.client_name)
            .bind(c.redirect_uris.join(" "))
            .bind(c.grant_types.join(" "))
            .bind(&c.allowed_scopes)
            .bind(c.application_type.as_str())
            .bind(&c.client_uri)
            .bind(c.updated_at)
            .bind(&c.client_id)
            .execute(pool)
            .await?
            .rows_affected());
        if n == 0 {
            return Err(StoreError::NotFound("client"));
        }
        Ok(())
    }

    /// Deletes clients of these origins last used (or, if never used, created) before
    /// `cutoff`, and by cascade everything they hold.
    pub async fn delete_unused_clients(&self, origins: &[RegistrationOrigin], cutoff: i64) -> Result<u64> {
        let mut removed = 0;
        for origin in origins {
            removed += on_pool!(self, pool => sqlx::query(
                "DELETE FROM clients WHERE origin = $1 AND COALESCE(last_used_at, created_at) < $2")
                .bind(origin.as_str())
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected());
        }
        Ok(removed)
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
