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
import { Code, domainError, failedPrecondition, invalidArgument, notFound } from "../../kit/errors.ts";
import { v7 as uuidv7 } from "uuid";
import { type ImageDbRow, imageMessage, imageOrder, productRow } from "./catalog.ts";
import type { Viewer } from "./mapping.ts";
import { publishProductUpdated } from "./products.ts";
import { type LegacySql, legacySqlOf } from "../../kit/sql.ts";

type Out<T> = Omit<T, "$typeName">;

export const maxImages = 50;

const imagesOf = (db: LegacySql, productId: string) => db.all<ImageDbRow>(`select * from product_images where product_id = ? order by ${imageOrder}`, [productId]);

/** The image and its product, with the product's row locked. */
async function lockedImage(db: LegacySql, imageId: string): Promise<ImageDbRow> {
  const found = await db.one<{ product_id: string }>("select product_id from product_images where id = ?", [imageId]);
  if (!found) throw notFound("image", imageId);
  await productRow(db, found.product_id, true);
  const image = await db.one<ImageDbRow>("select * from product_images where id = ?", [imageId]);
  if (!image) throw notFound("image", imageId);
  return image;
}

async function touched(db: LegacySql, productId: string, viewer: Viewer, primaryChanged: boolean): Promise<void> {
  await db.run("update products set updated_at = now() where id = ?", [productId]);
  if (primaryChanged) await publishProductUpdated(db, productId, ["images"], viewer);
}

export async function addImage(em: EntityManager, viewer: Viewer, req: AddImageRequest): Promise<Out<AddImageResponse>> {
  return em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    if (!(await productRow(db, req.productId, true))) throw notFound("product", req.productId);
    const images = await imagesOf(db, req.productId);
    if (images.length >= maxImages) throw failedPrecondition(`a product has at most ${maxImages} images`, "TOO_MANY_IMAGES");
    const primary = req.isPrimary || images.length === 0;
    if (primary) await db.run("update product_images set is_primary = false where product_id = ? and is_primary", [req.productId]);
    const sortOrder = req.sortOrder > 0 ? req.sortOrder : Math.max(0, ...images.map((i) => i.sort_order)) + 1;
    const id = uuidv7();
    await db.run("insert into product_images (id, product_id, url, alt_text, sort_order, is_primary) values (?, ?, ?, ?, ?, ?)", [
      id,
      req.productId,
      req.url,
      req.altText,
      sortOrder,
      primary,
    ]);
    await touched(db, req.productId, viewer, primary);
    return { image: imageMessage((await db.one<ImageDbRow>("select * from product_images where id = ?", [id]))!) };
  });
}

export async function updateImage(em: EntityManager, req: UpdateImageRequest): Promise<Out<UpdateImageResponse>> {
  return em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    const image = await lockedImage(db, req.id);
    const paths = new Set(req.updateMask!.paths);
    for (const path of paths) if (path !== "alt_text" && path !== "sort_order") throw invalidArgument("update_mask", `path "${path}" cannot be updated`);
    const altText = paths.has("alt_text") ? req.altText : image.alt_text;
    const sortOrder = paths.has("sort_order") ? req.sortOrder : image.sort_order;
    if (altText !== image.alt_text || sortOrder !== image.sort_order) {
      await db.run("update product_images set alt_text = ?, sort_order = ? where id = ?", [altText, sortOrder, image.id]);
      await db.run("update products set updated_at = now() where id = ?", [image.product_id]);
    }
    return { image: imageMessage((await db.one<ImageDbRow>("select * from product_images where id = ?", [image.id]))!) };
  });
}

export async function deleteImage(em: EntityManager, viewer: Viewer, req: DeleteImageRequest): Promise<void> {
  await em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    const image = await lockedImage(db, req.id);
    await db.run("delete from product_images where id = ?", [image.id]);
    if (image.is_primary) {
      await db.run(
        `update product_images set is_primary = true
          where id = (select id from product_images where product_id = ? order by ${imageOrder} limit 1)`,
        [image.product_id],
      );
    }
    await touched(db, image.product_id, viewer, image.is_primary);
  });
}

export async function setPrimaryImage(em: EntityManager, viewer: Viewer, req: SetPrimaryImageRequest): Promise<Out<SetPrimaryImageResponse>> {
  return em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    const image = await lockedImage(db, req.id);
    if (!image.is_primary) {
      // The old primary loses the flag first: the partial unique index never sees two.
      await db.run("update product_images set is_primary = false where product_id = ? and is_primary", [image.product_id]);
      await db.run("update product_images set is_primary = true where id = ?", [image.id]);
      await touched(db, image.product_id, viewer, true);
    }
    return { images: (await imagesOf(db, image.product_id)).map(imageMessage) };
  });
}

export async function reorderImages(em: EntityManager, req: ReorderImagesRequest): Promise<Out<ReorderImagesResponse>> {
  return em.transactional(async (tx) => {
    const db = legacySqlOf(tx);
    if (!(await productRow(db, req.productId, true))) throw notFound("product", req.productId);
    const current = await imagesOf(db, req.productId);
    const ids = new Set(current.map((i) => i.id));
    if (current.length !== req.imageIds.length || !req.imageIds.every((id) => ids.has(id))) {
      throw domainError(Code.InvalidArgument, "image_ids: must name every image of the product exactly once", { reason: "IMAGE_SET_MISMATCH", field: "image_ids" });
    }
    for (const [i, id] of req.imageIds.entries()) await db.run("update product_images set sort_order = ? where id = ?", [i, id]);
    await db.run("update products set updated_at = now() where id = ?", [req.productId]);
    return { images: (await imagesOf(db, req.productId)).map(imageMessage) };
  });
}
