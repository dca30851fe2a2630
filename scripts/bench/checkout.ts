/**
 * The checkout rows of `npm run bench` (issue 11): PlaceOrder against the real mesh
 * (Product, Cart, Discount, Shipping, Payment, Order, and Auth for the credentials, all
 * in the bench's process), gRPC direct to Order, beside "the same writes in one
 * PostgreSQL transaction" (a node:http handler on one database), so that the mesh's
 * cost is a ratio.
 *
 * Every PlaceOrder is a distinct customer with a prepared cart: two lines of products
 * with deep stock, the bench's coupon (10% off, all orders share it, so its counters
 * are contended as in RedeemDiscounts), the sandbox success card token, a unique
 * idempotency key. Carts are prepared before each phase, outside the metered interval
 * (run.ts `prepare`): AddItem x2 and ApplyCoupon per customer. The customers' access
 * tokens are signed with Auth's own key (the bench keeps Auth's runtime): Register's
 * argon2 hashing and per-IP rate limit would only slow the preparation down.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createServer } from "node:http";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { postgresAdminUrl, TestDatabases } from "../../kit/testing/infra.ts";
import type { TestMesh } from "../../kit/testing/mesh.ts";
import type { AuthRuntime } from "../../services/auth/runtime.ts";
import type { Prepared } from "./generator.ts";
import type { Bench, Row } from "./run.ts";

export const checkoutScenario = "Checkout";
/** Products of the checkout carts, each with this much stock: never runs out during a run. */
const hotProducts = 10;
const deepStock = 1_000_000;
const priceMinor = 2_500n;
const address = { firstName: "Ada", lastName: "Lovelace", addressLine1: "1 Main St", city: "San Francisco", state: "CA", postalCode: "94105", countryCode: "US" };

/** Runs `fn` over `items` with at most `limit` at a time. */
async function pooled<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/**
 * The outbox rows a confirmed checkout writes (with a coupon): order.created, order.confirmed,
 * order.status_changed, payment.initiated, payment.authorized, discount.redeemed, cart.converted.
 * The baseline writes as many; the bench prints what the mesh wrote, by subject, to check it.
 */
export const checkoutOutboxRows = 7;

/**
 * The outbox rows the mesh wrote since `since`, by database and subject, per confirmed order
 * (failed checkouts' rows are in it too, so with errors it reads high).
 */
async function outboxPerOrder(mesh: TestMesh, since: Date): Promise<{ perOrder: number; orders: number; confirmed: number; bySubject: string[] }> {
  const orderDb = new pg.Client({ connectionString: mesh.services.order!.ctx.config.databaseUrl });
  await orderDb.connect();
  let orders = 0;
  let confirmed = 0;
  try {
    const { rows } = await orderDb.query<{ n: string; confirmed: string }>(
      "select count(*) as n, count(*) filter (where status = 'confirmed') as confirmed from orders where created_at >= $1",
      [since],
    );
    orders = Number(rows[0]!.n);
    confirmed = Number(rows[0]!.confirmed);
  } finally {
    await orderDb.end();
  }
  let total = 0;
  const bySubject: string[] = [];
  for (const [name, running] of Object.entries(mesh.services)) {
    const client = new pg.Client({ connectionString: running!.ctx.config.databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ subject: string; n: string }>(
        "select subject, count(*) as n from outbox_events where created_at >= $1 group by subject order by subject",
        [since],
      );
      for (const r of rows) {
        // The cart preparation (AddItem, ApplyCoupon) is interleaved with the phases: only Cart's conversion is the checkout's.
        if (name === "cart" && !/convert/i.test(r.subject)) continue;
        total += Number(r.n);
        bySubject.push(`${r.subject} ${(Number(r.n) / Math.max(1, confirmed)).toFixed(2)}`);
      }
    } finally {
      await client.end();
    }
  }
  return { perOrder: confirmed > 0 ? total / confirmed : 0, orders, confirmed, bySubject };
}

