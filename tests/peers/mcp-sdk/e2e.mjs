// End to end with the official MCP TypeScript SDK (@modelcontextprotocol/sdk): its real `Client`
// and `StreamableHTTPClientTransport`, given an `authProvider`, talk to a Portcullis gateway
// route. Sign-in and consent are done headlessly over HTTP (a cookie jar and the two forms), so
// the provider's `redirectToAuthorization` plays the part of the user's browser and the script
// plays the application around the SDK: it calls `transport.finishAuth(code)` and reconnects or
// retries, as an interactive application does.
//
// Env (all modes): SERVER_URL, the MCP route URL (its RFC 9728 metadata names Portcullis).
// MODE=user (default): the demo CRM route (list_contacts / update_deal / export_contacts).
//   USERNAME, PASSWORD; REGISTRATION=dcr (default) or cimd (TLS_CERT, TLS_KEY: PEM for the
//   script's own https Client ID Metadata Document server on loopback); GRANT_SCOPES: what the
//   first consent grants (default crm.contacts.read); ACCESS_TOKEN_TTL: the server's access
//   token lifetime in seconds (0, the default, skips the refresh steps); SUSPEND_FIFO and
//   SUSPEND_DONE: when SUSPEND_FIFO is set, the script prints `SUSPEND <client_id>`, waits
//   (30 s at most) for the file SUSPEND_DONE to exist, and expects the next call to be refused
//   with 401. The step-up asks for what the challenge names (Portcullis names the scopes the
//   token holds as well); STEPUP_ACCUMULATE=1 makes the application add the held scopes itself
//   (the 2026-07-28 client rule, SEP-2350).
// MODE=client_credentials: CLIENT_ID, CLIENT_SECRET (a confidential client allowed
//   crm.contacts.read), CC_SCOPE (optional scope to ask for).
// MODE=everything: server-everything behind the route. USERNAME, PASSWORD, REGISTRATION as
//   above; GRANT_SCOPES (default: everything the consent page offers); ALLOWED_TOOL (echo),
//   ALLOWED_TOOL_ARGS (JSON, {"message":"hi"}), DENIED_TOOL (get-env), RESOURCE_URI (default:
//   the first listed), PROMPT_NAME (default: the first listed), PROMPT_ARGS (JSON; default:
//   "test" for each required argument).
//
// Prints `CLIENT_ID <id>`, one `PASS name` / `FAIL name: why` / `SKIP name: why` line per step,
// `# ...` lines tracing the HTTP requests the SDK made, and a closing `N passed, M failed`.
// Exits non-zero on any failure; gives up after 90 s. Only loopback addresses are contacted.
import { existsSync, readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, discoverOAuthServerInfo } from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { headlessUser, publishClientMetadata } from './headless.mjs';

// ---------------------------------------------------------------------------------------------
// Reporting

const results = [];
const say = (line) => console.log(line);
const summary = () => {
  const passed = results.filter(Boolean).length;
  say(`${passed} passed, ${results.length - passed} failed`);
  return results.length > 0 && results.every(Boolean);
};
const overall = setTimeout(() => {
  results.push(false);
  say('FAIL timeout: 90 s elapsed');
  flushTrace();
  summary();
  process.exit(1);
}, 90_000);

const env = (name, fallback) => {
  const v = process.env[name];
  if (v) return v;
  if (fallback !== undefined) return fallback;
  say(`FAIL config: ${name} is not set`);
  process.exit(1);
};
const mode = process.env.MODE || 'user';
const serverUrl = new URL(env('SERVER_URL'));

class StepFailure extends Error {}
const check = (condition, why) => {
  if (!condition) throw new StepFailure(typeof why === 'function' ? why() : why);
};
const oneLine = (s) => String(s).replace(/\s+/g, ' ').slice(0, 600);
const describeError = (e) => {
  if (!e) return String(e);
  const code = e.code !== undefined ? ` code=${e.code}` : '';
  return `${e.constructor?.name ?? 'Error'}${code}: ${e.message}`;
};

/// Runs one step; returns whether it passed. An essential step that fails ends the run.
async function step(name, fn, { essential = false } = {}) {
  let ok = true;
  let why = '';
  try {
    await fn();
  } catch (e) {
    ok = false;
    why = e instanceof StepFailure ? e.message : (e?.stack || String(e));
  }
  flushTrace();
  results.push(ok);
  say(ok ? `PASS ${name}` : `FAIL ${name}: ${oneLine(why)}`);
  if (!ok && essential) throw new StepFailure(`${name} failed; the remaining steps need it`);
  return ok;
}
const skip = (name, why) => say(`SKIP ${name}: ${why}`);
const note = (text) => trace.push({ line: `note: ${text}` });

