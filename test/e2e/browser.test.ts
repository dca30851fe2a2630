/**
 * Issue 11's WatchOrder through the edge to a real browser: Debian's Chromium
 * (driven by playwright-core) loads a page from its own origin, and the page
 * opens WatchOrder with the generated client and @connectrpc/connect-web, once
 * over the Connect protocol (fetch streaming) and once over gRPC-Web, through the
 * TypeScript edge with CORS for that origin. The checkout mesh is the Order
 * harness's (services/order/testing.ts: Product, Cart, Discount, Shipping,
 * Payment, Order, test tokens instead of Auth); the order moves CONFIRMED →
 * SHIPPED (a shipment: shipment.created) → DELIVERED (its delivery:
 * shipment.delivered), and the page must see each status once, in order, and
 * the stream end at DELIVERED. Also in the page: a reconnect with the last
 * version received resumes there (what happened meanwhile once, nothing older),
 * one without a version starts from the current state; no token and a forged token end
 * as `unauthenticated`; a page from an origin the edge does not allow cannot
 * call at all (the browser's CORS check).
 *
 * The page (test/e2e/browser/page.ts) is bundled with rolldown in beforeAll and
 * served from memory by a node:http server; Chromium must be at /usr/bin/chromium
 * (scripts/setup.sh installs it).
 */
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { type Browser, chromium, type Page } from "playwright-core";
import { rolldown } from "rolldown";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEdge, type RunningEdge } from "../../gateway/edge.ts";
import { OrderPaymentStatus, OrderStatus, type Order } from "../../gen/ecommerce/order/v1/order_pb.js";
import { ShipmentStatus } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { eventually } from "../../kit/testing/mesh.ts";
import { auth, type OrderHarness, startOrderHarness } from "../../services/order/testing.ts";
import type { PageApi, Protocol, WatchState } from "./browser/page.ts";

/** Streams, shipments and deliveries cross the event bus; generous on a busy 2-core machine. */
const waitMs = 60_000;
const testMs = 120_000;

let h: OrderHarness;
let edge: RunningEdge;
let browser: Browser;
let page: Page;
const servers: Server[] = [];
/** The page's origin, which the edge allows, and a second one, which it does not. */
let allowed: string;
let refused: string;

