// Test peer: the authorization server of an upstream MCP server that wants each user's own
// account (the token vault), built on the oidc-provider library. The gateway is its OAuth
// client: it registers dynamically (RFC 7591) or with CLIENT_ID, sends users here with PKCE
// and `resource` (RFC 8707), redeems codes, refreshes (with rotation) and revokes (RFC 7009).
// Access tokens are JWTs whose `aud` is the resource and whose `sub` is the account.
//
// Usage: npm ci --prefix tests/peers/oidc-provider
//        PORT=0 RESOURCE=http://127.0.0.1:4000/mcp SCOPES="notes:read notes:write" \
//          [ACCESS_TTL=60] [REFRESH_TTL=3600] [CLIENT_ID=... REDIRECT_URI=... [CLIENT_SECRET=...]] \
//          [WRONG_AUDIENCE=1] node tests/peers/oidc-provider/upstream-as.mjs
//
// WRONG_AUDIENCE=1 plays a broken or malicious server: its tokens name another resource.
// GET /test/stats answers what the gateway did here: {"code": n, "refresh": n, "revocations": n,
// "registrations": n}. Sign-in uses oidc-provider's development interactions (any password;
// the login name is the account). Listens on 127.0.0.1 only; prints `READY <issuer>` once
// listening; runs until SIGTERM or SIGINT.

import { failer, listenOnLoopback, signingJwk } from './common.mjs';

const fail = failer('upstream-as');
for (const name of ['RESOURCE', 'SCOPES']) {
  if (!process.env[name]) fail(`${name} is required`);
}
const resource = process.env.RESOURCE;
const resourceScopes = process.env.SCOPES.split(' ').filter(Boolean);
const accessTtl = Number(process.env.ACCESS_TTL ?? '300');
const wrongAudience = process.env.WRONG_AUDIENCE === '1';

const jwks = { keys: [signingJwk('rsa', { modulusLength: 2048 }, 'RS256', `rs256-${process.pid}-${Date.now()}`)] };
const { issuer, serve } = await listenOnLoopback(fail);
const { default: Provider, errors } = await import('oidc-provider');

const clients = [];
if (process.env.CLIENT_ID) {
  clients.push({
    client_id: process.env.CLIENT_ID,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    ...(process.env.CLIENT_SECRET
      ? { token_endpoint_auth_method: 'client_secret_basic', client_secret: process.env.CLIENT_SECRET }
      : { token_endpoint_auth_method: 'none' }),
  });
}

const stats = { code: 0, refresh: 0, revocations: 0, registrations: 0 };

const provider = new Provider(issuer, {
  clients,
  jwks,
  scopes: ['openid', 'offline_access', ...resourceScopes],
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  pkce: { required: () => true },
  cookies: { keys: [`cookie-key-${process.pid}-${Date.now()}`] },
  // Refresh tokens for every client allowed the grant (not only with offline_access), rotated
  // on each use.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: { RefreshToken: Number(process.env.REFRESH_TTL ?? '3600'), Grant: 3600 },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: resourceScopes.join(' '),
          audience: wrongAudience ? 'http://127.0.0.1:9/another-resource' : resource,
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  clientBasedCORS: () => false,
});

provider.on('server_error', (_ctx, err) => process.stderr.write(`upstream-as: server_error: ${err?.stack ?? err}\n`));
provider.on('grant.success', (ctx) => {
  const grant = ctx.oidc.params?.grant_type;
  if (grant === 'authorization_code') stats.code += 1;
  if (grant === 'refresh_token') stats.refresh += 1;
});
provider.on('grant.error', (_ctx, err) => process.stderr.write(`upstream-as: grant error: ${err?.message} ${err?.error_description ?? ''}\n`));
provider.on('registration_create.success', () => { stats.registrations += 1; });

serve(provider.callback(), (req, res) => {
  if (req.method === 'GET' && req.url === '/test/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
    return true;
  }
  // oidc-provider emits no event for revocation: count the requests.
  if (req.method === 'POST' && req.url === '/token/revocation') stats.revocations += 1;
  return false;
});
