/**
 * Transactional outbox. `publishEvent` adds the event to the EntityManager's
 * unit of work, so it is committed in the same transaction as the change it
 * announces; the relay then publishes committed rows to JetStream with
 * Nats-Msg-Id = event id, retrying with backoff while NATS is down. Nothing is
 * lost and a re-publish is deduplicated by JetStream.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { create, type DescMessage, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { propagationHeaders } from "../context.ts";
import type { Logger } from "../logger.ts";
import type { ServiceMetrics } from "../metrics.ts";
import { sqlOf } from "../sql.ts";
import type { EventBus } from "./bus.ts";
import { subjectOf } from "./contracts.ts";
import { OutboxEvent } from "./schema.ts";

type EventInit<Desc extends DescMessage> = Omit<MessageInitShape<Desc>, "eventId" | "occurredAt" | "$typeName"> & {
  eventId?: string;
};

/**
 * Queues an event in the outbox of `em`'s unit of work; it is written when the
 * change is flushed, in the same transaction. Fills event_id (UUIDv7) and occurred_at.
 */
export function publishEvent<Desc extends DescMessage>(em: EntityManager, schema: Desc, init: EventInit<Desc>): MessageShape<Desc> {
  const eventId = init.eventId ?? uuidv7();
  const message = create(schema, { ...init, eventId, occurredAt: timestampNow() } as unknown as MessageInitShape<Desc>);
  em.persist(
    em.create(OutboxEvent, {
      id: eventId,
      subject: subjectOf(schema),
      eventType: schema.typeName,
      payload: Buffer.from(toBinary(schema, message)),
      headers: propagationHeaders(),
    }),
  );
  return message;
}

export interface RelayOptions {
  batchSize?: number;
  pollMs?: number;
  maxBackoffMs?: number;
  /** How long a replica keeps the relay lease without renewing it (default 15 s). */
  leaseMs?: number;
}

interface OutboxRow {
  id: string;
  subject: string;
  payload: Buffer;
  headers: Record<string, string>;
}

/**
 * Publishes committed outbox rows. One relay per service process; of the
 * replicas sharing a database, the one holding the relay lease
 * (outbox_relay_lease, renewed each pass) publishes, in created_at order, so
 * one aggregate's events go out in the order they were written. Rows are read
 * without locks and no transaction is open while waiting for NATS; a crash
 * between publish and marking re-publishes at most one batch, which JetStream
 * drops (Nats-Msg-Id = event id, 10-minute duplicate window) and the inbox
 * of every consumer ignores.
 */
export class OutboxRelay {
  private wakeUp: (() => void) | undefined;
  /** A commit with outbox rows arrived while a pass ran: run another right after it. */
  private woken = false;
  private running = false;
  private loop: Promise<void> | undefined;
  private failures = 0;
  /** Transactions that flushed outbox rows and have not committed yet. */
  private readonly pendingCommits = new WeakSet<object>();
  /** Outbox rows flushed inside savepoints, whose outer transaction we cannot name. */
  private savepointRows = 0;
  private readonly holder = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private readonly batchSize: number;
  private readonly pollMs: number;
  private readonly maxBackoffMs: number;
  private readonly leaseMs: number;
  private readonly orm: MikroORM;
  private readonly bus: EventBus;
  private readonly log: Logger;
  private readonly metrics: ServiceMetrics;

