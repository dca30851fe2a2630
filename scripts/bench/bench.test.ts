/**
 * The bench's own parts that its figures rest on: the bare Connect servers answer
 * exactly what the real services answer (same message, so the same wire shape),
 * and the SQL counter counts statements and round trips as docs/bench.md says,
 * through both copies of pg (ours and MikroORM's); the checkout baseline writes a
 * checkout's rows in one transaction, and a phase over prepared requests ends when
 * they are used up.
 */
import { createServer } from "node:http";
import { equals } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { GetProductResponseSchema, ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { GetMyProfileResponseSchema, UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { postgresAdminUrl } from "../../kit/testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { authService } from "../../services/auth/service.ts";
import { seedCatalog } from "../../services/product/seed.ts";
import { startProductHarness, type ProductHarness } from "../../services/product/testing.ts";
import { userService } from "../../services/user/service.ts";
import { bareProductServer, bareUserServer } from "./bare.ts";
import { startEdgeProcess } from "./edge-process.ts";
import { installSqlCounter, Meter, sqlCounters } from "./meter.ts";
import { checkoutOutboxRows, startCheckoutBaseline } from "./checkout.ts";
import { Exhausted, Generator, runPhase } from "./load.ts";

describe("bench: GetMyProfile and the SQL counter", () => {
  let mesh: TestMesh;
  beforeAll(async () => {
    installSqlCounter();
    mesh = await startMesh([authService, userService]);
  });
  afterAll(() => mesh?.stop());

  it("bare Connect answers GetMyProfile with the service's message", async () => {
    const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
    const registered = await auth.register({ email: `bench-test-${Date.now()}@example.test`, password: "quartz lantern bench river 8812" });
    const userId = registered.user!.id;
    const headers = { authorization: `Bearer ${registered.tokens!.accessToken}` };
    const users = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
    await eventually(() => users.getMyProfile({}, { headers }).catch(() => undefined), 15_000, "profile");
    // Every optional column filled, so each mapping is compared.
    await mesh.services.user!.ctx.orm.em
      .fork()
      .getConnection()
      .execute(
        "update user_profiles set phone = '+49301234567', avatar_url = 'https://example.test/a.png', date_of_birth = '1990-05-01', gender = 'female', preferred_currency = 'EUR', preferred_language = 'de-DE', last_login_at = now() where user_id = ?",
        [userId],
      );
    const real = await users.getMyProfile({}, { headers });
    const bare = await bareUserServer(mesh.services.user!.ctx.config.databaseUrl, userId);
    try {
      const answer = await createClient(UserService, createGrpcTransport({ baseUrl: bare.url })).getMyProfile({});
      expect(real.profile?.dateOfBirth).toBe("1990-05-01");
      expect(equals(GetMyProfileResponseSchema, answer, real)).toBe(true);
    } finally {
      await bare.stop();
    }
  });

  it("counts statements sent through pg and MikroORM, and parallel ones as one round trip", async () => {
    const pool = new pg.Pool({ connectionString: mesh.services.user!.ctx.config.databaseUrl, max: 3 });
    try {
      await pool.query("select 1"); // connected: no more connection set-up in what follows
      await Promise.all([pool.query("select 1"), pool.query("select 1"), pool.query("select 1")]);
      let before = sqlCounters();
      await Promise.all([pool.query("select pg_sleep(0.05)"), pool.query("select pg_sleep(0.05)"), pool.query("select pg_sleep(0.05)")]);
      let after = sqlCounters();
      expect(after.statements - before.statements).toBeGreaterThanOrEqual(3);
      // The relays' background polls may add statements, never fewer rounds than 1.
      expect(after.rounds - before.rounds).toBeLessThan(after.statements - before.statements);

      // The meter's own statements (its monitor connection) are neither counted nor disturb the count.
      const meter = await Meter.start(postgresAdminUrl, mesh);
      try {
        before = sqlCounters();
        for (let i = 0; i < 3; i++) {
          await meter.query("select 1");
          await pool.query("select pg_sleep(0.01)");
        }
        after = sqlCounters();
        expect(after.rounds - before.rounds).toBeGreaterThanOrEqual(3);
        before = sqlCounters();
        await meter.query("select 1");
        expect(sqlCounters().statements - before.statements).toBe(0);
      } finally {
        await meter.close();
      }

      before = sqlCounters();
      await mesh.services.user!.ctx.orm.em.fork().getConnection().execute("select 1");
      after = sqlCounters();
      expect(after.statements - before.statements).toBeGreaterThanOrEqual(1);
    } finally {
      await pool.end();
    }
  });

  it("runs the edge as a process of its own and counts its CPU as the servers'", async () => {
    const edge = await startEdgeProcess({ auth: mesh.url("auth"), user: mesh.url("user") });
    const meter = await Meter.start(postgresAdminUrl, mesh);
    meter.watchProcess(edge.cpuUs);
    try {
      const auth = createClient(AuthService, createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" }));
      const registered = await auth.register({ email: `bench-edge-${Date.now()}@example.test`, password: "quartz lantern bench river 8812" });
      const users = createClient(UserService, createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1" }));
      const headers = { authorization: `Bearer ${registered.tokens!.accessToken}` };
      await eventually(() => users.getMyProfile({}, { headers }).catch(() => undefined), 15_000, "profile through the edge");

      const edgeBefore = await edge.cpuUs();
      const a = await meter.snapshot();
      for (let i = 0; i < 200; i++) await users.getMyProfile({}, { headers });
      const b = await meter.snapshot();
      const edgeUs = (await edge.cpuUs()) - edgeBefore;
      const ownUs = b.cpu.user + b.cpu.system - a.cpu.user - a.cpu.system;
      // The edge parsed 200 HTTP/1.1 requests and made 200 HTTP/2 calls: well over a millisecond of its own CPU.
      expect(edgeUs).toBeGreaterThan(1_000);
      // The servers' CPU is this process's and the edge's (the edge's read a moment after the second snapshot).
      const usage = meter.diff(a, b);
      expect(usage.cpuUs).toBeGreaterThan(ownUs);
      expect(usage.cpuUs).toBeLessThanOrEqual(ownUs + edgeUs);
    } finally {
      await meter.close();
      await edge.stop();
    }
    // Stopped: a later read says so instead of waiting forever.
    await expect(edge.cpuUs()).rejects.toThrow(/not running|exited/);
  });
});

describe("bench: GetProduct", () => {
  let h: ProductHarness;
  beforeAll(async () => {
    h = await startProductHarness();
    await seedCatalog(h.mesh.services.product!.ctx.config.databaseUrl, { products: 60 });
  });
  afterAll(() => h?.stop());

  it("bare Connect answers GetProduct with the service's message", async () => {
    // Products with variants, images, tags and categories, and one without variants.
    const ids = await h.sql<{ id: string }>(
      `(select p.id from products p where p.status = 'active' and p.is_visible and p.variant_count > 0 order by p.id limit 3)
       union all (select p.id from products p where p.status = 'active' and p.is_visible and p.variant_count = 0 order by p.id limit 2)`,
    );
    expect(ids.length).toBe(5);
    const bare = await bareProductServer(h.mesh.services.product!.ctx.config.databaseUrl);
    try {
      const client = createClient(ProductService, createGrpcTransport({ baseUrl: bare.url }));
      for (const { id } of ids) {
        const real = await h.products.getProduct({ lookup: { case: "id", value: id } });
        const answer = await client.getProduct({ lookup: { case: "id", value: id } });
        expect(answer.product?.id).toBe(id);
        expect(equals(GetProductResponseSchema, answer, real)).toBe(true);
      }
    } finally {
      await bare.stop();
    }
  });
});

describe("bench: checkout", () => {
  it("the baseline places each order with every row of a checkout in one transaction", async () => {
    const baseline = await startCheckoutBaseline(checkoutOutboxRows);
    try {
      const one = async <T extends object>(sql: string) => (await baseline.pool.query<T>(sql)).rows[0]!;
      const before = await one<{ on_hand: number }>("select sum(on_hand)::int as on_hand from stock");
      for (let i = 0; i < 3; i++) expect((await fetch(`${baseline.url}/checkout`, { method: "POST" })).status).toBe(200);
      const counts = await one<Record<string, number>>(
        `select (select count(*) from orders)::int as orders, (select count(*) from order_items)::int as items,
                (select count(*) from order_status_history)::int as history, (select count(*) from stock_reservations)::int as reservations,
                (select count(*) from stock_reservation_lines)::int as lines, (select count(*) from coupon_usages)::int as usages,
                (select sum(times_used) from coupons)::int as times_used, (select sum(usage_count) from promotions)::int as usage_count,
                (select count(*) from payments)::int as payments, (select count(*) from payment_transactions)::int as transactions,
                (select count(*) from outbox_events)::int as outbox, (select sum(on_hand) from stock)::int as on_hand`,
      );
      expect(counts).toEqual({
        orders: 3,
        items: 6,
        history: 3,
        reservations: 3,
        lines: 6,
        usages: 3,
        times_used: 3,
        usage_count: 3,
        payments: 3,
        transactions: 3,
        outbox: 3 * checkoutOutboxRows,
        on_hand: before.on_hand - 3 * 3, // quantities 1 and 2 per order
      });
      // One transaction per order: every row of an order has the same inserting transaction (xmin).
      const xmins = await one<{ n: number }>(
        `with o as (select id from orders limit 1)
         select count(distinct x)::int as n from (
           select xmin::text as x from orders where id = (select id from o)
           union all select xmin::text from order_items where order_id = (select id from o)
           union all select xmin::text from order_status_history where order_id = (select id from o)
           union all select r.xmin::text from stock_reservations r where r.order_id = (select id from o)
           union all select l.xmin::text from stock_reservation_lines l join stock_reservations r on r.id = l.reservation_id where r.order_id = (select id from o)
           union all select xmin::text from coupon_usages where order_id = (select id from o)
           union all select p.xmin::text from payments p where p.order_id = (select id from o)
           union all select t.xmin::text from payment_transactions t join payments p on p.id = t.payment_id where p.order_id = (select id from o)) as all_rows`,
      );
      expect(xmins.n).toBe(1);
      // Totals: two lines of 25.00 (1 and 2), 10% off the subtotal, 5.00 shipping.
      expect(await one("select subtotal_minor::int as s, discount_minor::int as d, total_minor::int as t from orders limit 1")).toEqual({ s: 7500, d: 750, t: 7250 });
    } finally {
      await baseline.stop();
    }
  });

  it("a phase over prepared requests ends when they are used up, without errors", async () => {
    let left = 25;
    const call = async () => {
      if (left === 0) throw new Exhausted();
      left--;
    };
    const closed = await runPhase(call, { kind: "closed", concurrency: 8, durationMs: 60_000 });
    expect({ requests: closed.requests, errors: closed.errors }).toEqual({ requests: 25, errors: 0 });
    left = 3;
    const seq = await runPhase(call, { kind: "sequential", durationMs: 60_000, maxRequests: 1_000 });
    expect({ requests: seq.requests, errors: seq.errors }).toEqual({ requests: 3, errors: 0 });
  });

  it("an HTTP/1.1 load generator's open loop uses at most 64 connections, and a request due while all are busy waits, counted from its schedule", async () => {
    const sockets = new Set<string>();
    const server = createServer((req, res) => {
      sockets.add(`${req.socket.remoteAddress}:${req.socket.remotePort}`);
      setTimeout(() => res.end("ok"), 50); // slower than the arrivals: far more than 64 would be outstanding
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const generator = await Generator.start({ kind: "http", urls: [`http://127.0.0.1:${(server.address() as { port: number }).port}/`] });
    try {
      const open = await generator.run({ kind: "open", rate: 2_000, durationMs: 500 });
      expect({ requests: open.requests, errors: open.errors }).toEqual({ requests: 1_000, errors: 0 });
      expect(sockets.size).toBeLessThanOrEqual(64);
      expect(sockets.size).toBeGreaterThan(8);
      // 1,000 requests of 50 ms over 64 connections take about 0.8 s: the last ones waited for a connection,
      // and their latency counts from when they were due, not from when a connection was free.
      expect(open.p99Ms).toBeGreaterThan(200);
    } finally {
      await generator.stop();
      server.close();
    }
  });
});
