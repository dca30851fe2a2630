/**
 * Admin CRUD of promotions and their rules. The contract's rules checked the
 * shapes (value matches type, amounts in currency_code, windows); here the
 * checks that need the stored row: the shop's currencies, a mask path that
 * does not fit the type, a budget below what is already spent (under the
 * row's lock, so a concurrent redemption cannot slip between check and write).
 */
import { LockMode } from "@mikro-orm/core";
import { v7 as uuidv7 } from "uuid";
import {
  type AddDiscountRuleRequest,
  type AddDiscountRuleResponse,
  type CreatePromotionRequest,
  type CreatePromotionResponse,
  type DiscountRule,
  DiscountRuleType,
  type ListPromotionsRequest,
  type ListPromotionsResponse,
  type Promotion,
  PromotionType,
  type RemoveDiscountRuleRequest,
  type UpdatePromotionRequest,
} from "../../gen/ecommerce/discount/v1/discount_pb.js";
import type { Money } from "../../gen/ecommerce/common/v1/money_pb.js";
import { dateOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { alreadyExists, Code, domainError, invalidArgument, notFound } from "../../kit/errors.ts";
import { applyFieldMask, setField } from "../../kit/field-mask.ts";
import { pageOf } from "../../kit/paging.ts";
import { flushUnique, sqlOf } from "../../kit/sql.ts";
import type { DiscountConfig } from "./config.ts";
import { DiscountRuleEntity, type DiscountRuleRow, PromotionEntity, type PromotionRow } from "./entities.ts";
import { promotionMessage, promotionTypes, ruleTypes, ruleValueOf } from "./mapping.ts";

type Out<T> = Omit<T, "$typeName">;

export const promotionNotFound = (id: string) => notFound("promotion", id);

const mismatch = (field: string, message: string) => domainError(Code.InvalidArgument, `${field}: ${message}`, { field, reason: "VALUE_TYPE_MISMATCH" });
const currencyMismatch = (field: string, message: string) => domainError(Code.InvalidArgument, `${field}: ${message}`, { field, reason: "CURRENCY_MISMATCH" });

function checkShopCurrency(config: DiscountConfig, currency: string): void {
  if (currency !== "" && !config.shopCurrencies.has(currency)) {
    throw domainError(Code.InvalidArgument, `currency_code: the shop does not sell in ${currency} (it sells in ${[...config.shopCurrencies].join(", ")})`, {
      field: "currency_code",
      reason: "UNSUPPORTED_CURRENCY",
    });
  }
}

/** A promotion row and its rules, or NOT_FOUND; `lock` takes the row lock for the transaction. */
export async function findPromotion(em: EntityManager, id: string, lock = false): Promise<{ row: PromotionRow; rules: DiscountRuleRow[] }> {
  const row = await em.findOne(PromotionEntity, { id }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
  if (!row) throw promotionNotFound(id);
  return { row, rules: await em.find(DiscountRuleEntity, { promotionId: id }) };
}

function newRule(em: EntityManager, promotionId: string, rule: DiscountRule): DiscountRuleRow {
  return em.create(DiscountRuleEntity, { id: uuidv7(), promotionId, ruleType: ruleTypes.toDb(rule.ruleType), value: ruleValueOf(rule), createdAt: new Date() });
}

export async function createPromotion(em: EntityManager, config: DiscountConfig, req: CreatePromotionRequest): Promise<Out<CreatePromotionResponse>> {
  checkShopCurrency(config, req.currencyCode);
  const hasAmounts = req.value.case === "amountOff" || req.maxDiscount || req.budget || req.rules.some((r) => r.ruleType === DiscountRuleType.MIN_SUBTOTAL);
  if (hasAmounts && req.currencyCode === "") {
    throw invalidArgument("currency_code", "is required for a promotion with amounts (amount_off, max_discount, budget or a min_subtotal rule)", "CURRENCY_REQUIRED");
  }
  return em.transactional(async (tx) => {
    const at = new Date();
    const bxgy = req.value.case === "buyXGetY" ? req.value.value : undefined;
    const row = tx.create(PromotionEntity, {
      id: uuidv7(),
      name: req.name,
      description: req.description,
      type: promotionTypes.toDb(req.type),
      percentOffBps: req.value.case === "percentOffBps" ? req.value.value : null,
      amountOffMinor: req.value.case === "amountOff" ? req.value.value.amountMinor : null,
      buyQuantity: bxgy?.buyQuantity ?? null,
      getQuantity: bxgy?.getQuantity ?? null,
      getDiscountBps: bxgy?.getDiscountBps ?? null,
      maxApplications: bxgy?.maxApplications ?? null,
      maxDiscountMinor: req.maxDiscount?.amountMinor ?? null,
      currency: req.currencyCode || null,
      isAutomatic: req.isAutomatic,
      priority: req.priority,
      stackable: req.stackable,
      budgetMinor: req.budget?.amountMinor ?? null,
      budgetUsedMinor: 0n,
      usageCount: 0n,
      startsAt: dateOf(req.startsAt) ?? null,
      endsAt: dateOf(req.endsAt) ?? null,
      isActive: req.isActive,
      createdAt: at,
      updatedAt: at,
    });
    // The entities declare no relations, so the promotion is written before the rules that reference it.
    await tx.flush();
    const rules = req.rules.map((r) => newRule(tx, row.id, r));
    await tx.flush();
    return { promotion: promotionMessage(row, rules) };
  });
}

/** An amount of an update, in the promotion's currency. */
function amountIn(row: PromotionRow, field: string, m: Money | undefined): bigint | null {
  if (!m) return null;
  if (m.currencyCode !== (row.currency ?? "")) {
    throw currencyMismatch(field, row.currency ? `must be in the promotion's currency ${row.currency}` : "the promotion has no currency (it applies in every currency); create a new promotion with one");
  }
  return m.amountMinor;
}

export async function updatePromotion(em: EntityManager, req: UpdatePromotionRequest): Promise<{ promotion: Promotion }> {
  const input = req.promotion!;
  const paths = new Set(req.updateMask!.paths);
  return em.transactional(async (tx) => {
    // Locked: redemptions change budget_used under the same lock (their conditional UPDATE).
    const { row, rules } = await findPromotion(tx, input.id, true);
    const type = promotionTypes.fromDb(row.type);
    const valueFields = { percent_off_bps: PromotionType.PERCENTAGE, amount_off: PromotionType.FIXED_AMOUNT, buy_x_get_y: PromotionType.BUY_X_GET_Y } as const;
    for (const [path, wanted] of Object.entries(valueFields)) {
      if (!paths.has(path)) continue;
      if (wanted !== type) throw mismatch(`promotion.${path}`, `does not fit a ${row.type} promotion (type never changes: create a new promotion instead)`);
      const expected = { percent_off_bps: "percentOffBps", amount_off: "amountOff", buy_x_get_y: "buyXGetY" }[path];
      if (input.value.case !== expected) throw invalidArgument(`promotion.${path}`, "is named in update_mask but not set");
    }
    if (paths.has("max_discount") && input.maxDiscount && type !== PromotionType.PERCENTAGE && type !== PromotionType.BUY_X_GET_Y) {
      throw mismatch("promotion.max_discount", "is only for percentage and buy_x_get_y promotions");
    }
    const changed = applyFieldMask(req.updateMask, row, input, {
      name: setField((i: Promotion) => i.name, (r: PromotionRow) => r.name, (r, v) => (r.name = v)),
      description: setField((i: Promotion) => i.description, (r: PromotionRow) => r.description, (r, v) => (r.description = v)),
      percent_off_bps: setField(
        (i: Promotion) => (i.value.case === "percentOffBps" ? i.value.value : null),
        (r: PromotionRow) => r.percentOffBps ?? null,
        (r, v) => (r.percentOffBps = v),
      ),
      amount_off: setField(
        (i: Promotion) => amountIn(row, "promotion.amount_off", i.value.case === "amountOff" ? i.value.value : undefined),
        (r: PromotionRow) => (r.amountOffMinor === null || r.amountOffMinor === undefined ? null : BigInt(r.amountOffMinor)),
        (r, v) => (r.amountOffMinor = v),
      ),
      buy_x_get_y: (r: PromotionRow, i: Promotion) => {
        if (i.value.case !== "buyXGetY") return false;
        const v = i.value.value;
        if (r.buyQuantity === v.buyQuantity && r.getQuantity === v.getQuantity && r.getDiscountBps === v.getDiscountBps && r.maxApplications === v.maxApplications) return false;
        Object.assign(r, { buyQuantity: v.buyQuantity, getQuantity: v.getQuantity, getDiscountBps: v.getDiscountBps, maxApplications: v.maxApplications });
        return true;
      },
      max_discount: setField(
        (i: Promotion) => amountIn(row, "promotion.max_discount", i.maxDiscount),
        (r: PromotionRow) => (r.maxDiscountMinor === null || r.maxDiscountMinor === undefined ? null : BigInt(r.maxDiscountMinor)),
        (r, v) => (r.maxDiscountMinor = v),
      ),
      priority: setField((i: Promotion) => i.priority, (r: PromotionRow) => r.priority, (r, v) => (r.priority = v)),
      stackable: setField((i: Promotion) => i.stackable, (r: PromotionRow) => r.stackable, (r, v) => (r.stackable = v)),
      budget: setField(
        (i: Promotion) => amountIn(row, "promotion.budget", i.budget),
        (r: PromotionRow) => (r.budgetMinor === null || r.budgetMinor === undefined ? null : BigInt(r.budgetMinor)),
        (r, v) => (r.budgetMinor = v),
      ),
      starts_at: setField((i: Promotion) => dateOf(i.startsAt) ?? null, (r: PromotionRow) => r.startsAt ?? null, (r, v) => (r.startsAt = v)),
      ends_at: setField((i: Promotion) => dateOf(i.endsAt) ?? null, (r: PromotionRow) => r.endsAt ?? null, (r, v) => (r.endsAt = v)),
      is_active: setField((i: Promotion) => i.isActive, (r: PromotionRow) => r.isActive, (r, v) => (r.isActive = v)),
    });
    if (row.budgetMinor !== null && row.budgetMinor !== undefined && BigInt(row.budgetMinor) < BigInt(row.budgetUsedMinor)) {
      throw domainError(Code.InvalidArgument, `promotion.budget: is below the ${row.budgetUsedMinor} already given away; raise it or release redemptions first`, {
        field: "promotion.budget",
        reason: "BUDGET_BELOW_USED",
        metadata: { budget_used_minor: String(row.budgetUsedMinor) },
      });
    }
    if (row.startsAt && row.endsAt && row.endsAt <= row.startsAt) throw invalidArgument("promotion.ends_at", "must be after starts_at");
    if (changed.length > 0) row.updatedAt = new Date();
    return { promotion: promotionMessage(row, rules) };
  });
}

export async function getPromotion(em: EntityManager, id: string): Promise<{ promotion: Promotion }> {
  const { row, rules } = await findPromotion(em, id);
  return { promotion: promotionMessage(row, rules) };
}

export async function deactivatePromotion(em: EntityManager, id: string): Promise<{ promotion: Promotion }> {
  return em.transactional(async (tx) => {
    const { row, rules } = await findPromotion(tx, id, true);
    if (row.isActive) {
      row.isActive = false;
      row.updatedAt = new Date();
    }
    return { promotion: promotionMessage(row, rules) };
  });
}

export async function addDiscountRule(em: EntityManager, req: AddDiscountRuleRequest): Promise<Out<AddDiscountRuleResponse>> {
  const rule = req.rule!;
  return em.transactional(async (tx) => {
    const { row, rules } = await findPromotion(tx, req.promotionId, true);
    if (rule.value.case === "minSubtotal" && rule.value.value.currencyCode !== (row.currency ?? "")) {
      throw currencyMismatch(
        "rule.min_subtotal",
        row.currency ? `must be in the promotion's currency ${row.currency}` : "the promotion has no currency; create a new promotion with one for a min_subtotal rule",
      );
    }
    if (rules.some((r) => r.ruleType === ruleTypes.toDb(rule.ruleType))) {
      throw alreadyExists(`the promotion already has a ${ruleTypes.toDb(rule.ruleType)} rule; remove it first`, "RULE_TYPE_EXISTS", "rule.rule_type");
    }
    const added = newRule(tx, row.id, rule);
    row.updatedAt = new Date();
    // A concurrent AddDiscountRule of the same type may win the unique constraint.
    await flushUnique(tx, () => alreadyExists("the promotion already has a rule of this type; remove it first", "RULE_TYPE_EXISTS", "rule.rule_type"));
    const all = [...rules, added];
    return { rule: promotionMessage(row, [added]).rules[0], promotion: promotionMessage(row, all) };
  });
}

export async function removeDiscountRule(em: EntityManager, req: RemoveDiscountRuleRequest): Promise<{ promotion: Promotion }> {
  return em.transactional(async (tx) => {
    const { row, rules } = await findPromotion(tx, req.promotionId, true);
    const rule = rules.find((r) => r.id === req.ruleId);
    if (!rule) throw notFound("discount_rule", req.ruleId);
    tx.remove(rule);
    row.updatedAt = new Date();
    return { promotion: promotionMessage(row, rules.filter((r) => r !== rule)) };
  });
}

/** Sort keys of ListPromotions: the SQL expression, its cursor type, and the direction of order_by. */
const sorts = {
  "created_at desc": { expr: "created_at", type: "timestamptz", desc: true },
  "created_at asc": { expr: "created_at", type: "timestamptz", desc: false },
  "priority desc": { expr: "priority", type: "int", desc: true },
  // Unset dates sort as the earliest start and the latest end.
  "starts_at desc": { expr: "coalesce(starts_at, '-infinity'::timestamptz)", type: "timestamptz", desc: true },
  "ends_at asc": { expr: "coalesce(ends_at, 'infinity'::timestamptz)", type: "timestamptz", desc: false },
  "name asc": { expr: "name", type: "text", desc: false },
} as const;

/** SQL of a promotion that is live at $n: active, within its window, budget not used up. */
export const liveSql = (at: string) =>
  `is_active and (starts_at is null or starts_at <= ${at}) and (ends_at is null or ends_at > ${at}) and (budget_minor is null or budget_used_minor < budget_minor)`;

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

export async function listPromotions(em: EntityManager, req: ListPromotionsRequest): Promise<Out<ListPromotionsResponse>> {
  const sort = sorts[(req.orderBy || "created_at desc") as keyof typeof sorts];
  const pages = pageOf(req, { k: sort.type, i: "uuid" });
  const params: unknown[] = [];
  const $ = (v: unknown) => (params.push(v), `$${params.length}`);
  const where: string[] = [];
  if (req.isActive !== undefined) where.push(`is_active = ${$(req.isActive)}`);
  if (req.isAutomatic !== undefined) where.push(`is_automatic = ${$(req.isAutomatic)}`);
  if (req.type !== PromotionType.UNSPECIFIED) where.push(`type = ${$(promotionTypes.toDb(req.type))}`);
  if (req.liveOnly) where.push(liveSql(`${$(new Date())}::timestamptz`));
  if (req.nameContains !== "") where.push(`name ilike ${$(`%${escapeLike(req.nameContains)}%`)}`);
  if (pages.after) where.push(`(${sort.expr}, id) ${sort.desc ? "<" : ">"} (${$(pages.after.k)}::${sort.type}, ${$(pages.after.i)}::uuid)`);
  const dir = sort.desc ? "desc" : "asc";
  const rows = await sqlOf(em).all<{ id: string; sort_key: string }>(
    `select id, (${sort.expr})::text as sort_key from promotions ${where.length ? `where ${where.join(" and ")}` : ""}
      order by ${sort.expr} ${dir}, id ${dir} limit ${$(pages.size + 1)}`,
    params,
  );
  const page = rows.slice(0, pages.size);
  const ids = page.map((r) => r.id);
  const found = await em.find(PromotionEntity, { id: { $in: ids } });
  const rules = await em.find(DiscountRuleEntity, { promotionId: { $in: ids } });
  const byId = new Map(found.map((p) => [p.id, p]));
  const last = page[page.length - 1];
  return {
    promotions: page.map((r) => promotionMessage(byId.get(r.id)!, rules.filter((x) => x.promotionId === r.id))),
    nextPageToken: rows.length > pages.size && last ? pages.next({ k: last.sort_key, i: last.id }) : "",
  };
}
