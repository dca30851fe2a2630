/**
 * Search through the public contract, against a real server and PostgreSQL
 * full text and trigram indexes: relevance, visibility, highlights, typo
 * suggestions, facets that agree with the filters, sorting and paging.
 */
import { request as httpRequest } from "node:http";
import { brotliCompressSync, constants as zlibConstants, gzipSync } from "node:zlib";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { SearchFacet, SearchOrderBy } from "../../gen/ecommerce/product/v1/search_pb.js";
import { brotliQuality, compressMinBytes, gzipLevel } from "../../kit/compression.ts";
import { activeProduct, auth, failure, type ProductHarness, startProductHarness, unique } from "./testing.ts";

let h: ProductHarness;
const usd = (amountMinor: bigint) => ({ amountMinor, currencyCode: "USD" });
const ids: Record<string, string> = {};
let footwear: string;
let sneakers: string;
let kitchen: string;

beforeAll(async () => {
  h = await startProductHarness();
  const category = async (name: string, parentId = "") => (await h.categories.createCategory({ name, parentId, isActive: true }, auth(h.admin))).category!.id;
  footwear = await category("Footwear");
  sneakers = await category("Sneakers", footwear);
  kitchen = await category("Kitchen");
  const make = async (key: string, init: Record<string, unknown>, stock = 0) => {
    ids[key] = (await activeProduct(h, init, stock)).id;
  };
  await make("trail", {
    name: "Trail Running Shoe Pro",
    description: "A running shoe for rough trails, with a grippy sole.",
    price: usd(12_000n),
    categoryIds: [sneakers],
    attributes: { colour: "blue", brand: "Acme" },
    tags: ["running", "outdoor"],
  }, 3);
  await make("exact", {
    name: "Running Shoe",
    shortDescription: "Light & fast everyday trainer (5 < 10 km)",
    price: usd(5_000n),
    categoryIds: [sneakers],
    attributes: { colour: "red", brand: "Acme" },
    tags: ["running"],
  }, 5);
  await make("cleaner", { name: "Running Shoe Cleaner Kit", price: usd(1_500n), categoryIds: [footwear], tags: ["care"] });
  await make("canvas", { name: "Canvas Sneakers", description: "Classic canvas sneakers.", price: usd(4_000n), categoryIds: [sneakers], attributes: { brand: "Plimsoll" } }, 2);
  await h.products.createVariant({ productId: ids.canvas!, sku: unique("CV"), price: usd(4_000n), attributes: { colour: "red" } }, auth(h.admin));
  await h.products.createVariant({ productId: ids.canvas!, sku: unique("CV"), price: usd(4_500n), attributes: { colour: "white" } }, auth(h.admin));
  await make("knife", { name: "Chef Knife", price: usd(8_000n), categoryIds: [kitchen], attributes: { colour: "black" } }, 1);
  ids.draft = (await h.products.createProduct({ sku: unique("DRAFT"), name: "Running Shoe Prototype", price: usd(9_900n), categoryIds: [sneakers] }, auth(h.admin))).product!.id;
});

afterAll(async () => {
  await h?.stop();
});

describe("relevance and visibility", () => {
  it("ranks an exact name match first, finds by SKU and never shows drafts to customers", async () => {
    const res = await h.search.searchProducts({ query: "running shoe" }, {});
    const found = res.hits.map((hit) => hit.product!.id);
    expect(found[0]).toBe(ids.exact);
    expect(found).toEqual(expect.arrayContaining([ids.trail, ids.cleaner]));
    expect(found).not.toContain(ids.draft);
    expect(res.totalCount).toBe(found.length);

    // The highlights are beside the product, never in it.
    expect(res.hits.map((hit) => hit.product!.name)).toContain("Running Shoe Cleaner Kit");
    expect(res.hits[0]!.product!.name).toBe("Running Shoe");
    expect(res.hits[0]!.product!.shortDescription).toBe("Light & fast everyday trainer (5 < 10 km)");
    const nameMark = res.hits[0]!.highlights.find((x) => x.field === "name");
    expect(nameMark?.snippet).toBe("<mark>Running</mark> <mark>Shoe</mark>");

    const admin = await h.search.searchProducts({ query: "running shoe", statuses: [ProductStatus.DRAFT] }, auth(h.admin));
    expect(admin.hits.map((hit) => hit.product!.id)).toEqual([ids.draft]);
    expect(await failure(h.search.searchProducts({ query: "shoe", statuses: [ProductStatus.DRAFT] }, auth(h.customer)))).toMatchObject({
      code: Code.PermissionDenied,
    });

    const { product } = await h.products.getProduct({ lookup: { case: "id", value: ids.knife! } }, {});
    const bySku = await h.search.searchProducts({ query: product!.sku.toLowerCase() }, {});
    expect(bySku.hits[0]!.product!.id).toBe(ids.knife);
  });

  it("escapes highlighted text as HTML", async () => {
    const res = await h.search.searchProducts({ query: "everyday trainer" }, {});
    expect(res.hits[0]!.product!.id).toBe(ids.exact);
    const snippet = res.hits[0]!.highlights.find((x) => x.field === "short_description")!.snippet;
    expect(snippet).toBe("Light &amp; fast <mark>everyday</mark> <mark>trainer</mark> (5 &lt; 10 km)");
  });
});

