//! State changes and the change log.
//!
//! Every change an operator, an administrator, a user or a client makes to shared state is one
//! [`Mutation`], and [`Store::commit`] applies it in one transaction together with its audit
//! record and, for changes other nodes must learn of, a change record. Revisions come from the
//! single row of `change_log_head`, whose row lock is held until commit, so revisions are
//! handed out in commit order and a node that has read revision N will never later find a
//! smaller one appear. On PostgreSQL a trigger on `changes` announces each one with
//! `NOTIFY portcullis_changes_<schema>`; every node reads the log by revision ([`Store::changes_after`]),
//! so a lost notification delays a change but never loses it.

use portcullis_types::ScopeSet;

use crate::clients::grant_types_column;
use crate::{
    AuditKind, ChangeRecord, ClientRecord, ClientStatus, FederatedIdentityRecord, InitialAccessTokenRecord,
    NewAuditEvent, RegistrationOrigin, Result, SigningKeyRecord, Store, StoreError, UpstreamCredentialRecord,
    UserRecord, on_pool, on_reader, stored,
};

/// Which grants a revocation reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSelector {
    Grant(String),
    /// Every grant of a user.
    User(String),
    /// Every grant held by a client.
    Client(String),
    /// A user's grants to one client, for one resource or all of them.
    UserClient {
        user_id: String,
        client_id: String,
        resource: Option<String>,
    },
    /// Every grant for one resource (a gateway route).
    Resource(String),
}

/// One change to shared state. Each is applied by [`Store::commit`] in one transaction with its
/// audit record and change record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// A new client; `Conflict` if its id is taken.
    InsertClient(Box<ClientRecord>),
    /// A client declared in the configuration or described by a metadata document: inserted,
    /// or updated in place keeping its status (an administrator may have suspended it), its
    /// creation time and its registration artefacts.
    UpsertClient(Box<ClientRecord>),
    /// RFC 7592: the metadata a client may change about itself.
    UpdateClientMetadata(Box<ClientRecord>),
    /// Suspending also revokes every grant the client holds.
    SetClientStatus {
        client_id: String,
        status: ClientStatus,
    },
    /// Removes a client and, by cascade, everything it holds.
    DeleteClient {
        client_id: String,
    },
    InsertUser(Box<UserRecord>),
    /// Disabling also ends the user's browser sessions; their tokens stop working because
    /// every check joins on the user.
    SetUserDisabled {
        user_id: String,
        disabled: bool,
    },
    /// A new password hash; the user's browser sessions end.
    SetUserPassword {
        user_id: String,
        password_hash: String,
    },
    /// Removes a user and, by cascade, their sessions, consents and grants.
    DeleteUser {
        user_id: String,
    },
    /// Remembers exactly `scope` as granted, replacing what was remembered.
    SaveConsent {
        user_id: String,
        client_id: String,
        resource: String,
        scope: ScopeSet,
    },
    /// Forgets a consent and revokes the grants it produced.
    RevokeConsent {
        user_id: String,
        client_id: String,
        resource: String,
    },
    RevokeGrants {
        selector: GrantSelector,
        reason: String,
    },
    RevokeAccessToken {
        jti: String,
    },
    /// A new signing key; every other active key is retired and stays published until
    /// `old_publish_until`.
    AddSigningKey {
        key: SigningKeyRecord,
        old_publish_until: i64,
    },
    InsertInitialAccessToken {
        token_digest: Vec<u8>,
        token: InitialAccessTokenRecord,
    },
    /// A user created at their first federated sign-in, with the identity that is theirs.
    InsertFederatedUser {
        user: Box<UserRecord>,
        identity: Box<FederatedIdentityRecord>,
    },
    /// An existing user becomes the owner of a federated identity; `Conflict` if the identity
    /// is taken or the user already has one at that identity provider.
    LinkIdentity(Box<FederatedIdentityRecord>),
    /// A federated sign-in: the identity's last sign-in and the email it last asserted.
    RecordFederatedSignIn {
        idp: String,
        issuer: String,
        subject: String,
        email: Option<String>,
        /// The groups asserted now; `None` leaves the remembered ones (an assertion without
        /// groups does not forget them).
        groups: Option<Vec<String>>,
    },
    /// A user connected (or reconnected) an upstream: their sealed credential for the route.
    SaveUpstreamCredential(Box<UpstreamCredentialRecord>),
    /// Forgets upstream credentials: one user's for one route, all of one user's, or every
    /// user's for one route (the route is gone).
    DeleteUpstreamCredentials {
        user_id: Option<String>,
        route: Option<String>,
    },
    /// Forgets the upstream accounts (of one user, or all) for routes on which the user no
    /// longer holds a live grant: no agent of theirs can use them any more. A route's resource
    /// is `resource_prefix` followed by its name.
    DeleteUngrantedUpstreamCredentials {
        resource_prefix: String,
        user_id: Option<String>,
        now: i64,
    },
    /// Ends every browser session of a user and revokes every grant they gave (the identity
    /// provider logged them out).
    SignOutEverywhere {
        user_id: String,
        reason: String,
    },
    /// Nothing changes but the record: configuration reloaded, a sign-in.
    RecordOnly,
    /// Nothing changes, but every node is told (a request to re-read the configuration).
    Announce,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Rows the mutation changed (grants revoked, consents forgotten, ...).
    pub affected: u64,
    /// The change record's revision, when the change is announced.
    pub revision: Option<i64>,
}

