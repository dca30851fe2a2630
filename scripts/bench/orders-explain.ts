/**
 * What ListMyOrders and ListOrders cost PostgreSQL at millions of orders: creates a
 * database, applies the Order service's migrations (as the service would), seeds it
 * (services/order/seed.ts: N orders over three years, 200k customers with a skewed
 * number of orders, five heavy customers, 1 to 3 items each), ANALYZEs, then runs
 * the service's own list functions (services/order/orders.ts, in this process) for
 * each case, first page and, where it has one, a deep page (a page token the
 * service's paging signs for the row at a deep offset, as if the caller had paged
 * that far), captures the statements they send with their parameters
 * (scripts/bench/meter.ts) and runs each with EXPLAIN (ANALYZE, BUFFERS) several
 * times: median and worst execution, buffers, the indexes read and what grows with
 * the table (a scan that reads, or a Sort that takes, more than 12,000 rows: past the
 * count's limit; scripts/bench/plans.ts). Figures: docs/bench.md "Order lists at 2M orders".
 *
 *   node scripts/bench/orders-explain.ts [--orders 2000000] [--runs 5] [--plans] [--keep] [--db NAME]
 *
 * --db reuses an existing, already seeded database (it is not dropped); otherwise
 * orders_explain_<time> is created and dropped at the end unless --keep.
 */
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { ListMyOrdersRequestSchema, ListOrdersRequestSchema, OrderService } from "../../gen/ecommerce/order/v1/order_pb.js";
import { createLogger } from "../../kit/logger.ts";
import { inPagingScope, pageOf } from "../../kit/paging.ts";
import { openServiceDatabase } from "../../kit/server.ts";
import { postgresAdminUrl } from "../../kit/testing/infra.ts";
import { listMyOrders, listOrders } from "../../services/order/orders.ts";
import { type OrderListCase as Case, orderListCases, seedOrders } from "../../services/order/seed.ts";
import { orderService } from "../../services/order/service.ts";
import { captureQueries, installSqlCounter } from "./meter.ts";
import { explainAnalyze, shapeOf } from "./plans.ts";

