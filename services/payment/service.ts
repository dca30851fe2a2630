/**
 * The Payment service: authorizations, captures, voids and refunds through a
 * payment provider (the sandbox by default), the provider's signed webhooks
 * and reconciliation of payments left unsettled (ecommerce.payment.v1).
 * Publishes payment.* on PAYMENT_EVENTS through the outbox; consumes nothing;
 * calls User's GetPaymentMethodToken to charge a saved method.
 */
import { file_ecommerce_payment_v1_events } from "../../gen/ecommerce/payment/v1/events_pb.js";
import { PaymentService } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { callerOf, requireUser } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { intervalJob } from "../../kit/jobs.ts";
import { defineService } from "../../kit/server.ts";
import { loadPaymentConfig } from "./config.ts";
import { paymentEntities } from "./entities.ts";
import { listPayments, listPaymentsForOrder, listPaymentsForOrderInternal, listRefunds } from "./lists.ts";
import { loadPayment, loadRefund } from "./mapping.ts";
import { PaymentTables } from "./migrations/0001_payment_tables.ts";
import { TransactionReason } from "./migrations/0002_transaction_reason.ts";
import { PaymentsOrder } from "./migrations/0003_payments_order.ts";
import { authorizePayment, capturePayment, refundPayment, voidPayment } from "./payments.ts";
import { Providers } from "./providers.ts";
import { reconcileOperations, reconcilePayments, retryWebhooks } from "./reconcile.ts";
import { handleProviderWebhook, listWebhookEvents, reprocessWebhookEvent } from "./webhooks.ts";

export const paymentService = defineService({
  name: "payment",
  entities: paymentEntities,
  migrations: [
    { name: "0001_payment_tables", class: PaymentTables },
    { name: "0002_transaction_reason", class: TransactionReason },
    { name: "0003_payments_order", class: PaymentsOrder },
  ],
  publishes: file_ecommerce_payment_v1_events,
  setup(ctx) {
    const config = loadPaymentConfig(ctx.env);
    return { config, providers: new Providers(config, ctx.log) };
  },
  routes(router, svc, { config, providers }) {
    const deps = { config, providers, peers: svc.peers };
    const hooks = { config, providers, log: svc.log };
    const me = (ctx: Parameters<typeof requireUser>[0]) => requireUser(ctx).userId;
    /** The INTERNAL caller's service name, recorded as a refund's initiator. */
    const service = (ctx: Parameters<typeof callerOf>[0]) => {
      const caller = callerOf(ctx);
      return caller?.kind === "service" ? caller.service : "unknown";
    };
    router.service(PaymentService, {
      // INTERNAL (order, returns): allowed_callers enforced by the kit's interceptor.
      authorizePayment: (req, ctx) => authorizePayment(emOf(ctx), deps, req),
      capturePayment: (req, ctx) => capturePayment(emOf(ctx), deps, req),
      voidPayment: (req, ctx) => voidPayment(emOf(ctx), deps, req),
      refundPayment: (req, ctx) => refundPayment(emOf(ctx), deps, service(ctx), req),
      getPaymentInternal: async (req, ctx) => ({ payment: await loadPayment(emOf(ctx), req.paymentId, "internal") }),
      listPaymentsForOrderInternal: (req, ctx) => listPaymentsForOrderInternal(emOf(ctx), req),

      // CUSTOMER: the caller's own payments and refunds.
      getPayment: async (req, ctx) => ({ payment: await loadPayment(emOf(ctx), req.paymentId, "customer", me(ctx)) }),
      listPaymentsForOrder: (req, ctx) => listPaymentsForOrder(emOf(ctx), me(ctx), req),
      getRefund: async (req, ctx) => ({ refund: await loadRefund(emOf(ctx), req.refundId, "customer", me(ctx)) }),

      // ADMIN.
      adminGetPayment: async (req, ctx) => ({ payment: await loadPayment(emOf(ctx), req.paymentId, "admin") }),
      listPayments: (req, ctx) => listPayments(emOf(ctx), req),
      listRefunds: (req, ctx) => listRefunds(emOf(ctx), req),
      adminGetRefund: async (req, ctx) => ({ refund: await loadRefund(emOf(ctx), req.refundId, "admin") }),
      adminRefundPayment: (req, ctx) => refundPayment(emOf(ctx), deps, me(ctx), { ...req, returnRequestId: "", metadata: {} }, "admin"),
      listWebhookEvents: (req, ctx) => listWebhookEvents(emOf(ctx), req),
      reprocessWebhookEvent: (req, ctx) => reprocessWebhookEvent(emOf(ctx), hooks, req),

      // PUBLIC: authenticated by the provider's signature.
      handleProviderWebhook: (req, ctx) => handleProviderWebhook(emOf(ctx), hooks, req),
    });
  },
  jobs: (ctx, { config, providers }) => [
    intervalJob({
      name: "payment-reconciliation",
      everyMs: config.reconcileEveryMs,
      log: ctx.log,
      async run(signal) {
        await reconcilePayments(ctx.orm.em.fork(), config, providers, ctx.log, signal);
        await reconcileOperations(ctx.orm.em.fork(), config, providers, ctx.log, signal);
        await retryWebhooks(ctx.orm.em.fork(), { config, providers, log: ctx.log }, signal);
      },
    }),
  ],
});
