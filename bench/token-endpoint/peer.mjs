// oidc-provider configured for the same jobs Portcullis does in the benchmark: a confidential
// client obtaining client-credentials tokens, and another rotating refresh tokens it got by the
// authorization code flow (sign-in and consent by the development interactions, in
// refresh-pool.mjs). Opaque tokens are its default; JWT access tokens for a resource (what
// Portcullis issues) are enabled through resource indicators, and every refresh rotates the
// refresh token (Portcullis always does), so the two do comparable work: authenticate the
// client, check and spend the old token, mint and sign new ones, persist them.
import Provider from 'oidc-provider';

const port = Number(process.env.PEER_PORT || 18082);
const secret = process.env.BENCH_SECRET;
const resource = process.env.BENCH_RESOURCE;
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'bench',
    client_secret: secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }, {
    client_id: 'bench-rt',
    client_secret: secret,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:18099/cb'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }],
  rotateRefreshToken: true,
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      getResourceServerInfo: () => ({ scope: 'crm.contacts.read', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      useGrantedResource: () => true,
    },
  },
  jwks: { keys: [await generateEs256Jwk()] },
  scopes: ['openid', 'offline_access', 'crm.contacts.read'],
});

async function generateEs256Jwk() {
  const { subtle } = globalThis.crypto;
  const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const jwk = await subtle.exportKey('jwk', pair.privateKey);
  return { ...jwk, alg: 'ES256', use: 'sig', kid: 'bench' };
}

provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
