-- Access tokens made by token exchange (RFC 8693): drawn from the subject token's grant (so
-- revoking that grant, disabling its user or suspending its client ends them too), but held
-- by another client and for another resource.

-- The token's own audience, when it is not its grant's resource.
ALTER TABLE access_tokens ADD COLUMN audience TEXT;

-- The clients a delegated token acts through: position 0 holds it, each next one delegated
-- to the one before. Every one of them must still be active for the token to be.
CREATE TABLE access_token_actors (
    jti TEXT NOT NULL REFERENCES access_tokens (jti) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    PRIMARY KEY (jti, position)
);
CREATE INDEX access_token_actors_client ON access_token_actors (client_id);
