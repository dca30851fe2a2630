/**
 * The TypeScript edge: what envoy.yaml does in production, for local runs and
 * tests (Envoy is not installable on our machines). fastify routes by the route
 * table; @fastify/reply-from forwards to the services over HTTP/2 cleartext, one
 * session per upstream. Browsers speak Connect (JSON or binary, unary or server
 * streaming) and gRPC-Web over HTTP/1.1; gRPC clients speak HTTP/2 on the same
 * port. The edge adds CORS, a body limit, an upstream timeout, x-request-id and
 * x-forwarded-* headers, and answers its own errors in the caller's protocol.
 */
import { randomUUID } from "node:crypto";
import { subscribe } from "node:diagnostics_channel";
import { type IncomingHttpHeaders, type OutgoingHttpHeaders, type Server as Http1Server, type ServerResponse } from "node:http";
import {
  type ClientHttp2Stream,
  constants as http2Constants,
  type Http2ServerResponse,
  type Http2Session,
  type IncomingHttpHeaders as Http2IncomingHttpHeaders,
} from "node:http2";
import replyFrom from "@fastify/reply-from";
import { type FastifyInstance, type FastifyReply, type FastifyRequest, fastify, LogController, type RawServerBase, type RouteGenericInterface } from "fastify";
import { type ServiceName, serviceNames } from "../kit/catalog.ts";
import { createListener, type Listener, type ListenerLimits } from "../kit/listener.ts";
import { createLogger, type Logger } from "../kit/logger.ts";
import { type ErrorCode, errorResponse, protocolOf, writeErrorResponse } from "../kit/protocol.ts";
import { edgePolicy, loadRouteTable, type RouteTable, type RpcRoute, type WebhookRoute } from "./routes.ts";

export interface EdgeOptions {
  /** Default 8080; 0 picks a free port. */
  port?: number;
  host?: string;
  /** Base URL of each service (http://, HTTP/2 cleartext). A service left out answers `unavailable`. */
  upstreams: Partial<Record<ServiceName, string>>;
  /** Exact origins ("*" for any) browsers may call from; default: localhost origins only. */
  allowedOrigins?: string[];
  maxBodyBytes?: number;
  /** How long a unary call may wait on its service. */
  upstreamTimeoutMs?: number;
  /** Idle timeout of server streams; 0 for none. */
  streamTimeoutMs?: number;
  /** How long stop() lets in-flight calls finish. */
  shutdownGraceMs?: number;
  logLevel?: string;
  logger?: Logger;
  /** Requests that take at least this long are logged at warn (SLOW_CALL_MS); others that succeed at debug. */
  slowCallMs?: number;
  /** Default: loaded from gen/ecommerce. */
  routes?: RouteTable;
  /** Timeouts and limits of client connections; default `edgePolicy.listener`. */
  listener?: Partial<ListenerLimits>;
}

export interface RunningEdge {
  url: string;
  port: number;
  routes: RouteTable;
  stop(): Promise<void>;
}

type EdgeRequest = FastifyRequest<RouteGenericInterface, RawServerBase>;
type EdgeReply = FastifyReply<RouteGenericInterface, RawServerBase>;

const requestIdPattern = /^[\w.:-]{1,128}$/;
/**
 * reply-from listens for errors on its upstream HTTP/2 session only until the
 * session connects; a connection reset later would be an unhandled 'error' and
 * end the process. Give such sessions a listener (the streams on them fail on
 * their own and are answered `unavailable`). Sessions that already have error
 * listeners (gRPC clients of the services themselves) are left alone.
 */
let guardingSessions = false;
function guardUpstreamSessions(log: Logger): void {
  if (guardingSessions) return;
  guardingSessions = true;
  const guarded = new WeakSet<Http2Session>();
  const guard = (session: Http2Session) => {
    if (guarded.has(session) || session.listenerCount("error") > 0) return;
    guarded.add(session);
    session.on("error", (error: Error & { code?: string }) => log.warn({ err: error.message, code: error.code }, "upstream HTTP/2 session failed"));
  };
  subscribe("http2.client.stream.created", (message) => {
    const session = (message as { stream: ClientHttp2Stream }).stream.session;
    if (!session) return;
    if (session.connecting) session.once("connect", () => guard(session));
    else guard(session);
  });
}

function originMatcher(allowed: string[] | undefined): (origin: string) => boolean {
  if (!allowed) {
    const pattern = new RegExp(edgePolicy.defaultOriginPattern);
    return (origin) => pattern.test(origin);
  }
  if (allowed.includes("*")) return () => true;
  const set = new Set(allowed);
  return (origin) => set.has(origin);
}

