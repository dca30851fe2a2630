/**
 * What SearchProducts costs PostgreSQL, statement by statement, over a seeded catalog:
 * runs searchProducts (services/product/search.ts, in this process, on the database
 * given) for each of the bench's twelve words with the bench's request (a customer,
 * page of 20, category and price band facets), captures the statements it sends with
 * their parameters (scripts/bench/meter.ts), and runs each with EXPLAIN (ANALYZE,
 * BUFFERS), printing PostgreSQL's execution time, the buffers touched and whether
 * the plan scans products sequentially. The machines are shared: each statement is
 * explained several times and the fastest and median executions are printed.
 *
 *   node scripts/bench/search-explain.ts [--seed N] [--runs 5] [--plans] [--request bench|hot|category|browse] DATABASE_URL
 *
 * --seed N seeds the database first with services/product/seed.ts (N products; the
 * bench uses 100000, about 2.5 minutes); --plans prints every plan of the first run;
 * --request: the bench's request (default), hot-paths.test.ts's (every facet), the
 * word within a root category, or no word within a leaf category (browse). The
 * service's migrations are applied to the database first, as the service would.
 */
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { SearchFacet, SearchProductsRequestSchema, SearchService } from "../../gen/ecommerce/product/v1/search_pb.js";
import { createLogger } from "../../kit/logger.ts";
import { inPagingScope } from "../../kit/paging.ts";
import { openServiceDatabase } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import { benchSearchWords } from "../../services/product/bench.ts";
import { searchProducts } from "../../services/product/search.ts";
import { seedCatalog } from "../../services/product/seed.ts";
import { productService } from "../../services/product/service.ts";
import { captureQueries, installSqlCounter } from "./meter.ts";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: { seed: { type: "string" }, runs: { type: "string", default: "5" }, plans: { type: "boolean", default: false }, request: { type: "string", default: "bench" } },
});
const url = positionals[0] ?? process.env.DATABASE_URL;
if (!url) throw new Error("usage: search-explain.ts [--seed N] [--runs N] [--plans] DATABASE_URL");
const runs = Math.max(1, Number(opts.runs));

if (opts.seed) {
  const t = performance.now();
  await seedCatalog(url, { products: Number(opts.seed) });
  console.log(`seeded in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
installSqlCounter();
const orm = await openServiceDatabase(productService, url, createLogger("search-explain", "warn"), 2);
const pool = new pg.Pool({ connectionString: url, max: 1 });

async function requestOf(word: string) {
  switch (opts.request) {
    case "hot":
      // services/product/hot-paths.test.ts: every facet and an attribute facet.
      return { query: word, pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND, SearchFacet.TAG, SearchFacet.RATING], facetAttributeKeys: ["colour"] };
    case "category": {
      // The word within the first root category, with every facet.
      const { rows } = await pool.query<{ id: string }>("select id from categories where parent_id is null order by sort_order, name limit 1");
      return { query: word, categoryId: rows[0]!.id, pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND, SearchFacet.TAG, SearchFacet.RATING], facetAttributeKeys: ["colour"] };
    }
    case "browse": {
      // No query: one leaf category per word, newest first, with every facet.
      const { rows } = await pool.query<{ id: string }>("select id from categories where parent_id is not null order by name");
      const leaf = rows[benchSearchWords.indexOf(word) % rows.length]!.id;
      return { categoryId: leaf, pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND, SearchFacet.TAG, SearchFacet.RATING], facetAttributeKeys: ["colour"] };
    }
    default:
      // scripts/bench/product.ts searchRequest.
      return { query: word, pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND] };
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const totals: { word: string; statements: number; min: number; median: number; hits: number }[] = [];
let seqScans = 0;
console.log(`request: ${opts.request}; ${runs} EXPLAIN (ANALYZE, BUFFERS) runs of each statement`);
for (const word of benchSearchWords.slice(0, Number(process.env.WORDS ?? benchSearchWords.length))) {
  const req = create(SearchProductsRequestSchema, await requestOf(word));
  let total = 0;
  // Inside the paging scope an RPC has (kit/paging.ts), as the service runs it.
  const statements = await captureQueries(() =>
    inPagingScope("search-explain", SearchService.method.searchProducts, req, async () => {
      total = (await searchProducts(sqlOf(orm.em.fork()), { admin: false }, "USD", req)).totalCount;
    }),
  );
  let sumMin = 0;
  let sumMedian = 0;
  const lines: string[] = [];
  for (const [i, { text, values }] of statements.entries()) {
    const times: number[] = [];
    const planning: number[] = [];
    let buffers = "";
    for (let r = 0; r < runs; r++) {
      const { rows } = await pool.query<{ "QUERY PLAN": unknown }>(`explain (analyze, buffers, format json) ${text}`, values);
      const [plan] = rows[0]!["QUERY PLAN"] as { "Execution Time": number; "Planning Time": number; Plan: Record<string, unknown> }[];
      times.push(plan!["Execution Time"]);
      planning.push(plan!["Planning Time"]);
      if (r === 0) {
        buffers = `shared hit ${plan!.Plan["Shared Hit Blocks"]} read ${plan!.Plan["Shared Read Blocks"]}`;
        const { rows: textPlan } = await pool.query<{ "QUERY PLAN": string }>(`explain ${text}`, values);
        const flagged = textPlan.filter((l) => /Seq Scan on products\b/.test(l["QUERY PLAN"])).length;
        seqScans += flagged;
        if (flagged > 0) buffers += "  SEQ SCAN ON PRODUCTS";
        if (opts.plans) {
          const { rows: analyzed } = await pool.query<{ "QUERY PLAN": string }>(`explain (analyze, buffers) ${text}`, values);
          lines.push(`    ${text.replace(/\s+/g, " ").slice(0, 200)}`, ...analyzed.map((l) => `      ${l["QUERY PLAN"]}`));
        }
      }
    }
    sumMin += Math.min(...times);
    sumMedian += median(times);
    lines.unshift(`  #${i + 1} min ${Math.min(...times).toFixed(2)} ms  median ${median(times).toFixed(2)} ms  planning median ${median(planning).toFixed(2)} ms  ${buffers}  ${text.replace(/\s+/g, " ").slice(0, 60)}…`);
  }
  totals.push({ word, statements: statements.length, min: sumMin, median: sumMedian, hits: total });
  console.log(`${word}: ${statements.length} statements, total_count ${total}, execution min ${sumMin.toFixed(2)} ms, median ${sumMedian.toFixed(2)} ms`);
  for (const l of lines) console.log(l);
}
console.log("\nword        stmts  hits   exec min ms  exec median ms");
for (const t of totals) console.log(`${t.word.padEnd(11)} ${String(t.statements).padStart(5)} ${String(t.hits).padStart(6)} ${t.min.toFixed(2).padStart(12)} ${t.median.toFixed(2).padStart(15)}`);
const meds = totals.map((t) => t.median);
console.log(`median of words ${median(meds).toFixed(2)} ms, worst ${Math.max(...meds).toFixed(2)} ms; Seq Scans on products: ${seqScans}`);
await pool.end();
await orm.close();
