/**
 * `npm start`: the whole system on this machine. Uses (or starts) PostgreSQL and
 * NATS, starts every implemented service (migrations run as each starts) and
 * the edge on :8080, waits until each reports SERVING, prints readable logs, and
 * stops everything cleanly on Ctrl-C.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { edgePort, peerUrlVariable, type ServiceName, serviceCatalog, serviceNames } from "../kit/catalog.ts";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { ensureInfra } from "./local/infra.ts";
import { formatter } from "./local/logs.ts";

const root = join(import.meta.dirname, "..");
const say = (line: string) => console.log(`\x1b[1m[start]\x1b[0m ${line}`);

/**
 * PORT_OFFSET (0..9999, default 0) shifts every port npm start uses (services, edge,
 * embedded PostgreSQL, local nats-server), so two stacks can run side by side;
 * START_DATA_DIR (default .data) holds the embedded PostgreSQL's and nats-server's data.
 */
const offset = Number(process.env.PORT_OFFSET ?? 0);
if (!Number.isInteger(offset) || offset < 0 || offset > 9999) {
  console.error(`PORT_OFFSET must be an integer from 0 to 9999, got "${process.env.PORT_OFFSET}"`);
  process.exit(2);
}
const portOf = (name: ServiceName) => serviceCatalog[name].port + offset;
const dataDir = process.env.START_DATA_DIR ?? join(root, ".data");

const implemented = serviceNames.filter((n) => existsSync(join(root, "services", n, "main.ts")));
const missing = serviceNames.filter((n) => !implemented.includes(n));

async function main() {
  if (implemented.length === 0) {
    say("no service is implemented yet (services/<name>/main.ts); nothing to start");
    return;
  }
  const infra = await ensureInfra(dataDir, offset, say);
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    NATS_URL: infra.natsUrl,
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
    ...Object.fromEntries(serviceNames.map((n) => [peerUrlVariable(n), process.env[peerUrlVariable(n)] ?? `http://127.0.0.1:${portOf(n)}`])),
  };
  const width = Math.max(...[...implemented, "edge"].map((n) => n.length));
  const children: { name: string; proc: ChildProcess }[] = [];
  let stopping = false;
  async function stop(code: number) {
    if (stopping) return;
    stopping = true;
    say("stopping");
    await Promise.all(
      children.map(
        ({ proc }) =>
          new Promise<void>((resolve) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
            proc.once("exit", () => resolve());
            proc.kill("SIGTERM");
            setTimeout(() => proc.kill("SIGKILL"), 15_000).unref();
          }),
      ),
    );
    await infra.stop();
    say("stopped");
    process.exit(code);
  }
  const launch = (name: string, script: string, extra: Record<string, string>, index: number) => {
    const proc = spawn(process.execPath, [script], { cwd: root, env: { ...env, ...extra }, stdio: ["ignore", "pipe", "pipe"] });
    const format = formatter(name, index, width);
    for (const stream of [proc.stdout!, proc.stderr!]) createInterface({ input: stream }).on("line", (l) => console.log(format(l)));
    proc.once("exit", (code, signal) => {
      if (!stopping) say(`${name} exited (${signal ?? `code ${code}`}); stopping everything`);
      void stop(1);
    });
    children.push({ name, proc });
  };

  say(`starting ${implemented.join(", ")}${missing.length ? ` (not implemented yet: ${missing.join(", ")})` : ""}`);
  implemented.forEach((name, i) => {
    const db = serviceCatalog[name].database;
    launch(name, join("services", name, "main.ts"), { PORT: String(portOf(name)), DATABASE_URL: `${infra.postgresBase}/${db}` }, i);
  });

  await Promise.all(implemented.map((name) => waitServing(name)));
  if (existsSync(join(root, "gateway", "main.ts"))) {
    launch("edge", join("gateway", "main.ts"), { PORT: String(edgePort + offset) }, implemented.length);
    await waitEdge(`http://127.0.0.1:${edgePort + offset}/healthz`);
    say(`edge on http://127.0.0.1:${edgePort + offset} (Connect and gRPC-Web); services on ${implemented.map((n) => `${n}:${portOf(n)}`).join(", ")}`);
  }
  say("ready. Ctrl-C stops everything.");

  process.once("SIGINT", () => void stop(0));
  process.once("SIGTERM", () => void stop(0));
}

async function waitEdge(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fetch(url).then((r) => r.ok, () => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the edge did not answer ${url} within ${timeoutMs / 1000} s; see its log lines above`);
}

async function waitServing(name: ServiceName, timeoutMs = 60_000): Promise<void> {
  const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${portOf(name)}` }));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = await health.check({ service: "" }, { timeoutMs: 1_000 }).then((r) => r.status).catch(() => undefined);
    if (status === HealthCheckResponse_ServingStatus.SERVING) {
      say(`${name} is SERVING`);
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${name} did not report SERVING within ${timeoutMs / 1000} s; see its log lines above`);
}

main().catch((error: Error) => {
  console.error(`\x1b[31m[start] ${error.message}\x1b[0m`);
  process.exit(1);
});
