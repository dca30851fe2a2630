/**
 * Auth's per-process state, shared by its routes, its key source, its own
 * service credential and its jobs: config, signing keys, password hasher,
 * service credentials and rate limiters. One per running service (tests run several).
 */
import { sealForConsumer } from "../../kit/events/sealed.ts";
import type { BaseContext } from "../../kit/server.ts";
import { type AuthConfig, loadAuthConfig } from "./config.ts";
import { KeyStore } from "./keys.ts";
import { PasswordHasher } from "./passwords.ts";
import { type AuthRateLimits, authRateLimits } from "./rate-limit.ts";
import { ServiceCredentialStore } from "./service-credentials.ts";

export interface AuthRuntime {
  config: AuthConfig;
  keys: KeyStore;
  passwords: PasswordHasher;
  services: ServiceCredentialStore;
  limits: AuthRateLimits;
  /** Seals a secret of an event for Notification, with EVENT_KEY_NOTIFICATION of Auth's environment (checked at start). */
  sealForNotification(plaintext: string, boundTo: string): Uint8Array;
}

/** Auth's state, built once by its `setup` from the settings in `ctx.env`. */
export function createAuthRuntime(ctx: BaseContext): AuthRuntime {
  const config = loadAuthConfig(ctx.env);
  return {
    config,
    keys: new KeyStore(ctx.orm, config, ctx.log),
    passwords: new PasswordHasher(config.argon2),
    services: new ServiceCredentialStore(config.serviceCredentials),
    // Auth's own database: the counters are shared by every replica.
    limits: authRateLimits(ctx.config.databaseUrl, config.rateLimit, ctx.log),
    sealForNotification: (plaintext, boundTo) => sealForConsumer("notification", plaintext, boundTo, ctx.env),
  };
}
