/**
 * `npm run bench`: throughput and latency of the mesh's hot paths, each beside a
 * baseline measured in the same run on the same machine: the same SQL served by a
 * bare node:http + pg handler. It is a benchmark, not a test: it prints figures.
 *
 * Runs on a private nats-server and throwaway databases on the local PostgreSQL
 * (like the tests), so it needs what `npm test` needs. BENCH_SECONDS sets the
 * duration of each measurement (default 5). The servers (and the edge) run in this
 * process's main thread; each load generator runs in a worker thread with its own
 * event loop. On the 2-core machines, client, servers and PostgreSQL share the cores.
 */
import { createServer } from "node:http";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { AuthService } from "../gen/ecommerce/auth/v1/auth_pb.js";
import { UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { startEdge } from "../gateway/edge.ts";
import { eventually, startMesh } from "../kit/testing/mesh.ts";
import { authService } from "../services/auth/service.ts";
import { productService } from "../services/product/service.ts";
import { userService } from "../services/user/service.ts";
import { type LoadResult, measureInWorker, printTable } from "./bench/load.ts";
import { productBench } from "./bench/product.ts";

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrencies = [8, 64];
const say = (line: string) => console.log(`[bench] ${line}`);

say("starting auth, user, product and the edge (private NATS, throwaway databases)");
const mesh = await startMesh([authService, userService, productService]);
const edge = await startEdge({
  port: 0,
  host: "127.0.0.1",
  upstreams: { auth: mesh.url("auth"), user: mesh.url("user"), product: mesh.url("product") },
  logLevel: "silent",
});

try {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const registered = await auth.register({ email: `bench${Date.now()}@example.test`, password: "quartz lantern bench river 8812" });
  const headers = { authorization: `Bearer ${registered.tokens!.accessToken}` };
  const direct = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
  await eventually(() => direct.getMyProfile({}, { headers }).catch(() => undefined), 15_000, "profile");

  // Baseline: the same read as GetMyProfile, from a bare node:http + pg handler on the same database.
  const pool = new pg.Pool({ connectionString: mesh.services.user!.ctx.config.databaseUrl, max: 10 });
  const baseline = createServer(async (req, res) => {
    const id = new URL(req.url ?? "/", "http://x").searchParams.get("user_id");
    const { rows } = await pool.query("select * from user_profiles where user_id = $1", [id]);
    res.writeHead(rows.length ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify(rows[0] ?? {}));
  });
  await new Promise<void>((r) => baseline.listen(0, "127.0.0.1", r));
  const baselineUrl = `http://127.0.0.1:${(baseline.address() as { port: number }).port}/profile?user_id=${registered.user!.id}`;

  const results: LoadResult[] = [];
  const durationMs = seconds * 1000;
  const getMyProfile = { method: "ecommerce.user.v1.UserService/GetMyProfile", requests: [{}], headers };
  for (const c of concurrencies) {
    say(`GetMyProfile at concurrency ${c} (${seconds} s each)`);
    results.push(await measureInWorker({ name: "GetMyProfile baseline", concurrency: c, durationMs, target: { kind: "http", urls: [baselineUrl] } }));
    results.push(
      await measureInWorker({ name: "GetMyProfile gRPC direct", concurrency: c, durationMs, target: { kind: "rpc", protocol: "grpc", baseUrl: mesh.url("user"), ...getMyProfile } }),
    );
    results.push(
      await measureInWorker({ name: "GetMyProfile via edge", concurrency: c, durationMs, target: { kind: "rpc", protocol: "connect", baseUrl: edge.url, ...getMyProfile } }),
    );
  }
  baseline.close();
  await pool.end();

  results.push(...(await productBench(mesh, edge.url, seconds, concurrencies, say)));
  console.log();
  printTable(results);
} finally {
  await edge.stop();
  await mesh.stop();
}
