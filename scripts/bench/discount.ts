/**
 * The Discount part of `npm run bench`: RedeemDiscounts under contention, directly
 * over gRPC with Order's service credential. Every call is a new order (and customer)
 * redeeming the same coupon of the same promotion, so all of them update the same two
 * counter rows (the promotion's budget_used and usage_count, the coupon's times_used):
 * the conditional UPDATEs serialize on those row locks, which is what this measures.
 * The budget is large enough never to run out during the run.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { DiscountService, PromotionType } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { developmentServiceSecret } from "../../kit/config.ts";
import type { TestMesh } from "../../kit/testing/mesh.ts";
import type { Bench } from "./run.ts";

export async function discountBench(bench: Bench, mesh: TestMesh, adminToken: string, say: (l: string) => void): Promise<void> {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const discounts = createClient(DiscountService, createGrpcTransport({ baseUrl: mesh.url("discount") }));
  const admin = { headers: { authorization: `Bearer ${adminToken}` } };
  const run = Date.now().toString(36).toUpperCase();
  say("discount: a coupon promotion (10% off, budget 10^12 minor units) for contended RedeemDiscounts");
  const { promotion } = await discounts.createPromotion(
    {
      name: `Bench ${run}`,
      type: PromotionType.PERCENTAGE,
      value: { case: "percentOffBps", value: 1000 },
      currencyCode: "USD",
      budget: { amountMinor: 1_000_000_000_000n, currencyCode: "USD" },
      stackable: true,
      isActive: true,
    },
    admin,
  );
  const code = `BENCH${run}`;
  await discounts.createCoupon({ promotionId: promotion!.id, code }, admin);
  const order = await auth.issueServiceToken({ serviceName: "order", serviceSecret: developmentServiceSecret("order") });
  const usd = (amountMinor: string) => ({ amountMinor, currencyCode: "USD" });
  const request = {
    orderId: "$uuid",
    userId: "$uuid",
    cart: {
      currencyCode: "USD",
      lines: [
        { lineId: "1", productId: uuidv7(), quantity: 2, unitPrice: usd("2500") },
        { lineId: "2", productId: uuidv7(), quantity: 1, unitPrice: usd("5000") },
      ],
      shippingAmount: usd("500"),
      couponCodes: [code],
      isFirstOrder: false,
    },
    expectedTotalDiscount: usd("1000"),
  };
  await bench.measure({
    scenario: "RedeemDiscounts",
    variant: "gRPC contended",
    servedByMesh: true,
    target: {
      kind: "rpc",
      protocol: "grpc",
      baseUrl: mesh.url("discount"),
      method: "ecommerce.discount.v1.DiscountService/RedeemDiscounts",
      requests: [request],
      headers: { authorization: `Bearer ${order.accessToken}` },
    },
  });
}
