/**
 * Test harness of the Shipping service: a real server on a throwaway database
 * and a private nats-server (kit/testing), tokens from a TestIssuer instead of
 * Auth, and a client per caller (admin, customer, guest, the Order service).
 */
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { ShippingService } from "../../gen/ecommerce/shipping/v1/shipping_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { errorFields } from "../../kit/errors.ts";
import { money } from "../../kit/money.ts";
import { startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { shippingService } from "./service.ts";

/** The error of a call that must fail: code, ErrorInfo reason, field and metadata. */
export async function failure(call: Promise<unknown>) {
  const error = await call.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  if (!error) throw new Error("expected the call to fail");
  const info = error.findDetails(ErrorInfoSchema)[0];
  return { code: error.code, reason: info?.reason, field: errorFields(error)[0], metadata: info?.metadata, message: error.rawMessage };
}

export const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

export const eur = (amountMinor: bigint) => money(amountMinor, "EUR");

export interface ShippingHarness {
  mesh: TestMesh;
  shipping: ReturnType<typeof createClient<typeof ShippingService>>;
  admin: string;
  customer: string;
  /** Service credentials of the INTERNAL caller (order) and of a service that is not one. */
  order: string;
  cart: string;
  stop(): Promise<void>;
}

export async function startShippingHarness(env: Record<string, string> = {}): Promise<ShippingHarness> {
  const issuer = new TestIssuer();
  const mesh = await startMesh([issuer.trustedBy(shippingService)], env);
  return {
    mesh,
    shipping: createClient(ShippingService, createGrpcTransport({ baseUrl: mesh.url("shipping") })),
    admin: await issuer.user(uuidv7(), ["customer", "admin"]),
    customer: await issuer.user(uuidv7()),
    order: await issuer.service("order"),
    cart: await issuer.service("cart"),
    stop: () => mesh.stop(),
  };
}

/** An active carrier with one active method (min..max days), created by the admin. */
export async function carrierWithMethod(h: ShippingHarness, code: string, days: [number, number] = [2, 4], methodCode = "standard") {
  const { carrier } = await h.shipping.createCarrier(
    { code, name: `${code.toUpperCase()} Parcel`, trackingUrlTemplate: `https://track.example.com/${code}/{tracking_number}`, isActive: true },
    auth(h.admin),
  );
  const { shippingMethod } = await h.shipping.createShippingMethod(
    { carrierId: carrier!.id, code: methodCode, name: `${methodCode} (${days[0]}-${days[1]} days)`, minDays: days[0], maxDays: days[1], isActive: true },
    auth(h.admin),
  );
  return { carrier: carrier!, method: shippingMethod! };
}
