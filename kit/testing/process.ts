/**
 * A service as its own OS process, for fault tests that need a real crash:
 * `node services/<name>/main.ts` (as scripts/start.ts runs it) on a fixed port
 * and database, ready once grpc.health says SERVING; `kill("SIGKILL")` ends it
 * without any graceful stop, `start()` runs it again on the same port and
 * database (with settings changed if asked). `stopServiceProcesses()` in
 * afterAll kills every process still running, whatever the tests did.
 *
 * A child cannot use a TestIssuer's keys in memory: `serveTestAuth` answers
 * the two Auth RPCs every service calls (GetJwks, IssueServiceToken) with the
 * issuer's keys and tokens, on the mesh's Auth port, so in-process services
 * (issuer.trustedBy) and child processes trust the same tokens.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer, type Http2Server } from "node:http2";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService, JsonWebKeySchema } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import type { ServiceName } from "../catalog.ts";
import { eventually } from "./mesh.ts";
import type { TestIssuer } from "./tokens.ts";

const root = join(import.meta.dirname, "..", "..");
const running = new Set<ServiceProcess>();
// A test process that ends without its afterAll (a crash, Ctrl-C) leaves no child behind either.
process.once("exit", () => {
  for (const child of running) child.killNow();
});

export class ServiceProcess {
  readonly url: string;
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** The child's last output lines (its log), for failure messages and `waitForOutput`. */
  readonly output: string[] = [];

  readonly name: ServiceName;
  readonly port: number;
  private env: Record<string, string>;

  constructor(name: ServiceName, port: number, env: Record<string, string>) {
    this.name = name;
    this.port = port;
    this.env = env;
    this.url = `http://127.0.0.1:${port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get alive(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Starts the process (again) with `more` settings merged into the previous ones; resolves once SERVING. */
  async start(more: Record<string, string> = {}, timeoutMs = 60_000): Promise<this> {
    if (this.alive) throw new Error(`${this.name} (pid ${this.pid}) is still running`);
    this.env = { ...this.env, ...more };
    const proc = spawn(process.execPath, [join("services", this.name, "main.ts")], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", ...this.env, PORT: String(this.port) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    running.add(this);
    this.exited = new Promise((resolve) => proc.once("exit", () => resolve()));
    for (const stream of [proc.stdout!, proc.stderr!]) {
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        this.output.push(...chunk.split("\n").filter(Boolean));
        if (this.output.length > 500) this.output.splice(0, this.output.length - 500);
      });
    }
    const health = createClient(Health, createGrpcTransport({ baseUrl: this.url }));
    await eventually(
      async () => {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${this.name} exited (${proc.signalCode ?? proc.exitCode}): ${this.output.slice(-20).join("\n")}`);
        const status = await health.check({ service: "" }, { timeoutMs: 1_000 }).then((r) => r.status, () => undefined);
        return status === HealthCheckResponse_ServingStatus.SERVING ? true : undefined;
      },
      timeoutMs,
      `${this.name} SERVING on ${this.url}`,
    ).catch(async (error: unknown) => {
      await this.kill("SIGKILL");
      throw error;
    });
    return this;
  }

  /** Sends `signal` (SIGKILL: no graceful stop at all) and waits until the process is gone. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.alive) this.proc!.kill(signal);
    await this.exited;
    running.delete(this);
  }

  /** SIGKILL without waiting (for the exit handler). */
  killNow(): void {
    if (this.alive) this.proc!.kill("SIGKILL");
  }

  /** Waits until a line of the child's output matches `pattern`. */
  waitForOutput(pattern: RegExp, timeoutMs = 15_000): Promise<string> {
    return eventually(async () => this.output.find((l) => pattern.test(l)), timeoutMs, `${this.name} printing ${pattern}`);
  }
}

/** Starts `node services/<name>/main.ts` on `port` with `env` (NATS_URL, DATABASE_URL, peer URLs, ...). */
export function startServiceProcess(name: ServiceName, port: number, env: Record<string, string>): Promise<ServiceProcess> {
  return new ServiceProcess(name, port, env).start();
}

/** Kills every child still running (SIGKILL); for afterAll, so that no test leaves one behind. */
export async function stopServiceProcesses(): Promise<void> {
  await Promise.all([...running].map((p) => p.kill("SIGKILL")));
}

/** Auth's GetJwks and IssueServiceToken, answered with `issuer`'s keys and tokens, on 127.0.0.1:`port`. */
export async function serveTestAuth(issuer: TestIssuer, port: number): Promise<{ stop(): Promise<void> }> {
  const handler = connectNodeAdapter({
    routes(router) {
      router.service(AuthService, {
        async getJwks() {
          return { keys: (await issuer.jwks()).map((k) => create(JsonWebKeySchema, k as Record<string, string>)) };
        },
        async issueServiceToken(req) {
          return { accessToken: await issuer.service(req.serviceName), expiresAt: timestampFromMs(Date.now() + 600_000), tokenType: "Bearer" };
        },
      });
    },
  });
  const server: Http2Server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Clients' HTTP/2 sessions would keep the server open.
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        setImmediate(resolve);
      }),
  };
}
