// Headless sign-in and consent against Portcullis's pages, as an MCP client's redirect handler
// would do them in a browser: a cookie jar, the login form, the consent form. Shared by run.mjs
// and e2e.mjs.

const unescape = (s) => s.replace(/&#34;|&quot;/g, '"').replace(/&#39;|&#x27;/g, "'").replace(/&#60;|&lt;/g, '<')
  .replace(/&#62;|&gt;/g, '>').replace(/&#38;|&amp;/g, '&');
const input = (html, name) => {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  return m ? unescape(m[1]) : null;
};
const oneLine = (s) => String(s).replace(/\s+/g, ' ').slice(0, 300);

/// A user agent for one person: `fetchFn` (loopback-guarded by the caller), their username and
/// password, and the redirect URI at which the flow ends. With `email`, they sign in through
/// their organisation's identity provider instead: Portcullis's email question sends them
/// there, and `idpLogin` is who they are at the provider (oidc-provider's development
/// interactions: any password, then a consent screen).
export function headlessUser({ fetchFn, username, password, redirectUrl, email, idpLogin }) {
  const cookies = new Map();
  const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  const keepCookies = (response) => {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const i = pair.indexOf('=');
      cookies.set(pair.slice(0, i), pair.slice(i + 1));
    }
  };

  /// Follows the authorization URL through the login and consent pages until the redirect back
  /// to `redirectUrl`, which it returns. `choose(offered)` says which of the consent page's
  /// scopes to leave ticked (default: all). Fills `seen` with what happened: login shown,
  /// scopes offered, scopes granted.
  async function signInAndConsent(authorizationUrl, choose = (offered) => offered, seen = {}) {
    let url = new URL(authorizationUrl).href;
    let method = 'GET';
    let body;
    for (let hop = 0; hop < 30; hop++) {
      const headers = { cookie: cookieHeader() };
      if (method === 'POST') {
        headers['content-type'] = 'application/x-www-form-urlencoded';
        headers.origin = new URL(url).origin;
      }
      const response = await fetchFn(url, { method, headers, body, redirect: 'manual' });
      keepCookies(response);
      const location = response.headers.get('location');
      if (location) {
        const next = new URL(location, url);
        if (next.href.startsWith(redirectUrl)) return next;
        url = next.href; method = 'GET'; body = undefined;
        continue;
      }
      const html = await response.text();
      if (response.status !== 200) throw new Error(`${response.status} at ${url}: ${oneLine(html)}`);
      // The identity provider's own pages: sign in, then allow.
      const prompt = input(html, 'prompt');
      if (prompt === 'login' || prompt === 'consent') {
        const fields = new URLSearchParams({ prompt });
        if (prompt === 'login') {
          seen.idpLogin = true;
          fields.set('login', idpLogin);
          fields.set('password', 'any');
        }
        method = 'POST'; body = fields.toString();
        continue;
      }
      // Portcullis's pages: the first POST form is the one to answer (the email question when
      // single sign-on is set up, else the password form; the consent form).
      const postForms = [...html.matchAll(/<form method="post" action="([^"]+)"/g)].map((m) => unescape(m[1]));
      const discover = postForms.find((a) => a.endsWith('/login/discover'));
      const wanted = (email && discover) || postForms.find((a) => !a.endsWith('/login/discover'));
      if (!wanted) throw new Error(`no form at ${url}: ${oneLine(html)}`);
      const action = new URL(wanted, url).href;
      const fields = new URLSearchParams({ request: input(html, 'request'), csrf: input(html, 'csrf') });
      if (action.endsWith('/login/discover')) {
        seen.discovered = true;
        fields.set('email', email);
      } else if (html.includes('name="password"')) {
        seen.login = true;
        fields.set('username', username);
        fields.set('password', password);
      } else {
        const offered = [...html.matchAll(/name="scope" value="([^"]+)"/g)].map((m) => unescape(m[1]));
        const granted = choose(offered);
        seen.offered = offered;
        seen.granted = granted;
        for (const s of granted) fields.append('scope', s);
        fields.set('decision', granted.length > 0 ? 'approve' : 'deny');
      }
      url = action; method = 'POST'; body = fields.toString();
    }
    throw new Error('too many redirects');
  }

  return { signInAndConsent };
}

/// Publishes a Client ID Metadata Document over https on a loopback port (PEM `cert` and
/// `key`). Returns its URL (the client_id), how often it was fetched, and a way to stop it.
export async function publishClientMetadata({ cert, key, clientName, redirectUrl }) {
  const { createServer } = await import('node:https');
  let url;
  let fetches = 0;
  const server = createServer({ cert, key }, (req, res) => {
    fetches += 1;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' });
    res.end(JSON.stringify({
      client_id: url,
      client_name: clientName,
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${server.address().port}/oauth/client-metadata.json`;
  return { url, fetches: () => fetches, close: () => server.close() };
}
