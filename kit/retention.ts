/**
 * Retention of the kit's infrastructure tables, run by every service as kit
 * jobs (settings in config.ts `retention`, reasoning in docs/kit.md):
 * published outbox rows, processed inbox rows, expired idempotency keys and
 * replayed dead letters. Deletes go in small batches so no pass holds many
 * row locks or a long transaction; replicas may run them at the same time.
 */
import type { MikroORM } from "@mikro-orm/postgresql";
import type { ServiceConfig } from "./config.ts";
import { pruneIdempotencyKeys } from "./idempotency.ts";
import { type IntervalJob, intervalJob } from "./jobs.ts";
import type { Logger } from "./logger.ts";
import { sqlOf } from "./sql.ts";

const batch = 1_000;

/** Deletes rows matching `where` (with `params`) in batches of `batch`; returns how many. */
async function deleteInBatches(orm: MikroORM, table: string, where: string, params: unknown[], signal: AbortSignal): Promise<number> {
  let total = 0;
  for (;;) {
    // Table and condition are the kit's own text; values are bound.
    const deleted = await sqlOf(orm.em.fork()).run(`delete from ${table} where ctid in (select ctid from ${table} where ${where} limit ${batch})`, params);
    total += deleted;
    if (deleted < batch || signal.aborted) return total;
  }
}

export function retentionJobs(orm: MikroORM, config: ServiceConfig, inboxTable: string, log: Logger): IntervalJob[] {
  const { retention } = config;
  const job = (name: string, prune: (signal: AbortSignal) => Promise<number>) =>
    intervalJob({
      name,
      everyMs: retention.intervalMs,
      log,
      async run(signal) {
        const deleted = await prune(signal);
        if (deleted > 0) log.info({ job: name, deleted }, "retention: old rows deleted");
      },
    });
  const olderThan = (column: string) => `${column} < now() - ($1 * interval '1 millisecond')`;
  return [
    job("outbox-retention", (signal) => deleteInBatches(orm, "outbox_events", olderThan("published_at"), [retention.outboxMs], signal)),
    job("inbox-retention", (signal) => deleteInBatches(orm, inboxTable, `processed and ${olderThan("processed_at")}`, [retention.inboxMs], signal)),
    job("dead-letter-retention", (signal) => deleteInBatches(orm, "dead_letters", olderThan("replayed_at"), [retention.deadLetterMs], signal)),
    job("idempotency-key-retention", () => pruneIdempotencyKeys(orm.em.fork())),
  ];
}
