/**
 * Reviews: one per customer and product (a unique constraint), published only
 * once an admin approves them, sent back to moderation by every edit. Only
 * approved reviews are listed and counted in the product's rating summary,
 * which is recomputed under the product's row lock whenever an approved
 * review appears, changes or goes, so concurrent moderations never lose a
 * count. One helpful vote per customer and review (a primary key).
 *
 * The verified-purchase flag is asked of the Order service when the review is
 * written (see service.ts: when Order cannot answer, the review is stored as
 * not verified instead of failing).
 */
import { create } from "@bufbuild/protobuf";
import {
  type CreateReviewRequest,
  type CreateReviewResponse,
  type DeleteMyReviewRequest,
  type GetMyReviewRequest,
  type GetMyReviewResponse,
  type GetRatingSummaryRequest,
  type GetRatingSummaryResponse,
  type ListMyReviewsRequest,
  type ListMyReviewsResponse,
  type ListReviewsForModerationRequest,
  type ListReviewsForModerationResponse,
  type ListReviewsRequest,
  type ListReviewsResponse,
  type MarkReviewHelpfulRequest,
  type MarkReviewHelpfulResponse,
  ModerationDecision,
  type ModerateReviewRequest,
  type ModerateReviewResponse,
  type Review,
  ReviewOrderBy,
  ReviewSchema,
  ReviewStatus,
  type UpdateMyReviewRequest,
  type UpdateMyReviewResponse,
} from "../../gen/ecommerce/product/v1/review_pb.js";
import { LockMode } from "@mikro-orm/core";
import { timestampOf } from "../../kit/convert.ts";
import type { EntityManager } from "../../kit/db.ts";
import { failedPrecondition, invalidArgument, notFound } from "../../kit/errors.ts";
import { type CursorScalar, pageOf } from "../../kit/paging.ts";
import { v7 as uuidv7 } from "uuid";
import { productRow, ratingOf } from "./catalog.ts";
import { ProductReviewEntity, type ProductReviewRow } from "./entities.ts";
import { guarded, reviewExists } from "./guards.ts";
import { customerVisible, reviewStatuses, type Viewer } from "./mapping.ts";
import { Params, type Sql, sqlOf } from "../../kit/sql.ts";
import { applyFieldMask, setField } from "../../kit/field-mask.ts";

type Out<T> = Omit<T, "$typeName">;

interface ReviewDbRow {
  id: string;
  product_id: string;
  product_name: string;
  user_id: string;
  rating: number;
  title: string;
  comment: string;
  author_display_name: string;
  is_verified_purchase: boolean;
  status: string;
  rejection_reason: string | null;
  helpful_count: number;
  created_at: Date;
  updated_at: Date;
  moderated_at: Date | null;
  /** Sort key of the page, as text. */
  k?: string[];
}

const reviewSelect = `select r.id, r.product_id, p.name as product_name, r.user_id, r.rating, r.title, r.comment, r.author_display_name,
  r.is_verified_purchase, r.status, r.rejection_reason, r.helpful_count, r.created_at, r.updated_at, r.moderated_at
  from product_reviews r join products p on p.id = r.product_id`;

function reviewMessage(r: ReviewDbRow, viewer: Viewer, votedHelpful = false): Review {
  const author = viewer.userId === r.user_id;
  return create(ReviewSchema, {
    id: r.id,
    productId: r.product_id,
    productName: r.product_name,
    userId: viewer.admin ? r.user_id : "",
    authorDisplayName: r.author_display_name,
    rating: r.rating,
    title: r.title,
    comment: r.comment,
    isVerifiedPurchase: r.is_verified_purchase,
    status: reviewStatuses.fromDb(r.status),
    rejectionReason: r.status === "rejected" && (author || viewer.admin) ? (r.rejection_reason ?? "") : "",
    helpfulCount: r.helpful_count,
    votedHelpful,
    createdAt: timestampOf(r.created_at),
    updatedAt: timestampOf(r.updated_at),
    moderatedAt: timestampOf(r.moderated_at),
  });
}

async function reviewById(db: Sql, id: string): Promise<ReviewDbRow | undefined> {
  return db.one<ReviewDbRow>(`${reviewSelect} where r.id = $1`, [id]);
}

/** The viewer's helpful votes among these reviews. */
async function votesOf(db: Sql, viewer: Viewer, reviewIds: string[]): Promise<Set<string>> {
  if (!viewer.userId || reviewIds.length === 0) return new Set();
  const rows = await db.all<{ review_id: string }>("select review_id from review_helpful_votes where user_id = $1 and review_id = any($2::uuid[])", [
    viewer.userId,
    reviewIds,
  ]);
  return new Set(rows.map((r) => r.review_id));
}

