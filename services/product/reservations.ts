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
import { newestFirstPage } from "../../kit/paging.ts";
import { v7 as uuidv7 } from "uuid";
import { defaultLocation, lockLevels } from "./inventory.ts";
import { StockAdjustmentEntity } from "./entities.ts";
import { reservationStatuses } from "./mapping.ts";
import { lockTimeoutForCall, type Params, type Sql, sqlOf } from "../../kit/sql.ts";
import { commitThenFail, transaction } from "../../kit/transaction.ts";
import { type ItemKey, itemKey, refreshStock } from "./stock-state.ts";

type Out<T> = Omit<T, "$typeName">;

interface ReservationDbRow {
  id: string;
  order_id: string;
  status: string;
  lines_signature: string;
  expires_at: Date;
  created_at: Date;
  committed_at: Date | null;
  released_at: Date | null;
  release_reason: string | null;
  stock_returned_at: Date | null;
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

/** The order's lock, first statement of its transaction: it also bounds the transaction's lock waits by the call's deadline (lockTimeoutForCall). */
async function lockOrder(db: Sql, orderId: string): Promise<void> {
  await db.run("select set_config('lock_timeout', $2, true), pg_advisory_xact_lock(hashtext($1))", [`reservation:${orderId}`, lockTimeoutForCall()]);
}

/** The order's latest reservation, locked. */
async function latestReservation(db: Sql, orderId: string): Promise<ReservationDbRow | undefined> {
  return db.one<ReservationDbRow>(`select ${reservationColumns} from stock_reservations r where r.order_id = $1 order by r.created_at desc, r.id desc limit 1 for update`, [
    orderId,
  ]);
}

/** Reservation messages with their lines and allocations (one statement for all of them), in the given order. */
async function reservationMessages(db: Sql, rows: ReservationDbRow[]): Promise<Reservation[]> {
  if (rows.length === 0) return [];
  const lines = await db.all<LineDbRow & { allocations: AllocationDbRow[] }>(
    `select l.*, coalesce((select json_agg(json_build_object('location', a.location, 'quantity', a.quantity) order by a.location)
                             from stock_reservation_allocations a where a.line_id = l.id), '[]') as allocations
       from stock_reservation_lines l where l.reservation_id = any($1::uuid[]) order by l.reservation_id, l.line_index`,
    [rows.map((r) => r.id)],
  );
  return rows.map((r) => reservationOf(r, lines.filter((l) => l.reservation_id === r.id)));
}

function reservationOf(r: Omit<ReservationDbRow, "due" | "lines_signature">, lines: (LineDbRow & { allocations: AllocationDbRow[] })[]): Reservation {
  return create(ReservationSchema, {
    id: r.id,
    orderId: r.order_id,
    status: reservationStatuses.fromDb(r.status),
    lines: lines.map((l) =>
      create(ReservationLineSchema, {
        productId: l.product_id,
        variantId: l.variant_id ?? "",
        sku: l.sku,
        quantity: l.quantity,
        backorderedQuantity: l.backordered_quantity,
        allocations: l.allocations.map((a) => create(StockAllocationSchema, { location: a.location, quantity: a.quantity })),
      }),
    ),
    expiresAt: timestampOf(r.expires_at),
    createdAt: timestampOf(r.created_at),
    committedAt: timestampOf(r.committed_at),
    releasedAt: timestampOf(r.released_at),
    releaseReason: r.release_reason ?? "",
  });
}

async function reservationMessage(db: Sql, reservationId: string): Promise<Reservation> {
  const row = await db.one<ReservationDbRow>(`select ${reservationColumns} from stock_reservations r where r.id = $1`, [reservationId]);
  return (await reservationMessages(db, [row!]))[0]!;
}

/** The reservation's items and what it holds per inventory row. */
async function holdings(db: Sql, reservationId: string): Promise<{ items: ItemKey[]; perRow: Map<string, number> }> {
  const rows = await db.all<{ product_id: string; variant_id: string | null; inventory_id: string | null; quantity: number | null }>(
    `select l.product_id, l.variant_id, a.inventory_id, a.quantity
       from stock_reservation_lines l left join stock_reservation_allocations a on a.line_id = l.id
      where l.reservation_id = $1`,
    [reservationId],
  );
  const perRow = new Map<string, number>();
  for (const r of rows) if (r.inventory_id && r.quantity) perRow.set(r.inventory_id, (perRow.get(r.inventory_id) ?? 0) + r.quantity);
  return { items: rows.map((r) => ({ productId: r.product_id, variantId: r.variant_id })), perRow };
}

/** Locks inventory rows by id in id order (the stock lock order). */
async function lockRows(db: Sql, ids: string[]): Promise<void> {
  if (ids.length > 0) await db.all("select id from product_inventory where id = any($1::uuid[]) order by id for update", [ids]);
}

/** Changes inventory rows by per-row amounts in one statement: on hand by `onHand` times the amount, reserved by `reserved` times it. */
async function moveUnits(db: Sql, perRow: Map<string, number>, onHand: -1 | 0 | 1, reserved: -1 | 0 | 1): Promise<void> {
  if (perRow.size === 0) return;
  await db.run(
    `update product_inventory i set quantity = i.quantity + $3::int * t.n, reserved_quantity = i.reserved_quantity + $4::int * t.n, updated_at = now()
       from unnest($1::uuid[], $2::int[]) as t(id, n) where i.id = t.id`,
    [[...perRow.keys()], [...perRow.values()], onHand, reserved],
  );
}

/** Gives an ACTIVE reservation's units back (RELEASED or EXPIRED). */
async function giveBack(db: Sql, reservation: ReservationDbRow, status: "released" | "expired", reason: string): Promise<void> {
  const { items, perRow } = await holdings(db, reservation.id);
  await lockRows(db, [...perRow.keys()]);
  await moveUnits(db, perRow, 0, -1);
  await db.run("update stock_reservations set status = $1, released_at = now(), release_reason = $2 where id = $3", [status, reason || null, reservation.id]);
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

interface LineCheckDbRow {
  idx: number;
  product_id: string | null;
  status: string | null;
  is_visible: boolean | null;
  variant_count: number | null;
  allow_backorder: boolean | null;
  product_sku: string | null;
  variant_id: string | null;
  variant_product_id: string | null;
  variant_sku: string | null;
}

/*
 * The reservation, its lines and allocations and the raised reserved counts in
 * one statement. Every allocation's row was locked and checked by the caller;
 * the conditional update (and the CHECK) back that up: `held` counts the rows
 * it could raise.
 */
const writeReservation = `
  with r as (
    insert into stock_reservations (id, order_id, status, lines_signature, expires_at)
    values ($1, $2, 'active', $3, now() + ($4::float8 * interval '1 second'))
    returning created_at, expires_at
  ), l as (
    insert into stock_reservation_lines (id, reservation_id, line_index, product_id, variant_id, sku, quantity, backordered_quantity)
    select t.id, $1, t.line_index, t.product_id, t.variant_id, t.sku, t.quantity, t.backordered
      from unnest($5::uuid[], $6::int[], $7::uuid[], $8::uuid[], $9::text[], $10::int[], $11::int[])
           as t(id, line_index, product_id, variant_id, sku, quantity, backordered)
  ), a as (
    insert into stock_reservation_allocations (id, line_id, inventory_id, location, quantity)
    select * from unnest($12::uuid[], $13::uuid[], $14::uuid[], $15::text[], $16::int[])
  ), held as (
    update product_inventory i set reserved_quantity = i.reserved_quantity + t.n, updated_at = now()
      from unnest($14::uuid[], $16::int[]) as t(id, n)
     where i.id = t.id and i.quantity - i.reserved_quantity >= t.n
    returning i.id
  )
  select r.created_at, r.expires_at, (select count(*)::int from held) as held from r`;

/**
 * ReserveStock in a fixed number of statements whatever the number of lines:
 * the order's lock and its latest reservation, one check of every line, one
 * lock of every inventory row, one write of everything (writeReservation), one
 * refresh of the items' stock (refreshStock) and the response from memory.
 */
export async function reserveStock(em: EntityManager, defaultTtlSeconds: number, req: ReserveStockRequest): Promise<Out<ReserveStockResponse>> {
  const ttlSeconds = req.ttl ? Number(req.ttl.seconds) + req.ttl.nanos / 1e9 : defaultTtlSeconds;
  const signature = signatureOf(req.lines);
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
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
    const checked = await db.all<LineCheckDbRow>(
      `select l.idx::int as idx, p.id as product_id, p.status, p.is_visible, p.variant_count, p.allow_backorder, p.sku as product_sku,
              v.id as variant_id, v.product_id as variant_product_id, v.sku as variant_sku
         from unnest($1::uuid[], $2::uuid[]) with ordinality as l(product_id, variant_id, idx)
         left join products p on p.id = l.product_id
         left join product_variants v on v.id = l.variant_id
        order by l.idx`,
      [req.lines.map((l) => l.productId), req.lines.map((l) => l.variantId || null)],
    );
    const lines = req.lines.map((line, index) => {
      const c = checked[index]!;
      const unavailable = () =>
        domainError(Code.FailedPrecondition, `lines[${index}]: the product is not available`, { reason: "PRODUCT_UNAVAILABLE", field: `lines[${index}]` });
      if (!c.product_id || c.status !== "active" || !c.is_visible) throw unavailable();
      if (!line.variantId && c.variant_count! > 0) {
        throw domainError(Code.InvalidArgument, `lines[${index}].variant_id: the product has variants; name one`, {
          reason: "VARIANT_REQUIRED",
          field: `lines[${index}].variant_id`,
        });
      }
      if (line.variantId && c.variant_product_id !== c.product_id) throw unavailable();
      const item: ItemKey = { productId: c.product_id, variantId: c.variant_id };
      return { index, line, allowBackorder: c.allow_backorder!, item, sku: c.variant_sku ?? c.product_sku! };
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
      .filter((p) => p.available < p.line.quantity && !p.allowBackorder)
      .map((p) => ({ index: p.index, productId: p.line.productId, variantId: p.line.variantId, requested: p.line.quantity, available: p.available }));
    if (shorts.length > 0) throw shortageError(shorts);

    const reservationId = uuidv7();
    const planned = plans.map((p) => {
      const backordered = Math.max(0, p.line.quantity - p.available);
      let remaining = p.line.quantity - backordered;
      const allocations: { inventoryId: string; location: string; quantity: number }[] = [];
      for (const lv of p.own) {
        if (remaining === 0) break;
        const take = Math.min(remaining, lv.available);
        if (take <= 0) continue;
        allocations.push({ inventoryId: lv.id, location: lv.location, quantity: take });
        remaining -= take;
      }
      return { ...p, lineId: uuidv7(), backordered, allocations };
    });
    const allocations = planned.flatMap((p) => p.allocations.map((a) => ({ ...a, lineId: p.lineId, id: uuidv7() })));
    const written = await db.one<{ created_at: Date; expires_at: Date; held: number }>(writeReservation, [
      reservationId,
      req.orderId,
      signature,
      ttlSeconds,
      planned.map((p) => p.lineId),
      planned.map((p) => p.index),
      planned.map((p) => p.item.productId),
      planned.map((p) => p.item.variantId),
      planned.map((p) => p.sku),
      planned.map((p) => p.line.quantity),
      planned.map((p) => p.backordered),
      allocations.map((a) => a.id),
      allocations.map((a) => a.lineId),
      allocations.map((a) => a.inventoryId),
      allocations.map((a) => a.location),
      allocations.map((a) => a.quantity),
    ]);
    if (written!.held !== allocations.length) throw new Error(`reservation ${reservationId}: inventory rows changed under their locks`);
    await refreshStock(
      db,
      plans.map((p) => p.item),
    );
    return {
      reservation: reservationOf(
        { id: reservationId, order_id: req.orderId, status: "active", ...written!, committed_at: null, released_at: null, release_reason: null, stock_returned_at: null },
        planned.map((p) => ({
          id: p.lineId,
          reservation_id: reservationId,
          line_index: p.index,
          product_id: p.item.productId,
          variant_id: p.item.variantId,
          sku: p.sku,
          quantity: p.line.quantity,
          backordered_quantity: p.backordered,
          allocations: [...p.allocations].sort((a, b) => (a.location < b.location ? -1 : a.location > b.location ? 1 : 0)),
        })),
      ),
    };
  });
}

export async function releaseReservation(em: EntityManager, req: ReleaseReservationRequest): Promise<Out<ReleaseReservationResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
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
  return transaction(em, async (tx) => {
    const db = sqlOf(tx);
    await lockOrder(db, req.orderId);
    const r = await latestReservation(db, req.orderId);
    if (!r) throw notFound("reservation", `of order ${req.orderId}`);
    if (r.status === "released") throw failedPrecondition("the reservation was released", "RESERVATION_RELEASED");
    if (r.status === "expired") throw failedPrecondition("the reservation expired; reserve again", "RESERVATION_EXPIRED");
    if (r.status === "active" && r.due) {
      // Expired but not swept yet: the units go back (committed), then the call fails.
      await giveBack(db, r, "expired", "expired");
      commitThenFail(failedPrecondition("the reservation expired; reserve again", "RESERVATION_EXPIRED"));
    }
    if (r.status === "active") {
      const { items, perRow } = await holdings(db, r.id);
      await lockRows(db, [...perRow.keys()]);
      await moveUnits(db, perRow, -1, -1);
      await db.run("update stock_reservations set status = 'committed', committed_at = now() where id = $1", [r.id]);
      await refreshStock(db, items);
    }
    return { reservation: await reservationMessage(db, r.id) };
  });
}

/** Gives back one expired reservation, if any is due; returns whether one was. Each runs in its own transaction. */
export async function expireOneDue(em: EntityManager): Promise<boolean> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
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
export async function returnStockOfCancelledOrder(db: Sql, orderId: string, reason: string): Promise<void> {
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
  const levels = await db.all<{ product_id: string; variant_id: string | null; location: string; quantity: number; n: number }>(
    `update product_inventory i set quantity = i.quantity + t.n, updated_at = now()
       from unnest($1::uuid[], $2::int[]) as t(id, n) where i.id = t.id
     returning i.product_id, i.variant_id, i.location, i.quantity, t.n`,
    [[...perRow.keys()], [...perRow.values()]],
  );
  for (const level of levels) {
    db.em.create(StockAdjustmentEntity, {
      id: uuidv7(),
      productId: level.product_id,
      variantId: level.variant_id,
      location: level.location,
      quantityBefore: level.quantity - level.n,
      quantityAfter: level.quantity,
      reason: "order_cancelled",
      note: reason,
      actor: "event:order.cancelled",
      referenceId: orderId,
      createdAt: new Date(),
    });
  }
  await db.run("update stock_reservations set stock_returned_at = now() where id = $1", [r.id]);
  await refreshStock(db, items);
  await db.em.flush();
}

export async function listReservations(db: Sql, req: ListReservationsRequest): Promise<Out<ListReservationsResponse>> {
  const where = (p: Params) => {
    const w: string[] = [];
    if (req.orderId) w.push(`r.order_id = ${p.add(req.orderId)}`);
    if (req.productId) w.push(`exists (select 1 from stock_reservation_lines l where l.reservation_id = r.id and l.product_id = ${p.add(req.productId)})`);
    if (req.statuses.length > 0) w.push(`r.status = any(${p.add(req.statuses.map(reservationStatuses.toDb))}::text[])`);
    return w;
  };
  const select = `select ${reservationColumns}, r.created_at::text as created_key from stock_reservations r`;
  const { rows, next } = await newestFirstPage<ReservationDbRow & { created_key: string }>(db, req, { select, alias: "r", where });
  return { reservations: await reservationMessages(db, rows), nextPageToken: next };
}
