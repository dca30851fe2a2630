/** Sign-up, sign-in, token refresh, sign-out and the caller's own account. */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { LockMode } from "@mikro-orm/postgresql";
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
import { customerRole, requireUser } from "../../../kit/auth/principal.ts";
import { emOf } from "../../../kit/db.ts";
import type { ConnectError } from "../../../kit/errors.ts";
import { notFound } from "../../../kit/errors.ts";
import { publishEvent } from "../../../kit/events/outbox.ts";
import { audit, clientOf } from "../audit.ts";
import { Role, User, UserRole, RefreshToken } from "../entities.ts";
import { accountDisabled, accountLocked, emailTaken, invalidCredentials, invalidRefreshToken, isUniqueViolation, refreshTokenReused } from "../failures.ts";
import { recordFailedPassword } from "../lockout.ts";
import { requireStrongPassword } from "../passwords.ts";
import { enforceRateLimit } from "../rate-limit.ts";
import type { AuthRuntime } from "../runtime.ts";
import { issueTokenPair, revokeSessions, sha256, startSession } from "../sessions.ts";
import { lockedUntil, lockUser, normalizeEmail, rolesOfUser, userView } from "../users.ts";
import { sendVerification } from "./email.ts";

export async function register(rt: AuthRuntime, req: RegisterRequest, ctx: HandlerContext): Promise<RegisterResponse> {
  const client = clientOf(ctx);
  const email = normalizeEmail(req.email);
  await enforceRateLimit(rt.limits, { ip: client.ip, email });
  requireStrongPassword(req.password, email, "password");
  const em = emOf(ctx);
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

export async function login(rt: AuthRuntime, req: LoginRequest, ctx: HandlerContext): Promise<LoginResponse> {
  const client = clientOf(ctx);
  const email = normalizeEmail(req.email);
  await enforceRateLimit(rt.limits, { ip: client.ip, email });
  const em = emOf(ctx);
  const found = await em.findOne(User, { email });
  if (!found) {
    await rt.passwords.verifyNothing(req.password);
    await em.transactional(async (tx) => audit(tx, SecurityAction.LOGIN_FAILED, { client, metadata: { email, reason: "unknown_email" } }));
    throw invalidCredentials();
  }
  const locked = lockedUntil(found);
  if (locked) {
    await em.transactional(async (tx) => audit(tx, SecurityAction.LOGIN_FAILED, { userId: found.id, client, metadata: { reason: "account_locked" } }));
    throw accountLocked(locked);
  }
  if (!(await rt.passwords.verify(found.passwordHash, req.password))) {
    const lockedNow = await recordFailedPassword(rt, em, found.id, client, "invalid_password");
    throw lockedNow ? accountLocked(lockedNow) : invalidCredentials();
  }
  if (!found.isActive) {
    await em.transactional(async (tx) => audit(tx, SecurityAction.LOGIN_FAILED, { userId: found.id, client, metadata: { reason: "account_disabled" } }));
    throw accountDisabled();
  }
  const rehashed = rt.passwords.needsRehash(found.passwordHash) ? await rt.passwords.hash(req.password) : undefined;

  let failure: ConnectError | undefined;
  const result = await em.transactional(async (tx) => {
    const user = await lockUser(tx, found.id);
    if (!user) throw invalidCredentials();
    // Locked by a concurrent failure while the password was checked.
    const lockedMeanwhile = lockedUntil(user);
    if (lockedMeanwhile) {
      failure = accountLocked(lockedMeanwhile);
      return undefined;
    }
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
  if (!result) throw failure ?? invalidCredentials();
  return create(LoginResponseSchema, { user: userView(result.user, result.roles, "own"), tokens: result.pair });
}

export async function refreshToken(rt: AuthRuntime, req: RefreshTokenRequest, ctx: HandlerContext): Promise<RefreshTokenResponse> {
  const client = clientOf(ctx);
  await enforceRateLimit(rt.limits, { ip: client.ip, token: req.refreshToken });
  let failure: ConnectError | undefined;
  const pair = await emOf(ctx).transactional(async (tx) => {
    // The row lock makes concurrent use of one token a detected reuse, never two rotations.
    const token = await tx.findOne(RefreshToken, { tokenHash: sha256(req.refreshToken) }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
    if (!token) {
      failure = invalidRefreshToken();
      return undefined;
    }
    if (token.revokedReason === "rotated") {
      const sessions = await revokeSessions(tx, { sessionId: token.sessionId }, "reuse_detected");
      audit(tx, SecurityAction.REFRESH_TOKEN_REUSE_DETECTED, {
        userId: token.userId,
        client,
        metadata: { session_id: token.sessionId, sessions_revoked: String(sessions) },
      });
      failure = refreshTokenReused();
      return undefined;
    }
    if (token.revoked || token.expiresAt.getTime() <= Date.now()) {
      failure = invalidRefreshToken();
      return undefined;
    }
    const user = await tx.findOne(User, { id: token.userId });
    if (!user || !user.isActive) {
      failure = accountDisabled();
      return undefined;
    }
    const roles = await rolesOfUser(tx, user.id);
    const issued = await issueTokenPair(rt, tx, user, roles, token.sessionId, client);
    token.revoked = true;
    token.revokedAt = new Date();
    token.revokedReason = "rotated";
    token.replacedBy = issued.refreshTokenId;
    audit(tx, SecurityAction.TOKEN_REFRESHED, { userId: user.id, client, metadata: { session_id: token.sessionId } });
    return issued.pair;
  });
  if (!pair) throw failure ?? invalidRefreshToken();
  return create(RefreshTokenResponseSchema, { tokens: pair });
}

export async function logout(rt: AuthRuntime, req: LogoutRequest, ctx: HandlerContext): Promise<LogoutResponse> {
  const client = clientOf(ctx);
  await enforceRateLimit(rt.limits, { ip: client.ip, token: req.refreshToken });
  await emOf(ctx).transactional(async (tx) => {
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

export async function getMe(_rt: AuthRuntime, ctx: HandlerContext): Promise<GetMeResponse> {
  const me = requireUser(ctx);
  const em = emOf(ctx);
  const user = await em.findOne(User, { id: me.userId });
  if (!user) throw notFound("user", me.userId);
  return create(GetMeResponseSchema, { user: userView(user, await rolesOfUser(em, user.id), "own") });
}