/** Recomputes a product's rating summary from its approved reviews; the caller holds the product's row lock. */
async function refreshRating(db: Sql, productId: string): Promise<void> {
  await db.run(
    `update products p set rating_count = s.n, rating_sum = s.total,
       rating_1_count = s.c1, rating_2_count = s.c2, rating_3_count = s.c3, rating_4_count = s.c4, rating_5_count = s.c5
     from (select count(*)::int as n, coalesce(sum(rating), 0)::int as total,
                  count(*) filter (where rating = 1)::int as c1, count(*) filter (where rating = 2)::int as c2,
                  count(*) filter (where rating = 3)::int as c3, count(*) filter (where rating = 4)::int as c4,
                  count(*) filter (where rating = 5)::int as c5
             from product_reviews where product_id = $1 and status = 'approved') s
     where p.id = $1`,
    [productId],
  );
}

/** NOT_FOUND unless the product exists and, for non-admins, is ACTIVE and visible. */
async function visibleProduct(db: Sql, productId: string, viewer: Viewer) {
  const row = await productRow(db, productId);
  if (!row || (!viewer.admin && !(row.status === "active" && row.is_visible))) throw notFound("product", productId);
  return row;
}

export type PurchaseCheck = (userId: string, productId: string) => Promise<boolean>;

export async function createReview(em: EntityManager, viewer: Viewer, userId: string, checkPurchase: PurchaseCheck, req: CreateReviewRequest): Promise<Out<CreateReviewResponse>> {
  const db = sqlOf(em);
  const product = await db.one<{ id: string }>(`select p.id from products p where p.id = $1 and ${customerVisible}`, [req.productId]);
  if (!product) throw notFound("product", req.productId);
  // Before asking Order: a second review is refused whatever Order says.
  if (await em.findOne(ProductReviewEntity, { productId: req.productId, userId })) throw reviewExists();
  const verified = await checkPurchase(userId, req.productId);
  const id = uuidv7();
  await guarded(() =>
    em.transactional(async (tx) => {
      const now = new Date();
      tx.create(ProductReviewEntity, {
        id,
        productId: req.productId,
        userId,
        rating: req.rating,
        title: req.title,
        comment: req.comment,
        authorDisplayName: req.authorDisplayName,
        isVerifiedPurchase: verified,
        status: "pending",
        helpfulCount: 0,
        createdAt: now,
        updatedAt: now,
      });
      await tx.flush();
    }),
  );
  return { review: reviewMessage((await reviewById(db, id))!, viewer) };
}

export async function getMyReview(db: Sql, viewer: Viewer, userId: string, req: GetMyReviewRequest): Promise<Out<GetMyReviewResponse>> {
  const row = await db.one<ReviewDbRow>(`${reviewSelect} where r.product_id = $1 and r.user_id = $2`, [req.productId, userId]);
  if (!row) throw notFound("review", `of product ${req.productId}`);
  const votes = await votesOf(db, viewer, [row.id]);
  return { review: reviewMessage(row, viewer, votes.has(row.id)) };
}

export async function listMyReviews(db: Sql, viewer: Viewer, userId: string, req: ListMyReviewsRequest): Promise<Out<ListMyReviewsResponse>> {
  const pages = pageOf(req, { t: "timestamptz", id: "uuid" });
  const { after: cursor, size } = pages;
  const rows = await db.all<ReviewDbRow & { t: string }>(
    `${reviewSelect.replace("select ", "select r.created_at::text as t, ")} where r.user_id = $1
       ${cursor ? "and (r.created_at, r.id) < ($3::timestamptz, $4::uuid)" : ""}
     order by r.created_at desc, r.id desc limit $2`,
    [userId, size + 1, ...(cursor ? [cursor.t, cursor.id] : [])],
  );
  const page = rows.slice(0, size);
  const votes = await votesOf(
    db,
    viewer,
    page.map((r) => r.id),
  );
  const last = page.at(-1);
  return {
    reviews: page.map((r) => reviewMessage(r, viewer, votes.has(r.id))),
    nextPageToken: rows.length > size && last ? pages.next({ t: last.t, id: last.id }) : "",
  };
}

