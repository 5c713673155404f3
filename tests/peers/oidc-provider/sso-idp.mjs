// Test peer: an organisation's identity provider that people sign in with, built
// on the oidc-provider library (OpenID Certified). Portcullis is its relying
// party: code flow with PKCE, RFC 9207 `iss` on responses, ID tokens carrying
// email, email_verified, name and groups, back-channel logout.
//
// Usage: npm ci --prefix tests/peers/oidc-provider
//        PORT=0 CLIENT_ID=portcullis CLIENT_SECRET=... (or CLIENT_AUTH=private_key_jwt JWKS_URI=...) \
//          REDIRECT_URI=http://127.0.0.1:5555/sso/corp/callback \
//          [BACKCHANNEL_LOGOUT_URI=http://127.0.0.1:5555/sso/corp/backchannel-logout] \
//          USERS='{"alice":{"email":"alice@corp.example","email_verified":true,"groups":["engineering"],"name":"Alice"}}' \
//          node tests/peers/oidc-provider/sso-idp.mjs
//
// Identity assertions (SEP-990 ID-JAGs): oidc-provider does not issue them, so for the test
// this process signs them with its own published key on `POST /test/id-jag` (JSON body:
// sub, client_id, aud, resource, scope, groups, now (a clock of the test's), and for attacks
// exp_in (seconds, may be negative), lifetime, jti, typ, key = "stray" for a key it never
// published). An enterprise IdP
// issues them by RFC 8693 token exchange; what Portcullis verifies is the same. `POST
// /test/sign` ({claims, typ}) signs anything with the same key, for tests that play a
// misbehaving provider.
//
// Sign-in uses oidc-provider's development interactions: the login form takes
// any password, and the login name is the account (an unknown name is an
// account with no claims but `sub`). Listens on 127.0.0.1 only; the issuer is
// http://localhost:PORT. Once listening it prints exactly one line to stdout,
// `READY http://localhost:PORT`; everything else goes to stderr. Runs until
// SIGTERM or SIGINT, then exits 0.

import { failer, listenOnLoopback, signingJwk } from './common.mjs';

const fail = failer('sso-idp');

const privateKeyJwt = process.env.CLIENT_AUTH === 'private_key_jwt';
for (const name of ['CLIENT_ID', 'REDIRECT_URI', privateKeyJwt ? 'JWKS_URI' : 'CLIENT_SECRET']) {
  if (!process.env[name]) fail(`${name} is required`);
}
let users;
try {
  users = JSON.parse(process.env.USERS ?? '{}');
} catch (err) {
  fail(`USERS is not JSON: ${err.message}`);
}

// Fresh keys on every start, so two instances never share one.
const jwks = {
  keys: [
    signingJwk('rsa', { modulusLength: 2048 }, 'RS256', `rs256-${process.pid}-${Date.now()}`),
    signingJwk('ec', { namedCurve: 'P-256' }, 'ES256', `es256-${process.pid}-${Date.now()}`),
  ],
};

const { issuer, serve } = await listenOnLoopback(fail);

const { default: Provider } = await import('oidc-provider');

// CLIENT_AUTH=private_key_jwt: Portcullis authenticates with assertions signed by the keys it
// publishes at JWKS_URI (RFC 7523), instead of CLIENT_SECRET.
const client = {
  client_id: process.env.CLIENT_ID,
  redirect_uris: [process.env.REDIRECT_URI],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  id_token_signed_response_alg: process.env.ID_TOKEN_ALG ?? 'RS256',
  ...(privateKeyJwt
    ? { token_endpoint_auth_method: 'private_key_jwt', jwks_uri: process.env.JWKS_URI }
    : { token_endpoint_auth_method: 'client_secret_basic', client_secret: process.env.CLIENT_SECRET }),
};
if (process.env.BACKCHANNEL_LOGOUT_URI) {
  client.backchannel_logout_uri = process.env.BACKCHANNEL_LOGOUT_URI;
  client.backchannel_logout_session_required = true;
}

const provider = new Provider(issuer, {
  clients: [client],
  jwks,
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  // Put the requested claims in the ID token itself (an enterprise IdP's usual setup), not
  // only behind the userinfo endpoint.
  conformIdTokenClaims: false,
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, ...(users[id] ?? {}) }),
  }),
  pkce: { required: () => true },
  cookies: { keys: [`cookie-key-${process.pid}-${Date.now()}`] },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: Boolean(process.env.BACKCHANNEL_LOGOUT_URI) },
  },
  clientBasedCORS: () => false,
  // oidc-provider refuses to call special-use addresses (its SSRF protection), and in the
  // test Portcullis listens on loopback: let back-channel logout reach 127.0.0.1 only.
  fetch: (url, options) => {
    if (new URL(url).hostname === '127.0.0.1') delete options.dispatcher;
    return fetch(url, options);
  },
});

provider.on('server_error', (_ctx, err) => process.stderr.write(`sso-idp: server_error: ${err?.stack ?? err}\n`));
provider.on('backchannel.error', (_ctx, err) => process.stderr.write(`sso-idp: backchannel error: ${err?.message ?? err} ${err?.cause?.message ?? ''}\n`));

// Endpoint URLs in the metadata follow the Host header: pin it to the issuer's.
const { SignJWT, importJWK } = await import('jose');
const assertionKey = await importJWK(jwks.keys[0], 'RS256');
const strayJwk = signingJwk('rsa', { modulusLength: 2048 }, 'RS256', jwks.keys[0].kid);
const strayKey = await importJWK(strayJwk, 'RS256');
let assertionCount = 0;

async function idJag(req, res) {
  let body = '';
  for await (const chunk of req) body += chunk;
  let spec;
  try {
    spec = JSON.parse(body);
  } catch {
    res.writeHead(400).end('not JSON');
    return;
  }
  // `now`: the relying party's clock, when a test moves it.
  const now = spec.now ?? Math.floor(Date.now() / 1000);
  const lifetime = spec.lifetime ?? 300;
  const exp = now + (spec.exp_in ?? lifetime);
  const claims = { sub: spec.sub, client_id: spec.client_id, jti: spec.jti ?? `jag-${process.pid}-${++assertionCount}-${now}` };
  for (const name of ['resource', 'scope', 'email', 'groups']) {
    if (spec[name] !== undefined) claims[name] = spec[name];
  }
  const jwt = await new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', typ: spec.typ ?? 'oauth-id-jag+jwt', kid: jwks.keys[0].kid })
    .setIssuer(issuer)
    .setAudience(spec.aud)
    .setIssuedAt(exp - lifetime)
    .setExpirationTime(exp)
    .sign(spec.key === 'stray' ? strayKey : assertionKey);
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ assertion: jwt }));
}

// POST /test/sign {claims}: any claims signed with this IdP's published key, for a test that
// plays a misbehaving provider which presents this one's signature as its own.
async function signAnything(req, res) {
  let body = '';
  for await (const chunk of req) body += chunk;
  const { claims, typ } = JSON.parse(body);
  const jwt = await new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', typ: typ ?? 'JWT', kid: jwks.keys[0].kid })
    .sign(assertionKey);
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jwt }));
}

serve(provider.callback(), (req, res) => {
  if (req.method === 'POST' && req.url === '/test/id-jag') {
    idJag(req, res).catch((err) => res.writeHead(500).end(String(err)));
    return true;
  }
  if (req.method === 'POST' && req.url === '/test/sign') {
    signAnything(req, res).catch((err) => res.writeHead(500).end(String(err)));
    return true;
  }
  return false;
});