/** Serves the page and its bundle from memory; returns the origin. */
async function servePage(script: string): Promise<string> {
  const html = `<!doctype html><meta charset="utf-8"><title>WatchOrder</title><script type="module" src="/page.js"></script>`;
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    else if (path === "/page.js") res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(script);
    else res.writeHead(404).end();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  return `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
}

async function openPage(origin: string): Promise<Page> {
  const p = await browser.newPage();
  await p.goto(`${origin}/?edge=${encodeURIComponent(edge.url)}`);
  await p.waitForFunction(() => "pageApi" in globalThis);
  return p;
}

/** What the page's `pageApi` does, called from the test. */
const inPage = (p: Page) => ({
  watch: (name: string, protocol: Protocol, orderId: string, token: string | null, resumeAfterVersion?: string) =>
    p.evaluate(([n, pr, o, t, v]) => (globalThis as unknown as { pageApi: PageApi }).pageApi.watch(n, pr, o, t ?? undefined, v ?? undefined), [name, protocol, orderId, token, resumeAfterVersion ?? null] as const),
  stop: (name: string) => p.evaluate((n) => (globalThis as unknown as { pageApi: PageApi }).pageApi.stop(n), name),
  state: (name: string) => p.evaluate((n) => (globalThis as unknown as { pageApi: PageApi }).pageApi.watches[n], name) as Promise<WatchState | undefined>,
  /** Waits until the watch's state satisfies `done`. */
  until: (name: string, done: (s: WatchState) => boolean, what: string) =>
    eventually(async () => {
      const s = (await p.evaluate((n) => (globalThis as unknown as { pageApi: PageApi }).pageApi.watches[n], name)) as WatchState | undefined;
      return s && done(s) ? s : undefined;
    }, waitMs, `${name}: ${what}`),
});

const ended = (s: WatchState) => s.completed || s.error !== undefined;
const saw = (status: OrderStatus) => (s: WatchState) => s.messages.some((m) => m.status === status) || ended(s);

async function placed(): Promise<{ order: Order; token: string }> {
  const p = await h.product(1500n, 10);
  const s = await h.shopper([[p, 1]]);
  const { order } = await h.orders.placeOrder(h.request(s.cartId), auth(s.token));
  expect(order!.status).toBe(OrderStatus.CONFIRMED);
  return { order: order!, token: s.token };
}

/** The back office ships the order (shipment.created captures the payment and ships it). */
async function ship(order: Order): Promise<string> {
  const { shipment } = await h.shipping.createShipment(
    { orderId: order.id, items: order.items.map((i) => ({ orderItemId: i.id, quantity: i.quantity })), weightGrams: 500, trackingNumber: `WEB-${order.id.slice(-12)}`, idempotencyKey: `ship-${order.id}` },
    auth(h.admin),
  );
  return shipment!.id;
}

/** The carrier's reports: in transit, then delivered (shipment.delivered delivers the order). */
async function deliver(shipmentId: string): Promise<void> {
  for (const status of [ShipmentStatus.IN_TRANSIT, ShipmentStatus.DELIVERED]) {
    await h.shipping.addTrackingEvent({ shipmentId, status, description: ShipmentStatus[status], occurredAt: timestampNow() }, auth(h.admin));
  }
}

/** The token with another user's id in its claims and the original signature: a forgery. */
function forged(token: string): string {
  const [header, payload, signature] = token.split(".");
  const claims = JSON.parse(Buffer.from(payload!, "base64url").toString("utf8")) as Record<string, unknown>;
  claims.sub = "0193a5f0-0000-7000-8000-000000000000";
  return [header, Buffer.from(JSON.stringify(claims)).toString("base64url"), signature].join(".");
}

beforeAll(async () => {
  h = await startOrderHarness({ ORDER_WATCH_POLL_MS: "50" });
  const bundle = await rolldown({ input: join(import.meta.dirname, "browser", "page.ts"), platform: "browser", logLevel: "warn" });
  const script = (await bundle.generate({ format: "esm" })).output[0].code;
  await bundle.close();
  allowed = await servePage(script);
  refused = await servePage(script);
  edge = await startEdge({ port: 0, host: "127.0.0.1", upstreams: { order: h.mesh.url("order") }, allowedOrigins: [allowed], logLevel: process.env.TEST_LOG_LEVEL ?? "silent" });
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    // Root in a container: no sandbox. The rest keeps Chromium off the (closed) network.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await openPage(allowed);
}, 240_000);

afterAll(async () => {
  await browser?.close();
  for (const s of servers) await new Promise((resolve) => s.close(resolve));
  await edge?.stop();
  await h?.stop();
});

describe.each(["connect", "grpc-web"] as const)("WatchOrder in Chromium over %s", (protocol) => {
  it("sees CONFIRMED, SHIPPED and DELIVERED, each once and in order, and the stream ends at DELIVERED", async () => {
    const { order, token } = await placed();
    const w = inPage(page);
    const name = `${protocol}-lifecycle`;
    await w.watch(name, protocol, order.id, token);
    const first = await w.until(name, (s) => s.messages.length > 0 || ended(s), "first message");
    expect(first.error).toBeUndefined();
    expect(first.messages[0]).toMatchObject({ status: OrderStatus.CONFIRMED, change: undefined, payment: OrderPaymentStatus.AUTHORIZED });

    const shipmentId = await ship(order);
    await w.until(name, saw(OrderStatus.SHIPPED), "SHIPPED");
    await deliver(shipmentId);
    const done = await w.until(name, ended, "the end of the stream");

    expect(done.error).toBeUndefined();
    expect(done.completed).toBe(true);
    // Every status change exactly once, in order; the statuses never go back.
    expect(done.messages.flatMap((m) => (m.change ? [m.change] : []))).toEqual([OrderStatus.SHIPPED, OrderStatus.DELIVERED]);
    const statuses = done.messages.map((m) => m.status).filter((s, i, all) => i === 0 || s !== all[i - 1]);
    expect(statuses).toEqual([OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.DELIVERED]);
    expect(done.messages.at(-1)).toMatchObject({ status: OrderStatus.DELIVERED, change: OrderStatus.DELIVERED, payment: OrderPaymentStatus.PAID });
    const progress = done.messages.map((m) => [m.history, m.updatedAtMs]);
    expect(progress).toEqual([...progress].sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!));
  }, testMs);

  it("a reconnect resumes from the last version received: what happened meanwhile arrives once, nothing older is replayed", async () => {
    const { order, token } = await placed();
    const w = inPage(page);
    const before = `${protocol}-before-reconnect`;
    await w.watch(before, protocol, order.id, token);
    await w.until(before, (s) => s.messages.length > 0 || ended(s), "first message");
    const shipmentId = await ship(order);
    const shipped = await w.until(before, saw(OrderStatus.SHIPPED), "SHIPPED");
    expect(shipped.error).toBeUndefined();
    // The browser drops the stream (a closed tab, a lost connection); the order is delivered meanwhile.
    await w.stop(before);
    const dropped = await w.until(before, ended, "the dropped stream's end");
    expect(dropped.error?.code).toBe(Code.Canceled);
    const last = dropped.messages.at(-1)!;
    expect(last.status).toBe(OrderStatus.SHIPPED);
    await deliver(shipmentId);

    // Reconnected with the last version it received: the missed change, once, then the stream ends (DELIVERED is final).
    const after = `${protocol}-after-reconnect`;
    await w.watch(after, protocol, order.id, token, last.version);
    const done = await w.until(after, ended, "the end of the resumed stream");
    expect(done.error).toBeUndefined();
    expect(done.completed).toBe(true);
    expect(done.messages.flatMap((m) => (m.change ? [m.change] : []))).toEqual([OrderStatus.DELIVERED]);
    expect(done.messages.some((m) => m.status !== OrderStatus.DELIVERED && m.status !== OrderStatus.SHIPPED)).toBe(false);
    expect(done.messages.at(-1)).toMatchObject({ status: OrderStatus.DELIVERED, change: OrderStatus.DELIVERED, payment: OrderPaymentStatus.PAID });
    const versions = [last, ...done.messages].map((m) => BigInt(m.version));
    expect(versions).toEqual([...versions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    expect(new Set(versions).size).toBe(versions.length);
    // The dropped stream got nothing after it was dropped.
    expect((await w.state(before))!.messages).toEqual(dropped.messages);

    // Reconnected without a version: the current state first, as the contract says, and the stream ends.
    const fresh = `${protocol}-fresh`;
    await w.watch(fresh, protocol, order.id, token);
    const current = await w.until(fresh, ended, "the end of the fresh stream");
    expect(current.messages.map((m) => [m.status, m.change])).toEqual([[OrderStatus.DELIVERED, undefined]]);
  }, testMs);

  it("without a token, or with a forged one, the page's call ends as unauthenticated", async () => {
    const { order, token } = await placed();
    const w = inPage(page);
    const cases = [
      [`${protocol}-no-token`, null, "UNAUTHENTICATED"],
      [`${protocol}-forged-token`, forged(token), "TOKEN_INVALID"],
    ] as const;
    for (const [name, given] of cases) await w.watch(name, protocol, order.id, given);
    for (const [name, , reason] of cases) {
      const s = await w.until(name, ended, "the refusal");
      expect(s.messages).toEqual([]);
      expect(s.error, name).toMatchObject({ code: Code.Unauthenticated, reason });
    }
  }, testMs);
});

describe("CORS in Chromium", () => {
  it("a page from an origin the edge does not allow cannot open WatchOrder (Connect or gRPC-Web); the allowed origin can", async () => {
    const { order, token } = await placed();
    const other = await openPage(refused);
    const logs: string[] = [];
    other.on("console", (m) => logs.push(m.text()));
    try {
      const w = inPage(other);
      for (const protocol of ["connect", "grpc-web"] as const) {
        await w.watch(`refused-${protocol}`, protocol, order.id, token);
        const s = await w.until(`refused-${protocol}`, (x) => x.messages.length > 0 || ended(x), "the refusal");
        expect(s.messages).toEqual([]);
        // fetch fails without an answer to read: connect-web cannot tell more than that.
        expect(s.error?.code, protocol).toBe(Code.Unknown);
      }
      await eventually(async () => (logs.some((line) => line.includes("blocked by CORS policy")) ? true : undefined), waitMs, "Chromium's CORS message");
      // The same call from the allowed origin gets its first message.
      const mine = inPage(page);
      await mine.watch("allowed-origin", "connect", order.id, token);
      const ok = await mine.until("allowed-origin", (x) => x.messages.length > 0 || ended(x), "first message");
      expect(ok.messages[0]).toMatchObject({ status: OrderStatus.CONFIRMED });
      await mine.stop("allowed-origin");
    } finally {
      await other.close();
    }
  }, testMs);
});
