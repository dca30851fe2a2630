/**
 * The category tree: at most five levels (0 to 4), siblings ordered by
 * sort_order then name. Customers see active categories whose ancestors are
 * all active; an inactive category hides its subtree from them. Structural
 * changes (create under a parent, move) take one advisory lock, so two moves
 * can never build a cycle between them; a move under its own subtree is
 * refused (CATEGORY_CYCLE).
 *
 * The tree is small (dozens to hundreds of rows): reads load it whole and walk
 * it in memory; product counts and subtrees of products use recursive SQL.
 */
import { create } from "@bufbuild/protobuf";
import {
  type Category,
  type CategoryNode,
  CategoryNodeSchema,
  CategorySchema,
  type CreateCategoryRequest,
  type CreateCategoryResponse,
  type DeleteCategoryRequest,
  type GetCategoryRequest,
  type GetCategoryResponse,
  type GetCategoryTreeRequest,
  type GetCategoryTreeResponse,
  type ListCategoriesRequest,
  type ListCategoriesResponse,
  type MoveCategoryRequest,
  type MoveCategoryResponse,
  type UpdateCategoryRequest,
  type UpdateCategoryResponse,
} from "../../gen/ecommerce/product/v1/category_pb.js";
import { LockMode } from "@mikro-orm/core";
import type { EntityManager } from "../../kit/db.ts";
import { timestampOf } from "../../kit/convert.ts";
import { Code, domainError, failedPrecondition, invalidArgument, notFound, permissionDenied } from "../../kit/errors.ts";
import { pageOf } from "../../kit/paging.ts";
import { v7 as uuidv7 } from "uuid";
import { CategoryEntity, type CategoryRow } from "./entities.ts";
import { allocateSlug, checkSlugFree, guarded } from "./guards.ts";
import { nullIfEmpty, slugify, type Viewer } from "./mapping.ts";
import { type Sql, sqlOf } from "../../kit/sql.ts";
import { applyFieldMask, setField } from "../../kit/field-mask.ts";

type Out<T> = Omit<T, "$typeName">;

export const maxLevel = 4;
/** Upper bound of a ListCategories page token's offset (far above any real catalog's category count). */
const maxCategoryOffset = 100_000;

/** Held by every change of the tree's shape, for the rest of the transaction. */
async function lockTree(db: Sql): Promise<void> {
  await db.run("select pg_advisory_xact_lock(hashtext('categories:tree'))");
}

/** What a Category message is made of: an entity (writes) or a row of the tree (reads, timestamps as text). */
type CategoryFields = Pick<CategoryRow, "id" | "name" | "slug" | "description" | "parentId" | "level" | "sortOrder" | "imageUrl" | "isActive"> & {
  createdAt: Date | string;
  updatedAt: Date | string;
};

/** The tree's columns under CategoryFields' names. */
const categoryColumns = `id, name, slug, description, parent_id as "parentId", level, sort_order as "sortOrder", image_url as "imageUrl",
  is_active as "isActive", created_at as "createdAt", updated_at as "updatedAt"`;

export function categoryMessage(c: CategoryFields, productCount?: number): Category {
  return create(CategorySchema, {
    id: c.id,
    name: c.name,
    slug: c.slug,
    description: c.description,
    parentId: c.parentId ?? "",
    level: c.level,
    sortOrder: c.sortOrder,
    imageUrl: c.imageUrl ?? "",
    isActive: c.isActive,
    ...(productCount !== undefined ? { productCount } : {}),
    createdAt: timestampOf(c.createdAt),
    updatedAt: timestampOf(c.updatedAt),
  });
}

/** The whole tree in memory: by id, children by parent in sibling order, and what the viewer may see. */
interface Tree {
  byId: Map<string, CategoryFields>;
  children: Map<string | null, CategoryFields[]>;
  visible: (id: string) => boolean;
}

