/**
 * The User service against a real server, PostgreSQL and a private
 * nats-server. Auth is not started: its events are published onto AUTH_EVENTS
 * as Auth would (Nats-Msg-Id = event id, binary protobuf), and callers' tokens
 * come from a TestIssuer. The Product service runs beside it because
 * AddToWishlist checks the product (snapshots: wishlist.test.ts).
 */
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DeadLetterService } from "../../gen/ecommerce/common/v1/dead_letter_pb.js";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  file_ecommerce_auth_v1_events,
  UserDeletedSchema,
  UserEmailVerifiedSchema,
  UserLoggedInSchema,
  UserReactivatedSchema,
  UserRegisteredSchema,
} from "../../gen/ecommerce/auth/v1/events_pb.js";
import { type UserUpdated, UserUpdatedSchema } from "../../gen/ecommerce/user/v1/events_pb.js";
import { ProductService, ProductStatus } from "../../gen/ecommerce/product/v1/product_pb.js";
import { AddressType, Gender, UserService } from "../../gen/ecommerce/user/v1/user_pb.js";
import { CardBrand, PaymentMethodType } from "../../gen/ecommerce/common/v1/payment_method_pb.js";
import { sqlOf } from "../../kit/sql.ts";
import { captureQueries, installSqlCounter } from "../../scripts/bench/meter.ts";
import { streamOf, subjectOf } from "../../kit/events/contracts.ts";
import type { ServiceDefinition } from "../../kit/server.ts";
import { eventually, startMesh, type TestMesh } from "../../kit/testing/mesh.ts";
import { eventsOnStream } from "../../kit/testing/events.ts";
import { TestIssuer } from "../../kit/testing/tokens.ts";
import { dataKeyId, developmentUserDataKey } from "./config.ts";
import { productService } from "../product/service.ts";
import { userService } from "./service.ts";
import { TokenCipher, tokenBinding } from "./token-cipher.ts";
import { randomBytes } from "node:crypto";
import { failure } from "../../kit/testing/failure.ts";

const issuer = new TestIssuer();
let mesh: TestMesh;
let nc: NatsConnection;
let js: JetStreamClient;
let users: ReturnType<typeof createClient<typeof UserService>>;
let products: ReturnType<typeof createClient<typeof ProductService>>;

const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

async function sql<T extends object>(query: string, params: unknown[] = []): Promise<T[]> {
  return sqlOf(mesh.services.user!.ctx.orm.em.fork()).all<T>(query, params);
}

/** Publishes an Auth event the way Auth's outbox relay does. */
async function publishAuth<D extends DescMessage>(schema: D, init: Omit<MessageInitShape<D>, "eventId" | "occurredAt">, opts: { eventId?: string; msgId?: string; at?: Date } = {}) {
  const eventId = opts.eventId ?? uuidv7();
  const message = create(schema, { ...init, eventId, occurredAt: timestampFromDate(opts.at ?? new Date()) } as unknown as MessageInitShape<D>);
  const payload = toBinary(schema, message);
  await js.publish(subjectOf(schema), payload, { msgID: opts.msgId ?? eventId });
  return { eventId, payload };
}

/** A registered user with a profile and a customer token. */
async function registeredUser(init: { firstName?: string; lastName?: string; email?: string } = {}) {
  const userId = uuidv7();
  const email = init.email ?? `${userId}@example.test`;
  await publishAuth(UserRegisteredSchema, { userId, email, firstName: init.firstName ?? "Ada", lastName: init.lastName ?? "Lovelace", roles: ["customer"] });
  const token = await issuer.user(userId, ["customer"], email);
  await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined), 10_000, "profile created");
  return { userId, email, token };
}


/** Every user.updated for a user currently on USER_EVENTS, oldest first. */
async function userUpdatedFor(userId: string): Promise<UserUpdated[]> {
  return (await eventsOnStream(nc, "USER_EVENTS", UserUpdatedSchema)).filter((e) => e.userId === userId);
}

const postal = (over: Record<string, string> = {}) => ({
  firstName: "Ada",
  lastName: "Lovelace",
  addressLine1: "Unter den Linden 1",
  city: "Berlin",
  postalCode: "10117",
  countryCode: "DE",
  ...over,
});

const card = (over: Record<string, unknown> = {}) => ({
  type: PaymentMethodType.CREDIT_CARD,
  providerToken: `tok_sandbox_${randomBytes(8).toString("hex")}`,
  cardBrand: CardBrand.VISA,
  last4: "4242",
  expiryMonth: 12,
  expiryYear: new Date().getUTCFullYear() + 3,
  ...over,
});

beforeAll(async () => {
  mesh = await startMesh([productService, userService].map((def) => issuer.trustedBy(def)), { EVENT_MAX_DELIVERIES: "3" });
  nc = await natsConnect({ servers: mesh.nats.url });
  js = jetstream(nc);
  const authStream = streamOf(file_ecommerce_auth_v1_events);
  await (await js.jetstreamManager()).streams.add({ name: authStream.name, subjects: authStream.subjects }).catch(() => undefined);
  users = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
  products = createClient(ProductService, createGrpcTransport({ baseUrl: mesh.url("product") }));
});

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
});

