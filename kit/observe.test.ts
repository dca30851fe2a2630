/**
 * What the observe interceptor writes for each call, read from a real service's log
 * stream and /metrics: a successful call is counted but logged only at debug, a failed
 * call always, a slow one (SLOW_CALL_MS) at warn whatever the level.
 */
import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { requireUser } from "./auth/principal.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { notFound } from "./errors.ts";
import { createLogger, type Logger } from "./logger.ts";
import { defineService, type RunningService, runService } from "./server.ts";
import { TestDatabases, TestNats } from "./testing/infra.ts";
import { eventually } from "./testing/mesh.ts";
import { TestIssuer } from "./testing/tokens.ts";

const issuer = new TestIssuer();
const missing = crypto.randomUUID();
const slow = crypto.randomUUID();
// Well above a normal call on a loaded machine; the slow fixture call takes twice as long.
const slowCallMs = 300;

/** GetMyProfile answers, is NOT_FOUND for `missing`, and takes 2 × SLOW_CALL_MS for `slow`. */
const fixture = issuer.trustedBy(
  defineService({
    name: "user",
    entities: [],
    migrations: [],
    routes(router) {
      router.service(UserService, {
        async getMyProfile(_req, ctx) {
          const me = requireUser(ctx);
          if (me.userId === missing) throw notFound("profile", me.userId);
          if (me.userId === slow) await new Promise((r) => setTimeout(r, 2 * slowCallMs));
          return { profile: create(UserProfileSchema, { userId: me.userId }) };
        },
      });
    },
  }),
);

let nats: TestNats;
const dbs = new TestDatabases();
let service: RunningService;
let log: Logger;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  nats = await TestNats.start();
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  log = createLogger("user", "info", sink);
  service = await runService(fixture, { NATS_URL: nats.url, PORT: "0", DATABASE_URL: dbs.url("user"), SLOW_CALL_MS: String(slowCallMs) }, { logger: log });
  // The first call warms the path up; no measured call should be slow by accident.
  await call(crypto.randomUUID(), "warm-up");
});

afterAll(async () => {
  await service?.stop();
  await nats?.stop();
  await dbs.dropAll();
});

const client = () => createClient(UserService, createGrpcTransport({ baseUrl: service.url }));
const call = async (userId: string, requestId: string) =>
  client().getMyProfile({}, { headers: { authorization: `Bearer ${await issuer.user(userId)}`, "x-request-id": requestId } });
const linesOf = (requestId: string) => lines.filter((l) => l.request_id === requestId);
const method = "ecommerce.user.v1.UserService/GetMyProfile";

describe("logs and metrics of each call", () => {
  it("counts a successful call without writing a line at info, and logs it at debug", async () => {
    const quiet = `ok-${crypto.randomUUID()}`;
    await call(crypto.randomUUID(), quiet);
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`rpc_requests_total\\{[^}]*method="${method}"[^}]*code="ok"[^}]*\\} [1-9]`));
    // (Only a call slow by accident could have written one, at warn.)
    expect(linesOf(quiet).filter((l) => l.msg !== "slow rpc")).toEqual([]);

    log.level = "debug";
    try {
      const loud = `ok-${crypto.randomUUID()}`;
      await call(crypto.randomUUID(), loud);
      const [line] = await eventually(async () => (linesOf(loud).length > 0 ? linesOf(loud) : undefined), 5_000, "the debug line");
      expect(line).toMatchObject({ level: "debug", msg: "rpc ok", method, code: "ok", request_id: loud, service: "user" });
      expect(line!.trace_id).toMatch(/^[0-9a-f]{32}$/);
    } finally {
      log.level = "info";
    }
  });

  it("logs a failed call at info with its code, request id and message", async () => {
    const requestId = `nf-${crypto.randomUUID()}`;
    const error = await call(missing, requestId).catch((e: unknown) => ConnectError.from(e));
    expect(error).toMatchObject({ code: Code.NotFound });
    const [line] = await eventually(async () => (linesOf(requestId).length > 0 ? linesOf(requestId) : undefined), 5_000, "the failure's line");
    expect(line).toMatchObject({ level: "info", method, code: "not_found" });
    expect(line!.msg).toMatch(/^rpc -> not_found: /);
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`rpc_requests_total\\{[^}]*method="${method}"[^}]*code="not_found"[^}]*\\} 1`));
  });

  it("logs a call slower than SLOW_CALL_MS at warn, though it succeeded", async () => {
    const requestId = `slow-${crypto.randomUUID()}`;
    await call(slow, requestId);
    const [line] = await eventually(async () => (linesOf(requestId).length > 0 ? linesOf(requestId) : undefined), 5_000, "the slow call's line");
    expect(line).toMatchObject({ level: "warn", msg: "slow rpc", method, code: "ok", slow_call_ms: slowCallMs });
    expect(line!.duration_ms as number).toBeGreaterThanOrEqual(slowCallMs);
  });
});

describe("settings of the hot path", () => {
  it("reads SLOW_CALL_MS and DB_POOL_SIZE, with defaults, and refuses bad values", () => {
    expect(loadConfig("user", {})).toMatchObject({ slowCallMs: 1000, dbPoolSize: 10 });
    expect(loadConfig("user", { SLOW_CALL_MS: "250", DB_POOL_SIZE: "4" })).toMatchObject({ slowCallMs: 250, dbPoolSize: 4 });
    let problems = "";
    try {
      loadConfig("user", { SLOW_CALL_MS: "soon", DB_POOL_SIZE: "0" });
    } catch (error) {
      problems = (error as ConfigError).problems.join("\n");
    }
    expect(problems).toMatch(/SLOW_CALL_MS must be an integer/);
    expect(problems).toMatch(/DB_POOL_SIZE must be an integer/);
  });
});
