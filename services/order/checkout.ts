/**
 * PlaceOrder: the checkout saga, orchestrated here and persisted in order_db.
 *
 * 1. Claim: one transaction inserts the order (status PENDING, checkout
 *    "running", not announced) under the unique (user_id, idempotency_key)
 *    and the partial unique index "one running checkout per cart". A
 *    duplicate with the same key waits for the first call's outcome and
 *    returns it (the same order, or the same error); the same key with another
 *    request is IDEMPOTENCY_KEY_REUSED; another key on a cart whose checkout
 *    runs is ABORTED CHECKOUT_IN_PROGRESS.
 * 2. Steps, each recorded in order_checkout_steps: "started" before the peer
 *    call, "done" (with its outcome) after it, in the same transaction as
 *    the order's change and a renewal of the checkout's lease:
 *    priced (pricing.ts; the order row gets its items, snapshots and totals;
 *    PRICE_CHANGED is checked here, before anything is held) -> reserve
 *    (ReserveStock) -> redeem (RedeemDiscounts) -> authorize
 *    (AuthorizePayment, last) -> commit (CommitReservation) -> capture (only
 *    with ORDER_CAPTURE=checkout) -> convert (MarkCartConverted) -> confirm
 *    (CONFIRMED, announced: order.created, order.confirmed and
 *    order.status_changed through the outbox).
 *    Every peer call is idempotent per order: the peers' keys are the order
 *    id (ReserveStock, RedeemDiscounts, CommitReservation, MarkCartConverted)
 *    or derived from it ("order-<id>-authorize"), so a resumed step never
 *    holds stock twice or charges twice.
 * 3. A contract failure (OUT_OF_STOCK, COUPON_INVALID, PAYMENT_DECLINED ...)
 *    compensates in reverse: void the authorization, release the redemption,
 *    release the reservation; the intent ("compensate" step with the terminal
 *    state) is recorded first, so an interrupted compensation is finished by
 *    whoever takes the checkout over. The order ends PAYMENT_FAILED (declined),
 *    CANCELLED (failed after the authorization) or CANCELLED and hidden (failed
 *    before: the customer never sees it); the error is stored and replayed for
 *    the same key.
 * 4. A peer that does not answer leaves the checkout running; the call fails
 *    UNAVAILABLE and a retry with the same key resumes it (recovery.ts does
 *    the same for checkouts nobody resumes).
 */
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { PostalAddressSchema } from "../../gen/ecommerce/common/v1/address_pb.js";
import { CartSnapshotSchema, DiscountService } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { CancellationPaymentAction, OrderCancelledSchema, OrderConfirmedSchema, OrderCreatedSchema } from "../../gen/ecommerce/order/v1/events_pb.js";
import {
  type Order,
  OrderActorType,
  OrderDiscountSchema as OrderDiscountJson,
  OrderShippingMethodSchema as OrderShippingMethodJson,
  OrderStatus,
  type PlaceOrderRequest,
  PlaceOrderRequestSchema,
  type PreviewOrderRequest,
} from "../../gen/ecommerce/order/v1/order_pb.js";
import { type Payment, PaymentService, PaymentStatus } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { InventoryService } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { PeerClients } from "../../kit/clients.ts";
import { remainingMs } from "../../kit/context.ts";
import type { EntityManager } from "../../kit/db.ts";
import { cardBrands, paymentMethodTypes } from "../../kit/enums.ts";
import { domainError, errorFields, errorReason, failedPrecondition } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { requestHash } from "../../kit/idempotency.ts";
import type { Logger } from "../../kit/logger.ts";
import { money } from "../../kit/money.ts";
import { sqlOf, uniqueViolation } from "../../kit/sql.ts";
import type { OrderConfig } from "./config.ts";
import { OrderItemEntity, OrderNoteEntity } from "./entities.ts";
import { addressJson, loadOrder, orderRow, type OrderRow, ordersToMessages, paymentMethodSummaryJson } from "./mapping.ts";
import { peerFailure, previewOf, priceCheckout, type Pricing, resolveAddress } from "./pricing.ts";
import { recordChange, systemActor, transition } from "./state.ts";

export interface CheckoutDeps {
  peers: PeerClients;
  config: OrderConfig;
  log: Logger;
}

/** What only the live call knows: how to pay (a one-time token is never stored) and what the customer was shown. */
export interface CallInput {
  req: PlaceOrderRequest;
}

interface Step {
  state: "started" | "done" | "failed" | "compensated";
  detail: Record<string, unknown>;
}

interface Terminal {
  status: "cancelled" | "payment_failed";
  paymentStatus: string;
  reason: string;
  failure: { code: number; reason: string; message: string; metadata: Record<string, string> };
}

/** Thrown by the test-only halt hook: the process "dies" here (nothing is compensated or recorded). */
class Halted extends Error {}

