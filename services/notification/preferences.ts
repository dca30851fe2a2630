/**
 * Preferences per user, notification type and channel; defaults for types a
 * user never changed (transactional types: email and in-app on, SMS and push
 * off; MARKETING and PRODUCT_ALERTS: everything off until the user opts in).
 * SECURITY email cannot be turned off. Unsubscribe links carry a signed token
 * (HMAC-SHA256, 128-bit tag) naming the user, the type and the channel.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { v7 as uuidv7 } from "uuid";
import {
  NotificationChannel,
  type NotificationPreference,
  NotificationType,
  type UpdateNotificationPreferencesRequest,
} from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError } from "../../kit/errors.ts";
import { sqlOf } from "../../kit/sql.ts";
import { channels, types } from "./mapping.ts";

type Out<T> = Omit<T, "$typeName">;

const allTypes = types.dbValues.map((v) => types.fromDb(v));
const optIn = new Set([NotificationType.MARKETING, NotificationType.PRODUCT_ALERTS]);

interface PrefRow {
  notification_type: string;
  email_enabled: boolean;
  sms_enabled: boolean;
  push_enabled: boolean;
  in_app_enabled: boolean;
  updated_at: string | null;
}

function defaults(type: NotificationType): Out<NotificationPreference> {
  const on = !optIn.has(type);
  return { type, emailEnabled: on, smsEnabled: false, pushEnabled: false, inAppEnabled: on, emailLocked: type === NotificationType.SECURITY, updatedAt: undefined };
}

function fromRow(r: PrefRow): Out<NotificationPreference> {
  const type = types.fromDb(r.notification_type);
  return {
    type,
    emailEnabled: r.email_enabled || type === NotificationType.SECURITY,
    smsEnabled: r.sms_enabled,
    pushEnabled: r.push_enabled,
    inAppEnabled: r.in_app_enabled,
    emailLocked: type === NotificationType.SECURITY,
    updatedAt: timestampOf(r.updated_at),
  };
}

export async function preferencesOf(em: EntityManager, userId: string): Promise<Out<NotificationPreference>[]> {
  const rows = await sqlOf(em).all<PrefRow>(
    "select notification_type, email_enabled, sms_enabled, push_enabled, in_app_enabled, updated_at::text as updated_at from notification_preferences where user_id = $1",
    [userId],
  );
  const byType = new Map(rows.map((r) => [r.notification_type, r]));
  return allTypes.map((t) => {
    const r = byType.get(types.toDb(t));
    return r ? fromRow(r) : defaults(t);
  });
}

/** Whether the user's preferences let a notification of `type` go out on `channel`. */
export async function channelAllowed(em: EntityManager, userId: string, type: NotificationType, channel: NotificationChannel): Promise<boolean> {
  if (type === NotificationType.SECURITY && channel === NotificationChannel.EMAIL) return true;
  const pref = (await preferencesOf(em, userId)).find((p) => p.type === type)!;
  switch (channel) {
    case NotificationChannel.EMAIL:
      return pref.emailEnabled;
    case NotificationChannel.SMS:
      return pref.smsEnabled;
    case NotificationChannel.PUSH:
      return pref.pushEnabled;
    default:
      return pref.inAppEnabled;
  }
}

async function upsert(em: EntityManager, userId: string, p: Out<NotificationPreference>): Promise<void> {
  await sqlOf(em).run(
    `insert into notification_preferences (id, user_id, notification_type, email_enabled, sms_enabled, push_enabled, in_app_enabled)
     values ($1, $2, $3, $4, $5, $6, $7)
     on conflict (user_id, notification_type) do update set email_enabled = excluded.email_enabled, sms_enabled = excluded.sms_enabled,
       push_enabled = excluded.push_enabled, in_app_enabled = excluded.in_app_enabled, updated_at = now()`,
    [uuidv7(), userId, types.toDb(p.type), p.emailEnabled || p.type === NotificationType.SECURITY, p.smsEnabled, p.pushEnabled, p.inAppEnabled],
  );
}

export async function getNotificationPreferences(em: EntityManager, userId: string) {
  return { preferences: await preferencesOf(em, userId) };
}

export async function updateNotificationPreferences(em: EntityManager, userId: string, req: UpdateNotificationPreferencesRequest) {
  for (const p of req.preferences) {
    if (p.type === NotificationType.SECURITY && !p.emailEnabled)
      throw domainError(Code.InvalidArgument, "security emails cannot be turned off", { reason: "SECURITY_EMAIL_LOCKED", field: "preferences.email_enabled" });
  }
  await em.transactional(async (tx) => {
    for (const p of req.preferences) await upsert(tx, userId, p);
  });
  return { preferences: await preferencesOf(em, userId) };
}

// --- one-click unsubscribe ---

const sign = (key: string, body: string) => createHmac("sha256", key).update(`unsubscribe:${body}`).digest().subarray(0, 16).toString("base64url");

export function unsubscribeToken(key: string, userId: string, type: NotificationType, channel: NotificationChannel): string {
  const body = `${userId}.${types.toDb(type)}.${channels.toDb(channel)}`;
  return `${body}.${sign(key, body)}`;
}

const badToken = () => domainError(Code.InvalidArgument, "the unsubscribe link is not valid", { reason: "INVALID_UNSUBSCRIBE_TOKEN", field: "token" });

export async function unsubscribe(em: EntityManager, key: string, token: string) {
  const parts = token.split(".");
  if (parts.length !== 4) throw badToken();
  const [userId, typeDb, channelDb, tag] = parts as [string, string, string, string];
  const expected = Buffer.from(sign(key, `${userId}.${typeDb}.${channelDb}`));
  const given = Buffer.from(tag);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) throw badToken();
  let type: NotificationType;
  let channel: NotificationChannel;
  try {
    type = types.fromDb(typeDb);
    channel = channels.fromDb(channelDb);
  } catch {
    throw badToken();
  }
  if (type === NotificationType.SECURITY && channel === NotificationChannel.EMAIL) throw badToken();
  const user = await sqlOf(em).one<{ is_active: boolean }>("select is_active from notification_recipients where user_id = $1", [userId]);
  if (!user?.is_active) throw badToken();
  const current = (await preferencesOf(em, userId)).find((p) => p.type === type)!;
  const next = { ...current };
  if (channel === NotificationChannel.EMAIL) next.emailEnabled = false;
  else if (channel === NotificationChannel.SMS) next.smsEnabled = false;
  else if (channel === NotificationChannel.PUSH) next.pushEnabled = false;
  else next.inAppEnabled = false;
  await upsert(em, userId, next);
  return { type, channel };
}
