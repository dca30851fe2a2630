/**
 * Load generation for `npm run bench`. A generator is a child process (generator.ts)
 * with one target; the main process, where the servers run, tells it which phase
 * to run and meters the servers around each phase. Phases:
 *
 * - closed loop: `concurrency` callers, each sending its next request when the last
 *   one answered, for `durationMs` (the throughput ceiling at that concurrency);
 * - open loop: requests sent on a fixed schedule (`rate` per second) whether or not
 *   earlier ones answered, latency counted from each request's scheduled send time,
 *   so queueing shows in the figures instead of slowing the sender down
 *   (coordinated omission); bounded by count (rate × duration), by outstanding
 *   requests and by a drain time after the last send;
 * - sequential: one request at a time (statements per request and round trips are
 *   attributable only then), bounded by count and time.
 *
 * Latencies go into an HDR histogram (µs, 3 significant digits).
 */
import { type ChildProcess, fork } from "node:child_process";
import { build } from "hdr-histogram-js";
import type { Prepared, Target } from "./generator.ts";

export type Phase =
  | { kind: "closed"; concurrency: number; durationMs: number }
  | { kind: "open"; rate: number; durationMs: number }
  | { kind: "sequential"; durationMs: number; maxRequests: number };

/** What the generator measured over one phase. */
export interface Measured {
  /** Answered requests (errors not included). */
  requests: number;
  errors: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The generator's own CPU per request, µs (not the servers'). */
  clientCpuUs: number;
}

const maxOutstanding = 10_000;

/**
 * Thrown by a caller whose prepared requests are used up (a target with `once`): the
 * caller that meets it stops, it is neither an answer nor an error, and the phase ends
 * when every caller stopped (so it may be shorter than asked; its seconds say how long).
 */
export class Exhausted extends Error {
  constructor() {
    super("prepared requests used up");
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

function histogram() {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 });
}

function summary(h: ReturnType<typeof histogram>, requests: number, errors: number, seconds: number, cpu: NodeJS.CpuUsage): Measured {
  const ms = (p: number) => (requests > 0 ? h.getValueAtPercentile(p) / 1000 : Number.NaN);
  const used = process.cpuUsage(cpu);
  return {
    requests,
    errors,
    seconds,
    rps: requests / seconds,
    p50Ms: ms(50),
    p99Ms: ms(99),
    maxMs: requests > 0 ? h.maxValue / 1000 : Number.NaN,
    clientCpuUs: requests > 0 ? (used.user + used.system) / requests : Number.NaN,
  };
}

const micros = (ms: number) => Math.max(1, Math.round(ms * 1000));

async function closedLoop(fn: () => Promise<unknown>, concurrency: number, durationMs: number): Promise<Measured> {
  const h = histogram();
  const cpu = process.cpuUsage();
  let requests = 0;
  let errors = 0;
  const start = performance.now();
  const end = start + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          await fn();
          h.recordValue(micros(performance.now() - t));
          requests++;
        } catch (error) {
          if (error instanceof Exhausted) break;
          errors++;
        }
      }
    }),
  );
  return summary(h, requests, errors, (performance.now() - start) / 1000, cpu);
}

async function openLoop(fn: () => Promise<unknown>, rate: number, durationMs: number): Promise<Measured> {
  const h = histogram();
  const cpu = process.cpuUsage();
  const total = Math.max(1, Math.round((rate * durationMs) / 1000));
  const interval = 1000 / rate;
  let requests = 0;
  let errors = 0;
  let outstanding = 0;
  let lastDone = 0;
  let drained: () => void = () => undefined;
  const allDone = new Promise<void>((r) => (drained = r));
  let sent = 0;
  const fire = (scheduled: number) => {
    outstanding++;
    fn().then(
      () => {
        h.recordValue(micros(performance.now() - scheduled));
        requests++;
      },
      () => errors++,
    ).finally(() => {
      outstanding--;
      lastDone = performance.now();
      if (sent === total && outstanding === 0) drained();
    });
  };
  const start = performance.now();
  while (sent < total) {
    const now = performance.now();
    // Every request whose time has come goes out now, even when the timer fired late.
    while (sent < total && start + sent * interval <= now) {
      if (outstanding < maxOutstanding) fire(start + sent * interval);
      else errors++; // shed: far beyond saturation
      sent++;
    }
    if (sent < total) await sleep(start + sent * interval - performance.now());
  }
  if (outstanding === 0) drained();
  await Promise.race([allDone, sleep(Math.max(5_000, durationMs))]);
  errors += outstanding; // still unanswered after the drain time
  return summary(h, requests, errors, (Math.max(lastDone, start + total * interval) - start) / 1000, cpu);
}

