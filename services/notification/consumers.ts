/**
 * The flows of Auth's and User's events. Each handler runs in the kit's inbox
 * transaction (notification_event_logs): it records what the mail needs and
 * queues the notifications (notify.ts, one row per channel under the key
 * "<event id>-<channel>"), and never talks to an SMTP server: the delivery job
 * sends after the commit. A redelivered event is a no-op twice over (the inbox,
 * and the unique idempotency keys).
 */
import {
  UserDeletedSchema,
  UserEmailVerificationRequestedSchema,
  UserEmailVerifiedSchema,
  UserPasswordChangedSchema,
  UserPasswordResetRequestedSchema,
  UserReactivatedSchema,
  UserRegisteredSchema,
} from "../../gen/ecommerce/auth/v1/events_pb.js";
import { NotificationChannel, NotificationType } from "../../gen/ecommerce/notification/v1/notification_pb.js";
import { UserUpdatedSchema } from "../../gen/ecommerce/user/v1/events_pb.js";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { type EventHandler, onEvent } from "../../kit/events/consumer.ts";
import { openSealedField, sealedFieldBinding } from "../../kit/events/sealed.ts";
import type { Logger } from "../../kit/logger.ts";
import { sqlOf } from "../../kit/sql.ts";
import type { NotificationConfig } from "./config.ts";
import { type QueueInput, queueNotification } from "./notify.ts";

export interface FlowDeps {
  config: NotificationConfig;
  env: Record<string, string | undefined>;
  log: Logger;
}

const when = (t: Parameters<typeof dateOf>[0]) => (dateOf(t) ?? new Date()).toISOString().replace("T", " ").slice(0, 16) + " UTC";

/**
 * Queues a flow's notifications; a flow whose template is missing or switched off is logged and skipped (an admin's choice).
 * A user we know no address of yet (their user.registered, on another stream, not handled yet) fails the handler on
 * purpose: the kit retries it with backoff, and after EVENT_MAX_DELIVERIES keeps it as a dead letter an admin can replay.
 */
export async function runFlow(em: EntityManager, deps: FlowDeps, input: QueueInput): Promise<void> {
  const queued = await queueNotification(em, deps.config, input);
  if (queued.problem === "unknown_recipient") throw new Error(`no email address known for user ${input.userId} yet (user.registered not handled yet); will retry`);
  if (queued.problem) deps.log.warn({ template: input.templateName, user_id: input.userId, problem: queued.problem }, "flow sent nothing on some channels");
}

async function upsertRecipient(em: EntityManager, r: { userId: string; email: string; firstName: string; lastName: string; locale: string; active?: boolean }) {
  await sqlOf(em).run(
    `insert into notification_recipients (user_id, email, first_name, last_name, locale, is_active) values ($1, $2, $3, $4, $5, $6)
     on conflict (user_id) do update set email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name,
       locale = coalesce(excluded.locale, notification_recipients.locale), is_active = excluded.is_active, updated_at = now()`,
    [r.userId, r.email, r.firstName, r.lastName, r.locale || null, r.active ?? true],
  );
}

export function authConsumers(deps: FlowDeps): EventHandler[] {
  const open = (typeName: string, userId: string, sealed: Uint8Array) => openSealedField("notification", sealed, sealedFieldBinding(typeName, "sealed_token", userId), deps.env);
  const link = (path: string, token: string) => `${deps.config.storefrontUrl}${path}?token=${encodeURIComponent(token)}`;
  return [
    onEvent(UserRegisteredSchema, "welcome", async (em, e) => {
      await upsertRecipient(em, { userId: e.userId, email: e.email, firstName: e.firstName, lastName: e.lastName, locale: e.preferredLanguage });
      await runFlow(em, deps, { key: e.eventId, userId: e.userId, email: e.email, templateName: "welcome", type: NotificationType.ACCOUNT, vars: {} });
    }),

    onEvent(UserEmailVerificationRequestedSchema, "email-verification", async (em, e) => {
      const token = open(e.$typeName, e.userId, e.sealedToken);
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        email: e.email,
        templateName: "email_verification",
        type: NotificationType.SECURITY,
        vars: { verification_url: link("/verify-email", token), expires_at: when(e.expiresAt) },
        channels: [NotificationChannel.EMAIL],
      });
    }),

    onEvent(UserPasswordResetRequestedSchema, "password-reset", async (em, e) => {
      const token = open(e.$typeName, e.userId, e.sealedToken);
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        email: e.email,
        templateName: "password_reset",
        type: NotificationType.SECURITY,
        vars: { reset_url: link("/reset-password", token), expires_at: when(e.expiresAt) },
        channels: [NotificationChannel.EMAIL],
      });
    }),

    onEvent(UserEmailVerifiedSchema, "email-verified", async (em, e) => {
      await runFlow(em, deps, { key: e.eventId, userId: e.userId, email: e.email, templateName: "email_verified", type: NotificationType.ACCOUNT, vars: {} });
    }),

    onEvent(UserPasswordChangedSchema, "password-changed", async (em, e) => {
      await runFlow(em, deps, {
        key: e.eventId,
        userId: e.userId,
        email: e.email,
        templateName: "password_changed",
        type: NotificationType.SECURITY,
        vars: { reset_request_url: `${deps.config.storefrontUrl}/forgot-password` },
      });
    }),

    // user.deleted stops every notification to the user; user.reactivated allows them again.
    onEvent(UserDeletedSchema, "stop-deleted-user", async (em, e) => {
      await sqlOf(em).run("update notification_recipients set is_active = false, updated_at = now() where user_id = $1", [e.userId]);
      await sqlOf(em).run("update notifications set status = 'failed', sealed_content = null, next_attempt_at = null, last_error = 'user deleted' where user_id = $1 and status = 'pending'", [
        e.userId,
      ]);
    }),
    onEvent(UserReactivatedSchema, "resume-reactivated-user", async (em, e) => {
      await sqlOf(em).run("update notification_recipients set is_active = true, updated_at = now() where user_id = $1", [e.userId]);
    }),
  ];
}

export function userConsumers(): EventHandler[] {
  return [
    // The address, name and language the mail goes to follow the profile.
    onEvent(UserUpdatedSchema, "sync-recipient", async (em, e) => {
      await upsertRecipient(em, { userId: e.userId, email: e.email, firstName: e.firstName, lastName: e.lastName, locale: e.preferredLanguage, active: e.isActive });
    }),
  ];
}
