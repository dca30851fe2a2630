/**
 * The one typed query helper: SQL with `$1…$n` parameters that PostgreSQL binds
 * (sent apart from the text, never interpolated into it), on the request's
 * EntityManager connection and inside its transaction when there is one, and
 * bounded by the inbound call's deadline (PostgreSQL cancels a statement whose
 * call has ended). Reads use it and map rows straight to messages, so hot paths
 * pay no entity hydration; set-based and conditional writes (stock, counters)
 * use it too; plain row writes go through entities. Arrays bind as PostgreSQL
 * arrays (`= any($1::uuid[])`), bigint as int8; int8 and numeric columns come
 * back as strings (see `big`), and so do date, timestamp and timestamptz: MikroORM's
 * type parsers keep them as text (timestampOf and `new Date(...)` read it).
 */
import type { HandlerContext } from "@connectrpc/connect";
import { CompiledQuery } from "kysely";
import type pg from "pg";
import { type CallDeadline, currentCall, remainingMs } from "./context.ts";
import { type EntityManager, emOf, lazyEmOf } from "./db.ts";
import { isUniqueViolation } from "./errors.ts";

/** How a read outside a transaction is planned (inside one, PostgreSQL plans each statement with its values). */
export interface ReadOptions {
  /**
   * Plan the statement once per connection, for any values (a generic plan), instead of
   * for each call's values: for a big statement whose plan does not depend on them, whose
   * planning is a large part of its cost (SearchProducts with a query: about 1 ms of 5.5).
   * PostgreSQL's own choice (plan_cache_mode auto) keeps custom plans for it because the
   * generic plan costs a few per cent more on paper. Runs on the generic pool (genericPoolOf).
   */
  genericPlan?: boolean;
}

export interface Sql {
  /** Every row of a query. */
  all<Row extends object>(text: string, params?: readonly unknown[], options?: ReadOptions): Promise<Row[]>;
  /** The first row, or undefined. */
  one<Row extends object>(text: string, params?: readonly unknown[], options?: ReadOptions): Promise<Row | undefined>;
  /** Runs a statement; the number of rows it affected. */
  run(text: string, params?: readonly unknown[]): Promise<number>;
  em: EntityManager;
}

interface QueryExecutor {
  executeQuery<R>(
    query: CompiledQuery<R>,
    options?: { signal?: AbortSignal; inflightQueryAbortStrategy?: "cancel query" },
  ): Promise<{ rows: R[]; numAffectedRows?: bigint }>;
}

type Result<Row> = { rows: Row[]; numAffectedRows?: bigint };

// The pg pool under MikroORM's connection (its type parsers: timestamps and int8 as text), per connection.
const pools = new WeakMap<object, pg.Pool>();
async function poolOf(em: EntityManager): Promise<pg.Pool> {
  const connection = em.getConnection();
  const known = pools.get(connection);
  if (known && !known.ending) return known;
  const pool = await connection.getNativeClient();
  pools.set(connection, pool);
  return pool;
}

/**
 * A second, smaller pool beside MikroORM's, with the same settings and type parsers, whose
 * connections plan every statement generically (`plan_cache_mode = force_generic_plan`, a
 * startup option of the connection): only statements that ask for it (ReadOptions.genericPlan)
 * run there, so the setting never reaches a transaction or another read, and no SET is sent.
 * It ends with MikroORM's pool; its idle connections close after the pool's idle timeout.
 */
const genericPools = new WeakMap<pg.Pool, pg.Pool>();
async function genericPoolOf(em: EntityManager): Promise<pg.Pool> {
  const native = await poolOf(em);
  const known = genericPools.get(native);
  if (known && !known.ending) return known;
  const settings = (native as unknown as { options: pg.PoolConfig & { options?: string } }).options;
  const Pool = native.constructor as typeof pg.Pool;
  const pool = new Pool({
    ...settings,
    max: Math.max(1, Math.ceil((settings.max ?? 10) / 2)),
    allowExitOnIdle: true,
    options: [settings.options, "-c plan_cache_mode=force_generic_plan"].filter(Boolean).join(" "),
  });
  // A connection the server dropped while idle: the pool discards it (and re-emits the error here).
  pool.on("error", () => undefined);
  const end = native.end.bind(native);
  native.end = ((...args: Parameters<typeof native.end>) => {
    void pool.end().catch(() => undefined);
    return end(...args);
  }) as typeof native.end;
  genericPools.set(native, pool);
  return pool;
}

