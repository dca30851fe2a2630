/**
 * Real process kills during a checkout (issue 11): the Order service, then the
 * Payment service, each runs as its own OS process (`node services/<name>/main.ts`,
 * kit/testing/process.ts) and is ended by SIGKILL mid-operation (no graceful
 * stop, nothing flushed), then started again on the same port and database.
 * Where the kill lands is deterministic: ORDER_TEST_HALT_AFTER_STEP freezes
 * PlaceOrder after a step, PAYMENT_TEST_HALT_AFTER_PROVIDER freezes
 * AuthorizePayment after the provider authorized. The outcome is read through
 * the public contract: ListMyOrders / GetOrder, Payment ListPaymentsForOrder,
 * Discount GetCoupon (times_used), the product's stock and reservations.
 *
 * The rest of the mesh (Product, Cart, Discount, Shipping, and Payment or
 * Order when not under test) runs in this process (startOrderHarness); a stub
 * of Auth's GetJwks / IssueServiceToken lets the children trust the same test
 * tokens.
 */
import { Code } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from "vitest";
import { OrderPaymentStatus, OrderStatus } from "../../gen/ecommerce/order/v1/order_pb.js";
import { PaymentService, PaymentStatus, TransactionType } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { type ServiceProcess, serveTestAuth, startServiceProcess, stopServiceProcesses } from "../../kit/testing/process.ts";
import { auth, failure, type OrderHarness, startOrderHarness } from "./testing.ts";

let h: OrderHarness;
let testAuth: { stop(): Promise<void> } | undefined;
let order: ServiceProcess;
let payment: ServiceProcess;
let orderDb = "";
let payments: ReturnType<typeof createClient<typeof PaymentService>>;

/** The in-process service `name` is stopped and the same service started as a child process on its port and database. */
async function asProcess(name: "order" | "payment", env: Record<string, string> = {}): Promise<ServiceProcess> {
  const inProcess = h.mesh.services[name]!;
  const databaseUrl = inProcess.ctx.config.databaseUrl;
  await inProcess.stop();
  return startServiceProcess(name, inProcess.port, { ...h.mesh.env, DATABASE_URL: databaseUrl, LOG_LEVEL: "warn", ...env });
}

beforeAll(async () => {
  // A lease of 2 s: long enough that a live step on a loaded machine is not taken over by the job, short
  // enough that a killed driver's checkout is taken over soon.
  h = await startOrderHarness({ ORDER_CHECKOUT_LEASE_MS: "2000", ORDER_RECOVERY_EVERY_MS: "200", PAYMENT_SANDBOX_ASYNC_MS: "600000" });
  testAuth = await serveTestAuth(h.issuer, Number(new URL(h.mesh.url("auth")).port));
  orderDb = h.mesh.services.order!.ctx.config.databaseUrl;
  order = await asProcess("order");
  payment = await asProcess("payment");
  payments = createClient(PaymentService, createGrpcTransport({ baseUrl: h.mesh.url("payment") }));
}, 120_000);

afterAll(async () => {
  // Every child is killed even when a test failed, before the mesh drops the databases.
  await stopServiceProcesses();
  await testAuth?.stop();
  await h?.stop();
}, 60_000);

// A failing test shows where its time went and what the children printed (warnings and errors; LOG_LEVEL=warn).
let marks: string[] = [];
let began = 0;
const mark = (what: string) => marks.push(`${Date.now() - began} ms: ${what}`);
beforeEach(() => {
  marks = [];
  began = Date.now();
  onTestFailed(() => {
    console.error(`--- steps:\n${marks.join("\n")}`);
    for (const child of [order, payment]) if (child) console.error(`--- ${child.name} (pid ${child.pid}) output:\n${child.output.slice(-40).join("\n")}`);
  });
});

/** Starting child processes takes seconds on a loaded machine. */
const slow = { timeout: 180_000 };

/** Kills `child` (SIGKILL) and starts it again with `env`. */
async function restart(child: ServiceProcess, env: Record<string, string>) {
  await child.kill("SIGKILL");
  mark(`${child.name} killed`);
  child.output.length = 0;
  await child.start(env);
  mark(`${child.name} SERVING again (pid ${child.pid})`);
}

