/**
 * Raw SQL on the request's EntityManager, inside its transaction when there
 * is one. MikroORM inlines `?` parameters on the client: an array parameter
 * becomes a comma list (for `in (?)`, never empty), so arrays for `any(...)`
 * are passed as PostgreSQL array literals built by `pgArray`. A `?` must never
 * appear in the SQL text other than as a placeholder.
 */
import type { EntityManager } from "./db.ts";
import { isUniqueViolation } from "./errors.ts";

export interface Sql {
  all<T>(query: string, params?: unknown[]): Promise<T[]>;
  one<T>(query: string, params?: unknown[]): Promise<T | undefined>;
  /** Runs a statement; returns the number of rows it affected. */
  run(query: string, params?: unknown[]): Promise<number>;
  em: EntityManager;
}

export function sqlOf(em: EntityManager): Sql {
  const conn = em.getConnection();
  const trx = () => em.getTransactionContext();
  return {
    em,
    all: <T>(query: string, params: unknown[] = []) => conn.execute<T[]>(query, params, "all", trx()),
    one: async <T>(query: string, params: unknown[] = []) => (await conn.execute<T[]>(query, params, "all", trx()))[0],
    run: async (query: string, params: unknown[] = []) => {
      const result = (await conn.execute(query, params, "run", trx())) as { affectedRows?: number };
      return result.affectedRows ?? 0;
    },
  };
}

/** A PostgreSQL array literal of strings ("{}" when empty), for `= any(?::uuid[])` and friends. */
export function pgArray(values: readonly string[]): string {
  return `{${values.map((v) => `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`).join(",")}}`;
}

/** The constraint a unique violation was raised for (raw or wrapped by MikroORM), if `error` is one. */
export function uniqueViolation(error: unknown): string | undefined {
  if (!isUniqueViolation(error)) return undefined;
  return (error as { constraint?: string }).constraint ?? "";
}

/** Bigint columns arrive as strings through raw SQL. */
export const big = (v: string | number | bigint | null | undefined): bigint | undefined =>
  v === null || v === undefined ? undefined : BigInt(v);
