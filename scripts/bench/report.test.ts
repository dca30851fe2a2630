/**
 * How the ratio goals of issue 8 are judged (report.ts goalsOf): on the median of the
 * per-round ratios when the compared variants ran interleaved, else on the rows' phases.
 */
import { describe, expect, it } from "vitest";
import { goalsOf } from "./report.ts";
import type { Rounds, Row } from "./run.ts";

const row = (variant: string, mode: string, cpuUs: number, rps: number) => ({ scenario: "GetMyProfile", variant, mode, cpuUs, rps, statements: 1, relayPasses: 0, peerRpcs: 0 }) as unknown as Row;
const rows = (direct: number) =>
  ["c=8", "c=64"].flatMap((mode) => [row("bare Connect", mode, 100, 1000), row("gRPC direct", mode, direct, 1000), row("via edge", mode, direct, 1000)]);
const rounds = (variant: string, cpu: number[]): Rounds[] =>
  ["c=8", "c=64"].map((mode) => ({ scenario: "GetMyProfile", variant, mode: mode as Rounds["mode"], rounds: cpu.map((cpuUs) => ({ cpuUs, rps: 1000 })) }));
const cpuGoal = (inputs: Partial<Parameters<typeof goalsOf>[0]>) =>
  goalsOf({ rows: [], concurrencies: [8, 64], products: 0, searchSeqScans: 0, reserveStatementsBefore: 21, ...inputs }).find((g) => g.goal.startsWith("GetMyProfile gRPC direct CPU"))!;

describe("the ratio goals", () => {
  it("are judged on the rows' phases when nothing ran interleaved", () => {
    expect(cpuGoal({ rows: rows(110) }).pass).toBe(true);
    expect(cpuGoal({ rows: rows(120) }).pass).toBe(false);
  });

  it("are judged on the median of the per-round ratios when the variants ran interleaved, whatever the phases say", () => {
    // Phases 1.10x (pass); rounds 1.30, 1.25, 1.20, 1.05, 1.00, 1.40 against 100: median 1.225x (fail).
    const interleaved = [...rounds("bare Connect", [100, 100, 100, 100, 100, 100]), ...rounds("gRPC direct", [130, 125, 120, 105, 100, 140])];
    const judged = cpuGoal({ rows: rows(110), interleaved });
    expect(judged.pass).toBe(false);
    expect(judged.figures).toContain("median 1.23x (1.00–1.40 over 6 interleaved rounds; the rows' phases 110 vs 100 µs = 1.10x)");
    // Ratios are taken within each round: a slow round slows both variants and cancels out.
    const drift = [...rounds("bare Connect", [100, 200, 100, 200, 100, 200]), ...rounds("gRPC direct", [110, 220, 110, 220, 110, 220])];
    expect(cpuGoal({ rows: rows(150), interleaved: drift }).pass).toBe(true);
  });
});