/** One query on order_db (for what the contract does not show: an order never announced, its step log). */
async function orderDbQuery<T extends object>(query: string, params: unknown[]): Promise<T[]> {
  const client = new pg.Client({ connectionString: orderDb });
  await client.connect();
  try {
    return (await client.query<T>(query, params)).rows;
  } finally {
    await client.end();
  }
}

/** The ids of the customer's orders, announced or not (an undone checkout is never shown to the customer). */
async function orderIdsOf(userId: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: orderDb });
  await client.connect();
  try {
    return (await client.query<{ id: string }>("select id from orders where user_id = $1", [userId])).rows.map((r) => r.id);
  } finally {
    await client.end();
  }
}

/** A customer's call with a deadline: a call that hangs fails the test with DEADLINE_EXCEEDED instead of its timeout. */
const call = (token: string) => ({ ...auth(token), timeoutMs: 30_000 });

/** PlaceOrder as the contract says a client retries it: UNAVAILABLE and ABORTED again with the same key. */
function placeRetrying(req: ReturnType<OrderHarness["request"]>, token: string) {
  return eventually(
    async () =>
      h.orders.placeOrder(req, call(token)).catch(async (error: unknown) => {
        const f = await failure(Promise.reject(error));
        if (f.code === Code.Unavailable || f.code === Code.Aborted) return undefined;
        throw Object.assign(new Error(`PlaceOrder failed: ${f.code} ${f.reason}`), { final: f });
      }),
    60_000,
    "PlaceOrder answered",
  );
}

async function timesUsed(code: string): Promise<number> {
  const { coupon } = await h.discounts.getCoupon({ lookup: { case: "code", value: code } }, auth(h.admin));
  return coupon!.timesUsed;
}

async function paymentsOf(orderId: string, token: string) {
  return (await payments.listPaymentsForOrder({ orderId }, call(token))).payments;
}