/// Inside a transaction of either backend (`$tx`): writes the audit record and, when `$change`
/// is true, appends a change record of the same kind about the same client and user.
/// Evaluates to the change's revision, if any.
macro_rules! record_in_tx {
    ($tx:ident, $audit:expr, $change:expr) => {{
        let e: &$crate::NewAuditEvent = $audit;
        $crate::chain::audit_append!($tx, std::slice::from_ref(e));
        if $change {
            let (revision,): (i64,) =
                sqlx::query_as("UPDATE change_log_head SET revision = revision + 1 WHERE id = 1 RETURNING revision")
                    .fetch_one(&mut *$tx)
                    .await?;
            sqlx::query(
                "INSERT INTO changes (revision, kind, client_id, user_id, occurred_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(revision)
            .bind(e.kind.as_str())
            .bind(&e.client_id)
            .bind(&e.user_id)
            .bind(e.occurred_at)
            .execute(&mut *$tx)
            .await?;
            Some(revision)
        } else {
            None
        }
    }};
}
pub(crate) use record_in_tx;

const UPSERT_CLIENT: &str = "INSERT INTO clients (client_id, client_name, client_type, secret_digest, redirect_uris, grant_types, \
     allowed_scopes, allowed_resources, application_type, origin, verified, status, can_introspect, created_at, updated_at, last_used_at, \
     registration_token_digest, registered_from, client_uri, jwks) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
     ON CONFLICT (client_id) DO UPDATE SET client_name = excluded.client_name, client_type = excluded.client_type, \
     secret_digest = excluded.secret_digest, redirect_uris = excluded.redirect_uris, grant_types = excluded.grant_types, \
     allowed_scopes = excluded.allowed_scopes, allowed_resources = excluded.allowed_resources, \
     application_type = excluded.application_type, verified = excluded.verified, \
     can_introspect = excluded.can_introspect, client_uri = excluded.client_uri, jwks = excluded.jwks, updated_at = excluded.updated_at";

const INSERT_CLIENT: &str = "INSERT INTO clients (client_id, client_name, client_type, secret_digest, redirect_uris, grant_types, \
     allowed_scopes, allowed_resources, application_type, origin, verified, status, can_introspect, created_at, updated_at, last_used_at, \
     registration_token_digest, registered_from, client_uri, jwks) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)";

/// Evaluates to the rows written, or the error (so that a conflict can be named).
macro_rules! write_client {
    ($tx:ident, $sql:expr, $c:expr) => {{
        let c: &ClientRecord = $c;
        sqlx::query($sql)
            .bind(&c.client_id)
            .bind(&c.client_name)
            .bind(c.client_type.as_str())
            .bind(&c.secret_digest)
            .bind(c.redirect_uris.join(" "))
            .bind(grant_types_column(&c.grant_types))
            .bind(c.allowed_scopes.to_string())
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
            .execute(&mut *$tx)
            .await
            .map(|done| done.rows_affected())
            .map_err(StoreError::from)
    }};
}

/// Evaluates to the rows written, or the error (so that a taken username can be named).
macro_rules! insert_user {
    ($tx:ident, $u:expr) => {{
        let u: &UserRecord = $u;
        sqlx::query(
            "INSERT INTO users (id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.display_name)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.is_admin)
        .bind(u.disabled_at)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&mut *$tx)
        .await
        .map(|done| done.rows_affected())
        .map_err(StoreError::from)
    }};
}

/// Evaluates to the rows written; a taken identity, or a second identity of one user at one
/// identity provider, is `Conflict`.
macro_rules! insert_identity {
    ($tx:ident, $i:expr) => {{
        let i: &FederatedIdentityRecord = $i;
        sqlx::query(
            "INSERT INTO federated_identities (idp, issuer, subject, user_id, email, groups, groups_at, created_at, \
             last_sign_in_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&i.idp)
        .bind(&i.issuer)
        .bind(&i.subject)
        .bind(&i.user_id)
        .bind(&i.email)
        .bind(i.groups.join("\n"))
        .bind(i.groups_at)
        .bind(i.created_at)
        .bind(i.last_sign_in_at)
        .execute(&mut *$tx)
        .await
        .map(|done| done.rows_affected())
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict("this identity, or another identity of this user at this identity provider")
            }
            other => other,
        })
    }};
}

