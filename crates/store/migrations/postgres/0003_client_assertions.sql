-- private_key_jwt client authentication (RFC 7523 §2.2). Keep in step with ../sqlite.

-- The client's public keys (a JWKS document), for clients that authenticate with signed
-- assertions instead of a secret.
ALTER TABLE clients ADD COLUMN jwks TEXT;

-- Assertion ids already seen, until the assertion expires: each may be used once.
CREATE TABLE client_assertion_jtis (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
