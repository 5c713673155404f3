// Interop check: drive the Portcullis authorization server with openid-client
// (a certified OpenID RP library), so that our server is judged by someone
// else's reading of the specs, not only by our own tests.
//
// Usage: npm install --prefix tests/peers/openid-client
//        ISSUER=... CLIENT_ID=... ... node tests/peers/openid-client/run.mjs
// Prints `PASS <step>` / `FAIL <step>: <reason>` per step, then
// `N passed, N failed`; exits 0 only if every step passed.

import { webcrypto } from 'node:crypto';
import * as client from 'openid-client';

const FETCH_TIMEOUT_MS = 10_000;
const OVERALL_TIMEOUT_MS = 60_000;
const MAX_HOPS = 10;

// ---------------------------------------------------------------- reporting

const STEPS = [];
const status = new Map(); // step name -> 'pass' | 'fail'
let passed = 0;
let failed = 0;
let finished = false;

function step(name, deps, fn) {
  STEPS.push({ name, deps, fn });
}

function report(name, ok, reason) {
  if (status.has(name)) return;
  status.set(name, ok ? 'pass' : 'fail');
  if (ok) {
    passed++;
    console.log(`PASS ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}: ${oneLine(reason)}`);
  }
}

function finish() {
  if (finished) return;
  finished = true;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed === STEPS.length ? 0 : 1);
}

function oneLine(s) {
  const t = String(s).replace(/\s+/g, ' ').trim();
  return t.length > 400 ? `${t.slice(0, 400)}…` : t;
}

// Turn library and HTTP errors into a reason a human can act on.
function describe(err) {
  if (err instanceof client.ResponseBodyError) {
    return `HTTP ${err.status} ${err.error}${err.error_description ? `: ${err.error_description}` : ''}`;
  }
  if (err instanceof client.AuthorizationResponseError) {
    return `authorization response error ${err.error}${err.error_description ? `: ${err.error_description}` : ''}`;
  }
  if (err instanceof client.ClientError) {
    const c = err.cause;
    let extra = '';
    if (c instanceof Response) extra = ` (HTTP ${c.status})`;
    else if (c?.attribute) extra = ` (${c.attribute}: expected ${c.expected})`;
    else if (c?.message) extra = ` (${c.message})`;
    return `${err.message}${err.code ? ` [${err.code}]` : ''}${extra}`;
  }
  return err?.message ?? String(err);
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

function scopeSet(s) {
  return new Set(String(s ?? '').split(' ').filter(Boolean));
}

function sameScopes(a, b) {
  const x = scopeSet(a);
  const y = scopeSet(b);
  return x.size === y.size && [...x].every((v) => y.has(v));
}

// The step must fail with this OAuth error code; anything else is a finding.
async function expectOAuthError(promise, code, what) {
  try {
    await promise;
  } catch (err) {
    if (err instanceof client.ResponseBodyError && err.error === code) return;
    throw new Error(`${what}: expected ${code}, got ${describe(err)}`);
  }
  throw new Error(`${what}: expected ${code}, but it succeeded`);
}

// ---------------------------------------------------------------- config

const REQUIRED = [
  'ISSUER', 'CLIENT_ID', 'CLIENT_SECRET', 'REDIRECT_URI', 'CC_CLIENT_ID',
  'CC_CLIENT_SECRET', 'RESOURCE', 'SCOPE', 'USERNAME', 'PASSWORD',
];
const env = Object.fromEntries(REQUIRED.map((k) => [k, process.env[k] ?? '']));
// The server serves both documents; oidc is openid-client's default.
const DISCOVERY_ALGORITHM = process.env.DISCOVERY_ALGORITHM || 'oidc';

function configProblem() {
  const missing = REQUIRED.filter((k) => !env[k]);
  if (missing.length) return `missing environment variable(s): ${missing.join(', ')}`;
  let u;
  try {
    u = new URL(env.ISSUER);
  } catch {
    return `ISSUER is not a URL: ${env.ISSUER}`;
  }
  // This workplace allows traffic to loopback only; refuse anything else.
  const h = u.hostname;
  if (!(h === 'localhost' || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h))) {
    return `ISSUER must be on loopback, got host ${h}`;
  }
  try {
    new URL(env.REDIRECT_URI);
    new URL(env.RESOURCE);
  } catch {
    return 'REDIRECT_URI and RESOURCE must be absolute URLs';
  }
  if (scopeSet(env.SCOPE).size === 0) return 'SCOPE is empty';
  return null;
}

