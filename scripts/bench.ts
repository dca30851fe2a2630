/**
 * `npm run bench`: throughput and latency of the mesh's hot reads, each beside a
 * baseline measured in the same run on the same machine: the same SQL served by
 * a bare node:http + pg handler. It is a benchmark, not a test: it prints figures.
 *
 * Runs on a private nats-server and throwaway databases on the local PostgreSQL
 * (like the tests), so it needs what `npm test` needs. BENCH_SECONDS sets the
 * duration of each measurement (default 5). The servers (and the edge) run in this
 * process's main thread; each load generator runs in a worker thread with its own
 * event loop. On the 2-core machines, client, servers and PostgreSQL share the cores.
 */
import { createServer } from "node:http";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { AuthService } from "../gen/ecommerce/auth/v1/auth_pb.js";
import { UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { startEdge } from "../gateway/edge.ts";
import { eventually, startMesh } from "../kit/testing/mesh.ts";
import { authService } from "../services/auth/service.ts";
import { userService } from "../services/user/service.ts";
import { type LoadResult, measureInWorker, printTable } from "./bench/load.ts";

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrencies = [8, 64];
const say = (line: string) => console.log(`[bench] ${line}`);

say("starting auth, user and the edge (private NATS, throwaway databases)");
const mesh = await startMesh([authService, userService]);
const edge = await startEdge({ port: 0, host: "127.0.0.1", upstreams: { auth: mesh.url("auth"), user: mesh.url("user") }, logLevel: "silent" });

try {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const registered = await auth.register({ email: `bench${Date.now()}@example.test`, password: "quartz lantern bench river 8812" });
  const token = registered.tokens!.accessToken;
  const userId = registered.user!.id;
  const headers = { authorization: `Bearer ${token}` };
  const direct = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
  await eventually(() => direct.getMyProfile({}, { headers }).catch(() => undefined), 15_000, "profile");

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

  const results: LoadResult[] = [];
  for (const c of concurrencies) {
    say(`GetMyProfile at concurrency ${c} (${seconds} s each)`);
    const durationMs = seconds * 1000;
    results.push(await measureInWorker({ name: "baseline node:http+pg", concurrency: c, durationMs, target: { kind: "http-get", url: baselineUrl } }));
    results.push(
      await measureInWorker({ name: "GetMyProfile gRPC direct", concurrency: c, durationMs, target: { kind: "grpc", baseUrl: mesh.url("user"), rpc: "getMyProfile", headers } }),
    );
    results.push(
      await measureInWorker({ name: "GetMyProfile Connect via edge", concurrency: c, durationMs, target: { kind: "connect", baseUrl: edge.url, rpc: "getMyProfile", headers } }),
    );
  }
  console.log();
  printTable(results, "baseline node:http+pg");

  const productBench = join(import.meta.dirname, "..", "services", "product", "bench.ts");
  if (existsSync(productBench)) {
    const mod = (await import(pathToFileURL(productBench).href)) as { runProductBench?: (o: { seconds: number; concurrencies: number[]; say: typeof say }) => Promise<void> };
    await mod.runProductBench?.({ seconds, concurrencies, say });
  }
  baseline.close();
  await pool.end();
} finally {
  await edge.stop();
  await mesh.stop();
}
