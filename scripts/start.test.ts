/**
 * `npm start` as a person runs it, on the harder path: no PostgreSQL or NATS
 * answers, so it starts an embedded PostgreSQL and a local nats-server, then
 * every implemented service and the edge; a sign-up works through the edge; a
 * service that dies is restarted; Ctrl-C (or SIGTERM) stops everything and the
 * process exits cleanly. A start that fails stops everything it started.
 *
 * PORT_OFFSET=2000 puts the edge on 10080, a port that fetch refuses (the
 * browsers' blocked-port list): readiness must not depend on fetch.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/ecommerce/auth/v1/auth_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { edgePort, serviceCatalog } from "../kit/catalog.ts";

const offset = 2000;
const edge = edgePort + offset;
const dataDir = mkdtempSync(join(tmpdir(), "npm-start-test-"));
const started: ChildProcess[] = [];

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** `npm start` with no PostgreSQL and no NATS reachable, and its output collected. */
function npmStart() {
  const child = spawn(process.execPath, [join(import.meta.dirname, "start.ts")], {
    env: {
      ...process.env,
      PORT_OFFSET: String(offset),
      START_DATA_DIR: dataDir,
      POSTGRES_URL: "postgres://postgres@127.0.0.1:1",
      NATS_URL: "nats://127.0.0.1:1",
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, so that a stack that will not stop can be killed whole (afterAll).
    detached: true,
  });
  started.push(child);
  const run = { child, output: "", exited: new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code))) };
  child.stdout!.on("data", (d: Buffer) => (run.output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (run.output += d.toString()));
  return run;
}

async function waitFor(run: ReturnType<typeof npmStart>, pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const match = run.output.slice(from).match(pattern);
    if (match) return match;
    if (Date.now() > deadline || run.child.exitCode !== null) throw new Error(`npm start did not print ${pattern}:\n${run.output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Whether a port can be listened on at 127.0.0.1 right now (what a service of the stack does). */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

/**
 * Waits until every port of the stack can be bound. The stack's ports (50051+2000...) lie in
 * Linux's ephemeral range (32768-60999), so a test file running beside this one can hold one as
 * the local end of its connection to PostgreSQL or NATS until that connection closes; a port
 * still held after a minute fails the test with the sockets that hold it (ss), not a bare
 * EADDRINUSE from somewhere in the stack's output.
 */
async function stackPortsFree(ports = stackPorts(), timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const held: number[] = [];
    for (const port of ports) if (!(await bindable(port))) held.push(port);
    if (held.length === 0) return;
    if (Date.now() > deadline) {
      const holders = spawnSync("ss", ["-tanpH", held.map((p) => `sport = :${p}`).join(" or ")], { encoding: "utf8" }).stdout;
      throw new Error(`the stack's ports ${held.join(", ")} stayed in use for ${timeoutMs / 1000} s:\n${holders}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Starts npm start, once the stack's ports are free, and waits until it is ready. A port can
 * still be taken between that check and the stack's bind: a start that fails only because a
 * port was taken by someone else is tried again.
 */
async function npmStartReady(): Promise<ReturnType<typeof npmStart>> {
  for (let attempt = 1; ; attempt++) {
    await stackPortsFree();
    const run = npmStart();
    try {
      await waitFor(run, /ready\. Ctrl-C stops everything/, 120_000);
      return run;
    } catch (error) {
      if (attempt >= 3 || !/EADDRINUSE/.test(run.output)) throw error;
      await run.exited;
    }
  }
}

/** Every port a stack at this offset uses: services, edge, embedded PostgreSQL, nats-server. */
const stackPorts = () => [...Object.values(serviceCatalog).map((s) => s.port + offset), edge, 54329 + offset, 42229 + offset];

afterAll(async () => {
  // After a failure, stop it the way a person would, so its PostgreSQL and nats-server go too.
  for (const child of started) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGINT");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
    // Killing only npm start would leave its services, PostgreSQL and nats-server holding the ports.
    if (child.exitCode === null) process.kill(-child.pid!, "SIGKILL");
  }
  rmSync(dataDir, { recursive: true, force: true });
});

describe("npm start", () => {
  it("brings up embedded PostgreSQL, nats-server, the services and the edge, restarts a service that dies, and stops on Ctrl-C", async () => {
    const run = await npmStartReady();
    expect(run.output).toMatch(/starting an embedded PostgreSQL/);
    expect(run.output).toMatch(/starting nats-server with JetStream/);

    // Through the edge with node:http (Connect over HTTP/1.1): fetch would refuse port 10080.
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: `http://127.0.0.1:${edge}`, httpVersion: "1.1" }));
    const email = `start-${Date.now()}@example.test`;
    const res = await auth.register({ email, password: "velvet otter maple drum 4711" });
    expect(res.user?.email).toBe(email);

    // A service that dies is restarted and serves again.
    const pid = Number((await waitFor(run, /auth started \(pid (\d+)\)/, 1_000))[1]);
    const mark = run.output.length;
    process.kill(pid, "SIGKILL");
    await waitFor(run, /auth exited \(SIGKILL\); restarting in 1 s/, 10_000, mark);
    await waitFor(run, /auth is ready again/, 60_000, mark);
    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${serviceCatalog.auth.port + offset}` }));
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const again = await auth.register({ email: `again-${email}`, password: "velvet otter maple drum 4711" });
    expect(again.user?.email).toBe(`again-${email}`);

    run.child.kill("SIGINT");
    expect(await run.exited).toBe(0);
    expect(run.output).toMatch(/\[start\]\S* stopped/);
    for (const port of stackPorts()) expect(await listening(port), `port ${port}`).toBe(false);
  }, 240_000);

  // What docker stop, systemd and process managers send: the same clean stop as Ctrl-C.
  it("stops everything it started on SIGTERM, and exits cleanly", async () => {
    const run = await npmStartReady();
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
    expect(run.output).toMatch(/\[start\]\S* stopped/);
    for (const port of stackPorts()) expect(await listening(port), `port ${port}`).toBe(false);
  }, 180_000);

  it("stops everything it started when the start fails (the edge's port is taken)", async () => {
    const squatter: Server = createServer();
    await new Promise<void>((r) => squatter.listen(edge, "127.0.0.1", () => r()));
    try {
      // As in npmStartReady: a service port held for a moment by another process's outbound
      // connection fails the start too, for another reason than the one tested; try again.
      const otherPortTaken = (output: string) => [...output.matchAll(/EADDRINUSE: address already in use 127\.0\.0\.1:(\d+)/g)].some((m) => Number(m[1]) !== edge);
      const start = async () => {
        await stackPortsFree(stackPorts().filter((p) => p !== edge));
        return npmStart();
      };
      let run = await start();
      for (let attempt = 1; (await run.exited) === 1 && otherPortTaken(run.output) && attempt < 3; attempt++) run = await start();
      expect(await run.exited).toBe(1);
      expect(run.output).toMatch(/auth is SERVING/);
      expect(run.output).toMatch(/edge exited \(code 1\) before it was ready; stopping everything/);
      expect(run.output).toMatch(/\[start\]\S* stopped/);
      for (const port of stackPorts().filter((p) => p !== edge)) expect(await listening(port), `port ${port}`).toBe(false);
    } finally {
      squatter.close();
    }
  }, 180_000);
});
