/**
 * Admin CRUD of carriers, shipping methods and rates, and their public lists.
 * The contract's rules checked the shapes (codes, weight bands, currencies of
 * a new rate); here the checks that need the stored row (an update's result).
 */
import { v7 as uuidv7 } from "uuid";
import type { Money } from "../../gen/ecommerce/common/v1/money_pb.js";
import type {
  Carrier,
  CreateCarrierRequest,
  CreateShippingMethodRequest,
  CreateShippingRateRequest,
  ListCarriersRequest,
  ListCarriersResponse,
  ListShippingMethodsRequest,
  ListShippingMethodsResponse,
  ListShippingRatesRequest,
  ListShippingRatesResponse,
  ShippingMethod,
  ShippingRate,
  UpdateCarrierRequest,
  UpdateShippingMethodRequest,
  UpdateShippingRateRequest,
} from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { alreadyExists, invalidArgument, notFound } from "../../kit/errors.ts";
import { applyFieldMask, setField } from "../../kit/field-mask.ts";
import { pageOf } from "../../kit/paging.ts";
import { flushUnique, sqlOf } from "../../kit/sql.ts";
import { CarrierEntity, type CarrierRow, ShippingMethodEntity, type ShippingMethodRow, ShippingRateEntity, type ShippingRateRow } from "./entities.ts";
import { carrierMessage, methodMessage, rateMessage } from "./mapping.ts";

export async function findCarrier(em: EntityManager, id: string): Promise<CarrierRow> {
  const row = await em.findOne(CarrierEntity, { id });
  if (!row) throw notFound("carrier", id);
  return row;
}

export async function findMethod(em: EntityManager, id: string): Promise<ShippingMethodRow> {
  const row = await em.findOne(ShippingMethodEntity, { id });
  if (!row) throw notFound("shipping method", id);
  return row;
}

async function findRate(em: EntityManager, id: string): Promise<ShippingRateRow> {
  const row = await em.findOne(ShippingRateEntity, { id });
  if (!row) throw notFound("shipping rate", id);
  return row;
}

export async function createCarrier(em: EntityManager, req: CreateCarrierRequest): Promise<{ carrier: Carrier }> {
  const at = new Date();
  const row = em.create(CarrierEntity, {
    id: uuidv7(),
    code: req.code,
    name: req.name,
    trackingUrlTemplate: req.trackingUrlTemplate,
    isActive: req.isActive,
    createdAt: at,
    updatedAt: at,
  });
  await flushUnique(em, () => alreadyExists(`a carrier with code ${req.code} exists already; choose another code or update that carrier`, "CARRIER_CODE_TAKEN", "code"));
  return { carrier: carrierMessage(row) };
}

export async function updateCarrier(em: EntityManager, req: UpdateCarrierRequest): Promise<{ carrier: Carrier }> {
  const input = req.carrier!;
  const row = await findCarrier(em, input.id);
  const changed = applyFieldMask(req.updateMask, row, input, {
    name: setField((i: Carrier) => i.name, (r: CarrierRow) => r.name, (r, v) => (r.name = v)),
    tracking_url_template: setField((i: Carrier) => i.trackingUrlTemplate, (r: CarrierRow) => r.trackingUrlTemplate, (r, v) => (r.trackingUrlTemplate = v)),
    is_active: setField((i: Carrier) => i.isActive, (r: CarrierRow) => r.isActive, (r, v) => (r.isActive = v)),
  });
  if (changed.includes("name") && row.name === "") throw invalidArgument("carrier.name", "must not be empty");
  if (changed.length > 0) {
    row.updatedAt = new Date();
    await em.flush();
  }
  return { carrier: carrierMessage(row) };
}

export async function listCarriers(em: EntityManager, admin: boolean, req: ListCarriersRequest): Promise<Omit<ListCarriersResponse, "$typeName">> {
  const includeInactive = admin && req.includeInactive;
  const pages = pageOf(req, { n: "text", i: "uuid" });
  const rows = await sqlOf(em).all<{ id: string; name: string }>(
    `select id, name from carriers
      where ($1::boolean or is_active) and ($2::text is null or (name, id) > ($2::text, $3::uuid))
      order by name, id limit $4`,
    [includeInactive, pages.after?.n ?? null, pages.after?.i ?? null, pages.size + 1],
  );
  const page = rows.slice(0, pages.size);
  const byId = new Map((await em.find(CarrierEntity, { id: { $in: page.map((r) => r.id) } })).map((r) => [r.id, r]));
  const last = page.at(-1);
  return {
    carriers: page.map((r) => carrierMessage(byId.get(r.id)!)),
    nextPageToken: rows.length > pages.size && last ? pages.next({ n: last.name, i: last.id }) : "",
  };
}

