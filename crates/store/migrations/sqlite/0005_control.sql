-- The control layer: one audit trail for gateway decisions and identity actions, and the
-- change log every node follows.

-- Identity actions have no route, method, status or latency: those columns become optional,
-- which SQLite can only do by rebuilding the table.
CREATE TABLE audit_events_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    source_address TEXT,
    route TEXT,
    method TEXT,
    target TEXT,
    decision TEXT NOT NULL,
    reason TEXT,
    user_id TEXT,
    username TEXT,
    client_id TEXT,
    issuer TEXT,
    status BIGINT,
    latency_ms BIGINT
);
INSERT INTO audit_events_new (id, occurred_at, kind, actor, source_address, route, method, target, decision, reason,
                              user_id, username, client_id, issuer, status, latency_ms)
    SELECT id, occurred_at, 'mcp.message', NULL, NULL, route, method, target, decision, reason,
           user_id, username, client_id, issuer, status, latency_ms FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_new RENAME TO audit_events;
CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at);
CREATE INDEX audit_events_kind ON audit_events (kind, id);

-- Every committed change, in the order every node applies them. `change_log_head` holds the
-- last revision; writers take it with an UPDATE, so revisions are handed out in commit order
-- (a reader that has seen revision N never later finds a smaller one appear).
CREATE TABLE change_log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO change_log_head (id, revision) VALUES (1, 0);
CREATE TABLE changes (
    revision BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    client_id TEXT,
    user_id TEXT,
    occurred_at BIGINT NOT NULL
);
