/**
 * In-process rate limits of the unauthenticated RPCs (token buckets per client
 * IP address and per email). Per replica: with N replicas the effective limit
 * is up to N times higher, which is acceptable for slowing guessers (the
 * lockout is the hard stop and lives in the database).
 */
import { Code } from "@connectrpc/connect";
import { domainError } from "../../kit/errors.ts";

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly capacity: number;
  private readonly refillPerMs: number;
  private lastSweep = Date.now();
  private readonly windowMs: number;

  /** Allows `limit` calls per `windowMs`, refilled smoothly. */
  constructor(limit: number, windowMs: number) {
    this.capacity = limit;
    this.windowMs = windowMs;
    this.refillPerMs = limit / windowMs;
  }

  /** Takes one call from `key`'s bucket; returns the ms to wait when it is empty. */
  take(key: string): number | undefined {
    const now = Date.now();
    this.sweep(now);
    const b = this.buckets.get(key) ?? { tokens: this.capacity, updatedAt: now };
    b.tokens = Math.min(this.capacity, b.tokens + (now - b.updatedAt) * this.refillPerMs);
    b.updatedAt = now;
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return undefined;
    }
    return Math.ceil((1 - b.tokens) / this.refillPerMs);
  }

  /** Forgets full buckets now and then, so memory stays bounded by recent callers. */
  private sweep(now: number): void {
    if (now - this.lastSweep < this.windowMs) return;
    this.lastSweep = now;
    for (const [key, b] of this.buckets) {
      if (b.tokens + (now - b.updatedAt) * this.refillPerMs >= this.capacity) this.buckets.delete(key);
    }
  }
}

export interface RateLimits {
  perIp: RateLimiter;
  perEmail: RateLimiter;
}

/**
 * RESOURCE_EXHAUSTED (RATE_LIMITED, RetryInfo) when the client's IP or the
 * email is over its limit. Calls without a client IP come from inside the mesh
 * (the edge always sets X-Forwarded-For) and are limited per email only.
 */
export function enforceRateLimit(limits: RateLimits, ip: string, email?: string): void {
  const waits = [ip ? limits.perIp.take(`ip:${ip}`) : undefined, email ? limits.perEmail.take(`email:${email}`) : undefined];
  const wait = Math.max(...waits.map((w) => w ?? 0));
  if (wait > 0) {
    throw domainError(Code.ResourceExhausted, `too many attempts; retry in ${Math.ceil(wait / 1000)} s`, { reason: "RATE_LIMITED", retryAfterMs: wait });
  }
}
