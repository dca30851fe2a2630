/**
 * The bench's edge as `npm start` and every deployment run it: a process of its own
 * (`node gateway/main.ts`, configured through its environment), not a server inside
 * the bench's process. In one process, the edge's allocations and the services'
 * shared one heap and one thread, so each one's garbage collections paused the
 * other's calls, which no deployment does (docs/bench.md, "The edge in its own
 * process"). The Meter adds this process's CPU to the servers' (`watchProcess`).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { peerUrlVariable, type ServiceName } from "../../kit/catalog.ts";
import { freePort } from "../../kit/testing/infra.ts";
import { eventually } from "../../kit/testing/mesh.ts";

export interface EdgeProcess {
  url: string;
  /** The edge process's CPU time so far (all its threads), µs: for Meter.watchProcess. */
  cpuUs(): Promise<number>;
  stop(): Promise<void>;
}

const gatewayMain = join(import.meta.dirname, "..", "..", "gateway", "main.ts");
const cpuReporter = join(import.meta.dirname, "cpu-reporter.ts");

/**
 * Starts the edge in front of `upstreams` on a free port; resolves once it answers /healthz.
 * `nodeOptions`: more options for its node (a profile: `--cpu-prof`, written when it stops).
 */
export async function startEdgeProcess(upstreams: Partial<Record<ServiceName, string>>, nodeOptions: string[] = []): Promise<EdgeProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env: Record<string, string> = { PATH: process.env.PATH ?? "", HOST: "127.0.0.1", PORT: String(port), LOG_LEVEL: "error" };
  for (const [name, base] of Object.entries(upstreams)) env[peerUrlVariable(name as ServiceName)] = base!;
  const child: ChildProcess = spawn(process.execPath, [...nodeOptions, "--import", cpuReporter, gatewayMain], { env, stdio: ["ignore", "pipe", "pipe", "ipc"] });
  const output: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      output.push(...chunk.split("\n").filter(Boolean));
      if (output.length > 200) output.splice(0, output.length - 200);
      // The edge logs only errors here: show them, they would explain failed calls in a row.
      for (const line of chunk.split("\n").filter(Boolean)) console.error(`[edge] ${line}`);
    });
  }
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const killNow = () => child.kill("SIGKILL");
  process.once("exit", killNow); // a bench that crashes leaves no edge behind
  const stop = async () => {
    process.removeListener("exit", killNow);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  await eventually(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the edge exited (${child.signalCode ?? child.exitCode}):\n${output.join("\n")}`);
      const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
      return ok ? true : undefined;
    },
    30_000,
    `the edge answering ${url}/healthz`,
  ).catch(async (error: unknown) => {
    await stop();
    throw error;
  });
  // One question at a time (the meter's snapshots are sequential): each answer is the oldest waiter's.
  const waiters: { resolve(us: number): void; reject(e: Error): void }[] = [];
  child.on("message", (m: { cpuUs: number }) => waiters.shift()?.resolve(m.cpuUs));
  child.once("exit", () => {
    for (const w of waiters.splice(0)) w.reject(new Error(`the edge exited:\n${output.join("\n")}`));
  });
  const cpuUs = () =>
    new Promise<number>((resolve, reject) => {
      if (!child.connected) return reject(new Error(`the edge is not running:\n${output.join("\n")}`));
      waiters.push({ resolve, reject });
      child.send("cpu");
    });
  return { url, cpuUs, stop };
}
