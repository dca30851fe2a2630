/**
 * The service kit against real PostgreSQL, a real nats-server and real HTTP/1.1
 * and HTTP/2 clients: one port for gRPC and Connect, health, reflection,
 * validation, the access policies, the outbox through a NATS outage, inbox
 * deduplication, dead letters and their replay, metrics, size limits.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { AckPolicy, jetstream } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection, nanos } from "@nats-io/transport-node";
import { Migration } from "@mikro-orm/migrations";
import { toBinary, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_ecommerce_auth_v1_events, UserEmailVerifiedSchema, UserRegisteredSchema } from "../gen/ecommerce/auth/v1/events_pb.js";
import { DeadLetterService } from "../gen/ecommerce/common/v1/dead_letter_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { file_ecommerce_user_v1_events, UserUpdatedSchema } from "../gen/ecommerce/user/v1/events_pb.js";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { requireUser } from "./auth/principal.ts";
import { callEnded } from "./call.ts";
import { emOf } from "./db.ts";
import { notFound } from "./errors.ts";
import { maxAckPending, onEvent } from "./events/consumer.ts";
import { streamOf } from "./events/contracts.ts";
import { publishEvent } from "./events/outbox.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { runService, type AnyServiceDefinition } from "./server.ts";
import { sqlOf } from "./sql.ts";
import { freePort, TestDatabases, TestNats } from "./testing/infra.ts";
import { eventually, startMesh, type TestMesh } from "./testing/mesh.ts";
import { TestIssuer } from "./testing/tokens.ts";

const issuer = new TestIssuer();
let failingEmails = true;
let slowCallStarted: () => void = () => undefined;
/** The signal of each getMyProfile call the fixture handled, in order. */
const profileSignals: AbortSignal[] = [];

class FixtureTables extends Migration {
  override async up(): Promise<void> {
    this.addSql("create table fixture_profiles (user_id uuid primary key, email text not null, first_name text not null default '')");
    // One row per handler invocation (no unique key), so a second run of one event shows.
    this.addSql("create table fixture_deliveries (id bigserial primary key, user_id uuid not null, subject text not null)");
  }
}

/** A fixture service wearing the user service's contract, to exercise the kit alone. */
const fixture: AnyServiceDefinition = {
  name: "user",
  entities: [],
  migrations: [{ name: "0001_fixture", class: FixtureTables }],
  publishes: file_ecommerce_user_v1_events,
  publicKeys: () => () => issuer.jwks(),
  serviceCredentials: () => ({ token: () => issuer.service("user") }),
  routes(router) {
    router.service(UserService, {
      async getMyProfile(_req, ctx) {
        profileSignals.push(ctx.signal);
        const me = requireUser(ctx);
        const row = await sqlOf(emOf(ctx)).one<{ email: string; first_name: string }>("select email, first_name from fixture_profiles where user_id = $1", [me.userId]);
        if (!row) throw notFound("profile", me.userId);
        return { profile: create(UserProfileSchema, { userId: me.userId, email: row.email, firstName: row.first_name }) };
      },
      async updateMyProfile(req, ctx) {
        const me = requireUser(ctx);
        if (req.profile?.firstName === "no-event") {
          // A write without an event: its commit must not wake the outbox relay.
          await emOf(ctx).transactional((em) =>
            sqlOf(em).run("update fixture_profiles set first_name = $1 where user_id = $2", ["no-event", me.userId]),
          );
          return { profile: create(UserProfileSchema, { userId: me.userId, firstName: "no-event" }) };
        }
        if (req.profile?.firstName === "slow") {
          slowCallStarted();
          await new Promise((r) => setTimeout(r, 800));
        }
        await emOf(ctx).transactional(async (em) => {
          await sqlOf(em).run("update fixture_profiles set first_name = $1 where user_id = $2", [req.profile?.firstName ?? "", me.userId]);
          publishEvent(em, UserUpdatedSchema, { userId: me.userId, firstName: req.profile?.firstName ?? "", changedFields: ["first_name"] });
        });
        return { profile: create(UserProfileSchema, { userId: me.userId, firstName: req.profile?.firstName ?? "" }) };
      },
      async getProfile(req) {
        return { profile: create(UserProfileSchema, { userId: req.userId }) };
      },
      async getAddress() {
        throw notFound("address", "-");
      },
      // A read through the call's Sql (no EntityManager forked) that outlasts any deadline.
      async listPaymentMethods(_req, ctx) {
        requireUser(ctx);
        await sqlOf(ctx).one("select pg_sleep(30) as slept");
        return {};
      },
    });
  },
  consumers: () => [
    onEvent(UserRegisteredSchema, "create-profile", async (em, event) => {
      if (failingEmails && event.email.startsWith("fail")) throw new Error(`cannot handle ${event.email}`);
      const db = sqlOf(em);
      await db.run("insert into fixture_deliveries (user_id, subject) values ($1, 'user.registered')", [event.userId]);
      await db.run("insert into fixture_profiles (user_id, email) values ($1, $2) on conflict do nothing", [event.userId, event.email]);
    }),
    // Needs the profile made by user.registered: in order, it never finds it missing.
    onEvent(UserEmailVerifiedSchema, "after-registration", async (em, event) => {
      const db = sqlOf(em);
      if (!(await db.one("select 1 from fixture_profiles where user_id = $1", [event.userId]))) {
        throw new Error(`user.email_verified for ${event.userId} before its user.registered`);
      }
      await db.run("insert into fixture_deliveries (user_id, subject) values ($1, 'user.email_verified')", [event.userId]);
    }),
  ],
};

