/**
 * Idempotency keys for mutating RPCs that must not run twice (PlaceOrder,
 * AuthorizePayment, RefundPayment ...). The key row is inserted in the same
 * transaction as the work: a concurrent call with the same key waits on the row
 * lock and then returns the stored response; a failed call stores nothing, so a
 * retry runs again. The same key with a different request is an error.
 */
import { createHash } from "node:crypto";
import { type DescMessage, fromBinary, type MessageShape, toBinary, toJson } from "@bufbuild/protobuf";
import type { EntityManager } from "./db.ts";
import { Code } from "@connectrpc/connect";
import { domainError } from "./errors.ts";
import { lockTimeoutForCall, sqlOf } from "./sql.ts";

export interface IdempotencyOptions<Req extends DescMessage, Res extends DescMessage> {
  /** What the key is scoped to: the RPC and the caller, e.g. "PlaceOrder:user:<id>". */
  scope: string;
  key: string;
  requestSchema: Req;
  request: MessageShape<Req>;
  responseSchema: Res;
  /** How long the stored response answers retries (default 24 h). */
  ttlMs?: number;
  /**
   * Bound every lock wait of the transaction by the call's deadline (sql.ts lockTimeoutForCall):
   * the key's insert waits while another call holds the same key, and the work may lock rows. A
   * wait that runs out answers ABORTED / CONTENDED (retry) before the deadline instead of holding a
   * connection until the cancel. Opt-in, like lockTimeoutForCall itself (docs/kit.md, db.ts): it
   * changes the RPC's answer under contention from DEADLINE_EXCEEDED, so its contract must say so.
   */
  boundLockWaits?: boolean;
}

/** Canonical hash of a request: JSON with sorted keys, so map order does not matter. */
export function requestHash<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): string {
  const canonical = JSON.stringify(toJson(schema, message), (_k, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b))) : v,
  );
  return createHash("sha256").update(canonical).digest("hex");
}

/**
 * Runs `work` once per (scope, key). `work` receives the transaction's
 * EntityManager and must do its database writes through it.
 */
export async function idempotent<Req extends DescMessage, Res extends DescMessage>(
  em: EntityManager,
  options: IdempotencyOptions<Req, Res>,
  work: (tx: EntityManager) => Promise<MessageShape<Res>>,
): Promise<MessageShape<Res>> {
  const hash = requestHash(options.requestSchema, options.request);
  const ttlMs = options.ttlMs ?? 24 * 3600 * 1000;
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const expired = "delete from idempotency_keys where scope = $1 and key = $2 and expires_at < now()";
    // boundLockWaits in the same first statement, so no extra round trip: a data-modifying CTE always
    // runs, and the select's one row always sets the limit for the rest of the transaction.
    await db.run(
      options.boundLockWaits ? `with expired as (${expired} returning 1) select set_config('lock_timeout', $3, true)` : expired,
      options.boundLockWaits ? [options.scope, options.key, lockTimeoutForCall()] : [options.scope, options.key],
    );
    // Blocks while another transaction holds the same key; then sees its committed row.
    const inserted = await db.run(
      `insert into idempotency_keys (scope, key, request_hash, expires_at)
       values ($1, $2, $3, now() + ($4 * interval '1 millisecond'))
       on conflict (scope, key) do nothing`,
      [options.scope, options.key, hash, ttlMs],
    );
    if (inserted === 0) {
      const row = await db.one<{ request_hash: string; response: Buffer | null }>("select request_hash, response from idempotency_keys where scope = $1 and key = $2", [
        options.scope,
        options.key,
      ]);
      if (!row) throw domainError(Code.Aborted, "the idempotency key changed concurrently; retry", { reason: "CONCURRENT_MODIFICATION" });
      if (row.request_hash !== hash) {
        throw domainError(Code.FailedPrecondition, "this idempotency key was used with a different request; use a new key for a new request", {
          reason: "IDEMPOTENCY_KEY_REUSED",
          field: "idempotency_key",
        });
      }
      if (!row.response) throw domainError(Code.Aborted, "a call with this idempotency key is still in progress; retry shortly", { reason: "IN_PROGRESS" });
      return fromBinary(options.responseSchema, row.response);
    }
    const response = await work(tx);
    await tx.flush();
    await db.run("update idempotency_keys set response = $1, completed_at = now() where scope = $2 and key = $3", [
      Buffer.from(toBinary(options.responseSchema, response)),
      options.scope,
      options.key,
    ]);
    return response;
  });
}

/** Deletes expired keys in batches (the kit's idempotency-key-retention job runs it for every service). */
export async function pruneIdempotencyKeys(em: EntityManager): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = await sqlOf(em).run("delete from idempotency_keys where ctid in (select ctid from idempotency_keys where expires_at < now() limit 1000)");
    total += deleted;
    if (deleted < 1000) return total;
  }
}
