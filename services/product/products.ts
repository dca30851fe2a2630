/**
 * Products: create, read (by id, slug, batch, filtered lists), update by field
 * mask, archive, and the tag set. Customers, anonymous and internal callers
 * only ever see ACTIVE, visible products (others are NOT_FOUND); admins see
 * all, with the cost price. Every change publishes its event in the same
 * transaction (product.created, product.updated with the changed paths and
 * price changes, product.archived).
 */
import { create } from "@bufbuild/protobuf";
import type { Money } from "../../gen/ecommerce/common/v1/money_pb.js";
import { ProductArchivedSchema, ProductCreatedSchema, type PriceChange, PriceChangeSchema, ProductUpdatedSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import {
  type ArchiveProductRequest,
  type ArchiveProductResponse,
  type BatchGetProductsRequest,
  type BatchGetProductsResponse,
  type CreateProductRequest,
  type CreateProductResponse,
  type GetProductRequest,
  type GetProductResponse,
  type ListProductsRequest,
  type ListProductsResponse,
  type Product,
  ProductOrderBy,
  ProductStatus,
  type SetProductTagsRequest,
  type SetProductTagsResponse,
  type UpdateProductRequest,
  type UpdateProductResponse,
} from "../../gen/ecommerce/product/v1/product_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition, invalidArgument, notFound, permissionDenied } from "../../kit/errors.ts";
import { publishEvent } from "../../kit/events/outbox.ts";
import { type CursorScalar, pageOf } from "../../kit/paging.ts";
import { v7 as uuidv7 } from "uuid";
import { fullProductRows, loadProduct, loadProducts, productMessage, productRow, productSnapshot, refreshPriceRange } from "./catalog.ts";
import { ProductEntity, type ProductRow } from "./entities.ts";
import { categorySubtree } from "./categories.ts";
import { allocateSlug, checkCategoriesExist, checkSkuFree, checkSlugFree, guarded } from "./guards.ts";
import { customerVisible, normalizeTags, productStatuses, slugify, type Viewer } from "./mapping.ts";
import { money } from "../../kit/money.ts";
import { Params, type Sql, sqlOf } from "../../kit/sql.ts";
import { applyFieldMask, maskPaths, setField } from "../../kit/field-mask.ts";
import { LockMode } from "@mikro-orm/core";
import { refreshProductStock, refreshVariantStatuses } from "./stock-state.ts";

type Out<T> = Omit<T, "$typeName">;

const currencyMismatch = (field: string, currency: string) =>
  domainError(Code.InvalidArgument, `${field}: prices of a product and its variants share one currency (${currency})`, { reason: "CURRENCY_MISMATCH", field });

/** Replaces a product's tags (one set-based insert, so the search document is refreshed once); returns whether the set changed. */
export async function replaceTags(db: Sql, productId: string, tags: string[]): Promise<boolean> {
  const current = (await db.all<{ tag: string }>("select tag from product_tags where product_id = $1 order by tag", [productId])).map((r) => r.tag);
  if (current.join("\n") === tags.join("\n")) return false;
  await db.run("delete from product_tags where product_id = $1", [productId]);
  if (tags.length > 0) {
    await db.run("insert into product_tags (id, product_id, tag) select gen_random_uuid(), $1, t from unnest($2::text[]) as t", [productId, tags]);
  }
  return true;
}

/** Replaces a product's categories (the first is primary); returns whether the list changed. */
async function replaceCategories(db: Sql, productId: string, categoryIds: readonly string[]): Promise<boolean> {
  const current = (await db.all<{ category_id: string }>("select category_id from product_categories where product_id = $1 order by position, created_at", [productId])).map(
    (r) => r.category_id,
  );
  if (current.join(",") === categoryIds.join(",")) return false;
  await db.run("delete from product_categories where product_id = $1", [productId]);
  if (categoryIds.length > 0) {
    await db.run(
      `insert into product_categories (id, product_id, category_id, position)
       select gen_random_uuid(), $1, c.id, c.position - 1 from unnest($2::uuid[]) with ordinality as c(id, position)`,
      [productId, categoryIds],
    );
  }
  return true;
}

export async function createProduct(em: EntityManager, viewer: Viewer, req: CreateProductRequest): Promise<Out<CreateProductResponse>> {
  const price = req.price!;
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = sqlOf(tx);
      await checkCategoriesExist(db, req.categoryIds, "category_ids");
      await checkSkuFree(db, req.sku, "sku");
      let slug = req.slug;
      if (slug) await checkSlugFree(db, "products", slug, "slug");
      else slug = await allocateSlug(db, "products", slugify(req.name, "product"));
      const id = uuidv7();
      const active = req.status === ProductStatus.ACTIVE;
      const d = req.dimensions;
      const now = new Date();
      tx.create(ProductEntity, {
        id,
        sku: req.sku,
        name: req.name,
        slug,
        description: req.description,
        shortDescription: req.shortDescription,
        currency: price.currencyCode,
        priceMinor: price.amountMinor,
        compareAtPriceMinor: req.compareAtPrice?.amountMinor ?? null,
        costPriceMinor: req.costPrice?.amountMinor ?? null,
        status: active ? "active" : "draft",
        isVisible: req.isVisible,
        allowBackorder: req.allowBackorder,
        stockStatus: req.allowBackorder ? "backorder" : "out_of_stock",
        weightGrams: req.weightGrams,
        lengthMm: d ? d.lengthMm : null,
        widthMm: d ? d.widthMm : null,
        heightMm: d ? d.heightMm : null,
        metaTitle: req.metaTitle,
        metaDescription: req.metaDescription,
        attributes: req.attributes,
        minPriceMinor: price.amountMinor,
        maxPriceMinor: price.amountMinor,
        createdAt: now,
        updatedAt: now,
        publishedAt: active ? now : null,
      });
      await tx.flush();
      await replaceCategories(db, id, req.categoryIds);
      await replaceTags(db, id, normalizeTags(req.tags));
      publishEvent(tx, ProductCreatedSchema, { productId: id, product: await productSnapshot(db, id), actorUserId: viewer.userId ?? "" });
      return { product: (await loadProduct(db, id, viewer))! };
    }),
  );
}

