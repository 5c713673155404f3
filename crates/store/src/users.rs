//! Local users.

use crate::{Result, Store, UserRecord, on_reader};

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

    /// One page of users in id order, after `after`, at most `limit`, only disabled (or only
    /// enabled) ones and only administrators (or only others) when asked.
    pub async fn users_page(
        &self,
        disabled: Option<bool>,
        admin: Option<bool>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UserRecord>> {
        let rows: Vec<UserRow> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at \
             FROM users WHERE (CAST($1 AS TEXT) IS NULL OR id > $1) \
             AND (CAST($2 AS BOOLEAN) IS NULL OR (disabled_at IS NOT NULL) = $2) \
             AND (CAST($3 AS BOOLEAN) IS NULL OR is_admin = $3) ORDER BY id LIMIT $4")
            .bind(after)
            .bind(disabled)
            .bind(admin)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
