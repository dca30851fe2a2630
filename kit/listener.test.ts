/**
 * A service port's network manners (kit/listener.ts and the fallback of
 * kit/server.ts), against a real service started by the kit with small
 * configured timeouts: slow and silent clients are closed by the server, an
 * idle HTTP/2 session is closed, a request body that never ends is answered 408 and an idle
 * keep-alive connection closed, connections over MAX_CONNECTIONS are closed on
 * arrival, HTTP/2 clients are told the stream limit, a session over its memory limit gets new streams
 * refused, and an unknown method answers in the caller's protocol.
 */
import { connect as http2Connect, constants as http2Constants } from "node:http2";
import { create } from "@bufbuild/protobuf";
import { connect as tcpConnect } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CartService } from "../gen/ecommerce/cart/v1/cart_pb.js";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import type { ServiceDefinition } from "./server.ts";
import { eventually, startMesh, type TestMesh } from "./testing/mesh.ts";
import { closedByServer, slowloris } from "./testing/network.ts";
import { TestIssuer } from "./testing/tokens.ts";

const issuer = new TestIssuer();
const fixture = issuer.fixture("user", (router) => {
  router.service(UserService, {});
});

let mesh: TestMesh;
let url: string;
let port: number;

beforeAll(async () => {
  mesh = await startMesh([fixture], { HEADERS_TIMEOUT_MS: "500", REQUEST_TIMEOUT_MS: "1000", KEEP_ALIVE_TIMEOUT_MS: "500", HTTP2_IDLE_TIMEOUT_MS: "500" });
  url = mesh.url("user");
  port = Number(new URL(url).port);
});

afterAll(async () => {
  await mesh?.stop();
});

describe("slow and idle clients", () => {
  it("closes a connection whose headers never finish (slowloris)", async () => {
    const clients = Array.from({ length: 10 }, () => slowloris(port));
    await Promise.all(clients.map((c) => c.closed));
  });

  it("closes a connection that never sends its first byte", async () => {
    const socket = tcpConnect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    await closedByServer(socket);
  });

  it("closes an idle HTTP/2 session, after serving its calls", async () => {
    const session = http2Connect(url);
    session.on("error", () => undefined);
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    const stream = session.request({ ":path": "/metrics" });
    stream.resume();
    const status = await new Promise((resolve) => stream.once("response", (h) => resolve(h[":status"])));
    expect(status).toBe(200);
    await closed;
  });

  it("closes a connection whose request body never finishes (REQUEST_TIMEOUT_MS), its headers complete", async () => {
    const socket = tcpConnect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    const closed = closedByServer(socket);
    let answer = "";
    socket.on("data", (d: Buffer) => (answer += d.toString()));
    socket.once("connect", () => {
      socket.write("POST /ecommerce.user.v1.UserService/GetMyProfile HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n");
      const drip = setInterval(() => (socket.writable ? socket.write(" ") : clearInterval(drip)), 100);
      socket.once("close", () => clearInterval(drip));
    });
    await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
  });

  // Node's own default is 5 s: a close within the test's 3 s is the configured 500 ms.
  it("closes an idle HTTP/1.1 keep-alive connection after KEEP_ALIVE_TIMEOUT_MS", async () => {
    const socket = tcpConnect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    const closed = closedByServer(socket);
    let answer = "";
    socket.on("data", (d: Buffer) => (answer += d.toString()));
    socket.once("connect", () => socket.write("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"));
    await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
  }, 3_000);

  it("still serves well-behaved clients", async () => {
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
  });
});

describe("an unknown method", () => {
  it("answers a gRPC client (grpc-js) with status 12 UNIMPLEMENTED", async () => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const error = await new Promise<grpc.ServiceError>((resolve, reject) =>
        client.makeUnaryRequest(
          "/ecommerce.cart.v1.CartService/GetCart",
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          (err) => (err ? resolve(err) : reject(new Error("the call succeeded"))),
        ),
      );
      expect(error.code).toBe(grpc.status.UNIMPLEMENTED);
      expect(error.details).toMatch(/user service does not serve \/ecommerce\.cart\.v1\.CartService\/GetCart/);
    } finally {
      client.close();
    }
  });

  it("answers Connect, gRPC-Web and Connect's gRPC clients with Code.Unimplemented", async () => {
    for (const transport of [
      createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
      createConnectTransport({ baseUrl: url, httpVersion: "1.1", useBinaryFormat: true }),
      createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" }),
      createGrpcTransport({ baseUrl: url }),
    ]) {
      const err = ConnectError.from(await createClient(CartService, transport).getCart({}).catch((e) => e));
      expect(err.code).toBe(Code.Unimplemented);
      expect(err.rawMessage).toMatch(/user service does not serve/);
    }
    const res = await fetch(`${url}/ecommerce.cart.v1.CartService/GetCart`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toMatchObject({ code: "unimplemented" });
  });
});

