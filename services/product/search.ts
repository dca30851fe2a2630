/**
 * Product search on PostgreSQL alone: full text over the weighted search
 * document (name A; tags and category names B; descriptions C; attribute
 * values D; GIN index), exact SKU matches, small typos through the trigram
 * index of the catalog's word list (pg_trgm), filters, facets and suggestions.
 *
 * A search is one statement: the page, the total and the facets, from one
 * scan of the hits. Facets are counted over the hits with every filter applied
 * except the facet's own, from the same conditions as the hits, so their
 * numbers always agree with what the filters return; they start from the rows
 * the indexed conditions match, never from the whole catalog (unless the
 * search has neither a query nor a category). Pages are offsets into a total order that ends with the
 * product id (deterministic), capped at 10000 hits.
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
import { Code, domainError, permissionDenied } from "../../kit/errors.ts";
import { pageOf } from "../../kit/paging.ts";
import { type SummaryDbRow, summaryColumns, summaryMessage } from "./catalog.ts";
import { categorySubtree } from "./categories.ts";
import { customerVisible, normalizeTags, productStatuses, type Viewer } from "./mapping.ts";
import { money } from "../../kit/money.ts";
import { Params, type Sql } from "../../kit/sql.ts";

type Out<T> = Omit<T, "$typeName">;

export const maxSearchHits = 10_000;
/** Default price bands, in minor units of the shop's currency: below 20, 20-50, 50-100, 100-200, 200-500, 500 and above. */
export const defaultPriceBands = [2_000n, 5_000n, 10_000n, 20_000n, 50_000n];
const tsConfig = "'english'";
/** ts_headline markers, replaced by <mark> tags after the text is HTML-escaped. */
const markStart = "\u0002";
const markStop = "\u0003";

/**
 * One named condition on products aliased `p`. Facets leave out their own
 * (`facet`: the facet whose filter it is), so each facet counts over the hits
 * with every other filter applied.
 */
interface Condition {
  name: string;
  sql: string;
  facet?: boolean;
}

const and = (conditions: Condition[]) => (conditions.length > 0 ? conditions.map((c) => `(${c.sql})`).join(" and ") : "true");

/** Lower-case words of a text, for the word list and trigram lookups. */
const wordsOf = (text: string) => text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((w) => w !== "");

/**
 * The query matches the search document, the SKU exactly, or (for small
 * typos) the search document with each unknown word of four letters or more
 * widened to the known words it is similar to (trigram word similarity over
 * search_words, the catalog's word list). Every branch has its index: the
 * document's GIN (one scan for the query or its widened form: tsquery `||`
 * is their OR, and a one-word query usually widens to itself), the SKU's
 * btree, and the word list's trigram GIN, which is small where a trigram
 * index over 100,000 names is not.
 */
function textCondition(p: Params, query: string): Condition {
  const lower = p.add(query.toLowerCase());
  const widened = widenedQuery(p, query);
  const q = `websearch_to_tsquery(${tsConfig}, ${p.add(query)})`;
  return {
    name: "text",
    sql: `p.search_vector @@ ${widened ? `(${q} || ${widened})` : q} or lower(p.sku) = ${lower}`,
  };
}

/**
 * The CTEs a statement's conditions use, by the Params that bind the
 * statement (`withCtes` puts them at its start): the widened query, computed
 * once per statement, and the category subtree.
 */
const ctesOf = new WeakMap<Params, Map<string, { key: string; sql: string }>>();

/** Registers the CTE `name` (its SQL made once per statement); one key (what it is computed from) per statement. */
function cte(p: Params, name: string, key: string, sql: () => string): void {
  let ctes = ctesOf.get(p);
  if (!ctes) ctesOf.set(p, (ctes = new Map()));
  const known = ctes.get(name);
  if (known && known.key !== key) throw new Error(`one ${name} CTE per statement`);
  if (!known) ctes.set(name, { key, sql: sql() });
}

