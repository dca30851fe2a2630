/**
 * What AuthorizePayment costs PostgreSQL, through the public contract against
 * a real server: every statement the process sends during one call is
 * captured (scripts/bench/meter.ts, the bench's own counter), so the counts
 * are exact. The outbox relay's passes (woken by the call's commits) are not
 * the call's and are left out; the call's own outbox inserts are counted.
 */
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PaymentStatus } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { money } from "../../kit/money.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { type CapturedQuery, captureQueries, installSqlCounter } from "../../scripts/bench/meter.ts";
import { auth, type PaymentHarness, startPaymentHarness } from "./testing.ts";

let h: PaymentHarness;

beforeAll(async () => {
  // No background passes during a measured call: the relay polls rarely, reconciliation never.
  h = await startPaymentHarness({ OUTBOX_POLL_MS: "600000", PAYMENT_RECONCILE_EVERY_MS: String(24 * 3_600_000) });
  installSqlCounter();
});

afterAll(async () => {
  await h?.stop();
});

/** The outbox relay's and the metrics' statements, and the health probe's. */
const background = /outbox_relay_lease|from outbox_events where published_at is null|update outbox_events set published_at|^select 1$/;

/** The statements one call sends, once the relay has nothing left to publish. */
async function statementsOf(call: () => Promise<unknown>): Promise<CapturedQuery[]> {
  await eventually(async () => ((await h.sql<{ n: number }>("select count(*)::int as n from outbox_events where published_at is null"))[0]!.n === 0 ? true : undefined));
  return (await captureQueries(call)).filter((q) => !background.test(q.text.replace(/\s+/g, " ").trim()));
}

const texts = (statements: CapturedQuery[]) => statements.map((q) => q.text.replace(/\s+/g, " ").slice(0, 120)).join("\n");

const authorize = (token: string, idempotencyKey = `key-${uuidv7()}`, orderId = uuidv7(), userId = "0193a000-0000-7000-8000-000000000001") =>
  h.payments.authorizePayment(
    { orderId, orderNumber: "ORD-2026-000900", userId, amount: money(1000n, "EUR"), source: { case: "paymentToken", value: { provider: "sandbox", token } }, idempotencyKey },
    auth(h.order),
  );

describe("AuthorizePayment statements per call", () => {
  it("a new authorization: 14 statements in two short transactions around the provider call, then the answer's reads", async () => {
    await authorize("tok_sandbox_success");
    const idempotencyKey = `key-${uuidv7()}`;
    const orderId = uuidv7();
    let answer: Awaited<ReturnType<typeof authorize>> | undefined;
    const first = await statementsOf(async () => (answer = await authorize("tok_sandbox_success", idempotencyKey, orderId)));
    expect(answer?.payment?.status).toBe(PaymentStatus.AUTHORIZED);
    // (1) BEGIN, the key (expired one dropped, ours inserted), payment.initiated, the AUTHORIZE row, the payment, the key's answer, COMMIT;
    // (2) BEGIN, the payment and its AUTHORIZE row in one statement, the card's display row, payment.authorized, COMMIT;
    // (3) the payment with its transactions and refunds, in one statement.
    expect(first.length, texts(first)).toBe(14);
    // The same key again answers from the stored rows: no write, no provider call.
    const again = await statementsOf(() => authorize("tok_sandbox_success", idempotencyKey, orderId));
    // BEGIN, the key (expired one dropped, ours found), COMMIT, the payment's state, the answer.
    expect(again.length, texts(again)).toBeLessThanOrEqual(7);
    expect(again.some((q) => /^\s*(insert into "|update payments)/.test(q.text)), texts(again)).toBe(false);
  });

  it("a decline costs no more than an authorization", async () => {
    const declined = await statementsOf(() => authorize("tok_sandbox_decline"));
    expect(declined.length, texts(declined)).toBeLessThanOrEqual(14);
  });

  it("a second live payment for an order is refused after one extra read, naming the live payment", async () => {
    const orderId = uuidv7();
    const live = (await authorize("tok_sandbox_success", undefined, orderId)).payment!;
    const refused = await statementsOf(() => authorize("tok_sandbox_success", undefined, orderId).catch((e: unknown) => e));
    // BEGIN, the key, the inserts refused by the unique index, ROLLBACK, the live payment's id.
    expect(refused.length, texts(refused)).toBeLessThanOrEqual(9);
    expect(texts(refused)).toMatch(/select id from payments where order_id/);
    expect(live.id).toBeTruthy();
  });
});
