/**
 * The Product service's bench products for `npm run bench` (scripts/bench/product.ts
 * measures): products loaded through the public RPCs, with a run prefix, so runs
 * never collide; the bench uses them for contended ReserveStock (the catalog-wide
 * rows read the seeded catalog of seed.ts).
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";
import { InventoryService, StockAdjustmentReason } from "../../gen/ecommerce/product/v1/inventory_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";

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

/**
 * Loads `count` active, stocked products through the public RPCs (an admin's token),
 * the first ten with a deep stock for contention runs; returns their ids.
 */
export async function loadBenchCatalog(productUrl: string, adminToken: string, count = 300): Promise<string[]> {
  const admin = { headers: { authorization: `Bearer ${adminToken}` } };
  const direct = createGrpcTransport({ baseUrl: productUrl });
  return loadCatalog(createClient(ProductService, direct), createClient(CategoryService, direct), createClient(InventoryService, direct), count, admin);
}

/** Search words that the bench products and the seeded catalog (seed.ts) contain. */
export const benchSearchWords = words;
