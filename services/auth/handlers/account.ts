/** Sign-up, sign-in, token refresh, sign-out and the caller's own account. */
import { create } from "@bufbuild/protobuf";
import { type EntityManager, LockMode } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import {
  type GetMeResponse,
  GetMeResponseSchema,
  type LoginRequest,
  type LoginResponse,
  LoginResponseSchema,
  type LogoutRequest,
  type LogoutResponse,
  LogoutResponseSchema,
  type RefreshTokenRequest,
  type RefreshTokenResponse,
  RefreshTokenResponseSchema,
  type RegisterRequest,
  type RegisterResponse,
  RegisterResponseSchema,
  SecurityAction,
} from "../../../gen/ecommerce/auth/v1/auth_pb.js";
import { UserLoggedInSchema, UserRegisteredSchema } from "../../../gen/ecommerce/auth/v1/events_pb.js";
import { customerRole } from "../../../kit/auth/principal.ts";
import { notFound } from "../../../kit/errors.ts";
import { publishEvent } from "../../../kit/events/outbox.ts";
import { sqlOf } from "../../../kit/sql.ts";
import { commitThenFail, transaction } from "../../../kit/transaction.ts";
import { audit, type ClientInfo } from "../audit.ts";
import { Role, User, UserRole, RefreshToken } from "../entities.ts";
import { accountDisabled, accountLocked, emailTaken, invalidCredentials, invalidRefreshToken, isUniqueViolation, refreshTokenReused } from "../failures.ts";
import { failedPassword } from "../lockout.ts";
import { requireStrongPassword } from "../passwords.ts";
import { enforceRateLimit } from "../rate-limit.ts";
import type { AuthRuntime } from "../runtime.ts";
import { issueTokenPair, revokeSessions, sha256, startSession } from "../sessions.ts";
import { lockedUntil, lockUser, normalizeEmail, rolesColumn, rolesOfUser, type UserFields, userColumns, userView } from "../users.ts";
import { sendVerification } from "./email.ts";

export async function register(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: RegisterRequest): Promise<RegisterResponse> {
  const email = normalizeEmail(req.email);
  await enforceRateLimit(rt.limits, { ip: client.ip, email });
  requireStrongPassword(req.password, email, "password");
  if ((await em.count(User, { email })) > 0) throw emailTaken();
  const passwordHash = await rt.passwords.hash(req.password);
  const roles = [customerRole];
  try {
    const { user, pair } = await em.transactional(async (tx) => {
      const now = new Date();
      const user = tx.create(User, {
        id: uuidv7(),
        email,
        passwordHash,
        emailVerified: false,
        isActive: true,
        failedLoginAttempts: 0,
        lockedUntil: null,
        lastLoginAt: null,
        createdAt: now,
        updatedAt: now,
      });
      const customer = await tx.findOneOrFail(Role, { name: customerRole });
      tx.persist(user);
      tx.persist(tx.create(UserRole, { id: uuidv7(), userId: user.id, roleId: customer.id, createdAt: now }));
      const { sessionId, pair } = await startSession(rt, tx, user, roles, client);
      audit(tx, SecurityAction.REGISTERED, { userId: user.id, client, metadata: { session_id: sessionId } });
      publishEvent(tx, UserRegisteredSchema, {
        userId: user.id,
        email,
        firstName: req.firstName,
        lastName: req.lastName,
        emailVerified: false,
        preferredLanguage: req.preferredLanguage,
        newsletterSubscribed: req.newsletterSubscribed,
        roles,
      });
      await sendVerification(rt, tx, user, client);
      return { user, pair };
    });
    return create(RegisterResponseSchema, { user: userView(user, roles, "own"), tokens: pair });
  } catch (error) {
    if (isUniqueViolation(error)) throw emailTaken(); // registered concurrently
    throw error;
  }
}

