/**
 * The one way to run periodic background work in a service: `intervalJob`
 * runs a pass at start and then every `everyMs` (with jitter, so replicas
 * started together do not hit the database in step), never two passes at
 * once, logs a failed pass and goes on, and `stop()` waits for a running pass.
 * Work shared by replicas must be safe to run concurrently in several
 * processes (SKIP LOCKED, idempotent deletes); the helper only serialises
 * passes within one process.
 */
import type { Logger } from "./logger.ts";

/** A background job started with the service and stopped before its database closes. */
export interface Job {
  name: string;
  stop(): Promise<void>;
}

export interface IntervalJobOptions {
  /** kebab-case, used in logs. */
  name: string;
  /** Time between the end of one pass and the start of the next, in ms. */
  everyMs: number;
  /** Fraction of `everyMs` added or removed at random per wait (default 0.1). */
  jitter?: number;
  /** Run the first pass right away (default) or only after the first interval. */
  runAtStart?: boolean;
  log: Logger;
  /** One pass. `signal` is aborted when the job stops: long passes should check it between units of work. */
  run(signal: AbortSignal): Promise<void>;
  /** Called after each pass, for metrics. */
  onPass?(outcome: "ok" | "failed"): void;
}

export interface IntervalJob extends Job {
  /** Resolves after the next complete pass (tests and operators: "run it now"). */
  runNow(): Promise<void>;
}

export function intervalJob(options: IntervalJobOptions): IntervalJob {
  const { name, everyMs, log } = options;
  const jitter = options.jitter ?? 0.1;
  const stopping = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let waiters: (() => void)[] = [];

  const pass = async () => {
    try {
      await options.run(stopping.signal);
      options.onPass?.("ok");
    } catch (error) {
      options.onPass?.("failed");
      log.warn({ job: name, err: (error as Error).message }, "job pass failed; retrying at the next interval");
    }
  };
  const schedule = (delayMs: number) => {
    if (stopping.signal.aborted) return;
    timer = setTimeout(tick, delayMs);
    timer.unref();
  };
  const nextDelay = () => Math.max(0, Math.round(everyMs * (1 + jitter * (2 * Math.random() - 1))));
  const tick = () => {
    timer = undefined;
    if (running || stopping.signal.aborted) return;
    running = pass().finally(() => {
      running = undefined;
      const done = waiters;
      waiters = [];
      for (const w of done) w();
      schedule(nextDelay());
    });
  };
  if (options.runAtStart === false) schedule(nextDelay());
  else tick();

  return {
    name,
    async runNow() {
      if (stopping.signal.aborted) return;
      if (running) await running; // a pass under way may have started before what the caller wants seen
      const next = new Promise<void>((resolve) => waiters.push(resolve));
      if (!running) {
        if (timer) clearTimeout(timer);
        tick();
      }
      await next;
    },
    async stop() {
      stopping.abort();
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
