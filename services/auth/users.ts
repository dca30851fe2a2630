/**
 * Accounts as the contract shows them, and the small queries every area
 * needs: roles of users, loading with a row lock, normalized emails.
 */
import { create } from "@bufbuild/protobuf";
import { LockMode, type EntityManager } from "@mikro-orm/postgresql";
import { type User as UserMessage, UserSchema } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import { sqlOf } from "../../kit/sql.ts";
import { User } from "./entities.ts";

/** Emails are compared and stored lower-cased. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Role names of each user, sorted. */
export async function rolesOf(em: EntityManager, userIds: string[]): Promise<Map<string, string[]>> {
  const roles = new Map<string, string[]>(userIds.map((id) => [id, []]));
  if (userIds.length === 0) return roles;
  const rows = await sqlOf(em).all<{ user_id: string; name: string }>(
    "select ur.user_id, r.name from user_roles ur join roles r on r.id = ur.role_id where ur.user_id = any($1::uuid[]) order by r.name",
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
export function lockedUntil(user: { lockedUntil?: Date | string | null }, now = Date.now()): Date | undefined {
  const until = user.lockedUntil ? new Date(user.lockedUntil) : undefined;
  return until && until.getTime() > now ? until : undefined;
}

/**
 * What the contract's User is made of: a User entity, or a row read with `userColumns`
 * (timestamps are Dates on entities and text through sqlOf, as MikroORM's type parsers leave them).
 */
export interface UserFields {
  id: string;
  email: string;
  emailVerified: boolean;
  isActive: boolean;
  failedLoginAttempts: number;
  lockedUntil?: Date | string | null;
  createdAt: Date | string;
  updatedAt: Date | string;
  lastLoginAt?: Date | string | null;
}

/** The columns of UserFields under their property names, for reads that map rows straight to messages. */
export const userColumns = `u.id, u.email, u.email_verified as "emailVerified", u.is_active as "isActive",
  u.failed_login_attempts as "failedLoginAttempts", u.locked_until as "lockedUntil", u.created_at as "createdAt",
  u.updated_at as "updatedAt", u.last_login_at as "lastLoginAt"`;

/** The sorted role names of user `u`, as a column of a query over `users u`. */
export const rolesColumn = `array(select r.name from user_roles ur join roles r on r.id = ur.role_id where ur.user_id = u.id order by r.name) as roles`;

/**
 * The contract's User. `admin` views include the lockout counter; the user's
 * own views (GetMe, Register, Login) always show 0.
 */
export function userView(user: UserFields, roles: string[], view: "own" | "admin"): UserMessage {
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