describe("typos", () => {
  it("suggests the right spelling and matching products for a misspelled prefix", async () => {
    const suggested = await h.search.suggestProducts({ prefix: "snaekers" }, {});
    expect(suggested.queryCompletions).toContain("sneakers");
    expect(suggested.products.map((p) => p.id)).toContain(ids.canvas);
    expect(suggested.categories.map((c) => c.categoryId)).toContain(sneakers);

    const completions = await h.search.suggestProducts({ prefix: "runn" }, {});
    expect(completions.queryCompletions).toContain("running");
    expect(completions.products.map((p) => p.id)).toContain(ids.exact);
    expect(completions.products.map((p) => p.id)).not.toContain(ids.draft);

    const res = await h.search.searchProducts({ query: "snaekers" }, {});
    expect(res.didYouMean).toContain("sneakers");
  });
});

describe("words taken as typed", () => {
  it("takes a word the catalog knows as typed, and widens only an unknown word to the similar known ones", async () => {
    // Priced above every other product here and out of stock, so the price and stock tests' lists do not change.
    const wool = (await activeProduct(h, { name: "Merino Wool Scarf", price: usd(99_000n) })).id;
    const wood = (await activeProduct(h, { name: "Oak Wood Spoon", price: usd(99_000n) })).id;
    // "wool" and "wood" are trigram neighbours: a known word must not bring the other's products.
    const typed = (await h.search.searchProducts({ query: "wool" }, {})).hits.map((x) => x.product!.id);
    expect(typed).toContain(wool);
    expect(typed).not.toContain(wood);
    // An unknown word still finds what it is a typo of.
    const misspelled = (await h.search.searchProducts({ query: "wooll" }, {})).hits.map((x) => x.product!.id);
    expect(misspelled).toContain(wool);
  });
});

