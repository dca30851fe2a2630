/**
 * The edge's line per request, read from its log stream: a successful request writes
 * none at info (debug has it), a failed one is logged at info, a slow one
 * (SLOW_CALL_MS) at warn whatever the level.
 */
import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { requireUser } from "../kit/auth/principal.ts";
import { notFound } from "../kit/errors.ts";
import { createLogger, type Logger } from "../kit/logger.ts";
import { defineService } from "../kit/server.ts";
import { eventually, startMesh, type TestMesh } from "../kit/testing/mesh.ts";
import { TestIssuer } from "../kit/testing/tokens.ts";
import { type RunningEdge, startEdge } from "./edge.ts";

const issuer = new TestIssuer();
const missing = crypto.randomUUID();
const slow = crypto.randomUUID();
// Well above a normal call on a loaded machine; the slow fixture call takes twice as long.
const slowCallMs = 300;

const userFixture = issuer.trustedBy(
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

let mesh: TestMesh;
let edge: RunningEdge;
let log: Logger;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  mesh = await startMesh([userFixture]);
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  log = createLogger("edge", "info", sink);
  edge = await startEdge({ port: 0, upstreams: { user: mesh.url("user") }, logger: log, slowCallMs });
  // The first call opens the upstream session; warm up so that no measured call is slow by accident.
  await call(crypto.randomUUID(), "warm-up");
});

afterAll(async () => {
  await edge?.stop();
  await mesh?.stop();
});

const call = async (userId: string, requestId: string) =>
  createClient(UserService, createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" })).getMyProfile(
    {},
    { headers: { authorization: `Bearer ${await issuer.user(userId)}`, "x-request-id": requestId } },
  );
const linesOf = (requestId: string) => lines.filter((l) => l.request_id === requestId);
const lineOf = (requestId: string) => eventually(async () => linesOf(requestId)[0], 5_000, `the line of ${requestId}`);
const rpc = "ecommerce.user.v1.UserService/GetMyProfile";

describe("the edge's line per request", () => {
  it("writes none for a successful request at info, and one at debug", async () => {
    const quiet = `ok-${crypto.randomUUID()}`;
    await call(crypto.randomUUID(), quiet);
    // The failed request after it is logged: once its line is there, the first one would be too.
    const after = `nf-${crypto.randomUUID()}`;
    await call(missing, after).catch(() => undefined);
    await lineOf(after);
    // (Only a call slow by accident could have written one, at warn.)
    expect(linesOf(quiet).filter((l) => l.msg !== "slow edge request")).toEqual([]);

    log.level = "debug";
    try {
      const loud = `ok-${crypto.randomUUID()}`;
      await call(crypto.randomUUID(), loud);
      expect(await lineOf(loud)).toMatchObject({ level: "debug", msg: "edge request", status: 200, rpc, upstream: "user" });
    } finally {
      log.level = "info";
    }
  });

  it("logs a failed request at info with its status and route", async () => {
    const requestId = `nf-${crypto.randomUUID()}`;
    const error = await call(missing, requestId).catch((e: unknown) => ConnectError.from(e));
    expect(error).toMatchObject({ code: Code.NotFound });
    expect(await lineOf(requestId)).toMatchObject({ level: "info", msg: "edge request", status: 404, rpc, upstream: "user" });
  });

  it("logs a request slower than SLOW_CALL_MS at warn, though it succeeded", async () => {
    const requestId = `slow-${crypto.randomUUID()}`;
    await call(slow, requestId);
    const line = await lineOf(requestId);
    expect(line).toMatchObject({ level: "warn", msg: "slow edge request", status: 200, rpc, slow_call_ms: slowCallMs });
    expect(line.duration_ms as number).toBeGreaterThanOrEqual(slowCallMs);
  });
});
