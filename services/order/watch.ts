/**
 * WatchOrder: the current state, then one message per change, until the
 * order reaches a final status (DELIVERED, CANCELLED, REFUNDED,
 * PAYMENT_FAILED), an hour passes, or the client leaves. Changes are found by
 * polling the order's version every ORDER_WATCH_POLL_MS (one indexed primary
 * key read): it sees the changes of every replica without a fan-out. When one
 * poll finds several status changes, each gets its own message with `change`
 * set, in order, all carrying the state found.
 *
 * Every message carries the order's version. A client that reconnects with
 * the last version it received (resume_after_version) gets what it missed:
 * the status changes made after that version, each once (every history row
 * records the version its change produced), or the current state when only
 * the payment status or tracking changed, or nothing until the next change.
 */
import type { Order, WatchOrderRequest, WatchOrderResponse } from "../../gen/ecommerce/order/v1/order_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { notFound } from "../../kit/errors.ts";
import { sqlOf } from "../../kit/sql.ts";
import { customerVisible, orderRow, ordersToMessages, terminalStatuses } from "./mapping.ts";

const maxWatchMs = 3_600_000;

type Message = Omit<WatchOrderResponse, "$typeName">;

export async function* watchOrder(em: EntityManager, pollMs: number, userId: string, req: Pick<WatchOrderRequest, "orderId" | "resumeAfterVersion">, signal: AbortSignal): AsyncGenerator<Message> {
  const orderId = req.orderId;
  let { order, version } = await snapshot(em, userId, orderId);
  const resumeAfter = Number(req.resumeAfterVersion);
  if (resumeAfter <= 0 || resumeAfter > version) yield { order, version: BigInt(version) };
  else if (resumeAfter < version) yield* changesSince(em, order, resumeAfter, version);
  const until = Date.now() + maxWatchMs;
  while (!terminalStatuses.includes(statusName(order.status)) && Date.now() < until && !signal.aborted) {
    // The abort listener goes with each wait: an hour-long stream must not pile up one per poll.
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, pollMs);
      signal.addEventListener("abort", done, { once: true });
    });
    if (signal.aborted) return;
    if ((await versionOf(em, orderId)) === version) continue;
    const seen = version;
    ({ order, version } = await snapshot(em, userId, orderId));
    yield* changesSince(em, order, seen, version);
  }
}

/** The order as the customer sees it, with the version of the very row it was built from. */
async function snapshot(em: EntityManager, userId: string, orderId: string): Promise<{ order: Order; version: number }> {
  const row = await orderRow(em, orderId);
  if (!row || row.user_id !== userId || !customerVisible(row)) throw notFound("order", orderId);
  return { order: (await ordersToMessages(em, [row], "customer"))[0]!, version: row.version };
}

/**
 * The messages for what changed after version `after` up to `order`'s `version`: one per status change
 * (history rows of those versions, in order), each but the last at its own change's version, the last at the
 * order's; or one message with the state alone when no status changed (payment status, tracking, notes).
 */
async function* changesSince(em: EntityManager, order: Order, after: number, version: number): AsyncGenerator<Message> {
  const rows = await sqlOf(em).all<{ id: string; order_version: number }>(
    "select id, order_version from order_status_history where order_id = $1 and order_version > $2 and order_version <= $3 order by order_version, id",
    [order.id, after, version],
  );
  const changes = rows.flatMap((r) => {
    const change = order.statusHistory.find((c) => c.id === r.id);
    return change ? [{ change, version: r.order_version }] : [];
  });
  if (changes.length === 0) {
    yield { order, version: BigInt(version) };
    return;
  }
  for (const [i, c] of changes.entries()) yield { order, change: c.change, version: BigInt(i === changes.length - 1 ? version : c.version) };
}

const names = ["", "pending", "confirmed", "processing", "shipped", "delivered", "cancelled", "refunded", "payment_failed", "partially_shipped"];
const statusName = (s: number) => names[s] ?? "";

async function versionOf(em: EntityManager, orderId: string): Promise<number> {
  return (await sqlOf(em).one<{ version: number }>("select version from orders where id = $1", [orderId]))?.version ?? 0;
}
