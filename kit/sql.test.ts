/**
 * The query helper's named statements (sql.ts `namedQuery`): reads outside a
 * transaction are prepared once per pool connection, the number kept per
 * connection is bounded, an evicted statement is deallocated in PostgreSQL,
 * and results never come from another statement's text; a read asking for a
 * generic plan gets one, on connections of its own (`genericPoolOf`).
 */
import type { MikroORM } from "@mikro-orm/postgresql";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "./logger.ts";
import { openServiceDatabase } from "./server.ts";
import { preparedPerConnection, sqlOf } from "./sql.ts";
import { TestDatabases } from "./testing/infra.ts";

const databases = new TestDatabases();
let orm: MikroORM;

beforeAll(async () => {
  // One connection: every statement below meets the same backend's prepared statements.
  orm = await openServiceDatabase({ name: "sqlkit", entities: [], migrations: [] } as never, databases.url("sqlkit"), createLogger("sql-test", "warn"), 1);
});

afterAll(async () => {
  await orm?.close();
  await databases.dropAll();
});

const db = () => sqlOf(orm.em.fork());
const prepared = () => db().all<{ name: string; statement: string; generic_plans: string; custom_plans: string }>(
  "select name, statement, generic_plans::text, custom_plans::text from pg_prepared_statements",
);

describe("named statements", () => {
  it("prepares a read once per connection and plans it generically once it has run a few times", async () => {
    const text = "select $1::int + 1 as n, count(*)::int as tables from pg_class where relkind = $2";
    for (let i = 0; i < 8; i++) expect((await db().one<{ n: number }>(text, [i, "r"]))!.n).toBe(i + 1);
    const mine = (await prepared()).filter((s) => s.statement === text);
    expect(mine).toHaveLength(1);
    expect(Number(mine[0]!.generic_plans)).toBeGreaterThan(0);
  });

  it("keeps at most preparedPerConnection per connection, deallocating the least recently used", async () => {
    const hot = "select 'hot'::text as v, $1::int as i";
    await db().one(hot, [0]);
    for (let i = 0; i < preparedPerConnection + 20; i++) {
      expect((await db().one<{ v: number }>(`select $1::int * ${i} as v`, [2]))!.v).toBe(2 * i);
      // Used again now and then, the hot statement stays prepared while the others come and go.
      if (i % 10 === 0) expect((await db().one<{ i: number }>(hot, [i]))!.i).toBe(i);
    }
    const now = await prepared();
    expect(now.length).toBeLessThanOrEqual(preparedPerConnection);
    expect(now.some((s) => s.statement === hot)).toBe(true);
    expect(now.some((s) => s.statement === "select $1::int * 0 as v")).toBe(false);
    // An evicted text runs again (prepared anew) with its own result.
    expect((await db().one<{ v: number }>("select $1::int * 0 as v", [5]))!.v).toBe(0);
    expect((await db().one<{ v: number }>("select $1::int * 3 as v", [5]))!.v).toBe(15);
  });

  it("re-prepares a statement whose parse failed, and keeps serving", async () => {
    const broken = "select nope_no_such_column from pg_class where relname = $1";
    await expect(db().all(broken, ["x"])).rejects.toThrow(/nope_no_such_column/);
    await expect(db().all(broken, ["x"])).rejects.toThrow(/nope_no_such_column/);
    expect((await db().one<{ n: number }>("select $1::int as n", [7]))!.n).toBe(7);
  });

  it("plans a read that asks for it generically, on connections of its own, and nothing else", async () => {
    const mode = "select current_setting('plan_cache_mode') as mode, $1::int as n";
    expect(await db().one(mode, [1], { genericPlan: true })).toEqual({ mode: "force_generic_plan", n: 1 });
    expect(await db().one(mode, [2])).toEqual({ mode: "auto", n: 2 });
    await orm.em.fork().transactional(async (em) => {
      // Inside a transaction the option does not apply: the transaction's connection plans as usual.
      expect(await sqlOf(em).one(mode, [3], { genericPlan: true })).toEqual({ mode: "auto", n: 3 });
    });
    const text = "select count(*)::int as n from pg_class where relkind = $1 and relnamespace > $2";
    for (let i = 0; i < 3; i++) expect((await db().one<{ n: number }>(text, ["r", i], { genericPlan: true }))!.n).toBeGreaterThan(0);
    const mine = await db().all<{ generic_plans: string; custom_plans: string }>(
      "select generic_plans::text, custom_plans::text from pg_prepared_statements where statement = $1",
      [text],
      { genericPlan: true },
    );
    expect(mine).toEqual([{ generic_plans: "3", custom_plans: "0" }]);
  });

  it("leaves statements inside a transaction unnamed", async () => {
    const text = "select $1::text as inside";
    await orm.em.fork().transactional(async (em) => {
      expect((await sqlOf(em).one<{ inside: string }>(text, ["yes"]))!.inside).toBe("yes");
    });
    expect((await prepared()).some((s) => s.statement === text)).toBe(false);
  });
});