/** The client has cancelled or reset the call (or its connection is gone): there is no one left to answer. */
function clientGone(reply: EdgeReply): boolean {
  const raw = reply.raw as ServerResponse | Http2ServerResponse;
  return raw.destroyed || ("stream" in raw && (raw.stream.destroyed || raw.stream.closed));
}

function sendError(request: EdgeRequest, reply: EdgeReply, code: ErrorCode, message: string, httpStatus?: number): void {
  // Answering a cancelled HTTP/2 stream throws (ERR_HTTP2_INVALID_STREAM), outside any handler.
  if (clientGone(reply)) return;
  if (reply.raw.headersSent) {
    // Too late for an error response: a response still running (a stream failed midway) is cut so the
    // client sees it fail; a finished one stays as it is (its upstream stream failed after the end).
    if (!reply.raw.writableEnded) reply.raw.destroy();
    return;
  }
  const contentType = request.headers["content-type"];
  if (protocolOf(contentType) === "grpc" && request.raw.httpVersionMajor === 2) {
    // fastify's reply cannot send a trailers-only response: the kit writes it on the raw stream.
    reply.hijack();
    writeErrorResponse(request.raw, reply.raw, code, message, { httpStatus, headers: reply.getHeaders() as OutgoingHttpHeaders });
    return;
  }
  const response = errorResponse(contentType, code, message, httpStatus);
  void reply.code(response.status).headers(response.headers).send(response.body);
}

/** Relays a gRPC response to an HTTP/2 client with its trailers (grpc-status), which fastify's reply does not carry. */
function relayGrpc(reply: EdgeReply, status: number, upstream: ClientHttp2Stream): void {
  reply.hijack();
  if (clientGone(reply)) {
    upstream.close(http2Constants.NGHTTP2_CANCEL);
    return;
  }
  const raw = reply.raw as unknown as Http2ServerResponse;
  raw.writeHead(status, reply.getHeaders() as OutgoingHttpHeaders);
  upstream.once("trailers", (trailers: Http2IncomingHttpHeaders) => {
    raw.addTrailers(Object.fromEntries(Object.entries(trailers).filter(([name]) => !name.startsWith(":"))) as OutgoingHttpHeaders);
  });
  upstream.once("error", () => raw.stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR));
  raw.once("close", () => {
    if (!upstream.destroyed) upstream.close(http2Constants.NGHTTP2_CANCEL);
  });
  upstream.pipe(raw);
}

const failureWords: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host not found",
  EHOSTUNREACH: "host unreachable",
  ETIMEDOUT: "connection timed out",
};

/** The root cause of a failed upstream call, in words (reply-from wraps it, Node's http2 wraps it again). */
function failureReason(error: Error): string {
  let current: (Error & { code?: string; cause?: unknown }) | undefined = error;
  let reason = error.message;
  while (current) {
    if (current.code) reason = failureWords[current.code] ?? current.code;
    current = current.cause instanceof Error ? current.cause : undefined;
  }
  return reason;
}

