/**
 * Runs the phases of one bench row (a target) in its own load generator and meters
 * the servers around each phase: warm-up (not reported), sequential, closed loop at
 * each concurrency, then open loop at 70% of the best closed-loop req/s.
 *
 * Per-request figures subtract the background measured while idle (the outbox
 * relays' polls, jobs) from statements, round trips, relay passes and peer RPCs;
 * CPU is reported as measured (process CPU over the phase / answered requests).
 */
import { Generator, type Measured, type Phase } from "./load.ts";
import type { Prepared, Target } from "./generator.ts";
import type { Meter, Usage } from "./meter.ts";

export type Mode = "seq" | `c=${number}` | "open";

export interface RowSpec {
  /** First word of the row's name: GetMyProfile, GetProduct, SearchProducts, ReserveStock. */
  scenario: string;
  /** "node:http", "bare Connect", "gRPC direct", "via edge", "gRPC contended". */
  variant: string;
  target: Target;
  /** Whether the first hop is one of the mesh's services (directly or through the edge), for peer RPCs. */
  servedByMesh: boolean;
  /**
   * For a `once` target: prepares `count` requests, called before each phase (warm-up
   * included) outside the metered interval, so preparing is never in a phase's figures.
   * Requests left over from a phase are sent in the next one. A phase that uses up what
   * was prepared ends early (its seconds and req/s are of the time it ran).
   */
  prepare?: (count: number) => Promise<Prepared[]>;
  /** Whether to run the open-loop phase (default true). */
  openLoop?: boolean;
}

export interface Row extends Measured {
  scenario: string;
  variant: string;
  mode: Mode;
  /** Open loop: the arrival rate sent. */
  rate?: number;
  usage: Usage;
  cpuUs: number;
  pgCpuUs: number | undefined;
  statements: number;
  /** Sequential rows only: round trips to PostgreSQL per request. */
  roundTrips: number | undefined;
  relayPasses: number;
  peerRpcs: number;
}

/** Background activity per second, from an idle interval. */
interface Idle {
  cpuUs: number;
  statements: number;
  rounds: number;
  relayPasses: number;
  rpcs: number;
}

export const openLoopShare = 0.7;

/** One variant's figures in each interleaved round at one concurrency (`Bench.interleave`). */
export interface Rounds {
  scenario: string;
  variant: string;
  mode: Mode;
  /** Per round, in the order run: CPU µs per request and req/s. */
  rounds: { cpuUs: number; rps: number }[];
}

/** Rounds per concurrency and their length in `Bench.interleave`. */
export const interleavedRounds = 6;
export const interleavedRoundMs = 2_000;

export class Bench {
  readonly rows: Row[] = [];
  readonly interleaved: Rounds[] = [];
  readonly meter: Meter;
  readonly seconds: number;
  readonly concurrencies: number[];
  private readonly say: (line: string) => void;
  idle: Idle = { cpuUs: 0, statements: 0, rounds: 0, relayPasses: 0, rpcs: 0 };

  constructor(meter: Meter, seconds: number, concurrencies: number[], say: (line: string) => void) {
    this.meter = meter;
    this.seconds = seconds;
    this.concurrencies = concurrencies;
    this.say = say;
  }

  /** Measures the background while nothing is sent. */
  async calibrate(ms = 3_000): Promise<void> {
    const a = await this.meter.snapshot();
    await new Promise((r) => setTimeout(r, ms));
    const u = this.meter.diff(a, await this.meter.snapshot());
    const per = (n: number) => n / u.seconds;
    this.idle = { cpuUs: per(u.cpuUs), statements: per(u.statements), rounds: per(u.rounds), relayPasses: per(u.relayPasses), rpcs: per(u.rpcs) };
  }

  private row(spec: RowSpec, mode: Mode, m: Measured, usage: Usage, rate?: number): Row {
    const n = m.requests;
    const net = (count: number, idlePerSecond: number) => Math.max(0, count - idlePerSecond * usage.seconds) / n;
    const sent = spec.servedByMesh ? m.requests + m.errors : 0;
    return {
      ...m,
      scenario: spec.scenario,
      variant: spec.variant,
      mode,
      ...(rate !== undefined ? { rate } : {}),
      usage,
      cpuUs: usage.cpuUs / n,
      pgCpuUs: usage.pgCpuUs === undefined ? undefined : usage.pgCpuUs / n,
      statements: net(usage.statements, this.idle.statements),
      roundTrips: mode === "seq" ? net(usage.rounds, this.idle.rounds) : undefined,
      relayPasses: net(usage.relayPasses, this.idle.relayPasses),
      peerRpcs: Math.max(0, usage.rpcs - this.idle.rpcs * usage.seconds - sent) / n,
    };
  }

  /**
   * BENCH_ONLY: comma-separated scenario names (case-insensitive, e.g. "checkout" or
   * "GetProduct,GetCart"); unset, every row runs.
   */
  readonly only = (process.env.BENCH_ONLY ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);

