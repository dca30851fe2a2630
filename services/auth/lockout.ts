/**
 * Counting failed password checks (Login, ChangePassword) towards the lockout.
 * The counter is updated under a row lock, so concurrent guesses are all counted.
 */
import type { EntityManager } from "@mikro-orm/postgresql";
import { SecurityAction } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import type { ConnectError } from "../../kit/errors.ts";
import { commitThenFail, transaction } from "../../kit/transaction.ts";
import { audit, type ClientInfo } from "./audit.ts";
import { accountLocked } from "./failures.ts";
import type { AuthRuntime } from "./runtime.ts";
import { lockUser } from "./users.ts";

/**
 * Records a wrong password for `userId` with a LOGIN_FAILED audit row, commits
 * it, and fails the call: ACCOUNT_LOCKED when the account is locked now
 * (ACCOUNT_LOCKED audited when this failure locked it), else `otherwise`.
 */
export function failedPassword(rt: AuthRuntime, em: EntityManager, userId: string, client: ClientInfo, reason: string, otherwise: ConnectError): Promise<never> {
  return transaction(em, async (tx) => {
    const user = await lockUser(tx, userId);
    if (!user) return commitThenFail(otherwise);
    const now = Date.now();
    audit(tx, SecurityAction.LOGIN_FAILED, { userId, client, metadata: { reason } });
    if (user.lockedUntil && user.lockedUntil.getTime() > now) return commitThenFail(accountLocked(user.lockedUntil)); // locked meanwhile
    // A lock that ran out starts a fresh count.
    const attempts = (user.lockedUntil ? 0 : user.failedLoginAttempts) + 1;
    user.failedLoginAttempts = attempts;
    user.lockedUntil = null;
    if (attempts < rt.config.maxFailedLogins) return commitThenFail(otherwise);
    user.lockedUntil = new Date(now + rt.config.lockoutMs);
    audit(tx, SecurityAction.ACCOUNT_LOCKED, {
      userId,
      client,
      metadata: { locked_until: user.lockedUntil.toISOString(), failed_login_attempts: String(attempts) },
    });
    return commitThenFail(accountLocked(user.lockedUntil));
  });
}
