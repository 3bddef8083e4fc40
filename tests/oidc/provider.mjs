// Two real OpenID providers (oidc-provider, OpenID-certified) on loopback for pyscore's
// identity tests: `trusted` (the platform is configured to accept it) and `stranger` (a
// valid provider the platform does not trust). Each signs with its own RSA key.
//
//   node provider.mjs PORT_TRUSTED PORT_STRANGER
//
// Client credentials: researcher / researcher-secret (the one asking for tokens) and
// pyscore / pyscore-secret (the platform, which introspects opaque tokens). Resources
// (RFC 8707) decide the token: https://pyscore.test -> a JWT for audience
// https://pyscore.test (300 s), https://short.pyscore.test -> the same audience but 2 s,
// https://elsewhere.test -> a JWT for another audience; https://opaque.pyscore.test and
// https://opaque.elsewhere.test -> opaque tokens (for introspection) for either audience; no
// resource -> an opaque token for no audience. Grant type urn:pyscore:test:refresh_token
// hands the researcher a refresh token with the same scopes (as a login would; there is no
// login page here). Prints one line, "ready", once both listen.
import { generateKeyPairSync } from "node:crypto";
import Provider, { errors } from "oidc-provider";

const SCOPES = "score.READ PROGRAMDATA-DEMO.READ PROGRAMDATA-OTHER.READ";
const RESOURCES = {
  "https://pyscore.test": { audience: "https://pyscore.test", accessTokenTTL: 300 },
  "https://short.pyscore.test": { audience: "https://pyscore.test", accessTokenTTL: 2 },
  "https://elsewhere.test": { audience: "https://elsewhere.test", accessTokenTTL: 300 },
  "https://opaque.pyscore.test": { audience: "https://pyscore.test", accessTokenFormat: "opaque" },
  "https://opaque.elsewhere.test": { audience: "https://elsewhere.test", accessTokenFormat: "opaque" },
};
const REFRESH = "urn:pyscore:test:refresh_token";

function start(port, kid) {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: "jwk" }), kid, use: "sig", alg: "RS256" };
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    jwks: { keys: [jwk] },
    clients: [
      {
        client_id: "researcher",
        client_secret: "researcher-secret",
        grant_types: ["client_credentials", REFRESH],
        redirect_uris: [],
        response_types: [],
        scope: SCOPES,
      },
      {
        client_id: "pyscore",
        client_secret: "pyscore-secret",
        grant_types: ["client_credentials"],
        redirect_uris: [],
        response_types: [],
      },
    ],
    scopes: SCOPES.split(" "),
    issueRefreshToken: async () => true, // enables refresh tokens (and their introspection)
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, resource) => {
          const info = RESOURCES[resource];
          if (!info) throw new errors.InvalidTarget();
          return { scope: SCOPES, accessTokenFormat: "jwt", jwt: { sign: { alg: "RS256" } }, ...info };
        },
      },
    },
  });
  provider.registerGrantType(REFRESH, async (ctx) => {
    const { client } = ctx.oidc;
    const accountId = "researcher-account";
    const grant = new provider.Grant({ clientId: client.clientId, accountId });
    grant.addOIDCScope(SCOPES);
    const grantId = await grant.save();
    const token = new provider.RefreshToken({ client, accountId, grantId, gty: "authorization_code", scope: SCOPES });
    ctx.body = { refresh_token: await token.save() };
  });
  return new Promise((resolve) => provider.listen(port, "127.0.0.1", resolve));
}

const [trusted, stranger] = process.argv.slice(2).map(Number);
await Promise.all([start(trusted, "trusted-1"), start(stranger, "stranger-1")]);
console.log("ready");
