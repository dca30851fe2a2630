/**
 * Rate limits of Auth's public RPCs, shared by every replica: the kit's
 * RateLimits (kit/rate-limit.ts) in Auth's own database, fixed windows of
 * AUTH_RATE_LIMIT_WINDOW_MS. Which RPC counts against which key is listed in
 * services/auth/README.md. The client address comes from the kit
 * (clientAddressOf: trusted proxy hops, else the TCP peer), so a forged
 * X-Forwarded-For neither escapes a limit nor moves it onto someone else.
 */
import { type LimitRule, RateLimits, ipKey, secretKey } from "../../kit/rate-limit.ts";
import type { Logger } from "../../kit/logger.ts";
import type { AuthConfig } from "./config.ts";

/** The keys a call can count against. */
export type LimitKind = "ip" | "email" | "token" | "resetEmail";

export type AuthRateLimits = RateLimits<LimitKind>;

export interface RateLimitCheck {
  ip?: string;
  email?: string;
  /** A secret the caller presents (refresh, reset or verification token); only its hash is stored. */
  token?: string;
}

/** Auth's limits, counted in its own database (shared by every replica). */
export function authRateLimits(databaseUrl: string, config: AuthConfig["rateLimit"], log: Logger): AuthRateLimits {
  const rule = (points: number): LimitRule => ({ points, windowMs: config.windowMs });
  return new RateLimits<LimitKind>(
    databaseUrl,
    { ip: rule(config.perIp), email: rule(config.perEmail), token: rule(config.perToken), resetEmail: rule(config.resetsPerEmail) },
    log,
  );
}

/** The one call handlers make: `await enforceRateLimit(rt.limits, { ip: client.ip, email })`. */
export function enforceRateLimit(limits: AuthRateLimits, check: RateLimitCheck): Promise<void> {
  return limits.enforce({ ip: check.ip ? ipKey(check.ip) : undefined, email: check.email, token: check.token ? secretKey(check.token) : undefined });
}
