/**
 * The notification RPCs: the customer's inbox (ListMyNotifications,
 * GetUnreadCount, MarkRead), support's lists (ListNotifications,
 * ListNotificationLogs), ResendNotification and the mesh's SendNotification.
 * Lists are newest first, keyset pages (created_at, id) with the kit's signed tokens.
 */
import { v7 as uuidv7 } from "uuid";
import {
  type ListMyNotificationsRequest,
  type ListNotificationLogsRequest,
  type ListNotificationsRequest,
  type MarkReadRequest,
  type Notification,
  NotificationChannel,
  type NotificationLog,
  type ResendNotificationRequest,
  SendOutcome,
  type SendNotificationRequest,
} from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition, notFound } from "../../kit/errors.ts";
import { newestFirstPage } from "../../kit/paging.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { NotificationConfig } from "./config.ts";
import { channels, type LogSqlRow, logMessage, notificationMessage, type NotificationSqlRow, statuses, types } from "./mapping.ts";
import { queueNotification, recipientOf } from "./notify.ts";
import { channelAllowed } from "./preferences.ts";
import { checkVariablesSize, templateFor, type Vars } from "./templates.ts";

type Out<T> = Omit<T, "$typeName">;

const select = `select id, user_id, channel, notification_type, template_name, recipient, subject, body, status, read_at::text as read_at, metadata,
  scheduled_at::text as scheduled_at, sent_at::text as sent_at, delivered_at::text as delivered_at, created_at::text as created_at, created_at::text as created_key from notifications n`;

/** Newest first, keyset-paged by the kit; `filters` binds its values through `$`. */
function page<Row extends { id: string; created_key: string }>(
  em: EntityManager,
  req: { pageSize: number; pageToken: string; $typeName: string },
  select: string,
  filters: (add: (v: unknown) => string) => string[],
): Promise<{ rows: Row[]; next: string }> {
  return newestFirstPage<Row>(sqlOf(em), req, { select, alias: "n", where: (p) => filters((v) => p.add(v)) });
}

/** Scheduled notifications are not listed to their user before they are sent. */
const visible = "(n.scheduled_at is null or n.scheduled_at <= now() or n.status <> 'pending')";

export async function listMyNotifications(em: EntityManager, userId: string, req: ListMyNotificationsRequest) {
  const { rows, next } = await page<NotificationSqlRow & { created_key: string }>(em, req, select, ($) => {
    const where = [`n.user_id = ${$(userId)}::uuid`, visible];
    if (req.unreadOnly) where.push("n.read_at is null");
    if (req.channel) where.push(`n.channel = ${$(channels.toDb(req.channel))}`);
    if (req.type) where.push(`n.notification_type = ${$(types.toDb(req.type))}`);
    return where;
  });
  return { notifications: rows.map(notificationMessage) as Notification[], nextPageToken: next };
}

async function unread(em: EntityManager, userId: string, channel?: NotificationChannel): Promise<number> {
  const params: unknown[] = [userId];
  let sql = `select count(*)::int as n from notifications n where n.user_id = $1 and n.read_at is null and ${visible}`;
  if (channel) {
    params.push(channels.toDb(channel));
    sql += " and n.channel = $2";
  }
  return (await sqlOf(em).one<{ n: number }>(sql, params))?.n ?? 0;
}

export async function getUnreadCount(em: EntityManager, userId: string, channel: NotificationChannel) {
  return { unreadCount: await unread(em, userId, channel || undefined) };
}

export async function markRead(em: EntityManager, userId: string, req: MarkReadRequest) {
  const db = sqlOf(em);
  let marked = 0;
  if (req.all) {
    marked = await db.run(`update notifications n set read_at = now() where n.user_id = $1 and n.read_at is null and ${visible}`, [userId]);
  } else if (req.ids.length > 0) {
    marked = await em.transactional(async (tx) => {
      const mine = await sqlOf(tx).all<{ id: string }>("select id from notifications where id = any($1::uuid[]) and user_id = $2", [req.ids, userId]);
      const missing = req.ids.find((id) => !mine.some((m) => m.id === id));
      if (missing) throw notFound("notification", missing);
      return sqlOf(tx).run("update notifications set read_at = now() where id = any($1::uuid[]) and user_id = $2 and read_at is null", [req.ids, userId]);
    });
  }
  return { markedCount: marked, unreadCount: await unread(em, userId) };
}

