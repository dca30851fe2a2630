/**
 * Auth's rate limits against real servers: the client address as the kit derives
 * it (trusted proxy hops, else the TCP peer), every public RPC limited, and the
 * counters shared by two replicas on one database. Each test calls from its own
 * loopback address (127.0.0.x as the TCP peer) or its own forwarded address, so
 * tests do not share buckets.
 */
import { connect } from "node:net";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import type { RunningService } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import { runService } from "../../kit/server.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { authService } from "./service.ts";
import { type AuthClient, authClient, failureOf, reasonOf, retryAfterMs } from "./testing.ts";

const authEnv = {
  AUTH_RATE_LIMIT_PER_IP: "6",
  AUTH_RATE_LIMIT_PER_EMAIL: "8",
  AUTH_RATE_LIMIT_PER_TOKEN: "4",
  AUTH_RATE_LIMIT_RESETS_PER_EMAIL: "2",
  TRUSTED_PROXY_HOPS: "1",
};

const password = "violet harbor tunes 42";
const unique = (name: string) => `${name}.${Math.random().toString(36).slice(2, 8)}@shop.test`;

let mesh: TestMesh;
let replicaB: RunningService;
let auth: AuthClient;

/** A client whose connections come from `local` (any 127.0.0.0/8 address is loopback). */
function clientFrom(local: string, baseUrl = mesh.url("auth")): AuthClient {
  const createConnection = (authority: URL) => connect({ host: authority.hostname, port: Number(authority.port), localAddress: local });
  return createClient(AuthService, createGrpcTransport({ baseUrl, nodeOptions: { createConnection } }));
}

const xff = (value: string) => ({ headers: { "x-forwarded-for": value } });

async function expectLimited(call: Promise<unknown>) {
  const limited = await failureOf(call);
  expect([limited.code, reasonOf(limited)]).toEqual([Code.ResourceExhausted, "RATE_LIMITED"]);
  expect(retryAfterMs(limited)).toBeGreaterThan(0);
}

const sql = <T extends object>(query: string, params: unknown[] = []) => sqlOf(mesh.services.auth!.ctx.orm.em.fork()).all<T>(query, params);

beforeAll(async () => {
  mesh = await startMesh([authService], authEnv);
  auth = authClient(mesh.url("auth"));
  // A second replica on the same database, as a deployment with two instances.
  replicaB = await runService(authService, { ...mesh.env, PORT: "0", DATABASE_URL: mesh.services.auth!.ctx.config.databaseUrl });
});

afterAll(async () => {
  await replicaB?.stop();
  await mesh?.stop();
});