export async function startEdge(options: EdgeOptions): Promise<RunningEdge> {
  const log = options.logger ?? createLogger("edge", options.logLevel ?? "info");
  const table = options.routes ?? (await loadRouteTable());
  const maxBodyBytes = options.maxBodyBytes ?? edgePolicy.maxBodyBytes;
  const upstreamTimeoutMs = options.upstreamTimeoutMs ?? edgePolicy.upstreamTimeoutMs;
  const streamTimeoutMs = options.streamTimeoutMs ?? edgePolicy.streamTimeoutMs;
  const originAllowed = originMatcher(options.allowedOrigins);
  const slowCallMs = options.slowCallMs ?? edgePolicy.slowCallMs;
  guardUpstreamSessions(log);
  // fastify gives every request a child logger (pino's child() costs more than the rest of the
  // edge's own work per request). The edge's lines name the request themselves (request_id), so
  // requests share one logger per route log level instead.
  const loggerByLevel = new Map<string, Logger>();
  const requestLogger = (logger: Logger, _bindings: unknown, opts: { level?: string }) => {
    const level = opts.level ?? "";
    let found = loggerByLevel.get(level);
    if (!found) {
      found = level ? logger.child({}, { level }) : logger;
      loggerByLevel.set(level, found);
    }
    return found;
  };

  let network: Listener | undefined;
  const app: FastifyInstance = fastify({
    loggerInstance: log,
    // One line per request is logged below, with the route and upstream.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: requestLogger as never,
    bodyLimit: maxBodyBytes,
    exposeHeadRoutes: false,
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers["x-request-id"];
      return typeof given === "string" && requestIdPattern.test(given) ? given : randomUUID();
    },
    serverFactory: (handler) => {
      network = createListener(handler as Parameters<typeof createListener>[0], { ...edgePolicy.listener, ...options.listener });
      return network.server as unknown as Http1Server;
    },
  }) as unknown as FastifyInstance;

  // Bodies are relayed as they came (one message per call: no client streaming in the contracts).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));

  const routeOf = new WeakMap<FastifyRequest, RpcRoute>();
  let inFlight = 0;
  let drained: (() => void) | undefined;

  app.addHook("onRequest", (request, reply, done) => {
    const started = performance.now();
    const remote = request.ip;
    inFlight++;
    reply.raw.once("close", () => {
      inFlight--;
      if (inFlight === 0) drained?.();
      const ms = performance.now() - started;
      const status = reply.raw.statusCode;
      const grpcStatus = reply.getHeader("grpc-status");
      const failed = status >= 400 || (grpcStatus !== undefined && Number(grpcStatus) !== 0);
      const slow = ms >= slowCallMs && routeOf.get(request)?.kind === "unary";
      // A line per request only when the level wants it: successes at debug, failures at info, slow calls at warn.
      if (!failed && !slow && !log.isLevelEnabled("debug")) return;
      const route = routeOf.get(request);
      const path = request.url.split("?")[0];
      const fields = {
        request_id: request.id,
        method: request.method,
        path,
        status,
        ...(grpcStatus !== undefined ? { grpc_status: Number(grpcStatus) } : {}),
        ...(route ? { rpc: route.rpc, upstream: route.service } : {}),
        remote,
        duration_ms: Math.round(ms * 10) / 10,
      };
      if (slow) log.warn({ ...fields, slow_call_ms: slowCallMs }, "slow edge request");
      else if (failed && path !== "/healthz") log.info(fields, "edge request");
      else log.debug(fields, "edge request");
    });

    reply.header("x-request-id", request.id);
    const origin = request.headers.origin;
    const allowed = typeof origin === "string" && originAllowed(origin);
    if (origin) reply.header("vary", "Origin");
    if (allowed) {
      reply.header("access-control-allow-origin", origin);
      reply.header("access-control-expose-headers", edgePolicy.corsExposeHeaders.join(", "));
    }
    if (request.method === "OPTIONS" && request.headers["access-control-request-method"]) {
      if (!allowed) {
        void reply.code(403).send();
        return;
      }
      reply.header("access-control-allow-methods", edgePolicy.corsAllowMethods.join(", "));
      reply.header("access-control-allow-headers", edgePolicy.corsAllowHeaders.join(", "));
      reply.header("access-control-max-age", String(edgePolicy.corsMaxAgeSeconds));
      void reply.code(204).send();
      return;
    }
    done();
  });

  app.get("/healthz", (_request, reply) => {
    void reply.send({ status: "ok" });
  });

  const stripped = new Set<string>(edgePolicy.strippedRequestHeaders);
  const upstreamHeaders = (request: EdgeRequest, headers: IncomingHttpHeaders | Http2IncomingHttpHeaders) => {
    const out: Record<string, string | string[] | undefined> = {};
    // The trust boundary: what a client says about where it comes from is dropped, and the
    // edge says it from the connection itself (request.ip is the TCP peer: no trustProxy).
    for (const name in headers) if (!stripped.has(name) && !name.startsWith("x-forwarded-")) out[name] = headers[name];
    out["x-request-id"] = request.id;
    out["x-forwarded-for"] = request.ip;
    out["x-forwarded-proto"] = "http";
    out["x-forwarded-host"] = request.host;
    return out as IncomingHttpHeaders;
  };

  /**
   * @param get a Connect GET with this query replacing the client's, and these headers on a
   *   successful answer (the JWKS document).
   */
  const forward = (route: RpcRoute, get?: { query: string; headers: Record<string, string> }) => {
    const timeout = route.kind === "unary" ? upstreamTimeoutMs : streamTimeoutMs;
    // What does not change per request is built once per route; a request adds only its body.
    const options = {
      ...(get ? { queryString: () => get.query } : {}),
      timeout,
      // No retries: most RPCs are not idempotent, and clients own their retry policy.
      retryDelay: () => null,
      rewriteRequestHeaders: upstreamHeaders,
      onResponse: (req: EdgeRequest, rep: EdgeReply, res: { statusCode: number; stream: unknown }) => {
        const upstream = res.stream as ClientHttp2Stream;
        if (req.raw.httpVersionMajor === 2 && protocolOf(rep.getHeader("content-type") as string | undefined) === "grpc") {
          relayGrpc(rep, res.statusCode, upstream);
        } else if (route.kind === "unary") {
          // One message: relayed as one body, which fastify writes with its headers at once, rather
          // than piped (stream machinery and a write per chunk, for a few hundred bytes).
          const chunks: Buffer[] = [];
          upstream.on("data", (chunk: Buffer) => chunks.push(chunk));
          upstream.once("error", (error: Error) => sendError(rep.request, rep, "unavailable", `the ${route.service} service failed while answering (${failureReason(error)})`));
          upstream.once("end", () => {
            if (clientGone(rep)) return;
            if (get && res.statusCode === 200) rep.headers(get.headers);
            void rep.send(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
          });
        } else {
          void rep.send(upstream);
        }
      },
      onError: (rep: EdgeReply, { error }: { error: Error }) => {
        const request = rep.request;
        if (clientGone(rep)) {
          log.debug({ request_id: request.id, upstream: route.service, rpc: route.rpc }, "client cancelled the call");
          return;
        }
        const timedOut = (error as Error & { statusCode?: number }).statusCode === 504;
        const reason = timedOut ? "timeout" : failureReason(error);
        log.warn({ request_id: request.id, upstream: route.service, rpc: route.rpc, reason }, "upstream call failed");
        if (timedOut) sendError(request, rep, "deadline_exceeded", `the ${route.service} service did not answer within ${timeout} ms`);
        else sendError(request, rep, "unavailable", `the ${route.service} service is unavailable (${reason})`);
      },
    } as Parameters<FastifyReply["from"]>[1];
    return (request: FastifyRequest, reply: FastifyReply) => {
      routeOf.set(request, route);
      const body = Buffer.isBuffer(request.body) && request.method === "POST" ? request.body : undefined;
      reply.from(route.upstreamPath, body ? { ...options, body, contentType: request.headers["content-type"] ?? "application/octet-stream" } : options);
    };
  };

  /** A provider's plain POST as a Connect JSON call of its RPC, the answer as a plain status (edgePolicy.webhooks). */
  const forwardWebhook = (route: RpcRoute, hook: WebhookRoute) => {
    const webhookStatus: Record<string, number> = { invalid_argument: 400, unauthenticated: 401, not_found: 404 };
    return (request: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
      routeOf.set(request, route);
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      const signed = hook.signatureHeaders.length > 0;
      const header = hook.signatureHeaders.map((h) => request.headers[h]).find((v) => typeof v === "string") ?? "";
      if (signed && header === "") {
        void reply.code(401).send({ code: "unauthenticated", message: `the webhook has no signature header (${hook.signatureHeaders.join(" or ")})` });
        return;
      }
      const call: Record<string, string> = { [hook.nameField]: request.params.name };
      if (hook.payload !== false) call.payload = raw.toString("base64");
      if (signed) call.signature = header;
      const body = Buffer.from(JSON.stringify(call));
      reply.from(`/${route.rpc}`, {
        body,
        contentType: "application/json",
        timeout: upstreamTimeoutMs,
        retryDelay: () => null,
        rewriteRequestHeaders: (req: EdgeRequest) =>
          ({
            "content-type": "application/json",
            "connect-protocol-version": "1",
            "x-request-id": req.id,
            "x-forwarded-for": req.ip,
            "x-forwarded-proto": "http",
          }) as IncomingHttpHeaders,
        onResponse: (_req: EdgeRequest, rep: EdgeReply, res: { statusCode: number; stream: unknown }) => {
          const chunks: Buffer[] = [];
          const upstream = res.stream as ClientHttp2Stream;
          upstream.on("data", (chunk: Buffer) => chunks.push(chunk));
          upstream.once("error", (error: Error) => sendError(rep.request, rep, "unavailable", `the ${route.service} service failed while answering (${failureReason(error)})`, 503));
          upstream.once("end", () => {
            if (clientGone(rep)) return;
            const answer = Buffer.concat(chunks);
            let status = 200;
            if (res.statusCode !== 200) {
              const code = (() => {
                try {
                  return String((JSON.parse(answer.toString("utf8")) as { code?: string }).code ?? "");
                } catch {
                  return "";
                }
              })();
              status = webhookStatus[code] ?? 503;
            }
            void rep.code(status).header("content-type", "application/json").send(answer);
          });
        },
        onError: (rep: EdgeReply, { error }: { error: Error }) => {
          log.warn({ request_id: rep.request.id, upstream: route.service, rpc: route.rpc, reason: failureReason(error) }, "upstream webhook call failed");
          void rep.code(503).header("content-type", "application/json").send({ code: "unavailable", message: `the ${route.service} service is unavailable; retry later` });
        },
      } as Parameters<FastifyReply["from"]>[1]);
    };
  };

  const notConfigured = (route: RpcRoute) => (request: FastifyRequest, reply: FastifyReply) => {
    routeOf.set(request, route);
    sendError(request, reply, "unavailable", `the ${route.service} service is unavailable (the edge has no address for it)`);
  };

  // Before the routes: fastify handlers are inherited by the scopes registered after them.
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?")[0]!;
    const route = table.byPath.get(path);
    if (route?.exposed) {
      const allow = route.readOnly ? "GET, POST" : "POST";
      reply.header("allow", allow);
      sendError(request, reply, "unimplemented", `${route.rpc} is called with ${allow}, not ${request.method}`, 405);
      return;
    }
    // An INTERNAL RPC looks exactly like an unknown path from outside.
    if (route) log.info({ request_id: request.id, rpc: route.rpc, access: route.access }, "refused an RPC the edge does not expose");
    sendError(request, reply, "not_found", `no RPC is served at ${path}`, 404);
  });

  app.setErrorHandler((error: Error & { code?: string; statusCode?: number }, request, reply) => {
    if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      sendError(request, reply, "resource_exhausted", `the request body is larger than the edge's limit of ${maxBodyBytes} bytes`, 413);
    } else if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      sendError(request, reply, "invalid_argument", error.message, error.statusCode);
    } else {
      log.error({ request_id: request.id, err: error }, "edge error");
      sendError(request, reply, "internal", `internal error at the edge; quote request id ${request.id} when reporting it`);
    }
  });

  for (const service of serviceNames) {
    const routes = table.routes.filter((r) => r.exposed && r.service === service);
    if (routes.length === 0) continue;
    const base = options.upstreams[service];
    // One reply-from per upstream: with http2 it keeps one session to its base URL.
    await app.register(async (scope) => {
      if (base) {
        await scope.register(replyFrom, {
          base,
          http2: { sessionTimeout: 0, requestTimeout: upstreamTimeoutMs },
          disableRequestLogging: true,
        });
      }
      if (service === "auth") {
        const getJwks = table.byPath.get(`/${edgePolicy.jwks.rpc}`)!;
        const document = { query: edgePolicy.jwks.query, headers: { "cache-control": edgePolicy.jwks.cacheControl } };
        scope.get(edgePolicy.jwks.path, { logLevel: "error" }, base ? forward(getJwks, document) : notConfigured(getJwks));
      }
      for (const hook of edgePolicy.webhooks.filter((w) => w.service === service)) {
        const route = table.byPath.get(`/${hook.rpc}`)!;
        scope.post(`${hook.prefix}:name`, { logLevel: "error" }, base ? forwardWebhook(route, hook) : notConfigured(route));
      }
      for (const route of routes) {
        scope.route({
          method: route.readOnly ? ["GET", "POST"] : ["POST"],
          url: route.path,
          // reply-from logs each failed call with its stack at warn; the edge logs it once, shorter.
          logLevel: "error",
          handler: base ? forward(route) : notConfigured(route),
        });
      }
    });
  }

  await app.ready();
  const listener = network!;
  const host = options.host ?? "127.0.0.1";
  const port = await listener.listen(options.port ?? edgePolicy.port, host);
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  log.info({ url, routes: table.routes.filter((r) => r.exposed).length, upstreams: options.upstreams }, "edge listening");

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info("edge shutting down: draining in-flight calls");
      const closed = new Promise<void>((resolve) => listener.server.close(() => resolve()));
      if (inFlight > 0) {
        await Promise.race([new Promise<void>((r) => (drained = r)), new Promise((r) => setTimeout(r, options.shutdownGraceMs ?? 10_000))]);
      }
      await listener.close(0);
      await closed;
      await app.close(); // closes the upstream sessions
      log.info("edge stopped");
    })());

  return { url, port, routes: table, stop };
}
