/**
 * The Cart service (ecommerce.cart.v1.CartService): guest and customer carts,
 * repriced on every response from the catalog (Product's BatchGetProducts)
 * and the Discount service (CalculateDiscounts, ValidateCoupon); checkout's
 * snapshot and conversion for the Order service; admin views. Publishes
 * cart.converted and cart.abandoned on CART_EVENTS; consumes nothing.
 */
import { CartService } from "../../gen/ecommerce/cart/v1/cart_pb.js";
import { file_ecommerce_cart_v1_events } from "../../gen/ecommerce/cart/v1/events_pb.js";
import { DiscountService } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { CategoryService } from "../../gen/ecommerce/product/v1/category_pb.js";
import { ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import type { HandlerContext } from "@connectrpc/connect";
import { callerOf, requireUser } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { defineService, type ServiceContext } from "../../kit/server.ts";
import { addItem, applyCoupon, type Caller, callerCart, clearCart, mergeGuestCart, removeCoupon, removeItem, updateItemQuantity } from "./carts.ts";
import { CategoryAncestry } from "./categories.ts";
import { getCartById, getCartForCheckout, listCarts, markCartConverted } from "./checkout.ts";
import { type CartServiceConfig, loadCartConfig } from "./config.ts";
import { cartEntities } from "./entities.ts";
import { cartSweeper } from "./jobs.ts";
import { CartTables } from "./migrations/0001_cart_tables.ts";
import { emptyCart, priceCart, type Pricing } from "./pricing.ts";
import { itemsOf } from "./store.ts";

/** The caller of a storefront RPC: the signed-in user (the request's guest_token is then ignored), else the guest. */
function callerFrom(ctx: HandlerContext, guestToken: string): Caller {
  const p = callerOf(ctx);
  return p?.kind === "user" ? { userId: p.userId, guestToken: "" } : { guestToken };
}

export const cartService = defineService({
  name: "cart",
  entities: cartEntities,
  migrations: [{ name: "0001_cart_tables", class: CartTables }],
  publishes: file_ecommerce_cart_v1_events,
  setup: (ctx) => ({ config: loadCartConfig(ctx.env) }),
  rateLimits: ({ config }) => [
    {
      name: "cart-writes",
      methods: ["addItem", "updateItemQuantity", "removeItem", "clearCart", "applyCoupon", "removeCoupon", "mergeGuestCart"],
      points: config.writesPerWindow,
      windowMs: config.rateLimitWindowMs,
    },
  ],
  jobs: (ctx, { config }) => [cartSweeper(ctx, pricingOf(ctx, config))],
  routes(router, svc, { config }) {
    const pricing = pricingOf(svc, config);
    router.service(CartService, {
      getCart: async (req, ctx) => {
        const em = emOf(ctx);
        const caller = callerFrom(ctx, req.guestToken);
        const cart = await callerCart(em, caller);
        if (!cart) return { cart: emptyCart(config) };
        return { cart: await priceCart(pricing, cart, await itemsOf(em, cart.id), { mode: "storefront", guestToken: caller.guestToken }) };
      },
      addItem: (req, ctx) => addItem(pricing, emOf(ctx), callerFrom(ctx, req.guestToken), req),
      updateItemQuantity: (req, ctx) => updateItemQuantity(pricing, emOf(ctx), callerFrom(ctx, req.guestToken), req),
      removeItem: (req, ctx) => removeItem(pricing, emOf(ctx), callerFrom(ctx, req.guestToken), req),
      clearCart: (req, ctx) => clearCart(pricing, emOf(ctx), callerFrom(ctx, req.guestToken), req),
      applyCoupon: (req, ctx) => applyCoupon(pricing, emOf(ctx), callerFrom(ctx, req.guestToken), req),
      removeCoupon: (req, ctx) => removeCoupon(pricing, emOf(ctx), callerFrom(ctx, req.guestToken), req),
      mergeGuestCart: (req, ctx) => mergeGuestCart(pricing, emOf(ctx), requireUser(ctx).userId, req),

      // INTERNAL (order) and ADMIN: the kit's interceptor enforced the policy.
      getCartForCheckout: (req, ctx) => getCartForCheckout(pricing, emOf(ctx), req),
      markCartConverted: (req, ctx) => markCartConverted(pricing, emOf(ctx), req),
      getCartById: (req, ctx) => getCartById(pricing, emOf(ctx), req.cartId),
      listCarts: (req, ctx) => listCarts(emOf(ctx), req),
    });
  },
});

/** One Pricing (and so one category cache) per running service, shared by the RPCs and the sweeper. */
const pricings = new WeakMap<ServiceContext, Pricing>();

function pricingOf(ctx: ServiceContext, config: CartServiceConfig): Pricing {
  let pricing = pricings.get(ctx);
  if (!pricing) pricings.set(ctx, (pricing = newPricing(ctx, config)));
  return pricing;
}

function newPricing(ctx: ServiceContext, config: CartServiceConfig): Pricing {
  return {
    config,
    log: ctx.log,
    categories: new CategoryAncestry(() => ctx.peers.client(CategoryService), config.categoryCacheMs),
    products: () => ctx.peers.client(ProductService),
    discounts: () => ctx.peers.client(DiscountService),
  };
}
