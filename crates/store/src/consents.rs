//! Remembered consent, per user, client and resource.

use crate::{ConsentRecord, Result, Store, StoreError, on_reader, stored_scopes};

#[derive(sqlx::FromRow)]
struct Row {
    user_id: String,
    client_id: String,
    resource: String,
    scope: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<Row> for ConsentRecord {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self> {
        Ok(Self {
            scope: stored_scopes(&r.scope, || format!("consent of user {:?} to {:?}", r.user_id, r.client_id))?,
            user_id: r.user_id,
            client_id: r.client_id,
            resource: r.resource,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

impl Store {
    pub async fn find_consent(&self, user_id: &str, client_id: &str, resource: &str) -> Result<Option<ConsentRecord>> {
        let row: Option<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT * FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3")
            .bind(user_id)
            .bind(client_id)
            .bind(resource)
            .fetch_optional(pool)
            .await?);
        row.map(TryInto::try_into).transpose()
    }

    pub async fn list_consents(&self, user_id: &str) -> Result<Vec<ConsentRecord>> {
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT * FROM consents WHERE user_id = $1 ORDER BY client_id, resource")
            .bind(user_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Every user's remembered consent to one client.
    pub async fn consents_to_client(&self, client_id: &str) -> Result<Vec<ConsentRecord>> {
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT * FROM consents WHERE client_id = $1 ORDER BY user_id, resource")
            .bind(client_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(TryInto::try_into).collect()
    }
}