let mesh: TestMesh;
let grpc: Transport;
let connectJson: Transport;
let nc: NatsConnection;
const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

async function publishRegistered(userId: string, email: string, msgId?: string) {
  const js = jetstream(nc);
  await ensureAuthStream();
  const eventId = crypto.randomUUID();
  const payload = toBinary(UserRegisteredSchema, create(UserRegisteredSchema, { eventId, userId, email }));
  await js.publish("user.registered", payload, { msgID: msgId ?? eventId });
  return { eventId, payload };
}

async function ensureAuthStream() {
  const jsm = await jetstream(nc).jetstreamManager();
  await jsm.streams.add({ name: "AUTH_EVENTS", subjects: streamOf(file_ecommerce_auth_v1_events).subjects }).catch(() => undefined);
}

/** Resolves once the service's durable on AUTH_EVENTS has every message acknowledged. */
async function authEventsSettled() {
  const jsm = await jetstream(nc).jetstreamManager();
  await eventually(async () => {
    const info = await jsm.consumers.info("AUTH_EVENTS", "user_AUTH_EVENTS");
    return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
  }, 20_000, "AUTH_EVENTS consumed");
}

/** Reads a service's database directly, for assertions. */
const sqlIn = (service = mesh.services.user!) => <T extends object>(query: string, params: unknown[] = []) => sqlOf(service.ctx.orm.em.fork()).all<T>(query, params);

