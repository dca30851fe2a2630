/**
 * Signing key rotation against a real Auth service with a short rotation age:
 * the successor is published before it signs, tokens of the previous key stay
 * valid until they expire, an expired token is refused, and the retired key
 * leaves the key set once no token it signed can be alive. Private keys are
 * encrypted at rest.
 */
import { Code } from "@connectrpc/connect";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, expect, it } from "vitest";
import { keyFingerprint } from "./keys.ts";
import { sqlOf } from "../../kit/sql.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { loadAuthConfig } from "./config.ts";
import { authService } from "./service.ts";
import { type AuthClient, authClient, bearer, failureOf, reasonOf, verifierFor } from "./testing.ts";

const authEnv = {
  AUTH_KEY_ROTATION_MS: "2000",
  AUTH_KEY_PUBLISH_LEAD_MS: "500",
  AUTH_KEY_CHECK_INTERVAL_MS: "200",
  AUTH_KEY_RETIRE_GRACE_MS: "0",
  AUTH_ACCESS_TOKEN_TTL_MS: "6000",
  AUTH_SERVICE_TOKEN_TTL_MS: "6000",
};

let mesh: TestMesh;
let auth: AuthClient;

beforeAll(async () => {
  mesh = await startMesh([authService], authEnv);
  auth = authClient(mesh.url("auth"));
});

afterAll(async () => {
  await mesh?.stop();
});

const kidOf = (token: string) => decodeProtectedHeader(token).kid!;

it("rotates the signing key and keeps the previous key's tokens valid until they expire", async () => {
  const registered = await auth.register({ email: "rotation@shop.test", password: "violet harbor tunes 42" });
  const old = registered.tokens!;
  const oldKid = kidOf(old.accessToken);

  // Refresh until a token comes signed by the next key.
  let refreshToken = old.refreshToken;
  const fresh = await eventually(async () => {
    const pair = (await auth.refreshToken({ refreshToken })).tokens!;
    refreshToken = pair.refreshToken;
    return kidOf(pair.accessToken) !== oldKid ? pair : undefined;
  }, 6_000, "a token signed by the next key");
  const newKid = kidOf(fresh.accessToken);

  // A key signs for 2 s and tokens live 6 s: the old token has seconds left.
  expect(decodeJwt(old.accessToken).exp! * 1000 - Date.now()).toBeGreaterThan(1500);
  const listed = (await auth.getJwks({})).keys.map((k) => k.kid);
  expect(listed).toEqual(expect.arrayContaining([oldKid, newKid]));
  const verifier = verifierFor(auth);
  expect(await verifier.verify(old.accessToken)).toMatchObject({ kind: "user", userId: registered.user!.id });
  await expect(auth.getMe({}, bearer(old.accessToken))).resolves.toBeDefined();
  expect(await verifier.verify(fresh.accessToken)).toMatchObject({ kind: "user", userId: registered.user!.id });

  // Once expired, the old token is refused, and its key is no longer published.
  await new Promise((r) => setTimeout(r, Math.max(0, decodeJwt(old.accessToken).exp! * 1000 - Date.now()) + 100));
  const expired = await failureOf(auth.getMe({}, bearer(old.accessToken)));
  expect([expired.code, reasonOf(expired)]).toEqual([Code.Unauthenticated, "TOKEN_EXPIRED"]);
  await eventually(async () => ((await auth.getJwks({})).keys.some((k) => k.kid === oldKid) ? undefined : true), 6_000, "the retired key dropped");
  expect((await failureOf(verifierFor(auth).verify(old.accessToken))).code).toBe(Code.Unauthenticated);
});

it("stores the private keys encrypted under AUTH_KEY_ENCRYPTION_KEY", async () => {
  const rows = await sqlOf(mesh.services.auth!.ctx.orm.em.fork()).all<{ private_key_encrypted: Buffer; encryption_key_fingerprint: string }>(
    "select private_key_encrypted, encryption_key_fingerprint from signing_keys",
  );
  expect(rows.length).toBeGreaterThan(0);
  for (const row of rows) {
    expect(Buffer.from(row.private_key_encrypted).toString("latin1")).not.toMatch(/PRIVATE KEY/);
    expect(row.encryption_key_fingerprint).toBe(keyFingerprint(loadAuthConfig().keys.encryptionKey));
  }
});
