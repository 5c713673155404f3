//! The storage conformance suite: every case runs against SQLite and PostgreSQL, and both must
//! behave the same. PostgreSQL is required (set PORTCULLIS_TEST_POSTGRES_URL to point
//! elsewhere than the local server); a missing server fails the suite rather than skipping it.

use portcullis_store::*;
use portcullis_types::ScopeSet;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn postgres_url() -> String {
    std::env::var("PORTCULLIS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, migrated store of each backend. The SQLite file lives as long as the tempdir.
async fn stores() -> std::result::Result<(Vec<Store>, tempfile::TempDir), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sqlite = Store::connect(&format!("sqlite://{}", dir.path().join("test.db").display()), 4).await?;
    sqlite.migrate().await?;
    let admin =
        Store::connect(&postgres_url(), 1).await.map_err(|e| format!("PostgreSQL is required for this suite: {e}"))?;
    let schema = format!("conformance_{}", unique_suffix());
    admin.execute_admin_sql(&format!("CREATE SCHEMA {schema}")).await?;
    admin.close().await;
    let sep = if postgres_url().contains('?') { '&' } else { '?' };
    let pg = Store::connect(&format!("{}{sep}options=-c%20search_path%3D{schema}", postgres_url()), 4).await?;
    pg.migrate().await?;
    Ok((vec![sqlite, pg], dir))
}

fn scopes(text: &str) -> ScopeSet {
    ScopeSet::parse(text).unwrap_or_default()
}

/// Applies a mutation as the system would, recording it as `kind`.
async fn apply_as(store: &Store, kind: AuditKind, mutation: Mutation, now: i64) -> Result<Committed, StoreError> {
    store.commit(&mutation, &NewAuditEvent::action(kind, &Actor::System, now)).await
}

async fn apply(store: &Store, mutation: Mutation, now: i64) -> Result<Committed, StoreError> {
    apply_as(store, AuditKind::ClientUpdated, mutation, now).await
}

fn unique_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}", std::process::id(), nanos)
}

fn user(id: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        username: format!("{id}-name"),
        display_name: Some("Alice".into()),
        email: None,
        password_hash: Some("$argon2id$fake".into()),
        is_admin: false,
        disabled_at: None,
        created_at: 100,
        updated_at: 100,
    }
}

fn client(id: &str) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        client_name: "Test client".into(),
        client_type: ClientType::Public,
        secret_digest: None,
        redirect_uris: vec!["http://127.0.0.1/cb".into(), "https://app.test/cb".into()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        allowed_scopes: scopes("a b"),
        allowed_resources: vec!["https://mcp.test/mcp".into()],
        application_type: ApplicationType::Native,
        origin: RegistrationOrigin::Admin,
        verified: true,
        status: ClientStatus::Active,
        can_introspect: false,
        registration_token_digest: None,
        registered_from: None,
        client_uri: None,
        jwks: None,
        created_at: 100,
        updated_at: 100,
        last_used_at: None,
    }
}

fn code(grant_id: &str) -> AuthorizationCodeRecord {
    AuthorizationCodeRecord {
        grant_id: grant_id.into(),
        client_id: "c1".into(),
        user_id: "u1".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        resource: "https://mcp.test/mcp".into(),
        scope: scopes("a"),
        code_challenge: "x".repeat(43),
        nonce: None,
        auth_time: 100,
        created_at: 100,
        expires_at: 160,
        redeemed_at: None,
        grant_not_after: None,
    }
}

fn access(jti: &str, now: i64) -> NewAccessToken {
    NewAccessToken { jti: jti.into(), scope: scopes("a"), issued_at: now, expires_at: now + 300 }
}

fn refresh(digest: &[u8], now: i64) -> NewRefreshToken {
    NewRefreshToken { digest: digest.to_vec(), scope: scopes("a"), created_at: now, expires_at: now + 1000 }
}

async fn seed(store: &Store) -> TestResult {
    apply(store, Mutation::InsertUser(Box::new(user("u1"))), 100).await?;
    apply(store, Mutation::InsertClient(Box::new(client("c1"))), 100).await?;
    Ok(())
}

#[tokio::test]
async fn users_and_clients_round_trip() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        assert_eq!(store.find_user_by_username("u1-name").await?, Some(user("u1")), "{name}");
        let again = apply(store, Mutation::InsertUser(Box::new(user("u1"))), 100).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{name}");
        assert_eq!(store.find_client("c1").await?, Some(client("c1")), "{name}");
        let again = apply(store, Mutation::InsertClient(Box::new(client("c1"))), 100).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{name}");
        assert_eq!(store.list_clients().await?.len(), 1, "{name}");

        apply(store, Mutation::SetUserDisabled { user_id: "u1".into(), disabled: true }, 200).await?;
        assert!(store.find_user("u1").await?.is_some_and(|u| u.is_disabled()), "{name}");
        let nobody = apply(store, Mutation::SetUserDisabled { user_id: "nobody".into(), disabled: false }, 200).await;
        assert!(matches!(nobody, Err(StoreError::NotFound("user"))), "{name}");
        let password = Mutation::SetUserPassword { user_id: "u1".into(), password_hash: "$argon2id$new".into() };
        apply(store, password, 201).await?;
        assert_eq!(store.find_user("u1").await?.and_then(|u| u.password_hash), Some("$argon2id$new".into()), "{name}");

        // A config upsert keeps the status an administrator set.
        apply(store, Mutation::SetClientStatus { client_id: "c1".into(), status: ClientStatus::Suspended }, 300)
            .await?;
        let mut changed = client("c1");
        changed.client_name = "Renamed".into();
        apply(store, Mutation::UpsertClient(Box::new(changed)), 301).await?;
        let found = store.find_client("c1").await?.ok_or("client vanished")?;
        assert_eq!((found.client_name.as_str(), found.status), ("Renamed", ClientStatus::Suspended), "{name}");

        apply(store, Mutation::DeleteClient { client_id: "c1".into() }, 302).await?;
        let gone = apply(store, Mutation::DeleteClient { client_id: "c1".into() }, 303).await;
        assert!(matches!(gone, Err(StoreError::NotFound("client"))), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn code_redemption_is_single_use_and_replay_revokes() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        store.insert_authorization_code(b"code-1", &code("g1")).await?;
        let CodeRedemption::Redeemed(found) = store.redeem_authorization_code(b"code-1", 110, 5000).await? else {
            return Err(format!("{name}: first redemption failed").into());
        };
        assert_eq!(found.grant_id, "g1");
        store.insert_grant_tokens("g1", Some(&refresh(b"rt-1", 110)), &access("jti-1", 110)).await?;
        let status = store.access_token_status("jti-1").await?.ok_or("no status")?;
        assert!(status.is_active(111), "{name}");

        assert_eq!(
            store.redeem_authorization_code(b"code-1", 111, 5000).await?,
            CodeRedemption::Replayed { grant_id: "g1".into() },
            "{name}"
        );
        let status = store.access_token_status("jti-1").await?.ok_or("no status")?;
        assert!(status.grant_revoked && !status.is_active(112), "{name}");
        assert_eq!(
            store.find_grant("g1").await?.and_then(|g| g.revoked_reason),
            Some("authorization code replayed".into()),
            "{name}"
        );

        // Expired and unknown codes are simply not found.
        store.insert_authorization_code(b"code-2", &code("g2")).await?;
        assert_eq!(store.redeem_authorization_code(b"code-2", 160, 5000).await?, CodeRedemption::NotFound, "{name}");
        assert_eq!(store.redeem_authorization_code(b"nope", 110, 5000).await?, CodeRedemption::NotFound, "{name}");
        assert!(store.find_grant("g2").await?.is_none(), "{name}: no grant for an expired code");
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_redemptions_yield_exactly_one_grant() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        store.insert_authorization_code(b"race", &code("g-race")).await?;
        let attempts = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.redeem_authorization_code(b"race", 110, 5000).await })
        });
        let mut redeemed = 0;
        for attempt in attempts {
            if let CodeRedemption::Redeemed(_) = attempt.await?? {
                redeemed += 1;
            }
        }
        assert_eq!(redeemed, 1, "{}", store.backend_name());
    }
    Ok(())
}

