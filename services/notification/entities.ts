/**
 * MikroORM entities of the Notification service (tables in
 * migrations/0001_notification_tables.ts). Reads go through sqlOf; these
 * describe the rows for writes and for the schema drift check.
 */
import type { InferEntity } from "@mikro-orm/core";
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const RecipientEntity = defineEntity({
  name: "NotificationRecipient",
  tableName: "notification_recipients",
  properties: {
    userId: p.uuid().primary(),
    email: p.text(),
    firstName: p.text().default(""),
    lastName: p.text().default(""),
    locale: p.text().nullable(),
    isActive: p.boolean().default(true),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type RecipientRow = InferEntity<typeof RecipientEntity>;

export const OrderFactEntity = defineEntity({
  name: "NotificationOrder",
  tableName: "notification_orders",
  properties: {
    orderId: p.uuid().primary(),
    orderNumber: p.text(),
    userId: p.uuid(),
    createdAt: p.datetime().onCreate(now),
  },
});

export interface StoredVariable {
  name: string;
  description: string;
  required: boolean;
  sensitive: boolean;
  example?: unknown;
}

export const EmailTemplateEntity = defineEntity({
  name: "EmailTemplate",
  tableName: "email_templates",
  properties: {
    id: p.uuid().primary(),
    name: p.text().unique(),
    subject: p.text(),
    bodyHtml: p.text().default(""),
    bodyText: p.text(),
    variables: p.json<StoredVariable[]>(),
    isActive: p.boolean().default(true),
    isBuiltin: p.boolean().default(false),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type EmailTemplateRow = InferEntity<typeof EmailTemplateEntity>;

export const NotificationEntity = defineEntity({
  name: "Notification",
  tableName: "notifications",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid().nullable(),
    channel: p.text(),
    notificationType: p.text(),
    templateName: p.text(),
    recipient: p.text().default(""),
    subject: p.text(),
    body: p.text(),
    bodyHtml: p.text().default(""),
    status: p.text(),
    readAt: p.datetime().nullable(),
    metadata: p.json<Record<string, string>>(),
    scheduledAt: p.datetime().nullable(),
    sentAt: p.datetime().nullable(),
    deliveredAt: p.datetime().nullable(),
    idempotencyKey: p.text().unique(),
    sensitive: p.boolean().default(false),
    sealedContent: p.blob().nullable(),
    attempts: p.integer().default(0),
    nextAttemptAt: p.datetime().nullable(),
    lastError: p.text().nullable(),
    providerMessageId: p.text().nullable(),
    resentFrom: p.uuid().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});
export type NotificationRow = InferEntity<typeof NotificationEntity>;

export const NotificationLogEntity = defineEntity({
  name: "NotificationLog",
  tableName: "notification_logs",
  properties: {
    id: p.uuid().primary(),
    notificationId: p.uuid(),
    status: p.text(),
    provider: p.text(),
    providerMessageId: p.text().nullable(),
    error: p.text().nullable(),
    response: p.text().nullable(),
    attempt: p.integer().default(1),
    createdAt: p.datetime().onCreate(now),
  },
});

export const PreferenceEntity = defineEntity({
  name: "NotificationPreference",
  tableName: "notification_preferences",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    notificationType: p.text(),
    emailEnabled: p.boolean(),
    smsEnabled: p.boolean(),
    pushEnabled: p.boolean(),
    inAppEnabled: p.boolean(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});

export const notificationEntities = [RecipientEntity, OrderFactEntity, EmailTemplateEntity, NotificationEntity, NotificationLogEntity, PreferenceEntity];
