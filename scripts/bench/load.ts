/**
 * A closed-loop load generator: `concurrency` workers call `fn` back to back
 * for `durationMs` after a warm-up; reports throughput and latency percentiles.
 * Client and servers share the machine, as the figures say.
 */
export interface LoadResult {
  name: string;
  concurrency: number;
  requests: number;
  errors: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function measure(name: string, concurrency: number, durationMs: number, fn: () => Promise<unknown>, warmupMs = 1_000): Promise<LoadResult> {
  const warmupEnd = Date.now() + warmupMs;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < warmupEnd) await fn().catch(() => undefined);
  }));
  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const end = start + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          await fn();
          latencies.push(performance.now() - t);
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    name,
    concurrency,
    requests: latencies.length,
    errors,
    rps: latencies.length / elapsed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

/**
 * Prints every result; each scenario's ratios are against the row named "<scenario> baseline"
 * at the same concurrency (the scenario is the name's first word).
 */
export function printTable(results: LoadResult[]): void {
  const scenario = (name: string) => name.split(" ")[0]!;
  const rows = results.map((r) => {
    const base = results.find((b) => b.name === `${scenario(r.name)} baseline` && b.concurrency === r.concurrency);
    const ratio = base && base !== r ? `${(r.rps / base.rps).toFixed(2)}x req/s, ${(r.p99Ms / base.p99Ms).toFixed(2)}x p99` : "(baseline)";
    return [r.name, String(r.concurrency), r.rps.toFixed(0), r.p50Ms.toFixed(2), r.p99Ms.toFixed(2), String(r.errors), ratio];
  });
  const header = ["target", "conc", "req/s", "p50 ms", "p99 ms", "errors", "vs baseline"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

/** Runs a measurement in a worker thread (see worker.ts). */
export async function measureInWorker(job: import("./worker.ts").Job): Promise<LoadResult> {
  const { Worker } = await import("node:worker_threads");
  const worker = new Worker(new URL("./worker.ts", import.meta.url), { workerData: job });
  return new Promise((resolve, reject) => {
    worker.once("message", (r: LoadResult) => {
      void worker.terminate();
      resolve(r);
    });
    worker.once("error", reject);
  });
}
