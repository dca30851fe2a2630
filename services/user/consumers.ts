/**
 * Auth's events that shape a profile. Each handler runs in the kit's inbox
 * transaction (user_event_logs), so a redelivered event is a no-op.
 *
 * Order: the kit consumes AUTH_EVENTS through one durable and hands events
 * over in stream order, so a user's user.registered comes before their other
 * events. Should one still find no profile (several replicas consuming at
 * once, or a registration that was itself dead-lettered), it fails on purpose:
 * the kit retries it in place and after EVENT_MAX_DELIVERIES keeps it as a
 * dead letter an admin can replay. It is never dropped. We do not create a profile from these events:
 * user.logged_in carries no email, and only user.registered carries the
 * sign-up data (names, language, newsletter), which a stub would lose or
 * have to merge later.
 *
 * user.deleted and user.reactivated may also swap places: the newer fact
 * (by occurred_at) wins, remembered in active_synced_at.
 */
import { LockMode } from "@mikro-orm/core";
import { v7 as uuidv7 } from "uuid";
import {
  UserDeletedSchema,
  UserEmailVerifiedSchema,
  UserLoggedInSchema,
  UserReactivatedSchema,
  UserRegisteredSchema,
} from "../../gen/ecommerce/auth/v1/events_pb.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { type EventHandler, onEvent } from "../../kit/events/consumer.ts";
import { UserProfileEntity, type UserProfileRow } from "./entities.ts";
import { nullIfEmpty } from "./mapping.ts";
import { publishProfileUpdated } from "./profiles.ts";

const occurredAt = (t: Timestamp | undefined) => dateOf(t) ?? new Date();

/** Applies a fact from Auth to an existing profile; publishes user.updated when `publish` and something changed. */
async function syncProfile(em: EntityManager, userId: string, subject: string, publish: boolean, apply: (row: UserProfileRow) => string[]): Promise<void> {
  const row = await em.findOne(UserProfileEntity, { userId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
  // Thrown so the kit retries: see the top of this file.
  if (!row) throw new Error(`${subject} for user ${userId} arrived before the profile exists (user.registered not processed yet); will retry`);
  const changed = apply(row);
  if (changed.length === 0 || !publish) return;
  row.updatedAt = new Date();
  publishProfileUpdated(em, row, changed);
}

function setActive(row: UserProfileRow, active: boolean, at: Date): string[] {
  if (row.activeSyncedAt && at < row.activeSyncedAt) return []; // an older fact than the one applied
  row.activeSyncedAt = at;
  if (row.isActive === active) return [];
  row.isActive = active;
  return ["is_active"];
}

export function userConsumers(): EventHandler[] {
  return [
    onEvent(UserRegisteredSchema, "create-profile", async (em, event) => {
      // A second registration event for the same user (another event id) changes nothing.
      if (await em.findOne(UserProfileEntity, { userId: event.userId })) return;
      const now = new Date();
      em.create(UserProfileEntity, {
        id: uuidv7(),
        userId: event.userId,
        email: event.email,
        firstName: event.firstName,
        lastName: event.lastName,
        emailVerified: event.emailVerified,
        preferredLanguage: nullIfEmpty(event.preferredLanguage),
        newsletterSubscribed: event.newsletterSubscribed,
        marketingOptIn: false,
        isActive: true,
        createdAt: now,
        updatedAt: now,
      });
    }),

    onEvent(UserEmailVerifiedSchema, "sync-email-verified", (em, event) =>
      syncProfile(em, event.userId, "user.email_verified", true, (row) => {
        if (row.emailVerified) return [];
        row.emailVerified = true;
        return ["email_verified"];
      }),
    ),

    onEvent(UserDeletedSchema, "sync-deactivation", (em, event) =>
      syncProfile(em, event.userId, "user.deleted", true, (row) => setActive(row, false, occurredAt(event.occurredAt))),
    ),

    onEvent(UserReactivatedSchema, "sync-reactivation", (em, event) =>
      syncProfile(em, event.userId, "user.reactivated", true, (row) => setActive(row, true, occurredAt(event.occurredAt))),
    ),

    // No user.updated for sign-ins (the event's contract says so), and updated_at stays: a sign-in is not a profile edit.
    onEvent(UserLoggedInSchema, "sync-last-login", (em, event) =>
      syncProfile(em, event.userId, "user.logged_in", false, (row) => {
        const at = occurredAt(event.occurredAt);
        if (row.lastLoginAt && row.lastLoginAt >= at) return [];
        row.lastLoginAt = at;
        return ["last_login_at"];
      }),
    ),
  ];
}
