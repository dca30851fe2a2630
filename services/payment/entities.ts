/**
 * MikroORM entities of the Payment service (tables in migrations/0001_payment_tables.ts).
 * Rows are inserted through these; status moves and outcomes are conditional
 * UPDATEs through sqlOf (payments.ts). Optional text is null in the database
 * and "" in the contract.
 */
import { defineEntity, p } from "@mikro-orm/postgresql";

const now = () => new Date();

export const PaymentMethodEntity = defineEntity({
  name: "PaymentMethod",
  tableName: "payment_methods",
  properties: {
    id: p.uuid().primary(),
    userId: p.uuid(),
    type: p.text(),
    cardBrand: p.text().nullable(),
    last4: p.text().nullable(),
    expiryMonth: p.integer().nullable(),
    expiryYear: p.integer().nullable(),
    provider: p.text(),
    providerReference: p.text().nullable(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const PaymentEntity = defineEntity({
  name: "Payment",
  tableName: "payments",
  properties: {
    id: p.uuid().primary(),
    orderId: p.uuid(),
    orderNumber: p.text(),
    userId: p.uuid(),
    savedPaymentMethodId: p.uuid().nullable(),
    paymentMethodId: p.uuid().nullable(),
    status: p.text(),
    provider: p.text(),
    providerPaymentId: p.text().nullable(),
    amountMinor: p.bigint("bigint"),
    currency: p.string().columnType("char(3)"),
    description: p.text(),
    metadata: p.json<Record<string, string>>(),
    failureCode: p.text().nullable(),
    failureMessage: p.text().nullable(),
    providerSequence: p.bigint("number").default(0),
    authorizedAt: p.datetime().nullable(),
    authorizationExpiresAt: p.datetime().nullable(),
    capturedAt: p.datetime().nullable(),
    cancelledAt: p.datetime().nullable(),
    processedAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});

export const RefundEntity = defineEntity({
  name: "Refund",
  tableName: "refunds",
  properties: {
    id: p.uuid().primary(),
    paymentId: p.uuid(),
    orderId: p.uuid(),
    userId: p.uuid(),
    amountMinor: p.bigint("bigint"),
    currency: p.string().columnType("char(3)"),
    status: p.text(),
    reason: p.text(),
    note: p.text().default(""),
    returnRequestId: p.uuid().nullable(),
    initiatedBy: p.text(),
    providerRefundId: p.text().nullable(),
    failureCode: p.text().nullable(),
    failureMessage: p.text().nullable(),
    metadata: p.json<Record<string, string>>(),
    processedAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(now),
    updatedAt: p.datetime().onCreate(now),
  },
});

export const PaymentTransactionEntity = defineEntity({
  name: "PaymentTransaction",
  tableName: "payment_transactions",
  properties: {
    id: p.uuid().primary(),
    paymentId: p.uuid(),
    type: p.text(),
    status: p.text(),
    amountMinor: p.bigint("bigint"),
    currency: p.string().columnType("char(3)"),
    refundId: p.uuid().nullable(),
    reason: p.text().nullable(),
    providerTransactionId: p.text().nullable(),
    failureCode: p.text().nullable(),
    failureMessage: p.text().nullable(),
    providerResponse: p.json<Record<string, unknown>>().nullable(),
    processedAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const WebhookEntity = defineEntity({
  name: "PaymentWebhook",
  tableName: "payment_webhooks",
  properties: {
    id: p.uuid().primary(),
    provider: p.text(),
    eventType: p.text(),
    providerEventId: p.text(),
    status: p.text(),
    error: p.text().nullable(),
    paymentId: p.uuid().nullable(),
    refundId: p.uuid().nullable(),
    attempts: p.integer().default(0),
    payload: p.blob(),
    processedAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(now),
  },
});

export const paymentEntities = [PaymentMethodEntity, PaymentEntity, RefundEntity, PaymentTransactionEntity, WebhookEntity];
