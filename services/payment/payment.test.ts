/**
 * The Payment service through its contract: real User and Payment servers,
 * the sandbox provider, signed webhooks, reconciliation.
 */
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CardBrand, PaymentMethodType } from "../../gen/ecommerce/common/v1/payment_method_pb.js";
import { PaymentAuthorizedSchema, PaymentInitiatedSchema, PaymentRefundedSchema, PaymentSucceededSchema, PaymentVoidedSchema } from "../../gen/ecommerce/payment/v1/events_pb.js";
import {
  type Payment,
  PaymentStatus,
  RefundReason,
  RefundStatus,
  TransactionStatus,
  TransactionType,
  WebhookEventStatus,
} from "../../gen/ecommerce/payment/v1/payment_pb.js";
import type { DescMessage } from "@bufbuild/protobuf";
import { subjectOf } from "../../kit/events/contracts.ts";
import { money } from "../../kit/money.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, failure, type PaymentHarness, paymentEvents, previousWebhookSecret, sandboxWebhook, startPaymentHarness, webhookSecret } from "./testing.ts";

let h: PaymentHarness;

beforeAll(async () => {
  // Reconciliation runs only when a test asks (runNow), and looks at any unsettled payment.
  h = await startPaymentHarness({ PAYMENT_RECONCILE_EVERY_MS: String(24 * 3_600_000), PAYMENT_RECONCILE_AFTER_MS: "0", PAYMENT_SANDBOX_SLOW_MS: "1500",
    // Async payments are settled by the tests' own webhooks here (webhook-delivery.test.ts has the sandbox's).
    PAYMENT_SANDBOX_ASYNC_MS: "600000",
  });
});

afterAll(async () => {
  await h?.stop();
});

const key = () => `key-${uuidv7()}`;

function authorize(token: string, init: { orderId?: string; idempotencyKey?: string; amountMinor?: bigint; userId?: string } = {}) {
  return h.payments.authorizePayment(
    {
      orderId: init.orderId ?? uuidv7(),
      orderNumber: "ORD-2026-000123",
      userId: init.userId ?? uuidv7(),
      amount: money(init.amountMinor ?? 1000n, "EUR"),
      source: { case: "paymentToken", value: { provider: "sandbox", token } },
      idempotencyKey: init.idempotencyKey ?? key(),
    },
    auth(h.order),
  );
}

/** The payment's amounts agree with its transaction log. */
function expectAmountsFromLog(p: Payment) {
  const sum = (type: TransactionType) => p.transactions.filter((t) => t.type === type && t.status === TransactionStatus.SUCCEEDED).reduce((s, t) => s + t.amount!.amountMinor, 0n);
  expect(p.amountCaptured?.amountMinor).toBe(sum(TransactionType.CAPTURE));
  expect(p.amountRefunded?.amountMinor).toBe(sum(TransactionType.REFUND));
  const completed = p.refunds.filter((r) => r.status === RefundStatus.COMPLETED).reduce((s, r) => s + r.amount!.amountMinor, 0n);
  expect(p.amountRefunded?.amountMinor).toBe(completed);
}

