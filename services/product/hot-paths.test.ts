/**
 * What the hot paths cost PostgreSQL, through the public contract against a
 * real server: every statement the process sends during one call is captured
 * (scripts/bench/meter.ts, the bench's own counter), so the counts are exact.
 * GetProduct is one statement, ReserveStock a fixed number whatever its lines,
 * SearchProducts one statement (page and counts), which PostgreSQL plans
 * through the indexes (EXPLAIN with the call's own parameters, on a seeded
 * catalog: no Seq Scan on products). And the "commit, then fail" of
 * CommitReservation, which needs a sweeper that does not run.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { ReservationStatus } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { SearchFacet } from "../../gen/ecommerce/product/v1/search_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { type CapturedQuery, captureQueries, installSqlCounter } from "../../scripts/bench/meter.ts";
import { seedCatalog } from "./seed.ts";
import { activeProduct, auth, failure, type ProductHarness, startProductHarness, unique } from "./testing.ts";

let h: ProductHarness;
let pool: pg.Pool;

beforeAll(async () => {
  // No background passes during a measured call: the relay polls, the sweeper and retention wait.
  // Reservations without a ttl expire after 1 s, and stay ACTIVE until something looks at them.
  h = await startProductHarness({ OUTBOX_POLL_MS: "600000", RESERVATION_SWEEP_INTERVAL_MS: "3600000", RESERVATION_TTL_SECONDS: "1" });
  installSqlCounter();
  const url = h.mesh.services.product!.ctx.config.databaseUrl;
  await seedCatalog(url, { products: 4000 });
  pool = new pg.Pool({ connectionString: url, max: 2 });
}, 120_000);

afterAll(async () => {
  await pool?.end();
  await h?.stop();
});

/**
 * The statements one call sends, once the outbox relay has nothing left to
 * publish; the relay's and the health probe's (`select 1`) are not the call's.
 */
async function statementsOf(call: () => Promise<unknown>): Promise<CapturedQuery[]> {
  await eventually(async () => ((await h.sql<{ n: number }>("select count(*)::int as n from outbox_events where published_at is null"))[0]!.n === 0 ? true : undefined));
  return (await captureQueries(call)).filter((q) => q.text.trim() !== "select 1" && !/outbox_/.test(q.text));
}

/** The plan PostgreSQL makes of a statement for any values (a generic plan), with these values bound to it. */
async function genericPlanOf(text: string, values: unknown[]): Promise<string> {
  const client = await pool.connect();
  try {
    await client.query("set plan_cache_mode = force_generic_plan");
    await client.query(`prepare generic_probe as ${text}`);
    // EXPLAIN takes no bound parameters: the values go in as literals (this test's own statement, not the service's).
    const literal = (v: unknown): string =>
      v === null || v === undefined ? "null" : client.escapeLiteral(Array.isArray(v) ? `{${v.map((x) => `"${String(x).replace(/["\\]/g, "\\$&")}"`).join(",")}}` : String(v));
    const { rows } = await client.query<{ "QUERY PLAN": string }>(`explain execute generic_probe(${values.map(literal).join(", ")})`);
    return rows.map((r) => r["QUERY PLAN"]).join("\n");
  } finally {
    await client.query("deallocate generic_probe").catch(() => undefined);
    await client.query("reset plan_cache_mode").catch(() => undefined);
    client.release();
  }
}

const texts = (statements: CapturedQuery[]) => statements.map((q) => q.text.replace(/\s+/g, " ").slice(0, 120)).join("\n");

