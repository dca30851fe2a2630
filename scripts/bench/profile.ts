/**
 * `node scripts/bench/profile.ts [user|user-connect|bare|edge|search|product|product-edge|ab|edge-ab] [seconds] [rounds]`: a CPU profile of the servers'
 * process while one load generator (a child process, as in `npm run bench`) calls
 * GetMyProfile at concurrency 64 — the kit's user service over gRPC ("user"), the
 * bare Connect server of the bench ("bare"), or the user service through the edge
 * (gateway/edge.ts, in this process too) with Connect JSON over HTTP/1.1, as the
 * bench's "via edge" row does ("edge"); or SearchProducts through the edge at
 * concurrency 8, the bench's request over its words on a catalog of PROFILE_PRODUCTS
 * (default 5000) seeded products ("search": the page's cost does not grow with the catalog);
 * or GetProduct at concurrency 8 on that catalog, over gRPC ("product") or through the edge
 * with Connect JSON ("product-edge"). Prints the functions with the most self
 * time, grouped by package, and writes the .cpuprofile (open it in Chrome DevTools).
 * "ab" profiles nothing: it alternates bare and kit rounds and prints CPU per request of each;
 * "edge-ab" likewise alternates gRPC straight to the user service and the same call through the
 * edge (Connect JSON over HTTP/1.1), the ratio issue 8 bounds (≤ 1.3×), less moved by other work
 * on the machine than two separate runs; its edge is a process of its own, as in the bench (the
 * profiling modes keep the edge in this process, so that one profile shows both).
 * PROFILE_CONCURRENCY overrides the concurrency of every mode (ab and edge-ab too); PROFILE_HEAP=1 adds a
 * second run under V8's sampling heap profiler and prints where what is still alive at its end was allocated;
 * PROFILE_HEAP=survivors prints where what outlived the young generation (was promoted) was allocated.
 * It is how the kit's per-request costs are found (docs/bench.md, "Profiling").
 */
import { writeFileSync } from "node:fs";
import pg from "pg";
import { Session } from "node:inspector/promises";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { eventually, startMesh } from "../../kit/testing/mesh.ts";
import { authService } from "../../services/auth/service.ts";
import { userService } from "../../services/user/service.ts";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { startEdge } from "../../gateway/edge.ts";
import { productService } from "../../services/product/service.ts";
import { benchSearchWords } from "../../services/product/bench.ts";
import { seedCatalog } from "../../services/product/seed.ts";
import { bareUserServer } from "./bare.ts";
import { startEdgeProcess } from "./edge-process.ts";
import { Generator } from "./load.ts";

