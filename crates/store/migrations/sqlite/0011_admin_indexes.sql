-- The dashboard and the admin API (bench/admin/run: 1,000,000 audit rows, 100,000 grants).
-- Search by agent and by user (id or name), newest first.
CREATE INDEX audit_events_client ON audit_events (client_id, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX audit_events_username ON audit_events (username, id);
-- The overview's histogram reads only this index; it replaces the one on occurred_at alone.
DROP INDEX audit_events_occurred_at;
CREATE INDEX audit_events_decisions ON audit_events (occurred_at, kind, decision);
-- Who holds what on a route, and the tool matrix's count per scope set.
CREATE INDEX grants_resource ON grants (resource, id);
CREATE INDEX grants_resource_scope ON grants (resource, scope, expires_at);