/// A disabled user, or one whose password changed, is signed out everywhere.
const END_BROWSER_SESSIONS: &str = "DELETE FROM browser_sessions WHERE user_id = $1";

const REVOKE_GRANTS: &str = "UPDATE grants SET revoked_at = $1, revoked_reason = $2 WHERE revoked_at IS NULL AND (\
     ($3 = 'grant' AND id = $4) OR ($3 = 'user' AND user_id = $4) OR ($3 = 'client' AND client_id = $4) OR \
     ($3 = 'user_client' AND user_id = $4 AND client_id = $5 AND ($6 = '' OR resource = $6)) OR \
     ($3 = 'resource' AND resource = $4))";

impl GrantSelector {
    /// The selector as the bind parameters of `REVOKE_GRANTS`: kind, first key, second key,
    /// resource (`''` for any).
    fn binds(&self) -> (&'static str, &str, &str, &str) {
        match self {
            Self::Grant(id) => ("grant", id, "", ""),
            Self::User(id) => ("user", id, "", ""),
            Self::Client(id) => ("client", id, "", ""),
            Self::UserClient { user_id, client_id, resource } => {
                ("user_client", user_id, client_id, resource.as_deref().unwrap_or(""))
            }
            Self::Resource(uri) => ("resource", uri, "", ""),
        }
    }
}

/// `NotFound(what)` when a statement that names one row changed none.
fn found(rows: u64, what: &'static str) -> Result<()> {
    if rows == 0 { Err(StoreError::NotFound(what)) } else { Ok(()) }
}

/// Whether other nodes must learn of a mutation. Records that change nothing, and new things
/// no node holds yet (a user, an initial access token, a consent), are not announced.
fn announced(mutation: &Mutation) -> bool {
    !matches!(
        mutation,
        Mutation::RecordOnly
            | Mutation::InsertUser(_)
            | Mutation::InsertInitialAccessToken { .. }
            | Mutation::InsertFederatedUser { .. }
            | Mutation::LinkIdentity(_)
            | Mutation::RecordFederatedSignIn { .. }
    )
}

