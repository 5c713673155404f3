-- no-transaction
-- Grants made by an identity assertion (SEP-990, the ID-JAG): a new kind. SQLite cannot change
-- a CHECK constraint in place, so the table is rebuilt. Foreign keys are off while it is
-- (dropping the old table must not cascade to the tokens that hang off its rows), and the
-- rebuild is one transaction of its own. Keep in step with ../postgres.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE grants_new (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('authorization_code', 'client_credentials', 'identity_assertion')),
    resource TEXT NOT NULL,
    scope TEXT NOT NULL,
    auth_time INTEGER,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_reason TEXT
);
INSERT INTO grants_new (id, client_id, user_id, kind, resource, scope, auth_time, created_at, expires_at, revoked_at,
                        revoked_reason)
    SELECT id, client_id, user_id, kind, resource, scope, auth_time, created_at, expires_at, revoked_at, revoked_reason
    FROM grants;
DROP TABLE grants;
ALTER TABLE grants_new RENAME TO grants;
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_user ON grants (user_id);
COMMIT;
PRAGMA foreign_keys = ON;
