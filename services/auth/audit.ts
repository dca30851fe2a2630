/**
 * The security audit log: one append-only row per security-relevant action,
 * written in the same transaction as the action (or, for failures, in a
 * transaction of its own that commits before the error is returned). The
 * client's IP and user agent come from the headers the edge sets.
 */
import { isIP } from "node:net";
import type { HandlerContext } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import { SecurityAction } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { SecurityAuditLog } from "./entities.ts";

export interface ClientInfo {
  /** First hop of X-Forwarded-For (the client as seen by the edge); empty when absent or not an IP. */
  ip: string;
  /** User-Agent, cut to 512 characters. */
  userAgent: string;
}

export const noClient: ClientInfo = { ip: "", userAgent: "" };

export function clientOf(ctx: HandlerContext): ClientInfo {
  const first = ctx.requestHeader.get("x-forwarded-for")?.split(",")[0]?.trim() ?? "";
  // "[::1]:1234" or "1.2.3.4:5678" forms are not sent by Envoy; anything not a bare IP is ignored.
  const ip = isIP(first) ? first.toLowerCase() : "";
  const userAgent = (ctx.requestHeader.get("user-agent") ?? "").slice(0, 512);
  return { ip, userAgent };
}

/** "LOGIN_FAILED" <-> "login_failed" in the action column. */
export function actionColumn(action: SecurityAction): string {
  return SecurityAction[action].toLowerCase();
}

export function actionOf(column: string): SecurityAction {
  const value = (SecurityAction as unknown as Record<string, SecurityAction | undefined>)[column.toUpperCase()];
  return value ?? SecurityAction.UNSPECIFIED;
}

export interface AuditInit {
  userId?: string | null;
  client?: ClientInfo;
  metadata?: Record<string, string>;
}

/** Queues an audit row in `em`'s unit of work. */
export function audit(em: EntityManager, action: SecurityAction, init: AuditInit = {}): void {
  const client = init.client ?? noClient;
  em.persist(
    em.create(SecurityAuditLog, {
      id: uuidv7(),
      userId: init.userId ?? null,
      action: actionColumn(action),
      ipAddress: client.ip,
      userAgent: client.userAgent,
      metadata: init.metadata ?? {},
      createdAt: new Date(),
    }),
  );
}