describe("profiles from Auth's events", () => {
  it("creates a profile from user.registered, visible through GetMyProfile", async () => {
    const userId = uuidv7();
    await publishAuth(UserRegisteredSchema, {
      userId,
      email: "grace@example.test",
      firstName: "Grace",
      lastName: "Hopper",
      preferredLanguage: "en-US",
      newsletterSubscribed: true,
      roles: ["customer"],
    });
    const token = await issuer.user(userId);
    const { profile } = await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined), 10_000, "profile");
    expect(profile).toMatchObject({
      userId,
      email: "grace@example.test",
      firstName: "Grace",
      lastName: "Hopper",
      preferredLanguage: "en-US",
      newsletterSubscribed: true,
      isActive: true,
      emailVerified: false,
    });
    expect(profile?.lastLoginAt).toBeUndefined();
  });

  it("answers NOT_FOUND PROFILE_NOT_FOUND before the profile exists", async () => {
    const token = await issuer.user(uuidv7());
    expect(await failure(users.getMyProfile({}, auth(token)))).toMatchObject({ code: Code.NotFound, reason: "PROFILE_NOT_FOUND" });
    expect(await failure(users.listAddresses({}, auth(token)))).toMatchObject({ code: Code.NotFound, reason: "PROFILE_NOT_FOUND" });
  });

  it("creates one profile when the same event arrives twice under different Nats-Msg-Ids", async () => {
    const userId = uuidv7();
    const { eventId, payload } = await publishAuth(UserRegisteredSchema, { userId, email: `${userId}@example.test` });
    await js.publish("user.registered", payload, { msgID: uuidv7() });
    const token = await issuer.user(userId);
    await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined));
    // Both deliveries are handled (or deduplicated) before the inbox is read.
    await eventually(async () => {
      const info = await (await js.jetstreamManager()).consumers.info("AUTH_EVENTS", "user_AUTH_EVENTS");
      return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
    });
    const [profiles] = await sql<{ n: number }>("select count(*)::int as n from user_profiles where user_id = $1", [userId]);
    const inbox = await sql<{ processed: boolean }>("select processed from user_event_logs where event_id = $1 and source = 'create-profile'", [eventId]);
    expect(profiles?.n).toBe(1);
    expect(inbox).toEqual([{ processed: true }]);
  });

  it("syncs email_verified, deleted, reactivated and logged_in, announcing profile facts with user.updated", async () => {
    const { userId, email, token } = await registeredUser();
    const loginAt = new Date(Date.now() - 60_000);
    await publishAuth(UserEmailVerifiedSchema, { userId, email });
    await publishAuth(UserLoggedInSchema, { userId }, { at: loginAt });
    const synced = await eventually(async () => {
      const { profile } = await users.getMyProfile({}, auth(token));
      return profile?.emailVerified && profile.lastLoginAt ? profile : undefined;
    });
    expect(synced.lastLoginAt?.seconds).toBe(BigInt(Math.floor(loginAt.getTime() / 1000)));

    const deactivatedAt = new Date();
    await publishAuth(UserDeletedSchema, { userId, email, reason: "fraud check", deactivatedBy: uuidv7() }, { at: deactivatedAt });
    await eventually(async () => ((await users.getMyProfile({}, auth(token))).profile?.isActive === false ? true : undefined));

    // A reactivation older than the deactivation (published late, e.g. by a replayed dead letter) does not undo it.
    await publishAuth(UserReactivatedSchema, { userId, email }, { at: new Date(deactivatedAt.getTime() - 5_000) });
    await eventually(async () => {
      const info = await (await js.jetstreamManager()).consumers.info("AUTH_EVENTS", "user_AUTH_EVENTS");
      return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
    });
    expect((await users.getMyProfile({}, auth(token))).profile?.isActive).toBe(false);
    await publishAuth(UserReactivatedSchema, { userId, email });
    await eventually(async () => ((await users.getMyProfile({}, auth(token))).profile?.isActive ? true : undefined));

    const events = await eventually(async () => {
      const list = await userUpdatedFor(userId);
      return list.length >= 3 ? list : undefined;
    });
    expect(events.map((e) => e.changedFields)).toEqual([["email_verified"], ["is_active"], ["is_active"]]);
    expect(events.map((e) => e.isActive)).toEqual([true, false, true]);
    expect(events[0]).toMatchObject({ email, emailVerified: true, firstName: "Ada" });
  });

  it("dead-letters an event published before user.registered, moves on, and applies it on replay", async () => {
    const userId = uuidv7();
    const loginAt = new Date();
    const { eventId } = await publishAuth(UserLoggedInSchema, { userId }, { at: loginAt });
    await publishAuth(UserRegisteredSchema, { userId, email: `${userId}@example.test` });
    const token = await issuer.user(userId);
    // Events are handled in stream order: the sign-in is retried in place (EVENT_MAX_DELIVERIES), then set aside.
    const profile = await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined), 15_000, "profile after the dead letter");
    expect(profile.profile?.lastLoginAt).toBeUndefined();
    const admin = await issuer.user(uuidv7(), ["admin"]);
    const dlq = createClient(DeadLetterService, createGrpcTransport({ baseUrl: mesh.url("user") }));
    const letter = (await dlq.listDeadLetters({}, auth(admin))).deadLetters.find((d) => d.eventId === eventId);
    expect(letter).toMatchObject({ consumer: "sync-last-login", deliveryCount: 3 });
    await dlq.replayDeadLetter({ id: letter!.id }, auth(admin));
    const replayed = (await users.getMyProfile({}, auth(token))).profile;
    expect(replayed?.lastLoginAt?.seconds).toBe(BigInt(Math.floor(loginAt.getTime() / 1000)));
  });
});

