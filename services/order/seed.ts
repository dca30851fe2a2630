/**
 * A bulk load of orders for the list benchmarks (scripts/bench/orders-explain.ts)
 * and the list plans test (lists-plan.test.ts): set-based INSERT ... SELECT over
 * generate_series, in batches (progress between them), deterministic (every value
 * comes from hashint8extended of the row number, no random()), into a database the
 * Order service's migrations have already built.
 *
 * The shape the lists care about: orders arrive over three years (created_at grows
 * with the row number, ids are time-ordered like uuidv7); every 32nd order is one of
 * a few heavy customers' (10k+ orders each at 2M), the rest go to `customers`
 * customers with a skewed count (the lowest numbers have thousands, the median
 * customer a handful); statuses as a shop's history has them (mostly delivered, some
 * cancelled, refunded, failed payments that were never announced), 1 to 3 items per
 * order from a catalog where the first products are in many orders (product 0 in about
 * one in ten). No status history, notes or outbox rows: the lists do not read them.
 * orderListCases: the list calls both measure, every sort and filter of the contract.
 */
import { createHash } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { OrderPaymentStatus, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";

export interface OrderSeed {
  orders: number;
  /** Ordinary customers (default 200,000). */
  customers?: number;
  /** Heavy customers sharing every 32nd order (default 5). */
  heavy?: number;
  /** Distinct products in the items (default 5,000). */
  products?: number;
  /** Rows per INSERT (default 100,000). */
  batch?: number;
  /** After each batch: how many orders are in. */
  progress?: (done: number, total: number) => void;
}

/** The last order's creation time: a fixed clock, so the same seed gives the same rows. */
export const seedEnd = "2026-12-01T00:00:00Z";
const span = "3 years";

const uuidOf = (s: string) => {
  const h = createHash("md5").update(s).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};
/** Ordinary customer j (0 = the one with the most orders; about customers / 2 is a typical one). */
export const seedCustomerId = (j: number) => uuidOf(`customer-${j}`);
export const seedHeavyCustomerId = (k: number) => uuidOf(`heavy-${k}`);
/** Product j of the items (0 = in the most orders). */
export const seedProductId = (j: number) => uuidOf(`product-${j}`);

/** A uniform number in [0, 1) from the row number `v` and a stream `k`. */
const r = (v: string, k: number) => `((hashint8extended(${v}, ${k}) & 4503599627370495)::float8 / 4503599627370496)`;

export async function seedOrders(url: string, seed: OrderSeed): Promise<void> {
  const customers = seed.customers ?? 200_000;
  const heavy = seed.heavy ?? 5;
  const products = seed.products ?? 5_000;
  const batch = seed.batch ?? 100_000;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    for (let lo = 1; lo <= seed.orders; lo += batch) {
      const hi = Math.min(seed.orders, lo + batch - 1);
      // One statement per batch: the items are made from the orders it returns.
      await client.query(`with o as (${ordersInsert(seed.orders, customers, heavy)} returning id, idempotency_key, subtotal_minor, created_at) ${itemsInsert(products)}`, [lo, hi]);
      seed.progress?.(hi, seed.orders);
    }
  } finally {
    await client.end();
  }
}