const counted = new Set(["INSERT", "UPDATE", "DELETE", "MERGE"]);

/** Named statements kept per pool connection (least recently used deallocated first). */
export const preparedPerConnection = 64;
/** Each connection's named statements by text, with when each was last used (a count of uses). */
const preparedOf = new WeakMap<pg.PoolClient, { uses: number; names: Map<string, { name: string; used: number }> }>();
let preparedCount = 0;

/**
 * The statement as a named (prepared) one on this connection: PostgreSQL parses
 * it once per connection, and after five executions plans it once too when its
 * generic plan costs no more than the custom ones (plan_cache_mode auto; SearchProducts'
 * statement keeps custom plans and saves only the parse, about 0.4 ms of 5.8). Names
 * are per connection and bounded (preparedPerConnection, the least recently used
 * deallocated first), because the texts of statements assembled from optional
 * parts are many. pg keeps the statements it has parsed in a table of its
 * connection and offers no way to forget one: the eviction removes its entry
 * there, so if pg's internals change the statement simply runs unnamed (the
 * fallback below), never with another text.
 */
function namedQuery(client: pg.PoolClient, text: string, values: unknown[]): pg.QueryConfig {
  const parsed = (client as unknown as { connection?: { parsedStatements?: Record<string, string> } }).connection?.parsedStatements;
  if (typeof parsed !== "object" || parsed === null) return { text, values };
  let mine = preparedOf.get(client);
  if (!mine) preparedOf.set(client, (mine = { uses: 0, names: new Map() }));
  const known = mine.names.get(text);
  if (known !== undefined) {
    known.used = ++mine.uses;
    return { name: known.name, text, values };
  }
  if (mine.names.size >= preparedPerConnection) {
    // Evictions are rare (a new text on a full connection): a scan for the oldest is cheaper than keeping an order on every use.
    let oldest: [string, { name: string; used: number }] | undefined;
    for (const entry of mine.names) if (!oldest || entry[1].used < oldest[1].used) oldest = entry;
    mine.names.delete(oldest![0]);
    delete parsed[oldest![1].name];
    // Queued on the connection ahead of the statement below; the name is never used again.
    client.query(`deallocate "${oldest![1].name}"`).catch(() => undefined);
  }
  const name = `kit_${(++preparedCount).toString(36)}`;
  mine.names.set(text, { name, used: ++mine.uses });
  return { name, text, values };
}

/**
 * A statement outside a transaction, straight on a pool connection: what Kysely's executor
 * does, without its general cancellation machinery (a dozen promises per statement). When the
 * call ends first, the statement's caller gets the signal's reason at once, PostgreSQL cancels
 * the statement (`pg_cancel_backend` over another pool connection), and the connection goes
 * back to the pool only once both are over, so the cancel cannot reach a later statement.
 */
