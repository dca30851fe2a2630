/**
 * Product search on PostgreSQL alone: full text over the weighted search
 * document (name A; tags and category names B; descriptions C; attribute
 * values D; GIN index), exact SKU matches, trigram similarity on names for
 * small typos (pg_trgm, GIN index), filters, facets and suggestions.
 *
 * Facets are counted over the hits with every filter applied except the
 * facet's own, from the same conditions as the hits, so their numbers always
 * agree with what the filters return. Pages are offsets into a total order
 * that ends with the product id (deterministic), capped at 10000 hits.
 */
import { create } from "@bufbuild/protobuf";
import type { Money } from "../../gen/ecommerce/common/v1/money_pb.js";
import { ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import {
  AttributeFacetSchema,
  AttributeFacetValueSchema,
  CategoryFacetValueSchema,
  CategorySuggestionSchema,
  PriceBandFacetValueSchema,
  RatingFacetValueSchema,
  SearchFacet,
  type SearchHighlight,
  SearchHighlightSchema,
  SearchHitSchema,
  SearchOrderBy,
  type SearchProductsRequest,
  type SearchProductsResponse,
  type SuggestProductsRequest,
  type SuggestProductsResponse,
  TagFacetValueSchema,
} from "../../gen/ecommerce/product/v1/search_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError, permissionDenied } from "../../kit/errors.ts";
import { pageOf } from "../../kit/paging.ts";
import { type SummaryDbRow, summaryColumns, summaryMessage } from "./catalog.ts";
import { categorySubtree } from "./categories.ts";
import { customerVisible, normalizeTags, productStatuses, type Viewer } from "./mapping.ts";
import { money } from "../../kit/money.ts";
import { pgArray, type LegacySql, legacySqlOf } from "../../kit/sql.ts";

type Out<T> = Omit<T, "$typeName">;

export const maxSearchHits = 10_000;
/** Default price bands, in minor units of the shop's currency: below 20, 20-50, 50-100, 100-200, 200-500, 500 and above. */
export const defaultPriceBands = [2_000n, 5_000n, 10_000n, 20_000n, 50_000n];
const tsConfig = "'english'";
/** ts_headline markers, replaced by <mark> tags after the text is HTML-escaped. */
const markStart = "\u0002";
const markStop = "\u0003";

/** One named condition on products aliased `p`; facets leave out their own. */
interface Condition {
  name: string;
  sql: string;
  params: unknown[];
}

function whereOf(conditions: Condition[], except?: string): { sql: string; params: unknown[] } {
  const used = conditions.filter((c) => c.name !== except);
  return { sql: used.length > 0 ? used.map((c) => `(${c.sql})`).join(" and ") : "true", params: used.flatMap((c) => c.params) };
}

/** Lower-case words of a text, for the word list and trigram lookups. */
const wordsOf = (text: string) => text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((w) => w !== "");

/**
 * The query matches the search document, the SKU exactly, or (from four
 * characters on, for small typos) the name by trigram word similarity. Each
 * branch has its index (GIN, btree, GIN trigram), combined by a BitmapOr; the
 * indexed column stays on the left of %> for the trigram index.
 */
function textCondition(query: string): Condition {
  const lower = query.toLowerCase();
  const fuzzy = lower.length >= 4;
  return {
    name: "text",
    sql: `p.search_vector @@ websearch_to_tsquery(${tsConfig}, ?) or lower(p.sku) = ?${fuzzy ? " or lower(p.name) %> ?" : ""}`,
    params: fuzzy ? [query, lower, lower] : [query, lower],
  };
}

function checkShopCurrency(m: Money | undefined, field: string, shopCurrency: string): void {
  if (m && m.currencyCode !== shopCurrency) {
    throw domainError(Code.InvalidArgument, `${field}: prices are in the shop's currency ${shopCurrency}`, { reason: "CURRENCY_MISMATCH", field });
  }
}

async function baseConditions(db: LegacySql, viewer: Viewer, req: SearchProductsRequest, query: string): Promise<Condition[]> {
  const conditions: Condition[] = [];
  if (!viewer.admin) {
    if (req.statuses.some((s) => s !== ProductStatus.ACTIVE)) throw permissionDenied("only admins may search products that are not ACTIVE");
    conditions.push({ name: "status", sql: customerVisible, params: [] });
  } else {
    const statuses = req.statuses.length > 0 ? req.statuses : [ProductStatus.ACTIVE];
    conditions.push({ name: "status", sql: "p.status = any(?::text[])", params: [pgArray(statuses.map(productStatuses.toDb))] });
  }
  if (query) conditions.push(textCondition(query));
  if (req.categoryId) {
    const subtree = await categorySubtree(db, req.categoryId, viewer.admin);
    conditions.push({
      name: "category",
      sql: "exists (select 1 from product_categories pc where pc.product_id = p.id and pc.category_id = any(?::uuid[]))",
      params: [pgArray(subtree)],
    });
  }
  if (req.minPrice || req.maxPrice) {
    const lo = req.minPrice?.amountMinor.toString() ?? null;
    const hi = req.maxPrice?.amountMinor.toString() ?? null;
    conditions.push({
      name: "price",
      sql: `p.price_minor between coalesce(?::bigint, 0) and coalesce(?::bigint, 9223372036854775807)
            or exists (select 1 from product_variants pv where pv.product_id = p.id
                        and pv.price_minor between coalesce(?::bigint, 0) and coalesce(?::bigint, 9223372036854775807))`,
      params: [lo, hi, lo, hi],
    });
  }
  for (const filter of req.attributeFilters) {
    const values = pgArray(filter.values);
    conditions.push({
      name: `attribute:${filter.key}`,
      sql: `p.attributes ->> ? = any(?::text[])
            or exists (select 1 from product_variants pv where pv.product_id = p.id and pv.attributes ->> ? = any(?::text[]))`,
      params: [filter.key, values, filter.key, values],
    });
  }
  if (req.tags.length > 0) {
    const tags = normalizeTags(req.tags);
    conditions.push({
      name: "tags",
      sql: "(select count(*) from product_tags t where t.product_id = p.id and t.tag = any(?::text[])) = ?",
      params: [pgArray(tags), tags.length],
    });
  }
  if (req.inStockOnly) conditions.push({ name: "stock", sql: "p.stock_status in ('in_stock', 'backorder')", params: [] });
  if (req.minRating > 0) conditions.push({ name: "rating", sql: "p.rating_average_hundredths >= ?", params: [req.minRating * 100] });
  return conditions;
}

function orderOf(orderBy: SearchOrderBy, hasQuery: boolean): string {
  const newest = "coalesce(p.published_at, p.created_at) desc";
  switch (orderBy === SearchOrderBy.UNSPECIFIED ? (hasQuery ? SearchOrderBy.RELEVANCE : SearchOrderBy.NEWEST) : orderBy) {
    case SearchOrderBy.RELEVANCE:
      return hasQuery ? `score desc, ${newest}, p.id desc` : `${newest}, p.id desc`;
    case SearchOrderBy.PRICE_ASC:
      return "p.min_price_minor asc, p.id asc";
    case SearchOrderBy.PRICE_DESC:
      return "p.min_price_minor desc, p.id desc";
    case SearchOrderBy.RATING_DESC:
      return "p.rating_average_hundredths desc, p.rating_count desc, p.id desc";
    default:
      return `${newest}, p.id desc`;
  }
}

/** Relevance: an exact name (or SKU) match first, then the weighted text rank and name similarity. */
function scoreOf(query: string): { sql: string; params: unknown[] } {
  const lower = query.toLowerCase();
  return {
    sql: `(case when lower(p.name) = ? then 100 else 0 end
           + case when lower(p.sku) = ? then 50 else 0 end
           + ts_rank(p.search_vector, websearch_to_tsquery(${tsConfig}, ?)) * 10
           + word_similarity(?, lower(p.name)))`,
    params: [lower, lower, query, lower],
  };
}

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
const markUp = (headline: string) => escapeHtml(headline).replaceAll(markStart, "<mark>").replaceAll(markStop, "</mark>");

async function highlightsOf(db: LegacySql, ids: string[], query: string): Promise<Map<string, SearchHighlight[]>> {
  if (ids.length === 0) return new Map();
  const options = `StartSel=${markStart}, StopSel=${markStop}`;
  const long = `${options}, MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "`;
  const rows = await db.all<{ id: string; name: string | null; tags: string | null; short_description: string | null; description: string | null; attributes: string | null }>(
    `with q as (select websearch_to_tsquery(${tsConfig}, ?) as tsq)
     select p.id,
       case when to_tsvector(${tsConfig}, p.name) @@ q.tsq then ts_headline(${tsConfig}, p.name, q.tsq, ?) end as name,
       case when to_tsvector(${tsConfig}, t.tags) @@ q.tsq then ts_headline(${tsConfig}, t.tags, q.tsq, ?) end as tags,
       case when to_tsvector(${tsConfig}, p.short_description) @@ q.tsq
            then ts_headline(${tsConfig}, p.short_description, q.tsq, case when length(p.short_description) <= 200 then ? else ? end) end as short_description,
       case when to_tsvector(${tsConfig}, p.description) @@ q.tsq then ts_headline(${tsConfig}, p.description, q.tsq, ?) end as description,
       case when to_tsvector(${tsConfig}, a.attrs) @@ q.tsq then ts_headline(${tsConfig}, a.attrs, q.tsq, ?) end as attributes
     from products p cross join q
     cross join lateral (select coalesce(string_agg(tag, ', ' order by tag), '') as tags from product_tags where product_id = p.id) t
     cross join lateral (select coalesce(string_agg(key || ': ' || value, ', ' order by key), '') as attrs from jsonb_each_text(p.attributes)) a
     where p.id = any(?::uuid[])`,
    [query, `${options}, HighlightAll=true`, `${options}, HighlightAll=true`, `${options}, HighlightAll=true`, long, long, long, pgArray(ids)],
  );
  const fields = ["name", "tags", "short_description", "description", "attributes"] as const;
  return new Map(
    rows.map((r) => [
      r.id,
      fields.flatMap((field) => {
        const text = r[field];
        return text && text.includes(markStart) ? [create(SearchHighlightSchema, { field, snippet: markUp(text.length > 400 ? `${text.slice(0, 400)}…` : text) })] : [];
      }),
    ]),
  );
}

export async function searchProducts(em: EntityManager, viewer: Viewer, shopCurrency: string, req: SearchProductsRequest): Promise<Out<SearchProductsResponse>> {
  const db = legacySqlOf(em);
  const query = req.query.trim();
  checkShopCurrency(req.minPrice, "min_price", shopCurrency);
  checkShopCurrency(req.maxPrice, "max_price", shopCurrency);
  for (const [i, b] of req.priceBandBoundaries.entries()) checkShopCurrency(b, `price_band_boundaries[${i}]`, shopCurrency);
  const bands = req.priceBandBoundaries.length > 0 ? req.priceBandBoundaries.map((b) => b.amountMinor) : defaultPriceBands;
  for (let i = 1; i < bands.length; i++) {
    if (bands[i]! <= bands[i - 1]!) {
      throw domainError(Code.InvalidArgument, "price_band_boundaries: must be strictly ascending", { reason: "PRICE_BANDS_NOT_ASCENDING", field: `price_band_boundaries[${i}]` });
    }
  }
  const pages = pageOf(req, { o: { offset: maxSearchHits } });
  const offset = pages.after?.o ?? 0;
  const size = Math.min(pages.size, maxSearchHits - offset);

  const conditions = await baseConditions(db, viewer, req, query);
  const all = whereOf(conditions);
  const score = query ? scoreOf(query) : { sql: "0", params: [] };
  const rows =
    size === 0
      ? []
      : await db.all<SummaryDbRow>(
          `select ${summaryColumns}, ${score.sql} as score from products p where ${all.sql}
            order by ${orderOf(req.orderBy, query !== "")} limit ? offset ?`,
          [...score.params, ...all.params, size + 1, offset],
        );
  const total = (await db.one<{ n: number }>(`select count(*)::int as n from products p where ${all.sql}`, all.params))?.n ?? 0;
  const page = rows.slice(0, size);
  const highlights = query ? await highlightsOf(db, page.map((r) => r.id), query) : new Map<string, SearchHighlight[]>();
  const more = rows.length > size && offset + size < maxSearchHits;

  const response: Out<SearchProductsResponse> = {
    hits: page.map((r) => create(SearchHitSchema, { product: summaryMessage(r), highlights: highlights.get(r.id) ?? [] })),
    nextPageToken: more ? pages.next({ o: offset + size }) : "",
    totalCount: total,
    categoryFacet: [],
    priceBandFacet: [],
    attributeFacets: [],
    tagFacet: [],
    ratingFacet: [],
    didYouMean: [],
  };
  const facets = new Set(req.facets);
  if (facets.has(SearchFacet.CATEGORY)) response.categoryFacet = await categoryFacet(db, viewer, req.categoryId, whereOf(conditions, "category"));
  if (facets.has(SearchFacet.PRICE_BAND)) response.priceBandFacet = await priceBandFacet(db, bands, shopCurrency, whereOf(conditions, "price"));
  if (facets.has(SearchFacet.TAG)) response.tagFacet = await tagFacet(db, whereOf(conditions, "tags"));
  if (facets.has(SearchFacet.RATING)) response.ratingFacet = await ratingFacet(db, whereOf(conditions, "rating"));
  for (const key of req.facetAttributeKeys) response.attributeFacets.push(await attributeFacet(db, key, whereOf(conditions, `attribute:${key}`)));
  if (query && total < 3) response.didYouMean = await didYouMean(db, conditions, query, total);
  return response;
}

type Where = { sql: string; params: unknown[] };

async function categoryFacet(db: LegacySql, viewer: Viewer, categoryId: string, where: Where) {
  const parents = categoryId ? await categorySubtree(db, categoryId, viewer.admin) : [];
  if (categoryId && parents.length === 0) return [];
  const rows = await db.all<{ id: string; name: string; slug: string; n: number }>(
    `with recursive facet as (
       select c.id from categories c
        where ${categoryId ? "c.parent_id = ?" : "c.parent_id is null"} ${viewer.admin ? "" : "and c.is_active"}
     ), tree(root, id) as (
       select f.id, f.id from facet f
       union all
       select t.root, c.id from tree t join categories c on c.parent_id = t.id ${viewer.admin ? "" : "where c.is_active"}
     ), hits as (select p.id from products p where ${where.sql})
     select c.id, c.name, c.slug, count(distinct pc.product_id)::int as n
       from tree t join product_categories pc on pc.category_id = t.id join hits h on h.id = pc.product_id join categories c on c.id = t.root
      group by c.id, c.name, c.slug, c.sort_order
      order by n desc, c.sort_order, c.name`,
    [...(categoryId ? [categoryId] : []), ...where.params],
  );
  return rows.map((r) => create(CategoryFacetValueSchema, { categoryId: r.id, name: r.name, slug: r.slug, count: r.n }));
}

async function priceBandFacet(db: LegacySql, bands: bigint[], currency: string, where: Where) {
  const cases = bands.map((b, i) => `when p.min_price_minor < ${b.toString()} then ${i}`).join(" ");
  const rows = await db.all<{ band: number; n: number }>(
    `select case ${cases} else ${bands.length} end as band, count(*)::int as n from products p where ${where.sql} group by band`,
    where.params,
  );
  const counts = new Map(rows.map((r) => [r.band, r.n]));
  return Array.from({ length: bands.length + 1 }, (_, i) =>
    create(PriceBandFacetValueSchema, {
      minPrice: i > 0 ? money(bands[i - 1]!, currency) : undefined,
      maxPrice: i < bands.length ? money(bands[i]!, currency) : undefined,
      count: counts.get(i) ?? 0,
    }),
  );
}

async function tagFacet(db: LegacySql, where: Where) {
  const rows = await db.all<{ tag: string; n: number }>(
    `select t.tag, count(*)::int as n from product_tags t join products p on p.id = t.product_id where ${where.sql}
      group by t.tag order by n desc, t.tag limit 30`,
    where.params,
  );
  return rows.map((r) => create(TagFacetValueSchema, { tag: r.tag, count: r.n }));
}

async function ratingFacet(db: LegacySql, where: Where) {
  const row = await db.one<{ r4: number; r3: number; r2: number; r1: number }>(
    `select count(*) filter (where p.rating_average_hundredths >= 400)::int as r4, count(*) filter (where p.rating_average_hundredths >= 300)::int as r3,
            count(*) filter (where p.rating_average_hundredths >= 200)::int as r2, count(*) filter (where p.rating_average_hundredths >= 100)::int as r1
       from products p where ${where.sql}`,
    where.params,
  );
  return ([4, 3, 2, 1] as const).map((n) => create(RatingFacetValueSchema, { minRating: n, count: row?.[`r${n}`] ?? 0 }));
}

async function attributeFacet(db: LegacySql, key: string, where: Where) {
  const rows = await db.all<{ value: string; n: number }>(
    `with hits as (select p.id, p.attributes from products p where ${where.sql})
     select a.v as value, count(distinct a.id)::int as n from (
       select h.id, h.attributes ->> ? as v from hits h
       union all
       select h.id, pv.attributes ->> ? from hits h join product_variants pv on pv.product_id = h.id
     ) a where a.v is not null group by a.v order by n desc, a.v limit 50`,
    [...where.params, key, key],
  );
  return create(AttributeFacetSchema, { key, values: rows.map((r) => create(AttributeFacetValueSchema, { value: r.value, count: r.n })) });
}

/** Closest known words (names, tags, categories) to a word, best first. */
async function similarWords(db: LegacySql, word: string, limit: number): Promise<string[]> {
  const rows = await db.all<{ word: string }>(
    "select word from search_words where word % ? and word <> ? group by word order by similarity(word, ?) desc, word limit ?",
    [word, word, word, limit],
  );
  return rows.map((r) => r.word);
}

/**
 * Spellings of the query with its unknown words replaced by close known words
 * (all at once first, then one at a time), that find more than it does.
 */
async function didYouMean(db: LegacySql, conditions: Condition[], query: string, hits: number): Promise<string[]> {
  const words = wordsOf(query);
  if (words.length === 0 || words.length > 8) return [];
  const known = new Set(
    (await db.all<{ word: string }>("select word from search_words where word = any(?::text[])", [pgArray(words)])).map((r) => r.word),
  );
  const alternatives = new Map<number, string[]>();
  for (const [i, word] of words.entries()) {
    if (known.has(word) || word.length < 3) continue;
    const similar = await similarWords(db, word, 3);
    if (similar.length > 0) alternatives.set(i, similar);
  }
  if (alternatives.size === 0) return [];
  const best = words.map((w, i) => alternatives.get(i)?.[0] ?? w);
  const candidates = [best.join(" ")];
  for (const [i, list] of alternatives) for (const alternative of list) candidates.push(best.map((w, j) => (j === i ? alternative : w)).join(" "));
  for (const [i, list] of alternatives) for (const alternative of list) candidates.push(words.map((w, j) => (j === i ? alternative : w)).join(" "));
  const out: string[] = [];
  for (const candidate of [...new Set(candidates)]) {
    const where = whereOf([...conditions.filter((c) => c.name !== "text"), textCondition(candidate)]);
    const n = (await db.one<{ n: number }>(`select count(*)::int as n from products p where ${where.sql}`, where.params))?.n ?? 0;
    if (n > hits) out.push(candidate);
    if (out.length === 3) break;
  }
  return out;
}

/** A prefix tsquery ("red & sneak:*") of sanitized words; undefined when nothing is left. */
function prefixQuery(words: string[]): string | undefined {
  const clean = words.map((w) => w.replace(/[^\p{L}\p{N}]/gu, "")).filter((w) => w !== "");
  if (clean.length === 0) return undefined;
  return clean.map((w, i) => (i === clean.length - 1 ? `${w}:*` : w)).join(" & ");
}

export async function suggestProducts(em: EntityManager, req: SuggestProductsRequest): Promise<Out<SuggestProductsResponse>> {
  const db = legacySqlOf(em);
  const limit = req.limit > 0 ? req.limit : 8;
  const words = wordsOf(req.prefix);
  if (words.length === 0) return { queryCompletions: [], products: [], categories: [] };
  const head = words.slice(0, -1);
  const last = words.at(-1)!;

  // Completions: known words starting with the last word, else close spellings of it ("snaekers" -> "sneakers").
  const starting = (
    await db.all<{ word: string }>("select word from search_words where word like ? group by word order by length(word), word limit ?", [`${last}%`, limit])
  ).map((r) => r.word);
  const corrections = starting.length < limit && last.length >= 3 ? await similarWords(db, last, limit - starting.length) : [];
  const completions = [...new Set([...starting, ...corrections])].slice(0, limit).map((w) => [...head, w].join(" "));

  const conditions = [customerVisible];
  const params: unknown[] = [];
  if (req.categoryId) {
    conditions.push("exists (select 1 from product_categories pc where pc.product_id = p.id and pc.category_id = any(?::uuid[]))");
    params.push(pgArray(await categorySubtree(db, req.categoryId, false)));
  }
  // Products: the typed words as a prefix query, or the best correction of the last word.
  const tsqueries = [prefixQuery(words), corrections[0] ? prefixQuery([...head, corrections[0]]) : undefined].filter((q): q is string => q !== undefined);
  const phrase = words.join(" ");
  const matches = [`lower(p.name) like ?`, ...tsqueries.map(() => `p.search_vector @@ to_tsquery(${tsConfig}, ?)`)];
  const products = await db.all<SummaryDbRow>(
    `select ${summaryColumns} from products p
      where ${conditions.join(" and ")} and (${matches.join(" or ")})
      order by (lower(p.name) like ?) desc, word_similarity(?, lower(p.name)) desc, p.rating_count desc, p.id
      limit ?`,
    [...params, `%${phrase}%`, ...tsqueries, `${phrase}%`, phrase, limit],
  );

  const categories = await db.all<{ id: string; name: string; slug: string }>(
    `with recursive visible(id) as (
       select id from categories where parent_id is null and is_active
       union all
       select c.id from categories c join visible v on c.parent_id = v.id where c.is_active
     )
     select c.id, c.name, c.slug from categories c join visible v on v.id = c.id
      where lower(c.name) like ? or lower(c.name) like ? or similarity(lower(c.name), ?) > 0.3
      order by (lower(c.name) like ?) desc, similarity(lower(c.name), ?) desc, c.name limit ?`,
    [`${phrase}%`, `% ${phrase}%`, phrase, `${phrase}%`, phrase, limit],
  );
  return {
    queryCompletions: completions,
    products: products.map(summaryMessage),
    categories: categories.map((c) => create(CategorySuggestionSchema, { categoryId: c.id, name: c.name, slug: c.slug })),
  };
}
