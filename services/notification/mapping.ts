/** Rows to contract messages, and the database values of the contract's enums. */
import {
  type Notification,
  NotificationChannel,
  type NotificationLog,
  NotificationStatus,
  NotificationType,
} from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { dbEnum } from "../../kit/enums.ts";

type Out<T> = Omit<T, "$typeName">;

export const channels = dbEnum<NotificationChannel>([
  [NotificationChannel.EMAIL, "email"],
  [NotificationChannel.SMS, "sms"],
  [NotificationChannel.PUSH, "push"],
  [NotificationChannel.IN_APP, "in_app"],
]);

export const types = dbEnum<NotificationType>([
  [NotificationType.ACCOUNT, "account"],
  [NotificationType.SECURITY, "security"],
  [NotificationType.ORDER_UPDATES, "order_updates"],
  [NotificationType.SHIPPING_UPDATES, "shipping_updates"],
  [NotificationType.PAYMENT_RECEIPTS, "payment_receipts"],
  [NotificationType.RETURNS, "returns"],
  [NotificationType.MARKETING, "marketing"],
  [NotificationType.PRODUCT_ALERTS, "product_alerts"],
]);

export const statuses = dbEnum<NotificationStatus>([
  [NotificationStatus.PENDING, "pending"],
  [NotificationStatus.SENT, "sent"],
  [NotificationStatus.DELIVERED, "delivered"],
  [NotificationStatus.FAILED, "failed"],
  [NotificationStatus.BOUNCED, "bounced"],
]);

/** A row of notifications as sqlOf returns it (timestamps as text). */
export interface NotificationSqlRow {
  id: string;
  user_id: string | null;
  channel: string;
  notification_type: string;
  template_name: string;
  recipient: string;
  subject: string;
  body: string;
  status: string;
  read_at: string | null;
  metadata: Record<string, string>;
  scheduled_at: string | null;
  sent_at: string | null;
  delivered_at: string | null;
  created_at: string;
}

export function notificationMessage(r: NotificationSqlRow): Out<Notification> {
  return {
    id: r.id,
    userId: r.user_id ?? "",
    channel: channels.fromDb(r.channel),
    type: types.fromDb(r.notification_type),
    templateName: r.template_name,
    recipient: r.recipient,
    subject: r.subject,
    body: r.body,
    status: statuses.fromDb(r.status),
    readAt: timestampOf(r.read_at),
    metadata: r.metadata ?? {},
    scheduledAt: timestampOf(r.scheduled_at),
    sentAt: timestampOf(r.sent_at),
    deliveredAt: timestampOf(r.delivered_at),
    createdAt: timestampOf(r.created_at),
  };
}

export interface LogSqlRow {
  id: string;
  notification_id: string;
  status: string;
  provider: string;
  provider_message_id: string | null;
  error: string | null;
  created_at: string;
}

export function logMessage(r: LogSqlRow): Out<NotificationLog> {
  return {
    id: r.id,
    notificationId: r.notification_id,
    status: statuses.fromDb(r.status),
    provider: r.provider,
    providerMessageId: r.provider_message_id ?? "",
    error: r.error ?? "",
    createdAt: timestampOf(r.created_at),
  };
}
