/**
 * One database style (docs/kit.md, "Database"): statements go through `sqlOf(em)` with `$n`
 * parameters bound by PostgreSQL, or through entities. What the kit had before (issue 7) must
 * not come back: MikroORM's `execute` with `?` placeholders, which MikroORM interpolates into
 * the text client-side, and hand-made literals (quote doubling, array literals).
 * A source check over kit/ and services/ (tests excluded: they may read a database any way).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "..");

function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".test.ts"))
    .map((e) => relative(root, join(e.parentPath, e.name)));
}

/** Patterns of SQL built or escaped by hand, each with why it is refused. */
const refused: { pattern: RegExp; why: string }[] = [
  { pattern: /\blegacySqlOf\b/, why: "the old ?-interpolating helper; use sqlOf" },
  { pattern: /\bpgArray\s*\(/, why: "a hand-made array literal; bind the array ($1::uuid[])" },
  { pattern: /\.execute\s*(<[^>]*>)?\s*\(/, why: "MikroORM's execute interpolates ? client-side; use sqlOf" },
  { pattern: /\.replace\(\s*\/'\/g\s*,\s*["'`]''/, why: "quote doubling: a value escaped into SQL text; bind it" },
  { pattern: /\.replace\(\s*\/"\/g\s*,\s*'\\\\"'/, why: "an escaped literal; bind the value" },
];

// The kit's health probe pings with a fixed statement and no value.
const allowed = new Map([["kit/db.ts", ['getConnection().execute("select 1")']]]);

describe("SQL in kit/ and services/", () => {
  it("is never built or escaped by hand", () => {
    const found: string[] = [];
    const files = [...sources("kit"), ...sources("services")].filter((f) => !f.startsWith("kit/testing/"));
    expect(files.length).toBeGreaterThan(50);
    for (const file of files) {
      readFileSync(join(root, file), "utf8")
        .split("\n")
        .forEach((line, i) => {
          if (allowed.get(file)?.some((ok) => line.includes(ok))) return;
          for (const { pattern, why } of refused) if (pattern.test(line)) found.push(`${file}:${i + 1}: ${why}: ${line.trim()}`);
        });
    }
    expect(found).toEqual([]);
  });
});