export async function listNotifications(em: EntityManager, req: ListNotificationsRequest) {
  const { rows, next } = await page<NotificationSqlRow & { created_key: string }>(em, req, select, ($) => {
    const where: string[] = [];
    if (req.userId) where.push(`n.user_id = ${$(req.userId)}::uuid`);
    if (req.recipient) where.push(`lower(n.recipient) = lower(${$(req.recipient)})`);
    if (req.channel) where.push(`n.channel = ${$(channels.toDb(req.channel))}`);
    if (req.type) where.push(`n.notification_type = ${$(types.toDb(req.type))}`);
    if (req.statuses.length) where.push(`n.status = any(${$(req.statuses.map((s) => statuses.toDb(s)))}::text[])`);
    if (req.templateName) where.push(`n.template_name = ${$(req.templateName)}`);
    if (req.createdAfter) where.push(`n.created_at >= ${$(dateOf(req.createdAfter))}`);
    if (req.createdBefore) where.push(`n.created_at < ${$(dateOf(req.createdBefore))}`);
    return where;
  });
  return { notifications: rows.map(notificationMessage) as Notification[], nextPageToken: next };
}

export async function listNotificationLogs(em: EntityManager, req: ListNotificationLogsRequest) {
  const sql = `select n.id, n.notification_id, n.status, n.provider, n.provider_message_id, n.error, n.created_at::text as created_at, n.created_at::text as created_key
    from notification_logs n join notifications x on x.id = n.notification_id`;
  const { rows, next } = await page<LogSqlRow & { created_key: string }>(em, req, sql, ($) => {
    const where: string[] = [];
    if (req.notificationId) where.push(`n.notification_id = ${$(req.notificationId)}::uuid`);
    if (req.userId) where.push(`x.user_id = ${$(req.userId)}::uuid`);
    if (req.statuses.length) where.push(`n.status = any(${$(req.statuses.map((s) => statuses.toDb(s)))}::text[])`);
    if (req.provider) where.push(`n.provider = ${$(req.provider)}`);
    if (req.createdAfter) where.push(`n.created_at >= ${$(dateOf(req.createdAfter))}`);
    if (req.createdBefore) where.push(`n.created_at < ${$(dateOf(req.createdBefore))}`);
    return where;
  });
  return { logs: rows.map(logMessage) as NotificationLog[], nextPageToken: next };
}

async function loadOne(em: EntityManager, id: string): Promise<Out<Notification>> {
  const row = await sqlOf(em).one<NotificationSqlRow>(`${select} where n.id = $1`, [id]);
  if (!row) throw notFound("notification", id);
  return notificationMessage(row);
}

export async function resendNotification(em: EntityManager, req: ResendNotificationRequest) {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const key = `resend-${req.idempotencyKey}`;
    const prior = await db.one<{ id: string; resent_from: string | null }>("select id, resent_from from notifications where idempotency_key = $1", [key]);
    if (prior) {
      if (prior.resent_from !== req.id) throw failedPrecondition("this idempotency key was used for another notification", "IDEMPOTENCY_KEY_REUSED");
      return { notification: await loadOne(tx, prior.id) };
    }
    const src = await db.one<{ id: string; user_id: string | null; channel: string; notification_type: string; sensitive: boolean; metadata: Record<string, string> }>(
      "select id, user_id, channel, notification_type, sensitive, metadata from notifications where id = $1 for update",
      [req.id],
    );
    if (!src) throw notFound("notification", req.id);
    const channel = channels.fromDb(src.channel);
    const type = types.fromDb(src.notification_type);
    if (channel === NotificationChannel.IN_APP || src.sensitive)
      throw failedPrecondition("this notification cannot be sent again (in-app, or it held a one-time link: ask for a new one)", "NOT_RESENDABLE");
    if (src.user_id && !(await channelAllowed(tx, src.user_id, type, channel))) throw failedPrecondition("the user turned this channel off for this type", "CHANNEL_DISABLED_BY_USER");
    const id = uuidv7();
    // The stored content is the sent content (nothing was redacted: the notification held no sensitive value).
    await db.run(
      `insert into notifications (id, user_id, channel, notification_type, template_name, recipient, subject, body, body_html, status, metadata,
         idempotency_key, sensitive, next_attempt_at, resent_from)
       select $1, user_id, channel, notification_type, template_name, recipient, subject, body, body_html, 'pending', metadata || jsonb_build_object('resent_from', id::text),
         $2, false, now(), id from notifications where id = $3`,
      [id, key, req.id],
    );
    return { notification: await loadOne(tx, id) };
  });
}

