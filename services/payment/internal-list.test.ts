/**
 * ListPaymentsForOrderInternal: every payment of an order for the Order
 * service's compensation (a lost AuthorizePayment answer), and its policy
 * (INTERNAL, allowed_callers "order").
 */
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PaymentStatus } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { money } from "../../kit/money.ts";
import { auth, failure, type PaymentHarness, startPaymentHarness } from "./testing.ts";

let h: PaymentHarness;

beforeAll(async () => {
  h = await startPaymentHarness({ PAYMENT_RECONCILE_EVERY_MS: String(24 * 3_600_000) });
});

afterAll(async () => {
  await h?.stop();
});

function authorize(orderId: string, userId: string, token: string) {
  return h.payments.authorizePayment(
    {
      orderId,
      orderNumber: "ORD-2026-000123",
      userId,
      amount: money(1000n, "EUR"),
      source: { case: "paymentToken", value: { provider: "sandbox", token } },
      idempotencyKey: `key-${uuidv7()}`,
    },
    auth(h.order),
  );
}

describe("ListPaymentsForOrderInternal", () => {
  it("lists every payment of the order, newest first, internal view; empty for an order without payments", async () => {
    const orderId = uuidv7();
    const userId = uuidv7();
    const declined = (await authorize(orderId, userId, "tok_sandbox_decline")).payment!;
    const held = (await authorize(orderId, userId, "tok_sandbox_success")).payment!;
    await authorize(uuidv7(), userId, "tok_sandbox_success");

    const { payments } = await h.payments.listPaymentsForOrderInternal({ orderId }, auth(h.order));
    expect(payments.map((p) => [p.id, p.status])).toEqual([
      [held.id, PaymentStatus.AUTHORIZED],
      [declined.id, PaymentStatus.FAILED],
    ]);
    expect(payments[0]?.providerPaymentId).toMatch(/^pi_sandbox_/);
    expect(payments[0]?.transactions).toHaveLength(1);

    // After a void the payment is listed CANCELLED: a second compensation pass finds nothing live to void.
    await h.payments.voidPayment({ paymentId: held.id, reason: "checkout_timeout" }, auth(h.order));
    expect((await h.payments.listPaymentsForOrderInternal({ orderId }, auth(h.order))).payments.map((p) => p.status)).toEqual([PaymentStatus.CANCELLED, PaymentStatus.FAILED]);

    expect((await h.payments.listPaymentsForOrderInternal({ orderId: uuidv7() }, auth(h.order))).payments).toEqual([]);
  });

  it("is INTERNAL for Order only: a customer (even the payer), an admin and another service are refused, no token is unauthenticated; a bad order id is INVALID_ARGUMENT", async () => {
    const orderId = uuidv7();
    const userId = uuidv7();
    await authorize(orderId, userId, "tok_sandbox_success");
    const list = (token?: string) => h.payments.listPaymentsForOrderInternal({ orderId }, token ? auth(token) : {});
    expect((await failure(list(await h.issuer.user(userId)))).code).toBe(Code.PermissionDenied);
    expect((await failure(list(h.admin))).code).toBe(Code.PermissionDenied);
    expect((await failure(list(h.returns))).code).toBe(Code.PermissionDenied);
    expect((await failure(list(await h.issuer.service("shipping")))).code).toBe(Code.PermissionDenied);
    expect((await failure(list())).code).toBe(Code.Unauthenticated);
    expect((await failure(h.payments.listPaymentsForOrderInternal({ orderId: "not-a-uuid" }, auth(h.order)))).code).toBe(Code.InvalidArgument);
  });
});
