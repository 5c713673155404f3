//! Local users.

use crate::{Result, Store, StoreError, UserRecord, on_pool, on_reader};

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) username: String,
    display_name: Option<String>,
    email: Option<String>,
    password_hash: Option<String>,
    is_admin: bool,
    disabled_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            username: r.username,
            display_name: r.display_name,
            email: r.email,
            password_hash: r.password_hash,
            is_admin: r.is_admin,
            disabled_at: r.disabled_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl Store {
    pub async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        let sql = "INSERT INTO users (id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let res = on_pool!(self, pool => sqlx::query(sql)
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.display_name)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(user.is_admin)
            .bind(user.disabled_at)
            .bind(user.created_at)
            .bind(user.updated_at)
            .execute(pool)
            .await.map(|_| ()));
        match res {
            Ok(_) => Ok(()),
            Err(e) => match StoreError::from(e) {
                StoreError::Conflict(_) => Err(StoreError::Conflict("a user with this username")),
                other => Err(other),
            },
        }
    }

    pub async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at \
             FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(Into::into))
    }

    pub async fn find_user(&self, id: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at \
             FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(Into::into))
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows: Vec<UserRow> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at \
             FROM users ORDER BY username")
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Disables (`Some(now)`) or re-enables (`None`) a user. Disabling also ends the user's
    /// browser sessions; tokens stop working because every check joins on the user.
    pub async fn set_user_disabled(&self, username: &str, disabled_at: Option<i64>, now: i64) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<(String,)> = sqlx::query_as("UPDATE users SET disabled_at = $1, updated_at = $2 WHERE username = $3 RETURNING id")
                .bind(disabled_at)
                .bind(now)
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((user_id,)) = row else { return Err(StoreError::NotFound("user")) };
            if disabled_at.is_some() {
                sqlx::query("DELETE FROM browser_sessions WHERE user_id = $1").bind(&user_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Replaces a user's password hash and ends their browser sessions.
    pub async fn set_user_password(&self, username: &str, password_hash: &str, now: i64) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<(String,)> = sqlx::query_as("UPDATE users SET password_hash = $1, updated_at = $2 WHERE username = $3 RETURNING id")
                .bind(password_hash)
                .bind(now)
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((user_id,)) = row else { return Err(StoreError::NotFound("user")) };
            sqlx::query("DELETE FROM browser_sessions WHERE user_id = $1").bind(&user_id).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
