/**
 * The Auth service against a real PostgreSQL, a real nats-server and real
 * gRPC clients: sign-up to sign-in with the emailed token, token claims and
 * verification by the kit, refresh rotation and reuse detection, lockout,
 * password reset and change, admin RPCs, the first-admin command, service
 * credentials and validation. Short lockout and TTL settings keep it fast;
 * rate limits are tested in rate-limit.test.ts.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeJwt, decodeProtectedHeader, importPKCS8, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SecurityAction, TokenKind } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import {
  PasswordChangeMethod,
  RoleChange,
  UserDeletedSchema,
  UserEmailVerificationRequestedSchema,
  UserEmailVerifiedSchema,
  UserLoggedInSchema,
  UserPasswordChangedSchema,
  UserPasswordResetRequestedSchema,
  UserReactivatedSchema,
  UserRegisteredSchema,
  UserRoleChangedSchema,
} from "../../gen/ecommerce/auth/v1/events_pb.js";
import { developmentServiceSecret } from "../../kit/config.ts";
import { openSealedField, sealedFieldBinding } from "../../kit/events/sealed.ts";
import { openText } from "../../kit/sealing.ts";
import { sqlOf } from "../../kit/sql.ts";
import { captureQueries, installSqlCounter } from "../../scripts/bench/meter.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { loadAuthConfig } from "./config.ts";
import { authService } from "./service.ts";
import { type AuthClient, authClient, bearer, EventLog, failureOf, fieldOf, msOf, reasonOf, retryAfterMs, verifierFor } from "./testing.ts";

const run = promisify(execFile);

// Auth reads its own settings from the environment it is started with.
const authEnv = {
  AUTH_MAX_FAILED_LOGINS: "3",
  AUTH_LOCKOUT_MS: "1500",
  AUTH_PASSWORD_RESET_TTL_MS: "2500",
  AUTH_VERIFICATION_RESEND_INTERVAL_MS: "1000",
  // Every call here comes from 127.0.0.1; rate limits have their own file (rate-limit.test.ts).
  AUTH_RATE_LIMIT_PER_IP: "100000",
  AUTH_RATE_LIMIT_PER_EMAIL: "8",
};

const password = "violet harbor tunes 42";
const adminEmail = "first.admin@shop.test";
const adminPassword = "amber lantern quietly 7";

let mesh: TestMesh;
let auth: AuthClient;
let events: EventLog;
let adminToken: string;
let cliOutput: string;

const unique = (name: string) => `${name}.${Math.random().toString(36).slice(2, 8)}@shop.test`;

async function register(email = unique("user"), extra: Record<string, string> = {}) {
  const res = await auth.register({ email, password, firstName: "Ada", lastName: "Lovelace", preferredLanguage: "en-GB" }, { headers: extra });
  return { email, userId: res.user!.id, res, tokens: res.tokens! };
}

const login = (email: string, pw = password, headers: Record<string, string> = {}) => auth.login({ email, password: pw }, { headers });

async function createAdminCli(...args: string[]) {
  return run(process.execPath, ["services/auth/create-admin.ts", ...args], {
    env: { ...process.env, ...mesh.env, ...authEnv, DATABASE_URL: mesh.services.auth!.ctx.config.databaseUrl, LOG_LEVEL: "silent" },
  });
}

async function auditLogs(userId: string, actions: SecurityAction[] = []) {
  return (await auth.listSecurityAuditLogs({ userId, actions, pageSize: 100 }, bearer(adminToken))).logs;
}

beforeAll(async () => {
  mesh = await startMesh([authService], authEnv);
  auth = authClient(mesh.url("auth"));
  events = new EventLog();
  await events.start(mesh.nats.url);
  cliOutput = (await createAdminCli("--email", adminEmail.toUpperCase(), "--password", adminPassword)).stdout;
  adminToken = (await login(adminEmail, adminPassword)).tokens!.accessToken;
});

afterAll(async () => {
  await events?.stop();
  await mesh?.stop();
});

/** The clear token of a verification or reset event, opened with Notification's event key as Notification would. */
const tokenOf = (e: { $typeName: string; userId: string; sealedToken: Uint8Array }) =>
  openSealedField("notification", e.sealedToken, sealedFieldBinding(e.$typeName, "sealed_token", e.userId));

