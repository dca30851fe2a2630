import { describe, expect, it } from "vitest";
import { ConfigError, EnvReader } from "./env.ts";

function problemsOf(read: (r: EnvReader) => unknown, env: Record<string, string>): string[] {
  const r = new EnvReader(env);
  try {
    r.done(read(r));
    return [];
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
}

describe("EnvReader", () => {
  it("reports every bad value at once, each naming the variable and what was expected", () => {
    const problems = problemsOf(
      (r) => ({
        n: r.int("N", 1, 1, 10),
        flag: r.bool("FLAG", false),
        url: r.url("U", "http://x", ["http:"]),
        currency: r.currency("CUR", "EUR"),
        key: r.key("KEY", Buffer.alloc(32)),
        level: r.oneOf("LEVEL", "info", ["info", "debug"]),
      }),
      { N: "11", FLAG: "maybe", U: "ftp://x", CUR: "euro", KEY: "c2hvcnQ=", LEVEL: "loud" },
    );
    expect(problems).toHaveLength(6);
    expect(problems.join("\n")).toMatch(/N must be an integer from 1 to 10, got "11"/);
    expect(problems.join("\n")).toMatch(/KEY must be base64 of exactly 32 bytes/);
  });

  it("uses defaults when unset or empty, and refuses development secrets in production", () => {
    const dev = Buffer.alloc(32, 7);
    const r = new EnvReader({ N: "" });
    expect(r.done({ n: r.int("N", 3, 1, 10), key: r.key("KEY", dev), list: r.list("L", ["a", "b"]) })).toEqual({ n: 3, key: dev, list: ["a", "b"] });
    const problems = problemsOf((p) => [p.key("KEY", dev), p.secret("SECRET", "dev-only-secret-that-is-long-enough-xx")], { NODE_ENV: "production" });
    expect(problems).toEqual([
      "KEY must be set in production (the development key is public)",
      "SECRET must be set in production (it is the development default)",
    ]);
  });
});
