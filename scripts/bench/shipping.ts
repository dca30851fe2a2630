/**
 * The Shipping part of `npm run bench`: GetShippingRates (PUBLIC, a guest's cart page)
 * over the demo rates `npm run seed` loads (one carrier, two methods, five rates), through
 * the edge and directly. Each call is one BatchGetProducts at Product (the item weights;
 * the bench's product is not in the catalog, so its declared weight counts) and one
 * rate-selection statement.
 */
import { seedShipping } from "../../services/shipping/seed.ts";
import type { TestMesh } from "../../kit/testing/mesh.ts";
import type { Bench } from "./run.ts";

export async function shippingBench(bench: Bench, mesh: TestMesh, edgeUrl: string, say: (l: string) => void): Promise<void> {
  say("shipping: the demo carrier and rates for GetShippingRates");
  await seedShipping(mesh.services.shipping!.ctx.config.databaseUrl);
  const getShippingRates = {
    method: "ecommerce.shipping.v1.ShippingService/GetShippingRates",
    requests: [
      {
        destination: { countryCode: "US" },
        items: [{ productId: "01940000-0000-7000-8000-000000000001", quantity: 2, weightGrams: 450 }],
        subtotal: { amountMinor: "5000", currencyCode: "USD" },
        currencyCode: "USD",
      },
    ],
    headers: {},
  };
  await bench.measure({ scenario: "GetShippingRates", variant: "gRPC direct", servedByMesh: true, target: { kind: "rpc", protocol: "grpc", baseUrl: mesh.url("shipping"), ...getShippingRates } });
  await bench.measure({ scenario: "GetShippingRates", variant: "via edge", servedByMesh: true, target: { kind: "rpc", protocol: "connect", baseUrl: edgeUrl, ...getShippingRates } });
}
