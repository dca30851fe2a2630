/**
 * The bench's own parts that its figures rest on: the bare Connect servers answer
 * exactly what the real services answer (same message, so the same wire shape),
 * and the SQL counter counts statements and round trips as docs/bench.md says,
 * through both copies of pg (ours and MikroORM's).
 */
import { equals } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
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
import { installSqlCounter, Meter, sqlCounters } from "./meter.ts";

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
