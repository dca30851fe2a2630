/**
 * Starts real services for a test: each on its own loopback port and database,
 * all sharing one private nats-server, with peer URLs wired before any starts.
 */
import { type ServiceName, peerUrlVariable, serviceNames } from "../catalog.ts";
import { type RunningService, runService, type AnyServiceDefinition } from "../server.ts";
import { freePort, TestDatabases, TestNats } from "./infra.ts";

export interface TestMesh {
  nats: TestNats;
  services: Partial<Record<ServiceName, RunningService>>;
  url(name: ServiceName): string;
  /** Environment the services were started with (for starting the edge or more services). */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startMesh(defs: AnyServiceDefinition[], extraEnv: Record<string, string> = {}): Promise<TestMesh> {
  const nats = await TestNats.start();
  const dbs = new TestDatabases();
  const ports = Object.fromEntries(await Promise.all(serviceNames.map(async (n) => [n, await freePort()] as const))) as Record<ServiceName, number>;
  const env: Record<string, string> = {
    NATS_URL: nats.url,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    EVENT_ACK_WAIT_MS: "5000",
    ...Object.fromEntries(serviceNames.map((n) => [peerUrlVariable(n), `http://127.0.0.1:${ports[n]}`])),
    ...extraEnv,
  };
  const services: TestMesh["services"] = {};
  const started: RunningService[] = [];
  try {
    for (const def of defs) {
      const running = await runService(def, { ...env, PORT: String(ports[def.name]), DATABASE_URL: dbs.url(def.name) });
      services[def.name] = running;
      started.push(running);
    }
  } catch (error) {
    for (const s of started.reverse()) await s.stop();
    await nats.stop();
    await dbs.dropAll();
    throw error;
  }
  return {
    nats,
    services,
    env,
    url: (name) => `http://127.0.0.1:${ports[name]}`,
    async stop() {
      for (const s of started.reverse()) await s.stop().catch(() => undefined);
      await nats.stop();
      await dbs.dropAll();
    },
  };
}

/** Polls until `fn` returns a value that is not undefined, or fails after `timeoutMs`. */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 10_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms${lastError ? `: ${(lastError as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
