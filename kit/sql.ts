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
import { CompiledQuery } from "kysely";
import { currentCall } from "./context.ts";
import type { EntityManager } from "./db.ts";
import { isUniqueViolation } from "./errors.ts";

export interface Sql {
  /** Every row of a query. */
  all<Row extends object>(text: string, params?: readonly unknown[]): Promise<Row[]>;
  /** The first row, or undefined. */
  one<Row extends object>(text: string, params?: readonly unknown[]): Promise<Row | undefined>;
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

export function sqlOf(em: EntityManager): Sql {
  const execute = <Row>(sql: string, params: readonly unknown[]) => {
    let text = sql;
    const executor = (em.getTransactionContext() ?? em.getConnection().getClient()) as unknown as QueryExecutor;
    // MikroORM's onQuery hook (logging, statement counts in tests) sees these statements too.
    text = em.config.get("onQuery")(text, params as unknown[]);
    const call = currentCall();
    const abort = call ? { signal: call.signal, inflightQueryAbortStrategy: "cancel query" as const } : undefined;
    return executor.executeQuery<Row>(CompiledQuery.raw(text, params as unknown[]) as CompiledQuery<Row>, abort);
  };
  return {
    em,
    all: async <Row extends object>(text: string, params: readonly unknown[] = []) => (await execute<Row>(text, params)).rows,
    one: async <Row extends object>(text: string, params: readonly unknown[] = []) => (await execute<Row>(text, params)).rows[0],
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