/** One statement: the product with its relations, by id or by slug. */
export async function getProduct(db: Sql, viewer: Viewer, req: GetProductRequest): Promise<Out<GetProductResponse>> {
  const lookup = req.lookup;
  const [row] =
    lookup.case === "id" || lookup.case === "slug"
      ? await fullProductRows(db, lookup.case === "id" ? "p.id = $1::uuid" : "p.slug = $1", [lookup.value], viewer)
      : [];
  if (!row) throw notFound("product", lookup.value ?? "");
  return { product: productMessage(row, viewer) };
}

export async function batchGetProducts(db: Sql, viewer: Viewer, req: BatchGetProductsRequest): Promise<Out<BatchGetProductsResponse>> {
  const ids = [...new Set(req.ids)];
  const found = await loadProducts(db, ids, viewer);
  return {
    products: ids.map((id) => found.get(id)).filter((p): p is Product => p !== undefined),
    notFoundIds: ids.filter((id) => !found.has(id)),
  };
}

interface SortSpec {
  /** Expressions of the sort key, compared as one row. */
  keys: string[];
  /** PostgreSQL types of the keys: the casts of the cursor's values, and their types in the page token. */
  casts: CursorScalar[];
  direction: "asc" | "desc";
}

const newest = "coalesce(p.published_at, p.created_at)";
const sorts: Record<ProductOrderBy, SortSpec> = {
  [ProductOrderBy.UNSPECIFIED]: { keys: [newest, "p.id"], casts: ["timestamptz", "uuid"], direction: "desc" },
  [ProductOrderBy.NEWEST]: { keys: [newest, "p.id"], casts: ["timestamptz", "uuid"], direction: "desc" },
  [ProductOrderBy.PRICE_ASC]: { keys: ["p.min_price_minor", "p.id"], casts: ["bigint", "uuid"], direction: "asc" },
  [ProductOrderBy.PRICE_DESC]: { keys: ["p.min_price_minor", "p.id"], casts: ["bigint", "uuid"], direction: "desc" },
  [ProductOrderBy.NAME_ASC]: { keys: ["lower(p.name)", "p.id"], casts: ["text", "uuid"], direction: "asc" },
  [ProductOrderBy.RATING_DESC]: {
    keys: ["p.rating_average_hundredths", "p.rating_count", newest, "p.id"],
    casts: ["int", "int", "timestamptz", "uuid"],
    direction: "desc",
  },
};

