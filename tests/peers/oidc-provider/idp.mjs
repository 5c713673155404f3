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

import { failer, listenOnLoopback, signingJwk } from './common.mjs';

const fail = failer('idp');

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
const jwks = {
  keys: [
    signingJwk('rsa', { modulusLength: 2048 }, 'RS256', 'rs256-key'),
    signingJwk('ec', { namedCurve: 'P-256' }, 'ES256', 'es256-key'),
  ],
};

// Listen first, so that PORT=0 can be resolved before the issuer is fixed.
const { issuer, serve } = await listenOnLoopback(fail);

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

serve(provider.callback());
