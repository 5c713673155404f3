-- Dynamic Client Registration (RFC 7591/7592). Keep in step with ../sqlite.

CREATE TABLE initial_access_tokens (
    token_digest BYTEA PRIMARY KEY,
    label TEXT NOT NULL,
    uses_left BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- RFC 7592 management: the registration access token, as a digest.
ALTER TABLE clients ADD COLUMN registration_token_digest BYTEA;
-- Where a dynamically registered client came from (source address), and its home page.
ALTER TABLE clients ADD COLUMN registered_from TEXT;
ALTER TABLE clients ADD COLUMN client_uri TEXT;
