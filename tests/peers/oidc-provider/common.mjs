// What the two test IdPs share: quiet stdout (it carries only the READY line), a loopback
// listener that exists before the issuer is known (PORT=0 picks a free port), fresh signing
// keys, and a clean shutdown on SIGTERM/SIGINT.
import { generateKeyPairSync } from 'node:crypto';
import * as http from 'node:http';

// oidc-provider prints its notices with console.info, which goes to stdout.
for (const name of ['log', 'info', 'debug']) {
  console[name] = (...args) => console.error(...args);
}

/// Ends the process with `message` on stderr, prefixed with the script's name.
export function failer(prefix) {
  return (message) => {
    process.stderr.write(`${prefix}: ${message}\n`);
    process.exit(2);
  };
}

/// A private JWK of a fresh key pair, for signing.
export function signingJwk(type, options, alg, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid };
}

/// Listens on 127.0.0.1:PORT before the provider exists, so that PORT=0 can be resolved into
/// the issuer `http://localhost:PORT`. Returns the issuer, the port, and `serve(app)`, which
/// hands requests to the provider's app (with Host pinned to the issuer's, so endpoint URLs in
/// the metadata are the same whether a test asks localhost or 127.0.0.1), announces
/// `READY <issuer>` and ends the process cleanly on SIGTERM or SIGINT.
export async function listenOnLoopback(fail) {
  const portText = process.env.PORT ?? '';
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
    fail('PORT is required and must be a TCP port number (0 picks a free one)');
  }
  let handler = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server = http.createServer((req, res) => handler(req, res));
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(portText), '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err) => fail(`cannot listen on 127.0.0.1:${portText}: ${err.message}`));
  const port = server.address().port;
  const issuer = `http://localhost:${port}`;
  const serve = (app, routes = () => false) => {
    handler = (req, res) => {
      if (routes(req, res)) return undefined;
      req.headers.host = `localhost:${port}`;
      return app(req, res);
    };
    process.stdout.write(`READY ${issuer}\n`);
    const shutdown = () => {
      server.close(() => process.exit(0));
      server.closeAllConnections();
      setTimeout(() => process.exit(0), 2000).unref();
    };
    process.on('SIGTERM', shutdown);
    process.on('SIGINT', shutdown);
  };
  return { issuer, port, serve };
}
