/**
 * Page tokens across the mesh (kit/paging.ts): every paged List/Search RPC of
 * Auth, User and Product refuses a forged, garbage, truncated or altered token,
 * and a real token replayed with other filters or into another list, with
 * INVALID_ARGUMENT reason INVALID_PAGE_TOKEN on page_token (never INTERNAL); a
 * real token still continues its list.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { errorFields } from "../../kit/errors.ts";
import { CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";
import { InventoryService, ReservationStatus } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductOrderBy, ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ModerationDecision, ReviewService, ReviewStatus } from "../../gen/ecommerce/product/v1/review_pb.js";
import { SearchService } from "../../gen/ecommerce/product/v1/search_pb.js";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import type { ServiceDefinition } from "../../kit/server.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { authService } from "../../services/auth/service.ts";
import { productService } from "../../services/product/service.ts";
import { userService } from "../../services/user/service.ts";

let mesh: TestMesh;
const issuer = new TestIssuer();
const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
let n = 0;
const unique = (p: string) => `${p}-${Date.now().toString(36)}-${(n++).toString(36)}`;

interface PagedCase {
  rpc: string;
  /** One page of the list with `request` (filters) and a token. */
  page(request: Record<string, unknown>, pageToken: string): Promise<{ ids: string[]; next: string }>;
  filters: Record<string, unknown>;
  /** The same list with other filters or another order; a token of `filters` must not continue it. */
  otherFilters: Record<string, unknown>;
}

const cases: PagedCase[] = [];
const pageSize = 1;

beforeAll(async () => {
  mesh = await startMesh([authService, userService, productService].map((def) => issuer.trustedBy(def)));
  const client = <S extends Parameters<typeof createClient>[0]>(service: S, url: string) => createClient(service, createGrpcTransport({ baseUrl: url }));
  const auth = client(AuthService, mesh.url("auth"));
  const user = client(UserService, mesh.url("user"));
  const products = client(ProductService, mesh.url("product"));
  const categories = client(CategoryService, mesh.url("product"));
  const inventory = client(InventoryService, mesh.url("product"));
  const reviews = client(ReviewService, mesh.url("product"));
  const search = client(SearchService, mesh.url("product"));
  const admin = as(await issuer.user(uuidv7(), ["customer", "admin"]));
  const ada = as(await issuer.user(uuidv7()));
  const bob = as(await issuer.user(uuidv7()));
  const order = as(await issuer.service("order"));

  // Accounts (and through user.registered, profiles), products with stock, reservations, reviews.
  for (let i = 0; i < 3; i++) await auth.register({ email: `${unique("pager")}@example.test`, password: "velvet otter maple drum 4711", firstName: "Ada", lastName: "Pager" });
  for (let i = 0; i < 2; i++) await categories.createCategory({ name: unique("Category"), isActive: true }, admin);
  const made = [];
  for (let i = 0; i < 2; i++) {
    const { product } = await products.createProduct(
      { sku: unique("SKU"), name: unique("Pager product"), price: { amountMinor: 1999n + BigInt(i), currencyCode: "USD" }, status: ProductStatus.ACTIVE, isVisible: true },
      admin,
    );
    await inventory.adjustStock({ idempotencyKey: unique("adj"), productId: product!.id, change: { case: "delta", value: 10 }, reason: 1 }, admin);
    await inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: product!.id, quantity: 1 }], ttl: { seconds: 3600n } }, order);
    made.push(product!);
  }
  const [a, b] = made as [(typeof made)[0], (typeof made)[0]];
  const written = [
    (await reviews.createReview({ productId: a.id, rating: 4 }, ada)).review!,
    (await reviews.createReview({ productId: b.id, rating: 5 }, ada)).review!,
    (await reviews.createReview({ productId: a.id, rating: 3 }, bob)).review!,
  ];
  for (const r of written) await reviews.moderateReview({ id: r.id, decision: ModerationDecision.APPROVE }, admin);
  await eventually(async () => ((await user.listProfiles({ pageSize: 10 }, admin)).profiles.length >= 3 ? true : undefined), 20_000, "profiles of the new accounts");

  const paged = <R extends { nextPageToken: string }>(
    rpc: string,
    call: (req: Record<string, unknown>) => Promise<R>,
    ids: (res: R) => string[],
    filters: Record<string, unknown>,
    otherFilters: Record<string, unknown>,
  ) =>
    cases.push({
      rpc,
      filters,
      otherFilters,
      page: async (request, pageToken) => {
        const res = await call({ ...request, pageSize, pageToken });
        return { ids: ids(res), next: res.nextPageToken };
      },
    });
  paged("auth ListUsers", (r) => auth.listUsers(r, admin), (res) => res.users.map((u) => u.id), { emailContains: "pager" }, { emailContains: "pager", orderBy: "email" });
  paged("auth ListSecurityAuditLogs", (r) => auth.listSecurityAuditLogs(r, admin), (res) => res.logs.map((l) => l.id), {}, { userId: uuidv7() });
  paged("user ListProfiles", (r) => user.listProfiles(r, admin), (res) => res.profiles.map((p) => p.userId), {}, { query: "pager" });
  paged("product ListProducts", (r) => products.listProducts(r, admin), (res) => res.products.map((p) => p.id), { orderBy: ProductOrderBy.PRICE_ASC }, { orderBy: ProductOrderBy.NEWEST });
  paged("product SearchProducts", (r) => search.searchProducts(r, admin), (res) => res.hits.map((h) => h.product!.id), { query: "pager" }, { query: "product" });
  paged("product ListCategories", (r) => categories.listCategories(r, admin), (res) => res.categories.map((c) => c.id), {}, { rootsOnly: true });
  paged("product ListStockItems", (r) => inventory.listStockItems(r, admin), (res) => res.items.map((s) => s.productId), {}, { lowStockOnly: true });
  paged("product ListReservations", (r) => inventory.listReservations(r, admin), (res) => res.reservations.map((x) => x.id), {}, { statuses: [ReservationStatus.ACTIVE] });
  paged("product ListReviews", (r) => reviews.listReviews(r, admin), (res) => res.reviews.map((x) => x.id), { productId: a.id }, { productId: a.id, rating: 4 });
  paged("product ListReviewsForModeration", (r) => reviews.listReviewsForModeration(r, admin), (res) => res.reviews.map((x) => x.id), { statuses: [ReviewStatus.APPROVED] }, { statuses: [ReviewStatus.APPROVED, ReviewStatus.PENDING] });
  // ListMyReviews has no filters: only the replay into another list applies.
  paged("product ListMyReviews", (r) => reviews.listMyReviews(r, ada), (res) => res.reviews.map((x) => x.id), {}, {});
});

