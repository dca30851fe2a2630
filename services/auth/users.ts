/**
 * Accounts as the contract shows them, and the small queries every area
 * needs: roles of users, loading with a row lock, normalized emails.
 */
import { create } from "@bufbuild/protobuf";
import { LockMode, type EntityManager } from "@mikro-orm/postgresql";
import { type User as UserMessage, UserSchema } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { legacySqlOf } from "../../kit/sql.ts";
import { User } from "./entities.ts";

/** Emails are compared and stored lower-cased. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Runs raw SQL in `em`'s transaction (if any). */
export function query<T>(em: EntityManager, sql: string, params: unknown[] = []): Promise<T[]> {
  return legacySqlOf(em).all<T>(sql, params);
}

/** Role names of each user, sorted. */
export async function rolesOf(em: EntityManager, userIds: string[]): Promise<Map<string, string[]>> {
  const roles = new Map<string, string[]>(userIds.map((id) => [id, []]));
  if (userIds.length === 0) return roles;
  const rows = await query<{ user_id: string; name: string }>(
    em,
    "select ur.user_id, r.name from user_roles ur join roles r on r.id = ur.role_id where ur.user_id in (?) order by r.name",
    [userIds],
  );
  for (const row of rows) roles.get(row.user_id)?.push(row.name);
  return roles;
}

export async function rolesOfUser(em: EntityManager, userId: string): Promise<string[]> {
  return (await rolesOf(em, [userId])).get(userId) ?? [];
}

/** Loads a user for update: the row stays locked until the transaction ends. */
export function lockUser(tx: EntityManager, id: string): Promise<User | null> {
  return tx.findOne(User, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
}

/** Whether the account is locked at `now`. */
export function lockedUntil(user: User, now = Date.now()): Date | undefined {
  return user.lockedUntil && user.lockedUntil.getTime() > now ? user.lockedUntil : undefined;
}

/**
 * The contract's User. `admin` views include the lockout counter; the user's
 * own views (GetMe, Register, Login) always show 0.
 */
export function userView(user: User, roles: string[], view: "own" | "admin"): UserMessage {
  return create(UserSchema, {
    id: user.id,
    email: user.email,
    emailVerified: user.emailVerified,
    isActive: user.isActive,
    roles: [...roles].sort(),
    failedLoginAttempts: view === "admin" ? user.failedLoginAttempts : 0,
    lockedUntil: timestampOf(lockedUntil(user)),
    createdAt: timestampOf(user.createdAt),
    updatedAt: timestampOf(user.updatedAt),
    lastLoginAt: timestampOf(user.lastLoginAt),
  });
}