#[tokio::test]
async fn refresh_rotation_and_reuse_detection() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        store.insert_authorization_code(b"code", &code("g1")).await?;
        store.redeem_authorization_code(b"code", 110, 5000).await?;
        store.insert_grant_tokens("g1", Some(&refresh(b"rt-1", 110)), &access("jti-1", 110)).await?;

        let found = store.find_refresh_token(b"rt-1").await?.ok_or("rt-1 missing")?;
        assert_eq!((found.grant.id.as_str(), found.rotated_at), ("g1", None), "{name}");
        assert_eq!(
            store.rotate_refresh_token(b"rt-1", 120, &refresh(b"rt-2", 120), &access("jti-2", 120)).await?,
            RefreshRotation::Rotated,
            "{name}"
        );
        assert_eq!(
            store.rotate_refresh_token(b"rt-2", 130, &refresh(b"rt-3", 130), &access("jti-3", 130)).await?,
            RefreshRotation::Rotated,
            "{name}"
        );

        // Reusing rt-1 revokes the family: rt-3 and every access token die.
        assert_eq!(
            store.rotate_refresh_token(b"rt-1", 140, &refresh(b"rt-x", 140), &access("jti-x", 140)).await?,
            RefreshRotation::Reused { grant_id: "g1".into() },
            "{name}"
        );
        assert_eq!(
            store.rotate_refresh_token(b"rt-3", 150, &refresh(b"rt-4", 150), &access("jti-4", 150)).await?,
            RefreshRotation::Invalid,
            "{name}"
        );
        assert!(store.access_token_status("jti-x").await?.is_none(), "{name}: nothing half-written on reuse");
        for jti in ["jti-1", "jti-2", "jti-3"] {
            assert!(!store.access_token_status(jti).await?.ok_or("missing")?.is_active(151), "{name} {jti}");
        }
        assert_eq!(
            store.rotate_refresh_token(b"unknown", 150, &refresh(b"rt-5", 150), &access("jti-5", 150)).await?,
            RefreshRotation::Invalid,
            "{name}"
        );
    }
    Ok(())
}

