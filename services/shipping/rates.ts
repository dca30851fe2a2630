/**
 * Rate selection (GetShippingRates for the storefront, QuoteShippingRate for
 * Order's checkout), as the contract describes it: per live method, the rates
 * in the currency whose weight band holds the total weight and whose
 * min_subtotal the subtotal reaches; a rate naming the destination beats an
 * every-country rate; then the lowest price after free_above wins. One
 * statement picks the winner of every method (distinct on).
 *
 * The weights are the catalog's (catalogWeighed: one BatchGetProducts per 100
 * products, within SHIPPING_CATALOG_TIMEOUT_MS), so a caller cannot lower a
 * parcel's price by declaring less; a request's weight_grams counts only for a
 * line the catalog has no weight for (see the README).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { v7 as uuidv7 } from "uuid";
import type { Money } from "../../gen/ecommerce/common/v1/money_pb.js";
import {
  type GetShippingRatesRequest,
  type QuoteShippingRateRequest,
  type RateItem,
  type ShippingQuote,
  ShippingQuoteSchema,
} from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import type { Client } from "@connectrpc/connect";
import type { Product, ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition, invalidArgument } from "../../kit/errors.ts";
import { money, moneyOrUndefined } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";
import { findMethod } from "./carriers.ts";
import { ShippingQuoteEntity } from "./entities.ts";

/** The most a parcel's total weight may be (the contract's item limits allow more than int32 grams). */
const maxTotalGrams = 2_147_483_647;

/** What a rate is computed from per line: the units and one unit's weight. */
export type WeighedItem = Pick<RateItem, "productId" | "quantity" | "weightGrams">;

/** Largest id list BatchGetProducts takes. */
const batchLimit = 100;

/**
 * The lines with each unit's weight from the catalog: the product's
 * weight_grams when the catalog has one (above 0), whatever the request said;
 * the request's weight_grams otherwise (the catalog does not know the weight,
 * or does not show the product to us: not ACTIVE, hidden, unknown, which
 * nothing can be ordered with). The catalog not answering in time fails the
 * call (UNAVAILABLE or DEADLINE_EXCEEDED naming the product service), never
 * falls back to the caller's weights.
 */
export async function catalogWeighed(products: Client<typeof ProductService>, timeoutMs: number, items: readonly RateItem[]): Promise<WeighedItem[]> {
  const ids = [...new Set(items.map((i) => i.productId))];
  const catalog = new Map<string, Product>();
  for (let i = 0; i < ids.length; i += batchLimit) {
    const answer = await products.batchGetProducts({ ids: ids.slice(i, i + batchLimit) }, { timeoutMs });
    for (const p of answer.products) catalog.set(p.id, p);
  }
  return items.map((item) => {
    const grams = catalog.get(item.productId)?.weightGrams ?? 0;
    return { productId: item.productId, quantity: item.quantity, weightGrams: grams > 0 ? grams : item.weightGrams };
  });
}

export function totalWeightOf(items: readonly WeighedItem[]): number {
  const total = items.reduce((sum, i) => sum + i.weightGrams * i.quantity, 0);
  if (total > maxTotalGrams) throw invalidArgument("items", `weigh ${total} g together, more than any parcel (${maxTotalGrams} g); split the shipment`, "PARCEL_TOO_HEAVY");
  return total;
}

interface QuoteRow {
  method_id: string;
  method_code: string;
  method_name: string;
  method_description: string;
  min_days: number;
  max_days: number;
  carrier_id: string;
  carrier_code: string;
  carrier_name: string;
  rate_id: string;
  price_minor: string;
  free_above_minor: string | null;
  free: boolean;
}

/** The winning rate of each live method (or of one method) for a destination, weight and subtotal. */
async function quoteRows(em: EntityManager, country: string, weight: number, subtotal: Money, methodId: string | null): Promise<QuoteRow[]> {
  return sqlOf(em).all<QuoteRow>(
    `select * from (
       select distinct on (m.id)
         m.id as method_id, m.code as method_code, m.name as method_name, m.description as method_description, m.min_days, m.max_days,
         c.id as carrier_id, c.code as carrier_code, c.name as carrier_name,
         r.id as rate_id, r.price_minor, r.free_above_minor,
         coalesce(r.free_above_minor <= $3, false) as free
       from shipping_methods m
       join carriers c on c.id = m.carrier_id
       join shipping_rates r on r.method_id = m.id
       where m.is_active and c.is_active and ($5::uuid is null or m.id = $5::uuid)
         and r.currency = $4
         and r.min_weight_grams <= $2 and (r.max_weight_grams is null or $2 < r.max_weight_grams)
         and (r.min_subtotal_minor is null or r.min_subtotal_minor <= $3)
         and (r.countries = '{}' or $1 = any(r.countries))
       order by m.id, ($1 = any(r.countries)) desc, case when coalesce(r.free_above_minor <= $3, false) then 0 else r.price_minor end, r.id
     ) winners
     order by case when free then 0 else price_minor end, max_days, min_days, method_name, method_id`,
    [country, weight, subtotal.amountMinor, subtotal.currencyCode, methodId],
  );
}