beforeAll(async () => {
  // A long poll: only commits that wrote outbox rows wake the relay, which the statement count below relies on.
  mesh = await startMesh([fixture], { EVENT_MAX_DELIVERIES: "2", MAX_MESSAGE_BYTES: "4096", OUTBOX_POLL_MS: "30000" });
  grpc = createGrpcTransport({ baseUrl: mesh.url("user") });
  connectJson = createConnectTransport({ baseUrl: mesh.url("user"), httpVersion: "1.1", useBinaryFormat: false });
  nc = await natsConnect({ servers: mesh.nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
});

afterAll(async () => {
  await nc?.close();
  await mesh?.stop();
});

describe("one port, every protocol", () => {
  it("answers health over gRPC (HTTP/2) once the database and NATS are up", async () => {
    const health = createClient(Health, grpc);
    const status = await eventually(async () => {
      const r = await health.check({ service: "" });
      return r.status === HealthCheckResponse_ServingStatus.SERVING ? r.status : undefined;
    });
    expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await health.check({ service: "ecommerce.user.v1.UserService" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    await expect(health.check({ service: "nope.Service" })).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("serves Connect JSON and gRPC-Web over HTTP/1.1 on the same port", async () => {
    const userId = crypto.randomUUID();
    const token = await issuer.user(userId);
    const json = createClient(UserService, connectJson);
    await expect(json.getMyProfile({}, auth(token))).rejects.toMatchObject({ code: Code.NotFound });
    const web = createClient(UserService, createGrpcWebTransport({ baseUrl: mesh.url("user"), httpVersion: "1.1" }));
    await expect(web.getMyProfile({}, auth(token))).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("ends every call's signal with the kit's reason, in every protocol, whether the call succeeded or failed", async () => {
    // connect gives none when a call ends, and Node then builds a DOMException with its stack (kit/call.ts callEnded).
    const userId = crypto.randomUUID();
    const token = await issuer.user(userId);
    await sqlIn()("insert into fixture_profiles (user_id, email) values ($1, 'signals@example.test')", [userId]);
    const stranger = await issuer.user(crypto.randomUUID());
    const transports = [grpc, connectJson, createGrpcWebTransport({ baseUrl: mesh.url("user"), httpVersion: "1.1" })];
    for (const transport of transports) {
      const users = createClient(UserService, transport);
      const before = profileSignals.length;
      await expect(users.getMyProfile({}, auth(token))).resolves.toMatchObject({ profile: { email: "signals@example.test" } });
      await expect(users.getMyProfile({}, auth(stranger))).rejects.toMatchObject({ code: Code.NotFound });
      const [ok, failed] = profileSignals.slice(before);
      await eventually(async () => (ok!.aborted && failed!.aborted ? true : undefined), 5_000, "both calls' signals aborted");
      expect(ok!.reason).toBe(callEnded);
      // A failed call's signal carries its error, as connect gives it.
      expect(failed!.reason).toBeInstanceOf(ConnectError);
      expect((failed!.reason as ConnectError).code).toBe(Code.NotFound);
    }
  });

  it("lists its services through gRPC reflection", async () => {
    const reflection = createClient(ServerReflection, grpc);
    async function* one() {
      yield { host: "", messageRequest: { case: "listServices" as const, value: "*" } };
    }
    const names: string[] = [];
    for await (const res of reflection.serverReflectionInfo(one())) {
      if (res.messageResponse.case === "listServicesResponse") names.push(...res.messageResponse.value.service.map((s) => s.name));
    }
    expect(names).toEqual(expect.arrayContaining(["ecommerce.user.v1.UserService", "ecommerce.common.v1.DeadLetterService", "grpc.health.v1.Health"]));
  });

  it("answers grpcurl's describe: the file declaring a symbol, with its imports", async () => {
    const reflection = createClient(ServerReflection, grpc);
    async function* ask() {
      yield { host: "", messageRequest: { case: "fileContainingSymbol" as const, value: "ecommerce.user.v1.UserService.GetMyProfile" } };
      yield { host: "", messageRequest: { case: "fileContainingSymbol" as const, value: "no.such.Symbol" } };
    }
    const answers = [];
    for await (const res of reflection.serverReflectionInfo(ask())) answers.push(res.messageResponse);
    expect(answers[0]?.case).toBe("fileDescriptorResponse");
    const files = answers[0]?.case === "fileDescriptorResponse" ? answers[0].value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name) : [];
    expect(files[0]).toBe("ecommerce/user/v1/user.proto");
    expect(files).toEqual(expect.arrayContaining(["ecommerce/common/v1/access.proto", "buf/validate/validate.proto", "google/protobuf/timestamp.proto"]));
    expect(answers[1]).toMatchObject({ case: "errorResponse", value: { errorCode: 5 } });
  });

  it("exposes Prometheus metrics with RPC counts", async () => {
    const text = await (await fetch(`${mesh.url("user")}/metrics`)).text();
    expect(text).toMatch(/rpc_requests_total\{[^}]*method="grpc.health.v1.Health\/Check"/);
    expect(text).toMatch(/outbox_backlog/);
  });
});

describe("policies and validation", () => {
  const client = () => createClient(UserService, grpc);

  it("refuses a customer RPC without a token, and a tampered or expired one", async () => {
    await expect(client().getMyProfile({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    const token = await issuer.user(crypto.randomUUID());
    const tampered = `${token.slice(0, -4)}AAAA`;
    await expect(client().getMyProfile({}, auth(tampered))).rejects.toMatchObject({ code: Code.Unauthenticated });
    const expired = await issuer.sign({ sub: crypto.randomUUID(), roles: ["customer"] }, -10);
    const err = await client().getMyProfile({}, auth(expired)).catch((e) => ConnectError.from(e));
    expect(err).toMatchObject({ code: Code.Unauthenticated });
    expect((err as ConnectError).findDetails(ErrorInfoSchema)[0]?.reason).toBe("TOKEN_EXPIRED");
  });

  it("refuses user and service tokens without exp or iat as TOKEN_INVALID", async () => {
    const reason = (e: unknown) => ConnectError.from(e).findDetails(ErrorInfoSchema)[0]?.reason;
    for (const omit of [["exp"], ["iat"]] as ("exp" | "iat")[][]) {
      const user = await issuer.user(crypto.randomUUID(), ["customer"], undefined, omit);
      const err = await client().getMyProfile({}, auth(user)).catch((e) => e);
      expect([ConnectError.from(err).code, reason(err)]).toEqual([Code.Unauthenticated, "TOKEN_INVALID"]);
      const service = await issuer.service("order", omit);
      const denied = await client().getAddress({ userId: crypto.randomUUID(), addressId: crypto.randomUUID() }, auth(service)).catch((e) => e);
      expect([ConnectError.from(denied).code, reason(denied)]).toEqual([Code.Unauthenticated, "TOKEN_INVALID"]);
    }
  });

  it("keeps admin RPCs from customers and internal RPCs from users", async () => {
    const customer = await issuer.user(crypto.randomUUID());
    const admin = await issuer.user(crypto.randomUUID(), ["customer", "admin"]);
    await expect(client().getProfile({ userId: crypto.randomUUID() }, auth(customer))).rejects.toMatchObject({ code: Code.PermissionDenied });
    await expect(client().getProfile({ userId: crypto.randomUUID() }, auth(admin))).resolves.toBeDefined();
    await expect(client().getAddress({ userId: crypto.randomUUID(), addressId: crypto.randomUUID() }, auth(admin))).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    const service = await issuer.service("order");
    await expect(client().getAddress({ userId: crypto.randomUUID(), addressId: crypto.randomUUID() }, auth(service))).rejects.toMatchObject({
      code: Code.NotFound,
    });
  });

  it("rejects bad input with INVALID_ARGUMENT naming the field, and oversized messages", async () => {
    const admin = await issuer.user(crypto.randomUUID(), ["admin"]);
    const err = ConnectError.from(await client().getProfile({ userId: "not-a-uuid" }, auth(admin)).catch((e) => e));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("user_id");
    expect(err.rawMessage).toMatch(/user_id/);
    const huge = "x".repeat(10_000);
    const big = await client()
      .updateMyProfile({ profile: { firstName: huge }, updateMask: { paths: ["first_name"] } }, auth(admin))
      .catch((e) => ConnectError.from(e));
    expect(big).toMatchObject({ code: Code.ResourceExhausted });
    // The server keeps serving after both.
    await expect(client().getProfile({ userId: crypto.randomUUID() }, auth(admin))).resolves.toBeDefined();
  });
});

describe("events", () => {
  it("consumes an event once even when it is delivered twice", async () => {
    const userId = crypto.randomUUID();
    const { payload } = await publishRegistered(userId, "twice@example.test");
    // The same event under another Nats-Msg-Id passes JetStream's dedupe: the inbox must catch it.
    await jetstream(nc).publish("user.registered", payload, { msgID: `${crypto.randomUUID()}` });
    await authEventsSettled();
    const sql = sqlIn();
    const [runs] = await sql<{ n: number }>("select count(*)::int as n from fixture_deliveries where user_id = $1", [userId]);
    expect(runs?.n).toBe(1);
    const metricsText = await (await fetch(`${mesh.url("user")}/metrics`)).text();
    expect(metricsText).toMatch(/events_consumed_total\{[^}]*consumer="create-profile"[^}]*outcome="duplicate"[^}]*\} [1-9]/);
  });

  it("handles one stream's events in the order they were published", async () => {
    const js = jetstream(nc);
    await ensureAuthStream();
    const users = Array.from({ length: 5 }, () => crypto.randomUUID());
    for (const userId of users) {
      await js.publish("user.registered", toBinary(UserRegisteredSchema, create(UserRegisteredSchema, { eventId: crypto.randomUUID(), userId, email: `${userId}@example.test` })));
      await js.publish("user.email_verified", toBinary(UserEmailVerifiedSchema, create(UserEmailVerifiedSchema, { eventId: crypto.randomUUID(), userId })));
    }
    await authEventsSettled();
    const rows = await sqlIn()<{ user_id: string; subject: string }>("select user_id, subject from fixture_deliveries where user_id = any($1::uuid[]) order by id", [users]);
    expect(rows).toEqual(users.flatMap((u) => [{ user_id: u, subject: "user.registered" }, { user_id: u, subject: "user.email_verified" }]));
    // Never retried: the registration was always there first.
    const metricsText = await (await fetch(`${mesh.url("user")}/metrics`)).text();
    expect(metricsText).not.toMatch(/events_consumed_total\{[^}]*consumer="after-registration"[^}]*outcome="failed"/);
    // One durable for the stream, none per handler.
    const names: string[] = [];
    for await (const c of (await js.jetstreamManager()).consumers.list("AUTH_EVENTS")) names.push(c.name);
    expect(names).toEqual(["user_AUTH_EVENTS"]);
  });

  it("publishes from the outbox, and keeps events through a NATS outage", async () => {
    const userId = crypto.randomUUID();
    await publishRegistered(userId, "outage@example.test");
    const token = await issuer.user(userId);
    const users = createClient(UserService, grpc);
    await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined));

    const seen: string[] = [];
    const js = jetstream(nc);
    await mesh.nats.pause();
    const res = await users.updateMyProfile({ profile: { firstName: "During" }, updateMask: { paths: ["first_name"] } }, auth(token));
    expect(res.profile?.firstName).toBe("During");
    const [pending] = await sqlIn()<{ n: number }>("select count(*)::int as n from outbox_events where published_at is null");
    expect(pending?.n).toBeGreaterThanOrEqual(1);
    await mesh.nats.resume();

    await eventually(async () => {
      const consumer = await js.consumers.get("USER_EVENTS").catch(() => undefined);
      if (!consumer) return undefined;
      const batch = await consumer.fetch({ max_messages: 10, expires: 1000 });
      for await (const m of batch) {
        const e = fromBinary(UserUpdatedSchema, m.data);
        if (e.userId === userId) seen.push(e.firstName);
      }
      return seen.length > 0 ? seen : undefined;
    }, 20_000, "user.updated published after NATS returned");
    expect(seen).toEqual(["During"]);
    // Published rows are marked, so the relay does not send them again.
    await eventually(async () => {
      const [row] = await sqlIn()<{ n: number }>("select count(*)::int as n from outbox_events where published_at is null");
      return row?.n === 0 ? true : undefined;
    }, 10_000, "outbox drained");
  });

  it("dead-letters an event that keeps failing, and replays it after the fix", async () => {
    const userId = crypto.randomUUID();
    const { eventId } = await publishRegistered(userId, "fail@example.test");
    const admin = await issuer.user(crypto.randomUUID(), ["admin"]);
    const dlq = createClient(DeadLetterService, grpc);
    const letter = await eventually(async () => {
      const list = await dlq.listDeadLetters({}, auth(admin));
      return list.deadLetters.find((d) => d.eventId === eventId);
    }, 20_000, "dead letter recorded");
    expect(letter.consumer).toBe("create-profile");
    expect(letter.deliveryCount).toBe(2);
    expect(letter.lastError).toMatch(/cannot handle fail@example.test/);
    const metricsText = await (await fetch(`${mesh.url("user")}/metrics`)).text();
    expect(metricsText).toMatch(/dead_letters_total\{[^}]*consumer="create-profile"[^}]*\} 1/);
    expect(metricsText).toMatch(/event_redeliveries_total\{[^}]*consumer="create-profile"[^}]*\} [1-9]/);

    failingEmails = false;
    const replayed = await dlq.replayDeadLetter({ id: letter.id }, auth(admin));
    expect(replayed.deadLetter?.replayedAt).toBeDefined();
    const token = await issuer.user(userId);
    const profile = await createClient(UserService, grpc).getMyProfile({}, auth(token));
    expect(profile.profile?.email).toBe("fail@example.test");
    const open = await dlq.listDeadLetters({}, auth(admin));
    expect(open.deadLetters.find((d) => d.id === letter.id)).toBeUndefined();
  });
  it("dead-letters what it cannot decode or identify, and moves on to the next event", async () => {
    const js = jetstream(nc);
    await ensureAuthStream();
    const garbage = await js.publish("user.registered", new Uint8Array([0xff, 0xff, 0xff, 0x0f, 0x01]));
    const anonymous = await js.publish("user.registered", toBinary(UserRegisteredSchema, create(UserRegisteredSchema, { userId: crypto.randomUUID(), email: "anon@example.test" })));
    const userId = crypto.randomUUID();
    await publishRegistered(userId, "after-poison@example.test");
    const token = await issuer.user(userId);
    const profile = await eventually(() => createClient(UserService, grpc).getMyProfile({}, auth(token)).catch(() => undefined), 20_000, "valid event processed");
    expect(profile.profile?.email).toBe("after-poison@example.test");

    const admin = await issuer.user(crypto.randomUUID(), ["admin"]);
    const dlq = createClient(DeadLetterService, grpc);
    const letters = (await dlq.listDeadLetters({}, auth(admin))).deadLetters;
    const bad = letters.find((d) => d.eventId === `AUTH_EVENTS:${garbage.seq}`);
    const noId = letters.find((d) => d.eventId === `AUTH_EVENTS:${anonymous.seq}`);
    expect(bad).toMatchObject({ consumer: "create-profile", subject: "user.registered", deliveryCount: 1, payload: new Uint8Array([0xff, 0xff, 0xff, 0x0f, 0x01]) });
    expect(bad?.lastError).toMatch(/not a ecommerce.auth.v1.UserRegistered/);
    expect(noId?.lastError).toMatch(/without a UUID event_id/);
    // Replayable like any dead letter: it still fails, so it stays, with the error.
    const replayed = await dlq.replayDeadLetter({ id: noId!.id }, auth(admin));
    expect(replayed.deadLetter?.replayedAt).toBeUndefined();
    expect(replayed.deadLetter?.lastError).toMatch(/without a UUID event_id/);
  });
});