export async function login(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: LoginRequest): Promise<LoginResponse> {
  const email = normalizeEmail(req.email);
  await enforceRateLimit(rt.limits, { ip: client.ip, email });
  const found = await em.findOne(User, { email });
  // Failed sign-ins are audited: the audit row commits, then the call fails.
  if (!found) {
    await rt.passwords.verifyNothing(req.password);
    return transaction(em, async (tx) => {
      audit(tx, SecurityAction.LOGIN_FAILED, { client, metadata: { email, reason: "unknown_email" } });
      return commitThenFail(invalidCredentials());
    });
  }
  const locked = lockedUntil(found);
  if (locked) {
    return transaction(em, async (tx) => {
      audit(tx, SecurityAction.LOGIN_FAILED, { userId: found.id, client, metadata: { reason: "account_locked" } });
      return commitThenFail(accountLocked(locked));
    });
  }
  if (!(await rt.passwords.verify(found.passwordHash, req.password))) {
    return failedPassword(rt, em, found.id, client, "invalid_password", invalidCredentials());
  }
  if (!found.isActive) {
    return transaction(em, async (tx) => {
      audit(tx, SecurityAction.LOGIN_FAILED, { userId: found.id, client, metadata: { reason: "account_disabled" } });
      return commitThenFail(accountDisabled());
    });
  }
  const rehashed = rt.passwords.needsRehash(found.passwordHash) ? await rt.passwords.hash(req.password) : undefined;

  const result = await em.transactional(async (tx) => {
    const user = await lockUser(tx, found.id);
    if (!user) throw invalidCredentials();
    // Locked by a concurrent failure while the password was checked.
    const lockedMeanwhile = lockedUntil(user);
    if (lockedMeanwhile) throw accountLocked(lockedMeanwhile);
    user.failedLoginAttempts = 0;
    user.lockedUntil = null;
    user.lastLoginAt = new Date();
    if (rehashed) user.passwordHash = rehashed;
    const roles = await rolesOfUser(tx, user.id);
    const { sessionId, pair } = await startSession(rt, tx, user, roles, client);
    audit(tx, SecurityAction.LOGIN_SUCCEEDED, { userId: user.id, client, metadata: { session_id: sessionId } });
    publishEvent(tx, UserLoggedInSchema, { userId: user.id });
    return { user, roles, pair };
  });
  return create(LoginResponseSchema, { user: userView(result.user, result.roles, "own"), tokens: result.pair });
}

export async function refreshToken(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: RefreshTokenRequest): Promise<RefreshTokenResponse> {
  await enforceRateLimit(rt.limits, { ip: client.ip, token: req.refreshToken });
  const pair = await transaction(em, async (tx) => {
    // The row lock makes concurrent use of one token a detected reuse, never two rotations.
    const token = await tx.findOne(RefreshToken, { tokenHash: sha256(req.refreshToken) }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
    if (!token) throw invalidRefreshToken();
    if (token.revokedReason === "rotated") {
      // The revocation and its audit row commit; the caller still fails.
      const sessions = await revokeSessions(tx, { sessionId: token.sessionId }, "reuse_detected");
      audit(tx, SecurityAction.REFRESH_TOKEN_REUSE_DETECTED, {
        userId: token.userId,
        client,
        metadata: { session_id: token.sessionId, sessions_revoked: String(sessions) },
      });
      return commitThenFail(refreshTokenReused());
    }
    if (token.revoked || token.expiresAt.getTime() <= Date.now()) throw invalidRefreshToken();
    const user = await tx.findOne(User, { id: token.userId });
    if (!user || !user.isActive) throw accountDisabled();
    const roles = await rolesOfUser(tx, user.id);
    const issued = await issueTokenPair(rt, tx, user, roles, token.sessionId, client);
    token.revoked = true;
    token.revokedAt = new Date();
    token.revokedReason = "rotated";
    token.replacedBy = issued.refreshTokenId;
    audit(tx, SecurityAction.TOKEN_REFRESHED, { userId: user.id, client, metadata: { session_id: token.sessionId } });
    return issued.pair;
  });
  return create(RefreshTokenResponseSchema, { tokens: pair });
}

export async function logout(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: LogoutRequest): Promise<LogoutResponse> {
  await enforceRateLimit(rt.limits, { ip: client.ip, token: req.refreshToken });
  await em.transactional(async (tx) => {
    const token = await tx.findOne(RefreshToken, { tokenHash: sha256(req.refreshToken) });
    // Unknown, expired or revoked tokens succeed without effect (idempotent sign-out).
    if (!token || token.revoked || token.expiresAt.getTime() <= Date.now()) return;
    const sessions = await revokeSessions(tx, req.allSessions ? { userId: token.userId } : { sessionId: token.sessionId }, "logout");
    audit(tx, SecurityAction.LOGOUT, {
      userId: token.userId,
      client,
      metadata: { session_id: token.sessionId, all_sessions: String(req.allSessions), sessions_revoked: String(sessions) },
    });
  });
  return create(LogoutResponseSchema, {});
}

/** The caller's account: one statement, the row mapped straight to the message (a hot read). */
export async function getMe(em: EntityManager, userId: string): Promise<GetMeResponse> {
  const row = await sqlOf(em).one<UserFields & { roles: string[] }>(`select ${userColumns}, ${rolesColumn} from users u where u.id = $1`, [userId]);
  if (!row) throw notFound("user", userId);
  return create(GetMeResponseSchema, { user: userView(row, row.roles, "own") });
}