/** The caller's own review, locked with its product (product first: the rating lock order). */
async function ownReviewLocked(tx: EntityManager, userId: string, reviewId: string): Promise<ProductReviewRow> {
  const db = sqlOf(tx);
  const probe = await db.one<{ product_id: string }>("select product_id from product_reviews where id = $1 and user_id = $2", [reviewId, userId]);
  if (!probe) throw notFound("review", reviewId);
  await productRow(db, probe.product_id, true);
  const row = await tx.findOne(ProductReviewEntity, { id: reviewId, userId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
  if (!row) throw notFound("review", reviewId);
  return row;
}

export async function updateMyReview(em: EntityManager, viewer: Viewer, userId: string, req: UpdateMyReviewRequest): Promise<Out<UpdateMyReviewResponse>> {
  const input = req.review!;
  const id = await em.transactional(async (tx) => {
    const row = await ownReviewLocked(tx, userId, input.id);
    const wasApproved = row.status === "approved";
    if (req.updateMask?.paths.includes("rating") && (input.rating < 1 || input.rating > 5)) throw invalidArgument("review.rating", "must be 1 to 5 stars");
    const field = <V>(read: (i: Review) => V, get: (r: ProductReviewRow) => V, put: (r: ProductReviewRow, v: V) => void) => setField(read, get, put);
    applyFieldMask(req.updateMask, row, input, {
      rating: field((i) => i.rating, (r) => r.rating, (r, v) => (r.rating = v)),
      title: field((i) => i.title, (r) => r.title, (r, v) => (r.title = v)),
      comment: field((i) => i.comment, (r) => r.comment, (r, v) => (r.comment = v)),
      author_display_name: field((i) => i.authorDisplayName, (r) => r.authorDisplayName, (r, v) => (r.authorDisplayName = v)),
    });
    // Any edit goes back to moderation, even one that changes nothing visible.
    row.status = "pending";
    row.rejectionReason = null;
    row.updatedAt = new Date();
    await tx.flush();
    if (wasApproved) await refreshRating(sqlOf(tx), row.productId);
    return row.id;
  });
  return { review: reviewMessage((await reviewById(sqlOf(em), id))!, viewer) };
}

export async function deleteMyReview(em: EntityManager, userId: string, req: DeleteMyReviewRequest): Promise<void> {
  await em.transactional(async (tx) => {
    const row = await ownReviewLocked(tx, userId, req.id);
    const productId = row.productId;
    const wasApproved = row.status === "approved";
    tx.remove(row);
    await tx.flush();
    if (wasApproved) await refreshRating(sqlOf(tx), productId);
  });
}

interface ReviewSort {
  keys: string[];
  /** PostgreSQL types of the keys: the casts of the cursor's values, and their types in the page token. */
  casts: CursorScalar[];
}

const reviewSorts: Record<ReviewOrderBy, ReviewSort> = {
  [ReviewOrderBy.UNSPECIFIED]: { keys: ["r.created_at", "r.id"], casts: ["timestamptz", "uuid"] },
  [ReviewOrderBy.NEWEST]: { keys: ["r.created_at", "r.id"], casts: ["timestamptz", "uuid"] },
  [ReviewOrderBy.MOST_HELPFUL]: { keys: ["r.helpful_count", "r.created_at", "r.id"], casts: ["int", "timestamptz", "uuid"] },
  [ReviewOrderBy.RATING_DESC]: { keys: ["r.rating", "r.created_at", "r.id"], casts: ["int", "timestamptz", "uuid"] },
  // Lowest rating first, then newest: -rating descending.
  [ReviewOrderBy.RATING_ASC]: { keys: ["(-r.rating)", "r.created_at", "r.id"], casts: ["int", "timestamptz", "uuid"] },
};

export async function listReviews(db: Sql, viewer: Viewer, req: ListReviewsRequest): Promise<Out<ListReviewsResponse>> {
  await visibleProduct(db, req.productId, viewer);
  const p = new Params();
  const where = [`r.product_id = ${p.add(req.productId)}`, "r.status = 'approved'"];
  if (req.rating > 0) where.push(`r.rating = ${p.add(req.rating)}`);
  if (req.verifiedOnly) where.push("r.is_verified_purchase");
  const countParams = [...p.values];
  const sort = reviewSorts[req.orderBy];
  const pages = pageOf(req, { k: sort.casts });
  const { after: cursor, size } = pages;
  const pageWhere = [...where];
  if (cursor) pageWhere.push(`(${sort.keys.join(", ")}) < (${sort.casts.map((c, i) => `${p.add(cursor.k[i])}::${c}`).join(", ")})`);
  const [total, rows] = await Promise.all([
    db.one<{ n: number }>(`select count(*)::int as n from product_reviews r where ${where.join(" and ")}`, countParams),
    db.all<ReviewDbRow>(
      `${reviewSelect.replace("select ", `select json_build_array(${sort.keys.map((k) => `(${k})::text`).join(", ")}) as k, `)}
        where ${pageWhere.join(" and ")} order by ${sort.keys.map((k) => `${k} desc`).join(", ")} limit ${p.add(size + 1)}`,
      p.values,
    ),
  ]);
  const page = rows.slice(0, size);
  const votes = await votesOf(
    db,
    viewer,
    page.map((r) => r.id),
  );
  return {
    reviews: page.map((r) => reviewMessage(r, viewer, votes.has(r.id))),
    nextPageToken: rows.length > size ? pages.next({ k: page.at(-1)!.k! }) : "",
    totalCount: total?.n ?? 0,
  };
}

export async function getRatingSummary(db: Sql, viewer: Viewer, req: GetRatingSummaryRequest): Promise<Out<GetRatingSummaryResponse>> {
  return { ratingSummary: ratingOf(await visibleProduct(db, req.productId, viewer)) };
}

export async function markReviewHelpful(em: EntityManager, userId: string, req: MarkReviewHelpfulRequest): Promise<Out<MarkReviewHelpfulResponse>> {
  return em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const review = await db.one<{ user_id: string; helpful_count: number }>(
      "select user_id, helpful_count from product_reviews where id = $1 and status = 'approved' for update",
      [req.reviewId],
    );
    if (!review) throw notFound("review", req.reviewId);
    if (review.user_id === userId) throw failedPrecondition("you cannot vote on your own review", "OWN_REVIEW");
    let count = review.helpful_count;
    if (req.helpful) {
      const added = await db.run("insert into review_helpful_votes (review_id, user_id) values ($1, $2) on conflict do nothing", [req.reviewId, userId]);
      if (added > 0) count = (await db.one<{ n: number }>("update product_reviews set helpful_count = helpful_count + 1 where id = $1 returning helpful_count as n", [req.reviewId]))!.n;
    } else {
      const removed = await db.run("delete from review_helpful_votes where review_id = $1 and user_id = $2", [req.reviewId, userId]);
      if (removed > 0) count = (await db.one<{ n: number }>("update product_reviews set helpful_count = helpful_count - 1 where id = $1 returning helpful_count as n", [req.reviewId]))!.n;
    }
    return { helpfulCount: count, votedHelpful: req.helpful };
  });
}

