/**
 * Stock reservations of orders: all lines at once or nothing, idempotent per
 * order id, never more than is available (except for products that allow
 * backorders, whose shortfall is recorded on the line, not in the inventory).
 *
 * Overselling is impossible by construction: a reservation locks every
 * inventory row of its items (in id order, so concurrent reservations never
 * deadlock), computes what is available under those locks, and only then
 * raises reserved; the CHECK reserved <= quantity is the last line of
 * defence. Calls for the same order are serialized by an advisory lock.
 * Reservations expire: the sweeper job (jobs.ts) gives expired ones back.
 */
import { create } from "@bufbuild/protobuf";
import {
  type CommitReservationRequest,
  type CommitReservationResponse,
  type ListReservationsRequest,
  type ListReservationsResponse,
  type ReleaseReservationRequest,
  type ReleaseReservationResponse,
  type Reservation,
  ReservationLineSchema,
  ReservationSchema,
  type ReserveStockRequest,
  type ReserveStockResponse,
  StockAllocationSchema,
  StockShortageLineSchema,
  StockShortageSchema,
} from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { type ConnectError, Code, domainError, failedPrecondition, notFound } from "../../kit/errors.ts";
import { pageOf } from "../../kit/paging.ts";
import { v7 as uuidv7 } from "uuid";
import { productRows } from "./catalog.ts";
import { defaultLocation, lockLevels } from "./inventory.ts";
import { reservationStatuses } from "./mapping.ts";
import { pgArray, type LegacySql, legacySqlOf } from "../../kit/sql.ts";
import { type ItemKey, itemKey, refreshStock } from "./stock-state.ts";

type Out<T> = Omit<T, "$typeName">;

interface ReservationDbRow {
  id: string;
  order_id: string;
  status: string;
  lines_signature: string;
  expires_at: string;
  created_at: string;
  committed_at: string | null;
  released_at: string | null;
  release_reason: string | null;
  stock_returned_at: string | null;
  /** Computed by the queries below: expires_at is in the past. */
  due: boolean;
}

const reservationColumns = "r.*, r.expires_at <= now() as due";

interface LineDbRow {
  id: string;
  reservation_id: string;
  line_index: number;
  product_id: string;
  variant_id: string | null;
  sku: string;
  quantity: number;
  backordered_quantity: number;
}

interface AllocationDbRow {
  line_id: string;
  inventory_id: string | null;
  location: string;
  quantity: number;
}

/** Canonical text of a set of lines, to tell a replay from another request. */
function signatureOf(lines: readonly { productId: string; variantId: string; quantity: number }[]): string {
  return lines
    .map((l) => `${l.productId}/${l.variantId}:${l.quantity}`)
    .sort()
    .join(";");
}

async function lockOrder(db: LegacySql, orderId: string): Promise<void> {
  await db.run("select pg_advisory_xact_lock(hashtext(?))", [`reservation:${orderId}`]);
}

/** The order's latest reservation, locked. */
async function latestReservation(db: LegacySql, orderId: string): Promise<ReservationDbRow | undefined> {
  return db.one<ReservationDbRow>(`select ${reservationColumns} from stock_reservations r where r.order_id = ? order by r.created_at desc, r.id desc limit 1 for update`, [
    orderId,
  ]);
}

/** Reservation messages with their lines and allocations, in the given order. */
async function reservationMessages(db: LegacySql, rows: ReservationDbRow[]): Promise<Reservation[]> {
  if (rows.length === 0) return [];
  const lines = await db.all<LineDbRow>("select * from stock_reservation_lines where reservation_id = any(?::uuid[]) order by reservation_id, line_index", [
    pgArray(rows.map((r) => r.id)),
  ]);
  const allocations =
    lines.length === 0
      ? []
      : await db.all<AllocationDbRow>("select line_id, inventory_id, location, quantity from stock_reservation_allocations where line_id = any(?::uuid[]) order by location", [
          pgArray(lines.map((l) => l.id)),
        ]);
  return rows.map((r) =>
    create(ReservationSchema, {
      id: r.id,
      orderId: r.order_id,
      status: reservationStatuses.fromDb(r.status),
      lines: lines
        .filter((l) => l.reservation_id === r.id)
        .map((l) =>
          create(ReservationLineSchema, {
            productId: l.product_id,
            variantId: l.variant_id ?? "",
            sku: l.sku,
            quantity: l.quantity,
            backorderedQuantity: l.backordered_quantity,
            allocations: allocations.filter((a) => a.line_id === l.id).map((a) => create(StockAllocationSchema, { location: a.location, quantity: a.quantity })),
          }),
        ),
      expiresAt: timestampOf(r.expires_at),
      createdAt: timestampOf(r.created_at),
      committedAt: timestampOf(r.committed_at),
      releasedAt: timestampOf(r.released_at),
      releaseReason: r.release_reason ?? "",
    }),
  );
}