describe("outbox relay and retention", () => {
  it("runs no relay pass after a transaction that wrote no outbox row", async () => {
    const userId = crypto.randomUUID();
    await publishRegistered(userId, "quiet@example.test");
    const token = await issuer.user(userId);
    const users = createClient(UserService, grpc);
    await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined));
    const orm = mesh.services.user!.ctx.orm;
    const statements: string[] = [];
    const outboxRows = () => statements.filter((q) => /outbox_events|outbox_relay_lease/.test(q));
    orm.config.set("onQuery", (sql: string) => {
      statements.push(sql);
      return sql;
    });
    try {
      await users.updateMyProfile({ profile: { firstName: "no-event" }, updateMask: { paths: ["first_name"] } }, auth(token));
      const afterQuiet = statements.length;
      // A call that does write an event is the barrier: its pass runs, and is the only one.
      await users.updateMyProfile({ profile: { firstName: "Loud" }, updateMask: { paths: ["first_name"] } }, auth(token));
      await eventually(async () => (statements.some((q) => /update outbox_events set published_at/.test(q)) ? true : undefined), 10_000, "event published");
      const quietWindow = statements.slice(0, afterQuiet);
      expect(quietWindow.filter((q) => /outbox_events|outbox_relay_lease/.test(q))).toEqual([]);
      // One pass for the call with an event: lease, read, mark published, backlog gauge; no transaction held around NATS.
      expect(outboxRows().filter((q) => /^select id, subject, payload/.test(q))).toHaveLength(1);
      expect(statements.filter((q) => /for update/.test(q) && /outbox_events/.test(q))).toEqual([]);
    } finally {
      orm.config.set("onQuery", (sql: string) => sql);
    }
  });

  it("prunes published outbox rows, processed inbox rows, expired idempotency keys and replayed dead letters after their retention", async () => {
    const sql = sqlIn();
    const old = "now() - interval '400 days'";
    const [a, b] = [crypto.randomUUID(), crypto.randomUUID()];
    await sql(`insert into outbox_events (id, subject, event_type, payload, published_at) values ($1, 's', 't', '\\x00', ${old}), ($2, 's', 't', '\\x00', now())`, [a, b]);
    await sql(`insert into event_inbox (event_id, event_type, source, processed, processed_at) values ($1, 't', 'retention', true, ${old}), ($2, 't', 'retention', true, now())`, [a, b]);
    await sql("insert into idempotency_keys (scope, key, request_hash, expires_at) values ('retention', $1, 'h', now() - interval '1 second'), ('retention', $2, 'h', now() + interval '1 day')", [a, b]);
    await sql(
      `insert into dead_letters (id, event_id, message_key, subject, consumer, delivery_count, last_error, payload, replayed_at)
       values ($1::uuid, $1::uuid, $1::text, 's', 'retention', 1, 'e', '\\x00', ${old}), ($2::uuid, $2::uuid, $2::text, 's', 'retention', 1, 'e', '\\x00', now())`,
      [a, b],
    );
    const jobs = mesh.services.user!.jobs;
    for (const name of ["outbox-retention", "inbox-retention", "idempotency-key-retention", "dead-letter-retention"]) {
      await (jobs.get(name) as unknown as { runNow(): Promise<void> }).runNow();
    }
    const left = async (query: string) => (await sql<{ id: string }>(query, [[a, b]])).map((r) => r.id);
    expect(await left("select id::text from outbox_events where id = any($1::uuid[])")).toEqual([b]);
    expect(await left("select event_id::text as id from event_inbox where event_id = any($1::uuid[])")).toEqual([b]);
    expect(await left("select key as id from idempotency_keys where scope = 'retention' and key = any($1::text[])")).toEqual([b]);
    expect(await left("select id::text from dead_letters where id = any($1::uuid[])")).toEqual([b]);
  });
});

