/**
 * Auth's own settings, from environment variables, checked at start like the
 * kit's config: every bad value is reported at once, and the defaults are the
 * contract's (15 min access tokens, 30 day refresh tokens, 5 failures lock for
 * 15 min...) and work locally without any setting.
 */
import { createHash } from "node:crypto";
import { type Env, EnvReader } from "../../kit/env.ts";
import { eventKey } from "../../kit/events/sealed.ts";

export interface AuthConfig {
  accessTokenTtlMs: number;
  refreshTokenTtlMs: number;
  serviceTokenTtlMs: number;
  emailVerificationTtlMs: number;
  passwordResetTtlMs: number;
  /** Least time between two verification emails of one user (ResendVerification). */
  verificationResendIntervalMs: number;
  maxFailedLogins: number;
  lockoutMs: number;
  keys: {
    /** AES-256-GCM key that encrypts the signing keys' private halves at rest. */
    encryptionKey: Buffer;
    /** A signing key is replaced once it has signed for this long. */
    rotationMs: number;
    /** A new key is published this long before it signs (at least one verifier cache period). */
    publishLeadMs: number;
    /** Extra time a retired key stays listed after the last token it signed expired (clock skew). */
    retireGraceMs: number;
    /** How often the key ring is checked for rotation and reloaded. */
    checkIntervalMs: number;
  };
  /** Fixed-window limits shared by all replicas (rate-limit.ts; keys per RPC in README.md). */
  rateLimit: {
    windowMs: number;
    /** Calls of the public RPCs per client IP address (IPv6: per /64) per window. */
    perIp: number;
    /** Calls naming one email address (Register, Login) per window. */
    perEmail: number;
    /** Calls presenting one token (RefreshToken, Logout, VerifyEmail, ResetPassword) per window. */
    perToken: number;
    /** Reset emails sent to one address per window; further requests succeed without sending. */
    resetsPerEmail: number;
  };
  argon2: { memoryKib: number; timeCost: number; parallelism: number };
  /** Raw SERVICE_CREDENTIALS (`name:argon2id-hash,...`); empty means the development secrets. */
  serviceCredentials: string;
}

/** Development default of AUTH_KEY_ENCRYPTION_KEY (its base64); refused in production. */
export const developmentKeyEncryptionKey = createHash("sha256").update("ecommerce-auth development key encryption key").digest("base64");

const minute = 60_000;
const day = 24 * 60 * minute;

export function loadAuthConfig(env: Env = process.env): AuthConfig {
  const r = new EnvReader(env);
  const developmentKey = Buffer.from(developmentKeyEncryptionKey, "base64");
  const encryptionKey = r.key("AUTH_KEY_ENCRYPTION_KEY", developmentKey);
  // Set explicitly to the public development value: as good as unset.
  if (r.production && env.AUTH_KEY_ENCRYPTION_KEY && encryptionKey.equals(developmentKey)) {
    r.problem("AUTH_KEY_ENCRYPTION_KEY must be set in production (it is the development default)");
  }
  if (r.production && !env.SERVICE_CREDENTIALS) r.problem("SERVICE_CREDENTIALS must be set in production (the default accepts the development secrets)");
  // Auth seals the tokens of its verification and reset events for Notification: a missing or
  // bad key must stop the start, not fail Register later (kit/events/sealed.ts decides what is valid).
  try {
    eventKey("notification", env);
  } catch (error) {
    r.problem((error as Error).message);
  }
  const config: AuthConfig = {
    accessTokenTtlMs: r.int("AUTH_ACCESS_TOKEN_TTL_MS", 15 * minute, 1_000, day),
    refreshTokenTtlMs: r.int("AUTH_REFRESH_TOKEN_TTL_MS", 30 * day, 10_000, 365 * day),
    serviceTokenTtlMs: r.int("AUTH_SERVICE_TOKEN_TTL_MS", 5 * minute, 1_000, day),
    emailVerificationTtlMs: r.int("AUTH_EMAIL_VERIFICATION_TTL_MS", day, 1_000, 30 * day),
    passwordResetTtlMs: r.int("AUTH_PASSWORD_RESET_TTL_MS", 60 * minute, 1_000, day),
    verificationResendIntervalMs: r.int("AUTH_VERIFICATION_RESEND_INTERVAL_MS", minute, 0, day),
    maxFailedLogins: r.int("AUTH_MAX_FAILED_LOGINS", 5, 1, 1000),
    lockoutMs: r.int("AUTH_LOCKOUT_MS", 15 * minute, 100, 30 * day),
    keys: {
      encryptionKey,
      rotationMs: r.int("AUTH_KEY_ROTATION_MS", 30 * day, 1_000, 365 * day),
      publishLeadMs: r.int("AUTH_KEY_PUBLISH_LEAD_MS", 10 * minute, 0, 7 * day),
      retireGraceMs: r.int("AUTH_KEY_RETIRE_GRACE_MS", minute, 0, day),
      checkIntervalMs: r.int("AUTH_KEY_CHECK_INTERVAL_MS", minute, 100, day),
    },
    rateLimit: {
      windowMs: r.int("AUTH_RATE_LIMIT_WINDOW_MS", minute, 1_000, day),
      perIp: r.int("AUTH_RATE_LIMIT_PER_IP", 300, 1, 1_000_000),
      perEmail: r.int("AUTH_RATE_LIMIT_PER_EMAIL", 30, 1, 1_000_000),
      perToken: r.int("AUTH_RATE_LIMIT_PER_TOKEN", 10, 1, 1_000_000),
      resetsPerEmail: r.int("AUTH_RATE_LIMIT_RESETS_PER_EMAIL", 3, 1, 1_000_000),
    },
    argon2: {
      memoryKib: r.int("AUTH_ARGON2_MEMORY_KIB", 19_456, 1_024, 4_194_304),
      timeCost: r.int("AUTH_ARGON2_TIME_COST", 2, 1, 100),
      parallelism: r.int("AUTH_ARGON2_PARALLELISM", 1, 1, 255),
    },
    serviceCredentials: r.string("SERVICE_CREDENTIALS", ""),
  };
  return r.done(config, "auth service configuration");
}
