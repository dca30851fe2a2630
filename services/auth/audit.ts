/**
 * The security audit log: one append-only row per security-relevant action,
 * written in the same transaction as the action (for failures, committed
 * before the error is returned: kit/transaction.ts commitThenFail). The
 * client (ClientInfo) is resolved once per call by service.ts: its IP from the
 * kit (trusted proxy hops, else the TCP peer), its user agent from the header.
 */
import type { EntityManager } from "@mikro-orm/postgresql";
import { v7 as uuidv7 } from "uuid";
import { SecurityAction } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { SecurityAuditLog } from "./entities.ts";

export interface ClientInfo {
  /** The client address (kit clientAddressOf: trusted proxy hops of X-Forwarded-For, else the TCP peer). */
  ip: string;
  /** User-Agent, cut to 512 characters. */
  userAgent: string;
}

export const noClient: ClientInfo = { ip: "", userAgent: "" };

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
