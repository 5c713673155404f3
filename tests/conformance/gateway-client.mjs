// The MCP client under test, for the conformance suite's `client` mode, is Portcullis's
// gateway acting as each user's OAuth client of an upstream (`upstream_auth = "user"`). The
// suite runs this script once per scenario with the URL of its own MCP server (which demands
// OAuth, with its own authorization server) as the last argument. This script:
//
//   1. starts a Portcullis of its own (fresh data directory, loopback port) whose route
//      /mcp/upstream forwards to that URL with upstream_auth = "user", and adds a user;
//   2. gets that user an access token for the route as an agent would (authorization code
//      with PKCE at Portcullis, signing in and consenting headlessly);
//   3. calls the route: the gateway answers that the user must connect the upstream account
//      (JSON-RPC -32010 with the URL), and the script opens that URL as the user's browser
//      would (the connect page, then the suite's authorization server, then back), so the
//      gateway discovers, registers, authorizes and redeems exactly as an MCP client must;
//   4. calls again (initialize, tools/list, tools/call of the first tool), connecting again
//      when the upstream asks for more scope (step-up), at most three times.
//
// MCP_CONFORMANCE_CONTEXT (JSON), when the scenario gives one, may hold the client the
// operator pre-registered (client_id, client_secret). Env: PORTCULLIS_BIN. Only loopback
// addresses are contacted; everything started here is stopped by its process id.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const serverUrl = process.argv[process.argv.length - 1];
const bin = process.env.PORTCULLIS_BIN;
const log = (m) => process.stderr.write(`gateway-client: ${m}\n`);
if (!bin || !/^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(serverUrl ?? '')) {
  log('usage: PORTCULLIS_BIN=... node gateway-client.mjs <loopback MCP server URL>');
  process.exit(2);
}
const context = JSON.parse(process.env.MCP_CONFORMANCE_CONTEXT || '{}');
const tmp = mkdtempSync(join(tmpdir(), 'portcullis-client-'));
let child;
const stop = (code) => {
  if (child && child.exitCode === null) child.kill('SIGTERM');
  rmSync(tmp, { recursive: true, force: true });
  process.exit(code);
};
setTimeout(() => { log('gave up after 25 s'); stop(1); }, 25_000).unref();

const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
// The port is chosen here, and the suite runs scenarios side by side: another scenario's
// Portcullis may take it first. Starting is retried on a new port until `serve` says it listens.
let port = await freePort();
let issuer = `http://127.0.0.1:${port}`;
const redirect = 'http://127.0.0.1:9/callback';
const password = `conformance-${process.pid}-${Date.now()}`;
const q = (s) => JSON.stringify(s);
// auth/basic-cimd: the suite's authorization server expects the client's metadata document at
// its fixture URL; it stands for where an operator publishes Portcullis's document (the issuer
// here is plain http, where a document cannot be).
const scenario = process.env.MCP_CONFORMANCE_SCENARIO ?? '';
const documentUrl = scenario === 'auth/basic-cimd'
  ? 'client_metadata_document_url = "https://conformance-test.local/client-metadata.json"\n'
  : '';
const preconfigured = context.client_id
  ? `client_id = ${q(context.client_id)}\n${context.client_secret ? 'client_secret_env = "UPSTREAM_CLIENT_SECRET"\n' : ''}${
    context.token_endpoint_auth_method === 'client_secret_post' ? 'client_auth = "client_secret_post"\n' : ''}`
  : '';
const writeConfig = () => writeFileSync(join(tmp, 'portcullis.toml'), `
[server]
issuer = ${q(issuer)}
listen = ${q(`127.0.0.1:${port}`)}
data_dir = ${q(join(tmp, 'data'))}

[gateway]
${documentUrl}
[[clients]]
client_id = "agent"
client_name = "Conformance agent"
redirect_uris = [${q(redirect)}]

[[upstreams]]
name = "upstream"
url = ${q(serverUrl)}
upstream_auth = ${q(scenario.startsWith('auth/client-credentials') ? 'client_credentials' : 'user')}
unmapped = "allow"
unmapped_scopes = ["upstream.use"]
[upstreams.oauth]
${preconfigured}allow_http_loopback = true
allowed_ranges = ["127.0.0.0/8", "::1/128"]
timeout_secs = 5
`);
writeConfig();

const env = { ...process.env, UPSTREAM_CLIENT_SECRET: context.client_secret ?? '' };
const config = ['--config', join(tmp, 'portcullis.toml')];
const added = spawnSync(bin, [...config, 'user', 'add', 'conformance-user', '--password-stdin'], { input: `${password}\n`, env });
if (added.status !== 0) { log(`user add failed: ${added.stderr}`); stop(1); }
// `serve` prints one line on standard output once it listens, and exits if it cannot.
const started = () => new Promise((resolve) => {
  child = spawn(bin, [...config, 'serve'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.once('data', () => resolve(true));
  child.once('exit', () => resolve(false));
});
for (let attempt = 0; !(await started()); attempt += 1) {
  if (attempt >= 5) { log('Portcullis did not start'); stop(1); }
  port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  writeConfig();
}
child.stdout.resume();

// A browser of the user's at Portcullis (cookies of Portcullis's origin only).
const cookies = new Map();
async function browse(target, options = {}) {
  const sameOrigin = new URL(target).origin === issuer;
  const headers = { ...(options.headers ?? {}) };
  if (sameOrigin && cookies.size) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  const response = await fetch(target, { ...options, headers, redirect: 'manual', signal: AbortSignal.timeout(10_000) });
  if (sameOrigin) {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const at = pair.indexOf('=');
      if (pair.slice(at + 1) === '' || /max-age=0/i.test(line)) cookies.delete(pair.slice(0, at));
      else cookies.set(pair.slice(0, at), pair.slice(at + 1));
    }
  }
  return response;
}
const field = (html, name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))?.[1]?.replaceAll('&amp;', '&');
const postForm = (path, form) => browse(new URL(path, issuer).toString(), {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded', origin: issuer },
  body: new URLSearchParams(form).toString(),
});