describe("sandbox outcomes", () => {
  it("authorizes tok_sandbox_success and publishes payment.initiated and payment.authorized", async () => {
    const { payment } = await authorize("tok_sandbox_success");
    expect(payment).toMatchObject({ status: PaymentStatus.AUTHORIZED, provider: "sandbox", failureCode: "" });
    expect(payment?.providerPaymentId).toMatch(/^pi_sandbox_/);
    expect(payment?.paymentMethod).toMatchObject({ type: PaymentMethodType.CREDIT_CARD, cardBrand: CardBrand.VISA, last4: "4242" });
    expect(payment?.authorizationExpiresAt).toBeDefined();
    expect(payment?.transactions.map((t) => [t.type, t.status])).toEqual([[TransactionType.AUTHORIZE, TransactionStatus.SUCCEEDED]]);
    expectAmountsFromLog(payment!);
    await eventually(async () => ((await paymentEvents(h, PaymentInitiatedSchema)).some((e) => e.paymentId === payment!.id) ? true : undefined), 10_000, "payment.initiated");
    await eventually(async () => ((await paymentEvents(h, PaymentAuthorizedSchema)).some((e) => e.paymentId === payment!.id) ? true : undefined), 10_000, "payment.authorized");
  });

  it.each([
    ["tok_sandbox_decline", "card_declined"],
    ["tok_sandbox_insufficient_funds", "insufficient_funds"],
    ["tok_sandbox_expired_card", "expired_card"],
    ["tok_not_a_sandbox_token", "invalid_token"],
  ])("declines %s with %s: FAILED, nothing held", async (token, code) => {
    const orderId = uuidv7();
    const { payment } = await authorize(token, { orderId });
    expect(payment).toMatchObject({ status: PaymentStatus.FAILED, failureCode: code });
    expect(payment?.failureMessage).not.toBe("");
    expect(payment?.transactions.map((t) => [t.type, t.status, t.failureCode])).toEqual([[TransactionType.AUTHORIZE, TransactionStatus.FAILED, code]]);
    // A failed payment is not live: the order may be paid again.
    expect((await authorize("tok_sandbox_success", { orderId })).payment?.status).toBe(PaymentStatus.AUTHORIZED);
  });

  it("retries a transient failure (tok_sandbox_retry fails twice) and authorizes", async () => {
    const { payment } = await authorize("tok_sandbox_retry");
    expect(payment?.status).toBe(PaymentStatus.AUTHORIZED);
    expect(payment?.transactions).toHaveLength(1);
  });

  it("a slow provider past the deadline leaves the payment PENDING; reconciliation records what the provider did", async () => {
    const orderId = uuidv7();
    const idempotencyKey = key();
    const call = h.payments.authorizePayment(
      {
        orderId,
        orderNumber: "ORD-2026-000200",
        userId: uuidv7(),
        amount: money(2500n, "EUR"),
        source: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_slow" } },
        idempotencyKey,
      },
      { ...auth(h.order), timeoutMs: 500 },
    );
    expect([Code.DeadlineExceeded, Code.Unavailable]).toContain((await failure(call)).code);
    // The provider authorized; our record did not learn it (the same state as a crash before the commit).
    const [row] = await h.sql<{ id: string; status: string }>("select id, status from payments where order_id = $1", [orderId]);
    expect(row?.status).toBe("pending");
    const reconciled = await eventually(
      async () => {
        await h.reconcile();
        const { payment } = await h.payments.getPaymentInternal({ paymentId: row!.id }, auth(h.order));
        return payment?.status === PaymentStatus.AUTHORIZED ? payment : undefined;
      },
      10_000,
      "reconciled",
    );
    expect(reconciled.transactions.map((t) => [t.type, t.status])).toEqual([[TransactionType.AUTHORIZE, TransactionStatus.SUCCEEDED]]);
    expect(reconciled.providerPaymentId).toMatch(/^pi_sandbox_/);
  });

  it("a payment voided while the provider is still authorizing it stays CANCELLED, the late hold released", async () => {
    const orderId = uuidv7();
    const call = authorize("tok_sandbox_slow", { orderId });
    const [row] = await eventually(async () => {
      const rows = await h.sql<{ id: string }>("select id from payments where order_id = $1", [orderId]);
      return rows.length ? rows : undefined;
    });
    expect((await h.payments.voidPayment({ paymentId: row!.id, reason: "order_cancelled" }, auth(h.order))).payment?.status).toBe(PaymentStatus.CANCELLED);
    const { payment } = await call;
    expect(payment?.status).toBe(PaymentStatus.CANCELLED);
    const admin = (await h.payments.adminGetPayment({ paymentId: row!.id }, auth(h.admin))).payment!;
    expect(admin.providerPaymentId).toMatch(/^pi_sandbox_/);
    expect(admin.transactions.map((t) => [t.type, t.status])).toEqual([
      [TransactionType.AUTHORIZE, TransactionStatus.FAILED],
      [TransactionType.VOID, TransactionStatus.SUCCEEDED],
    ]);
  });

  it("tok_sandbox_async is PROCESSING until the provider's webhook settles it", async () => {
    const { payment } = await authorize("tok_sandbox_async");
    expect(payment?.status).toBe(PaymentStatus.PROCESSING);
    const answer = await h.payments.handleProviderWebhook(sandboxWebhook({ type: "payment_intent.amount_capturable_updated", sequence: 2, paymentId: payment!.id }));
    expect(answer.duplicate).toBe(false);
    expect((await h.payments.getPaymentInternal({ paymentId: payment!.id }, auth(h.order))).payment?.status).toBe(PaymentStatus.AUTHORIZED);
  });
});

