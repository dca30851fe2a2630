/** Email verification: sending a one-time token, confirming it, sending it again. */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { type EntityManager, LockMode } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import {
  type ResendVerificationResponse,
  ResendVerificationResponseSchema,
  SecurityAction,
  type VerifyEmailRequest,
  type VerifyEmailResponse,
  VerifyEmailResponseSchema,
} from "../../../gen/ecommerce/auth/v1/auth_pb.js";
import { UserEmailVerificationRequestedSchema, UserEmailVerifiedSchema } from "../../../gen/ecommerce/auth/v1/events_pb.js";
import { timestampOf } from "../../../kit/convert.ts";
import { domainError, failedPrecondition, notFound } from "../../../kit/errors.ts";
import { publishEvent } from "../../../kit/events/outbox.ts";
import { sealedFieldBinding } from "../../../kit/events/sealed.ts";
import { sqlOf } from "../../../kit/sql.ts";
import { audit, type ClientInfo } from "../audit.ts";
import { EmailVerificationToken, type User } from "../entities.ts";
import { accountDisabled, tokenExpired, tokenInvalid } from "../failures.ts";
import { enforceRateLimit } from "../rate-limit.ts";
import type { AuthRuntime } from "../runtime.ts";
import { newSecret, sha256 } from "../sessions.ts";
import { lockUser } from "../users.ts";

/**
 * Creates a verification token for the user's address (earlier unused ones
 * stop working) and queues user.email_verification_requested with the token
 * sealed for Notification. Returns when the token expires.
 */
export async function sendVerification(rt: AuthRuntime, tx: EntityManager, user: User, client: ClientInfo): Promise<Date> {
  await sqlOf(tx).run("update email_verification_tokens set superseded_at = now() where user_id = $1 and not verified and superseded_at is null", [user.id]);
  const token = newSecret();
  const expiresAt = new Date(Date.now() + rt.config.emailVerificationTtlMs);
  tx.persist(
    tx.create(EmailVerificationToken, {
      id: uuidv7(),
      tokenHash: sha256(token),
      userId: user.id,
      email: user.email,
      expiresAt,
      verified: false,
      verifiedAt: null,
      supersededAt: null,
      createdAt: new Date(),
    }),
  );
  audit(tx, SecurityAction.EMAIL_VERIFICATION_REQUESTED, { userId: user.id, client });
  const sealedToken = rt.sealForNotification(token, sealedFieldBinding(UserEmailVerificationRequestedSchema.typeName, "sealed_token", user.id));
  publishEvent(tx, UserEmailVerificationRequestedSchema, { userId: user.id, email: user.email, sealedToken, expiresAt: timestampOf(expiresAt) });
  return expiresAt;
}

/** Marks the user's email verified (audit + user.email_verified) when it was not; false when it already was. */
export function markEmailVerified(tx: EntityManager, user: User, client: ClientInfo, via: string): boolean {
  if (user.emailVerified) return false;
  user.emailVerified = true;
  audit(tx, SecurityAction.EMAIL_VERIFIED, { userId: user.id, client, metadata: { reason: via } });
  publishEvent(tx, UserEmailVerifiedSchema, { userId: user.id, email: user.email });
  return true;
}

export async function verifyEmail(em: EntityManager, rt: AuthRuntime, client: ClientInfo, req: VerifyEmailRequest): Promise<VerifyEmailResponse> {
  await enforceRateLimit(rt.limits, { ip: client.ip, token: req.token });
  return em.transactional(async (tx) => {
    const token = await tx.findOne(
      EmailVerificationToken,
      { tokenHash: sha256(req.token) },
      { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true },
    );
    if (!token) throw tokenInvalid();
    const user = await lockUser(tx, token.userId);
    if (!user || token.email !== user.email) throw tokenInvalid();
    // The token that already verified the address succeeds again (a second click on the link).
    if (token.verified) return create(VerifyEmailResponseSchema, { userId: user.id, email: token.email });
    if (token.supersededAt) throw tokenInvalid();
    if (token.expiresAt.getTime() <= Date.now()) throw tokenExpired();
    token.verified = true;
    token.verifiedAt = new Date();
    markEmailVerified(tx, user, client, "verify_email");
    return create(VerifyEmailResponseSchema, { userId: user.id, email: user.email });
  });
}

export async function resendVerification(em: EntityManager, rt: AuthRuntime, userId: string, client: ClientInfo): Promise<ResendVerificationResponse> {
  await enforceRateLimit(rt.limits, { ip: client.ip });
  return em.transactional(async (tx) => {
    const user = await lockUser(tx, userId);
    if (!user) throw notFound("user", userId);
    if (!user.isActive) throw accountDisabled();
    if (user.emailVerified) throw failedPrecondition("the email address is already verified", "EMAIL_ALREADY_VERIFIED");
    const last = await sqlOf(tx).one<{ created_at: string }>("select created_at from email_verification_tokens where user_id = $1 order by created_at desc limit 1", [
      user.id,
    ]);
    if (last) {
      const wait = new Date(last.created_at).getTime() + rt.config.verificationResendIntervalMs - Date.now();
      if (wait > 0) {
        throw domainError(Code.ResourceExhausted, `a verification email went out moments ago; retry in ${Math.ceil(wait / 1000)} s`, {
          reason: "RATE_LIMITED",
          retryAfterMs: wait,
        });
      }
    }
    const expiresAt = await sendVerification(rt, tx, user, client);
    return create(ResendVerificationResponseSchema, { expiresAt: timestampOf(expiresAt) });
  });
}