describe("Order killed (SIGKILL) in the middle of a checkout, then started again", () => {
  it("killed after the stock was reserved and the coupon redeemed, before the payment: the recovery job undoes it (stock, coupon, no payment); a retry with the key gets CHECKOUT_EXPIRED, no second order", slow, async () => {
    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "redeem", ORDER_RECOVERY_EVERY_MS: "3600000" });
    const p = await h.product(1000n, 5);
    const code = await h.coupon(1000);
    const s = await h.shopper([[p, 2]]);
    await h.carts.applyCoupon({ code }, auth(s.token));
    const req = h.request(s.cartId);
    const crash = await failure(h.orders.placeOrder(req, call(s.token)));
    mark("PlaceOrder halted after redeem");
    expect(crash.code).toBe(Code.Unavailable);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 2 });
    expect(await timesUsed(code)).toBe(1);

    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "100" });
    await eventually(async () => ((await h.stock(p.id)).reserved === 0 && (await timesUsed(code)) === 0 ? true : undefined), 30_000, "checkout undone");
    mark("undone");
    const ids = await orderIdsOf(s.userId);
    expect(ids).toHaveLength(1);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 0 });
    expect(await paymentsOf(ids[0]!, s.token)).toEqual([]);
    expect((await h.orders.listMyOrders({}, call(s.token))).orders).toEqual([]);

    const retry = await failure(h.orders.placeOrder(req, call(s.token)));
    expect([retry.code, retry.reason]).toEqual([Code.FailedPrecondition, "CHECKOUT_EXPIRED"]);
    expect(await orderIdsOf(s.userId)).toEqual(ids);
  });

  it("killed after the payment was authorized, before the order was confirmed: the recovery job finishes it (one order CONFIRMED, one authorization, stock committed, coupon used once); a retry with the key returns the same order", slow, async () => {
    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "authorize", ORDER_RECOVERY_EVERY_MS: "3600000" });
    const p = await h.product(1000n, 5);
    const code = await h.coupon(1000);
    const s = await h.shopper([[p, 1]]);
    await h.carts.applyCoupon({ code }, auth(s.token));
    const req = h.request(s.cartId);
    expect((await failure(h.orders.placeOrder(req, call(s.token)))).code).toBe(Code.Unavailable);
    mark("PlaceOrder halted after authorize");
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 1 });

    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "100" });
    const confirmed = await eventually(async () => {
      const { orders } = await h.orders.listMyOrders({}, call(s.token));
      return orders[0]?.status === OrderStatus.CONFIRMED ? orders : undefined;
    }, 30_000, "checkout finished by the recovery job");
    mark("finished");
    expect(confirmed).toHaveLength(1);
    const orderId = confirmed[0]!.id;
    expect(await orderIdsOf(s.userId)).toEqual([orderId]);
    expect((await paymentsOf(orderId, s.token)).map((x) => x.status)).toEqual([PaymentStatus.AUTHORIZED]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
    expect(await timesUsed(code)).toBe(1);

    const { order: again } = await h.orders.placeOrder(req, call(s.token));
    expect([again!.id, again!.status]).toEqual([orderId, OrderStatus.CONFIRMED]);
    expect((await paymentsOf(orderId, s.token)).map((x) => x.status)).toEqual([PaymentStatus.AUTHORIZED]);
  });

  it("killed while its AuthorizePayment is in flight (no halt hook: a slow provider), restarted: the customer's retry with the same key gives one order CONFIRMED, one authorization, stock committed, coupon used once", slow, async () => {
    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "1800000" });
    await restart(payment, { PAYMENT_SANDBOX_SLOW_MS: "3000" });
    const p = await h.product(1000n, 5);
    const code = await h.coupon(1000);
    const s = await h.shopper([[p, 1]]);
    await h.carts.applyCoupon({ code }, auth(s.token));
    const req = h.request(s.cartId, { paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_slow" } } });
    const placing = failure(h.orders.placeOrder(req, call(s.token)));
    const orderId = await eventually(async () => (await orderIdsOf(s.userId))[0], 30_000, "order row written");
    await eventually(async () => ((await paymentsOf(orderId, s.token)).length === 1 ? true : undefined), 30_000, "AuthorizePayment received");
    mark("AuthorizePayment in flight");
    await restart(order, {});
    const lost = await placing;
    mark(`the first PlaceOrder failed: ${lost.code} ${lost.reason}`);
    // The connection drops with the process: the client sees it as UNAVAILABLE or CANCELED (the HTTP/2 stream reset).
    expect([Code.Unavailable, Code.Canceled]).toContain(lost.code);

    const { order: placed } = await placeRetrying(req, s.token);
    mark("the retry answered");
    expect([placed!.id, placed!.status]).toEqual([orderId, OrderStatus.CONFIRMED]);
    expect(await orderIdsOf(s.userId)).toEqual([orderId]);
    expect((await paymentsOf(orderId, s.token)).map((x) => x.status)).toEqual([PaymentStatus.AUTHORIZED]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
    expect(await timesUsed(code)).toBe(1);
  });
});

