-- Dynamic Client Registration (RFC 7591/7592). Keep in step with ../postgres.

CREATE TABLE initial_access_tokens (
    token_digest BLOB PRIMARY KEY,
    label TEXT NOT NULL,
    uses_left INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- RFC 7592 management: the registration access token, as a digest.
ALTER TABLE clients ADD COLUMN registration_token_digest BLOB;
-- Where a dynamically registered client came from (source address), and its home page.
ALTER TABLE clients ADD COLUMN registered_from TEXT;
ALTER TABLE clients ADD COLUMN client_uri TEXT;
