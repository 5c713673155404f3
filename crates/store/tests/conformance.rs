//! The storage conformance suite: every case runs against SQLite and PostgreSQL, and both must
//! behave the same. PostgreSQL is required (set PORTCULLIS_TEST_POSTGRES_URL to point
//! elsewhere than the local server); a missing server fails the suite rather than skipping it.

use portcullis_store::*;

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
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        allowed_scopes: "a b".into(),
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
        scope: "a".into(),
        code_challenge: "x".repeat(43),
        nonce: None,
        auth_time: 100,
        created_at: 100,
        expires_at: 160,
        redeemed_at: None,
    }
}

fn access(jti: &str, now: i64) -> NewAccessToken {
    NewAccessToken { jti: jti.into(), scope: "a".into(), issued_at: now, expires_at: now + 300 }
}

fn refresh(digest: &[u8], now: i64) -> NewRefreshToken {
    NewRefreshToken { digest: digest.to_vec(), scope: "a".into(), created_at: now, expires_at: now + 1000 }
}

async fn seed(store: &Store) -> TestResult {
    store.insert_user(&user("u1")).await?;
    store.insert_client(&client("c1")).await?;
    Ok(())
}

#[tokio::test]
async fn users_and_clients_round_trip() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        assert_eq!(store.find_user_by_username("u1-name").await?, Some(user("u1")), "{name}");
        assert!(matches!(store.insert_user(&user("u1")).await, Err(StoreError::Conflict(_))), "{name}");
        assert_eq!(store.find_client("c1").await?, Some(client("c1")), "{name}");
        assert!(matches!(store.insert_client(&client("c1")).await, Err(StoreError::Conflict(_))), "{name}");
        assert_eq!(store.list_clients().await?.len(), 1, "{name}");

        store.set_user_disabled("u1-name", Some(200), 200).await?;
        assert!(store.find_user("u1").await?.is_some_and(|u| u.is_disabled()), "{name}");
        assert!(
            matches!(store.set_user_disabled("nobody", None, 200).await, Err(StoreError::NotFound("user"))),
            "{name}"
        );
        store.set_user_password("u1-name", "$argon2id$new", 201).await?;
        assert_eq!(store.find_user("u1").await?.and_then(|u| u.password_hash), Some("$argon2id$new".into()), "{name}");

        // A config upsert keeps the status an administrator set.
        store.set_client_status("c1", ClientStatus::Suspended, 300).await?;
        let mut changed = client("c1");
        changed.client_name = "Renamed".into();
        store.upsert_client(&changed).await?;
        let found = store.find_client("c1").await?.ok_or("client vanished")?;
        assert_eq!((found.client_name.as_str(), found.status), ("Renamed", ClientStatus::Suspended), "{name}");

        store.delete_client("c1").await?;
        assert!(matches!(store.delete_client("c1").await, Err(StoreError::NotFound("client"))), "{name}");
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
        assert!(store.revoke_access_token("jti-g1", 120).await?, "{name}");
        assert!(!store.revoke_access_token("jti-g1", 120).await?, "{name}: second revoke is a no-op");
        assert!(store.access_token_status("jti-g1").await?.is_some_and(|s| s.token_revoked), "{name}");

        store.save_consent("u1", "c1", "https://mcp.test/mcp", "a", 120).await?;
        store.save_consent("u1", "c1", "https://mcp.test/mcp", "a b", 121).await?;
        let consent = store.find_consent("u1", "c1", "https://mcp.test/mcp").await?.ok_or("consent missing")?;
        assert_eq!((consent.scope.as_str(), consent.created_at, consent.updated_at), ("a b", 120, 121), "{name}");
        assert!(store.revoke_consent("u1", "c1", "https://mcp.test/mcp", 130).await?, "{name}");
        assert!(store.find_consent("u1", "c1", "https://mcp.test/mcp").await?.is_none(), "{name}");
        assert!(store.access_token_status("jti-g2").await?.is_some_and(|s| s.grant_revoked), "{name}");

        // A fresh grant, then the user is disabled, then the client suspended.
        store.insert_authorization_code(b"code-4", &code("g4")).await?;
        store.redeem_authorization_code(b"code-4", 140, 5000).await?;
        store.insert_grant_tokens("g4", None, &access("jti-g4", 140)).await?;
        assert!(store.access_token_status("jti-g4").await?.is_some_and(|s| s.is_active(141)), "{name}");
        store.set_user_disabled("u1-name", Some(150), 150).await?;
        assert!(
            store.access_token_status("jti-g4").await?.is_some_and(|s| s.user_disabled && !s.is_active(151)),
            "{name}"
        );
        store.set_user_disabled("u1-name", None, 151).await?;
        store.set_client_status("c1", ClientStatus::Suspended, 160).await?;
        let status = store.access_token_status("jti-g4").await?.ok_or("missing")?;
        assert!(status.grant_revoked && status.client_status == ClientStatus::Suspended, "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn sessions_requests_and_keys() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        seed(store).await?;
        let name = store.backend_name();
        store.insert_session(b"sess", "u1", 100, 200).await?;
        assert!(
            store.find_session(b"sess", 150).await?.is_some_and(|s| s.user.id == "u1" && s.auth_time == 100),
            "{name}"
        );
        assert!(store.find_session(b"sess", 200).await?.is_none(), "{name}: expired");
        store.set_user_disabled("u1-name", Some(160), 160).await?;
        assert!(store.find_session(b"sess", 150).await?.is_none(), "{name}: disabled user's session is gone");

        let request = AuthorizationRequestRecord {
            client_id: "c1".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            scope: "a".into(),
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
        store.add_signing_key(&key("k1", 100), 100).await?;
        store.add_signing_key(&key("k2", 200), 500).await?;
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
        store.insert_initial_access_token(b"iat", &token).await?;
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
        store.insert_client(&dcr).await?;
        store.insert_client(&client("admin")).await?;
        assert_eq!(store.count_clients(RegistrationOrigin::Dcr).await?, 1, "{name}");
        dcr.client_name = "Renamed".into();
        dcr.redirect_uris = vec!["http://127.0.0.1/new".into()];
        dcr.client_uri = Some("https://dyn.example.test".into());
        dcr.updated_at = 300;
        store.update_client_metadata(&dcr).await?;
        assert_eq!(store.find_client("dyn").await?, Some(dcr.clone()), "{name}");
        store.touch_client("dyn", 5000).await?;
        let mut idle = client("idle");
        idle.origin = RegistrationOrigin::Cimd;
        store.insert_client(&idle).await?;
        assert_eq!(
            store.delete_unused_clients(&[RegistrationOrigin::Dcr, RegistrationOrigin::Cimd], 4000).await?,
            1,
            "{name}"
        );
        assert!(store.find_client("idle").await?.is_none() && store.find_client("dyn").await?.is_some(), "{name}");
        assert!(store.find_client("admin").await?.is_some(), "{name}: admin clients are never swept");
        assert!(store.record_assertion_jti("dyn", "j1", 500).await?, "{name}");
        assert!(!store.record_assertion_jti("dyn", "j1", 500).await?, "{name}: a replayed jti");
        assert!(store.record_assertion_jti("admin", "j1", 500).await?, "{name}: jtis are per client");
        dcr.client_id = "missing".into();
        assert!(matches!(store.update_client_metadata(&dcr).await, Err(StoreError::NotFound("client"))), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn audit_events_are_written_in_batches_and_read_in_order() -> TestResult {
    let (stores, _dir) = stores().await?;
    for store in &stores {
        let event = |n: i64| NewAuditEvent {
            occurred_at: 1_900_000_000 + n,
            route: "crm".into(),
            method: "tools/call".into(),
            target: Some(format!("tool-{n}")),
            decision: if n % 2 == 0 { "allowed" } else { "denied" }.into(),
            reason: (n % 2 == 1).then(|| "insufficient_scope".into()),
            user_id: Some("u".into()),
            username: None,
            client_id: Some("c".into()),
            issuer: None,
            status: 200,
            latency_ms: n,
        };
        // More rows than one statement carries, so the chunking is exercised.
        let events: Vec<NewAuditEvent> = (0..450).map(event).collect();
        store.append_audit_events(&events).await?;
        store.append_audit_events(&[]).await?;
        let newest = store.audit_events(None, 3).await?;
        let targets: Vec<_> = newest.iter().map(|e| e.event.target.clone().unwrap_or_default()).collect();
        assert_eq!(targets, ["tool-447", "tool-448", "tool-449"], "{}", store.backend_name());
        assert_eq!(newest[0].event, event(447));
        let after = store.audit_events(Some(newest[0].id), 10).await?;
        assert_eq!(after.len(), 2);
        let all = store.audit_events(Some(0), 1000).await?;
        assert_eq!(all.len(), 450);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    }
    Ok(())
}