describe("Payment killed (SIGKILL) after the provider authorized, before Order recorded it, then started again", () => {
  for (const where of ["after_record", "before_record"] as const) {
    it(`killed ${where === "after_record" ? "after recording the authorization, before answering" : "after the provider answered, before recording it"}: the customer's retry with the same key gives one order CONFIRMED, one authorization, stock committed, coupon used once`, slow, async () => {
      await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "1800000" });
      await restart(payment, { PAYMENT_TEST_HALT_AFTER_PROVIDER: where });
      const p = await h.product(1000n, 5);
      const code = await h.coupon(1000);
      const s = await h.shopper([[p, 1]]);
      await h.carts.applyCoupon({ code }, auth(s.token));
      const req = h.request(s.cartId);
      const placing = failure(h.orders.placeOrder(req, call(s.token)));
      await payment.waitForOutput(new RegExp(`PAYMENT_TEST_HALT_AFTER_PROVIDER=${where}`), 60_000);
      mark("AuthorizePayment halted");
      await restart(payment, { PAYMENT_TEST_HALT_AFTER_PROVIDER: "" });
      const lost = await placing;
      mark(`the first PlaceOrder failed: ${lost.code} ${lost.reason}`);
      expect([Code.Unavailable, Code.DeadlineExceeded]).toContain(lost.code);

      const { order: placed } = await placeRetrying(req, s.token);
      mark("the retry answered");
      expect(placed!.status).toBe(OrderStatus.CONFIRMED);
      expect(await orderIdsOf(s.userId)).toEqual([placed!.id]);
      expect((await h.orders.listMyOrders({}, call(s.token))).orders.map((o) => o.id)).toEqual([placed!.id]);
      expect((await paymentsOf(placed!.id, s.token)).map((x) => x.status)).toEqual([PaymentStatus.AUTHORIZED]);
      expect(await h.stock(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
      expect(await timesUsed(code)).toBe(1);
      const { order: again } = await h.orders.placeOrder(req, call(s.token));
      expect(again!.id).toBe(placed!.id);
    });
  }

  it("Payment killed after recording the authorization, the customer never retries: the recovery job discards the checkout and the payment ends CANCELLED (voided), stock and coupon given back", slow, async () => {
    // The checkout timeout is long while the authorization is lost, so the job cannot discard the checkout early.
    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "1800000" });
    await restart(payment, { PAYMENT_TEST_HALT_AFTER_PROVIDER: "after_record" });
    const p = await h.product(1000n, 5);
    const code = await h.coupon(1000);
    const s = await h.shopper([[p, 1]]);
    await h.carts.applyCoupon({ code }, auth(s.token));
    const req = h.request(s.cartId);
    const placing = failure(h.orders.placeOrder(req, call(s.token)));
    await payment.waitForOutput(/PAYMENT_TEST_HALT_AFTER_PROVIDER=after_record/, 60_000);
    mark("AuthorizePayment halted after recording");
    await restart(payment, { PAYMENT_TEST_HALT_AFTER_PROVIDER: "" });
    const lost = await placing;
    mark(`the first PlaceOrder failed: ${lost.code} ${lost.reason}`);
    expect([Code.Unavailable, Code.DeadlineExceeded]).toContain(lost.code);
    const [orderId] = await orderIdsOf(s.userId);
    // The gap's starting point: Payment holds an authorization whose id Order never recorded.
    const [held] = await paymentsOf(orderId!, s.token);
    expect(held?.status).toBe(PaymentStatus.AUTHORIZED);
    expect(await orderDbQuery<{ payment_id: string | null; detail: Record<string, unknown> }>(
      "select o.payment_id, s.detail from orders o join order_checkout_steps s on s.order_id = o.id and s.step = 'authorize' where o.id = $1", [orderId],
    )).toEqual([{ payment_id: null, detail: {} }]);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 1 });
    expect(await timesUsed(code)).toBe(1);

    // Nobody retries: once the checkout is older than the timeout, the job discards it.
    await restart(order, { ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "100" });
    await eventually(async () => {
      const [x] = await paymentsOf(orderId!, s.token);
      return x?.status === PaymentStatus.CANCELLED && (await h.stock(p.id)).reserved === 0 && (await timesUsed(code)) === 0 ? true : undefined;
    }, 30_000, "checkout discarded and the payment voided");
    mark("discarded");
    const [voided] = await paymentsOf(orderId!, s.token);
    expect(voided!.id).toBe(held!.id);
    expect(voided!.transactions.filter((t) => t.type === TransactionType.VOID)).toHaveLength(1);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 0 });
    const [row] = await eventually(async () => {
      const rows = await orderDbQuery<{ status: string; checkout: string; payment_status: string; payment_id: string }>(
        "select status, checkout, payment_status, payment_id from orders where id = $1", [orderId],
      );
      return rows[0]?.checkout === "failed" ? rows : undefined;
    }, 30_000, "order ended");
    expect(row).toEqual({ status: "cancelled", checkout: "failed", payment_status: "voided", payment_id: held!.id });
    // The saga's step log: the authorization found by the order id and voided, as the other compensations are.
    const steps = await orderDbQuery<{ step: string; state: string; detail: Record<string, unknown> }>(
      "select step, state, detail from order_checkout_steps where order_id = $1 and step in ('authorize', 'redeem', 'reserve', 'compensate') order by step", [orderId],
    );
    expect(steps.map((x) => [x.step, x.state])).toEqual([["authorize", "compensated"], ["compensate", "done"], ["redeem", "compensated"], ["reserve", "compensated"]]);
    expect(steps[0]!.detail).toMatchObject({ paymentId: held!.id, foundByOrderId: true, voided: held!.id });
    // The card had a hold: like any checkout cancelled after its authorization, the order is shown CANCELLED / VOIDED.
    const shown = (await h.orders.listMyOrders({}, call(s.token))).orders;
    expect(shown.map((o) => [o.id, o.status, o.paymentStatus, o.paymentId, o.cancellationReason])).toEqual([
      [orderId, OrderStatus.CANCELLED, OrderPaymentStatus.VOIDED, held!.id, "checkout_timeout"],
    ]);

    // A late retry with the key changes nothing: CHECKOUT_EXPIRED, no second payment, one void.
    const retry = await failure(h.orders.placeOrder(req, call(s.token)));
    expect([retry.code, retry.reason]).toEqual([Code.FailedPrecondition, "CHECKOUT_EXPIRED"]);
    const after = await paymentsOf(orderId!, s.token);
    expect(after.map((x) => [x.id, x.status])).toEqual([[held!.id, PaymentStatus.CANCELLED]]);
    expect(after[0]!.transactions.filter((t) => t.type === TransactionType.VOID)).toHaveLength(1);
  });
});

