/**
 * Prometheus metrics of one service, on its own registry (several services may
 * share a process in tests). Served at GET /metrics on the service's port.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly rpcTotal: Counter<"method" | "code">;
  readonly rpcDuration: Histogram<"method" | "code">;
  readonly outboxBacklog: Gauge;
  readonly eventsPublished: Counter<"subject">;
  readonly eventsConsumed: Counter<"consumer" | "outcome">;
  readonly redeliveries: Counter<"consumer">;
  readonly deadLetters: Counter<"consumer">;

  constructor(service: string, withDefaults = true) {
    this.registry.setDefaultLabels({ service });
    if (withDefaults) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.rpcTotal = new Counter({ name: "rpc_requests_total", help: "RPCs handled, by method and result code", labelNames: ["method", "code"], registers });
    this.rpcDuration = new Histogram({
      name: "rpc_duration_seconds",
      help: "RPC handling time, by method and result code",
      labelNames: ["method", "code"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.outboxBacklog = new Gauge({ name: "outbox_backlog", help: "Events written to the outbox and not yet published", registers });
    this.eventsPublished = new Counter({ name: "events_published_total", help: "Events published to JetStream", labelNames: ["subject"], registers });
    this.eventsConsumed = new Counter({
      name: "events_consumed_total",
      help: "Event deliveries handled, by consumer and outcome (processed, duplicate, failed)",
      labelNames: ["consumer", "outcome"],
      registers,
    });
    this.redeliveries = new Counter({ name: "event_redeliveries_total", help: "Deliveries of an event seen before", labelNames: ["consumer"], registers });
    this.deadLetters = new Counter({ name: "dead_letters_total", help: "Events moved to the dead-letter store", labelNames: ["consumer"], registers });
  }
}