/// The token endpoint's writes that arrive together share one transaction (the group
/// commit): many at once are all committed and answered with their own outcome, a replay of a
/// refresh token in the same batch is still caught, and a write that fails takes nothing else
/// down with it and leaves nothing half-written.
#[tokio::test]
async fn token_writes_arriving_together_commit_together_and_fail_alone() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        for (code_digest, grant_id, rt) in [(b"code-a", "g-a", b"rt-a"), (b"code-b", "g-b", b"rt-b")] {
            store.insert_authorization_code(code_digest, &code(grant_id)).await?;
            store.redeem_authorization_code(code_digest, 110, 5000).await?;
            store
                .insert_grant_tokens(grant_id, Some(&refresh(rt, 110)), &access(&format!("first-{grant_id}"), 110))
                .await?;
        }
        let grant = |id: String| GrantRecord {
            id,
            client_id: "c1".into(),
            user_id: None,
            kind: GrantKind::ClientCredentials,
            resource: "https://rs.example/mcp".into(),
            scope: scopes("a"),
            auth_time: None,
            created_at: 120,
            expires_at: 420,
            revoked_at: None,
            revoked_reason: None,
        };
        let mut grants = Vec::new();
        for i in 0..200 {
            let (store, grant) = (store.clone(), grant(format!("cc-{i}")));
            grants.push(tokio::spawn(async move {
                store.insert_grant_with_access_token(&grant, &access(&format!("cc-jti-{i}"), 120)).await
            }));
        }
        // The same grant id again: refused as a conflict, alone.
        let duplicate = {
            let (store, grant) = (store.clone(), grant("cc-7".into()));
            tokio::spawn(async move { store.insert_grant_with_access_token(&grant, &access("dup-jti", 120)).await })
        };
        let rotate = |old: &'static [u8], new: &'static [u8], jti: &'static str| {
            let store = store.clone();
            tokio::spawn(
                async move { store.rotate_refresh_token(old, 130, &refresh(new, 130), &access(jti, 130)).await },
            )
        };
        let a1 = rotate(b"rt-a", b"rt-a1", "jti-a1");
        let a2 = rotate(b"rt-a", b"rt-a2", "jti-a2");
        let b = rotate(b"rt-b", b"rt-b1", "jti-b1");
        let unknown = rotate(b"rt-unknown", b"rt-u1", "jti-u1");

        for (i, written) in grants.into_iter().enumerate() {
            written.await?.map_err(|e| format!("{name}: grant {i}: {e}"))?;
        }
        assert!(matches!(duplicate.await?, Err(StoreError::Conflict(_))), "{name}");
        let mut a = [a1.await??, a2.await??];
        a.sort_by_key(|r| matches!(r, RefreshRotation::Rotated));
        assert_eq!(a, [RefreshRotation::Reused { grant_id: "g-a".into() }, RefreshRotation::Rotated], "{name}");
        assert_eq!(b.await??, RefreshRotation::Rotated, "{name}");
        assert_eq!(unknown.await??, RefreshRotation::Invalid, "{name}");

        for i in 0..200 {
            let status = store.access_token_status(&format!("cc-jti-{i}")).await?.ok_or("missing")?;
            assert!(status.is_active(121), "{name}: cc-jti-{i}");
            assert_eq!(status.grant_id, format!("cc-{i}"), "{name}");
        }
        assert!(store.access_token_status("dup-jti").await?.is_none(), "{name}: the conflicting write left its token");
        assert!(store.access_token_status("jti-u1").await?.is_none(), "{name}");
        // The replay revoked g-a, the token its rotation issued included; g-b lives on.
        for jti in ["first-g-a", "jti-a1", "jti-a2"] {
            let status = store.access_token_status(jti).await?;
            assert!(status.is_none_or(|s| !s.is_active(131)), "{name}: {jti}");
        }
        assert!(store.access_token_status("jti-b1").await?.ok_or("missing")?.is_active(131), "{name}");
        assert!(store.find_refresh_token(b"rt-b1").await?.is_some(), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn suspension_disabling_and_consent_revocation_kill_tokens() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        for (n, grant) in ["g1", "g2", "g3"].iter().enumerate() {
            let digest = format!("code-{n}");
            store.insert_authorization_code(digest.as_bytes(), &code(grant)).await?;
            store.redeem_authorization_code(digest.as_bytes(), 110, 5000).await?;
            store.insert_grant_tokens(grant, None, &access(&format!("jti-{grant}"), 110)).await?;
        }
        let revoke = || Mutation::RevokeAccessToken { jti: "jti-g1".into() };
        assert_eq!(apply(store, revoke(), 120).await?.affected, 1, "{name}");
        assert_eq!(apply(store, revoke(), 120).await?.affected, 0, "{name}: second revoke is a no-op");
        assert!(store.access_token_status("jti-g1").await?.is_some_and(|s| s.token_revoked), "{name}");

        let consent = |scope: &str| Mutation::SaveConsent {
            user_id: "u1".into(),
            client_id: "c1".into(),
            resource: "https://mcp.test/mcp".into(),
            scope: scopes(scope),
        };
        apply(store, consent("a"), 120).await?;
        apply(store, consent("a b"), 121).await?;
        let found = store.find_consent("u1", "c1", "https://mcp.test/mcp").await?.ok_or("consent missing")?;
        assert_eq!((found.scope.to_string().as_str(), found.created_at, found.updated_at), ("a b", 120, 121), "{name}");
        let revoke = || Mutation::RevokeConsent {
            user_id: "u1".into(),
            client_id: "c1".into(),
            resource: "https://mcp.test/mcp".into(),
        };
        assert_eq!(apply(store, revoke(), 130).await?.affected, 1, "{name}");
        assert!(matches!(apply(store, revoke(), 131).await, Err(StoreError::NotFound("consent"))), "{name}");
        assert!(store.find_consent("u1", "c1", "https://mcp.test/mcp").await?.is_none(), "{name}");
        assert!(store.access_token_status("jti-g2").await?.is_some_and(|s| s.grant_revoked), "{name}");

        // A fresh grant, then the user is disabled, then the client suspended.
        store.insert_authorization_code(b"code-4", &code("g4")).await?;
        store.redeem_authorization_code(b"code-4", 140, 5000).await?;
        store.insert_grant_tokens("g4", None, &access("jti-g4", 140)).await?;
        assert!(store.access_token_status("jti-g4").await?.is_some_and(|s| s.is_active(141)), "{name}");
        assert_eq!(store.live_grants(&["g4".into(), "g2".into(), "nope".into()], 141).await?.len(), 1, "{name}");
        apply(store, Mutation::SetUserDisabled { user_id: "u1".into(), disabled: true }, 150).await?;
        assert!(
            store.access_token_status("jti-g4").await?.is_some_and(|s| s.user_disabled && !s.is_active(151)),
            "{name}"
        );
        assert!(
            store.live_grants(&["g4".into()], 151).await?.is_empty(),
            "{name}: a disabled user's grant is not live"
        );
        apply(store, Mutation::SetUserDisabled { user_id: "u1".into(), disabled: false }, 151).await?;
        assert_eq!(store.live_grants(&["g4".into()], 152).await?.len(), 1, "{name}");
        apply(store, Mutation::SetClientStatus { client_id: "c1".into(), status: ClientStatus::Suspended }, 160)
            .await?;
        let status = store.access_token_status("jti-g4").await?.ok_or("missing")?;
        assert!(status.grant_revoked && status.client_status == ClientStatus::Suspended, "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn delegated_tokens_live_only_while_their_grant_and_every_actor_do() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        apply(store, Mutation::InsertClient(Box::new(client("d1"))), 100).await?;
        apply(store, Mutation::InsertClient(Box::new(client("d2"))), 100).await?;
        store.insert_authorization_code(b"code-x", &code("gx")).await?;
        store.redeem_authorization_code(b"code-x", 110, 5000).await?;
        store.insert_grant_tokens("gx", None, &access("jti-subject", 110)).await?;
        let actors = vec!["d2".to_owned(), "d1".to_owned(), "c1".to_owned()];
        store
            .insert_delegated_access_token("gx", &access("jti-delegated", 111), "https://other.test/mcp", &actors)
            .await?;
        let status = store.access_token_status("jti-delegated").await?.ok_or("missing")?;
        assert_eq!(
            (status.holder(), status.client_id.as_str(), status.resource.as_str(), status.inactive_actors),
            ("d2", "c1", "https://other.test/mcp", 0),
            "{name}: held by the delegate, drawn from c1's grant, for its own audience"
        );
        assert!(status.is_active(112), "{name}");
        let plain = store.access_token_status("jti-subject").await?.ok_or("missing")?;
        assert_eq!((plain.holder(), plain.resource.as_str()), ("c1", "https://mcp.test/mcp"), "{name}");
        // An actor in the middle suspended, then deleted: inactive either way.
        apply(store, Mutation::SetClientStatus { client_id: "d1".into(), status: ClientStatus::Suspended }, 120)
            .await?;
        let status = store.access_token_status("jti-delegated").await?.ok_or("missing")?;
        assert!(status.inactive_actors == 1 && !status.is_active(121), "{name}");
        assert!(store.access_token_status("jti-subject").await?.is_some_and(|s| s.is_active(121)), "{name}");
        apply(store, Mutation::DeleteClient { client_id: "d1".into() }, 122).await?;
        let status = store.access_token_status("jti-delegated").await?.ok_or("missing")?;
        assert!(status.inactive_actors == 1 && !status.is_active(123), "{name}: a deleted actor counts");
        // The grant revoked: the delegated token goes with it.
        store
            .insert_delegated_access_token("gx", &access("jti-d2", 124), "https://other.test/mcp", &["d2".to_owned()])
            .await?;
        assert!(store.access_token_status("jti-d2").await?.is_some_and(|s| s.is_active(125)), "{name}");
        apply(
            store,
            Mutation::RevokeGrants { selector: GrantSelector::Grant("gx".into()), reason: "test".into() },
            126,
        )
        .await?;
        assert!(store.access_token_status("jti-d2").await?.is_some_and(|s| s.grant_revoked), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn upstream_client_registrations_are_kept_once() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let name = store.backend_name();
        let record = |client_id: &str| portcullis_store::UpstreamClientRecord {
            issuer: "https://as.test".into(),
            redirect_uri: "https://gw.test/connect-callback".into(),
            client_id: client_id.into(),
            client_secret_sealed: None,
            auth_method: "none".into(),
            registered_at: 100,
        };
        assert!(store.find_upstream_client("https://as.test", "https://gw.test/connect-callback").await?.is_none());
        let kept = store.save_upstream_client(&record("first")).await?;
        let raced = store.save_upstream_client(&record("second")).await?;
        assert_eq!((kept.client_id.as_str(), raced.client_id.as_str()), ("first", "first"), "{name}: the first wins");
        store.forget_upstream_client("https://as.test", "https://gw.test/connect-callback", "other").await?;
        assert!(store.find_upstream_client("https://as.test", "https://gw.test/connect-callback").await?.is_some());
        store.forget_upstream_client("https://as.test", "https://gw.test/connect-callback", "first").await?;
        assert!(store.find_upstream_client("https://as.test", "https://gw.test/connect-callback").await?.is_none());
    }
    Ok(())
}

fn identity(user_id: &str, subject: &str) -> FederatedIdentityRecord {
    FederatedIdentityRecord {
        idp: "corp".into(),
        issuer: "https://corp.test".into(),
        subject: subject.into(),
        user_id: user_id.into(),
        email: Some("alice@corp.test".into()),
        groups: vec!["eng".into()],
        groups_at: Some(100),
        created_at: 100,
        last_sign_in_at: 100,
    }
}

#[tokio::test]
async fn federated_identities_sessions_and_logout() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        // A user made at first sign-in comes with their identity, in one commit.
        let mut carol = user("u-carol");
        carol.email = Some("Carol@Corp.test".into());
        carol.password_hash = None;
        let created = Mutation::InsertFederatedUser {
            user: Box::new(carol),
            identity: Box::new(identity("u-carol", "sub-carol")),
        };
        assert_eq!(apply_as(store, AuditKind::UserAdded, created, 100).await?.revision, None, "{name}: not announced");
        let found = store.find_federated_identity("corp", "https://corp.test", "sub-carol").await?.ok_or("identity")?;
        assert_eq!(found.user_id, "u-carol", "{name}");
        assert!(store.find_federated_identity("other", "https://corp.test", "sub-carol").await?.is_none(), "{name}");
        assert_eq!(store.find_users_by_email("carol@corp.TEST").await?.len(), 1, "{name}: case-insensitive");
        // One identity per user per provider, and an identity has one user.
        let again = apply(store, Mutation::LinkIdentity(Box::new(identity("u-carol", "sub-other"))), 110).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{name}: {again:?}");
        let taken = apply(store, Mutation::LinkIdentity(Box::new(identity("u1", "sub-carol"))), 110).await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "{name}: {taken:?}");
        apply(store, Mutation::LinkIdentity(Box::new(identity("u1", "sub-alice"))), 110).await?;
        assert_eq!(store.federated_identities_of("u1").await?.len(), 1, "{name}");
        apply(
            store,
            Mutation::RecordFederatedSignIn {
                idp: "corp".into(),
                issuer: "https://corp.test".into(),
                subject: "sub-alice".into(),
                email: Some("new@corp.test".into()),
                groups: Some(vec!["eng".into(), "ops".into()]),
            },
            120,
        )
        .await?;
        let alice = store.find_federated_identity("corp", "https://corp.test", "sub-alice").await?.ok_or("alice")?;
        assert_eq!((alice.last_sign_in_at, alice.email.as_deref()), (120, Some("new@corp.test")), "{name}");
        assert_eq!(
            (alice.groups.as_slice(), alice.groups_at),
            (&["eng".to_owned(), "ops".to_owned()][..], Some(120)),
            "{name}: the groups of the last sign-in"
        );
        // A statement without groups does not forget them.
        let keep = Mutation::RecordFederatedSignIn {
            idp: "corp".into(),
            issuer: "https://corp.test".into(),
            subject: "sub-alice".into(),
            email: None,
            groups: None,
        };
        apply(store, keep, 130).await?;
        let alice = store.find_federated_identity("corp", "https://corp.test", "sub-alice").await?.ok_or("alice")?;
        assert_eq!(
            (alice.groups.as_slice(), alice.groups_at),
            (&["eng".to_owned(), "ops".to_owned()][..], Some(120)),
            "{name}: kept, with their time"
        );

        // A provider's statement is spent once, then forgotten when it expires.
        assert!(store.record_seen_assertion("https://corp.test", "jti-1", 300).await?, "{name}");
        assert!(!store.record_seen_assertion("https://corp.test", "jti-1", 300).await?, "{name}: replay");
        assert!(store.record_seen_assertion("https://other.test", "jti-1", 300).await?, "{name}: per issuer");

        // A federated session says how it was made.
        let federation = SessionFederation {
            idp: "corp".into(),
            idp_session_id: Some("sid-1".into()),
            groups: vec!["eng".into(), "Domain Users".into()],
        };
        store.insert_session(b"fed", "u1", 100, 900, Some(&federation)).await?;
        let session = store.find_session(b"fed", 150).await?.ok_or("session")?;
        assert_eq!(session.federation, Some(federation), "{name}");
        assert_eq!(store.users_of_idp_session("corp", "sid-1").await?, vec!["u1".to_owned()], "{name}");

        // A grant made in that session ends with the sign-in's bound.
        let bounded = AuthorizationCodeRecord { grant_not_after: Some(400), ..code("g-fed") };
        store.insert_authorization_code(b"code-fed", &bounded).await?;
        store.redeem_authorization_code(b"code-fed", 140, 5000).await?;
        store.insert_grant_tokens("g-fed", None, &access("jti-fed", 140)).await?;
        assert_eq!(store.live_grants(&["g-fed".into()], 399).await?.len(), 1, "{name}");
        assert!(store.live_grants(&["g-fed".into()], 401).await?.is_empty(), "{name}: past the bound");

        // Back-channel logout: sessions end, grants are revoked, every node is told.
        let out = apply_as(
            store,
            AuditKind::SignedOutByIdp,
            Mutation::SignOutEverywhere { user_id: "u1".into(), reason: "logged out".into() },
            200,
        )
        .await?;
        assert!(out.revision.is_some() && out.affected >= 1, "{name}: {out:?}");
        assert!(store.find_session(b"fed", 201).await?.is_none(), "{name}");
        assert!(store.live_grants(&["g-fed".into()], 201).await?.is_empty(), "{name}");
    }
    Ok(())
}

