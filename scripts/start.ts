/**
 * `npm start`: the whole system on this machine. Uses (or starts) PostgreSQL and
 * NATS, starts every implemented service (migrations run as each starts) and
 * the edge on :8080, waits until each reports SERVING, prints readable logs,
 * restarts a process that dies (with backoff), and stops everything cleanly on
 * Ctrl-C, and on any failure to start.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { get as httpGet } from "node:http";
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { edgePort, peerUrlVariable, type ServiceName, serviceCatalog, serviceNames } from "../kit/catalog.ts";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { ensureInfra, type Infra } from "./local/infra.ts";
import { formatter } from "./local/logs.ts";
import { type MailCatcher, startMailCatcher } from "./local/mail.ts";

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
const edgeUrl = `http://127.0.0.1:${edgePort + offset}`;

/** Restart delays of a child that keeps dying: 1 s, doubling, at most 30 s; reset after a minute of running. */
const firstBackoffMs = 1_000;
const maxBackoffMs = 30_000;
const stableAfterMs = 60_000;

interface Child {
  name: string;
  script: string;
  env: Record<string, string>;
  index: number;
  /** Resolves when it answers: SERVING for a service, /healthz for the edge. */
  ready: () => Promise<void>;
  proc?: ChildProcess;
  startedAt: number;
  backoffMs: number;
  restart?: NodeJS.Timeout;
}

const children: Child[] = [];
let infra: Infra | undefined;
let mail: MailCatcher | undefined;
let running = false;
let stopping: Promise<void> | undefined;

/** Every exit path comes here: children (the edge first), then the infrastructure npm start started. */
function stopAll(code: number): Promise<void> {
  return (stopping ??= (async () => {
    say("stopping");
    for (const child of children) clearTimeout(child.restart);
    const end = (list: Child[]) =>
      Promise.all(
        list.map(
          ({ proc }) =>
            new Promise<void>((resolve) => {
              if (!proc || proc.exitCode !== null || proc.signalCode !== null) return resolve();
              proc.once("exit", () => resolve());
              proc.kill("SIGTERM");
              setTimeout(() => proc.kill("SIGKILL"), 15_000).unref();
            }),
        ),
      );
    await end(children.filter((c) => c.name === "edge"));
    await end(children.filter((c) => c.name !== "edge"));
    await mail?.stop().catch(() => undefined);
    await infra?.stop();
    say("stopped");
    process.exit(code);
  })());
}

function spawnChild(child: Child, width: number): void {
  const proc = spawn(process.execPath, [child.script], { cwd: root, env: child.env, stdio: ["ignore", "pipe", "pipe"] });
  const format = formatter(child.name, child.index, width);
  for (const stream of [proc.stdout!, proc.stderr!]) createInterface({ input: stream }).on("line", (l) => console.log(format(l)));
  child.proc = proc;
  child.startedAt = Date.now();
  say(`${child.name} started (pid ${proc.pid})`);
  proc.once("exit", (code, signal) => {
    if (stopping) return;
    const how = signal ?? `code ${code}`;
    if (!running) {
      // Still starting: a child that cannot start (bad config, port taken) would only fail again.
      say(`${child.name} exited (${how}) before it was ready; stopping everything`);
      void stopAll(1);
      return;
    }
    if (Date.now() - child.startedAt >= stableAfterMs) child.backoffMs = firstBackoffMs;
    const delay = child.backoffMs;
    child.backoffMs = Math.min(maxBackoffMs, child.backoffMs * 2);
    say(`${child.name} exited (${how}); restarting in ${delay / 1000} s`);
    child.restart = setTimeout(() => {
      if (stopping) return;
      spawnChild(child, width);
      child.ready().then(
        () => say(`${child.name} is ready again`),
        (error: Error) => say(`${child.name} is not ready after its restart: ${error.message}`),
      );
    }, delay);
  });
}

