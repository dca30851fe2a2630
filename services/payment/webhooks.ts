/**
 * Provider webhooks: HandleProviderWebhook, ListWebhookEvents and
 * ReprocessWebhookEvent.
 *
 * A webhook is verified (signature over timestamp and raw body, within the
 * tolerance), stored once per provider event id (a duplicate answers OK,
 * duplicate = true, and is not processed again), then processed in its own
 * transaction: the payment row is locked, and an event whose provider
 * sequence is not after the last one applied to that payment, or whose state
 * is behind the payment's, is recorded as IGNORED. So duplicates and events
 * that arrive before the one they follow end in the provider's final state.
 * A processing failure leaves the event FAILED (listed, reprocessable); the
 * call still succeeds, the event is durably ours.
 */
import { v7 as uuidv7 } from "uuid";
import type {
  HandleProviderWebhookRequest,
  HandleProviderWebhookResponse,
  ListWebhookEventsRequest,
  ListWebhookEventsResponse,
  ReprocessWebhookEventRequest,
  ReprocessWebhookEventResponse,
} from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { failedPrecondition, invalidArgument, notFound, unauthenticated } from "../../kit/errors.ts";
import type { Logger } from "../../kit/logger.ts";
import { pageOf } from "../../kit/paging.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { PaymentConfig } from "./config.ts";
import { webhookMessage, webhookStatus } from "./mapping.ts";
import { recordAuthorization } from "./payments.ts";
import { type ProviderEvent, WebhookPayloadInvalid, WebhookSignatureInvalid } from "./provider.ts";
import type { Providers } from "./providers.ts";

type Out<T> = Omit<T, "$typeName">;

export interface WebhookDeps {
  config: PaymentConfig;
  providers: Providers;
  log: Logger;
}

export async function handleProviderWebhook(em: EntityManager, deps: WebhookDeps, req: HandleProviderWebhookRequest): Promise<Out<HandleProviderWebhookResponse>> {
  const provider = deps.providers.get(req.provider, "provider");
  const payload = Buffer.from(req.payload);
  let event: ProviderEvent;
  try {
    provider.verifyWebhook(payload, req.signature, Date.now());
    event = provider.parseEvent(payload);
  } catch (error) {
    if (error instanceof WebhookSignatureInvalid) {
      throw unauthenticated(`webhook refused: ${error.message}`, "WEBHOOK_SIGNATURE_INVALID");
    }
    if (error instanceof WebhookPayloadInvalid) throw invalidArgument("payload", error.message, "WEBHOOK_PAYLOAD_INVALID");
    throw error;
  }
  const db = sqlOf(em);
  const inserted = await db.one<{ id: string }>(
    `insert into payment_webhooks (id, provider, event_type, provider_event_id, status, payment_id, payload)
     values ($1, $2, $3, $4, 'pending', $5, $6) on conflict (provider, provider_event_id) do nothing returning id`,
    [uuidv7(), provider.name, event.type, event.id, uuidOrNull(event.paymentId), payload],
  );
  if (!inserted) {
    const known = (await db.one<{ id: string }>("select id from payment_webhooks where provider = $1 and provider_event_id = $2", [provider.name, event.id]))!;
    return { webhookEventId: known.id, duplicate: true };
  }
  await processWebhook(em, deps, inserted.id);
  return { webhookEventId: inserted.id, duplicate: false };
}

const uuidOrNull = (v: string | undefined) => (v && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v) ? v : null);

/** How far along a payment is; an event may only move it to a later rank. */
const rank: Record<string, number> = { pending: 0, processing: 1, authorized: 2, failed: 2, cancelled: 3, succeeded: 3, partially_refunded: 4, refunded: 5 };

/** Processes one stored event; never throws for a processing failure (the event is left FAILED). */
export async function processWebhook(em: EntityManager, deps: WebhookDeps, webhookId: string): Promise<void> {
  try {
    await em.transactional(async (tx) => {
      const db = sqlOf(tx);
      const w = (await db.one<{ provider: string; payload: Buffer; status: string }>("select provider, payload, status from payment_webhooks where id = $1 for update", [webhookId]))!;
      if (w.status === "processed" || w.status === "ignored") return;
      const event = deps.providers.get(w.provider).parseEvent(w.payload);
      const outcome = await applyEvent(tx, deps.config, event);
      await db.run("update payment_webhooks set status = $2, error = null, attempts = attempts + 1, processed_at = now() where id = $1", [webhookId, outcome]);
    });
  } catch (error) {
    deps.log.warn({ err: error, webhook_event_id: webhookId }, "webhook processing failed; it stays FAILED for a retry");
    await sqlOf(em).run("update payment_webhooks set status = 'failed', error = $2, attempts = attempts + 1, processed_at = now() where id = $1", [
      webhookId,
      error instanceof Error ? error.message : String(error),
    ]);
  }
}

