/**
 * Deadlines through the kit: a deadline above MAX_TIMEOUT_MS is served with the
 * cap (not refused), a call without one gets the cap, a peer call carries no more
 * than what is left of the call that makes it, and work whose deadline has passed
 * stops: its statement is cancelled in PostgreSQL and its transaction never commits.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService, GetJwksResponseSchema } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { grpcTimeoutMs } from "../../kit/context.ts";
import type { AnyServiceDefinition } from "../../kit/server.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { authService } from "../../services/auth/service.ts";

const issuer = new TestIssuer();

const probe = { lookup: { case: "slug" as const, value: "any-product" } };

async function failure(call: Promise<unknown>): Promise<ConnectError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  if (!error) throw new Error("expected the call to fail");
  return error;
}

describe("deadlines between services", () => {
  /** What the stand-in peer saw: the grpc-timeout of each call to it. */
  const peerTimeouts: (string | null)[] = [];
  /** What the calling stand-in saw: the deadline it was given. */
  const ownTimeouts: (number | undefined)[] = [];
  let mesh: TestMesh;

  // A stand-in Auth answers GetJwks (recording the deadline it got); a stand-in Product's
  // GetProduct calls it, as any handler calls a peer.
  const peer: AnyServiceDefinition = {
    name: "auth",
    entities: [],
    migrations: [],
    routes(router) {
      router.service(AuthService, {
        getJwks(_req, ctx) {
          peerTimeouts.push(ctx.requestHeader.get("grpc-timeout"));
          return create(GetJwksResponseSchema, {});
        },
      });
    },
  };
  const caller: AnyServiceDefinition = {
    name: "product",
    entities: [],
    migrations: [],
    routes(router, service) {
      router.service(ProductService, {
        async getProduct(_req, ctx) {
          ownTimeouts.push(ctx.timeoutMs());
          await service.peers.client(AuthService).getJwks({});
          return {};
        },
      });
    },
  };

  beforeAll(async () => {
    mesh = await startMesh([peer, caller].map((def) => issuer.trustedBy(def)), { MAX_TIMEOUT_MS: "30000", CALL_TIMEOUT_MS: "5000" });
  });
  afterAll(async () => {
    await mesh?.stop();
  });

  it("serves a deadline above MAX_TIMEOUT_MS with the cap (Python's timeout=30 arrives as ~30100 ms), over gRPC and Connect", async () => {
    const grpcClient = createClient(ProductService, createGrpcTransport({ baseUrl: mesh.url("product") }));
    const connectClient = createClient(ProductService, createConnectTransport({ baseUrl: mesh.url("product"), httpVersion: "1.1" }));
    // 60 s as well: the time a slow first call spends before its handler must not hide a missing cap on 30.1 s.
    for (const timeoutMs of [30_100, 60_000]) {
      ownTimeouts.length = 0;
      await grpcClient.getProduct(probe, { timeoutMs });
      await connectClient.getProduct(probe, { timeoutMs });
      expect(ownTimeouts, `asked for ${timeoutMs} ms`).toHaveLength(2);
      for (const t of ownTimeouts) expect(t, `asked for ${timeoutMs} ms`).toBeLessThanOrEqual(30_000);
    }
  });

  it("gives a call without a deadline the maximum", async () => {
    ownTimeouts.length = 0;
    const client = createClient(ProductService, createGrpcTransport({ baseUrl: mesh.url("product") }));
    await client.getProduct(probe);
    expect(ownTimeouts[0]).toBeDefined();
    expect(ownTimeouts[0]!).toBeLessThanOrEqual(30_000);
  });

  it("passes the time left of the inbound call on to the peer call, not CALL_TIMEOUT_MS", async () => {
    peerTimeouts.length = 0;
    const client = createClient(ProductService, createGrpcTransport({ baseUrl: mesh.url("product") }));
    await client.getProduct(probe, { timeoutMs: 300 });
    expect(peerTimeouts).toHaveLength(1);
    expect(grpcTimeoutMs(peerTimeouts[0]!)).toBeLessThanOrEqual(300);
    // Without an inbound deadline shorter than it, the peer call gets CALL_TIMEOUT_MS.
    await client.getProduct(probe, { timeoutMs: 20_000 });
    expect(grpcTimeoutMs(peerTimeouts[1]!)).toBeLessThanOrEqual(5_000);
  });
});

