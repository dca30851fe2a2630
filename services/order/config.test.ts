/** The Order service's settings: the tax table and its lookup, bad values reported at once. */
import { describe, expect, it } from "vitest";
import { loadOrderConfig, taxRateOf } from "./config.ts";
import { roundBps } from "./pricing.ts";

describe("order settings", () => {
  it("reads the default tax table: a region beats its country, which beats *", () => {
    const { taxRules } = loadOrderConfig({});
    expect(taxRateOf(taxRules, "US", "ca")).toBe(725);
    expect(taxRateOf(taxRules, "US", "TX")).toBe(0);
    expect(taxRateOf(taxRules, "DE", "")).toBe(1900);
    expect(taxRateOf(taxRules, "JP", "")).toBe(0);
    expect(taxRateOf(loadOrderConfig({ ORDER_TAX_RATES: "*=500,IT=2200" }).taxRules, "BE", "")).toBe(500);
  });

  it("rounds tax half up in minor units, never through floats", () => {
    expect(roundBps(3998n, 725)).toBe(290n); // 289.855
    expect(roundBps(200n, 725)).toBe(15n); // 14.5 -> 15
    expect(roundBps(0n, 1900)).toBe(0n);
    expect(roundBps(-5n, 1900)).toBe(0n);
    expect(roundBps(10n ** 15n, 1900)).toBe(19n * 10n ** 13n);
  });

  it("reports every bad value at once, and refuses the test halt in production", () => {
    expect(() => loadOrderConfig({ ORDER_TAX_RATES: "DE=19%,*-X=1", ORDER_CAPTURE: "later", ORDER_RESERVATION_TTL_S: "5" })).toThrow(
      /DE=19%[\s\S]*\*-X=1[\s\S]*ORDER_RESERVATION_TTL_S[\s\S]*ORDER_CAPTURE/,
    );
    expect(() => loadOrderConfig({ NODE_ENV: "production", ORDER_TEST_HALT_AFTER_STEP: "reserve" })).toThrow(/ORDER_TEST_HALT_AFTER_STEP/);
  });
});
