// Refresh tokens for the rotation phase, obtained the way a client obtains them: the
// authorization code flow with PKCE, through each server's own sign-in and consent pages
// (once; later authorizations ride on the browser session and the remembered consent), then
// the code redeemed by the confidential client. Prints one refresh token per line.
//
//   node refresh-pool.mjs portcullis|oidc-provider ISSUER COUNT
//
// Environment: BENCH_BASIC_RT (client bench-rt's HTTP Basic header), BENCH_RESOURCE, BENCH_PASSWORD.
import { createHash, randomBytes } from 'node:crypto';

const [kind, issuer, countText] = process.argv.slice(2);
const count = Number(countText);
const clientId = 'bench-rt';
const redirectUri = 'http://127.0.0.1:18099/cb';
const resource = process.env.BENCH_RESOURCE;
const basic = process.env.BENCH_BASIC_RT;
const password = process.env.BENCH_PASSWORD;
const authorizePath = kind === 'portcullis' ? '/authorize' : '/auth';
const scope = kind === 'portcullis' ? 'crm.contacts.read' : 'openid offline_access crm.contacts.read';

const cookies = new Map();
async function request(url, init = {}) {
  const headers = { ...(init.headers || {}), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
  const response = await fetch(new URL(url, issuer), { ...init, headers, redirect: 'manual' });
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const at = pair.indexOf('=');
    cookies.set(pair.slice(0, at), pair.slice(at + 1));
  }
  return { status: response.status, location: response.headers.get('location'), body: await response.text() };
}

function field(body, name) {
  const match = body.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!match) throw new Error(`no ${name} field in: ${body.slice(0, 400)}`);
  return match[1].replace(/&#34;|&quot;/g, '"').replace(/&#39;|&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

function form(values) {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: new URL(issuer).origin },
    body: new URLSearchParams(values).toString(),
  };
}

// One authorization: follows redirects, signing in and consenting when a page asks; returns the code.
async function authorize() {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const query = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope, resource,
    code_challenge: challenge, code_challenge_method: 'S256', state: randomBytes(8).toString('hex'),
    ...(kind === 'oidc-provider' ? { prompt: 'consent' } : {}),
  });
  let page = await request(`${authorizePath}?${query}`);
  for (let step = 0; step < 12; step += 1) {
    const location = page.location;
    if (!location) throw new Error(`flow stopped at ${page.status}: ${page.body.slice(0, 400)}`);
    if (location.startsWith(redirectUri)) {
      const code = new URL(location).searchParams.get('code');
      if (!code) throw new Error(`no code in ${location}`);
      return { code, verifier };
    }
    const next = await request(location);
    if (kind === 'portcullis' && location.includes('/login?')) {
      page = await request('/login', form({
        request: field(next.body, 'request'), csrf: field(next.body, 'csrf'), username: 'alice', password,
      }));
    } else if (kind === 'portcullis' && location.includes('/consent?')) {
      page = await request('/consent', form({
        request: field(next.body, 'request'), csrf: field(next.body, 'csrf'), decision: 'approve', scope: 'crm.contacts.read',
      }));
    } else if (kind === 'oidc-provider' && location.includes('/interaction/') && next.body.includes('name="login"')) {
      page = await request(location, form({ prompt: 'login', login: 'alice', password }));
    } else if (kind === 'oidc-provider' && location.includes('/interaction/') && next.body.includes('value="consent"')) {
      page = await request(location, form({ prompt: 'consent' }));
    } else {
      page = next;
    }
  }
  throw new Error('redirect loop');
}

for (let i = 0; i < count; i += 1) {
  const { code, verifier } = await authorize();
  const answer = await fetch(new URL('/token', issuer), {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, resource,
    }).toString(),
  });
  const body = await answer.json();
  if (!body.refresh_token) throw new Error(`no refresh token (${answer.status}): ${JSON.stringify(body)}`);
  console.log(body.refresh_token);
}