/** $1..$2: the row numbers of this batch. */
function ordersInsert(total: number, customers: number, heavy: number): string {
  // Statuses by share: delivered 66 %, shipped 6, processing 3, confirmed 5, pending 1,
  // cancelled after the authorization 7 (shown), refunded 2, payment failed 4 and
  // cancelled before the payment 6 (neither announced).
  return `
    insert into orders (id, order_number, user_id, cart_id, status, payment_status, checkout, announced, idempotency_key, request_hash,
      currency, subtotal_minor, shipping_minor, total_minor, captured_minor, refunded_minor, shipping_address, billing_address,
      shipping_method, payment_id, payment_method, shipped_at, delivered_at, cancelled_at, stock_committed, created_at, updated_at)
    select
      (lpad(to_hex((extract(epoch from t.created_at) * 1000)::bigint), 12, '0') || '7' || substr(md5(t.i::text), 1, 19))::uuid,
      'ORD-' || extract(year from t.created_at) || '-' || lpad(t.i::text, greatest(6, length(t.i::text)), '0'),
      case when t.i % 32 = 0 then md5('heavy-' || ((t.i / 32) % ${heavy}))::uuid
           else md5('customer-' || floor(${customers} * power(${r("t.i", 1)}, 2))::bigint)::uuid end,
      md5('cart-' || t.i)::uuid,
      s.status, s.payment_status,
      case when s.status in ('payment_failed') or (s.status = 'cancelled' and not s.paid) then 'failed' else 'done' end,
      s.status <> 'payment_failed' and (s.status <> 'cancelled' or s.paid),
      t.i::text, 'seed', 'USD', t.subtotal, t.shipping, t.subtotal + t.shipping,
      case when s.payment_status in ('paid', 'refunded') then t.subtotal + t.shipping else 0 end,
      case when s.payment_status = 'refunded' then t.subtotal + t.shipping else 0 end,
      jsonb_build_object('firstName', 'Ada', 'lastName', 'Lovelace', 'addressLine1', (t.i % 997) || ' Main St', 'city', 'San Francisco', 'state', 'CA', 'postalCode', '94105', 'countryCode', 'US'),
      jsonb_build_object('firstName', 'Ada', 'lastName', 'Lovelace', 'addressLine1', (t.i % 997) || ' Main St', 'city', 'San Francisco', 'state', 'CA', 'postalCode', '94105', 'countryCode', 'US'),
      '{"id": "standard", "name": "Standard", "carrierName": "Test Parcel", "minDays": 2, "maxDays": 4}'::jsonb,
      case when s.paid then md5('payment-' || t.i)::uuid end,
      case when s.paid then '{"type": "card", "brand": "visa", "last4": "4242"}'::jsonb end,
      case when s.status in ('shipped', 'delivered', 'refunded') then t.created_at + interval '1 day' end,
      case when s.status in ('delivered', 'refunded') then t.created_at + interval '4 days' end,
      case when s.status = 'cancelled' then t.created_at + interval '1 hour' end,
      s.status not in ('cancelled', 'payment_failed', 'pending'),
      t.created_at,
      t.created_at + ${r("t.i", 4)} * interval '30 days'
    from (
      select i,
        timestamptz '${seedEnd}' - interval '${span}' + (i::float8 / ${total}) * interval '${span}' - ${r("i", 5)} * interval '10 minutes' as created_at,
        ${r("i", 2)} as rs,
        500 + floor(power(${r("i", 3)}, 3) * 200000)::bigint as subtotal,
        case when i % 5 = 0 then 0 else 500 end as shipping
      from generate_series($1::bigint, $2::bigint) i
    ) t
    cross join lateral (
      select v.status, v.payment_status, v.paid from (values
        (0.66, 'delivered', 'paid', true), (0.72, 'shipped', 'paid', true), (0.75, 'processing', 'authorized', true),
        (0.80, 'confirmed', 'authorized', true), (0.81, 'pending', 'pending', true), (0.88, 'cancelled', 'voided', true),
        (0.90, 'refunded', 'refunded', true), (0.94, 'payment_failed', 'failed', false), (1.01, 'cancelled', 'pending', false)
      ) v (upto, status, payment_status, paid)
      where t.rs < v.upto order by v.upto limit 1
    ) s`;
}

/** 1 to 3 items per order of the batch (`o`: the orders just inserted); product j drawn with a skew (low numbers in many orders). */
function itemsInsert(products: number): string {
  return `
    insert into order_items (id, order_id, position, cart_item_id, product_id, product_name, product_sku, unit_price_minor, quantity, total_minor, created_at)
    select md5('item-' || o.idempotency_key || '-' || n)::uuid, o.id, n, 'ci-' || n, md5('product-' || p.j)::uuid,
      'Product ' || p.j, 'SKU-' || p.j, o.subtotal_minor / 2 + 1, 1, o.subtotal_minor / 2 + 1, o.created_at
    from o
    cross join lateral generate_series(1, 1 + (hashint8extended(o.idempotency_key::bigint, 6) & 3)::int % 3) n
    cross join lateral (select floor(${products} * power(${r("(o.idempotency_key::bigint * 4 + n)", 7)}, 3))::bigint as j) p`;
}

/**
 * A list call to measure on seeded orders: ListMyOrders of customer `my`, or ListOrders;
 * `deep`: also the page after this many rows (the same request with a page token).
 */
export interface OrderListCase {
  name: string;
  my?: string;
  req: Record<string, unknown>;
  deep?: number;
  /** The index the page is read through (where the planner has no equally good choice). */
  index?: string;
  /** The page comes in an index's order: no Sort at all in its plan. */
  ordered?: boolean;
  /** Why this case is not index-bounded (a known limit, in the README): the plans test leaves it out. */
  limit?: string;
  /** The same for its count only: the plans test checks the page and leaves the count out. */
  countLimit?: string;
}