export async function sendNotification(em: EntityManager, config: NotificationConfig, req: SendNotificationRequest) {
  checkVariablesSize(req.variables as Vars | undefined);
  return em.transactional(async (tx) => {
    const key = `send-${req.idempotencyKey}`;
    const fullKey = `${key}-${channels.toDb(req.channel)}`;
    const prior = await sqlOf(tx).one<{ id: string; template_name: string; user_id: string | null; recipient: string }>(
      "select id, template_name, user_id, recipient from notifications where idempotency_key = $1",
      [fullKey],
    );
    const userId = req.recipient.case === "userId" ? req.recipient.value : undefined;
    const email = req.recipient.case === "email" ? req.recipient.value : undefined;
    if (prior) {
      if (prior.template_name !== req.templateName || (prior.user_id ?? undefined) !== userId)
        throw failedPrecondition("this idempotency key was used for another notification", "IDEMPOTENCY_KEY_REUSED");
      return { outcome: SendOutcome.DUPLICATE, notification: await loadOne(tx, prior.id) };
    }
    if (req.channel === NotificationChannel.SMS) throw failedPrecondition("no SMS provider can reach this recipient (no phone number is known)", "CHANNEL_UNAVAILABLE");
    if (email && req.channel !== NotificationChannel.EMAIL) throw domainError(Code.InvalidArgument, "an explicit address is for EMAIL only", { field: "channel" });
    const recipient = userId ? await recipientOf(tx, userId) : null;
    if (userId && recipient && !recipient.isActive) return { outcome: SendOutcome.SUPPRESSED };
    const template = await templateFor(tx, req.templateName, recipient?.locale);
    if (!template) throw domainError(Code.NotFound, `no template "${req.templateName}"`, { reason: "TEMPLATE_NOT_FOUND", field: "template_name" });
    if (!template.isActive) throw failedPrecondition(`template "${req.templateName}" is not active`, "TEMPLATE_INACTIVE");
    if (userId && req.channel === NotificationChannel.EMAIL && !recipient?.email) throw failedPrecondition("no email address is known for this user", "UNKNOWN_RECIPIENT");
    const queued = await queueNotification(
      tx,
      config,
      { key, userId, email, templateName: req.templateName, type: req.type, vars: (req.variables ?? {}) as Vars, metadata: req.metadata, channels: [req.channel], scheduledAt: dateOf(req.scheduledAt) },
      template,
    );
    if (queued.problem && typeof queued.problem === "object")
      throw failedPrecondition(`variable "${queued.problem.missing}" is required`, "MISSING_TEMPLATE_VARIABLE", { name: queued.problem.missing });
    if (queued.problem === "unknown_recipient") throw failedPrecondition("no email address is known for this user", "UNKNOWN_RECIPIENT");
    const id = queued.created.get(req.channel) ?? queued.existing.get(req.channel);
    if (!id) return { outcome: SendOutcome.SUPPRESSED };
    return { outcome: queued.created.has(req.channel) ? SendOutcome.QUEUED : SendOutcome.DUPLICATE, notification: await loadOne(tx, id) };
  });
}
