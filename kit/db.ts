/**
 * One PostgreSQL database per service through MikroORM: the database is created
 * when missing, committed migrations are applied at start (kit infrastructure
 * tables first, then the service's own), and each RPC gets its own forked
 * EntityManager (request-scoped identity map).
 *
 * Statements obey the inbound call's deadline (kit/context.ts), for every service
 * and every path (ORM flushes and finds, raw `execute`; `sqlOf` passes the signal itself): each statement run for a call carries
 * the call's signal, and when the deadline passes or the caller cancels, MikroORM's
 * "cancel query" strategy has PostgreSQL cancel the statement in flight
 * (`pg_cancel_backend`, over a pool connection), so it stops holding locks and its
 * transaction rolls back. A transaction whose call has ended refuses to commit, so a
 * caller that saw DEADLINE_EXCEEDED never finds the work done anyway. Work outside a
 * call (migrations, event consumers, the outbox relay, jobs) has no deadline here.
 */
import { type ContextValues, createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { EventSubscriber, MigrationObject } from "@mikro-orm/core";
import { Migrator } from "@mikro-orm/migrations";
import { type EntityManager, MikroORM, type Options } from "@mikro-orm/postgresql";
import pg from "pg";
import { defaultPoolSize } from "./config.ts";
import { currentCall } from "./context.ts";
import { Code, ConnectError } from "./errors.ts";
import type { Logger } from "./logger.ts";

export type { EntityManager };

/** A committed migration: `name` is sortable and unique within the service ("0001_auth_tables"), never renamed. */
export type MigrationEntry = MigrationObject;

export interface DatabaseOptions {
  url: string;
  entities: NonNullable<Options["entities"]>;
  migrations: MigrationEntry[];
  log: Logger;
  /** Most connections the pool opens (DB_POOL_SIZE). */
  poolSize?: number;
}

function databaseName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ""));
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name)) throw new Error(`database name "${name}" in DATABASE_URL is not a plain identifier`);
  return name;
}

/** Creates the service's database if it does not exist (connecting to the server's `postgres` database). */
export async function ensureDatabase(url: string, log: Logger): Promise<void> {
  const name = databaseName(url);
  const admin = new URL(url);
  admin.pathname = "/postgres";
  const client = new pg.Client({ connectionString: admin.toString() });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(
      `cannot reach PostgreSQL at ${admin.host}: ${(error as Error).message}. Start it, or set DATABASE_URL (npm start starts an embedded one when none answers).`,
    );
  }
  try {
    const { rowCount } = await client.query("select 1 from pg_database where datname = $1", [name]);
    if (rowCount === 0) {
      try {
        await client.query(`create database "${name}"`);
        log.info({ database: name }, "created database");
      } catch (error) {
        // Another replica created it between the check and the create (42P04, or 23505 while its create commits).
        const code = (error as { code?: string }).code;
        if (code !== "42P04" && code !== "23505") throw error;
      }
    }
  } finally {
    await client.end();
  }
}

/**
 * Gives every statement run for an inbound call that call's signal (see the header).
 * Every path to the database (ORM, flushes, raw SQL) goes through the one write
 * connection's `execute`; MikroORM reads the abort options from its logger context.
 */
function bindStatementsToCalls(orm: MikroORM): void {
  const conn = orm.em.getConnection();
  const execute = conn.execute.bind(conn);
  conn.execute = ((query, params, method, ctx, loggerContext) => {
    const call = currentCall();
    if (!call || (loggerContext as { signal?: AbortSignal } | undefined)?.signal) return execute(query, params, method, ctx, loggerContext);
    const abort = { signal: call.signal, inflightQueryAbortStrategy: "cancel query" };
    return execute(query, params, method, ctx, { ...loggerContext, ...abort } as typeof loggerContext);
  }) as typeof conn.execute;
}

/** Refuses to commit a transaction whose inbound call has ended: the caller already has its answer. */
const commitGuard: EventSubscriber = {
  beforeTransactionCommit() {
    const call = currentCall();
    if (!call?.signal.aborted) return;
    const deadlinePassed = Date.now() >= call.deadline;
    throw new ConnectError(
      deadlinePassed ? "the call's deadline passed before its changes were committed; nothing was changed" : "the call was cancelled before its changes were committed; nothing was changed",
      deadlinePassed ? Code.DeadlineExceeded : Code.Canceled,
    );
  },
};

export async function openDatabase(options: DatabaseOptions): Promise<MikroORM> {
  await ensureDatabase(options.url, options.log);
  const orm = await MikroORM.init({
    subscribers: [commitGuard],
    clientUrl: options.url,
    entities: options.entities,
    extensions: [Migrator],
    pool: { min: 0, max: options.poolSize ?? defaultPoolSize },
    migrations: {
      migrationsList: options.migrations,
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      silent: true,
    },
    // Identity maps are per request (forked EntityManagers); the global one is never used.
    allowGlobalContext: false,
    debug: false,
  });
  bindStatementsToCalls(orm);
  try {
    const applied = await underMigrationLock(options.url, () => orm.migrator.up());
    if (applied.length > 0) options.log.info({ migrations: applied.map((m) => m.name) }, "applied migrations");
  } catch (error) {
    await orm.close();
    throw error;
  }
  return orm;
}

/** Key of the migration lock: pg_advisory_lock(classid, objid) with a constant class for the kit. */
const migrationLockClass = 0x6b6d6967; // "kmig"

/**
 * Runs `migrate` while holding a session-level advisory lock on its own
 * connection, keyed by database: replicas that start together queue here and
 * each sees the others' migrations as applied, so every migration runs once.
 * The lock goes with the connection if the process dies.
 */
export async function underMigrationLock<T>(url: string, migrate: () => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("select pg_advisory_lock($1, hashtext(current_database()))", [migrationLockClass]);
    try {
      return await migrate();
    } finally {
      await client.query("select pg_advisory_unlock($1, hashtext(current_database()))", [migrationLockClass]);
    }
  } finally {
    await client.end();
  }
}

/** The call's EntityManager, forked on first use: health, reflection and calls that never touch the database pay nothing. */
export interface LazyEm {
  orm: MikroORM;
  em?: EntityManager;
}

const emKey = createContextKey<LazyEm | undefined>(undefined, { description: "request-scoped EntityManager" });

/** Gives the call its own EntityManager fork, made when the handler first asks for it (kit/call.ts, per call). */
export function attachEntityManager(values: ContextValues, orm: MikroORM): void {
  values.set(emKey, { orm });
}

/** The request's EntityManager, not forked yet when nothing asked for it (what `sqlOf(ctx)` reads through). */
export function lazyEmOf(ctx: HandlerContext): LazyEm {
  const lazy = ctx.values.get(emKey);
  if (!lazy) throw new Error("no EntityManager in this context: is the service started through runService?");
  return lazy;
}

/** The request's EntityManager. */
export function emOf(ctx: HandlerContext): EntityManager {
  const lazy = lazyEmOf(ctx);
  return (lazy.em ??= lazy.orm.em.fork());
}

/** Cheap liveness probe used by the health service. */
export async function pingDatabase(orm: MikroORM): Promise<boolean> {
  try {
    await orm.em.fork().getConnection().execute("select 1");
    return true;
  } catch {
    return false;
  }
}