export async function checkoutBench(bench: Bench, mesh: TestMesh, authRuntime: AuthRuntime, adminToken: string, say: (l: string) => void): Promise<void> {
  const admin = { headers: { authorization: `Bearer ${adminToken}` } };
  const client = <S extends Parameters<typeof createClient>[0]>(service: S, name: Parameters<TestMesh["url"]>[0]) =>
    createClient(service, createGrpcTransport({ baseUrl: mesh.url(name) }));
  const products = client(ProductService, "product");
  const inventory = client(InventoryService, "product");
  const discounts = client(DiscountService, "discount");
  const shipping = client(ShippingService, "shipping");
  const carts = client(CartService, "cart");
  const stamp = Date.now().toString(36);

  say(`checkout: ${hotProducts} products with ${deepStock} in stock, a shipping method, a 10% coupon`);
  const ids: string[] = [];
  for (let i = 0; i < hotProducts; i++) {
    const { product } = await products.createProduct(
      { sku: `CO-BENCH-${stamp}-${i}`, name: `Checkout bench ${i}`, price: { amountMinor: priceMinor, currencyCode: "USD" }, status: ProductStatus.ACTIVE, isVisible: true, weightGrams: 500 },
      admin,
    );
    await inventory.adjustStock({ idempotencyKey: `co-bench-${stamp}-${i}`, productId: product!.id, change: { case: "delta", value: deepStock }, reason: 1 }, admin);
    ids.push(product!.id);
  }
  const { carrier } = await shipping.createCarrier({ code: `co${stamp}`, name: "Bench Parcel", trackingUrlTemplate: "https://track.example.com/{tracking_number}", isActive: true }, admin);
  const { shippingMethod } = await shipping.createShippingMethod({ carrierId: carrier!.id, code: "standard", name: "Standard", minDays: 2, maxDays: 4, isActive: true }, admin);
  await shipping.createShippingRate(
    { methodId: shippingMethod!.id, minWeightGrams: 0, maxWeightGrams: 1_000_000, price: { amountMinor: 500n, currencyCode: "USD" }, freeAbove: { amountMinor: 50_000_000n, currencyCode: "USD" } },
    admin,
  );
  const { promotion } = await discounts.createPromotion(
    { name: `Checkout bench ${stamp}`, type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: 1000 }, currencyCode: "USD", budget: { amountMinor: 1_000_000_000_000n, currencyCode: "USD" }, stackable: true, isActive: true },
    admin,
  );
  const code = `COBENCH${stamp.toUpperCase()}`;
  await discounts.createCoupon({ promotionId: promotion!.id, code }, admin);

  /** Two distinct products (quantities 1 and 2), as the baseline's. */
  const linesOf = () => {
    const a = Math.floor(Math.random() * hotProducts);
    const b = (a + 1 + Math.floor(Math.random() * (hotProducts - 1))) % hotProducts;
    return [
      { productId: ids[a]!, quantity: 1 },
      { productId: ids[b]!, quantity: 2 },
    ];
  };
  let prepared = 0;
  let dropped = 0;
  const customer = async (): Promise<Prepared> => {
    const userId = uuidv7();
    const signed = await authRuntime.keys.sign({ email: `${userId}@example.test`, sid: uuidv7(), roles: ["customer"], email_verified: true }, userId, authRuntime.config.accessTokenTtlMs);
    const headers = { authorization: `Bearer ${signed.token}` };
    let cartId = "";
    for (const line of linesOf()) cartId = (await carts.addItem(line, { headers })).cart!.id;
    await carts.applyCoupon({ code }, { headers });
    return {
      request: {
        cartId,
        shippingAddress: address,
        shippingMethodId: shippingMethod!.id,
        paymentToken: { provider: "sandbox", token: "tok_sandbox_success" },
        idempotencyKey: uuidv7(),
      },
      headers,
    };
  };
  const prepare = async (count: number): Promise<Prepared[]> => {
    const started = performance.now();
    // A customer whose preparation fails (the busy machine: a deadline) is tried once more with a new customer, then left out.
    const items = await pooled(Array.from({ length: count }), 16, () => customer().catch(() => customer().catch(() => undefined)));
    const ready = items.filter((i): i is Prepared => i !== undefined);
    prepared += ready.length;
    dropped += count - ready.length;
    say(`checkout: prepared ${ready.length} customers with a cart in ${((performance.now() - started) / 1000).toFixed(1)} s (not metered)${ready.length < count ? `, ${count - ready.length} failed` : ""}`);
    return ready;
  };

  const since = new Date();
  say("checkout: PlaceOrder, gRPC direct to Order, every call a new customer and cart");
  await bench.measure({
    scenario: checkoutScenario,
    variant: "gRPC direct",
    servedByMesh: true,
    openLoop: false,
    prepare,
    target: { kind: "rpc", protocol: "grpc", baseUrl: mesh.url("order"), method: "ecommerce.order.v1.OrderService/PlaceOrder", requests: [], once: true },
  });
  const outbox = await outboxPerOrder(mesh, since);
  say(
    `checkout: ${outbox.confirmed} confirmed of ${outbox.orders} orders from ${prepared} prepared carts (${dropped} preparations failed); ` +
      `outbox rows per confirmed order ${outbox.perOrder.toFixed(2)}: ${outbox.bySubject.join("; ")}`,
  );

  const baseline = await startCheckoutBaseline(checkoutOutboxRows);
  bench.meter.watchDatabase(baseline.database);
  try {
    say(`checkout: the same writes in one PostgreSQL transaction (node:http, ${baseline.outboxRows} outbox rows per order)`);
    await bench.measure({ scenario: checkoutScenario, variant: "one transaction", servedByMesh: false, openLoop: false, target: { kind: "http", urls: [`${baseline.url}/checkout`], method: "POST" } });
  } finally {
    await baseline.stop();
  }
}

