-- Clients the gateway registered dynamically (RFC 7591) with upstream MCP servers'
-- authorization servers, so that every node and every restart uses one registration per
-- server instead of registering again. The first registration stored wins; a secret, when the
-- server assigned one, is sealed by the master key, bound to the issuer.
CREATE TABLE upstream_clients (
    issuer TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret_sealed BLOB,
    auth_method TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, redirect_uri)
);
