/**
 * What callers see when a call fails, through the public contract of real
 * servers (Auth, User, Product on PostgreSQL and a private nats-server):
 *
 * - error details are googleapis' standard google.rpc types, decodable by a
 *   partner from the raw `grpc-status-details-bin` trailer (@grpc/grpc-js, as
 *   grpcio-status does) and by Connect's findDetails;
 * - text no service can store (NUL, other control characters) is refused at
 *   validation for every RPC, naming the field.
 */
import { create, type DescMessage, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyUnpack, StructSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService, RegisterRequestSchema, RegisterResponseSchema } from "../../gen/ecommerce/auth/v1/auth_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { ReviewService } from "../../gen/ecommerce/product/v1/review_pb.js";
import { SearchService } from "../../gen/ecommerce/product/v1/search_pb.js";
import { AddressType, UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { BadRequestSchema, ErrorInfoSchema, ResourceInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { errorFields, errorReason } from "../../kit/errors.ts";
import type { ServiceDefinition } from "../../kit/server.ts";
import { textViolations } from "../../kit/validation.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { authService } from "../../services/auth/service.ts";
import { productService } from "../../services/product/service.ts";
import { userService } from "../../services/user/service.ts";

const issuer = new TestIssuer();
let mesh: TestMesh;
let admin: string;
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const password = "velvet otter maple drum 4711";
let n = 0;
const newEmail = () => `errors${Date.now()}${n++}@example.test`;



const grpcTo = (name: "auth" | "user" | "product") => createGrpcTransport({ baseUrl: mesh.url(name) });
const auth = () => createClient(AuthService, grpcTo("auth"));
const users = () => createClient(UserService, grpcTo("user"));

async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

/** A unary call with @grpc/grpc-js that must fail; returns the partner's view of the error. */
function grpcFailure<I extends DescMessage, O extends DescMessage>(
  name: "auth" | "user" | "product",
  path: string,
  input: I,
  output: O,
  request: MessageInitShape<I>,
): Promise<grpc.ServiceError> {
  const client = new grpc.Client(mesh.url(name).replace("http://", ""), grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      path,
      (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
      (b: Buffer) => fromBinary(output, b),
      create(input, request),
      new grpc.Metadata(),
      (error) => {
        client.close();
        if (error) resolve(error);
        else reject(new Error(`${path} succeeded but was expected to fail`));
      },
    ),
  );
}

/** What grpcio-status's rpc_status.from_call does: the trailer's bytes as google.rpc.Status. */
function statusOf(error: grpc.ServiceError) {
  const raw = error.metadata.get("grpc-status-details-bin");
  expect(raw, "grpc-status-details-bin trailer").toHaveLength(1);
  return fromBinary(StatusSchema, raw[0] as Buffer);
}

/** A customer with a profile: registered through Auth, profile created by User from user.registered. */
async function customer() {
  const email = newEmail();
  const { user } = await auth().register({ email, password, firstName: "Ada", lastName: "Lovelace" });
  const token = await issuer.user(user!.id, ["customer"], email);
  await eventually(() => users().getMyProfile({}, bearer(token)).catch(() => undefined), 15_000, "profile created");
  return { userId: user!.id, email, token };
}

beforeAll(async () => {
  mesh = await startMesh([authService, userService, productService].map((def) => issuer.trustedBy(def)));
  admin = await issuer.user(uuidv7(), ["customer", "admin"]);
}, 120_000);

afterAll(async () => {
  await mesh?.stop();
});

describe("error details are standard google.rpc types", () => {
  it("a partner decodes the raw grpc-status-details-bin trailer as google.rpc.Status with ErrorInfo and one BadRequest violation per field", async () => {
    const error = await grpcFailure("auth", "/ecommerce.auth.v1.AuthService/Register", RegisterRequestSchema, RegisterResponseSchema, {
      email: "not-an-email",
      password: "short",
    });
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    const status = statusOf(error);
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.BadRequest"]);
    const info = anyUnpack(status.details[0]!, ErrorInfoSchema)!;
    expect(info).toMatchObject({ reason: "INVALID_ARGUMENT", domain: "ecommerce.auth.v1" });
    const bad = anyUnpack(status.details[1]!, BadRequestSchema)!;
    expect(bad.fieldViolations.map((v) => v.field)).toEqual(["email", "password"]);
    for (const v of bad.fieldViolations) expect(v.description).not.toBe("");
  });

  it("Connect's findDetails reads ErrorInfo (domain = the package) and ResourceInfo on NOT_FOUND", async () => {
    const id = uuidv7();
    const error = await failure(auth().getUser({ userId: id }, bearer(admin)));
    expect(error.code).toBe(Code.NotFound);
    expect(error.findDetails(ErrorInfoSchema)).toMatchObject([{ reason: "USER_NOT_FOUND", domain: "ecommerce.auth.v1" }]);
    expect(error.findDetails(ResourceInfoSchema)).toMatchObject([{ resourceType: "user", resourceName: id }]);
    expect(errorReason(error)).toBe("USER_NOT_FOUND");
  });

  it("names each service's own package as the domain, for handler errors and the kit's alike", async () => {
    const unauthenticated = await failure(users().getMyProfile({}));
    expect(unauthenticated.findDetails(ErrorInfoSchema)[0]?.domain).toBe("ecommerce.user.v1");
    const invalid = await failure(createClient(ProductService, grpcTo("product")).getProduct({ lookup: { case: "id", value: "nope" } }));
    expect(invalid.findDetails(ErrorInfoSchema)[0]?.domain).toBe("ecommerce.product.v1");
    expect(errorFields(invalid)).toEqual(["id"]);
  });
});

describe("text no service can store", () => {
  it("Register with a NUL in first_name is refused naming the field, and creates no account", async () => {
    const email = newEmail();
    const error = await failure(auth().register({ email, password, firstName: "Ada\u0000" }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(errorFields(error)).toEqual(["first_name"]);
    expect(error.rawMessage).toMatch(/first_name: contains the control character U\+0000/);
    await expect(auth().login({ email, password })).rejects.toMatchObject({ code: Code.Unauthenticated });
    // The address is still free: the same registration without the NUL succeeds.
    await expect(auth().register({ email, password, firstName: "Ada" })).resolves.toMatchObject({ user: { email } });
  });

  it("the six RPCs that answered 500 for a NUL answer INVALID_ARGUMENT naming the field", async () => {
    const me = await customer();
    const { product } = await createClient(ProductService, grpcTo("product")).createProduct(
      { sku: `SKU-${uuidv7()}`, name: "Lamp", price: { amountMinor: 1999n, currencyCode: "USD" }, status: ProductStatus.ACTIVE, isVisible: true },
      bearer(admin),
    );
    // Thunks: each call starts only when its turn comes.
    const calls: [string, () => Promise<unknown>, string][] = [
      ["SearchProducts", () => createClient(SearchService, grpcTo("product")).searchProducts({ query: "lamp\u0000" }), "query"],
      [
        "AddAddress",
        () =>
          users().addAddress(
          {
            type: AddressType.SHIPPING,
            postalAddress: { firstName: "Ada\u0000", lastName: "Lovelace", addressLine1: "1 Main St", city: "Berlin", countryCode: "DE", postalCode: "10115" },
          },
          bearer(me.token),
        ),
        "postal_address.first_name",
      ],
      ["UpdateMyProfile", () => users().updateMyProfile({ profile: { lastName: "Love\u0000lace" }, updateMask: { paths: ["last_name"] } }, bearer(me.token)), "profile.last_name"],
      ["SetPreferences", () => users().setPreferences({ preferences: { "ui.theme": "dark\u0000" } }, bearer(me.token)), 'preferences["ui.theme"]'],
      [
        "CreateReview",
        () => createClient(ReviewService, grpcTo("product")).createReview({ productId: product!.id, rating: 5, title: "Bright", comment: "good\u0000" }, bearer(me.token)),
        "comment",
      ],
      ["ListUsers", () => auth().listUsers({ emailContains: "ada\u0000" }, bearer(admin)), "email_contains"],
    ];
    for (const [rpc, call, field] of calls) {
      const error = await failure(call());
      expect([rpc, error.code, errorFields(error)]).toEqual([rpc, Code.InvalidArgument, [field]]);
    }
    // Nothing was stored meanwhile, and ordinary text with tab and line breaks still is.
    expect((await users().listAddresses({}, bearer(me.token))).addresses).toEqual([]);
    const ok = await createClient(ReviewService, grpcTo("product")).createReview(
      { productId: product!.id, rating: 5, title: "Bright", comment: "good\tlight\r\nno flicker" },
      bearer(me.token),
    );
    expect(ok.review?.comment).toBe("good\tlight\r\nno flicker");
  });

  it("refuses other C0/C1 controls and map keys, one violation per field; no unpaired surrogate gets through", async () => {
    const me = await customer();
    const bell = await failure(users().updateMyProfile({ profile: { firstName: "A\u0007" }, updateMask: { paths: ["first_name"] } }, bearer(me.token)));
    expect(errorFields(bell)).toEqual(["profile.first_name"]);
    const nel = await failure(createClient(SearchService, grpcTo("product")).searchProducts({ query: "a\u0085b" }));
    expect(errorFields(nel)).toEqual(["query"]);
    const key = await failure(users().setPreferences({ preferences: { "ui\u0000": "dark", "ui.ok": "fine" } }, bearer(me.token)));
    expect(key.code).toBe(Code.InvalidArgument);
    expect(errorFields(key)).toEqual(['preferences["ui\\u0000"]']);
    const tags = await failure(
      createClient(ProductService, grpcTo("product")).setProductTags({ productId: uuidv7(), tags: ["lamp", "desk\u001b[31m"] }, bearer(admin)),
    );
    expect([tags.code, errorFields(tags)]).toEqual([Code.InvalidArgument, ["tags[1]"]]);
    // Two bad fields, one violation each, in one answer.
    const two = await failure(
      users().updateMyProfile({ profile: { firstName: "A\u0000", lastName: "B\u0001" }, updateMask: { paths: ["first_name", "last_name"] } }, bearer(me.token)),
    );
    expect(errorFields(two)).toEqual(["profile.first_name", "profile.last_name"]);
    // An unpaired surrogate (the JSON escape "\ud800") never reaches a handler: the JSON decoder refuses it.
    const body = (await fetch(`${mesh.url("user")}/ecommerce.user.v1.UserService/UpdateMyProfile`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${me.token}` },
      body: '{"profile": {"firstName": "A\\ud800"}, "updateMask": "firstName"}',
    }).then((r) => r.json())) as { code: string; message: string };
    expect(body).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/first_name/) });
    const json = createClient(UserService, createConnectTransport({ baseUrl: mesh.url("user"), httpVersion: "1.1", useBinaryFormat: false }));
    // A well-formed pair (an emoji) is text like any other.
    const emoji = await json.updateMyProfile({ profile: { firstName: "Ada \ud83d\ude00" }, updateMask: { paths: ["first_name"] } }, bearer(me.token));
    expect(emoji.profile?.firstName).toBe("Ada \u{1F600}");
  });
});

describe("the text check itself", () => {
  it("walks nested messages, oneofs, lists and map keys and values, recursive types included", () => {
    const struct = create(StructSchema, {
      fields: {
        "bad\u0000key": { kind: { case: "stringValue", value: "fine" } },
        list: { kind: { case: "listValue", value: { values: [{ kind: { case: "stringValue", value: "ok" } }, { kind: { case: "stringValue", value: "x\u009b" } }] } } },
        nested: { kind: { case: "structValue", value: { fields: { deep: { kind: { case: "stringValue", value: "\u0000" } } } } } },
        text: { kind: { case: "stringValue", value: "tab\tline\nreturn\r emoji \u{1F600} accents é" } },
      },
    });
    expect(textViolations(StructSchema, struct).map((v) => v.field)).toEqual([
      'fields["bad\\u0000key"]',
      'fields["list"].list_value.values[1].string_value',
      'fields["nested"].struct_value.fields["deep"].string_value',
    ]);
    expect(textViolations(StructSchema, create(StructSchema, { fields: { a: { kind: { case: "numberValue", value: 1 } } } }))).toEqual([]);
  });
});