fn credential(user_id: &str, route: &str, sealed: &[u8]) -> UpstreamCredentialRecord {
    UpstreamCredentialRecord {
        user_id: user_id.into(),
        route: route.into(),
        issuer: "https://github.test".into(),
        subject: Some("octocat".into()),
        scope: scopes("repo"),
        tokens_sealed: sealed.to_vec(),
        access_expires_at: Some(500),
        refresh_lease_until: None,
        created_at: 100,
        updated_at: 100,
    }
}

#[tokio::test]
async fn the_token_vault_connects_leases_refreshes_and_forgets() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        apply(store, Mutation::InsertUser(Box::new(user("u2"))), 100).await?;
        let connected = apply_as(
            store,
            AuditKind::UpstreamConnected,
            Mutation::SaveUpstreamCredential(Box::new(credential("u1", "github", b"sealed-1"))),
            100,
        )
        .await?;
        assert!(connected.revision.is_some(), "{name}: announced, so nodes drop what they cached");
        apply(store, Mutation::SaveUpstreamCredential(Box::new(credential("u1", "linear", b"sealed-2"))), 100).await?;
        apply(store, Mutation::SaveUpstreamCredential(Box::new(credential("u2", "github", b"sealed-3"))), 100).await?;
        assert_eq!(store.upstream_credential_routes().await?, ["github", "linear"], "{name}");
        let found = store.find_upstream_credential("u1", "github").await?.ok_or("u1's github")?;
        assert_eq!(
            (found.tokens_sealed.as_slice(), found.subject.as_deref()),
            (&b"sealed-1"[..], Some("octocat")),
            "{name}"
        );
        assert_eq!(store.upstream_credentials_of("u1").await?.len(), 2, "{name}");
        // Reconnecting replaces.
        apply(store, Mutation::SaveUpstreamCredential(Box::new(credential("u1", "github", b"sealed-1b"))), 110).await?;
        let replaced = store.find_upstream_credential("u1", "github").await?.ok_or("u1's github")?;
        assert_eq!(replaced.tokens_sealed, b"sealed-1b", "{name}");

        // One refresh at a time, across nodes: the lease is taken once until it lapses.
        assert!(store.take_refresh_lease("u1", "github", 200, 230).await?, "{name}");
        assert!(!store.take_refresh_lease("u1", "github", 210, 240).await?, "{name}: held");
        assert!(store.store_refreshed_tokens("u1", "github", b"sealed-1c", Some(900), 215).await?, "{name}");
        let refreshed = store.find_upstream_credential("u1", "github").await?.ok_or("u1's github")?;
        assert_eq!(
            (refreshed.tokens_sealed.as_slice(), refreshed.access_expires_at, refreshed.refresh_lease_until),
            (&b"sealed-1c"[..], Some(900), None),
            "{name}"
        );
        assert!(store.take_refresh_lease("u1", "github", 216, 246).await?, "{name}: given back");
        assert!(store.take_refresh_lease("u1", "github", 247, 277).await?, "{name}: a lapsed lease is taken over");

        // Disconnecting one leaves the rest; disabling a user forgets theirs; a removed route
        // forgets everyone's.
        let gone = Mutation::DeleteUpstreamCredentials { user_id: Some("u1".into()), route: Some("linear".into()) };
        assert_eq!(apply(store, gone, 300).await?.affected, 1, "{name}");
        assert!(store.find_upstream_credential("u1", "linear").await?.is_none(), "{name}");
        assert!(
            !store.store_refreshed_tokens("u1", "linear", b"revived", None, 301).await?,
            "{name}: nothing is revived"
        );
        apply(store, Mutation::SetUserDisabled { user_id: "u1".into(), disabled: true }, 310).await?;
        assert!(
            store.upstream_credentials_of("u1").await?.is_empty(),
            "{name}: a disabled user's accounts are forgotten"
        );
        assert!(store.find_upstream_credential("u2", "github").await?.is_some(), "{name}: not another user's");
        let route_gone = Mutation::DeleteUpstreamCredentials { user_id: None, route: Some("github".into()) };
        assert_eq!(apply(store, route_gone, 320).await?.affected, 1, "{name}");
        let nothing = Mutation::DeleteUpstreamCredentials { user_id: None, route: None };
        assert!(matches!(apply(store, nothing, 330).await, Err(StoreError::NotFound(_))), "{name}: never everything");
    }
    Ok(())
}

