/**
 * The Product part of `npm run bench`: GetProduct and SearchProducts through the
 * edge (as a browser), ReserveStock under contention directly over gRPC (INTERNAL:
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
import { developmentServiceSecret } from "../../kit/config.ts";
import type { TestMesh } from "../../kit/testing/mesh.ts";
import { benchSearchWords, loadBenchCatalog } from "../../services/product/bench.ts";
import { type LoadResult, measureInWorker } from "./load.ts";

/** A signed-in admin: registered, promoted with the documented create-admin command, signed in again. */
async function adminToken(mesh: TestMesh): Promise<string> {
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

export async function productBench(mesh: TestMesh, edgeUrl: string, seconds: number, concurrencies: number[], say: (l: string) => void): Promise<LoadResult[]> {
  say("product: signing in an admin and loading the bench catalog");
  const admin = await adminToken(mesh);
  const ids = await loadBenchCatalog(mesh.url("product"), admin, 300);
  const hot = ids.slice(0, 10);
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const service = await auth.issueServiceToken({ serviceName: "order", serviceSecret: developmentServiceSecret("order") });

  const pool = new pg.Pool({ connectionString: mesh.services.product!.ctx.config.databaseUrl, max: 10 });
  const server = baselineServer(pool);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const durationMs = seconds * 1000;
  const results: LoadResult[] = [];
  try {
    for (const c of concurrencies) {
      say(`product scenarios at concurrency ${c} (${seconds} s each)`);
      results.push(await measureInWorker({ name: "GetProduct baseline", concurrency: c, durationMs, target: { kind: "http", urls: ids.map((id) => `${base}/product?id=${id}`) } }));
      results.push(
        await measureInWorker({
          name: "GetProduct via edge",
          concurrency: c,
          durationMs,
          target: { kind: "rpc", protocol: "connect", baseUrl: edgeUrl, method: "ecommerce.product.v1.ProductService/GetProduct", requests: ids.map((id) => ({ id })) },
        }),
      );
      results.push(
        await measureInWorker({ name: "SearchProducts baseline", concurrency: c, durationMs, target: { kind: "http", urls: benchSearchWords.map((w) => `${base}/search?q=${w}`) } }),
      );
      results.push(
        await measureInWorker({
          name: "SearchProducts via edge",
          concurrency: c,
          durationMs,
          target: {
            kind: "rpc",
            protocol: "connect",
            baseUrl: edgeUrl,
            method: "ecommerce.product.v1.SearchService/SearchProducts",
            requests: benchSearchWords.map((query) => ({ query, pageSize: 20, facets: ["SEARCH_FACET_CATEGORY", "SEARCH_FACET_PRICE_BAND"] })),
          },
        }),
      );
      results.push(
        await measureInWorker({ name: "ReserveStock baseline", concurrency: c, durationMs, target: { kind: "http", method: "POST", urls: hot.map((id) => `${base}/reserve?id=${id}`) } }),
      );
      results.push(
        await measureInWorker({
          name: "ReserveStock gRPC contended",
          concurrency: c,
          durationMs,
          target: {
            kind: "rpc",
            protocol: "grpc",
            baseUrl: mesh.url("product"),
            method: "ecommerce.product.v1.InventoryService/ReserveStock",
            requests: hot.map((productId) => ({ orderId: "$uuid", lines: [{ productId, quantity: 1 }] })),
            headers: { authorization: `Bearer ${service.accessToken}` },
          },
        }),
      );
    }
  } finally {
    server.close();
    await pool.end();
  }
  return results;
}
