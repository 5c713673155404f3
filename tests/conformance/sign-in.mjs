// Plays the user for the conformance suite's `authorization` mode: opens the authorization URL
// the suite printed, signs in on Portcullis's login page, approves the consent page as
// offered, and follows the redirect to the suite's callback. Cookies and redirects are
// handled by hand (fetch with redirect: 'manual'), as a browser would.
//
// Usage: node sign-in.mjs AUTHORIZATION_URL USERNAME   (password on stdin, one line)
// Prints the scopes the consent page offered, one line, then exits 0 once the callback
// answered; anything unexpected exits 1 with the page that caused it.

import { readFileSync } from 'node:fs';

const [url, username] = process.argv.slice(2);
if (!url || !username) {
  process.stderr.write('usage: node sign-in.mjs AUTHORIZATION_URL USERNAME < password\n');
  process.exit(2);
}
const password = readFileSync(0, 'utf8').split('\n')[0];
const issuerOrigin = new URL(url).origin;
const cookies = new Map();

function fail(message) {
  process.stderr.write(`sign-in: ${message}\n`);
  process.exit(1);
}

async function request(target, options = {}) {
  const headers = { ...(options.headers ?? {}) };
  const sameOrigin = new URL(target).origin === issuerOrigin;
  if (sameOrigin && cookies.size > 0) {
    headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  const response = await fetch(target, { ...options, headers, redirect: 'manual', signal: AbortSignal.timeout(10000) });
  if (sameOrigin) {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const at = pair.indexOf('=');
      const name = pair.slice(0, at);
      const value = pair.slice(at + 1);
      if (value === '' || /max-age=0/i.test(line)) cookies.delete(name);
      else cookies.set(name, value);
    }
  }
  return response;
}

function field(html, name) {
  const match = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  return match ? match[1].replaceAll('&#34;', '"').replaceAll('&amp;', '&') : undefined;
}

async function post(path, form) {
  return request(new URL(path, issuerOrigin).toString(), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: issuerOrigin },
    body: new URLSearchParams(form).toString(),
  });
}

let next = url;
let offered;
for (let step = 0; step < 12; step++) {
  if (new URL(next).origin !== issuerOrigin) {
    // Back at the client (the suite's callback): let it see the answer.
    const done = await request(next);
    if (!done.ok) fail(`the callback answered ${done.status}`);
    process.stdout.write(`${offered ?? ''}\n`);
    process.exit(0);
  }
  const response = await request(next);
  const location = response.headers.get('location');
  if (location) {
    next = new URL(location, next).toString();
    continue;
  }
  const html = await response.text();
  if (response.status !== 200) fail(`${next} answered ${response.status}: ${html}`);
  const csrf = field(html, 'csrf');
  const handle = field(html, 'request');
  if (html.includes('name="password"')) {
    // The form posts back to the page it is on (/login, /consent).
    const answer = await post(new URL(next).pathname, {
      request: handle, csrf, username, password,
    });
    next = new URL(answer.headers.get('location') ?? fail('the login form did not redirect'), next).toString();
  } else if (html.includes('name="decision"')) {
    const scopes = [...html.matchAll(/name="scope" value="([^"]+)"/g)].map((m) => m[1]);
    offered = scopes.join(' ');
    const form = new URLSearchParams({ request: handle, csrf, decision: 'approve' });
    for (const s of scopes) form.append('scope', s);
    const answer = await post(new URL(next).pathname, form);
    next = new URL(answer.headers.get('location') ?? fail('the consent form did not redirect'), next).toString();
  } else {
    fail(`unexpected page at ${next}: ${html}`);
  }
}
fail('too many steps');