/** The day `days` business days (Monday to Friday) after `from`, at 00:00 UTC. */
export function addBusinessDays(from: Date, days: number): Date {
  const d = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()));
  let left = days;
  while (left > 0) {
    d.setUTCDate(d.getUTCDate() + 1);
    const weekday = d.getUTCDay();
    if (weekday !== 0 && weekday !== 6) left--;
  }
  return d;
}

function quoteOf(row: QuoteRow, currency: string, now: Date): ShippingQuote {
  const latest = addBusinessDays(now, row.max_days);
  latest.setUTCHours(23, 59, 59, 999);
  return create(ShippingQuoteSchema, {
    methodId: row.method_id,
    methodCode: row.method_code,
    methodName: row.method_name,
    methodDescription: row.method_description,
    carrierId: row.carrier_id,
    carrierCode: row.carrier_code,
    carrierName: row.carrier_name,
    rateId: row.rate_id,
    price: money(row.free ? 0n : row.price_minor, currency),
    freeShipping: row.free,
    freeAbove: moneyOrUndefined(row.free_above_minor, currency),
    minDays: row.min_days,
    maxDays: row.max_days,
    estimatedDeliveryEarliest: timestampFromDate(addBusinessDays(now, row.min_days)),
    estimatedDeliveryLatest: timestampFromDate(latest),
  });
}

/** `items`: the request's lines weighed by catalogWeighed. */
export async function getShippingRates(em: EntityManager, req: GetShippingRatesRequest, items: readonly WeighedItem[]) {
  const weight = totalWeightOf(items);
  const rows = await quoteRows(em, req.destination!.countryCode, weight, req.subtotal!, null);
  const now = new Date();
  return { quotes: rows.map((r) => quoteOf(r, req.currencyCode, now)), totalWeightGrams: weight };
}

/** Prices the chosen method and stores the quote, binding for `ttlSeconds`; `items`: the request's lines weighed by catalogWeighed. */
export async function quoteShippingRate(em: EntityManager, ttlSeconds: number, req: QuoteShippingRateRequest, items: readonly WeighedItem[]) {
  const weight = totalWeightOf(items);
  const method = await findMethod(em, req.methodId);
  const country = req.shipTo!.countryCode;
  const [row] = await quoteRows(em, country, weight, req.subtotal!, method.id);
  if (!row) {
    throw failedPrecondition(
      `shipping method ${method.code} cannot ship ${weight} g to ${country} for ${req.subtotal!.amountMinor} ${req.subtotal!.currencyCode} minor units (inactive, or no rate covers it); ask GetShippingRates for the methods that can`,
      "SHIPPING_UNAVAILABLE",
      { method_id: method.id, country_code: country, total_weight_grams: String(weight) },
    );
  }
  const now = new Date();
  const quote = quoteOf(row, req.subtotal!.currencyCode, now);
  const stored = em.create(ShippingQuoteEntity, {
    id: uuidv7(),
    quote: Buffer.from(toBinary(ShippingQuoteSchema, quote)),
    totalWeightGrams: weight,
    expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
    createdAt: now,
  });
  await em.flush();
  return { quote, totalWeightGrams: weight, quoteId: stored.id, expiresAt: timestampFromDate(stored.expiresAt) };
}

/** A stored quote as it was made, while it holds. */
export async function getShippingQuote(em: EntityManager, quoteId: string) {
  const row = await em.findOne(ShippingQuoteEntity, { id: quoteId });
  if (!row) throw domainError(Code.NotFound, `shipping quote ${quoteId} not found`, { reason: "SHIPPING_QUOTE_NOT_FOUND", resource: { type: "shipping quote", name: quoteId } });
  if (row.expiresAt.getTime() <= Date.now()) {
    throw failedPrecondition(`shipping quote ${quoteId} expired at ${row.expiresAt.toISOString()}; quote again with QuoteShippingRate`, "QUOTE_EXPIRED", {
      expires_at: row.expiresAt.toISOString(),
    });
  }
  return { quote: fromBinary(ShippingQuoteSchema, row.quote), totalWeightGrams: row.totalWeightGrams, quoteId: row.id, expiresAt: timestampFromDate(row.expiresAt) };
}