describe("sign-up and sign-in", () => {
  it("registers, verifies the email with the token from the event, signs in and reads GetMe", async () => {
    const email = unique("Alice");
    const { userId, res } = await register(email);
    expect(res.user).toMatchObject({ email: email.toLowerCase(), emailVerified: false, isActive: true, roles: ["customer"], failedLoginAttempts: 0 });
    expect(res.tokens?.tokenType).toBe("Bearer");

    const registered = await events.find(UserRegisteredSchema, (e) => e.userId === userId);
    expect(registered).toMatchObject({ email: email.toLowerCase(), firstName: "Ada", lastName: "Lovelace", preferredLanguage: "en-GB", roles: ["customer"] });
    const requested = await events.find(UserEmailVerificationRequestedSchema, (e) => e.userId === userId);
    expect(tokenOf(requested)).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // Sealed for Notification: another service's event key does not open it, and Auth's outbox holds no clear token.
    expect(() => openSealedField("user", requested.sealedToken, sealedFieldBinding(requested.$typeName, "sealed_token", userId))).toThrow();
    const [row] = await sqlOf(mesh.services.auth!.ctx.orm.em.fork()).all<{ payload: Buffer }>("select payload from outbox_events where id = $1", [requested.eventId]);
    expect(row?.payload.length).toBeGreaterThan(0);
    expect(row?.payload.includes(Buffer.from(tokenOf(requested)))).toBe(false);
    expect(msOf(requested.expiresAt)! - Date.now()).toBeGreaterThan(23 * 3600_000);

    const verified = await auth.verifyEmail({ token: tokenOf(requested) });
    expect(verified).toMatchObject({ userId, email: email.toLowerCase() });
    // A second click on the same link succeeds too.
    await expect(auth.verifyEmail({ token: tokenOf(requested) })).resolves.toMatchObject({ userId });
    await events.find(UserEmailVerifiedSchema, (e) => e.userId === userId);
    expect(events.all(UserEmailVerifiedSchema).filter((e) => e.userId === userId)).toHaveLength(1);

    const signedIn = await login(email.toUpperCase());
    expect(signedIn.user).toMatchObject({ id: userId, emailVerified: true });
    expect(msOf(signedIn.user!.lastLoginAt)).toBeGreaterThan(Date.now() - 10_000);
    await events.find(UserLoggedInSchema, (e) => e.userId === userId);
    const me = await auth.getMe({}, bearer(signedIn.tokens!.accessToken));
    expect(me.user).toMatchObject({ id: userId, email: email.toLowerCase(), emailVerified: true, roles: ["customer"] });
    expect(decodeJwt(signedIn.tokens!.accessToken).email_verified).toBe(true);

    // Every event left the outbox and is marked published.
    const orm = mesh.services.auth!.ctx.orm;
    await eventually(async () => {
      const [row] = await sqlOf(orm.em.fork()).all<{ n: number }>("select count(*)::int as n from outbox_events where published_at is null");
      return row?.n === 0 ? true : undefined;
    }, 10_000, "outbox drained");
  });

  it("issues ES256 access tokens with the documented claims that kit's TokenVerifier accepts from GetJwks", async () => {
    const { userId, email, tokens } = await register();
    const header = decodeProtectedHeader(tokens.accessToken);
    expect(header).toMatchObject({ alg: "ES256", typ: "JWT" });
    const claims = decodeJwt(tokens.accessToken);
    expect(claims).toMatchObject({ iss: "ecommerce-auth", aud: "ecommerce", sub: userId, email, roles: ["customer"], email_verified: false });
    expect(typeof claims.jti).toBe("string");
    expect(typeof claims.sid).toBe("string");
    expect(claims.exp! - claims.iat!).toBe(900);
    expect(msOf(tokens.accessTokenExpiresAt)).toBe(claims.exp! * 1000);
    expect(msOf(tokens.refreshTokenExpiresAt)! - Date.now()).toBeGreaterThan(29 * 24 * 3600_000);

    const jwks = await auth.getJwks({});
    expect(jwks.keys.map((k) => k.kid)).toContain(header.kid);
    expect(jwks.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig", n: "", e: "" });
    const principal = await verifierFor(auth).verify(tokens.accessToken);
    expect(principal).toMatchObject({ kind: "user", userId, email, roles: ["customer"] });

    // Over Connect GET with JSON the body is a standard JWKS document.
    const get = await fetch(`${mesh.url("auth")}/ecommerce.auth.v1.AuthService/GetJwks?connect=v1&encoding=json&message=%7B%7D`);
    const document = (await get.json()) as { keys: Record<string, string>[] };
    expect(document.keys[0]).toMatchObject({ kid: jwks.keys[0]!.kid, kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
    expect(Object.keys(document.keys[0]!).sort()).toEqual(["alg", "crv", "kid", "kty", "use", "x", "y"]);
  });

  it("refuses a tampered token, a token of another issuer's key, and a customer token on admin RPCs", async () => {
    const { tokens } = await register();
    const [head, body, signature] = tokens.accessToken.split(".");
    const claims = JSON.parse(Buffer.from(body!, "base64url").toString()) as Record<string, unknown>;
    const forgedBody = Buffer.from(JSON.stringify({ ...claims, roles: ["customer", "admin"] })).toString("base64url");
    const tampered = await failureOf(auth.listUsers({}, bearer(`${head}.${forgedBody}.${signature}`)));
    expect(tampered.code).toBe(Code.Unauthenticated);
    const foreign = await failureOf(auth.getMe({}, bearer(await new TestIssuer().user(crypto.randomUUID()))));
    expect(foreign.code).toBe(Code.Unauthenticated);
    expect((await failureOf(auth.getMe({}))).code).toBe(Code.Unauthenticated);
    const denied = await failureOf(auth.listUsers({}, bearer(tokens.accessToken)));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect((await failureOf(auth.unlockUser({ userId: crypto.randomUUID() }, bearer(tokens.accessToken)))).code).toBe(Code.PermissionDenied);
  });

  it("rejects bad input with INVALID_ARGUMENT naming the field, weak passwords and taken emails", async () => {
    const badEmail = await failureOf(auth.register({ email: "not-an-email", password }));
    expect([badEmail.code, fieldOf(badEmail)]).toEqual([Code.InvalidArgument, "email"]);
    const missing = await failureOf(auth.register({ email: "", password }));
    expect([missing.code, fieldOf(missing)]).toEqual([Code.InvalidArgument, "email"]);
    const short = await failureOf(auth.register({ email: unique("short"), password: "too short" }));
    expect([short.code, fieldOf(short)]).toEqual([Code.InvalidArgument, "password"]);
    const noPassword = await failureOf(auth.login({ email: unique("nopw"), password: "" }));
    expect([noPassword.code, fieldOf(noPassword)]).toEqual([Code.InvalidArgument, "password"]);
    const noToken = await failureOf(auth.verifyEmail({ token: "" }));
    expect([noToken.code, fieldOf(noToken)]).toEqual([Code.InvalidArgument, "token"]);

    for (const weak of ["password123456", "123456789012", "aaaaaaaaaaaa", "correct horse battery staple", "xx-grace.hopper-2024"]) {
      const e = await failureOf(auth.register({ email: "grace.hopper@shop.test", password: weak }));
      expect([e.code, reasonOf(e), fieldOf(e)], weak).toEqual([Code.InvalidArgument, "WEAK_PASSWORD", "password"]);
    }
    const { email } = await register();
    const taken = await failureOf(auth.register({ email: email.toUpperCase(), password }));
    expect([taken.code, reasonOf(taken)]).toEqual([Code.AlreadyExists, "EMAIL_TAKEN"]);
  });

  it("sends a new verification token on ResendVerification, after a pause, until the address is verified", async () => {
    const { userId, tokens } = await register();
    const tooSoon = await failureOf(auth.resendVerification({}, bearer(tokens.accessToken)));
    const failedAt = Date.now();
    const first = await events.find(UserEmailVerificationRequestedSchema, (e) => e.userId === userId);
    expect([tooSoon.code, reasonOf(tooSoon)]).toEqual([Code.ResourceExhausted, "RATE_LIMITED"]);
    const wait = retryAfterMs(tooSoon)!;
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(1000);
    await new Promise((r) => setTimeout(r, Math.max(0, wait - (Date.now() - failedAt)) + 50));
    const resent = await auth.resendVerification({}, bearer(tokens.accessToken));
    const second = await events.find(UserEmailVerificationRequestedSchema, (e) => e.userId === userId && tokenOf(e) !== tokenOf(first));
    expect(msOf(second.expiresAt)).toBe(msOf(resent.expiresAt));
    const superseded = await failureOf(auth.verifyEmail({ token: tokenOf(first) }));
    expect([superseded.code, reasonOf(superseded)]).toEqual([Code.FailedPrecondition, "TOKEN_INVALID"]);
    const unknown = await failureOf(auth.verifyEmail({ token: "bm90LWEtcmVhbC10b2tlbg" }));
    expect(reasonOf(unknown)).toBe("TOKEN_INVALID");
    await auth.verifyEmail({ token: tokenOf(second) });
    const done = await failureOf(auth.resendVerification({}, bearer(tokens.accessToken)));
    expect([done.code, reasonOf(done)]).toEqual([Code.FailedPrecondition, "EMAIL_ALREADY_VERIFIED"]);
  });
});

describe("hot reads", () => {
  it("answers GetMe with one statement, roles included", async () => {
    installSqlCounter();
    const { userId, tokens } = await register();
    // The background's statements left out: the outbox relay's passes, health pings.
    const sent = (await captureQueries(() => auth.getMe({}, bearer(tokens.accessToken)))).map((q) => q.text).filter((t) => !/outbox/.test(t) && t.trim() !== "select 1");
    expect(sent).toHaveLength(1);
    expect((await auth.getMe({}, bearer(tokens.accessToken))).user).toMatchObject({ id: userId, roles: ["customer"], failedLoginAttempts: 0, isActive: true });
  });
});

describe("sessions", () => {
  it("rotates refresh tokens, and reuse of a rotated one revokes the whole session", async () => {
    const { email } = await register();
    const session = (await login(email)).tokens!;
    const other = (await login(email)).tokens!;
    const second = (await auth.refreshToken({ refreshToken: session.refreshToken })).tokens!;
    expect(second.refreshToken).not.toBe(session.refreshToken);
    expect(decodeJwt(second.accessToken).sid).toBe(decodeJwt(session.accessToken).sid);
    const third = (await auth.refreshToken({ refreshToken: second.refreshToken })).tokens!;

    const reused = await failureOf(auth.refreshToken({ refreshToken: session.refreshToken }));
    expect([reused.code, reasonOf(reused)]).toEqual([Code.Unauthenticated, "REFRESH_TOKEN_REUSED"]);
    // The newest token of that session is revoked too; the other session lives on.
    const newest = await failureOf(auth.refreshToken({ refreshToken: third.refreshToken }));
    expect([newest.code, reasonOf(newest)]).toEqual([Code.Unauthenticated, "INVALID_REFRESH_TOKEN"]);
    await expect(auth.refreshToken({ refreshToken: other.refreshToken })).resolves.toBeDefined();
    const unknown = await failureOf(auth.refreshToken({ refreshToken: "no-such-token" }));
    expect(reasonOf(unknown)).toBe("INVALID_REFRESH_TOKEN");

    const userId = decodeJwt(session.accessToken).sub!;
    const logs = await auditLogs(userId, [SecurityAction.REFRESH_TOKEN_REUSE_DETECTED, SecurityAction.TOKEN_REFRESHED]);
    expect(logs.filter((l) => l.action === SecurityAction.REFRESH_TOKEN_REUSE_DETECTED)).toHaveLength(1);
    expect(logs.filter((l) => l.action === SecurityAction.TOKEN_REFRESHED)).toHaveLength(3);
  });

  it("ends one session or all on Logout, idempotently", async () => {
    const { email } = await register();
    const a = (await login(email)).tokens!;
    const b = (await login(email)).tokens!;
    const c = (await login(email)).tokens!;
    await auth.logout({ refreshToken: a.refreshToken });
    await auth.logout({ refreshToken: a.refreshToken });
    await auth.logout({ refreshToken: "never-issued" });
    expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken: a.refreshToken })))).toBe("INVALID_REFRESH_TOKEN");
    const b2 = (await auth.refreshToken({ refreshToken: b.refreshToken })).tokens!;
    await auth.logout({ refreshToken: b2.refreshToken, allSessions: true });
    expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken: b2.refreshToken })))).toBe("INVALID_REFRESH_TOKEN");
    expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken: c.refreshToken })))).toBe("INVALID_REFRESH_TOKEN");
  });

  it("lets one of several concurrent refreshes with one token win; the others are reuse, as documented", async () => {
    const { userId, tokens } = await register(unique("racer"));
    const outcomes = await Promise.allSettled(Array.from({ length: 6 }, () => auth.refreshToken({ refreshToken: tokens.refreshToken })));
    const won = outcomes.filter((o) => o.status === "fulfilled");
    expect(won).toHaveLength(1);
    const lost = outcomes.flatMap((o) => (o.status === "rejected" ? [ConnectError.from(o.reason)] : []));
    expect(lost.map((e) => [e.code, reasonOf(e)])).toEqual(Array.from({ length: 5 }, () => [Code.Unauthenticated, "REFRESH_TOKEN_REUSED"]));
    // Reuse revokes the whole session, the winner's new token included: the client signs in again.
    const winner = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<AuthClient["refreshToken"]>>>).value.tokens!;
    expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken: winner.refreshToken })))).toBe("INVALID_REFRESH_TOKEN");
    expect(await auditLogs(userId, [SecurityAction.REFRESH_TOKEN_REUSE_DETECTED])).not.toHaveLength(0);
  });

  it("locks the account after repeated failures with a RetryInfo, audits it, and lets the user in after the lockout", async () => {
    const client = { "x-forwarded-for": "10.0.0.1, 198.51.100.23", "user-agent": "lockout-test/1.0" };
    const { email, userId } = await register(unique("bob"));
    for (let i = 0; i < 2; i++) {
      const wrong = await failureOf(login(email, "not the password at all", client));
      expect([wrong.code, reasonOf(wrong)]).toEqual([Code.Unauthenticated, "INVALID_CREDENTIALS"]);
    }
    const locking = await failureOf(login(email, "not the password at all", client));
    expect([locking.code, reasonOf(locking)]).toEqual([Code.FailedPrecondition, "ACCOUNT_LOCKED"]);
    // While locked, even the right password is refused, and the wait is announced.
    const locked = await failureOf(login(email, password, client));
    expect([locked.code, reasonOf(locked)]).toEqual([Code.FailedPrecondition, "ACCOUNT_LOCKED"]);
    expect(retryAfterMs(locked)).toBeGreaterThan(0);
    expect(retryAfterMs(locked)).toBeLessThanOrEqual(1500);
    const seen = (await auth.getUser({ userId }, bearer(adminToken))).user!;
    expect(seen.failedLoginAttempts).toBe(3);
    expect(msOf(seen.lockedUntil)).toBeGreaterThan(Date.now());
    expect((await auth.listUsers({ lockedOnly: true, emailContains: email }, bearer(adminToken))).users.map((u) => u.id)).toEqual([userId]);

    const logs = await auditLogs(userId);
    const failed = logs.filter((l) => l.action === SecurityAction.LOGIN_FAILED);
    expect(failed).toHaveLength(4);
    expect(failed[0]).toMatchObject({ userId, ipAddress: "198.51.100.23", userAgent: "lockout-test/1.0" });
    expect(failed.map((l) => l.metadata.reason).sort()).toEqual(["account_locked", "invalid_password", "invalid_password", "invalid_password"]);
    const lockRow = logs.find((l) => l.action === SecurityAction.ACCOUNT_LOCKED)!;
    expect(Date.parse(lockRow.metadata.locked_until!)).toBe(msOf(seen.lockedUntil));
    const byIp = await auth.listSecurityAuditLogs({ ipAddress: "198.51.100.23", actions: [SecurityAction.ACCOUNT_LOCKED] }, bearer(adminToken));
    expect(byIp.logs.map((l) => l.id)).toEqual([lockRow.id]);

    await new Promise((r) => setTimeout(r, retryAfterMs(locked)! + 100));
    const back = await login(email, password, client);
    expect(back.user?.id).toBe(userId);
    expect((await auth.getUser({ userId }, bearer(adminToken))).user).toMatchObject({ failedLoginAttempts: 0 });
    expect((await auditLogs(userId, [SecurityAction.LOGIN_SUCCEEDED]))[0]).toMatchObject({ ipAddress: "198.51.100.23" });

    // An unknown email fails the same way, and is audited with the attempted address.
    const stranger = unique("nobody");
    const unknown = await failureOf(login(stranger, password));
    expect([unknown.code, reasonOf(unknown)]).toEqual([Code.Unauthenticated, "INVALID_CREDENTIALS"]);
    const recent = await auth.listSecurityAuditLogs({ actions: [SecurityAction.LOGIN_FAILED], pageSize: 20 }, bearer(adminToken));
    expect(recent.logs.find((l) => l.metadata.email === stranger)).toMatchObject({ userId: "", metadata: { reason: "unknown_email" } });
  });

  it("lets an admin lift a lockout at once", async () => {
    const { email, userId } = await register();
    for (let i = 0; i < 3; i++) await failureOf(login(email, "still not the password"));
    expect(reasonOf(await failureOf(login(email)))).toBe("ACCOUNT_LOCKED");
    const unlocked = await auth.unlockUser({ userId }, bearer(adminToken));
    expect(unlocked.user?.failedLoginAttempts).toBe(0);
    expect(unlocked.user?.lockedUntil).toBeUndefined();
    await expect(login(email)).resolves.toBeDefined();
    expect(await auditLogs(userId, [SecurityAction.ACCOUNT_UNLOCKED])).toHaveLength(1);
  });
});

