/**
 * Real infrastructure for tests: a private nats-server (JetStream, its own
 * store, a free loopback port) that a test can stop and restart, and throwaway
 * PostgreSQL databases on the machine's server, dropped afterwards.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

export const postgresAdminUrl = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = netConnect(port, "127.0.0.1");
      sock.once("connect", () => {
        sock.destroy();
        resolve(true);
      });
      sock.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function natsServerBinary(): string {
  for (const candidate of [process.env.NATS_SERVER_BIN, "/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]) {
    if (candidate && existsSync(candidate)) return candidate;
  }
  throw new Error("nats-server is not installed: run scripts/setup.sh (apt-get install nats-server)");
}

/** A nats-server with JetStream for one test file. */
export class TestNats {
  readonly port: number;
  readonly url: string;
  private readonly storeDir: string;
  private proc: ChildProcess | undefined;

  private constructor(port: number) {
    this.port = port;
    this.url = `nats://127.0.0.1:${port}`;
    this.storeDir = mkdtempSync(join(tmpdir(), "nats-test-"));
  }

  static async start(): Promise<TestNats> {
    const nats = new TestNats(await freePort());
    await nats.resume();
    return nats;
  }

  /** Starts (again) on the same port and store, as after an outage. */
  async resume(): Promise<void> {
    this.proc = spawn(natsServerBinary(), ["-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.storeDir], { stdio: "ignore" });
    await waitForPort(this.port, 10_000);
  }

  /** Stops the server (an outage); resume() brings it back with its data. */
  async pause(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await exited;
    this.proc = undefined;
  }

  async stop(): Promise<void> {
    await this.pause();
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}

/** Throwaway databases named after the test run, dropped by dropAll(). */
export class TestDatabases {
  private readonly names: string[] = [];
  private readonly prefix = `t${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

  url(service: string): string {
    const name = `${this.prefix}_${service}`;
    this.names.push(name);
    const u = new URL(postgresAdminUrl);
    u.pathname = `/${name}`;
    return u.toString();
  }

  async dropAll(): Promise<void> {
    const client = new pg.Client({ connectionString: postgresAdminUrl });
    await client.connect();
    try {
      for (const name of this.names) await client.query(`drop database if exists "${name}" with (force)`);
    } finally {
      await client.end();
    }
  }
}

/** Drops test databases left behind by test processes that no longer run (a crashed or killed run). */
export async function dropStaleTestDatabases(): Promise<string[]> {
  const client = new pg.Client({ connectionString: postgresAdminUrl });
  await client.connect();
  const dropped: string[] = [];
  try {
    const { rows } = await client.query<{ datname: string }>("select datname from pg_database where datname ~ '^t[0-9]+_[a-z0-9]{6}_'");
    for (const { datname } of rows) {
      const pid = Number(/^t(\d+)_/.exec(datname)![1]);
      let alive = true;
      try {
        process.kill(pid, 0);
      } catch {
        alive = false;
      }
      if (alive) continue;
      await client.query(`drop database if exists "${datname}" with (force)`);
      dropped.push(datname);
    }
  } finally {
    await client.end();
  }
  return dropped;
}

/** Stops test nats-servers orphaned by a crashed run (their parent is gone; Linux /proc only). */
export function stopOrphanedTestNats(): number {
  let stopped = 0;
  let pids: string[] = [];
  try {
    pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  } catch {
    return 0;
  }
  for (const pid of pids) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (!cmdline[0]?.endsWith("nats-server") || !cmdline.some((a) => a.includes(`${tmpdir()}/nats-test-`))) continue;
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
      if (ppid !== 1) continue;
      process.kill(Number(pid), "SIGTERM");
      stopped++;
    } catch {
      // the process went away meanwhile
    }
  }
  return stopped;
}