describe("statements per call", () => {
  it("GetProduct reads a product with its relations in one statement, by id and by slug", async () => {
    const product = await activeProduct(h, { tags: ["wool"], attributes: { colour: "red" } });
    await h.products.createVariant({ productId: product.id, sku: unique("V"), price: { amountMinor: 2500n, currencyCode: "USD" }, attributes: { size: "M" } }, auth(h.admin));
    await h.products.addImage({ productId: product.id, url: "https://img.example.com/a.jpg" }, auth(h.admin));

    let answer: Awaited<ReturnType<typeof h.products.getProduct>> | undefined;
    const byId = await statementsOf(async () => (answer = await h.products.getProduct({ lookup: { case: "id", value: product.id } }, {})));
    expect(byId, texts(byId)).toHaveLength(1);
    expect(answer!.product).toMatchObject({ id: product.id, tags: ["wool"], variants: [{ attributes: { size: "M" } }], images: [{ isPrimary: true }] });

    const bySlug = await statementsOf(() => h.products.getProduct({ lookup: { case: "slug", value: product.slug } }, {}));
    expect(bySlug, texts(bySlug)).toHaveLength(1);
  });

  it("GetCategory and GetCategoryTree read the tree in one statement and answer what CreateCategory did", async () => {
    const root = (
      await h.categories.createCategory({ name: unique("Lamps"), description: "Desk and floor lamps", imageUrl: "https://img.example.com/l.jpg", sortOrder: 3, isActive: true }, auth(h.admin))
    ).category!;
    const child = (await h.categories.createCategory({ name: unique("Desk lamps"), parentId: root.id, isActive: true }, auth(h.admin))).category!;
    let got: Awaited<ReturnType<typeof h.categories.getCategory>> | undefined;
    const one = await statementsOf(async () => (got = await h.categories.getCategory({ lookup: { case: "id", value: child.id } }, {})));
    expect(one, texts(one)).toHaveLength(1);
    expect(got!.category).toEqual(child);
    expect(got!.ancestors).toEqual([root]);
    let tree: Awaited<ReturnType<typeof h.categories.getCategoryTree>> | undefined;
    const walked = await statementsOf(async () => (tree = await h.categories.getCategoryTree({ rootId: root.id }, {})));
    expect(walked, texts(walked)).toHaveLength(1);
    expect(tree!.roots[0]!.category).toEqual(root);
    expect(tree!.roots[0]!.children.map((c) => c.category)).toEqual([child]);
  });

  it("ReserveStock takes the same few statements for one line and for five", async () => {
    const products = await Promise.all(Array.from({ length: 5 }, () => activeProduct(h, {}, 10)));
    const ttl = { seconds: 600n, nanos: 0 };
    const reserve = (lines: { productId: string; quantity: number }[]) => statementsOf(() => h.inventory.reserveStock({ orderId: crypto.randomUUID(), lines, ttl }, auth(h.service)));

    const one = await reserve([{ productId: products[0]!.id, quantity: 1 }]);
    const five = await reserve(products.map((p) => ({ productId: p.id, quantity: 2 })));
    // BEGIN, the order's lock, its latest reservation, the lines, the inventory rows, the write, the stock refresh, COMMIT.
    expect(one.length, texts(one)).toBeLessThanOrEqual(10);
    expect(five.length, texts(five)).toBe(one.length);
  });
});

describe("CommitReservation of a reservation that expired before the sweeper saw it", () => {
  it("gives the units back (committed) and then fails with RESERVATION_EXPIRED", async () => {
    const p = await activeProduct(h, {}, 3);
    const orderId = crypto.randomUUID();
    await h.inventory.reserveStock({ orderId, lines: [{ productId: p.id, quantity: 3 }] }, auth(h.service));
    // The sweeper of this harness runs hourly: the reservation stays ACTIVE past its expiry.
    await eventually(async () => ((await h.sql<{ due: boolean }>("select expires_at <= now() as due from stock_reservations where order_id = $1", [orderId]))[0]!.due ? true : undefined));
    expect(await failure(h.inventory.commitReservation({ orderId }, auth(h.service)))).toMatchObject({ code: Code.FailedPrecondition, reason: "RESERVATION_EXPIRED" });
    const [reservation] = (await h.inventory.listReservations({ orderId }, auth(h.admin))).reservations;
    expect(reservation).toMatchObject({ status: ReservationStatus.EXPIRED, releaseReason: "expired" });
    expect((await h.inventory.getStock({ productId: p.id }, auth(h.admin))).items[0]).toMatchObject({ quantityOnHand: 3, reservedQuantity: 0, availableQuantity: 3 });
  });
});