afterAll(async () => {
  await mesh?.stop();
});

async function refusal(call: Promise<unknown>) {
  const error = await call.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  if (!error) throw new Error("the call succeeded with a token it should refuse");
  const info = error.findDetails(ErrorInfoSchema)[0];
  return { code: error.code, reason: info?.reason, field: errorFields(error)[0] };
}

const invalidPageToken = { code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN", field: "page_token" };

function flipByte(token: string, at: number): string {
  const raw = Buffer.from(token, "base64url");
  raw[(at + raw.length) % raw.length]! ^= 0x01;
  return raw.toString("base64url");
}

describe("page tokens", () => {
  it("a real token continues its list, on every paged RPC", async () => {
    expect(cases.length).toBe(11);
    for (const c of cases) {
      const first = await c.page(c.filters, "");
      expect(first.ids, c.rpc).toHaveLength(1);
      expect(first.next, c.rpc).not.toBe("");
      const second = await c.page(c.filters, first.next);
      expect(second.ids, c.rpc).toHaveLength(1);
      expect(second.ids[0], c.rpc).not.toBe(first.ids[0]);
    }
  });

  it("forged, garbage, truncated and altered tokens are INVALID_ARGUMENT INVALID_PAGE_TOKEN, never INTERNAL", async () => {
    const forged = [
      Buffer.from('{"k":"not json"}').toString("base64url"),
      Buffer.from('{"t":"yesterday","id":"x","a":"1; drop table","s":1,"o":-5,"i":"?","f":""}').toString("base64url"),
      "garbage!!",
      "AAAA",
      "%%%",
    ];
    for (const c of cases) {
      const { next } = await c.page(c.filters, "");
      const altered = [
        ...forged,
        next.slice(0, -6), // truncated
        next.slice(0, 20),
        flipByte(next, 12), // a byte of the cursor
        flipByte(next, -1), // a byte of the tag
        flipByte(next, 3), // a byte of the request binding
        `${next}A`,
      ];
      for (const token of altered) {
        expect(await refusal(c.page(c.filters, token)), `${c.rpc} with ${token}`).toMatchObject(invalidPageToken);
      }
    }
  });

  it("a real token replayed with other filters, another order or into another list is refused", async () => {
    for (const [i, c] of cases.entries()) {
      const { next } = await c.page(c.filters, "");
      if (Object.keys(c.otherFilters).length > 0) {
        expect(await refusal(c.page(c.otherFilters, next)), c.rpc).toMatchObject(invalidPageToken);
      }
      // The next RPC of the list (same service or not) never takes this one's token.
      const elsewhere = cases[(i + 1) % cases.length]!;
      expect(await refusal(elsewhere.page(elsewhere.filters, next)), `${c.rpc} token in ${elsewhere.rpc}`).toMatchObject(invalidPageToken);
    }
  });
});
