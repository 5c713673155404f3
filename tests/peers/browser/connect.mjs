// Real Chromium connects users' own accounts at an upstream MCP server (the token vault): the
// link an agent's call answered with leads to Portcullis's sign-in, back to the connect page
// (which says which account is being connected), to the upstream's own sign-in and consent
// (oidc-provider), and back to Portcullis, which says the account is connected. Each user has
// a browser context of their own. No JavaScript runs on any page (all are forms). Traffic goes
// only to the loopback issuer and the upstream's authorization server.
//
// Env: CONNECTIONS, a JSON array of {url, username, password, account} (the link, the user at
// Portcullis, and who they are at the upstream), UPSTREAM_ORIGIN (the authorization server's
// origin), SCREENSHOT_DIR (optional). Prints PASS/FAIL lines and `N passed, N failed`.
import { env, launchChromium, reporter, requireLoopback } from './common.mjs';

const connections = JSON.parse(env('CONNECTIONS'));
const upstreamOrigin = env('UPSTREAM_ORIGIN');
const shots = process.env.SCREENSHOT_DIR;
requireLoopback(upstreamOrigin, ...connections.map((c) => c.url));
const { record, finish } = reporter(90);
const browser = await launchChromium();
try {
  for (const { url, username, password, account } of connections) {
    const issuerOrigin = new URL(url).origin;
    const shot = async (page, name) => { if (shots) await page.screenshot({ path: `${shots}/connect-${username}-${name}.png`, fullPage: true }); };
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    await context.route('**/*', async (route) => {
      const target = route.request().url();
      if (target.startsWith(`${issuerOrigin}/`) || target.startsWith(`${upstreamOrigin}/`)) return route.continue();
      return route.abort();
    });

    // Not signed in: Portcullis's sign-in first, then back to the connect page.
    await page.goto(url);
    record(`${username}_signs_in_first`, new URL(page.url()).pathname.endsWith('/login'), `at ${page.url()}`);
    await page.fill('#username', username);
    await page.fill('#password', password);
    await Promise.all([page.waitForURL((u) => u.pathname.includes('/connect/')), page.getByRole('button', { name: 'Sign in' }).click()]);
    await shot(page, '1-connect');
    const heading = await page.locator('h1').innerText();
    record(`${username}_sees_which_account`, /Connect your notes account/.test(heading), `heading ${heading}`);

    // The upstream's sign-in and consent.
    await Promise.all([page.waitForURL((u) => u.origin === upstreamOrigin), page.getByRole('button', { name: 'Connect my account' }).click()]);
    await shot(page, '2-upstream-login');
    await page.fill('input[name="login"]', account);
    await page.fill('input[name="password"]', 'any');
    await Promise.all([page.waitForLoadState(), page.locator('button[type="submit"]').first().click()]);
    if (new URL(page.url()).origin === upstreamOrigin) {
      await shot(page, '3-upstream-consent');
      await Promise.all([page.waitForURL((u) => u.origin === issuerOrigin), page.locator('button[type="submit"]').first().click()]);
    }
    await shot(page, '4-connected');
    const done = await page.locator('h1').innerText();
    record(`${username}_connected`, /is connected/.test(done) && new URL(page.url()).pathname.endsWith('/connect-callback'), `${page.url()}: ${done}`);
    await context.close();
  }
} catch (err) {
  record('flow', false, err.message);
} finally {
  await browser.close();
}
finish();