const system = systemActor(OrderActorType.SYSTEM);
const customer = (userId: string) => ({ type: OrderActorType.CUSTOMER, id: userId });

export const authorizeKey = (orderId: string) => `order-${orderId}-authorize`;

// ------------------------------------------------------------------ entry

export async function placeOrder(em: EntityManager, deps: CheckoutDeps, userId: string, req: PlaceOrderRequest): Promise<{ order: Order }> {
  const hash = requestHash(PlaceOrderRequestSchema, req);
  for (;;) {
    const claimed = await claim(em, deps, userId, req, hash);
    if (claimed) return { order: await drive(em, deps, claimed, { req }) };
    const row = await sqlOf(em).one<OrderRow>("select * from orders where user_id = $1 and idempotency_key = $2", [userId, req.idempotencyKey]);
    if (!row) continue;
    if (row.request_hash !== hash) {
      throw domainError(Code.FailedPrecondition, "this idempotency key was used with a different request; use a new key for a new checkout", {
        reason: "IDEMPOTENCY_KEY_REUSED",
        field: "idempotency_key",
      });
    }
    if (row.checkout === "done" || (row.checkout === "running" && row.announced && row.payment_status === "pending")) {
      return { order: await loadOrder(em, row.id, "customer", userId) };
    }
    if (row.checkout === "failed") throw replay(row.failure!);
    // Running: take it over when its lease lapsed (its driver died), else wait for it.
    const taken = await sqlOf(em).run(
      "update orders set lease_until = now() + ($2 * interval '1 millisecond') where id = $1 and checkout = 'running' and lease_until < now()",
      [row.id, deps.config.leaseMs],
    );
    if (taken === 1) return { order: await drive(em, deps, row.id, { req }) };
    if ((remainingMs() ?? 30_000) < 1_500) {
      throw domainError(Code.Aborted, "this checkout is still running; retry in a moment with the same idempotency key", {
        reason: "CHECKOUT_IN_PROGRESS",
        retryAfterMs: 1000,
      });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Inserts the order of a new checkout; its id, or undefined when the key was used before. */
async function claim(em: EntityManager, deps: CheckoutDeps, userId: string, req: PlaceOrderRequest, hash: string): Promise<string | undefined> {
  const id = uuidv7();
  const source =
    req.paymentSource.case === "paymentMethodId"
      ? { paymentMethodId: req.paymentSource.value }
      : req.paymentSource.case === "paymentToken"
        ? { provider: req.paymentSource.value.provider }
        : null;
  try {
    await em.transactional(async (tx) => {
      const db = sqlOf(tx);
      const seq = (await db.one<{ n: string }>("select nextval('order_number_seq')::text as n"))!.n;
      const number = `ORD-${new Date().getUTCFullYear()}-${seq.padStart(6, "0")}`;
      await db.run(
        `insert into orders (id, order_number, user_id, cart_id, status, payment_status, checkout, idempotency_key, request_hash, payment_source, lease_until)
         values ($1, $2, $3, $4, 'pending', 'pending', 'running', $5, $6, $7::jsonb, now() + ($8 * interval '1 millisecond'))`,
        [id, number, userId, req.cartId, req.idempotencyKey, hash, JSON.stringify(source), deps.config.leaseMs],
      );
      const row = (await orderRow(tx, id))!;
      await recordChange(tx, row, null, customer(userId), "checkout started");
    });
    return id;
  } catch (error) {
    const constraint = uniqueViolation(error);
    if (constraint === undefined) throw error;
    const same = await sqlOf(em).one("select 1 from orders where user_id = $1 and idempotency_key = $2", [userId, req.idempotencyKey]);
    if (same) return undefined;
    if (constraint === "orders_cart_checkout_running") {
      throw domainError(Code.Aborted, "a checkout of this cart is already running; retry in a moment", { reason: "CHECKOUT_IN_PROGRESS", retryAfterMs: 1000 });
    }
    throw error;
  }
}

const replay = (f: Terminal["failure"]) => domainError(f.code as Code, f.message, { reason: f.reason, metadata: f.metadata });

// ------------------------------------------------------------------ steps

async function stepsOf(em: EntityManager, orderId: string): Promise<Map<string, Step>> {
  const rows = await sqlOf(em).all<{ step: string; state: Step["state"]; detail: Record<string, unknown> }>("select step, state, detail from order_checkout_steps where order_id = $1", [
    orderId,
  ]);
  return new Map(rows.map((r) => [r.step, { state: r.state, detail: r.detail }]));
}

/** Records a step's state in its own transaction with a lease renewal, plus `also` (the order's change). */
async function record(
  em: EntityManager,
  deps: CheckoutDeps,
  orderId: string,
  step: string,
  state: Step["state"],
  detail: Record<string, unknown>,
  also?: (tx: EntityManager) => Promise<void>,
): Promise<void> {
  await em.transactional(async (tx) => {
    const db = sqlOf(tx);
    await db.run(
      `insert into order_checkout_steps (order_id, step, state, detail) values ($1, $2, $3, $4::jsonb)
       on conflict (order_id, step) do update set state = excluded.state, detail = order_checkout_steps.detail || excluded.detail, updated_at = now()`,
      [orderId, step, state, JSON.stringify(detail)],
    );
    await db.run("update orders set lease_until = now() + ($2 * interval '1 millisecond'), updated_at = now() where id = $1", [orderId, deps.config.leaseMs]);
    if (also) await also(tx);
  });
  const halt = deps.config.haltAfterStep;
  if (halt && (halt === `${step}:${state}` || (state === "done" && halt === step))) throw new Halted(`halted after ${step} ${state} (ORDER_TEST_HALT_AFTER_STEP)`);
}

/** Runs a step unless done: "started", the call, then "done" with what `call` returns. */
async function runStep<T extends Record<string, unknown>>(
  em: EntityManager,
  deps: CheckoutDeps,
  steps: Map<string, Step>,
  orderId: string,
  step: string,
  call: () => Promise<T>,
  also?: (tx: EntityManager, outcome: T) => Promise<void>,
): Promise<T> {
  const known = steps.get(step);
  if (known?.state === "done") return known.detail as T;
  await record(em, deps, orderId, step, "started", {});
  steps.set(step, { state: "started", detail: {} });
  const outcome = await call();
  await record(em, deps, orderId, step, "done", outcome, also ? (tx) => also(tx, outcome) : undefined);
  steps.set(step, { state: "done", detail: outcome });
  return outcome;
}

const metadataOf = (e: ConnectError) => e.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};

/** A contract failure ends the checkout (compensated); anything else (a peer that did not answer) leaves it to be resumed. */
const isFinal = (e: ConnectError) => [Code.FailedPrecondition, Code.NotFound, Code.InvalidArgument, Code.AlreadyExists, Code.OutOfRange, Code.PermissionDenied].includes(e.code);

// ------------------------------------------------------------------ the saga

/**
 * Drives the checkout of `orderId` from where its steps stand. `input` is the
 * live PlaceOrder call; the recovery job drives without one (it cannot price,
 * nor authorize a one-time token).
 */
export async function drive(em: EntityManager, deps: CheckoutDeps, orderId: string, input?: CallInput): Promise<Order> {
  const steps = await stepsOf(em, orderId);
  let row = (await orderRow(em, orderId))!;
  const comp = steps.get("compensate");
  if (comp) {
    const terminal = comp.detail as unknown as Terminal;
    await compensate(em, deps, orderId, terminal);
    throw replay(terminal.failure);
  }
  try {
    // priced: the order row with its items, snapshots and totals.
    if (steps.get("priced")?.state !== "done") {
      if (!input) return abandonIfExpired(em, deps, row, "the checkout was interrupted before it was priced");
      await priceStep(em, deps, steps, row, input);
      row = (await orderRow(em, orderId))!;
    }
    const priced = steps.get("priced")!.detail as { snapshot: JsonValue; discountTotal: string; coupons: number };
    const items = await sqlOf(em).all<{ product_id: string; variant_id: string | null; quantity: number }>(
      "select product_id, variant_id, quantity from order_items where order_id = $1 order by position",
      [orderId],
    );

    await runStep(em, deps, steps, orderId, "reserve", async () => {
      try {
        const { reservation } = await deps.peers.client(InventoryService).reserveStock({
          orderId,
          lines: items.map((i) => ({ productId: i.product_id, variantId: i.variant_id ?? "", quantity: i.quantity })),
          ttl: { seconds: BigInt(deps.config.reservationTtlS), nanos: 0 },
        });
        return { reservationId: reservation?.id ?? "" };
      } catch (error) {
        throw stockFailure(error, items);
      }
    });

    const discountTotal = BigInt(priced.discountTotal);
    if (discountTotal > 0n || priced.coupons > 0) {
      await runStep(em, deps, steps, orderId, "redeem", async () => {
        try {
          await deps.peers.client(DiscountService).redeemDiscounts({
            orderId,
            userId: row.user_id,
            cart: fromJson(CartSnapshotSchema, priced.snapshot),
            expectedTotalDiscount: money(discountTotal, row.currency!),
          });
          return { redeemed: true };
        } catch (error) {
          throw redeemFailure(error, row);
        }
      });
    }

    // authorize, last of what can fail for the customer.
    let payment: Payment | undefined;
    const total = BigInt(row.total_minor);
    if (total > 0n && steps.get("authorize")?.state !== "done") {
      payment = await authorize(em, deps, steps, row, input);
      if (!payment) return loadOrder(em, orderId, "customer");
      if (payment.status === PaymentStatus.FAILED) {
        throw domainError(Code.FailedPrecondition, payment.failureMessage || "the payment was declined", {
          reason: "PAYMENT_DECLINED",
          metadata: { order_id: row.id, order_number: row.order_number, decline_code: payment.failureCode || "card_declined", message: payment.failureMessage },
        });
      }
      if (payment.status === PaymentStatus.CANCELLED) {
        throw domainError(Code.FailedPrecondition, "the payment was cancelled before it completed", {
          reason: "PAYMENT_DECLINED",
          metadata: { order_id: row.id, order_number: row.order_number, decline_code: payment.failureCode || "payment_cancelled", message: "" },
        });
      }
      if (payment.status === PaymentStatus.PENDING || payment.status === PaymentStatus.PROCESSING) {
        // Asynchronous: the order is announced PENDING; the recovery job (and the payment.* events) finish it,
        // or cancel it at the checkout timeout.
        if (!input && Date.now() - new Date(row.created_at).getTime() >= deps.config.checkoutTimeoutMs) {
          throw failedPrecondition("the payment did not complete before the checkout timeout; the order was cancelled", "CHECKOUT_EXPIRED");
        }
        await announcePending(em, deps, row, payment);
        return loadOrder(em, orderId, "customer");
      }
      await record(em, deps, orderId, "authorize", "done", { paymentId: payment.id, status: PaymentStatus[payment.status] }, async (tx) => {
        await sqlOf(tx).run("update orders set payment_id = $2, payment_status = 'authorized', payment_method = $3::jsonb where id = $1", [
          orderId,
          payment!.id,
          JSON.stringify(methodSummary(payment!)),
        ]);
      });
    }

    await runStep(em, deps, steps, orderId, "commit", async () => {
      try {
        await deps.peers.client(InventoryService).commitReservation({ orderId });
        return { committed: true };
      } catch (error) {
        const e = ConnectError.from(error);
        if (isFinal(e)) throw failedPrecondition("the stock reservation lapsed before the order was paid; please try again", "OUT_OF_STOCK", { cause: errorReason(e) ?? "" });
        throw peerFailure("product", e);
      }
    });

    const paymentId = (await orderRow(em, orderId))!.payment_id;
    let paid = false;
    if (deps.config.captureOn === "checkout" && paymentId) {
      await runStep(em, deps, steps, orderId, "capture", async () => {
        try {
          await deps.peers.client(PaymentService).capturePayment({ paymentId });
          return { captured: true };
        } catch (error) {
          const e = ConnectError.from(error);
          if (isFinal(e)) {
            throw domainError(Code.FailedPrecondition, "the payment could not be captured", {
              reason: "PAYMENT_DECLINED",
              metadata: { order_id: row.id, order_number: row.order_number, decline_code: metadataOf(e).failure_code ?? errorReason(e) ?? "capture_failed", message: e.rawMessage },
            });
          }
          throw peerFailure("payment", e);
        }
      });
      paid = true;
    }

    await runStep(em, deps, steps, orderId, "convert", async () => {
      try {
        await deps.peers.client(CartService).markCartConverted({ cartId: row.cart_id, userId: row.user_id, orderId });
        return { converted: true };
      } catch (error) {
        const e = ConnectError.from(error);
        if (!isFinal(e)) throw peerFailure("cart", e);
        // The order is paid: a cart that cannot be marked (merged meanwhile) does not undo it.
        deps.log.warn({ orderId, reason: errorReason(e) }, "cart not marked converted");
        return { converted: false, reason: errorReason(e) ?? "" };
      }
    });

    await confirm(em, orderId, paid);
    return loadOrder(em, orderId, "customer");
  } catch (error) {
    if (error instanceof Halted) {
      throw domainError(Code.Unavailable, error.message, { reason: "DEPENDENCY_UNAVAILABLE", metadata: { service: "order" } });
    }
    const e = ConnectError.from(error);
    if (!isFinal(e)) {
      // Nobody drives it now: a retry with the same key (or the recovery job) may take it over at once.
      await sqlOf(em)
        .run("update orders set lease_until = now() where id = $1 and checkout = 'running'", [orderId])
        .catch(() => undefined);
      deps.log.warn({ orderId, err: e.message }, "checkout interrupted; it will be resumed");
      throw e.code === Code.Unavailable ? e : peerFailure("order", e);
    }
    const failure = { code: e.code as number, reason: errorReason(e) ?? "CHECKOUT_FAILED", message: e.rawMessage, metadata: metadataOf(e) };
    const held = steps.get("authorize")?.state === "done";
    const terminal: Terminal =
      failure.reason === "PAYMENT_DECLINED" && !held
        ? { status: "payment_failed", paymentStatus: "failed", reason: `payment declined: ${failure.metadata.decline_code ?? ""}`, failure }
        : { status: "cancelled", paymentStatus: "voided", reason: failure.reason === "CHECKOUT_EXPIRED" ? "checkout_timeout" : `checkout failed: ${failure.reason}`, failure };
    try {
      await compensate(em, deps, orderId, terminal);
    } catch (compError) {
      deps.log.warn({ orderId, err: (compError as Error).message }, "checkout compensation interrupted; the recovery job finishes it");
    }
    throw e;
  }
}

/** Whether the customer has no order announced yet (Discount's first-order rules); the same for PreviewOrder and PlaceOrder. */
export async function isFirstOrder(em: EntityManager, userId: string, exceptOrderId?: string): Promise<boolean> {
  return !(await sqlOf(em).one("select 1 from orders where user_id = $1 and announced and id <> $2 limit 1", [userId, exceptOrderId ?? "00000000-0000-0000-0000-000000000000"]));
}

/** PreviewOrder: the pricing of the priced step, with nothing written or held. */
export async function previewOrder(em: EntityManager, deps: CheckoutDeps, userId: string, req: PreviewOrderRequest) {
  const pricing = await priceCheckout(
    deps.peers,
    deps.config,
    userId,
    { cartId: req.cartId, destination: req.shippingDestination, shippingMethodId: req.shippingMethodId },
    await isFirstOrder(em, userId),
  );
  return { preview: previewOf(pricing) };
}

async function priceStep(em: EntityManager, deps: CheckoutDeps, steps: Map<string, Step>, row: OrderRow, input: CallInput): Promise<void> {
  const { req } = input;
  const firstOrder = await isFirstOrder(em, row.user_id, row.id);
  const pricing: Pricing = await priceCheckout(
    deps.peers,
    deps.config,
    row.user_id,
    { cartId: req.cartId, destination: req.shippingDestination, shippingMethodId: req.shippingMethodId },
    firstOrder,
  );
  const billing =
    req.billingDestination.case === "billingAddressId"
      ? await resolveAddress(deps.peers, row.user_id, { case: "shippingAddressId", value: req.billingDestination.value }, "billing_address_id")
      : req.billingDestination.case === "billingAddress"
        ? req.billingDestination.value
        : undefined;
  const expected = req.expectedTotal;
  if (expected && (expected.amountMinor !== pricing.total || (expected.currencyCode && expected.currencyCode !== pricing.currency))) {
    throw failedPrecondition(`the total changed from ${expected.amountMinor} to ${pricing.total} ${pricing.currency}; review the order`, "PRICE_CHANGED", {
      expected_total_minor: String(expected.amountMinor),
      total_minor: String(pricing.total),
      currency_code: pricing.currency,
    });
  }
  const snapshot = toJson(CartSnapshotSchema, create(CartSnapshotSchema, pricing.snapshot));
  const detail = { snapshot, discountTotal: String(pricing.discountTotal), coupons: pricing.couponCodes.length, cartVersion: String(pricing.cartVersion) };
  await record(em, deps, row.id, "priced", "done", detail, async (tx) => {
    await sqlOf(tx).run(
      `update orders set currency = $2, subtotal_minor = $3, discount_minor = $4, shipping_minor = $5, tax_minor = $6, total_minor = $7,
         discounts = $8::jsonb, shipping_address = $9::jsonb, billing_address = $10::jsonb, shipping_method = $11::jsonb, estimated_delivery_date = $12
       where id = $1`,
      [
        row.id,
        pricing.currency,
        pricing.subtotal,
        pricing.discountTotal,
        pricing.shipping,
        pricing.tax,
        pricing.total,
        JSON.stringify(pricing.discounts.map((d) => toJson(OrderDiscountJson, create(OrderDiscountJson, d)))),
        JSON.stringify(addressJson(pricing.address)),
        JSON.stringify(addressJson(billing)),
        JSON.stringify(toJson(OrderShippingMethodJson, create(OrderShippingMethodJson, pricing.shippingMethod))),
        pricing.estimatedDelivery ? timestampDate(pricing.estimatedDelivery) : null,
      ],
    );
    pricing.lines.forEach((l, position) =>
      tx.create(OrderItemEntity, {
        id: uuidv7(),
        orderId: row.id,
        position,
        cartItemId: l.cartItemId,
        productId: l.productId,
        variantId: l.variantId || null,
        productName: l.productName,
        variantName: l.variantName || null,
        productSku: l.sku,
        productImageUrl: l.imageUrl || null,
        unitPriceMinor: l.unitPrice,
        quantity: l.quantity,
        totalMinor: l.total,
        discountMinor: l.discount,
        taxMinor: l.tax,
      }),
    );
    if (req.customerNote) {
      tx.create(OrderNoteEntity, { id: uuidv7(), orderId: row.id, note: req.customerNote, isInternal: false, authorType: "customer", createdBy: row.user_id });
    }
    await tx.flush();
  });
  steps.set("priced", { state: "done", detail });
}

function methodSummary(p: Payment) {
  const m = p.paymentMethod;
  if (!m) return null;
  return paymentMethodSummaryJson({
    type: m.type ? paymentMethodTypes.toDb(m.type) : "",
    brand: m.cardBrand ? (cardBrands.toDbOrNull(m.cardBrand) ?? "") : "",
    last4: m.last4,
  });
}

/**
 * AuthorizePayment, or what is known of it. With the live call: the request
 * (same key, same content: Payment returns the same payment, never a second
 * authorization). Without: the payment recorded by an earlier attempt, or a
 * saved-method request sent again; undefined when nothing can be known yet.
 */
async function authorize(em: EntityManager, deps: CheckoutDeps, steps: Map<string, Step>, row: OrderRow, input?: CallInput): Promise<Payment | undefined> {
  const known = steps.get("authorize")?.detail as { paymentId?: string; paymentMethodId?: string } | undefined;
  const payments = deps.peers.client(PaymentService);
  try {
    if (!input) {
      if (known?.paymentId) return (await payments.getPaymentInternal({ paymentId: known.paymentId })).payment!;
      if (!known?.paymentMethodId) {
        await abandonIfExpired(em, deps, row, "the checkout was interrupted before the payment");
        return undefined;
      }
    }
    const source = input?.req.paymentSource ?? { case: "paymentMethodId" as const, value: known!.paymentMethodId! };
    await record(em, deps, row.id, "authorize", "started", source.case === "paymentMethodId" ? { paymentMethodId: source.value } : {});
    const { payment } = await payments.authorizePayment({
      orderId: row.id,
      orderNumber: row.order_number,
      userId: row.user_id,
      amount: money(BigInt(row.total_minor), row.currency!),
      source: source as never,
      billingAddress: row.billing_address ? fromJson(PostalAddressSchema, row.billing_address as JsonValue) : undefined,
      description: `Order ${row.order_number}`,
      metadata: { order_number: row.order_number },
      idempotencyKey: authorizeKey(row.id),
    });
    await record(em, deps, row.id, "authorize", "started", { paymentId: payment!.id });
    steps.set("authorize", { state: "started", detail: { ...(known ?? {}), paymentId: payment!.id } });
    return payment!;
  } catch (error) {
    if (error instanceof Halted) throw error;
    const e = ConnectError.from(error);
    if (e.code === Code.NotFound && errorReason(e) === "PAYMENT_METHOD_NOT_FOUND") {
      throw domainError(Code.NotFound, "the payment method is not one of your saved methods", { reason: "PAYMENT_METHOD_NOT_FOUND", field: "payment_method_id" });
    }
    if (e.code === Code.Unavailable && errorReason(e) === "PROVIDER_UNAVAILABLE") {
      throw domainError(Code.Unavailable, "the payment provider did not answer; retry with the same idempotency key", { reason: "PAYMENT_PROVIDER_UNAVAILABLE", retryAfterMs: 1000 });
    }
    if (e.code === Code.InvalidArgument) throw e;
    if (isFinal(e)) throw failedPrecondition(e.rawMessage, "PAYMENT_DECLINED", { order_id: row.id, order_number: row.order_number, decline_code: errorReason(e) ?? "", message: e.rawMessage });
    throw peerFailure("payment", e);
  }
}

/** An asynchronous payment: the order is shown PENDING and order.created is published once. */
async function announcePending(em: EntityManager, deps: CheckoutDeps, row: OrderRow, payment: Payment): Promise<void> {
  await em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const n = await db.run(
      "update orders set announced = true, payment_id = $2, payment_method = $3::jsonb, lease_until = now() + ($4 * interval '1 millisecond'), updated_at = now(), version = version + 1 where id = $1 and not announced",
      [row.id, payment.id, JSON.stringify(methodSummary(payment)), deps.config.recoveryEveryMs],
    );
    if (n === 0) return;
    const [order] = await ordersToMessages(tx, [(await orderRow(tx, row.id))!], "internal");
    publishEvent(tx, OrderCreatedSchema, createdOf(order!));
    await tx.flush();
  });
}

