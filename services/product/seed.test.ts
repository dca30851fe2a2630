/**
 * The demo seed against a real database, read back through the service's
 * contract: it loads a consistent catalog the RPCs serve (search documents,
 * stock totals, rating summaries), only once, and the same rows every time.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { SearchFacet } from "../../gen/ecommerce/product/v1/search_pb.js";
import { seedCatalog } from "./seed.ts";
import { auth, type ProductHarness, startProductHarness } from "./testing.ts";

let h: ProductHarness;
let url: string;

beforeAll(async () => {
  h = await startProductHarness();
  url = h.mesh.services.product!.ctx.config.databaseUrl;
});

afterAll(async () => {
  await h?.stop();
});

describe("npm run seed", () => {
  it("loads a catalog the service serves consistently, once, and identically after --reset", async () => {
    const first = await seedCatalog(url, { products: 120 });
    expect(first).toMatchObject({ loaded: true, products: 120 });
    expect(first.variants).toBeGreaterThan(0);
    expect((await seedCatalog(url, { products: 120 })).loaded).toBe(false);

    const visible = await h.sql<{ n: number }>("select count(*)::int as n from products where status = 'active' and is_visible");
    const listed = await h.products.listProducts({ pageSize: 100 }, {});
    expect(listed.totalCount).toBe(visible[0]!.n);

    const search = await h.search.searchProducts({ query: "sneakers", facets: [SearchFacet.CATEGORY] }, {});
    expect(search.totalCount).toBeGreaterThan(0);
    expect(search.hits.every((hit) => /sneakers/i.test(hit.product!.name))).toBe(true);
    expect(search.categoryFacet.reduce((s, c) => s + c.count, 0)).toBe(search.totalCount);

    // Stock and ratings kept by the seed agree with what the service derives.
    for (const p of listed.products.slice(0, 15)) {
      const items = (await h.inventory.getStock({ productId: p.id }, auth(h.admin))).items;
      expect(items.reduce((s, i) => s + i.availableQuantity, 0), p.sku).toBe(p.availableQuantity);
      for (const i of items) expect(i.availableQuantity).toBe(i.levels.reduce((s, l) => s + l.availableQuantity, 0));
      const summary = (await h.reviews.getRatingSummary({ productId: p.id }, {})).ratingSummary!;
      const approved = await h.reviews.listReviews({ productId: p.id, pageSize: 100 }, {});
      expect(summary.reviewCount).toBe(approved.totalCount);
      expect(p.images.filter((i) => i.isPrimary)).toHaveLength(1);
    }
    const drafts = await h.products.listProducts({ statuses: [ProductStatus.DRAFT], pageSize: 100 }, auth(h.admin));
    expect(drafts.products.every((p) => p.sku.startsWith("SEED-"))).toBe(true);

    const before = await h.sql<{ ids: string }>("select md5(string_agg(id::text || price_minor || stock_quantity, ',' order by id)) as ids from products");
    expect((await seedCatalog(url, { products: 120, reset: true })).loaded).toBe(true);
    const after = await h.sql<{ ids: string }>("select md5(string_agg(id::text || price_minor || stock_quantity, ',' order by id)) as ids from products");
    expect(after[0]!.ids).toBe(before[0]!.ids);
  });
});
