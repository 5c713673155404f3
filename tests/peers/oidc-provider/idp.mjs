// Test peer: an "external enterprise IdP" built on the oidc-provider library.
// It issues client_credentials access tokens for resource servers (RFC 8707
// resource indicators): JWT access tokens (RFC 9068) for RESOURCE_JWT and
// opaque ones, checked by introspection (RFC 7662), for RESOURCE_OPAQUE.
// The Portcullis gateway's integration tests run it to see how the gateway
// handles tokens minted by someone else's implementation.
//
// Usage: npm ci --prefix tests/peers/oidc-provider
//        PORT=4711 RESOURCE_JWT=http://127.0.0.1:5555/mcp/crm \
//          [RESOURCE_OPAQUE=http://127.0.0.1:5555/mcp/opaque] \
//          [SCOPES="crm.contacts.read crm.deals.write crm.contacts.export"] \
//          [JWT_ALG=RS256|ES256] node tests/peers/oidc-provider/idp.mjs
//
// Listens on 127.0.0.1 only; the issuer is http://localhost:PORT. PORT=0 picks
// a free port. Once listening it prints exactly one line to stdout,
// `READY http://localhost:PORT` (the issuer); everything else goes to stderr.
// Runs until SIGTERM or SIGINT, then exits 0.

import { generateKeyPairSync } from 'node:crypto';
import * as http from 'node:http';

// oidc-provider prints its notices with console.info, which goes to stdout.
// Stdout carries only the READY line, so send all console output to stderr.
for (const name of ['log', 'info', 'debug']) {
  console[name] = (...args) => console.error(...args);
}

function fail(message) {
  process.stderr.write(`idp: ${message}\n`);
  process.exit(2);
}

function words(value) {
  return String(value ?? '').split(/\s+/).filter(Boolean);
}

function resourceList(name, required) {
  const list = words(process.env[name]);
  if (required && list.length === 0) fail(`${name} is required`);
  for (const r of list) {
    const url = URL.parse(r);
    if (!url || url.hash) fail(`${name}: ${r} is not an absolute URL without a fragment`);
  }
  return list;
}

const portText = process.env.PORT ?? '';
if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
  fail('PORT is required and must be a TCP port number (0 picks a free one)');
}

// RESOURCE_JWT and RESOURCE_OPAQUE each take one URL, or several separated by
// whitespace; the first RESOURCE_JWT is used when a request names none.
const jwtResources = resourceList('RESOURCE_JWT', true);
const opaqueResources = resourceList('RESOURCE_OPAQUE', false);
for (const r of opaqueResources) {
  if (jwtResources.includes(r)) fail(`${r} is in both RESOURCE_JWT and RESOURCE_OPAQUE`);
}
const scopes = words(process.env.SCOPES ?? 'crm.contacts.read crm.deals.write crm.contacts.export');
if (scopes.length === 0) fail('SCOPES must name at least one scope');
const jwtAlg = process.env.JWT_ALG ?? 'RS256';
if (!['RS256', 'ES256'].includes(jwtAlg)) fail('JWT_ALG must be RS256 or ES256');

const ACCESS_TOKEN_TTL = 600; // seconds

// Fresh signing keys on every start: one RSA (RS256) and one P-256 (ES256),
// so the JWKS holds two keys and a verifier has to pick by kid.
function signingJwk(type, options, alg, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid };
}
const jwks = {
  keys: [
    signingJwk('rsa', { modulusLength: 2048 }, 'RS256', 'rs256-key'),
    signingJwk('ec', { namedCurve: 'P-256' }, 'ES256', 'es256-key'),
  ],
};

// Listen first, so that PORT=0 can be resolved before the issuer is fixed.
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));
server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(portText), '127.0.0.1', () => {
    server.off('error', reject);
    resolve();
  });
}).catch((err) => fail(`cannot listen on 127.0.0.1:${portText}: ${err.message}`));
const port = server.address().port;
const issuer = `http://localhost:${port}`;

// Import after console is redirected: the module warns on load (for example
// about Node.js releases older than 22).
const { default: Provider, errors } = await import('oidc-provider');

function resourceServerInfo(resource) {
  const common = { scope: scopes.join(' '), audience: resource, accessTokenTTL: ACCESS_TOKEN_TTL };
  if (jwtResources.includes(resource)) {
    return { ...common, accessTokenFormat: 'jwt', jwt: { sign: { alg: jwtAlg } } };
  }
  if (opaqueResources.includes(resource)) {
    return { ...common, accessTokenFormat: 'opaque' };
  }
  return undefined;
}

const provider = new Provider(issuer, {
  clients: [
    {
      // oidc-provider accepts client_secret_post from a client registered
      // for client_secret_basic (and the other way round).
      client_id: 'agent',
      client_secret: 'agent-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: scopes.join(' '),
    },
    {
      // The gateway: may only call the introspection endpoint.
      client_id: 'gateway',
      client_secret: 'gateway-secret',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks,
  scopes: ['openid', ...scopes],
  cookies: { keys: [`cookie-key-${process.pid}-${Date.now()}`] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Only the gateway, or the client the token was issued to, may
      // introspect a token.
      allowedPolicy: async (_ctx, client, token) => client.clientId === 'gateway' || client.clientId === token.clientId,
    },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? jwtResources[0],
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        const info = resourceServerInfo(resource);
        if (!info) throw new errors.InvalidTarget();
        // oidc-provider drops requested scopes it does not know and those the
        // resource server does not list; an enterprise IdP refuses them, so
        // do that here.
        const unknown = words(ctx.oidc.params.scope).filter((s) => !scopes.includes(s));
        if (unknown.length) {
          throw new errors.InvalidScope('requested scope is not allowed', unknown.join(' '));
        }
        return info;
      },
    },
  },
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
  },
  clientBasedCORS: () => false,
  renderError: async (ctx, out) => {
    ctx.type = 'application/json; charset=utf-8';
    ctx.body = out;
  },
});

provider.on('server_error', (_ctx, err) => process.stderr.write(`idp: server_error: ${err?.stack ?? err}\n`));

// Endpoint URLs in the metadata follow the Host header. Everything arrives on
// 127.0.0.1 anyway, so pin Host to the issuer's, and the metadata is the same
// whether a test asks http://localhost:PORT or http://127.0.0.1:PORT.
const app = provider.callback();
handler = (req, res) => {
  req.headers.host = `localhost:${port}`;
  return app(req, res);
};
process.stdout.write(`READY ${issuer}\n`);

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
