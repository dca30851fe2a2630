/**
 * `npm run seed` (node services/product/seed.ts): loads a realistic,
 * deterministic catalog into the Product service's database for demos and
 * benchmarks: a few dozen categories in a tree, 5,000 products (--products N)
 * with variants, images, tags, stock at one or two locations and reviews with
 * their rating summaries. The same run always produces the same rows (ids,
 * names, prices, stock), from a fixed PRNG seed and a fixed clock.
 *
 * Writes with set-based batch inserts in one transaction (nothing half loaded
 * after a failure), after applying the service's migrations. Idempotent: a
 * database that already holds the seed is left alone; --reset empties the
 * catalog tables first and loads again. No events are published: this is a
 * bulk load, not a stream of catalog changes.
 *
 *   DATABASE_URL  the product database (default: the kit's, postgres://postgres@127.0.0.1:5432/product_db)
 *   --products N  how many products (default 5000)
 *   --reset       empty the catalog first
 */
import { parseArgs } from "node:util";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { loadConfig } from "../../kit/config.ts";
import { createLogger } from "../../kit/logger.ts";
import { openServiceDatabase } from "../../kit/server.ts";
import { productService } from "./service.ts";

/** Deterministic pseudo-random numbers (mulberry32). */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1)),
    pick: <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!,
    chance: (p: number) => next() < p,
    bytes: (n: number) => Uint8Array.from({ length: n }, () => Math.floor(next() * 256)),
  };
}

const epoch = Date.UTC(2025, 0, 1);
const day = 86_400_000;
export const seedCurrency = "USD";

type Kind = "apparel" | "shoes" | "plain";
interface LeafSpec {
  name: string;
  kind: Kind;
  nouns: string[];
  materials: string[];
  /** Price range in whole currency units. */
  price: [number, number];
}

const adjectives = ["Classic", "Essential", "Everyday", "Premium", "Lightweight", "Heritage", "Urban", "Modern", "Vintage", "Compact", "Pro", "Eco", "Signature", "Soft", "Rugged"];
const brands = ["Acme", "Northwind", "Bluebird", "Kestrel", "Fjord", "Maple & Co", "Lumen", "Tandem", "Orbit", "Cedar", "Halcyon", "Nimbus"];
const colours = ["black", "white", "navy", "grey", "red", "green", "blue", "beige", "olive", "burgundy"];
const apparelSizes = ["XS", "S", "M", "L", "XL"];
const shoeSizes = ["38", "39", "40", "41", "42", "43", "44", "45"];