async function reservationMessage(db: LegacySql, reservationId: string): Promise<Reservation> {
  const row = await db.one<ReservationDbRow>(`select ${reservationColumns} from stock_reservations r where r.id = ?`, [reservationId]);
  return (await reservationMessages(db, [row!]))[0]!;
}

/** The reservation's items and what it holds per inventory row. */
async function holdings(db: LegacySql, reservationId: string): Promise<{ items: ItemKey[]; perRow: Map<string, number> }> {
  const rows = await db.all<{ product_id: string; variant_id: string | null; inventory_id: string | null; quantity: number | null }>(
    `select l.product_id, l.variant_id, a.inventory_id, a.quantity
       from stock_reservation_lines l left join stock_reservation_allocations a on a.line_id = l.id
      where l.reservation_id = ?`,
    [reservationId],
  );
  const perRow = new Map<string, number>();
  for (const r of rows) if (r.inventory_id && r.quantity) perRow.set(r.inventory_id, (perRow.get(r.inventory_id) ?? 0) + r.quantity);
  return { items: rows.map((r) => ({ productId: r.product_id, variantId: r.variant_id })), perRow };
}

/** Locks inventory rows by id in id order (the stock lock order). */
async function lockRows(db: LegacySql, ids: string[]): Promise<void> {
  if (ids.length > 0) await db.all("select id from product_inventory where id = any(?::uuid[]) order by id for update", [pgArray(ids)]);
}

/** Gives an ACTIVE reservation's units back (RELEASED or EXPIRED). */
async function giveBack(db: LegacySql, reservation: ReservationDbRow, status: "released" | "expired", reason: string): Promise<void> {
  const { items, perRow } = await holdings(db, reservation.id);
  await lockRows(db, [...perRow.keys()]);
  for (const [inventoryId, quantity] of perRow) {
    await db.run("update product_inventory set reserved_quantity = reserved_quantity - ?, updated_at = now() where id = ?", [quantity, inventoryId]);
  }
  await db.run("update stock_reservations set status = ?, released_at = now(), release_reason = ? where id = ?", [status, reason || null, reservation.id]);
  await refreshStock(db, items);
}

function shortageError(
  shorts: { index: number; productId: string; variantId: string; requested: number; available: number }[],
): ConnectError {
  const first = shorts[0]!;
  const error = domainError(Code.FailedPrecondition, `not enough stock for ${shorts.length} line(s): nothing was reserved`, {
    reason: "OUT_OF_STOCK",
    field: `lines[${first.index}].quantity`,
    metadata: Object.fromEntries(shorts.map((s) => [`lines[${s.index}].available`, String(s.available)])),
  });
  error.details.push({
    desc: StockShortageSchema,
    value: create(StockShortageSchema, {
      lines: shorts.map((s) =>
        create(StockShortageLineSchema, {
          lineIndex: s.index,
          productId: s.productId,
          variantId: s.variantId,
          requestedQuantity: s.requested,
          availableQuantity: s.available,
        }),
      ),
    }),
  });
  return error;
}

