/**
 * Every service's entities agree with the database its committed migrations build:
 * the ORM never reads or writes a column that is missing, of another type or
 * nullability, and never leaves out a NOT NULL column it would have to insert.
 */
import { afterAll, describe, expect, it } from "vitest";
import { createLogger } from "../kit/logger.ts";
import { openServiceDatabase, type AnyServiceDefinition } from "../kit/server.ts";
import { TestDatabases } from "../kit/testing/infra.ts";
import { schemaDrift } from "../kit/testing/schema-drift.ts";
import { authService } from "../services/auth/service.ts";
import { cartService } from "../services/cart/service.ts";
import { discountService } from "../services/discount/service.ts";
import { orderService } from "../services/order/service.ts";
import { productService } from "../services/product/service.ts";
import { paymentService } from "../services/payment/service.ts";
import { shippingService } from "../services/shipping/service.ts";
import { userService } from "../services/user/service.ts";
import { notificationService } from "../services/notification/service.ts";

const services: AnyServiceDefinition[] = [authService, userService, productService, cartService, discountService, paymentService, shippingService, orderService, notificationService];
const dbs = new TestDatabases();
afterAll(() => dbs.dropAll());

describe("entities and migrations", () => {
  for (const def of services) {
    it(`${def.name}: the entities match the migrated schema`, async () => {
      const orm = await openServiceDatabase(def, dbs.url(def.name), createLogger(def.name, "silent"));
      try {
        expect(await schemaDrift(orm)).toEqual([]);
      } finally {
        await orm.close();
      }
    });
  }
});
