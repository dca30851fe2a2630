/**
 * The TypeScript edge in front of real services started through the kit
 * (fixtures wearing the user and order contracts, since those services are
 * built separately), called by real Connect, gRPC-Web and gRPC clients.
 */
import { createServer as createTcpServer, connect as tcpConnect, type Server as TcpServer, type Socket } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLocalJWKSet, jwtVerify } from "jose";
import { AuthService } from "../gen/ecommerce/auth/v1/auth_pb.js";
import { CartService } from "../gen/ecommerce/cart/v1/cart_pb.js";
import { DeadLetterService } from "../gen/ecommerce/common/v1/dead_letter_pb.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { OrderSchema, OrderService, OrderStatus } from "../gen/ecommerce/order/v1/order_pb.js";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { requireUser } from "../kit/auth/principal.ts";
import { notFound } from "../kit/errors.ts";
import type { AnyServiceDefinition } from "../kit/server.ts";
import { freePort } from "../kit/testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "../kit/testing/mesh.ts";
import { TestIssuer } from "../kit/testing/tokens.ts";
import { type RunningEdge, startEdge } from "./edge.ts";

const issuer = new TestIssuer();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the fixture services received: RPC name and request headers. */
const received: { rpc: string; headers: Record<string, string> }[] = [];
const record = (rpc: string, headers: Headers) => received.push({ rpc, headers: Object.fromEntries(headers) });
const receivedRpcs = () => received.map((r) => r.rpc);

const userFixture: AnyServiceDefinition = {
  name: "user",
  entities: [],
  migrations: [],
  publicKeys: () => () => issuer.jwks(),
  serviceCredentials: () => ({ token: () => issuer.service("user") }),
  routes(router) {
    router.service(UserService, {
      async getMyProfile(_req, ctx) {
        record("GetMyProfile", ctx.requestHeader);
        const me = requireUser(ctx);
        return { profile: create(UserProfileSchema, { userId: me.userId, email: me.email }) };
      },
      async updateMyProfile(req, ctx) {
        record("UpdateMyProfile", ctx.requestHeader);
        const me = requireUser(ctx);
        if (req.profile?.firstName === "slow") await sleep(1_500);
        return { profile: create(UserProfileSchema, { userId: me.userId, firstName: req.profile?.firstName ?? "" }) };
      },
      async getProfile(req, ctx) {
        record("GetProfile", ctx.requestHeader);
        return { profile: create(UserProfileSchema, { userId: req.userId }) };
      },
      async getAddress(req, ctx) {
        record("GetAddress", ctx.requestHeader);
        throw notFound("address", req.addressId);
      },
    });
  },
  // A service with consumers also serves DeadLetterService.
  consumers: () => [],
};

/** Auth's public half: GetJwks with the test issuer's keys. */
const authFixture = issuer.fixture("auth", (router) => {
  router.service(AuthService, {
    async getJwks() {
      const keys = await issuer.jwks();
      return { keys: keys.map((k) => ({ kid: k.kid ?? "", kty: k.kty ?? "", crv: k.crv ?? "", alg: k.alg ?? "", use: k.use ?? "", x: k.x ?? "", y: k.y ?? "" })) };
    },
  });
});

const orderFixture = issuer.fixture("order", (router) => {
  router.service(OrderService, {
    async *watchOrder(req, ctx) {
      requireUser(ctx);
      for (const status of [OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.SHIPPED]) {
        yield { order: create(OrderSchema, { id: req.orderId, status }) };
        await sleep(30);
      }
    },
  });
});