const { values: opts } = parseArgs({
  options: {
    orders: { type: "string", default: "2000000" },
    runs: { type: "string", default: "5" },
    plans: { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    db: { type: "string" },
  },
});
const total = Number(opts.orders);
const runs = Math.max(1, Number(opts.runs));
const dbName = opts.db ?? `orders_explain_${Date.now().toString(36)}`;
const url = Object.assign(new URL(postgresAdminUrl), { pathname: `/${dbName}` }).toString();
const admin = new pg.Client({ connectionString: postgresAdminUrl });
await admin.connect();

if (!opts.db) {
  await admin.query(`create database "${dbName}"`);
  console.log(`database ${dbName}`);
}
installSqlCounter();
const orm = await openServiceDatabase(orderService, url, createLogger("orders-explain", "warn"), 2);
// Timestamps as PostgreSQL writes them, as the service reads them (cursor keys keep microseconds).
const asText = (v: string) => v;
const pool = new pg.Pool({ connectionString: url, max: 1, types: { getTypeParser: (oid: number, format?: "text" | "binary") => (oid === 1184 ? asText : pg.types.getTypeParser(oid, format as "text")) } as never });

if (!opts.db) {
  const t = performance.now();
  let last = 0;
  await seedOrders(url, {
    orders: total,
    progress(done, n) {
      const s = (performance.now() - t) / 1000;
      if (done === n || s - last > 10) {
        last = s;
        console.log(`  seeded ${done.toLocaleString("en")} / ${n.toLocaleString("en")} orders, ${s.toFixed(0)} s`);
      }
    },
  });
  const seeded = (performance.now() - t) / 1000;
  const a = performance.now();
  await pool.query("vacuum analyze orders");
  await pool.query("vacuum analyze order_items");
  console.log(`seeded ${total.toLocaleString("en")} orders in ${seeded.toFixed(0)} s, vacuum analyze ${((performance.now() - a) / 1000).toFixed(0)} s`);
}
const { rows: sizes } = await pool.query<{ orders: string; items: string; n: string }>(
  "select pg_size_pretty(pg_total_relation_size('orders')) as orders, pg_size_pretty(pg_total_relation_size('order_items')) as items, (select count(*) from order_items)::text as n",
);
console.log(`orders ${sizes[0]!.orders} with indexes, order_items ${sizes[0]!.items} (${sizes[0]!.n} rows)`);

const cases = orderListCases(total);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const kindOf = (text: string) => (/count\(\*\)/.test(text) ? "count" : /^\s*select \* from order_items\b/.test(text) ? "items" : "page");
interface Line {
  name: string;
  kind: string;
  median: number;
  worst: number;
  buffers: string;
  indexes: string;
  problems: string;
  rows: number;
}
const lines: Line[] = [];

/** The service's list call for a case, in the paging scope an RPC has (kit/paging.ts); its statements. */
async function call(c: Case, pageToken: string) {
  const method = c.my ? OrderService.method.listMyOrders : OrderService.method.listOrders;
  let shown = 0;
  let next = "";
  let totalSize = 0;
  const statements = await captureQueries(() => inPagingScope("orders-explain", method, { pageToken }, async () => {
    const em = orm.em.fork();
    const res = c.my
      ? await listMyOrders(em, c.my, create(ListMyOrdersRequestSchema, { ...c.req, pageToken }))
      : await listOrders(em, create(ListOrdersRequestSchema, { ...c.req, pageToken }));
    shown = res.orders.length;
    next = res.nextPageToken;
    totalSize = "totalSize" in res ? (res.totalSize as number) : 0;
  }));
  return { statements, shown, next, totalSize };
}

/**
 * A token for the page after the row at `offset`: the row is read with the page's own
 * statement (offset instead of the first page's limit), the token signed by the paging
 * the service uses, with the same cursor the service writes (sort key as text, id).
 */
async function deepToken(c: Case, pageStatement: { text: string; values: unknown[] }, offset: number): Promise<string | undefined> {
  const text = pageStatement.text.replace(/ limit (\$\d+)$/, ` offset ${offset} limit 1`);
  if (text === pageStatement.text) throw new Error(`no limit at the end of ${pageStatement.text}`);
  const values = pageStatement.values.slice(0, -1);
  const [field = "created_at"] = String(c.req.orderBy ?? "created_at").split(" ");
  const column = field === "total_amount" ? "total_minor" : field;
  const { rows } = await pool.query<Record<string, unknown>>(`select ${column}::text as k, id from (${text}) x`, values);
  if (!rows[0]) return undefined;
  let token = "";
  const method = c.my ? OrderService.method.listMyOrders : OrderService.method.listOrders;
  const req = c.my ? create(ListMyOrdersRequestSchema, c.req) : create(ListOrdersRequestSchema, c.req);
  const schema = { key: [c.my ? "timestamptz" : "text", "uuid"] } as const;
  await inPagingScope("orders-explain", method, req, async () => {
    token = pageOf(req, schema).next({ key: [String(rows[0]!.k), String(rows[0]!.id)] });
  });
  return token;
}

async function measure(name: string, statements: { text: string; values: unknown[] }[], shown: number, totalSize: number) {
  for (const s of statements.filter((q) => /^\s*select\b/i.test(q.text))) {
    const times: number[] = [];
    let first: ReturnType<typeof shapeOf> | undefined;
    let rows = 0;
    for (let r = 0; r < runs; r++) {
      const e = await explainAnalyze(pool, s.text, s.values);
      times.push(e.executionMs);
      if (r === 0) {
        first = shapeOf(e.plan);
        rows = e.plan["Actual Rows"] ?? 0;
      }
    }
    if (opts.plans) {
      const { rows: analyzed } = await pool.query<{ "QUERY PLAN": string }>(`explain (analyze, buffers) ${s.text}`, s.values);
      console.log(`  ${name} [${kindOf(s.text)}] ${s.text.replace(/\s+/g, " ").slice(0, 240)}\n${analyzed.map((l) => `      ${l["QUERY PLAN"]}`).join("\n")}`);
    }
    lines.push({
      name,
      kind: kindOf(s.text),
      median: median(times),
      worst: Math.max(...times),
      buffers: `${first!.buffers.hit}/${first!.buffers.read}`,
      indexes: first!.indexes.join(",") || "-",
      problems: first!.problems.join("; ") || "-",
      rows: kindOf(s.text) === "page" ? shown : kindOf(s.text) === "count" ? totalSize : rows,
    });
  }
}

console.log(`${cases.length} cases, ${runs} EXPLAIN (ANALYZE, BUFFERS) runs of each statement`);
for (const c of cases) {
  const firstPage = await call(c, "");
  await measure(`${c.name}, first page`, firstPage.statements, firstPage.shown, firstPage.totalSize);
  if (c.deep !== undefined) {
    const page = firstPage.statements.find((s) => kindOf(s.text) === "page")!;
    const token = await deepToken(c, page, c.deep);
    if (token) {
      const deep = await call(c, token);
      await measure(`${c.name}, after ${c.deep.toLocaleString("en")}`, deep.statements, deep.shown, deep.totalSize);
    }
  }
  process.stdout.write(".");
}
console.log("\n");

const header = ["case", "stmt", "median ms", "worst ms", "buffers hit/read", "rows", "indexes", "grows with the table"];
const table = lines.map((l) => [l.name, l.kind, l.median.toFixed(2), l.worst.toFixed(2), l.buffers, String(l.rows), l.indexes, l.problems]);
console.log(`| ${header.join(" | ")} |\n|${header.map(() => "---").join("|")}|`);
for (const row of table) console.log(`| ${row.join(" | ")} |`);
const flagged = lines.filter((l) => l.problems !== "-");
console.log(`\nstatements ${lines.length}; worst median ${Math.max(...lines.map((l) => l.median)).toFixed(2)} ms (${lines.reduce((a, b) => (b.median > a.median ? b : a)).name}); growing with the table: ${flagged.length}`);

// pool.end() resolves before its connections are gone: the drop's (force) must not crash the script.
pool.on("error", () => undefined);
await pool.end();
await orm.close();
if (!opts.db && !opts.keep) {
  await admin.query(`drop database "${dbName}" with (force)`);
  console.log(`dropped ${dbName}`);
} else console.log(`kept ${dbName}`);
await admin.end();
