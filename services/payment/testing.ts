/**
 * Test harness of the Payment service: real User and Payment servers on
 * throwaway databases and a private nats-server (kit/testing), tokens from a
 * TestIssuer instead of Auth, a client per caller (admin, the Order and
 * Returns services, a customer), a signer of sandbox webhooks, a reader of
 * PAYMENT_EVENTS, and a shopper with a profile in User (from Auth's
 * user.registered) for saved payment methods.
 */
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstream } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { file_ecommerce_auth_v1_events, UserRegisteredSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { PaymentService } from "../../gen/ecommerce/payment/v1/payment_pb.js";
import { UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { streamOf, subjectOf } from "../../kit/events/contracts.ts";
import { sqlOf } from "../../kit/sql.ts";
import { eventsOnStream } from "../../kit/testing/events.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import type { IntervalJob } from "../../kit/jobs.ts";
import { signWebhook } from "../../kit/webhooks.ts";
import { userService } from "../user/service.ts";
import { paymentService } from "./service.ts";

export { failure } from "../discount/testing.ts";
export const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

export const webhookSecret = "whsec_test_current_secret_0123456789abcdef";
export const previousWebhookSecret = "whsec_test_previous_secret_0123456789abcdef";

export interface PaymentHarness {
  mesh: TestMesh;
  issuer: TestIssuer;
  nc: NatsConnection;
  payments: ReturnType<typeof createClient<typeof PaymentService>>;
  users: ReturnType<typeof createClient<typeof UserService>>;
  admin: string;
  order: string;
  returns: string;
  /** A shopper with a User profile. */
  registeredUser(): Promise<{ userId: string; token: string }>;
  /** Runs one reconciliation pass now. */
  reconcile(): Promise<void>;
  sql<T extends object>(query: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

export async function startPaymentHarness(env: Record<string, string> = {}): Promise<PaymentHarness> {
  const issuer = new TestIssuer();
  const mesh = await startMesh([userService, paymentService].map((def) => issuer.trustedBy(def)), {
    PAYMENT_SANDBOX_WEBHOOK_SECRET: webhookSecret,
    PAYMENT_SANDBOX_WEBHOOK_PREVIOUS_SECRETS: previousWebhookSecret,
    ...env,
  });
  const nc = await natsConnect({ servers: mesh.nats.url });
  const js = jetstream(nc);
  const authStream = streamOf(file_ecommerce_auth_v1_events);
  await (await js.jetstreamManager()).streams.add({ name: authStream.name, subjects: authStream.subjects }).catch(() => undefined);
  const users = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
  return {
    mesh,
    issuer,
    nc,
    payments: createClient(PaymentService, createGrpcTransport({ baseUrl: mesh.url("payment") })),
    users,
    admin: await issuer.user(uuidv7(), ["customer", "admin"]),
    order: await issuer.service("order"),
    returns: await issuer.service("returns"),
    async registeredUser() {
      const userId = uuidv7();
      const eventId = uuidv7();
      const event = create(UserRegisteredSchema, { eventId, occurredAt: timestampNow(), userId, email: `${userId}@example.test`, firstName: "Ada", lastName: "Lovelace", roles: ["customer"] });
      await js.publish(subjectOf(UserRegisteredSchema), toBinary(UserRegisteredSchema, event), { msgID: eventId });
      const token = await issuer.user(userId, ["customer"], `${userId}@example.test`);
      await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined), 10_000, "profile created");
      return { userId, token };
    },
    reconcile: () => (mesh.services.payment!.jobs.get("payment-reconciliation") as IntervalJob).runNow(),
    sql: <T extends object>(query: string, params: unknown[] = []) => sqlOf(mesh.services.payment!.ctx.orm.em.fork()).all<T>(query, params),
    async stop() {
      await nc.close();
      await mesh.stop();
    },
  };
}

/** A sandbox webhook body (see SandboxProvider.parseEvent), signed with `secrets` at `atMs`. */
export function sandboxWebhook(
  event: { id?: string; type: string; sequence: number; paymentId: string; failureCode?: string },
  secrets: string[] = [webhookSecret],
  atMs = Date.now(),
) {
  const payload = Buffer.from(
    JSON.stringify({ id: event.id ?? `evt_${uuidv7()}`, type: event.type, sequence: event.sequence, data: { payment_id: event.paymentId, failure_code: event.failureCode } }),
  );
  const t = Math.floor(atMs / 1000);
  // One v1 per secret, as a sender rotating its secret signs.
  const [first, ...more] = secrets.map((secret) => signWebhook(payload, secret, t));
  return { provider: "sandbox", payload, signature: [first, ...more.map((h) => h.slice(h.indexOf(",") + 1))].join(",") };
}

export function paymentEvents<D extends DescMessage>(h: PaymentHarness, schema: D): Promise<MessageShape<D>[]> {
  return eventsOnStream(h.nc, "PAYMENT_EVENTS", schema);
}
