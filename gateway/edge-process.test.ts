/**
 * The edge as `npm start` runs it, a process of its own (`node gateway/main.ts`),
 * so that a crash is seen as what it is: the process exiting. Clients misbehave
 * on purpose here (cancelled calls and server streams, slow headers, idle sessions); the edge must
 * close what it should and keep serving everyone else.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { connect as http2Connect, constants as http2Constants } from "node:http2";
import { connect as tcpConnect } from "node:net";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { OrderSchema, OrderService, OrderStatus, WatchOrderRequestSchema } from "../gen/ecommerce/order/v1/order_pb.js";
import { requireUser } from "../kit/auth/principal.ts";
import { freePort } from "../kit/testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "../kit/testing/mesh.ts";
import { closedByServer, slowloris } from "../kit/testing/network.ts";
import { TestIssuer } from "../kit/testing/tokens.ts";

const issuer = new TestIssuer();

const userFixture = issuer.fixture("user", (router) => {
  router.service(UserService, {
    async getMyProfile(_req, ctx) {
      const me = requireUser(ctx);
      // Slow enough that a client cancelling within a few ms does so mid-call.
      await new Promise((r) => setTimeout(r, 5));
      return { profile: create(UserProfileSchema, { userId: me.userId, email: me.email }) };
    },
  });
});

let watchesServed = 0;
const orderFixture = issuer.fixture("order", (router) => {
  router.service(OrderService, {
    async *watchOrder(req, ctx) {
      requireUser(ctx);
      watchesServed++;
      // A message at once, then more every few ms until the client goes away.
      for (let i = 0; i < 200 && !ctx.signal.aborted; i++) {
        yield { order: create(OrderSchema, { id: req.orderId, status: OrderStatus.PENDING }) };
        await new Promise((r) => setTimeout(r, 2));
      }
    },
  });
});

let mesh: TestMesh;
let edge: ChildProcess;
let edgeUrl: string;
let output = "";
let customer: string;

beforeAll(async () => {
  mesh = await startMesh([userFixture, orderFixture]);
  customer = await issuer.user(crypto.randomUUID());
  const port = await freePort();
  edgeUrl = `http://127.0.0.1:${port}`;
  edge = spawn(process.execPath, [join(import.meta.dirname, "main.ts")], {
    env: {
      ...process.env,
      PORT: String(port),
      USER_SERVICE_URL: mesh.url("user"),
      ORDER_SERVICE_URL: mesh.url("order"),
      LOG_LEVEL: "info",
      // Small, so that slow and idle clients are closed within the test.
      HEADERS_TIMEOUT_MS: "500",
      REQUEST_TIMEOUT_MS: "1000",
      HTTP2_IDLE_TIMEOUT_MS: "500",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  edge.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  edge.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  await eventually(async () => {
    if (edge.exitCode !== null) throw new Error(`the edge exited:\n${output}`);
    return output.includes('"edge listening"') ? true : undefined;
  }, 30_000, "the edge listening");
});

afterAll(async () => {
  if (edge && edge.exitCode === null && edge.signalCode === null) {
    const exited = new Promise((r) => edge.once("exit", r));
    edge.kill("SIGTERM");
    await exited;
  }
  await mesh?.stop();
});

const connectFrame = (message: Uint8Array) => grpcFrame(message);
const grpcFrame = (message: Uint8Array = new Uint8Array()) => {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
};

/**
 * 30 gRPC calls to `path` over one HTTP/2 session, each cancelled (RST_STREAM CANCEL) 0–9 ms after it
 * was sent, as the issue reproduced the crash; resolves with the session once every stream has closed.
 */
