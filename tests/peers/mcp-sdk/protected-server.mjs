// Test peer: an upstream MCP server that acts as each user, built with the official MCP
// TypeScript SDK: Streamable HTTP (stateless), guarded by the SDK's bearer-auth middleware,
// which verifies the JWT access tokens of its authorization server (AS_ISSUER, oidc-provider
// in tests/peers/oidc-provider/upstream-as.mjs) and publishes RFC 9728 metadata naming it.
//
// Usage: npm ci --prefix tests/peers/mcp-sdk
//        PORT=0 AS_ISSUER=http://localhost:4001 node tests/peers/mcp-sdk/protected-server.mjs
//
// Tools: `whoami` answers the account (`sub`) the call came with; `write_note` needs
// `notes:write`, and without it the server answers 403 insufficient_scope (a step-up).
// GET /test/seen lists every Authorization header the server received, with the account it
// verified as (or null), so a test can check on the wire whose token arrived. With
// PRM_AS=<url> the metadata names that authorization server instead (an attack); with
// CHALLENGE_SCOPE the 403 names that scope instead of what is missing (a confused server).
// Listens on 127.0.0.1 only; prints `READY <resource>` once listening; runs until SIGTERM.

import express from 'express';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';

const fail = (message) => {
  process.stderr.write(`protected-server: ${message}\n`);
  process.exit(2);
};
const asIssuer = process.env.AS_ISSUER ?? fail('AS_ISSUER is required');
const portText = process.env.PORT ?? '0';
if (!/^\d+$/.test(portText)) fail('PORT must be a number');

const app = express();
const server = await new Promise((resolve) => {
  const s = app.listen(Number(portText), '127.0.0.1', () => resolve(s));
});
const port = server.address().port;
const origin = `http://127.0.0.1:${port}`;
const resource = `${origin}/mcp`;
const metadataUrl = `${origin}/.well-known/oauth-protected-resource/mcp`;
const keys = createRemoteJWKSet(new URL(`${asIssuer}/jwks`));
const seen = [];

const verifier = {
  async verifyAccessToken(token) {
    try {
      const { payload } = await jwtVerify(token, keys, { issuer: asIssuer, audience: resource });
      return {
        token,
        clientId: String(payload.client_id ?? ''),
        scopes: String(payload.scope ?? '').split(' ').filter(Boolean),
        expiresAt: payload.exp,
        resource: new URL(resource),
        extra: { sub: payload.sub },
      };
    } catch (err) {
      throw new InvalidTokenError(`the token does not verify: ${err.message}`);
    }
  },
};

app.get('/.well-known/oauth-protected-resource/mcp', (_req, res) => {
  res.json({
    resource,
    authorization_servers: [process.env.PRM_AS ?? asIssuer],
    scopes_supported: ['notes:read', 'notes:write'],
    bearer_methods_supported: ['header'],
  });
});
app.get('/test/seen', (_req, res) => res.json(seen));

app.use('/mcp', express.json(), async (req, res, next) => {
  // Record what arrived before anything judges it.
  const header = req.headers.authorization ?? null;
  let sub = null;
  if (header?.startsWith('Bearer ')) {
    sub = await verifier.verifyAccessToken(header.slice(7)).then((i) => i.extra.sub, () => null);
  }
  seen.push({ authorization: header, sub, method: req.body?.method ?? req.method });
  next();
});
app.use('/mcp', requireBearerAuth({ verifier, requiredScopes: ['notes:read'], resourceMetadataUrl: metadataUrl }));
// A tool that needs more than the token holds is refused at the HTTP layer, as the MCP
// specification's step-up asks: 403 with the scope to add.
app.use('/mcp', (req, res, next) => {
  const call = req.body;
  if (call?.method === 'tools/call' && call.params?.name === 'write_note' && !req.auth.scopes.includes('notes:write')) {
    // CHALLENGE_SCOPE plays a server whose challenge names what the token already holds.
    const scope = process.env.CHALLENGE_SCOPE ?? 'notes:read notes:write';
    res.set('WWW-Authenticate', `Bearer error="insufficient_scope", scope="${scope}", resource_metadata="${metadataUrl}"`);
    res.status(403).json({ error: 'insufficient_scope' });
    return;
  }
  next();
});

function mcpServer() {
  const mcp = new McpServer({ name: 'protected-notes', version: '1.0.0' });
  mcp.registerTool('whoami', { description: 'The account this call acts as' }, async (extra) => ({
    content: [{ type: 'text', text: JSON.stringify({ sub: extra.authInfo?.extra?.sub, scopes: extra.authInfo?.scopes }) }],
  }));
  mcp.registerTool('write_note', { description: 'Write a note (needs notes:write)' }, async (extra) => ({
    content: [{ type: 'text', text: `written as ${extra.authInfo?.extra?.sub}` }],
  }));
  return mcp;
}

app.post('/mcp', async (req, res) => {
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on('close', () => transport.close());
  const mcp = mcpServer();
  await mcp.connect(transport);
  await transport.handleRequest(req, res, req.body);
});

process.stdout.write(`READY ${resource}\n`);
const shutdown = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
