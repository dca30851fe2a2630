/**
 * intervalJob (kit/jobs.ts), the one way services run periodic work: a pass at start,
 * never two passes at once, a failed pass logged and the job going on, and stop()
 * waiting for the pass under way (a service closes its database right after).
 * Passes are released by the test (deferred promises), never timed.
 */
import { describe, expect, it } from "vitest";
import { intervalJob } from "./jobs.ts";
import { createLogger } from "./logger.ts";

const log = createLogger("jobs-test", "silent");

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe("intervalJob", () => {
  it("runs a pass at start and never two at once, however often it is asked to", async () => {
    let active = 0;
    let most = 0;
    let passes = 0;
    const gates: ReturnType<typeof deferred>[] = [];
    const started: (() => void)[] = [];
    const job = intervalJob({
      name: "overlap",
      everyMs: 0, // due again at once: only the no-overlap rule keeps passes apart
      jitter: 0,
      log,
      async run() {
        active++;
        most = Math.max(most, active);
        passes++;
        const gate = deferred();
        gates.push(gate);
        started.splice(0).forEach((s) => s());
        await gate.promise;
        active--;
      },
    });
    expect(passes).toBe(1); // at start, synchronously
    const asked = [job.runNow(), job.runNow(), job.runNow()];
    for (let i = 0; i < 3; i++) {
      const next = new Promise<void>((r) => started.push(r));
      gates.at(-1)!.resolve();
      await next;
    }
    const stopped = job.stop();
    gates.at(-1)!.resolve();
    await Promise.all([...asked, stopped]);
    expect(most).toBe(1);
    expect(passes).toBeGreaterThanOrEqual(2);
  });

  it("goes on after a failed pass", async () => {
    let passes = 0;
    const outcomes: string[] = [];
    const job = intervalJob({
      name: "flaky",
      everyMs: 60_000,
      log,
      async run() {
        passes++;
        if (passes === 1) throw new Error("first pass fails");
      },
      onPass: (outcome) => outcomes.push(outcome),
    });
    await job.runNow();
    await job.runNow();
    await job.stop();
    expect(outcomes.slice(0, 2)).toEqual(["failed", "ok"]);
  });

  it("stop() resolves only after the pass under way has finished, and no pass starts after it", async () => {
    const gate = deferred();
    let finished = false;
    let passes = 0;
    const job = intervalJob({
      name: "slow",
      everyMs: 0,
      jitter: 0,
      log,
      async run(signal) {
        passes++;
        await gate.promise;
        expect(signal.aborted).toBe(true); // told to stop while it ran
        finished = true;
      },
    });
    let stopped = false;
    const stopping = job.stop().then(() => (stopped = true));
    await Promise.resolve();
    expect(stopped).toBe(false);
    gate.resolve();
    await stopping;
    expect(finished).toBe(true);
    await job.runNow(); // refused once stopped
    expect(passes).toBe(1);
  });
});