describe("connection and stream limits", () => {
  // A service of its own, with limits small enough to reach: 3 connections, 2 streams per HTTP/2 session.
  let limited: TestMesh;
  let limitedPort: number;
  beforeAll(async () => {
    // Long header timeouts: a silent connection is closed by the connection limit here, not by a timeout.
    limited = await startMesh([fixture], { MAX_CONNECTIONS: "3", HTTP2_MAX_CONCURRENT_STREAMS: "2", HEADERS_TIMEOUT_MS: "60000", REQUEST_TIMEOUT_MS: "60000" });
    limitedPort = Number(new URL(limited.url("user")).port);
  });
  afterAll(async () => {
    await limited?.stop();
  });

  it("closes a connection over MAX_CONNECTIONS on arrival, and takes new ones once others have gone", async () => {
    const held = Array.from({ length: 3 }, () => tcpConnect(limitedPort, "127.0.0.1"));
    for (const s of held) s.on("error", () => undefined);
    await Promise.all(held.map((s) => new Promise((r) => s.once("connect", r))));
    const extra = tcpConnect(limitedPort, "127.0.0.1");
    extra.on("error", () => undefined);
    await closedByServer(extra);
    expect(held.filter((s) => s.destroyed)).toEqual([]); // the ones within the limit are still open
    await Promise.all(held.map((s) => (s.destroy(), closedByServer(s))));
    await eventually(async () => ((await fetch(`${limited.url("user")}/metrics`)).status === 200 ? true : undefined), 10_000, "a new connection served");
  }, 15_000);

  it("tells HTTP/2 clients HTTP2_MAX_CONCURRENT_STREAMS in its SETTINGS", async () => {
    const session = http2Connect(limited.url("user"));
    session.on("error", () => undefined);
    try {
      const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once("remoteSettings", resolve));
      expect(settings.maxConcurrentStreams).toBe(2);
    } finally {
      session.close();
    }
  });
});

describe("HTTP/2 session memory", () => {
  // Answers of 256 KiB to a client that reads none of them: their bytes stay queued in the server's session.
  const big = "x".repeat(256 * 1024);
  const bigFixture: ServiceDefinition = {
    ...fixture,
    routes(router) {
      router.service(UserService, {
        getMyProfile: () => ({ profile: create(UserProfileSchema, { email: big }) }),
      });
    },
  };
  let capped: TestMesh;
  beforeAll(async () => {
    capped = await startMesh([bigFixture], { HTTP2_MAX_SESSION_MEMORY_MB: "1" });
  });
  afterAll(async () => {
    await capped?.stop();
  });

  it("refuses new streams with ENHANCE_YOUR_CALM once a session holds HTTP2_MAX_SESSION_MEMORY_MB, and serves other clients", async () => {
    const token = await issuer.user(crypto.randomUUID());
    // A stream window of 0: the client takes no answer bytes, so each answer stays in the server's buffers.
    const session = http2Connect(capped.url("user"), { settings: { initialWindowSize: 0 } });
    session.on("error", () => undefined);
    const codes: Promise<number>[] = [];
    try {
      for (let i = 0; i < 20; i++) {
        const stream = session.request({
          ":method": "POST",
          ":path": "/ecommerce.user.v1.UserService/GetMyProfile",
          "content-type": "application/grpc",
          te: "trailers",
          authorization: `Bearer ${token}`,
        });
        stream.on("error", () => undefined);
        stream.end(grpcFrame());
        codes.push(new Promise((resolve) => stream.once("close", () => resolve(stream.rstCode ?? 0))));
        // One at a time, so that each answer is queued before the next stream opens.
        await new Promise((resolve) => stream.once("response", resolve).once("close", resolve));
      }
      // Node's own default (10 MiB) would take all 20 answers (5 MiB): none would be refused.
      expect(await closedSoFarOnceRefused(codes)).toContain(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
    } finally {
      session.destroy();
    }
    const other = await createClient(UserService, createGrpcTransport({ baseUrl: capped.url("user") })).getMyProfile({}, { headers: { authorization: `Bearer ${token}` } });
    expect(other.profile?.email).toHaveLength(big.length);
  }, 20_000);
});

/** The close codes of the streams closed so far, once one was refused (the answered ones never finish). */
async function closedSoFarOnceRefused(codes: Promise<number>[]): Promise<number[]> {
  const settled: number[] = [];
  for (const c of codes) void c.then((code) => settled.push(code));
  return eventually(async () => (settled.includes(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM) ? settled : undefined), 10_000, "a stream refused with ENHANCE_YOUR_CALM");
}

const grpcFrame = (message: Uint8Array = new Uint8Array()) => {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
};