/**
 * The baseline's schema: what a monolith's checkout writes, one table per kind of row
 * the mesh writes (order, items, status history, reservation and its lines, stock,
 * coupon and promotion counters and the usage row, payment and its transaction, outbox).
 */
const baselineSchema = [
  "create table stock (product_id uuid primary key, sku text not null, name text not null, price_minor bigint not null, on_hand int not null, updated_at timestamptz not null default now())",
  "create table promotions (id uuid primary key, percent_bps int not null, budget_minor bigint not null, budget_used_minor bigint not null default 0, usage_count int not null default 0)",
  "create table coupons (id uuid primary key, promotion_id uuid not null references promotions, code text not null unique, times_used int not null default 0, max_uses int)",
  `create table orders (id uuid primary key, order_number text not null unique, user_id uuid not null, status text not null, payment_status text not null,
     subtotal_minor bigint not null, discount_minor bigint not null, shipping_minor bigint not null, total_minor bigint not null, currency_code text not null,
     shipping_address jsonb not null, idempotency_key text not null, created_at timestamptz not null default now(), unique (user_id, idempotency_key))`,
  "create table order_items (id uuid primary key, order_id uuid not null references orders, product_id uuid not null, sku text not null, name text not null, quantity int not null, unit_price_minor bigint not null, total_minor bigint not null)",
  "create table order_status_history (id uuid primary key, order_id uuid not null references orders, status text not null, created_at timestamptz not null default now())",
  "create table stock_reservations (id uuid primary key, order_id uuid not null unique, status text not null, created_at timestamptz not null default now())",
  "create table stock_reservation_lines (id uuid primary key, reservation_id uuid not null references stock_reservations, product_id uuid not null, quantity int not null)",
  "create table coupon_usages (id uuid primary key, coupon_id uuid not null references coupons, order_id uuid not null, user_id uuid not null, discount_minor bigint not null, unique (coupon_id, order_id))",
  "create table payments (id uuid primary key, order_id uuid not null unique, amount_minor bigint not null, currency_code text not null, status text not null, provider text not null, idempotency_key text not null unique)",
  "create table payment_transactions (id uuid primary key, payment_id uuid not null references payments, kind text not null, status text not null, amount_minor bigint not null, created_at timestamptz not null default now())",
  `create table outbox_events (id uuid primary key, subject text not null, event_type text not null, payload bytea not null, headers jsonb not null default '{}',
     created_at timestamptz not null default now(), published_at timestamptz, attempts int not null default 0, last_error text)`,
  "create index outbox_events_unpublished on outbox_events (created_at, id) where published_at is null",
];

export interface CheckoutBaseline {
  url: string;
  /** Its database's name (for the meter's PostgreSQL CPU). */
  database: string;
  pool: pg.Pool;
  outboxRows: number;
  stop(): Promise<void>;
}

