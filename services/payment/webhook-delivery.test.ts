/**
 * The sandbox's own webhook deliveries over plain HTTP to the payment
 * service's `POST /webhooks/payments/<provider>` route (what the edge
 * forwards): asynchronous settlement arrives out of order and duplicated and
 * ends in the provider's state; the route's HTTP answers.
 */
import { v7 as uuidv7 } from "uuid";
import { type RunningEdge, startEdge } from "../../gateway/edge.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PaymentStatus, WebhookEventStatus } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { money } from "../../kit/money.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { signWebhook } from "../../kit/webhooks.ts";
import { auth, type PaymentHarness, sandboxWebhook, startPaymentHarness, webhookSecret } from "./testing.ts";

let h: PaymentHarness;
let edge: RunningEdge;

beforeAll(async () => {
  h = await startPaymentHarness({ PAYMENT_SANDBOX_ASYNC_MS: "200" });
  edge = await startEdge({ port: 0, host: "127.0.0.1", upstreams: { payment: h.mesh.url("payment") }, logLevel: "silent" });
});

afterAll(async () => {
  await edge?.stop();
  await h?.stop();
});

const post = (path: string, body: Buffer | string, headers: Record<string, string> = {}, base = h.mesh.url("payment")) =>
  fetch(`${base}${path}`, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });

describe("sandbox webhook deliveries", () => {
  it("settles tok_sandbox_async by its webhooks: later event first, earlier after, later again", async () => {
    const { payment } = await h.payments.authorizePayment(
      {
        orderId: uuidv7(),
        orderNumber: "ORD-2026-000400",
        userId: uuidv7(),
        amount: money(1200n, "EUR"),
        source: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_async" } },
        idempotencyKey: `key-${uuidv7()}`,
      },
      auth(h.order),
    );
    expect(payment?.status).toBe(PaymentStatus.PROCESSING);
    const events = await eventually(
      async () => {
        const { events } = await h.payments.listWebhookEvents({ paymentId: payment!.id }, auth(h.admin));
        // Both events stored, and the duplicate (third delivery) answered, once the earlier one is in.
        return events.length === 2 && events.every((e) => e.status !== WebhookEventStatus.PENDING) ? events : undefined;
      },
      10_000,
      "webhooks delivered",
    );
    expect(Object.fromEntries(events.map((e) => [e.eventType, e.status]))).toEqual({
      "payment_intent.amount_capturable_updated": WebhookEventStatus.PROCESSED,
      "payment_intent.processing": WebhookEventStatus.IGNORED,
    });
    expect((await h.payments.getPaymentInternal({ paymentId: payment!.id }, auth(h.order))).payment?.status).toBe(PaymentStatus.AUTHORIZED);
  });

  it("answers 200, 401 for a bad signature and 400 for an unknown provider or a body that is no event", async () => {
    const ok = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId: uuidv7() });
    const accepted = await post("/webhooks/payments/sandbox", ok.payload, { "sandbox-signature": ok.signature });
    expect(accepted.status).toBe(200);
    expect(await accepted.json()).toMatchObject({ duplicate: false });
    expect(await (await post("/webhooks/payments/sandbox", ok.payload, { "sandbox-signature": ok.signature })).json()).toMatchObject({ duplicate: true });

    const unsigned = await post("/webhooks/payments/sandbox", ok.payload);
    expect(unsigned.status).toBe(401);
    expect(await unsigned.json()).toMatchObject({ reason: "WEBHOOK_SIGNATURE_INVALID" });
    expect((await post("/webhooks/payments/stripe", ok.payload, { "sandbox-signature": ok.signature })).status).toBe(400);
    const garbage = "not an event";
    const refused = await post("/webhooks/payments/sandbox", garbage, { "sandbox-signature": signWebhook(garbage, webhookSecret) });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ reason: "WEBHOOK_PAYLOAD_INVALID" });
  });

  it("the edge turns POST /webhooks/payments/<provider> into HandleProviderWebhook with the raw body and signature", async () => {
    const event = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId: uuidv7() });
    const accepted = await post("/webhooks/payments/sandbox", event.payload, { "sandbox-signature": event.signature }, edge.url);
    expect(accepted.status).toBe(200);
    const stored = (await accepted.json()) as { webhookEventId: string };
    const { events } = await h.payments.listWebhookEvents({ providerEventId: JSON.parse(event.payload.toString()).id, includePayload: true }, auth(h.admin));
    expect(events.map((e) => e.id)).toEqual([stored.webhookEventId]);
    expect(Buffer.from(events[0]!.payload).equals(event.payload)).toBe(true);
    const forged = await post("/webhooks/payments/sandbox", event.payload, { "sandbox-signature": event.signature.replace(/v1=(.)/, (_m, c: string) => `v1=${c === "0" ? "1" : "0"}`) }, edge.url);
    expect(forged.status).toBe(401);
  });
});
