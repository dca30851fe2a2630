/**
 * Durable JetStream consumers with exactly-once effects: each delivery runs the
 * handler and records the event in the inbox within one database transaction,
 * so a redelivered event is a no-op. Failures are retried with backoff; after
 * `maxDeliveries` the event is stored as a dead letter (and published on
 * dlq.<service>.<subject>) for an admin to list and replay. Nothing is dropped.
 */
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { AckPolicy, type ConsumerMessages, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { headers as natsHeaders, nanos } from "@nats-io/transport-node";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import { runWithTrace, traceFrom } from "../context.ts";
import type { Logger } from "../logger.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { EventBus } from "./bus.ts";
import { deadLetterStream, deadLetterSubject, streamOf, subjectOf } from "./contracts.ts";

export interface EventMeta {
  subject: string;
  /** 1 on the first delivery. */
  deliveryCount: number;
}

export interface EventHandler<Desc extends DescMessage = DescMessage> {
  /** Unique within the service; also the durable consumer's name. */
  name: string;
  schema: Desc;
  /** Runs inside the inbox transaction: write through `em` only. */
  handle(em: EntityManager, event: MessageShape<Desc>, meta: EventMeta): Promise<void>;
}

/** Declares a handler for one event type. */
export function onEvent<Desc extends DescMessage>(
  schema: Desc,
  name: string,
  handle: (em: EntityManager, event: MessageShape<Desc>, meta: EventMeta) => Promise<void>,
): EventHandler<Desc> {
  if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`consumer name "${name}" must be lower-case kebab`);
  return { name, schema, handle };
}

export interface ConsumerOptions {
  service: string;
  orm: MikroORM;
  bus: EventBus;
  log: Logger;
  metrics: ServiceMetrics;
  inboxTable: string;
  maxDeliveries: number;
  ackWaitMs: number;
}

type Outcome = "processed" | "duplicate";

const backoffMs = (delivery: number) => Math.min(500 * 2 ** (delivery - 1), 30_000);

export class EventConsumers {
  private readonly handlers = new Map<string, EventHandler>();
  private readonly active = new Set<ConsumerMessages>();
  private readonly loops: Promise<void>[] = [];
  private running = false;
  private readonly o: ConsumerOptions;

  constructor(options: ConsumerOptions, handlers: EventHandler[]) {
    this.o = options;
    for (const h of handlers) {
      if (this.handlers.has(h.name)) throw new Error(`two event handlers named "${h.name}"`);
      this.handlers.set(h.name, h);
    }
  }

  durableName(handler: EventHandler): string {
    return `${this.o.service}-${handler.name}`;
  }