describe("Order killed (SIGKILL) while its AuthorizePayment is in flight, the customer never retries", () => {
  it("the recovery job discards the checkout and voids the payment Payment recorded meanwhile (found by the order id): CANCELLED, stock and coupon given back", slow, async () => {
    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "1800000" });
    // The call dies with Order, leaving the payment PENDING; Payment's reconciliation (made quick) then records
    // the provider's authorization, as it would after its default minute.
    await restart(payment, { PAYMENT_TEST_HALT_AFTER_PROVIDER: "", PAYMENT_SANDBOX_SLOW_MS: "3000", PAYMENT_RECONCILE_EVERY_MS: "200", PAYMENT_RECONCILE_AFTER_MS: "4000" });
    const p = await h.product(1000n, 5);
    const code = await h.coupon(1000);
    const s = await h.shopper([[p, 1]]);
    await h.carts.applyCoupon({ code }, auth(s.token));
    const req = h.request(s.cartId, { paymentSource: { case: "paymentToken", value: { provider: "sandbox", token: "tok_sandbox_slow" } } });
    const placing = failure(h.orders.placeOrder(req, call(s.token)));
    const orderId = await eventually(async () => (await orderIdsOf(s.userId))[0], 30_000, "order row written");
    await eventually(async () => ((await paymentsOf(orderId, s.token)).length === 1 ? true : undefined), 30_000, "AuthorizePayment received");
    await order.kill("SIGKILL");
    mark("order killed with AuthorizePayment in flight");
    expect([Code.Unavailable, Code.Canceled]).toContain((await placing).code);
    // Payment finishes the authorization nobody will hear of.
    const held = await eventually(async () => {
      const [x] = await paymentsOf(orderId, s.token);
      return x?.status === PaymentStatus.AUTHORIZED ? x : undefined;
    }, 30_000, "payment authorized");
    mark("payment authorized");

    order.output.length = 0;
    await order.start({ ORDER_CHECKOUT_TIMEOUT_MS: "100" });
    mark("order SERVING again with a short checkout timeout");
    await eventually(async () => {
      const [x] = await paymentsOf(orderId, s.token);
      return x?.status === PaymentStatus.CANCELLED && (await h.stock(p.id)).reserved === 0 && (await timesUsed(code)) === 0 ? true : undefined;
    }, 30_000, "checkout discarded and the payment voided");
    mark("discarded");
    const after = await paymentsOf(orderId, s.token);
    expect(after.map((x) => x.id)).toEqual([held.id]);
    expect(after[0]!.transactions.filter((t) => t.type === TransactionType.VOID)).toHaveLength(1);
    expect(await h.stock(p.id)).toMatchObject({ onHand: 5, reserved: 0 });
    const [row] = await eventually(async () => {
      const rows = await orderDbQuery<{ status: string; payment_status: string; payment_id: string }>(
        "select status, payment_status, payment_id from orders where id = $1 and checkout = 'failed'", [orderId],
      );
      return rows.length ? rows : undefined;
    }, 30_000, "order ended");
    expect(row).toEqual({ status: "cancelled", payment_status: "voided", payment_id: held.id });
    const retry = await failure(h.orders.placeOrder(req, call(s.token)));
    expect([retry.code, retry.reason]).toEqual([Code.FailedPrecondition, "CHECKOUT_EXPIRED"]);
    expect((await paymentsOf(orderId, s.token)).map((x) => x.status)).toEqual([PaymentStatus.CANCELLED]);
  });
});