describe("rate limits", () => {
  it("limits attempts per email and per client IP with RESOURCE_EXHAUSTED and a RetryInfo", async () => {
    const target = unique("target");
    // Each guess from another address: only the per-email limit applies.
    for (let i = 0; i < 8; i++) {
      expect(reasonOf(await failureOf(auth.login({ email: target, password: `guess number ${i}` }, xff(`203.0.113.${i + 1}`))))).toBe("INVALID_CREDENTIALS");
    }
    await expectLimited(auth.login({ email: target, password: "one guess too many" }, xff("203.0.113.9")));

    const ip = xff("203.0.113.77");
    for (let i = 0; i < 6; i++) await auth.requestPasswordReset({ email: unique("reset") }, ip);
    await expectLimited(auth.requestPasswordReset({ email: unique("reset") }, ip));
    // Another client is not affected.
    await auth.requestPasswordReset({ email: unique("reset") }, xff("203.0.113.78"));
  });

  it("limits by the address the trusted proxy appended, whatever the client forged before it", async () => {
    // As through an edge that appends: "<whatever the client sent>, <the address the edge saw>".
    for (let i = 0; i < 6; i++) await auth.requestPasswordReset({ email: unique("forged") }, xff(`10.9.8.${i}, 198.51.100.7`));
    await expectLimited(auth.requestPasswordReset({ email: unique("forged") }, xff("10.9.8.200, 198.51.100.7")));
    // The audit log records the same address.
    const email = unique("audited");
    await failureOf(auth.login({ email, password }, xff("10.9.8.99, 198.51.100.8")));
    const [row] = await sql<{ ip_address: string }>("select ip_address from security_audit_logs where metadata->>'email' = $1", [email]);
    expect(row?.ip_address).toBe("198.51.100.8");
  });

  it("limits by the TCP peer when X-Forwarded-For is not an address, or absent", async () => {
    const forged = clientFrom("127.0.0.21");
    for (let i = 0; i < 6; i++) await forged.requestPasswordReset({ email: unique("unknown") }, xff("unknown"));
    await expectLimited(forged.requestPasswordReset({ email: unique("unknown") }, xff("unknown")));

    // RefreshToken straight from a peer inside the mesh, no X-Forwarded-For: limited per peer address.
    const direct = clientFrom("127.0.0.22");
    for (let i = 0; i < 6; i++) {
      expect(reasonOf(await failureOf(direct.refreshToken({ refreshToken: `not-a-token-${i}-${"x".repeat(32)}` })))).toBe("INVALID_REFRESH_TOKEN");
    }
    await expectLimited(direct.refreshToken({ refreshToken: `not-a-token-last-${"x".repeat(32)}` }));
  });

  it("limits every public RPC: verification, reset and refresh tokens per token, reset emails per address", async () => {
    const email = unique("limits");
    const registered = await auth.register({ email, password, firstName: "Ada", lastName: "Lovelace" }, xff("192.0.2.10"));
    const refreshToken = registered.tokens!.refreshToken;
    // One token tried from many addresses: per token, 4 per window.
    await auth.refreshToken({ refreshToken }, xff("192.0.2.11"));
    for (let i = 0; i < 3; i++) expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken }, xff(`192.0.2.${12 + i}`))))).toMatch(/REFRESH_TOKEN/);
    await expectLimited(auth.refreshToken({ refreshToken }, xff("192.0.2.20")));
    const resetToken = "r".repeat(43);
    for (let i = 0; i < 4; i++) expect(reasonOf(await failureOf(auth.resetPassword({ token: resetToken, newPassword: password }, xff(`192.0.2.${30 + i}`))))).toBe("TOKEN_INVALID");
    await expectLimited(auth.resetPassword({ token: resetToken, newPassword: password }, xff("192.0.2.40")));
    const verifyToken = "v".repeat(43);
    for (let i = 0; i < 4; i++) expect(reasonOf(await failureOf(auth.verifyEmail({ token: verifyToken }, xff(`192.0.2.${50 + i}`))))).toBe("TOKEN_INVALID");
    await expectLimited(auth.verifyEmail({ token: verifyToken }, xff("192.0.2.60")));
    const logoutToken = "l".repeat(43);
    for (let i = 0; i < 4; i++) await auth.logout({ refreshToken: logoutToken }, xff(`192.0.2.${70 + i}`));
    await expectLimited(auth.logout({ refreshToken: logoutToken }, xff("192.0.2.80")));
    const registerFrom = xff("192.0.2.90");
    for (let i = 0; i < 6; i++) await auth.register({ email: unique("many"), password }, registerFrom);
    await expectLimited(auth.register({ email: unique("many"), password }, registerFrom));

    // Reset emails: over the per-address limit the answer is the same, but no email goes out.
    for (let i = 0; i < 4; i++) await auth.requestPasswordReset({ email }, xff(`192.0.2.${100 + i}`));
    const [count] = await sql<{ n: string }>("select count(*) as n from password_reset_tokens where user_id = $1", [registered.user!.id]);
    expect(Number(count!.n)).toBe(2);
  });

  it("shares one limit between two replicas on one database", async () => {
    const replicas = [auth, authClient(replicaB.url)];
    const from = xff("192.0.2.200");
    for (let i = 0; i < 6; i++) await replicas[i % 2]!.requestPasswordReset({ email: unique("replica") }, from);
    await expectLimited(replicas[0]!.requestPasswordReset({ email: unique("replica") }, from));
    await expectLimited(replicas[1]!.requestPasswordReset({ email: unique("replica") }, from));
  });
});
