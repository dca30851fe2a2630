/**
 * The service kit against real PostgreSQL, a real nats-server and real HTTP/1.1
 * and HTTP/2 clients: one port for gRPC and Connect, health, reflection,
 * validation, the access policies, the outbox through a NATS outage, inbox
 * deduplication, dead letters and their replay, metrics, size limits.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { jetstream } from "@nats-io/jetstream";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { Migration } from "@mikro-orm/migrations";
import { toBinary, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserRegisteredSchema } from "../gen/ecommerce/auth/v1/events_pb.js";
import { DeadLetterService } from "../gen/ecommerce/common/v1/dead_letter_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { file_ecommerce_user_v1_events, UserUpdatedSchema } from "../gen/ecommerce/user/v1/events_pb.js";
import { UserProfileSchema, UserService } from "../gen/ecommerce/user/v1/user_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { requireUser } from "./auth/principal.ts";
import { emOf } from "./db.ts";
import { notFound } from "./errors.ts";
import { onEvent } from "./events/consumer.ts";
import { publishEvent } from "./events/outbox.ts";
import { ConfigError, loadConfig } from "./config.ts";
import type { ServiceDefinition } from "./server.ts";
import { eventually, startMesh, type TestMesh } from "./testing/mesh.ts";
import { TestIssuer } from "./testing/tokens.ts";

const issuer = new TestIssuer();
let failingEmails = true;
let slowCallStarted: () => void = () => undefined;

class FixtureTables extends Migration {
  override async up(): Promise<void> {
    this.addSql("create table fixture_profiles (user_id uuid primary key, email text not null, first_name text not null default '')");
  }
}

/** A fixture service wearing the user service's contract, to exercise the kit alone. */
const fixture: ServiceDefinition = {
  name: "user",
  entities: [],
  migrations: [{ name: "0001_fixture", class: FixtureTables }],
  publishes: file_ecommerce_user_v1_events,
  publicKeys: () => () => issuer.jwks(),
  serviceCredentials: () => ({ token: () => issuer.service("user") }),
  routes(router) {
    router.service(UserService, {
      async getMyProfile(_req, ctx) {
        const me = requireUser(ctx);
        const [row] = await emOf(ctx).getConnection().execute<{ email: string; first_name: string }[]>(
          "select email, first_name from fixture_profiles where user_id = ?",
          [me.userId],
        );
        if (!row) throw notFound("profile", me.userId);
        return { profile: create(UserProfileSchema, { userId: me.userId, email: row.email, firstName: row.first_name }) };
      },
      async updateMyProfile(req, ctx) {
        const me = requireUser(ctx);
        if (req.profile?.firstName === "slow") {
          slowCallStarted();
          await new Promise((r) => setTimeout(r, 800));
        }
        await emOf(ctx).transactional(async (em) => {
          await em
            .getConnection()
            .execute("update fixture_profiles set first_name = ? where user_id = ?", [req.profile?.firstName ?? "", me.userId], "run", em.getTransactionContext());
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
    });
  },
  consumers: () => [
    onEvent(UserRegisteredSchema, "create-profile", async (em, event) => {
      if (failingEmails && event.email.startsWith("fail")) throw new Error(`cannot handle ${event.email}`);
      await em
        .getConnection()
        .execute(
          "insert into fixture_profiles (user_id, email) values (?, ?)",
          [event.userId, event.email],
          "run",
          em.getTransactionContext(),
        );
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
  const jsm = await js.jetstreamManager();
  await jsm.streams.add({ name: "AUTH_EVENTS", subjects: ["user.registered"] }).catch(() => undefined);
  const eventId = crypto.randomUUID();
  const payload = toBinary(UserRegisteredSchema, create(UserRegisteredSchema, { eventId, userId, email }));
  await js.publish("user.registered", payload, { msgID: msgId ?? eventId });
  return { eventId, payload };
}

beforeAll(async () => {
  mesh = await startMesh([fixture], { EVENT_MAX_DELIVERIES: "2", MAX_MESSAGE_BYTES: "4096" });
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
    const token = await issuer.user(userId);
    const profile = await eventually(() => createClient(UserService, grpc).getMyProfile({}, auth(token)).catch(() => undefined));
    expect(profile.profile?.email).toBe("twice@example.test");
    await new Promise((r) => setTimeout(r, 500));
    const [row] = await mesh.services.user!.ctx.orm.em
      .fork()
      .getConnection()
      .execute<{ n: number }[]>("select count(*)::int as n from event_inbox where source = 'create-profile' and event_type = ?", [
        UserRegisteredSchema.typeName,
      ]);
    const [rows] = await mesh.services.user!.ctx.orm.em.fork().getConnection().execute<{ n: number }[]>(
      "select count(*)::int as n from fixture_profiles where user_id = ?",
      [userId],
    );
    expect(rows?.n).toBe(1);
    expect(row?.n).toBeGreaterThanOrEqual(1);
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
    const [pending] = await mesh.services.user!.ctx.orm.em.fork().getConnection().execute<{ n: number }[]>(
      "select count(*)::int as n from outbox_events where published_at is null",
    );
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
      const [row] = await mesh.services.user!.ctx.orm.em.fork().getConnection().execute<{ n: number }[]>(
        "select count(*)::int as n from outbox_events where published_at is null",
      );
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
