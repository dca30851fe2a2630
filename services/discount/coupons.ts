/**
 * Admin side of coupon codes: create one, generate many, change limits and
 * windows, look up, list, and the usage listings. Codes are stored in upper
 * case and unique in any letter case (unique index on lower(code)).
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { randomInt } from "node:crypto";
import { LockMode, raw } from "@mikro-orm/core";
import { v7 as uuidv7 } from "uuid";
import {
  type Coupon,
  type CouponUsage,
  type CreateCouponRequest,
  type GenerateCouponsRequest,
  GenerateCouponsRequestSchema,
  type GenerateCouponsResponse,
  GenerateCouponsResponseSchema,
  type GetCouponRequest,
  type ListCouponsRequest,
  type ListCouponsResponse,
  type ListCouponUsageRequest,
  type ListCouponUsageResponse,
  type ListPromotionUsageRequest,
  type ListPromotionUsageResponse,
  type PromotionUsage,
  type UpdateCouponRequest,
} from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { create } from "@bufbuild/protobuf";
import { CouponUsageSchema, PromotionUsageSchema } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { dateOf, timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { alreadyExists, Code, ConnectError, domainError, errorReason, failedPrecondition, invalidArgument, notFound } from "../../kit/errors.ts";
import { applyFieldMask, setField } from "../../kit/field-mask.ts";
import { idempotent } from "../../kit/idempotency.ts";
import { money } from "../../kit/money.ts";
import { newestFirstPage, pageOf } from "../../kit/paging.ts";
import { flushUnique, type Params, sqlOf, uniqueViolation } from "../../kit/sql.ts";
import { CouponEntity, type CouponRow, PromotionEntity, type PromotionRow } from "./entities.ts";
import { couponMessage } from "./mapping.ts";

type Out<T> = Omit<T, "$typeName">;

/** The alphabet of generated codes: no 0/O, 1/I/L look-alikes. */
export const codeAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

const codeTaken = (code: string) => alreadyExists(`the code ${code} exists already (codes are unique in any letter case); choose another`, "CODE_TAKEN", "code");

async function couponPromotion(em: EntityManager, promotionId: string): Promise<PromotionRow> {
  const promotion = await em.findOne(PromotionEntity, { id: promotionId });
  if (!promotion) throw notFound("promotion", promotionId);
  if (promotion.isAutomatic) {
    throw failedPrecondition("the promotion applies to every cart without a code; coupons are for promotions with is_automatic false", "PROMOTION_IS_AUTOMATIC");
  }
  return promotion;
}

/** A new, active coupon row with the limits and window of a CreateCoupon or GenerateCoupons request. */
function newCoupon(
  tx: EntityManager,
  code: string,
  promotionId: string,
  req: { usageLimit: number; usageLimitPerUser: number; startsAt?: Timestamp; endsAt?: Timestamp },
  at: Date,
) {
  return tx.create(CouponEntity, {
    id: uuidv7(),
    code,
    promotionId,
    usageLimit: req.usageLimit,
    usageLimitPerUser: req.usageLimitPerUser,
    timesUsed: 0,
    startsAt: dateOf(req.startsAt) ?? null,
    endsAt: dateOf(req.endsAt) ?? null,
    isActive: true,
    createdAt: at,
    updatedAt: at,
  });
}

export async function createCoupon(em: EntityManager, req: CreateCouponRequest): Promise<{ coupon: Coupon }> {
  return em.transactional(async (tx) => {
    const promotion = await couponPromotion(tx, req.promotionId);
    const code = req.code.toUpperCase();
    const at = new Date();
    const row = newCoupon(tx, code, promotion.id, req, at);
    await flushUnique(tx, () => codeTaken(code));
    return { coupon: couponMessage(row, promotion.name) };
  });
}

/** Draws one code: the prefix and `length` characters of the alphabet. */
export type DrawCode = (prefix: string, length: number) => string;

const randomCode: DrawCode = (prefix, length) => {
  let s = prefix;
  for (let i = 0; i < length; i++) s += codeAlphabet[randomInt(codeAlphabet.length)];
  return s;
};

/** Batches drawn again when a drawn code is taken between the check and the insert. */
const generateAttempts = 5;

/** `draw` is the random source (a test passes its own to force a collision). */
export async function generateCoupons(em: EntityManager, req: GenerateCouponsRequest, draw: DrawCode = randomCode): Promise<Out<GenerateCouponsResponse>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await generateBatch(em, req, draw);
    } catch (error) {
      // A code found unused can still be created (CreateCoupon, another batch) before this batch inserts it:
      // the transaction rolled back, idempotency key included, so the batch is drawn again from scratch.
      if (uniqueViolation(error) !== "coupons_code_unique") throw error;
      if (attempt === generateAttempts) {
        throw domainError(Code.Aborted, "the codes drawn kept being taken by concurrent calls; retry", { reason: "CONCURRENT_MODIFICATION" });
      }
    }
  }
}