async function cancelledSoonAfterSending(path: string, body: Buffer) {
  const session = http2Connect(edgeUrl);
  session.on("error", () => undefined);
  const closed: Promise<void>[] = [];
  for (let i = 0; i < 30; i++) {
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${customer}` });
    stream.on("error", () => undefined);
    stream.resume();
    stream.end(body);
    closed.push(new Promise((resolve) => stream.once("close", () => resolve())));
    setTimeout(() => stream.close(http2Constants.NGHTTP2_CANCEL), i % 10);
  }
  await Promise.all(closed);
  return session;
}

describe("the edge process under misbehaving clients", () => {
  it("survives gRPC calls that the client cancels right after sending them", async () => {
    const session = await cancelledSoonAfterSending("/ecommerce.user.v1.UserService/GetMyProfile", grpcFrame());
    session.close();

    const client = createClient(UserService, createGrpcTransport({ baseUrl: edgeUrl }));
    const res = await client.getMyProfile({}, { headers: { authorization: `Bearer ${customer}` } }).catch((error: Error) => error);
    expect(edge.exitCode, output).toBeNull();
    expect(res, output).not.toBeInstanceOf(Error);
    expect(output).not.toMatch(/ERR_HTTP2_INVALID_STREAM/);
  });

  // A stream the client closes with NO_ERROR is a close, not an abort: the edge must still cancel its
  // upstream call and neither answer nor warn (the fastify edge once reached its error path here).
  it("survives calls that the client closes with NO_ERROR before the answer, over gRPC and Connect, without warning of them", async () => {
    const mark = output.length;
    const session = http2Connect(edgeUrl);
    session.on("error", () => undefined);
    const closed: Promise<void>[] = [];
    for (const contentType of ["application/grpc", "application/proto"]) {
      for (let i = 0; i < 20; i++) {
        const stream = session.request({
          ":method": "POST",
          ":path": "/ecommerce.user.v1.UserService/GetMyProfile",
          "content-type": contentType,
          ...(contentType === "application/grpc" ? { te: "trailers" } : { "connect-protocol-version": "1" }),
          authorization: `Bearer ${customer}`,
        });
        stream.on("error", () => undefined);
        stream.resume();
        stream.end(contentType === "application/grpc" ? grpcFrame() : Buffer.alloc(0));
        closed.push(new Promise((resolve) => stream.once("close", () => resolve())));
        setTimeout(() => stream.close(http2Constants.NGHTTP2_NO_ERROR), i % 10);
      }
    }
    await Promise.all(closed);
    session.close();

    const client = createClient(UserService, createGrpcTransport({ baseUrl: edgeUrl }));
    const res = await client.getMyProfile({}, { headers: { authorization: `Bearer ${customer}` } }).catch((error: Error) => error);
    expect(edge.exitCode, output).toBeNull();
    expect(res, output).not.toBeInstanceOf(Error);
    // The edge's own guard (onError): a call its client closed is no upstream failure to warn about.
    expect(output.slice(mark)).not.toMatch(/upstream call failed/);
    expect(output).not.toMatch(/ERR_HTTP2_INVALID_STREAM|ERR_STREAM_DESTROYED|uncaught/i);
  });

  it("survives server streams (WatchOrder) that the client cancels mid-stream, over gRPC, Connect and gRPC-Web", async () => {
    const orderId = crypto.randomUUID();
    const session = await cancelledSoonAfterSending("/ecommerce.order.v1.OrderService/WatchOrder", grpcFrame(toBinary(WatchOrderRequestSchema, create(WatchOrderRequestSchema, { orderId }))));
    session.close();
    // HTTP/1.1 clients (Connect, gRPC-Web) that drop the connection mid-stream.
    for (const contentType of ["application/connect+proto", "application/grpc-web+proto"]) {
      const ends: Promise<void>[] = [];
      for (let i = 0; i < 10; i++) {
        const abort = new AbortController();
        const body = contentType.startsWith("application/connect")
          ? connectFrame(toBinary(WatchOrderRequestSchema, create(WatchOrderRequestSchema, { orderId })))
          : grpcFrame(toBinary(WatchOrderRequestSchema, create(WatchOrderRequestSchema, { orderId })));
        ends.push(
          fetch(`${edgeUrl}/ecommerce.order.v1.OrderService/WatchOrder`, {
            method: "POST",
            headers: { "content-type": contentType, authorization: `Bearer ${customer}` },
            body,
            signal: abort.signal,
          })
            .then(async (res) => {
              const reader = res.body!.getReader();
              await reader.read();
              abort.abort();
            })
            .catch(() => undefined),
        );
        setTimeout(() => abort.abort(), i % 10);
      }
      await Promise.all(ends);
    }

    const client = createClient(UserService, createGrpcTransport({ baseUrl: edgeUrl }));
    const res = await client.getMyProfile({}, { headers: { authorization: `Bearer ${customer}` } }).catch((error: Error) => error);
    expect(edge.exitCode, output).toBeNull();
    expect(res, output).not.toBeInstanceOf(Error);
    expect(output).not.toMatch(/ERR_HTTP2_INVALID_STREAM|ERR_STREAM_DESTROYED|uncaught/i);
    expect(watchesServed).toBeGreaterThan(0); // the calls reached the service: cancelled mid-stream, not before
  });

  it("closes connections whose headers never finish (slowloris), and ones that never send a byte", async () => {
    const clients = Array.from({ length: 10 }, () => slowloris(Number(new URL(edgeUrl).port)));
    const silent = tcpConnect(Number(new URL(edgeUrl).port), "127.0.0.1");
    silent.on("error", () => undefined);
    await Promise.all([...clients.map((c) => c.closed), closedByServer(silent)]);
    expect(edge.exitCode, output).toBeNull();
  });

  it("closes an idle HTTP/2 session after its calls are done", async () => {
    const session = http2Connect(edgeUrl);
    session.on("error", () => undefined);
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    const stream = session.request({ ":path": "/healthz" });
    stream.resume();
    expect(await new Promise((resolve) => stream.once("response", (h) => resolve(h[":status"])))).toBe(200);
    await closed;
  });
});
