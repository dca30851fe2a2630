/**
 * The one server bootstrap of the mesh. A service module declares its domain
 * (entities, migrations, routes, event consumers, jobs); `runService` wires the
 * rest the same way for all ten: config, logs, metrics, database, outbox relay,
 * consumers, interceptors, health, reflection, and one port that serves gRPC
 * (HTTP/2 cleartext) and Connect / gRPC-Web (HTTP/1.1) side by side.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { createRegistry, type DescFile, type DescService } from "@bufbuild/protobuf";
import { type ConnectRouter, type ContextValues, createContextValues, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { compressMinBytes, serverCompressions } from "./compression.ts";
import type { MikroORM } from "@mikro-orm/postgresql";
import { ServiceCredentials, type ServiceTokenSource } from "./auth/credentials.ts";
import { type PublicKeySource, TokenVerifier } from "./auth/verifier.ts";
import type { ServiceName } from "./catalog.ts";
import { PeerClients } from "./clients.ts";
import { connectionKey } from "./client-address.ts";
import { loadConfig, type ServiceConfig } from "./config.ts";
import { abortWithReason, callInterceptor } from "./call.ts";
import { connectTimeoutMs, grpcTimeoutMs } from "./context.ts";
import { AuthService } from "../gen/ecommerce/auth/v1/auth_pb.js";
import { type MigrationEntry, openDatabase, pingDatabase, type DatabaseOptions } from "./db.ts";
import { EventBus } from "./events/bus.ts";
import { EventConsumers, type EventHandler } from "./events/consumer.ts";
import { streamOf } from "./events/contracts.ts";
import { deadLetterRoutes } from "./events/dead-letter-service.ts";
import { OutboxRelay } from "./events/outbox.ts";
import { kitMigrations, OutboxEvent } from "./events/schema.ts";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { healthRoutes, HealthState } from "./health.ts";
import { createListener } from "./listener.ts";
import { createLogger, type Logger } from "./logger.ts";
import { ServiceMetrics } from "./metrics.ts";
import { writeErrorResponse } from "./protocol.ts";
import { reflectionRoutes } from "./reflection.ts";
import { RateLimits, type RpcRateLimit } from "./rate-limit.ts";
import { retentionJobs } from "./retention.ts";

/** What the kit opens for a service before its own code runs. */
export interface BaseContext {
  config: ServiceConfig;
  /** The environment the service was started with: its own settings are read from here (kit/env.ts). */
  env: Record<string, string | undefined>;
  log: Logger;
  metrics: ServiceMetrics;
  orm: MikroORM;
  bus: EventBus;
}

/** What a service's domain code gets to work with. */
export interface ServiceContext extends BaseContext {
  /** Clients of the other services (gRPC, deadlines, credentials). */
  peers: PeerClients;
  verifier: TokenVerifier;
}

import type { Job } from "./jobs.ts";

export type { Job };

/**
 * A service: its domain, declared once; `runService` does the rest the same way for all ten.
 * `setup` builds the service's own state (its settings, read from `ctx.env` with the kit's
 * EnvReader, and long-lived helpers) once at start; every other hook receives it.
 */
export interface ServiceDefinition<State = void> {
  name: ServiceName;
  entities: DatabaseOptions["entities"];
  /** The service's own migrations, in order (the kit's infrastructure migrations run first). */
  migrations: MigrationEntry[];
  /** Name of the table of processed events (default `event_inbox`). */
  inboxTable?: string;
  /** The events.proto this service publishes: its stream is created at start. */
  publishes?: DescFile;
  /** The service's own settings and state, built once at start (a bad setting stops the start). */
  setup?(ctx: BaseContext): State | Promise<State>;
  routes(router: ConnectRouter, ctx: ServiceContext, state: State): void;
  consumers?(ctx: ServiceContext, state: State): EventHandler[];
  jobs?(ctx: ServiceContext, state: State): Job[] | Promise<Job[]>;
  /** Where public keys come from; default: Auth's GetJwks over gRPC. Auth serves its own. */
  publicKeys?(ctx: BaseContext, state: State): PublicKeySource;
  /** How this service gets its service credential; default: Auth's IssueServiceToken. */
  serviceCredentials?(ctx: BaseContext, state: State): ServiceTokenSource;
  /**
   * Per-client limits on some RPCs (e.g. cart writes, coupon checks), counted by the kit
   * in the service's database, so every replica shares them (kit/rate-limit.ts).
   */
  rateLimits?(state: State): RpcRateLimit[];
  /** INTERNAL RPCs callable without a service token (only Auth's IssueServiceToken). */
  credentialExempt?: string[];
}

