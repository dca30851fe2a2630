/**
 * The Payment part of `npm run bench`: AuthorizePayment through the sandbox
 * (tok_sandbox_success), directly over gRPC with Order's service credential.
 * Every call is a new order with a new idempotency key, so each one pays the
 * whole path: the key row, the payment and its PENDING transaction and
 * payment.initiated in one transaction, the provider call outside it, and the
 * outcome with payment.authorized in a second one.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { developmentServiceSecret } from "../../kit/config.ts";
import type { TestMesh } from "../../kit/testing/mesh.ts";
import type { Bench } from "./run.ts";

export async function paymentBench(bench: Bench, mesh: TestMesh, say: (l: string) => void): Promise<void> {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: mesh.url("auth") }));
  const order = await auth.issueServiceToken({ serviceName: "order", serviceSecret: developmentServiceSecret("order") });
  say("payment: AuthorizePayment through the sandbox, a new order and idempotency key per call");
  await bench.measure({
    scenario: "AuthorizePayment",
    variant: "gRPC sandbox",
    servedByMesh: true,
    target: {
      kind: "rpc",
      protocol: "grpc",
      baseUrl: mesh.url("payment"),
      method: "ecommerce.payment.v1.PaymentService/AuthorizePayment",
      requests: [
        {
          orderId: "$uuid",
          orderNumber: "ORD-BENCH",
          userId: "$uuid",
          amount: { amountMinor: "4999", currencyCode: "EUR" },
          paymentToken: { provider: "sandbox", token: "tok_sandbox_success" },
          idempotencyKey: "$uuid",
        },
      ],
      headers: { authorization: `Bearer ${order.accessToken}` },
    },
  });
}