/**
 * The query's words, each unknown word of four letters or more widened to the
 * known words similar to it (`word %> query word`: trigram word similarity), as
 * one tsquery; undefined when no word is long enough to have typos worth
 * correcting. A word the catalog knows (in search_words) is taken as typed:
 * widening "wool" to "wood" as well more than quadrupled its hits (1,498 to
 * 6,637 of 100,000 products) and so the statement's time, for results the
 * shopper did not ask for. The choice is made inside the CTE, so the plan over
 * products is the same either way (a probe of the products themselves there
 * made the planner switch to sequential scans). The tsquery is computed once
 * per statement, in the `widened` CTE that `withCtes` puts at the start of the
 * statement; this returns a reference to it.
 */
function widenedQuery(p: Params, query: string): string | undefined {
  const words = wordsOf(query);
  if (!words.some((w) => w.length >= 4)) return undefined;
  // The words are letters and digits only, so the alternatives joined with | and & are a valid to_tsquery text.
  cte(p, "widened(q)", query, () => `materialized (select to_tsquery(${tsConfig}, string_agg(a.alternatives, ' & '))
             from (select '(' || string_agg(m.word, ' | ') || ')' as alternatives
                     from unnest(${p.add(words)}::text[]) with ordinality as q(word, i)
                     cross join lateral (select q.word union select s.word from search_words s
                                          where length(q.word) >= 4 and s.word %> q.word
                                            and not exists (select 1 from search_words k where k.word = q.word)) as m(word)
                    group by q.i) a)`);
  return "(select w.q from widened w)";
}

/** `with recursive` and the statement's CTEs: those its conditions use first, then `ctes`. */
function withCtes(p: Params, ctes: string[]): string {
  const all = [...[...(ctesOf.get(p) ?? new Map<string, { sql: string }>())].map(([name, c]) => `${name} as ${c.sql}`), ...ctes];
  return all.length > 0 ? `with recursive ${all.join(",\n     ")}\n` : "";
}

/**
 * The ids of req.category_id's subtree that the viewer may see, as the CTE
 * `subtree(id)` (empty when the category does not exist, or is hidden from a
 * customer: it or one of its ancestors is inactive); customers see only the
 * active descendants. The same tree as categorySubtree (categories.ts), read
 * in the search's own statement.
 */
function subtreeOf(p: Params, categoryId: string, admin: boolean): string {
  cte(p, "subtree(id)", `${categoryId}:${admin}`, () => {
    const id = p.add(categoryId);
    const hidden = `exists (with recursive up(id, parent_id, is_active) as (
             select u.id, u.parent_id, u.is_active from categories u where u.id = ${id}
             union all
             select u.id, u.parent_id, u.is_active from categories u join up on u.id = up.parent_id
           ) select 1 from up where not up.is_active)`;
    return `(
       select c.id from categories c where c.id = ${id}${admin ? "" : ` and not ${hidden}`}
       union all
       select c.id from categories c join subtree s on c.parent_id = s.id${admin ? "" : " where c.is_active"}
     )`;
  });
  return "(select coalesce(array_agg(s.id), '{}') from subtree s)";
}

function checkShopCurrency(m: Money | undefined, field: string, shopCurrency: string): void {
  if (m && m.currencyCode !== shopCurrency) {
    throw domainError(Code.InvalidArgument, `${field}: prices are in the shop's currency ${shopCurrency}`, { reason: "CURRENCY_MISMATCH", field });
  }
}

/** What a search filters by, bound into each statement by `conditionsOf` (the category's subtree is read in the statement itself). */
interface SearchFilter {
  viewer: Viewer;
  req: SearchProductsRequest;
  query: string;
}

function filterOf(viewer: Viewer, req: SearchProductsRequest, query: string): SearchFilter {
  if (!viewer.admin && req.statuses.some((s) => s !== ProductStatus.ACTIVE)) throw permissionDenied("only admins may search products that are not ACTIVE");
  return { viewer, req, query };
}