describe("the orphaned authorization's compensation with Payment down", () => {
  it("Payment unreachable when the job discards the checkout: the compensation stays interrupted (nothing given back yet) and a later pass, with Payment back, voids the payment once and gives stock and coupon back", slow, async () => {
    await restart(order, { ORDER_TEST_HALT_AFTER_STEP: "", ORDER_RECOVERY_EVERY_MS: "200", ORDER_CHECKOUT_TIMEOUT_MS: "1800000" });
    await restart(payment, { PAYMENT_TEST_HALT_AFTER_PROVIDER: "after_record" });
    const p = await h.product(1000n, 5);
    const code = await h.coupon(1000);
    const s = await h.shopper([[p, 1]]);
    await h.carts.applyCoupon({ code }, auth(s.token));
    const placing = failure(h.orders.placeOrder(h.request(s.cartId), call(s.token)));
    await payment.waitForOutput(/PAYMENT_TEST_HALT_AFTER_PROVIDER=after_record/, 60_000);
    await payment.kill("SIGKILL");
    mark("payment killed after recording, left down");
    expect([Code.Unavailable, Code.DeadlineExceeded]).toContain((await placing).code);
    const [orderId] = await orderIdsOf(s.userId);

    await restart(order, { ORDER_CHECKOUT_TIMEOUT_MS: "100" });
    const steps = () =>
      orderDbQuery<{ step: string; state: string }>("select step, state from order_checkout_steps where order_id = $1 and step in ('authorize', 'compensate') order by step", [orderId]);
    await eventually(async () => ((await steps()).some((x) => x.step === "compensate") ? true : undefined), 30_000, "compensation started");
    mark("compensation started with Payment down");
    // The authorization is undone first and cannot be: nothing further is given back yet.
    expect(await steps()).toEqual([{ step: "authorize", state: "started" }, { step: "compensate", state: "started" }]);
    expect(await h.stock(p.id)).toMatchObject({ reserved: 1 });
    expect(await timesUsed(code)).toBe(1);

    payment.output.length = 0;
    await payment.start({ PAYMENT_TEST_HALT_AFTER_PROVIDER: "" });
    mark("payment SERVING again");
    await eventually(async () => {
      const [x] = await paymentsOf(orderId!, s.token);
      return x?.status === PaymentStatus.CANCELLED && (await h.stock(p.id)).reserved === 0 && (await timesUsed(code)) === 0 ? true : undefined;
    }, 30_000, "checkout discarded and the payment voided");
    const [voided] = await paymentsOf(orderId!, s.token);
    expect(voided!.transactions.filter((t) => t.type === TransactionType.VOID)).toHaveLength(1);
    await eventually(async () => ((await steps()).every((x) => x.state !== "started") ? true : undefined), 30_000, "compensation finished");
    expect(await steps()).toEqual([{ step: "authorize", state: "compensated" }, { step: "compensate", state: "done" }]);
  });
});
