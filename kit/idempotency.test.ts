/**
 * Idempotency keys against a real PostgreSQL database: once per key, concurrent
 * duplicates wait and get the stored response, a different request with the
 * same key is refused, a failed call stores nothing.
 */
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MoneySchema } from "../gen/ecommerce/common/v1/money_pb.js";
import { openDatabase } from "./db.ts";
import { errorReason } from "./errors.ts";
import { infrastructureMigration, OutboxEvent } from "./events/schema.ts";
import { idempotent } from "./idempotency.ts";
import { createLogger } from "./logger.ts";
import { TestDatabases } from "./testing/infra.ts";

const dbs = new TestDatabases();
let orm: MikroORM;

beforeAll(async () => {
  orm = await openDatabase({
    url: dbs.url("idem"),
    entities: [OutboxEvent],
    migrations: [infrastructureMigration("event_inbox")],
    log: createLogger("test", "silent"),
  });
});

afterAll(async () => {
  await orm?.close();
  await dbs.dropAll();
});

const request = (amount: bigint) => create(MoneySchema, { amountMinor: amount, currencyCode: "EUR" });

function call(key: string, req = request(100n), effect: () => Promise<bigint> = async () => 1n) {
  return idempotent(
    orm.em.fork(),
    { scope: "Test:user:1", key, requestSchema: MoneySchema, request: req, responseSchema: MoneySchema },
    async () => create(MoneySchema, { amountMinor: await effect(), currencyCode: "EUR" }),
  );
}

describe("idempotent", () => {
  it("runs the work once per key and replays the stored response", async () => {
    let runs = 0n;
    const effect = async () => ++runs;
    const first = await call("k-seq", request(100n), effect);
    const second = await call("k-seq", request(100n), effect);
    expect(runs).toBe(1n);
    expect(second).toEqual(first);
  });

  it("lets concurrent duplicates wait for the first and share its response", async () => {
    let runs = 0;
    const effect = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 100));
      return 42n;
    };
    const results = await Promise.all(Array.from({ length: 8 }, () => call("k-par", request(7n), effect)));
    expect(runs).toBe(1);
    expect(new Set(results.map((r) => r.amountMinor))).toEqual(new Set([42n]));
  });

  it("refuses the same key with a different request", async () => {
    await call("k-diff", request(1n));
    const error = await call("k-diff", request(2n)).catch((e) => ConnectError.from(e));
    expect(errorReason(error)).toBe("IDEMPOTENCY_KEY_REUSED");
  });

  it("stores nothing when the work fails, so a retry runs again", async () => {
    await expect(call("k-fail", request(5n), async () => Promise.reject(new Error("peer down")))).rejects.toThrow("peer down");
    let runs = 0;
    await call("k-fail", request(5n), async () => BigInt(++runs));
    expect(runs).toBe(1);
  });
});
