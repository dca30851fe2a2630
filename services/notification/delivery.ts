/**
 * The delivery job: sends queued EMAIL and PUSH notifications outside any
 * consumer transaction. Each pass claims due rows (FOR UPDATE SKIP LOCKED, so
 * replicas share the work; a claim is a lease: next_attempt_at moves ahead by
 * the lease, so a crash mid-send retries later), sends each through its
 * channel's provider, and records the attempt in notification_logs with the
 * provider's answer. A temporary failure is retried with exponential backoff
 * until NOTIFICATION_MAX_ATTEMPTS; a permanent one (SMTP 5xx) ends FAILED at
 * once. A final outcome publishes notification.sent / notification.failed and
 * erases the sealed content.
 *
 * At-most-once towards the recipient holds for every failure we can observe;
 * a process killed between the SMTP peer's "250" and our commit may send
 * again after the lease (the SMTP Message-ID stays the notification's id, so
 * a receiving server can tell).
 */
import { v7 as uuidv7 } from "uuid";
import { NotificationFailedSchema, NotificationSentSchema } from "../../gen/ecommerce/notification/v1/events_pb.js";
import { NotificationChannel, NotificationStatus, NotificationType } from "../../gen/ecommerce/notification/v1/notification_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import type { Logger } from "../../kit/logger.ts";
import { openText } from "../../kit/sealing.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { NotificationConfig } from "./config.ts";
import { channels, types } from "./mapping.ts";
import { contentBinding } from "./notify.ts";
import { unsubscribeToken } from "./preferences.ts";
import type { OutgoingMessage, Providers, SendResult } from "./providers.ts";
import type { Rendered } from "./templates.ts";

const leaseMs = 120_000;
const batch = 20;

interface Claimed {
  id: string;
  user_id: string | null;
  channel: string;
  notification_type: string;
  template_name: string;
  recipient: string;
  subject: string;
  body: string;
  body_html: string;
  sealed_content: Buffer | null;
  attempts: number;
}

export function backoffMs(config: NotificationConfig, attempt: number): number {
  return Math.min(config.retryBaseMs * 2 ** (attempt - 1), config.retryMaxMs);
}

async function claim(em: EntityManager): Promise<Claimed[]> {
  return em.transactional((tx) =>
    sqlOf(tx).all<Claimed>(
      `update notifications set attempts = attempts + 1, next_attempt_at = now() + ($1::int * interval '1 millisecond'), updated_at = now()
       where id in (select id from notifications where status = 'pending' and next_attempt_at <= now()
                    order by next_attempt_at limit $2 for update skip locked)
       returning id, user_id, channel, notification_type, template_name, recipient, subject, body, body_html, sealed_content, attempts`,
      [leaseMs, batch],
    ),
  );
}

function contentOf(config: NotificationConfig, row: Claimed): Rendered {
  if (row.sealed_content) return JSON.parse(openText(config.dataKey, Buffer.from(row.sealed_content), contentBinding(row.id))) as Rendered;
  return { subject: row.subject, text: row.body, html: row.body_html };
}

function headersOf(config: NotificationConfig, row: Claimed): Record<string, string> {
  const type = types.fromDb(row.notification_type);
  if (!row.user_id || type === NotificationType.SECURITY) return {};
  // RFC 8058 one-click unsubscribe (with RFC 2369's List-Unsubscribe).
  const token = unsubscribeToken(config.unsubscribeKey, row.user_id, type, channels.fromDb(row.channel));
  return { "List-Unsubscribe": `<${config.publicUrl}/unsubscribe/${token}>`, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" };
}

async function record(em: EntityManager, config: NotificationConfig, row: Claimed, provider: string, result: SendResult): Promise<void> {
  const channel = channels.fromDb(row.channel);
  const type = types.fromDb(row.notification_type);
  await em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const base = { notificationId: row.id, userId: row.user_id ?? "", channel, type, templateName: row.template_name, provider, attempts: row.attempts };
    if (result.ok) {
      await db.run(
        "update notifications set status = 'sent', sent_at = now(), sealed_content = null, next_attempt_at = null, provider_message_id = $2, last_error = null, updated_at = now() where id = $1",
        [row.id, result.messageId],
      );
      await db.run(
        "insert into notification_logs (id, notification_id, status, provider, provider_message_id, response, attempt) values ($1, $2, 'sent', $3, $4, $5, $6)",
        [uuidv7(), row.id, provider, result.messageId, result.response, row.attempts],
      );
      publishEvent(tx, NotificationSentSchema, { ...base, providerMessageId: result.messageId });
      return;
    }
    const final = result.permanent || row.attempts >= config.maxAttempts;
    const logStatus = final ? "failed" : "pending";
    await db.run(
      "insert into notification_logs (id, notification_id, status, provider, error, response, attempt) values ($1, $2, $3, $4, $5, $6, $7)",
      [uuidv7(), row.id, logStatus, provider, result.error, result.response, row.attempts],
    );
    if (final) {
      await db.run("update notifications set status = 'failed', sealed_content = null, next_attempt_at = null, last_error = $2, updated_at = now() where id = $1", [
        row.id,
        result.error,
      ]);
      publishEvent(tx, NotificationFailedSchema, { ...base, status: NotificationStatus.FAILED, error: result.error });
    } else {
      await db.run("update notifications set next_attempt_at = now() + ($2::int * interval '1 millisecond'), last_error = $3, updated_at = now() where id = $1", [
        row.id,
        backoffMs(config, row.attempts),
        result.error,
      ]);
    }
  });
}

/** One pass: sends every due notification, batch by batch, until none is due or the job stops. */
export async function deliverDue(fork: () => EntityManager, config: NotificationConfig, providers: Providers, log: Logger, signal: AbortSignal): Promise<number> {
  let sent = 0;
  while (!signal.aborted) {
    const rows = await claim(fork());
    if (rows.length === 0) break;
    for (const row of rows) {
      const channel = channels.fromDb(row.channel);
      const provider = channel === NotificationChannel.PUSH ? providers.push : channel === NotificationChannel.SMS ? providers.sms : providers.email;
      let result: SendResult;
      try {
        const content = contentOf(config, row);
        const message: OutgoingMessage = { notificationId: row.id, to: row.recipient, subject: content.subject, text: content.text, html: content.html, headers: headersOf(config, row) };
        result = await provider.send(message);
      } catch (error) {
        result = { ok: false, permanent: false, error: (error as Error).message, response: "" };
      }
      if (!result.ok) log.warn({ notification_id: row.id, provider: provider.name, attempt: row.attempts, permanent: result.permanent, err: result.error }, "notification delivery failed");
      await record(fork(), config, row, provider.name, result);
      if (result.ok) sent++;
    }
  }
  return sent;
}
