//! Signing keys, sealed at rest.

use crate::{Result, SigningKeyRecord, Store, on_reader};

#[derive(sqlx::FromRow)]
struct Row {
    kid: String,
    alg: String,
    private_key_sealed: Vec<u8>,
    created_at: i64,
    retired_at: Option<i64>,
    publish_until: Option<i64>,
}

impl From<Row> for SigningKeyRecord {
    fn from(r: Row) -> Self {
        Self {
            kid: r.kid,
            alg: r.alg,
            private_key_sealed: r.private_key_sealed,
            created_at: r.created_at,
            retired_at: r.retired_at,
            publish_until: r.publish_until,
        }
    }
}

impl Store {
    /// Keys still published at `now`, newest first. The first one without `retired_at` signs.
    pub async fn published_signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRecord>> {
        let sql = "SELECT kid, alg, private_key_sealed, created_at, retired_at, publish_until FROM signing_keys \
                   WHERE publish_until IS NULL OR publish_until > $1 ORDER BY (retired_at IS NULL) DESC, created_at DESC, kid";
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(sql).bind(now).fetch_all(pool).await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub async fn all_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let sql = "SELECT kid, alg, private_key_sealed, created_at, retired_at, publish_until FROM signing_keys \
                   ORDER BY (retired_at IS NULL) DESC, created_at DESC, kid";
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
