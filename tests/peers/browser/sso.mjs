// Real Chromium through single sign-on: Portcullis's sign-in page asks for an email, sends the
// browser to the identity provider authoritative for its domain (oidc-provider), the user signs
// in and allows there, comes back, and Portcullis's consent page offers only what the user's
// groups allow. No JavaScript runs on Portcullis's pages or the provider's (both are forms).
// Traffic goes only to the loopback issuer and identity provider; the client's redirect URI is
// answered by this script on a loopback port of its own, as a native app would.
//
// Env: AUTHORIZE_URL (a fresh authorization request whose redirect_uri is
// http://127.0.0.1:__PORT__/callback), EMAIL, IDP_LOGIN (who the user is at the provider),
// IDP_ORIGIN, EXPECT_OFFERED (the scopes the consent page must offer, space-separated),
// SCREENSHOT_DIR (optional).
// Prints `CALLBACK <url>` and a closing `N passed, N failed` line.
import { callbackServer, env, launchChromium, reporter, requireLoopback } from './common.mjs';

const app = await callbackServer();
const redirectPrefix = app.prefix;
const authorizeUrl = app.url(env('AUTHORIZE_URL'));
const email = env('EMAIL');
const idpLogin = env('IDP_LOGIN');
const idpOrigin = env('IDP_ORIGIN');
const expected = env('EXPECT_OFFERED').split(' ').filter(Boolean).sort();
const shots = process.env.SCREENSHOT_DIR;
const issuerOrigin = new URL(authorizeUrl).origin;
requireLoopback(authorizeUrl, idpOrigin);
const { record, finish } = reporter();
const shot = async (page, name) => { if (shots) await page.screenshot({ path: `${shots}/sso-${name}.png`, fullPage: true }); };
const browser = await launchChromium();
try {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  await context.route('**/*', async (route) => {
    const url = route.request().url();
    if (url.startsWith(redirectPrefix) || url.startsWith(`${issuerOrigin}/`) || url.startsWith(`${idpOrigin}/`)) {
      return route.continue();
    }
    return route.abort();
  });

  await page.goto(authorizeUrl);
  const asked = await page.locator('#email').count() === 1 && await page.getByRole('button', { name: 'Sign in with corp SSO' }).count() === 1;
  record('email_first', asked, `no email question or provider button at ${page.url()}`);
  await shot(page, '1-sign-in');
  await page.fill('#email', email);
  await Promise.all([page.waitForURL((u) => u.origin === idpOrigin), page.getByRole('button', { name: 'Continue' }).click()]);
  record('home_realm_discovery', new URL(page.url()).origin === idpOrigin, `the email led to ${page.url()}`);
  await shot(page, '2-idp-login');

  // The identity provider: sign in (any password), then allow.
  await page.fill('input[name="login"]', idpLogin);
  await page.fill('input[name="password"]', 'any');
  await Promise.all([page.waitForLoadState(), page.locator('button[type="submit"]').first().click()]);
  if (new URL(page.url()).origin === idpOrigin) {
    await shot(page, '3-idp-consent');
    await Promise.all([page.waitForURL((u) => u.origin === issuerOrigin), page.locator('button[type="submit"]').first().click()]);
  }
  await page.waitForURL((u) => u.origin === issuerOrigin && u.pathname.endsWith('/consent'));
  await shot(page, '4-consent');
  const offered = (await page.locator('input[name="scope"]').evaluateAll((boxes) => boxes.map((b) => b.value))).sort();
  record('group_ceiling_on_consent', JSON.stringify(offered) === JSON.stringify(expected),
    `offered ${offered.join(' ')}, expected ${expected.join(' ')}`);
  const signedInAs = await page.locator('dl.facts').innerText();
  record('consent_names_the_user_and_provider', signedInAs.includes(email) && signedInAs.includes('through corp SSO'), signedInAs);

  await Promise.all([page.waitForURL((u) => u.href.startsWith(redirectPrefix)), page.getByRole('button', { name: 'Allow selected' }).click()]);
  const back = new URL(page.url());
  record('code_at_the_client', back.searchParams.has('code') && back.searchParams.get('iss') === issuerOrigin, page.url());
  console.log(`CALLBACK ${page.url()}`);
} catch (e) {
  record('flow', false, e.stack || String(e));
} finally {
  await browser.close();
  app.close();
}
finish();