/** Every sort and filter the contract allows, on a seed of `orders` (the same counts as seedOrders'). */
export function orderListCases(orders: number, seed: Omit<OrderSeed, "orders"> = {}): OrderListCase[] {
  const heavyCount = seed.heavy ?? 5;
  const heavy = seedHeavyCustomerId(0);
  const typical = seedCustomerId(Math.floor((seed.customers ?? 200_000) / 2));
  const heavyOrders = Math.floor(orders / 32 / heavyCount);
  const rare = seedProductId(Math.floor((seed.products ?? 5_000) * 0.86));
  const day = 86_400_000;
  const end = new Date(seedEnd).getTime();
  const ts = (ms: number) => timestampFromDate(new Date(ms));
  // The middle order is from 2025: its number less the last digit is the prefix of ten orders.
  const middle = Math.floor(orders / 2);
  const tenOrders = `ord-2025-${String(middle).padStart(6, "0").slice(0, -1)}`;
  const sortIndexes: Record<string, string> = { created_at: "orders_created", updated_at: "orders_updated", total_amount: "orders_total" };
  const sorts = ["created_at desc", "created_at asc", "updated_at desc", "updated_at asc", "total_amount desc", "total_amount asc"];
  return [
    { name: "my: heavy customer", my: heavy, req: {}, ordered: true, index: "orders_user_created", deep: Math.floor(heavyOrders * 0.7) },
    { name: "my: typical customer", my: typical, req: {} },
    { name: "my: heavy, DELIVERED", my: heavy, req: { statuses: [OrderStatus.DELIVERED] }, ordered: true, index: "orders_user_created", deep: Math.floor(heavyOrders * 0.4) },
    { name: "my: heavy, PROCESSING+SHIPPED", my: heavy, req: { statuses: [OrderStatus.PROCESSING, OrderStatus.SHIPPED] }, deep: Math.floor(heavyOrders * 0.04) },
    { name: "my: heavy, PAYMENT_FAILED", my: heavy, req: { statuses: [OrderStatus.PAYMENT_FAILED] } },
    ...sorts.map((orderBy) => ({ name: `admin: ${orderBy}`, req: { orderBy }, ordered: true, index: sortIndexes[orderBy.split(" ")[0]!], deep: middle })),
    { name: "admin: PENDING", req: { statuses: [OrderStatus.PENDING] }, ordered: true, index: "orders_status_created", deep: Math.floor(orders / 200) },
    { name: "admin: DELIVERED", req: { statuses: [OrderStatus.DELIVERED] }, ordered: true, deep: Math.floor(orders / 4) },
    { name: "admin: PENDING+PROCESSING", req: { statuses: [OrderStatus.PENDING, OrderStatus.PROCESSING] } },
    { name: "admin: PENDING, updated_at desc", req: { statuses: [OrderStatus.PENDING], orderBy: "updated_at desc" } },
    { name: "admin: REFUNDED, total desc", req: { statuses: [OrderStatus.REFUNDED], orderBy: "total_amount desc" } },
    { name: "admin: payment REFUNDED", req: { paymentStatuses: [OrderPaymentStatus.REFUNDED] }, ordered: true, index: "orders_payment_status_created" },
    { name: "admin: payment AUTHORIZED+PENDING", req: { paymentStatuses: [OrderPaymentStatus.AUTHORIZED, OrderPaymentStatus.PENDING] } },
    { name: "admin: one day", req: { createdAfter: ts(end - 200 * day), createdBefore: ts(end - 199 * day) } },
    { name: "admin: one month, total desc", req: { createdAfter: ts(end - 400 * day), createdBefore: ts(end - 370 * day), orderBy: "total_amount desc" } },
    { name: "admin: heavy customer", req: { userId: heavy }, ordered: true, deep: Math.floor(heavyOrders * 0.7) },
    { name: "admin: heavy customer, total desc", req: { userId: heavy, orderBy: "total_amount desc" } },
    { name: "admin: typical customer", req: { userId: typical } },
    { name: "admin: number prefix (ten orders)", req: { orderNumberPrefix: tenOrders }, index: "orders_number_prefix" },
    {
      name: "admin: number prefix (a year)",
      req: { orderNumberPrefix: "ORD-2025" },
      limit: "a prefix matching a large share of the orders: its matches are sorted, or the created_at index is read up to them",
    },
    {
      name: "admin: popular product",
      req: { productId: seedProductId(0) },
      countLimit: "the count checks each order with the product until 10001 are found: about 10001 / (the product's share) orders",
    },
    { name: "admin: rare product", req: { productId: rare }, index: "order_items_product" },
    { name: "admin: rare product, DELIVERED", req: { productId: rare, statuses: [OrderStatus.DELIVERED] } },
  ];
}
