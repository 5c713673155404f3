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
import { callbackServer, env, launchChromium, reporter, requireLoopback } from './common.mjs';

const app = await callbackServer();
const redirectPrefix = app.prefix;
const authorizeUrl = app.url(env('AUTHORIZE_URL'));
const username = env('USERNAME');
const password = env('PASSWORD');
const untick = env('UNTICK');
const shots = process.env.SCREENSHOT_DIR;
const issuerOrigin = new URL(authorizeUrl).origin;
requireLoopback(authorizeUrl);
const { record, finish } = reporter();
const browser = await launchChromium();
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
  const { callback } = app.state;
  record('consent_submits', callback !== null && callback.includes('code='), `callback ${callback}`);
  if (callback) console.log(`CALLBACK ${callback}`);
} catch (e) {
  record('browser_flow', false, e.message);
} finally {
  await browser.close();
  app.close();
}
finish();