// ---------------------------------------------------------------------------------------------
// HTTP: a loopback-only fetch that records what the SDK asks for

const trace = [];
let traced = 0;
function flushTrace() {
  for (const t of trace.slice(traced)) say(`#   ${t.line}`);
  traced = trace.length;
}
const loopback = new Set(['127.0.0.1', 'localhost', '[::1]']);
let tokenEndpoint;

function requestKind(url, method, body, headers) {
  const path = url.pathname;
  if (url.origin === serverUrl.origin && path === serverUrl.pathname) {
    if (method === 'GET') return { kind: 'mcp', label: `${method} ${path} (SSE stream)` };
    if (method === 'DELETE') return { kind: 'mcp', label: `${method} ${path} (end session)` };
    let rpc = '?';
    try {
      const m = JSON.parse(body);
      rpc = Array.isArray(m) ? 'batch' : m.method ? `${m.method}${m.params?.name ? ` ${m.params.name}` : ''}` : 'response';
    } catch { /* not JSON */ }
    const bearer = (headers.get('authorization') || '').startsWith('Bearer ') ? 'with token' : 'no token';
    return { kind: 'mcp', rpc, label: `${method} ${path} ${rpc} (${bearer})` };
  }
  if (body instanceof URLSearchParams || (typeof body === 'string' && /(^|&)grant_type=/.test(body))) {
    const form = new URLSearchParams(body);
    const basic = (headers.get('authorization') || '').startsWith('Basic ') ? ', client_secret_basic' : '';
    const extras = ['scope', 'resource'].filter((k) => form.has(k)).map((k) => `${k}=${form.get(k)}`).join(' ');
    return { kind: 'token', grant: form.get('grant_type'), label: `${method} ${path} grant_type=${form.get('grant_type')}${basic}${extras ? ` ${extras}` : ''}` };
  }
  if (method === 'POST' && typeof body === 'string' && body.includes('redirect_uris')) {
    return { kind: 'register', label: `${method} ${path} (client registration)` };
  }
  if (path.includes('/.well-known/oauth-protected-resource')) return { kind: 'prm', label: `${method} ${path}` };
  if (path.includes('/.well-known/')) return { kind: 'as-metadata', label: `${method} ${path}` };
  if (path.endsWith('/authorize')) return { kind: 'authorize', label: `${method} ${path} scope="${url.searchParams.get('scope') ?? ''}"` };
  return { kind: 'other', label: `${method} ${path}` };
}

async function guardedFetch(input, init = {}) {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (!loopback.has(url.hostname)) throw new Error(`refusing to contact ${url.host}`);
  const method = (init.method || (input instanceof Request ? input.method : 'GET')).toUpperCase();
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  const sse = method === 'GET' && (headers.get('accept') || '').includes('text/event-stream');
  // Every request is bounded in time, except a standing SSE stream (closed with its transport).
  const signals = [init.signal, sse ? null : AbortSignal.timeout(15_000)].filter(Boolean);
  const response = await fetch(input, { ...init, signal: signals.length ? AbortSignal.any(signals) : undefined });
  const entry = { ...requestKind(url, method, init.body, headers), status: response.status };
  entry.www = response.headers.get('www-authenticate') ?? undefined;
  let line = `${entry.label} -> ${response.status}`;
  const location = response.headers.get('location');
  if (location) line += ` ${new URL(location, url).pathname}`;
  if (entry.www && (response.status === 401 || response.status === 403)) line += ` WWW-Authenticate: ${entry.www}`;
  if (entry.kind === 'token') {
    const text = await response.clone().text().catch(() => '');
    try {
      const j = JSON.parse(text);
      entry.body = j;
      line += j.error ? ` ${text}` : ` scope="${j.scope ?? ''}"${j.refresh_token ? ' +refresh_token' : ''}`;
    } catch {
      line += ` ${oneLine(text).slice(0, 200)}`;
    }
  }
  entry.line = line;
  trace.push(entry);
  return response;
}

// ---------------------------------------------------------------------------------------------
// Headless sign-in and consent (the user's browser)

const username = mode === 'client_credentials' ? '' : env('USERNAME');
const password = mode === 'client_credentials' ? '' : env('PASSWORD');
const scopeList = (s) => (s || '').split(' ').filter(Boolean);

const redirectUrl = 'http://127.0.0.1:61999/callback';

const user = headlessUser({ fetchFn: guardedFetch, username, password, redirectUrl });

// ---------------------------------------------------------------------------------------------
// Client ID Metadata Document, published by the script itself (REGISTRATION=cimd)

const registration = process.env.REGISTRATION || 'dcr';
const documentServer = mode !== 'client_credentials' && registration === 'cimd'
  ? await publishClientMetadata({
    cert: readFileSync(env('TLS_CERT')),
    key: readFileSync(env('TLS_KEY')),
    clientName: 'MCP TypeScript SDK e2e client (CIMD)',
    redirectUrl,
  })
  : null;