export async function listProducts(db: Sql, viewer: Viewer, shopCurrency: string, req: ListProductsRequest): Promise<Out<ListProductsResponse>> {
  const p = new Params();
  const where: string[] = [];
  if (!viewer.admin) {
    if (req.statuses.some((s) => s !== ProductStatus.ACTIVE)) throw permissionDenied("only admins may list products that are not ACTIVE");
    where.push(customerVisible);
  } else {
    if (req.statuses.length > 0) where.push(`p.status = any(${p.add(req.statuses.map(productStatuses.toDb))}::text[])`);
    if (req.isVisible !== undefined) where.push(`p.is_visible = ${p.add(req.isVisible)}`);
  }
  if (req.categoryId) {
    const subtree = await categorySubtree(db, req.categoryId, viewer.admin);
    where.push(`exists (select 1 from product_categories pc where pc.product_id = p.id and pc.category_id = any(${p.add(subtree)}::uuid[]))`);
  }
  for (const [field, m] of [
    ["min_price", req.minPrice],
    ["max_price", req.maxPrice],
  ] as const) {
    if (m && m.currencyCode !== shopCurrency) {
      throw domainError(Code.InvalidArgument, `${field}: prices are filtered in the shop's currency ${shopCurrency}`, { reason: "CURRENCY_MISMATCH", field });
    }
  }
  if (req.minPrice || req.maxPrice) where.push(priceCondition(p, req.minPrice, req.maxPrice));
  if (req.tags.length > 0) {
    const tags = normalizeTags(req.tags);
    where.push(`(select count(*) from product_tags t where t.product_id = p.id and t.tag = any(${p.add(tags)}::text[])) = ${p.add(tags.length)}`);
  }
  if (Object.keys(req.attributes).length > 0) where.push(`p.attributes @> ${p.add(JSON.stringify(req.attributes))}::jsonb`);
  if (req.inStockOnly) where.push("p.stock_status in ('in_stock', 'backorder')");
  if (req.minRating > 0) where.push(`p.rating_average_hundredths >= ${p.add(req.minRating * 100)}`);

  const sort = sorts[req.orderBy];
  const pages = pageOf(req, { k: sort.casts });
  const { after: cursor, size } = pages;
  const filter = where.length > 0 ? `where ${where.join(" and ")}` : "";
  const countParams = [...p.values];
  const page = [...where];
  if (cursor) page.push(`(${sort.keys.join(", ")}) ${sort.direction === "asc" ? ">" : "<"} (${sort.casts.map((c, i) => `${p.add(cursor.k[i])}::${c}`).join(", ")})`);
  const [rows, total] = await Promise.all([
    db.all<{ id: string; k: string[] }>(
      `select p.id, json_build_array(${sort.keys.map((k) => `(${k})::text`).join(", ")}) as k from products p ${page.length > 0 ? `where ${page.join(" and ")}` : ""}
        order by ${sort.keys.map((k) => `${k} ${sort.direction}`).join(", ")} limit ${p.add(size + 1)}`,
      p.values,
    ),
    db.one<{ n: number }>(`select count(*)::int as n from products p ${filter}`, countParams),
  ]);
  const more = rows.length > size;
  const pageRows = rows.slice(0, size);
  const products = await loadProducts(
    db,
    pageRows.map((r) => r.id),
    viewer,
  );
  return {
    products: pageRows.map((r) => products.get(r.id)).filter((p): p is Product => p !== undefined),
    nextPageToken: more ? pages.next({ k: pageRows.at(-1)!.k }) : "",
    totalCount: total?.n ?? 0,
  };
}

/** A product matches a price range when its own price or a variant's lies in it (products aliased `p`). */
export function priceCondition(p: Params, min: Money | undefined, max: Money | undefined): string {
  const lo = p.add(min?.amountMinor.toString() ?? null);
  const hi = p.add(max?.amountMinor.toString() ?? null);
  const range = `between coalesce(${lo}::bigint, 0) and coalesce(${hi}::bigint, 9223372036854775807)`;
  return `(p.price_minor ${range} or exists (select 1 from product_variants pv where pv.product_id = p.id and pv.price_minor ${range}))`;
}

const text = (read: (i: Product) => string, get: (r: ProductRow) => string, set: (r: ProductRow, v: string) => void) => setField<ProductRow, Product, string>(read, get, set);