async function generateBatch(em: EntityManager, req: GenerateCouponsRequest, draw: DrawCode): Promise<Out<GenerateCouponsResponse>> {
  const prefix = req.prefix.toUpperCase();
  const length = req.randomLength || 10;
  try {
    return await idempotent(
      em,
      { scope: "GenerateCoupons", key: req.idempotencyKey, requestSchema: GenerateCouponsRequestSchema, request: req, responseSchema: GenerateCouponsResponseSchema },
      async (tx) => {
        const promotion = await couponPromotion(tx, req.promotionId);
        // Draw until `count` codes are new: distinct among themselves and unused in any letter case.
        const codes = new Set<string>();
        for (let round = 0; codes.size < req.count; round++) {
          if (round === 20) throw failedPrecondition("could not find enough unused codes; use a longer random_length or another prefix", "CODE_SPACE_EXHAUSTED");
          const fresh = new Set<string>();
          while (fresh.size < req.count - codes.size) {
            const c = draw(prefix, length);
            if (!codes.has(c)) fresh.add(c);
          }
          const taken = await sqlOf(tx).all<{ code: string }>("select upper(code) as code from coupons where lower(code) = any($1::text[])", [
            [...fresh].map((c) => c.toLowerCase()),
          ]);
          const takenSet = new Set(taken.map((t) => t.code));
          for (const c of fresh) if (!takenSet.has(c)) codes.add(c);
        }
        const at = new Date();
        const rows = [...codes].map((code) => newCoupon(tx, code, promotion.id, req, at));
        await tx.flush();
        return create(GenerateCouponsResponseSchema, { coupons: rows.map((r) => couponMessage(r, promotion.name)) });
      },
    );
  } catch (error) {
    // The contract answers a reused key with ALREADY_EXISTS (the kit says FAILED_PRECONDITION).
    if (error instanceof ConnectError && errorReason(error) === "IDEMPOTENCY_KEY_REUSED") {
      throw domainError(Code.AlreadyExists, "this idempotency_key was used with other parameters; use a new key for a new batch", {
        reason: "IDEMPOTENCY_KEY_REUSED",
        field: "idempotency_key",
      });
    }
    throw error;
  }
}

async function promotionName(em: EntityManager, promotionId: string): Promise<string> {
  return (await em.findOne(PromotionEntity, { id: promotionId }, { fields: ["name"] }))?.name ?? "";
}