const clientMetadataUrl = documentServer?.url;

// ---------------------------------------------------------------------------------------------
// The OAuthClientProvider

class HeadlessProvider {
  constructor() {
    this.client = undefined;
    this.stored = undefined; // what saveTokens() received, unchanged
    this.saved = []; // every token response, in order
    this.verifier = undefined;
    this.discovery = undefined;
    this.authorizations = []; // every redirectToAuthorization(), with what the consent page did
    this.invalidations = []; // every invalidateCredentials() scope the SDK asked for
    this.choose = (offered) => offered; // consent policy for the next authorization
    this.interactive = true; // false: an authorization now is a failure (no silent sign-in)
    this.hideRefresh = false; // true: tokens() leaves out the refresh token, see the step-up
    this.accumulate = null; // scopes to add to the next authorization request (SEP-2350)
    this.frozen = false; // true: invalidateCredentials() is recorded but changes nothing
    this.code = null; // the code of the last completed authorization, for finishAuth()
  }
  get redirectUrl() { return redirectUrl; }
  get clientMetadataUrl() { return clientMetadataUrl; }
  get clientMetadata() {
    return {
      client_name: 'MCP TypeScript SDK e2e client',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() { return crypto.randomUUID(); }
  clientInformation() { return this.client; }
  saveClientInformation(info) { this.client = info; }
  tokens() {
    if (!this.stored || !this.hideRefresh) return this.stored;
    const { refresh_token: _, ...rest } = this.stored;
    return rest;
  }
  saveTokens(tokens) {
    this.stored = tokens;
    this.saved.push(tokens);
    this.hideRefresh = false;
  }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
  saveDiscoveryState(state) {
    this.discovery = state;
    tokenEndpoint = state.authorizationServerMetadata?.token_endpoint ?? tokenEndpoint;
  }
  invalidateCredentials(scope) {
    this.invalidations.push(scope);
    if (this.frozen) return;
    if (scope === 'all' || scope === 'client') this.client = undefined;
    if (scope === 'all' || scope === 'tokens') this.stored = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
    if (scope === 'all' || scope === 'discovery') this.discovery = undefined;
  }
  async redirectToAuthorization(url) {
    const entry = { url: new URL(url), asked: scopeList(url.searchParams.get('scope')) };
    this.authorizations.push(entry);
    if (!this.interactive) {
      throw new Error(`the SDK started an authorization this step does not expect: scope="${entry.asked.join(' ')}"`);
    }
    const open = new URL(url);
    if (this.accumulate) {
      // The application keeps what it already holds when stepping up (MCP SEP-2350: the
      // client asks for the union of the granted and the challenged scopes).
      const union = [...new Set([...this.accumulate, ...entry.asked])];
      open.searchParams.set('scope', union.join(' '));
      entry.sent = union;
      this.accumulate = null;
    }
    const callback = await user.signInAndConsent(open, this.choose, entry);
    entry.callback = callback;
    const error = callback.searchParams.get('error');
    if (error) throw new Error(`the authorization ended in ${error}: ${callback.searchParams.get('error_description')}`);
    this.code = callback.searchParams.get('code');
  }
  takeCode() {
    const code = this.code;
    this.code = null;
    return code;
  }
}

const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));
const tokenScopes = (tokens) => scopeList(claims(tokens.access_token).scope).sort();
const textOf = (result) => (result?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
const sameList = (a, b) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
const since = (mark, pred) => trace.slice(mark).filter((t) => t.kind && pred(t));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const transports = [];
const clients = [];

function connection(authProvider) {
  const transport = new StreamableHTTPClientTransport(serverUrl, { authProvider, fetch: guardedFetch });
  const client = new Client({ name: 'portcullis-e2e', version: '1.0.0' });
  client.onerror = (e) => trace.push({ line: `transport onerror: ${oneLine(describeError(e))}` });
  transports.push(transport);
  clients.push(client);
  return { transport, client };
}

async function attempt(promise) {
  try {
    return { result: await promise };
  } catch (error) {
    return { error };
  }
}

// ---------------------------------------------------------------------------------------------
// Scenario pieces

/// Steps 1: connect without a token, let the SDK discover, register and start the
/// authorization, complete it headlessly, finishAuth, reconnect. Returns the connection.
async function interactiveConnect(provider, firstGrant) {
  let conn;
  let code;
  provider.choose = firstGrant;
  await step('connect_challenge', async () => {
    const mark = trace.length;
    conn = connection(provider);
    const first = await attempt(conn.client.connect(conn.transport));
    check(first.error, 'connect() succeeded without any token');
    check(first.error instanceof UnauthorizedError, () => `connect() failed with ${describeError(first.error)}, not UnauthorizedError`);
    const challenge = since(mark, (t) => t.kind === 'mcp' && t.status === 401)[0];
    check(challenge?.www?.includes('resource_metadata='), () => `no 401 with resource_metadata: ${challenge?.line}`);
    check(since(mark, (t) => t.kind === 'prm' && t.status === 200).length > 0, 'the SDK did not fetch the protected resource metadata');
    check(since(mark, (t) => t.kind === 'as-metadata' && t.status === 200).length > 0, 'the SDK did not fetch the authorization server metadata');
    check(provider.client?.client_id, 'no client registered');
    if (registration === 'cimd') {
      check(provider.client.client_id === clientMetadataUrl && documentServer.fetches() >= 1,
        () => `client ${provider.client.client_id}, document fetched ${documentServer?.fetches() ?? 0} time(s)`);
    } else {
      check(since(mark, (t) => t.kind === 'register' && t.status === 201).length === 1, 'no successful registration request');
    }
    say(`CLIENT_ID ${provider.client.client_id}`);
    check(provider.authorizations.length === 1, `${provider.authorizations.length} authorization(s) started, not 1`);
    code = provider.takeCode();
    check(code, 'the headless sign-in brought back no code');
  }, { essential: true });

  await step('authorization_request', async () => {
    const a = provider.authorizations[0];
    const p = a.url.searchParams;
    check(p.get('response_type') === 'code', `response_type ${p.get('response_type')}`);
    check(p.get('code_challenge_method') === 'S256' && (p.get('code_challenge') || '').length >= 43,
      `PKCE: code_challenge_method=${p.get('code_challenge_method')} code_challenge=${p.get('code_challenge')}`);
    check(p.get('resource') === serverUrl.href, `resource=${p.get('resource')}, expected ${serverUrl.href}`);
    check(p.get('client_id') === provider.client.client_id, `client_id=${p.get('client_id')}`);
    check(p.get('redirect_uri') === redirectUrl, `redirect_uri=${p.get('redirect_uri')}`);
    check(a.callback.searchParams.get('state') === p.get('state') && p.get('state'), 'state did not come back');
    check(a.callback.searchParams.get('iss'), 'the callback has no iss');
    note(`authorization asked scope="${a.asked.join(' ')}"; consent offered [${a.offered}], granted [${a.granted}]; login page ${a.login ? 'shown' : 'skipped'}`);
  });

  await step('connect', async () => {
    const mark = trace.length;
    await conn.transport.finishAuth(code);
    const exchange = since(mark, (t) => t.kind === 'token');
    check(exchange.length === 1 && exchange[0].grant === 'authorization_code' && exchange[0].status === 200,
      () => `token requests: ${exchange.map((t) => t.line).join(' | ')}`);
    check(provider.stored?.access_token && provider.stored?.refresh_token, 'no access and refresh token saved');
    const c = claims(provider.stored.access_token);
    check(c.aud === serverUrl.href, `aud ${c.aud}`);
    const granted = [...provider.authorizations[0].granted].sort();
    check(sameList(tokenScopes(provider.stored), granted), `token scope "${c.scope}", granted [${granted}]`);
    await conn.client.close();
    conn = connection(provider);
    await conn.client.connect(conn.transport);
    check(since(mark, (t) => t.kind === 'mcp' && t.rpc === 'initialize' && t.status === 200).length === 1, 'initialize was not answered 200');
  }, { essential: true });
  return conn;
}

async function userScenario() {
  const provider = new HeadlessProvider();
  const firstGrant = scopeList(env('GRANT_SCOPES', 'crm.contacts.read'));
  const conn = await interactiveConnect(provider, (offered) => offered.filter((s) => firstGrant.includes(s)));
  const { client, transport } = conn;
  const callUpdate = () => client.callTool({ name: 'update_deal', arguments: { deal_id: 'D-100', stage: 'won' } });
  const callList = () => client.callTool({ name: 'list_contacts', arguments: {} });

  await step('tools_list', async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    check(sameList(names, ['list_contacts']), `tools/list gave [${names}]`);
  });

  await step('list_contacts', async () => {
    const result = await callList();
    check(!result.isError && textOf(result).includes('Ada Lovelace'), () => `result ${oneLine(JSON.stringify(result))}`);
  });

  // Step-up. SDK 1.32.2's transport answers a 403 insufficient_scope by calling auth() with the
  // challenged scope; auth() refreshes whenever it holds a refresh token, which cannot widen the
  // grant, so the retry meets the same challenge and the transport gives up with
  // "Server returned 403 after trying upscoping" (typescript-sdk issue #2255). The application
  // then re-authorizes through the same SDK path with the refresh token kept out of sight.
  provider.choose = (offered) => offered.filter((s) => s !== 'crm.contacts.export');
  const heldBefore = tokenScopes(provider.stored);
  const accumulate = process.env.STEPUP_ACCUMULATE === '1';
  let first;
  await step('stepup_challenge', async () => {
    const mark = trace.length;
    const before = provider.stored;
    if (accumulate) provider.accumulate = heldBefore; // should the SDK redirect by itself
    first = await attempt(callUpdate());
    const challenge = since(mark, (t) => t.kind === 'mcp' && t.status === 403)[0];
    check(challenge, () => `no 403 for update_deal; the call gave ${first.error ? describeError(first.error) : JSON.stringify(first.result)}`);
    check(/error="insufficient_scope"/.test(challenge.www ?? '') && /scope="[^"]*crm\.deals\.write/.test(challenge.www),
      `challenge ${challenge.www}`);
    check(/resource_metadata="/.test(challenge.www), `challenge without resource_metadata: ${challenge.www}`);
    const refreshed = since(mark, (t) => t.kind === 'token' && t.grant === 'refresh_token');
    if (first.error instanceof StreamableHTTPError && first.error.code === 403) {
      note(`SDK: 403 -> auth(scope from the challenge) -> ${refreshed.length} refresh(es) -> same 403 -> gave up: ${describeError(first.error)}`);
      check(refreshed.length === 1 && refreshed[0].status === 200, () => `refreshes: ${refreshed.map((t) => t.line).join(' | ')}`);
      check(provider.stored !== before && sameList(tokenScopes(provider.stored), heldBefore),
        () => `the refreshed token holds [${tokenScopes(provider.stored)}], not [${heldBefore}]`);
    } else if (first.error instanceof UnauthorizedError && provider.code) {
      note('SDK: 403 -> auth(scope from the challenge) -> redirectToAuthorization (no refresh first)');
    } else {
      throw new StepFailure(`update_deal ended in ${first.error ? describeError(first.error) : `success ${JSON.stringify(first.result)}`}`);
    }
  });

  await step('stepup', async () => {
    const mark = trace.length;
    const authorizationsBefore = provider.authorizations.length;
    if (!(first?.error instanceof UnauthorizedError && provider.code)) {
      // A successful request clears the transport's "already tried upscoping" guard.
      await client.listTools();
      provider.hideRefresh = true;
      if (accumulate) provider.accumulate = heldBefore;
      const second = await attempt(callUpdate());
      provider.accumulate = null;
      check(second.error instanceof UnauthorizedError,
        () => `with no refresh token in sight, update_deal gave ${second.error ? describeError(second.error) : JSON.stringify(second.result)}`);
    }
    const a = provider.authorizations[authorizationsBefore] ?? provider.authorizations.at(-1);
    check(a && provider.code, 'the SDK did not start an authorization for the challenged scope');
    note(`SDK asked scope="${a.asked.join(' ')}"${a.sent ? `, the application sent "${a.sent.join(' ')}"` : ''}; consent offered [${a.offered}], granted [${a.granted}]`);
    check(a.asked.includes('crm.deals.write'), `the SDK asked scope="${a.asked.join(' ')}"`);
    check(a.url.searchParams.get('code_challenge_method') === 'S256' && a.url.searchParams.get('resource') === serverUrl.href,
      `step-up authorization URL ${a.url}`);
    await transport.finishAuth(provider.takeCode());
    const result = await callUpdate();
    check(!result.isError && textOf(result).includes('D-100'), () => `update_deal gave ${oneLine(JSON.stringify(result))}`);
    const held = tokenScopes(provider.stored);
    note(`token scope after the step-up: "${held.join(' ')}"`);
    check(held.includes('crm.deals.write'), `the token holds [${held}]`);
    check(held.includes('crm.contacts.read'), `the token holds [${held}]: crm.contacts.read was lost in the step-up`);
    check(!held.includes('crm.contacts.export'), `the token holds [${held}]`);
    check(since(mark, (t) => t.kind === 'mcp' && t.rpc === 'tools/call update_deal' && t.status === 200).length === 1,
      'no update_deal call was answered 200');
  });

  await step('tools_list_after_stepup', async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    check(sameList(names, tokenScopes(provider.stored).includes('crm.contacts.read') ? ['list_contacts', 'update_deal'] : ['update_deal']),
      `tools/list gave [${names}] for scopes [${tokenScopes(provider.stored)}]`);
  });

  const ttl = Number(process.env.ACCESS_TOKEN_TTL || '0');
  if (!(ttl > 0)) {
    for (const name of ['refresh', 'refresh_replay_refused', 'refresh_family_revoked', 'revoked_grant_reauthorize']) {
      skip(name, 'ACCESS_TOKEN_TTL is not set');
    }
  } else {
    let oldRefresh;
    await step('refresh', async () => {
      const before = provider.stored;
      const exp = claims(before.access_token).exp;
      const wait = Math.max(0, exp * 1000 - Date.now()) + 1500;
      check(wait <= Math.min(ttl + 5, 40) * 1000, `the access token expires in ${Math.round(wait / 1000)} s, more than ACCESS_TOKEN_TTL=${ttl} allows`);
      note(`waiting ${Math.round(wait / 100) / 10} s for the access token to expire`);
      await sleep(wait);
      const mark = trace.length;
      const result = await callList();
      check(!result.isError && textOf(result).includes('Ada Lovelace'), () => `list_contacts gave ${oneLine(JSON.stringify(result))}`);
      check(since(mark, (t) => t.kind === 'mcp' && t.status === 401).length === 1, 'the expired token was not refused with 401');
      const refreshes = since(mark, (t) => t.kind === 'token');
      check(refreshes.length === 1 && refreshes[0].grant === 'refresh_token' && refreshes[0].status === 200,
        () => `token requests: ${refreshes.map((t) => t.line).join(' | ')}`);
      check(provider.stored !== before && provider.stored.access_token !== before.access_token, 'the stored tokens did not change');
      check(provider.stored.refresh_token && provider.stored.refresh_token !== before.refresh_token, 'the refresh token did not rotate');
      check(sameList(tokenScopes(provider.stored), tokenScopes(before)), `scope changed in the refresh: [${tokenScopes(provider.stored)}]`);
      oldRefresh = before.refresh_token;
    }, { essential: false });

    const direct = async (refreshToken) => {
      check(tokenEndpoint, 'the token endpoint was never discovered');
      const response = await guardedFetch(tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: 'refresh_token',
          client_id: provider.client.client_id,
          refresh_token: refreshToken,
          resource: serverUrl.href,
        }),
      });
      const text = await response.text();
      let body = {};
      try { body = JSON.parse(text); } catch { /* reported below */ }
      return { status: response.status, body, text };
    };
    await step('refresh_replay_refused', async () => {
      check(oldRefresh, 'no rotated refresh token to replay');
      const r = await direct(oldRefresh);
      check(r.status === 400 && r.body.error === 'invalid_grant', `replaying the old refresh token: ${r.status} ${r.text}`);
    });
    await step('refresh_family_revoked', async () => {
      const r = await direct(provider.stored.refresh_token);
      check(r.status === 400 && r.body.error === 'invalid_grant', `the current refresh token after the replay: ${r.status} ${r.text}`);
    });
    await step('revoked_grant_reauthorize', async () => {
      // The grant is revoked: its access token must stop working at once; the SDK's refresh
      // fails with invalid_grant, it drops the tokens and starts a new authorization.
      const mark = trace.length;
      const authorizationsBefore = provider.authorizations.length;
      const invalidationsBefore = provider.invalidations.length;
      const first = await attempt(callList());
      check(since(mark, (t) => t.kind === 'mcp' && t.status === 401).length >= 1, 'the revoked grant\'s access token was not refused with 401');
      const refresh = since(mark, (t) => t.kind === 'token' && t.grant === 'refresh_token');
      check(refresh.length >= 1 && refresh.every((t) => t.status === 400 && t.body?.error === 'invalid_grant'),
        () => `refresh attempts: ${refresh.map((t) => t.line).join(' | ')}`);
      note(`SDK invalidated credentials: [${provider.invalidations.slice(invalidationsBefore)}]; the call gave ${first.error ? describeError(first.error) : 'success'}`);
      check(first.error instanceof UnauthorizedError && provider.authorizations.length === authorizationsBefore + 1 && provider.code,
        () => `expected a new authorization and UnauthorizedError, got ${first.error ? describeError(first.error) : 'success'}`);
      await transport.finishAuth(provider.takeCode());
      const result = await callList();
      check(!result.isError && textOf(result).includes('Ada Lovelace'), () => `list_contacts gave ${oneLine(JSON.stringify(result))}`);
    });
  }

  if (!process.env.SUSPEND_FIFO) {
    skip('suspended_client_refused', 'SUSPEND_FIFO is not set');
  } else {
    await step('suspended_client_refused', async () => {
      const done = env('SUSPEND_DONE');
      const ok = await attempt(callList());
      check(ok.result && !ok.result.isError, () => `list_contacts failed before the suspension: ${describeError(ok.error)}`);
      say(`SUSPEND ${provider.client.client_id}`);
      const until = Date.now() + 30_000;
      while (!existsSync(done)) {
        check(Date.now() < until, `${done} did not appear within 30 s`);
        await sleep(100);
      }
      // From here the SDK may not sign in again (its SSE stream, ended by the suspension,
      // tries to reconnect on its own).
      provider.interactive = false;
      provider.frozen = true;
      const mark = trace.length;
      // The suspension was committed by another process (the CLI): the contract is that every
      // node refuses within a second (its change feed delivers it, and a node trusts a token's
      // remembered state for a second at most). Asked with plain requests, so the SDK does not
      // see the refusals (nor the time pass) before its own call below.
      const token = provider.tokens()?.access_token;
      const suspendedAt = Date.now();
      for (;;) {
        const probe = await fetch(serverUrl, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          body: JSON.stringify({ jsonrpc: '2.0', id: 'probe', method: 'ping' }),
        });
        await probe.arrayBuffer();
        if (probe.status === 401) break;
        check(Date.now() - suspendedAt < 1000, `the gateway still accepted the suspended client's token after a second (${probe.status})`);
        await sleep(25);
      }
      note(`the gateway refused the suspended client's token ${Date.now() - suspendedAt} ms after the CLI returned`);
      const after = await attempt(callList());
      check(after.error, () => `list_contacts still works after the suspension: ${oneLine(JSON.stringify(after.result))}`);
      const refused = since(mark, (t) => t.kind === 'mcp' && t.rpc === 'tools/call list_contacts');
      check(refused.length >= 1 && refused.every((t) => t.status === 401), () => `MCP responses: ${refused.map((t) => t.line).join(' | ')}`);
      const refreshes = since(mark, (t) => t.kind === 'token');
      check(refreshes.every((t) => t.status !== 200), () => `a token request succeeded for the suspended client: ${refreshes.map((t) => t.line).join(' | ')}`);
      note(`SDK after the 401: ${refreshes.length} refresh attempt(s), invalidateCredentials [${provider.invalidations}], error ${describeError(after.error)}`);
      // How the SDK gives up varies: its SSE stream, ended by the suspension, may already have
      // met the 401, tried to refresh and dropped its credentials before this call.
      check(after.error instanceof UnauthorizedError || after.error.code === 401 || refreshes.length > 0
        || provider.invalidations.length > 0,
        () => `the call failed with ${describeError(after.error)}`);
    });
  }
}

