// Real Chromium against Portcullis's pages: sign in and consent by clicking (no JavaScript on
// our side, only forms), grant fewer scopes than asked, and prove the consent page refuses to
// render inside another site's iframe (RFC 9700 §4.16). Traffic goes to the loopback issuer
// only; the client's redirect URI and the "attacker" page are answered inside the browser.
//
// Env: AUTHORIZE_URL (a fresh authorization request whose redirect_uri is
// http://127.0.0.1:__PORT__/callback: this script listens there, on a loopback port of its own,
// as a native app would), USERNAME, PASSWORD, UNTICK (a scope to untick), SCREENSHOT_DIR
// (optional).
// Prints `CALLBACK <url>` and a closing `N passed, N failed` line.
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) { console.log(`FAIL config: ${name} is not set`); process.exit(1); }
  return v;
};
let callback = null;
const app = createServer((req, res) => {
  callback = `http://127.0.0.1:${app.address().port}${req.url}`;
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('client callback');
});
await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
const redirectPrefix = `http://127.0.0.1:${app.address().port}/callback`;
const authorizeUrl = env('AUTHORIZE_URL').replaceAll('__PORT__', String(app.address().port));
const username = env('USERNAME');
const password = env('PASSWORD');
const untick = env('UNTICK');
const shots = process.env.SCREENSHOT_DIR;
const issuerOrigin = new URL(authorizeUrl).origin;
if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(authorizeUrl).hostname)) {
  console.log('FAIL config: the issuer must be on loopback'); process.exit(1);
}

const results = [];
const record = (name, ok, why = '') => {
  results.push(ok);
  console.log(ok ? `PASS ${name}` : `FAIL ${name}: ${why}`);
};

const overall = setTimeout(() => { console.log('FAIL timeout: 60 s elapsed'); process.exit(1); }, 60_000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  // Refuse anything that is not the issuer or our callback; the attacker page is answered here.
  await context.route('**/*', async (route) => {
    const url = route.request().url();
    if (url.startsWith(redirectPrefix)) return route.continue();
    if (url.startsWith('http://attacker.test/')) {
      return route.fulfill({ status: 200, contentType: 'text/html',
        body: `<!doctype html><title>attacker</title><iframe id="victim" src="${framedUrl}" width="600" height="600"></iframe>` });
    }
    if (new URL(url).origin === issuerOrigin) return route.continue();
    return route.abort();
  });
  let framedUrl = '';

  // 1. The sign-in page works without JavaScript.
  await page.goto(authorizeUrl);
  const onLogin = await page.locator('input[name="password"]').count() === 1;
  record('login_page', onLogin, `landed on ${page.url()}`);
  if (shots) await page.screenshot({ path: `${shots}/login.png`, fullPage: true });
  await page.fill('input[name="username"]', username);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForURL(/\/consent\?/), page.click('button[type="submit"]')]);

  // 2. The consent page lists the scopes; untick one and allow the rest.
  const consentUrl = page.url();
  const boxes = await page.locator('input[name="scope"]').count();
  record('consent_page', boxes >= 2, `${boxes} scope checkboxes`);
  if (shots) await page.screenshot({ path: `${shots}/consent.png`, fullPage: true });

  // 3. Framing: another origin embeds the consent page; Chromium must refuse to render it.
  framedUrl = consentUrl;
  const attacker = await context.newPage();
  await attacker.goto('http://attacker.test/');
  await attacker.waitForTimeout(500);
  const frame = attacker.frames().find((f) => f !== attacker.mainFrame());
  let framedForm = 0;
  try { framedForm = frame ? await frame.locator('form').count() : 0; } catch { framedForm = 0; }
  const frameUrl = frame ? frame.url() : '(no frame)';
  record('consent_refuses_framing', framedForm === 0 && !frameUrl.startsWith(issuerOrigin + '/consent'),
    `framed page rendered ${framedForm} form(s) at ${frameUrl}`);
  await attacker.close();

  await page.uncheck(`input[name="scope"][value="${untick}"]`);
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(redirectPrefix)),
    page.click('button[value="approve"]'),
  ]);
  record('consent_submits', callback !== null && callback.includes('code='), `callback ${callback}`);
  if (callback) console.log(`CALLBACK ${callback}`);
} catch (e) {
  record('browser_flow', false, e.message);
} finally {
  await browser.close();
  app.close();
  clearTimeout(overall);
}
const passed = results.filter(Boolean).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(results.every(Boolean) ? 0 : 1);