describe("one-word queries (answered from search_postings)", () => {
  const facets = [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND];
  /**
   * A customer's one-word query is answered from the word's postings; the same query with a
   * filter that holds for every product (a minimum price of 0) goes through products' GIN index.
   * Both must give the same hits in the same order, total and facets.
   */
  async function bothPaths(query: string, orderBy = SearchOrderBy.UNSPECIFIED) {
    const postings = await h.search.searchProducts({ query, facets, orderBy, pageSize: 50 }, {});
    const gin = await h.search.searchProducts({ query, facets, orderBy, pageSize: 50, minPrice: usd(0n) }, {});
    const view = (r: typeof postings) => ({
      ids: r.hits.map((x) => x.product!.id),
      total: r.totalCount,
      categories: r.categoryFacet.map((c) => [c.categoryId, c.count]),
      bands: r.priceBandFacet.map((b) => b.count),
    });
    expect(view(postings)).toEqual(view(gin));
    return postings;
  }
  const found = async (query: string) => (await bothPaths(query)).hits.map((x) => x.product!.id);

  it("answers what the GIN path answers: hits in the same order, total and facets", async () => {
    for (const word of ["running", "shoe", "sneakers", "canvas", "acme", "footwear", "kit", "RUNNING"]) await bothPaths(word);
    await bothPaths("shoe", SearchOrderBy.PRICE_ASC);
    await bothPaths("shoe", SearchOrderBy.NEWEST);
    expect(await found("running")).toEqual(expect.arrayContaining([ids.trail, ids.exact, ids.cleaner]));
    // An exact name match still comes first, and a SKU (not a word of the document) is still found.
    const sku = (await h.products.getProduct({ lookup: { case: "id", value: ids.trail! } }, {})).product!.sku;
    expect(await found(sku)).toEqual([ids.trail]);
  });

  it("follows the product: renamed, re-priced, re-tagged, moved, hidden, shown and archived", async () => {
    const id = (await activeProduct(h, { name: "Pewter Tankard", price: usd(3_000n), categoryIds: [kitchen], tags: ["tavern"] })).id;
    expect(await found("tankard")).toEqual([id]);
    expect(await found("tavern")).toEqual([id]);
    const update = (product: Record<string, unknown>, paths: string[]) => h.products.updateProduct({ product: { id, ...product }, updateMask: { paths } }, auth(h.admin));

    await update({ name: "Pewter Goblet" }, ["name"]);
    expect(await found("tankard")).toEqual([]);
    expect(await found("goblet")).toEqual([id]);

    await update({ price: usd(60_000n) }, ["price"]);
    expect((await bothPaths("goblet")).priceBandFacet.at(-1)!.count).toBe(1);

    await update({ tags: ["banquet"] }, ["tags"]);
    expect(await found("tavern")).toEqual([]);
    expect(await found("banquet")).toEqual([id]);

    await update({ categoryIds: [footwear] }, ["category_ids"]);
    expect((await bothPaths("goblet")).categoryFacet).toMatchObject([{ categoryId: footwear, count: 1 }]);

    await update({ isVisible: false }, ["is_visible"]);
    expect(await found("goblet")).toEqual([]);
    await update({ isVisible: true }, ["is_visible"]);
    expect(await found("goblet")).toEqual([id]);

    await h.products.archiveProduct({ id }, auth(h.admin));
    expect(await found("goblet")).toEqual([]);
  });
});

