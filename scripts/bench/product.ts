/**
 * The Product part of `npm run bench`: GetProduct (gRPC direct, through the edge, and
 * a bare Connect server), SearchProducts through the edge over a seeded catalog of
 * BENCH_PRODUCTS products (default 100000, services/product/seed.ts) with EXPLAIN of
 * its statements, and ReserveStock under contention directly over gRPC (INTERNAL:
 * with a service credential), each beside a bare node:http + pg baseline that runs
 * the same SQL on the same database.
 */
import { execFileSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { SearchFacet, SearchService } from "../../gen/ecommerce/product/v1/search_pb.js";
import { developmentServiceSecret } from "../../kit/config.ts";
import type { TestMesh } from "../../kit/testing/mesh.ts";
import { benchSearchWords, loadBenchCatalog } from "../../services/product/bench.ts";
import { seedCatalog } from "../../services/product/seed.ts";
import { bareProductServer } from "./bare.ts";
import { captureQueries } from "./meter.ts";
import type { Bench, RowSpec } from "./run.ts";

/** A signed-in admin: registered, promoted with the documented create-admin command, signed in again. */
export async function adminToken(mesh: TestMesh): Promise<string> {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const email = `bench-admin-${Date.now()}@example.test`;
  const password = "quartz lantern admin river 9931";
  await auth.register({ email, password });
  execFileSync(process.execPath, [join(import.meta.dirname, "..", "..", "services", "auth", "create-admin.ts"), "--email", email], {
    env: { ...process.env, DATABASE_URL: mesh.services.auth!.ctx.config.databaseUrl, LOG_LEVEL: "silent" },
    stdio: "ignore",
  });
  return (await auth.login({ email, password })).tokens!.accessToken;
}

function baselineServer(pool: pg.Pool): Server {
  return createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    let body: unknown;
    if (url.pathname === "/product") {
      // What GetProduct reads: the row and its relations.
      const id = url.searchParams.get("id");
      const [product, categories, tags, images, variants] = await Promise.all([
        pool.query("select * from products where id = $1 and status = 'active' and is_visible", [id]),
        pool.query("select category_id from product_categories where product_id = $1", [id]),
        pool.query("select tag from product_tags where product_id = $1 order by tag", [id]),
        pool.query("select * from product_images where product_id = $1 order by sort_order", [id]),
        pool.query("select * from product_variants where product_id = $1 order by created_at, id", [id]),
      ]);
      body = { ...product.rows[0], categories: categories.rows, tags: tags.rows, images: images.rows, variants: variants.rows };
    } else if (url.pathname === "/search") {
      // The core of SearchProducts: ranked full-text hits and category counts.
      const q = url.searchParams.get("q");
      const where = "p.status = 'active' and p.is_visible and p.search_vector @@ websearch_to_tsquery('english', $1)";
      const [hits, facets] = await Promise.all([
        pool.query(`select p.id, p.name, p.slug from products p where ${where} order by ts_rank(p.search_vector, websearch_to_tsquery('english', $1)) desc, p.id limit 20`, [q]),
        pool.query(`select pc.category_id, count(*)::int as n from products p join product_categories pc on pc.product_id = p.id where ${where} group by pc.category_id`, [q]),
      ]);
      body = { hits: hits.rows, facets: facets.rows };
    } else if (url.pathname === "/reserve") {
      // The contended statement of ReserveStock: a conditional decrement in a transaction.
      const client = await pool.connect();
      try {
        await client.query("begin");
        const r = await client.query(
          "update product_inventory set reserved_quantity = reserved_quantity + 1 where product_id = $1 and variant_id is null and quantity - reserved_quantity >= 1 returning id",
          [url.searchParams.get("id")],
        );
        await client.query("commit");
        body = { reserved: r.rowCount };
      } finally {
        client.release();
      }
    }
    res.writeHead(body ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify(body ?? {}));
  });
}

/** Products the catalog-wide rows ask for: a random sample of what customers can see. */
async function sampleProductIds(pool: pg.Pool, n: number): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>("select id from products where status = 'active' and is_visible order by random() limit $1", [n]);
  return rows.map((r) => r.id);
}

const searchRequest = (query: string) => ({ query, pageSize: 20, facets: ["SEARCH_FACET_CATEGORY", "SEARCH_FACET_PRICE_BAND"] });

/**
 * EXPLAIN (no ANALYZE) of every statement one SearchProducts call sends, as sent;
 * prints the plans and returns how many Seq Scans on products they contain.
 */
