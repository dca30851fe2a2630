/**
 * What the edge's relay does with both ends of a call, seen from the service and the
 * log: a client that leaves a server stream cancels it upstream, stop() lets calls in
 * flight finish, and a gRPC error carried in trailers counts as a failed request.
 */
import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderSchema, OrderService, OrderStatus } from "../gen/ecommerce/order/v1/order_pb.js";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { requireUser } from "../kit/auth/principal.ts";
import { notFound } from "../kit/errors.ts";
import { createLogger, type Logger } from "../kit/logger.ts";
import { eventually, startMesh, type TestMesh } from "../kit/testing/mesh.ts";
import { TestIssuer } from "../kit/testing/tokens.ts";
import { type RunningEdge, startEdge } from "./edge.ts";

const issuer = new TestIssuer();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const missing = crypto.randomUUID();
const slow = crypto.randomUUID();

const userFixture = issuer.fixture("user", (router) => {
  router.service(UserService, {
    async getMyProfile(_req, ctx) {
      const me = requireUser(ctx);
      if (me.userId === missing) throw notFound("profile", me.userId);
      if (me.userId === slow) await sleep(400);
      return { profile: create(UserProfileSchema, { userId: me.userId }) };
    },
  });
});

/** Each WatchOrder call by order id: whether the service saw it cancelled. */
const watches = new Map<string, { sent: number; cancelled: boolean }>();
const orderFixture = issuer.fixture("order", (router) => {
  router.service(OrderService, {
    async *watchOrder(req, ctx) {
      requireUser(ctx);
      const watch = { sent: 0, cancelled: false };
      watches.set(req.orderId, watch);
      ctx.signal.addEventListener("abort", () => (watch.cancelled = true));
      // Until the client goes away (at most 10 s).
      for (let i = 0; i < 1_000 && !ctx.signal.aborted; i++) {
        yield { order: create(OrderSchema, { id: req.orderId, status: OrderStatus.PENDING }) };
        watch.sent++;
        await sleep(10);
      }
    },
  });
});

let mesh: TestMesh;
let edge: RunningEdge;
let log: Logger;
const lines: Record<string, unknown>[] = [];
let customer: string;
const auth = (token: string, headers: Record<string, string> = {}) => ({ headers: { authorization: `Bearer ${token}`, ...headers } });

beforeAll(async () => {
  mesh = await startMesh([userFixture, orderFixture]);
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  log = createLogger("edge", "info", sink);
  edge = await startEdge({ port: 0, upstreams: { user: mesh.url("user"), order: mesh.url("order") }, logger: log });
  customer = await issuer.user(crypto.randomUUID());
});

afterAll(async () => {
  await edge?.stop();
  await mesh?.stop();
});

describe("the edge's relay", () => {
  it("cancels a server stream upstream when its client leaves mid-stream, over Connect, gRPC-Web and gRPC", async () => {
    const transports: Transport[] = [
      createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" }),
      createGrpcTransport({ baseUrl: edge.url }),
    ];
    for (const transport of transports) {
      const orderId = crypto.randomUUID();
      const abort = new AbortController();
      let received = 0;
      const done = (async () => {
        for await (const _ of createClient(OrderService, transport).watchOrder({ orderId }, { ...auth(customer), signal: abort.signal })) {
          if (++received === 3) abort.abort();
        }
      })().catch((error: unknown) => ConnectError.from(error));
      expect(await done).toMatchObject({ code: Code.Canceled });
      expect(received).toBe(3);
      const watch = await eventually(async () => (watches.get(orderId)?.cancelled ? watches.get(orderId) : undefined), 3_000, "the service seeing the cancel");
      // Cancelled within a few messages, not run to its end.
      expect(watch.sent).toBeLessThan(50);
    }
  });

  it("logs a gRPC error carried in trailers as a failed request", async () => {
    const requestId = `grpc-nf-${crypto.randomUUID()}`;
    const grpc = createClient(UserService, createGrpcTransport({ baseUrl: edge.url }));
    const error = await grpc.getMyProfile({}, auth(await issuer.user(missing), { "x-request-id": requestId })).catch((e: unknown) => ConnectError.from(e));
    expect(error).toMatchObject({ code: Code.NotFound });
    const line = await eventually(async () => lines.find((l) => l.request_id === requestId), 3_000, "the request's line");
    expect(line).toMatchObject({ level: "info", msg: "edge request", status: 200, grpc_status: Code.NotFound, rpc: "ecommerce.user.v1.UserService/GetMyProfile" });
  });

  it("lets a call in flight finish on stop(), then stops listening", async () => {
    const own = await startEdge({ port: 0, upstreams: { user: mesh.url("user") }, logLevel: "silent", shutdownGraceMs: 5_000 });
    const client = createClient(UserService, createConnectTransport({ baseUrl: own.url, httpVersion: "1.1" }));
    const call = client.getMyProfile({}, auth(await issuer.user(slow)));
    await sleep(100);
    const stopped = own.stop();
    await expect(call).resolves.toMatchObject({ profile: { userId: slow } });
    await stopped;
    await expect(fetch(`${own.url}/healthz`)).rejects.toThrow();
  });
});
