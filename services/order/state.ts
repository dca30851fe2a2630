/**
 * The order's state machine: every status change goes through `transition`,
 * a conditional UPDATE from the statuses the change is allowed from, with the
 * order_status_history row (who, why) and, for announced orders,
 * order.status_changed in the same transaction. A change whose guard fails
 * changes nothing and returns undefined.
 */
import { v7 as uuidv7 } from "uuid";
import { OrderStatusChangedSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import type { OrderActorType } from "../../gen/ecommerce/order/v1/order_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { Params, sqlOf } from "../../kit/sql.ts";
import { OrderStatusHistoryEntity } from "./entities.ts";
import { actorTypes, type OrderRow, orderStatuses, paymentStatuses } from "./mapping.ts";

/** The transitions of the contract (OrderStatus), by target. */
export const allowedFrom: Record<string, string[]> = {
  pending: [],
  confirmed: ["pending"],
  processing: ["confirmed"],
  partially_shipped: ["confirmed", "processing"],
  shipped: ["confirmed", "processing", "partially_shipped"],
  delivered: ["shipped"],
  cancelled: ["pending", "confirmed", "processing"],
  refunded: ["partially_shipped", "shipped", "delivered"],
  payment_failed: ["pending"],
};

export interface Actor {
  type: OrderActorType;
  id: string;
}

export const systemActor = (type: OrderActorType): Actor => ({ type, id: "system" });

/**
 * Moves the order to `to` when its status is one of `from` (default: the
 * contract's allowed sources), also setting `set` (column -> value). Returns
 * the updated row, or undefined when the guard refused.
 */
export async function transition(
  tx: EntityManager,
  orderId: string,
  to: string,
  actor: Actor,
  reason: string,
  set: Record<string, unknown> = {},
  from: string[] = allowedFrom[to]!,
): Promise<OrderRow | undefined> {
  const params = new Params();
  const assignments = Object.entries(set).map(([column, value]) => `${column} = ${params.add(value)}`);
  const sql = `update orders o set status = ${params.add(to)}, ${[...assignments, "version = version + 1", "updated_at = now()"].join(", ")}
     from (select id, status as previous from orders where id = ${params.add(orderId)} for update) p
     where o.id = p.id and p.previous = any(${params.add(from)}::text[])
     returning o.*, p.previous`;
  const row = await sqlOf(tx).one<OrderRow & { previous: string }>(sql, params.values);
  if (!row) return undefined;
  await recordChange(tx, row, row.previous, actor, reason);
  return row;
}

/** History row (and order.status_changed for announced orders) of a change already written. */
export async function recordChange(tx: EntityManager, row: OrderRow, previous: string | null, actor: Actor, reason: string): Promise<void> {
  tx.create(OrderStatusHistoryEntity, {
    id: uuidv7(),
    orderId: row.id,
    status: row.status,
    previousStatus: previous,
    actorType: actorTypes.toDb(actor.type),
    changedBy: actor.id,
    reason: reason.slice(0, 500),
    orderVersion: row.version,
  });
  if (row.announced) {
    publishEvent(tx, OrderStatusChangedSchema, {
      orderId: row.id,
      orderNumber: row.order_number,
      userId: row.user_id,
      status: orderStatuses.fromDb(row.status),
      previousStatus: orderStatuses.fromDbOrUnspecified(previous),
      paymentStatus: paymentStatuses.fromDb(row.payment_status),
      actorType: actor.type,
      changedBy: actor.id,
      reason: reason.slice(0, 500),
    });
  }
  await tx.flush();
}
