// Real Chromium at the dashboard (/admin): an administrator signs in, finds in the audit
// viewer the agent that just called a tool, opens it and suspends it (confirming first); a
// second tab's live tail shows the suspension as it happens. A user who is not an
// administrator gets 403 on every dashboard page. Screenshots of the main pages are written to
// SCREENSHOT_DIR for review. Traffic goes only to the loopback issuer.
//
// Env: ISSUER, ADMIN and USER (usernames, both with PASSWORD), CLIENT_ID and CLIENT_NAME (the
// agent), TOOL (the tool it called), PAGES (a JSON array of dashboard paths), SCREENSHOT_DIR
// (optional). Prints PASS/FAIL lines and `N passed, N failed`.
import { env, launchChromium, reporter, requireLoopback } from './common.mjs';

const issuer = env('ISSUER');
const [admin, user, password] = [env('ADMIN'), env('USER'), env('PASSWORD')];
const [clientId, clientName, tool] = [env('CLIENT_ID'), env('CLIENT_NAME'), env('TOOL')];
const pages = JSON.parse(env('PAGES'));
const shots = process.env.SCREENSHOT_DIR;
requireLoopback(issuer);
const origin = new URL(issuer).origin;
const { record, finish } = reporter(120);
const browser = await launchChromium();

async function context(javaScriptEnabled) {
  const ctx = await browser.newContext({ javaScriptEnabled, viewport: { width: 1280, height: 900 } });
  await ctx.route('**/*', (route) => (route.request().url().startsWith(`${origin}/`) ? route.continue() : route.abort()));
  return ctx;
}
const shot = async (page, name) => { if (shots) await page.screenshot({ path: `${shots}/admin-${name}.png`, fullPage: true }); };

async function signIn(page, username) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL((u) => !u.pathname.endsWith('/login')), page.getByRole('button', { name: 'Sign in' }).click()]);
}

try {
  // The administrator: sign-in first, then back to the dashboard.
  const ctx = await context(true);
  const page = await ctx.newPage();
  page.setDefaultTimeout(10_000);
  await page.goto(`${issuer}/admin`);
  record('dashboard_asks_to_sign_in', new URL(page.url()).pathname.endsWith('/login'), `at ${page.url()}`);
  await signIn(page, admin);
  record('administrator_lands_on_the_overview', new URL(page.url()).pathname.endsWith('/admin')
    && (await page.locator('h1').innerText()) === 'Overview', `at ${page.url()}`);
  await shot(page, '1-overview');

  // The audit viewer, filtered to the tool: the call is there, with the agent that made it.
  await page.getByRole('link', { name: 'Audit', exact: true }).click();
  await page.getByLabel('Tool').fill(tool);
  await Promise.all([page.waitForURL((u) => u.searchParams.get('tool') === tool), page.getByRole('button', { name: 'Search' }).click()]);
  const row = page.locator('table.audit tbody tr', { hasText: tool }).first();
  const agentLink = row.locator(`a[href$="/admin/agents/${encodeURIComponent(clientId)}"]`);
  record('the_call_is_in_the_audit_viewer', (await agentLink.count()) === 1, 'no row links the agent');
  await shot(page, '2-audit');
  await Promise.all([page.waitForURL((u) => u.pathname.endsWith(`/admin/agents/${encodeURIComponent(clientId)}`)), agentLink.click()]);
  const heading = await page.locator('h1').innerText();
  record('the_agent_page_opens', heading.includes(clientName) && heading.includes('active'), `heading ${heading}`);
  await shot(page, '3-agent');

  // A second tab follows the trail live while the kill switch is used in the first.
  const tail = await ctx.newPage();
  await tail.goto(`${issuer}/admin/audit`);
  await tail.locator('#tail-state [role=status]').waitFor();

  await page.getByRole('link', { name: 'Suspend…' }).click();
  record('suspending_asks_to_confirm', (await page.locator('h1').innerText()).startsWith('Suspend '), page.url());
  await shot(page, '4-confirm');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'suspended'), page.getByRole('button', { name: 'Suspend it now' }).click()]);
  const notice = await page.locator('[role=status]').innerText();
  const after = await page.locator('h1').innerText();
  record('the_agent_is_suspended', notice.startsWith('Suspended') && after.includes('suspended'), `${after}: ${notice}`);
  await shot(page, '5-suspended');

  const live = tail.locator('table.audit tbody tr.fresh', { hasText: 'client.suspended' });
  await live.first().waitFor({ timeout: 15_000 }).then(() => true, () => false).then((seen) => record('the_live_tail_shows_it', seen, 'no new row within 15 s'));
  await shot(tail, '6-live-tail');

  for (const [name, path, title] of [['7-agents', '/admin/agents', 'Agents'], ['8-users', '/admin/users', 'Users'],
    ['9-tools', '/admin/tools', 'Who can call what'], ['10-routes', '/admin/routes', 'Routes']]) {
    const response = await page.goto(`${issuer}${path}`);
    record(`page_${path}`, response.status() === 200 && (await page.locator('h1').innerText()) === title, `status ${response.status()}`);
    await shot(page, name);
  }
  await ctx.close();

  // Someone who is not an administrator: 403 on every page, with no JavaScript at all.
  const other = await context(false);
  const theirs = await other.newPage();
  theirs.setDefaultTimeout(10_000);
  await theirs.goto(`${issuer}/admin`);
  await signIn(theirs, user);
  const refused = [];
  for (const path of pages) {
    const response = await theirs.goto(`${issuer}${path}`);
    if (response.status() !== 403) refused.push(`${path}: ${response.status()}`);
  }
  record('a_user_gets_403_on_every_page', refused.length === 0, refused.join(', '));
  await shot(theirs, '11-not-an-administrator');
  await other.close();
} catch (err) {
  record('flow', false, err.message);
} finally {
  await browser.close();
}
finish();
