/**
 * `npm start` as a person runs it, on the harder path: no PostgreSQL or NATS
 * answers, so it starts an embedded PostgreSQL and a local nats-server, then
 * every implemented service and the edge; a sign-up works through the edge;
 * Ctrl-C stops everything and the process exits cleanly.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { edgePort } from "../kit/catalog.ts";

const offset = 1000 + Math.floor(Math.random() * 8000);
const dataDir = mkdtempSync(join(tmpdir(), "npm-start-test-"));
let child: ChildProcess | undefined;
let output = "";

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

afterAll(async () => {
  // After a failure, stop it the way a person would, so its PostgreSQL and nats-server go too.
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child!.once("exit", r));
    child.kill("SIGINT");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
    if (child.exitCode === null) child.kill("SIGKILL");
  }
  rmSync(dataDir, { recursive: true, force: true });
});

describe("npm start", () => {
  it("brings up embedded PostgreSQL, nats-server, the services and the edge, and stops on Ctrl-C", async () => {
    child = spawn(process.execPath, [join(import.meta.dirname, "start.ts")], {
      env: {
        ...process.env,
        PORT_OFFSET: String(offset),
        START_DATA_DIR: dataDir,
        POSTGRES_URL: "postgres://postgres@127.0.0.1:1",
        NATS_URL: "nats://127.0.0.1:1",
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child!.once("exit", (code) => resolve(code)));

    const deadline = Date.now() + 120_000;
    while (!output.includes("ready. Ctrl-C stops everything.")) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`npm start did not become ready:\n${output}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(output).toMatch(/starting an embedded PostgreSQL/);
    expect(output).toMatch(/starting nats-server with JetStream/);

    const edge = `http://127.0.0.1:${edgePort + offset}`;
    const res = await fetch(`${edge}/ecommerce.auth.v1.AuthService/Register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: `start-${offset}@example.test`, password: "velvet otter maple drum 4711" }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { user: { email: string }; tokens: { accessToken: string } };
    expect(body.user.email).toBe(`start-${offset}@example.test`);

    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(output).toMatch(/\[start\]\S* stopped/);
    expect(await listening(edgePort + offset)).toBe(false);
    expect(await listening(54329 + offset)).toBe(false);
  }, 180_000);
});