/**
 * The baseline: POST /checkout places one order (a new customer, two lines of the same
 * ten deep-stock products, the one coupon) with one transaction on one database: 14
 * statements (BEGIN, stock decrement with its check, coupon and promotion counters,
 * order, items, history, reservation and its lines, coupon usage, payment and its
 * transaction, `outboxRows` outbox rows in one insert, COMMIT). No saga, no RPC, no
 * provider: the floor of what a checkout must write.
 */
export async function startCheckoutBaseline(outboxRows: number): Promise<CheckoutBaseline> {
  const dbs = new TestDatabases();
  const url = dbs.url("checkout_baseline");
  const database = decodeURIComponent(new URL(url).pathname.slice(1));
  const admin = new pg.Client({ connectionString: postgresAdminUrl });
  await admin.connect();
  try {
    await admin.query(`create database "${database}"`);
  } finally {
    await admin.end();
  }
  const pool = new pg.Pool({ connectionString: url, max: 20 });
  // An idle connection PostgreSQL ends (an administrator's terminate on the shared machine) must not end the bench;
  // a request on a broken connection fails and counts as an error.
  pool.on("error", () => undefined);
  for (const ddl of baselineSchema) await pool.query(ddl);
  const productIds = Array.from({ length: hotProducts }, () => uuidv7());
  for (const [i, id] of productIds.entries()) {
    await pool.query("insert into stock (product_id, sku, name, price_minor, on_hand) values ($1, $2, $3, $4, $5)", [id, `SKU-${i}`, `Product ${i}`, priceMinor, deepStock]);
  }
  const promotionId = uuidv7();
  await pool.query("insert into promotions (id, percent_bps, budget_minor) values ($1, 1000, 1000000000000)", [promotionId]);
  await pool.query("insert into coupons (id, promotion_id, code) values ($1, $2, 'BASELINE')", [uuidv7(), promotionId]);
  let orderNumber = 0;
  const payload = Buffer.alloc(300, 1);

  const place = async (): Promise<boolean> => {
    const a = Math.floor(Math.random() * hotProducts);
    const b = (a + 1 + Math.floor(Math.random() * (hotProducts - 1))) % hotProducts;
    const lines = [
      { productId: productIds[a]!, quantity: 1 },
      { productId: productIds[b]!, quantity: 2 },
    ].sort((x, y) => x.productId.localeCompare(y.productId)); // one lock order: no deadlocks between checkouts
    const orderId = uuidv7();
    const userId = uuidv7();
    const db = await pool.connect();
    try {
      await db.query("begin");
      const stock = await db.query<{ product_id: string; sku: string; name: string; price_minor: string }>(
        `update stock s set on_hand = s.on_hand - l.q, updated_at = now() from unnest($1::uuid[], $2::int[]) as l(p, q)
         where s.product_id = l.p and s.on_hand >= l.q returning s.product_id, s.sku, s.name, s.price_minor`,
        [lines.map((l) => l.productId), lines.map((l) => l.quantity)],
      );
      if (stock.rowCount !== lines.length) throw new Error("out of stock");
      const price = new Map(stock.rows.map((r) => [r.product_id, r]));
      const subtotal = lines.reduce((s, l) => s + BigInt(price.get(l.productId)!.price_minor) * BigInt(l.quantity), 0n);
      const coupon = await db.query<{ id: string; promotion_id: string; percent_bps: number }>(
        `update coupons c set times_used = c.times_used + 1 from promotions p
         where c.code = 'BASELINE' and p.id = c.promotion_id and (c.max_uses is null or c.times_used < c.max_uses) returning c.id, c.promotion_id, p.percent_bps`,
      );
      const discount = (subtotal * BigInt(coupon.rows[0]!.percent_bps)) / 10_000n;
      const promo = await db.query("update promotions set usage_count = usage_count + 1, budget_used_minor = budget_used_minor + $2 where id = $1 and budget_used_minor + $2 <= budget_minor", [
        coupon.rows[0]!.promotion_id,
        discount,
      ]);
      if (promo.rowCount !== 1) throw new Error("budget exhausted");
      const shippingMinor = 500n;
      const total = subtotal - discount + shippingMinor;
      await db.query(
        `insert into orders (id, order_number, user_id, status, payment_status, subtotal_minor, discount_minor, shipping_minor, total_minor, currency_code, shipping_address, idempotency_key)
         values ($1, $2, $3, 'confirmed', 'authorized', $4, $5, $6, $7, 'USD', $8, $9)`,
        [orderId, `ORD-B${process.pid}-${++orderNumber}`, userId, subtotal, discount, shippingMinor, total, address, uuidv7()],
      );
      await db.query(
        `insert into order_items (id, order_id, product_id, sku, name, quantity, unit_price_minor, total_minor)
         select x.id, $1, x.p, s.sku, s.name, x.q, s.price_minor, s.price_minor * x.q from unnest($2::uuid[], $3::uuid[], $4::int[]) as x(id, p, q) join stock s on s.product_id = x.p`,
        [orderId, lines.map(() => uuidv7()), lines.map((l) => l.productId), lines.map((l) => l.quantity)],
      );
      await db.query("insert into order_status_history (id, order_id, status) values ($1, $2, 'confirmed')", [uuidv7(), orderId]);
      const reservationId = uuidv7();
      await db.query("insert into stock_reservations (id, order_id, status) values ($1, $2, 'committed')", [reservationId, orderId]);
      await db.query("insert into stock_reservation_lines (id, reservation_id, product_id, quantity) select unnest($1::uuid[]), $2, unnest($3::uuid[]), unnest($4::int[])", [
        lines.map(() => uuidv7()),
        reservationId,
        lines.map((l) => l.productId),
        lines.map((l) => l.quantity),
      ]);
      await db.query("insert into coupon_usages (id, coupon_id, order_id, user_id, discount_minor) values ($1, $2, $3, $4, $5)", [uuidv7(), coupon.rows[0]!.id, orderId, userId, discount]);
      const paymentId = uuidv7();
      await db.query("insert into payments (id, order_id, amount_minor, currency_code, status, provider, idempotency_key) values ($1, $2, $3, 'USD', 'authorized', 'sandbox', $4)", [
        paymentId,
        orderId,
        total,
        `order-${orderId}-authorize`,
      ]);
      await db.query("insert into payment_transactions (id, payment_id, kind, status, amount_minor) values ($1, $2, 'authorization', 'succeeded', $3)", [uuidv7(), paymentId, total]);
      await db.query("insert into outbox_events (id, subject, event_type, payload) select unnest($1::uuid[]), 'bench.checkout', 'bench.v1.CheckoutEvent', $2", [
        Array.from({ length: outboxRows }, () => uuidv7()),
        payload,
      ]);
      await db.query("commit");
      return true;
    } catch (error) {
      await db.query("rollback").catch(() => undefined);
      throw error;
    } finally {
      db.release();
    }
  };

  const server = createServer((req, res) => {
    req.resume();
    place().then(
      () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
      },
      (error: unknown) => {
        res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: (error as Error).message }));
      },
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    database,
    pool,
    outboxRows,
    async stop() {
      await new Promise<void>((r) => server.close(() => r()));
      await pool.end();
      await dbs.dropAll();
    },
  };
}

