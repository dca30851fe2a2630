/**
 * The bench's printed report: one table of every row and mode, each beside the
 * "bare Connect" and "node:http" rows of the same scenario and mode, then the goals
 * of issue 8 with PASS/FAIL and the figures they were judged on. Columns are
 * described in docs/bench.md.
 */
import { interleavedRoundMs, interleavedRounds, type Rounds, type Row } from "./run.ts";

const median = (sorted: number[]) => (sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2);
const fixed = (v: number | undefined, digits: number) => (v === undefined || !Number.isFinite(v) ? "-" : v.toFixed(digits));
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;

function versus(r: Row, base: Row | undefined): string {
  if (!base) return "";
  if (base === r) return "(itself)";
  // Open-loop rates differ by row (70% of each one's own maximum), so only CPU compares.
  const rps = r.mode === "open" ? "" : `${ratio(r.rps, base.rps)} req/s, `;
  return `${rps}${ratio(r.cpuUs, base.cpuUs)} CPU`;
}

const find = (rows: Row[], scenario: string, variant: string, mode: string) => rows.find((b) => b.scenario === scenario && b.variant === variant && b.mode === mode);

export function printTable(rows: Row[]): void {
  const header = ["target", "mode", "req/s", "p50 ms", "p99 ms", "err", "CPU µs/req", "PG µs/req", "gen µs/req", "SQL/req", "RT/req", "relay/req", "peer/req", "vs bare Connect", "vs node:http"];
  const cells = rows.map((r) => [
    `${r.scenario} ${r.variant}`,
    r.mode === "open" ? `open@${r.rate}/s` : r.mode,
    fixed(r.rps, 0),
    fixed(r.p50Ms, 2),
    fixed(r.p99Ms, 2),
    String(r.errors),
    fixed(r.cpuUs, 0),
    fixed(r.pgCpuUs, 0),
    fixed(r.clientCpuUs, 0),
    fixed(r.statements, 2),
    fixed(r.roundTrips, 2),
    fixed(r.relayPasses, 3),
    fixed(r.peerRpcs, 2),
    versus(r, find(rows, r.scenario, "bare Connect", r.mode)),
    versus(r, find(rows, r.scenario, "node:http", r.mode)),
  ]);
  const numeric = new Set([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => (numeric.has(i) ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join("  ").trimEnd();
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  let last = "";
  for (const [i, r] of rows.entries()) {
    const name = `${r.scenario} ${r.variant}`;
    if (last && last.split(" ")[0] !== r.scenario) console.log();
    last = name;
    console.log(line(cells[i]!));
  }
}

export interface Goal {
  goal: string;
  pass: boolean | undefined;
  figures: string;
}

/** The interleaved rounds (Bench.interleave): each variant's CPU per request and req/s, median and range over the rounds. */
export function printInterleaved(all: Rounds[]): void {
  if (all.length === 0) return;
  console.log(`interleaved rounds (${interleavedRounds} x ${interleavedRoundMs / 1000} s per variant and concurrency, alternating; the ratio goals are judged on these):`);
  const span = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return `${median(s).toFixed(0)} (${s[0]!.toFixed(0)}–${s.at(-1)!.toFixed(0)})`;
  };
  for (const r of all) console.log(`  ${`${r.scenario} ${r.variant}`.padEnd(26)} ${r.mode.padEnd(5)} CPU µs/req ${span(r.rounds.map((x) => x.cpuUs)).padEnd(18)} req/s ${span(r.rounds.map((x) => x.rps))}`);
}

export function printGoals(goals: Goal[]): void {
  console.log("goals of issue 8 (this run):");
  for (const g of goals) console.log(`  ${g.pass === undefined ? "n/a " : g.pass ? "PASS" : "FAIL"}  ${g.goal}: ${g.figures}`);
}

export interface GoalInputs {
  rows: Row[];
  /** The compared variants' interleaved rounds (Bench.interleave); the ratio goals are judged on them when present. */
  interleaved?: Rounds[];
  concurrencies: number[];
  products: number;
  /** Seq Scans on products found in the plans of SearchProducts' statements. */
  searchSeqScans: number;
  /** ReserveStock's statements per RPC when issue 8 was opened. */
  reserveStatementsBefore: number;
}

/** Each goal of issue 8, judged on this run's rows (closed-loop ratios at every concurrency). */
export function goalsOf(g: GoalInputs): Goal[] {
  const goals: Goal[] = [];
  const closed = g.concurrencies.map((c) => `c=${c}`);
  const rounds = (scenario: string, variant: string, mode: string) => g.interleaved?.find((r) => r.scenario === scenario && r.variant === variant && r.mode === mode)?.rounds;
  const compare = (scenario: string, variant: string, against: string, what: "cpu" | "rps", limit: number, goal: string) => {
    const parts: string[] = [];
    let pass: boolean | undefined = true;
    const of = (m: { cpuUs: number; rps: number }) => (what === "cpu" ? m.cpuUs : m.rps);
    for (const mode of closed) {
      const r = find(g.rows, scenario, variant, mode);
      const b = find(g.rows, scenario, against, mode);
      if (!r || !b) {
        pass = undefined;
        continue;
      }
      const phases = of(r) / of(b);
      // Judged on the median of the per-round ratios when the variants ran interleaved, else on the rows' phases.
      const ra = rounds(scenario, variant, mode);
      const rb = rounds(scenario, against, mode);
      const perRound = ra && rb ? ra.map((x, i) => of(x) / of(rb[i]!)).sort((p, q) => p - q) : undefined;
      const x = perRound ? median(perRound) : phases;
      const ok = what === "cpu" ? x <= limit : x >= limit;
      if (!ok && pass !== undefined) pass = false;
      const unit = what === "cpu" ? "µs" : "req/s";
      parts.push(
        perRound
          ? `${mode} median ${x.toFixed(2)}x (${perRound[0]!.toFixed(2)}–${perRound.at(-1)!.toFixed(2)} over ${perRound.length} interleaved rounds; the rows' phases ${of(r).toFixed(0)} vs ${of(b).toFixed(0)} ${unit} = ${phases.toFixed(2)}x)`
          : `${mode} ${of(r).toFixed(0)} vs ${of(b).toFixed(0)} ${unit} = ${x.toFixed(2)}x`,
      );
    }
    goals.push({ goal, pass, figures: parts.join("; ") || "rows missing" });
  };
  for (const s of ["GetMyProfile", "GetProduct"]) {
    compare(s, "gRPC direct", "bare Connect", "cpu", 1.15, `${s} gRPC direct CPU/request <= 1.15x bare Connect`);
    compare(s, "gRPC direct", "bare Connect", "rps", 0.85, `${s} gRPC direct req/s >= 0.85x bare Connect`);
  }
  for (const s of ["GetMyProfile", "GetProduct"]) compare(s, "via edge", "gRPC direct", "cpu", 1.3, `${s} via edge CPU/request <= 1.3x gRPC direct`);

  // Statement counts from the sequential phase (one request at a time), background subtracted; 0.05 of slack for that.
  const seq = (scenario: string, variant: string) => find(g.rows, scenario, variant, "seq");
  const profile = seq("GetMyProfile", "gRPC direct");
  goals.push({ goal: "GetMyProfile: 1 SQL statement per RPC", pass: profile && profile.statements <= 1.05, figures: `${fixed(profile?.statements, 2)} statements/RPC` });
  const product = seq("GetProduct", "gRPC direct");
  goals.push({
    goal: "GetProduct: at most 2 round trips to PostgreSQL",
    pass: product?.roundTrips !== undefined && product.roundTrips <= 2.05,
    figures: `${fixed(product?.roundTrips, 2)} round trips (${fixed(product?.statements, 2)} statements)/RPC`,
  });
  goals.push({ goal: "SearchProducts: no sequential scan over products (EXPLAIN)", pass: g.searchSeqScans === 0, figures: `${g.searchSeqScans} Seq Scan on products in its statements' plans` });
  const search = find(g.rows, "SearchProducts", "via edge", "open");
  const searchSeq = find(g.rows, "SearchProducts", "via edge", "seq");
  goals.push({
    goal: "SearchProducts: p99 < 50 ms over 100,000 products (open loop)",
    pass: search && g.products >= 100_000 ? search.p99Ms < 50 : undefined,
    figures: `p99 ${fixed(search?.p99Ms, 1)} ms at ${search?.rate ?? "-"} req/s (one at a time: ${fixed(searchSeq?.p99Ms, 1)} ms) over ${g.products} products${g.products < 100_000 ? " (BENCH_PRODUCTS below 100000: not judged)" : ""}`,
  });
  const reserve = seq("ReserveStock", "gRPC contended");
  goals.push({
    goal: `ReserveStock: at most half of the ${g.reserveStatementsBefore} statements/RPC of issue 8's start`,
    pass: reserve && reserve.statements <= g.reserveStatementsBefore / 2 + 0.05,
    figures: `${fixed(reserve?.statements, 2)} statements (${fixed(reserve?.roundTrips, 2)} round trips)/RPC`,
  });
  // The rows whose RPCs write no outbox row (ReserveStock only when stock runs out; the hot products' never does): not
  // RedeemDiscounts (discount.redeemed on every call), AuthorizePayment (payment.authorized) nor Checkout (a dozen events).
  const writesOutbox = new Set(["RedeemDiscounts", "AuthorizePayment", "Checkout"]);
  const quiet = g.rows.filter((r) => r.mode !== "seq" && !writesOutbox.has(r.scenario) && ["gRPC direct", "via edge", "gRPC contended"].includes(r.variant));
  const worst = quiet.reduce<Row | undefined>((w, r) => (!w || r.relayPasses > w.relayPasses ? r : w), undefined);
  goals.push({
    goal: "no outbox relay pass after a transaction that wrote no outbox row",
    pass: worst ? worst.relayPasses <= 0.01 : undefined,
    figures: worst ? `at most ${worst.relayPasses.toFixed(3)} relay passes/RPC beyond the idle polls (${worst.scenario} ${worst.variant} ${worst.mode})` : "rows missing",
  });
  return goals;
}
