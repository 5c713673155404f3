// What the Chromium peers share: configuration from the environment, the native app's
// loopback callback, a headless Chromium that reaches only loopback, and the PASS/FAIL lines
// the Rust tests read.
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

/// A required environment variable; a missing one ends the run with a FAIL line.
export function env(name) {
  const v = process.env[name];
  if (!v) { console.log(`FAIL config: ${name} is not set`); process.exit(1); }
  return v;
}

/// Listens on a loopback port of its own, as a native app would, and remembers the first
/// request: the authorization response. `url(template)` fills `__PORT__` in with that port.
export async function callbackServer() {
  const state = { callback: null };
  const server = createServer((req, res) => {
    state.callback = `http://127.0.0.1:${server.address().port}${req.url}`;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('client callback');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    state,
    prefix: `http://127.0.0.1:${port}/callback`,
    url: (template) => template.replaceAll('__PORT__', String(port)),
    close: () => server.close(),
  };
}

/// Refuses to run against anything but loopback.
export function requireLoopback(...urls) {
  for (const url of urls) {
    if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname)) {
      console.log(`FAIL config: ${url} is not on loopback`); process.exit(1);
    }
  }
}

/// PASS/FAIL lines, a closing `N passed, N failed` and the exit status; a run that takes more
/// than `seconds` fails.
export function reporter(seconds = 60) {
  const results = [];
  const overall = setTimeout(() => { console.log(`FAIL timeout: ${seconds} s elapsed`); process.exit(1); }, seconds * 1000);
  return {
    record(name, ok, why = '') {
      results.push(ok);
      console.log(ok ? `PASS ${name}` : `FAIL ${name}: ${why}`);
    },
    finish() {
      clearTimeout(overall);
      const passed = results.filter(Boolean).length;
      console.log(`${passed} passed, ${results.length - passed} failed`);
      process.exit(results.length > 0 && results.every(Boolean) ? 0 : 1);
    },
  };
}

/// Debian's Chromium, headless, with the flags this machine's closed network needs.
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