describe("SearchProducts on a seeded catalog", () => {
  const request = { query: "merino", pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND, SearchFacet.TAG, SearchFacet.RATING], facetAttributeKeys: ["colour"] };

  it("sends its page and its counts in one statement", async () => {
    const statements = await statementsOf(() => h.search.searchProducts(request, {}));
    expect(statements, texts(statements)).toHaveLength(1);
    // Within a category too: its visible subtree is read in the same statement.
    const [root] = await h.sql<{ id: string }>("select id from categories where parent_id is null order by sort_order, name limit 1");
    const within = await statementsOf(() => h.search.searchProducts({ ...request, categoryId: root!.id }, {}));
    expect(within, texts(within)).toHaveLength(1);
  });

  it("has every statement planned through the indexes: no Seq Scan on products", async () => {
    const statements = await statementsOf(() => h.search.searchProducts(request, {}));
    // A category browsed without a query reads its subtree's products only (the GIN index of products.category_ids).
    const [leaf] = await h.sql<{ id: string }>("select id from categories where parent_id is not null order by name limit 1");
    statements.push(...(await statementsOf(() => h.search.searchProducts({ categoryId: leaf!.id, pageSize: 20, facets: request.facets, facetAttributeKeys: ["colour"] }, {}))));
    for (const { text, values } of statements.filter((q) => /^\s*(select|with)\b/i.test(q.text))) {
      const { rows } = await pool.query<{ "QUERY PLAN": string }>(`explain ${text}`, values);
      const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
      expect(plan, plan).not.toMatch(/Seq Scan on products\b/);
    }
  });

  it("plans a query's statement generically through the indexes too (it runs with its generic plan: kit/sql.ts genericPlan)", async () => {
    const [root] = await h.sql<{ id: string }>("select id from categories where parent_id is null order by sort_order, name limit 1");
    const bench = { query: "merino", pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND] };
    const statements = [
      // The bench's request (the postings), every facet (the GIN path), several words, and a typo within a category.
      ...(await statementsOf(() => h.search.searchProducts(bench, {}))),
      ...(await statementsOf(() => h.search.searchProducts(request, {}))),
      ...(await statementsOf(() => h.search.searchProducts({ ...bench, query: "merino wool" }, {}))),
      ...(await statementsOf(() => h.search.searchProducts({ ...bench, query: "merinno", categoryId: root!.id }, {}))),
    ].filter((q) => /\bpage_rows as\b/.test(q.text));
    // The one statement of each (a typo's "did you mean" adds counts of its spellings, planned per call).
    expect(statements, texts(statements)).toHaveLength(4);
    for (const [i, { text, values }] of statements.entries()) {
      const plan = await genericPlanOf(text, values);
      expect(plan, plan).not.toMatch(/Seq Scan on products\b/);
      expect(plan, plan).toMatch(/Bitmap Index Scan on products_search/);
      if (i === 0) expect(plan, plan).toMatch(/Index Only Scan using search_postings_lexeme/);
    }
  });

  it("answers a customer's one-word query from the word's postings alone, without reading products' GIN index", async () => {
    // The bench's request: a word, a page of 20, the category and price band facets.
    const statements = await statementsOf(() => h.search.searchProducts({ query: "merino", pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND] }, {}));
    expect(statements, texts(statements)).toHaveLength(1);
    const { text, values } = statements[0]!;
    const { rows } = await pool.query<{ "QUERY PLAN": string }>(`explain (analyze, costs off) ${text}`, values);
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    // The postings are read from the index (the seed vacuums, so the visibility map lets it skip the table) ...
    expect(plan, plan).toMatch(/Index Only Scan using search_postings_lexeme on search_postings .*\(actual time=[\d.]+ rows=[1-9]\d* loops=1\)/);
    // ... and the GIN path's scan of products is planned but never executed.
    expect(plan, plan).toMatch(/Bitmap Index Scan on products_search \(never executed\)/);
  });

  it("answers with the same hits, total and facets as the filters say", async () => {
    const res = await h.search.searchProducts(request, {});
    expect(res.totalCount).toBeGreaterThan(20);
    expect(res.hits).toHaveLength(20);
    expect(res.priceBandFacet.reduce((s, b) => s + b.count, 0)).toBe(res.totalCount);
    expect(res.ratingFacet.map((r) => r.minRating)).toEqual([4, 3, 2, 1]);
    const page2 = await h.search.searchProducts({ ...request, pageToken: res.nextPageToken }, {});
    const first = new Set(res.hits.map((x) => x.product!.id));
    expect(page2.hits.some((x) => first.has(x.product!.id))).toBe(false);
  });
});