const which = process.argv[2] ?? "user";
// PROFILE_EDGE_NODE_OPTIONS: Node options of edge-ab's edge process (e.g. --cpu-prof --cpu-prof-dir=/tmp/edge).
const edgeNodeOptions = (process.env.PROFILE_EDGE_NODE_OPTIONS ?? "").split(" ").filter(Boolean);
const rounds = Number(process.argv[4] ?? 4);
const seconds = Number(process.argv[3] ?? 10);
const catalog = which === "search" || which === "product" || which === "product-edge";
const mesh = await startMesh(catalog ? [authService, userService, productService] : [authService, userService], {});
const productIds: string[] = [];
if (catalog) {
  const url = mesh.services.product!.ctx.config.databaseUrl;
  await seedCatalog(url, { products: Number(process.env.PROFILE_PRODUCTS ?? 5000) });
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  productIds.push(...(await pool.query<{ id: string }>("select id from products where status = 'active' and is_visible order by random() limit 300")).rows.map((r) => r.id));
  await pool.end();
}
const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
const registered = await auth.register({ email: `profile${Date.now()}@example.test`, password: "quartz lantern bench river 8812" });
const headers = { authorization: `Bearer ${registered.tokens!.accessToken}` };
const direct = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
await eventually(() => direct.getMyProfile({}, { headers }).catch(() => undefined), 15_000, "profile");
const bare = await bareUserServer(mesh.services.user!.ctx.config.databaseUrl, registered.user!.id);
if (which === "ab" || which === "edge-ab") {
  // Interleaved rounds, so that a busy machine slows both alike: CPU per request of each and their ratio.
  const target = (baseUrl: string, protocol: "grpc" | "connect" = "grpc") =>
    Generator.start({ kind: "rpc", protocol, baseUrl, method: "ecommerce.user.v1.UserService/GetMyProfile", requests: [{}], headers });
  // The edge as the bench runs it: a process of its own, whose CPU counts with this process's.
  const edge = which === "edge-ab" ? await startEdgeProcess({ auth: mesh.url("auth"), user: mesh.url("user") }, edgeNodeOptions) : undefined;
  const serversCpuUs = async () => {
    const own = process.cpuUsage();
    return own.user + own.system + (edge ? await edge.cpuUs() : 0);
  };
  const [a, b] = edge ? (["user", "edge"] as const) : (["bare", "user"] as const);
  const gens: Record<string, Generator> = edge
    ? { user: await target(mesh.url("user")), edge: await target(edge.url, "connect") }
    : { bare: await target(bare.url), user: await target(mesh.url("user")) };
  const abConcurrency = Number(process.env.PROFILE_CONCURRENCY ?? 64);
  for (const g of Object.values(gens)) await g.run({ kind: "closed", concurrency: abConcurrency, durationMs: 2000 });
  const ratios: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const cpuPerReq: Record<string, number> = {};
    for (const [name, g] of Object.entries(gens)) {
      const c0 = await serversCpuUs();
      const m = await g.run({ kind: "closed", concurrency: abConcurrency, durationMs: seconds * 1000 });
      cpuPerReq[name] = ((await serversCpuUs()) - c0) / m.requests;
      console.log(`round ${round} ${name}: ${m.rps.toFixed(0)} req/s, ${cpuPerReq[name].toFixed(0)} µs CPU/req, p50 ${m.p50Ms} ms`);
    }
    ratios.push(cpuPerReq[b]! / cpuPerReq[a]!);
    console.log(`round ${round}: ${b}/${a} CPU ${ratios.at(-1)!.toFixed(2)}x`);
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  console.log(`${b}/${a} CPU per request over ${rounds} rounds: median ${sorted[Math.floor((sorted.length - 1) / 2)]!.toFixed(2)}x, range ${sorted[0]!.toFixed(2)}–${sorted.at(-1)!.toFixed(2)}x`);
  for (const g of Object.values(gens)) await g.stop();
  await edge?.stop();
  await bare.stop();
  await mesh.stop();
  process.exit(0);
}
const edge =
  which === "edge" || which === "search" || which === "product-edge"
    ? await startEdge({ port: 0, host: "127.0.0.1", upstreams: { auth: mesh.url("auth"), user: mesh.url("user"), product: mesh.url("product") }, logLevel: "silent" })
    : undefined;
const baseUrl = edge ? edge.url : which === "bare" ? bare.url : which === "product" ? mesh.url("product") : mesh.url("user");
const concurrency = Number(process.env.PROFILE_CONCURRENCY ?? (catalog ? 8 : 64));
const generator = await Generator.start(
  which === "product" || which === "product-edge"
    ? { kind: "rpc", protocol: edge ? "connect" : "grpc", baseUrl, method: "ecommerce.product.v1.ProductService/GetProduct", requests: productIds.map((id) => ({ id })) }
    : which === "search"
    ? {
        kind: "rpc",
        protocol: "connect",
        baseUrl,
        method: "ecommerce.product.v1.SearchService/SearchProducts",
        requests: benchSearchWords.map((query) => ({ query, pageSize: 20, facets: ["SEARCH_FACET_CATEGORY", "SEARCH_FACET_PRICE_BAND"] })),
      }
    : { kind: "rpc", protocol: edge || which === "user-connect" ? "connect" : "grpc", baseUrl, method: "ecommerce.user.v1.UserService/GetMyProfile", requests: [{}], headers },
);
await generator.run({ kind: "closed", concurrency, durationMs: 2000 }); // warm-up (JIT, pools)

