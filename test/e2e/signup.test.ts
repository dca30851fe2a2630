/**
 * The first vertical slice, end to end through real processes' code paths:
 * a person registers through the edge, verifies the email, signs in, the
 * user.registered event reaches the User service, and the profile exists and
 * can be updated — with a browser-style Connect client over HTTP/1.1 through
 * the edge, and with @grpc/grpc-js straight to the services as a partner would.
 */
import { create, type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { connect as natsConnect, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService, LoginRequestSchema, LoginResponseSchema } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { UserEmailVerificationRequestedSchema } from "../../gen/ecommerce/auth/v1/events_pb.js";
import { GetMyProfileRequestSchema, GetMyProfileResponseSchema, UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { openSealedField, sealedFieldBinding } from "../../kit/events/sealed.ts";
import { ProductService } from "../../gen/ecommerce/product/v1/product_pb.js";
import { PeerClients } from "../../kit/clients.ts";
import { startEdge, type RunningEdge } from "../../gateway/edge.ts";
import { authService } from "../../services/auth/service.ts";
import { userService } from "../../services/user/service.ts";

let mesh: TestMesh;
let edge: RunningEdge;
let nc: NatsConnection;
let verifications: Subscription;

const viaEdge = () => createConnectTransport({ baseUrl: edge.url, httpVersion: "1.1", useBinaryFormat: false });
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const password = "velvet otter maple drum 4711";
let n = 0;
const newEmail = () => `shopper${Date.now()}${n++}@example.test`;

/** The error of a call that must fail. */
async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

/** The verification token Auth puts on the bus, sealed for the Notification service. */
async function verificationTokenFor(email: string): Promise<string> {
  for await (const m of verifications) {
    const e = fromBinary(UserEmailVerificationRequestedSchema, m.data);
    // Sealed for Notification (the token's only consumer): opened with its event key.
    if (e.email === email) return openSealedField("notification", e.sealedToken, sealedFieldBinding(e.$typeName, "sealed_token", e.userId));
  }
  throw new Error("subscription closed");
}

/** A unary call with @grpc/grpc-js, serialising with the generated schemas (what a partner's stub does). */
function grpcUnary<I extends DescMessage, O extends DescMessage>(
  address: string,
  path: string,
  input: I,
  output: O,
  request: MessageShape<I>,
  metadata = new grpc.Metadata(),
): Promise<MessageShape<O>> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      path,
      (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
      (b: Buffer) => fromBinary(output, b),
      request,
      metadata,
      (error, response) => {
        client.close();
        if (error) reject(error);
        else resolve(response!);
      },
    ),
  );
}

