/** Admin RPCs: accounts, roles, lockouts, sessions and the security audit log. */
import { create } from "@bufbuild/protobuf";
import type { EntityManager } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import {
  type AssignRoleRequest,
  type AssignRoleResponse,
  AssignRoleResponseSchema,
  type GetUserRequest,
  type GetUserResponse,
  GetUserResponseSchema,
  type ListRolesResponse,
  ListRolesResponseSchema,
  type ListSecurityAuditLogsRequest,
  type ListSecurityAuditLogsResponse,
  ListSecurityAuditLogsResponseSchema,
  type ListUsersRequest,
  type ListUsersResponse,
  ListUsersResponseSchema,
  type RevokeRoleRequest,
  type RevokeRoleResponse,
  RevokeRoleResponseSchema,
  type RevokeUserSessionsRequest,
  type RevokeUserSessionsResponse,
  RevokeUserSessionsResponseSchema,
  RoleSchema,
  SecurityAction,
  SecurityAuditLogSchema,
  type SetUserActiveRequest,
  type SetUserActiveResponse,
  SetUserActiveResponseSchema,
  type UnlockUserRequest,
  type UnlockUserResponse,
  UnlockUserResponseSchema,
} from "../../../gen/ecommerce/auth/v1/auth_pb.js";
import { RoleChange, UserDeletedSchema, UserReactivatedSchema, UserRoleChangedSchema } from "../../../gen/ecommerce/auth/v1/events_pb.js";
import { adminRole } from "../../../kit/auth/principal.ts";
import { dateOf, timestampOf } from "../../../kit/convert.ts";
import { failedPrecondition, notFound } from "../../../kit/errors.ts";
import { publishEvent } from "../../../kit/events/outbox.ts";
import { pageOf } from "../../../kit/paging.ts";
import { sqlOf } from "../../../kit/sql.ts";
import { actionColumn, actionOf, audit, type ClientInfo } from "../audit.ts";
import { Role, User, UserRole } from "../entities.ts";
import { revokeSessions } from "../sessions.ts";
import { lockUser, rolesOf, rolesOfUser, userView } from "../users.ts";