async function sequential(fn: () => Promise<unknown>, durationMs: number, maxRequests: number): Promise<Measured> {
  const h = histogram();
  const cpu = process.cpuUsage();
  let requests = 0;
  let errors = 0;
  const start = performance.now();
  while (requests + errors < maxRequests && performance.now() - start < durationMs) {
    const t = performance.now();
    try {
      await fn();
      h.recordValue(micros(performance.now() - t));
      requests++;
    } catch (error) {
      if (error instanceof Exhausted) break;
      errors++;
    }
  }
  return summary(h, requests, errors, (performance.now() - start) / 1000, cpu);
}

export function runPhase(fn: () => Promise<unknown>, phase: Phase): Promise<Measured> {
  switch (phase.kind) {
    case "closed":
      return closedLoop(fn, phase.concurrency, phase.durationMs);
    case "open":
      return openLoop(fn, phase.rate, phase.durationMs);
    case "sequential":
      return sequential(fn, phase.durationMs, phase.maxRequests);
  }
}

type Reply = { id: number; result?: Measured } | { id: number; error: string };

/**
 * The generator's own heap: a young generation that starts at its full size and an old
 * generation with room from the start. A fresh process starts with a 1 MB young generation and
 * an old-generation limit just above what it holds (about 20 MB), so under load it collected its
 * whole heap about once a second (4–35 ms each, plus incremental steps up to 28 ms: --trace-gc of
 * a SearchProducts run); in the open loop every such pause delays the requests due then, and the
 * delay counts as their latency. With these it collects its young generation only.
 */
const generatorHeap = ["--min-semi-space-size=16", "--initial-old-space-size=512"];

/** A load generator in a child process, for one target; `run` awaits one phase. */
export class Generator {
  private readonly child: ChildProcess;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (m: Measured) => void; reject: (e: Error) => void }>();

  private constructor(child: ChildProcess) {
    this.child = child;
    child.on("message", (m: Reply) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if ("error" in m) w?.reject(new Error(m.error));
      else w?.resolve(m.result!);
    });
    child.once("exit", (code) => {
      for (const w of this.waiting.values()) w.reject(new Error(`load generator exited (code ${code})`));
      this.waiting.clear();
    });
  }

  static async start(target: Target): Promise<Generator> {
    const child = fork(new URL("./generator.ts", import.meta.url), [JSON.stringify(target)], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv: [...process.execArgv, ...generatorHeap] });
    await new Promise<void>((resolve, reject) => {
      child.once("message", () => resolve()); // "ready": the target is set up
      child.once("exit", (code) => reject(new Error(`load generator exited before it was ready (code ${code})`)));
    });
    child.removeAllListeners("exit");
    return new Generator(child);
  }

  run(phase: Phase): Promise<Measured> {
    return this.ask({ phase });
  }

  /** Appends prepared requests to a `once` target's queue (each is sent once, in order). */
  async supply(items: Prepared[]): Promise<void> {
    await this.ask({ supply: items });
  }

  private ask(message: { phase: Phase } | { supply: Prepared[] }): Promise<Measured> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.send({ id, ...message });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.disconnect(); // the generator exits when its IPC channel closes
    await exited;
  }
}