describe("starting replicas", () => {
  it("migrates once when two replicas start together on a fresh database, and reconciles the stream's durable", async () => {
    const nats = await TestNats.start();
    const dbs = new TestDatabases();
    const natsClient = await natsConnect({ servers: nats.url });
    const started: { stop(): Promise<void> }[] = [];
    try {
      const jsm = await jetstream(natsClient).jetstreamManager();
      await jsm.streams.add({ name: "AUTH_EVENTS", subjects: streamOf(file_ecommerce_auth_v1_events).subjects });
      // Left by an older deployment: other settings on the stream's durable, and a kit v1 per-handler durable.
      await jsm.consumers.add("AUTH_EVENTS", { durable_name: "user_AUTH_EVENTS", ack_policy: AckPolicy.Explicit, ack_wait: nanos(60_000), max_ack_pending: 10 });
      await jsm.consumers.add("AUTH_EVENTS", { durable_name: "user-create-profile", ack_policy: AckPolicy.Explicit, filter_subject: "user.registered" });
      const env = { ...mesh.env, NATS_URL: nats.url, DATABASE_URL: dbs.url("user"), PORT: "0" };
      const results = await Promise.allSettled([runService(fixture, env), runService(fixture, env)]);
      const replicas = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      started.push(...replicas);
      expect(results.map((r) => (r.status === "rejected" ? String(r.reason) : "started"))).toEqual(["started", "started"]);
      const applied = await sqlIn(replicas[0]!)<{ name: string; n: number }>("select name, count(*)::int as n from mikro_orm_migrations group by name order by name");
      expect(applied).toEqual([
        { name: "0000_kit_infrastructure", n: 1 },
        { name: "0000_kit_v2_events", n: 1 },
        { name: "0000_kit_v3_rate_limits", n: 1 },
        { name: "0001_fixture", n: 1 },
      ]);
      const info = await eventually(async () => {
        const i = await jsm.consumers.info("AUTH_EVENTS", "user_AUTH_EVENTS");
        return i.config.max_ack_pending === maxAckPending ? i : undefined;
      }, 10_000, "durable updated");
      expect(info.config.ack_wait).toBe(nanos(5_000));
      await eventually(async () => {
        const names: string[] = [];
        for await (const c of jsm.consumers.list("AUTH_EVENTS")) names.push(c.name);
        return names.length === 1 && names[0] === "user_AUTH_EVENTS" ? true : undefined;
      }, 10_000, "v1 durable deleted");
    } finally {
      for (const s of started) await s.stop();
      await natsClient.close();
      await nats.stop();
      await dbs.dropAll();
    }
  });

  it("stops promptly when NATS was never reachable, though its consumers were still waiting to subscribe", async () => {
    const dbs = new TestDatabases();
    try {
      // Nothing listens there: the bus retries, the consumer loop waits for it.
      const env = { ...mesh.env, NATS_URL: `nats://127.0.0.1:${await freePort()}`, DATABASE_URL: dbs.url("user"), PORT: "0" };
      const replica = await runService(fixture, env);
      const health = createClient(Health, createGrpcTransport({ baseUrl: replica.url }));
      expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      await replica.stop();
    } finally {
      await dbs.dropAll();
    }
  });
});

