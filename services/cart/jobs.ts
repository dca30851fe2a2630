/**
 * The cart sweeper, every CART_SWEEP_INTERVAL_MS: purges expired carts (no
 * longer anybody's) and marks user carts with items unchanged for
 * CART_ABANDON_AFTER_MS as ABANDONED, publishing cart.abandoned (outbox) in the
 * same transaction. Each abandoned cart is repriced first (outside any
 * transaction), so the event carries the prices of its last repricing; the
 * mark is conditional on the version that was priced, so a cart changed
 * meanwhile, or marked by another replica, is left alone and published once.
 */
import { create } from "@bufbuild/protobuf";
import { AbandonedCartItemSchema, CartAbandonedSchema } from "../../gen/ecommerce/cart/v1/events_pb.js";
import { publishEvent } from "../../kit/events/outbox.ts";
import { intervalJob, type IntervalJob } from "../../kit/jobs.ts";
import type { ServiceContext } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import { transaction } from "../../kit/transaction.ts";
import { timestampOf } from "../../kit/convert.ts";
import { priceCart, type Pricing } from "./pricing.ts";
import { type CartRecord, cartColumns, cartOf, itemsOf } from "./store.ts";

/** Carts handled per pass at most, so one pass never holds the loop for long. */
const batch = 100;

export async function purgeExpired(ctx: ServiceContext): Promise<number> {
  return sqlOf(ctx.orm.em.fork()).run(
    `delete from carts where id in (
       select id from carts where status in ('active', 'abandoned', 'merged') and expires_at <= now() limit 1000 for update skip locked)`,
  );
}

export async function markAbandoned(ctx: ServiceContext, pricing: Pricing, signal?: AbortSignal): Promise<number> {
  const em = ctx.orm.em.fork();
  const rows = await sqlOf(em).all<CartRecord>(
    `select ${cartColumns} from carts c
     where status = 'active' and user_id is not null and updated_at <= $1 and expires_at > now()
       and exists (select 1 from cart_items i where i.cart_id = c.id)
     order by updated_at limit ${batch}`,
    [new Date(Date.now() - pricing.config.abandonAfterMs)],
  );
  const due = rows.map(cartOf);
  let marked = 0;
  for (const cart of due) {
    if (signal?.aborted) break;
    const items = await itemsOf(em, cart.id);
    const priced = await priceCart(pricing, cart, items, { mode: "storefront" }).catch((error: unknown) => {
      ctx.log.warn({ cart_id: cart.id, err: (error as Error).message }, "abandoned cart not priced; retried at the next pass");
      return undefined;
    });
    if (!priced) continue;
    const done = await transaction(em.fork(), async (tx) => {
      const n = await sqlOf(tx).run("update carts set status = 'abandoned' where id = $1 and version = $2 and status = 'active'", [cart.id, cart.version]);
      if (n === 0) return false;
      publishEvent(tx, CartAbandonedSchema, {
        cartId: cart.id,
        userId: cart.userId!,
        currencyCode: cart.currency,
        items: priced.items.map((i) =>
          create(AbandonedCartItemSchema, {
            itemId: i.id,
            productId: i.productId,
            variantId: i.variantId,
            sku: i.sku,
            productName: i.productName,
            variantName: i.variantName,
            imageUrl: i.imageUrl,
            quantity: i.quantity,
            unitPrice: i.unitPrice ?? i.priceAtAdd,
            lineTotal: i.lineTotal,
          }),
        ),
        itemCount: priced.itemCount,
        subtotal: priced.subtotal,
        discountTotal: priced.discountTotal,
        total: priced.total,
        couponCode: priced.couponCode,
        lastActivityAt: timestampOf(cart.updatedAt),
        expiresAt: timestampOf(cart.expiresAt),
      });
      await tx.flush();
      return true;
    });
    if (done) marked++;
  }
  return marked;
}

export function cartSweeper(ctx: ServiceContext, pricing: Pricing): IntervalJob {
  return intervalJob({
    name: "cart-sweeper",
    everyMs: pricing.config.sweepIntervalMs,
    log: ctx.log,
    async run(signal) {
      const purged = await purgeExpired(ctx);
      const abandoned = await markAbandoned(ctx, pricing, signal);
      if (purged > 0 || abandoned > 0) ctx.log.info({ purged, abandoned }, "cart sweep");
    },
  });
}
