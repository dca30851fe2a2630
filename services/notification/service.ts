/**
 * The Notification service (ecommerce.notification.v1.NotificationService):
 * email over SMTP, an in-app inbox, SMS and push through sandbox providers,
 * templates in email_templates, per-user preferences and the delivery log.
 * Consumes Auth's, User's, Order's, Payment's, Shipping's, Returns' and Cart's events (flows in
 * consumers.ts and commerce.ts; its inbox is
 * notification_event_logs), sends from a persisted queue with the delivery job
 * (delivery.ts), publishes notification.sent / notification.failed.
 */
import { file_ecommerce_notification_v1_events } from "../../gen/ecommerce/notification/v1/events_pb.js";
import { NotificationService } from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { requireUser } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { intervalJob } from "../../kit/jobs.ts";
import { defineService } from "../../kit/server.ts";
import { loadNotificationConfig } from "./config.ts";
import { commerceConsumers } from "./commerce.ts";
import { authConsumers, userConsumers } from "./consumers.ts";
import { deliverDue } from "./delivery.ts";
import { notificationEntities } from "./entities.ts";
import { NotificationTables } from "./migrations/0001_notification_tables.ts";
import {
  getUnreadCount,
  listMyNotifications,
  listNotificationLogs,
  listNotifications,
  markRead,
  resendNotification,
  sendNotification,
} from "./notifications.ts";
import { getNotificationPreferences, unsubscribe, updateNotificationPreferences } from "./preferences.ts";
import { makeProviders } from "./providers.ts";
import {
  createEmailTemplate,
  deleteEmailTemplate,
  getEmailTemplate,
  listEmailTemplates,
  previewEmailTemplate,
  seedDefaultTemplates,
  updateEmailTemplate,
} from "./templates.ts";

export const notificationService = defineService({
  name: "notification",
  entities: notificationEntities,
  migrations: [{ name: "0001_notification_tables", class: NotificationTables }],
  inboxTable: "notification_event_logs",
  publishes: file_ecommerce_notification_v1_events,
  async setup(ctx) {
    const config = loadNotificationConfig(ctx.env);
    await seedDefaultTemplates(ctx.orm.em.fork());
    return { config, providers: makeProviders(config.smtp, ctx.log) };
  },
  // The only public RPC: a token guesser is slowed down per client address.
  rateLimits: ({ config }) => [{ name: "unsubscribe", methods: ["unsubscribe"], points: config.unsubscribesPerMinute, windowMs: 60_000 }],
  consumers: (ctx, { config }) => {
    const deps = { config, env: ctx.env, log: ctx.log };
    return [...authConsumers(deps), ...userConsumers(), ...commerceConsumers(deps, ctx.peers)];
  },
  routes(router, _svc, { config }) {
    const me = (ctx: Parameters<typeof requireUser>[0]) => requireUser(ctx).userId;
    router.service(NotificationService, {
      // CUSTOMER: the caller's own inbox and preferences.
      listMyNotifications: (req, ctx) => listMyNotifications(emOf(ctx), me(ctx), req),
      getUnreadCount: (req, ctx) => getUnreadCount(emOf(ctx), me(ctx), req.channel),
      markRead: (req, ctx) => markRead(emOf(ctx), me(ctx), req),
      getNotificationPreferences: (_req, ctx) => getNotificationPreferences(emOf(ctx), me(ctx)),
      updateNotificationPreferences: (req, ctx) => updateNotificationPreferences(emOf(ctx), me(ctx), req),

      // PUBLIC: authenticated by the link's signature.
      unsubscribe: (req, ctx) => unsubscribe(emOf(ctx), config.unsubscribeKey, req.token),

      // ADMIN.
      createEmailTemplate: (req, ctx) => createEmailTemplate(emOf(ctx), req),
      updateEmailTemplate: (req, ctx) => updateEmailTemplate(emOf(ctx), req),
      getEmailTemplate: (req, ctx) => getEmailTemplate(emOf(ctx), req.key),
      listEmailTemplates: (req, ctx) => listEmailTemplates(emOf(ctx), req),
      deleteEmailTemplate: async (req, ctx) => (await deleteEmailTemplate(emOf(ctx), req.id), {}),
      previewEmailTemplate: (req, ctx) => previewEmailTemplate(emOf(ctx), req),
      listNotifications: (req, ctx) => listNotifications(emOf(ctx), req),
      listNotificationLogs: (req, ctx) => listNotificationLogs(emOf(ctx), req),
      resendNotification: (req, ctx) => resendNotification(emOf(ctx), req),

      // INTERNAL: allowed_callers enforced by the kit's interceptor.
      sendNotification: (req, ctx) => sendNotification(emOf(ctx), config, req),
    });
  },
  jobs: (ctx, { config, providers }) => [
    intervalJob({
      name: "notification-delivery",
      everyMs: config.deliveryEveryMs,
      log: ctx.log,
      run: async (signal) => void (await deliverDue(() => ctx.orm.em.fork(), config, providers, ctx.log, signal)),
    }),
  ],
});