const departments: { name: string; leaves: LeafSpec[] }[] = [
  {
    name: "Clothing",
    leaves: [
      { name: "T-Shirts", kind: "apparel", nouns: ["T-Shirt", "Crew Tee", "V-Neck Tee", "Pocket Tee"], materials: ["Cotton", "Organic Cotton", "Linen", "Jersey"], price: [15, 45] },
      { name: "Knitwear", kind: "apparel", nouns: ["Sweater", "Cardigan", "Crew Sweater", "Turtleneck"], materials: ["Merino", "Cashmere", "Wool", "Cotton"], price: [45, 180] },
      { name: "Jackets & Coats", kind: "apparel", nouns: ["Jacket", "Parka", "Rain Jacket", "Overcoat", "Bomber"], materials: ["Down", "Waxed Cotton", "Wool", "Nylon"], price: [80, 350] },
      { name: "Trousers", kind: "apparel", nouns: ["Chinos", "Jeans", "Joggers", "Trousers"], materials: ["Denim", "Cotton Twill", "Corduroy", "Fleece"], price: [35, 120] },
      { name: "Shirts", kind: "apparel", nouns: ["Oxford Shirt", "Flannel Shirt", "Linen Shirt", "Overshirt"], materials: ["Cotton", "Linen", "Flannel", "Chambray"], price: [30, 110] },
    ],
  },
  {
    name: "Footwear",
    leaves: [
      { name: "Sneakers", kind: "shoes", nouns: ["Sneakers", "Low-Top Sneakers", "High-Top Sneakers", "Slip-On Sneakers"], materials: ["Canvas", "Leather", "Suede", "Knit"], price: [45, 160] },
      { name: "Running Shoes", kind: "shoes", nouns: ["Running Shoes", "Trail Running Shoes", "Racing Flats"], materials: ["Mesh", "Knit", "Synthetic"], price: [70, 200] },
      { name: "Boots", kind: "shoes", nouns: ["Chelsea Boots", "Hiking Boots", "Work Boots", "Ankle Boots"], materials: ["Leather", "Suede", "Waterproof Leather"], price: [90, 260] },
      { name: "Sandals", kind: "shoes", nouns: ["Sandals", "Slides", "Flip-Flops"], materials: ["Leather", "Rubber", "Cork"], price: [20, 90] },
    ],
  },
  {
    name: "Home & Kitchen",
    leaves: [
      { name: "Cookware", kind: "plain", nouns: ["Frying Pan", "Saucepan", "Dutch Oven", "Wok", "Stock Pot"], materials: ["Cast Iron", "Stainless Steel", "Copper", "Ceramic"], price: [25, 250] },
      { name: "Knives", kind: "plain", nouns: ["Chef Knife", "Paring Knife", "Bread Knife", "Knife Set", "Santoku Knife"], materials: ["Damascus Steel", "Carbon Steel", "Stainless Steel"], price: [20, 300] },
      { name: "Tableware", kind: "plain", nouns: ["Dinner Plates", "Mugs", "Bowls", "Glasses", "Serving Platter"], materials: ["Stoneware", "Porcelain", "Glass", "Bamboo"], price: [12, 90] },
      { name: "Bedding", kind: "plain", nouns: ["Duvet Cover", "Sheet Set", "Pillowcases", "Throw Blanket"], materials: ["Percale", "Sateen", "Linen", "Flannel"], price: [30, 200] },
      { name: "Lighting", kind: "plain", nouns: ["Desk Lamp", "Floor Lamp", "Pendant Light", "Table Lamp"], materials: ["Brass", "Oak", "Aluminium", "Glass"], price: [35, 280] },
    ],
  },
  {
    name: "Electronics",
    leaves: [
      { name: "Headphones", kind: "plain", nouns: ["Wireless Headphones", "Earbuds", "Studio Headphones", "Noise Cancelling Headphones"], materials: ["Aluminium", "Plastic", "Leather"], price: [30, 400] },
      { name: "Speakers", kind: "plain", nouns: ["Bluetooth Speaker", "Bookshelf Speakers", "Soundbar", "Smart Speaker"], materials: ["Wood", "Fabric", "Aluminium"], price: [40, 600] },
      { name: "Chargers & Cables", kind: "plain", nouns: ["USB-C Cable", "Wall Charger", "Power Bank", "Wireless Charger"], materials: ["Braided Nylon", "Silicone", "Aluminium"], price: [8, 90] },
      { name: "Smart Home", kind: "plain", nouns: ["Smart Plug", "Smart Bulb", "Thermostat", "Security Camera"], materials: ["Plastic", "Glass", "Aluminium"], price: [15, 250] },
    ],
  },
  {
    name: "Sports & Outdoors",
    leaves: [
      { name: "Camping", kind: "plain", nouns: ["Tent", "Sleeping Bag", "Camping Stove", "Lantern", "Camping Chair"], materials: ["Ripstop Nylon", "Aluminium", "Polyester"], price: [25, 450] },
      { name: "Cycling", kind: "plain", nouns: ["Bike Helmet", "Bike Light", "Saddle Bag", "Bike Lock", "Cycling Gloves"], materials: ["Polycarbonate", "Aluminium", "Cordura"], price: [15, 200] },
      { name: "Yoga & Fitness", kind: "plain", nouns: ["Yoga Mat", "Kettlebell", "Resistance Bands", "Foam Roller", "Dumbbells"], materials: ["Natural Rubber", "Cork", "Cast Iron", "TPE"], price: [12, 150] },
      { name: "Hiking", kind: "plain", nouns: ["Daypack", "Trekking Poles", "Water Bottle", "Hiking Socks"], materials: ["Nylon", "Carbon", "Stainless Steel", "Merino"], price: [15, 180] },
    ],
  },
  {
    name: "Beauty",
    leaves: [
      { name: "Skincare", kind: "plain", nouns: ["Face Cream", "Serum", "Cleanser", "Sunscreen", "Toner"], materials: ["Aloe", "Vitamin C", "Hyaluronic", "Shea"], price: [10, 90] },
      { name: "Fragrance", kind: "plain", nouns: ["Eau de Parfum", "Eau de Toilette", "Body Mist", "Candle"], materials: ["Cedarwood", "Citrus", "Vanilla", "Vetiver"], price: [25, 180] },
      { name: "Hair Care", kind: "plain", nouns: ["Shampoo", "Conditioner", "Hair Oil", "Hair Brush"], materials: ["Argan", "Coconut", "Bamboo", "Keratin"], price: [8, 60] },
    ],
  },
  {
    name: "Toys & Games",
    leaves: [
      { name: "Board Games", kind: "plain", nouns: ["Strategy Game", "Party Game", "Family Game", "Card Game"], materials: ["Cardboard", "Wood"], price: [15, 80] },
      { name: "Puzzles", kind: "plain", nouns: ["Jigsaw Puzzle", "3D Puzzle", "Puzzle Box"], materials: ["Cardboard", "Wood", "Metal"], price: [10, 60] },
      { name: "Building Sets", kind: "plain", nouns: ["Building Blocks", "Construction Set", "Marble Run"], materials: ["Wood", "Plastic"], price: [20, 150] },
    ],
  },
  {
    name: "Books & Stationery",
    leaves: [
      { name: "Notebooks", kind: "plain", nouns: ["Notebook", "Journal", "Sketchbook", "Planner"], materials: ["Recycled Paper", "Leather", "Linen"], price: [6, 45] },
      { name: "Pens", kind: "plain", nouns: ["Fountain Pen", "Ballpoint Pen", "Gel Pens", "Fineliners"], materials: ["Brass", "Aluminium", "Resin"], price: [4, 120] },
      { name: "Art Supplies", kind: "plain", nouns: ["Watercolour Set", "Acrylic Paints", "Brush Set", "Coloured Pencils"], materials: ["Sable", "Synthetic", "Cedar"], price: [8, 95] },
    ],
  },
];