const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.setSamplingInterval", { interval: 100 });
const cpu0 = process.cpuUsage();
await session.post("Profiler.start");
const measured = await generator.run({ kind: "closed", concurrency, durationMs: seconds * 1000 });
const { profile } = await session.post("Profiler.stop");
if (process.env.PROFILE_HEAP) {
  // What is alive a while after it was allocated: allocation sites of the live samples after a second run.
  await session.post("HeapProfiler.enable");
  // PROFILE_HEAP=survivors keeps the samples a major GC collected too: what outlived the young generation
  // (was promoted), the cost of a scavenge, whether or not it is still alive at the end.
  const survivors = process.env.PROFILE_HEAP === "survivors";
  await session.post("HeapProfiler.startSampling", { samplingInterval: 32 * 1024, includeObjectsCollectedByMajorGC: survivors });
  await generator.run({ kind: "closed", concurrency, durationMs: seconds * 1000 });
  const { profile: heap } = await session.post("HeapProfiler.stopSampling");
  type HeapNode = { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: HeapNode[] };
  const sites = new Map<string, number>();
  const walk = (n: HeapNode, path: string[]) => {
    const here = `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/(kit|services|gateway|scripts)\//, "$1/")}:${n.callFrame.lineNumber + 1}`;
    const trail = [...path, here].slice(-3);
    if (n.selfSize > 0) sites.set(trail.join(" <- "), (sites.get(trail.join(" <- ")) ?? 0) + n.selfSize);
    for (const c of n.children) walk(c, trail);
  };
  walk(heap.head as HeapNode, []);
  const live = [...sites.values()].reduce((a, b) => a + b, 0);
  const what = survivors ? "sampled allocations that outlived the young generation during" : "live sampled allocations at the end of";
  console.log(`\n${what} a second ${seconds} s run: ${(live / 1e6).toFixed(1)} MB; top sites (last 3 frames):`);
  for (const [site, bytes] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${(bytes / 1e6).toFixed(2).padStart(7)} MB  ${site}`);
}
const cpu = process.cpuUsage(cpu0);
const out = `/tmp/profile-${which}.cpuprofile`;
writeFileSync(out, JSON.stringify(profile));

type Node = { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount: number };
const nodes = profile.nodes as Node[];
const total = nodes.reduce((s, n) => s + n.hitCount, 0);
const byFn = new Map<string, number>();
const byPkg = new Map<string, number>();
for (const n of nodes) {
  const url = n.callFrame.url.replace(/^file:\/\//, "");
  const pkg = url.includes("node_modules/") ? url.split("node_modules/").pop()!.split("/").slice(0, url.split("node_modules/").pop()!.startsWith("@") ? 2 : 1).join("/") : url.startsWith("node:") ? url : url ? url.replace(/^.*\/(kit|services|gen|scripts|gateway)\//, "$1/") : `(${n.callFrame.functionName || "native"})`;
  const fn = `${n.callFrame.functionName || "(anonymous)"} ${url.replace(/^.*node_modules\//, "")}:${n.callFrame.lineNumber + 1}`;
  byFn.set(fn, (byFn.get(fn) ?? 0) + n.hitCount);
  const key = pkg.startsWith("kit/") || pkg.startsWith("services/") ? pkg : pkg;
  byPkg.set(key, (byPkg.get(key) ?? 0) + n.hitCount);
}
const top = (m: Map<string, number>, k: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, k).map(([name, hits]) => `${((100 * hits) / total).toFixed(1).padStart(5)}%  ${name}`);
console.log(`${which}: ${measured.rps.toFixed(0)} req/s, CPU ${(((cpu.user + cpu.system) / measured.requests) | 0)} µs/req (process, all threads), p50 ${measured.p50Ms} ms; profile ${out}`);
console.log("\nby file/package (self time):\n" + top(byPkg, 30).join("\n"));
console.log("\nby function (self time):\n" + top(byFn, 40).join("\n"));
await generator.stop();
await edge?.stop();
await bare.stop();
await mesh.stop();
process.exit(0);
