/**
 * Auth's per-process state, shared by its routes, its key source, its own
 * service credential and its jobs: config, signing keys, password hasher,
 * service credentials and rate limiters. One per running service (keyed by
 * its ORM), so tests can run several.
 */
import type { MikroORM } from "@mikro-orm/postgresql";
import type { ServiceConfig } from "../../kit/config.ts";
import type { Logger } from "../../kit/logger.ts";
import { type AuthConfig, loadAuthConfig } from "./config.ts";
import { KeyStore } from "./keys.ts";
import { PasswordHasher } from "./passwords.ts";
import { RateLimits } from "./rate-limit.ts";
import { ServiceCredentialStore } from "./service-credentials.ts";

export interface AuthRuntime {
  config: AuthConfig;
  keys: KeyStore;
  passwords: PasswordHasher;
  services: ServiceCredentialStore;
  limits: RateLimits;
}

const runtimes = new WeakMap<MikroORM, AuthRuntime>();

export function authRuntime(ctx: { orm: MikroORM; log: Logger; config: ServiceConfig }): AuthRuntime {
  let rt = runtimes.get(ctx.orm);
  if (!rt) {
    const config = loadAuthConfig();
    rt = {
      config,
      keys: new KeyStore(ctx.orm, config, ctx.log),
      passwords: new PasswordHasher(config.argon2),
      services: new ServiceCredentialStore(config.serviceCredentials),
      // Auth's own database: the counters are shared by every replica.
      limits: new RateLimits(ctx.config.databaseUrl, config.rateLimit, ctx.log),
    };
    runtimes.set(ctx.orm, rt);
  }
  return rt;
}
