-- The gateway's audit trail: one row per decided MCP message.
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT,
    decision TEXT NOT NULL,
    reason TEXT,
    user_id TEXT,
    username TEXT,
    client_id TEXT,
    issuer TEXT,
    status BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at);