/** Any service, whatever its state (what the bootstrap, tests and tools take). */
// biome-ignore lint/suspicious/noExplicitAny: a definition's state type is its own business.
export type AnyServiceDefinition = ServiceDefinition<any>;

/** Declares a service; infers its state type from `setup`. */
export function defineService<State = void>(def: ServiceDefinition<State>): ServiceDefinition<State> {
  return def;
}

export interface RunningService {
  name: ServiceName;
  port: number;
  /** Base URL of the server, e.g. http://127.0.0.1:50051. */
  url: string;
  ctx: ServiceContext;
  health: HealthState;
  /** The kit's jobs (retention) and the service's own, by name. */
  jobs: Map<string, Job>;
  /**
   * What every call crosses, as the server applies it: the interceptors and the context
   * values made per request. For in-process measurement of the kit's own cost
   * (scripts/bench/kit-overhead.ts), not for serving.
   */
  chain: { interceptors: readonly Interceptor[]; contextValues(peer: string | undefined): ContextValues };
  stop(): Promise<void>;
}

/** Opens a service's database with the kit's tables and migrations first, then the service's own. */
export function openServiceDatabase(def: AnyServiceDefinition, url: string, log: Logger, poolSize?: number): Promise<MikroORM> {
  return openDatabase({
    url,
    poolSize,
    entities: [OutboxEvent, ...def.entities],
    migrations: [...kitMigrations(def.inboxTable ?? "event_inbox"), ...def.migrations],
    log,
  });
}

/**
 * connect-node refuses a deadline above `maxTimeoutMs` (Python's `timeout=30` arrives as
 * ~30100 ms); the mesh serves it with the cap instead, and gives the cap to a call without
 * a deadline, so every call has one. Malformed values are left for Connect to refuse.
 */
function clampDeadline(headers: IncomingMessage["headers"], maxTimeoutMs: number): void {
  // Only unary calls: streams keep the deadline they asked for (see callDeadlineOf).
  if (String(headers["content-type"] ?? "").startsWith("application/grpc")) {
    const value = headers["grpc-timeout"];
    const ms = typeof value === "string" ? grpcTimeoutMs(value) : Infinity;
    if (ms !== undefined && ms > maxTimeoutMs) headers["grpc-timeout"] = `${maxTimeoutMs}m`;
  } else {
    const value = headers["connect-timeout-ms"];
    const ms = typeof value === "string" ? connectTimeoutMs(value) : Infinity;
    if (ms !== undefined && ms > maxTimeoutMs) headers["connect-timeout-ms"] = String(maxTimeoutMs);
  }
}

export interface RunOptions {
  /** The service's logger; default: JSON lines on stdout at LOG_LEVEL. */
  logger?: Logger;
}

