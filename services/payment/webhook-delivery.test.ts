/**
 * The sandbox's own webhook deliveries, through the one webhook mechanism:
 * without an edge, straight to the service's HandleProviderWebhook RPC; with
 * PAYMENT_SANDBOX_WEBHOOK_URL set to the edge's `POST /webhooks/payments/sandbox`,
 * as plain HTTP that the edge turns into that RPC. Asynchronous settlement
 * arrives out of order and duplicated and ends in the provider's state. The
 * edge route's HTTP answers. The service itself serves no plain HTTP route.
 */
import { v7 as uuidv7 } from "uuid";
import { type RunningEdge, startEdge } from "../../gateway/edge.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PaymentStatus, WebhookEventStatus } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { money } from "../../kit/money.ts";
import { freePort } from "../../kit/testing/infra.ts";
import { eventually } from "../../kit/testing/mesh.ts";
import { signWebhook } from "../../kit/webhooks.ts";
import { auth, type PaymentHarness, sandboxWebhook, startPaymentHarness, webhookSecret } from "./testing.ts";

/** Without an edge: the sandbox calls HandleProviderWebhook itself. */
let h: PaymentHarness;
let edge: RunningEdge;
/** PAYMENT_SANDBOX_WEBHOOK_URL is the edge's webhook route. */
let behindEdge: PaymentHarness;
let frontEdge: RunningEdge;

beforeAll(async () => {
  h = await startPaymentHarness({ PAYMENT_SANDBOX_ASYNC_MS: "200" });
  edge = await startEdge({ port: 0, host: "127.0.0.1", upstreams: { payment: h.mesh.url("payment") }, logLevel: "silent" });
  const edgePort = await freePort();
  behindEdge = await startPaymentHarness({ PAYMENT_SANDBOX_ASYNC_MS: "200", PAYMENT_SANDBOX_WEBHOOK_URL: `http://127.0.0.1:${edgePort}/webhooks/payments/sandbox` });
  frontEdge = await startEdge({ port: edgePort, host: "127.0.0.1", upstreams: { payment: behindEdge.mesh.url("payment") }, logLevel: "silent" });
});

afterAll(async () => {
  await edge?.stop();
  await frontEdge?.stop();
  await h?.stop();
  await behindEdge?.stop();
});

const post = (base: string, path: string, body: Buffer | string, headers: Record<string, string> = {}) =>
  fetch(`${base}${path}`, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });

/** An async payment settled by the sandbox's deliveries: later event first, earlier after, later again. */
async function settledByWebhooks(harness: PaymentHarness) {
  const { payment } = await harness.payments.authorizePayment(
    {
      orderId: uuidv7(),
      orderNumber: "ORD-2026-000400",
      userId: uuidv7(),
      amount: money(1200n, "EUR"),
      source: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_async" } },
      idempotencyKey: `key-${uuidv7()}`,
    },
    auth(harness.order),
  );
  expect(payment?.status).toBe(PaymentStatus.PROCESSING);
  const events = await eventually(
    async () => {
      const { events } = await harness.payments.listWebhookEvents({ paymentId: payment!.id }, auth(harness.admin));
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
  expect((await harness.payments.getPaymentInternal({ paymentId: payment!.id }, auth(harness.order))).payment?.status).toBe(PaymentStatus.AUTHORIZED);
}

describe("sandbox webhook deliveries", () => {
  it("without an edge, settles tok_sandbox_async through the HandleProviderWebhook RPC", async () => {
    await settledByWebhooks(h);
  });

  it("with PAYMENT_SANDBOX_WEBHOOK_URL at the edge, settles tok_sandbox_async through the edge's webhook route", async () => {
    await settledByWebhooks(behindEdge);
  });

  it("the service serves no plain-HTTP webhook route of its own: the edge's is the one way in over HTTP", async () => {
    const ok = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId: uuidv7() });
    const direct = await post(h.mesh.url("payment"), "/webhooks/payments/sandbox", ok.payload, { "sandbox-signature": ok.signature });
    expect(direct.status).not.toBe(200);
    await direct.body?.cancel();
    expect((await h.payments.listWebhookEvents({ providerEventId: JSON.parse(ok.payload.toString()).id }, auth(h.admin))).events).toEqual([]);
  });
});

describe("the edge's POST /webhooks/payments/<provider>", () => {
  it("answers 200 (and duplicate), 401 for no or a bad signature and 400 for an unknown provider or a body that is no event", async () => {
    const ok = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId: uuidv7() });
    const accepted = await post(edge.url, "/webhooks/payments/sandbox", ok.payload, { "sandbox-signature": ok.signature });
    expect(accepted.status).toBe(200);
    // The RPC's JSON answer: proto3 JSON leaves out duplicate = false.
    const first = (await accepted.json()) as { webhookEventId: string; duplicate?: boolean };
    expect([typeof first.webhookEventId, first.duplicate ?? false]).toEqual(["string", false]);
    expect(await (await post(edge.url, "/webhooks/payments/sandbox", ok.payload, { "sandbox-signature": ok.signature })).json()).toEqual({ webhookEventId: first.webhookEventId, duplicate: true });

    const unsigned = await post(edge.url, "/webhooks/payments/sandbox", ok.payload);
    expect(unsigned.status).toBe(401);
    expect(await unsigned.json()).toMatchObject({ code: "unauthenticated" });
    const wrong = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId: uuidv7() }, ["whsec_someone_else_entirely_0123456789"]);
    const refused = await post(edge.url, "/webhooks/payments/sandbox", wrong.payload, { "sandbox-signature": wrong.signature });
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ code: "unauthenticated" });
    const stripe = await post(edge.url, "/webhooks/payments/stripe", ok.payload, { "sandbox-signature": ok.signature });
    expect(stripe.status).toBe(400);
    expect(await stripe.json()).toMatchObject({ code: "invalid_argument" });
    const garbage = "not an event";
    const invalid = await post(edge.url, "/webhooks/payments/sandbox", garbage, { "sandbox-signature": signWebhook(garbage, webhookSecret) });
    expect(invalid.status).toBe(400);
    expect(await invalid.json()).toMatchObject({ code: "invalid_argument" });
  });

  it("turns the POST into HandleProviderWebhook with the raw body and signature", async () => {
    const event = sandboxWebhook({ type: "payment_intent.processing", sequence: 1, paymentId: uuidv7() });
    const accepted = await post(edge.url, "/webhooks/payments/sandbox", event.payload, { "sandbox-signature": event.signature });
    expect(accepted.status).toBe(200);
    const stored = (await accepted.json()) as { webhookEventId: string };
    const { events } = await h.payments.listWebhookEvents({ providerEventId: JSON.parse(event.payload.toString()).id, includePayload: true }, auth(h.admin));
    expect(events.map((e) => e.id)).toEqual([stored.webhookEventId]);
    expect(Buffer.from(events[0]!.payload).equals(event.payload)).toBe(true);
    const forged = await post(edge.url, "/webhooks/payments/sandbox", event.payload, {
      "sandbox-signature": event.signature.replace(/v1=(.)/, (_m, c: string) => `v1=${c === "0" ? "1" : "0"}`),
    });
    expect(forged.status).toBe(401);
  });
});