/** The plain fields of UpdateProduct's mask, applied to the product's entity (the checks that need the database ran before). */
const productFields = {
  sku: text((i) => i.sku, (r) => r.sku, (r, v) => (r.sku = v)),
  name: text((i) => i.name, (r) => r.name, (r, v) => (r.name = v)),
  slug: text((i) => i.slug, (r) => r.slug, (r, v) => (r.slug = v)),
  description: text((i) => i.description, (r) => r.description, (r, v) => (r.description = v)),
  short_description: text((i) => i.shortDescription, (r) => r.shortDescription, (r, v) => (r.shortDescription = v)),
  meta_title: text((i) => i.metaTitle, (r) => r.metaTitle, (r, v) => (r.metaTitle = v)),
  meta_description: text((i) => i.metaDescription, (r) => r.metaDescription, (r, v) => (r.metaDescription = v)),
  status: (r: ProductRow, i: Product) => {
    const status = productStatuses.toDb(i.status);
    if (r.status === status) return false;
    r.status = status;
    if (status === "active" && !r.publishedAt) r.publishedAt = new Date();
    return true;
  },
  is_visible: setField<ProductRow, Product, boolean>((i) => i.isVisible, (r) => r.isVisible, (r, v) => (r.isVisible = v)),
  allow_backorder: setField<ProductRow, Product, boolean>((i) => i.allowBackorder, (r) => r.allowBackorder, (r, v) => (r.allowBackorder = v)),
  weight_grams: setField<ProductRow, Product, number>((i) => i.weightGrams, (r) => r.weightGrams, (r, v) => (r.weightGrams = v)),
  dimensions: (r: ProductRow, i: Product) => {
    const d = i.dimensions;
    const next = d ? [d.lengthMm, d.widthMm, d.heightMm] : [null, null, null];
    if (next[0] === (r.lengthMm ?? null) && next[1] === (r.widthMm ?? null) && next[2] === (r.heightMm ?? null)) return false;
    [r.lengthMm, r.widthMm, r.heightMm] = next;
    return true;
  },
  attributes: (r: ProductRow, i: Product) => {
    if (JSON.stringify(sortedObject(r.attributes)) === JSON.stringify(sortedObject(i.attributes))) return false;
    r.attributes = i.attributes;
    return true;
  },
};

export async function updateProduct(em: EntityManager, viewer: Viewer, req: UpdateProductRequest): Promise<Out<UpdateProductResponse>> {
  const input = req.product!;
  const paths = maskPaths(req.updateMask);
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = sqlOf(tx);
      // Variant rows before the product row, as stock changes take them (stock-state.ts), since
      // a change of allow_backorder rewrites the variants' stock statuses.
      if (paths.has("allow_backorder")) await db.all("select id from product_variants where product_id = $1 order by id for update", [input.id]);
      const row = await tx.findOne(ProductEntity, { id: input.id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      if (!row) throw notFound("product", input.id);

      if (paths.has("sku")) {
        if (!input.sku) throw invalidArgument("product.sku", "cannot be cleared");
        if (input.sku !== row.sku) await checkSkuFree(db, input.sku, "product.sku", row.id);
      }
      if (paths.has("name") && !input.name.trim()) throw invalidArgument("product.name", "cannot be cleared");
      if (paths.has("slug")) {
        if (!input.slug) throw invalidArgument("product.slug", "cannot be cleared");
        if (input.slug !== row.slug) await checkSlugFree(db, "products", input.slug, "product.slug", row.id);
      }
      if (paths.has("status")) {
        if (input.status === ProductStatus.UNSPECIFIED) throw invalidArgument("product.status", "must be DRAFT or ACTIVE");
        if (input.status === ProductStatus.ARCHIVED) throw invalidArgument("product.status", "ARCHIVED is set with ArchiveProduct", "USE_ARCHIVE_PRODUCT");
        if (row.status === "archived" && input.status === ProductStatus.ACTIVE) {
          throw failedPrecondition("an archived product goes back to DRAFT first, then to ACTIVE", "PRODUCT_ARCHIVED");
        }
      }

      // Money: one currency for all prices of the product; compare-at above price.
      let currency = row.currency;
      let price = row.priceMinor;
      if (paths.has("price")) {
        if (!input.price) throw invalidArgument("product.price", "cannot be cleared");
        if (input.price.currencyCode !== row.currency) {
          if (row.variantCount > 0) throw currencyMismatch("product.price", row.currency);
          currency = input.price.currencyCode;
        }
        price = input.price.amountMinor;
      }
      const compareAt = paths.has("compare_at_price") ? (input.compareAtPrice?.amountMinor ?? null) : (row.compareAtPriceMinor ?? null);
      const cost = paths.has("cost_price") ? (input.costPrice?.amountMinor ?? null) : (row.costPriceMinor ?? null);
      for (const [path, m] of [
        ["compare_at_price", input.compareAtPrice],
        ["cost_price", input.costPrice],
      ] as const) {
        if (paths.has(path) && m && m.currencyCode !== currency) throw currencyMismatch(`product.${path}`, currency);
      }
      if (currency !== row.currency) {
        if (compareAt !== null && !paths.has("compare_at_price")) throw currencyMismatch("product.compare_at_price", currency);
        if (cost !== null && !paths.has("cost_price")) throw currencyMismatch("product.cost_price", currency);
      }
      if (compareAt !== null && compareAt <= price) {
        throw domainError(Code.InvalidArgument, "product.compare_at_price: must be above price", { reason: "COMPARE_AT_NOT_ABOVE_PRICE", field: "product.compare_at_price" });
      }
      const oldCurrency = row.currency;
      const oldPrice = row.priceMinor;
      const currencyChanged = currency !== oldCurrency;
      const changed: string[] = applyFieldMask(req.updateMask, row, input, {
        ...productFields,
        price: (r) => {
          if (r.priceMinor === price && !currencyChanged) return false;
          r.priceMinor = price;
          r.currency = currency;
          return true;
        },
        // A price in another currency is a change even when the amount is the same.
        compare_at_price: (r) => {
          if ((r.compareAtPriceMinor ?? null) === compareAt && !(compareAt !== null && currencyChanged)) return false;
          r.compareAtPriceMinor = compareAt;
          return true;
        },
        cost_price: (r) => {
          if ((r.costPriceMinor ?? null) === cost && !(cost !== null && currencyChanged)) return false;
          r.costPriceMinor = cost;
          return true;
        },
      });
      const priceChanges: PriceChange[] = changed.includes("price")
        ? [create(PriceChangeSchema, { variantId: "", oldPrice: money(oldPrice, oldCurrency), newPrice: money(price, currency) })]
        : [];
      if (changed.length > 0) row.updatedAt = new Date();
      await tx.flush();
      if (paths.has("tags") && (await replaceTags(db, row.id, normalizeTags(input.tags)))) changed.push("tags");
      if (paths.has("category_ids")) {
        await checkCategoriesExist(db, input.categoryIds, "product.category_ids");
        if (await replaceCategories(db, row.id, input.categoryIds)) changed.push("category_ids");
      }
      if (changed.length > 0) {
        if (changed.includes("tags") || changed.includes("category_ids")) await db.run("update products set updated_at = now() where id = $1", [row.id]);
        if (changed.includes("price")) await refreshPriceRange(db, row.id);
        if (changed.includes("allow_backorder")) {
          await refreshVariantStatuses(db, row.id);
          await refreshProductStock(db, row.id);
        }
        publishEvent(tx, ProductUpdatedSchema, {
          productId: row.id,
          changedFields: changed,
          priceChanges,
          product: await productSnapshot(db, row.id),
          actorUserId: viewer.userId ?? "",
        });
      }
      return { product: (await loadProduct(db, row.id, viewer))! };
    }),
  );
}