function likePattern(text: string): string {
  return `%${text.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

async function adminViewsOf(em: EntityManager, ids: string[]) {
  const users = await em.find(User, { id: { $in: ids } });
  const byId = new Map(users.map((u) => [u.id, u]));
  const roles = await rolesOf(em, ids);
  return ids.flatMap((id) => {
    const u = byId.get(id);
    return u ? [userView(u, roles.get(id) ?? [], "admin")] : [];
  });
}

async function adminView(em: EntityManager, user: User) {
  return userView(user, await rolesOfUser(em, user.id), "admin");
}

const sortKeys = {
  created_at: "u.created_at",
  email: "u.email",
  // Never signed in sorts as the oldest.
  last_login_at: "coalesce(u.last_login_at, '-infinity'::timestamptz)",
} as const;
const sortCasts = { created_at: "timestamptz", email: "text", last_login_at: "timestamptz" } as const;

export async function listUsers(em: EntityManager, req: ListUsersRequest): Promise<ListUsersResponse> {
  // Without a direction, email sorts A to Z and the times newest first.
  const [field, dir] = (req.orderBy || "created_at desc").split(" ") as [keyof typeof sortKeys, string | undefined];
  const descending = (dir ?? (field === "email" ? "asc" : "desc")) === "desc";
  // email_contains matches case-insensitively: its case may change between pages.
  const pages = pageOf({ ...req, emailContains: req.emailContains.toLowerCase() }, { k: sortCasts[field], id: "uuid" });
  const { after: cursor, size } = pages;

  const where: string[] = [];
  const params: unknown[] = [];
  /** Binds a value: its `$n` placeholder. */
  const bind = (value: unknown) => `$${params.push(value)}`;
  if (req.emailContains) where.push(`u.email like ${bind(likePattern(req.emailContains))} escape '\\'`);
  if (req.role) where.push(`exists (select 1 from user_roles ur join roles r on r.id = ur.role_id where ur.user_id = u.id and r.name = ${bind(req.role)})`);
  if (req.isActive !== undefined) where.push(`u.is_active = ${bind(req.isActive)}`);
  if (req.emailVerified !== undefined) where.push(`u.email_verified = ${bind(req.emailVerified)}`);
  if (req.lockedOnly) where.push("u.locked_until > now()");
  const sortKey = sortKeys[field];
  if (cursor) where.push(`(${sortKey}, u.id) ${descending ? "<" : ">"} (${bind(cursor.k)}::${sortCasts[field]}, ${bind(cursor.id)}::uuid)`);
  const order = descending ? "desc" : "asc";
  const rows = await sqlOf(em).all<{ id: string; sort_key: string }>(
    `select u.id, (${sortKey})::text as sort_key from users u
      ${where.length ? `where ${where.join(" and ")}` : ""}
      order by ${sortKey} ${order}, u.id ${order} limit ${bind(size + 1)}`,
    params,
  );
  const page = rows.slice(0, size);
  const last = page.at(-1);
  return create(ListUsersResponseSchema, {
    users: await adminViewsOf(
      em,
      page.map((r) => r.id),
    ),
    nextPageToken: rows.length > size && last ? pages.next({ k: last.sort_key, id: last.id }) : "",
  });
}

export async function getUser(em: EntityManager, req: GetUserRequest): Promise<GetUserResponse> {
  const user = await em.findOne(User, { id: req.userId });
  if (!user) throw notFound("user", req.userId);
  return create(GetUserResponseSchema, { user: await adminView(em, user) });
}

export async function setUserActive(em: EntityManager, adminId: string, client: ClientInfo, req: SetUserActiveRequest): Promise<SetUserActiveResponse> {
  const user = await em.transactional(async (tx) => {
    const user = await lockUser(tx, req.userId);
    if (!user) throw notFound("user", req.userId);
    if (!req.active && user.id === adminId) throw failedPrecondition("an admin cannot deactivate their own account", "CANNOT_DEACTIVATE_SELF");
    if (user.isActive === req.active) return user;
    user.isActive = req.active;
    if (!req.active) {
      const sessions = await revokeSessions(tx, { userId: user.id }, "deactivated");
      audit(tx, SecurityAction.USER_DEACTIVATED, {
        userId: user.id,
        client,
        metadata: { reason: req.reason, actor_user_id: adminId, sessions_revoked: String(sessions) },
      });
      publishEvent(tx, UserDeletedSchema, { userId: user.id, email: user.email, reason: req.reason, deactivatedBy: adminId });
    } else {
      audit(tx, SecurityAction.USER_REACTIVATED, { userId: user.id, client, metadata: { reason: req.reason, actor_user_id: adminId } });
      publishEvent(tx, UserReactivatedSchema, { userId: user.id, email: user.email, reactivatedBy: adminId });
    }
    return user;
  });
  return create(SetUserActiveResponseSchema, { user: await adminView(em, user) });
}

async function userAndRole(tx: EntityManager, userId: string, roleName: string) {
  const user = await lockUser(tx, userId);
  if (!user) throw notFound("user", userId);
  const role = await tx.findOne(Role, { name: roleName });
  if (!role) throw notFound("role", roleName);
  return { user, role };
}

export async function assignRole(em: EntityManager, adminId: string, client: ClientInfo, req: AssignRoleRequest): Promise<AssignRoleResponse> {
  const user = await em.transactional(async (tx) => {
    const { user, role } = await userAndRole(tx, req.userId, req.role);
    const roles = await rolesOfUser(tx, user.id);
    if (roles.includes(role.name)) return user;
    tx.persist(tx.create(UserRole, { id: uuidv7(), userId: user.id, roleId: role.id, createdAt: new Date() }));
    user.updatedAt = new Date();
    audit(tx, SecurityAction.ROLE_ASSIGNED, { userId: user.id, client, metadata: { role: role.name, actor_user_id: adminId } });
    publishEvent(tx, UserRoleChangedSchema, {
      userId: user.id,
      role: role.name,
      change: RoleChange.ASSIGNED,
      roles: [...roles, role.name].sort(),
      changedBy: adminId,
    });
    return user;
  });
  return create(AssignRoleResponseSchema, { user: await adminView(em, user) });
}

export async function revokeRole(em: EntityManager, adminId: string, client: ClientInfo, req: RevokeRoleRequest): Promise<RevokeRoleResponse> {
  const user = await em.transactional(async (tx) => {
    const { user, role } = await userAndRole(tx, req.userId, req.role);
    if (role.name === adminRole && user.id === adminId) {
      throw failedPrecondition("an admin cannot revoke their own admin role; ask another admin", "CANNOT_REVOKE_OWN_ADMIN");
    }
    const roles = await rolesOfUser(tx, user.id);
    if (!roles.includes(role.name)) return user;
    if (role.name === adminRole) {
      // Serialize admin revocations, so two of them cannot each leave the other as the last admin.
      const sql = sqlOf(tx);
      await sql.all("select id from roles where id = $1 for update", [role.id]);
      const others = await sql.one<{ n: number }>(
        `select count(*)::int as n from user_roles ur join users u on u.id = ur.user_id
          where ur.role_id = $1 and u.is_active and u.id <> $2`,
        [role.id, user.id],
      );
      if (!others?.n) throw failedPrecondition("this would leave the shop without an active admin", "LAST_ADMIN");
    }
    await tx.nativeDelete(UserRole, { userId: user.id, roleId: role.id });
    user.updatedAt = new Date();
    audit(tx, SecurityAction.ROLE_REVOKED, { userId: user.id, client, metadata: { role: role.name, actor_user_id: adminId } });
    publishEvent(tx, UserRoleChangedSchema, {
      userId: user.id,
      role: role.name,
      change: RoleChange.REVOKED,
      roles: roles.filter((r) => r !== role.name),
      changedBy: adminId,
    });
    return user;
  });
  return create(RevokeRoleResponseSchema, { user: await adminView(em, user) });
}

export async function listRoles(em: EntityManager): Promise<ListRolesResponse> {
  const roles = await em.find(Role, {}, { orderBy: { name: "asc" } });
  return create(ListRolesResponseSchema, {
    roles: roles.map((r) =>
      create(RoleSchema, { id: r.id, name: r.name, description: r.description, createdAt: timestampOf(r.createdAt), updatedAt: timestampOf(r.updatedAt) }),
    ),
  });
}

export async function listSecurityAuditLogs(em: EntityManager, req: ListSecurityAuditLogsRequest): Promise<ListSecurityAuditLogsResponse> {
  const start = dateOf(req.startTime);
  const end = dateOf(req.endTime);
  const ip = req.ipAddress.toLowerCase();
  const actions = [...new Set(req.actions.map(actionColumn))].sort();
  const pages = pageOf(req, { k: "timestamptz", id: "uuid" });
  const { after: cursor, size } = pages;

  const where: string[] = [];
  const params: unknown[] = [];
  const bind = (value: unknown) => `$${params.push(value)}`;
  if (req.userId) where.push(`user_id = ${bind(req.userId)}`);
  if (actions.length > 0) where.push(`action = any(${bind(actions)}::text[])`);
  if (start) where.push(`created_at >= ${bind(start)}`);
  if (end) where.push(`created_at < ${bind(end)}`);
  if (ip) where.push(`ip_address = ${bind(ip)}`);
  if (cursor) where.push(`(created_at, id) < (${bind(cursor.k)}::timestamptz, ${bind(cursor.id)}::uuid)`);
  const rows = await sqlOf(em).all<{
    id: string;
    user_id: string | null;
    action: string;
    ip_address: string;
    user_agent: string;
    metadata: Record<string, string>;
    created_at: string;
    sort_key: string;
  }>(
    `select id, user_id, action, ip_address, user_agent, metadata, created_at, created_at::text as sort_key
       from security_audit_logs ${where.length ? `where ${where.join(" and ")}` : ""}
      order by created_at desc, id desc limit ${bind(size + 1)}`,
    params,
  );
  const page = rows.slice(0, size);
  const last = page.at(-1);
  return create(ListSecurityAuditLogsResponseSchema, {
    logs: page.map((r) =>
      create(SecurityAuditLogSchema, {
        id: r.id,
        userId: r.user_id ?? "",
        action: actionOf(r.action),
        ipAddress: r.ip_address,
        userAgent: r.user_agent,
        metadata: typeof r.metadata === "string" ? (JSON.parse(r.metadata) as Record<string, string>) : r.metadata,
        createdAt: timestampOf(r.created_at),
      }),
    ),
    nextPageToken: rows.length > size && last ? pages.next({ k: last.sort_key, id: last.id }) : "",
  });
}

export async function unlockUser(em: EntityManager, adminId: string, client: ClientInfo, req: UnlockUserRequest): Promise<UnlockUserResponse> {
  const user = await em.transactional(async (tx) => {
    const user = await lockUser(tx, req.userId);
    if (!user) throw notFound("user", req.userId);
    if (!user.lockedUntil && user.failedLoginAttempts === 0) return user;
    const wasLocked = !!user.lockedUntil && user.lockedUntil.getTime() > Date.now();
    user.lockedUntil = null;
    user.failedLoginAttempts = 0;
    if (wasLocked) audit(tx, SecurityAction.ACCOUNT_UNLOCKED, { userId: user.id, client, metadata: { actor_user_id: adminId } });
    return user;
  });
  return create(UnlockUserResponseSchema, { user: await adminView(em, user) });
}

export async function revokeUserSessions(em: EntityManager, adminId: string, client: ClientInfo, req: RevokeUserSessionsRequest): Promise<RevokeUserSessionsResponse> {
  const revoked = await em.transactional(async (tx) => {
    const user = await tx.findOne(User, { id: req.userId });
    if (!user) throw notFound("user", req.userId);
    const sessions = await revokeSessions(tx, { userId: user.id }, "admin_revoked");
    audit(tx, SecurityAction.SESSIONS_REVOKED, {
      userId: user.id,
      client,
      metadata: { actor_user_id: adminId, sessions_revoked: String(sessions), ...(req.reason ? { reason: req.reason } : {}) },
    });
    return sessions;
  });
  return create(RevokeUserSessionsResponseSchema, { revokedSessions: revoked });
}