const slugOf = (s: string) =>
  s
    .toLowerCase()
    .replace(/&/g, "and")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");

interface Rows {
  [table: string]: Record<string, unknown>[];
}

/** The whole catalog, deterministically. */
export function generateCatalog(productCount: number): Rows {
  const rnd = prng(20_250_101);
  const id = (at: number) => uuidv7({ msecs: at, random: rnd.bytes(16) });
  const rows: Rows = {
    categories: [],
    products: [],
    product_categories: [],
    product_variants: [],
    product_images: [],
    product_tags: [],
    product_inventory: [],
    product_reviews: [],
  };
  const leaves: { id: string; departmentId: string; departmentName: string; spec: LeafSpec }[] = [];
  for (const [d, dept] of departments.entries()) {
    const at = new Date(epoch + d * 60_000).toISOString();
    const deptId = id(epoch + d * 60_000);
    rows.categories!.push({ id: deptId, name: dept.name, slug: slugOf(dept.name), description: `Everything in ${dept.name.toLowerCase()}.`, parent_id: null, level: 0, sort_order: d * 10, is_active: true, created_at: at });
    for (const [l, spec] of dept.leaves.entries()) {
      const leafId = id(epoch + d * 60_000 + l + 1);
      rows.categories!.push({ id: leafId, name: spec.name, slug: slugOf(spec.name), description: `${spec.name} from ${brands.length} brands.`, parent_id: deptId, level: 1, sort_order: l * 10, is_active: true, created_at: at });
      leaves.push({ id: leafId, departmentId: deptId, departmentName: dept.name, spec });
    }
  }

  const slugCounts = new Map<string, number>();
  for (let i = 0; i < productCount; i++) {
    const leaf = leaves[i % leaves.length]!;
    const spec = leaf.spec;
    const createdMs = epoch + Math.floor((i / productCount) * 365 * day) + rnd.int(0, day - 1);
    const productId = id(createdMs);
    const brand = rnd.pick(brands);
    const material = rnd.pick(spec.materials);
    const noun = rnd.pick(spec.nouns);
    const name = `${brand} ${rnd.pick(adjectives)} ${material} ${noun}`;
    const base = slugOf(name);
    const n = (slugCounts.get(base) ?? 0) + 1;
    slugCounts.set(base, n);
    const slug = n === 1 ? base : `${base}-${n}`;
    const sku = `SEED-${String(i + 1).padStart(6, "0")}`;
    const price = (rnd.int(spec.price[0], spec.price[1]) * 100 - 1) as number;
    const compareAt = rnd.chance(0.2) ? Math.round((price * 1.25) / 100) * 100 - 1 : null;
    const status = rnd.chance(0.95) ? "active" : rnd.chance(0.6) ? "draft" : "archived";
    const visible = rnd.chance(0.98);
    const allowBackorder = rnd.chance(0.05);
    const colour = rnd.pick(colours);
    const attributes: Record<string, string> = { brand, material: material.toLowerCase() };
    const createdAt = new Date(createdMs).toISOString();

    // Variants for clothes and shoes: sizes in one to three colours.
    const variants: { id: string; sku: string; name: string; price: number; attributes: Record<string, string> }[] = [];
    if (spec.kind !== "plain") {
      const sizes = spec.kind === "apparel" ? apparelSizes : shoeSizes.slice(rnd.int(0, 2), rnd.int(5, 8));
      const palette = [...new Set([colour, rnd.pick(colours), rnd.pick(colours)])].slice(0, rnd.int(1, 3));
      for (const c of palette) {
        for (const size of sizes) {
          variants.push({
            id: id(createdMs),
            sku: `${sku}-${c.toUpperCase()}-${size}`,
            name: `${c[0]!.toUpperCase()}${c.slice(1)} / ${size}`,
            price: size === "XL" ? price + 500 : price,
            attributes: { colour: c, size },
          });
        }
      }
    } else {
      attributes.colour = colour;
    }
    const prices = [price, ...variants.map((v) => v.price)];

    // Stock per item: usually some at "default", sometimes also at "berlin-1", now and then none.
    const items = variants.length > 0 ? variants.map((v) => ({ variantId: v.id as string | null })) : [{ variantId: null as string | null }];
    const threshold = rnd.chance(0.3) ? 5 : 0;
    let productAvailable = 0;
    let anyInStock = false;
    const itemStock = new Map<string | null, number>();
    for (const item of items) {
      const none = rnd.chance(0.08);
      let total = 0;
      for (const location of rnd.chance(0.3) ? ["default", "berlin-1"] : ["default"]) {
        const quantity = none ? 0 : rnd.int(variants.length > 0 ? 0 : 3, variants.length > 0 ? 30 : 120);
        total += quantity;
        rows.product_inventory!.push({
          id: id(createdMs),
          product_id: productId,
          variant_id: item.variantId,
          location,
          quantity,
          last_restocked_at: quantity > 0 ? new Date(createdMs + rnd.int(1, 60) * day).toISOString() : null,
          created_at: createdAt,
        });
      }
      itemStock.set(item.variantId, total);
      productAvailable += total;
      anyInStock ||= total > 0;
    }
    const statusOf = (available: number) => (available > 0 ? "in_stock" : allowBackorder ? "backorder" : "out_of_stock");
    for (const v of variants) {
      const available = itemStock.get(v.id) ?? 0;
      rows.product_variants!.push({
        id: v.id,
        product_id: productId,
        sku: v.sku,
        name: v.name,
        price_minor: String(v.price),
        compare_at_price_minor: null,
        attributes: JSON.stringify(v.attributes),
        image_url: null,
        stock_quantity: available,
        stock_status: statusOf(available),
        low_stock_threshold: threshold,
        low_stock: threshold > 0 && available <= threshold,
        created_at: createdAt,
      });
    }

    for (let k = 0, images = rnd.int(1, 4); k < images; k++) {
      rows.product_images!.push({
        id: id(createdMs),
        product_id: productId,
        url: `https://media.example.com/products/${sku.toLowerCase()}/${k + 1}.jpg`,
        alt_text: k === 0 ? name : `${name}, view ${k + 1}`,
        sort_order: k,
        is_primary: k === 0,
        created_at: createdAt,
      });
    }
    rows.product_categories!.push({ id: id(createdMs), product_id: productId, category_id: leaf.id, position: 0, created_at: createdAt });
    const tags = new Set([slugOf(spec.name).split("-")[0]!, material.toLowerCase(), colour]);
    if (rnd.chance(0.3)) tags.add(rnd.pick(["gift", "bestseller", "new", "sustainable", "limited", "sale"]));
    for (const tag of tags) rows.product_tags!.push({ id: id(createdMs), product_id: productId, tag, created_at: createdAt });

    // Reviews by distinct customers, mostly approved, mostly good.
    const counts = [0, 0, 0, 0, 0];
    const reviewCount = rnd.chance(0.3) ? 0 : rnd.int(1, 12);
    for (let r = 0; r < reviewCount; r++) {
      const rating = rnd.pick([5, 5, 5, 4, 4, 4, 3, 2, 1]);
      const roll = rnd.next();
      const status = roll < 0.85 ? "approved" : roll < 0.95 ? "pending" : "rejected";
      if (status === "approved") counts[rating - 1]!++;
      const at = new Date(createdMs + rnd.int(2, 200) * day).toISOString();
      rows.product_reviews!.push({
        id: id(createdMs + r),
        product_id: productId,
        user_id: id(epoch + i * 100 + r),
        rating,
        title: rating >= 4 ? rnd.pick(["Love it", "Great value", "Exactly as described", "Would buy again"]) : rnd.pick(["Not for me", "Okay", "Disappointed"]),
        comment: rating >= 4 ? `The ${noun.toLowerCase()} is well made and the ${material.toLowerCase()} feels great.` : `The ${noun.toLowerCase()} did not meet my expectations.`,
        author_display_name: rnd.chance(0.7) ? rnd.pick(["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Robin", "Kim"]) : "",
        is_verified_purchase: rnd.chance(0.6),
        status,
        rejection_reason: status === "rejected" ? "off topic" : null,
        created_at: at,
        moderated_at: status === "pending" ? null : at,
      });
    }
    const ratingCount = counts.reduce((s, c) => s + c, 0);
    rows.products!.push({
      id: productId,
      sku,
      name,
      slug,
      description: `The ${name} is a ${spec.name.toLowerCase()} essential by ${brand}, made of ${material.toLowerCase()}. Built to last and easy to care for.`,
      short_description: `${material} ${noun.toLowerCase()} by ${brand}.`,
      currency: seedCurrency,
      price_minor: String(price),
      compare_at_price_minor: compareAt === null ? null : String(compareAt),
      cost_price_minor: String(Math.round(price * (0.45 + rnd.next() * 0.15))),
      status,
      is_visible: visible,
      allow_backorder: allowBackorder,
      stock_quantity: productAvailable,
      stock_status: anyInStock ? "in_stock" : statusOf(0),
      low_stock_threshold: variants.length > 0 ? 0 : threshold,
      low_stock: variants.length === 0 && threshold > 0 && productAvailable <= threshold,
      weight_grams: rnd.int(50, 5_000),
      length_mm: rnd.int(50, 800),
      width_mm: rnd.int(50, 600),
      height_mm: rnd.int(10, 400),
      meta_title: "",
      meta_description: "",
      attributes: JSON.stringify(attributes),
      min_price_minor: String(Math.min(...prices)),
      max_price_minor: String(Math.max(...prices)),
      variant_count: variants.length,
      rating_count: ratingCount,
      rating_sum: counts.reduce((s, c, k) => s + c * (k + 1), 0),
      rating_1_count: counts[0],
      rating_2_count: counts[1],
      rating_3_count: counts[2],
      rating_4_count: counts[3],
      rating_5_count: counts[4],
      created_at: createdAt,
      updated_at: createdAt,
      published_at: status === "draft" ? null : createdAt,
    });
  }
  return rows;
}