const createdOf = (o: Order) => ({
  orderId: o.id,
  orderNumber: o.orderNumber,
  userId: o.userId,
  status: o.status,
  paymentStatus: o.paymentStatus,
  items: o.items,
  subtotal: o.subtotal,
  discountAmount: o.discountAmount,
  shippingAmount: o.shippingAmount,
  taxAmount: o.taxAmount,
  totalAmount: o.totalAmount,
  currencyCode: o.currencyCode,
  discounts: o.discounts,
  shippingAddress: o.shippingAddress,
  billingAddress: o.billingAddress,
  shippingMethod: o.shippingMethod,
  paymentMethod: o.paymentMethod,
  paymentId: o.paymentId,
  estimatedDeliveryDate: o.estimatedDeliveryDate,
});

/** The last step: CONFIRMED, announced, events in the same transaction. */
async function confirm(em: EntityManager, orderId: string, paid: boolean): Promise<void> {
  await em.transactional(async (tx) => {
    const before = (await orderRow(tx, orderId, true))!;
    if (before.checkout !== "running") return;
    const wasAnnounced = before.announced;
    const row = await transition(tx, orderId, "confirmed", system, paid ? "payment captured" : "payment authorized", {
      payment_status: paid ? "paid" : before.payment_id ? "authorized" : "paid",
      captured_minor: paid ? before.total_minor : "0",
      checkout: "done",
      announced: true,
      stock_committed: true,
      lease_until: null,
    });
    if (!row) return;
    await sqlOf(tx).run(
      "insert into order_checkout_steps (order_id, step, state, detail) values ($1, 'confirm', 'done', '{}') on conflict (order_id, step) do update set state = 'done', updated_at = now()",
      [orderId],
    );
    const [order] = await ordersToMessages(tx, [(await orderRow(tx, orderId))!], "internal");
    if (!wasAnnounced) publishEvent(tx, OrderCreatedSchema, createdOf(order!));
    publishEvent(tx, OrderConfirmedSchema, {
      orderId,
      orderNumber: order!.orderNumber,
      userId: order!.userId,
      paymentId: order!.paymentId,
      amountPaid: order!.totalAmount,
      paymentMethod: order!.paymentMethod,
    });
    await tx.flush();
  });
}

