/**
 * Counting failed password checks (Login, ChangePassword) towards the lockout.
 * The counter is updated under a row lock, so concurrent guesses are all counted.
 */
import type { EntityManager } from "@mikro-orm/postgresql";
import { SecurityAction } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { audit, type ClientInfo } from "./audit.ts";
import type { AuthRuntime } from "./runtime.ts";
import { lockUser } from "./users.ts";

/**
 * Records a wrong password for `userId` in its own transaction (committed even
 * though the call fails) with a LOGIN_FAILED audit row. Returns the lock's end
 * when the account is locked now (ACCOUNT_LOCKED audited when this failure locked it).
 */
export async function recordFailedPassword(
  rt: AuthRuntime,
  em: EntityManager,
  userId: string,
  client: ClientInfo,
  reason: string,
): Promise<Date | undefined> {
  return em.transactional(async (tx) => {
    const user = await lockUser(tx, userId);
    if (!user) return undefined;
    const now = Date.now();
    audit(tx, SecurityAction.LOGIN_FAILED, { userId, client, metadata: { reason } });
    if (user.lockedUntil && user.lockedUntil.getTime() > now) return user.lockedUntil; // locked meanwhile
    // A lock that ran out starts a fresh count.
    const attempts = (user.lockedUntil ? 0 : user.failedLoginAttempts) + 1;
    user.failedLoginAttempts = attempts;
    user.lockedUntil = null;
    if (attempts >= rt.config.maxFailedLogins) {
      user.lockedUntil = new Date(now + rt.config.lockoutMs);
      audit(tx, SecurityAction.ACCOUNT_LOCKED, {
        userId,
        client,
        metadata: { locked_until: user.lockedUntil.toISOString(), failed_login_attempts: String(attempts) },
      });
      return user.lockedUntil;
    }
    return undefined;
  });
}
