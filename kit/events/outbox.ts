/**
 * Transactional outbox. `publishEvent` adds the event to the EntityManager's
 * unit of work, so it is committed in the same transaction as the change it
 * announces; the relay then publishes committed rows to JetStream with
 * Nats-Msg-Id = event id, retrying with backoff while NATS is down. Nothing is
 * lost and a re-publish is deduplicated by JetStream.
 */
import { create, type DescMessage, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { propagationHeaders } from "../context.ts";
import type { Logger } from "../logger.ts";
import type { ServiceMetrics } from "../metrics.ts";
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
}

/** Publishes committed outbox rows. One per service process; replicas share the work via SKIP LOCKED. */
export class OutboxRelay {
  private wakeUp: (() => void) | undefined;
  private running = false;
  private loop: Promise<void> | undefined;
  private failures = 0;
  private readonly batchSize: number;
  private readonly pollMs: number;
  private readonly maxBackoffMs: number;
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
    // Publish right after any commit that may have written outbox rows.
    orm.em.getEventManager().registerSubscriber({
      afterFlush: () => this.wake(),
      afterTransactionCommit: () => this.wake(),
    });
  }

  wake(): void {
    this.wakeUp?.();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (this.running) {
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

  /** Publishes up to one batch; returns how many were published. */
  async publishBatch(): Promise<number> {
    if (!this.bus.connected) {
      await this.refreshBacklog();
      throw new Error("NATS is not connected");
    }
    const js = await this.bus.js();
    const em = this.orm.em.fork();
    const result = await em.transactional(async (tx) => {
      const rows = await tx.getConnection().execute<{ id: string; subject: string; payload: Buffer; headers: Record<string, string> }[]>(
        `select id, subject, payload, headers from outbox_events
          where published_at is null order by created_at, id limit ? for update skip locked`,
        [this.batchSize],
        "all",
        tx.getTransactionContext(),
      );
      const done: string[] = [];
      let failure: Error | undefined;
      for (const row of rows) {
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
      // Mark what did go out even when a later publish failed (committed below), so it
      // is not sent again; JetStream would drop it within its duplicate window anyway.
      if (done.length > 0) {
        await tx
          .getConnection()
          .execute("update outbox_events set published_at = now(), attempts = attempts + 1 where id in (?)", [done], "run", tx.getTransactionContext());
      }
      if (failure && rows[done.length]) {
        await tx
          .getConnection()
          .execute(
            "update outbox_events set attempts = attempts + 1, last_error = ? where id = ?",
            [failure.message.slice(0, 1000), rows[done.length]!.id],
            "run",
            tx.getTransactionContext(),
          );
      }
      return { published: done.length, failure };
    });
    const { published: count, failure } = result;
    if (failure) {
      await this.refreshBacklog();
      throw failure;
    }
    await this.refreshBacklog();
    return count;
  }

  private async refreshBacklog(): Promise<void> {
    try {
      const [row] = await this.orm.em
        .fork()
        .getConnection()
        .execute<{ n: number }[]>("select count(*)::int as n from outbox_events where published_at is null");
      this.metrics.outboxBacklog.set(row?.n ?? 0);
    } catch {
      // The database may be unreachable too; the gauge keeps its last value.
    }
  }

  /** Stops the loop after one last attempt to publish what is pending (bounded by timeoutMs). */
  async stop(timeoutMs = 3_000): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake();
    await this.loop;
    await Promise.race([this.publishBatch().catch(() => 0), new Promise((r) => setTimeout(r, timeoutMs))]);
  }
}