const siblingOrder = (a: CategoryFields, b: CategoryFields) =>
  a.sortOrder - b.sortOrder || a.name.localeCompare(b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Read through the query helper, not entities: the tree is read on every page of a shop, and hydrating it cost more than the read. */
async function loadTree(db: Sql, showInactive: boolean): Promise<Tree> {
  const rows = await db.all<CategoryFields>(`select ${categoryColumns} from categories`);
  const byId = new Map(rows.map((r) => [r.id, r]));
  const children = new Map<string | null, CategoryFields[]>();
  for (const r of rows) {
    const list = children.get(r.parentId ?? null);
    if (list) list.push(r);
    else children.set(r.parentId ?? null, [r]);
  }
  for (const list of children.values()) list.sort(siblingOrder);
  const seen = new Map<string, boolean>();
  const visible = (id: string): boolean => {
    if (showInactive) return byId.has(id);
    const cached = seen.get(id);
    if (cached !== undefined) return cached;
    const row = byId.get(id);
    const v = !!row && row.isActive && (row.parentId === null || row.parentId === undefined || visible(row.parentId));
    seen.set(id, v);
    return v;
  };
  return { byId, children, visible };
}

/** Depth-first, siblings in order, from `start` (null: the roots), skipping what the viewer cannot see. */
function walk(tree: Tree, start: string | null, maxDepth = Infinity): { row: CategoryFields; depth: number }[] {
  const out: { row: CategoryFields; depth: number }[] = [];
  const visit = (parent: string | null, depth: number) => {
    if (depth > maxDepth) return;
    for (const c of tree.children.get(parent) ?? []) {
      if (!tree.visible(c.id)) continue;
      out.push({ row: c, depth });
      visit(c.id, depth + 1);
    }
  };
  visit(start, 1);
  return out;
}

/**
 * Ids of a category and its descendants that the viewer may see; empty when
 * the category does not exist or is hidden from the viewer.
 */
export async function categorySubtree(db: Sql, categoryId: string, admin: boolean): Promise<string[]> {
  const rows = await db.all<{ id: string }>(
    `with recursive sub(id) as (
       select c.id from categories c where c.id = $1
       union all
       select c.id from categories c join sub on c.parent_id = sub.id ${admin ? "" : "where c.is_active"}
     ) select id from sub`,
    [categoryId],
  );
  if (rows.length === 0) return [];
  if (!admin) {
    const hidden = await db.one<{ id: string }>(
      `with recursive up(id, parent_id, is_active) as (
         select id, parent_id, is_active from categories where id = $1
         union all
         select c.id, c.parent_id, c.is_active from categories c join up on c.id = up.parent_id
       ) select id from up where not is_active limit 1`,
      [categoryId],
    );
    if (hidden) return [];
  }
  return rows.map((r) => r.id);
}

/** Number of ACTIVE, visible products in each category's subtree (as the viewer sees the tree). */
async function productCounts(db: Sql, ids: string[], admin: boolean): Promise<Map<string, number>> {
  if (ids.length === 0) return new Map();
  const rows = await db.all<{ id: string; n: number }>(
    `with recursive tree(root, id) as (
       select c.id, c.id from categories c where c.id = any($1::uuid[])
       union all
       select t.root, c.id from tree t join categories c on c.parent_id = t.id ${admin ? "" : "where c.is_active"}
     )
     select t.root as id, count(distinct pc.product_id)::int as n
       from tree t
       join product_categories pc on pc.category_id = t.id
       join products p on p.id = pc.product_id and p.status = 'active' and p.is_visible
      group by t.root`,
    [ids],
  );
  const counts = new Map(ids.map((id) => [id, 0]));
  for (const r of rows) counts.set(r.id, r.n);
  return counts;
}

export async function createCategory(em: EntityManager, req: CreateCategoryRequest): Promise<Out<CreateCategoryResponse>> {
  return guarded(() =>
    em.transactional(async (tx) => {
      const db = sqlOf(tx);
      let level = 0;
      if (req.parentId) {
        await lockTree(db);
        const parent = await tx.findOne(CategoryEntity, { id: req.parentId });
        if (!parent) throw domainError(Code.NotFound, `parent category ${req.parentId} not found`, { reason: "PARENT_NOT_FOUND", field: "parent_id" });
        if (parent.level >= maxLevel) {
          throw failedPrecondition(`categories nest at most ${maxLevel + 1} levels; the parent is at level ${parent.level}`, "CATEGORY_TOO_DEEP");
        }
        level = parent.level + 1;
      }
      let slug = req.slug;
      if (slug) await checkSlugFree(db, "categories", slug, "slug");
      else slug = await allocateSlug(db, "categories", slugify(req.name, "category"));
      const now = new Date();
      const row = tx.create(CategoryEntity, {
        id: uuidv7(),
        name: req.name,
        slug,
        description: req.description,
        parentId: req.parentId || null,
        level,
        sortOrder: req.sortOrder,
        imageUrl: nullIfEmpty(req.imageUrl),
        isActive: req.isActive,
        createdAt: now,
        updatedAt: now,
      });
      await tx.flush();
      return { category: categoryMessage(row) };
    }),
  );
}

export async function getCategory(db: Sql, viewer: Viewer, req: GetCategoryRequest): Promise<Out<GetCategoryResponse>> {
  const tree = await loadTree(db, viewer.admin);
  const lookup = req.lookup;
  const row = lookup.case === "id" ? tree.byId.get(lookup.value) : lookup.case === "slug" ? [...tree.byId.values()].find((c) => c.slug === lookup.value) : undefined;
  if (!row || !tree.visible(row.id)) throw notFound("category", lookup.value ?? "");
  const ancestors: CategoryFields[] = [];
  for (let p = row.parentId ? tree.byId.get(row.parentId) : undefined; p; p = p.parentId ? tree.byId.get(p.parentId) : undefined) ancestors.unshift(p);
  const counts = req.includeProductCounts ? await productCounts(db, [row.id, ...ancestors.map((a) => a.id)], viewer.admin) : undefined;
  return {
    category: categoryMessage(row, counts?.get(row.id)),
    ancestors: ancestors.map((a) => categoryMessage(a, counts?.get(a.id))),
  };
}

export async function listCategories(db: Sql, viewer: Viewer, req: ListCategoriesRequest): Promise<Out<ListCategoriesResponse>> {
  if (req.includeInactive && !viewer.admin) throw permissionDenied("only admins may list inactive categories");
  const tree = await loadTree(db, viewer.admin && req.includeInactive);
  let rows: CategoryFields[];
  if (req.parentId) rows = tree.visible(req.parentId) ? (tree.children.get(req.parentId) ?? []).filter((c) => tree.visible(c.id)) : [];
  else if (req.rootsOnly) rows = (tree.children.get(null) ?? []).filter((c) => tree.visible(c.id));
  else rows = walk(tree, null).map((w) => w.row);
  // An offset into the in-memory tree walk, bounded by the largest tree a token could index.
  const pages = pageOf(req, { o: { offset: maxCategoryOffset } });
  const size = pages.size;
  const offset = pages.after?.o ?? 0;
  const page = rows.slice(offset, offset + size);
  const counts = req.includeProductCounts ? await productCounts(db, page.map((c) => c.id), viewer.admin) : undefined;
  return {
    categories: page.map((c) => categoryMessage(c, counts?.get(c.id))),
    nextPageToken: offset + size < rows.length ? pages.next({ o: offset + size }) : "",
  };
}

export async function getCategoryTree(db: Sql, viewer: Viewer, req: GetCategoryTreeRequest): Promise<Out<GetCategoryTreeResponse>> {
  if (req.includeInactive && !viewer.admin) throw permissionDenied("only admins may see inactive categories");
  const tree = await loadTree(db, viewer.admin && req.includeInactive);
  let roots: CategoryFields[];
  if (req.rootId) {
    const root = tree.byId.get(req.rootId);
    if (!root || !tree.visible(root.id)) throw notFound("category", req.rootId);
    roots = [root];
  } else {
    roots = (tree.children.get(null) ?? []).filter((c) => tree.visible(c.id));
  }
  const maxDepth = req.maxDepth === 0 ? Infinity : req.maxDepth;
  const included = [...roots, ...roots.flatMap((r) => walk(tree, r.id, maxDepth - 1).map((w) => w.row))];
  const counts = req.includeProductCounts ? await productCounts(db, included.map((c) => c.id), viewer.admin) : undefined;
  const node = (c: CategoryFields, depth: number): CategoryNode =>
    create(CategoryNodeSchema, {
      category: categoryMessage(c, counts?.get(c.id)),
      children: depth < maxDepth ? (tree.children.get(c.id) ?? []).filter((k) => tree.visible(k.id)).map((k) => node(k, depth + 1)) : [],
    });
  return { roots: roots.map((r) => node(r, 1)) };
}

export async function updateCategory(em: EntityManager, req: UpdateCategoryRequest): Promise<Out<UpdateCategoryResponse>> {
  const input = req.category!;
  return guarded(() =>
    em.transactional(async (tx) => {
      const row = await tx.findOne(CategoryEntity, { id: input.id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      if (!row) throw notFound("category", input.id);
      const paths = new Set(req.updateMask?.paths ?? []);
      if (paths.has("name") && !input.name.trim()) throw invalidArgument("category.name", "cannot be cleared");
      if (paths.has("slug")) {
        if (!input.slug) throw invalidArgument("category.slug", "cannot be cleared");
        if (input.slug !== row.slug) await checkSlugFree(sqlOf(tx), "categories", input.slug, "category.slug", row.id);
      }
      const field = <V>(read: (i: Category) => V, get: (r: CategoryRow) => V, put: (r: CategoryRow, v: V) => void) => setField(read, get, put);
      const changed =
        applyFieldMask(req.updateMask, row, input, {
          name: field((i) => i.name, (r) => r.name, (r, v) => (r.name = v)),
          slug: field((i) => i.slug, (r) => r.slug, (r, v) => (r.slug = v)),
          description: field((i) => i.description, (r) => r.description, (r, v) => (r.description = v)),
          sort_order: field((i) => i.sortOrder, (r) => r.sortOrder, (r, v) => (r.sortOrder = v)),
          image_url: field((i) => nullIfEmpty(i.imageUrl), (r) => r.imageUrl ?? null, (r, v) => (r.imageUrl = v)),
          is_active: field((i) => i.isActive, (r) => r.isActive, (r, v) => (r.isActive = v)),
        }).length > 0;
      if (changed) row.updatedAt = new Date();
      await tx.flush();
      return { category: categoryMessage(row) };
    }),
  );
}

export async function moveCategory(em: EntityManager, req: MoveCategoryRequest): Promise<Out<MoveCategoryResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    await lockTree(db);
    const row = await tx.findOne(CategoryEntity, { id: req.id });
    if (!row) throw notFound("category", req.id);
    const newParentId = req.newParentId || null;
    if (newParentId === row.id) throw invalidArgument("new_parent_id", "a category cannot be its own parent");
    let newLevel = 0;
    if (newParentId) {
      const parent = await tx.findOne(CategoryEntity, { id: newParentId });
      if (!parent) throw domainError(Code.NotFound, `category ${newParentId} not found`, { reason: "PARENT_NOT_FOUND", field: "new_parent_id" });
      newLevel = parent.level + 1;
    }
    const subtree = await db.all<{ id: string; level: number }>(
      `with recursive sub(id, level) as (
         select id, level from categories where id = $1
         union all
         select c.id, c.level from categories c join sub on c.parent_id = sub.id
       ) select id, level from sub`,
      [row.id],
    );
    if (newParentId && subtree.some((s) => s.id === newParentId)) {
      throw failedPrecondition("the new parent is inside the category's own subtree: moving there would make a cycle", "CATEGORY_CYCLE");
    }
    const height = Math.max(...subtree.map((s) => s.level)) - row.level;
    if (newLevel + height > maxLevel) {
      throw failedPrecondition(`the moved subtree would reach level ${newLevel + height}; categories nest down to level ${maxLevel}`, "CATEGORY_TOO_DEEP");
    }
    const delta = newLevel - row.level;
    if (delta !== 0) {
      await db.run("update categories set level = level + $1, updated_at = now() where id = any($2::uuid[]) and id <> $3", [delta, subtree.map((s) => s.id), row.id]);
    }
    row.parentId = newParentId;
    row.level = newLevel;
    if (req.sortOrder !== undefined) row.sortOrder = req.sortOrder;
    row.updatedAt = new Date();
    await tx.flush();
    return { category: categoryMessage(row) };
  });
}

export async function deleteCategory(em: EntityManager, req: DeleteCategoryRequest): Promise<void> {
  await em.transactional(async (tx) => {
    const db = sqlOf(tx);
    await lockTree(db);
    const row = await tx.findOne(CategoryEntity, { id: req.id });
    if (!row) throw notFound("category", req.id);
    const counts = await db.one<{ children: number; products: number }>(
      `select (select count(*) from categories where parent_id = $1)::int as children,
              (select count(*) from product_categories where category_id = $1)::int as products`,
      [row.id],
    );
    if (counts && (counts.children > 0 || counts.products > 0)) {
      throw failedPrecondition("only an empty category can be deleted: move its children and products first, or deactivate it", "CATEGORY_NOT_EMPTY", {
        child_count: String(counts.children),
        product_count: String(counts.products),
      });
    }
    tx.remove(row);
  });
}
