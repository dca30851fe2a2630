/**
 * What the bench measures on the server side: the bench's main process (where the
 * services, the bare Connect and node:http servers run) and the edge's process
 * (scripts/bench/edge-process.ts); the load generators are child processes that
 * none of this includes:
 *
 * - server CPU: process.cpuUsage() of this process (all its threads), plus the CPU of
 *   the server processes it watches (the edge: `watchProcess`), as they report it;
 * - PostgreSQL CPU: utime + stime from /proc/<pid>/stat of the backends connected
 *   to the bench's databases (pids from pg_stat_activity), when /proc shows them;
 * - SQL: every statement this process puts on the wire to PostgreSQL, counted by a
 *   hook on pg's Query (both copies of pg: ours and MikroORM's), with "round trips"
 *   = waves of statements (a wave starts when a statement is sent while none is in
 *   flight; so it is only meaningful with one request at a time) and outbox relay
 *   passes (its SELECT ... FOR UPDATE SKIP LOCKED);
 * - peer RPCs: the RPCs the mesh's services handled (their rpc_requests_total).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import pg from "pg";
import type { TestMesh } from "../../kit/testing/mesh.ts";

interface SqlCounters {
  statements: number;
  rounds: number;
  relayPasses: number;
}

const sql: SqlCounters = { statements: 0, rounds: 0, relayPasses: 0 };
let inFlight = 0;
const excluded = new WeakSet<object>();
let captured: CapturedQuery[] | undefined;
const relayPass = /from outbox_events\s+where published_at is null order by/;

const installed = Symbol("bench.sqlCounter");
/** Set on a query from the moment it is sent until it ends (never on the prototype). */
const pending = Symbol("bench.pending");

type QueryProto = { submit(connection: object): unknown; handleReadyForQuery(connection: object): unknown; handleError(error: unknown, connection: object): unknown };

/**
 * Counts statements at the moment pg sends them (Query.submit) and when they end
 * (ReadyForQuery or an error). Patches the prototype, so it applies to clients and
 * pools created before or after; installed once per copy of pg.
 */
export function installSqlCounter(): void {
  const here = createRequire(import.meta.url);
  const orm = createRequire(import.meta.resolve("@mikro-orm/postgresql"));
  const queries = new Set<QueryProto>([here("pg").Query.prototype, orm("pg").Query.prototype]);
  for (const proto of queries) {
    if ((proto as { [installed]?: true })[installed]) continue;
    (proto as { [installed]?: true })[installed] = true;
    const { submit, handleReadyForQuery, handleError } = proto;
    const done = (q: Record<symbol, boolean>) => {
      if (!q[pending]) return;
      q[pending] = false;
      inFlight--;
    };
    proto.submit = function (this: Record<symbol, boolean> & { text?: string; values?: unknown[] }, connection: object) {
      const error = submit.call(this, connection);
      if (error || excluded.has(connection)) return error;
      this[pending] = true;
      if (inFlight++ === 0) sql.rounds++;
      sql.statements++;
      if (typeof this.text === "string") {
        if (relayPass.test(this.text)) sql.relayPasses++;
        captured?.push({ text: this.text, values: this.values ?? [] });
      }
      return error;
    };
    proto.handleReadyForQuery = function (this: Record<symbol, boolean>, connection: object) {
      done(this);
      return handleReadyForQuery.call(this, connection);
    };
    proto.handleError = function (this: Record<symbol, boolean>, error: unknown, connection: object) {
      done(this);
      return handleError.call(this, error, connection);
    };
  }
}

/** The SQL counters so far (statements, round trips, relay passes). */
export function sqlCounters(): Readonly<SqlCounters> {
  return { ...sql };
}

/** A statement as sent: its text and its bound parameters. */
export interface CapturedQuery {
  text: string;
  values: unknown[];
}

/** The statements (text and bound parameters) this process sends while `fn` runs, for EXPLAIN with the same values. */
export async function captureQueries(fn: () => Promise<unknown>): Promise<CapturedQuery[]> {
  captured = [];
  try {
    await fn();
    return captured;
  } finally {
    captured = undefined;
  }
}

