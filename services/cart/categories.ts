/**
 * Category ancestry for discount snapshots: the Discount service matches a
 * category rule against each line's categories and their ancestors, which only
 * the catalog knows. The Cart keeps the catalog's tree (one GetCategoryTree)
 * for CART_CATEGORY_CACHE_MS and asks again sooner when a product names a
 * category it has not seen (at most once a second), so a cart costs no extra
 * peer call in the common case and a new category is known at once.
 */
import type { Client } from "@connectrpc/connect";
import { type CategoryNode, CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";

export class CategoryAncestry {
  private ancestors = new Map<string, string[]>();
  private fetchedAt = 0;
  private attemptedAt = 0;
  private loading: Promise<void> | undefined;
  private readonly client: () => Client<typeof CategoryService>;
  private readonly ttlMs: number;

  constructor(client: () => Client<typeof CategoryService>, ttlMs: number) {
    this.client = client;
    this.ttlMs = ttlMs;
  }

  /** Each category id with its ancestors (deduplicated); unknown ids stand alone. */
  async expand(categoryIds: readonly string[]): Promise<string[]> {
    const age = Date.now() - this.fetchedAt;
    const unknown = categoryIds.some((id) => !this.ancestors.has(id));
    // At most one attempt a second, so a catalog that fails is not asked by every call.
    if ((age > this.ttlMs || unknown) && Date.now() - this.attemptedAt > 1_000) await this.refresh();
    const out = new Set<string>();
    for (const id of categoryIds) {
      out.add(id);
      for (const a of this.ancestors.get(id) ?? []) out.add(a);
    }
    return [...out];
  }

  private refresh(): Promise<void> {
    this.loading ??= (async () => {
      this.attemptedAt = Date.now();
      try {
        const { roots } = await this.client().getCategoryTree({});
        const next = new Map<string, string[]>();
        const walk = (node: CategoryNode, path: string[]) => {
          const id = node.category?.id;
          if (!id) return;
          next.set(id, path);
          for (const child of node.children) walk(child, [...path, id]);
        };
        for (const root of roots) walk(root, []);
        this.ancestors = next;
        this.fetchedAt = Date.now();
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }
}