/** Discards a checkout nobody can finish once it is older than the checkout timeout; until then leaves it. */
async function abandonIfExpired(em: EntityManager, deps: CheckoutDeps, row: OrderRow, why: string): Promise<Order> {
  const age = Date.now() - new Date(row.created_at).getTime();
  if (age >= deps.config.checkoutTimeoutMs) {
    await compensate(em, deps, row.id, {
      status: "cancelled",
      paymentStatus: "voided",
      reason: "checkout_timeout",
      failure: { code: Code.FailedPrecondition, reason: "CHECKOUT_EXPIRED", message: `${why}; it was discarded, start a new checkout`, metadata: {} },
    });
  }
  return loadOrder(em, row.id, "internal");
}

// ------------------------------------------------------------------ compensation

/** Undoes every step in reverse and ends the order in `terminal`; the intent is recorded first, so it can be finished by anyone. */
export async function compensate(em: EntityManager, deps: CheckoutDeps, orderId: string, terminal: Terminal): Promise<void> {
  await record(em, deps, orderId, "compensate", "started", terminal as unknown as Record<string, unknown>).catch((error) => {
    if (!(error instanceof Halted)) throw error;
  });
  const steps = await stepsOf(em, orderId);
  const row = (await orderRow(em, orderId))!;
  /** Runs a step's undo once: the step is marked compensated after it, with what the undo reports merged into its detail. */
  const undo = async (step: string, call: () => Promise<Record<string, unknown> | void>) => {
    const s = steps.get(step);
    if (!s || s.state === "compensated") return;
    const detail = (await call()) ?? {};
    await sqlOf(em).run("update order_checkout_steps set state = 'compensated', detail = detail || $3::jsonb, updated_at = now() where order_id = $1 and step = $2", [
      orderId,
      step,
      JSON.stringify(detail),
    ]);
  };
  const payments = deps.peers.client(PaymentService);
  let paymentId = row.payment_id ?? (steps.get("authorize")?.detail.paymentId as string | undefined);
  await undo("authorize", async () => {
    if (!paymentId) {
      // AuthorizePayment was sent (its start is recorded) but its answer, the payment id, never was (Payment
      // died after recording it, or this process died while waiting): Payment may hold a live payment for the
      // order. At most one is live (Payment's payments_live_order); FAILED / CANCELLED ones hold nothing.
      const { payments: found } = await payments.listPaymentsForOrderInternal({ orderId }).catch((error) => {
        throw peerFailure("payment", ConnectError.from(error));
      });
      const live = found.find((p) => p.status !== PaymentStatus.FAILED && p.status !== PaymentStatus.CANCELLED);
      if (!live) return { voided: null };
      paymentId = live.id;
      // In the step log before the void: an interrupted compensation resumes with the id (VoidPayment is idempotent).
      await sqlOf(em).run("update order_checkout_steps set detail = detail || $2::jsonb, updated_at = now() where order_id = $1 and step = 'authorize'", [
        orderId,
        JSON.stringify({ paymentId, foundByOrderId: true }),
      ]);
    }
    try {
      // PENDING / PROCESSING payments are voided too (VoidPayment accepts them; a later success is voided at the provider).
      await payments.voidPayment({ paymentId, reason: terminal.reason.slice(0, 200) });
      return { voided: paymentId };
    } catch (error) {
      const e = ConnectError.from(error);
      if (errorReason(e) !== "PAYMENT_ALREADY_CAPTURED") throw peerFailure("payment", e);
      await payments.refundPayment({
        paymentId,
        amount: money(BigInt(row.total_minor), row.currency!),
        reason: 1,
        note: terminal.reason.slice(0, 500),
        idempotencyKey: `order-${orderId}-refund-checkout`,
      });
      return { refunded: paymentId };
    }
  });
  await undo("capture", async () => undefined);
  await undo("redeem", async () => {
    await deps.peers.client(DiscountService).releaseRedemption({ orderId, reason: terminal.reason.slice(0, 200) });
  });
  await undo("reserve", async () => {
    try {
      await deps.peers.client(InventoryService).releaseReservation({ orderId, reason: terminal.reason.slice(0, 200) });
    } catch (error) {
      const e = ConnectError.from(error);
      if (e.code !== Code.NotFound) throw peerFailure("product", e);
    }
  });
  await em.transactional(async (tx) => {
    const changed = await transition(
      tx,
      orderId,
      terminal.status,
      system,
      terminal.reason,
      {
        payment_status: paymentId ? terminal.paymentStatus : row.payment_status === "pending" ? "voided" : row.payment_status,
        // A payment found by the order id (its answer was never recorded) is linked to the order it belonged to.
        ...(paymentId && !row.payment_id ? { payment_id: paymentId } : {}),
        checkout: "failed",
        failure: JSON.stringify(terminal.failure),
        lease_until: null,
        ...(terminal.status === "cancelled" ? { cancelled_at: new Date(), cancellation_reason: terminal.reason.slice(0, 500) } : {}),
      },
      ["pending"],
    );
    if (!changed) return;
    await sqlOf(tx).run("update order_checkout_steps set state = 'done', updated_at = now() where order_id = $1 and step = 'compensate'", [orderId]);
    if (changed.announced && changed.status === "cancelled") {
      // An announced order (asynchronous payment) cancelled by the system: its consumers hear it.
      const [order] = await ordersToMessages(tx, [changed], "internal");
      publishEvent(tx, OrderCancelledSchema, {
        orderId,
        orderNumber: changed.order_number,
        userId: changed.user_id,
        previousStatus: OrderStatus.PENDING,
        cancelledBy: OrderActorType.SYSTEM,
        reason: terminal.reason,
        items: order!.items,
        stockCommitted: false,
        paymentAction: paymentId ? CancellationPaymentAction.VOIDED : CancellationPaymentAction.NONE,
        paymentAmount: money(paymentId ? BigInt(changed.total_minor) : 0n, changed.currency ?? "USD"),
        releasedCouponCodes: order!.discounts.map((d) => d.couponCode).filter(Boolean),
      });
      await tx.flush();
    }
  });
}