describe("UpdateMyProfile", () => {
  it("changes the masked fields only and publishes user.updated with changed_fields", async () => {
    const { userId, token } = await registeredUser({ firstName: "Ada", lastName: "Lovelace" });
    const res = await users.updateMyProfile(
      {
        profile: { firstName: "Augusta", lastName: "ignored", phone: "+4930123456", gender: Gender.FEMALE, dateOfBirth: "1815-12-10", preferredCurrency: "EUR" },
        updateMask: { paths: ["first_name", "phone", "gender", "date_of_birth", "preferred_currency"] },
      },
      auth(token),
    );
    expect(res.profile).toMatchObject({ firstName: "Augusta", lastName: "Lovelace", phone: "+4930123456", gender: Gender.FEMALE, dateOfBirth: "1815-12-10", preferredCurrency: "EUR" });
    expect((await users.getMyProfile({}, auth(token))).profile).toMatchObject({ firstName: "Augusta", lastName: "Lovelace", dateOfBirth: "1815-12-10" });

    // Clearing through the mask, and a no-op update that publishes nothing.
    await users.updateMyProfile({ profile: { phone: "" }, updateMask: { paths: ["phone"] } }, auth(token));
    await users.updateMyProfile({ profile: { firstName: "Augusta" }, updateMask: { paths: ["first_name"] } }, auth(token));
    expect((await users.getMyProfile({}, auth(token))).profile?.phone).toBe("");

    // A change after the no-op is the barrier: events arrive in order, so had the no-op
    // published, its event would stand before the barrier's.
    await users.updateMyProfile({ profile: { lastName: "Byron" }, updateMask: { paths: ["last_name"] } }, auth(token));
    const events = await eventually(async () => {
      const list = await userUpdatedFor(userId);
      return list.some((e) => e.lastName === "Byron") ? list : undefined;
    });
    expect(events.map((e) => e.changedFields)).toEqual([["first_name", "phone", "date_of_birth", "gender", "preferred_currency"], ["phone"], ["last_name"]]);
    expect(events[0]).toMatchObject({ userId, firstName: "Augusta", lastName: "Lovelace", phone: "+4930123456", preferredCurrency: "EUR", isActive: true });
  });

  it("rejects bad input with INVALID_ARGUMENT naming the field", async () => {
    const { token } = await registeredUser();
    const update = (profile: Record<string, unknown>, paths: string[]) => failure(users.updateMyProfile({ profile, updateMask: { paths } }, auth(token)));
    expect(await update({ dateOfBirth: "2001-02-30" }, ["date_of_birth"])).toMatchObject({ code: Code.InvalidArgument, field: "profile.date_of_birth" });
    expect(await update({ dateOfBirth: `${new Date().getUTCFullYear() + 1}-01-01` }, ["date_of_birth"])).toMatchObject({
      code: Code.InvalidArgument,
      field: "profile.date_of_birth",
    });
    expect(await update({ preferredCurrency: "JPY" }, ["preferred_currency"])).toMatchObject({
      code: Code.InvalidArgument,
      reason: "UNSUPPORTED_CURRENCY",
      field: "profile.preferred_currency",
    });
    expect(await update({ phone: "030 123" }, ["phone"])).toMatchObject({ code: Code.InvalidArgument, field: "profile.phone" });
    expect(await update({ email: "new@example.test" }, ["email"])).toMatchObject({ code: Code.InvalidArgument, field: "update_mask" });
    expect(await update({ firstName: "X" }, [])).toMatchObject({ code: Code.InvalidArgument, field: "update_mask" });
  });
});