// Follows redirects (and Portcullis's sign-in and consent forms) until `done(url)` says stop.
async function follow(start, done) {
  let response = await browse(start);
  for (let hops = 0; hops < 20; hops += 1) {
    const location = response.headers.get('location');
    if (location) {
      const next = new URL(location, response.url || start).toString();
      if (done(next)) return next;
      response = await browse(next);
      continue;
    }
    const html = await response.text();
    const path = new URL(response.url || start).pathname;
    if (path.endsWith('/login')) {
      response = await postForm('/login', { request: field(html, 'request') ?? '', csrf: field(html, 'csrf'), username: 'conformance-user', password });
    } else if (path.endsWith('/consent')) {
      const scopes = [...html.matchAll(/name="scope" value="([^"]*)"/g)].map((m) => ['scope', m[1]]);
      response = await browse(new URL('/consent', issuer).toString(), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: issuer },
        body: new URLSearchParams([['request', field(html, 'request')], ['csrf', field(html, 'csrf')], ['decision', 'approve'], ...scopes]).toString(),
      });
    } else if (path.includes('/connect/')) {
      response = await postForm(path, { csrf: field(html, 'csrf'), scope: field(html, 'scope') ?? '' });
    } else {
      return { status: response.status, path, html };
    }
  }
  throw new Error('too many redirects');
}

// 2. The agent's token for the route.
const { createHash, randomBytes } = await import('node:crypto');
const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('base64url');
const route = `${issuer}/mcp/upstream`;
const authorize = `${issuer}/authorize?${new URLSearchParams({
  response_type: 'code', client_id: 'agent', redirect_uri: redirect, code_challenge: challenge,
  code_challenge_method: 'S256', state: 's', resource: route, scope: 'upstream.use',
})}`;
const back = await follow(authorize, (u) => u.startsWith(redirect));
const code = new URL(back).searchParams.get('code');
const token = await (await fetch(`${issuer}/token`, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ grant_type: 'authorization_code', client_id: 'agent', code, redirect_uri: redirect, code_verifier: verifier, resource: route }),
})).json();
if (!token.access_token) { log(`no agent token: ${JSON.stringify(token)}`); stop(1); }

// 3 and 4. MCP through the gateway, connecting the account when asked.
// The protocol revision the suite asks for: 2026-07-28 has no initialize and no sessions; each
// request carries the client's identity and capabilities in `_meta`, and mirrors its method
// (and tool name) in headers.
const version = process.env.MCP_CONFORMANCE_PROTOCOL_VERSION || '2025-11-25';
const stateless = version >= '2026-07-28';
const clientInfo = { name: 'portcullis-gateway-conformance', version: '1.0.0' };
let session;
let id = 0;
async function rpc(method, params) {
  const headers = {
    authorization: `Bearer ${token.access_token}`, 'content-type': 'application/json',
    accept: 'application/json, text/event-stream', 'mcp-protocol-version': version,
  };
  if (session) headers['mcp-session-id'] = session;
  if (stateless) {
    headers['mcp-method'] = method;
    if (method === 'tools/call') headers['mcp-name'] = params.name;
    params = {
      ...params,
      _meta: {
        'io.modelcontextprotocol/protocolVersion': version,
        'io.modelcontextprotocol/clientInfo': clientInfo,
        'io.modelcontextprotocol/clientCapabilities': {},
      },
    };
  }
  const isNotification = method.startsWith('notifications/');
  const body = isNotification ? { jsonrpc: '2.0', method, params } : { jsonrpc: '2.0', id: ++id, method, params };
  const response = await fetch(route, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  if (method === 'initialize') session = response.headers.get('mcp-session-id') ?? session;
  const text = await response.text();
  if (isNotification) return { status: response.status };
  const data = text.split('\n').find((l) => l.startsWith('data:'));
  return { status: response.status, message: JSON.parse(data ? data.slice(5) : text) };
}
// The user connects (authorizes at the upstream) at most three times in all, as a client
// should bound its authorization attempts.
let connections = 0;
async function connected(method, params) {
  for (;;) {
    const answer = await rpc(method, params);
    const url = answer.message?.error?.data?.url;
    if (answer.message?.error?.code !== -32010 || !url) return answer;
    if (connections >= 3) throw new Error(`still asked to connect after ${connections} connections`);
    connections += 1;
    log(`${method}: connecting the account (${url})`);
    const end = await follow(url, () => false);
    if (end.status !== 200 || !end.html.includes('is connected')) {
      throw new Error(`connecting failed at ${end.path} (${end.status}): ${end.html.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').slice(0, 300)}`);
    }
  }
}

try {
  if (!stateless) {
    const init = await connected('initialize', { protocolVersion: version, capabilities: {}, clientInfo });
    if (init.message?.error) throw new Error(`initialize: ${JSON.stringify(init.message.error)}`);
    await rpc('notifications/initialized', {});
  }
  const tools = await connected('tools/list', {});
  const first = tools.message?.result?.tools?.[0];
  if (first) {
    const call = await connected('tools/call', { name: first.name, arguments: {} });
    log(`tools/call ${first.name}: ${JSON.stringify(call.message).slice(0, 200)}`);
  }
  stop(0);
} catch (err) {
  log(err.message);
  stop(1);
}
