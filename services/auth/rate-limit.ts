/**
 * Rate limits of Auth's public RPCs, shared by every replica: counters live in
 * Auth's own database (table rate_limits, migration 0002) through
 * rate-limiter-flexible's PostgreSQL store, fixed windows of
 * AUTH_RATE_LIMIT_WINDOW_MS. Which RPC counts against which key is listed in
 * services/auth/README.md. The client address comes from the kit
 * (clientAddressOf: trusted proxy hops, else the TCP peer), so a forged
 * X-Forwarded-For neither escapes a limit nor moves it onto someone else.
 */
import { createHash } from "node:crypto";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { RateLimiterPostgres, RateLimiterRes } from "rate-limiter-flexible";
import { domainError, unavailable } from "../../kit/errors.ts";
import type { Logger } from "../../kit/logger.ts";
import type { AuthConfig } from "./config.ts";

/** The keys a call can count against. */
export type LimitKind = "ip" | "email" | "token" | "resetEmail";

export interface RateLimitCheck {
  ip?: string;
  email?: string;
  /** A secret the caller presents (refresh, reset or verification token); only its hash is stored. */
  token?: string;
}

export class RateLimits {
  private readonly pool: pg.Pool;
  private readonly limiters: Record<LimitKind, RateLimiterPostgres>;

  constructor(databaseUrl: string, config: AuthConfig["rateLimit"], log: Logger) {
    // A small pool of its own: a counter update is one statement, outside the RPC's transaction.
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
    this.pool.on("error", (error) => log.warn({ err: error.message }, "rate limit store connection failed"));
    const limiter = (keyPrefix: string, points: number) =>
      new RateLimiterPostgres({
        storeClient: this.pool,
        storeType: "pool",
        tableName: "rate_limits",
        tableCreated: true, // by Auth's migration
        keyPrefix,
        points,
        duration: config.windowMs / 1000,
      });
    this.limiters = {
      ip: limiter("ip", config.perIp),
      email: limiter("email", config.perEmail),
      token: limiter("token", config.perToken),
      resetEmail: limiter("reset-email", config.resetsPerEmail),
    };
  }

  /** Counts one call against `kind`'s key; the ms to wait when it is over the limit, else undefined. */
  async take(kind: LimitKind, key: string): Promise<number | undefined> {
    try {
      await this.limiters[kind].consume(key);
      return undefined;
    } catch (outcome) {
      if (outcome instanceof RateLimiterRes) return Math.max(outcome.msBeforeNext, 1);
      throw unavailable(`rate limits cannot be checked right now (${(outcome as Error).message}); retry shortly`, "RATE_LIMIT_UNAVAILABLE", 1000);
    }
  }

  /**
   * Counts the call against each key given (client IP, email, token) and fails with
   * RESOURCE_EXHAUSTED, reason RATE_LIMITED and a RetryInfo, when any is over its limit.
   */
  async enforce(check: RateLimitCheck): Promise<void> {
    const waits = await Promise.all([
      check.ip ? this.take("ip", ipKey(check.ip)) : undefined,
      check.email ? this.take("email", check.email) : undefined,
      check.token ? this.take("token", createHash("sha256").update(check.token).digest("base64url")) : undefined,
    ]);
    const wait = Math.max(0, ...waits.map((w) => w ?? 0));
    if (wait > 0) {
      throw domainError(Code.ResourceExhausted, `too many attempts; retry in ${Math.ceil(wait / 1000)} s`, { reason: "RATE_LIMITED", retryAfterMs: wait });
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The one call handlers make: `await enforceRateLimit(rt.limits, { ip: client.ip, email })`. */
export function enforceRateLimit(limits: RateLimits, check: RateLimitCheck): Promise<void> {
  return limits.enforce(check);
}

/** IPv6 clients are limited per /64, the smallest block a subscriber is given; IPv4 per address. */
export function ipKey(ip: string): string {
  if (!ip.includes(":")) return ip;
  const [head = "", tail = ""] = ip.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = ip.includes("::") ? [...left, ...Array(8 - left.length - right.length).fill("0"), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}
