-- Single sign-on through the organisation's identity providers.

-- A federated identity is who the identity provider says signed in: (idp, issuer, subject),
-- never an email address (an email claim can change or be unverified; the subject cannot).
-- A user has at most one identity per identity provider.
CREATE TABLE federated_identities (
    idp TEXT NOT NULL,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- As last asserted, verified or not: shown to administrators, never used to find a user.
    email TEXT,
    -- The groups of the last sign-in that asserted any, one per line, and when.
    groups TEXT NOT NULL DEFAULT '',
    groups_at BIGINT,
    created_at BIGINT NOT NULL,
    last_sign_in_at BIGINT NOT NULL,
    PRIMARY KEY (idp, issuer, subject)
);
CREATE UNIQUE INDEX federated_identities_user_idp ON federated_identities (user_id, idp);

-- How a browser session was signed in: NULL for a local password; otherwise the identity
-- provider, its session id (what back-channel logout names) and the groups it asserted at
-- this sign-in, one per line (they bound what the user may grant).
ALTER TABLE browser_sessions ADD COLUMN idp TEXT;
ALTER TABLE browser_sessions ADD COLUMN idp_session_id TEXT;
ALTER TABLE browser_sessions ADD COLUMN idp_groups TEXT;
CREATE INDEX browser_sessions_idp_session ON browser_sessions (idp, idp_session_id);

-- A grant made from a federated sign-in ends when that sign-in must be renewed at the
-- identity provider (max_session_secs); the code carries the bound to the grant.
ALTER TABLE authorization_codes ADD COLUMN grant_not_after BIGINT;

-- Identity actions about a federated identity name its subject (the IdP is the target and its
-- issuer the issuer).
ALTER TABLE audit_events ADD COLUMN subject TEXT;

-- Signed statements of identity providers (back-channel logout tokens, identity assertion
-- grants) already seen, until they expire: each is used once, on every node.
CREATE TABLE seen_assertions (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
