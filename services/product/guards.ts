/**
 * Checks shared by the catalog handlers: SKUs, slugs and categories that must
 * exist or be free, and the unique constraints behind them, so a race the
 * checks cannot see still ends in the documented error, not a bare
 * ALREADY_EXISTS.
 */
import { alreadyExists, Code, domainError } from "../../kit/errors.ts";
import { type Sql, uniqueViolation } from "../../kit/sql.ts";

export function skuTaken(field: string) {
  return domainError(Code.AlreadyExists, `${field}: the SKU is used by another product or variant`, { reason: "SKU_TAKEN", field });
}

export function slugTaken(field: string) {
  return domainError(Code.AlreadyExists, `${field}: the slug is used by another ${field.startsWith("category") ? "category" : "product"}`, {
    reason: "SLUG_TAKEN",
    field,
  });
}

export function reviewExists() {
  return alreadyExists("you already reviewed this product; edit your review with UpdateMyReview", "REVIEW_EXISTS");
}

/** Runs `work`, turning unique violations of the catalog's natural keys into their documented errors. */
export async function guarded<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    switch (uniqueViolation(error)) {
      case "product_skus_pkey":
        throw skuTaken("sku");
      case "products_slug_unique":
        throw slugTaken("slug");
      case "categories_slug_unique":
        throw slugTaken("category.slug");
      case "product_variants_attributes_unique":
        throw alreadyExists("another variant of the product has the same attributes", "VARIANT_EXISTS", "attributes");
      case "product_reviews_one_per_user":
        throw reviewExists();
      default:
        throw error;
    }
  }
}

/** SKU_TAKEN unless the SKU is free or belongs to `ownerId` already. */
export async function checkSkuFree(db: Sql, sku: string, field: string, ownerId?: string): Promise<void> {
  const row = await db.one<{ owner_id: string }>("select owner_id from product_skus where sku_key = lower($1)", [sku]);
  if (row && row.owner_id !== ownerId) throw skuTaken(field);
}

/** INVALID_ARGUMENT UNKNOWN_CATEGORY naming the first category id that does not exist. */
export async function checkCategoriesExist(db: Sql, ids: readonly string[], field: string): Promise<void> {
  if (ids.length === 0) return;
  const rows = await db.all<{ id: string }>("select id from categories where id = any($1::uuid[])", [ids]);
  const found = new Set(rows.map((r) => r.id));
  const missing = ids.findIndex((id) => !found.has(id));
  if (missing >= 0) {
    throw domainError(Code.InvalidArgument, `${field}[${missing}]: category ${ids[missing]} does not exist`, {
      reason: "UNKNOWN_CATEGORY",
      field: `${field}[${missing}]`,
    });
  }
}

/**
 * A slug free in `table` for `base`: base itself, else base-2, base-3 ...
 * Serialized per base by an advisory lock, so two creations of the same name
 * never pick the same suffix.
 */
export async function allocateSlug(db: Sql, table: "products" | "categories", base: string): Promise<string> {
  await db.run("select pg_advisory_xact_lock(hashtext($1))", [`${table}:slug:${base}`]);
  // Slugs hold only [a-z0-9-], so LIKE needs no escaping.
  const rows = await db.all<{ slug: string }>(`select slug from ${table} where slug = $1 or slug like $2`, [base, `${base}-%`]);
  const taken = new Set(rows.map((r) => r.slug));
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
}

export async function checkSlugFree(db: Sql, table: "products" | "categories", slug: string, field: string, ownerId?: string): Promise<void> {
  const row = await db.one<{ id: string }>(`select id from ${table} where slug = $1`, [slug]);
  if (row && row.id !== ownerId) throw slugTaken(field);
}
