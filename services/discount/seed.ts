/**
 * Demo promotions and coupons for the seeded catalog (`npm run seed` runs this
 * after the product seed; `node services/discount/seed.ts` runs it alone):
 *
 * - "10% off Clothing": automatic, every product in the Clothing department
 *   (category rule on the department; cart snapshots list ancestors).
 * - "Free shipping over 75 USD": automatic, min subtotal 75.00 USD.
 * - "Buy 2 T-shirts, get 1 free": code B2G1, the cheapest of every three T-shirts.
 * - "Welcome: 10 USD off your first order": code WELCOME10, once per customer,
 *   first order, min subtotal 50.00 USD.
 *
 * Category ids come from the product seed's generator (deterministic), so the
 * rules match the seeded catalog. Fixed ids and `on conflict do nothing` make
 * it idempotent: a second run changes nothing. Applies the service's
 * migrations first, as the service does.
 *
 *   DATABASE_URL  the discount database (default: the kit's, postgres://postgres@127.0.0.1:5432/discount_db)
 */
import { loadConfig } from "../../kit/config.ts";
import { seedService } from "../../kit/seed.ts";
import { generateCatalog, seedCurrency } from "../product/seed.ts";
import { discountService } from "./service.ts";

const id = (n: number) => `01940000-0000-7000-8000-${n.toString(16).padStart(12, "0")}`;

interface DemoPromotion {
  id: string;
  name: string;
  description: string;
  type: string;
  percent_off_bps?: number;
  amount_off_minor?: bigint;
  bxgy?: [number, number, number, number];
  is_automatic: boolean;
  priority: number;
  stackable: boolean;
  rules: [string, unknown][];
  coupon?: { id: string; code: string; usage_limit_per_user: number };
}

export function demoPromotions(): DemoPromotion[] {
  const categories = generateCatalog(0).categories!;
  const category = (name: string) => categories.find((c) => c.name === name)!.id as string;
  return [
    {
      id: id(1),
      name: "10% off Clothing",
      description: "Every item in Clothing is 10% off, automatically.",
      type: "percentage",
      percent_off_bps: 1000,
      is_automatic: true,
      priority: 20,
      stackable: true,
      rules: [["category_ids", { ids: [category("Clothing")] }]],
    },
    {
      id: id(2),
      name: "Free shipping over 75 USD",
      description: "Orders of 75.00 USD or more ship free.",
      type: "free_shipping",
      is_automatic: true,
      priority: 10,
      stackable: true,
      rules: [["min_subtotal", { amount_minor: "7500" }]],
    },
    {
      id: id(3),
      name: "Buy 2 T-shirts, get 1 free",
      description: "With code B2G1 the cheapest of every three T-shirts is free.",
      type: "buy_x_get_y",
      bxgy: [2, 1, 10_000, 0],
      is_automatic: false,
      priority: 30,
      stackable: true,
      rules: [["category_ids", { ids: [category("T-Shirts")] }]],
      coupon: { id: id(101), code: "B2G1", usage_limit_per_user: 0 },
    },
    {
      id: id(4),
      name: "Welcome: 10 USD off your first order",
      description: "With code WELCOME10, 10.00 USD off a first order of 50.00 USD or more.",
      type: "fixed_amount",
      amount_off_minor: 1000n,
      is_automatic: false,
      priority: 0,
      stackable: true,
      rules: [
        ["first_order", { first_order: true }],
        ["min_subtotal", { amount_minor: "5000" }],
      ],
      coupon: { id: id(102), code: "WELCOME10", usage_limit_per_user: 1 },
    },
  ];
}

/** Loads the demo promotions into the discount database at `url`; the number of promotions written (0 when present). */
export function seedDiscounts(url: string): Promise<number> {
  return seedService(discountService, url, async (client) => {
    let written = 0;
    for (const [i, p] of demoPromotions().entries()) {
      const inserted = await client.query(
        `insert into promotions (id, name, description, type, percent_off_bps, amount_off_minor, buy_quantity, get_quantity, get_discount_bps, max_applications,
                                 currency, is_automatic, priority, stackable, is_active)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, true) on conflict (id) do nothing`,
        [p.id, p.name, p.description, p.type, p.percent_off_bps ?? null, p.amount_off_minor ?? null, ...(p.bxgy ?? [null, null, null, null]),
          p.type === "fixed_amount" || p.rules.some(([t]) => t === "min_subtotal") ? seedCurrency : null, p.is_automatic, p.priority, p.stackable],
      );
      if (inserted.rowCount === 0) continue;
      written++;
      for (const [k, [type, value]] of p.rules.entries()) {
        await client.query("insert into discount_rules (id, promotion_id, rule_type, value) values ($1, $2, $3, $4::jsonb)", [id(1000 + i * 10 + k), p.id, type, JSON.stringify(value)]);
      }
      if (p.coupon) {
        await client.query("insert into coupons (id, code, promotion_id, usage_limit_per_user) values ($1, $2, $3, $4) on conflict do nothing", [
          p.coupon.id,
          p.coupon.code,
          p.id,
          p.coupon.usage_limit_per_user,
        ]);
      }
    }
    return written;
  });
}

/** For the seed CLIs: seeds the database of the kit's configuration and says what it did. */
export async function seedDiscountsCli(say: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Promise<void> {
  const written = await seedDiscounts(loadConfig("discount").databaseUrl);
  say(written > 0 ? `discount seed: ${written} demo promotions (codes B2G1, WELCOME10)` : "discount seed: demo promotions already present");
}

if (import.meta.main) {
  await seedDiscountsCli().catch((error: unknown) => {
    console.error(`discount seed failed: ${(error as Error).message}`);
    process.exit(1);
  });
}
