/**
 * Reviews through the public contract, against a real server: one review per
 * customer and product, moderation, what others see, helpful votes, the
 * rating summary, and the verified-purchase check (a stand-in Order answers,
 * answers late, then is stopped).
 */
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderService } from "../../gen/ecommerce/order/v1/order_pb.js";
import { ModerationDecision, ReviewOrderBy, ReviewStatus } from "../../gen/ecommerce/product/v1/review_pb.js";
import type { AnyServiceDefinition } from "../../kit/server.ts";
import { activeProduct, auth, failure, type ProductHarness, startProductHarness, unique } from "./testing.ts";

let h: ProductHarness;

/** Purchases the stand-in Order service knows of ("user/product"); one product makes it answer too late. */
const purchases = new Set<string>();
let slowProductId = "";

/** A stand-in for the Order service answering CheckVerifiedPurchase only. */
const fakeOrder: AnyServiceDefinition = {
  name: "order",
  entities: [],
  migrations: [],
  routes(router) {
    router.service(OrderService, {
      async checkVerifiedPurchase(req) {
        if (req.productId === slowProductId) await new Promise((r) => setTimeout(r, 1_500));
        return { verified: purchases.has(`${req.userId}/${req.productId}`) || req.productId === slowProductId };
      },
    });
  },
};

beforeAll(async () => {
  h = await startProductHarness({ VERIFIED_PURCHASE_TIMEOUT_MS: "300" }, [fakeOrder]);
});

afterAll(async () => {
  await h?.stop();
});

const customer = async () => {
  const userId = uuidv7();
  return { userId, token: await h.issuer.user(userId) };
};

