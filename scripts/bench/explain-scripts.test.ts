/**
 * The explain scripts and gc-survivors (not part of `npm run bench`) still run end to end: each calls the
 * service's own list or search code outside a service, so a change to the kit's per-call
 * scope (the paging interceptor) can break them without breaking any service test. Small
 * catalogs only: these check that the scripts work, not what the plans cost.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { benchSearchWords } from "../../services/product/bench.ts";
import { postgresAdminUrl, TestDatabases } from "../../kit/testing/infra.ts";

const run = promisify(execFile);
const databases = new TestDatabases();
afterAll(() => databases.dropAll());

describe("explain scripts", () => {
  it("search-explain seeds a catalog and explains every bench word's statements", async () => {
    const url = databases.url("search_explain");
    const admin = new pg.Client({ connectionString: postgresAdminUrl });
    await admin.connect();
    await admin.query(`create database "${new URL(url).pathname.slice(1)}"`);
    await admin.end();
    const { stdout } = await run(process.execPath, ["scripts/bench/search-explain.ts", "--seed", "300", "--runs", "1", url], { timeout: 90_000 });
    for (const word of benchSearchWords) expect(stdout).toMatch(new RegExp(`^${word}: \\d+ statements, total_count \\d+`, "m"));
    expect(stdout).toMatch(/^median of words [\d.]+ ms, worst [\d.]+ ms; Seq Scans on products: \d+$/m);
  }, 120_000);

  it("gc-survivors runs its cases and prints a row of figures for each", async () => {
    const cases = ["generator-declared", "generator-per-call", "http2"];
    const { stdout } = await run(process.execPath, ["scripts/bench/gc-survivors.ts", ...cases], { timeout: 60_000 });
    for (const c of cases) expect(stdout).toMatch(new RegExp(`^${c}\\s+\\d+\\s+\\d+\\s+[\\d.]+\\s+[\\d.]+$`, "m"));
    await expect(run(process.execPath, ["scripts/bench/gc-survivors.ts", "no-such-case"], { timeout: 30_000 })).rejects.toThrow(/unknown case no-such-case/);
  }, 90_000);

  it("orders-explain seeds orders and explains every list case, deep pages included", async () => {
    const { stdout } = await run(process.execPath, ["scripts/bench/orders-explain.ts", "--orders", "2000", "--runs", "1"], { timeout: 110_000 });
    expect(stdout).toMatch(/^\d+ cases, 1 EXPLAIN \(ANALYZE, BUFFERS\) runs of each statement$/m);
    expect(stdout).toMatch(/^statements \d+; worst median [\d.]+ ms/m);
    expect(stdout).toMatch(/^dropped orders_explain_/m);
  }, 120_000);
});
