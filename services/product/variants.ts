/**
 * Variants: purchasable option combinations of a product ({"size": "M",
 * "colour": "red"}), each with its own SKU, price and stock. At most 100 per
 * product, no two with the same options, prices in the product's currency.
 * Every change refreshes the product's price range and stock totals and
 * publishes product.updated ("variants", with the price change if any).
 */
import { create } from "@bufbuild/protobuf";
import { PriceChangeSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import type {
  CreateVariantRequest,
  CreateVariantResponse,
  DeleteVariantRequest,
  UpdateVariantRequest,
  UpdateVariantResponse,
} from "../../gen/ecommerce/product/v1/product_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { alreadyExists, Code, domainError, failedPrecondition, invalidArgument, notFound } from "../../kit/errors.ts";
import { v7 as uuidv7 } from "uuid";
import { productRow, refreshPriceRange, type VariantDbRow, variantColumns, variantMessage } from "./catalog.ts";
import { checkSkuFree, guarded } from "./guards.ts";
import { nullIfEmpty, type Viewer } from "./mapping.ts";
import { money } from "../../kit/money.ts";
import { publishProductUpdated } from "./products.ts";
import { type Sql, sqlOf } from "../../kit/sql.ts";
import { applyFieldMask, setField } from "../../kit/field-mask.ts";
import { LockMode } from "@mikro-orm/core";
import { ProductVariantEntity } from "./entities.ts";
import type { ProductVariant } from "../../gen/ecommerce/product/v1/product_pb.js";
import { refreshProductStock } from "./stock-state.ts";

type Out<T> = Omit<T, "$typeName">;

export const maxVariants = 100;

const nameFrom = (attributes: Record<string, string>) => Object.values(attributes).join(" / ");

async function variantRow(db: Sql, id: string, lock = false): Promise<VariantDbRow | undefined> {
  return db.one<VariantDbRow>(`select ${variantColumns} from product_variants v where v.id = $1${lock ? " for update" : ""}`, [id]);
}

async function checkAttributesFree(db: Sql, productId: string, attributes: Record<string, string>, field: string, variantId?: string): Promise<void> {
  const other = await db.one<{ id: string }>("select id from product_variants where product_id = $1 and attributes = $2::jsonb", [productId, JSON.stringify(attributes)]);
  if (other && other.id !== variantId) throw alreadyExists(`${field}: another variant of the product has the same attributes`, "VARIANT_EXISTS", field);
}

const currencyMismatch = (field: string, currency: string) =>
  domainError(Code.InvalidArgument, `${field}: a variant's prices are in the product's currency ${currency}`, { reason: "CURRENCY_MISMATCH", field });

export async function createVariant(em: EntityManager, viewer: Viewer, req: CreateVariantRequest): Promise<Out<CreateVariantResponse>> {
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = sqlOf(tx);
      const product = await productRow(db, req.productId, true);
      if (!product) throw notFound("product", req.productId);
      const price = req.price!;
      if (price.currencyCode !== product.currency) throw currencyMismatch("price", product.currency);
      if (product.variant_count >= maxVariants) {
        throw failedPrecondition(`a product has at most ${maxVariants} variants`, "TOO_MANY_VARIANTS");
      }
      await checkSkuFree(db, req.sku, "sku");
      await checkAttributesFree(db, product.id, req.attributes, "attributes");
      const id = uuidv7();
      const now = new Date();
      tx.create(ProductVariantEntity, {
        id,
        productId: product.id,
        sku: req.sku,
        name: req.name || nameFrom(req.attributes),
        priceMinor: price.amountMinor,
        compareAtPriceMinor: req.compareAtPrice?.amountMinor ?? null,
        attributes: req.attributes,
        imageUrl: nullIfEmpty(req.imageUrl),
        stockStatus: product.allow_backorder ? "backorder" : "out_of_stock",
        createdAt: now,
        updatedAt: now,
      });
      await tx.flush();
      await refreshPriceRange(db, product.id);
      await refreshProductStock(db, product.id);
      await db.run("update products set updated_at = now() where id = $1", [product.id]);
      await publishProductUpdated(db, product.id, ["variants"], viewer);
      return { variant: variantMessage((await variantRow(db, id))!, product.currency) };
    }),
  );
}