describe("addresses", () => {
  it("keeps one default per purpose, in code and in the database, through AddAddress and SetDefaultAddress", async () => {
    const { userId, token } = await registeredUser();
    const shipping = (await users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal() }, auth(token))).address!;
    const billing = (await users.addAddress({ type: AddressType.BILLING, postalAddress: postal({ city: "Hamburg" }) }, auth(token))).address!;
    const both = (await users.addAddress({ type: AddressType.BOTH, postalAddress: postal({ city: "Munich" }) }, auth(token))).address!;
    expect([shipping.isDefaultShipping, billing.isDefaultBilling, both.isDefaultShipping, both.isDefaultBilling]).toEqual([true, true, false, false]);

    const set = await users.setDefaultAddress({ addressId: both.id, type: AddressType.BOTH }, auth(token));
    expect(set.address).toMatchObject({ isDefaultShipping: true, isDefaultBilling: true });
    await users.setDefaultAddress({ addressId: both.id, type: AddressType.BOTH }, auth(token)); // idempotent
    await users.setDefaultAddress({ addressId: shipping.id, type: AddressType.SHIPPING }, auth(token));

    const list = (await users.listAddresses({}, auth(token))).addresses;
    expect(list.map((a) => [a.id, a.isDefaultShipping, a.isDefaultBilling])).toEqual([
      [shipping.id, true, false],
      [both.id, false, true],
      [billing.id, false, false],
    ]);
    const defaults = await sql<{ s: number; b: number }>(
      "select count(*) filter (where is_default_shipping)::int as s, count(*) filter (where is_default_billing)::int as b from user_addresses where user_id = $1",
      [userId],
    );
    expect(defaults).toEqual([{ s: 1, b: 1 }]);
    // The partial unique index refuses a second default even when code does not stop it.
    await expect(sql("update user_addresses set is_default_shipping = true where id = $1", [both.id])).rejects.toThrow(/user_addresses_one_default_shipping/);

    expect(await failure(users.setDefaultAddress({ addressId: billing.id, type: AddressType.SHIPPING }, auth(token)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "ADDRESS_TYPE_MISMATCH",
    });
    expect((await users.listAddresses({ type: AddressType.BILLING }, auth(token))).addresses.map((a) => a.id).sort()).toEqual([billing.id, both.id].sort());

    // Changing the type away from a purpose drops that default; deleting a default promotes nothing.
    const changed = await users.updateAddress({ address: { id: both.id, type: AddressType.SHIPPING }, updateMask: { paths: ["type"] } }, auth(token));
    expect(changed.address).toMatchObject({ type: AddressType.SHIPPING, isDefaultBilling: false });
    const moved = await users.updateAddress(
      { address: { id: both.id, postalAddress: postal({ city: "Potsdam", postalCode: "14467" }) }, updateMask: { paths: ["postal_address"] } },
      auth(token),
    );
    expect(moved.address).toMatchObject({ type: AddressType.SHIPPING, postalAddress: { city: "Potsdam", postalCode: "14467", company: "" } });
    await users.deleteAddress({ addressId: shipping.id }, auth(token));
    expect((await users.listAddresses({}, auth(token))).addresses.some((a) => a.isDefaultShipping)).toBe(false);
  });

  it("keeps exactly one default per purpose when defaults change concurrently, without server errors", async () => {
    const { userId, token } = await registeredUser();
    const existing = await Promise.all(
      ["Berlin", "Hamburg", "Munich", "Cologne"].map(async (city) => (await users.addAddress({ type: AddressType.BOTH, postalAddress: postal({ city }) }, auth(token))).address!),
    );
    const calls = [
      ...existing.map((a, i) => users.setDefaultAddress({ addressId: a.id, type: i % 2 ? AddressType.SHIPPING : AddressType.BOTH }, auth(token))),
      ...["Dresden", "Leipzig", "Bremen"].map((city) => users.addAddress({ type: AddressType.BOTH, postalAddress: postal({ city }), setAsDefault: true }, auth(token))),
      users.setDefaultAddress({ addressId: existing[0]!.id, type: AddressType.BILLING }, auth(token)),
    ];
    const outcomes = await Promise.allSettled(calls);
    // Each call either succeeds or is refused cleanly (ABORTED: retry); never INTERNAL or UNKNOWN.
    const codes = outcomes.flatMap((o) => (o.status === "rejected" ? [ConnectError.from(o.reason).code] : []));
    expect(codes.filter((c) => c !== Code.Aborted)).toEqual([]);
    expect(outcomes.filter((o) => o.status === "fulfilled").length).toBeGreaterThan(0);
    const defaults = await sql<{ s: number; b: number }>(
      "select count(*) filter (where is_default_shipping)::int as s, count(*) filter (where is_default_billing)::int as b from user_addresses where user_id = $1",
      [userId],
    );
    expect(defaults).toEqual([{ s: 1, b: 1 }]);
    const listed = (await users.listAddresses({}, auth(token))).addresses;
    expect([listed.filter((a) => a.isDefaultShipping).length, listed.filter((a) => a.isDefaultBilling).length]).toEqual([1, 1]);
  });

  it("rejects an unassigned country code and other bad addresses with INVALID_ARGUMENT naming the field", async () => {
    const { token } = await registeredUser();
    expect(await failure(users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal({ countryCode: "XX" }) }, auth(token)))).toMatchObject({
      code: Code.InvalidArgument,
      reason: "UNSUPPORTED_COUNTRY",
      field: "postal_address.country_code",
    });
    expect(await failure(users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal({ countryCode: "de" }) }, auth(token)))).toMatchObject({
      code: Code.InvalidArgument,
      field: "postal_address.country_code",
    });
    expect(await failure(users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal({ city: "" }) }, auth(token)))).toMatchObject({
      code: Code.InvalidArgument,
      field: "postal_address.city",
    });
    expect(await failure(users.addAddress({ type: AddressType.UNSPECIFIED, postalAddress: postal() }, auth(token)))).toMatchObject({
      code: Code.InvalidArgument,
      field: "type",
    });
    const { address } = await users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal() }, auth(token));
    expect(
      await failure(users.updateAddress({ address: { id: address!.id, postalAddress: postal({ countryCode: "ZZ" }) }, updateMask: { paths: ["postal_address"] } }, auth(token))),
    ).toMatchObject({ code: Code.InvalidArgument, reason: "UNSUPPORTED_COUNTRY", field: "address.postal_address.country_code" });
  });

  it("stops at 50 addresses with RESOURCE_EXHAUSTED", async () => {
    const { token } = await registeredUser();
    for (let i = 0; i < 50; i++) await users.addAddress({ type: AddressType.BOTH, postalAddress: postal({ addressLine1: `Street ${i}` }) }, auth(token));
    expect(await failure(users.addAddress({ type: AddressType.BOTH, postalAddress: postal() }, auth(token)))).toMatchObject({
      code: Code.ResourceExhausted,
      reason: "ADDRESS_LIMIT_REACHED",
    });
  });
});

