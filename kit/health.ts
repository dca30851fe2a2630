/**
 * grpc.health.v1.Health: SERVING while the database and NATS answer, NOT_SERVING
 * otherwise and during shutdown. Check answers for "" (the server) and for each
 * served service name; Watch streams every change until the client leaves.
 */
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";

export type HealthProbe = () => Promise<boolean>;

export class HealthState {
  private status: Status = Status.NOT_SERVING;
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private shuttingDown = false;
  readonly services = new Set<string>([""]);
  private readonly probe: HealthProbe;

  constructor(probe: HealthProbe) {
    this.probe = probe;
  }

  get current(): Status {
    return this.status;
  }

  private set(next: Status): void {
    if (next === this.status) return;
    this.status = next;
    for (const l of this.listeners) l();
  }

  async refresh(): Promise<Status> {
    if (this.shuttingDown) return this.status;
    const ok = await this.probe().catch(() => false);
    this.set(ok ? Status.SERVING : Status.NOT_SERVING);
    return this.status;
  }

  start(intervalMs = 1_000): void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), intervalMs);
    this.timer.unref();
  }

  /** Reports NOT_SERVING from now on, so load balancers drain the server before it stops. */
  shutdown(): void {
    this.shuttingDown = true;
    clearInterval(this.timer);
    this.set(Status.NOT_SERVING);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export function healthRoutes(router: ConnectRouter, state: HealthState): void {
  router.service(Health, {
    check(req) {
      if (!state.services.has(req.service)) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return { status: state.current };
    },
    async *watch(req, ctx) {
      if (!state.services.has(req.service)) {
        yield { status: Status.SERVICE_UNKNOWN };
        return;
      }
      let changed: () => void = () => undefined;
      const off = state.onChange(() => changed());
      try {
        let last: Status | undefined;
        while (!ctx.signal.aborted) {
          if (state.current !== last) {
            last = state.current;
            yield { status: last };
          }
          await new Promise<void>((resolve) => {
            changed = resolve;
            ctx.signal.addEventListener("abort", () => resolve(), { once: true });
          });
        }
      } finally {
        off();
      }
    },
  });
}