export async function reserveStock(em: EntityManager, defaultTtlSeconds: number, req: ReserveStockRequest): Promise<Out<ReserveStockResponse>> {
  const ttlSeconds = req.ttl ? Number(req.ttl.seconds) + req.ttl.nanos / 1e9 : defaultTtlSeconds;
  const signature = signatureOf(req.lines);
  return em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    await lockOrder(db, req.orderId);
    const existing = await latestReservation(db, req.orderId);
    if (existing && existing.status === "released") {
      throw failedPrecondition("the order's reservation was released: the order is over", "RESERVATION_RELEASED");
    }
    if (existing && existing.status === "active" && existing.due) {
      await giveBack(db, existing, "expired", "expired");
    } else if (existing && (existing.status === "active" || existing.status === "committed")) {
      if (existing.lines_signature !== signature) {
        throw failedPrecondition("the order already holds a reservation with other lines", "RESERVATION_CONFLICT", { reservation_id: existing.id });
      }
      return { reservation: await reservationMessage(db, existing.id) };
    }

    // Every line must name something a customer can buy now.
    const products = await productRows(
      db,
      req.lines.map((l) => l.productId),
    );
    const variantIds = req.lines.map((l) => l.variantId).filter((v) => v !== "");
    const variants = new Map(
      variantIds.length === 0
        ? []
        : (await db.all<{ id: string; product_id: string; sku: string }>("select id, product_id, sku from product_variants where id = any(?::uuid[])", [pgArray(variantIds)])).map(
            (v) => [v.id, v],
          ),
    );
    const lines = req.lines.map((line, index) => {
      const product = products.get(line.productId);
      const unavailable = () =>
        domainError(Code.FailedPrecondition, `lines[${index}]: the product is not available`, { reason: "PRODUCT_UNAVAILABLE", field: `lines[${index}]` });
      if (!product || product.status !== "active" || !product.is_visible) throw unavailable();
      if (!line.variantId && product.variant_count > 0) {
        throw domainError(Code.InvalidArgument, `lines[${index}].variant_id: the product has variants; name one`, {
          reason: "VARIANT_REQUIRED",
          field: `lines[${index}].variant_id`,
        });
      }
      const variant = line.variantId ? variants.get(line.variantId) : undefined;
      if (line.variantId && variant?.product_id !== product.id) throw unavailable();
      const item: ItemKey = { productId: product.id, variantId: variant?.id ?? null };
      return { index, line, product, item, sku: variant?.sku ?? product.sku };
    });

    const levels = await lockLevels(
      db,
      lines.map((l) => l.item),
    );
    const levelsOf = (item: ItemKey) =>
      levels
        .filter((lv) => itemKey({ productId: lv.product_id, variantId: lv.variant_id }) === itemKey(item))
        .map((lv) => ({ ...lv, available: lv.quantity - lv.reserved_quantity }))
        .sort((a, b) => b.available - a.available || (a.location === defaultLocation ? -1 : b.location === defaultLocation ? 1 : a.location.localeCompare(b.location)));
    const plans = lines.map((l) => {
      const own = levelsOf(l.item);
      const available = own.reduce((s, lv) => s + Math.max(0, lv.available), 0);
      return { ...l, own, available };
    });
    const shorts = plans
      .filter((p) => p.available < p.line.quantity && !p.product.allow_backorder)
      .map((p) => ({ index: p.index, productId: p.line.productId, variantId: p.line.variantId, requested: p.line.quantity, available: p.available }));
    if (shorts.length > 0) throw shortageError(shorts);

    const reservationId = uuidv7();
    await db.run(
      "insert into stock_reservations (id, order_id, status, lines_signature, expires_at) values (?, ?, 'active', ?, now() + (? * interval '1 second'))",
      [reservationId, req.orderId, signature, ttlSeconds],
    );
    for (const p of plans) {
      const lineId = uuidv7();
      const backordered = Math.max(0, p.line.quantity - p.available);
      await db.run(
        "insert into stock_reservation_lines (id, reservation_id, line_index, product_id, variant_id, sku, quantity, backordered_quantity) values (?, ?, ?, ?, ?, ?, ?, ?)",
        [lineId, reservationId, p.index, p.item.productId, p.item.variantId, p.sku, p.line.quantity, backordered],
      );
      let remaining = p.line.quantity - backordered;
      for (const lv of p.own) {
        if (remaining === 0) break;
        const take = Math.min(remaining, lv.available);
        if (take <= 0) continue;
        // Conditional on what is still there: under the row lock it always is; the CHECK backs it up.
        const updated = await db.run(
          "update product_inventory set reserved_quantity = reserved_quantity + ?, updated_at = now() where id = ? and quantity - reserved_quantity >= ?",
          [take, lv.id, take],
        );
        if (updated !== 1) throw new Error(`inventory row ${lv.id} changed under its lock`);
        await db.run("insert into stock_reservation_allocations (id, line_id, inventory_id, location, quantity) values (?, ?, ?, ?, ?)", [
          uuidv7(),
          lineId,
          lv.id,
          lv.location,
          take,
        ]);
        remaining -= take;
      }
    }
    await refreshStock(
      db,
      plans.map((p) => p.item),
    );
    return { reservation: await reservationMessage(db, reservationId) };
  });
}

export async function releaseReservation(em: EntityManager, req: ReleaseReservationRequest): Promise<Out<ReleaseReservationResponse>> {
  return em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    await lockOrder(db, req.orderId);
    const r = await latestReservation(db, req.orderId);
    if (!r) throw notFound("reservation", `of order ${req.orderId}`);
    if (r.status === "committed") {
      throw failedPrecondition("the reservation was committed: returned goods come back through RestockItems", "RESERVATION_COMMITTED");
    }
    if (r.status === "active") await giveBack(db, r, r.due ? "expired" : "released", r.due ? "expired" : req.reason);
    return { reservation: await reservationMessage(db, r.id) };
  });
}

