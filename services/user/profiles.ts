/**
 * Profiles: the caller's own (GetMyProfile, UpdateMyProfile) and, for
 * customer support, anybody's (GetProfile, ListProfiles). Every change
 * publishes user.updated through the outbox in the same transaction.
 */
import { LockMode } from "@mikro-orm/core";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, invalidArgument } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { pageOf } from "../../kit/paging.ts";
import { dateOf } from "../../kit/convert.ts";
import { UserUpdatedSchema } from "../../gen/ecommerce/user/v1/events_pb.js";
import {
  type GetProfileResponse,
  type ListProfilesRequest,
  type ListProfilesResponse,
  type UpdateMyProfileRequest,
  type UpdateMyProfileResponse,
  type UserProfile,
} from "../../gen/ecommerce/user/v1/user_pb.js";
import type { UserServiceConfig } from "./config.ts";
import { AddressEntity, PaymentMethodEntity, UserProfileEntity, type UserProfileRow } from "./entities.ts";
import { addressMessage, compareAddresses, comparePaymentMethods, genders, nullIfEmpty, paymentMethodMessage, profileMessage } from "./mapping.ts";

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
const updatable: { [P in Updatable]: (row: UserProfileRow, input: UserProfile) => { changed: boolean; apply: () => void } } = {
  first_name: (row, input) => diff(row.firstName, input.firstName, (v) => (row.firstName = v)),
  last_name: (row, input) => diff(row.lastName, input.lastName, (v) => (row.lastName = v)),
  phone: (row, input) => diff(row.phone ?? null, nullIfEmpty(input.phone), (v) => (row.phone = v)),
  avatar_url: (row, input) => diff(row.avatarUrl ?? null, nullIfEmpty(input.avatarUrl), (v) => (row.avatarUrl = v)),
  date_of_birth: (row, input) => diff(row.dateOfBirth ?? null, nullIfEmpty(input.dateOfBirth), (v) => (row.dateOfBirth = v)),
  gender: (row, input) => diff(row.gender ?? null, genders.toDbOrNull(input.gender), (v) => (row.gender = v)),
  preferred_currency: (row, input) => diff(row.preferredCurrency ?? null, nullIfEmpty(input.preferredCurrency), (v) => (row.preferredCurrency = v)),
  preferred_language: (row, input) => diff(row.preferredLanguage ?? null, nullIfEmpty(input.preferredLanguage), (v) => (row.preferredLanguage = v)),
  newsletter_subscribed: (row, input) => diff(row.newsletterSubscribed, input.newsletterSubscribed, (v) => (row.newsletterSubscribed = v)),
  marketing_opt_in: (row, input) => diff(row.marketingOptIn, input.marketingOptIn, (v) => (row.marketingOptIn = v)),
};

function diff<T>(current: T, next: T, set: (v: T) => void) {
  return { changed: current !== next, apply: () => set(next) };
}

export async function updateMyProfile(em: EntityManager, config: UserServiceConfig, userId: string, req: UpdateMyProfileRequest): Promise<Omit<UpdateMyProfileResponse, "$typeName">> {
  const input = req.profile!;
  // The contract's rules (mask paths, patterns) ran already; these need more than a rule can say.
  const paths = [...new Set(req.updateMask!.paths)] as Updatable[];
  if (paths.includes("date_of_birth") && input.dateOfBirth !== "") checkBirthDate(input.dateOfBirth);
  if (paths.includes("preferred_currency") && input.preferredCurrency !== "" && !config.shopCurrencies.has(input.preferredCurrency)) {
    throw domainError(Code.InvalidArgument, `profile.preferred_currency: the shop does not sell in ${input.preferredCurrency} (it sells in ${[...config.shopCurrencies].join(", ")})`, {
      reason: "UNSUPPORTED_CURRENCY",
      field: "profile.preferred_currency",
    });
  }
  return em.transactional(async (tx) => {
    const row = await findProfile(tx, userId, true);
    const changed: string[] = [];
    for (const path of Object.keys(updatable) as Updatable[]) {
      if (!paths.includes(path)) continue;
      const change = updatable[path](row, input);
      if (!change.changed) continue;
      change.apply();
      changed.push(path);
    }
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
  created_at: { expr: "created_at", type: "timestamptz" },
  email: { expr: "email", type: "text" },
  last_name: { expr: "last_name", type: "text" },
  // Never-signed-in users sort as the oldest sign-in.
  last_login_at: { expr: "coalesce(last_login_at, '-infinity'::timestamptz)", type: "timestamptz" },
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
  if (req.query !== "") {
    const like = `%${escapeLike(req.query)}%`;
    where.push("(email ilike ? or first_name ilike ? or last_name ilike ?)");
    params.push(like, like, like);
  }
  if (req.isActive !== undefined) (where.push("is_active = ?"), params.push(req.isActive));
  if (req.newsletterSubscribed !== undefined) (where.push("newsletter_subscribed = ?"), params.push(req.newsletterSubscribed));
  if (req.marketingOptIn !== undefined) (where.push("marketing_opt_in = ?"), params.push(req.marketingOptIn));
  const after = dateOf(req.createdAfter);
  const before = dateOf(req.createdBefore);
  if (after) (where.push("created_at >= ?"), params.push(after));
  if (before) (where.push("created_at < ?"), params.push(before));

  if (cursor) {
    where.push(`(${sort.expr}, id) ${order.desc ? "<" : ">"} (?::${sort.type}, ?::uuid)`);
    params.push(cursor.k, cursor.i);
  }
  const dir = order.desc ? "desc" : "asc";
  const rows = await em
    .getConnection()
    .execute<{ id: string; sort_key: string }[]>(
      `select id, (${sort.expr})::text as sort_key from user_profiles
        ${where.length > 0 ? `where ${where.join(" and ")}` : ""}
        order by ${sort.expr} ${dir}, id ${dir} limit ?`,
      [...params, size + 1],
    );
  const page = rows.slice(0, size);
  const byId = new Map((await em.find(UserProfileEntity, { id: { $in: page.map((r) => r.id) } })).map((p) => [p.id, p]));
  const last = page[page.length - 1];
  return {
    profiles: page.map((r) => profileMessage(byId.get(r.id)!)),
    nextPageToken: rows.length > size && last ? pages.next({ k: last.sort_key, i: last.id }) : "",
  };
}