function conditionsOf(p: Params, { viewer, req, query }: SearchFilter): Condition[] {
  const conditions: Condition[] = [];
  if (!viewer.admin) conditions.push({ name: "status", sql: customerVisible });
  else {
    const statuses = req.statuses.length > 0 ? req.statuses : [ProductStatus.ACTIVE];
    conditions.push({ name: "status", sql: `p.status = any(${p.add(statuses.map(productStatuses.toDb))}::text[])` });
  }
  if (query) conditions.push(textCondition(p, query));
  if (req.categoryId) {
    // Not left out of the category facet (no `facet`), although it is that facet's own filter: the
    // facet counts the children of the category, whose subtrees lie within the category's, so
    // the hits it counts pass the filter anyway. The hits are then only the subtree's products.
    conditions.push({
      name: "category",
      // products.category_ids mirrors product_categories (migration 0002's triggers; GIN index).
      sql: `p.category_ids && ${subtreeOf(p, req.categoryId, viewer.admin)}`,
    });
  }
  if (req.minPrice || req.maxPrice) {
    const lo = p.add(req.minPrice?.amountMinor.toString() ?? null);
    const hi = p.add(req.maxPrice?.amountMinor.toString() ?? null);
    const range = `between coalesce(${lo}::bigint, 0) and coalesce(${hi}::bigint, 9223372036854775807)`;
    conditions.push({
      name: "price",
      facet: true,
      sql: `p.price_minor ${range} or exists (select 1 from product_variants pv where pv.product_id = p.id and pv.price_minor ${range})`,
    });
  }
  for (const filter of req.attributeFilters) {
    const key = p.add(filter.key);
    const values = p.add(filter.values);
    conditions.push({
      name: `attribute:${filter.key}`,
      facet: true,
      sql: `p.attributes ->> ${key} = any(${values}::text[])
            or exists (select 1 from product_variants pv where pv.product_id = p.id and pv.attributes ->> ${key} = any(${values}::text[]))`,
    });
  }
  if (req.tags.length > 0) {
    const tags = normalizeTags(req.tags);
    conditions.push({
      name: "tags",
      facet: true,
      sql: `(select count(*) from product_tags t where t.product_id = p.id and t.tag = any(${p.add(tags)}::text[])) = ${p.add(tags.length)}`,
    });
  }
  if (req.inStockOnly) conditions.push({ name: "stock", sql: "p.stock_status in ('in_stock', 'backorder')" });
  if (req.minRating > 0) conditions.push({ name: "rating", facet: true, sql: `p.rating_average_hundredths >= ${p.add(req.minRating * 100)}` });
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

/**
 * Relevance: an exact name (or SKU) match first, then the weighted text rank
 * of the query, then that of its widened form (which ranks the hits of a
 * misspelled query). Both ranks are cheap per hit; the trigram similarity of
 * every hit's name that used to break ties cost ten times the rest of the
 * score over thousands of hits.
 *
 * The parts are columns of each hit (`exact`, `rank`, `widened_rank`) and the
 * score is summed over them (`score`, over hits aliased `h`), in the order and
 * types of `exact + rank * 10 + widened rank`. A word with no similar known
 * word widens to the query itself: its widened rank is then the same rank,
 * not computed a second time (null, read as `rank`).
 */
function rankOf(p: Params, query: string): { columns: string; postingColumns: string; score: string } {
  const lower = p.add(query.toLowerCase());
  const widened = widenedQuery(p, query);
  const q = `websearch_to_tsquery(${tsConfig}, ${p.add(query)})`;
  return {
    columns: `case when lower(p.name) = ${lower} then 100 else 0 end + case when lower(p.sku) = ${lower} then 50 else 0 end as exact,
      ts_rank(p.search_vector, ${q}) as rank${widened ? `,\n      case when ${widened} = ${q} then null else ts_rank(p.search_vector, ${widened}) end as widened_rank` : ""}`,
    // The same parts for a hit read from search_postings (`fromPostings`): the query is the posting's one
    // word, so its stored rank is the rank, the query widens to itself, and exact matches come from products.
    postingColumns: `0 as exact, p.rank as rank${widened ? ", null::real as widened_rank" : ""}`,
    score: `(h.exact + h.rank * 10${widened ? " + coalesce(h.widened_rank, h.rank)" : ""})`,
  };
}

/** search_postings' columns (migration 0003), under the names of the products' columns they copy. */
const postingColumns = new Set(["p.id", "p.category_ids", "p.min_price_minor", "p.published_at", "p.created_at"]);
/** The conditions that hold for every posting or that read only its columns. */
const postingConditions = new Set(["status", "text", "category"]);

/**
 * The hits of a customer's one-word query from search_postings (migration 0003):
 * the word's rows in one btree, read without visiting the products (10 times
 * cheaper per hit than the GIN index and the heap). Undefined when the request
 * filters, orders or facets by what the postings do not hold, or is an admin's
 * (postings hold only visible products); the GIN path answers then.
 *
 * Whether the query is one word is PostgreSQL's to say (its parser and
 * stemmer): the `term` CTE holds that word, or null for anything else (several
 * words, a phrase, a negation, only stop words, a word widened to others), and
 * each branch below runs only on its side of that (one-time filters: the other
 * side's scans are never executed). The hits are the same rows either way:
 * the products whose name or SKU is the query (read from products, for the
 * exact-match bonus), and the word's postings without them.
 */
function fromPostings(p: Params, filter: SearchFilter, fixed: Condition[], flagged: Condition[], hitColumns: Set<string>, rank: ReturnType<typeof rankOf> | undefined): string | undefined {
  const { viewer, query } = filter;
  if (viewer.admin || !query || flagged.length > 0) return undefined;
  if (fixed.some((c) => !postingConditions.has(c.name)) || [...hitColumns].some((c) => !postingColumns.has(c))) return undefined;
  const q = `websearch_to_tsquery(${tsConfig}, ${p.add(query)})`;
  const widened = widenedQuery(p, query);
  cte(p, "term(lexeme)", query, () => `materialized (select search_term_of(${q})${widened ? ` where ${widened} = ${q}` : ""})`);
  const term = "(select t.lexeme from term t)";
  const lower = p.add(query.toLowerCase());
  const exact = `lower(p.name) = ${lower} or lower(p.sku) = ${lower}`;
  const columns = [...hitColumns].join(", ");
  const productColumns = `${columns}${rank ? `, ${rank.columns}` : ""}`;
  const onPostings = fixed.filter((c) => c.name === "category");
  return `select ${productColumns} from products p where ${term} is not null and (${exact}) and ${and(fixed)}
       union all
       select ${columns}${rank ? `, ${rank.postingColumns}` : ""}
         from (select s.product_id as id, s.rank, s.category_ids, s.min_price_minor, s.published_at, s.created_at
                 from search_postings s where s.lexeme = ${term}) p
        where ${and(onPostings)} and p.id not in (select p.id from products p where ${exact})
       union all
       select ${productColumns} from products p where ${term} is null and ${and(fixed)}`;
}

/** The headline as HTML: its text escaped and its markers made <mark> tags, in one pass over it. */
const markUps: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", [markStart]: "<mark>", [markStop]: "</mark>" };
const markUpPattern = new RegExp(`[&<>"'${markStart}${markStop}]`, "g");
const markUp = (headline: string) => headline.replace(markUpPattern, (c) => markUps[c]!);

const highlightFields = ["name", "tags", "short_description", "description", "attributes"] as const;
/** Headlines come as highlight_<field>: the summary columns already use the plain names. */
type HighlightRow = Partial<Record<`highlight_${(typeof highlightFields)[number]}`, string | null>>;

/**
 * Highlight columns over the page's products aliased `p` (only a page of rows ever pays for ts_headline).
 * A field is headlined only where the product's stored search document matches the query in that
 * field's weight (product_search_vector: name A, tags and category names B, short description and
 * description C, attribute values D): ts_filter on the stored tsvector parses nothing, where
 * `to_tsvector(field) @@ query` parsed every field of every row of the page once more before
 * ts_headline parsed it again. A weight that matches through another field of it (a category name
 * for B) still yields no marked headline, and highlightsOf keeps only headlines with a marker.
 */
function highlightColumns(p: Params, query: string): string {
  const options = `StartSel=${markStart}, StopSel=${markStop}`;
  const all = p.add(`${options}, HighlightAll=true`);
  const long = p.add(`${options}, MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "`);
  const q = `websearch_to_tsquery(${tsConfig}, ${p.add(query)})`;
  const headline = (weight: "a" | "b" | "c" | "d", text: string, opts: string) =>
    `case when ts_filter(p.search_vector, '{${weight}}') @@ ${q} then ts_headline(${tsConfig}, ${text}, ${q}, ${opts}) end`;
  return `${headline("a", "p.name", all)} as highlight_name,
    ${headline("b", "(select coalesce(string_agg(tag, ', ' order by tag), '') from product_tags where product_id = p.id)", all)} as highlight_tags,
    ${headline("c", "p.short_description", `case when length(p.short_description) <= 200 then ${all} else ${long} end`)} as highlight_short_description,
    ${headline("c", "p.description", long)} as highlight_description,
    ${headline("d", "(select coalesce(string_agg(key || ': ' || value, ', ' order by key), '') from jsonb_each_text(p.attributes))", long)} as highlight_attributes`;
}

function highlightsOf(r: HighlightRow): SearchHighlight[] {
  return highlightFields.flatMap((field) => {
    const text = r[`highlight_${field}`];
    return text && text.includes(markStart) ? [create(SearchHighlightSchema, { field, snippet: markUp(text.length > 400 ? `${text.slice(0, 400)}…` : text) })] : [];
  });
}

/**
 * One statement (pageAndCounts): the page (hits in order, with their summary
 * columns and highlights) and the counts (total and facets), from the products
 * the indexed conditions match; facets are counted over those rows only.
 * "Did you mean" runs only for queries with almost no hits.
 */
export async function searchProducts(db: Sql, viewer: Viewer, shopCurrency: string, req: SearchProductsRequest): Promise<Out<SearchProductsResponse>> {
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
  const filter = filterOf(viewer, req, query);

  const { rows, counts } = await pageAndCounts(db, filter, size === 0 ? 0 : size + 1, offset, bands, shopCurrency);
  const page = rows.slice(0, size);
  const more = rows.length > size && offset + size < maxSearchHits;
  return {
    hits: page.map((r) => create(SearchHitSchema, { product: summaryMessage(r), highlights: query ? highlightsOf(r) : [] })),
    nextPageToken: more ? pages.next({ o: offset + size }) : "",
    totalCount: counts.total,
    categoryFacet: counts.categoryFacet,
    priceBandFacet: counts.priceBandFacet,
    attributeFacets: counts.attributeFacets,
    tagFacet: counts.tagFacet,
    ratingFacet: counts.ratingFacet,
    didYouMean: query && counts.total < 3 ? await didYouMean(db, filter, query, counts.total) : [],
  };
}

/**
 * The rows of a related table for each hit, through its index on product_id.
 * `offset 0` keeps the lateral subquery a per-hit lookup: flattened into a join,
 * the planner hashes the whole table (300,000 tags) to meet a few thousand
 * hits, several times slower.
 */
const perHit = (select: string, alias: string) => `cross join lateral (${select} offset 0) ${alias}`;

/** Columns of products aliased `p` that an ORDER BY or a facet reads (`p.name` occurrences). */
const columnsRead = (sql: string) => [...sql.matchAll(/\bp\.([a-z_]+)\b/g)].map((m) => `p.${m[1]}`);

/**
 * The page and the counts in one statement. `hits` holds the rows that match
 * the conditions no facet leaves out (the text, status, stock), with one flag
 * per facet filter and the columns the order and the facets read (for a
 * query: the parts of its relevance score); each facet counts the hits whose
 * other flags hold, and the page is the hits whose flags all hold, in order
 * (without a query, the page is read from products in index order instead:
 * there every visible product is a hit). Only the page's rows are read in
 * full and pay for ts_headline. The counts come on the page's first row (or
 * alone, on a row without a product, when the page is empty).
 */
async function pageAndCounts(db: Sql, filter: SearchFilter, limit: number, offset: number, bands: bigint[], currency: string) {
  const p = new Params();
  const { req, query } = filter;
  const conditions = conditionsOf(p, filter);
  const fixed = conditions.filter((c) => !c.facet);
  const flagged = conditions.filter((c) => c.facet);
  const flag = (c: Condition) => `f${flagged.indexOf(c)}`;
  const hitsExcept = (name?: string) => {
    const used = flagged.filter((c) => c.name !== name);
    return `(select b.* from hits b${used.length > 0 ? ` where ${used.map((c) => `b.${flag(c)}`).join(" and ")}` : ""})`;
  };
  const facets = new Set(req.facets);
  const order = orderOf(req.orderBy, query !== "");
  const rank = order.startsWith("score") ? rankOf(p, query) : undefined;
  const hitColumns = new Set(["p.id"]);
  if (query) for (const c of columnsRead(order)) hitColumns.add(c);
  if (facets.has(SearchFacet.CATEGORY)) hitColumns.add("p.category_ids");
  if (facets.has(SearchFacet.PRICE_BAND)) hitColumns.add("p.min_price_minor");
  if (facets.has(SearchFacet.RATING)) hitColumns.add("p.rating_average_hundredths");
  if (req.facetAttributeKeys.length > 0) hitColumns.add("p.attributes");

  const pageSql = query
    ? `select h.id, ${rank ? rank.score : "0"} as score from ${hitsExcept()} h order by ${order.replace(/\bp\./g, "h.")}`
    : `select p.id, 0 as score from products p where ${and(conditions)} order by ${order}`;
  const highlights = query ? `, ${highlightColumns(p, query)}` : "";

  const columns = [`(select count(*)::int from ${hitsExcept()} h) as total`];
  if (facets.has(SearchFacet.CATEGORY)) columns.push(`${categoryFacetSql(p, filter, hitsExcept("category"))} as category_facet`);
  if (facets.has(SearchFacet.PRICE_BAND)) {
    const cases = bands.map((b, i) => `when h.min_price_minor < ${p.add(b.toString())}::bigint then ${i}`).join(" ");
    columns.push(`(select coalesce(json_object_agg(x.band, x.n), '{}') from (select case ${cases} else ${bands.length} end as band, count(*)::int as n
                      from ${hitsExcept("price")} h group by band) x) as price_facet`);
  }
  if (facets.has(SearchFacet.TAG)) {
    columns.push(`(select coalesce(json_agg(json_build_object('tag', x.tag, 'n', x.n) order by x.n desc, x.tag), '[]') from (
                     select t.tag, count(*)::int as n from ${hitsExcept("tags")} h ${perHit("select t.tag from product_tags t where t.product_id = h.id", "t")}
                      group by t.tag order by n desc, t.tag limit 30) x) as tag_facet`);
  }
  if (facets.has(SearchFacet.RATING)) {
    columns.push(`(select json_build_array(count(*) filter (where h.rating_average_hundredths >= 400), count(*) filter (where h.rating_average_hundredths >= 300),
                     count(*) filter (where h.rating_average_hundredths >= 200), count(*) filter (where h.rating_average_hundredths >= 100))
                     from ${hitsExcept("rating")} h) as rating_facet`);
  }
  const keys = req.facetAttributeKeys;
  for (const [i, key] of keys.entries()) {
    const k = p.add(key);
    columns.push(`(select coalesce(json_agg(json_build_object('value', x.v, 'n', x.n) order by x.n desc, x.v), '[]') from (
                     select a.v, count(distinct a.id)::int as n from (
                       select h.id, h.attributes ->> ${k} as v from ${hitsExcept(`attribute:${key}`)} h
                       union all
                       select h.id, pv.v from ${hitsExcept(`attribute:${key}`)} h ${perHit(`select pv.attributes ->> ${k} as v from product_variants pv where pv.product_id = h.id`, "pv")}
                     ) a where a.v is not null group by a.v order by n desc, a.v limit 50) x) as attribute_facet_${i}`);
  }
  const hits =
    fromPostings(p, filter, fixed, flagged, hitColumns, rank) ??
    `select ${[...hitColumns].join(", ")}${rank ? `, ${rank.columns}` : ""}${flagged.map((c) => `, (${c.sql}) as ${flag(c)}`).join("")}
         from products p where ${and(fixed)}`;
  const result = await db.all<Record<string, unknown> & { first_row: string | null; n: string | null; total: number }>(
    `${withCtes(p, [
      `hits as materialized (
       ${hits}
     )`,
      `page as (
       ${pageSql} limit ${p.add(limit)} offset ${p.add(offset)}
     )`,
      `page_rows as (
       select row_number() over (order by ${order.replace("score desc", "page.score desc")}) as n, ${summaryColumns}${highlights}
         from page join products p on p.id = page.id
     )`,
      `counts as (
       select 1::bigint as first_row, ${columns.join(",\n")}
     )`,
    ])}     select * from counts full join page_rows on page_rows.n = counts.first_row order by page_rows.n`,
    p.values,
    // With a query the hits come from the materialized `hits` (postings or the GIN index), whatever
    // the values: planned once per connection (about 1 ms of the statement's 5.5). Without one, the
    // page's limit decides between reading products in index order and sorting them: planned per call.
    { genericPlan: query !== "" },
  );
  const row = result.find((r) => r.first_row !== null)!;
  const rows = result.filter((r) => r.n !== null) as unknown as (SummaryDbRow & HighlightRow)[];
  return { rows, counts: countsFrom(row, filter.req, bands, currency) };
}

function countsFrom(row: Record<string, unknown> & { total: number }, req: SearchProductsRequest, bands: bigint[], currency: string) {
  const facets = new Set(req.facets);
  const keys = req.facetAttributeKeys;
  const priceCounts = (row.price_facet ?? {}) as Record<string, number>;
  const rating = (row.rating_facet ?? [0, 0, 0, 0]) as number[];
  return {
    total: row.total,
    categoryFacet: ((row.category_facet ?? []) as { id: string; name: string; slug: string; n: number }[]).map((r) =>
      create(CategoryFacetValueSchema, { categoryId: r.id, name: r.name, slug: r.slug, count: r.n }),
    ),
    priceBandFacet: facets.has(SearchFacet.PRICE_BAND)
      ? Array.from({ length: bands.length + 1 }, (_, i) =>
          create(PriceBandFacetValueSchema, {
            minPrice: i > 0 ? money(bands[i - 1]!, currency) : undefined,
            maxPrice: i < bands.length ? money(bands[i]!, currency) : undefined,
            count: priceCounts[String(i)] ?? 0,
          }),
        )
      : [],
    tagFacet: ((row.tag_facet ?? []) as { tag: string; n: number }[]).map((r) => create(TagFacetValueSchema, { tag: r.tag, count: r.n })),
    ratingFacet: facets.has(SearchFacet.RATING) ? ([4, 3, 2, 1] as const).map((n, i) => create(RatingFacetValueSchema, { minRating: n, count: rating[i] ?? 0 })) : [],
    attributeFacets: keys.map((key, i) =>
      create(AttributeFacetSchema, {
        key,
        values: ((row[`attribute_facet_${i}`] ?? []) as { value: string; n: number }[]).map((r) => create(AttributeFacetValueSchema, { value: r.value, count: r.n })),
      }),
    ),
  };
}

/**
 * The category facet: hits per child of the filtered category (or per root),
 * counted over each child's visible subtree (the tree is read live; each hit
 * brings its own categories, products.category_ids). The hits are grouped by
 * their set of categories first (a few dozen sets over thousands of hits),
 * and each set counts once for each child whose subtree it reaches.
 */
function categoryFacetSql(p: Params, { viewer, req }: SearchFilter, hits: string): string {
  const active = viewer.admin ? "" : "c.is_active";
  // A category the viewer may not see (an empty subtree) has no facet.
  const parent = req.categoryId ? `c.parent_id = ${p.add(req.categoryId)} and exists (select 1 from subtree)` : "c.parent_id is null";
  return `(with recursive facet as (
       select c.id from categories c where ${parent} ${active ? `and ${active}` : ""}
     ), tree(root, id) as (
       select f.id, f.id from facet f
       union all
       select t.root, c.id from tree t join categories c on c.parent_id = t.id ${active ? `where ${active}` : ""}
     ), sets as (
       select h.category_ids, count(*) as n from ${hits} h group by h.category_ids
     ), counted as (
       select c.id, c.name, c.slug, c.sort_order, sum(s.n)::int as n
         from sets s cross join lateral (select distinct t.root from unnest(s.category_ids) as pc(category_id) join tree t on t.id = pc.category_id) r
         join categories c on c.id = r.root
        group by c.id, c.name, c.slug, c.sort_order
     )
     select coalesce(json_agg(json_build_object('id', id, 'name', name, 'slug', slug, 'n', n) order by n desc, sort_order, name), '[]') from counted)`;
}

/** Closest known words (names, tags, categories) to a word, best first. */
async function similarWords(db: Sql, word: string, limit: number): Promise<string[]> {
  const rows = await db.all<{ word: string }>(
    "select word from search_words where word % $1 and word <> $1 group by word order by similarity(word, $1) desc, word limit $2",
    [word, limit],
  );
  return rows.map((r) => r.word);
}

/**
 * Spellings of the query with its unknown words replaced by close known words
 * (all at once first, then one at a time), that find more than it does.
 */
async function didYouMean(db: Sql, filter: SearchFilter, query: string, hits: number): Promise<string[]> {
  const words = wordsOf(query);
  if (words.length === 0 || words.length > 8) return [];
  const known = new Set(
    (await db.all<{ word: string }>("select word from search_words where word = any($1::text[])", [words])).map((r) => r.word),
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
    const p = new Params();
    const where = and(conditionsOf(p, { ...filter, query: candidate }));
    const n = (await db.one<{ n: number }>(`${withCtes(p, [])}select count(*)::int as n from products p where ${where}`, p.values))?.n ?? 0;
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

export async function suggestProducts(db: Sql, req: SuggestProductsRequest): Promise<Out<SuggestProductsResponse>> {
  const limit = req.limit > 0 ? req.limit : 8;
  const words = wordsOf(req.prefix);
  if (words.length === 0) return { queryCompletions: [], products: [], categories: [] };
  const head = words.slice(0, -1);
  const last = words.at(-1)!;

  // Completions: known words starting with the last word, else close spellings of it ("snaekers" -> "sneakers").
  const starting = (
    await db.all<{ word: string }>("select word from search_words where word like $1 group by word order by length(word), word limit $2", [`${last}%`, limit])
  ).map((r) => r.word);
  const corrections = starting.length < limit && last.length >= 3 ? await similarWords(db, last, limit - starting.length) : [];
  const completions = [...new Set([...starting, ...corrections])].slice(0, limit).map((w) => [...head, w].join(" "));

  const p = new Params();
  const conditions = [customerVisible];
  if (req.categoryId) {
    const subtree = await categorySubtree(db, req.categoryId, false);
    conditions.push(`exists (select 1 from product_categories pc where pc.product_id = p.id and pc.category_id = any(${p.add(subtree)}::uuid[]))`);
  }
  // Products: the typed words as a prefix query, or the best correction of the last word.
  const tsqueries = [prefixQuery(words), corrections[0] ? prefixQuery([...head, corrections[0]]) : undefined].filter((q): q is string => q !== undefined);
  const phrase = p.add(words.join(" "));
  const matches = [`lower(p.name) like ${p.add(`%${words.join(" ")}%`)}`, ...tsqueries.map((q) => `p.search_vector @@ to_tsquery(${tsConfig}, ${p.add(q)})`)];
  const products = await db.all<SummaryDbRow>(
    `select ${summaryColumns} from products p
      where ${conditions.join(" and ")} and (${matches.join(" or ")})
      order by (lower(p.name) like ${p.add(`${words.join(" ")}%`)}) desc, word_similarity(${phrase}, lower(p.name)) desc, p.rating_count desc, p.id
      limit ${p.add(limit)}`,
    p.values,
  );

  const categories = await db.all<{ id: string; name: string; slug: string }>(
    `with recursive visible(id) as (
       select id from categories where parent_id is null and is_active
       union all
       select c.id from categories c join visible v on c.parent_id = v.id where c.is_active
     )
     select c.id, c.name, c.slug from categories c join visible v on v.id = c.id
      where lower(c.name) like $1 or lower(c.name) like $2 or similarity(lower(c.name), $3) > 0.3
      order by (lower(c.name) like $1) desc, similarity(lower(c.name), $3) desc, c.name limit $4`,
    [`${words.join(" ")}%`, `% ${words.join(" ")}%`, words.join(" "), limit],
  );
  return {
    queryCompletions: completions,
    products: products.map(summaryMessage),
    categories: categories.map((c) => create(CategorySuggestionSchema, { categoryId: c.id, name: c.name, slug: c.slug })),
  };
}