  start(): void {
    this.running = true;
    for (const h of this.handlers.values()) this.loops.push(this.consumeForever(h));
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const messages of this.active) await messages.close().catch(() => undefined);
    await Promise.allSettled(this.loops);
  }

  /** (Re)creates the durable consumer and processes deliveries until stopped; survives NATS outages. */
  private async consumeForever(handler: EventHandler): Promise<void> {
    const { log } = this.o;
    let delay = 500;
    while (this.running) {
      try {
        const stream = streamOf(handler.schema.file);
        await this.o.bus.ensureStream(stream);
        const durable = this.durableName(handler);
        const jsm = await this.o.bus.jsm();
        await jsm.consumers
          .info(stream.name, durable)
          .catch(() =>
            jsm.consumers.add(stream.name, {
              durable_name: durable,
              filter_subject: subjectOf(handler.schema),
              ack_policy: AckPolicy.Explicit,
              deliver_policy: DeliverPolicy.All,
              ack_wait: nanos(this.o.ackWaitMs),
              // Redelivery is bounded by us (dead letters), never silently by the server.
              max_deliver: -1,
              max_ack_pending: 256,
            }),
          );
        const js = await this.o.bus.js();
        const consumer = await js.consumers.get(stream.name, durable);
        const messages = await consumer.consume({ max_messages: 64 });
        this.active.add(messages);
        delay = 500;
        try {
          for await (const msg of messages) {
            await this.deliver(handler, msg);
            if (!this.running) break;
          }
        } finally {
          this.active.delete(messages);
        }
      } catch (error) {
        if (!this.running) break;
        log.warn({ consumer: handler.name, err: (error as Error).message, retry_ms: delay }, "event consumer interrupted; retrying");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }

  private async deliver(handler: EventHandler, msg: JsMsg): Promise<void> {
    const { log, metrics } = this.o;
    const deliveryCount = msg.info.deliveryCount;
    const headers = Object.fromEntries([...(msg.headers?.keys() ?? [])].map((k) => [k, msg.headers!.get(k)]));
    const trace = traceFrom({ traceparent: headers.traceparent, requestId: headers["x-request-id"] });
    await runWithTrace(trace, async () => {
      if (deliveryCount > 1) metrics.redeliveries.inc({ consumer: handler.name });
      try {
        const outcome = await this.process(handler, msg.data, { subject: msg.subject, deliveryCount });
        metrics.eventsConsumed.inc({ consumer: handler.name, outcome });
        msg.ack();
      } catch (error) {
        metrics.eventsConsumed.inc({ consumer: handler.name, outcome: "failed" });
        const message = error instanceof Error ? error.message : String(error);
        await this.recordFailure(handler, msg.data, message).catch(() => undefined);
        if (deliveryCount >= this.o.maxDeliveries) {
          try {
            await this.deadLetter(handler, msg.subject, msg.data, headers, deliveryCount, message);
            log.error({ consumer: handler.name, subject: msg.subject, deliveries: deliveryCount, err: message }, "event dead-lettered");
            msg.term();
          } catch (dlqError) {
            // Could not even store the dead letter (database down): keep the event on the bus.
            log.error({ consumer: handler.name, err: (dlqError as Error).message }, "dead-lettering failed; event will be redelivered");
            msg.nak(backoffMs(deliveryCount));
          }
        } else {
          log.warn({ consumer: handler.name, subject: msg.subject, delivery: deliveryCount, err: message }, "event handler failed; will retry");
          msg.nak(backoffMs(deliveryCount));
        }
      }
    });
  }

  /** Runs a handler for one event payload in the inbox transaction. Throws when the handler fails. */
  async process(handler: EventHandler, payload: Uint8Array, meta: EventMeta): Promise<Outcome> {
    const event = fromBinary(handler.schema, payload);
    const eventId = (event as { eventId?: string }).eventId;
    if (!eventId) throw new Error(`${handler.schema.typeName} without event_id cannot be processed idempotently`);
    const { inboxTable } = this.o;
    return this.o.orm.em.fork().transactional(async (em) => {
      const claimed = await em.getConnection().execute<unknown[]>(
        `insert into ${inboxTable} (event_id, event_type, source, payload, processed, processed_at)
         values (?, ?, ?, ?, true, now())
         on conflict (event_id, source) do update set processed = true, processed_at = now(), error = null
           where ${inboxTable}.processed = false
         returning id`,
        [eventId, handler.schema.typeName, handler.name, Buffer.from(payload)],
        "all",
        em.getTransactionContext(),
      );
      if (claimed.length === 0) return "duplicate";
      await handler.handle(em, event, meta);
      return "processed";
    });
  }

  /** Keeps the last error on the inbox row (outside the rolled-back handler transaction). */
  private async recordFailure(handler: EventHandler, payload: Uint8Array, error: string): Promise<void> {
    const event = fromBinary(handler.schema, payload) as { eventId?: string };
    await this.o.orm.em
      .fork()
      .getConnection()
      .execute(
        `insert into ${this.o.inboxTable} (event_id, event_type, source, payload, processed, error)
         values (?, ?, ?, ?, false, ?)
         on conflict (event_id, source) do update set error = excluded.error where ${this.o.inboxTable}.processed = false`,
        [event.eventId, handler.schema.typeName, handler.name, Buffer.from(payload), error.slice(0, 2000)],
      );
  }

  private async deadLetter(
    handler: EventHandler,
    subject: string,
    payload: Uint8Array,
    headers: Record<string, string>,
    deliveries: number,
    error: string,
  ): Promise<void> {
    const event = fromBinary(handler.schema, payload) as { eventId?: string };
    await this.o.orm.em
      .fork()
      .getConnection()
      .execute(
        `insert into dead_letters (id, event_id, subject, consumer, delivery_count, last_error, payload, headers)
         values (?, ?, ?, ?, ?, ?, ?, ?)
         on conflict (event_id, consumer) do update set delivery_count = excluded.delivery_count,
           last_error = excluded.last_error, dead_lettered_at = now(), replayed_at = null`,
        [uuidv7(), event.eventId, subject, handler.name, deliveries, error.slice(0, 2000), Buffer.from(payload), JSON.stringify(headers)],
      );
    this.o.metrics.deadLetters.inc({ consumer: handler.name });
    // Best effort: operators watching the bus see it; the database row is the record.
    try {
      await this.o.bus.ensureStream(deadLetterStream);
      const h = natsHeaders();
      h.set("Dead-Letter-Consumer", handler.name);
      h.set("Dead-Letter-Error", error.slice(0, 500));
      await (await this.o.bus.js()).publish(deadLetterSubject(this.o.service, subject), payload, {
        msgID: `${event.eventId}:${handler.name}`,
        headers: h,
        timeout: 2_000,
      });
    } catch (publishError) {
      this.o.log.warn({ err: (publishError as Error).message }, "dead letter stored but not announced on NATS");
    }
  }

  /** Replays a stored dead letter through its handler; marks it replayed on success. */
  async replay(deadLetterId: string): Promise<{ ok: true } | { ok: false; error: string }> {
    const em = this.o.orm.em.fork();
    const [row] = await em
      .getConnection()
      .execute<{ consumer: string; subject: string; payload: Buffer }[]>("select consumer, subject, payload from dead_letters where id = ?", [
        deadLetterId,
      ]);
    if (!row) throw new Error("not found");
    const handler = this.handlers.get(row.consumer);
    if (!handler) return { ok: false, error: `this service has no consumer "${row.consumer}" any more` };
    try {
      await this.process(handler, row.payload, { subject: row.subject, deliveryCount: 0 });
      await em.getConnection().execute("update dead_letters set replayed_at = now() where id = ?", [deadLetterId]);
      return { ok: true };
    } catch (error) {
      const message = (error as Error).message;
      await em.getConnection().execute("update dead_letters set last_error = ? where id = ?", [message.slice(0, 2000), deadLetterId]);
      return { ok: false, error: message };
    }
  }
}