describe("one user cannot touch another's data", () => {
  it("answers NOT_FOUND when user A reads, changes or deletes user B's addresses and payment methods", async () => {
    const a = await registeredUser();
    const b = await registeredUser();
    const address = (await users.addAddress({ type: AddressType.BOTH, postalAddress: postal() }, auth(b.token))).address!;
    const method = (await users.addPaymentMethod(card(), auth(b.token))).paymentMethod!;
    const notFound = { code: Code.NotFound };

    expect((await users.listAddresses({}, auth(a.token))).addresses).toEqual([]);
    expect((await users.listPaymentMethods({}, auth(a.token))).paymentMethods).toEqual([]);
    expect(await failure(users.updateAddress({ address: { id: address.id, type: AddressType.SHIPPING }, updateMask: { paths: ["type"] } }, auth(a.token)))).toMatchObject(notFound);
    expect(await failure(users.setDefaultAddress({ addressId: address.id, type: AddressType.SHIPPING }, auth(a.token)))).toMatchObject(notFound);
    expect(await failure(users.deleteAddress({ addressId: address.id }, auth(a.token)))).toMatchObject(notFound);
    expect(await failure(users.deletePaymentMethod({ paymentMethodId: method.id }, auth(a.token)))).toMatchObject(notFound);
    expect(await failure(users.setDefaultPaymentMethod({ paymentMethodId: method.id }, auth(a.token)))).toMatchObject(notFound);
    expect(await failure(users.addPaymentMethod(card({ billingAddressId: address.id }), auth(a.token)))).toMatchObject({
      code: Code.NotFound,
      reason: "BILLING_ADDRESS_NOT_FOUND",
    });

    // B's data is untouched.
    expect((await users.listAddresses({}, auth(b.token))).addresses).toMatchObject([{ id: address.id, type: AddressType.BOTH }]);
    expect((await users.listPaymentMethods({}, auth(b.token))).paymentMethods.map((m) => m.id)).toEqual([method.id]);
  });
});