/** PostgreSQL types of the seeded columns, for unnest(). */
const columnTypes: Record<string, Record<string, string>> = {
  categories: { id: "uuid", name: "text", slug: "text", description: "text", parent_id: "uuid", level: "int", sort_order: "int", is_active: "boolean", created_at: "timestamptz" },
  products: {
    id: "uuid", sku: "text", name: "text", slug: "text", description: "text", short_description: "text", currency: "text", price_minor: "bigint",
    compare_at_price_minor: "bigint", cost_price_minor: "bigint", status: "text", is_visible: "boolean", allow_backorder: "boolean", stock_quantity: "int",
    stock_status: "text", low_stock_threshold: "int", low_stock: "boolean", weight_grams: "int", length_mm: "int", width_mm: "int", height_mm: "int",
    meta_title: "text", meta_description: "text", attributes: "jsonb", min_price_minor: "bigint", max_price_minor: "bigint", variant_count: "int",
    rating_count: "int", rating_sum: "int", rating_1_count: "int", rating_2_count: "int", rating_3_count: "int", rating_4_count: "int", rating_5_count: "int",
    created_at: "timestamptz", updated_at: "timestamptz", published_at: "timestamptz",
  },
  product_categories: { id: "uuid", product_id: "uuid", category_id: "uuid", position: "int", created_at: "timestamptz" },
  product_variants: {
    id: "uuid", product_id: "uuid", sku: "text", name: "text", price_minor: "bigint", compare_at_price_minor: "bigint", attributes: "jsonb", image_url: "text",
    stock_quantity: "int", stock_status: "text", low_stock_threshold: "int", low_stock: "boolean", created_at: "timestamptz",
  },
  product_images: { id: "uuid", product_id: "uuid", url: "text", alt_text: "text", sort_order: "int", is_primary: "boolean", created_at: "timestamptz" },
  product_tags: { id: "uuid", product_id: "uuid", tag: "text", created_at: "timestamptz" },
  product_inventory: { id: "uuid", product_id: "uuid", variant_id: "uuid", location: "text", quantity: "int", last_restocked_at: "timestamptz", created_at: "timestamptz" },
  product_reviews: {
    id: "uuid", product_id: "uuid", user_id: "uuid", rating: "smallint", title: "text", comment: "text", author_display_name: "text",
    is_verified_purchase: "boolean", status: "text", rejection_reason: "text", created_at: "timestamptz", moderated_at: "timestamptz",
  },
};

