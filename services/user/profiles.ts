/**
 * Profiles: the caller's own (GetMyProfile, UpdateMyProfile) and, for
 * customer support, anybody's (GetProfile, ListProfiles). Every change
 * publishes user.updated through the outbox in the same transaction.
 */
import { LockMode } from "@mikro-orm/core";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, invalidArgument } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { applyFieldMask, type FieldUpdate, maskPaths, setField } from "../../kit/field-mask.ts";
import { pageOf } from "../../kit/paging.ts";
import { dateOf } from "../../kit/convert.ts";
import { type Sql, sqlOf } from "../../kit/sql.ts";
import { UserUpdatedSchema } from "../../gen/ecommerce/user/v1/events_pb.js";
import {
  type GetMyProfileResponse,
  type GetProfileResponse,
  type ListProfilesRequest,
  type ListProfilesResponse,
  type UpdateMyProfileRequest,
  type UpdateMyProfileResponse,
  type UserProfile,
} from "../../gen/ecommerce/user/v1/user_pb.js";
import type { UserServiceConfig } from "./config.ts";
import { AddressEntity, PaymentMethodEntity, UserProfileEntity, type UserProfileRow } from "./entities.ts";
import {
  addressMessage,
  compareAddresses,
  comparePaymentMethods,
  genders,
  nullIfEmpty,
  type ProfileFields,
  paymentMethodMessage,
  profileColumns,
  profileMessage,
} from "./mapping.ts";

export function profileNotFound(userId: string) {
  return domainError(Code.NotFound, `no profile for user ${userId}: profiles are created shortly after registration; retry`, {
    reason: "PROFILE_NOT_FOUND",
    retryAfterMs: 1_000,
  });
}

/**
 * The user's profile, or NOT_FOUND PROFILE_NOT_FOUND. With `lock`, the row is
 * locked for the transaction: every change to a user's data takes this lock
 * first, so limits and default flags are checked and changed one call at a time.
 */
export async function findProfile(em: EntityManager, userId: string, lock = false): Promise<UserProfileRow> {
  const row = await em.findOne(UserProfileEntity, { userId }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
  if (!row) throw profileNotFound(userId);
  return row;
}

/**
 * GetMyProfile: one statement, the row mapped straight to the message (the hottest
 * read of the service; no entity is hydrated).
 */
export async function getMyProfile(db: Sql, userId: string): Promise<Omit<GetMyProfileResponse, "$typeName">> {
  const row = await db.one<ProfileFields>(`select ${profileColumns} from user_profiles p where p.user_id = $1`, [userId]);
  if (!row) throw profileNotFound(userId);
  return { profile: profileMessage(row) };
}

/** Queues user.updated with the profile's current values (call before the transaction commits). */
export function publishProfileUpdated(em: EntityManager, row: UserProfileRow, changedFields: string[]): void {
  publishEvent(em, UserUpdatedSchema, {
    userId: row.userId,
    email: row.email,
    firstName: row.firstName,
    lastName: row.lastName,
    phone: row.phone ?? "",
    preferredLanguage: row.preferredLanguage ?? "",
    preferredCurrency: row.preferredCurrency ?? "",
    newsletterSubscribed: row.newsletterSubscribed,
    marketingOptIn: row.marketingOptIn,
    isActive: row.isActive,
    emailVerified: row.emailVerified,
    changedFields,
  });
}

/** The latest calendar date anywhere on Earth (UTC+14): a birthday "today" in Kiribati is not in the future. */
function latestTodayOnEarth(now = new Date()): string {
  return new Date(now.getTime() + 14 * 3600_000).toISOString().slice(0, 10);
}

function checkBirthDate(value: string): void {
  const [y, m, d] = value.split("-").map(Number) as [number, number, number];
  const date = new Date(Date.UTC(y, m - 1, d));
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d) {
    throw invalidArgument("profile.date_of_birth", `${value} is not a real calendar date`);
  }
  if (value > latestTodayOnEarth()) throw invalidArgument("profile.date_of_birth", "lies in the future");
}

type Updatable = "first_name" | "last_name" | "phone" | "avatar_url" | "date_of_birth" | "gender" | "preferred_currency" | "preferred_language" | "newsletter_subscribed" | "marketing_opt_in";

/** Each updatable path: how to read it from the request (an empty value clears) and where it lives on the row. */
const updatable: Record<Updatable, FieldUpdate<UserProfileRow, UserProfile>> = {
  first_name: setField((i) => i.firstName, (r) => r.firstName, (r, v) => (r.firstName = v)),
  last_name: setField((i) => i.lastName, (r) => r.lastName, (r, v) => (r.lastName = v)),
  phone: setField((i) => nullIfEmpty(i.phone), (r) => r.phone ?? null, (r, v) => (r.phone = v)),
  avatar_url: setField((i) => nullIfEmpty(i.avatarUrl), (r) => r.avatarUrl ?? null, (r, v) => (r.avatarUrl = v)),
  date_of_birth: setField((i) => nullIfEmpty(i.dateOfBirth), (r) => r.dateOfBirth ?? null, (r, v) => (r.dateOfBirth = v)),
  gender: setField((i) => genders.toDbOrNull(i.gender), (r) => r.gender ?? null, (r, v) => (r.gender = v)),
  preferred_currency: setField((i) => nullIfEmpty(i.preferredCurrency), (r) => r.preferredCurrency ?? null, (r, v) => (r.preferredCurrency = v)),
  preferred_language: setField((i) => nullIfEmpty(i.preferredLanguage), (r) => r.preferredLanguage ?? null, (r, v) => (r.preferredLanguage = v)),
  newsletter_subscribed: setField((i) => i.newsletterSubscribed, (r) => r.newsletterSubscribed, (r, v) => (r.newsletterSubscribed = v)),
  marketing_opt_in: setField((i) => i.marketingOptIn, (r) => r.marketingOptIn, (r, v) => (r.marketingOptIn = v)),
};