async function applyEvent(tx: EntityManager, config: PaymentConfig, event: ProviderEvent): Promise<"processed" | "ignored"> {
  const paymentId = uuidOrNull(event.paymentId);
  if (!paymentId || !event.paymentStatus) return "ignored";
  const db = sqlOf(tx);
  const p = await db.one<{ status: string; provider_sequence: string }>("select status, provider_sequence from payments where id = $1 for update", [paymentId]);
  if (!p || event.sequence <= Number(p.provider_sequence)) return "ignored";
  await db.run("update payments set provider_sequence = $2 where id = $1", [paymentId, event.sequence]);
  const target = event.paymentStatus;
  if ((rank[target] ?? 0) <= (rank[p.status] ?? 0)) return "ignored";
  if (target === "processing" || target === "authorized" || target === "failed") {
    const changed = await recordAuthorization(tx, config, paymentId, target, { providerId: "", failureCode: event.failureCode, failureMessage: event.failureMessage, raw: { event_id: event.id, type: event.type } });
    return changed ? "processed" : "ignored";
  }
  // Captures, voids and refunds are ours to start and recorded from the provider's answer; their events confirm them.
  return "ignored";
}

export async function reprocessWebhookEvent(em: EntityManager, deps: WebhookDeps, req: ReprocessWebhookEventRequest): Promise<Out<ReprocessWebhookEventResponse>> {
  const db = sqlOf(em);
  const w = await db.one<{ status: string }>("select status from payment_webhooks where id = $1", [req.id]);
  if (!w) throw notFound("webhook event", req.id);
  if (w.status === "processed") throw failedPrecondition(`webhook event ${req.id} was processed successfully`, "WEBHOOK_ALREADY_PROCESSED");
  if (w.status === "ignored") await db.run("update payment_webhooks set status = 'pending' where id = $1 and status = 'ignored'", [req.id]);
  await processWebhook(em, deps, req.id);
  const row = (await db.one<Parameters<typeof webhookMessage>[0]>("select * from payment_webhooks where id = $1", [req.id]))!;
  return { event: webhookMessage(row, true) };
}

export async function listWebhookEvents(em: EntityManager, req: ListWebhookEventsRequest): Promise<Out<ListWebhookEventsResponse>> {
  const pages = pageOf(req, { t: "timestamptz", i: "uuid" });
  const params: unknown[] = [];
  const $ = (v: unknown) => (params.push(v), `$${params.length}`);
  const where: string[] = [];
  if (req.provider) where.push(`provider = ${$(req.provider)}`);
  if (req.statuses.length) where.push(`status = any(${$(req.statuses.map((s) => webhookStatus.toDb(s)))}::text[])`);
  if (req.eventType) where.push(`event_type = ${$(req.eventType)}`);
  if (req.paymentId) where.push(`payment_id = ${$(req.paymentId)}::uuid`);
  if (req.providerEventId) where.push(`provider_event_id = ${$(req.providerEventId)}`);
  if (req.createdAfter) where.push(`created_at >= ${$(dateOf(req.createdAfter))}`);
  if (req.createdBefore) where.push(`created_at < ${$(dateOf(req.createdBefore))}`);
  if (pages.after) where.push(`(created_at, id) < (${$(pages.after.t)}::timestamptz, ${$(pages.after.i)}::uuid)`);
  const rows = await sqlOf(em).all<Parameters<typeof webhookMessage>[0] & { created_key: string }>(
    `select *, created_at::text as created_key from payment_webhooks ${where.length ? `where ${where.join(" and ")}` : ""}
      order by created_at desc, id desc limit ${$(pages.size + 1)}`,
    params,
  );
  const page = rows.slice(0, pages.size);
  const last = page[page.length - 1];
  return {
    events: page.map((r) => webhookMessage(r, req.includePayload)),
    nextPageToken: rows.length > pages.size && last ? pages.next({ t: last.created_key, i: last.id }) : "",
  };
}