function clockTicks(): number {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** CPU seconds (user + system) of a process from /proc, or undefined when it is not visible. */
function procCpuTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After "pid (comm) " the fields start at state (field 3): utime is field 14, stime 15.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

export interface Snapshot {
  at: number;
  cpu: NodeJS.CpuUsage;
  /** CPU µs of each watched server process so far. */
  watched: number[];
  sql: SqlCounters;
  /** Ticks per PostgreSQL backend pid; undefined when /proc does not show them. */
  pg: Map<number, number> | undefined;
  rpcs: number;
}

export interface Usage {
  seconds: number;
  /** Server processes' CPU (this one and the watched ones), µs. */
  cpuUs: number;
  /** PostgreSQL backends' CPU, µs (undefined when not readable). */
  pgCpuUs: number | undefined;
  statements: number;
  rounds: number;
  relayPasses: number;
  /** RPCs handled by the mesh's services. */
  rpcs: number;
}

/** Takes snapshots of everything above; `diff` turns two into the usage between them. */
export class Meter {
  private readonly monitor: pg.Client;
  private readonly databases: string[];
  private readonly mesh: TestMesh;
  private readonly ticksPerSecond = clockTicks();
  private pgVisible = true;
  private readonly watched: (() => Promise<number>)[] = [];

  private constructor(monitor: pg.Client, databases: string[], mesh: TestMesh) {
    this.monitor = monitor;
    this.databases = databases;
    this.mesh = mesh;
  }

  /** `adminUrl`: a database to connect the monitor to (its own statements are not counted). */
  static async start(adminUrl: string, mesh: TestMesh): Promise<Meter> {
    const monitor = new pg.Client({ connectionString: adminUrl, application_name: "bench-monitor" });
    await monitor.connect();
    excluded.add((monitor as unknown as { connection: object }).connection);
    const databases = Object.values(mesh.services).map((s) => decodeURIComponent(new URL(s!.ctx.config.databaseUrl).pathname.slice(1)));
    return new Meter(monitor, databases, mesh);
  }

  /** Adds a database whose backends' CPU counts (a baseline's own database). */
  watchDatabase(name: string): void {
    if (!this.databases.includes(name)) this.databases.push(name);
  }

  /** Adds a server process (the edge) whose CPU counts as the servers' CPU: `cpuUs` reads its CPU time so far, µs. */
  watchProcess(cpuUs: () => Promise<number>): void {
    this.watched.push(cpuUs);
  }

  /** Runs a statement on the monitor connection (not counted): for EXPLAIN and look-ups. */
  query<T extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<T>> {
    return this.monitor.query<T>(text, values);
  }

  async snapshot(): Promise<Snapshot> {
    let pgTicks: Map<number, number> | undefined;
    if (this.pgVisible) {
      const { rows } = await this.monitor.query<{ pid: number }>("select pid from pg_stat_activity where datname = any($1::text[])", [this.databases]);
      pgTicks = new Map();
      for (const { pid } of rows) {
        const ticks = procCpuTicks(pid);
        if (ticks !== undefined) pgTicks.set(pid, ticks);
      }
      if (rows.length > 0 && pgTicks.size === 0) {
        this.pgVisible = false; // PostgreSQL runs where /proc does not show it (another host or container)
        pgTicks = undefined;
      }
    }
    let rpcs = 0;
    for (const s of Object.values(this.mesh.services)) {
      for (const v of (await s!.ctx.metrics.rpcTotal.get()).values) rpcs += v.value;
    }
    const watched = await Promise.all(this.watched.map((cpuUs) => cpuUs()));
    return { at: performance.now(), cpu: process.cpuUsage(), watched, sql: sqlCounters(), pg: pgTicks, rpcs };
  }

  diff(a: Snapshot, b: Snapshot): Usage {
    let pgCpuUs: number | undefined;
    if (a.pg && b.pg) {
      // A backend that ended in between is lost; one that started in between counts from zero.
      let ticks = 0;
      for (const [pid, t] of b.pg) ticks += t - (a.pg.get(pid) ?? 0);
      pgCpuUs = (ticks / this.ticksPerSecond) * 1e6;
    }
    let watchedUs = 0;
    for (const [i, us] of b.watched.entries()) watchedUs += us - (a.watched[i] ?? us);
    return {
      seconds: (b.at - a.at) / 1000,
      cpuUs: b.cpu.user + b.cpu.system - a.cpu.user - a.cpu.system + watchedUs,
      pgCpuUs,
      statements: b.sql.statements - a.sql.statements,
      rounds: b.sql.rounds - a.sql.rounds,
      relayPasses: b.sql.relayPasses - a.sql.relayPasses,
      rpcs: b.rpcs - a.rpcs,
    };
  }

  async close(): Promise<void> {
    await this.monitor.end();
  }
}