impl Store {
    /// Applies `mutation`, writes `audit` and, when other nodes must learn of it, a change
    /// record, all in one transaction. Fails with `NotFound` (and changes nothing) when the
    /// client or user it names does not exist.
    pub async fn commit(&self, mutation: &Mutation, audit: &NewAuditEvent) -> Result<Committed> {
        let now = audit.occurred_at;
        let announce = announced(mutation);
        let committed = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let affected: u64 = match mutation {
                Mutation::InsertClient(c) => match write_client!(tx, INSERT_CLIENT, c) {
                    Ok(n) => n,
                    Err(StoreError::Conflict(_)) => return Err(StoreError::Conflict("a client with this client_id")),
                    Err(e) => return Err(e),
                },
                Mutation::UpsertClient(c) => write_client!(tx, UPSERT_CLIENT, c)?,
                Mutation::UpdateClientMetadata(c) => {
                    let n = sqlx::query(
                        "UPDATE clients SET client_name = $1, redirect_uris = $2, grant_types = $3, allowed_scopes = $4, \
                         application_type = $5, client_uri = $6, updated_at = $7 WHERE client_id = $8")
                        .bind(&c.client_name)
                        .bind(c.redirect_uris.join(" "))
                        .bind(grant_types_column(&c.grant_types))
                        .bind(c.allowed_scopes.to_string())
                        .bind(c.application_type.as_str())
                        .bind(&c.client_uri)
                        .bind(c.updated_at)
                        .bind(&c.client_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    found(n, "client")?;
                    n
                }
                Mutation::SetClientStatus { client_id, status } => {
                    let n = sqlx::query("UPDATE clients SET status = $1, updated_at = $2 WHERE client_id = $3")
                        .bind(status.as_str())
                        .bind(now)
                        .bind(client_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    found(n, "client")?;
                    if *status == ClientStatus::Suspended {
                        sqlx::query(REVOKE_GRANTS)
                            .bind(now)
                            .bind("client suspended")
                            .bind("client")
                            .bind(client_id)
                            .bind("")
                            .bind("")
                            .execute(&mut *tx)
                            .await?;
                    }
                    n
                }
                Mutation::DeleteClient { client_id } => {
                    // Access and refresh tokens cascade from grants; grants, codes, consents
                    // and parked requests cascade from the client.
                    let n = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                        .bind(client_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    found(n, "client")?;
                    n
                }
                Mutation::InsertUser(u) => match insert_user!(tx, u) {
                    Ok(n) => n,
                    Err(StoreError::Conflict(_)) => return Err(StoreError::Conflict("a user with this username")),
                    Err(e) => return Err(e),
                },
                Mutation::SetUserDisabled { user_id, disabled } => {
                    let n = sqlx::query("UPDATE users SET disabled_at = $1, updated_at = $2 WHERE id = $3")
                        .bind(disabled.then_some(now))
                        .bind(now)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    found(n, "user")?;
                    if *disabled {
                        sqlx::query(END_BROWSER_SESSIONS).bind(user_id).execute(&mut *tx).await?;
                        // A disabled user's upstream accounts are no longer theirs to use here.
                        sqlx::query("DELETE FROM upstream_credentials WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                    }
                    n
                }
                Mutation::SetUserPassword { user_id, password_hash } => {
                    let n = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                        .bind(password_hash)
                        .bind(now)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    found(n, "user")?;
                    sqlx::query(END_BROWSER_SESSIONS).bind(user_id).execute(&mut *tx).await?;
                    n
                }
                Mutation::DeleteUser { user_id } => {
                    let n = sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await?.rows_affected();
                    found(n, "user")?;
                    n
                }
                Mutation::SaveConsent { user_id, client_id, resource, scope } => sqlx::query(
                    "INSERT INTO consents (user_id, client_id, resource, scope, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
                     ON CONFLICT (user_id, client_id, resource) DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at")
                    .bind(user_id)
                    .bind(client_id)
                    .bind(resource)
                    .bind(scope.to_string())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                Mutation::RevokeConsent { user_id, client_id, resource } => {
                    let n = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3")
                        .bind(user_id)
                        .bind(client_id)
                        .bind(resource)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    found(n, "consent")?;
                    sqlx::query(REVOKE_GRANTS)
                        .bind(now)
                        .bind("consent revoked")
                        .bind("user_client")
                        .bind(user_id)
                        .bind(client_id)
                        .bind(resource)
                        .execute(&mut *tx)
                        .await?;
                    n
                }
                Mutation::RevokeGrants { selector, reason } => {
                    let (kind, first, second, resource) = selector.binds();
                    sqlx::query(REVOKE_GRANTS)
                        .bind(now)
                        .bind(reason)
                        .bind(kind)
                        .bind(first)
                        .bind(second)
                        .bind(resource)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
                Mutation::RevokeAccessToken { jti } => sqlx::query(
                    "UPDATE access_tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(jti)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                Mutation::AddSigningKey { key, old_publish_until } => {
                    sqlx::query("UPDATE signing_keys SET retired_at = $1, publish_until = $2 WHERE retired_at IS NULL")
                        .bind(key.created_at)
                        .bind(old_publish_until)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO signing_keys (kid, alg, private_key_sealed, created_at, retired_at, publish_until) \
                         VALUES ($1, $2, $3, $4, NULL, NULL)")
                        .bind(&key.kid)
                        .bind(&key.alg)
                        .bind(&key.private_key_sealed)
                        .bind(key.created_at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
                Mutation::InsertInitialAccessToken { token_digest, token } => sqlx::query(
                    "INSERT INTO initial_access_tokens (token_digest, label, uses_left, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(token_digest)
                    .bind(&token.label)
                    .bind(token.uses_left)
                    .bind(token.created_at)
                    .bind(token.expires_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                Mutation::InsertFederatedUser { user, identity } => {
                    let n = match insert_user!(tx, user) {
                        Ok(n) => n,
                        Err(StoreError::Conflict(_)) => return Err(StoreError::Conflict("a user with this username")),
                        Err(e) => return Err(e),
                    };
                    insert_identity!(tx, identity)?;
                    n
                }
                Mutation::LinkIdentity(identity) => insert_identity!(tx, identity)?,
                Mutation::RecordFederatedSignIn { idp, issuer, subject, email, groups } => {
                    let n = sqlx::query(
                        "UPDATE federated_identities SET last_sign_in_at = $1, email = $2, groups = COALESCE($6, groups), \
                         groups_at = CASE WHEN $6 IS NULL THEN groups_at ELSE $1 END \
                         WHERE idp = $3 AND issuer = $4 AND subject = $5")
                        .bind(now)
                        .bind(email)
                        .bind(idp)
                        .bind(issuer)
                        .bind(subject)
                        .bind(groups.as_ref().map(|g| g.join("\n")))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    found(n, "federated identity")?;
                    n
                }
                Mutation::SignOutEverywhere { user_id, reason } => {
                    sqlx::query(END_BROWSER_SESSIONS).bind(user_id).execute(&mut *tx).await?;
                    sqlx::query(REVOKE_GRANTS)
                        .bind(now)
                        .bind(reason)
                        .bind("user")
                        .bind(user_id)
                        .bind("")
                        .bind("")
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
                Mutation::SaveUpstreamCredential(c) => sqlx::query(
                    "INSERT INTO upstream_credentials (user_id, route, issuer, subject, scope, tokens_sealed, access_expires_at, \
                     refresh_lease_until, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $8) \
                     ON CONFLICT (user_id, route) DO UPDATE SET issuer = excluded.issuer, subject = excluded.subject, \
                     scope = excluded.scope, tokens_sealed = excluded.tokens_sealed, access_expires_at = excluded.access_expires_at, \
                     refresh_lease_until = NULL, updated_at = excluded.updated_at")
                    .bind(&c.user_id)
                    .bind(&c.route)
                    .bind(&c.issuer)
                    .bind(&c.subject)
                    .bind(c.scope.to_string())
                    .bind(&c.tokens_sealed)
                    .bind(c.access_expires_at)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                Mutation::DeleteUpstreamCredentials { user_id, route } => {
                    if user_id.is_none() && route.is_none() {
                        return Err(StoreError::NotFound("a user or route whose upstream credentials to delete"));
                    }
                    sqlx::query(
                        "DELETE FROM upstream_credentials WHERE (CAST($1 AS TEXT) IS NULL OR user_id = $1) \
                         AND (CAST($2 AS TEXT) IS NULL OR route = $2)")
                        .bind(user_id)
                        .bind(route)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
                Mutation::DeleteUngrantedUpstreamCredentials { resource_prefix, user_id, now } => sqlx::query(
                    crate::vault::ungranted_credentials!("DELETE"))
                    .bind(resource_prefix)
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                Mutation::RecordOnly | Mutation::Announce => 0,
            };
            let revision = record_in_tx!(tx, audit, announce);
            tx.commit().await?;
            Committed { affected, revision }
        });
        Ok(committed)
    }

    /// Deletes the clients of `origins` last used (or, if never used, created) before
    /// `cutoff`, with everything they hold, each with its own audit and change record made
    /// from `template` (its client is filled in). Returns the ids removed.
    pub async fn delete_unused_clients(
        &self,
        origins: &[RegistrationOrigin],
        cutoff: i64,
        template: &NewAuditEvent,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for origin in origins {
            let ids: Vec<String> = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let ids: Vec<(String,)> = sqlx::query_as(
                    "DELETE FROM clients WHERE origin = $1 AND COALESCE(last_used_at, created_at) < $2 RETURNING client_id")
                    .bind(origin.as_str())
                    .bind(cutoff)
                    .fetch_all(&mut *tx)
                    .await?;
                for (client_id,) in &ids {
                    let audit = NewAuditEvent { client_id: Some(client_id.clone()), ..template.clone() };
                    record_in_tx!(tx, &audit, true);
                }
                tx.commit().await?;
                ids.into_iter().map(|(id,)| id).collect()
            });
            removed.extend(ids);
        }
        Ok(removed)
    }

    /// The newest revision of the change log (0 before the first change).
    pub async fn latest_revision(&self) -> Result<i64> {
        let (revision,): (i64,) = on_reader!(self, pool => sqlx::query_as("SELECT revision FROM change_log_head WHERE id = 1")
            .fetch_one(pool)
            .await?);
        Ok(revision)
    }

    /// Changes after `revision`, oldest first, at most `limit` of them.
    pub async fn changes_after(&self, revision: i64, limit: i64) -> Result<Vec<ChangeRecord>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            revision: i64,
            kind: String,
            client_id: Option<String>,
            user_id: Option<String>,
            occurred_at: i64,
        }
        let rows: Vec<Row> = on_reader!(self, pool => sqlx::query_as(
            "SELECT revision, kind, client_id, user_id, occurred_at FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2")
            .bind(revision)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok(ChangeRecord {
                    kind: stored(AuditKind::parse, &r.kind, "change kind", || format!("change {}", r.revision))?,
                    revision: r.revision,
                    client_id: r.client_id,
                    user_id: r.user_id,
                    occurred_at: r.occurred_at,
                })
            })
            .collect()
    }

    /// Which of `grant_ids` are still live: not revoked or expired, their client active and
    /// their user (if any) enabled.
    pub async fn live_grants(&self, grant_ids: &[String], now: i64) -> Result<std::collections::HashSet<String>> {
        if grant_ids.is_empty() {
            return Ok(Default::default());
        }
        let mut live = std::collections::HashSet::new();
        for chunk in grant_ids.chunks(500) {
            let rows: Vec<(String,)> = on_reader!(self, pool => {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT g.id FROM grants g JOIN clients c ON c.client_id = g.client_id LEFT JOIN users u ON u.id = g.user_id \
                     WHERE g.revoked_at IS NULL AND g.expires_at > ",
                );
                query.push_bind(now);
                query.push(" AND c.status = 'active' AND u.disabled_at IS NULL AND g.id IN (");
                let mut ids = query.separated(", ");
                for id in chunk {
                    ids.push_bind(id);
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await?
            });
            live.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(live)
    }
}

/// A connection that waits for announced changes (PostgreSQL `LISTEN portcullis_changes_<schema>`).
pub struct ChangeListener(sqlx::postgres::PgListener);

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeListener")
    }
}

impl ChangeListener {
    /// Waits for the next announcement. An error means the connection is gone; open another.
    pub async fn notified(&mut self) -> Result<()> {
        self.0.try_recv().await.map_err(StoreError::Database)?.map(|_| ()).ok_or(StoreError::NotFound("notification"))
    }
}

impl Store {
    /// On PostgreSQL, a connection of its own that LISTENs for announced changes; on SQLite,
    /// `None`: changes are found by reading the log (another process on the same file cannot
    /// announce anything).
    pub async fn change_listener(&self) -> Result<Option<ChangeListener>> {
        let crate::Backend::Postgres(pool) = &self.backend else { return Ok(None) };
        let listener = self
            .within_deadline(async {
                let (schema,): (String,) = sqlx::query_as("SELECT current_schema()").fetch_one(pool).await?;
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(&format!("portcullis_changes_{schema}")).await?;
                Ok(listener)
            })
            .await?;
        Ok(Some(ChangeListener(listener)))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, crate::Backend::Postgres(_))
    }
}

impl Store {
    /// Of `user_ids` and `client_ids`, those that can no longer act: users disabled or gone,
    /// clients not active or gone. Returns `(users, clients)`.
    pub async fn inactive(
        &self,
        user_ids: &[String],
        client_ids: &[String],
    ) -> Result<(std::collections::HashSet<String>, std::collections::HashSet<String>)> {
        use std::collections::HashSet;
        let mut live_users = HashSet::new();
        for chunk in user_ids.chunks(500) {
            let rows: Vec<(String,)> = on_reader!(self, pool => {
                let mut query = sqlx::QueryBuilder::new("SELECT id FROM users WHERE disabled_at IS NULL AND id IN (");
                let mut ids = query.separated(", ");
                for id in chunk {
                    ids.push_bind(id);
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await?
            });
            live_users.extend(rows.into_iter().map(|(id,)| id));
        }
        let mut live_clients = HashSet::new();
        for chunk in client_ids.chunks(500) {
            let rows: Vec<(String,)> = on_reader!(self, pool => {
                let mut query =
                    sqlx::QueryBuilder::new("SELECT client_id FROM clients WHERE status = 'active' AND client_id IN (");
                let mut ids = query.separated(", ");
                for id in chunk {
                    ids.push_bind(id);
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await?
            });
            live_clients.extend(rows.into_iter().map(|(id,)| id));
        }
        let users = user_ids.iter().filter(|u| !live_users.contains(*u)).cloned().collect();
        let clients = client_ids.iter().filter(|c| !live_clients.contains(*c)).cloned().collect();
        Ok((users, clients))
    }
}
