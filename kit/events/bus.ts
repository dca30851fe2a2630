/**
 * The NATS connection of a service and its JetStream streams. The connection is
 * made in the background and retried forever: a service starts and serves RPCs
 * while NATS is down (events wait in the outbox), and reports NOT_SERVING on
 * its health endpoint until NATS answers.
 */
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection, nanos } from "@nats-io/transport-node";
import type { Logger } from "../logger.ts";
import type { StreamSpec } from "./contracts.ts";

export class EventBus {
  private nc: NatsConnection | undefined;
  private readonly ready: Promise<NatsConnection>;
  private closed = false;
  private up = false;
  private readonly ensured = new Set<string>();
  private readonly log: Logger;

  constructor(url: string, name: string, log: Logger) {
    this.log = log;
    this.ready = this.connectForever(url, name);
    // Closed before it connected (a refused start): waiters see the error, the process does not.
    this.ready.catch(() => undefined);
  }

  private async connectForever(url: string, name: string): Promise<NatsConnection> {
    let delay = 250;
    for (;;) {
      if (this.closed) throw new Error("event bus closed");
      try {
        const nc = await connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 500, pingInterval: 5_000 });
        if (this.closed) {
          await nc.close();
          throw new Error("event bus closed");
        }
        this.nc = nc;
        this.up = true;
        this.log.info({ nats: url }, "connected to NATS");
        void (async () => {
          for await (const s of nc.status()) {
            if (s.type === "disconnect") this.up = false;
            if (s.type === "disconnect") this.log.warn({ nats: url }, "NATS disconnected; events wait in the outbox");
            if (s.type === "reconnect") {
              this.up = true;
              this.ensured.clear();
              this.log.info({ nats: url }, "NATS reconnected");
            }
          }
        })();
        return nc;
      } catch (error) {
        if (this.closed) throw new Error("event bus closed");
        this.log.warn({ nats: url, err: (error as Error).message, retry_ms: delay }, "NATS unreachable; retrying");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  /** True while connected to a NATS server. */
  get connected(): boolean {
    return this.up && !!this.nc && !this.nc.isClosed();
  }

  /** Resolves once connected (waits while NATS is down). */
  connection(): Promise<NatsConnection> {
    return this.ready;
  }

  async js(): Promise<JetStreamClient> {
    return jetstream(await this.ready, { timeout: 5_000 });
  }

  async jsm(): Promise<JetStreamManager> {
    return jetstreamManager(await this.ready, { timeout: 5_000 });
  }

  /**
   * Creates the stream, or widens its subjects to include ours. Both producers and
   * consumers call it, so start order between services does not matter.
   */
  async ensureStream(spec: StreamSpec): Promise<void> {
    if (this.ensured.has(spec.name)) return;
    const jsm = await this.jsm();
    const config = {
      name: spec.name,
      subjects: spec.subjects,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      // Events are kept a week for late or replaying consumers; sensitive token
      // events live no longer than that either.
      max_age: nanos(7 * 24 * 3600 * 1000),
      // A re-publish of the same event id within this window is dropped by JetStream.
      duplicate_window: nanos(10 * 60 * 1000),
      num_replicas: 1,
    };
    try {
      const info = await jsm.streams.info(spec.name);
      const missing = spec.subjects.filter((s) => !info.config.subjects?.includes(s));
      if (missing.length > 0) {
        await jsm.streams.update(spec.name, { ...info.config, subjects: [...(info.config.subjects ?? []), ...missing] });
      }
    } catch (error) {
      if (!/stream not found/i.test((error as Error).message)) throw error;
      try {
        await jsm.streams.add(config);
      } catch (addError) {
        // Another service created it concurrently.
        if (!/already in use/i.test((addError as Error).message)) throw addError;
      }
    }
    this.ensured.add(spec.name);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => this.nc?.close());
  }
}