export async function commitReservation(em: EntityManager, req: CommitReservationRequest): Promise<Out<CommitReservationResponse>> {
  const outcome = await em.transactional(async (tx): Promise<{ reservation: Reservation } | { error: ConnectError }> => {
    const db = legacySqlOf(tx);
    await lockOrder(db, req.orderId);
    const r = await latestReservation(db, req.orderId);
    if (!r) throw notFound("reservation", `of order ${req.orderId}`);
    if (r.status === "released") throw failedPrecondition("the reservation was released", "RESERVATION_RELEASED");
    if (r.status === "expired") throw failedPrecondition("the reservation expired; reserve again", "RESERVATION_EXPIRED");
    if (r.status === "active" && r.due) {
      // Expired but not swept yet: give the units back now (committed below), then refuse.
      await giveBack(db, r, "expired", "expired");
      return { error: failedPrecondition("the reservation expired; reserve again", "RESERVATION_EXPIRED") };
    }
    if (r.status === "active") {
      const { items, perRow } = await holdings(db, r.id);
      await lockRows(db, [...perRow.keys()]);
      for (const [inventoryId, quantity] of perRow) {
        await db.run("update product_inventory set quantity = quantity - ?, reserved_quantity = reserved_quantity - ?, updated_at = now() where id = ?", [
          quantity,
          quantity,
          inventoryId,
        ]);
      }
      await db.run("update stock_reservations set status = 'committed', committed_at = now() where id = ?", [r.id]);
      await refreshStock(db, items);
    }
    return { reservation: await reservationMessage(db, r.id) };
  });
  if ("error" in outcome) throw outcome.error;
  return outcome;
}

/** Gives back one expired reservation, if any is due; returns whether one was. Each runs in its own transaction. */
export async function expireOneDue(em: EntityManager): Promise<boolean> {
  return em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    const due = await db.one<ReservationDbRow>(
      `select ${reservationColumns} from stock_reservations r where r.status = 'active' and r.expires_at <= now()
        order by r.expires_at limit 1 for update skip locked`,
    );
    if (!due) return false;
    await giveBack(db, due, "expired", "expired");
    return true;
  });
}

/**
 * order.cancelled: an ACTIVE reservation is released; the units of a
 * COMMITTED one were sold and go back on hand at the locations they came from
 * (once: stock_returned_at).
 */
export async function returnStockOfCancelledOrder(db: LegacySql, orderId: string, reason: string): Promise<void> {
  await lockOrder(db, orderId);
  const r = await latestReservation(db, orderId);
  if (!r) return;
  if (r.status === "active") {
    await giveBack(db, r, r.due ? "expired" : "released", reason || "order_cancelled");
    return;
  }
  if (r.status !== "committed" || r.stock_returned_at) return;
  const { items, perRow } = await holdings(db, r.id);
  await lockRows(db, [...perRow.keys()]);
  for (const [inventoryId, quantity] of perRow) {
    const level = await db.one<{ product_id: string; variant_id: string | null; location: string; quantity: number }>(
      "update product_inventory set quantity = quantity + ?, updated_at = now() where id = ? returning product_id, variant_id, location, quantity",
      [quantity, inventoryId],
    );
    if (!level) continue;
    await db.run(
      `insert into stock_adjustments (id, product_id, variant_id, location, quantity_before, quantity_after, reason, note, actor, reference_id)
       values (?, ?, ?, ?, ?, ?, 'order_cancelled', ?, 'event:order.cancelled', ?)`,
      [uuidv7(), level.product_id, level.variant_id, level.location, level.quantity - quantity, level.quantity, reason, orderId],
    );
  }
  await db.run("update stock_reservations set stock_returned_at = now() where id = ?", [r.id]);
  await refreshStock(db, items);
}

export async function listReservations(em: EntityManager, req: ListReservationsRequest): Promise<Out<ListReservationsResponse>> {
  const db = legacySqlOf(em);
  const where: string[] = [];
  const params: unknown[] = [];
  if (req.orderId) {
    where.push("r.order_id = ?");
    params.push(req.orderId);
  }
  if (req.productId) {
    where.push("exists (select 1 from stock_reservation_lines l where l.reservation_id = r.id and l.product_id = ?)");
    params.push(req.productId);
  }
  if (req.statuses.length > 0) {
    where.push("r.status = any(?::text[])");
    params.push(pgArray(req.statuses.map(reservationStatuses.toDb)));
  }
  const pages = pageOf(req, { t: "timestamptz", id: "uuid" });
  const { after: cursor, size } = pages;
  if (cursor) {
    where.push("(r.created_at, r.id) < (?::timestamptz, ?::uuid)");
    params.push(cursor.t, cursor.id);
  }
  const rows = await db.all<ReservationDbRow & { created_text: string }>(
    `select ${reservationColumns}, r.created_at::text as created_text from stock_reservations r
      ${where.length > 0 ? `where ${where.join(" and ")}` : ""} order by r.created_at desc, r.id desc limit ?`,
    [...params, size + 1],
  );
  const page = rows.slice(0, size);
  const last = page.at(-1);
  return {
    reservations: await reservationMessages(db, page),
    nextPageToken: rows.length > size && last ? pages.next({ t: last.created_text, id: last.id }) : "",
  };
}
