/**
 * The Order service's own settings (the kit's config covers ports, database,
 * NATS and limits). Checked at start, all problems reported at once.
 *
 * - ORDER_TAX_RATES: the tax table, comma-separated `<where>=<basis points>`
 *   entries; `<where>` is a country ("DE"), a country and region ("US-CA",
 *   matched against the address's `state`, case-insensitively) or "*" (every
 *   other destination). 1900 = 19 %. Default
 *   "DE=1900,FR=2000,NL=2100,GB=2000,US=0,US-CA=725,US-NY=400,*=0".
 *   A region entry beats its country's, which beats "*".
 * - ORDER_RESERVATION_TTL_S: how long checkout holds stock (ReserveStock's
 *   ttl), 60..3600, default 900.
 * - ORDER_CAPTURE: "shipment" (default: the authorization is captured when
 *   the order ships, on shipment.created/shipped) or "checkout" (captured at
 *   once by PlaceOrder).
 * - ORDER_CHECKOUT_LEASE_MS: how long a running checkout is considered alive
 *   without progress (each step renews it); after that the recovery job, or a
 *   retry with the same idempotency key, takes it over. Default 30000.
 * - ORDER_RECOVERY_EVERY_MS: how often the recovery job looks for checkouts
 *   left mid-way; default 10000.
 * - ORDER_CHECKOUT_TIMEOUT_MS: a checkout left mid-way (nobody resumed it with
 *   the same key) is discarded with every compensation once it is this old;
 *   an asynchronous payment still pending then is voided. Default 1800000
 *   (30 minutes, the contract's).
 * - ORDER_WATCH_POLL_MS: how often WatchOrder looks at the order; default 250.
 * - ORDER_TEST_HALT_AFTER_STEP: test only (refused with NODE_ENV=production):
 *   PlaceOrder stops dead after recording this step as done (or, written
 *   "<step>:started", after recording its start, before the peer call), as if
 *   the process died there: it answers UNAVAILABLE and writes nothing more;
 *   see recovery.test.ts.
 */
import { type Env, EnvReader } from "../../kit/env.ts";

export interface TaxRule {
  country: string;
  region?: string;
  bps: number;
}

export interface OrderConfig {
  taxRules: TaxRule[];
  reservationTtlS: number;
  captureOn: "shipment" | "checkout";
  leaseMs: number;
  recoveryEveryMs: number;
  checkoutTimeoutMs: number;
  watchPollMs: number;
  haltAfterStep: string | undefined;
}

export const defaultTaxRates = "DE=1900,FR=2000,NL=2100,GB=2000,US=0,US-CA=725,US-NY=400,*=0";

export function parseTaxRates(raw: string, problem: (m: string) => void): TaxRule[] {
  const rules: TaxRule[] = [];
  for (const entry of raw.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\*|[A-Z]{2})(?:-([A-Za-z0-9 ]{1,40}))?=(\d{1,5})$/.exec(entry);
    if (!m || Number(m[3]) > 10_000 || (m[1] === "*" && m[2])) {
      problem(`ORDER_TAX_RATES entry "${entry}" must be <COUNTRY>[-<REGION>]=<basis points 0..10000> or *=<basis points>`);
      continue;
    }
    rules.push({ country: m[1]!, region: m[2]?.toUpperCase(), bps: Number(m[3]) });
  }
  return rules;
}

export function loadOrderConfig(env: Env = process.env): OrderConfig {
  const r = new EnvReader(env);
  const taxRules = parseTaxRates(r.string("ORDER_TAX_RATES", defaultTaxRates), (m) => r.problem(m));
  const reservationTtlS = r.int("ORDER_RESERVATION_TTL_S", 900, 60, 3600);
  const captureOn = r.oneOf("ORDER_CAPTURE", "shipment", ["shipment", "checkout"] as const);
  const leaseMs = r.int("ORDER_CHECKOUT_LEASE_MS", 30_000, 100, 3_600_000);
  const recoveryEveryMs = r.int("ORDER_RECOVERY_EVERY_MS", 10_000, 50, 3_600_000);
  const checkoutTimeoutMs = r.int("ORDER_CHECKOUT_TIMEOUT_MS", 1_800_000, 100, 86_400_000);
  const watchPollMs = r.int("ORDER_WATCH_POLL_MS", 250, 20, 10_000);
  const halt = r.string("ORDER_TEST_HALT_AFTER_STEP", "");
  if (halt && r.production) r.problem("ORDER_TEST_HALT_AFTER_STEP is a test setting and is refused in production");
  return r.done({ taxRules, reservationTtlS, captureOn, leaseMs, recoveryEveryMs, checkoutTimeoutMs, watchPollMs, haltAfterStep: halt || undefined }, "order service configuration");
}

/** The rate of a destination in basis points: region entry, else country, else "*", else 0. */
export function taxRateOf(rules: TaxRule[], country: string, region: string): number {
  const reg = region.trim().toUpperCase();
  return (
    rules.find((t) => t.country === country && t.region !== undefined && t.region === reg)?.bps ??
    rules.find((t) => t.country === country && t.region === undefined)?.bps ??
    rules.find((t) => t.country === "*")?.bps ??
    0
  );
}
