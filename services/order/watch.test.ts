/**
 * WatchOrder reports every status change, also when several happen between
 * two of its polls: here the poll period is long (10 s) and the back office
 * moves the order CONFIRMED -> PROCESSING -> SHIPPED -> DELIVERED at once;
 * the stream still carries one message per change, in order, then ends.
 * A client that reconnects with the last version it received gets exactly what
 * it missed (every change once, none repeated), at once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
beforeAll(async () => {
  h = await startOrderHarness({ ORDER_WATCH_POLL_MS: "10000" });
});
afterAll(() => h?.stop());

describe("WatchOrder", () => {
  it("one message per status change, even when one poll finds several", async () => {
    const p = await h.product(1500n, 5);
    const s = await h.shopper([[p, 1]]);
    const { order } = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
    const seen: { status: OrderStatus; change?: OrderStatus }[] = [];
    const watching = (async () => {
      for await (const m of h.orders.watchOrder({ orderId: order!.id }, auth(s.token))) seen.push({ status: m.order!.status, change: m.change?.status });
    })();
    await eventually(async () => (seen.length > 0 ? true : undefined), 10_000, "first message");
    for (const status of [OrderStatus.PROCESSING, OrderStatus.SHIPPED, OrderStatus.DELIVERED]) {
      await h.orders.updateOrderStatus({ orderId: order!.id, status, reason: "by hand" }, auth(h.admin));
    }
    await watching; // ends at DELIVERED
    expect(seen[0]).toEqual({ status: OrderStatus.CONFIRMED, change: undefined });
    expect(seen.flatMap((m) => (m.change ? [m.change] : []))).toEqual([OrderStatus.PROCESSING, OrderStatus.SHIPPED, OrderStatus.DELIVERED]);
    expect(seen.at(-1)).toEqual({ status: OrderStatus.DELIVERED, change: OrderStatus.DELIVERED });
  });

  it("resumes after a reconnect from the last version received: each missed change once, none repeated", async () => {
    const p = await h.product(1500n, 5);
    const s = await h.shopper([[p, 1]]);
    const { order } = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
    const orderId = order!.id;
    /** The first `n` messages of a stream resumed after `version` (the client ends it then), or all of them if it ends first. */
    const take = async (n: number, resumeAfterVersion = 0n) => {
      const got: { status: OrderStatus; change?: OrderStatus; version: bigint }[] = [];
      const controller = new AbortController();
      try {
        for await (const m of h.orders.watchOrder({ orderId, resumeAfterVersion }, { ...auth(s.token), signal: controller.signal })) {
          got.push({ status: m.order!.status, change: m.change?.status, version: m.version });
          if (got.length === n) controller.abort();
        }
      } catch (error) {
        if (!controller.signal.aborted) throw error;
      }
      return got;
    };
    const [first] = await take(1);
    expect(first).toMatchObject({ status: OrderStatus.CONFIRMED, change: undefined });
    expect(first!.version).toBeGreaterThan(0n);

    // Disconnected meanwhile: two changes.
    for (const status of [OrderStatus.PROCESSING, OrderStatus.SHIPPED]) {
      await h.orders.updateOrderStatus({ orderId, status, reason: "by hand" }, auth(h.admin));
    }
    const missed = await take(2, first!.version);
    expect(missed.map((m) => m.change)).toEqual([OrderStatus.PROCESSING, OrderStatus.SHIPPED]);
    expect(missed[0]!.version).toBeGreaterThan(first!.version);
    expect(missed[1]!.version).toBeGreaterThan(missed[0]!.version);
    // Resumed after the first of them: only the second.
    expect((await take(1, missed[0]!.version)).map((m) => [m.change, m.version])).toEqual([[OrderStatus.SHIPPED, missed[1]!.version]]);

    await h.orders.updateOrderStatus({ orderId, status: OrderStatus.DELIVERED, reason: "by hand" }, auth(h.admin));
    // The order is final: a resumed stream gives the last change and ends by itself.
    const last = await take(10, missed[1]!.version);
    expect(last.map((m) => [m.status, m.change])).toEqual([[OrderStatus.DELIVERED, OrderStatus.DELIVERED]]);
    expect(last[0]!.version).toBeGreaterThan(missed[1]!.version);
    // Up to date with a final order: nothing to send, the stream ends.
    expect(await take(10, last[0]!.version)).toEqual([]);
    // A version the order never reached (a forged or foreign one): the current state, as without one.
    expect((await take(10, last[0]!.version + 100n)).map((m) => [m.status, m.change, m.version])).toEqual([[OrderStatus.DELIVERED, undefined, last[0]!.version]]);
    // Without a version: the current state, as before.
    expect((await take(10)).map((m) => [m.status, m.change])).toEqual([[OrderStatus.DELIVERED, undefined]]);
  });
});
