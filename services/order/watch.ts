/**
 * WatchOrder: the current state, then one message per change, until the
 * order reaches a final status (DELIVERED, CANCELLED, REFUNDED,
 * PAYMENT_FAILED), an hour passes, or the client leaves. Changes are found by
 * polling the order's version every ORDER_WATCH_POLL_MS (one indexed primary
 * key read): it sees the changes of every replica without a fan-out, and a
 * reconnect starts again from the current state, so nothing is lost. When one
 * poll finds several status changes (status history rows), each gets its own
 * message with `change` set, in order, all carrying the state found.
 */
import type { WatchOrderResponse } from "../../gen/ecommerce/order/v1/order_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { sqlOf } from "../../kit/sql.ts";
import { loadOrder, terminalStatuses } from "./mapping.ts";

const maxWatchMs = 3_600_000;

export async function* watchOrder(em: EntityManager, pollMs: number, userId: string, orderId: string, signal: AbortSignal): AsyncGenerator<Omit<WatchOrderResponse, "$typeName">> {
  // The version is read before the order: a change between the two reads is found again by the next poll, never lost.
  let version = await versionOf(em, orderId);
  let order = await loadOrder(em, orderId, "customer", userId);
  yield { order };
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
    const now = await versionOf(em, orderId);
    if (now === version) continue;
    const before = order;
    order = await loadOrder(em, orderId, "customer", userId);
    version = now;
    // A poll may find several status changes (history rows) since the last message: one message each, in
    // order (the contract's "one message follows every change"); `order` is the state the poll found.
    const changes = order.statusHistory.slice(before.statusHistory.length);
    if (changes.length === 0) yield { order };
    for (const change of changes) yield { order, change };
  }
}

const names = ["", "pending", "confirmed", "processing", "shipped", "delivered", "cancelled", "refunded", "payment_failed"];
const statusName = (s: number) => names[s] ?? "";

async function versionOf(em: EntityManager, orderId: string): Promise<number> {
  return (await sqlOf(em).one<{ version: number }>("select version from orders where id = $1", [orderId]))?.version ?? 0;
}
