/**
 * Product images: at most 50, in display order (sort_order, then created_at),
 * exactly one primary while there are any (a partial unique index forbids two;
 * the first image, and the next one when the primary is deleted, take the
 * flag). Changes take the product's row lock, so concurrent image calls on a
 * product run one after the other. A change of the primary image publishes
 * product.updated ("images"): carts and wishlists show it.
 */
import type {
  AddImageRequest,
  AddImageResponse,
  DeleteImageRequest,
  ReorderImagesRequest,
  ReorderImagesResponse,
  SetPrimaryImageRequest,
  SetPrimaryImageResponse,
  UpdateImageRequest,
  UpdateImageResponse,
} from "../../gen/ecommerce/product/v1/product_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, failedPrecondition, notFound } from "../../kit/errors.ts";
import { v7 as uuidv7 } from "uuid";
import { type ImageDbRow, imageMessage, imageOrder, productRow } from "./catalog.ts";
import type { Viewer } from "./mapping.ts";
import { publishProductUpdated } from "./products.ts";
import { type Sql, sqlOf } from "../../kit/sql.ts";
import { applyFieldMask, setField } from "../../kit/field-mask.ts";
import { ProductImageEntity, type ProductImageRow } from "./entities.ts";

type Out<T> = Omit<T, "$typeName">;

export const maxImages = 50;

const imagesOf = (db: Sql, productId: string) => db.all<ImageDbRow>(`select * from product_images where product_id = $1 order by ${imageOrder}`, [productId]);

const imageOf = (r: ProductImageRow) =>
  imageMessage({ id: r.id, product_id: r.productId, url: r.url, alt_text: r.altText, sort_order: r.sortOrder, is_primary: r.isPrimary, created_at: r.createdAt });

/** The image and its product, with the product's row locked. */
async function lockedImage(db: Sql, imageId: string): Promise<ImageDbRow> {
  const found = await db.one<{ product_id: string }>("select product_id from product_images where id = $1", [imageId]);
  if (!found) throw notFound("image", imageId);
  await productRow(db, found.product_id, true);
  const image = await db.one<ImageDbRow>("select * from product_images where id = $1", [imageId]);
  if (!image) throw notFound("image", imageId);
  return image;
}

async function touched(db: Sql, productId: string, viewer: Viewer, primaryChanged: boolean): Promise<void> {
  await db.run("update products set updated_at = now() where id = $1", [productId]);
  if (primaryChanged) await publishProductUpdated(db, productId, ["images"], viewer);
}

export async function addImage(em: EntityManager, viewer: Viewer, req: AddImageRequest): Promise<Out<AddImageResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    if (!(await productRow(db, req.productId, true))) throw notFound("product", req.productId);
    const images = await imagesOf(db, req.productId);
    if (images.length >= maxImages) throw failedPrecondition(`a product has at most ${maxImages} images`, "TOO_MANY_IMAGES");
    const primary = req.isPrimary || images.length === 0;
    if (primary) await db.run("update product_images set is_primary = false where product_id = $1 and is_primary", [req.productId]);
    const sortOrder = req.sortOrder > 0 ? req.sortOrder : Math.max(0, ...images.map((i) => i.sort_order)) + 1;
    const image = tx.create(ProductImageEntity, {
      id: uuidv7(),
      productId: req.productId,
      url: req.url,
      altText: req.altText,
      sortOrder,
      isPrimary: primary,
      createdAt: new Date(),
    });
    await tx.flush();
    await touched(db, req.productId, viewer, primary);
    return { image: imageOf(image) };
  });
}

export async function updateImage(em: EntityManager, req: UpdateImageRequest): Promise<Out<UpdateImageResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const { product_id: productId } = await lockedImage(db, req.id);
    const image = (await tx.findOne(ProductImageEntity, { id: req.id }))!;
    const changed = applyFieldMask(req.updateMask, image, req, {
      alt_text: setField<ProductImageRow, UpdateImageRequest, string>((i) => i.altText, (r) => r.altText, (r, v) => (r.altText = v)),
      sort_order: setField<ProductImageRow, UpdateImageRequest, number>((i) => i.sortOrder, (r) => r.sortOrder, (r, v) => (r.sortOrder = v)),
    });
    if (changed.length > 0) {
      await tx.flush();
      await db.run("update products set updated_at = now() where id = $1", [productId]);
    }
    return { image: imageOf(image) };
  });
}

export async function deleteImage(em: EntityManager, viewer: Viewer, req: DeleteImageRequest): Promise<void> {
  await em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const image = await lockedImage(db, req.id);
    await db.run("delete from product_images where id = $1", [image.id]);
    if (image.is_primary) {
      await db.run(
        `update product_images set is_primary = true
          where id = (select id from product_images where product_id = $1 order by ${imageOrder} limit 1)`,
        [image.product_id],
      );
    }
    await touched(db, image.product_id, viewer, image.is_primary);
  });
}

export async function setPrimaryImage(em: EntityManager, viewer: Viewer, req: SetPrimaryImageRequest): Promise<Out<SetPrimaryImageResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const image = await lockedImage(db, req.id);
    if (!image.is_primary) {
      // The old primary loses the flag first: the partial unique index never sees two.
      await db.run("update product_images set is_primary = false where product_id = $1 and is_primary", [image.product_id]);
      await db.run("update product_images set is_primary = true where id = $1", [image.id]);
      await touched(db, image.product_id, viewer, true);
    }
    return { images: (await imagesOf(db, image.product_id)).map(imageMessage) };
  });
}

export async function reorderImages(em: EntityManager, req: ReorderImagesRequest): Promise<Out<ReorderImagesResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    if (!(await productRow(db, req.productId, true))) throw notFound("product", req.productId);
    const current = await imagesOf(db, req.productId);
    const ids = new Set(current.map((i) => i.id));
    if (current.length !== req.imageIds.length || !req.imageIds.every((id) => ids.has(id))) {
      throw domainError(Code.InvalidArgument, "image_ids: must name every image of the product exactly once", { reason: "IMAGE_SET_MISMATCH", field: "image_ids" });
    }
    await db.run(
      "update product_images i set sort_order = t.position - 1 from unnest($1::uuid[]) with ordinality as t(id, position) where i.id = t.id",
      [req.imageIds],
    );
    await db.run("update products set updated_at = now() where id = $1", [req.productId]);
    return { images: (await imagesOf(db, req.productId)).map(imageMessage) };
  });
}
