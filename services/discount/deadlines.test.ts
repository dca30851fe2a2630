/**
 * Deadlines under contention: many RedeemDiscounts on one promotion (its budget row
 * is the hot lock), each with a deadline short enough that many pass while their
 * statements wait or run. Every call answers a code of the contract — success,
 * DEADLINE_EXCEEDED, or the domain's refusal — never INTERNAL; the budget is never
 * overspent by a call that timed out; and the service keeps serving afterwards.
 */
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, type DiscountHarness, eur, failure, snapshot, startDiscountHarness } from "./testing.ts";

let h: DiscountHarness;
beforeAll(async () => {
  h = await startDiscountHarness();
});
afterAll(async () => {
  await h?.stop();
});

describe("RedeemDiscounts whose deadlines pass under contention", () => {
  it("answers DEADLINE_EXCEEDED (never INTERNAL), spends only what succeeded and keeps serving", async () => {
    const currencyCode = "EUR";
    const { promotion } = await h.discounts.createPromotion(
      { name: "contended", type: PromotionType.PERCENTAGE, value: { case: "percentOffBps", value: 1000 }, isActive: true, isAutomatic: true, stackable: true, currencyCode, budget: eur(1_000_000n, currencyCode) } as never,
      auth(h.admin),
    );
    const cart = snapshot([[1000n, 1]], { currencyCode });
    const redeem = (timeoutMs: number) =>
      h.discounts.redeemDiscounts(
        { orderId: uuidv7(), userId: uuidv7(), cart: { shippingAmount: eur(0n, currencyCode), isFirstOrder: false, ...cart }, expectedTotalDiscount: eur(100n, currencyCode) },
        { ...auth(h.order), timeoutMs },
      );
    const codes = new Map<string, number>();
    let succeeded = 0;
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => redeem(20 + ((i * 37) % 400))));
      for (const r of results) {
        if (r.status === "fulfilled") {
          succeeded++;
          continue;
        }
        const e = await failure(Promise.reject(r.reason));
        const key = `${Code[e.code]} ${e.reason ?? ""} ${e.code === Code.Internal ? e.message : ""}`.trim();
        codes.set(key, (codes.get(key) ?? 0) + 1);
      }
    }
    // What the server answered (the client gives up first): its RPC metric by code, once every call has finished there.
    const served = await eventually(async () => {
      const values = (await h.mesh.services.discount!.ctx.metrics.rpcTotal.get()).values.filter((v) => String(v.labels.method).endsWith("/RedeemDiscounts"));
      return values.reduce((n, v) => n + v.value, 0) >= 300 ? values : undefined;
    }, 30_000, "every RedeemDiscounts finished on the server");
    // The client gives up at its deadline (DEADLINE_EXCEEDED on its side); the server, told by the stream reset, counts a
    // cancelled call or its own passed deadline — never INTERNAL.
    for (const key of codes.keys()) expect(key.split(" ")[0]).toBe("DeadlineExceeded");
    expect(served.map((v) => String(v.labels.code)).filter((c) => !["ok", "deadline_exceeded", "canceled"].includes(c))).toEqual([]);
    // Nothing that timed out was spent: the budget used is exactly what the successful calls redeemed
    // (a call may have committed just as its deadline passed; it then counts as a success on the server).
    const after = (await h.discounts.getPromotion({ promotionId: promotion!.id }, auth(h.admin))).promotion!;
    expect(after.budgetUsed!.amountMinor).toBeGreaterThanOrEqual(BigInt(succeeded * 100));
    const usage = await h.sql<{ n: string }>("select count(*) as n from promotion_usage where promotion_id = $1", [promotion!.id]);
    expect(after.budgetUsed!.amountMinor).toBe(BigInt(Number(usage[0]!.n) * 100));
    // The service still serves, in time.
    await redeem(10_000);
  }, 120_000);
});
