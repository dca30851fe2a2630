/**
 * Rate limits shared by every replica of a service: counters live in the
 * service's own database (table rate_limits, a kit migration) through
 * rate-limiter-flexible's PostgreSQL store, in fixed windows. A service declares
 * per-client limits on its RPCs in `rateLimits` (the kit's interceptor counts each
 * call against the client address of kit/client-address.ts, so a forged
 * X-Forwarded-For neither escapes a limit nor moves it onto someone else);
 * Auth also counts per email and per token through the same class.
 * A limited call is RESOURCE_EXHAUSTED, reason RATE_LIMITED, with a RetryInfo.
 */
import { createHash } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, type ContextValues } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import pg from "pg";
import { RateLimiterPostgres, RateLimiterRes } from "rate-limiter-flexible";
import { clientAddressOf } from "./client-address.ts";
import type { MigrationEntry } from "./db.ts";
import { domainError, unavailable } from "./errors.ts";
import type { Logger } from "./logger.ts";

export interface LimitRule {
  /** Calls allowed per key and window. */
  points: number;
  windowMs: number;
}

/** A per-client limit on some RPCs of a service (their local names, e.g. "addItem"), counted together. */
export interface RpcRateLimit extends LimitRule {
  name: string;
  methods: string[];
}

export class RateLimits<Kind extends string> {
  private readonly pool: pg.Pool;
  private readonly limiters: Record<Kind, RateLimiterPostgres>;

  constructor(databaseUrl: string, rules: Record<Kind, LimitRule>, log: Logger) {
    // A small pool of its own: a counter update is one statement, outside the RPC's transaction.
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
    this.pool.on("error", (error) => log.warn({ err: error.message }, "rate limit store connection failed"));
    this.limiters = Object.fromEntries(
      Object.entries<LimitRule>(rules).map(([kind, rule]) => [
        kind,
        new RateLimiterPostgres({
          storeClient: this.pool,
          storeType: "pool",
          tableName: "rate_limits",
          tableCreated: true, // by the kit's migration
          keyPrefix: kind,
          points: rule.points,
          duration: rule.windowMs / 1000,
        }),
      ]),
    ) as Record<Kind, RateLimiterPostgres>;
  }

  /** Counts one call against `kind`'s key; the ms to wait when it is over the limit, else undefined. */
  async take(kind: Kind, key: string): Promise<number | undefined> {
    try {
      await this.limiters[kind].consume(key);
      return undefined;
    } catch (outcome) {
      if (outcome instanceof RateLimiterRes) return Math.max(outcome.msBeforeNext, 1);
      throw unavailable(`rate limits cannot be checked right now (${(outcome as Error).message}); retry shortly`, "RATE_LIMIT_UNAVAILABLE", 1000);
    }
  }

  /** Counts the call against every key given; RESOURCE_EXHAUSTED (RATE_LIMITED, RetryInfo) when any is over its limit. */
  async enforce(keys: Partial<Record<Kind, string | undefined>>): Promise<void> {
    const waits = await Promise.all(Object.entries(keys).map(([kind, key]) => (key ? this.take(kind as Kind, key as string) : undefined)));
    const wait = Math.max(0, ...waits.map((w) => w ?? 0));
    if (wait > 0) {
      throw domainError(Code.ResourceExhausted, `too many attempts; retry in ${Math.ceil(wait / 1000)} s`, { reason: "RATE_LIMITED", retryAfterMs: wait });
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
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

/** A secret the caller presents (a token) as a key: only its hash is stored. */
export function secretKey(secret: string): string {
  return createHash("sha256").update(secret).digest("base64url");
}

/**
 * Per method, the check that counts a call of a limited RPC against its client address (one
 * counter per limit, shared by its methods); undefined for RPCs without a limit.
 */
export function rateLimitChecks(limits: RateLimits<string>, rules: readonly RpcRateLimit[]): (method: DescMethod) => ((req: { contextValues: ContextValues; header: Headers }) => Promise<void>) | undefined {
  const byMethod = new Map<string, string[]>();
  for (const rule of rules) for (const m of rule.methods) byMethod.set(m, [...(byMethod.get(m) ?? []), rule.name]);
  return (method) => {
    const names = byMethod.get(method.localName);
    if (!names) return undefined;
    return (req) => {
      const client = ipKey(clientAddressOf(req));
      return limits.enforce(Object.fromEntries(names.map((n) => [n, client])));
    };
  };
}

/** The rate_limits table (the columns rate-limiter-flexible's PostgreSQL store uses), in every service's database. */
export const rateLimitsMigration: MigrationEntry = {
  name: "0000_kit_v3_rate_limits",
  class: class KitRateLimits extends Migration {
    override async up(): Promise<void> {
      // "if not exists": Auth created the same table in its own migration before the kit did.
      this.addSql("create table if not exists rate_limits (key varchar(255) primary key, points integer not null default 0, expire bigint)");
      this.addSql("create index if not exists rate_limits_expire on rate_limits (expire)");
    }
  },
};