describe("passwords", () => {
  it("resets a password with a single-use token that supersedes earlier ones, expires, and signs every session out", async () => {
    const { email, userId, tokens } = await register();
    await auth.requestPasswordReset({ email: unique("nobody") }); // no enumeration: the same empty answer
    await auth.requestPasswordReset({ email: email.toUpperCase() });
    const first = await events.find(UserPasswordResetRequestedSchema, (e) => e.userId === userId);
    await auth.requestPasswordReset({ email });
    const second = await events.find(UserPasswordResetRequestedSchema, (e) => e.userId === userId && tokenOf(e) !== tokenOf(first));

    const superseded = await failureOf(auth.resetPassword({ token: tokenOf(first), newPassword: "granite meadow sparrow 9" }));
    expect([superseded.code, reasonOf(superseded)]).toEqual([Code.FailedPrecondition, "TOKEN_INVALID"]);
    const weak = await failureOf(auth.resetPassword({ token: tokenOf(second), newPassword: "password123456" }));
    expect([weak.code, reasonOf(weak), fieldOf(weak)]).toEqual([Code.InvalidArgument, "WEAK_PASSWORD", "new_password"]);
    await auth.resetPassword({ token: tokenOf(second), newPassword: "granite meadow sparrow 9" });
    const reused = await failureOf(auth.resetPassword({ token: tokenOf(second), newPassword: "another fine passphrase" }));
    expect(reasonOf(reused)).toBe("TOKEN_INVALID");

    expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken: tokens.refreshToken })))).toBe("INVALID_REFRESH_TOKEN");
    expect(reasonOf(await failureOf(login(email)))).toBe("INVALID_CREDENTIALS");
    const signedIn = await login(email, "granite meadow sparrow 9");
    expect(signedIn.user?.emailVerified).toBe(true); // the mailbox is proven
    const changed = await events.find(UserPasswordChangedSchema, (e) => e.userId === userId);
    expect(changed.method).toBe(PasswordChangeMethod.RESET);
    await events.find(UserEmailVerifiedSchema, (e) => e.userId === userId);

    await auth.requestPasswordReset({ email });
    const late = await events.find(UserPasswordResetRequestedSchema, (e) => e.userId === userId && ![tokenOf(first), tokenOf(second)].includes(tokenOf(e)));
    await new Promise((r) => setTimeout(r, Math.max(0, msOf(late.expiresAt)! - Date.now()) + 50));
    const expired = await failureOf(auth.resetPassword({ token: tokenOf(late), newPassword: "copper willow dances 5" }));
    expect([expired.code, reasonOf(expired)]).toEqual([Code.FailedPrecondition, "TOKEN_EXPIRED"]);
    expect(await auditLogs(userId, [SecurityAction.PASSWORD_RESET_REQUESTED])).toHaveLength(3);
    expect(await auditLogs(userId, [SecurityAction.PASSWORD_RESET])).toHaveLength(1);
  });

  it("changes the password, keeps the caller's session and ends the others", async () => {
    const { email, userId } = await register();
    const mine = (await login(email)).tokens!;
    const elsewhere = (await login(email)).tokens!;
    const wrong = await failureOf(auth.changePassword({ currentPassword: "not my password", newPassword: "saffron tidal beacon 3" }, bearer(mine.accessToken)));
    expect([wrong.code, reasonOf(wrong), fieldOf(wrong)]).toEqual([Code.InvalidArgument, "INVALID_CURRENT_PASSWORD", "current_password"]);
    const same = await failureOf(auth.changePassword({ currentPassword: password, newPassword: password }, bearer(mine.accessToken)));
    expect(same.code).toBe(Code.InvalidArgument);
    await auth.changePassword({ currentPassword: password, newPassword: "saffron tidal beacon 3" }, bearer(mine.accessToken));
    await expect(auth.refreshToken({ refreshToken: mine.refreshToken })).resolves.toBeDefined();
    expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken: elsewhere.refreshToken })))).toBe("INVALID_REFRESH_TOKEN");
    await expect(login(email, "saffron tidal beacon 3")).resolves.toBeDefined();
    expect((await events.find(UserPasswordChangedSchema, (e) => e.userId === userId)).method).toBe(PasswordChangeMethod.CHANGED);
    expect(await auditLogs(userId, [SecurityAction.PASSWORD_CHANGED])).toHaveLength(1);
  });
});