beforeAll(async () => {
  mesh = await startMesh([authService, userService]);
  edge = await startEdge({ port: 0, host: "127.0.0.1", upstreams: { auth: mesh.url("auth"), user: mesh.url("user") }, logLevel: "silent" });
  nc = await natsConnect({ servers: mesh.nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  verifications = nc.subscribe("user.email_verification_requested");
});

afterAll(async () => {
  await nc?.close();
  await edge?.stop();
  await mesh?.stop();
});

describe("sign-up through the edge", () => {
  it("register → verify email → log in → profile appears through the event → update profile", async () => {
    const auth = createClient(AuthService, viaEdge());
    const users = createClient(UserService, viaEdge());
    const email = newEmail();
    const pendingToken = verificationTokenFor(email);

    const registered = await auth.register({ email, password, firstName: "Ada", lastName: "Lovelace" });
    expect(registered.user?.email).toBe(email);
    expect(registered.user?.emailVerified).toBe(false);

    await auth.verifyEmail({ token: await pendingToken });
    const login = await auth.login({ email, password });
    const token = login.tokens!.accessToken;
    const me = await auth.getMe({}, bearer(token));
    expect(me.user?.emailVerified).toBe(true);

    const profile = await eventually(async () => {
      const r = await users.getMyProfile({}, bearer(token)).catch(() => undefined);
      return r?.profile?.emailVerified ? r.profile : undefined;
    }, 15_000, "profile created and verified from auth events");
    expect(profile).toMatchObject({ email, firstName: "Ada", lastName: "Lovelace" });

    const updated = await users.updateMyProfile({ profile: { firstName: "Augusta" }, updateMask: { paths: ["first_name"] } }, bearer(token));
    expect(updated.profile?.firstName).toBe("Augusta");
    expect((await users.getMyProfile({}, bearer(token))).profile?.firstName).toBe("Augusta");
  });

  it("works with @grpc/grpc-js straight to the services, as a partner would", async () => {
    const email = newEmail();
    await createClient(AuthService, viaEdge()).register({ email, password });
    const login = await grpcUnary(
      mesh.url("auth").replace("http://", ""),
      "/ecommerce.auth.v1.AuthService/Login",
      LoginRequestSchema,
      LoginResponseSchema,
      create(LoginRequestSchema, { email, password }),
    );
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${login.tokens!.accessToken}`);
    const profile = await eventually(() =>
      grpcUnary(
        mesh.url("user").replace("http://", ""),
        "/ecommerce.user.v1.UserService/GetMyProfile",
        GetMyProfileRequestSchema,
        GetMyProfileResponseSchema,
        create(GetMyProfileRequestSchema),
        metadata,
      ).catch(() => undefined),
    );
    expect(profile.profile?.email).toBe(email);
    const denied = await grpcUnary(
      mesh.url("user").replace("http://", ""),
      "/ecommerce.user.v1.UserService/GetMyProfile",
      GetMyProfileRequestSchema,
      GetMyProfileResponseSchema,
      create(GetMyProfileRequestSchema),
    ).catch((e: grpc.ServiceError) => e);
    expect((denied as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
  });
});

describe("who may do what, through the edge", () => {
  async function signedIn() {
    const email = newEmail();
    const r = await createClient(AuthService, viaEdge()).register({ email, password });
    return { token: r.tokens!.accessToken, userId: r.user!.id };
  }

  it("keeps user A out of user B's data", async () => {
    const a = await signedIn();
    const b = await signedIn();
    const users = createClient(UserService, viaEdge());
    await eventually(() => users.getMyProfile({}, bearer(b.token)).catch(() => undefined));
    const address = await users.addAddress(
      {
        type: 1,
        postalAddress: { firstName: "B", lastName: "User", addressLine1: "1 Main St", city: "Berlin", countryCode: "DE", postalCode: "10115" },
      },
      bearer(b.token),
    );
    const err = await failure(users.deleteAddress({ addressId: address.address!.id }, bearer(a.token)));
    expect(err).toMatchObject({ code: Code.NotFound });
    expect((await users.listAddresses({}, bearer(b.token))).addresses).toHaveLength(1);
  });

  it("refuses admin RPCs to customers and internal RPCs entirely", async () => {
    const { token, userId } = await signedIn();
    const auth = createClient(AuthService, viaEdge());
    await expect(auth.listUsers({}, bearer(token))).rejects.toMatchObject({ code: Code.PermissionDenied });
    const internal = await failure(createClient(UserService, viaEdge()).getAddress({ userId, addressId: crypto.randomUUID() }, bearer(token)));
    expect(internal.code).toBe(Code.NotFound);
    expect(internal.rawMessage).toMatch(/no RPC is served at/); // refused by the edge, never answered by the service
  });

  it("rejects bad input of every kind and keeps serving", async () => {
    const auth = createClient(AuthService, viaEdge());
    const missing = await failure(auth.register({ email: "", password: "" }));
    expect(missing.code).toBe(Code.InvalidArgument);
    const badEmail = await failure(auth.register({ email: "not-an-email", password }));
    expect(badEmail.code).toBe(Code.InvalidArgument);
    expect(badEmail.rawMessage).toMatch(/email/);
    const wrongType = await fetch(`${edge.url}/ecommerce.auth.v1.AuthService/Login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: 42, password: ["x"] }),
    });
    expect(wrongType.status).toBe(400);
    expect(((await wrongType.json()) as { code: string }).code).toBe("invalid_argument");
    const huge = await failure(auth.register({ email: newEmail(), password: "x".repeat(2 * 1024 * 1024) }));
    expect(huge.code).toBe(Code.ResourceExhausted);
    await expect(auth.getJwks({})).resolves.toMatchObject({ keys: expect.any(Array) });
  });
});

describe("calls between services", () => {
  it("carry a service credential from Auth on INTERNAL RPCs", async () => {
    const r = await createClient(AuthService, viaEdge()).register({ email: newEmail(), password });
    // The user service calling Auth's INTERNAL IntrospectToken: it first obtains its own
    // service token from IssueServiceToken (development secret), then calls with it.
    const answer = await mesh.services.user!.ctx.peers.client(AuthService).introspectToken({ token: r.tokens!.accessToken });
    expect(answer.active).toBe(true);
    expect(answer.claims?.userId).toBe(r.user!.id);
  });

  it("fail with UNAVAILABLE naming the peer when it is down", async () => {
    const peers = new PeerClients({ peers: { ...mesh.services.user!.ctx.config.peers, product: "http://127.0.0.1:9" }, timeoutMs: 1_000 });
    const error = await failure(peers.client(ProductService).getProduct({ lookup: { case: "id", value: crypto.randomUUID() } }));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.rawMessage).toMatch(/^product service unavailable at http:\/\/127.0.0.1:9/);
  });
});

describe("a NATS outage", () => {
  it("still registers, and the profile appears once NATS is back", async () => {
    const email = newEmail();
    await mesh.nats.pause();
    let token: string;
    try {
      const r = await createClient(AuthService, viaEdge()).register({ email, password });
      token = r.tokens!.accessToken;
    } finally {
      await mesh.nats.resume();
    }
    const profile = await eventually(
      () => createClient(UserService, viaEdge()).getMyProfile({}, bearer(token)).catch(() => undefined),
      30_000,
      "profile after NATS returned",
    );
    expect(profile.profile?.email).toBe(email);
  });
});
