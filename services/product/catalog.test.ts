/**
 * The catalog through its public contract, against a real server: who sees
 * what, SKUs and slugs, the category tree, variants and images, and the
 * catalog events on PRODUCT_EVENTS.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProductArchivedSchema, ProductCreatedSchema, ProductUpdatedSchema } from "../../gen/ecommerce/product/v1/events_pb.js";
import { ProductStatus, StockStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { eventually } from "../../kit/testing/mesh.ts";
import { activeProduct, auth, failure, type ProductHarness, productEvents, startProductHarness, unique } from "./testing.ts";

let h: ProductHarness;
const usd = (amountMinor: bigint) => ({ amountMinor, currencyCode: "USD" });

beforeAll(async () => {
  h = await startProductHarness();
});

afterAll(async () => {
  await h?.stop();
});

describe("visibility", () => {
  it("hides drafts and invisible products from customers, anonymous and internal callers, but not from admins", async () => {
    const { product: draft } = await h.products.createProduct(
      { sku: unique("DRAFT"), name: "Secret Prototype", price: usd(5000n), costPrice: usd(2100n) },
      auth(h.admin),
    );
    expect(draft!.status).toBe(ProductStatus.DRAFT);
    const hidden = await activeProduct(h, { isVisible: false });
    const visible = await activeProduct(h, { costPrice: usd(900n) });

    for (const [who, options] of [
      ["customer", auth(h.customer)],
      ["anonymous", {}],
      ["service", auth(h.service)],
    ] as const) {
      for (const p of [draft!, hidden]) {
        expect(await failure(h.products.getProduct({ lookup: { case: "id", value: p.id } }, options)), who).toMatchObject({ code: Code.NotFound });
        expect(await failure(h.products.getProduct({ lookup: { case: "slug", value: p.slug } }, options)), who).toMatchObject({ code: Code.NotFound });
      }
      const seen = (await h.products.getProduct({ lookup: { case: "id", value: visible.id } }, options)).product!;
      expect(seen.costPrice, who).toBeUndefined();
      const batch = await h.products.batchGetProducts({ ids: [visible.id, draft!.id, hidden.id, visible.id] }, options);
      expect(batch.products.map((p) => p.id)).toEqual([visible.id]);
      expect(batch.notFoundIds.sort()).toEqual([draft!.id, hidden.id].sort());
    }

    const asAdmin = (await h.products.getProduct({ lookup: { case: "id", value: draft!.id } }, auth(h.admin))).product!;
    expect(asAdmin.costPrice).toMatchObject({ amountMinor: 2100n, currencyCode: "USD" });
    expect((await h.products.getProduct({ lookup: { case: "slug", value: hidden.slug } }, auth(h.admin))).product!.id).toBe(hidden.id);

    const listed = await h.products.listProducts({ pageSize: 100 }, auth(h.customer));
    const ids = listed.products.map((p) => p.id);
    expect(ids).toContain(visible.id);
    expect(ids).not.toContain(draft!.id);
    expect(ids).not.toContain(hidden.id);
    expect(listed.products.every((p) => p.costPrice === undefined)).toBe(true);
    expect(await failure(h.products.listProducts({ statuses: [ProductStatus.DRAFT] }, auth(h.customer)))).toMatchObject({ code: Code.PermissionDenied });
    const drafts = await h.products.listProducts({ statuses: [ProductStatus.DRAFT], pageSize: 100 }, auth(h.admin));
    expect(drafts.products.map((p) => p.id)).toContain(draft!.id);
  });

  it("pages ListProducts by a stable key without repeats", async () => {
    for (let i = 0; i < 5; i++) await activeProduct(h, { name: unique("Pager"), price: usd(100n * BigInt(i + 1)) });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await h.products.listProducts({ pageSize: 2, pageToken, orderBy: 2 }, auth(h.customer));
      seen.push(...page.products.map((p) => p.id));
      pageToken = page.nextPageToken;
      expect(page.totalCount).toBeGreaterThanOrEqual(5);
    } while (pageToken);
    expect(new Set(seen).size).toBe(seen.length);
    const all = await h.products.listProducts({ pageSize: 100, orderBy: 2 }, auth(h.customer));
    expect(seen).toEqual(all.products.map((p) => p.id));
  });
});

describe("SKUs and slugs", () => {
  it("generates unique, stable slugs from names and refuses taken slugs and SKUs", async () => {
    const name = `Merino Crew Sweater ${unique("n")}`;
    const a = (await h.products.createProduct({ sku: unique("A"), name, price: usd(100n) }, auth(h.admin))).product!;
    const b = (await h.products.createProduct({ sku: unique("B"), name, price: usd(100n) }, auth(h.admin))).product!;
    expect(a.slug).toMatch(/^merino-crew-sweater-[a-z0-9-]+$/);
    expect(b.slug).toBe(`${a.slug}-2`);

    const renamed = await h.products.updateProduct({ product: { id: a.id, name: "Something Else" }, updateMask: { paths: ["name"] } }, auth(h.admin));
    expect(renamed.product!.slug).toBe(a.slug);

    expect(await failure(h.products.createProduct({ sku: unique("C"), name: "X", slug: a.slug, price: usd(1n) }, auth(h.admin)))).toMatchObject({
      code: Code.AlreadyExists,
      reason: "SLUG_TAKEN",
    });
    expect(await failure(h.products.updateProduct({ product: { id: b.id, slug: a.slug }, updateMask: { paths: ["slug"] } }, auth(h.admin)))).toMatchObject({
      code: Code.AlreadyExists,
      reason: "SLUG_TAKEN",
    });
    expect(await failure(h.products.createProduct({ sku: a.sku.toLowerCase(), name: "X", price: usd(1n) }, auth(h.admin)))).toMatchObject({
      code: Code.AlreadyExists,
      reason: "SKU_TAKEN",
    });
    // SKUs are unique over products and variants together.
    expect(
      await failure(h.products.createVariant({ productId: b.id, sku: a.sku, price: usd(100n), attributes: { size: "M" } }, auth(h.admin))),
    ).toMatchObject({ code: Code.AlreadyExists, reason: "SKU_TAKEN" });
    const variantSku = unique("V");
    await h.products.createVariant({ productId: b.id, sku: variantSku, price: usd(100n), attributes: { size: "M" } }, auth(h.admin));
    expect(await failure(h.products.createProduct({ sku: variantSku, name: "X", price: usd(1n) }, auth(h.admin)))).toMatchObject({
      code: Code.AlreadyExists,
      reason: "SKU_TAKEN",
    });
  });
});

describe("category tree", () => {
  it("lists a category with its descendants, refuses cycles and recomputes levels on a move", async () => {
    const root = (await h.categories.createCategory({ name: unique("Apparel"), isActive: true }, auth(h.admin))).category!;
    const child = (await h.categories.createCategory({ name: unique("Shoes"), parentId: root.id, isActive: true }, auth(h.admin))).category!;
    const grandchild = (await h.categories.createCategory({ name: unique("Sneakers"), parentId: child.id, isActive: true }, auth(h.admin))).category!;
    expect([root.level, child.level, grandchild.level]).toEqual([0, 1, 2]);

    const deep = await activeProduct(h, { categoryIds: [grandchild.id] });
    const direct = await activeProduct(h, { categoryIds: [root.id] });
    const elsewhere = await activeProduct(h);
    const inRoot = await h.products.listProducts({ categoryId: root.id, pageSize: 100 }, auth(h.customer));
    expect(inRoot.products.map((p) => p.id).sort()).toEqual([deep.id, direct.id].sort());
    expect(inRoot.products.map((p) => p.id)).not.toContain(elsewhere.id);
    const inChild = await h.products.listProducts({ categoryId: child.id }, auth(h.customer));
    expect(inChild.products.map((p) => p.id)).toEqual([deep.id]);
    const counted = await h.categories.getCategory({ lookup: { case: "id", value: root.id }, includeProductCounts: true }, {});
    expect(counted.category!.productCount).toBe(2);

    expect(await failure(h.categories.moveCategory({ id: root.id, newParentId: grandchild.id }, auth(h.admin)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "CATEGORY_CYCLE",
    });
    expect(await failure(h.categories.moveCategory({ id: root.id, newParentId: root.id }, auth(h.admin)))).toMatchObject({ code: Code.InvalidArgument });

    // Move the "Shoes" subtree to the top: levels follow.
    await h.categories.moveCategory({ id: child.id }, auth(h.admin));
    const moved = await h.categories.getCategory({ lookup: { case: "id", value: grandchild.id } }, {});
    expect(moved.category!.level).toBe(1);
    expect(moved.ancestors.map((a) => a.id)).toEqual([child.id]);
    const tree = await h.categories.getCategoryTree({ rootId: child.id }, {});
    expect(tree.roots[0]!.children.map((c) => c.category!.id)).toEqual([grandchild.id]);

    expect(await failure(h.categories.deleteCategory({ id: child.id }, auth(h.admin)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "CATEGORY_NOT_EMPTY",
      metadata: { child_count: "1", product_count: "0" },
    });
    // An inactive category hides its subtree from customers, not from admins.
    await h.categories.updateCategory({ category: { id: child.id, isActive: false }, updateMask: { paths: ["is_active"] } }, auth(h.admin));
    expect(await failure(h.categories.getCategory({ lookup: { case: "id", value: grandchild.id } }, {}))).toMatchObject({ code: Code.NotFound });
    expect((await h.categories.getCategory({ lookup: { case: "id", value: grandchild.id } }, auth(h.admin))).category!.id).toBe(grandchild.id);
  });

  it("refuses a category below level 4", async () => {
    let parentId = "";
    for (let level = 0; level <= 4; level++) {
      parentId = (await h.categories.createCategory({ name: unique(`L${level}`), parentId, isActive: true }, auth(h.admin))).category!.id;
    }
    expect(await failure(h.categories.createCategory({ name: "too deep", parentId, isActive: true }, auth(h.admin)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "CATEGORY_TOO_DEEP",
    });
  });
});

describe("variants and images", () => {
  it("keeps variant options unique and exactly one primary image", async () => {
    const p = await activeProduct(h);
    const v1 = (await h.products.createVariant({ productId: p.id, sku: unique("V"), price: usd(2500n), attributes: { size: "M", colour: "red" } }, auth(h.admin)))
      .variant!;
    expect(v1.name).toBe("M / red");
    expect(
      await failure(h.products.createVariant({ productId: p.id, sku: unique("V"), price: usd(2500n), attributes: { colour: "red", size: "M" } }, auth(h.admin))),
    ).toMatchObject({ code: Code.AlreadyExists, reason: "VARIANT_EXISTS" });
    expect(
      await failure(h.products.createVariant({ productId: p.id, sku: unique("V"), price: { amountMinor: 1n, currencyCode: "EUR" }, attributes: { size: "L" } }, auth(h.admin))),
    ).toMatchObject({ code: Code.InvalidArgument, reason: "CURRENCY_MISMATCH" });
    const product = (await h.products.getProduct({ lookup: { case: "id", value: p.id } }, {})).product!;
    expect(product.variants.map((v) => v.id)).toEqual([v1.id]);
    expect(product.stockStatus).toBe(StockStatus.OUT_OF_STOCK);

    const first = (await h.products.addImage({ productId: p.id, url: "https://media.example.test/1.jpg" }, auth(h.admin))).image!;
    const second = (await h.products.addImage({ productId: p.id, url: "https://media.example.test/2.jpg", isPrimary: true }, auth(h.admin))).image!;
    const third = (await h.products.addImage({ productId: p.id, url: "https://media.example.test/3.jpg" }, auth(h.admin))).image!;
    expect(first.isPrimary).toBe(true);
    expect(third.isPrimary).toBe(false);
    const primaries = async () => (await h.products.getProduct({ lookup: { case: "id", value: p.id } }, {})).product!.images.filter((i) => i.isPrimary).map((i) => i.id);
    expect(await primaries()).toEqual([second.id]);
    await h.products.deleteImage({ id: second.id }, auth(h.admin));
    expect(await primaries()).toEqual([first.id]);
    const reordered = await h.products.reorderImages({ productId: p.id, imageIds: [third.id, first.id] }, auth(h.admin));
    expect(reordered.images.map((i) => i.id)).toEqual([third.id, first.id]);
    expect(await failure(h.products.reorderImages({ productId: p.id, imageIds: [third.id] }, auth(h.admin)))).toMatchObject({ reason: "IMAGE_SET_MISMATCH" });
    const set = await h.products.setPrimaryImage({ id: third.id }, auth(h.admin));
    expect(set.images.filter((i) => i.isPrimary).map((i) => i.id)).toEqual([third.id]);
  });
});

describe("events", () => {
  it("publishes product.created, product.updated (with the price change) and product.archived once each", async () => {
    const p = await activeProduct(h, { costPrice: usd(500n), tags: ["Wool", "wool", "Winter"] });
    expect(p.tags).toEqual(["winter", "wool"]);
    await h.products.updateProduct(
      { product: { id: p.id, price: usd(1499n), compareAtPrice: usd(1999n) }, updateMask: { paths: ["price", "compare_at_price"] } },
      auth(h.admin),
    );
    // Nothing changed: no event.
    await h.products.updateProduct({ product: { id: p.id, price: usd(1499n) }, updateMask: { paths: ["price"] } }, auth(h.admin));
    expect(
      await failure(h.products.updateProduct({ product: { id: p.id, compareAtPrice: usd(1000n) }, updateMask: { paths: ["compare_at_price"] } }, auth(h.admin))),
    ).toMatchObject({ code: Code.InvalidArgument, reason: "COMPARE_AT_NOT_ABOVE_PRICE" });
    await h.products.archiveProduct({ id: p.id }, auth(h.admin));
    await h.products.archiveProduct({ id: p.id }, auth(h.admin));

    const created = await eventually(async () => {
      const list = (await productEvents(h, ProductCreatedSchema)).filter((e) => e.productId === p.id);
      return list.length > 0 ? list : undefined;
    });
    const archived = await eventually(async () => {
      const list = (await productEvents(h, ProductArchivedSchema)).filter((e) => e.productId === p.id);
      return list.length > 0 ? list : undefined;
    });
    const updated = (await productEvents(h, ProductUpdatedSchema)).filter((e) => e.productId === p.id);
    expect(created).toHaveLength(1);
    expect(created[0]!.product!.name).toBe(p.name);
    expect(created[0]!.actorUserId).toBe(h.adminId);
    expect(updated).toHaveLength(1);
    expect(updated[0]!.changedFields.sort()).toEqual(["compare_at_price", "price"]);
    expect(updated[0]!.priceChanges).toHaveLength(1);
    expect(updated[0]!.priceChanges[0]).toMatchObject({ variantId: "", oldPrice: { amountMinor: 1999n }, newPrice: { amountMinor: 1499n } });
    expect(archived).toHaveLength(1);
    expect(archived[0]!.previousStatus).toBe(ProductStatus.ACTIVE);
    expect(archived[0]!.product!.status).toBe(ProductStatus.ARCHIVED);
    // Events never carry the cost price: the snapshot has no such field, and the archived product is gone for customers.
    expect(await failure(h.products.getProduct({ lookup: { case: "id", value: p.id } }, auth(h.customer)))).toMatchObject({ code: Code.NotFound });
  });
});