describe("payment methods", () => {
  it("stores the provider token encrypted and never returns it to the customer or an admin", async () => {
    const { userId, token } = await registeredUser();
    const input = card({ cardholderName: "Ada Lovelace" });
    const saved = (await users.addPaymentMethod(input, auth(token))).paymentMethod!;
    expect(saved).toMatchObject({ type: PaymentMethodType.CREDIT_CARD, cardBrand: CardBrand.VISA, last4: "4242", isDefault: true, expired: false });
    const [row] = await sql<{ provider_token: Buffer; provider_token_key_id: string; t: string }>(
      "select provider_token, provider_token_key_id, encode(provider_token, 'escape') as t from user_payment_methods where id = $1",
      [saved.id],
    );
    expect(row!.provider_token.includes(Buffer.from(input.providerToken as string))).toBe(false);
    expect(row!.t).not.toContain(input.providerToken);
    expect(row!.provider_token_key_id).toBe(dataKeyId(developmentUserDataKey));

    const admin = await issuer.user(uuidv7(), ["customer", "admin"]);
    const seen = JSON.stringify(
      [await users.listPaymentMethods({}, auth(token)), await users.getProfile({ userId }, auth(admin))],
      (_k, v) => (typeof v === "bigint" ? String(v) : v),
    );
    expect(seen).toContain(saved.id);
    expect(seen).not.toContain(input.providerToken);
  });

  it("hands the decrypted token to the payment service only, and records every call", async () => {
    const { userId, token } = await registeredUser();
    const input = card();
    const method = (await users.addPaymentMethod(input, auth(token))).paymentMethod!;
    const request = { userId, paymentMethodId: method.id };
    expect(await failure(users.getPaymentMethodToken(request, auth(token)))).toMatchObject({ code: Code.PermissionDenied });
    // The contract allows the payment service only; the kit refuses others before the handler runs.
    expect(await failure(users.getPaymentMethodToken(request, auth(await issuer.service("order"))))).toMatchObject({
      code: Code.PermissionDenied,
      reason: "CALLER_NOT_ALLOWED",
    });
    const payment = auth(await issuer.service("payment"));
    const granted = await users.getPaymentMethodToken(request, payment);
    expect(granted.providerToken).toBe(input.providerToken);
    expect(granted.paymentMethod?.id).toBe(method.id);
    expect(await failure(users.getPaymentMethodToken({ userId: uuidv7(), paymentMethodId: method.id }, payment))).toMatchObject({
      code: Code.NotFound,
      reason: "PAYMENT_METHOD_NOT_FOUND",
    });
    const log = await sql<{ caller: string; outcome: string }>(
      "select caller, outcome from user_payment_token_accesses where payment_method_id = $1 order by accessed_at, id",
      [method.id],
    );
    expect(log).toEqual([
      { caller: "payment", outcome: "granted" },
      { caller: "payment", outcome: "not_found" },
    ]);
  });

  it("keeps one default, refuses expired cards and billing addresses in use", async () => {
    const { token } = await registeredUser();
    const year = new Date().getUTCFullYear();
    expect(await failure(users.addPaymentMethod(card({ expiryYear: year - 1, expiryMonth: 1 }), auth(token)))).toMatchObject({
      code: Code.InvalidArgument,
      reason: "CARD_EXPIRED",
    });
    expect(await failure(users.addPaymentMethod(card({ last4: "42" }), auth(token)))).toMatchObject({ code: Code.InvalidArgument, field: "last4" });
    const shippingOnly = (await users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal() }, auth(token))).address!;
    expect(await failure(users.addPaymentMethod(card({ billingAddressId: shippingOnly.id }), auth(token)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "ADDRESS_TYPE_MISMATCH",
    });
    const billing = (await users.addAddress({ type: AddressType.BILLING, postalAddress: postal() }, auth(token))).address!;
    const first = (await users.addPaymentMethod(card({ billingAddressId: billing.id }), auth(token))).paymentMethod!;
    const paypal = (
      await users.addPaymentMethod({ type: PaymentMethodType.PAYPAL, providerToken: "BA-sandbox-1", cardholderName: "Ada" }, auth(token))
    ).paymentMethod!;
    const third = (await users.addPaymentMethod(card({ setAsDefault: true, cardBrand: CardBrand.AMEX }), auth(token))).paymentMethod!;
    expect([first.isDefault, paypal.isDefault, third.isDefault]).toEqual([true, false, true]);
    expect((await users.listPaymentMethods({}, auth(token))).paymentMethods.map((m) => [m.id, m.isDefault])).toEqual([
      [third.id, true],
      [paypal.id, false],
      [first.id, false],
    ]);

    expect(await failure(users.deleteAddress({ addressId: billing.id }, auth(token)))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "ADDRESS_IN_USE",
      metadata: { payment_method_id: first.id },
    });
    // Deleting the default promotes the most recently added remaining one.
    await users.deletePaymentMethod({ paymentMethodId: third.id }, auth(token));
    expect((await users.listPaymentMethods({}, auth(token))).paymentMethods.map((m) => [m.id, m.isDefault])).toEqual([
      [paypal.id, true],
      [first.id, false],
    ]);
    expect((await users.setDefaultPaymentMethod({ paymentMethodId: first.id }, auth(token))).paymentMethod?.isDefault).toBe(true);
    await users.deletePaymentMethod({ paymentMethodId: first.id }, auth(token));
    await users.deleteAddress({ addressId: billing.id }, auth(token));
  });

  it("decrypts tokens written under a previous key after a rotation, and refuses moved ciphertexts", () => {
    const old = { id: dataKeyId(developmentUserDataKey), key: developmentUserDataKey };
    const fresh = randomBytes(32);
    const current = { id: dataKeyId(fresh), key: fresh };
    const sealed = new TokenCipher(old, [old]).seal("tok_sandbox_4242", tokenBinding("pm-1", "u-1"));
    const rotated = new TokenCipher(current, [current, old]);
    expect(rotated.open(sealed, tokenBinding("pm-1", "u-1"))).toBe("tok_sandbox_4242");
    expect(rotated.seal("x", "y").keyId).toBe(current.id);
    expect(() => rotated.open(sealed, tokenBinding("pm-2", "u-1"))).toThrow();
    expect(() => new TokenCipher(current, [current]).open(sealed, tokenBinding("pm-1", "u-1"))).toThrow(/unknown data key/);
  });
});

