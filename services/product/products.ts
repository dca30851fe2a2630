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
import { loadProduct, loadProducts, productRow, productSnapshot, refreshPriceRange } from "./catalog.ts";
import { categorySubtree } from "./categories.ts";
import { allocateSlug, checkCategoriesExist, checkSkuFree, checkSlugFree, guarded } from "./guards.ts";
import { customerVisible, normalizeTags, productStatuses, slugify, type Viewer } from "./mapping.ts";
import { money } from "../../kit/money.ts";
import { pgArray, type LegacySql, legacySqlOf } from "../../kit/sql.ts";
import { refreshProductStock, refreshVariantStatuses } from "./stock-state.ts";

type Out<T> = Omit<T, "$typeName">;

const currencyMismatch = (field: string, currency: string) =>
  domainError(Code.InvalidArgument, `${field}: prices of a product and its variants share one currency (${currency})`, { reason: "CURRENCY_MISMATCH", field });

/** Replaces a product's tags; returns whether the set changed. */
export async function replaceTags(db: LegacySql, productId: string, tags: string[]): Promise<boolean> {
  const current = (await db.all<{ tag: string }>("select tag from product_tags where product_id = ? order by tag", [productId])).map((r) => r.tag);
  if (current.join("\n") === tags.join("\n")) return false;
  await db.run("delete from product_tags where product_id = ?", [productId]);
  if (tags.length > 0) {
    await db.run(
      "insert into product_tags (id, product_id, tag) select gen_random_uuid(), ?, t from unnest(?::text[]) as t",
      [productId, pgArray(tags)],
    );
  }
  return true;
}

/** Replaces a product's categories (the first is primary); returns whether the list changed. */
async function replaceCategories(db: LegacySql, productId: string, categoryIds: readonly string[]): Promise<boolean> {
  const current = (await db.all<{ category_id: string }>("select category_id from product_categories where product_id = ? order by position, created_at", [productId])).map(
    (r) => r.category_id,
  );
  if (current.join(",") === categoryIds.join(",")) return false;
  await db.run("delete from product_categories where product_id = ?", [productId]);
  if (categoryIds.length > 0) {
    await db.run(
      `insert into product_categories (id, product_id, category_id, position)
       select gen_random_uuid(), ?, c.id, c.position - 1 from unnest(?::uuid[]) with ordinality as c(id, position)`,
      [productId, pgArray(categoryIds)],
    );
  }
  return true;
}

export async function createProduct(em: EntityManager, viewer: Viewer, req: CreateProductRequest): Promise<Out<CreateProductResponse>> {
  const price = req.price!;
  const currency = price.currencyCode;
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = legacySqlOf(tx);
      await checkCategoriesExist(db, req.categoryIds, "category_ids");
      await checkSkuFree(db, req.sku, "sku");
      let slug = req.slug;
      if (slug) await checkSlugFree(db, "products", slug, "slug");
      else slug = await allocateSlug(db, "products", slugify(req.name, "product"));
      const id = uuidv7();
      const status = req.status === ProductStatus.ACTIVE ? "active" : "draft";
      const d = req.dimensions;
      await db.run(
        `insert into products (id, sku, name, slug, description, short_description, currency, price_minor, compare_at_price_minor, cost_price_minor,
           status, is_visible, allow_backorder, stock_status, weight_grams, length_mm, width_mm, height_mm, meta_title, meta_description, attributes,
           min_price_minor, max_price_minor, published_at)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb, ?, ?, ${status === "active" ? "now()" : "null"})`,
        [
          id,
          req.sku,
          req.name,
          slug,
          req.description,
          req.shortDescription,
          currency,
          price.amountMinor.toString(),
          req.compareAtPrice?.amountMinor.toString() ?? null,
          req.costPrice?.amountMinor.toString() ?? null,
          status,
          req.isVisible,
          req.allowBackorder,
          req.allowBackorder ? "backorder" : "out_of_stock",
          req.weightGrams,
          d ? d.lengthMm : null,
          d ? d.widthMm : null,
          d ? d.heightMm : null,
          req.metaTitle,
          req.metaDescription,
          JSON.stringify(req.attributes),
          price.amountMinor.toString(),
          price.amountMinor.toString(),
        ],
      );
      await replaceCategories(db, id, req.categoryIds);
      await replaceTags(db, id, normalizeTags(req.tags));
      publishEvent(tx, ProductCreatedSchema, { productId: id, product: await productSnapshot(db, id), actorUserId: viewer.userId ?? "" });
      return { product: (await loadProduct(db, id, viewer))! };
    }),
  );
}