export async function createShippingMethod(em: EntityManager, req: CreateShippingMethodRequest): Promise<{ shippingMethod: ShippingMethod }> {
  await findCarrier(em, req.carrierId);
  const at = new Date();
  const row = em.create(ShippingMethodEntity, {
    id: uuidv7(),
    carrierId: req.carrierId,
    code: req.code,
    name: req.name,
    description: req.description,
    minDays: req.minDays,
    maxDays: req.maxDays,
    isActive: req.isActive,
    createdAt: at,
    updatedAt: at,
  });
  await flushUnique(em, () =>
    alreadyExists(`the carrier already has a method with code ${req.code}; choose another code or update that method`, "SHIPPING_METHOD_CODE_TAKEN", "code"),
  );
  return { shippingMethod: methodMessage(row) };
}

export async function updateShippingMethod(em: EntityManager, req: UpdateShippingMethodRequest): Promise<{ shippingMethod: ShippingMethod }> {
  const input = req.shippingMethod!;
  const row = await findMethod(em, input.id);
  const changed = applyFieldMask(req.updateMask, row, input, {
    name: setField((i: ShippingMethod) => i.name, (r: ShippingMethodRow) => r.name, (r, v) => (r.name = v)),
    description: setField((i: ShippingMethod) => i.description, (r: ShippingMethodRow) => r.description, (r, v) => (r.description = v)),
    min_days: setField((i: ShippingMethod) => i.minDays, (r: ShippingMethodRow) => r.minDays, (r, v) => (r.minDays = v)),
    max_days: setField((i: ShippingMethod) => i.maxDays, (r: ShippingMethodRow) => r.maxDays, (r, v) => (r.maxDays = v)),
    is_active: setField((i: ShippingMethod) => i.isActive, (r: ShippingMethodRow) => r.isActive, (r, v) => (r.isActive = v)),
  });
  if (row.name === "") throw invalidArgument("shipping_method.name", "must not be empty");
  if (row.minDays > row.maxDays) {
    throw invalidArgument("shipping_method.min_days", `would exceed max_days (${row.minDays} > ${row.maxDays}); change both in one update`);
  }
  if (changed.length > 0) {
    row.updatedAt = new Date();
    await em.flush();
  }
  return { shippingMethod: methodMessage(row) };
}

export async function listShippingMethods(em: EntityManager, admin: boolean, req: ListShippingMethodsRequest): Promise<Omit<ListShippingMethodsResponse, "$typeName">> {
  const includeInactive = admin && req.includeInactive;
  const pages = pageOf(req, { k: ["text", "int"], i: "uuid" });
  const after = pages.after;
  const rows = await sqlOf(em).all<{ id: string; carrier_name: string; min_days: number }>(
    `select m.id, c.name as carrier_name, m.min_days from shipping_methods m join carriers c on c.id = m.carrier_id
      where ($1::boolean or (m.is_active and c.is_active)) and ($2::uuid is null or m.carrier_id = $2::uuid)
        and ($3::text is null or (c.name, m.min_days, m.id) > ($3::text, $4::int, $5::uuid))
      order by c.name, m.min_days, m.id limit $6`,
    [includeInactive, req.carrierId || null, after ? String(after.k[0]) : null, after ? Number(after.k[1]) : null, after?.i ?? null, pages.size + 1],
  );
  const page = rows.slice(0, pages.size);
  const byId = new Map((await em.find(ShippingMethodEntity, { id: { $in: page.map((r) => r.id) } })).map((r) => [r.id, r]));
  const last = page.at(-1);
  return {
    shippingMethods: page.map((r) => methodMessage(byId.get(r.id)!)),
    nextPageToken: rows.length > pages.size && last ? pages.next({ k: [last.carrier_name, last.min_days], i: last.id }) : "",
  };
}

/** An amount of a rate in the rate's currency, or INVALID_ARGUMENT naming the field. */
function amountIn(currency: string, field: string, m: Money | undefined): bigint | null {
  if (!m) return null;
  if (m.currencyCode !== currency) throw invalidArgument(field, `must be in the rate's currency ${currency}`, "CURRENCY_MISMATCH");
  return m.amountMinor;
}

export async function createShippingRate(em: EntityManager, req: CreateShippingRateRequest): Promise<{ shippingRate: ShippingRate }> {
  await findMethod(em, req.methodId);
  const currency = req.price!.currencyCode;
  const at = new Date();
  const row = em.create(ShippingRateEntity, {
    id: uuidv7(),
    methodId: req.methodId,
    countries: [...req.countries],
    minWeightGrams: req.minWeightGrams,
    maxWeightGrams: req.maxWeightGrams || null,
    minSubtotalMinor: req.minSubtotal?.amountMinor ?? null,
    priceMinor: req.price!.amountMinor,
    currency,
    freeAboveMinor: req.freeAbove?.amountMinor ?? null,
    createdAt: at,
    updatedAt: at,
  });
  await em.flush();
  return { shippingRate: rateMessage(row) };
}