#[tokio::test]
async fn sessions_requests_and_keys() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        store.insert_session(b"sess", "u1", 100, 200, None).await?;
        assert!(
            store.find_session(b"sess", 150).await?.is_some_and(|s| s.user.id == "u1" && s.auth_time == 100),
            "{name}"
        );
        assert!(store.find_session(b"sess", 200).await?.is_none(), "{name}: expired");
        apply(store, Mutation::SetUserDisabled { user_id: "u1".into(), disabled: true }, 160).await?;
        assert!(store.find_session(b"sess", 150).await?.is_none(), "{name}: disabled user's session is gone");

        let request = AuthorizationRequestRecord {
            client_id: "c1".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            scope: scopes("a"),
            resource: "https://mcp.test/mcp".into(),
            state: Some("s".into()),
            nonce: None,
            code_challenge: "x".repeat(43),
            prompt: "login".into(),
            max_age: Some(0),
            login_user_id: None,
            created_at: 100,
            expires_at: 700,
        };
        store.insert_authorization_request(b"req", &request).await?;
        assert_eq!(store.find_authorization_request(b"req", 150).await?, Some(request.clone()), "{name}");
        store.set_authorization_request_login(b"req", "u1").await?;
        let signed_in = store.find_authorization_request(b"req", 150).await?.ok_or("request vanished")?;
        assert_eq!(signed_in.login_user_id.as_deref(), Some("u1"), "{name}");
        assert!(store.take_authorization_request(b"req").await?, "{name}");
        assert!(!store.take_authorization_request(b"req").await?, "{name}: answered once");

        let key = |kid: &str, at: i64| SigningKeyRecord {
            kid: kid.into(),
            alg: "ES256".into(),
            private_key_sealed: vec![1, 2, 3],
            created_at: at,
            retired_at: None,
            publish_until: None,
        };
        apply(store, Mutation::AddSigningKey { key: key("k1", 100), old_publish_until: 100 }, 100).await?;
        apply(store, Mutation::AddSigningKey { key: key("k2", 200), old_publish_until: 500 }, 100).await?;
        let published = store.published_signing_keys(300).await?;
        assert_eq!(published.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k2", "k1"], "{name}");
        assert_eq!(published.first().and_then(|k| k.retired_at), None, "{name}");
        assert_eq!(
            store.published_signing_keys(500).await?.len(),
            1,
            "{name}: k1 unpublished after its tokens expired"
        );
        store.insert_authorization_request(b"req-2", &request).await?;
        assert_eq!(store.purge_expired(699).await?, 0, "{name}");
        assert_eq!(store.purge_expired(700).await?, 1, "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn initial_access_tokens_are_spent_once_per_use_and_expire() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let name = store.backend_name();
        let token = InitialAccessTokenRecord { label: "ci".into(), uses_left: 2, created_at: 100, expires_at: 200 };
        apply(store, Mutation::InsertInitialAccessToken { token_digest: b"iat".to_vec(), token }, 100).await?;
        assert!(store.consume_initial_access_token(b"iat", 150).await?, "{name}");
        assert!(!store.consume_initial_access_token(b"iat", 200).await?, "{name}: expired");
        assert!(store.consume_initial_access_token(b"iat", 199).await?, "{name}");
        assert!(!store.consume_initial_access_token(b"iat", 150).await?, "{name}: used up");
        assert!(!store.consume_initial_access_token(b"other", 150).await?, "{name}: unknown");
        assert_eq!(store.list_initial_access_tokens().await?.first().map(|t| t.uses_left), Some(0), "{name}");

        let mut dcr = client("dyn");
        dcr.origin = RegistrationOrigin::Dcr;
        dcr.registration_token_digest = Some(vec![7; 32]);
        dcr.registered_from = Some("127.0.0.1".into());
        apply(store, Mutation::InsertClient(Box::new(dcr.clone())), 100).await?;
        apply(store, Mutation::InsertClient(Box::new(client("admin"))), 100).await?;
        assert_eq!(store.count_clients(RegistrationOrigin::Dcr).await?, 1, "{name}");
        dcr.client_name = "Renamed".into();
        dcr.redirect_uris = vec!["http://127.0.0.1/new".into()];
        dcr.client_uri = Some("https://dyn.example.test".into());
        dcr.updated_at = 300;
        apply(store, Mutation::UpdateClientMetadata(Box::new(dcr.clone())), 300).await?;
        assert_eq!(store.find_client("dyn").await?, Some(dcr.clone()), "{name}");
        store.touch_client("dyn", 5000).await?;
        let mut idle = client("idle");
        idle.origin = RegistrationOrigin::Cimd;
        apply(store, Mutation::InsertClient(Box::new(idle)), 100).await?;
        let template = NewAuditEvent::action(AuditKind::ClientDeleted, &Actor::System, 4000);
        let swept =
            store.delete_unused_clients(&[RegistrationOrigin::Dcr, RegistrationOrigin::Cimd], 4000, &template).await?;
        assert_eq!(swept, ["idle"], "{name}");
        let deleted = store
            .audit_events(None, 10, &AuditFilter { kinds: vec![AuditKind::ClientDeleted], ..Default::default() })
            .await?;
        assert_eq!(deleted.iter().map(|e| e.event.client_id.as_deref()).collect::<Vec<_>>(), [Some("idle")], "{name}");
        assert!(store.find_client("idle").await?.is_none() && store.find_client("dyn").await?.is_some(), "{name}");
        assert!(store.find_client("admin").await?.is_some(), "{name}: admin clients are never swept");
        assert!(store.record_assertion_jti("dyn", "j1", 500).await?, "{name}");
        assert!(!store.record_assertion_jti("dyn", "j1", 500).await?, "{name}: a replayed jti");
        assert!(store.record_assertion_jti("admin", "j1", 500).await?, "{name}: jtis are per client");
        dcr.client_id = "missing".into();
        let missing = apply(store, Mutation::UpdateClientMetadata(Box::new(dcr.clone())), 301).await;
        assert!(matches!(missing, Err(StoreError::NotFound("client"))), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn audit_events_are_written_in_batches_and_read_in_order() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let event = |n: i64| NewAuditEvent {
            occurred_at: 1_900_000_000 + n,
            kind: AuditKind::McpMessage,
            actor: None,
            source_address: None,
            route: Some("crm".into()),
            method: Some("tools/call".into()),
            target: Some(format!("tool-{n}")),
            outcome: if n % 2 == 0 { AuditOutcome::Allowed } else { AuditOutcome::Denied },
            reason: (n % 2 == 1).then(|| "insufficient_scope".into()),
            user_id: Some("u".into()),
            username: None,
            client_id: Some(if n % 3 == 0 { "c3" } else { "c" }.into()),
            issuer: None,
            subject: None,
            status: Some(200),
            latency_ms: Some(n),
        };
        // More rows than one statement carries, so the chunking is exercised.
        let events: Vec<NewAuditEvent> = (0..450).map(event).collect();
        store.append_audit_events(&events).await?;
        store.append_audit_events(&[]).await?;
        let newest = store.audit_events(None, 3, &AuditFilter::default()).await?;
        let targets: Vec<_> = newest.iter().map(|e| e.event.target.clone().unwrap_or_default()).collect();
        assert_eq!(targets, ["tool-447", "tool-448", "tool-449"], "{}", store.backend_name());
        assert_eq!(newest[0].event, event(447));
        let after = store.audit_events(Some(newest[0].id), 10, &AuditFilter::default()).await?;
        assert_eq!(after.len(), 2);
        let all = store.audit_events(Some(0), 1000, &AuditFilter::default()).await?;
        assert_eq!(all.len(), 450);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        // Identity actions share the trail; filters pick by kind, user and client.
        let actor = Actor::Client { client_id: "c".into(), source: Some([127, 0, 0, 1].into()) };
        let action = NewAuditEvent {
            client_id: Some("c".into()),
            user_id: Some("u".into()),
            username: Some("ursula".into()),
            ..NewAuditEvent::action(AuditKind::ClientSuspended, &actor, 1_900_001_000)
        };
        store.commit(&Mutation::RecordOnly, &action).await?;
        let only = |kinds: Vec<AuditKind>, user: Option<&str>, client: Option<&str>| AuditFilter {
            kinds,
            user: user.map(str::to_owned),
            client_id: client.map(str::to_owned),
            ..Default::default()
        };
        let suspended = store.audit_events(None, 10, &only(vec![AuditKind::ClientSuspended], None, None)).await?;
        assert_eq!(suspended.len(), 1);
        assert_eq!(suspended[0].event, action);
        assert_eq!(suspended[0].event.actor.as_deref(), Some("client:c"));
        assert_eq!(suspended[0].event.source_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(store.audit_events(None, 1000, &only(vec![], Some("ursula"), None)).await?.len(), 1);
        assert_eq!(store.audit_events(None, 1000, &only(vec![], Some("u"), Some("c3"))).await?.len(), 150);
        let mcp = store.audit_events(None, 1000, &only(vec![AuditKind::McpMessage], None, Some("c"))).await?;
        assert_eq!(mcp.len(), 300);
        // Time range (from inclusive, to exclusive), route, target and decision.
        let window = AuditFilter { from: Some(1_900_000_010), to: Some(1_900_000_020), ..Default::default() };
        assert_eq!(store.audit_events(Some(0), 1000, &window).await?.len(), 10);
        let denied =
            AuditFilter { route: Some("crm".into()), outcome: Some(AuditOutcome::Denied), ..Default::default() };
        assert_eq!(store.audit_events(Some(0), 1000, &denied).await?.len(), 225);
        let tool = AuditFilter { target: Some("tool-7".into()), ..Default::default() };
        assert_eq!(store.audit_events(Some(0), 1000, &tool).await?.len(), 1);
        assert_eq!(
            store
                .audit_events(Some(0), 1000, &AuditFilter { route: Some("other".into()), ..Default::default() })
                .await?
                .len(),
            0
        );
        // Newest first, a page at a time below a cursor.
        let first = store.audit_events_before(None, 2, &AuditFilter::default()).await?;
        assert_eq!(first.len(), 2);
        assert!(first[0].id > first[1].id);
        let next = store.audit_events_before(Some(first[1].id), 2, &AuditFilter::default()).await?;
        assert!(next.iter().all(|e| e.id < first[1].id));
        // The overview's histogram: gateway decisions per interval, aligned, empty ones left out.
        let buckets = store.decision_histogram(1_900_000_000, 100).await?;
        let starts: Vec<i64> = buckets.iter().map(|b| b.start).collect();
        assert_eq!(starts, [1_900_000_000, 1_900_000_100, 1_900_000_200, 1_900_000_300, 1_900_000_400]);
        assert_eq!((buckets[0].allowed, buckets[0].denied), (50, 50));
        assert_eq!((buckets[4].allowed, buckets[4].denied), (25, 25), "the suspension is no gateway decision");
        assert!(store.decision_histogram(1_900_002_000, 100).await?.is_empty());
        // When an agent last acted for a user.
        assert_eq!(store.last_acted("u", "c3").await?, Some(1_900_000_447));
        assert_eq!(store.last_acted("u", "nobody").await?, None);
    }
    Ok(())
}

#[tokio::test]
async fn the_overview_counts_clients_and_live_grants_per_scope_set() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let mut pending = client("c2");
        pending.status = ClientStatus::Pending;
        pending.verified = false;
        apply(store, Mutation::InsertClient(Box::new(pending)), 100).await?;
        apply(store, Mutation::InsertClient(Box::new(client("c3"))), 100).await?;
        let counts = store.client_counts().await?;
        let of = |status: ClientStatus, verified: bool| {
            counts.iter().find(|c| c.status == status && c.verified == verified).map_or(0, |c| c.count)
        };
        assert_eq!((of(ClientStatus::Active, true), of(ClientStatus::Pending, false)), (2, 1), "{counts:?}");
        assert_eq!(of(ClientStatus::Suspended, true), 0);

        // Live grants for one resource, per distinct scope set.
        apply(store, Mutation::InsertUser(Box::new(user("u2"))), 100).await?;
        let resource = "https://mcp.test/mcp";
        let grant = |id: &str, client_id: &str, user_id: &str, scope: &str, expires_at: i64| GrantRecord {
            id: id.into(),
            client_id: client_id.into(),
            user_id: Some(user_id.into()),
            kind: GrantKind::AuthorizationCode,
            resource: resource.into(),
            scope: scopes(scope),
            auth_time: Some(100),
            created_at: 100,
            expires_at,
            revoked_at: None,
            revoked_reason: None,
        };
        for (i, (client_id, user_id, scope, expires)) in [
            ("c1", "u1", "a", 10_000),
            ("c3", "u1", "a", 10_000),
            ("c3", "u2", "a b", 10_000),
            ("c1", "u2", "a b", 150),
            ("c2", "u2", "a b", 10_000),
        ]
        .into_iter()
        .enumerate()
        {
            let g = grant(&format!("g{i}"), client_id, user_id, scope, expires);
            store.insert_grant_with_access_token(&g, &access(&format!("j{i}"), 100)).await?;
        }
        let live = store.live_grant_scopes(resource, 200).await?;
        let summary: Vec<(String, i64, i64)> = live.iter().map(|h| (h.scope.to_string(), h.grants, h.users)).collect();
        // Expired (g3) and held by a pending client (g4): not live.
        assert_eq!(summary, [("a".to_owned(), 2, 1), ("a b".to_owned(), 1, 1)], "{}", store.backend_name());
        assert!(store.live_grant_scopes("https://elsewhere.test/mcp", 200).await?.is_empty());
        // Token families: the live grants of a client (or a user), with their live tokens.
        let families = store.token_families(FamiliesOf::Client("c3"), 200).await?;
        let ids: Vec<&str> = families.iter().map(|f| f.grant.id.as_str()).collect();
        assert_eq!(ids, ["g1", "g2"], "{}", store.backend_name());
        assert!(families.iter().all(|f| f.live_access_tokens == 1 && f.refresh_expires_at.is_none()));
        assert_eq!(families[0].last_issued_at, Some(100));
        let of_u2 = store.token_families(FamiliesOf::User("u2"), 200).await?;
        assert_eq!(of_u2.len(), 2, "g3 expired; g2 and g4 live (g4's client is pending, still a family)");
        assert!(store.token_families(FamiliesOf::User("u2"), 400).await?.iter().all(|f| f.live_access_tokens == 0));
        assert_eq!(store.consents_to_client("c1").await?, Vec::new());
        assert!(store.sessions_of_user("u1", 200).await?.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn changes_are_logged_in_commit_order_with_their_audit_record() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let name = store.backend_name();
        assert_eq!(store.latest_revision().await?, 0, "{name}");
        seed(store).await?;
        // A new user is nobody's cached state: audited, not announced.
        let after_seed = store.latest_revision().await?;
        let suspend = Mutation::SetClientStatus { client_id: "c1".into(), status: ClientStatus::Suspended };
        let committed = store
            .commit(
                &suspend,
                &NewAuditEvent {
                    client_id: Some("c1".into()),
                    ..NewAuditEvent::action(AuditKind::ClientSuspended, &Actor::Operator, 500)
                },
            )
            .await?;
        assert_eq!(committed.revision, Some(after_seed + 1), "{name}");
        let record_only = store
            .commit(&Mutation::RecordOnly, &NewAuditEvent::action(AuditKind::SignInFailed, &Actor::System, 501))
            .await?;
        assert_eq!(record_only.revision, None, "{name}: a record changes nothing");
        let changes = store.changes_after(after_seed, 100).await?;
        assert_eq!(changes.len(), 1, "{name}");
        assert_eq!(
            (changes[0].kind, changes[0].client_id.as_deref(), changes[0].occurred_at),
            (AuditKind::ClientSuspended, Some("c1"), 500),
            "{name}"
        );
        // A failed mutation writes neither its change nor its audit record.
        let before = store.audit_events(None, 1000, &AuditFilter::default()).await?.len();
        let missing = Mutation::SetClientStatus { client_id: "nope".into(), status: ClientStatus::Suspended };
        assert!(matches!(apply(store, missing, 502).await, Err(StoreError::NotFound("client"))), "{name}");
        assert_eq!(store.latest_revision().await?, after_seed + 1, "{name}");
        assert_eq!(store.audit_events(None, 1000, &AuditFilter::default()).await?.len(), before, "{name}");

        // Concurrent commits get distinct, gap-free revisions.
        let mut tasks = Vec::new();
        for n in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let revoke =
                    Mutation::RevokeGrants { selector: GrantSelector::Grant(format!("g{n}")), reason: "test".into() };
                apply_as(&store, AuditKind::GrantsRevoked, revoke, 600).await
            }));
        }
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.extend(task.await??.revision);
        }
        revisions.sort_unstable();
        let expected: Vec<i64> = (after_seed + 2..after_seed + 22).collect();
        assert_eq!(revisions, expected, "{name}");
        let logged: Vec<i64> = store.changes_after(after_seed + 1, 100).await?.iter().map(|c| c.revision).collect();
        assert_eq!(logged, expected, "{name}");
        assert_eq!(store.changes_after(after_seed + 1, 5).await?.len(), 5, "{name}: bounded reads");
    }
    Ok(())
}