export async function listReviewsForModeration(db: Sql, viewer: Viewer, req: ListReviewsForModerationRequest): Promise<Out<ListReviewsForModerationResponse>> {
  const statuses = req.statuses.length > 0 ? req.statuses : [ReviewStatus.PENDING];
  const p = new Params();
  const where = [`r.status = any(${p.add(statuses.map(reviewStatuses.toDb))}::text[])`];
  if (req.productId) where.push(`r.product_id = ${p.add(req.productId)}`);
  if (req.userId) where.push(`r.user_id = ${p.add(req.userId)}`);
  const pages = pageOf(req, { t: "timestamptz", id: "uuid" });
  const { after: cursor, size } = pages;
  if (cursor) where.push(`(r.created_at, r.id) > (${p.add(cursor.t)}::timestamptz, ${p.add(cursor.id)}::uuid)`);
  const rows = await db.all<ReviewDbRow & { t: string }>(
    `${reviewSelect.replace("select ", "select r.created_at::text as t, ")} where ${where.join(" and ")} order by r.created_at, r.id limit ${p.add(size + 1)}`,
    p.values,
  );
  const page = rows.slice(0, size);
  const last = page.at(-1);
  return {
    reviews: page.map((r) => reviewMessage(r, viewer)),
    nextPageToken: rows.length > size && last ? pages.next({ t: last.t, id: last.id }) : "",
  };
}

export async function moderateReview(em: EntityManager, viewer: Viewer, req: ModerateReviewRequest): Promise<Out<ModerateReviewResponse>> {
  await em.transactional(async (tx) => {
    const db = sqlOf(tx);
    const probe = await db.one<{ product_id: string }>("select product_id from product_reviews where id = $1", [req.id]);
    if (!probe) throw notFound("review", req.id);
    await productRow(db, probe.product_id, true);
    const review = await tx.findOne(ProductReviewEntity, { id: req.id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (!review) throw notFound("review", req.id);
    const approve = req.decision === ModerationDecision.APPROVE;
    review.status = approve ? "approved" : "rejected";
    review.rejectionReason = approve ? null : req.reason;
    review.moderatedAt = new Date();
    await tx.flush();
    await refreshRating(db, probe.product_id);
  });
  return { review: reviewMessage((await reviewById(sqlOf(em), req.id))!, viewer) };
}