async function clientCredentialsScenario() {
  const clientId = env('CLIENT_ID');
  const clientSecret = env('CLIENT_SECRET');
  say(`CLIENT_ID ${clientId}`);
  let issuer;
  await step('cc_discovery', async () => {
    const info = await discoverOAuthServerInfo(serverUrl, { fetchFn: guardedFetch });
    issuer = String(info.authorizationServerUrl);
    tokenEndpoint = info.authorizationServerMetadata?.token_endpoint;
    check(info.resourceMetadata?.resource === serverUrl.href, `PRM resource ${info.resourceMetadata?.resource}`);
    check(tokenEndpoint, 'no token endpoint in the authorization server metadata');
    check((info.authorizationServerMetadata.grant_types_supported ?? []).includes('client_credentials'),
      `grant_types_supported ${JSON.stringify(info.authorizationServerMetadata.grant_types_supported)}`);
  }, { essential: true });
  const provider = new ClientCredentialsProvider({
    clientId, clientSecret, expectedIssuer: issuer, clientName: 'e2e agent', scope: process.env.CC_SCOPE || undefined,
  });
  const { client, transport } = connection(provider);
  await step('cc_connect', async () => {
    const mark = trace.length;
    await client.connect(transport);
    const tokens = since(mark, (t) => t.kind === 'token');
    check(tokens.length === 1 && tokens[0].grant === 'client_credentials' && tokens[0].status === 200,
      () => `token requests: ${tokens.map((t) => t.line).join(' | ')}`);
    check(tokens[0].line.includes('client_secret_basic'), `not client_secret_basic: ${tokens[0].line}`);
    const c = claims(provider.tokens().access_token);
    check(c.aud === serverUrl.href && c.client_id === clientId, `aud ${c.aud}, client_id ${c.client_id}`);
    note(`token scope "${c.scope}", sub ${c.sub}`);
  }, { essential: true });
  await step('cc_tools_list', async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    check(names.includes('list_contacts') && !names.includes('update_deal') && !names.includes('export_contacts'), `tools/list gave [${names}]`);
  });
  await step('cc_list_contacts', async () => {
    const result = await client.callTool({ name: 'list_contacts', arguments: {} });
    check(!result.isError && textOf(result).includes('Ada Lovelace'), () => `result ${oneLine(JSON.stringify(result))}`);
  });
  await step('cc_update_deal_refused', async () => {
    const mark = trace.length;
    const r = await attempt(client.callTool({ name: 'update_deal', arguments: { deal_id: 'D-100', stage: 'won' } }));
    check(r.error, () => `update_deal succeeded: ${oneLine(JSON.stringify(r.result))}`);
    const refused = since(mark, (t) => t.kind === 'mcp' && t.rpc === 'tools/call update_deal');
    check(refused.length >= 1 && refused.every((t) => t.status === 403 && /insufficient_scope/.test(t.www ?? '')),
      () => `responses: ${refused.map((t) => t.line).join(' | ')}`);
    note(`SDK: ${since(mark, (t) => t.kind === 'token').length} new client_credentials token(s) between the 403s; error ${describeError(r.error)}`);
    check(r.error instanceof StreamableHTTPError && r.error.code === 403, `the call failed with ${describeError(r.error)}`);
  });
}

