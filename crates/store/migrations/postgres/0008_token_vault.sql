-- The token vault: each user's own credentials for upstream MCP servers that need them.

-- One row per user and gateway route. The tokens are sealed by the master key, bound to the
-- user, the route and the upstream's authorization server (a row copied elsewhere does not
-- open); nothing here is readable without the key.
CREATE TABLE upstream_credentials (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    route TEXT NOT NULL,
    -- The upstream's authorization server, and what the user's account there is called.
    issuer TEXT NOT NULL,
    subject TEXT,
    scope TEXT NOT NULL,
    tokens_sealed BYTEA NOT NULL,
    access_expires_at BIGINT,
    -- A node refreshing the tokens holds this lease until then; others wait for its result.
    refresh_lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, route)
);
CREATE INDEX upstream_credentials_route ON upstream_credentials (route);