export async function updateVariant(em: EntityManager, viewer: Viewer, req: UpdateVariantRequest): Promise<Out<UpdateVariantResponse>> {
  const input = req.variant!;
  const paths = new Set(req.updateMask?.paths ?? []);
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = sqlOf(tx);
      const row = await tx.findOne(ProductVariantEntity, { id: input.id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      if (!row) throw notFound("variant", input.id);
      const product = (await productRow(db, row.productId, true))!;
      if (paths.has("sku")) {
        if (!input.sku) throw invalidArgument("variant.sku", "cannot be cleared");
        if (input.sku !== row.sku) await checkSkuFree(db, input.sku, "variant.sku", row.id);
      }
      if (paths.has("price")) {
        if (!input.price) throw invalidArgument("variant.price", "cannot be cleared");
        if (input.price.currencyCode !== product.currency) throw currencyMismatch("variant.price", product.currency);
      }
      if (paths.has("compare_at_price") && input.compareAtPrice && input.compareAtPrice.currencyCode !== product.currency) {
        throw currencyMismatch("variant.compare_at_price", product.currency);
      }
      if (paths.has("attributes")) {
        if (Object.keys(input.attributes).length === 0) throw invalidArgument("variant.attributes", "a variant has at least one attribute");
        await checkAttributesFree(db, row.productId, input.attributes, "variant.attributes", row.id);
      }
      const price = paths.has("price") ? input.price!.amountMinor : row.priceMinor;
      const compareAt = paths.has("compare_at_price") ? (input.compareAtPrice?.amountMinor ?? null) : (row.compareAtPriceMinor ?? null);
      if (compareAt !== null && compareAt <= price) {
        throw domainError(Code.InvalidArgument, "variant.compare_at_price: must be above price", { reason: "COMPARE_AT_NOT_ABOVE_PRICE", field: "variant.compare_at_price" });
      }
      const attributes = paths.has("attributes") ? input.attributes : row.attributes;
      const oldPrice = row.priceMinor;
      type Row = typeof row;
      const changed = applyFieldMask(req.updateMask, row, input, {
        sku: setField<Row, ProductVariant, string>((i) => i.sku, (r) => r.sku, (r, v) => (r.sku = v)),
        // An empty name is derived from the (new) attributes.
        name: setField<Row, ProductVariant, string>((i) => i.name || nameFrom(attributes), (r) => r.name, (r, v) => (r.name = v)),
        price: setField<Row, ProductVariant, bigint>(() => price, (r) => r.priceMinor, (r, v) => (r.priceMinor = v)),
        compare_at_price: setField<Row, ProductVariant, bigint | null>(() => compareAt, (r) => r.compareAtPriceMinor ?? null, (r, v) => (r.compareAtPriceMinor = v)),
        // Replaced as a whole (jsonb equality would ignore key order; a rewrite is harmless).
        attributes: (r, i) => {
          r.attributes = i.attributes;
          return true;
        },
        image_url: setField<Row, ProductVariant, string | null>((i) => nullIfEmpty(i.imageUrl), (r) => r.imageUrl ?? null, (r, v) => (r.imageUrl = v)),
      });
      if (changed.length > 0) {
        row.updatedAt = new Date();
        await tx.flush();
        if (price !== oldPrice) await refreshPriceRange(db, row.productId);
        await db.run("update products set updated_at = now() where id = $1", [row.productId]);
        const priceChanges =
          price !== oldPrice ? [create(PriceChangeSchema, { variantId: row.id, oldPrice: money(oldPrice, product.currency), newPrice: money(price, product.currency) })] : [];
        await publishProductUpdated(db, row.productId, ["variants"], viewer, priceChanges);
      }
      return { variant: variantMessage((await variantRow(db, row.id))!, product.currency) };
    }),
  );
}

export async function deleteVariant(em: EntityManager, viewer: Viewer, req: DeleteVariantRequest): Promise<void> {
  await em.transactional(async (tx) => {
    const db = sqlOf(tx);
    // Inventory rows first, as every stock change locks them (stock-state.ts).
    await db.all("select id from product_inventory where variant_id = $1 order by id for update", [req.id]);
    const row = await variantRow(db, req.id, true);
    if (!row) throw notFound("variant", req.id);
    const held = await db.one<{ order_id: string }>(
      `select r.order_id from stock_reservation_lines l join stock_reservations r on r.id = l.reservation_id
        where l.variant_id = $1 and r.status = 'active' limit 1`,
      [row.id],
    );
    if (held) throw failedPrecondition("an active stock reservation holds this variant; it can be deleted once the order is settled", "VARIANT_RESERVED", { order_id: held.order_id });
    await productRow(db, row.product_id, true);
    await db.run("delete from product_variants where id = $1", [row.id]);
    await refreshPriceRange(db, row.product_id);
    await refreshProductStock(db, row.product_id);
    await db.run("update products set updated_at = now() where id = $1", [row.product_id]);
    await publishProductUpdated(db, row.product_id, ["variants"], viewer);
  });
}