/** Tables in insertion order (parents first). */
const loadOrder = ["categories", "products", "product_variants", "product_categories", "product_images", "product_tags", "product_inventory", "product_reviews"];

/** Inserts rows with one statement per batch: unnest() of one array per column. jsonb travels as text. */
async function insertBatch(client: pg.ClientBase, table: string, rows: Record<string, unknown>[]): Promise<void> {
  const types = columnTypes[table]!;
  const columns = Object.keys(types);
  const arrays = columns.map((c) => rows.map((r) => (r[c] === undefined ? null : r[c])));
  const select = columns.map((c) => (types[c] === "jsonb" ? `${c}::jsonb` : c)).join(", ");
  const unnest = columns.map((c, i) => `$${i + 1}::${types[c] === "jsonb" ? "text" : types[c]}[]`).join(", ");
  await client.query(`insert into ${table} (${columns.join(", ")}) select ${select} from unnest(${unnest}) as t(${columns.join(", ")})`, arrays);
}

const catalogTables = [
  "review_helpful_votes", "product_reviews", "stock_reservation_allocations", "stock_reservation_lines", "stock_reservations", "stock_adjustments",
  "stock_restocks", "product_inventory", "product_tags", "product_images", "product_categories", "product_variants", "product_skus", "products",
  "categories", "search_words", "search_postings",
];
const searchPostingTriggers = ["products_search_postings_insert", "products_search_postings_update"];

