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
import type { Target } from "./generator.ts";
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

export class Bench {
  readonly rows: Row[] = [];
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

  private async phase(gen: Generator, phase: Phase): Promise<{ m: Measured; usage: Usage }> {
    const before = await this.meter.snapshot();
    const m = await gen.run(phase);
    const usage = this.meter.diff(before, await this.meter.snapshot());
    return { m, usage };
  }

  /** All phases of one row; the results are kept for the report and returned. */
  async measure(spec: RowSpec): Promise<Row[]> {
    const durationMs = this.seconds * 1000;
    const name = `${spec.scenario} ${spec.variant}`;
    const gen = await Generator.start(spec.target);
    const out: Row[] = [];
    try {
      await gen.run({ kind: "closed", concurrency: Math.max(...this.concurrencies), durationMs: 1_000 });
      const seq = await this.phase(gen, { kind: "sequential", durationMs: Math.min(2_000, durationMs), maxRequests: 1_000 });
      out.push(this.row(spec, "seq", seq.m, seq.usage));
      for (const c of this.concurrencies) {
        this.say(`${name}: closed loop at concurrency ${c} (${this.seconds} s)`);
        const r = await this.phase(gen, { kind: "closed", concurrency: c, durationMs });
        out.push(this.row(spec, `c=${c}`, r.m, r.usage));
      }
      const rate = Math.max(1, Math.round(openLoopShare * Math.max(...out.filter((r) => r.mode !== "seq").map((r) => r.rps))));
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