const problem = configProblem();
const ISSUER_ORIGIN = problem ? '' : new URL(env.ISSUER).origin;

// ---------------------------------------------------------------- HTTP

// Every request, ours and openid-client's, goes through here: we only ever
// talk to the issuer's origin, and never wait longer than the fetch timeout.
async function guardedFetch(url, options = {}) {
  const u = new URL(url);
  if (u.origin !== ISSUER_ORIGIN) {
    throw new Error(`refusing to contact ${u.origin} (only ${ISSUER_ORIGIN} is allowed)`);
  }
  const timeout = AbortSignal.timeout(FETCH_TIMEOUT_MS);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  return fetch(u.href, { ...options, redirect: 'manual', signal });
}

// A cookie jar just good enough for the login session on one origin.
const jar = new Map();

function storeCookies(res) {
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const expired = attrs.some((a) => /^\s*max-age\s*=\s*(0|-\d+)\s*$/i.test(a));
    if (expired || value === '') jar.delete(name);
    else jar.set(name, value);
  }
}

function cookieHeader() {
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

async function browserRequest(method, url, form) {
  const headers = { accept: 'text/html' };
  if (jar.size) headers.cookie = cookieHeader();
  let body;
  if (form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    // The server checks Origin on form posts (CSRF defence), as a browser sends it.
    headers.origin = ISSUER_ORIGIN;
    body = form.toString();
  }
  const res = await guardedFetch(url, { method, headers, body });
  storeCookies(res);
  return res;
}

async function snippet(res) {
  try {
    return oneLine((await res.text()).slice(0, 200));
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------- HTML

function unescapeHtml(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|quot|lt|gt|apos);/gi, (_, e) => {
    const k = e.toLowerCase();
    if (k.startsWith('#x')) return String.fromCodePoint(parseInt(k.slice(2), 16));
    if (k.startsWith('#')) return String.fromCodePoint(parseInt(k.slice(1), 10));
    return { amp: '&', quot: '"', lt: '<', gt: '>', apos: "'" }[k];
  });
}

function parseAttrs(s) {
  const attrs = {};
  const re = /([^\s"'<>\/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  let m;
  while ((m = re.exec(s))) {
    attrs[m[1].toLowerCase()] = unescapeHtml(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

// Forms of a page with their inputs and buttons; attribute order does not matter.
function parseForms(html) {
  const forms = [];
  for (const f of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = parseAttrs(f[1]);
    const fields = [...f[2].matchAll(/<(input|button)\b([^>]*)>/gi)].map((m) => ({
      tag: m[1].toLowerCase(),
      ...parseAttrs(m[2]),
    }));
    const hidden = (n) => fields.find((x) => x.tag === 'input' && x.name === n)?.value;
    forms.push({
      action: attrs.action,
      method: (attrs.method || 'get').toLowerCase(),
      fields,
      request: hidden('request'),
      csrf: hidden('csrf'),
      isLogin: fields.some((x) => x.name === 'password'),
      isConsent: fields.some((x) => x.name === 'scope' || x.name === 'decision'),
    });
  }
  return forms;
}

// ---------------------------------------------------------------- the authorization flow

function isCallback(u) {
  const r = new URL(env.REDIRECT_URI);
  return u.origin === r.origin && u.pathname === r.pathname;
}

// Runs one authorization request through login/consent pages (or none, when
// the session and consent already exist) and redeems the code.
async function authorize(config) {
  const pkceCodeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(pkceCodeVerifier);
  const state = client.randomState();
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: env.REDIRECT_URI,
    scope: env.SCOPE,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    resource: env.RESOURCE,
  });

  let url = authUrl;
  let res = await browserRequest('GET', url);
  let callback = null;
  let loggedIn = false;
  let consented = false;

  for (let hop = 0; hop < MAX_HOPS && !callback; hop++) {
    if ([302, 303].includes(res.status)) {
      const loc = res.headers.get('location');
      check(loc, `HTTP ${res.status} from ${url.pathname} without Location`);
      const next = new URL(loc, url);
      // Never fetch the redirect URI: nothing listens there, it just carries the code.
      if (isCallback(next)) {
        callback = next;
        break;
      }
      url = next;
      res = await browserRequest('GET', url);
      continue;
    }
    if (res.status !== 200) throw new Error(`HTTP ${res.status} from GET ${url.pathname}: ${await snippet(res)}`);
    const page = url;
    const forms = parseForms(await res.text());
    const form = forms.find((f) => f.request !== undefined && f.csrf !== undefined && (f.isLogin || f.isConsent));
    check(form, `page ${page.pathname} has no login or consent form with hidden request and csrf`);
    check(form.method === 'post', `form on ${page.pathname} is not method=post`);
    const action = new URL(form.action || page.href, page);
    const body = new URLSearchParams({ request: form.request, csrf: form.csrf });
    let what;
    if (form.isLogin) {
      check(!loggedIn, 'login page shown again after signing in (credentials rejected?)');
      body.set('username', env.USERNAME);
      body.set('password', env.PASSWORD);
      loggedIn = true;
      what = 'login';
    } else {
      check(!consented, 'consent page shown again after approving');
      for (const s of scopeSet(env.SCOPE)) body.append('scope', s);
      body.set('decision', 'approve');
      consented = true;
      what = 'consent';
    }
    url = action;
    res = await browserRequest('POST', url, body);
    if (res.status !== 303) {
      throw new Error(`${what} POST ${action.pathname}: expected 303, got ${res.status}: ${await snippet(res)}`);
    }
  }
  check(callback, `no redirect to REDIRECT_URI within ${MAX_HOPS} hops`);

  const p = callback.searchParams;
  if (p.get('error')) {
    throw new Error(`authorization failed: ${p.get('error')}${p.get('error_description') ? `: ${p.get('error_description')}` : ''}`);
  }
  // openid-client checks iss too (RFC 9207); asserting it here names the problem.
  check(p.get('iss') === env.ISSUER, `callback iss is ${JSON.stringify(p.get('iss'))}, expected ${env.ISSUER}`);
  check(p.get('code'), 'callback has no code');

  const tokens = await client.authorizationCodeGrant(
    config,
    callback,
    { pkceCodeVerifier, expectedState: state },
    { resource: env.RESOURCE },
  );
  return { tokens, pagesShown: { login: loggedIn, consent: consented } };
}

// ---------------------------------------------------------------- JWT

function b64urlDecode(s) {
  return Buffer.from(s, 'base64url');
}

function decodeJwt(jwt) {
  const parts = String(jwt).split('.');
  check(parts.length === 3, 'access token is not a compact JWS');
  let header;
  let claims;
  try {
    header = JSON.parse(b64urlDecode(parts[0]).toString('utf8'));
    claims = JSON.parse(b64urlDecode(parts[1]).toString('utf8'));
  } catch {
    throw new Error('access token header or payload is not base64url JSON');
  }
  return { header, claims, signingInput: `${parts[0]}.${parts[1]}`, signature: b64urlDecode(parts[2]) };
}

// ---------------------------------------------------------------- steps

const ctx = {};

async function discover(clientId, clientSecret, auth) {
  return client.discovery(new URL(env.ISSUER), clientId, clientSecret, auth, {
    algorithm: DISCOVERY_ALGORITHM,
    execute: [client.allowInsecureRequests], // http on loopback
    timeout: FETCH_TIMEOUT_MS / 1000,
    [client.customFetch]: guardedFetch,
  });
}

step('discovery', [], async () => {
  ctx.config = await discover(env.CLIENT_ID, env.CLIENT_SECRET, client.ClientSecretBasic(env.CLIENT_SECRET));
  const md = ctx.config.serverMetadata();
  check(md.issuer === env.ISSUER, `issuer is ${JSON.stringify(md.issuer)}, expected ${env.ISSUER}`);
  check(
    Array.isArray(md.code_challenge_methods_supported) && md.code_challenge_methods_supported.includes('S256'),
    `code_challenge_methods_supported lacks S256: ${JSON.stringify(md.code_challenge_methods_supported)}`,
  );
  check(
    md.authorization_response_iss_parameter_supported === true,
    'authorization_response_iss_parameter_supported is not true',
  );
});

step('authorization_code', ['discovery'], async () => {
  const { tokens, pagesShown } = await authorize(ctx.config);
  check(pagesShown.login, 'server issued a code without showing the login page to a fresh user agent');
  check(tokens.access_token, 'no access_token');
  check(tokens.refresh_token, 'no refresh_token');
  check(String(tokens.token_type).toLowerCase() === 'bearer', `token_type is ${tokens.token_type}`);
  check(sameScopes(tokens.scope, env.SCOPE), `scope is "${tokens.scope}", expected "${env.SCOPE}"`);
  check(typeof tokens.expires_in === 'number' && tokens.expires_in > 0, `expires_in is ${tokens.expires_in}`);
  ctx.tokens = tokens;
});

step('access_token_signature', ['authorization_code'], async () => {
  const { header, claims, signingInput, signature } = decodeJwt(ctx.tokens.access_token);
  check(header.alg === 'ES256', `alg is ${header.alg}, expected ES256`);
  check(header.typ === 'at+jwt', `typ is ${header.typ}, expected at+jwt (RFC 9068)`);
  check(header.kid, 'JWT header has no kid');

  const jwksUri = ctx.config.serverMetadata().jwks_uri;
  check(jwksUri, 'metadata has no jwks_uri');
  const res = await guardedFetch(jwksUri, { headers: { accept: 'application/json' } });
  check(res.status === 200, `JWKS: HTTP ${res.status}`);
  const jwks = await res.json();
  check(Array.isArray(jwks.keys), 'JWKS has no keys array');
  // A published private part would be a key leak, so look at every key.
  check(!jwks.keys.some((k) => 'd' in k || 'p' in k || 'k' in k), 'JWKS contains private or symmetric key material');
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  check(jwk, `no JWKS key with kid ${header.kid}`);
  check(jwk.kty === 'EC' && jwk.crv === 'P-256', `key ${header.kid} is ${jwk.kty}/${jwk.crv}, expected EC/P-256`);

  // Import only the public coordinates so optional members (use, key_ops, alg) can't trip WebCrypto.
  const key = await webcrypto.subtle.importKey(
    'jwk',
    { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, ext: true },
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['verify'],
  );
  check(signature.length === 64, `ES256 signature is ${signature.length} bytes, expected 64 (raw r||s)`);
  const ok = await webcrypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' },
    key,
    signature,
    new TextEncoder().encode(signingInput),
  );
  check(ok, 'signature does not verify');

  const now = Math.floor(Date.now() / 1000);
  check(claims.iss === env.ISSUER, `iss is ${JSON.stringify(claims.iss)}`);
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  check(aud.includes(env.RESOURCE), `aud is ${JSON.stringify(claims.aud)}, expected ${env.RESOURCE}`);
  check(claims.client_id === env.CLIENT_ID, `client_id is ${JSON.stringify(claims.client_id)}`);
  check(sameScopes(claims.scope, env.SCOPE), `scope claim is "${claims.scope}", expected "${env.SCOPE}"`);
  check(typeof claims.exp === 'number' && claims.exp > now, `exp ${claims.exp} is not in the future (now ${now})`);
  check(typeof claims.jti === 'string' && claims.jti.length > 0, 'no jti');
  check(typeof claims.sub === 'string' && claims.sub.length > 0, 'no sub');
});

step('refresh', ['authorization_code'], async () => {
  const old = ctx.tokens;
  const fresh = await client.refreshTokenGrant(ctx.config, old.refresh_token, { resource: env.RESOURCE });
  check(fresh.access_token, 'no access_token');
  check(fresh.access_token !== old.access_token, 'access_token was not renewed');
  check(fresh.refresh_token, 'no refresh_token (rotation expected)');
  check(fresh.refresh_token !== old.refresh_token, 'refresh_token was not rotated');
  check(sameScopes(fresh.scope, env.SCOPE), `scope is "${fresh.scope}", expected "${env.SCOPE}"`);
  ctx.oldRefresh = old.refresh_token;
  ctx.newRefresh = fresh.refresh_token;
});

step('refresh_reuse', ['refresh'], async () => {
  await expectOAuthError(
    client.refreshTokenGrant(ctx.config, ctx.oldRefresh, { resource: env.RESOURCE }),
    'invalid_grant',
    'reused old refresh token',
  );
  // Reuse means the token may be stolen, so the whole family must be gone.
  await expectOAuthError(
    client.refreshTokenGrant(ctx.config, ctx.newRefresh, { resource: env.RESOURCE }),
    'invalid_grant',
    'newest refresh token after reuse',
  );
});

step('introspection', ['authorization_code'], async () => {
  const { tokens } = await authorize(ctx.config);
  check(tokens.access_token && tokens.refresh_token, 'second authorization gave no token pair');

  const info = await client.tokenIntrospection(ctx.config, tokens.access_token);
  check(info.active === true, `active is ${info.active}`);
  check(info.client_id === env.CLIENT_ID, `client_id is ${JSON.stringify(info.client_id)}`);
  check(sameScopes(info.scope, env.SCOPE), `scope is "${info.scope}", expected "${env.SCOPE}"`);
  check(typeof info.sub === 'string' && info.sub.length > 0, 'no sub');
  const jwtSub = decodeJwt(tokens.access_token).claims.sub;
  check(info.sub === jwtSub, `introspection sub ${info.sub} differs from token sub ${jwtSub}`);

  await client.tokenRevocation(ctx.config, tokens.access_token);
  const after = await client.tokenIntrospection(ctx.config, tokens.access_token);
  check(after.active === false, `revoked access token still active: ${JSON.stringify(after)}`);
  // An inactive answer must not tell anything about the token.
  check(Object.keys(after).length === 1, `inactive response carries more than active: ${JSON.stringify(after)}`);

  await client.tokenRevocation(ctx.config, tokens.refresh_token);
  await expectOAuthError(
    client.refreshTokenGrant(ctx.config, tokens.refresh_token, { resource: env.RESOURCE }),
    'invalid_grant',
    'revoked refresh token',
  );
});

step('client_credentials', ['discovery'], async () => {
  const cc = await discover(env.CC_CLIENT_ID, env.CC_CLIENT_SECRET, client.ClientSecretPost(env.CC_CLIENT_SECRET));
  const scope = [...scopeSet(env.SCOPE)][0];
  const tokens = await client.clientCredentialsGrant(cc, { scope, resource: env.RESOURCE });
  check(tokens.access_token, 'no access_token');
  check(tokens.refresh_token === undefined, 'client_credentials returned a refresh_token');
  check(String(tokens.token_type).toLowerCase() === 'bearer', `token_type is ${tokens.token_type}`);
  check(sameScopes(tokens.scope, scope), `scope is "${tokens.scope}", expected "${scope}"`);

  await expectOAuthError(
    client.clientCredentialsGrant(cc, { scope: 'not.allowed.scope', resource: env.RESOURCE }),
    'invalid_scope',
    'scope the client is not allowed',
  );
});

// ---------------------------------------------------------------- main

let current = null;

// A hung server must not hang CI; unref so a clean run isn't held open by the timer.
setTimeout(() => {
  if (current) report(current, false, `overall timeout (${OVERALL_TIMEOUT_MS / 1000} s)`);
  for (const s of STEPS) report(s.name, false, 'not run: overall timeout');
  finish();
}, OVERALL_TIMEOUT_MS).unref();

if (problem) {
  for (const s of STEPS) report(s.name, false, problem);
  finish();
}

for (const s of STEPS) {
  const blocker = s.deps.find((d) => status.get(d) !== 'pass');
  if (blocker) {
    report(s.name, false, `skipped: depends on ${blocker}`);
    continue;
  }
  current = s.name;
  try {
    await s.fn();
    report(s.name, true);
  } catch (err) {
    report(s.name, false, describe(err));
  }
  current = null;
}
finish();
