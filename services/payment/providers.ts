/**
 * The configured providers by name. A real provider is one more entry here
 * (its settings in config.ts); the domain only sees `PaymentProvider`.
 */
import { invalidArgument } from "../../kit/errors.ts";
import type { Logger } from "../../kit/logger.ts";
import type { PaymentConfig } from "./config.ts";
import type { PaymentProvider } from "./provider.ts";
import { SandboxProvider } from "./sandbox.ts";

export class Providers {
  private readonly byName = new Map<string, PaymentProvider>();
  constructor(config: PaymentConfig, log: Logger) {
    this.byName.set("sandbox", new SandboxProvider(config.sandbox, log));
    this.defaultName = config.provider;
  }
  readonly defaultName: string;

  /** The provider `name` (default: PAYMENT_PROVIDER); INVALID_ARGUMENT PROVIDER_NOT_CONFIGURED otherwise. */
  get(name: string | undefined, field = "payment_token.provider"): PaymentProvider {
    const provider = this.byName.get(name || this.defaultName);
    if (!provider) throw invalidArgument(field, `provider "${name}" is not configured here; use one of the configured providers`, "PROVIDER_NOT_CONFIGURED");
    return provider;
  }
}
