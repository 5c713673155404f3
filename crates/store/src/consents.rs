//! Remembered consent, per user, client and resource.

use crate::{ConsentRecord, Result, Store, on_pool, on_reader};

#[derive(sqlx::FromRow)]
struct Row {
    user_id: String,
    client_id: String,
    resource: String,
    scope: String,
    created_at: i64,
    updated_at: i64,
}

impl From<Row> for ConsentRecord {
    fn from(r: Row) -> Self {
        Self {
            user_id: r.user_id,
            client_id: r.client_id,
            resource: r.resource,
            scope: r.scope,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl Store {
    /// Records that the user granted exactly `scope` to the client for the resource,
    /// replacing what was remembered before.
    pub async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
        scope: &str,
        now: i64,
    ) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO consents (user_id, client_id, resource, scope, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (user_id, client_id, resource) DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at")
            .bind(user_id)
            .bind(client_id)
            .bind(resource)
            .bind(scope)
            .bind(now)
            .execute(pool)
            .await.map(|_| ()))?;
        Ok(())
    }

    pub async fn find_consent(&self, user_id: &str, client_id: &str, resource: &str) -> Result<Option<ConsentRecord>> {
        let row: Option<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT * FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3")
            .bind(user_id)
            .bind(client_id)
            .bind(resource)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(Into::into))
    }

    pub async fn list_consents(&self, user_id: &str) -> Result<Vec<ConsentRecord>> {
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT * FROM consents WHERE user_id = $1 ORDER BY client_id, resource")
            .bind(user_id)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Forgets a consent and revokes the grants it produced, in one transaction.
    pub async fn revoke_consent(&self, user_id: &str, client_id: &str, resource: &str, now: i64) -> Result<bool> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3")
                .bind(user_id)
                .bind(client_id)
                .bind(resource)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("UPDATE grants SET revoked_at = $1, revoked_reason = 'consent revoked' WHERE user_id = $2 AND client_id = $3 AND resource = $4 AND revoked_at IS NULL")
                .bind(now)
                .bind(user_id)
                .bind(client_id)
                .bind(resource)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(n == 1)
        })
    }
}