describe("reviews", () => {
  it("takes one review per customer and product, verified by Order when it answers", async () => {
    const p = await activeProduct(h);
    const ada = await customer();
    purchases.add(`${ada.userId}/${p.id}`);
    const { review } = await h.reviews.createReview({ productId: p.id, rating: 4, title: "Good", comment: "Warm", authorDisplayName: "Ada" }, auth(ada.token));
    expect(review).toMatchObject({ productId: p.id, productName: p.name, rating: 4, status: ReviewStatus.PENDING, isVerifiedPurchase: true, userId: "" });
    const bob = await customer();
    expect((await h.reviews.createReview({ productId: p.id, rating: 3 }, auth(bob.token))).review!.isVerifiedPurchase).toBe(false);
    expect(await failure(h.reviews.createReview({ productId: p.id, rating: 5 }, auth(ada.token)))).toMatchObject({
      code: Code.AlreadyExists,
      reason: "REVIEW_EXISTS",
    });
    expect(await failure(h.reviews.createReview({ productId: p.id, rating: 5 }, {}))).toMatchObject({ code: Code.Unauthenticated });
    const draft = (await h.products.createProduct({ sku: unique("D"), name: "Draft", price: { amountMinor: 1n, currencyCode: "USD" } }, auth(h.admin))).product!;
    expect(await failure(h.reviews.createReview({ productId: draft.id, rating: 5 }, auth(ada.token)))).toMatchObject({ code: Code.NotFound });
  });

  it("stores a review as not verified when Order answers too late or not at all", async () => {
    const slow = await activeProduct(h);
    slowProductId = slow.id;
    const started = Date.now();
    const late = await h.reviews.createReview({ productId: slow.id, rating: 5 }, auth((await customer()).token));
    expect(late.review!.isVerifiedPurchase).toBe(false);
    expect(Date.now() - started).toBeLessThan(1_400);

    await h.mesh.services.order!.stop();
    const p = await activeProduct(h);
    const cy = await customer();
    purchases.add(`${cy.userId}/${p.id}`);
    const down = await h.reviews.createReview({ productId: p.id, rating: 5 }, auth(cy.token));
    expect(down.review).toMatchObject({ isVerifiedPurchase: false, status: ReviewStatus.PENDING });
  });

  it("lists only approved reviews, keeps the rating summary, and shows a rejection to its author only", async () => {
    const p = await activeProduct(h);
    const authors = await Promise.all([customer(), customer(), customer(), customer()]);
    const ratings = [5, 4, 4, 1];
    const reviews = [];
    for (const [i, a] of authors.entries()) reviews.push((await h.reviews.createReview({ productId: p.id, rating: ratings[i]! }, auth(a.token))).review!);

    expect((await h.reviews.listReviews({ productId: p.id }, {})).reviews).toEqual([]);
    const queue = await h.reviews.listReviewsForModeration({ productId: p.id }, auth(h.admin));
    expect(queue.reviews.map((r) => r.id)).toEqual(reviews.map((r) => r.id));
    expect(queue.reviews[0]!.userId).toBe(authors[0]!.userId);

    for (const r of reviews.slice(0, 3)) await h.reviews.moderateReview({ id: r.id, decision: ModerationDecision.APPROVE }, auth(h.admin));
    await h.reviews.moderateReview({ id: reviews[3]!.id, decision: ModerationDecision.REJECT, reason: "off topic" }, auth(h.admin));

    const listed = await h.reviews.listReviews({ productId: p.id, orderBy: ReviewOrderBy.RATING_ASC }, auth(authors[3]!.token));
    expect(listed.reviews.map((r) => r.rating)).toEqual([4, 4, 5]);
    expect(listed.totalCount).toBe(3);
    expect(listed.reviews.every((r) => r.userId === "" && r.status === ReviewStatus.APPROVED)).toBe(true);

    const summary = (await h.reviews.getRatingSummary({ productId: p.id }, {})).ratingSummary!;
    // (5 + 4 + 4) / 3 = 4.333… -> 433 hundredths.
    expect(summary).toMatchObject({ averageRatingHundredths: 433, reviewCount: 3, oneStarCount: 0, fourStarCount: 2, fiveStarCount: 1 });
    expect((await h.products.getProduct({ lookup: { case: "id", value: p.id } }, {})).product!.rating).toMatchObject({ averageRatingHundredths: 433, reviewCount: 3 });

    const mine = (await h.reviews.getMyReview({ productId: p.id }, auth(authors[3]!.token))).review!;
    expect(mine).toMatchObject({ status: ReviewStatus.REJECTED, rejectionReason: "off topic" });

    // An edit sends an approved review back to moderation and out of the summary.
    const edited = await h.reviews.updateMyReview({ review: { id: reviews[0]!.id, rating: 2 }, updateMask: { paths: ["rating"] } }, auth(authors[0]!.token));
    expect(edited.review).toMatchObject({ rating: 2, status: ReviewStatus.PENDING });
    expect((await h.reviews.getRatingSummary({ productId: p.id }, {})).ratingSummary).toMatchObject({ averageRatingHundredths: 400, reviewCount: 2, fiveStarCount: 0 });
    expect(await failure(h.reviews.updateMyReview({ review: { id: reviews[1]!.id, rating: 1 }, updateMask: { paths: ["rating"] } }, auth(authors[0]!.token)))).toMatchObject({
      code: Code.NotFound,
    });
    await h.reviews.deleteMyReview({ id: reviews[1]!.id }, auth(authors[1]!.token));
    expect((await h.reviews.getRatingSummary({ productId: p.id }, {})).ratingSummary).toMatchObject({ averageRatingHundredths: 400, reviewCount: 1, fourStarCount: 1 });
  });

  it("counts one helpful vote per customer, never on the author's own review", async () => {
    const p = await activeProduct(h);
    const author = await customer();
    const voter = await customer();
    const { review } = await h.reviews.createReview({ productId: p.id, rating: 5 }, auth(author.token));
    expect(await failure(h.reviews.markReviewHelpful({ reviewId: review!.id, helpful: true }, auth(voter.token)))).toMatchObject({ code: Code.NotFound });
    await h.reviews.moderateReview({ id: review!.id, decision: ModerationDecision.APPROVE }, auth(h.admin));

    expect(await h.reviews.markReviewHelpful({ reviewId: review!.id, helpful: true }, auth(voter.token))).toMatchObject({ helpfulCount: 1, votedHelpful: true });
    expect(await h.reviews.markReviewHelpful({ reviewId: review!.id, helpful: true }, auth(voter.token))).toMatchObject({ helpfulCount: 1, votedHelpful: true });
    expect(await failure(h.reviews.markReviewHelpful({ reviewId: review!.id, helpful: true }, auth(author.token)))).toMatchObject({ reason: "OWN_REVIEW" });
    const seen = await h.reviews.listReviews({ productId: p.id }, auth(voter.token));
    expect(seen.reviews[0]).toMatchObject({ helpfulCount: 1, votedHelpful: true });
    expect((await h.reviews.listReviews({ productId: p.id }, {})).reviews[0]!.votedHelpful).toBe(false);
    expect(await h.reviews.markReviewHelpful({ reviewId: review!.id, helpful: false }, auth(voter.token))).toMatchObject({ helpfulCount: 0, votedHelpful: false });
    expect(await h.reviews.markReviewHelpful({ reviewId: review!.id, helpful: false }, auth(voter.token))).toMatchObject({ helpfulCount: 0 });
  });
});