#[tokio::test]
async fn replayed_codes_and_reused_refresh_tokens_are_audited_and_announced() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let name = store.backend_name();
        seed(store).await?;
        store.insert_authorization_code(b"code-r", &code("gr")).await?;
        assert!(matches!(store.redeem_authorization_code(b"code-r", 110, 5000).await?, CodeRedemption::Redeemed(_)));
        let before = store.latest_revision().await?;
        assert!(matches!(
            store.redeem_authorization_code(b"code-r", 111, 5000).await?,
            CodeRedemption::Replayed { .. }
        ));
        let changes = store.changes_after(before, 10).await?;
        assert_eq!(changes.len(), 1, "{name}");
        assert_eq!((changes[0].kind, changes[0].user_id.as_deref()), (AuditKind::GrantsRevoked, Some("u1")), "{name}");
        let audit = store
            .audit_events(None, 10, &AuditFilter { kinds: vec![AuditKind::GrantsRevoked], ..Default::default() })
            .await?;
        let last = audit.last().ok_or("no audit record")?;
        assert_eq!(
            (last.event.reason.as_deref(), last.event.actor.as_deref(), last.event.target.as_deref()),
            (Some("authorization code replayed"), Some("system"), Some("gr")),
            "{name}"
        );
        // A third try finds the grant revoked already: nothing more is recorded.
        store.redeem_authorization_code(b"code-r", 112, 5000).await?;
        assert_eq!(store.changes_after(before, 10).await?.len(), 1, "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn a_corrupt_row_is_an_error_that_names_it() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let name = store.backend_name();
        seed(store).await?;
        store.execute_admin_sql("UPDATE clients SET allowed_scopes = 'a \"b' WHERE client_id = 'c1'").await?;
        let err = store.find_client("c1").await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("the stored scope of client \"c1\" is malformed"), "{name}: {err}");
        store
            .execute_admin_sql(
                "UPDATE clients SET allowed_scopes = '', grant_types = 'implicit' WHERE client_id = 'c1'",
            )
            .await?;
        let err = store.find_client("c1").await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("grant type of client \"c1\" is malformed (\"implicit\" is not one)"), "{name}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn postgres_announces_each_change_to_its_own_schema_only() -> TestResult {
    let (mine, _dir) = stores().await?;
    let (others, _other_dir) = stores().await?;
    for (store, other) in mine.iter().zip(&others) {
        let listener = store.change_listener().await?;
        let Some(mut listener) = listener else {
            assert_eq!(store.backend_name(), "sqlite", "only SQLite has nothing to listen to");
            continue;
        };
        // A change in another schema of the same database does not wake this one.
        apply_as(
            other,
            AuditKind::GrantsRevoked,
            Mutation::RevokeGrants { selector: GrantSelector::Grant("x".into()), reason: "test".into() },
            1,
        )
        .await?;
        let woken = tokio::time::timeout(std::time::Duration::from_millis(300), listener.notified()).await;
        assert!(woken.is_err(), "woken by another schema's change");
        apply_as(
            store,
            AuditKind::GrantsRevoked,
            Mutation::RevokeGrants { selector: GrantSelector::Grant("y".into()), reason: "test".into() },
            2,
        )
        .await?;
        tokio::time::timeout(std::time::Duration::from_secs(2), listener.notified())
            .await
            .map_err(|_| "no notification")??;
    }
    Ok(())
}

/// A trail of 60 records: two batches of gateway decisions and ten identity actions between.
async fn chained_trail(store: &Store) -> TestResult {
    let decision = |n: i64| NewAuditEvent {
        occurred_at: 1_900_000_000 + n,
        kind: AuditKind::McpMessage,
        actor: None,
        source_address: Some("127.0.0.1".into()),
        route: Some("crm".into()),
        method: Some("tools/call".into()),
        target: Some(format!("tool-{n}")),
        outcome: AuditOutcome::Allowed,
        reason: None,
        user_id: Some("u".into()),
        username: Some("ursula".into()),
        client_id: Some("c".into()),
        issuer: None,
        subject: None,
        status: Some(200),
        latency_ms: Some(n),
    };
    store.append_audit_events(&(1..=25).map(decision).collect::<Vec<_>>()).await?;
    for n in 0..10 {
        store
            .commit(
                &Mutation::RecordOnly,
                &NewAuditEvent::action(AuditKind::ClientSuspended, &Actor::System, 1_900_000_100 + n),
            )
            .await?;
    }
    store.append_audit_events(&(26..=50).map(decision).collect::<Vec<_>>()).await?;
    Ok(())
}