describe("administration", () => {
  it("creates the first admin with the create-admin command, who can list users and assign roles", async () => {
    expect(cliOutput).toMatch(/Created admin account first\.admin@shop\.test/);
    const admin = await login(adminEmail, adminPassword);
    expect(admin.user).toMatchObject({ email: adminEmail, roles: ["admin", "customer"], emailVerified: true });
    await events.find(UserRegisteredSchema, (e) => e.email === adminEmail && e.roles.includes("admin"));

    const again = await createAdminCli("--email", adminEmail);
    expect(again.stdout).toMatch(/already an admin; nothing changed/);
    const { email: promotedEmail, userId: promotedId } = await register();
    const promoted = await createAdminCli("--email", promotedEmail);
    expect(promoted.stdout).toMatch(/Promoted .* to admin/);
    expect((await auth.getUser({ userId: promotedId }, bearer(adminToken))).user?.roles).toEqual(["admin", "customer"]);
    const usage = await createAdminCli("--email", unique("nopassword")).catch((e: { code: number; stderr: string }) => e);
    expect(usage).toMatchObject({ code: 1, stderr: expect.stringMatching(/give --password/) });

    const roles = await auth.listRoles({}, bearer(adminToken));
    expect(roles.roles.map((r) => r.name)).toEqual(["admin", "customer"]);

    const prefix = `page${Math.random().toString(36).slice(2, 6)}`;
    const ids: string[] = [];
    for (const n of [1, 2, 3]) ids.push((await register(`${prefix}.${n}@shop.test`)).userId);
    const page1 = await auth.listUsers({ emailContains: prefix.toUpperCase(), pageSize: 2 }, bearer(adminToken));
    expect(page1.users.map((u) => u.id)).toEqual([ids[2], ids[1]]);
    const page2 = await auth.listUsers({ emailContains: prefix, pageSize: 2, pageToken: page1.nextPageToken }, bearer(adminToken));
    expect(page2.users.map((u) => u.id)).toEqual([ids[0]]);
    expect(page2.nextPageToken).toBe("");
    const byEmail = await auth.listUsers({ emailContains: prefix, orderBy: "email asc" }, bearer(adminToken));
    expect(byEmail.users.map((u) => u.email)).toEqual([1, 2, 3].map((n) => `${prefix}.${n}@shop.test`));
    const otherFilters = await failureOf(auth.listUsers({ emailContains: "x", pageToken: page1.nextPageToken }, bearer(adminToken)));
    expect([otherFilters.code, fieldOf(otherFilters)]).toEqual([Code.InvalidArgument, "page_token"]);
    const admins = await auth.listUsers({ role: "admin", pageSize: 100 }, bearer(adminToken));
    expect(admins.users.every((u) => u.roles.includes("admin"))).toBe(true);
    expect(admins.users.map((u) => u.id)).toContain(promotedId);

    const target = ids[0]!;
    const assigned = await auth.assignRole({ userId: target, role: "admin" }, bearer(adminToken));
    expect(assigned.user?.roles).toEqual(["admin", "customer"]);
    await auth.assignRole({ userId: target, role: "admin" }, bearer(adminToken)); // idempotent, no second event
    const changed = await events.find(UserRoleChangedSchema, (e) => e.userId === target);
    expect(changed).toMatchObject({ role: "admin", change: RoleChange.ASSIGNED, roles: ["admin", "customer"] });
    const refreshed = await login(`${prefix}.1@shop.test`);
    expect(decodeJwt(refreshed.tokens!.accessToken).roles).toEqual(["admin", "customer"]);
    await expect(auth.listRoles({}, bearer(refreshed.tokens!.accessToken))).resolves.toBeDefined();
    // Keyset paging by last sign-in: never signed in sorts last (then newest id first).
    const byLogin: string[] = [];
    let pageToken = "";
    do {
      const page = await auth.listUsers({ emailContains: prefix, orderBy: "last_login_at desc", pageSize: 1, pageToken }, bearer(adminToken));
      byLogin.push(...page.users.map((u) => u.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(byLogin).toEqual([ids[0], ids[2], ids[1]]);
    await auth.revokeRole({ userId: target, role: "admin" }, bearer(adminToken));
    expect(events.all(UserRoleChangedSchema).filter((e) => e.userId === target && e.change === RoleChange.ASSIGNED)).toHaveLength(1);

    const adminId = decodeJwt(adminToken).sub!;
    const own = await failureOf(auth.revokeRole({ userId: adminId, role: "admin" }, bearer(adminToken)));
    expect([own.code, reasonOf(own)]).toEqual([Code.FailedPrecondition, "CANNOT_REVOKE_OWN_ADMIN"]);
    const noRole = await failureOf(auth.assignRole({ userId: target, role: "wizard" }, bearer(adminToken)));
    expect([noRole.code, reasonOf(noRole)]).toEqual([Code.NotFound, "ROLE_NOT_FOUND"]);
    const noUser = await failureOf(auth.assignRole({ userId: crypto.randomUUID(), role: "admin" }, bearer(adminToken)));
    expect([noUser.code, reasonOf(noUser)]).toEqual([Code.NotFound, "USER_NOT_FOUND"]);
    expect((await failureOf(auth.getUser({ userId: crypto.randomUUID() }, bearer(adminToken)))).code).toBe(Code.NotFound);
  });

  it("deactivates and reactivates accounts, revoking sessions, and signs users out everywhere", async () => {
    const { email, userId, tokens } = await register();
    const disabled = await auth.setUserActive({ userId, active: false, reason: "chargeback fraud" }, bearer(adminToken));
    expect(disabled.user?.isActive).toBe(false);
    const deleted = await events.find(UserDeletedSchema, (e) => e.userId === userId);
    expect(deleted).toMatchObject({ email, reason: "chargeback fraud", deactivatedBy: decodeJwt(adminToken).sub });
    expect(reasonOf(await failureOf(auth.refreshToken({ refreshToken: tokens.refreshToken })))).toBe("INVALID_REFRESH_TOKEN");
    const refused = await failureOf(login(email));
    expect([refused.code, reasonOf(refused)]).toEqual([Code.FailedPrecondition, "ACCOUNT_DISABLED"]);
    // A wrong password does not disclose the state.
    expect(reasonOf(await failureOf(login(email, "wrong password here")))).toBe("INVALID_CREDENTIALS");
    const self = await failureOf(auth.setUserActive({ userId: decodeJwt(adminToken).sub!, active: false, reason: "oops" }, bearer(adminToken)));
    expect([self.code, reasonOf(self)]).toEqual([Code.FailedPrecondition, "CANNOT_DEACTIVATE_SELF"]);

    await auth.setUserActive({ userId, active: true, reason: "resolved" }, bearer(adminToken));
    await auth.setUserActive({ userId, active: true, reason: "resolved twice" }, bearer(adminToken));
    await events.find(UserReactivatedSchema, (e) => e.userId === userId);
    expect(events.all(UserReactivatedSchema).filter((e) => e.userId === userId)).toHaveLength(1);
    await login(email);
    await login(email);
    const ended = await auth.revokeUserSessions({ userId, reason: "suspected takeover" }, bearer(adminToken));
    expect(ended.revokedSessions).toBe(2);
    const logs = await auditLogs(userId, [SecurityAction.USER_DEACTIVATED, SecurityAction.USER_REACTIVATED, SecurityAction.SESSIONS_REVOKED]);
    expect(logs.map((l) => l.action)).toEqual([SecurityAction.SESSIONS_REVOKED, SecurityAction.USER_REACTIVATED, SecurityAction.USER_DEACTIVATED]);
    expect(logs[2]!.metadata).toMatchObject({ reason: "chargeback fraud", actor_user_id: decodeJwt(adminToken).sub });
  });
});

describe("service credentials", () => {
  it("issues service tokens for the right secret only, which the kit accepts as service principals", async () => {
    const wrong = await failureOf(auth.issueServiceToken({ serviceName: "order", serviceSecret: "x".repeat(40) }));
    expect([wrong.code, reasonOf(wrong)]).toEqual([Code.Unauthenticated, "INVALID_SERVICE_CREDENTIALS"]);
    const unknown = await failureOf(auth.issueServiceToken({ serviceName: "mallory", serviceSecret: developmentServiceSecret("order") }));
    expect(reasonOf(unknown)).toBe("INVALID_SERVICE_CREDENTIALS");

    const issued = await auth.issueServiceToken({ serviceName: "order", serviceSecret: developmentServiceSecret("order") });
    expect(issued.tokenType).toBe("Bearer");
    expect(Number(issued.expiresIn?.seconds)).toBe(300);
    expect(decodeJwt(issued.accessToken)).toMatchObject({ sub: "service:order", roles: ["service"], svc: "order", iss: "ecommerce-auth", aud: "ecommerce" });
    expect(await verifierFor(auth).verify(issued.accessToken)).toEqual({ kind: "service", service: "order" });

    // IntrospectToken is internal: a service token is the credential; it also sees revocation.
    const { email, tokens } = await register();
    const denied = await failureOf(auth.introspectToken({ token: tokens.accessToken }, bearer(tokens.accessToken)));
    expect(denied.code).toBe(Code.PermissionDenied);
    const live = await auth.introspectToken({ token: tokens.accessToken }, bearer(issued.accessToken));
    expect(live.active).toBe(true);
    expect(live.claims).toMatchObject({ kind: TokenKind.USER, subject: decodeJwt(tokens.accessToken).sub, roles: ["customer"], sessionId: decodeJwt(tokens.accessToken).sid });
    const service = await auth.introspectToken({ token: issued.accessToken }, bearer(issued.accessToken));
    expect(service.claims).toMatchObject({ kind: TokenKind.SERVICE, serviceName: "order", subject: "service:order" });
    expect((await auth.introspectToken({ token: "garbage" }, bearer(issued.accessToken))).active).toBe(false);
    await auth.logout({ refreshToken: tokens.refreshToken });
    expect((await auth.introspectToken({ token: tokens.accessToken }, bearer(issued.accessToken))).active).toBe(false);
    expect((await login(email)).user).toBeDefined();

    const audit = await auth.listSecurityAuditLogs({ actions: [SecurityAction.SERVICE_TOKEN_DENIED, SecurityAction.SERVICE_TOKEN_ISSUED] }, bearer(adminToken));
    expect(audit.logs.filter((l) => l.action === SecurityAction.SERVICE_TOKEN_DENIED).map((l) => l.metadata.service_name).sort()).toEqual(["mallory", "order"]);
  });

  it("introspects tokens by the kit's rules: a token signed with Auth's own key but without exp is inactive", async () => {
    const issued = await auth.issueServiceToken({ serviceName: "order", serviceSecret: developmentServiceSecret("order") });
    // Auth's current signing key, as only Auth itself could use it.
    const key = await sqlOf(mesh.services.auth!.ctx.orm.em.fork()).one<{ kid: string; private_key_encrypted: Buffer }>(
      "select kid, private_key_encrypted from signing_keys where activates_at <= now() order by activates_at desc limit 1",
    );
    const privateKey = await importPKCS8(openText(loadAuthConfig(authEnv).keys.encryptionKey, key!.private_key_encrypted, key!.kid), "ES256");
    const token = (expires: boolean) => {
      const jwt = new SignJWT({ roles: ["service"], svc: "order" })
        .setProtectedHeader({ alg: "ES256", kid: key!.kid, typ: "JWT" })
        .setIssuer("ecommerce-auth")
        .setAudience("ecommerce")
        .setSubject("service:order")
        .setIssuedAt();
      return (expires ? jwt.setExpirationTime("5m") : jwt).sign(privateKey);
    };
    const introspect = async (t: string) => (await auth.introspectToken({ token: t }, bearer(issued.accessToken))).active;
    expect(await introspect(await token(true))).toBe(true);
    // Valid forever otherwise: every verifier of the mesh refuses it, so introspection must too.
    expect(await introspect(await token(false))).toBe(false);
  });
});