function sortedObject(o: Record<string, string>): [string, string][] {
  return Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

export async function archiveProduct(em: EntityManager, viewer: Viewer, req: ArchiveProductRequest): Promise<Out<ArchiveProductResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const row = await tx.findOne(ProductEntity, { id: req.id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (!row) throw notFound("product", req.id);
    if (row.status !== "archived") {
      const previous = row.status;
      row.status = "archived";
      row.updatedAt = new Date();
      await tx.flush();
      publishEvent(tx, ProductArchivedSchema, {
        productId: row.id,
        previousStatus: productStatuses.fromDb(previous),
        product: await productSnapshot(db, row.id),
        actorUserId: viewer.userId ?? "",
      });
    }
    return { product: (await loadProduct(db, row.id, viewer))! };
  });
}

export async function setProductTags(em: EntityManager, viewer: Viewer, req: SetProductTagsRequest): Promise<Out<SetProductTagsResponse>> {
  const tags = normalizeTags(req.tags);
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const row = await productRow(db, req.productId, true);
    if (!row) throw notFound("product", req.productId);
    if (await replaceTags(db, row.id, tags)) {
      await db.run("update products set updated_at = now() where id = $1", [row.id]);
      await publishProductUpdated(db, row.id, ["tags"], viewer);
    }
    return { tags };
  });
}

/** product.updated for changes of related data (tags, variants, images). */
export async function publishProductUpdated(db: Sql, productId: string, changedFields: string[], viewer: Viewer, priceChanges: PriceChange[] = []): Promise<void> {
  publishEvent(db.em, ProductUpdatedSchema, {
    productId,
    changedFields,
    priceChanges,
    product: await productSnapshot(db, productId),
    actorUserId: viewer.userId ?? "",
  });
}

