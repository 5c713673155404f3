//! Signing keys, sealed at rest.

use crate::{Result, SigningKeyRecord, Store, on_pool, on_reader};

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
    /// Adds `key` as the active signing key and retires every other active key, which stay
    /// published until `old_publish_until` (the longest a token they signed can live).
    pub async fn add_signing_key(&self, key: &SigningKeyRecord, old_publish_until: i64) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE signing_keys SET retired_at = $1, publish_until = $2 WHERE retired_at IS NULL")
                .bind(key.created_at)
                .bind(old_publish_until)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, private_key_sealed, created_at, retired_at, publish_until) \
                 VALUES ($1, $2, $3, $4, NULL, NULL)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_key_sealed)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

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