export interface SeedResult {
  /** False when the database already held the seed and nothing was written. */
  loaded: boolean;
  products: number;
  variants: number;
  reviews: number;
  categories: number;
}

/**
 * Loads the catalog into the product database at `url` (migrating it first).
 * `progress` receives one line per table and batch.
 */
export async function seedCatalog(
  url: string,
  options: { products: number; reset?: boolean; progress?: (line: string, final: boolean) => void },
): Promise<SeedResult> {
  const progress = options.progress ?? (() => undefined);
  // Migrations first, exactly as the service applies them.
  const orm = await openServiceDatabase(productService, url, createLogger("seed:product", "warn"));
  await orm.close();

  const rows = generateCatalog(options.products);
  const result = {
    loaded: false,
    products: rows.products!.length,
    variants: rows.product_variants!.length,
    reviews: rows.product_reviews!.length,
    categories: rows.categories!.length,
  };
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const marker = rows.categories![0]!.id as string;
    const seeded = (await client.query("select 1 from categories where id = $1", [marker])).rowCount! > 0;
    if (seeded && !options.reset) return result;
    await client.query("begin");
    if (options.reset) await client.query(`truncate ${catalogTables.join(", ")}`);
    // Search postings are rebuilt once after the load (migration 0003): their row triggers would
    // rewrite each product's rows once per statement that touches its search document (three).
    for (const trigger of searchPostingTriggers) await client.query(`alter table products disable trigger ${trigger}`);
    const total = loadOrder.reduce((s, t) => s + rows[t]!.length, 0);
    let done = 0;
    for (const table of loadOrder) {
      const list = rows[table]!;
      for (let i = 0; i < list.length; i += 1000) {
        const batch = list.slice(i, i + 1000);
        await insertBatch(client, table, batch);
        done += batch.length;
        const end = Math.min(i + 1000, list.length);
        progress(`  ${table.padEnd(20)} ${String(end).padStart(7)}/${list.length}  (${Math.round((done / total) * 100)}% of ${total} rows)`, end === list.length);
      }
    }
    for (const trigger of searchPostingTriggers) await client.query(`alter table products enable trigger ${trigger}`);
    await client.query("select search_postings_rebuild()");
    await client.query("commit");
    // The triggers that built the search documents left dead row versions behind; fresh statistics for the
    // planner; and the visibility map that lets one-word searches read search_postings' index alone.
    await client.query(`vacuum analyze ${loadOrder.join(", ")}, search_words, search_postings`);
    return { ...result, loaded: true };
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  } finally {
    await client.end();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { products: { type: "string", default: "5000" }, reset: { type: "boolean", default: false } } });
  const products = Number(values.products);
  if (!Number.isInteger(products) || products < 1 || products > 200_000) throw new Error(`--products must be an integer from 1 to 200000, got "${values.products}"`);
  const url = loadConfig("product").databaseUrl;
  const started = performance.now();
  const say = (line: string) => process.stderr.write(`${line}\n`);
  const target = new URL(url);
  say(`product seed: ${products} products into ${target.host}${target.pathname}${values.reset ? " (--reset: the catalog is emptied first)" : ""}`);
  const tty = process.stderr.isTTY;
  const result = await seedCatalog(url, {
    products,
    reset: values.reset,
    // On a terminal one line per table, rewritten in place; otherwise one line per finished table.
    progress: (line, final) => (tty ? process.stderr.write(`\r${line}${final ? "\n" : ""}`) : final ? say(line) : undefined),
  });
  await (await import("../discount/seed.ts")).seedDiscountsCli(say);
  await (await import("../shipping/seed.ts")).seedShippingCli(say);
  if (!result.loaded) {
    say("already seeded: nothing to do. Pass --reset to empty the catalog and load it again.");
    return;
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  say(`done in ${seconds} s: ${result.categories} categories, ${result.products} products, ${result.variants} variants, ${result.reviews} reviews`);
}

if (import.meta.main) {
  await main().catch((error: unknown) => {
    console.error(`product seed failed: ${(error as Error).message}`);
    process.exit(1);
  });
}