  constructor(orm: MikroORM, bus: EventBus, log: Logger, metrics: ServiceMetrics, options: RelayOptions = {}) {
    this.orm = orm;
    this.bus = bus;
    this.log = log;
    this.metrics = metrics;
    this.batchSize = options.batchSize ?? 100;
    this.pollMs = options.pollMs ?? 1_000;
    this.maxBackoffMs = options.maxBackoffMs ?? 10_000;
    this.leaseMs = options.leaseMs ?? 15_000;
    // Wake only after a commit that wrote outbox rows: every other transaction
    // would cost a pass (its statements) for nothing.
    orm.em.getEventManager().registerSubscriber({
      afterFlush: ({ em, uow }) => {
        if (!uow.getChangeSets().some((cs) => cs.meta.className === OutboxEvent.meta.className)) return;
        const trx = em.isInTransaction() ? em.getTransactionContext<object>() : undefined;
        if (trx) this.pendingCommits.add(trx);
        else this.wake(); // the flush committed its own transaction
      },
      afterTransactionCommit: ({ transaction }) => {
        if (!transaction) return;
        if (!this.pendingCommits.has(transaction)) {
          if ("savepointName" in transaction || this.savepointRows === 0) return;
          this.savepointRows = 0; // a top-level commit: the savepoints' rows are committed, or rolled back
          this.wake();
          return;
        }
        this.pendingCommits.delete(transaction);
        if ("savepointName" in transaction) this.savepointRows++;
        else this.wake();
      },
    });
  }

  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (this.running) {
      this.woken = false;
      let published = 0;
      try {
        published = await this.publishBatch();
        if (this.failures > 0) this.log.info({ after_failures: this.failures }, "outbox relay publishing again");
        this.failures = 0;
      } catch (error) {
        this.failures++;
        if (this.failures === 1 || this.failures % 20 === 0) {
          this.log.warn({ err: (error as Error).message, failures: this.failures }, "outbox relay cannot publish; retrying with backoff");
        }
      }
      if (published >= this.batchSize) continue; // more waiting: no pause
      if (this.woken && this.failures === 0) continue;
      const delay = this.failures > 0 ? Math.min(this.pollMs * 2 ** (this.failures - 1), this.maxBackoffMs) : this.pollMs;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = undefined;
    }
  }

  /** Takes or renews the relay lease; false while another replica holds it. */
  private async takeLease(): Promise<boolean> {
    const taken = await sqlOf(this.orm.em.fork()).run(
      `update outbox_relay_lease set holder = $1, expires_at = now() + ($2 * interval '1 millisecond')
        where id = 1 and (holder = $1 or holder is null or expires_at < now())`,
      [this.holder, this.leaseMs],
    );
    return taken > 0;
  }

  /** Publishes up to one batch; returns how many were published (0 when another replica holds the lease). */
  async publishBatch(): Promise<number> {
    if (!this.bus.connected) {
      await this.refreshBacklog();
      throw new Error("NATS is not connected");
    }
    const js = await this.bus.js();
    if (!(await this.takeLease())) return 0;
    const started = Date.now();
    const db = sqlOf(this.orm.em.fork());
    const rows = await db.all<OutboxRow>("select id, subject, payload, headers from outbox_events where published_at is null order by created_at, id limit $1", [
      this.batchSize,
    ]);
    const done: string[] = [];
    let failure: Error | undefined;
    for (const row of rows) {
      // Stop well inside the lease, so a slow NATS never lets a second replica publish beside us.
      if (Date.now() - started > this.leaseMs / 2) break;
      const h = natsHeaders();
      for (const [k, v] of Object.entries(row.headers ?? {})) h.set(k, v);
      h.set("Content-Type", "application/protobuf");
      try {
        await js.publish(row.subject, row.payload, { msgID: row.id, headers: h, timeout: 5_000 });
      } catch (error) {
        failure = error as Error;
        break;
      }
      this.metrics.eventsPublished.inc({ subject: row.subject });
      done.push(row.id);
    }
    // Mark what did go out even when a later publish failed, so it is not sent again.
    if (done.length > 0) await db.run("update outbox_events set published_at = now(), attempts = attempts + 1 where id = any($1::uuid[])", [done]);
    const failed = failure ? rows[done.length] : undefined;
    if (failure && failed) {
      await db.run("update outbox_events set attempts = attempts + 1, last_error = $1 where id = $2", [failure.message.slice(0, 1000), failed.id]);
    }
    await this.refreshBacklog();
    if (failure) throw failure;
    return done.length;
  }

  private async refreshBacklog(): Promise<void> {
    try {
      const row = await sqlOf(this.orm.em.fork()).one<{ n: number }>("select count(*)::int as n from outbox_events where published_at is null");
      this.metrics.outboxBacklog.set(row?.n ?? 0);
    } catch {
      // The database may be unreachable too; the gauge keeps its last value.
    }
  }

  /** Stops the loop after one last attempt to publish what is pending (bounded by timeoutMs), then hands the lease on. */
  async stop(timeoutMs = 3_000): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake();
    await this.loop;
    await Promise.race([this.publishBatch().catch(() => 0), new Promise((r) => setTimeout(r, timeoutMs))]);
    await sqlOf(this.orm.em.fork())
      .run("update outbox_relay_lease set holder = null, expires_at = now() where id = 1 and holder = $1", [this.holder])
      .catch(() => undefined);
  }
}