/** A TCP relay in front of a service, so a test can reset the edge's upstream connection. */
async function startRelay(targetPort: number): Promise<{ url: string; reset(): void; close(): void }> {
  const sockets = new Set<Socket>();
  const server: TcpServer = createTcpServer((client) => {
    const upstream = tcpConnect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.once("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${port}`,
    reset: () => {
      for (const s of sockets) s.resetAndDestroy();
    },
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

let mesh: TestMesh;
let edge: RunningEdge;
let defaultEdge: RunningEdge;
let relay: Awaited<ReturnType<typeof startRelay>>;
let customer: string;
let admin: string;
const auth = (token: string, headers: Record<string, string> = {}) => ({ headers: { authorization: `Bearer ${token}`, ...headers } });
const connectJson = (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "1.1" });
const maxBodyBytes = 16 * 1024;

beforeAll(async () => {
  mesh = await startMesh([userFixture, orderFixture, authFixture]);
  edge = await startEdge({
    port: 0,
    // The cart service is never started: its calls must fail cleanly.
    upstreams: { user: mesh.url("user"), order: mesh.url("order"), cart: mesh.url("cart"), auth: mesh.url("auth") },
    allowedOrigins: ["https://shop.example"],
    maxBodyBytes,
    upstreamTimeoutMs: 1_000,
    logLevel: process.env.TEST_LOG_LEVEL ?? "silent",
  });
  relay = await startRelay(Number(new URL(mesh.url("user")).port));
  defaultEdge = await startEdge({ port: 0, upstreams: { user: relay.url }, logLevel: process.env.TEST_LOG_LEVEL ?? "silent" });
  customer = await issuer.user(crypto.randomUUID());
  admin = await issuer.user(crypto.randomUUID(), ["customer", "admin"]);
});

afterAll(async () => {
  await edge?.stop();
  await defaultEdge?.stop();
  relay?.close();
  await mesh?.stop();
});

describe("forwarding to the services", () => {
  it("carries Connect JSON, Connect binary and Connect GET over HTTP/1.1", async () => {
    const transports: Transport[] = [
      connectJson(edge.url),
      createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1", useBinaryFormat: true }),
      createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1", useHttpGet: true }),
    ];
    for (const transport of transports) {
      const res = await createClient(UserService, transport).getMyProfile({}, auth(customer));
      expect(res.profile?.email).toMatch(/@example\.test$/);
    }
  });

  it("carries gRPC-Web over HTTP/1.1, and gRPC over HTTP/2 with its trailers", async () => {
    const web = createClient(UserService, createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" }));
    expect((await web.getMyProfile({}, auth(customer))).profile?.userId).toBeTruthy();
    const grpc = createClient(UserService, createGrpcTransport({ baseUrl: edge.url }));
    expect((await grpc.getMyProfile({}, auth(customer))).profile?.userId).toBeTruthy();
    // The error and its details travel in gRPC trailers.
    const err = ConnectError.from(await grpc.getProfile({ userId: crypto.randomUUID() }, auth(customer)).catch((e) => e));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("ADMIN_ROLE_REQUIRED");
  });

  it("relays the services' errors with their details to Connect and gRPC-Web clients", async () => {
    for (const transport of [connectJson(edge.url), createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" })]) {
      const client = createClient(UserService, transport);
      await expect(client.getMyProfile({})).rejects.toMatchObject({ code: Code.Unauthenticated });
      const err = ConnectError.from(await client.getProfile({ userId: crypto.randomUUID() }, auth(customer)).catch((e) => e));
      expect(err.code).toBe(Code.PermissionDenied);
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("ADMIN_ROLE_REQUIRED");
      await expect(client.getProfile({ userId: crypto.randomUUID() }, auth(admin))).resolves.toBeDefined();
    }
  });

  it("streams WatchOrder to Connect and gRPC-Web clients over HTTP/1.1", async () => {
    const orderId = crypto.randomUUID();
    for (const transport of [connectJson(edge.url), createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" })]) {
      const statuses: OrderStatus[] = [];
      for await (const msg of createClient(OrderService, transport).watchOrder({ orderId }, auth(customer))) {
        expect(msg.order?.id).toBe(orderId);
        statuses.push(msg.order!.status);
      }
      expect(statuses).toEqual([OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.SHIPPED]);
    }
  });

  it("passes x-request-id (or makes one), traceparent and x-forwarded-for, and drops on-behalf-of tokens", async () => {
    const client = createClient(UserService, connectJson(edge.url));
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let answered: Headers | undefined;
    await client.getMyProfile({}, {
      ...auth(customer, { "x-request-id": "edge-test-1", traceparent, "x-end-user-authorization": `Bearer ${admin}` }),
      onHeader: (h) => (answered = h),
    });
    const seen = received.at(-1)!;
    expect(seen.rpc).toBe("GetMyProfile");
    expect(seen.headers["x-request-id"]).toBe("edge-test-1");
    expect(seen.headers.traceparent).toBe(traceparent);
    expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen.headers).not.toHaveProperty("x-end-user-authorization");
    expect(answered?.get("x-request-id")).toBe("edge-test-1");

    await client.getMyProfile({}, { ...auth(customer), onHeader: (h) => (answered = h) });
    const generated = answered?.get("x-request-id");
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    expect(received.at(-1)!.headers["x-request-id"]).toBe(generated);
    // The edge's own errors carry it too.
    const res = await fetch(`${edge.url}/nope.v1.Nope/Nothing`, { method: "POST", headers: { "x-request-id": "edge-test-2" } });
    expect(res.headers.get("x-request-id")).toBe("edge-test-2");
  });

  it("sets X-Forwarded-For to the TCP peer itself, dropping what the client claims about its address", async () => {
    const forged = {
      "x-forwarded-for": "203.0.113.7",
      "x-forwarded-proto": "https",
      "x-forwarded-host": "evil.example",
      "x-forwarded-port": "443",
      forwarded: "for=203.0.113.7;proto=https",
      "x-real-ip": "203.0.113.7",
    };
    for (const transport of [connectJson(edge.url), createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" }), createGrpcTransport({ baseUrl: edge.url })]) {
      await createClient(UserService, transport).getMyProfile({}, auth(customer, forged));
      const seen = received.at(-1)!.headers;
      expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
      expect(seen["x-forwarded-proto"]).toBe("http");
      expect(seen["x-forwarded-host"]).toBe(new URL(edge.url).host);
      for (const name of ["x-forwarded-port", "forwarded", "x-real-ip"]) expect(seen).not.toHaveProperty(name);
    }
  });

  it("serves Auth's public keys as a standard JWKS document at /.well-known/jwks.json", async () => {
    const res = await fetch(`${edge.url}/.well-known/jwks.json?message=ignored`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("cache-control")).toBe("public, max-age=300");
    const document = (await res.json()) as { keys: Record<string, string>[] };
    expect(document).toEqual({ keys: await issuer.jwks() });
    // Any JOSE library verifies the mesh's tokens with it.
    const { payload } = await jwtVerify(customer, createLocalJWKSet(document as Parameters<typeof createLocalJWKSet>[0]));
    expect(payload.roles).toEqual(["customer"]);
    // An edge without Auth's address says so, in JSON.
    const none = await fetch(`${defaultEdge.url}/.well-known/jwks.json`);
    expect(none.status).toBe(503);
    expect(await none.json()).toMatchObject({ code: "unavailable", message: expect.stringMatching(/auth service/) });
  });

  it("reaches a service's DeadLetterService under /admin/<service>, for admins only", async () => {
    const dlq = createClient(DeadLetterService, connectJson(`${edge.url}/admin/user`));
    await expect(dlq.listDeadLetters({}, auth(admin))).resolves.toMatchObject({ deadLetters: [] });
    await expect(dlq.listDeadLetters({}, auth(customer))).rejects.toMatchObject({ code: Code.PermissionDenied });
    // The order fixture consumes no events, so it serves no DeadLetterService.
    const none = createClient(DeadLetterService, connectJson(`${edge.url}/admin/order`));
    await expect(none.listDeadLetters({}, auth(admin))).rejects.toMatchObject({ code: Code.Unimplemented });
  });
});

describe("what the edge refuses", () => {
  it("refuses an INTERNAL RPC as an unknown path, over every protocol, without forwarding it", async () => {
    const service = await issuer.service("order");
    const request = { userId: crypto.randomUUID(), addressId: crypto.randomUUID() };
    for (const transport of [connectJson(edge.url), createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" }), createGrpcTransport({ baseUrl: edge.url })]) {
      const err = ConnectError.from(await createClient(UserService, transport).getAddress(request, auth(service)).catch((e) => e));
      expect(err.code).toBe(Code.NotFound);
      expect(err.rawMessage).toBe("no RPC is served at /ecommerce.user.v1.UserService/GetAddress");
    }
    expect(receivedRpcs()).not.toContain("GetAddress");
    // Called directly inside the mesh, the same call does reach the service.
    const direct = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
    await expect(direct.getAddress(request, auth(service))).rejects.toMatchObject({ code: Code.NotFound });
    expect(receivedRpcs()).toContain("GetAddress");
  });

  it("answers an unknown path, gRPC health and a wrong method with a Connect JSON error", async () => {
    for (const path of ["/nope.v1.Nope/Nothing", "/grpc.health.v1.Health/Check", "/ecommerce.common.v1.DeadLetterService/ListDeadLetters", "/"]) {
      const res = await fetch(`${edge.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      expect(res.status, path).toBe(404);
      expect(res.headers.get("content-type")).toBe("application/json");
      expect(await res.json()).toEqual({ code: "not_found", message: `no RPC is served at ${path}` });
    }
    const get = await fetch(`${edge.url}/ecommerce.user.v1.UserService/UpdateMyProfile`);
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    expect(await get.json()).toMatchObject({ code: "unimplemented" });
  });

  it("refuses a body over the limit with 413 / resource_exhausted before it reaches the service", async () => {
    const before = receivedRpcs().filter((r) => r === "UpdateMyProfile").length;
    const client = createClient(UserService, connectJson(edge.url));
    const big = { profile: { firstName: "x".repeat(maxBodyBytes) }, updateMask: { paths: ["first_name"] } };
    await expect(client.updateMyProfile(big, auth(customer))).rejects.toMatchObject({ code: Code.ResourceExhausted });
    const web = createClient(UserService, createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" }));
    await expect(web.updateMyProfile(big, auth(customer))).rejects.toMatchObject({ code: Code.ResourceExhausted });
    const res = await fetch(`${edge.url}/ecommerce.user.v1.UserService/UpdateMyProfile`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(big),
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ code: "resource_exhausted" });
    expect(receivedRpcs().filter((r) => r === "UpdateMyProfile").length).toBe(before);
    // Below the limit the same call goes through.
    await expect(client.updateMyProfile({ profile: { firstName: "Ada" }, updateMask: { paths: ["first_name"] } }, auth(customer))).resolves.toBeDefined();
  });

  it("answers unavailable naming a service that is down, and deadline_exceeded for one too slow", async () => {
    for (const transport of [connectJson(edge.url), createGrpcWebTransport({ baseUrl: edge.url, httpVersion: "1.1" })]) {
      const err = ConnectError.from(await createClient(CartService, transport).getCart({}).catch((e) => e));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the cart service is unavailable \(connection refused\)/);
    }
    const res = await fetch(`${edge.url}/ecommerce.cart.v1.CartService/GetCart`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(res.status).toBe(503);
    // A service the edge has no address for.
    const err = ConnectError.from(await createClient(CartService, connectJson(defaultEdge.url)).getCart({}).catch((e) => e));
    expect(err).toMatchObject({ code: Code.Unavailable, rawMessage: expect.stringMatching(/cart service/) });

    const slow = createClient(UserService, connectJson(edge.url));
    const late = ConnectError.from(await slow.updateMyProfile({ profile: { firstName: "slow" }, updateMask: { paths: ["first_name"] } }, auth(customer)).catch((e) => e));
    expect(late.code).toBe(Code.DeadlineExceeded);
    expect(late.rawMessage).toMatch(/the user service did not answer within 1000 ms/);
  });

  it("survives its upstream connection being reset, and reconnects", async () => {
    const client = createClient(UserService, connectJson(defaultEdge.url));
    await expect(client.getMyProfile({}, auth(customer))).resolves.toBeDefined();
    relay.reset();
    await eventually(async () => ((await client.getMyProfile({}, { ...auth(customer), timeoutMs: 2_000 })).profile ? true : undefined), 5_000, "a call after the reset");
    await expect(fetch(`${defaultEdge.url}/healthz`).then((r) => r.json())).resolves.toEqual({ status: "ok" });
  });
});

describe("CORS", () => {
  const preflight = (url: string, origin: string) =>
    fetch(`${url}/ecommerce.user.v1.UserService/GetMyProfile`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type, connect-protocol-version, authorization" },
    });

  it("answers a preflight from an allowed origin with the Connect and gRPC-Web headers, and not others", async () => {
    const ok = await preflight(edge.url, "https://shop.example");
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://shop.example");
    expect(ok.headers.get("access-control-allow-methods")).toBe("GET, POST, OPTIONS");
    expect(ok.headers.get("access-control-allow-headers")!.split(", ")).toEqual([
      "content-type",
      "connect-protocol-version",
      "connect-timeout-ms",
      "grpc-timeout",
      "x-grpc-web",
      "x-user-agent",
      "authorization",
      "x-request-id",
      "traceparent",
    ]);
    const denied = await preflight(edge.url, "https://evil.example");
    expect(denied.status).toBe(403);
    expect(denied.headers.get("access-control-allow-origin")).toBeNull();
    expect(denied.headers.get("access-control-allow-headers")).toBeNull();
  });

  it("lets an allowed origin read the gRPC status headers of an answer", async () => {
    const res = await fetch(`${edge.url}/ecommerce.user.v1.UserService/GetMyProfile`, {
      method: "POST",
      headers: { origin: "https://shop.example", "content-type": "application/json", authorization: `Bearer ${customer}` },
      body: "{}",
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://shop.example");
    expect(res.headers.get("access-control-expose-headers")).toBe("grpc-status, grpc-message, grpc-status-details-bin, x-request-id");
    const other = await fetch(`${edge.url}/healthz`, { headers: { origin: "https://evil.example" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("allows only localhost origins by default", async () => {
    for (const origin of ["http://localhost:5173", "http://127.0.0.1:3000", "https://localhost"]) {
      expect((await preflight(defaultEdge.url, origin)).headers.get("access-control-allow-origin"), origin).toBe(origin);
    }
    for (const origin of ["https://shop.example", "http://localhost.evil.example"]) {
      expect((await preflight(defaultEdge.url, origin)).status, origin).toBe(403);
    }
  });
});
