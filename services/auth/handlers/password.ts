/** Password reset by email and password change by the signed-in user. */
import { create } from "@bufbuild/protobuf";
import { type EntityManager, LockMode } from "@mikro-orm/postgresql";
import { decodeJwt } from "jose";
import { v7 as uuidv7 } from "uuid";
import {
  type ChangePasswordRequest,
  type ChangePasswordResponse,
  ChangePasswordResponseSchema,
  type RequestPasswordResetRequest,
  type RequestPasswordResetResponse,
  RequestPasswordResetResponseSchema,
  type ResetPasswordRequest,
  type ResetPasswordResponse,
  ResetPasswordResponseSchema,
  SecurityAction,
} from "../../../gen/ecommerce/auth/v1/auth_pb.js";
import { PasswordChangeMethod, UserPasswordChangedSchema, UserPasswordResetRequestedSchema } from "../../../gen/ecommerce/auth/v1/events_pb.js";
import type { UserPrincipal } from "../../../kit/auth/principal.ts";
import { timestampOf } from "../../../kit/convert.ts";
import { invalidArgument, notFound } from "../../../kit/errors.ts";
import { publishEvent } from "../../../kit/events/outbox.ts";
import { sealedFieldBinding } from "../../../kit/events/sealed.ts";
import { sqlOf } from "../../../kit/sql.ts";
import { audit, type ClientInfo } from "../audit.ts";
import { PasswordResetToken, User } from "../entities.ts";
import { accountDisabled, accountLocked, tokenExpired, tokenInvalid } from "../failures.ts";
import { failedPassword } from "../lockout.ts";
import { requireStrongPassword } from "../passwords.ts";
import { enforceRateLimit } from "../rate-limit.ts";
import type { AuthRuntime } from "../runtime.ts";
import { newSecret, revokeSessions, sha256 } from "../sessions.ts";
import { lockedUntil, lockUser, normalizeEmail } from "../users.ts";
import { markEmailVerified } from "./email.ts";

export async function requestPasswordReset(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: RequestPasswordResetRequest): Promise<RequestPasswordResetResponse> {
  await enforceRateLimit(rt.limits, { ip: client.ip });
  const email = normalizeEmail(req.email);
  // Over the per-address limit the answer is the same but no email goes out: an error would tell
  // the caller that someone else asked for this address, and one mailbox is not flooded.
  if (await rt.limits.take("resetEmail", email)) return create(RequestPasswordResetResponseSchema, {});
  await em.transactional(async (tx) => {
    const user = await tx.findOne(User, { email });
    if (!user || !user.isActive) return; // same answer: accounts cannot be enumerated
    await sqlOf(tx).run("update password_reset_tokens set superseded_at = now() where user_id = $1 and not used and superseded_at is null", [user.id]);
    const token = newSecret();
    const expiresAt = new Date(Date.now() + rt.config.passwordResetTtlMs);
    tx.persist(
      tx.create(PasswordResetToken, {
        id: uuidv7(),
        tokenHash: sha256(token),
        userId: user.id,
        expiresAt,
        used: false,
        usedAt: null,
        supersededAt: null,
        createdAt: new Date(),
      }),
    );
    audit(tx, SecurityAction.PASSWORD_RESET_REQUESTED, { userId: user.id, client });
    const sealedToken = rt.sealForNotification(token, sealedFieldBinding(UserPasswordResetRequestedSchema.typeName, "sealed_token", user.id));
    publishEvent(tx, UserPasswordResetRequestedSchema, { userId: user.id, email: user.email, sealedToken, expiresAt: timestampOf(expiresAt) });
  });
  return create(RequestPasswordResetResponseSchema, {});
}

export async function resetPassword(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: ResetPasswordRequest): Promise<ResetPasswordResponse> {
  await enforceRateLimit(rt.limits, { ip: client.ip, token: req.token });
  const tokenHash = sha256(req.token);
  const usable = async (tx: typeof em, lock: boolean) => {
    const token = await tx.findOne(PasswordResetToken, { tokenHash }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true } : {});
    if (!token || token.used || token.supersededAt) throw tokenInvalid();
    if (token.expiresAt.getTime() <= Date.now()) throw tokenExpired();
    const user = await (lock ? lockUser(tx, token.userId) : tx.findOne(User, { id: token.userId }));
    if (!user || !user.isActive) throw tokenInvalid();
    return { token, user };
  };
  // Check first (the token is not spent by a weak password), hash outside the transaction, then re-check under lock.
  const { user: before } = await usable(em, false);
  requireStrongPassword(req.newPassword, before.email, "new_password");
  const passwordHash = await rt.passwords.hash(req.newPassword);
  await em.transactional(async (tx) => {
    const { token, user } = await usable(tx, true);
    token.used = true;
    token.usedAt = new Date();
    user.passwordHash = passwordHash;
    user.failedLoginAttempts = 0;
    user.lockedUntil = null;
    const sessions = await revokeSessions(tx, { userId: user.id }, "password_reset");
    audit(tx, SecurityAction.PASSWORD_RESET, { userId: user.id, client, metadata: { sessions_revoked: String(sessions) } });
    publishEvent(tx, UserPasswordChangedSchema, { userId: user.id, email: user.email, method: PasswordChangeMethod.RESET });
    // The token came through the mailbox, which proves control of the address.
    markEmailVerified(tx, user, client, "password_reset");
  });
  return create(ResetPasswordResponseSchema, {});
}

/** The session id of the caller's access token (verified by the interceptor already). */
function sessionOf(token: string): string | undefined {
  const sid = decodeJwt(token).sid;
  return typeof sid === "string" ? sid : undefined;
}

export async function changePassword(em: EntityManager, rt: AuthRuntime, me: UserPrincipal, client: ClientInfo, req: ChangePasswordRequest): Promise<ChangePasswordResponse> {
  const user = await em.findOne(User, { id: me.userId });
  if (!user) throw notFound("user", me.userId);
  if (!user.isActive) throw accountDisabled();
  const locked = lockedUntil(user);
  if (locked) throw accountLocked(locked);
  if (!(await rt.passwords.verify(user.passwordHash, req.currentPassword))) {
    // Counts towards the lockout, so a stolen access token cannot be used to guess the password.
    return failedPassword(rt, em, user.id, client, "invalid_current_password", invalidArgument("current_password", "the current password is wrong", "INVALID_CURRENT_PASSWORD"));
  }
  requireStrongPassword(req.newPassword, user.email, "new_password");
  const passwordHash = await rt.passwords.hash(req.newPassword);
  const ownSession = sessionOf(me.token);
  await em.transactional(async (tx) => {
    const locked = await lockUser(tx, me.userId);
    if (!locked) throw notFound("user", me.userId);
    locked.passwordHash = passwordHash;
    locked.failedLoginAttempts = 0;
    const sessions = await revokeSessions(tx, ownSession ? { userId: me.userId, exceptSessionId: ownSession } : { userId: me.userId }, "password_changed");
    audit(tx, SecurityAction.PASSWORD_CHANGED, {
      userId: me.userId,
      client,
      metadata: { ...(ownSession ? { session_id: ownSession } : {}), sessions_revoked: String(sessions) },
    });
    publishEvent(tx, UserPasswordChangedSchema, { userId: me.userId, email: locked.email, method: PasswordChangeMethod.CHANGED });
  });
  return create(ChangePasswordResponseSchema, {});
}