async function explainSearch(mesh: TestMesh, pool: pg.Pool, say: (l: string) => void): Promise<number> {
  const search = createClient(SearchService, createGrpcTransport({ baseUrl: mesh.url("product") }));
  const word = benchSearchWords[0]!;
  const statements = await captureQueries(() => search.searchProducts({ query: word, pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND] }));
  let seqScans = 0;
  say(`SearchProducts "${word}": EXPLAIN of its ${statements.length} statements`);
  for (const { text, values } of statements.filter((q) => /^\s*(select|with)\b/i.test(q.text))) {
    // With the statement's own parameters, so the plan is the one PostgreSQL chose for them.
    const { rows } = await pool.query<{ "QUERY PLAN": string }>(`explain ${text}`, values);
    const plan = rows.map((r) => r["QUERY PLAN"]);
    const flagged = plan.filter((l) => /Seq Scan on products\b/.test(l)).length;
    seqScans += flagged;
    console.log(`  ${flagged > 0 ? "SEQ SCAN ON PRODUCTS  " : ""}${text.replace(/\s+/g, " ").slice(0, 110)}…`);
    for (const l of plan) console.log(`      ${/Seq Scan on products\b/.test(l) ? "!! " : ""}${l}`);
  }
  return seqScans;
}

export async function productBench(bench: Bench, mesh: TestMesh, edgeUrl: string, say: (l: string) => void): Promise<{ products: number; searchSeqScans: number }> {
  const productDb = mesh.services.product!.ctx.config.databaseUrl;
  const products = Number(process.env.BENCH_PRODUCTS ?? 100_000);
  say(`product: seeding ${products} products (BENCH_PRODUCTS) with services/product/seed.ts`);
  const seedStart = performance.now();
  await seedCatalog(productDb, { products, progress: (line, final) => (final ? say(line.trim()) : undefined) });
  say(`product: seeded in ${((performance.now() - seedStart) / 1000).toFixed(1)} s; signing in an admin and loading the contended products`);
  const admin = await adminToken(mesh);
  const hot = await loadBenchCatalog(mesh.url("product"), admin, 10);
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const service = await auth.issueServiceToken({ serviceName: "order", serviceSecret: developmentServiceSecret("order") });

  const pool = new pg.Pool({ connectionString: productDb, max: 10 });
  // The seed dirtied hundreds of MB of buffers: flush them now rather than let the next checkpoint
  // write them during a measured phase.
  const flushed = performance.now();
  await pool.query("checkpoint").then(
    () => say(`product: checkpoint after the seed in ${((performance.now() - flushed) / 1000).toFixed(1)} s`),
    (error: Error) => say(`product: no checkpoint after the seed (${error.message}); a later one may land in a measured phase`),
  );
  const server = baselineServer(pool);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const bare = await bareProductServer(productDb);
  let searchSeqScans = 0;
  try {
    const ids = await sampleProductIds(pool, 300);
    const getProduct = { method: "ecommerce.product.v1.ProductService/GetProduct", requests: ids.map((id) => ({ id })) };
    await bench.measure({ scenario: "GetProduct", variant: "node:http", servedByMesh: false, target: { kind: "http", urls: ids.map((id) => `${base}/product?id=${id}`) } });
    const compared: RowSpec[] = [
      { scenario: "GetProduct", variant: "bare Connect", servedByMesh: false, target: { kind: "rpc", protocol: "grpc", baseUrl: bare.url, ...getProduct } },
      { scenario: "GetProduct", variant: "gRPC direct", servedByMesh: true, target: { kind: "rpc", protocol: "grpc", baseUrl: mesh.url("product"), ...getProduct } },
      { scenario: "GetProduct", variant: "via edge", servedByMesh: true, target: { kind: "rpc", protocol: "connect", baseUrl: edgeUrl, ...getProduct } },
    ];
    for (const spec of compared) await bench.measure(spec);
    await bench.interleave(compared);

    await bench.measure({ scenario: "SearchProducts", variant: "node:http", servedByMesh: false, target: { kind: "http", urls: benchSearchWords.map((w) => `${base}/search?q=${w}`) } });
    await bench.measure({
      scenario: "SearchProducts",
      variant: "via edge",
      servedByMesh: true,
      target: { kind: "rpc", protocol: "connect", baseUrl: edgeUrl, method: "ecommerce.product.v1.SearchService/SearchProducts", requests: benchSearchWords.map(searchRequest) },
    });
    searchSeqScans = await explainSearch(mesh, pool, say);

    await bench.measure({ scenario: "ReserveStock", variant: "node:http", servedByMesh: false, target: { kind: "http", method: "POST", urls: hot.map((id) => `${base}/reserve?id=${id}`) } });
    await bench.measure({
      scenario: "ReserveStock",
      variant: "gRPC contended",
      servedByMesh: true,
      target: {
        kind: "rpc",
        protocol: "grpc",
        baseUrl: mesh.url("product"),
        method: "ecommerce.product.v1.InventoryService/ReserveStock",
        requests: hot.map((productId) => ({ orderId: "$uuid", lines: [{ productId, quantity: 1 }] })),
        headers: { authorization: `Bearer ${service.accessToken}` },
      },
    });
  } finally {
    await bare.stop();
    server.close();
    await pool.end();
  }
  return { products, searchSeqScans };
}
