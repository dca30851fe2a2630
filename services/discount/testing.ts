/**
 * Test harness of the Discount service: a real server on a throwaway database
 * and a private nats-server (kit/testing), tokens from a TestIssuer instead of
 * Auth, a client per caller (admin, customer, guest, the Cart and Order
 * services), and a reader of DISCOUNT_EVENTS. No peer is started: the engine
 * takes categories from the cart snapshot and calls nobody.
 */
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { CartSnapshotSchema, DiscountService } from "../../gen/ecommerce/discount/v1/discount_pb.js";
import { money } from "../../kit/money.ts";
import { sqlOf } from "../../kit/sql.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { eventsOnStream } from "../../kit/testing/events.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { discountService } from "./service.ts";

export { failure } from "../../kit/testing/failure.ts";

export const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

export interface DiscountHarness {
  mesh: TestMesh;
  issuer: TestIssuer;
  nc: NatsConnection;
  discounts: ReturnType<typeof createClient<typeof DiscountService>>;
  admin: string;
  customer: string;
  customerId: string;
  /** Service credentials of the two INTERNAL callers. */
  cart: string;
  order: string;
  /** Reads Discount's database directly ($n parameters). */
  sql<T extends object>(query: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

export async function startDiscountHarness(env: Record<string, string> = {}): Promise<DiscountHarness> {
  const issuer = new TestIssuer();
  const mesh = await startMesh([issuer.trustedBy(discountService)], env);
  const nc = await natsConnect({ servers: mesh.nats.url });
  const customerId = uuidv7();
  return {
    mesh,
    issuer,
    nc,
    discounts: createClient(DiscountService, createGrpcTransport({ baseUrl: mesh.url("discount") })),
    admin: await issuer.user(uuidv7(), ["customer", "admin"]),
    customer: await issuer.user(customerId),
    customerId,
    cart: await issuer.service("cart"),
    order: await issuer.service("order"),
    sql: <T extends object>(query: string, params: unknown[] = []) => sqlOf(mesh.services.discount!.ctx.orm.em.fork()).all<T>(query, params),
    async stop() {
      await nc.close();
      await mesh.stop();
    },
  };
}

const eur = (amountMinor: bigint, currencyCode = "EUR") => money(amountMinor, currencyCode);

/** A cart snapshot in EUR (or `currency`): lines as [unit price, quantity, init]. */
export function snapshot(
  lines: [bigint, number, { categoryIds?: string[]; productId?: string }?][],
  init: Omit<Exclude<MessageInitShape<typeof CartSnapshotSchema>, { $typeName: string }>, "lines" | "$typeName"> = {},
): Exclude<MessageInitShape<typeof CartSnapshotSchema>, { $typeName: string }> & { currencyCode: string } {
  const currency = init.currencyCode ?? "EUR";
  return {
    currencyCode: currency,
    lines: lines.map(([price, quantity, more], i) => ({ lineId: `line-${i + 1}`, productId: uuidv7(), quantity, unitPrice: eur(price, currency), ...more })),
    ...init,
  };
}

export { eur };

/** Every event of one type currently on DISCOUNT_EVENTS, oldest first. */
export function discountEvents<D extends DescMessage>(h: DiscountHarness, schema: D): Promise<MessageShape<D>[]> {
  return eventsOnStream(h.nc, "DISCOUNT_EVENTS", schema);
}
