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
import { type LegacySql, legacySqlOf } from "../../kit/sql.ts";
import { refreshProductStock } from "./stock-state.ts";

type Out<T> = Omit<T, "$typeName">;

export const maxVariants = 100;

const nameFrom = (attributes: Record<string, string>) => Object.values(attributes).join(" / ");

async function variantRow(db: LegacySql, id: string, lock = false): Promise<VariantDbRow | undefined> {
  return db.one<VariantDbRow>(`select ${variantColumns} from product_variants v where v.id = ?${lock ? " for update" : ""}`, [id]);
}

async function checkAttributesFree(db: LegacySql, productId: string, attributes: Record<string, string>, field: string, variantId?: string): Promise<void> {
  const other = await db.one<{ id: string }>("select id from product_variants where product_id = ? and attributes = ?::jsonb", [productId, JSON.stringify(attributes)]);
  if (other && other.id !== variantId) throw alreadyExists(`${field}: another variant of the product has the same attributes`, "VARIANT_EXISTS", field);
}

const currencyMismatch = (field: string, currency: string) =>
  domainError(Code.InvalidArgument, `${field}: a variant's prices are in the product's currency ${currency}`, { reason: "CURRENCY_MISMATCH", field });

export async function createVariant(em: EntityManager, viewer: Viewer, req: CreateVariantRequest): Promise<Out<CreateVariantResponse>> {
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = legacySqlOf(tx);
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
      await db.run(
        `insert into product_variants (id, product_id, sku, name, price_minor, compare_at_price_minor, attributes, image_url, stock_status)
         values (?, ?, ?, ?, ?, ?, ?::jsonb, ?, ?)`,
        [
          id,
          product.id,
          req.sku,
          req.name || nameFrom(req.attributes),
          price.amountMinor.toString(),
          req.compareAtPrice?.amountMinor.toString() ?? null,
          JSON.stringify(req.attributes),
          nullIfEmpty(req.imageUrl),
          product.allow_backorder ? "backorder" : "out_of_stock",
        ],
      );
      await refreshPriceRange(db, product.id);
      await refreshProductStock(db, product.id);
      await db.run("update products set updated_at = now() where id = ?", [product.id]);
      await publishProductUpdated(db, product.id, ["variants"], viewer);
      return { variant: variantMessage((await variantRow(db, id))!, product.currency) };
    }),
  );
}

export async function updateVariant(em: EntityManager, viewer: Viewer, req: UpdateVariantRequest): Promise<Out<UpdateVariantResponse>> {
  const input = req.variant!;
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = legacySqlOf(tx);
      const row = await variantRow(db, input.id, true);
      if (!row) throw notFound("variant", input.id);
      const product = (await productRow(db, row.product_id, true))!;
      const set: Record<string, unknown> = {};
      let price = BigInt(row.price_minor);
      let compareAt = row.compare_at_price_minor === null ? null : BigInt(row.compare_at_price_minor);
      let attributes = row.attributes;
      for (const path of new Set(req.updateMask!.paths)) {
        switch (path) {
          case "sku":
            if (!input.sku) throw invalidArgument("variant.sku", "cannot be cleared");
            if (input.sku !== row.sku) {
              await checkSkuFree(db, input.sku, "variant.sku", row.id);
              set.sku = input.sku;
            }
            break;
          case "name":
            set.name = input.name;
            break;
          case "price":
            if (!input.price) throw invalidArgument("variant.price", "cannot be cleared");
            if (input.price.currencyCode !== product.currency) throw currencyMismatch("variant.price", product.currency);
            price = input.price.amountMinor;
            break;
          case "compare_at_price":
            if (input.compareAtPrice && input.compareAtPrice.currencyCode !== product.currency) throw currencyMismatch("variant.compare_at_price", product.currency);
            compareAt = input.compareAtPrice ? input.compareAtPrice.amountMinor : null;
            break;
          case "attributes":
            if (Object.keys(input.attributes).length === 0) throw invalidArgument("variant.attributes", "a variant has at least one attribute");
            attributes = input.attributes;
            await checkAttributesFree(db, row.product_id, attributes, "variant.attributes", row.id);
            set.attributes = JSON.stringify(attributes);
            break;
          case "image_url":
            set.image_url = nullIfEmpty(input.imageUrl);
            break;
          default:
            throw invalidArgument("update_mask", `path "${path}" cannot be updated`);
        }
      }
      if ("name" in set && set.name === "") set.name = nameFrom(attributes);
      if (compareAt !== null && compareAt <= price) {
        throw domainError(Code.InvalidArgument, "variant.compare_at_price: must be above price", { reason: "COMPARE_AT_NOT_ABOVE_PRICE", field: "variant.compare_at_price" });
      }
      const oldPrice = BigInt(row.price_minor);
      if (price !== oldPrice) set.price_minor = price.toString();
      if (compareAt !== (row.compare_at_price_minor === null ? null : BigInt(row.compare_at_price_minor))) {
        set.compare_at_price_minor = compareAt === null ? null : compareAt.toString();
      }
      for (const [k, v] of Object.entries(set)) {
        const before = (row as unknown as Record<string, unknown>)[k];
        if (k !== "attributes" && before === v) delete set[k];
      }
      if (Object.keys(set).length > 0) {
        const columns = Object.keys(set);
        await db.run(
          `update product_variants set ${columns.map((c) => (c === "attributes" ? "attributes = ?::jsonb" : `${c} = ?`)).join(", ")}, updated_at = now() where id = ?`,
          [...columns.map((c) => set[c]), row.id],
        );
        if (price !== oldPrice) await refreshPriceRange(db, row.product_id);
        await db.run("update products set updated_at = now() where id = ?", [row.product_id]);
        const priceChanges =
          price !== oldPrice ? [create(PriceChangeSchema, { variantId: row.id, oldPrice: money(oldPrice, product.currency), newPrice: money(price, product.currency) })] : [];
        await publishProductUpdated(db, row.product_id, ["variants"], viewer, priceChanges);
      }
      return { variant: variantMessage((await variantRow(db, row.id))!, product.currency) };
    }),
  );
}

export async function deleteVariant(em: EntityManager, viewer: Viewer, req: DeleteVariantRequest): Promise<void> {
  await em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    // Inventory rows first, as every stock change locks them (stock-state.ts).
    await db.all("select id from product_inventory where variant_id = ? order by id for update", [req.id]);
    const row = await variantRow(db, req.id, true);
    if (!row) throw notFound("variant", req.id);
    const held = await db.one<{ order_id: string }>(
      `select r.order_id from stock_reservation_lines l join stock_reservations r on r.id = l.reservation_id
        where l.variant_id = ? and r.status = 'active' limit 1`,
      [row.id],
    );
    if (held) throw failedPrecondition("an active stock reservation holds this variant; it can be deleted once the order is settled", "VARIANT_RESERVED", { order_id: held.order_id });
    await productRow(db, row.product_id, true);
    await db.run("delete from product_variants where id = ?", [row.id]);
    await refreshPriceRange(db, row.product_id);
    await refreshProductStock(db, row.product_id);
    await db.run("update products set updated_at = now() where id = ?", [row.product_id]);
    await publishProductUpdated(db, row.product_id, ["variants"], viewer);
  });
}