describe("idempotency", () => {
  it("20 parallel AuthorizePayment with one key make one payment and one authorization", async () => {
    const orderId = uuidv7();
    const userId = uuidv7();
    const idempotencyKey = key();
    const answers = await Promise.all(Array.from({ length: 20 }, () => authorize("tok_sandbox_success", { orderId, userId, idempotencyKey })));
    const ids = new Set(answers.map((a) => a.payment!.id));
    expect(ids.size).toBe(1);
    expect(answers.every((a) => a.payment?.status === PaymentStatus.AUTHORIZED)).toBe(true);
    const [count] = await h.sql<{ payments: string; authorizations: string }>(
      `select (select count(*) from payments where order_id = $1) as payments,
              (select count(*) from payment_transactions t join payments p on p.id = t.payment_id where p.order_id = $1 and t.type = 'authorize') as authorizations`,
      [orderId],
    );
    expect(count).toEqual({ payments: "1", authorizations: "1" });
  });

  it("refuses the same key with a different request, and a second live payment for an order", async () => {
    const orderId = uuidv7();
    const idempotencyKey = key();
    const first = (await authorize("tok_sandbox_success", { orderId, idempotencyKey })).payment!;
    expect(await failure(authorize("tok_sandbox_success", { orderId, idempotencyKey, amountMinor: 999n }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "IDEMPOTENCY_KEY_REUSED",
    });
    expect(await failure(authorize("tok_sandbox_success", { orderId }))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "PAYMENT_ALREADY_EXISTS",
      metadata: { payment_id: first.id },
    });
  });

  it("is INTERNAL: a customer may not authorize", async () => {
    const customer = await h.issuer.user(uuidv7());
    const call = h.payments.authorizePayment(
      { orderId: uuidv7(), orderNumber: "ORD-1", userId: uuidv7(), amount: money(1n, "EUR"), source: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_success" } }, idempotencyKey: key() },
      auth(customer),
    );
    expect((await failure(call)).code).toBe(Code.PermissionDenied);
  });
});

describe("capture, void, refund", () => {
  it("captures once: the same amount again returns it unchanged, another amount is refused", async () => {
    const { payment } = await authorize("tok_sandbox_success", { amountMinor: 1000n });
    expect(await failure(h.payments.capturePayment({ paymentId: payment!.id, amount: money(1001n, "EUR") }, auth(h.order)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "CAPTURE_EXCEEDS_AUTHORIZED",
      metadata: { authorized_minor: "1000" },
    });
    const captured = (await h.payments.capturePayment({ paymentId: payment!.id, amount: money(800n, "EUR") }, auth(h.order))).payment!;
    expect(captured).toMatchObject({ status: PaymentStatus.SUCCEEDED, amountCaptured: { amountMinor: 800n } });
    expectAmountsFromLog(captured);
    const again = (await h.payments.capturePayment({ paymentId: payment!.id, amount: money(800n, "EUR") }, auth(h.order))).payment!;
    expect(again.transactions).toHaveLength(2);
    expect((await h.payments.capturePayment({ paymentId: payment!.id }, auth(h.order))).payment?.amountCaptured?.amountMinor).toBe(800n);
    expect(await failure(h.payments.capturePayment({ paymentId: payment!.id, amount: money(1000n, "EUR") }, auth(h.order)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "ALREADY_CAPTURED",
    });
    expect(await failure(h.payments.voidPayment({ paymentId: payment!.id, reason: "order_cancelled" }, auth(h.order)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "PAYMENT_ALREADY_CAPTURED",
    });
  });

  it("voids an authorization once; a voided payment cannot be captured", async () => {
    const { payment } = await authorize("tok_sandbox_success");
    const voided = (await h.payments.voidPayment({ paymentId: payment!.id, reason: "out_of_stock" }, auth(h.order))).payment!;
    expect(voided.status).toBe(PaymentStatus.CANCELLED);
    expect((await h.payments.voidPayment({ paymentId: payment!.id }, auth(h.order))).payment?.transactions).toHaveLength(2);
    expect(await failure(h.payments.capturePayment({ paymentId: payment!.id }, auth(h.order)))).toMatchObject({ code: Code.FailedPrecondition, reason: "PAYMENT_NOT_AUTHORIZED" });
  });

  it("a capture and a void at the same time: exactly one wins", async () => {
    for (let i = 0; i < 5; i++) {
      const { payment } = await authorize("tok_sandbox_success");
      const [captured, voided] = await Promise.allSettled([
        h.payments.capturePayment({ paymentId: payment!.id }, auth(h.order)),
        h.payments.voidPayment({ paymentId: payment!.id, reason: "order_cancelled" }, auth(h.order)),
      ]);
      expect([captured.status, voided.status].filter((s) => s === "fulfilled")).toHaveLength(1);
      const after = (await h.payments.getPaymentInternal({ paymentId: payment!.id }, auth(h.order))).payment!;
      expect(after.status).toBe(captured.status === "fulfilled" ? PaymentStatus.SUCCEEDED : PaymentStatus.CANCELLED);
      expectAmountsFromLog(after);
    }
  });

  it("three partial refunds up to the captured amount pass, a fourth is refused; amounts follow the log", async () => {
    const { payment } = await authorize("tok_sandbox_success", { amountMinor: 1000n });
    const id = payment!.id;
    expect(await failure(h.payments.refundPayment({ paymentId: id, reason: RefundReason.GOODWILL, idempotencyKey: key() }, auth(h.returns)))).toMatchObject({
      reason: "PAYMENT_NOT_CAPTURED",
    });
    await h.payments.capturePayment({ paymentId: id }, auth(h.order));
    const refund = (amountMinor: bigint, idempotencyKey = key()) =>
      h.payments.refundPayment({ paymentId: id, amount: money(amountMinor, "EUR"), reason: RefundReason.RETURN, idempotencyKey }, auth(h.returns));
    const firstKey = key();
    const first = (await refund(300n, firstKey)).refund!;
    expect(first).toMatchObject({ status: RefundStatus.COMPLETED, amount: { amountMinor: 300n } });
    // The same key answers with the same refund, no second refund.
    expect((await refund(300n, firstKey)).refund?.id).toBe(first.id);
    await refund(300n);
    const partial = (await h.payments.getPaymentInternal({ paymentId: id }, auth(h.order))).payment!;
    expect(partial.status).toBe(PaymentStatus.PARTIALLY_REFUNDED);
    expectAmountsFromLog(partial);
    await refund(400n);
    expect(await failure(refund(1n))).toMatchObject({ code: Code.FailedPrecondition, reason: "REFUND_EXCEEDS_CAPTURED", metadata: { refundable_minor: "0" } });
    const done = (await h.payments.adminGetPayment({ paymentId: id }, auth(h.admin))).payment!;
    expect(done).toMatchObject({ status: PaymentStatus.REFUNDED, amountCaptured: { amountMinor: 1000n }, amountRefunded: { amountMinor: 1000n } });
    expect(done.refunds).toHaveLength(3);
    expectAmountsFromLog(done);
    await eventually(async () => ((await paymentEvents(h, PaymentRefundedSchema)).filter((e) => e.paymentId === id).length === 3 ? true : undefined), 10_000, "payment.refunded x3");
  });

  it("concurrent refunds never overdraw", async () => {
    const { payment } = await authorize("tok_sandbox_success", { amountMinor: 1000n });
    await h.payments.capturePayment({ paymentId: payment!.id }, auth(h.order));
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () => h.payments.refundPayment({ paymentId: payment!.id, amount: money(300n, "EUR"), reason: RefundReason.RETURN, idempotencyKey: key() }, auth(h.returns))),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    const done = (await h.payments.getPaymentInternal({ paymentId: payment!.id }, auth(h.order))).payment!;
    expect(done.amountRefunded?.amountMinor).toBe(900n);
    expectAmountsFromLog(done);
  });
});

describe("reconciliation of captures, voids and refunds", () => {
  /** Outbox rows of one event type naming the payment: what goes out on PAYMENT_EVENTS, counted where it is written. */
  async function outboxed(schema: DescMessage, paymentId: string): Promise<number> {
    const [row] = await h.sql<{ n: string }>("select count(*) as n from outbox_events where subject = $1 and position(convert_to($2, 'UTF8') in payload) > 0", [
      subjectOf(schema),
      paymentId,
    ]);
    return Number(row!.n);
  }
  const timedOut = async (call: Promise<unknown>) => expect([Code.DeadlineExceeded, Code.Unavailable]).toContain((await failure(call)).code);
  const internal = async (paymentId: string) => (await h.payments.getPaymentInternal({ paymentId }, auth(h.order))).payment!;
  const reconciledTo = (paymentId: string, done: (p: Payment) => boolean) =>
    eventually(
      async () => {
        await h.reconcile();
        const p = await internal(paymentId);
        return done(p) ? p : undefined;
      },
      15_000,
      "reconciled",
    );

  it("a capture whose call timed out is settled from the provider's answer: SUCCEEDED, payment.succeeded once", async () => {
    const { payment } = await authorize("tok_sandbox_slow_operations", { amountMinor: 1500n });
    expect(payment?.status).toBe(PaymentStatus.AUTHORIZED);
    await timedOut(h.payments.capturePayment({ paymentId: payment!.id, amount: money(1200n, "EUR") }, { ...auth(h.order), timeoutMs: 300 }));
    // The provider captured; our record did not learn it.
    expect((await internal(payment!.id)).transactions.map((t) => [t.type, t.status])).toEqual([
      [TransactionType.AUTHORIZE, TransactionStatus.SUCCEEDED],
      [TransactionType.CAPTURE, TransactionStatus.PENDING],
    ]);
    const settled = await reconciledTo(payment!.id, (p) => p.status === PaymentStatus.SUCCEEDED);
    expect(settled.amountCaptured?.amountMinor).toBe(1200n);
    expect(settled.transactions.map((t) => [t.type, t.status])).toEqual([
      [TransactionType.AUTHORIZE, TransactionStatus.SUCCEEDED],
      [TransactionType.CAPTURE, TransactionStatus.SUCCEEDED],
    ]);
    expectAmountsFromLog(settled);
    // The caller's retry and another run change nothing.
    expect((await h.payments.capturePayment({ paymentId: payment!.id, amount: money(1200n, "EUR") }, auth(h.order))).payment?.transactions).toHaveLength(2);
    await h.reconcile();
    expect(await outboxed(PaymentSucceededSchema, payment!.id)).toBe(1);
    await eventually(async () => ((await paymentEvents(h, PaymentSucceededSchema)).some((e) => e.paymentId === payment!.id) ? true : undefined), 10_000, "payment.succeeded");
  });

  it("a void whose call timed out is settled: CANCELLED, payment.voided once with the caller's reason", async () => {
    const { payment } = await authorize("tok_sandbox_slow_operations");
    await timedOut(h.payments.voidPayment({ paymentId: payment!.id, reason: "order_cancelled" }, { ...auth(h.order), timeoutMs: 300 }));
    expect((await internal(payment!.id)).status).toBe(PaymentStatus.AUTHORIZED);
    // A capture meanwhile is refused: the void is in flight.
    expect(await failure(h.payments.capturePayment({ paymentId: payment!.id }, auth(h.order)))).toMatchObject({ code: Code.FailedPrecondition, reason: "PAYMENT_NOT_AUTHORIZED" });
    const settled = await reconciledTo(payment!.id, (p) => p.status === PaymentStatus.CANCELLED);
    expect(settled.transactions.map((t) => [t.type, t.status])).toEqual([
      [TransactionType.AUTHORIZE, TransactionStatus.SUCCEEDED],
      [TransactionType.VOID, TransactionStatus.SUCCEEDED],
    ]);
    await h.reconcile();
    expect(await outboxed(PaymentVoidedSchema, payment!.id)).toBe(1);
    const voided = await eventually(async () => (await paymentEvents(h, PaymentVoidedSchema)).find((e) => e.paymentId === payment!.id), 10_000, "payment.voided");
    expect(voided.reason).toBe("order_cancelled");
  });

  it("a refund whose call timed out is settled: COMPLETED, PARTIALLY_REFUNDED, payment.refunded once; the same key answers it", async () => {
    const { payment } = await authorize("tok_sandbox_slow_operations", { amountMinor: 1000n });
    await h.payments.capturePayment({ paymentId: payment!.id }, auth(h.order));
    const idempotencyKey = key();
    const refund = (init = {}) =>
      h.payments.refundPayment({ paymentId: payment!.id, amount: money(400n, "EUR"), reason: RefundReason.RETURN, idempotencyKey }, { ...auth(h.returns), ...init });
    await timedOut(refund({ timeoutMs: 300 }));
    const [pending] = await h.sql<{ id: string; status: string }>("select id, status from refunds where payment_id = $1", [payment!.id]);
    expect(pending?.status).toBe("pending");
    const settled = await reconciledTo(payment!.id, (p) => p.status === PaymentStatus.PARTIALLY_REFUNDED);
    expect(settled.amountRefunded?.amountMinor).toBe(400n);
    expect(settled.refunds.map((r) => [r.id, r.status])).toEqual([[pending!.id, RefundStatus.COMPLETED]]);
    expectAmountsFromLog(settled);
    expect((await refund()).refund).toMatchObject({ id: pending!.id, status: RefundStatus.COMPLETED });
    await h.reconcile();
    expect(await outboxed(PaymentRefundedSchema, payment!.id)).toBe(1);
  });

  it("a capture recorded as intent by a process that died before calling the provider is made and recorded once", async () => {
    const { payment } = await authorize("tok_sandbox_success", { amountMinor: 700n });
    // What capturePayment commits before it calls the provider, and nothing after: the process died there.
    await h.sql("insert into payment_transactions (id, payment_id, type, status, amount_minor, currency) values ($1, $2, 'capture', 'pending', 700, 'EUR')", [uuidv7(), payment!.id]);
    const settled = await reconciledTo(payment!.id, (p) => p.status === PaymentStatus.SUCCEEDED);
    expect(settled.amountCaptured?.amountMinor).toBe(700n);
    expectAmountsFromLog(settled);
    await h.reconcile();
    expect(await outboxed(PaymentSucceededSchema, payment!.id)).toBe(1);
    // The provider holds the capture: a refund of it passes there too.
    const { refund } = await h.payments.refundPayment({ paymentId: payment!.id, reason: RefundReason.GOODWILL, idempotencyKey: key() }, auth(h.returns));
    expect(refund).toMatchObject({ status: RefundStatus.COMPLETED, amount: { amountMinor: 700n } });
  });
});

describe("saved payment methods", () => {
  it("charges a saved method through User's GetPaymentMethodToken; another customer's method is PAYMENT_METHOD_NOT_FOUND; no token is stored", async () => {
    const shopper = await h.registeredUser();
    const method = (
      await h.users.addPaymentMethod(
        { type: PaymentMethodType.CREDIT_CARD, providerToken: "tok_sandbox_success", cardBrand: CardBrand.MASTERCARD, last4: "4444", expiryMonth: 11, expiryYear: new Date().getUTCFullYear() + 2 },
        auth(shopper.token),
      )
    ).paymentMethod!;
    const charge = (userId: string) =>
      h.payments.authorizePayment(
        { orderId: uuidv7(), orderNumber: "ORD-2026-000300", userId, amount: money(5000n, "EUR"), source: { case: "paymentMethodId", value: method.id }, idempotencyKey: key() },
        auth(h.order),
      );
    const { payment } = await charge(shopper.userId);
    expect(payment).toMatchObject({ status: PaymentStatus.AUTHORIZED, paymentMethodId: method.id, paymentMethod: { cardBrand: CardBrand.MASTERCARD, last4: "4444" } });
    expect(await failure(charge(uuidv7()))).toMatchObject({ code: Code.NotFound, reason: "PAYMENT_METHOD_NOT_FOUND" });
    const leaks = await h.sql<{ n: string }>(
      `select count(*) as n from (select row_to_json(p)::text as t from payments p union all select row_to_json(m)::text from payment_methods m
         union all select row_to_json(t)::text from payment_transactions t) rows where t like '%tok_sandbox%'`,
    );
    expect(leaks[0]?.n).toBe("0");
    // The customer sees their payment without provider ids.
    const mine = (await h.payments.getPayment({ paymentId: payment!.id }, auth(shopper.token))).payment!;
    expect(mine.providerPaymentId).toBe("");
    expect((await failure(h.payments.getPayment({ paymentId: payment!.id }, auth(await h.issuer.user(uuidv7()))))).code).toBe(Code.NotFound);
  });
});

describe("webhooks", () => {
  it("a webhook delivered twice is processed once; one delivered before the event it follows is ignored", async () => {
    const { payment } = await authorize("tok_sandbox_async");
    const id = payment!.id;
    const authorized = sandboxWebhook({ id: `evt_${uuidv7()}`, type: "payment_intent.amount_capturable_updated", sequence: 2, paymentId: id });
    const first = await h.payments.handleProviderWebhook(authorized);
    const second = await h.payments.handleProviderWebhook(authorized);
    expect(second).toEqual(expect.objectContaining({ webhookEventId: first.webhookEventId, duplicate: true }));
    // The provider's earlier "processing" event arrives last.
    await h.payments.handleProviderWebhook(sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId: id }));
    const after = (await h.payments.getPaymentInternal({ paymentId: id }, auth(h.order))).payment!;
    expect(after.status).toBe(PaymentStatus.AUTHORIZED);
    expect(after.transactions.map((t) => [t.type, t.status])).toEqual([[TransactionType.AUTHORIZE, TransactionStatus.SUCCEEDED]]);
    const { events } = await h.payments.listWebhookEvents({ paymentId: id }, auth(h.admin));
    expect(events.map((e) => [e.eventType, e.status])).toEqual([
      ["payment_intent.processing", WebhookEventStatus.IGNORED],
      ["payment_intent.amount_capturable_updated", WebhookEventStatus.PROCESSED],
    ]);
    expect(await failure(h.payments.reprocessWebhookEvent({ id: first.webhookEventId }, auth(h.admin)))).toMatchObject({ reason: "WEBHOOK_ALREADY_PROCESSED" });
  });

  it("refuses a bad signature and a stale timestamp; accepts the previous secret during a rotation", async () => {
    const paymentId = uuidv7();
    const bad = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId }, ["whsec_someone_else_entirely_0123456789"]);
    expect(await failure(h.payments.handleProviderWebhook(bad))).toMatchObject({ code: Code.Unauthenticated, reason: "WEBHOOK_SIGNATURE_INVALID" });
    const stale = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId }, [webhookSecret], Date.now() - 301_000);
    expect(await failure(h.payments.handleProviderWebhook(stale))).toMatchObject({ code: Code.Unauthenticated, reason: "WEBHOOK_SIGNATURE_INVALID" });
    const tampered = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId });
    expect(await failure(h.payments.handleProviderWebhook({ ...tampered, payload: Buffer.from(tampered.payload.toString().replace("processing", "succeeded")) }))).toMatchObject({
      code: Code.Unauthenticated,
    });
    // During a rotation the provider signs with both secrets; either one configured here passes.
    const rotating = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId }, ["whsec_the_next_secret_not_yet_here_0123", previousWebhookSecret]);
    expect((await h.payments.handleProviderWebhook(rotating)).duplicate).toBe(false);
    expect(await failure(h.payments.handleProviderWebhook({ provider: "nowhere", payload: rotating.payload, signature: rotating.signature }))).toMatchObject({
      code: Code.InvalidArgument,
      reason: "PROVIDER_NOT_CONFIGURED",
    });
  });
});

