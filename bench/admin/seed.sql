-- Fills a migrated Portcullis database (SQLite or PostgreSQL: the same SQL) with 10,000
-- agents, 1,000 users, 100,000 grants (a fifth of them revoked or expired) and 1,000,000 audit
-- rows spread over the last 10 days, newest at :now. The gateway route's resource is :resource.
-- bench/admin/run substitutes :now and :resource before running it.

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
INSERT INTO clients (client_id, client_name, client_type, redirect_uris, grant_types, allowed_scopes,
                     allowed_resources, application_type, origin, verified, status, can_introspect,
                     created_at, updated_at, last_used_at)
SELECT 'agent-' || i, 'Agent ' || i, 'public', 'http://127.0.0.1/cb https://agent' || (i % 97) || '.example/cb',
       'authorization_code refresh_token', '', '', 'native',
       CASE i % 4 WHEN 0 THEN 'dcr' WHEN 1 THEN 'cimd' WHEN 2 THEN 'admin' ELSE 'software_statement' END,
       (i % 3 = 0), CASE WHEN i % 50 = 0 THEN 'pending' WHEN i % 41 = 0 THEN 'suspended' ELSE 'active' END,
       FALSE, :now - 864000 + i, :now - 864000 + i, :now - (i % 86400)
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO users (id, username, display_name, email, password_hash, is_admin, disabled_at, created_at, updated_at)
SELECT 'user-' || i, 'user' || i, 'User ' || i, 'user' || i || '@example.com', NULL, FALSE,
       CASE WHEN i % 100 = 0 THEN :now - 1000 ELSE NULL END, :now - 864000, :now - 864000
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO grants (id, client_id, user_id, kind, resource, scope, auth_time, created_at, expires_at, revoked_at,
                    revoked_reason)
SELECT 'grant-' || i, 'agent-' || (1 + i % 10000), 'user-' || (1 + i % 1000), 'authorization_code', :resource,
       CASE i % 3 WHEN 0 THEN 'crm.contacts.read' WHEN 1 THEN 'crm.contacts.read crm.deals.write'
            ELSE 'crm.contacts.export crm.contacts.read' END,
       :now - i, :now - i, CASE WHEN i % 10 = 0 THEN :now - 1 ELSE :now + 7776000 END,
       CASE WHEN i % 10 = 5 THEN :now - 10 ELSE NULL END,
       CASE WHEN i % 10 = 5 THEN 'revoked by an administrator' ELSE NULL END
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
INSERT INTO audit_events (occurred_at, kind, actor, source_address, route, method, target, decision, reason, user_id,
                          username, client_id, issuer, status, latency_ms)
SELECT :now - 864000 + (i * 864 / 1000), 'mcp.message', NULL, '127.0.0.1', 'crm', 'tools/call',
       CASE i % 3 WHEN 0 THEN 'list_contacts' WHEN 1 THEN 'update_deal' ELSE 'export_contacts' END,
       CASE WHEN i % 7 = 0 THEN 'denied' ELSE 'allowed' END,
       CASE WHEN i % 7 = 0 THEN 'insufficient_scope: needs crm.contacts.export' ELSE NULL END,
       'user-' || (1 + i % 1000), 'user' || (1 + i % 1000), 'agent-' || (1 + i % 10000), NULL,
       CASE WHEN i % 7 = 0 THEN 403 ELSE 200 END, i % 40
FROM n;

-- One access token per grant, so "last used" has something to find.
INSERT INTO access_tokens (jti, grant_id, scope, issued_at, expires_at, revoked_at)
SELECT 'jti-' || id, id, scope, created_at, created_at + 300, NULL FROM grants;

-- Each user allowed ten agents.
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
INSERT INTO consents (user_id, client_id, resource, scope, created_at, updated_at)
SELECT 'user-' || (1 + i % 1000), 'agent-' || i, :resource, 'crm.contacts.read', :now - i, :now - i FROM n;

-- Planner statistics, as a running server's database has them.
ANALYZE;