#[tokio::test]
async fn the_audit_chain_names_the_first_record_that_was_tampered_with() -> TestResult {
    // Each case on a fresh trail of both backends; in a fresh store record n has id n and place n.
    let cases: &[(&str, &[&str], Option<ChainFault>)] = &[
        ("intact", &[], None),
        (
            "altered",
            &["UPDATE audit_events SET target = 'export_contacts' WHERE seq = 10"],
            Some(ChainFault::Altered { seq: 10, id: 10, occurred_at: 1_900_000_010 }),
        ),
        (
            "a decision changed from denied to allowed",
            &["UPDATE audit_events SET decision = 'denied' WHERE seq = 30"],
            Some(ChainFault::Altered { seq: 30, id: 30, occurred_at: 1_900_000_104 }),
        ),
        (
            "deleted",
            &["DELETE FROM audit_events WHERE seq = 12"],
            Some(ChainFault::Deleted { seq: 12, after_id: Some(11), after_occurred_at: Some(1_900_000_011) }),
        ),
        (
            "inserted without a place",
            &["INSERT INTO audit_events (occurred_at, kind, decision) VALUES (1900000020, 'mcp.message', 'allowed')"],
            Some(ChainFault::Inserted { id: 61, occurred_at: 1_900_000_020 }),
        ),
        (
            "inserted past the head",
            &[
                "INSERT INTO audit_events (occurred_at, kind, decision, seq) VALUES (1900000020, 'mcp.message', 'allowed', 99)",
            ],
            Some(ChainFault::Inserted { id: 61, occurred_at: 1_900_000_020 }),
        ),
        (
            "reordered",
            &[
                "UPDATE audit_events SET seq = -1 WHERE seq = 5",
                "UPDATE audit_events SET seq = 5 WHERE seq = 40",
                "UPDATE audit_events SET seq = 40 WHERE seq = -1",
            ],
            Some(ChainFault::Altered { seq: 5, id: 40, occurred_at: 1_900_000_030 }),
        ),
        (
            "the tail cut off",
            &["DELETE FROM audit_events WHERE seq > 55"],
            Some(ChainFault::Truncated { last_seq: 55, head_seq: 60 }),
        ),
    ];
    for (name, tampering, expected) in cases {
        let (stores, _dir) = stores().await?;
        for store in &stores {
            chained_trail(store).await?;
            for statement in *tampering {
                store.execute_admin_sql(statement).await?;
            }
            let report = store.verify_audit_chain(&CheckpointKeys::default(), VerifyFrom::Start).await?;
            assert_eq!(&report.fault, expected, "{name} on {}", store.backend_name());
            match expected {
                None => assert_eq!(report.verified, 60, "{name}"),
                Some(ChainFault::Altered { seq, .. } | ChainFault::Deleted { seq, .. }) => {
                    assert_eq!(report.verified as i64, seq - 1, "{name}")
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn records_written_before_the_chain_are_chained_once_on_migration() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        chained_trail(store).await?;
        // As a database from before the chain: no places, no head.
        store.execute_admin_sql("UPDATE audit_events SET seq = NULL, hash = NULL").await?;
        store
            .execute_admin_sql("UPDATE audit_chain_head SET seq = 0, hash = X''")
            .await
            .or(store.execute_admin_sql("UPDATE audit_chain_head SET seq = 0, hash = ''::bytea").await)?;
        store.migrate().await?;
        let report = store.verify_audit_chain(&CheckpointKeys::default(), VerifyFrom::Start).await?;
        assert_eq!((report.verified, report.fault), (60, None), "{}", store.backend_name());
        // Once the chain has begun, a record without a place is never taken in.
        store
            .execute_admin_sql(
                "INSERT INTO audit_events (occurred_at, kind, decision) VALUES (1, 'mcp.message', 'denied')",
            )
            .await?;
        store.migrate().await?;
        assert!(matches!(
            store.verify_audit_chain(&CheckpointKeys::default(), VerifyFrom::Start).await?.fault,
            Some(ChainFault::Inserted { .. })
        ));
    }
    Ok(())
}

#[tokio::test]
async fn writers_appending_at_once_make_one_chain() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let mut writers = Vec::new();
        for w in 0..8_i64 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for b in 0..10_i64 {
                    let batch: Vec<NewAuditEvent> = (0..10)
                        .map(|n| NewAuditEvent {
                            target: Some(format!("w{w}-b{b}-n{n}")),
                            ..NewAuditEvent::action(AuditKind::McpMessage, &Actor::System, 1_900_000_000 + n)
                        })
                        .collect();
                    store.append_audit_events(&batch).await?;
                    let action = NewAuditEvent::action(AuditKind::ClientUpdated, &Actor::System, 1_900_000_000 + b);
                    store.commit(&Mutation::RecordOnly, &action).await?;
                }
                Ok::<(), StoreError>(())
            }));
        }
        for writer in writers {
            writer.await??;
        }
        let report = store.verify_audit_chain(&CheckpointKeys::default(), VerifyFrom::Start).await?;
        assert_eq!((report.verified, report.fault), (8 * 10 * 11, None), "{}", store.backend_name());
    }
    Ok(())
}

/// The audit key the checkpoint tests sign with, as a serving node would.
fn audit_key() -> std::result::Result<portcullis_crypto::SigningKey, Box<dyn std::error::Error>> {
    Ok(portcullis_crypto::SigningKey::generate()?)
}

fn trusting(key: &portcullis_crypto::SigningKey) -> CheckpointKeys {
    let jwk = key.public_jwk();
    CheckpointKeys::new(portcullis_crypto::PublicKey::from_p256_jwk(&jwk.x, &jwk.y, Some(key.kid())))
}

fn signed(
    key: &portcullis_crypto::SigningKey,
    kind: CheckpointKind,
    seq: i64,
    hash: [u8; 32],
    signed_at: i64,
) -> std::result::Result<AuditCheckpoint, Box<dyn std::error::Error>> {
    let mut checkpoint =
        AuditCheckpoint { kind, seq, hash, signed_at, kid: key.kid().to_owned(), signature: Vec::new() };
    checkpoint.signature = key.sign_bytes(&checkpoint.message())?;
    Ok(checkpoint)
}

/// 60 gateway decisions, record n at 1_900_000_000 + n, with a checkpoint signed after 20, 40
/// and 60 (at 2_000_000_020 and so on).
async fn checkpointed_trail(store: &Store, key: &portcullis_crypto::SigningKey) -> TestResult {
    for part in 0..3_i64 {
        let batch: Vec<NewAuditEvent> = (1..=20)
            .map(|n| NewAuditEvent {
                target: Some(format!("tool-{}", part * 20 + n)),
                username: Some("ursula".into()),
                ..NewAuditEvent::action(AuditKind::McpMessage, &Actor::System, 1_900_000_000 + part * 20 + n)
            })
            .collect();
        store.append_audit_events(&batch).await?;
        let head = store.audit_chain_head().await?;
        let checkpoint = signed(key, CheckpointKind::Periodic, head.seq, head.hash, 2_000_000_000 + head.seq)?;
        assert!(store.add_audit_checkpoint(&checkpoint).await?);
        assert!(!store.add_audit_checkpoint(&checkpoint).await?, "one checkpoint per place");
    }
    Ok(())
}

