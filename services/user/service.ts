/**
 * The User service: profiles (from Auth's events), address book, saved
 * payment methods, preferences and wishlist (ecommerce.user.v1.UserService).
 * Publishes user.updated on USER_EVENTS; consumes Auth's user events and the
 * catalog's product events (wishlist snapshots); its inbox is user_event_logs.
 * Calls the Product service's BatchGetProducts when a product is wishlisted.
 */
import { ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { file_ecommerce_user_v1_events } from "../../gen/ecommerce/user/v1/events_pb.js";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { callerOf, requireUser } from "../../kit/auth/principal.ts";
import { emOf } from "../../kit/db.ts";
import { defineService } from "../../kit/server.ts";
import { sqlOf } from "../../kit/sql.ts";
import { addAddress, deleteAddress, getAddress, getDefaultAddress, listAddresses, setDefaultAddress, updateAddress } from "./addresses.ts";
import { loadUserConfig } from "./config.ts";
import { userConsumers } from "./consumers.ts";
import { userEntities } from "./entities.ts";
import { UserTables } from "./migrations/0001_user_tables.ts";
import { WishlistSnapshotTimes } from "./migrations/0002_wishlist_snapshot_times.ts";
import { addPaymentMethod, deletePaymentMethod, getPaymentMethodToken, listPaymentMethods, setDefaultPaymentMethod } from "./payment-methods.ts";
import { deletePreferences, getPreferences, setPreferences } from "./preferences.ts";
import { getMyProfile, getProfile, listProfiles, updateMyProfile } from "./profiles.ts";
import { TokenCipher } from "./token-cipher.ts";
import { addToWishlist, listWishlist, type ProductLookup, removeFromWishlist } from "./wishlist.ts";
import { wishlistSnapshotConsumers } from "./wishlist-snapshots.ts";

export const userService = defineService({
  name: "user",
    entities: userEntities,
    migrations: [
      { name: "0001_user_tables", class: UserTables },
      { name: "0002_wishlist_snapshot_times", class: WishlistSnapshotTimes },
    ],
    inboxTable: "user_event_logs",
    publishes: file_ecommerce_user_v1_events,
    consumers: () => [...userConsumers(), ...wishlistSnapshotConsumers()],
    setup(ctx) {
      const config = loadUserConfig(ctx.env);
      return { config, cipher: new TokenCipher(config.dataKey, config.decryptionKeys) };
    },
    routes(router, svc, { config, cipher }) {
      const me = (ctx: Parameters<typeof requireUser>[0]) => requireUser(ctx).userId;
      // The caller's token is forwarded: the catalog answers with what this customer may see.
      const lookupProduct: ProductLookup = async (productId) =>
        (await svc.peers.client(ProductService).batchGetProducts({ ids: [productId] })).products.find((p) => p.id === productId);
      router.service(UserService, {
        // A read: the call's Sql, no EntityManager forked.
        getMyProfile: (_req, ctx) => getMyProfile(sqlOf(ctx), me(ctx)),
        updateMyProfile: (req, ctx) => updateMyProfile(emOf(ctx), config, me(ctx), req),

        addAddress: (req, ctx) => addAddress(emOf(ctx), me(ctx), req),
        updateAddress: (req, ctx) => updateAddress(emOf(ctx), me(ctx), req),
        deleteAddress: async (req, ctx) => (await deleteAddress(emOf(ctx), me(ctx), req), {}),
        listAddresses: (req, ctx) => listAddresses(emOf(ctx), me(ctx), req),
        setDefaultAddress: (req, ctx) => setDefaultAddress(emOf(ctx), me(ctx), req),

        addPaymentMethod: (req, ctx) => addPaymentMethod(emOf(ctx), cipher, me(ctx), req),
        deletePaymentMethod: async (req, ctx) => (await deletePaymentMethod(emOf(ctx), me(ctx), req), {}),
        listPaymentMethods: (_req, ctx) => listPaymentMethods(emOf(ctx), me(ctx)),
        setDefaultPaymentMethod: (req, ctx) => setDefaultPaymentMethod(emOf(ctx), me(ctx), req),

        getPreferences: (req, ctx) => getPreferences(emOf(ctx), me(ctx), req),
        setPreferences: (req, ctx) => setPreferences(emOf(ctx), me(ctx), req),
        deletePreferences: async (req, ctx) => (await deletePreferences(emOf(ctx), me(ctx), req), {}),

        addToWishlist: (req, ctx) => addToWishlist(emOf(ctx), lookupProduct, me(ctx), req),
        removeFromWishlist: async (req, ctx) => (await removeFromWishlist(emOf(ctx), me(ctx), req), {}),
        listWishlist: (req, ctx) => listWishlist(emOf(ctx), me(ctx), req),

        // ADMIN and INTERNAL: the kit's interceptor enforced the policy; the user is the request's.
        getProfile: (req, ctx) => getProfile(emOf(ctx), req.userId),
        listProfiles: (req, ctx) => listProfiles(emOf(ctx), req),
        getAddress: (req, ctx) => getAddress(emOf(ctx), req),
        getDefaultAddress: (req, ctx) => getDefaultAddress(emOf(ctx), req),
        getPaymentMethodToken: (req, ctx) => getPaymentMethodToken(emOf(ctx), cipher, callerOf(ctx), req),
      });
    },
});
