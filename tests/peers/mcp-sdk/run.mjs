// The official MCP TypeScript SDK client (@modelcontextprotocol/sdk) against Portcullis: it
// discovers the protected resource (RFC 9728) and the authorization server, registers by
// Dynamic Client Registration, runs PKCE S256 with `resource`, and refreshes. Sign-in and
// consent are done headlessly over HTTP, as the SDK's own conformance clients do.
//
// Env: SERVER_URL (an MCP resource URL whose RFC 9728 metadata names Portcullis), USERNAME,
// PASSWORD, or EMAIL and IDP_LOGIN for a user of an identity provider (single sign-on: the
// email question, then the provider's own sign-in); REGISTRATION=dcr (default) or cimd. With cimd, the script publishes its own Client
// ID Metadata Document over https on a loopback port (TLS_CERT / TLS_KEY, PEM) and hands the
// SDK its URL as clientMetadataUrl. Prints one line per step and a closing `N passed, N failed`.
import { readFileSync } from 'node:fs';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { headlessUser, publishClientMetadata } from './headless.mjs';

const env = (name) => {
  const v = process.env[name];
  if (!v) { console.log(`FAIL config: ${name} is not set`); process.exit(1); }
  return v;
};
const serverUrl = new URL(env('SERVER_URL'));
const email = process.env.EMAIL;
const idpLogin = process.env.IDP_LOGIN;
const username = email ? undefined : env('USERNAME');
const password = email ? undefined : env('PASSWORD');
const overall = setTimeout(() => { console.log('FAIL timeout: 60 s elapsed'); process.exit(1); }, 60_000);

const results = [];
const record = (name, ok, why = '') => {
  results.push(ok);
  console.log(ok ? `PASS ${name}` : `FAIL ${name}: ${why}`);
};

// Only loopback is ever contacted.
const guardedFetch = (input, init = {}) => {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) throw new Error(`refusing to contact ${url.host}`);
  return fetch(input, { ...init, signal: AbortSignal.timeout(10_000) });
};

const redirectUrl = 'http://127.0.0.1:61999/callback';
let captured = null;

const mode = process.env.REGISTRATION || 'dcr';
const documentServer = mode === 'cimd'
  ? await publishClientMetadata({
    cert: readFileSync(env('TLS_CERT')),
    key: readFileSync(env('TLS_KEY')),
    clientName: 'MCP TypeScript SDK test client (CIMD)',
    redirectUrl,
  })
  : null;
const clientMetadataUrl = documentServer?.url;

const user = headlessUser({ fetchFn: guardedFetch, username, password, redirectUrl, email, idpLogin });
const seen = {};

const store = {};
const provider = {
  get redirectUrl() { return redirectUrl; },
  get clientMetadataUrl() { return clientMetadataUrl; },
  get clientMetadata() {
    return {
      client_name: 'MCP TypeScript SDK test client',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  },
  state: () => crypto.randomUUID(),
  clientInformation: () => store.client,
  saveClientInformation: (info) => { store.client = info; },
  tokens: () => store.tokens,
  saveTokens: (tokens) => { store.tokens = tokens; },
  saveCodeVerifier: (v) => { store.verifier = v; },
  codeVerifier: () => store.verifier,
  redirectToAuthorization: async (url) => {
    store.authorizationUrl = url;
    captured = await user.signInAndConsent(url, undefined, seen);
  },
};

try {
  const first = await auth(provider, { serverUrl, fetchFn: guardedFetch });
  const registered = mode === 'cimd'
    ? store.client?.client_id === clientMetadataUrl && documentServer.fetches() >= 1
    : !!store.client?.client_id && store.client.client_id !== clientMetadataUrl;
  record('discovery_and_registration', first === 'REDIRECT' && registered,
    `auth() said ${first}, client ${JSON.stringify(store.client)}, document fetched ${documentServer?.fetches() ?? 0} time(s)`);
  const a = store.authorizationUrl;
  record('authorization_request', a.searchParams.get('code_challenge_method') === 'S256'
    && a.searchParams.get('resource') === serverUrl.href, `authorization URL ${a}`);
  record('callback_carries_iss', captured?.searchParams.get('iss') === new URL(a).origin
    && captured.searchParams.get('state') === a.searchParams.get('state'), `callback ${captured}`);
  const second = await auth(provider, { serverUrl, authorizationCode: captured.searchParams.get('code'), fetchFn: guardedFetch });
  record('token', second === 'AUTHORIZED' && !!store.tokens?.access_token && !!store.tokens?.refresh_token,
    `auth() said ${second}, tokens ${JSON.stringify(store.tokens)}`);
  const claims = JSON.parse(Buffer.from(store.tokens.access_token.split('.')[1], 'base64url'));
  record('audience', claims.aud === serverUrl.href, `aud ${claims.aud}`);
  const oldRefresh = store.tokens.refresh_token;
  const third = await auth(provider, { serverUrl, fetchFn: guardedFetch });
  record('refresh', third === 'AUTHORIZED' && store.tokens.refresh_token !== oldRefresh, `auth() said ${third}`);
  if (email) {
    record('single_sign_on', seen.discovered === true && seen.idpLogin === true && seen.login !== true,
      `what the user saw: ${JSON.stringify(seen)}`);
    console.log(`OFFERED ${(seen.offered ?? []).join(' ')}`);
  }
  console.log(`CLIENT_ID ${store.client.client_id}`);
} catch (e) {
  record('sdk_flow', false, e.stack || String(e));
} finally {
  clearTimeout(overall);
  documentServer?.close();
}
const passed = results.filter(Boolean).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(results.length > 0 && results.every(Boolean) ? 0 : 1);
