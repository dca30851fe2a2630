/**
 * `npm run bench`: throughput, latency and cost per request of the mesh's hot paths,
 * each beside two references measured in the same run on the same machine: a bare
 * node:http + pg handler and a bare Connect server (connect-node, no interceptors)
 * running the same SQL. It is a benchmark, not a test: it prints figures, and the
 * goals of issue 8 as PASS/FAIL (docs/bench.md says what each column means).
 *
 * Runs on a private nats-server and throwaway databases on the local PostgreSQL
 * (like the tests), so it needs what `npm test` needs. BENCH_SECONDS sets the
 * duration of each measurement (default 5), BENCH_PRODUCTS the seeded catalog
 * (default 100000). The servers run in this process; the edge runs in its own, as
 * `npm start` runs it, and the meter counts both processes' CPU; each load generator
 * is a child process. On the 2-core machines, generators, servers, the edge and
 * PostgreSQL share the cores.
 */
import { cpus, loadavg } from "node:os";
import { createServer } from "node:http";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { AuthService } from "../gen/ecommerce/auth/v1/auth_pb.js";
import { UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { postgresAdminUrl } from "../kit/testing/infra.ts";
import { eventually, startMesh } from "../kit/testing/mesh.ts";
import { authService } from "../services/auth/service.ts";
import { cartService } from "../services/cart/service.ts";
import { discountService } from "../services/discount/service.ts";
import { shippingService } from "../services/shipping/service.ts";
import { paymentService } from "../services/payment/service.ts";
import { orderService } from "../services/order/service.ts";
import type { AuthRuntime } from "../services/auth/runtime.ts";
import { productService } from "../services/product/service.ts";
import { userService } from "../services/user/service.ts";
import { bareUserServer } from "./bench/bare.ts";
import { startEdgeProcess } from "./bench/edge-process.ts";
import { installSqlCounter, Meter } from "./bench/meter.ts";
import { cartBench } from "./bench/cart.ts";
import { discountBench } from "./bench/discount.ts";
import { shippingBench } from "./bench/shipping.ts";
import { paymentBench } from "./bench/payment.ts";
import { checkoutBench, checkoutRatios, checkoutScenario } from "./bench/checkout.ts";
import { adminToken, productBench } from "./bench/product.ts";
import { goalsOf, printGoals, printInterleaved, printTable } from "./bench/report.ts";
import { Bench, openLoopShare, type RowSpec } from "./bench/run.ts";

/**
 * ReserveStock's statements per RPC when issue 8 was opened, for its "half" goal: 20.8 in this
 * bench's sequential phase on branch k8-bench (about 16 statements of its own, plus 1.2 relay
 * passes of 4 statements each that its commit triggers).
 */
const reserveStatementsBefore = 21;

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrencies = [8, 64];
const say = (line: string) => console.log(`[bench] ${line}`);

// Before any service opens its pool: every statement this process sends is counted.
installSqlCounter();
say("starting auth, user, product, cart, discount, payment, shipping, order and the edge (private NATS, throwaway databases)");
// Auth's runtime, kept to sign the checkout customers' access tokens with Auth's own key (scripts/bench/checkout.ts).
let authRuntime: AuthRuntime | undefined;
const keptAuth = { ...authService, setup: async (ctx: Parameters<NonNullable<typeof authService.setup>>[0]) => (authRuntime = await authService.setup!(ctx)) };
// The checkout's carts all apply the same coupon through Cart, whose ValidateCoupon calls are rate limited per caller
// (Cart's service identity): raised like services/order/testing.ts does.
const mesh = await startMesh([keptAuth, userService, productService, cartService, discountService, paymentService, shippingService, orderService], {
  CART_RATE_LIMIT_WRITES: "1000000",
  DISCOUNT_RATE_LIMIT_CODE_CHECKS: "1000000",
});
const edge = await startEdgeProcess({ auth: mesh.url("auth"), user: mesh.url("user"), product: mesh.url("product"), cart: mesh.url("cart"), discount: mesh.url("discount"), shipping: mesh.url("shipping") });
const meter = await Meter.start(postgresAdminUrl, mesh);
meter.watchProcess(edge.cpuUs);
const bench = new Bench(meter, seconds, concurrencies, say);

try {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const registered = await auth.register({ email: `bench${Date.now()}@example.test`, password: "quartz lantern bench river 8812" });
  const userId = registered.user!.id;
  const headers = { authorization: `Bearer ${registered.tokens!.accessToken}` };
  const direct = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
  await eventually(() => direct.getMyProfile({}, { headers }).catch(() => undefined), 15_000, "profile");
  say("measuring the servers' background while idle (3 s)");
  await bench.calibrate();

  // Baseline: the same read as GetMyProfile, from a bare node:http + pg handler on the same database.
  const userDb = mesh.services.user!.ctx.config.databaseUrl;
  const pool = new pg.Pool({ connectionString: userDb, max: 10 });
  const baseline = createServer(async (req, res) => {
    const id = new URL(req.url ?? "/", "http://x").searchParams.get("user_id");
    const { rows } = await pool.query("select * from user_profiles where user_id = $1", [id]);
    res.writeHead(rows.length ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify(rows[0] ?? {}));
  });
  await new Promise<void>((r) => baseline.listen(0, "127.0.0.1", r));
  const baselineUrl = `http://127.0.0.1:${(baseline.address() as { port: number }).port}/profile?user_id=${userId}`;
  const bare = await bareUserServer(userDb, userId);

  const getMyProfile = { method: "ecommerce.user.v1.UserService/GetMyProfile", requests: [{}], headers };
  if (bench.only.length > 0) say(`BENCH_ONLY=${process.env.BENCH_ONLY}: only these scenarios' rows (the others' set-up is skipped too)`);
  try {
    const compared: RowSpec[] = [
      { scenario: "GetMyProfile", variant: "bare Connect", servedByMesh: false, target: { kind: "rpc", protocol: "grpc", baseUrl: bare.url, ...getMyProfile } },
      { scenario: "GetMyProfile", variant: "gRPC direct", servedByMesh: true, target: { kind: "rpc", protocol: "grpc", baseUrl: mesh.url("user"), ...getMyProfile } },
      { scenario: "GetMyProfile", variant: "via edge", servedByMesh: true, target: { kind: "rpc", protocol: "connect", baseUrl: edge.url, ...getMyProfile } },
    ];
    await bench.measure({ scenario: "GetMyProfile", variant: "node:http", servedByMesh: false, target: { kind: "http", urls: [baselineUrl] } });
    for (const spec of compared) await bench.measure(spec);
    await bench.interleave(compared);
  } finally {
    await bare.stop();
    baseline.close();
    await pool.end();
  }

  const product = bench.wants("GetProduct", "SearchProducts", "ReserveStock") ? await productBench(bench, mesh, edge.url, say) : { products: 0, searchSeqScans: 0 };
  if (bench.wants("RedeemDiscounts")) await discountBench(bench, mesh, await adminToken(mesh), say);
  if (bench.wants("GetCart")) await cartBench(bench, mesh, edge.url, await adminToken(mesh), say);
  if (bench.wants("GetShippingRates")) await shippingBench(bench, mesh, edge.url, say);
  if (bench.wants("AuthorizePayment")) await paymentBench(bench, mesh, say);
  if (bench.wants(checkoutScenario)) await checkoutBench(bench, mesh, authRuntime!, await adminToken(mesh), say);
  console.log();
  const idle = bench.idle;
  console.log(
    `${cpus().length} CPUs, load average ${loadavg()[0]!.toFixed(2)}; ${seconds} s per phase; open loop at ${openLoopShare * 100}% of the best closed-loop req/s; ` +
      `idle background of the servers: ${(idle.cpuUs / 1000).toFixed(1)} ms CPU/s, ${idle.statements.toFixed(1)} statements/s (subtracted from SQL, RT, relay, peer)`,
  );
  printTable(bench.rows);
  console.log();
  printInterleaved(bench.interleaved);
  const ratios = checkoutRatios(bench.rows);
  if (ratios.length > 0) {
    console.log();
    console.log("checkout: the mesh (PlaceOrder, gRPC direct) / the same writes in one PostgreSQL transaction:");
    for (const line of ratios) console.log(`  ${line}`);
  }
  console.log();
  if (bench.only.length === 0) printGoals(goalsOf({ rows: bench.rows, interleaved: bench.interleaved, concurrencies, products: product.products, searchSeqScans: product.searchSeqScans, reserveStatementsBefore }));
  else console.log(`goals of issue 8 not judged: BENCH_ONLY=${process.env.BENCH_ONLY} leaves rows out`);
} finally {
  await meter.close();
  await edge.stop();
  await mesh.stop();
}
