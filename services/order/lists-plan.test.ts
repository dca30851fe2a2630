/**
 * ListMyOrders and ListOrders stay index-driven as orders pile up: on 80,000 seeded
 * orders (services/order/seed.ts, the shape scripts/bench/orders-explain.ts measures at
 * 2M), every statement a list call sends through the public contract against a real
 * Order server (captured, scripts/bench/meter.ts) is explained with its own parameters:
 * it reads an index (the case's own where the planner has no equally good one), a page
 * an index gives in order is not sorted, and no scan reads nor Sort takes more rows than
 * a count's limit (scripts/bench/plans.ts), for every sort and filter the contract allows,
 * on the first page and on a page further down. Dropping any of the lists' indexes fails it.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderService } from "../../gen/ecommerce/order/v1/order_pb.js";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { type CapturedQuery, captureQueries, installSqlCounter } from "../../scripts/bench/meter.ts";
import { explainAnalyze, shapeOf } from "../../scripts/bench/plans.ts";
import { type OrderListCase, orderListCases, seedOrders } from "./seed.ts";
import { orderService } from "./service.ts";
import { auth } from "./testing.ts";

const seed = { orders: 80_000, customers: 8_000, heavy: 2, products: 1_000 };
// A count's `limit 10001` over a seq scan stops near there; a whole table is 80,000 rows.
const bounded = 15_000;

let mesh: TestMesh;
let pool: pg.Pool;
let orders: ReturnType<typeof createClient<typeof OrderService>>;
let adminToken: string;
const issuer = new TestIssuer();

beforeAll(async () => {
  // No background passes during a measured call.
  mesh = await startMesh([issuer.trustedBy(orderService)], { OUTBOX_POLL_MS: "600000", ORDER_RECOVERY_EVERY_MS: "3600000" });
  installSqlCounter();
  const url = mesh.services.order!.ctx.config.databaseUrl;
  await seedOrders(url, seed);
  pool = new pg.Pool({ connectionString: url, max: 1 });
  await pool.query("vacuum analyze orders");
  await pool.query("vacuum analyze order_items");
  orders = createClient(OrderService, createGrpcTransport({ baseUrl: mesh.url("order") }));
  adminToken = await issuer.user(uuidv7(), ["customer", "admin"]);
}, 180_000);

afterAll(async () => {
  await pool?.end();
  await mesh?.stop();
});

/** The call's statements, without the health probe's and the outbox's. */
async function statementsOf(call: () => Promise<unknown>): Promise<CapturedQuery[]> {
  return (await captureQueries(call)).filter((q) => /^\s*select\b/i.test(q.text) && q.text.trim() !== "select 1" && !/outbox_/.test(q.text));
}

async function list(c: OrderListCase, pageToken = "", pageSize = 20) {
  if (c.my) return orders.listMyOrders({ ...c.req, pageToken, pageSize }, auth(await issuer.user(c.my)));
  return orders.listOrders({ ...c.req, pageToken, pageSize }, auth(adminToken));
}

const isPage = (text: string) => /^\s*select \* from orders\b/.test(text);

async function problemsOf(c: OrderListCase, statements: CapturedQuery[]): Promise<string[]> {
  const problems: string[] = [];
  for (const { text, values } of statements) {
    if (c.countLimit && /count\(\*\)/.test(text)) continue;
    const { plan } = await explainAnalyze(pool, text, values);
    const shape = shapeOf(plan, bounded);
    const what = text.replace(/\s+/g, " ").slice(0, 160);
    // A count may read no index when its seq scan stops at the limit (the problems say when it does not).
    if (shape.indexes.length === 0 && !/count\(\*\)/.test(text)) problems.push(`reads no index: ${what}`);
    if (c.index && isPage(text) && !shape.indexes.includes(c.index)) problems.push(`does not read ${c.index} (reads ${shape.indexes.join(", ") || "no index"}): ${what}`);
    if (c.ordered && isPage(text) && shape.sorts > 0) problems.push(`sorts a list an index gives in order: ${what}`);
    for (const p of shape.problems) problems.push(`${p}: ${what}`);
  }
  return problems;
}

describe("list plans on 80,000 orders", () => {
  // Known limits (the README's) are measured by the bench, not asserted here.
  for (const c of orderListCases(seed.orders, seed).filter((c) => !c.limit)) {
    it(`${c.name}: every statement through an index, first page and further down`, async () => {
      let first: Awaited<ReturnType<typeof list>> | undefined;
      const statements = await statementsOf(async () => (first = await list(c)));
      expect(statements.length).toBeGreaterThanOrEqual(c.my ? 1 : 2);
      const problems = await problemsOf(c, statements);
      // Further down: a few pages of 100 through the contract, then the next page's statements.
      let token = first!.nextPageToken;
      for (let i = 0; i < 3 && token; i++) token = (await list(c, token, 100)).nextPageToken;
      if (token) problems.push(...(await problemsOf(c, await statementsOf(() => list(c, token)))));
      expect(problems, problems.join("\n")).toEqual([]);
    });
  }

  it("pages by keyset: the pages of a heavy customer's list neither repeat nor skip an order", async () => {
    const [heavy] = orderListCases(seed.orders, seed);
    const seen = new Set<string>();
    let token = "";
    let pages = 0;
    do {
      const page = await list(heavy!, token, 100);
      for (const o of page.orders) seen.add(o.id);
      token = page.nextPageToken;
      pages++;
    } while (token);
    const [{ n }] = (
      await pool.query<{ n: number }>(
        "select count(*)::int as n from orders where user_id = $1 and (announced or (status = 'cancelled' and payment_id is not null)) and status <> 'payment_failed'",
        [heavy!.my],
      )
    ).rows as [{ n: number }];
    expect(seen.size).toBe(n);
    expect(pages).toBe(Math.ceil(n / 100));
  });
});