// ------------------------------------------------------------------ peer failures in contract terms

function stockFailure(error: unknown, items: { product_id: string; variant_id: string | null; quantity: number }[]): ConnectError {
  const e = ConnectError.from(error);
  const reason = errorReason(e);
  const field = errorFields(e)[0] ?? "";
  const i = Number(/lines\[(\d+)\]/.exec(field)?.[1] ?? 0);
  const item = items[i];
  if (reason === "OUT_OF_STOCK") {
    return domainError(Code.FailedPrecondition, "a product is no longer available in the quantity ordered", {
      reason: "OUT_OF_STOCK",
      field: `items[${i}].quantity`,
      metadata: {
        product_id: item?.product_id ?? "",
        variant_id: item?.variant_id ?? "",
        requested: String(item?.quantity ?? 0),
        available: metadataOf(e)[`lines[${i}].available`] ?? "0",
      },
    });
  }
  if (reason === "PRODUCT_UNAVAILABLE" || reason === "VARIANT_REQUIRED") {
    return domainError(Code.FailedPrecondition, "a product can no longer be bought", {
      reason: "PRODUCT_UNAVAILABLE",
      field: `items[${i}]`,
      metadata: { product_id: item?.product_id ?? "", variant_id: item?.variant_id ?? "" },
    });
  }
  if (isFinal(e)) return failedPrecondition(e.rawMessage, reason ?? "OUT_OF_STOCK");
  return peerFailure("product", e);
}

function redeemFailure(error: unknown, row: OrderRow): ConnectError {
  const e = ConnectError.from(error);
  const reason = errorReason(e);
  if (!isFinal(e)) return peerFailure("discount", e);
  if (reason === "DISCOUNT_CHANGED") {
    return failedPrecondition("the discounts changed since the order was priced; review the order", "PRICE_CHANGED", {
      expected_total_minor: row.total_minor,
      total_minor: String(BigInt(row.total_minor) + BigInt(row.discount_minor) - BigInt(metadataOf(e).total_discount_minor ?? row.discount_minor)),
      currency_code: row.currency ?? "",
    });
  }
  return domainError(Code.FailedPrecondition, e.rawMessage || "the coupon no longer applies", {
    reason: "COUPON_INVALID",
    metadata: { code: metadataOf(e).code ?? "", cause: `COUPON_${(reason ?? "INVALID").replace(/^COUPON_/, "")}` },
  });
}