/// The stored chain as export lines (records with places and hashes), read back.
async fn exported(
    store: &Store,
    keys: &CheckpointKeys,
) -> std::result::Result<Vec<ExportLine>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    store.export_audit(&mut out, VerifyFrom::Start, keys, 2_100_000_000).await?;
    Ok(String::from_utf8(out)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

fn bytes_literal(store: &Store, bytes: &[u8]) -> String {
    match store.backend_name() {
        "postgres" => format!("'\\x{}'::bytea", hex::encode(bytes)),
        _ => format!("X'{}'", hex::encode(bytes)),
    }
}

/// What someone with write access to every table, but not the audit key, can do: change the
/// record at `from` and recompute every hash after it, and the head's.
async fn rewrite_from(store: &Store, from: i64) -> TestResult {
    let lines = exported(store, &CheckpointKeys::default()).await?;
    let mut previous = [0u8; 32];
    for line in lines {
        let ExportLine::Record(mut record) = line else { continue };
        let seq = record.seq.ok_or("a record without a place")?;
        if seq == from {
            record.target = Some("export_contacts".into());
        }
        let hash = record.chain_hash(&previous).ok_or("no place")?;
        if seq >= from {
            store
                .execute_admin_sql(&format!(
                    "UPDATE audit_events SET target = '{}', hash = {} WHERE seq = {seq}",
                    record.target.as_deref().unwrap_or_default(),
                    bytes_literal(store, &hash)
                ))
                .await?;
        }
        previous = hash;
    }
    store.execute_admin_sql(&format!("UPDATE audit_chain_head SET hash = {}", bytes_literal(store, &previous))).await?;
    Ok(())
}

#[tokio::test]
async fn signed_checkpoints_catch_a_rewritten_chain_a_cut_tail_and_a_forgery() -> TestResult {
    let key = audit_key()?;
    let keys = trusting(&key);
    let stranger = trusting(&audit_key()?);
    enum Tamper {
        Sql(&'static [&'static str]),
        RewriteFrom(i64),
    }
    let kid = key.kid().to_owned();
    let cases: Vec<(&str, Tamper, &CheckpointKeys, Option<ChainFault>)> = vec![
        ("intact", Tamper::Sql(&[]), &keys, None),
        (
            "the chain rewritten from place 30 on, hashes and head recomputed",
            Tamper::RewriteFrom(30),
            &keys,
            Some(ChainFault::Rewritten {
                seq: 40,
                after_seq: 20,
                id: 40,
                occurred_at: 1_900_000_040,
                signed_at: 2_000_000_040,
            }),
        ),
        (
            "the tail cut back to place 45 and the head moved with it",
            Tamper::Sql(&[
                "DELETE FROM audit_events WHERE seq > 45",
                "UPDATE audit_chain_head SET seq = 45, hash = (SELECT hash FROM audit_events WHERE seq = 45)",
            ]),
            &keys,
            Some(ChainFault::CutOff { seq: 60, signed_at: 2_000_000_060, last_seq: 45 }),
        ),
        (
            "a checkpoint's time changed",
            Tamper::Sql(&["UPDATE audit_checkpoints SET signed_at = signed_at + 1 WHERE seq = 40"]),
            &keys,
            Some(ChainFault::Forged { seq: 40, kid: kid.clone() }),
        ),
        (
            "a checkpoint copied to another place",
            Tamper::Sql(&["UPDATE audit_checkpoints SET seq = 41 WHERE seq = 40"]),
            &keys,
            Some(ChainFault::Forged { seq: 41, kid: kid.clone() }),
        ),
        (
            "signed by a key the walk does not trust",
            Tamper::Sql(&[]),
            &stranger,
            Some(ChainFault::Forged { seq: 20, kid: kid.clone() }),
        ),
    ];
    for (name, tamper, trusted, expected) in cases {
        let (stores, _dir) = stores().await?;
        for store in &stores {
            checkpointed_trail(store, &key).await?;
            match &tamper {
                Tamper::Sql(statements) => {
                    for statement in *statements {
                        store.execute_admin_sql(statement).await?;
                    }
                }
                Tamper::RewriteFrom(seq) => rewrite_from(store, *seq).await?,
            }
            let report = store.verify_audit_chain(trusted, VerifyFrom::Start).await?;
            assert_eq!(report.fault, expected, "{name} on {}", store.backend_name());
            if expected.is_none() {
                assert_eq!((report.verified, report.checkpoints, report.unsigned), (60, 3, 0), "{name}");
                assert_eq!(report.last_checkpoint, Some((60, 2_000_000_060)));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_walk_can_start_at_the_checkpoint_before_a_time() -> TestResult {
    let key = audit_key()?;
    let keys = trusting(&key);
    let (stores, _dir) = stores().await?;
    for store in &stores {
        checkpointed_trail(store, &key).await?;
        store
            .append_audit_events(&[NewAuditEvent::action(AuditKind::McpMessage, &Actor::System, 1_900_000_061)])
            .await?;
        // The first record at or after ...035 is place 35; the last checkpoint before it is 20.
        let report = store.verify_audit_chain(&keys, VerifyFrom::Time(1_900_000_035)).await?;
        assert_eq!(
            (report.started_after, report.verified, report.checkpoints, report.unsigned, report.fault),
            (20, 41, 3, 1, None),
            "{}",
            store.backend_name()
        );
        // A record altered before the anchor is not looked at; one after it is.
        store.execute_admin_sql("UPDATE audit_events SET target = 'x' WHERE seq = 30").await?;
        let report = store.verify_audit_chain(&keys, VerifyFrom::Time(1_900_000_035)).await?;
        assert_eq!(report.fault, Some(ChainFault::Altered { seq: 30, id: 30, occurred_at: 1_900_000_030 }));
    }
    Ok(())
}

#[tokio::test]
async fn a_pruned_trail_starts_at_a_signed_base_and_still_verifies() -> TestResult {
    let key = audit_key()?;
    let keys = trusting(&key);
    let (stores, _dir) = stores().await?;
    for store in &stores {
        checkpointed_trail(store, &key).await?;
        let pruned = NewAuditEvent::action(AuditKind::AuditPruned, &Actor::Operator, 2_000_000_100);
        let sign = |seq, hash| signed(&key, CheckpointKind::Base, seq, hash, 2_000_000_100).map_err(|e| e.to_string());
        // Records before ...026 are places 1 to 25.
        let report = store.prune_audit(1_900_000_026, sign, &pruned).await?;
        assert_eq!(report, PruneReport { removed: 25, base_seq: 25 }, "{}", store.backend_name());
        let base = store.audit_base_checkpoint().await?.ok_or("no base checkpoint")?;
        assert_eq!((base.kind, base.seq), (CheckpointKind::Base, 25));
        let walk = store.verify_audit_chain(&keys, VerifyFrom::Start).await?;
        // 35 kept, and the record of the prune itself, which says what it did.
        assert_eq!((walk.started_after, walk.verified, walk.fault), (25, 36, None), "{}", store.backend_name());
        let trail = store
            .audit_events(None, 1, &AuditFilter { kinds: vec![AuditKind::AuditPruned], ..Default::default() })
            .await?;
        let record = trail.first().ok_or("no audit.pruned record")?;
        assert_eq!(record.event.reason.as_deref(), Some("25 record(s) removed; the trail now starts after place 25"));
        // The checkpoint at 20 went with its records; 40 and 60 stay.
        assert!(store.audit_checkpoints_between(0, 24).await?.is_empty());
        // Pruning again before the same time removes nothing.
        let sign = |seq, hash| signed(&key, CheckpointKind::Base, seq, hash, 2_000_000_101).map_err(|e| e.to_string());
        assert_eq!(store.prune_audit(1_900_000_026, sign, &pruned).await?.removed, 0);

        // A record slipped in below the base, where pruned records were, is not in the chain.
        store
            .execute_admin_sql(
                "INSERT INTO audit_events (occurred_at, kind, decision, seq) VALUES (1900000005, 'mcp.message', 'allowed', 5)",
            )
            .await?;
        let walk = store.verify_audit_chain(&keys, VerifyFrom::Start).await?;
        assert!(
            matches!(walk.fault, Some(ChainFault::Inserted { occurred_at: 1_900_000_005, .. })),
            "{:?} on {}",
            walk.fault,
            store.backend_name()
        );
        store.execute_admin_sql("DELETE FROM audit_events WHERE seq = 5").await?;

        // Without its base, the trail is missing its beginning.
        store.execute_admin_sql("DELETE FROM audit_checkpoints WHERE kind = 'base'").await?;
        let walk = store.verify_audit_chain(&keys, VerifyFrom::Start).await?;
        assert_eq!(walk.fault, Some(ChainFault::Deleted { seq: 1, after_id: None, after_occurred_at: None }));
    }
    Ok(())
}

#[tokio::test]
async fn an_export_verifies_on_its_own_and_catches_an_edited_copy() -> TestResult {
    let key = audit_key()?;
    let keys = trusting(&key);
    let (stores, _dir) = stores().await?;
    for store in &stores {
        checkpointed_trail(store, &key).await?;
        let mut out = Vec::new();
        let summary = store.export_audit(&mut out, VerifyFrom::Start, &keys, 2_100_000_000).await?;
        assert_eq!((summary.records, summary.checkpoints, summary.head_seq), (60, 3, 60));
        let text = String::from_utf8(out)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 60 + 3 + 1, "header, records, checkpoints, end");

        let check = |lines: &[&str], pinned: Option<&CheckpointKeys>| {
            verify_export(std::io::Cursor::new(lines.join("\n")), pinned).map(|(_, report)| report)
        };
        let intact = check(&lines, None)?;
        assert_eq!((intact.verified, intact.checkpoints, intact.fault), (60, 3, None), "{}", store.backend_name());
        assert_eq!(check(&lines, Some(&keys))?.fault, None);

        // One record's decision edited in the copy (line n is record n up to 20).
        let mut edited = lines.clone();
        let changed = edited[10].replace("\"decision\":\"succeeded\"", "\"decision\":\"failed\"");
        assert_ne!(changed, edited[10]);
        edited[10] = &changed;
        assert_eq!(
            check(&edited, None)?.fault,
            Some(ChainFault::Altered { seq: 10, id: 10, occurred_at: 1_900_000_010 })
        );
        // A line taken out.
        let mut removed = lines.clone();
        removed.remove(5);
        assert!(matches!(check(&removed, None)?.fault, Some(ChainFault::Deleted { seq: 5, .. })));
        // Cut short: the end line is missing.
        assert!(matches!(check(&lines[..40], None), Err(ExportError::Unterminated { lines: 40 })));
        // Cut after record 43 (line 45) with an end line made to agree: a consistent shorter
        // export, unless a checkpoint from past its end is left in.
        let record_43: ChainedRecord = match serde_json::from_str(lines[45])? {
            ExportLine::Record(r) => *r,
            other => return Err(format!("line 45 is not a record: {other:?}").into()),
        };
        assert_eq!(record_43.seq, Some(43));
        let end = serde_json::to_string(&ExportLine::End {
            head_seq: 43,
            head_hash: hex::encode(record_43.hash.unwrap_or_default()),
        })?;
        let mut short: Vec<&str> = lines[..=45].to_vec();
        short.push(&end);
        assert_eq!(check(&short, None)?.fault, None);
        let checkpoint_60 = lines[63];
        short.insert(46, checkpoint_60);
        assert_eq!(
            check(&short, None)?.fault,
            Some(ChainFault::CutOff { seq: 60, signed_at: 2_000_000_060, last_seq: 43 })
        );
        // Someone else's keys in the header: pinned keys refuse them.
        let stranger = trusting(&audit_key()?);
        assert_eq!(
            check(&lines, Some(&stranger))?.fault,
            Some(ChainFault::Forged { seq: 20, kid: key.kid().to_owned() })
        );
    }
    Ok(())
}