async function everythingScenario() {
  const provider = new HeadlessProvider();
  const grant = process.env.GRANT_SCOPES ? scopeList(process.env.GRANT_SCOPES) : null;
  const { client } = await interactiveConnect(provider, (offered) => (grant ? offered.filter((s) => grant.includes(s)) : offered));
  provider.interactive = false; // nothing below may need the user again
  const allowed = env('ALLOWED_TOOL', 'echo');
  const allowedArgs = JSON.parse(env('ALLOWED_TOOL_ARGS', '{"message":"hi"}'));
  const denied = env('DENIED_TOOL', 'get-env');

  await step('tools_list', async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    note(`tools/list: [${names}]`);
    check(names.includes(allowed), `${allowed} is not listed: [${names}]`);
    check(!names.includes(denied), `${denied} is listed: [${names}]`);
  });
  await step('allowed_tool', async () => {
    const result = await client.callTool({ name: allowed, arguments: allowedArgs });
    const text = textOf(result);
    check(!result.isError, () => `${allowed} gave an error result: ${oneLine(JSON.stringify(result))}`);
    if (allowed === 'echo') check(text.includes(allowedArgs.message), `echo said ${JSON.stringify(text)}`);
  });
  await step('denied_tool', async () => {
    const mark = trace.length;
    const r = await attempt(client.callTool({ name: denied, arguments: {} }));
    check(r.error, () => `${denied} was not refused: ${oneLine(JSON.stringify(r.result))}`);
    const http = since(mark, (t) => t.kind === 'mcp' && t.rpc === `tools/call ${denied}`).map((t) => t.status);
    note(`${denied}: HTTP [${http}], ${describeError(r.error)}`);
    check(r.error instanceof McpError || (r.error instanceof StreamableHTTPError && r.error.code === 403),
      `refused with ${describeError(r.error)}`);
  });
  await step('resource', async () => {
    const { resources } = await client.listResources();
    const uri = process.env.RESOURCE_URI || resources[0]?.uri;
    note(`resources/list: ${resources.length} resource(s)${resources.length ? `, first ${resources[0].uri}` : ''}`);
    check(uri, 'no resource listed and RESOURCE_URI is not set');
    if (process.env.RESOURCE_URI && !resources.some((r) => r.uri === uri)) note(`${uri} is not in resources/list (a template?)`);
    const read = await client.readResource({ uri });
    check(read.contents?.length > 0 && read.contents[0].uri, () => `resources/read gave ${oneLine(JSON.stringify(read))}`);
  });
  await step('prompt', async () => {
    const { prompts } = await client.listPrompts();
    note(`prompts/list: [${prompts.map((p) => p.name)}]`);
    const name = process.env.PROMPT_NAME || prompts[0]?.name;
    check(name, 'no prompt listed and PROMPT_NAME is not set');
    const listed = prompts.find((p) => p.name === name);
    let args = process.env.PROMPT_ARGS ? JSON.parse(process.env.PROMPT_ARGS) : undefined;
    if (!args && listed?.arguments) {
      args = Object.fromEntries(listed.arguments.filter((a) => a.required).map((a) => [a.name, 'test']));
    }
    const got = await client.getPrompt({ name, arguments: args });
    check(got.messages?.length > 0, () => `prompts/get gave ${oneLine(JSON.stringify(got))}`);
  });
}

// ---------------------------------------------------------------------------------------------

try {
  if (mode === 'user') await userScenario();
  else if (mode === 'client_credentials') await clientCredentialsScenario();
  else if (mode === 'everything') await everythingScenario();
  else {
    results.push(false);
    say(`FAIL config: MODE=${mode} is not user, client_credentials or everything`);
  }
} catch (e) {
  if (!(e instanceof StepFailure)) {
    results.push(false);
    say(`FAIL run: ${oneLine(e?.stack || String(e))}`);
  }
} finally {
  for (const c of clients) await Promise.race([c.close().catch(() => {}), sleep(2000)]);
  documentServer?.close();
  flushTrace();
  clearTimeout(overall);
}
process.exit(summary() ? 0 : 1);