describe("lists", () => {
  it("ListPaymentsForOrder (the caller's own), ListPayments with filters and pages, ListRefunds", async () => {
    const userId = uuidv7();
    const shopper = await h.issuer.user(userId);
    const orderId = uuidv7();
    const declined = (await authorize("tok_sandbox_decline", { orderId, userId })).payment!;
    const paid = (await authorize("tok_sandbox_success", { orderId, userId })).payment!;
    await h.payments.capturePayment({ paymentId: paid.id }, auth(h.order));
    const refund = (await h.payments.refundPayment({ paymentId: paid.id, amount: money(100n, "EUR"), reason: RefundReason.GOODWILL, idempotencyKey: key() }, auth(h.returns))).refund!;

    const mine = await h.payments.listPaymentsForOrder({ orderId }, auth(shopper));
    expect(mine.payments.map((p) => p.id)).toEqual([paid.id, declined.id]);
    expect(mine.payments[0]?.refunds.map((r) => r.id)).toEqual([refund.id]);
    expect(mine.payments[0]?.providerPaymentId).toBe("");
    expect((await h.payments.listPaymentsForOrder({ orderId }, auth(await h.issuer.user(uuidv7())))).payments).toEqual([]);

    const first = await h.payments.listPayments({ userId, pageSize: 1 }, auth(h.admin));
    expect(first.payments.map((p) => p.id)).toEqual([paid.id]);
    const second = await h.payments.listPayments({ userId, pageSize: 1, pageToken: first.nextPageToken }, auth(h.admin));
    expect(second.payments.map((p) => p.id)).toEqual([declined.id]);
    expect(second.nextPageToken).toBe("");
    expect((await h.payments.listPayments({ userId, statuses: [PaymentStatus.FAILED] }, auth(h.admin))).payments.map((p) => p.id)).toEqual([declined.id]);
    expect((await h.payments.listRefunds({ paymentId: paid.id }, auth(h.admin))).refunds.map((r) => [r.id, r.initiatedBy])).toEqual([[refund.id, "returns"]]);
    expect((await h.payments.getRefund({ refundId: refund.id }, auth(shopper))).refund?.initiatedBy).toBe("");
  });
});