export async function updateMyProfile(em: EntityManager, config: UserServiceConfig, userId: string, req: UpdateMyProfileRequest): Promise<Omit<UpdateMyProfileResponse, "$typeName">> {
  const input = req.profile!;
  // The contract's rules (mask paths, patterns) ran already; these need more than a rule can say.
  const paths = maskPaths(req.updateMask);
  if (paths.has("date_of_birth") && input.dateOfBirth !== "") checkBirthDate(input.dateOfBirth);
  if (paths.has("preferred_currency") && input.preferredCurrency !== "" && !config.shopCurrencies.has(input.preferredCurrency)) {
    throw domainError(Code.InvalidArgument, `profile.preferred_currency: the shop does not sell in ${input.preferredCurrency} (it sells in ${[...config.shopCurrencies].join(", ")})`, {
      reason: "UNSUPPORTED_CURRENCY",
      field: "profile.preferred_currency",
    });
  }
  return em.transactional(async (tx) => {
    const row = await findProfile(tx, userId, true);
    const changed = applyFieldMask(req.updateMask, row, input, updatable);
    if (changed.length > 0) {
      row.updatedAt = new Date();
      publishProfileUpdated(tx, row, changed);
    }
    return { profile: profileMessage(row) };
  });
}

export async function getProfile(em: EntityManager, userId: string): Promise<Omit<GetProfileResponse, "$typeName">> {
  const profile = await findProfile(em, userId);
  const [addresses, methods] = await Promise.all([em.find(AddressEntity, { userId }), em.find(PaymentMethodEntity, { userId })]);
  return {
    profile: profileMessage(profile),
    addresses: addresses.sort(compareAddresses).map(addressMessage),
    paymentMethods: methods.sort(comparePaymentMethods).map(paymentMethodMessage),
  };
}

/** Sort keys of ListProfiles: a SQL expression and the type its cursor is cast back to. */
const sortKeys = {
  created_at: { expr: "p.created_at", type: "timestamptz" },
  email: { expr: "p.email", type: "text" },
  last_name: { expr: "p.last_name", type: "text" },
  // Never-signed-in users sort as the oldest sign-in.
  last_login_at: { expr: "coalesce(p.last_login_at, '-infinity'::timestamptz)", type: "timestamptz" },
} as const;

function parseOrderBy(orderBy: string): { key: keyof typeof sortKeys; desc: boolean } {
  if (orderBy === "") return { key: "created_at", desc: true };
  // A key without a direction sorts ascending, as in SQL.
  const [key, dir] = orderBy.split(" ") as [keyof typeof sortKeys, string | undefined];
  return { key, desc: dir === "desc" };
}

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

export async function listProfiles(em: EntityManager, req: ListProfilesRequest): Promise<Omit<ListProfilesResponse, "$typeName">> {
  const order = parseOrderBy(req.orderBy);
  const sort = sortKeys[order.key];
  // The token is bound to the whole request: same filters, same order.
  const pages = pageOf(req, { k: sort.type, i: "uuid" });
  const { after: cursor, size } = pages;
  const where: string[] = [];
  const params: unknown[] = [];
  /** Binds a value: its `$n` placeholder. */
  const bind = (value: unknown) => `$${params.push(value)}`;
  if (req.query !== "") {
    const like = bind(`%${escapeLike(req.query)}%`);
    where.push(`(p.email ilike ${like} or p.first_name ilike ${like} or p.last_name ilike ${like})`);
  }
  if (req.isActive !== undefined) where.push(`p.is_active = ${bind(req.isActive)}`);
  if (req.newsletterSubscribed !== undefined) where.push(`p.newsletter_subscribed = ${bind(req.newsletterSubscribed)}`);
  if (req.marketingOptIn !== undefined) where.push(`p.marketing_opt_in = ${bind(req.marketingOptIn)}`);
  const after = dateOf(req.createdAfter);
  const before = dateOf(req.createdBefore);
  if (after) where.push(`p.created_at >= ${bind(after)}`);
  if (before) where.push(`p.created_at < ${bind(before)}`);

  if (cursor) where.push(`(${sort.expr}, p.id) ${order.desc ? "<" : ">"} (${bind(cursor.k)}::${sort.type}, ${bind(cursor.i)}::uuid)`);
  const dir = order.desc ? "desc" : "asc";
  const rows = await sqlOf(em).all<ProfileFields & { sort_key: string }>(
    `select ${profileColumns}, (${sort.expr})::text as sort_key from user_profiles p
      ${where.length > 0 ? `where ${where.join(" and ")}` : ""}
      order by ${sort.expr} ${dir}, p.id ${dir} limit ${bind(size + 1)}`,
    params,
  );
  const page = rows.slice(0, size);
  const last = page[page.length - 1];
  return {
    profiles: page.map(profileMessage),
    nextPageToken: rows.length > size && last ? pages.next({ k: last.sort_key, i: last.id }) : "",
  };
}