describe("filters, facets, sorting and paging", () => {
  it("counts facets that agree with the filtered results", async () => {
    const res = await h.search.searchProducts(
      { categoryId: footwear, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND, SearchFacet.TAG, SearchFacet.RATING], facetAttributeKeys: ["colour"] },
      {},
    );
    expect(res.totalCount).toBe(4);
    expect(res.hits.map((x) => x.product!.id).sort()).toEqual([ids.trail, ids.exact, ids.cleaner, ids.canvas].sort());

    expect(res.categoryFacet).toMatchObject([{ categoryId: sneakers, name: "Sneakers", count: 3 }]);
    expect((await h.search.searchProducts({ categoryId: sneakers }, {})).totalCount).toBe(3);

    expect(res.priceBandFacet).toHaveLength(6);
    expect(res.priceBandFacet.reduce((s, b) => s + b.count, 0)).toBe(res.totalCount);
    expect(res.priceBandFacet[0]).toMatchObject({ maxPrice: { amountMinor: 2_000n }, count: 1 });

    const colour = res.attributeFacets.find((f) => f.key === "colour")!;
    expect(colour.values).toEqual(expect.arrayContaining([expect.objectContaining({ value: "red", count: 2 }), expect.objectContaining({ value: "blue", count: 1 })]));
    for (const v of colour.values) {
      const filtered = await h.search.searchProducts({ categoryId: footwear, attributeFilters: [{ key: "colour", values: [v.value] }], facetAttributeKeys: ["colour"] }, {});
      expect(filtered.totalCount, v.value).toBe(v.count);
      // The colour facet ignores its own filter, so the other colours stay countable.
      expect(filtered.attributeFacets[0]!.values).toEqual(colour.values);
    }
    const running = res.tagFacet.find((t) => t.tag === "running")!;
    expect(running.count).toBe((await h.search.searchProducts({ categoryId: footwear, tags: ["Running"] }, {})).totalCount);
  });

  it("filters by price (product or variant), stock, and sorts by price", async () => {
    const cheap = await h.search.searchProducts({ maxPrice: usd(4_200n), orderBy: SearchOrderBy.PRICE_ASC }, {});
    expect(cheap.hits.map((x) => x.product!.id)).toEqual([ids.cleaner, ids.canvas]);
    // The price bands ignore the price filter, so the total is not their sum there: it counts the filtered hits.
    const cheapBands = await h.search.searchProducts({ maxPrice: usd(4_200n), facets: [SearchFacet.PRICE_BAND] }, {});
    expect(cheapBands.totalCount).toBe(2);
    const unfiltered = await h.search.searchProducts({ facets: [SearchFacet.PRICE_BAND] }, {});
    expect(cheapBands.priceBandFacet.map((b) => b.count)).toEqual(unfiltered.priceBandFacet.map((b) => b.count));
    expect(unfiltered.priceBandFacet.reduce((sum, b) => sum + b.count, 0)).toBe(unfiltered.totalCount);
    expect(unfiltered.totalCount).toBeGreaterThan(2);
    const variantPriced = await h.search.searchProducts({ minPrice: usd(4_400n), maxPrice: usd(4_600n) }, {});
    expect(variantPriced.hits.map((x) => x.product!.id)).toEqual([ids.canvas]);
    const inStock = await h.search.searchProducts({ inStockOnly: true, orderBy: SearchOrderBy.PRICE_DESC }, {});
    expect(inStock.hits.map((x) => x.product!.id)).toEqual([ids.trail, ids.knife, ids.exact]);
    expect(await failure(h.search.searchProducts({ minPrice: { amountMinor: 1n, currencyCode: "EUR" } }, {}))).toMatchObject({ reason: "CURRENCY_MISMATCH" });
  });

  it("pages deterministically without repeats and refuses a token of another search", async () => {
    const all = await h.search.searchProducts({ pageSize: 100 }, {});
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await h.search.searchProducts({ pageSize: 2, pageToken }, {});
      seen.push(...page.hits.map((x) => x.product!.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(all.hits.map((x) => x.product!.id));
    const first = await h.search.searchProducts({ pageSize: 2 }, {});
    expect(await failure(h.search.searchProducts({ pageSize: 2, pageToken: first.nextPageToken, query: "shoe" }, {}))).toMatchObject({ reason: "INVALID_PAGE_TOKEN" });
  });
});

describe("categories on the product row", () => {
  it("keeps products.category_ids with the product's categories, and filters and counts a moved or hidden subtree", async () => {
    const stored = async (id: string) => (await h.sql<{ ids: string[] }>("select category_ids::text[] as ids from products where id = $1", [id]))[0]!.ids;
    const category = async (name: string, parentId = "") => (await h.categories.createCategory({ name, parentId, isActive: true }, auth(h.admin))).category!.id;
    const outdoor = await category("Outdoor Gear");
    const hiking = await category("Hiking Gear", outdoor);
    const boot = (await activeProduct(h, { name: "Hiking Boot", price: usd(9_000n), categoryIds: [hiking, kitchen] })).id;
    expect(await stored(boot)).toEqual([hiking, kitchen].sort());
    const found = async (categoryId: string, token = "") => (await h.search.searchProducts({ categoryId, query: "boot" }, token ? auth(token) : {})).hits.map((x) => x.product!.id);
    expect(await found(outdoor)).toEqual([boot]);
    const facet = await h.search.searchProducts({ categoryId: outdoor, facets: [SearchFacet.CATEGORY] }, {});
    expect(facet.categoryFacet).toMatchObject([{ categoryId: hiking, count: 1 }]);

    // Replaced categories (delete and insert), then none.
    await h.products.updateProduct({ product: { id: boot, categoryIds: [hiking] }, updateMask: { paths: ["category_ids"] } }, auth(h.admin));
    expect(await stored(boot)).toEqual([hiking]);
    expect(await found(kitchen)).toEqual([]);
    await h.products.updateProduct({ product: { id: boot, categoryIds: [] }, updateMask: { paths: ["category_ids"] } }, auth(h.admin));
    expect(await stored(boot)).toEqual([]);
    expect(await found(outdoor)).toEqual([]);
    await h.products.updateProduct({ product: { id: boot, categoryIds: [hiking] }, updateMask: { paths: ["category_ids"] } }, auth(h.admin));
    // An update of product_categories itself (no code path does one) refreshes the row too.
    await h.sql("update product_categories set category_id = $1 where product_id = $2", [outdoor, boot]);
    expect(await stored(boot)).toEqual([outdoor]);
    await h.sql("update product_categories set category_id = $1 where product_id = $2", [hiking, boot]);

    // The tree is read live: a moved subtree is found under its new parent only, and counted there.
    await h.categories.moveCategory({ id: hiking, newParentId: footwear }, auth(h.admin));
    expect(await found(outdoor)).toEqual([]);
    expect(await found(footwear)).toEqual([boot]);
    const roots = await h.search.searchProducts({ query: "boot", facets: [SearchFacet.CATEGORY] }, {});
    expect(roots.categoryFacet).toMatchObject([{ categoryId: footwear, count: 1 }]);
    expect((await h.search.searchProducts({ categoryId: footwear, query: "boot", facets: [SearchFacet.CATEGORY] }, {})).categoryFacet).toMatchObject([
      { categoryId: hiking, count: 1 },
    ]);

    // A hidden category hides its products from customers' subtree filters and facets, not from admins'.
    await h.categories.updateCategory({ category: { id: hiking, isActive: false }, updateMask: { paths: ["is_active"] } }, auth(h.admin));
    expect(await found(footwear)).toEqual([]);
    expect(await found(hiking)).toEqual([]);
    expect(await found(footwear, h.admin)).toEqual([boot]);
    expect((await h.search.searchProducts({ query: "boot", facets: [SearchFacet.CATEGORY] }, {})).categoryFacet).toEqual([]);
    // So does an inactive ancestor, for an active category below it.
    const boots = await category("Hiking Boots", hiking);
    await h.products.updateProduct({ product: { id: boot, categoryIds: [boots] }, updateMask: { paths: ["category_ids"] } }, auth(h.admin));
    expect(await found(boots)).toEqual([]);
    expect(await found(boots, h.admin)).toEqual([boot]);
    expect((await h.search.searchProducts({ categoryId: hiking, facets: [SearchFacet.CATEGORY] }, auth(h.admin))).categoryFacet).toMatchObject([{ categoryId: boots, count: 1 }]);
    expect((await h.search.searchProducts({ categoryId: hiking, facets: [SearchFacet.CATEGORY] }, {})).categoryFacet).toEqual([]);
  });
});

describe("compressed answers (kit/compression.ts)", () => {
  /** A Connect JSON search over HTTP/1.1 with this Accept-Encoding: the body as it came, and its Content-Encoding. */
  const raw = (acceptEncoding: string, query = "lantern") =>
    new Promise<{ encoding: string | undefined; body: Buffer }>((resolve, reject) => {
      const req = httpRequest(`${h.mesh.url("product")}/ecommerce.product.v1.SearchService/SearchProducts`, {
        method: "POST",
        headers: { "content-type": "application/json", "accept-encoding": acceptEncoding },
      });
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ encoding: res.headers["content-encoding"], body: Buffer.concat(chunks) }));
      });
      req.on("error", reject);
      req.end(JSON.stringify({ query, facets: ["SEARCH_FACET_CATEGORY", "SEARCH_FACET_PRICE_BAND"] }));
    });

  beforeAll(async () => {
    // Enough hits, with descriptions, for an answer above the compression threshold.
    const description = "A storm lantern of brass and glass with a wick that burns for hours; ".repeat(4);
    for (let i = 0; i < 14; i++) await activeProduct(h, { name: `Brass Lantern ${i}`, description, price: usd(99_000n) });
  });

  it("compresses at levels meant for dynamic answers, whichever algorithm the client puts first", async () => {
    const plain = await raw("identity");
    expect(plain.encoding).toBeUndefined();
    expect(plain.body.length).toBeGreaterThan(compressMinBytes);
    // brotli at its default quality (11) costs about 200 times gzip's CPU per answer: a client could make every answer cost that.
    const br = await raw("br, gzip");
    expect(br.encoding).toBe("br");
    expect(br.body).toEqual(brotliCompressSync(plain.body, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: brotliQuality } }));
    const gz = await raw("gzip, br");
    expect(gz.encoding).toBe("gzip");
    expect(gz.body).toEqual(gzipSync(plain.body, { level: gzipLevel }));
  });

  it("sends answers below the threshold as they are: compressing them would cost more CPU than the bytes are worth", async () => {
    const small = await raw("gzip, br", "knife");
    expect(small.body.length).toBeLessThanOrEqual(compressMinBytes);
    expect(small.encoding).toBeUndefined();
    expect(JSON.parse(small.body.toString("utf8")).hits[0].product.id).toBe(ids.knife);
  });
});