/** Lines "mesh / one transaction" for each mode both checkout rows have. */
export function checkoutRatios(rows: Row[]): string[] {
  const out: string[] = [];
  for (const mesh of rows.filter((r) => r.scenario === checkoutScenario && r.variant === "gRPC direct")) {
    const base = rows.find((r) => r.scenario === checkoutScenario && r.variant === "one transaction" && r.mode === mesh.mode);
    if (!base) continue;
    const x = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || !Number.isFinite(a / b) ? "-" : `${(a / b).toFixed(2)}x`);
    const both = (r: Row) => (r.pgCpuUs === undefined ? undefined : r.cpuUs + r.pgCpuUs);
    out.push(
      `${mesh.mode}: orders/s ${mesh.rps.toFixed(1)} vs ${base.rps.toFixed(1)} = ${x(mesh.rps, base.rps)}; p50 ${x(mesh.p50Ms, base.p50Ms)}, p99 ${x(mesh.p99Ms, base.p99Ms)}; ` +
        `SQL/order ${mesh.statements.toFixed(1)} vs ${base.statements.toFixed(1)} = ${x(mesh.statements, base.statements)}; ` +
        `CPU/order servers ${x(mesh.cpuUs, base.cpuUs)}, servers + PostgreSQL ${x(both(mesh), both(base))}; peer RPCs/order ${mesh.peerRpcs.toFixed(1)}`,
    );
  }
  return out;
}
