/**
 * The Order service: checkout (PreviewOrder, PlaceOrder: a saga persisted in
 * order_db, checkout.ts), the orders afterwards (orders.ts), WatchOrder
 * (watch.ts) and the checkout recovery job (recovery.ts)
 * (ecommerce.order.v1). Publishes order.* on ORDER_EVENTS through the outbox;
 * consumes shipment.* and payment.* (consumers.ts).
 */
import { file_ecommerce_order_v1_events } from "../../gen/ecommerce/order/v1/events_pb.js";
import { OrderService } from "../../gen/ecommerce/order/v1/order_pb.js";
import { requireUser } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { intervalJob } from "../../kit/jobs.ts";
import { defineService } from "../../kit/server.ts";
import { placeOrder, previewOrder } from "./checkout.ts";
import { loadOrderConfig } from "./config.ts";
import { orderConsumers } from "./consumers.ts";
import { orderEntities } from "./entities.ts";
import { loadOrder } from "./mapping.ts";
import { OrderTables } from "./migrations/0001_order_tables.ts";
import { OrderShipments } from "./migrations/0002_order_shipments.ts";
import { StatusHistoryVersion } from "./migrations/0003_status_history_version.ts";
import { OrderListIndexes } from "./migrations/0004_order_list_indexes.ts";
import { PartiallyShipped } from "./migrations/0005_partially_shipped.ts";
import {
  addOrderNote,
  adminActor,
  applyPaymentUpdate,
  cancelOrder,
  checkVerifiedPurchase,
  customerActor,
  getOrderByNumber,
  listMyOrders,
  listOrderNotes,
  listOrders,
  statusHistory,
  updateOrder,
  updateOrderStatus,
} from "./orders.ts";
import { recoverCheckouts } from "./recovery.ts";
import { watchOrder } from "./watch.ts";

export const orderService = defineService({
  name: "order",
  entities: orderEntities,
  migrations: [
    { name: "0001_order_tables", class: OrderTables },
    { name: "0002_order_shipments", class: OrderShipments },
    { name: "0003_status_history_version", class: StatusHistoryVersion },
    { name: "0004_order_list_indexes", class: OrderListIndexes },
    { name: "0005_partially_shipped", class: PartiallyShipped },
  ],
  publishes: file_ecommerce_order_v1_events,
  setup(ctx) {
    return { config: loadOrderConfig(ctx.env) };
  },
  routes(router, svc, { config }) {
    const deps = { peers: svc.peers, config, log: svc.log };
    const me = (ctx: Parameters<typeof requireUser>[0]) => requireUser(ctx).userId;
    router.service(OrderService, {
      // CUSTOMER: the caller's own cart and orders.
      previewOrder: (req, ctx) => previewOrder(emOf(ctx), deps, me(ctx), req),
      placeOrder: (req, ctx) => placeOrder(emOf(ctx), deps, me(ctx), req),
      getOrder: async (req, ctx) => ({ order: await loadOrder(emOf(ctx), req.orderId, "customer", me(ctx)) }),
      getOrderByNumber: async (req, ctx) => ({ order: await getOrderByNumber(emOf(ctx), me(ctx), req.orderNumber) }),
      listMyOrders: (req, ctx) => listMyOrders(emOf(ctx), me(ctx), req),
      cancelOrder: async (req, ctx) => ({ order: await cancelOrder(emOf(ctx), svc.peers, customerActor(me(ctx)), req.orderId, req.reason, "customer", me(ctx)) }),
      watchOrder: (req, ctx) => watchOrder(emOf(ctx), config.watchPollMs, me(ctx), req, ctx.signal),

      // ADMIN.
      listOrders: (req, ctx) => listOrders(emOf(ctx), req),
      adminGetOrder: async (req, ctx) => ({ order: await loadOrder(emOf(ctx), req.orderId, "admin") }),
      updateOrderStatus: (req, ctx) => updateOrderStatus(emOf(ctx), svc.peers, me(ctx), req),
      adminCancelOrder: async (req, ctx) => ({ order: await cancelOrder(emOf(ctx), svc.peers, adminActor(me(ctx)), req.orderId, req.reason, "admin") }),
      updateOrder: (req, ctx) => updateOrder(emOf(ctx), req),
      addOrderNote: (req, ctx) => addOrderNote(emOf(ctx), me(ctx), req),
      listOrderNotes: (req, ctx) => listOrderNotes(emOf(ctx), req),
      getOrderStatusHistory: (req, ctx) => statusHistory(emOf(ctx), req.orderId),

      // INTERNAL: allowed_callers enforced by the kit's interceptor.
      getOrderInternal: async (req, ctx) => ({ order: await loadOrder(emOf(ctx), req.orderId, "internal") }),
      checkVerifiedPurchase: (req, ctx) => checkVerifiedPurchase(emOf(ctx), req),
      applyPaymentUpdate: (req, ctx) => applyPaymentUpdate(emOf(ctx), req),
    });
  },
  consumers: (ctx) => orderConsumers(ctx.peers),
  jobs: (ctx, { config }) => [
    intervalJob({
      name: "order-checkout-recovery",
      everyMs: config.recoveryEveryMs,
      log: ctx.log,
      async run(signal) {
        await recoverCheckouts(() => ctx.orm.em.fork(), { peers: ctx.peers, config, log: ctx.log }, ctx.log, signal);
      },
    }),
  ],
});
