-- The dashboard and the admin API search the audit trail by agent and by user, newest first,
-- and list who holds what on a route.
CREATE INDEX audit_events_client ON audit_events (client_id, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX grants_resource ON grants (resource, id);