async function onPool<Row>(pool: pg.Pool, text: string, params: unknown[], call: CallDeadline | undefined): Promise<Result<Row>> {
  const signal = call?.signal;
  if (signal?.aborted) throw signal.reason;
  const client = await pool.connect();
  if (signal?.aborted) {
    client.release();
    throw signal.reason;
  }
  const query = client.query(namedQuery(client, text, params));
  let result: pg.QueryResult;
  if (!signal) {
    try {
      result = await query;
    } finally {
      client.release();
    }
  } else {
    let onAbort!: () => void;
    try {
      // One promise settled by whichever comes first (a Promise.race over two costs two more).
      result = await new Promise<pg.QueryResult>((resolve, reject) => {
        onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        query.then(resolve, reject);
      });
    } catch (error) {
      if (signal.aborted) {
        const cancel = pool.query("select pg_cancel_backend($1)", [(client as unknown as { processID: number }).processID]).catch(() => undefined);
        void Promise.allSettled([query, cancel]).finally(() => client.release());
      } else client.release();
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    client.release();
  }
  return { rows: (result.rows ?? []) as Row[], numAffectedRows: counted.has(result.command) ? BigInt(result.rowCount ?? 0) : undefined };
}

/**
 * The query helper of an EntityManager (inside its transaction when it has one), or of the
 * call being handled: `sqlOf(ctx)` forks no EntityManager until `.em` is asked for, so a read
 * handler pays no fork (MikroORM's fork costs more than the rest of a simple read's own work).
 */
export function sqlOf(from: EntityManager | HandlerContext): Sql {
  const lazy = "requestHeader" in from ? lazyEmOf(from) : undefined;
  const emNow = (): EntityManager => (lazy ? (lazy.em ?? lazy.orm.em) : (from as EntityManager));
  const execute = async <Row>(sql: string, params: readonly unknown[], options?: ReadOptions): Promise<Result<Row>> => {
    const em = emNow();
    // MikroORM's onQuery hook (logging, statement counts in tests) sees these statements too.
    const text = em.config.get("onQuery")(sql, params as unknown[]);
    const call = currentCall();
    const transaction = lazy && !lazy.em ? undefined : em.getTransactionContext();
    if (!transaction) return onPool<Row>(await (options?.genericPlan ? genericPoolOf(em) : poolOf(em)), text, params as unknown[], call);
    const abort = call ? { signal: call.signal, inflightQueryAbortStrategy: "cancel query" as const } : undefined;
    return (transaction as unknown as QueryExecutor).executeQuery<Row>(CompiledQuery.raw(text, params as unknown[]) as CompiledQuery<Row>, abort);
  };
  return {
    get em() {
      return lazy ? emOf(from as HandlerContext) : (from as EntityManager);
    },
    all: async <Row extends object>(text: string, params: readonly unknown[] = [], options?: ReadOptions) => (await execute<Row>(text, params, options)).rows,
    one: async <Row extends object>(text: string, params: readonly unknown[] = [], options?: ReadOptions) => (await execute<Row>(text, params, options)).rows[0],
    run: async (text: string, params: readonly unknown[] = []) => Number((await execute(text, params)).numAffectedRows ?? 0n),
  };
}

/**
 * Flushes `em`; a unique violation (a concurrent or repeated write of what must be
 * unique) becomes the caller's domain error, e.g. ALREADY_EXISTS naming the field.
 */
export async function flushUnique(em: EntityManager, taken: () => Error): Promise<void> {
  try {
    await em.flush();
  } catch (error) {
    if (isUniqueViolation(error)) throw taken();
    throw error;
  }
}

/** The constraint a unique violation was raised for (raw or wrapped by MikroORM), if `error` is one. */
export function uniqueViolation(error: unknown): string | undefined {
  if (!isUniqueViolation(error)) return undefined;
  return (error as { constraint?: string }).constraint ?? "";
}

/** Bigint columns arrive as strings through raw SQL. */
export const big = (v: string | number | bigint | null | undefined): bigint | undefined =>
  v === null || v === undefined ? undefined : BigInt(v);

/**
 * The parameters of a statement assembled from optional parts (filters, facets):
 * `add(value)` keeps the value and returns its placeholder (`$1`, `$2` ...), so
 * the text only ever holds placeholders and the values are bound by PostgreSQL.
 */
export class Params {
  readonly values: unknown[] = [];
  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

/**
 * The `lock_timeout` for the current call's transaction, as text for
 * `set_config('lock_timeout', $n, true)` in its first statement (no extra round
 * trip): what is left of the deadline less a fifth (at least 100 ms) to roll back
 * and answer. A statement that waits longer on a contended lock gives up inside
 * PostgreSQL (55P03, answered ABORTED: retry) and frees its connection at once,
 * instead of waiting until the deadline for a cancel sent over a new connection:
 * under a crowd on one row (a scarce product at checkout) those late cancels are
 * what turns a queue into a collapse. "0" (PostgreSQL's default, no limit) outside a call.
 */
export function lockTimeoutForCall(): string {
  const left = remainingMs();
  if (left === undefined) return "0";
  return `${Math.max(1, Math.floor(left - Math.max(100, left / 5)))}ms`;
}