export async function getProduct(em: EntityManager, viewer: Viewer, req: GetProductRequest): Promise<Out<GetProductResponse>> {
  const db = legacySqlOf(em);
  const lookup = req.lookup;
  let id: string | undefined;
  if (lookup.case === "id") id = lookup.value;
  else if (lookup.case === "slug") id = (await db.one<{ id: string }>("select id from products where slug = ?", [lookup.value]))?.id;
  const product = id ? await loadProduct(db, id, viewer) : undefined;
  if (!product) throw notFound("product", lookup.value ?? "");
  return { product };
}

export async function batchGetProducts(em: EntityManager, viewer: Viewer, req: BatchGetProductsRequest): Promise<Out<BatchGetProductsResponse>> {
  const ids = [...new Set(req.ids)];
  const found = await loadProducts(legacySqlOf(em), ids, viewer);
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

/** WHERE conditions and parameters of a product filter, for tables aliased `p`. */
export interface Filter {
  where: string[];
  params: unknown[];
}

export function addFilter(f: Filter, condition: string, ...params: unknown[]): void {
  f.where.push(condition);
  f.params.push(...params);
}

export async function listProducts(em: EntityManager, viewer: Viewer, shopCurrency: string, req: ListProductsRequest): Promise<Out<ListProductsResponse>> {
  const db = legacySqlOf(em);
  const f: Filter = { where: [], params: [] };
  if (!viewer.admin) {
    if (req.statuses.some((s) => s !== ProductStatus.ACTIVE)) throw permissionDenied("only admins may list products that are not ACTIVE");
    f.where.push(customerVisible);
  } else {
    if (req.statuses.length > 0) addFilter(f, "p.status = any(?::text[])", pgArray(req.statuses.map(productStatuses.toDb)));
    if (req.isVisible !== undefined) addFilter(f, "p.is_visible = ?", req.isVisible);
  }
  if (req.categoryId) {
    const subtree = await categorySubtree(db, req.categoryId, viewer.admin);
    addFilter(f, "exists (select 1 from product_categories pc where pc.product_id = p.id and pc.category_id = any(?::uuid[]))", pgArray(subtree));
  }
  for (const [field, m] of [
    ["min_price", req.minPrice],
    ["max_price", req.maxPrice],
  ] as const) {
    if (m && m.currencyCode !== shopCurrency) {
      throw domainError(Code.InvalidArgument, `${field}: prices are filtered in the shop's currency ${shopCurrency}`, { reason: "CURRENCY_MISMATCH", field });
    }
  }
  addPriceFilter(f, req.minPrice, req.maxPrice);
  if (req.tags.length > 0) {
    const tags = normalizeTags(req.tags);
    addFilter(f, "(select count(*) from product_tags t where t.product_id = p.id and t.tag = any(?::text[])) = ?", pgArray(tags), tags.length);
  }
  if (Object.keys(req.attributes).length > 0) addFilter(f, "p.attributes @> ?::jsonb", JSON.stringify(req.attributes));
  if (req.inStockOnly) f.where.push("p.stock_status in ('in_stock', 'backorder')");
  if (req.minRating > 0) addFilter(f, "p.rating_average_hundredths >= ?", req.minRating * 100);

  const sort = sorts[req.orderBy];
  const pages = pageOf(req, { k: sort.casts });
  const { after: cursor, size } = pages;
  const page: Filter = { where: [...f.where], params: [...f.params] };
  if (cursor) {
    addFilter(page, `(${sort.keys.join(", ")}) ${sort.direction === "asc" ? ">" : "<"} (${sort.casts.map((c) => `?::${c}`).join(", ")})`, ...cursor.k);
  }
  const where = (w: string[]) => (w.length > 0 ? `where ${w.join(" and ")}` : "");
  const rows = await db.all<{ id: string; k: string[] }>(
    `select p.id, json_build_array(${sort.keys.map((k) => `(${k})::text`).join(", ")}) as k from products p ${where(page.where)}
      order by ${sort.keys.map((k) => `${k} ${sort.direction}`).join(", ")} limit ?`,
    [...page.params, size + 1],
  );
  const total = await db.one<{ n: number }>(`select count(*)::int as n from products p ${where(f.where)}`, f.params);
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

/** A product matches a price range when its own price or a variant's lies in it. */
export function addPriceFilter(f: Filter, min: Money | undefined, max: Money | undefined): void {
  if (!min && !max) return;
  const lo = min?.amountMinor.toString() ?? null;
  const hi = max?.amountMinor.toString() ?? null;
  addFilter(
    f,
    `(p.price_minor between coalesce(?::bigint, 0) and coalesce(?::bigint, 9223372036854775807)
      or exists (select 1 from product_variants pv where pv.product_id = p.id and pv.price_minor between coalesce(?::bigint, 0) and coalesce(?::bigint, 9223372036854775807)))`,
    lo,
    hi,
    lo,
    hi,
  );
}

const updatableText = {
  description: "description",
  short_description: "short_description",
  meta_title: "meta_title",
  meta_description: "meta_description",
} as const;

export async function updateProduct(em: EntityManager, viewer: Viewer, req: UpdateProductRequest): Promise<Out<UpdateProductResponse>> {
  const input = req.product!;
  const paths = [...new Set(req.updateMask!.paths)];
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = legacySqlOf(tx);
      // Variant rows before the product row, as stock changes take them (stock-state.ts), since
      // a change of allow_backorder rewrites the variants' stock statuses.
      if (paths.includes("allow_backorder")) await db.all("select id from product_variants where product_id = ? order by id for update", [input.id]);
      const row = await productRow(db, input.id, true);
      if (!row) throw notFound("product", input.id);
      const set: Record<string, unknown> = {};
      const changed: string[] = [];
      const priceChanges: PriceChange[] = [];
      const change = (path: string, column: string, before: unknown, after: unknown) => {
        if (before === after) return;
        set[column] = after;
        if (!changed.includes(path)) changed.push(path);
      };
      let currency = row.currency;
      let price = BigInt(row.price_minor);
      let compareAt = row.compare_at_price_minor === null ? null : BigInt(row.compare_at_price_minor);
      let cost = row.cost_price_minor === null ? null : BigInt(row.cost_price_minor);

      for (const path of paths) {
        switch (path) {
          case "sku":
            if (!input.sku) throw invalidArgument("product.sku", "cannot be cleared");
            if (input.sku !== row.sku) await checkSkuFree(db, input.sku, "product.sku", row.id);
            change(path, "sku", row.sku, input.sku);
            break;
          case "name":
            if (!input.name.trim()) throw invalidArgument("product.name", "cannot be cleared");
            change(path, "name", row.name, input.name);
            break;
          case "slug":
            if (!input.slug) throw invalidArgument("product.slug", "cannot be cleared");
            if (input.slug !== row.slug) await checkSlugFree(db, "products", input.slug, "product.slug", row.id);
            change(path, "slug", row.slug, input.slug);
            break;
          case "description":
          case "short_description":
          case "meta_title":
          case "meta_description": {
            const value = path === "description" ? input.description : path === "short_description" ? input.shortDescription : path === "meta_title" ? input.metaTitle : input.metaDescription;
            change(path, updatableText[path], row[updatableText[path]], value);
            break;
          }
          case "price":
            if (!input.price) throw invalidArgument("product.price", "cannot be cleared");
            if (input.price.currencyCode !== row.currency) {
              if (row.variant_count > 0) throw currencyMismatch("product.price", row.currency);
              currency = input.price.currencyCode;
            }
            price = input.price.amountMinor;
            break;
          case "compare_at_price":
            compareAt = input.compareAtPrice ? input.compareAtPrice.amountMinor : null;
            break;
          case "cost_price":
            cost = input.costPrice ? input.costPrice.amountMinor : null;
            break;
          case "status": {
            if (input.status === ProductStatus.UNSPECIFIED) throw invalidArgument("product.status", "must be DRAFT or ACTIVE");
            if (input.status === ProductStatus.ARCHIVED) throw invalidArgument("product.status", "ARCHIVED is set with ArchiveProduct", "USE_ARCHIVE_PRODUCT");
            const status = productStatuses.toDb(input.status);
            if (row.status === "archived" && status === "active") {
              throw failedPrecondition("an archived product goes back to DRAFT first, then to ACTIVE", "PRODUCT_ARCHIVED");
            }
            change(path, "status", row.status, status);
            if (status === "active" && row.published_at === null) set.published_at = new Date().toISOString();
            break;
          }
          case "is_visible":
            change(path, "is_visible", row.is_visible, input.isVisible);
            break;
          case "allow_backorder":
            change(path, "allow_backorder", row.allow_backorder, input.allowBackorder);
            break;
          case "weight_grams":
            change(path, "weight_grams", row.weight_grams, input.weightGrams);
            break;
          case "dimensions": {
            const d = input.dimensions;
            change(path, "length_mm", row.length_mm, d ? d.lengthMm : null);
            change(path, "width_mm", row.width_mm, d ? d.widthMm : null);
            change(path, "height_mm", row.height_mm, d ? d.heightMm : null);
            break;
          }
          case "attributes":
            if (JSON.stringify(sortedObject(row.attributes)) !== JSON.stringify(sortedObject(input.attributes))) {
              set.attributes = JSON.stringify(input.attributes);
              changed.push(path);
            }
            break;
          case "tags":
          case "category_ids":
            break; // below, once the row is written
          default:
            throw invalidArgument("update_mask", `path "${path}" cannot be updated`);
        }
      }
      // Money: one currency for all prices of the product; compare-at above price.
      for (const [path, m] of [
        ["compare_at_price", input.compareAtPrice],
        ["cost_price", input.costPrice],
      ] as const) {
        if (paths.includes(path) && m && m.currencyCode !== currency) throw currencyMismatch(`product.${path}`, currency);
      }
      if (currency !== row.currency) {
        if (compareAt !== null && !paths.includes("compare_at_price")) throw currencyMismatch("product.compare_at_price", currency);
        if (cost !== null && !paths.includes("cost_price")) throw currencyMismatch("product.cost_price", currency);
      }
      if (compareAt !== null && compareAt <= price) {
        throw domainError(Code.InvalidArgument, "product.compare_at_price: must be above price", { reason: "COMPARE_AT_NOT_ABOVE_PRICE", field: "product.compare_at_price" });
      }
      const oldPrice = BigInt(row.price_minor);
      if (currency !== row.currency) change("price", "currency", row.currency, currency);
      if (price !== oldPrice || currency !== row.currency) {
        change("price", "price_minor", row.price_minor, price.toString());
        priceChanges.push(create(PriceChangeSchema, { variantId: "", oldPrice: money(oldPrice, row.currency), newPrice: money(price, currency) }));
      }
      const oldCompareAt = row.compare_at_price_minor === null ? null : BigInt(row.compare_at_price_minor);
      if (compareAt !== oldCompareAt || (compareAt !== null && currency !== row.currency)) {
        change("compare_at_price", "compare_at_price_minor", row.compare_at_price_minor, compareAt === null ? null : compareAt.toString());
      }
      const oldCost = row.cost_price_minor === null ? null : BigInt(row.cost_price_minor);
      if (cost !== oldCost || (cost !== null && currency !== row.currency)) {
        change("cost_price", "cost_price_minor", row.cost_price_minor, cost === null ? null : cost.toString());
      }

      if (Object.keys(set).length > 0) {
        const columns = Object.keys(set);
        await db.run(
          `update products set ${columns.map((c) => (c === "attributes" ? "attributes = ?::jsonb" : `${c} = ?`)).join(", ")}, updated_at = now() where id = ?`,
          [...columns.map((c) => set[c]), row.id],
        );
      }
      if (paths.includes("tags") && (await replaceTags(db, row.id, normalizeTags(input.tags)))) changed.push("tags");
      if (paths.includes("category_ids")) {
        await checkCategoriesExist(db, input.categoryIds, "product.category_ids");
        if (await replaceCategories(db, row.id, input.categoryIds)) changed.push("category_ids");
      }
      if (changed.length > 0) {
        if (changed.includes("tags") || changed.includes("category_ids")) await db.run("update products set updated_at = now() where id = ?", [row.id]);
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
    const db = legacySqlOf(tx);
    const row = await productRow(db, req.id, true);
    if (!row) throw notFound("product", req.id);
    if (row.status !== "archived") {
      await db.run("update products set status = 'archived', updated_at = now() where id = ?", [row.id]);
      publishEvent(tx, ProductArchivedSchema, {
        productId: row.id,
        previousStatus: productStatuses.fromDb(row.status),
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
    const db = legacySqlOf(tx);
    const row = await productRow(db, req.productId, true);
    if (!row) throw notFound("product", req.productId);
    if (await replaceTags(db, row.id, tags)) {
      await db.run("update products set updated_at = now() where id = ?", [row.id]);
      await publishProductUpdated(db, row.id, ["tags"], viewer);
    }
    return { tags };
  });
}

/** product.updated for changes of related data (tags, variants, images). */
export async function publishProductUpdated(db: LegacySql, productId: string, changedFields: string[], viewer: Viewer, priceChanges: PriceChange[] = []): Promise<void> {
  publishEvent(db.em, ProductUpdatedSchema, {
    productId,
    changedFields,
    priceChanges,
    product: await productSnapshot(db, productId),
    actorUserId: viewer.userId ?? "",
  });
}