export async function updateCoupon(em: EntityManager, req: UpdateCouponRequest): Promise<{ coupon: Coupon }> {
  const input = req.coupon!;
  return em.transactional(async (tx) => {
    // Locked: redemptions change times_used under the same lock.
    const row = await tx.findOne(CouponEntity, { id: input.id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (!row) throw notFound("coupon", input.id);
    const changed = applyFieldMask(req.updateMask, row, input, {
      usage_limit: setField((i: Coupon) => i.usageLimit, (r: CouponRow) => r.usageLimit, (r, v) => (r.usageLimit = v)),
      usage_limit_per_user: setField((i: Coupon) => i.usageLimitPerUser, (r: CouponRow) => r.usageLimitPerUser, (r, v) => (r.usageLimitPerUser = v)),
      starts_at: setField((i: Coupon) => dateOf(i.startsAt) ?? null, (r: CouponRow) => r.startsAt ?? null, (r, v) => (r.startsAt = v)),
      ends_at: setField((i: Coupon) => dateOf(i.endsAt) ?? null, (r: CouponRow) => r.endsAt ?? null, (r, v) => (r.endsAt = v)),
      is_active: setField((i: Coupon) => i.isActive, (r: CouponRow) => r.isActive, (r, v) => (r.isActive = v)),
    });
    if (row.usageLimit > 0 && row.usageLimit < row.timesUsed) {
      throw domainError(Code.InvalidArgument, `coupon.usage_limit: is below the ${row.timesUsed} uses already made; set at least that, or 0 for no limit`, {
        field: "coupon.usage_limit",
        reason: "USAGE_LIMIT_BELOW_USED",
      });
    }
    if (row.startsAt && row.endsAt && row.endsAt <= row.startsAt) throw invalidArgument("coupon.ends_at", "must be after starts_at");
    if (changed.length > 0) row.updatedAt = new Date();
    return { coupon: couponMessage(row, await promotionName(tx, row.promotionId)) };
  });
}

export async function getCoupon(em: EntityManager, req: GetCouponRequest): Promise<{ coupon: Coupon }> {
  const lookup = req.lookup;
  const row =
    lookup.case === "couponId"
      ? await em.findOne(CouponEntity, { id: lookup.value })
      : await em.findOne(CouponEntity, { [raw("lower(code)")]: (lookup.value ?? "").toLowerCase() });
  if (!row) throw notFound("coupon", lookup.value ?? "");
  return { coupon: couponMessage(row, await promotionName(em, row.promotionId)) };
}

const couponSorts = {
  "created_at desc": { expr: "c.created_at", type: "timestamptz", desc: true },
  "created_at asc": { expr: "c.created_at", type: "timestamptz", desc: false },
  "code asc": { expr: "c.code", type: "text", desc: false },
  "times_used desc": { expr: "c.times_used", type: "int", desc: true },
} as const;

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

export async function listCoupons(em: EntityManager, req: ListCouponsRequest): Promise<Out<ListCouponsResponse>> {
  const sort = couponSorts[(req.orderBy || "created_at desc") as keyof typeof couponSorts];
  const pages = pageOf(req, { k: sort.type, i: "uuid" });
  const params: unknown[] = [];
  const $ = (v: unknown) => (params.push(v), `$${params.length}`);
  const where: string[] = [];
  if (req.promotionId) where.push(`c.promotion_id = ${$(req.promotionId)}::uuid`);
  // Codes are stored in upper case, so the prefix matches in upper case (and can use a text index).
  if (req.codePrefix) where.push(`c.code like ${$(`${escapeLike(req.codePrefix.toUpperCase())}%`)}`);
  if (req.isActive !== undefined) where.push(`c.is_active = ${$(req.isActive)}`);
  if (req.exhaustedOnly) where.push("c.usage_limit > 0 and c.times_used >= c.usage_limit");
  if (pages.after) where.push(`(${sort.expr}, c.id) ${sort.desc ? "<" : ">"} (${$(pages.after.k)}::${sort.type}, ${$(pages.after.i)}::uuid)`);
  const dir = sort.desc ? "desc" : "asc";
  const rows = await sqlOf(em).all<{ id: string; sort_key: string; promotion_name: string }>(
    `select c.id, (${sort.expr})::text as sort_key, p.name as promotion_name from coupons c join promotions p on p.id = c.promotion_id
      ${where.length ? `where ${where.join(" and ")}` : ""} order by ${sort.expr} ${dir}, c.id ${dir} limit ${$(pages.size + 1)}`,
    params,
  );
  const page = rows.slice(0, pages.size);
  const byId = new Map((await em.find(CouponEntity, { id: { $in: page.map((r) => r.id) } })).map((c) => [c.id, c]));
  const last = page[page.length - 1];
  return {
    coupons: page.map((r) => couponMessage(byId.get(r.id)!, r.promotion_name)),
    nextPageToken: rows.length > pages.size && last ? pages.next({ k: last.sort_key, i: last.id } as never) : "",
  };
}

interface UsageRow {
  id: string;
  coupon_id: string | null;
  coupon_code: string | null;
  promotion_id: string;
  user_id: string;
  order_id: string;
  discount_amount_minor: string;
  currency: string;
  created_at: Date;
  created_key: string;
  released_at: Date | null;
}

/** One usage listing, newest first, keyset-paged on (created_at, id). */
async function listUsage(
  em: EntityManager,
  req: (ListCouponUsageRequest | ListPromotionUsageRequest) & { couponId?: string },
  table: "coupon_usage" | "promotion_usage",
): Promise<{ rows: UsageRow[]; next: string }> {
  const where = (p: Params) => {
    const w: string[] = [];
    if (req.couponId) w.push(`u.coupon_id = ${p.add(req.couponId)}::uuid`);
    if (req.promotionId) w.push(`u.promotion_id = ${p.add(req.promotionId)}::uuid`);
    if (req.userId) w.push(`u.user_id = ${p.add(req.userId)}::uuid`);
    if (req.orderId) w.push(`u.order_id = ${p.add(req.orderId)}::uuid`);
    if (!req.includeReleased) w.push("u.released_at is null");
    return w;
  };
  const select = `select u.id, u.coupon_id, c.code as coupon_code, u.promotion_id, u.user_id, u.order_id, u.discount_amount_minor, u.currency,
            u.created_at, u.created_at::text as created_key, u.released_at
       from ${table} u left join coupons c on c.id = u.coupon_id`;
  return newestFirstPage<UsageRow>(sqlOf(em), req, { select, alias: "u", where });
}

export async function listCouponUsage(em: EntityManager, req: ListCouponUsageRequest): Promise<Out<ListCouponUsageResponse>> {
  const { rows, next } = await listUsage(em, req, "coupon_usage");
  const usages: CouponUsage[] = rows.map((r) =>
    create(CouponUsageSchema, {
      id: r.id,
      couponId: r.coupon_id ?? "",
      couponCode: r.coupon_code ?? "",
      promotionId: r.promotion_id,
      userId: r.user_id,
      orderId: r.order_id,
      discountAmount: money(r.discount_amount_minor, r.currency),
      createdAt: timestampOf(r.created_at),
      releasedAt: timestampOf(r.released_at),
    }),
  );
  return { usages, nextPageToken: next };
}

export async function listPromotionUsage(em: EntityManager, req: ListPromotionUsageRequest): Promise<Out<ListPromotionUsageResponse>> {
  const { rows, next } = await listUsage(em, req, "promotion_usage");
  const usages: PromotionUsage[] = rows.map((r) =>
    create(PromotionUsageSchema, {
      id: r.id,
      promotionId: r.promotion_id,
      couponId: r.coupon_id ?? "",
      userId: r.user_id,
      orderId: r.order_id,
      discountAmount: money(r.discount_amount_minor, r.currency),
      createdAt: timestampOf(r.created_at),
      releasedAt: timestampOf(r.released_at),
    }),
  );
  return { usages, nextPageToken: next };
}