describe("deadlines and the database", () => {
  let mesh: TestMesh;
  let db: pg.Client;

  beforeAll(async () => {
    mesh = await startMesh([issuer.trustedBy(authService)]);
    db = new pg.Client({ connectionString: mesh.services.auth!.ctx.config.databaseUrl });
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    await mesh?.stop();
  });

  const loginCount = async () => {
    const metric = await mesh.services.auth!.ctx.metrics.rpcTotal.get();
    return metric.values.filter((v) => String(v.labels.method).endsWith("/Login")).reduce((n, v) => n + v.value, 0);
  };
  const waitingOnLocks = async () =>
    Number(
      (
        await db.query<{ n: string }>("select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()")
      ).rows[0]!.n,
    );

  it("a Login whose deadline passes while its statement waits is cancelled in PostgreSQL and creates no session", async () => {
    const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
    const email = `late${Date.now()}@example.test`;
    const password = "velvet otter maple drum 4711";
    const { user } = await auth.register({ email, password, firstName: "Ada", lastName: "Late" });
    const sessions = async () => Number((await db.query<{ n: string }>("select count(*) as n from refresh_tokens where user_id = $1", [user!.id])).rows[0]!.n);
    const before = await sessions();

    // Slow the database down: hold a lock that Login's session insert has to wait for.
    await db.query("begin");
    await db.query("lock table refresh_tokens in access exclusive mode");
    try {
      const error = await failure(auth.login({ email, password }, { timeoutMs: 1_500 }));
      expect(error.code).toBe(Code.DeadlineExceeded);
      // The waiting statement is cancelled by PostgreSQL while the lock is still held.
      await eventually(async () => ((await waitingOnLocks()) === 0 ? true : undefined), 10_000, "the late Login's statement cancelled");
    } finally {
      await db.query("rollback");
    }
    // Once the handler has finished, nothing of the late Login was committed.
    await eventually(async () => ((await loginCount()) >= 1 ? true : undefined), 10_000, "the late Login finished");
    expect(await sessions()).toBe(before);
    // The same Login in time still works.
    expect((await auth.login({ email, password })).tokens).toBeDefined();
    expect(await sessions()).toBe(before + 1);
  });

  it("a Login whose 5 ms deadline passes in the password check (before any statement of its session) creates no session", async () => {
    const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
    const email = `hasty${Date.now()}@example.test`;
    const password = "velvet otter maple drum 4711";
    const { user } = await auth.register({ email, password, firstName: "Ada", lastName: "Hasty" });
    const sessions = async () => Number((await db.query<{ n: string }>("select count(*) as n from refresh_tokens where user_id = $1", [user!.id])).rows[0]!.n);
    const before = await sessions();
    const finished = await loginCount();
    // argon2id alone takes longer than 5 ms: the deadline passes while the handler still runs.
    const error = await failure(auth.login({ email, password }, { timeoutMs: 5 }));
    expect(error.code).toBe(Code.DeadlineExceeded);
    await eventually(async () => ((await loginCount()) > finished ? true : undefined), 10_000, "the late Login finished");
    expect(await sessions()).toBe(before);
  });
});

describe("deadlines of streams", () => {
  let mesh: TestMesh;
  const seenTimeouts: (number | undefined)[] = [];
  // A service whose MAX_TIMEOUT_MS is tiny: unary calls get at most 100 ms, streams keep what they ask for.
  const service: AnyServiceDefinition = {
    name: "product",
    entities: [],
    migrations: [],
    routes(router) {
      router.service(ProductService, {
        getProduct(_req, ctx) {
          seenTimeouts.push(ctx.timeoutMs());
          return {};
        },
      });
    },
  };

  beforeAll(async () => {
    mesh = await startMesh([issuer.trustedBy(service)], { MAX_TIMEOUT_MS: "100" });
  });
  afterAll(async () => {
    await mesh?.stop();
  });

  it("keeps a server stream without a deadline open past MAX_TIMEOUT_MS, while unary calls are capped", async () => {
    const transport = createGrpcTransport({ baseUrl: mesh.url("product") });
    await createClient(ProductService, transport).getProduct(probe, { timeoutMs: 10_000 });
    expect(seenTimeouts.at(-1)).toBeLessThanOrEqual(100);

    const health = createClient(Health, transport);
    const abort = new AbortController();
    const seen: HealthCheckResponse_ServingStatus[] = [];
    const opened = Date.now();
    const watching = (async () => {
      for await (const r of health.watch({ service: "" }, { signal: abort.signal })) {
        seen.push(r.status);
        if (r.status === HealthCheckResponse_ServingStatus.NOT_SERVING && seen.includes(HealthCheckResponse_ServingStatus.SERVING)) return;
      }
    })().catch((e: unknown) => ConnectError.from(e));
    await eventually(async () => (seen.includes(HealthCheckResponse_ServingStatus.SERVING) ? true : undefined));
    // Well past the cap, the stream still delivers the next change.
    await eventually(async () => (Date.now() - opened > 500 ? true : undefined));
    await mesh.nats.pause();
    const outcome = await watching;
    abort.abort();
    expect(outcome).toBeUndefined(); // ended by us, not by a deadline
    expect(seen.slice(-2)).toEqual([HealthCheckResponse_ServingStatus.SERVING, HealthCheckResponse_ServingStatus.NOT_SERVING]);
    await mesh.nats.resume();
  });
});
