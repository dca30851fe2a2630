/**
 * Helpers for Auth's tests: a client, error detail readers, and a collector
 * of the events Auth publishes on the test's NATS (AUTH_EVENTS), read with an
 * ordered JetStream consumer the way a partner would.
 */
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type ConsumerMessages, jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AuthService } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { TokenVerifier } from "../../kit/auth/verifier.ts";
import { errorFields } from "../../kit/errors.ts";
import { subjectOf } from "../../kit/events/contracts.ts";
import { eventually } from "../../kit/testing/mesh.ts";

export type AuthClient = Client<typeof AuthService>;

export function authClient(baseUrl: string): AuthClient {
  return createClient(AuthService, createGrpcTransport({ baseUrl }));
}

export const bearer = (token: string, extra: Record<string, string> = {}) => ({ headers: { authorization: `Bearer ${token}`, ...extra } });

/** The error a call failed with; fails the test when it succeeded. */
export async function failureOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded but was expected to fail");
}

export const reasonOf = (e: ConnectError) => e.findDetails(ErrorInfoSchema)[0]?.reason;
export const fieldOf = (e: ConnectError) => errorFields(e)[0];
export function retryAfterMs(e: ConnectError): number | undefined {
  const delay = e.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return delay ? Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6) : undefined;
}

/** A kit TokenVerifier fed by GetJwks, as every other service verifies tokens. */
export function verifierFor(client: AuthClient): TokenVerifier {
  return new TokenVerifier(async () => (await client.getJwks({})).keys.map((k) => ({ ...k, $typeName: undefined })));
}

export const msOf = (t: Parameters<typeof timestampMs>[0] | undefined) => (t ? timestampMs(t) : undefined);

/** Every message of AUTH_EVENTS since the stream began, decoded on demand. */
export class EventLog {
  private readonly seen: { subject: string; data: Uint8Array }[] = [];
  private messages: ConsumerMessages | undefined;
  private nc: NatsConnection | undefined;

  async start(natsUrl: string): Promise<void> {
    this.nc = await connect({ servers: natsUrl });
    const js = jetstream(this.nc);
    const jsm = await js.jetstreamManager();
    await eventually(() => jsm.streams.info("AUTH_EVENTS").catch(() => undefined), 10_000, "AUTH_EVENTS stream");
    const consumer = await js.consumers.get("AUTH_EVENTS");
    this.messages = await consumer.consume();
    void (async () => {
      for await (const m of this.messages!) this.seen.push({ subject: m.subject, data: m.data });
    })();
  }

  all<D extends DescMessage>(schema: D): MessageShape<D>[] {
    const subject = subjectOf(schema);
    return this.seen.filter((m) => m.subject === subject).map((m) => fromBinary(schema, m.data));
  }

  /** Waits for an event of this type that matches. */
  find<D extends DescMessage>(schema: D, match: (e: MessageShape<D>) => boolean, what = schema.typeName): Promise<MessageShape<D>> {
    return eventually(async () => this.all(schema).find(match), 10_000, what);
  }

  async stop(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
    await this.nc?.close();
  }
}
