/**
 * The search document's words, one row per (lexeme, visible product): an
 * inverted index that PostgreSQL can read without visiting the products.
 *
 * Why: a search must rank, count and facet every hit, and through the GIN index
 * each hit costs a visit to its product row (about 2–4 µs; "leather" over
 * 100,000 products is 5,805 hits and 4,789 heap pages, 20–35 ms). A query that
 * is one word is answered from this table instead: its rows for the word are
 * adjacent in one btree, which holds what the ranking, the order, the category
 * filter and the category and price facets read (index-only scan, about 0.25 µs
 * per hit; search.ts `fromPostings`). Other queries (several words, phrases,
 * typos widened to other words, filters on other columns) keep the GIN path.
 *
 * `rank` is the rank the search computes for the one-word query, stored:
 * ts_rank(search_vector, 'lexeme'), the same function on the same values, so
 * the order is the same whichever path answers. Only customer-visible products
 * (active and visible) have rows; admins search through the GIN path.
 *
 * Kept by a row trigger on products that fires only when a column copied here
 * changes (the search document, status, visibility, categories, lowest price,
 * dates), so stock, rating and other writes do not pay for it; the rows of a
 * product are replaced as a whole (a dozen rows on average). Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class ProductSearchPostings extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table search_postings (
      lexeme text not null,
      product_id uuid not null references products (id) on delete cascade,
      rank real not null,
      published_at timestamptz,
      created_at timestamptz not null,
      category_ids uuid[] not null,
      min_price_minor bigint not null
    )`);
    // Everything a one-word search reads, in the index itself (index-only scans).
    this.addSql(
      "create index search_postings_lexeme on search_postings (lexeme, product_id) include (rank, published_at, created_at, category_ids, min_price_minor)",
    );
    this.addSql("create index search_postings_product on search_postings (product_id)");
    // Index-only scans skip the table only on pages the visibility map marks all-visible:
    // vacuum this table soon after catalog edits rather than at the default 20%.
    this.addSql(
      "alter table search_postings set (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02)",
    );

    // The tsquery of one lexeme, written as tsquery's own text form (quotes doubled, backslashes escaped).
    this.addSql(`create function search_term_query(lexeme text) returns tsquery language sql immutable strict as $$
      select ('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''')::tsquery
    $$`);
    // The lexeme of a tsquery that is one plain lexeme (no weight, prefix, operator), else null.
    this.addSql(`create function search_term_of(q tsquery) returns text language sql immutable strict as $$
      select t.lexeme from (select replace(replace(substr(q::text, 2, length(q::text) - 2), '''''', ''''), '\\\\', '\\') as lexeme) t
       where numnode(q) = 1 and right(q::text, 1) = '''' and search_term_query(t.lexeme) = q
    $$`);

    this.addSql(`create function search_postings_refresh() returns trigger language plpgsql as $$
      begin
        if tg_op = 'UPDATE' then
          delete from search_postings where product_id = old.id;
        end if;
        if new.status = 'active' and new.is_visible then
          insert into search_postings (lexeme, product_id, rank, published_at, created_at, category_ids, min_price_minor)
          select u.lexeme, new.id, ts_rank(new.search_vector, search_term_query(u.lexeme)), new.published_at, new.created_at, new.category_ids, new.min_price_minor
            from unnest(new.search_vector) u;
        end if;
        return null;
      end $$`);
    this.addSql("create trigger products_search_postings_insert after insert on products for each row execute function search_postings_refresh()");
    this.addSql(`create trigger products_search_postings_update after update on products for each row
      when (old.search_vector is distinct from new.search_vector or old.status is distinct from new.status or old.is_visible is distinct from new.is_visible
         or old.category_ids is distinct from new.category_ids or old.min_price_minor is distinct from new.min_price_minor
         or old.published_at is distinct from new.published_at or old.created_at is distinct from new.created_at)
      execute function search_postings_refresh()`);

    // Every product's rows at once: here, and after a bulk load that ran with the triggers
    // disabled (services/product/seed.ts: one pass instead of one per trigger firing).
    this.addSql(`create function search_postings_rebuild() returns void language sql as $$
      delete from search_postings;
      insert into search_postings (lexeme, product_id, rank, published_at, created_at, category_ids, min_price_minor)
      select u.lexeme, p.id, ts_rank(p.search_vector, search_term_query(u.lexeme)), p.published_at, p.created_at, p.category_ids, p.min_price_minor
        from products p cross join lateral unnest(p.search_vector) u
       where p.status = 'active' and p.is_visible;
    $$`);
    this.addSql("select search_postings_rebuild()");
  }
}
