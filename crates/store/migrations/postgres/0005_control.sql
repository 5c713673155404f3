-- The control layer: one audit trail for gateway decisions and identity actions, and the
-- change log every node follows.

-- Identity actions have no route, method, status or latency.
ALTER TABLE audit_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'mcp.message';
ALTER TABLE audit_events ALTER COLUMN kind DROP DEFAULT;
ALTER TABLE audit_events ADD COLUMN actor TEXT;
ALTER TABLE audit_events ADD COLUMN source_address TEXT;
ALTER TABLE audit_events ALTER COLUMN route DROP NOT NULL;
ALTER TABLE audit_events ALTER COLUMN method DROP NOT NULL;
ALTER TABLE audit_events ALTER COLUMN status DROP NOT NULL;
ALTER TABLE audit_events ALTER COLUMN latency_ms DROP NOT NULL;
CREATE INDEX audit_events_kind ON audit_events (kind, id);

-- Every committed change, in the order every node applies them. `change_log_head` holds the
-- last revision; writers take it with an UPDATE, whose row lock is held to commit, so
-- revisions are handed out in commit order (a reader that has seen revision N never later
-- finds a smaller one appear), which a sequence would not guarantee.
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

-- Announce each change to every node that LISTENs; the payload is the revision. Nodes read the
-- log itself by revision, so a notification that is lost (a node reconnecting) loses nothing.
-- The channel is named after the schema, so deployments sharing a database do not wake each other.
CREATE FUNCTION portcullis_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portcullis_changes_' || current_schema(), NEW.revision::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER changes_announce AFTER INSERT ON changes FOR EACH ROW EXECUTE FUNCTION portcullis_announce_change();