/** Waits until the child is ready; fails as soon as it exits. */
function startedAndReady(child: Child, width: number): Promise<void> {
  spawnChild(child, width);
  const proc = child.proc!;
  const exited = new Promise<never>((_, reject) => proc.once("exit", () => reject(new Error(`${child.name} exited before it was ready; see its log lines above`))));
  return Promise.race([child.ready(), exited]);
}

async function main() {
  // From the first moment: Ctrl-C during start-up stops what has been started so far.
  process.once("SIGINT", () => void stopAll(0));
  process.once("SIGTERM", () => void stopAll(0));
  if (implemented.length === 0) {
    say("no service is implemented yet (services/<name>/main.ts); nothing to start");
    return;
  }
  infra = await ensureInfra(dataDir, offset, say);
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    NATS_URL: infra.natsUrl,
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
    ...Object.fromEntries(serviceNames.map((n) => [peerUrlVariable(n), process.env[peerUrlVariable(n)] ?? `http://127.0.0.1:${portOf(n)}`])),
  };
  // No SMTP settings: a local mail catcher (MailDev) receives the Notification service's mail.
  if (implemented.includes("notification") && !process.env.SMTP_URL && !process.env.SMTP_HOST) {
    mail = await startMailCatcher(dataDir, offset);
    Object.assign(env, mail.env);
    say(`mail catcher (MailDev): read the mail the shop sends at ${mail.webUrl} (SMTP on 127.0.0.1:${mail.env.SMTP_PORT})`);
  }
  const hasEdge = existsSync(join(root, "gateway", "main.ts"));
  const width = Math.max(...[...implemented, "edge"].map((n) => n.length));
  const child = (name: string, script: string, extra: Record<string, string>, ready: () => Promise<void>): Child => {
    const c: Child = { name, script, env: { ...env, ...extra }, index: children.length, ready, startedAt: 0, backoffMs: firstBackoffMs };
    children.push(c);
    return c;
  };

  say(`starting ${implemented.join(", ")}${missing.length ? ` (not implemented yet: ${missing.join(", ")})` : ""}`);
  const services = implemented.map((name) =>
    child(
      name,
      join("services", name, "main.ts"),
      {
        PORT: String(portOf(name)),
        DATABASE_URL: `${infra!.postgresBase}/${serviceCatalog[name].database}`,
        // Unsubscribe links of the mail point at the edge, which routes POST /unsubscribe/<token>.
        ...(name === "notification" && hasEdge && !env.NOTIFICATION_PUBLIC_URL ? { NOTIFICATION_PUBLIC_URL: edgeUrl } : {}),
        // The payment sandbox posts its webhooks to the edge's webhook route, as a real provider would.
        ...(name === "payment" && hasEdge && !env.PAYMENT_SANDBOX_WEBHOOK_URL ? { PAYMENT_SANDBOX_WEBHOOK_URL: `${edgeUrl}/webhooks/payments/sandbox` } : {}),
      },
      () => waitServing(name),
    ),
  );
  await Promise.all(services.map((s) => startedAndReady(s, width)));
  if (hasEdge) {
    const edge = child("edge", join("gateway", "main.ts"), { PORT: String(edgePort + offset) }, () => waitEdge(`${edgeUrl}/healthz`));
    await startedAndReady(edge, width);
    say(`edge on ${edgeUrl} (Connect and gRPC-Web); services on ${implemented.map((n) => `${n}:${portOf(n)}`).join(", ")}`);
  }
  running = true;
  say("ready. Ctrl-C stops everything; a process that dies is restarted.");
}

/** One GET with node:http (fetch refuses ports on the browsers' blocked list, such as 10080). */
function answersOk(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpGet(url, { timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(false));
  });
}

async function waitEdge(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await answersOk(url)) return;
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

main().catch((error: unknown) => {
  console.error(`\x1b[31m[start] ${error instanceof Error ? error.message : String(error)}\x1b[0m`);
  void stopAll(1);
});
