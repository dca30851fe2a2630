/**
 * The Product service's part of `npm run bench` (wired by scripts/bench.ts):
 * loads a few hundred products through the public RPCs (its own, with a run
 * prefix, so runs never collide), then measures
 * - GetProduct through the edge (Connect JSON over HTTP/1.1, as a browser),
 * - SearchProducts with facets through the edge,
 * - ReserveStock under contention, directly over gRPC with a service
 *   credential (INTERNAL RPCs are not routed by the edge): every call takes
 *   one unit of one of a few hot products, with its own order id.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";
import { InventoryService, StockAdjustmentReason } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { SearchFacet, SearchService } from "../../gen/ecommerce/product/v1/search_pb.js";
import type { LoadResult, measure as measureFn } from "../../scripts/bench/load.ts";

export interface ProductBenchOptions {
  /** Products to load first (default 300). */
  products?: number;
  /** Measured time per scenario, in ms (default 5000). */
  durationMs?: number;
  /** Concurrent callers per scenario (default 16; ReserveStock uses twice as many). */
  concurrency?: number;
}

const words = ["merino", "canvas", "leather", "sneakers", "jacket", "lamp", "knife", "speaker", "tent", "notebook", "wool", "cotton"];
const nouns = ["Sneakers", "Jacket", "Desk Lamp", "Chef Knife", "Bluetooth Speaker", "Tent", "Notebook", "Sweater"];
const materials = ["Merino", "Canvas", "Leather", "Wool", "Cotton", "Steel", "Oak"];

async function inBatches<T>(count: number, concurrency: number, work: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await work(i);
      }
    }),
  );
  return out;
}

async function loadCatalog(products: Client<typeof ProductService>, categories: Client<typeof CategoryService>, inventory: Client<typeof InventoryService>, count: number, admin: { headers: Record<string, string> }) {
  const run = Date.now().toString(36);
  const categoryIds: string[] = [];
  for (const name of ["Footwear", "Home", "Outdoors", "Stationery"]) {
    categoryIds.push((await categories.createCategory({ name: `Bench ${name} ${run}`, isActive: true }, admin)).category!.id);
  }
  return inBatches(count, 8, async (i) => {
    const name = `${materials[i % materials.length]} ${nouns[(i * 7) % nouns.length]} ${run}-${i}`;
    const { product } = await products.createProduct(
      {
        sku: `BENCH-${run}-${i}`,
        name,
        description: `A ${name.toLowerCase()} for the benchmark.`,
        price: { amountMinor: BigInt(1_000 + ((i * 997) % 40_000)), currencyCode: "USD" },
        status: ProductStatus.ACTIVE,
        isVisible: true,
        categoryIds: [categoryIds[i % categoryIds.length]!],
        tags: [words[i % words.length]!],
        attributes: { colour: ["red", "blue", "black"][i % 3]! },
      },
      admin,
    );
    await inventory.adjustStock(
      {
        idempotencyKey: `bench-${run}-${i}`,
        productId: product!.id,
        change: { case: "setQuantity", value: i < 10 ? 1_000_000 : 100 },
        reason: StockAdjustmentReason.RECEIVED,
      },
      admin,
    );
    return product!.id;
  });
}

export async function runProductBench(
  measure: typeof measureFn,
  urls: { edge: string; direct: string },
  adminToken: string,
  serviceToken: string,
  options: ProductBenchOptions = {},
): Promise<LoadResult[]> {
  const durationMs = options.durationMs ?? 5_000;
  const concurrency = options.concurrency ?? 16;
  const admin = { headers: { authorization: `Bearer ${adminToken}` } };
  const service = { headers: { authorization: `Bearer ${serviceToken}` } };
  const direct = createGrpcTransport({ baseUrl: urls.direct });
  const edge = createConnectTransport({ baseUrl: urls.edge, httpVersion: "1.1" });

  const ids = await loadCatalog(createClient(ProductService, direct), createClient(CategoryService, direct), createClient(InventoryService, direct), options.products ?? 300, admin);
  const hot = ids.slice(0, 10);
  const pick = <T>(list: readonly T[]) => list[Math.floor(Math.random() * list.length)]!;

  const edgeProducts = createClient(ProductService, edge);
  const edgeSearch = createClient(SearchService, edge);
  const inventory = createClient(InventoryService, direct);
  return [
    await measure("product GetProduct (edge)", concurrency, durationMs, () => edgeProducts.getProduct({ lookup: { case: "id", value: pick(ids) } })),
    await measure("product SearchProducts (edge)", concurrency, durationMs, () =>
      edgeSearch.searchProducts({ query: pick(words), pageSize: 20, facets: [SearchFacet.CATEGORY, SearchFacet.PRICE_BAND] }),
    ),
    await measure("product ReserveStock contended (direct)", concurrency * 2, durationMs, () =>
      inventory.reserveStock({ orderId: uuidv7(), lines: [{ productId: pick(hot), quantity: 1 }] }, service),
    ),
  ];
}