describe("hot reads", () => {
  /** The statements one call sends to PostgreSQL (the background's left out: the outbox relay's passes, health pings). */
  async function statementsOf(call: () => Promise<unknown>): Promise<string[]> {
    return (await captureQueries(call)).map((q) => q.text).filter((text) => !/outbox/.test(text) && text.trim() !== "select 1");
  }

  it("answers GetMyProfile, ListAddresses, ListPaymentMethods, GetPreferences and ListWishlist with one statement each", async () => {
    installSqlCounter();
    const { userId, token } = await registeredUser();
    await users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal() }, auth(token));
    await users.addAddress({ type: AddressType.BILLING, postalAddress: postal({ city: "Hamburg" }) }, auth(token));
    await users.setPreferences({ preferences: { "ui.theme": "dark", "ui.lang": "de" } }, auth(token));
    const saved = (await users.addPaymentMethod(card(), auth(token))).paymentMethod!;

    expect(await statementsOf(() => users.getMyProfile({}, auth(token)))).toHaveLength(1);
    expect(await statementsOf(() => users.listAddresses({}, auth(token)))).toHaveLength(1);
    expect(await statementsOf(() => users.listAddresses({ type: AddressType.BILLING }, auth(token)))).toHaveLength(1);
    expect(await statementsOf(() => users.listPaymentMethods({}, auth(token)))).toHaveLength(1);
    expect(await statementsOf(() => users.getPreferences({ keys: ["ui.theme"] }, auth(token)))).toHaveLength(1);
    expect(await statementsOf(() => users.listWishlist({}, auth(token)))).toHaveLength(1);
    // The answers themselves are the contract's (the other tests check them in depth).
    expect((await users.listAddresses({ type: AddressType.BILLING }, auth(token))).addresses.map((a) => a.postalAddress?.city)).toEqual(["Hamburg"]);
    expect((await users.getPreferences({ keys: ["ui.theme"] }, auth(token))).preferences.map((p) => [p.key, p.value])).toEqual([["ui.theme", "dark"]]);
    expect(await users.listWishlist({}, auth(token))).toMatchObject({ items: [], totalSize: 0, nextPageToken: "" });
    expect((await users.getMyProfile({}, auth(token))).profile?.userId).toBe(userId);
    expect((await users.listPaymentMethods({}, auth(token))).paymentMethods).toEqual([saved]);

    // Without a profile, the one statement still tells: NOT_FOUND as before.
    const stranger = await issuer.user(uuidv7());
    for (const call of [() => users.getPreferences({}, auth(stranger)), () => users.listWishlist({}, auth(stranger)), () => users.listAddresses({}, auth(stranger)), () => users.listPaymentMethods({}, auth(stranger))]) {
      expect(await failure(call())).toMatchObject({ code: Code.NotFound, reason: "PROFILE_NOT_FOUND" });
    }
  });
});

