/**
 * Demo carriers, shipping methods and rates for the seeded catalog, which sells
 * in USD (`npm run seed` runs this after the product seed;
 * `node services/shipping/seed.ts` runs it alone):
 *
 * - carrier "sandbox" (the built-in provider, so labels and webhooks work
 *   locally) with Standard (3-5 days) and Express (1-2 days);
 * - Standard: US 5.95 below 2 kg, 9.95 from 2 kg, free from 75.00; CA and MX
 *   14.95; every other country 24.95;
 * - Express: US only, 19.95 below 5 kg, from a subtotal of 20.00.
 *
 * Fixed ids and `on conflict do nothing` make it idempotent: a second run
 * changes nothing. Applies the service's migrations first, as the service does.
 *
 *   DATABASE_URL  the shipping database (default: the kit's, postgres://postgres@127.0.0.1:5432/shipping_db)
 */
import { loadConfig } from "../../kit/config.ts";
import { seedService } from "../../kit/seed.ts";
import { seedCurrency } from "../product/seed.ts";
import { shippingService } from "./service.ts";

const id = (n: number) => `01940000-0000-7000-8001-${n.toString(16).padStart(12, "0")}`;

export const seedCarrierId = id(1);
export const seedStandardMethodId = id(11);
export const seedExpressMethodId = id(12);

interface DemoRate {
  method: string;
  countries: string[];
  min: number;
  max: number | null;
  minSubtotal: bigint | null;
  price: bigint;
  freeAbove: bigint | null;
}

const demoRates: DemoRate[] = [
  { method: seedStandardMethodId, countries: ["US"], min: 0, max: 2000, minSubtotal: null, price: 595n, freeAbove: 7500n },
  { method: seedStandardMethodId, countries: ["US"], min: 2000, max: null, minSubtotal: null, price: 995n, freeAbove: 7500n },
  { method: seedStandardMethodId, countries: ["CA", "MX"], min: 0, max: null, minSubtotal: null, price: 1495n, freeAbove: null },
  { method: seedStandardMethodId, countries: [], min: 0, max: null, minSubtotal: null, price: 2495n, freeAbove: null },
  { method: seedExpressMethodId, countries: ["US"], min: 0, max: 5000, minSubtotal: 2000n, price: 1995n, freeAbove: null },
];

/** Loads the demo carrier, methods and rates into the database at `url`; the number of rows written (0 when present). */
export function seedShipping(url: string): Promise<number> {
  return seedService(shippingService, url, async (client) => {
    let written = 0;
    const count = async (text: string, params: unknown[]) => (written += (await client.query(text, params)).rowCount ?? 0);
    await count(
      `insert into carriers (id, code, name, tracking_url_template, is_active) values ($1, 'sandbox', 'Sandbox Parcel', 'https://track.example.com/sandbox/{tracking_number}', true)
        on conflict do nothing`,
      [seedCarrierId],
    );
    await count(
      `insert into shipping_methods (id, carrier_id, code, name, description, min_days, max_days, is_active) values
        ($1, $3, 'standard', 'Standard (3-5 days)', 'Tracked parcel delivery', 3, 5, true),
        ($2, $3, 'express', 'Express (1-2 days)', 'Next-day delivery in most of the US', 1, 2, true)
        on conflict do nothing`,
      [seedStandardMethodId, seedExpressMethodId, seedCarrierId],
    );
    for (const [i, r] of demoRates.entries()) {
      await count(
        `insert into shipping_rates (id, method_id, countries, min_weight_grams, max_weight_grams, min_subtotal_minor, price_minor, currency, free_above_minor)
          values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict do nothing`,
        [id(100 + i), r.method, r.countries, r.min, r.max, r.minSubtotal, r.price, seedCurrency, r.freeAbove],
      );
    }
    return written;
  });
}

/** For the seed CLIs: seeds the database of the kit's configuration and says what it did. */
export async function seedShippingCli(say: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Promise<void> {
  const written = await seedShipping(loadConfig("shipping").databaseUrl);
  say(written > 0 ? `shipping seed: carrier sandbox with standard and express rates (${written} rows)` : "shipping seed: demo carriers already present");
}

if (import.meta.main) {
  await seedShippingCli().catch((error: unknown) => {
    console.error(`shipping seed failed: ${(error as Error).message}`);
    process.exit(1);
  });
}