  /** Whether a scenario's rows are to run (BENCH_ONLY). */
  wants(...scenarios: string[]): boolean {
    return this.only.length === 0 || scenarios.some((s) => this.only.includes(s.toLowerCase()));
  }

  private async phase(gen: Generator, phase: Phase): Promise<{ m: Measured; usage: Usage }> {
    const before = await this.meter.snapshot();
    const m = await gen.run(phase);
    const usage = this.meter.diff(before, await this.meter.snapshot());
    return { m, usage };
  }

  /**
   * The variants of a scenario compared with each other in alternating rounds: at each
   * closed-loop concurrency, `interleavedRounds` rounds of `interleavedRoundMs` per variant,
   * the order reversed every other round. On a shared machine the CPU per request drifts
   * between two phases a minute apart by more than some of the differences judged (the
   * edge's, the kit's); a ratio taken within each round, between phases seconds apart,
   * cancels the drift, and its median over the rounds ignores a disturbed round.
   */
  async interleave(specs: RowSpec[]): Promise<void> {
    if (!this.wants(specs[0]!.scenario)) return;
    const gens: Generator[] = [];
    try {
      for (const spec of specs) gens.push(await Generator.start(spec.target));
      for (const c of this.concurrencies) {
        this.say(`${specs[0]!.scenario}: ${interleavedRounds} interleaved rounds of ${specs.map((s) => s.variant).join(", ")} at concurrency ${c}`);
        for (const g of gens) await g.run({ kind: "closed", concurrency: c, durationMs: 500 });
        const rounds = specs.map(() => [] as { cpuUs: number; rps: number }[]);
        for (let r = 0; r < interleavedRounds; r++) {
          const order = specs.map((_, i) => (r % 2 === 0 ? i : specs.length - 1 - i));
          for (const i of order) {
            const { m, usage } = await this.phase(gens[i]!, { kind: "closed", concurrency: c, durationMs: interleavedRoundMs });
            rounds[i]!.push({ cpuUs: usage.cpuUs / m.requests, rps: m.rps });
          }
        }
        for (const [i, spec] of specs.entries()) this.interleaved.push({ scenario: spec.scenario, variant: spec.variant, mode: `c=${c}`, rounds: rounds[i]! });
      }
    } finally {
      for (const g of gens) await g.stop();
    }
  }

  /** All phases of one row; the results are kept for the report and returned. */
  async measure(spec: RowSpec): Promise<Row[]> {
    const out: Row[] = [];
    if (!this.wants(spec.scenario)) return out;
    const durationMs = this.seconds * 1000;
    const name = `${spec.scenario} ${spec.variant}`;
    const gen = await Generator.start(spec.target);
    // Prepared requests (a `once` target): how many are queued, and the best rate seen, to size the next batch.
    let queued = 0;
    let bestRps = 0;
    const supply = async (wanted: number) => {
      if (!spec.prepare || wanted <= queued) return;
      const items = await spec.prepare(Math.ceil(wanted - queued));
      await gen.supply(items);
      queued += items.length;
    };
    const used = (m: Measured) => {
      queued = Math.max(0, queued - m.requests - m.errors);
      bestRps = Math.max(bestRps, m.rps);
    };
    const maxC = Math.max(...this.concurrencies);
    try {
      await supply(maxC);
      used(await gen.run({ kind: "closed", concurrency: maxC, durationMs: 1_000 }));
      const seqMs = Math.min(2_000, durationMs);
      // One at a time is at most as fast as the warm-up at full concurrency: 1.5x its rate is plenty.
      await supply(Math.min(1_000, Math.max(20, 1.5 * bestRps * (seqMs / 1000))));
      const seq = await this.phase(gen, { kind: "sequential", durationMs: seqMs, maxRequests: 1_000 });
      used(seq.m);
      out.push(this.row(spec, "seq", seq.m, seq.usage));
      for (const c of this.concurrencies) {
        await supply(Math.max(2 * c, 2 * bestRps * this.seconds + c));
        this.say(`${name}: closed loop at concurrency ${c} (${this.seconds} s)`);
        const r = await this.phase(gen, { kind: "closed", concurrency: c, durationMs });
        used(r.m);
        out.push(this.row(spec, `c=${c}`, r.m, r.usage));
      }
      if (spec.openLoop === false) {
        this.rows.push(...out);
        return out;
      }
      const rate = Math.max(1, Math.round(openLoopShare * Math.max(...out.filter((r) => r.mode !== "seq").map((r) => r.rps))));
      await supply(rate * this.seconds);
      this.say(`${name}: open loop at ${rate} req/s (${this.seconds} s)`);
      const open = await this.phase(gen, { kind: "open", rate, durationMs });
      out.push(this.row(spec, "open", open.m, open.usage, rate));
    } finally {
      await gen.stop();
    }
    this.rows.push(...out);
    return out;
  }
}