describe("preferences and wishlist", () => {
  it("sets, reads and deletes preferences, up to 100 keys", async () => {
    const { token } = await registeredUser();
    const set = await users.setPreferences({ preferences: { "ui.theme": "dark", "catalog.page_size": "48" } }, auth(token));
    expect(set.preferences.map((p) => [p.key, p.value])).toEqual([
      ["catalog.page_size", "48"],
      ["ui.theme", "dark"],
    ]);
    await users.setPreferences({ preferences: { "ui.theme": "light" } }, auth(token));
    expect((await users.getPreferences({ keys: ["ui.theme", "missing"] }, auth(token))).preferences.map((p) => p.value)).toEqual(["light"]);
    await users.deletePreferences({ keys: ["ui.theme", "never.set"] }, auth(token));
    expect((await users.getPreferences({}, auth(token))).preferences.map((p) => p.key)).toEqual(["catalog.page_size"]);
    expect(await failure(users.setPreferences({ preferences: { "Bad Key": "x" } }, auth(token)))).toMatchObject({ code: Code.InvalidArgument });

    const many = (from: number) => Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k.${from + i}`, "v"]));
    await users.setPreferences({ preferences: many(0) }, auth(token));
    expect(await failure(users.setPreferences({ preferences: many(50) }, auth(token)))).toMatchObject({
      code: Code.ResourceExhausted,
      reason: "PREFERENCE_LIMIT_REACHED",
    });
    // All or nothing: none of the refused keys was stored.
    expect((await users.getPreferences({}, auth(token))).preferences.length).toBe(51);
  });

  it("adds products once, pages newest first and removes idempotently", async () => {
    const { token } = await registeredUser();
    const admin = auth(await issuer.user(uuidv7(), ["customer", "admin"]));
    const productIds: string[] = [];
    for (let i = 0; i < 5; i++) {
      const sku = `WISH-${randomBytes(4).toString("hex")}`;
      const { product } = await products.createProduct(
        { sku, name: `Wished ${sku}`, price: { amountMinor: 1000n, currencyCode: "USD" }, status: ProductStatus.ACTIVE, isVisible: true },
        admin,
      );
      productIds.push(product!.id);
    }
    for (const productId of productIds) await users.addToWishlist({ productId }, auth(token));
    const again = await users.addToWishlist({ productId: productIds[0]!, notes: "for Anna's birthday" }, auth(token));
    expect(again.item).toMatchObject({ productId: productIds[0], notes: "for Anna's birthday", productAvailable: true });

    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await users.listWishlist({ pageSize: 2, pageToken }, auth(token));
      expect(page.totalSize).toBe(5);
      seen.push(...page.items.map((i) => i.productId));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual([...productIds].reverse());

    await users.removeFromWishlist({ productId: productIds[1]! }, auth(token));
    await users.removeFromWishlist({ productId: productIds[1]! }, auth(token));
    expect((await users.listWishlist({}, auth(token))).totalSize).toBe(4);
    expect(await failure(users.listWishlist({ pageToken: "garbage" }, auth(token)))).toMatchObject({ code: Code.InvalidArgument, field: "page_token" });
  });
});

describe("admin and internal reads", () => {
  it("keeps GetProfile from customers and lists profiles with filters and keyset pages", async () => {
    const marker = `m${randomBytes(4).toString("hex")}`;
    const created = [];
    for (let i = 0; i < 5; i++) created.push(await registeredUser({ lastName: `${marker}-${i}` }));
    const customer = created[0]!.token;
    expect(await failure(users.getProfile({ userId: created[0]!.userId }, auth(customer)))).toMatchObject({ code: Code.PermissionDenied });

    const admin = auth(await issuer.user(uuidv7(), ["customer", "admin"]));
    expect((await users.getProfile({ userId: created[1]!.userId }, admin)).profile?.lastName).toBe(`${marker}-1`);
    expect(await failure(users.getProfile({ userId: uuidv7() }, admin))).toMatchObject({ code: Code.NotFound, reason: "PROFILE_NOT_FOUND" });

    const collect = async (orderBy: string) => {
      const names: string[] = [];
      let pageToken = "";
      do {
        const page = await users.listProfiles({ query: marker.toUpperCase(), isActive: true, pageSize: 2, pageToken, orderBy }, admin);
        names.push(...page.profiles.map((p) => p.lastName));
        pageToken = page.nextPageToken;
      } while (pageToken);
      return names;
    };
    const expected = created.map((_, i) => `${marker}-${i}`);
    expect(await collect("")).toEqual([...expected].reverse());
    expect(await collect("last_name")).toEqual(expected);
    expect(await collect("last_login_at desc")).toHaveLength(5);
    expect((await users.listProfiles({ query: marker, isActive: false }, admin)).profiles).toEqual([]);

    const first = await users.listProfiles({ query: marker, pageSize: 2 }, admin);
    expect(await failure(users.listProfiles({ query: `${marker}-1`, pageSize: 2, pageToken: first.nextPageToken }, admin))).toMatchObject({
      code: Code.InvalidArgument,
      reason: "INVALID_PAGE_TOKEN",
      field: "page_token",
    });
  });

  it("serves GetAddress and GetDefaultAddress to services only", async () => {
    const { userId, token } = await registeredUser();
    const address = (await users.addAddress({ type: AddressType.SHIPPING, postalAddress: postal() }, auth(token))).address!;
    const order = auth(await issuer.service("order"));
    expect((await users.getAddress({ userId, addressId: address.id }, order)).address?.postalAddress?.city).toBe("Berlin");
    expect((await users.getDefaultAddress({ userId, type: AddressType.SHIPPING }, order)).address?.id).toBe(address.id);
    expect(await failure(users.getDefaultAddress({ userId, type: AddressType.BILLING }, order))).toMatchObject({ code: Code.NotFound, reason: "NO_DEFAULT_ADDRESS" });
    expect(await failure(users.getAddress({ userId: uuidv7(), addressId: address.id }, order))).toMatchObject({ code: Code.NotFound, reason: "ADDRESS_NOT_FOUND" });
    expect(await failure(users.getAddress({ userId, addressId: address.id }, auth(token)))).toMatchObject({ code: Code.PermissionDenied });
  });
});

describe("through a NATS outage", () => {
  it("accepts UpdateMyProfile while NATS is down and publishes user.updated once it is back", async () => {
    const { userId, token } = await registeredUser();
    await mesh.nats.pause();
    try {
      const res = await users.updateMyProfile({ profile: { lastName: "Offline" }, updateMask: { paths: ["last_name"] } }, auth(token));
      expect(res.profile?.lastName).toBe("Offline");
      const [pending] = await sql<{ n: number }>("select count(*)::int as n from outbox_events where published_at is null");
      expect(pending?.n).toBeGreaterThanOrEqual(1);
    } finally {
      await mesh.nats.resume();
    }
    const events = await eventually(
      async () => {
        const list = await userUpdatedFor(userId).catch(() => []);
        return list.length > 0 ? list : undefined;
      },
      25_000,
      "user.updated after NATS returned",
    );
    expect(events.map((e) => [e.lastName, e.changedFields])).toEqual([["Offline", ["last_name"]]]);
  });
});