export async function runService(def: AnyServiceDefinition, env: Record<string, string | undefined> = process.env, options: RunOptions = {}): Promise<RunningService> {
  const config = loadConfig(def.name, env);
  const log = options.logger ?? createLogger(def.name, config.logLevel);
  const metrics = new ServiceMetrics(def.name);
  const inboxTable = def.inboxTable ?? "event_inbox";

  const orm = await openServiceDatabase(def, config.databaseUrl, log, config.dbPoolSize);
  const bus = new EventBus(config.natsUrl, `${def.name}-service`, log);
  const base: BaseContext = { config, env, log, metrics, orm, bus };
  let state: unknown;
  try {
    state = await def.setup?.(base);
  } catch (error) {
    // The bus is already connecting: a refused start must not leave it retrying forever.
    await Promise.all([orm.close(), bus.close()]);
    throw error;
  }
  const credentials = def.serviceCredentials?.(base, state) ?? new ServiceCredentials(def.name, config.serviceSecret, config.peers.auth, config.limits.callTimeoutMs);
  const peers = new PeerClients({ peers: config.peers, timeoutMs: config.limits.callTimeoutMs, credentials });
  const keys = def.publicKeys?.(base, state) ?? (async () => (await peers.client(AuthService).getJwks({})).keys.map((k) => ({ ...k, $typeName: undefined })));
  const verifier = new TokenVerifier(keys);
  const ctx: ServiceContext = { ...base, peers, verifier };

  if (def.publishes) {
    const stream = streamOf(def.publishes);
    void bus.ensureStream(stream).catch((error) => log.warn({ err: (error as Error).message, stream: stream.name }, "stream not ensured yet; the relay retries"));
  }
  const relay = new OutboxRelay(orm, bus, log, metrics, { pollMs: config.events.outboxPollMs });
  const consumers = new EventConsumers(
    { service: def.name, orm, bus, log, metrics, inboxTable, maxDeliveries: config.events.maxDeliveries, ackWaitMs: config.events.ackWaitMs },
    def.consumers?.(ctx, state) ?? [],
  );
  const rateLimitRules = def.rateLimits?.(state) ?? [];
  const rateLimits =
    rateLimitRules.length > 0
      ? { rules: rateLimitRules, limits: new RateLimits<string>(config.databaseUrl, Object.fromEntries(rateLimitRules.map((r) => [r.name, r])), log) }
      : undefined;
  const health = new HealthState(async () => bus.connected && (await pingDatabase(orm)));

  const served: DescService[] = [];
  const shutdown = new AbortController();
  // Unary calls in flight, which shutdown waits for; streams (WatchOrder, health Watch)
  // are ended by the shutdown signal instead, or they would hold the drain forever.
  let inFlight = 0;
  let drained: (() => void) | undefined;
  const interceptors: Interceptor[] = [
    callInterceptor({
      log,
      metrics,
      slowCallMs: config.slowCallMs,
      maxTimeoutMs: config.limits.maxTimeoutMs,
      verifier,
      credentialExempt: def.credentialExempt,
      rateLimits,
      pageTokenKey: config.pageTokenKey,
      orm,
      inFlight: {
        started: () => void inFlight++,
        ended() {
          inFlight--;
          if (inFlight === 0) drained?.();
        },
      },
    }),
  ];
  // The TCP peer, for clientAddressOf (Connect's handler context has no socket).
  const contextValues = (peer: string | undefined) => createContextValues().set(connectionKey, { peer, trustedProxyHops: config.trustedProxyHops });
  const handler = connectNodeAdapter({
    routes(router) {
      const recording: ConnectRouter = new Proxy(router, {
        get(target, prop, receiver) {
          if (prop === "service") {
            return (service: DescService, impl: unknown, options?: unknown) => {
              served.push(service);
              return (target.service as (...a: unknown[]) => ConnectRouter)(service, impl, options);
            };
          }
          return Reflect.get(target, prop, receiver);
        },
      });
      def.routes(recording, ctx, state);
      if (def.consumers) deadLetterRoutes(recording, orm, consumers);
      healthRoutes(router, health);
      for (const s of served) health.services.add(s.typeName);
      reflectionRoutes(router, createRegistry(...new Set<DescFile>(served.map((s) => s.file))), [
        ...served.map((s) => s.typeName),
        "grpc.health.v1.Health",
      ]);
    },
    interceptors,
    // Not a gate (it refuses nothing): the hook that reaches the handler context (kit/call.ts).
    requestGate: abortWithReason,
    contextValues: (req) => contextValues(req.socket.remoteAddress),
    readMaxBytes: config.limits.maxMessageBytes,
    writeMaxBytes: config.limits.maxResponseBytes,
    acceptCompression: serverCompressions,
    compressMinBytes,
    // No maxTimeoutMs: unary deadlines are clamped above (connect-node would refuse them), streams are not capped.
    shutdownSignal: shutdown.signal,
    fallback(req, res) {
      if (req.method === "GET" && req.url === "/metrics") {
        void metrics.registry.metrics().then((text) => {
          res.writeHead(200, { "content-type": metrics.registry.contentType });
          res.end(text);
        });
        return;
      }
      // Answered in the caller's protocol: gRPC clients read grpc-status 12, Connect clients `unimplemented`.
      const path = (req.url ?? "/").split("?")[0];
      writeErrorResponse(req as IncomingMessage, res as ServerResponse, "unimplemented", `${def.name} service does not serve ${path}; its RPCs are listed by gRPC server reflection`, { httpStatus: 404 });
    },
  });

  const streamingPaths = new Set(
    [...served, Health, ServerReflection, ServerReflectionV1Alpha].flatMap((s) => s.methods.filter((m) => m.methodKind !== "unary").map((m) => `/${s.typeName}/${m.name}`)),
  );
  const tracked = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => {
    if (!streamingPaths.has(req.url ?? "")) clampDeadline(req.headers, config.limits.maxTimeoutMs);
    handler(req as IncomingMessage, res as ServerResponse);
  };
  // One port: gRPC (HTTP/2) and Connect / gRPC-Web (HTTP/1.1), with the connection limits of config.limits.listener.
  const listener = createListener(tracked, config.limits.listener);
  const port = await listener.listen(config.port, config.host);
  const url = `http://${config.host}:${port}`;

  relay.start();
  consumers.start();
  const jobs = [...retentionJobs(orm, config, inboxTable, log), ...((await def.jobs?.(ctx, state)) ?? [])];
  health.start();
  log.info({ url, services: served.map((s) => s.typeName) }, `${def.name} service listening`);

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info({ in_flight: inFlight }, "shutting down: draining in-flight calls");
      health.shutdown();
      listener.server.close();
      if (inFlight > 0) {
        await Promise.race([new Promise<void>((r) => (drained = r)), new Promise((r) => setTimeout(r, config.limits.shutdownGraceMs))]);
      }
      shutdown.abort(); // ends long streams (WatchOrder, health Watch)
      // Let finished calls flush their responses: HTTP/2 sessions close gracefully (GOAWAY,
      // existing streams complete), idle HTTP/1.1 connections close; stragglers are cut after 2 s.
      await listener.close(2_000);
      await consumers.stop();
      for (const job of jobs) await job.stop().catch((error) => log.warn({ job: job.name, err: (error as Error).message }, "job did not stop cleanly"));
      await relay.stop();
      await bus.close();
      await rateLimits?.limits.close();
      await orm.close();
      log.info("stopped");
    })());

  return { name: def.name, port, url, ctx, health, jobs: new Map(jobs.map((j) => [j.name, j])), chain: { interceptors, contextValues }, stop };
}

/** Entry point of a service process: runs it and stops cleanly on SIGINT/SIGTERM. */
export async function main(def: AnyServiceDefinition): Promise<void> {
  let running: RunningService;
  try {
    running = await runService(def);
  } catch (error) {
    console.error(`${def.name} service failed to start: ${(error as Error).message}`);
    process.exit(1);
  }
  const stop = async (signal: string) => {
    running.ctx.log.info({ signal }, "stop requested");
    await running.stop();
    process.exit(0);
  };
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
}
