/**
 * Queues notifications: renders the template for the recipient's language,
 * applies the user's preferences per channel, and writes one row per channel
 * under a unique idempotency key ("<key>-<channel>"), so an event or a call
 * that comes again never queues twice. Runs inside the caller's transaction
 * (the consumer's inbox transaction, or the RPC's): nothing is sent here.
 * EMAIL and PUSH rows wait for the delivery job (delivery.ts) with their
 * unredacted content sealed; IN_APP rows are DELIVERED at once.
 */
import { v7 as uuidv7 } from "uuid";
import { NotificationSentSchema } from "../../gen/ecommerce/notification/v1/events_pb.js";
import { NotificationChannel, NotificationType } from "../../gen/ecommerce/notification/v1/notification_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { sealText } from "../../kit/sealing.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { NotificationConfig } from "./config.ts";
import type { EmailTemplateRow, RecipientRow } from "./entities.ts";
import { RecipientEntity } from "./entities.ts";
import { channels, types } from "./mapping.ts";
import { channelAllowed } from "./preferences.ts";
import { missingRequired, type Rendered, render, renderRedacted, templateFor, type Vars } from "./templates.ts";

export const contentBinding = (id: string) => `notification.sealed_content:${id}`;

export function sealContent(key: Buffer, id: string, content: Rendered): Buffer {
  return sealText(key, JSON.stringify(content), contentBinding(id));
}

export interface QueueInput {
  /** Base of the idempotency keys, e.g. the event id; "-<channel>" is appended. */
  key: string;
  userId?: string;
  /** The address to send EMAIL to; default the recipient's known address. */
  email?: string;
  templateName: string;
  type: NotificationType;
  vars: Vars;
  metadata?: Record<string, string>;
  /** Channels to try (each still subject to preferences); default EMAIL, IN_APP and PUSH. */
  channels?: NotificationChannel[];
  scheduledAt?: Date;
}

export type QueueProblem = "template_not_found" | "template_inactive" | "unknown_recipient" | "user_inactive" | { missing: string };

export interface Queued {
  /** Ids of the rows written now, by channel. */
  created: Map<NotificationChannel, string>;
  /** Ids of rows that existed under the same key, by channel. */
  existing: Map<NotificationChannel, string>;
  suppressed: NotificationChannel[];
  problem?: QueueProblem;
}

export async function recipientOf(em: EntityManager, userId: string): Promise<RecipientRow | null> {
  return em.findOne(RecipientEntity, { userId });
}

/** Whether `channel` can reach this recipient at all (SMS needs a phone number, which we do not know yet). */
const reachable = (channel: NotificationChannel) => channel !== NotificationChannel.SMS;

export async function queueNotification(em: EntityManager, config: NotificationConfig, input: QueueInput, template?: EmailTemplateRow): Promise<Queued> {
  const out: Queued = { created: new Map(), existing: new Map(), suppressed: [] };
  const recipient = input.userId ? await recipientOf(em, input.userId) : null;
  if (recipient && !recipient.isActive) return { ...out, problem: "user_inactive" };
  const t = template ?? (await templateFor(em, input.templateName, recipient?.locale));
  if (!t) return { ...out, problem: "template_not_found" };
  if (!t.isActive) return { ...out, problem: "template_inactive" };
  const vars: Vars = {
    shop_name: config.shopName,
    shop_url: config.storefrontUrl,
    first_name: recipient?.firstName ?? "",
    last_name: recipient?.lastName ?? "",
    ...input.vars,
  };
  const missing = missingRequired(t, vars);
  if (missing.length > 0) return { ...out, problem: { missing: missing[0]! } };
  const content = render(t, vars);
  const stored = renderRedacted(t, vars);
  const sensitive = t.variables.some((v) => v.sensitive && vars[v.name] !== undefined && vars[v.name] !== "");
  const db = sqlOf(em);
  const wanted = input.channels ?? [NotificationChannel.EMAIL, NotificationChannel.IN_APP, NotificationChannel.PUSH];
  for (const channel of wanted) {
    if (input.userId && !(await channelAllowed(em, input.userId, input.type, channel))) {
      out.suppressed.push(channel);
      continue;
    }
    if (!reachable(channel)) {
      out.suppressed.push(channel);
      continue;
    }
    const address = channel === NotificationChannel.EMAIL ? (input.email ?? recipient?.email ?? "") : "";
    if (channel === NotificationChannel.EMAIL && !address) {
      out.problem = "unknown_recipient";
      continue;
    }
    if (channel === NotificationChannel.IN_APP && !input.userId) continue;
    const id = uuidv7();
    const key = `${input.key}-${channels.toDb(channel)}`;
    const inApp = channel === NotificationChannel.IN_APP;
    const due = input.scheduledAt && input.scheduledAt > new Date() ? input.scheduledAt : new Date();
    const inserted = await db.all<{ id: string }>(
      `insert into notifications (id, user_id, channel, notification_type, template_name, recipient, subject, body, body_html, status,
         metadata, scheduled_at, sent_at, delivered_at, idempotency_key, sensitive, sealed_content, next_attempt_at)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $13, $14, $15, $16, $17)
       on conflict (idempotency_key) do nothing returning id`,
      [
        id,
        input.userId ?? null,
        channels.toDb(channel),
        types.toDb(input.type),
        input.templateName,
        address,
        stored.subject,
        stored.text,
        channel === NotificationChannel.EMAIL ? stored.html : "",
        inApp ? "delivered" : "pending",
        JSON.stringify(input.metadata ?? {}),
        input.scheduledAt ?? null,
        inApp ? new Date() : null,
        key,
        sensitive,
        inApp ? null : sealContent(config.dataKey, id, content),
        inApp ? null : due,
      ],
    );
    if (inserted.length === 0) {
      const row = await db.one<{ id: string }>("select id from notifications where idempotency_key = $1", [key]);
      if (row) out.existing.set(channel, row.id);
      continue;
    }
    out.created.set(channel, id);
    if (inApp) {
      await db.run("insert into notification_logs (id, notification_id, status, provider, attempt) values ($1, $2, 'delivered', 'in_app', 1)", [uuidv7(), id]);
      publishEvent(em, NotificationSentSchema, {
        notificationId: id,
        userId: input.userId ?? "",
        channel,
        type: input.type,
        templateName: input.templateName,
        provider: "in_app",
        providerMessageId: id,
        attempts: 1,
      });
    }
  }
  return out;
}