describe("operations", () => {
  it("passes the caller's trace on to the events it causes", async () => {
    const userId = crypto.randomUUID();
    await publishRegistered(userId, "trace@example.test");
    const token = await issuer.user(userId);
    const users = createClient(UserService, grpc);
    await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined));
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const sub = nc.subscribe("user.updated");
    await users.updateMyProfile(
      { profile: { firstName: "Traced" }, updateMask: { paths: ["first_name"] } },
      { headers: { authorization: `Bearer ${token}`, traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
    );
    for await (const m of sub) {
      if (fromBinary(UserUpdatedSchema, m.data).userId !== userId) continue;
      expect(m.headers?.get("traceparent")).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
      break;
    }
  });

  it("reports NOT_SERVING on Check and Watch while NATS is down, and SERVING again after", async () => {
    const health = createClient(Health, grpc);
    const abort = new AbortController();
    const seen: HealthCheckResponse_ServingStatus[] = [];
    const watching = (async () => {
      try {
        for await (const r of health.watch({ service: "" }, { signal: abort.signal })) {
          seen.push(r.status);
          if (seen.includes(HealthCheckResponse_ServingStatus.NOT_SERVING) && r.status === HealthCheckResponse_ServingStatus.SERVING) break;
        }
      } catch {
        // aborted
      }
    })();
    await mesh.nats.pause();
    await eventually(async () => ((await health.check({ service: "" })).status === HealthCheckResponse_ServingStatus.NOT_SERVING ? true : undefined));
    await mesh.nats.resume();
    await eventually(async () => ((await health.check({ service: "" })).status === HealthCheckResponse_ServingStatus.SERVING ? true : undefined), 15_000);
    await Promise.race([watching, new Promise((r) => setTimeout(r, 5_000))]);
    abort.abort();
    expect(seen[0]).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(seen).toContain(HealthCheckResponse_ServingStatus.NOT_SERVING);
    expect(seen.at(-1)).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("refuses to start with bad configuration, naming every bad value", () => {
    expect(() => loadConfig("user", { PORT: "http", DATABASE_URL: "mysql://x", LOG_LEVEL: "loud" })).toThrow(ConfigError);
    try {
      loadConfig("user", { PORT: "http", DATABASE_URL: "mysql://x", LOG_LEVEL: "loud" });
    } catch (error) {
      const problems = (error as ConfigError).problems.join("\n");
      expect(problems).toMatch(/PORT must be an integer/);
      expect(problems).toMatch(/DATABASE_URL must be a postgres: or postgresql: URL/);
      expect(problems).toMatch(/LOG_LEVEL must be one of/);
    }
    expect(loadConfig("user", {}).port).toBe(50052);
  });

  // Last: it stops the service.
  it("cancels a read outside any transaction in PostgreSQL when its call's deadline passes", async () => {
    const token = await issuer.user(crypto.randomUUID());
    const client = createClient(UserService, grpc);
    const started = Date.now();
    const error = await client.listPaymentMethods({}, { ...auth(token), timeoutMs: 400 }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(error?.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(10_000);
    const sleeping = () => sqlIn()<{ n: string }>("select count(*)::text as n from pg_stat_activity where datname = current_database() and query like 'select pg_sleep(30)%' and state = 'active'");
    await eventually(async () => ((await sleeping())[0]!.n === "0" ? true : undefined), 10_000, "the read cancelled in PostgreSQL");
  });

  it("drains an in-flight call on shutdown, then refuses new ones", async () => {
    const userId = crypto.randomUUID();
    await publishRegistered(userId, "drain@example.test");
    const token = await issuer.user(userId);
    const users = createClient(UserService, grpc);
    await eventually(() => users.getMyProfile({}, auth(token)).catch(() => undefined));
    const started = new Promise<void>((resolve) => (slowCallStarted = resolve));
    const slow = users.updateMyProfile({ profile: { firstName: "slow" }, updateMask: { paths: ["first_name"] } }, auth(token));
    await started; // the call is inside its handler when shutdown begins
    const stopped = mesh.services.user!.stop();
    await expect(slow).resolves.toMatchObject({ profile: { firstName: "slow" } });
    await stopped;
    const fresh = createClient(UserService, createGrpcTransport({ baseUrl: mesh.url("user") }));
    await expect(fresh.getMyProfile({}, auth(token))).rejects.toMatchObject({ code: Code.Unavailable });
  });
});
