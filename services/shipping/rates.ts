/**
 * Rate selection (GetShippingRates for the storefront, QuoteShippingRate for
 * Order's checkout), as the contract describes it: per live method, the rates
 * in the currency whose weight band holds the total weight and whose
 * min_subtotal the subtotal reaches; a rate naming the destination beats an
 * every-country rate; then the lowest price after free_above wins. One
 * statement picks the winner of every method (distinct on).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Money } from "../../gen/ecommerce/common/v1/money_pb.js";
import {
  type GetShippingRatesRequest,
  type QuoteShippingRateRequest,
  type RateItem,
  type ShippingQuote,
  ShippingQuoteSchema,
} from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { failedPrecondition, invalidArgument } from "../../kit/errors.ts";
import { money, moneyOrUndefined } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";
import { findMethod } from "./carriers.ts";

/** The most a parcel's total weight may be (the contract's item limits allow more than int32 grams). */
const maxTotalGrams = 2_147_483_647;

export function totalWeightOf(items: readonly RateItem[]): number {
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

export async function getShippingRates(em: EntityManager, req: GetShippingRatesRequest) {
  const weight = totalWeightOf(req.items);
  const rows = await quoteRows(em, req.destination!.countryCode, weight, req.subtotal!, null);
  const now = new Date();
  return { quotes: rows.map((r) => quoteOf(r, req.currencyCode, now)), totalWeightGrams: weight };
}

export async function quoteShippingRate(em: EntityManager, req: QuoteShippingRateRequest) {
  const weight = totalWeightOf(req.items);
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
  return { quote: quoteOf(row, req.subtotal!.currencyCode, new Date()), totalWeightGrams: weight };
}