export async function updateShippingRate(em: EntityManager, req: UpdateShippingRateRequest): Promise<{ shippingRate: ShippingRate }> {
  const input = req.shippingRate!;
  const paths = new Set(req.updateMask!.paths);
  const row = await findRate(em, input.id);
  if (paths.has("price") && !input.price) throw invalidArgument("shipping_rate.price", "cannot be cleared; set a price (0 for free shipping)");
  // A new price may change the currency: the other amounts must follow it.
  const storedCurrency = row.currency;
  const currency = paths.has("price") ? input.price!.currencyCode : row.currency;
  const changed = applyFieldMask(req.updateMask, row, input, {
    countries: (r: ShippingRateRow, i: ShippingRate) => {
      const next = [...i.countries];
      if (next.length === r.countries.length && next.every((c, n) => c === r.countries[n])) return false;
      r.countries = next;
      return true;
    },
    min_weight_grams: setField((i: ShippingRate) => i.minWeightGrams, (r: ShippingRateRow) => r.minWeightGrams, (r, v) => (r.minWeightGrams = v)),
    max_weight_grams: setField((i: ShippingRate) => i.maxWeightGrams || null, (r: ShippingRateRow) => r.maxWeightGrams ?? null, (r, v) => (r.maxWeightGrams = v)),
    min_subtotal: setField(
      (i: ShippingRate) => amountIn(currency, "shipping_rate.min_subtotal", i.minSubtotal),
      (r: ShippingRateRow) => big(r.minSubtotalMinor),
      (r, v) => (r.minSubtotalMinor = v),
    ),
    price: (r: ShippingRateRow, i: ShippingRate) => {
      if (big(r.priceMinor) === i.price!.amountMinor && r.currency === currency) return false;
      r.priceMinor = i.price!.amountMinor;
      r.currency = currency;
      return true;
    },
    free_above: setField(
      (i: ShippingRate) => amountIn(currency, "shipping_rate.free_above", i.freeAbove),
      (r: ShippingRateRow) => big(r.freeAboveMinor),
      (r, v) => (r.freeAboveMinor = v),
    ),
  });
  // Amounts not in the mask keep their old currency: a currency change must bring them along.
  if (storedCurrency !== currency && ((row.minSubtotalMinor !== null && !paths.has("min_subtotal")) || (row.freeAboveMinor !== null && !paths.has("free_above")))) {
    throw invalidArgument(
      "shipping_rate.price",
      `changes the currency from ${storedCurrency} to ${currency}: put min_subtotal and free_above in the mask with amounts in ${currency} too`,
      "CURRENCY_MISMATCH",
    );
  }
  if (row.maxWeightGrams !== null && row.maxWeightGrams !== undefined && row.maxWeightGrams <= row.minWeightGrams) {
    throw invalidArgument("shipping_rate.max_weight_grams", `must be 0 (no limit) or above min_weight_grams (${row.minWeightGrams}): the band would be empty`, "EMPTY_WEIGHT_BAND");
  }
  if (changed.length > 0) {
    row.updatedAt = new Date();
    await em.flush();
  }
  return { shippingRate: rateMessage(row) };
}

const big = (v: bigint | string | null | undefined): bigint | null => (v === null || v === undefined ? null : BigInt(v));

export async function deleteShippingRate(em: EntityManager, id: string): Promise<object> {
  const removed = await sqlOf(em).run("delete from shipping_rates where id = $1", [id]);
  if (removed === 0) throw notFound("shipping rate", id);
  return {};
}

export async function listShippingRates(em: EntityManager, req: ListShippingRatesRequest): Promise<Omit<ListShippingRatesResponse, "$typeName">> {
  const pages = pageOf(req, { m: "uuid", w: "int", i: "uuid" });
  const after = pages.after;
  const rows = await sqlOf(em).all<{ id: string; method_id: string; min_weight_grams: number }>(
    `select id, method_id, min_weight_grams from shipping_rates
      where ($1::uuid is null or method_id = $1::uuid)
        and ($2::text is null or countries = '{}' or $2::text = any(countries))
        and ($3::text is null or currency = $3::text)
        and ($4::uuid is null or (method_id, min_weight_grams, id) > ($4::uuid, $5::int, $6::uuid))
      order by method_id, min_weight_grams, id limit $7`,
    [req.methodId || null, req.countryCode || null, req.currencyCode || null, after?.m ?? null, after?.w ?? null, after?.i ?? null, pages.size + 1],
  );
  const page = rows.slice(0, pages.size);
  const byId = new Map((await em.find(ShippingRateEntity, { id: { $in: page.map((r) => r.id) } })).map((r) => [r.id, r]));
  const last = page.at(-1);
  return {
    shippingRates: page.map((r) => rateMessage(byId.get(r.id)!)),
    nextPageToken: rows.length > pages.size && last ? pages.next({ m: last.method_id, w: last.min_weight_grams, i: last.id }) : "",
  };
}
