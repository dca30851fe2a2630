/**
 * Durable JetStream consumers with exactly-once effects: each delivery runs the
 * handler and records the event in the inbox within one database transaction,
 * so a redelivered event is a no-op.
 *
 * One durable consumer per stream and service (`<service>_<STREAM>`), which
 * dispatches by subject to the service's handlers, one message at a time: the
 * events of one stream (so of one aggregate) are handled in the order they were
 * published. A failing handler is retried in place with backoff (the message's
 * ack timer extended meanwhile), so a later event never overtakes it; after
 * `maxDeliveries` attempts it becomes a dead letter (stored, and published on
 * dlq.<service>.<subject>) for an admin to list and replay, and the consumer
 * moves on. A message that cannot be decoded or has no event_id is dead-lettered
 * at once under its Nats-Msg-Id or stream sequence. Nothing is dropped.
 */
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { AckPolicy, type ConsumerConfig, type ConsumerMessages, DeliverPolicy, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { headers as natsHeaders, nanos } from "@nats-io/transport-node";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import { runWithTrace, traceFrom } from "../context.ts";
import type { Logger } from "../logger.ts";
import type { ServiceMetrics } from "../metrics.ts";
import { sqlOf } from "../sql.ts";
import type { EventBus } from "./bus.ts";
import { deadLetterStream, deadLetterSubject, type StreamSpec, streamOf, subjectOf } from "./contracts.ts";

export interface EventMeta {
  subject: string;
  /** 1 on the first attempt. */
  deliveryCount: number;
}

export interface EventHandler<Desc extends DescMessage = DescMessage> {
  /** Unique within the service; the inbox's `source` and the dead letter's consumer. */
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

/** A message no retry can fix (undecodable, or without event_id): dead-lettered on the first attempt. */
export class PoisonEvent extends Error {
  override name = "PoisonEvent";
}

/** Unacknowledged messages per consumer; they are handled one at a time, this is read-ahead. */
export const maxAckPending = 256;

const backoffMs = (attempt: number) => Math.min(500 * 2 ** (attempt - 1), 30_000);

interface ConsumedStream {
  spec: StreamSpec;
  durable: string;
  handlers: EventHandler[];
}

export class EventConsumers {
  private readonly handlers = new Map<string, EventHandler>();
  private readonly streams = new Map<string, ConsumedStream>();
  private readonly active = new Set<ConsumerMessages>();
  private readonly loops: Promise<void>[] = [];
  private running = false;
  private wakeSleepers = new Set<() => void>();
  /** Rejects when stop() is called: a loop waiting on NATS (connecting, reconciling) gives up instead of holding stop forever. */
  private stopped = stopSignal();
  private readonly o: ConsumerOptions;

  constructor(options: ConsumerOptions, handlers: EventHandler[]) {
    this.o = options;
    for (const h of handlers) {
      if (this.handlers.has(h.name)) throw new Error(`two event handlers named "${h.name}"`);
      this.handlers.set(h.name, h);
      const spec = streamOf(h.schema.file);
      const stream = this.streams.get(spec.name) ?? { spec, durable: this.durableName(spec.name), handlers: [] };
      stream.handlers.push(h);
      this.streams.set(spec.name, stream);
    }
  }

  /** The durable consumer of `stream` for this service. "_" never occurs in handler names, so it never meets a v1 per-handler durable. */
  durableName(stream: string): string {
    return `${this.o.service}_${stream}`;
  }

  start(): void {
    this.running = true;
    this.stopped = stopSignal();
    for (const stream of this.streams.values()) this.loops.push(this.consumeForever(stream));
  }

  async stop(): Promise<void> {
    this.running = false;
    this.stopped.stop();
    for (const wake of this.wakeSleepers) wake();
    for (const messages of this.active) await messages.close().catch(() => undefined);
    await Promise.allSettled(this.loops);
  }

  /** Sleeps `ms`, or less when the consumers stop. */
  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeSleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeSleepers.add(done);
    });
  }

  /**
   * The consumer configuration we want. The filter is the handled subjects:
   * one subject as filter_subject; several as filter_subjects where the server
   * has it (NATS 2.10+); otherwise no filter, and unhandled subjects are acked
   * and skipped by `deliver`.
   */
  private desiredConfig(stream: ConsumedStream, serverVersion: string): Partial<ConsumerConfig> {
    const subjects = [...new Set(stream.handlers.map((h) => subjectOf(h.schema)))].sort();
    const [major = 0, minor = 0] = serverVersion.split(".").map(Number);
    const multiFilter = major > 2 || (major === 2 && minor >= 10);
    const filter =
      subjects.length === 1 ? { filter_subject: subjects[0] } : multiFilter && subjects.length < stream.spec.subjects.length ? { filter_subjects: subjects } : {};
    return {
      durable_name: stream.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.o.ackWaitMs),
      // Redelivery is bounded by us (dead letters), never silently by the server.
      max_deliver: -1,
      max_ack_pending: maxAckPending,
      ...filter,
    };
  }

  /** Creates the durable, or updates it when its settings differ from ours (e.g. EVENT_ACK_WAIT_MS changed). */
  private async reconcile(jsm: JetStreamManager, stream: ConsumedStream, serverVersion: string): Promise<void> {
    const want = this.desiredConfig(stream, serverVersion);
    const info = await jsm.consumers.info(stream.spec.name, stream.durable).catch((error: Error) => {
      if (/consumer not found/i.test(error.message)) return undefined;
      throw error;
    });
    if (!info) {
      await jsm.consumers.add(stream.spec.name, want);
      return;
    }
    const have = info.config;
    const filters = (c: Partial<ConsumerConfig>) => [c.filter_subject ?? "", ...(c.filter_subjects ?? [])].filter(Boolean).sort().join(",");
    const differs = have.ack_wait !== want.ack_wait || have.max_ack_pending !== want.max_ack_pending || have.max_deliver !== want.max_deliver || filters(have) !== filters(want);
    if (!differs) return;
    const next: Partial<ConsumerConfig> = { ...have, ...want };
    if (!want.filter_subject) delete next.filter_subject;
    if (!want.filter_subjects) delete next.filter_subjects;
    this.o.log.info(
      {
        consumer: stream.durable,
        from: { ack_wait_ms: Number(have.ack_wait) / 1e6, max_ack_pending: have.max_ack_pending, filter: filters(have) },
        to: { ack_wait_ms: this.o.ackWaitMs, max_ack_pending: want.max_ack_pending, filter: filters(want) },
      },
      "updating durable consumer settings",
    );
    // Adding an existing durable with a new configuration updates it (NATS 2.9 has no update action; later servers accept it too).
    await jsm.consumers.add(stream.spec.name, next);
  }

  /**
   * Kit v1 had one durable per handler (`<service>-<handler>`). They are deleted
   * at start: the stream's new durable delivers from the start of the stream and
   * the inbox (source = handler name, unchanged) skips what they processed.
   */
  private async removeV1Durables(jsm: JetStreamManager, stream: ConsumedStream): Promise<void> {
    for (const h of stream.handlers) {
      const old = `${this.o.service}-${h.name}`;
      const deleted = await jsm.consumers.delete(stream.spec.name, old).catch(() => false);
      if (deleted) this.o.log.info({ consumer: old, replaced_by: stream.durable }, "deleted per-handler durable consumer of kit v1");
    }
  }

  /** (Re)creates the durable consumer and processes deliveries until stopped; survives NATS outages. */
  private async consumeForever(stream: ConsumedStream): Promise<void> {
    const { log } = this.o;
    let delay = 500;
    let migrated = false;
    const untilStopped = <T>(step: Promise<T>) => Promise.race([step, this.stopped.promise]);
    while (this.running) {
      try {
        await untilStopped(this.o.bus.ensureStream(stream.spec));
        const jsm = await untilStopped(this.o.bus.jsm());
        const nc = await untilStopped(this.o.bus.connection());
        await untilStopped(this.reconcile(jsm, stream, nc.info?.version ?? "0.0.0"));
        if (!migrated) {
          await untilStopped(this.removeV1Durables(jsm, stream));
          migrated = true;
        }
        const js = await untilStopped(this.o.bus.js());
        const consumer = await untilStopped(js.consumers.get(stream.spec.name, stream.durable));
        const messages = await untilStopped(consumer.consume({ max_messages: 64 }));
        if (!this.running) {
          // stop() ran while we were subscribing: it could not close what it did not see.
          await messages.close().catch(() => undefined);
          break;
        }
        this.active.add(messages);
        delay = 500;
        try {
          for await (const msg of messages) {
            await this.deliver(stream, msg);
            if (!this.running) break;
          }
        } finally {
          this.active.delete(messages);
        }
      } catch (error) {
        if (!this.running) break;
        log.warn({ consumer: stream.durable, err: (error as Error).message, retry_ms: delay }, "event consumer interrupted; retrying");
        await this.sleep(delay);
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }

  /** Hands one message to every handler of its subject, in turn; acks it when all are done (processed or dead-lettered). */
  private async deliver(stream: ConsumedStream, msg: JsMsg): Promise<void> {
    const handlers = stream.handlers.filter((h) => subjectOf(h.schema) === msg.subject);
    if (handlers.length === 0) {
      msg.ack(); // another service's subject in a stream we consume unfiltered
      return;
    }
    const headers = Object.fromEntries([...(msg.headers?.keys() ?? [])].map((k) => [k, msg.headers!.get(k)]));
    const trace = traceFrom({ traceparent: headers.traceparent, requestId: headers["x-request-id"] });
    await runWithTrace(trace, async () => {
      try {
        for (const handler of handlers) {
          const settled = await this.deliverTo(handler, stream, msg, headers);
          if (!settled) {
            msg.nak(); // stopping: another replica (or our restart) picks it up
            return;
          }
        }
        msg.ack();
      } catch (error) {
        // Could not even store the dead letter (database down): keep the event on the bus.
        this.o.log.error({ consumer: stream.durable, subject: msg.subject, err: (error as Error).message }, "dead-lettering failed; event will be redelivered");
        msg.nak(backoffMs(msg.info.deliveryCount));
      }
    });
  }

  /** Runs one handler until it succeeds or the event is dead-lettered (true), or the consumers stop (false). */
  private async deliverTo(handler: EventHandler, stream: ConsumedStream, msg: JsMsg, headers: Record<string, string>): Promise<boolean> {
    const { log, metrics, maxDeliveries } = this.o;
    for (let attempt = msg.info.deliveryCount; ; attempt++) {
      if (attempt > 1) metrics.redeliveries.inc({ consumer: handler.name });
      try {
        const outcome = await this.process(handler, msg.data, { subject: msg.subject, deliveryCount: attempt });
        metrics.eventsConsumed.inc({ consumer: handler.name, outcome });
        return true;
      } catch (error) {
        metrics.eventsConsumed.inc({ consumer: handler.name, outcome: "failed" });
        const message = error instanceof Error ? error.message : String(error);
        const poison = error instanceof PoisonEvent;
        if (!poison) await this.recordFailure(handler, msg.data, message).catch(() => undefined);
        if (poison || attempt >= maxDeliveries) {
          const key = headers["Nats-Msg-Id"] || `${stream.spec.name}:${msg.seq}`;
          await this.deadLetter(handler, { subject: msg.subject, payload: msg.data, headers, deliveries: attempt, error: message, key, sequence: msg.seq });
          log.error({ consumer: handler.name, subject: msg.subject, deliveries: attempt, err: message }, "event dead-lettered");
          return true;
        }
        log.warn({ consumer: handler.name, subject: msg.subject, delivery: attempt, err: message }, "event handler failed; will retry");
        msg.working(); // holds the ack timer while we wait, so the server does not redeliver meanwhile
        await this.sleep(backoffMs(attempt));
        if (!this.running) return false;
        msg.working();
      }
    }
  }

  private decode(handler: EventHandler, payload: Uint8Array): { event: MessageShape<DescMessage>; eventId: string } {
    let event: MessageShape<DescMessage>;
    try {
      event = fromBinary(handler.schema, payload);
    } catch (error) {
      throw new PoisonEvent(`payload is not a ${handler.schema.typeName}: ${(error as Error).message}`);
    }
    const eventId = (event as { eventId?: string }).eventId;
    if (!eventId || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(eventId)) {
      throw new PoisonEvent(`${handler.schema.typeName} without a UUID event_id cannot be processed idempotently`);
    }
    return { event, eventId };
  }

  /** Runs a handler for one event payload in the inbox transaction. Throws when the handler fails. */
  async process(handler: EventHandler, payload: Uint8Array, meta: EventMeta): Promise<Outcome> {
    const { event, eventId } = this.decode(handler, payload);
    const { inboxTable } = this.o;
    return this.o.orm.em.fork().transactional(async (em) => {
      const claimed = await sqlOf(em).all(
        `insert into ${inboxTable} (event_id, event_type, source, payload, processed, processed_at)
         values ($1, $2, $3, $4, true, now())
         on conflict (event_id, source) do update set processed = true, processed_at = now(), error = null
           where ${inboxTable}.processed = false
         returning id`,
        [eventId, handler.schema.typeName, handler.name, Buffer.from(payload)],
      );
      if (claimed.length === 0) return "duplicate";
      await handler.handle(em, event, meta);
      return "processed";
    });
  }

  /** Keeps the last error on the inbox row (outside the rolled-back handler transaction). Only for decodable events. */
  private async recordFailure(handler: EventHandler, payload: Uint8Array, error: string): Promise<void> {
    const { eventId } = this.decode(handler, payload);
    await sqlOf(this.o.orm.em.fork()).run(
        `insert into ${this.o.inboxTable} (event_id, event_type, source, payload, processed, error)
         values ($1, $2, $3, $4, false, $5)
         on conflict (event_id, source) do update set error = excluded.error where ${this.o.inboxTable}.processed = false`,
        [eventId, handler.schema.typeName, handler.name, Buffer.from(payload), error.slice(0, 2000)],
      );
  }

  /** Stores the dead letter (identity: event id, else Nats-Msg-Id, else stream:sequence) and announces it on NATS. */
  private async deadLetter(
    handler: EventHandler,
    d: { subject: string; payload: Uint8Array; headers: Record<string, string>; deliveries: number; error: string; key: string; sequence: number },
  ): Promise<void> {
    let eventId: string | null = null;
    try {
      eventId = this.decode(handler, d.payload).eventId;
    } catch {
      // poison: no event id, the message key identifies it
    }
    const key = eventId ?? d.key;
    await sqlOf(this.o.orm.em.fork()).run(
        `insert into dead_letters (id, event_id, message_key, stream_sequence, subject, consumer, delivery_count, last_error, payload, headers)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         on conflict (message_key, consumer) do update set delivery_count = excluded.delivery_count,
           last_error = excluded.last_error, dead_lettered_at = now(), replayed_at = null`,
        [uuidv7(), eventId, key, d.sequence, d.subject, handler.name, d.deliveries, d.error.slice(0, 2000), Buffer.from(d.payload), JSON.stringify(d.headers)],
      );
    this.o.metrics.deadLetters.inc({ consumer: handler.name });
    // Best effort: operators watching the bus see it; the database row is the record.
    try {
      await this.o.bus.ensureStream(deadLetterStream);
      const h = natsHeaders();
      h.set("Dead-Letter-Consumer", handler.name);
      h.set("Dead-Letter-Error", d.error.slice(0, 500).replace(/[\r\n]+/g, " "));
      await (await this.o.bus.js()).publish(deadLetterSubject(this.o.service, d.subject), d.payload, {
        msgID: `${key}:${handler.name}`,
        headers: h,
        timeout: 2_000,
      });
    } catch (publishError) {
      this.o.log.warn({ err: (publishError as Error).message }, "dead letter stored but not announced on NATS");
    }
  }

  /** Replays a stored dead letter through its handler; marks it replayed on success. */
  async replay(deadLetterId: string): Promise<{ ok: true } | { ok: false; error: string }> {
    const db = sqlOf(this.o.orm.em.fork());
    const row = await db.one<{ consumer: string; subject: string; payload: Buffer }>("select consumer, subject, payload from dead_letters where id = $1", [deadLetterId]);
    if (!row) throw new Error("not found");
    const handler = this.handlers.get(row.consumer);
    if (!handler) return { ok: false, error: `this service has no consumer "${row.consumer}" any more` };
    try {
      await this.process(handler, row.payload, { subject: row.subject, deliveryCount: 0 });
      await db.run("update dead_letters set replayed_at = now() where id = $1", [deadLetterId]);
      return { ok: true };
    } catch (error) {
      const message = (error as Error).message;
      await db.run("update dead_letters set last_error = $1 where id = $2", [message.slice(0, 2000), deadLetterId]);
      return { ok: false, error: message };
    }
  }
}

/** A promise that rejects once `stop` is called (never unhandled). */
function stopSignal(): { promise: Promise<never>; stop(): void } {
  let stop!: () => void;
  const promise = new Promise<never>((_, reject) => (stop = () => reject(new Error("consumers stopped"))));
  promise.catch(() => undefined);
  return { promise, stop };
}
