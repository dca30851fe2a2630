/**
 * The TypeScript edge: what envoy.yaml does in production, for local runs, tests and
 * the bench (Envoy is not installable on our machines). Browsers speak Connect (JSON or
 * binary, unary or server streaming) and gRPC-Web over HTTP/1.1; gRPC clients speak
 * HTTP/2 on the same port (kit/listener.ts). The edge adds CORS, a body limit, an
 * upstream timeout, x-request-id and x-forwarded-* headers, and answers its own errors
 * in the caller's protocol (kit/protocol.ts).
 *
 * It is one plain request handler on Node's own http/http2 APIs: an exact-path Map
 * lookup in the route table (built once, with everything a route needs), the request
 * headers copied in one pass, and one `http2.connect` session per upstream (opened
 * lazily, reopened when it closes or fails). A unary answer is buffered and written
 * with its headers at once; server streams are piped with back-pressure, and either
 * side going away closes the other. Until issue 8 it was fastify + @fastify/reply-from,
 * whose per-request machinery (hooks, reply objects, streams and events around a few
 * hundred bytes) was most of the edge's own CPU. GetMyProfile through the edge (Connect
 * JSON over HTTP/1.1) against gRPC straight to the service, interleaved in one process
 * on the shared 2-core machine: 1.18–1.39× the CPU per request with fastify, 1.01–1.28×
 * now at c=64 (1.27–1.71× and 1.14–1.36× at c=8); docs/kit.md has the figures.
 */
import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as http2Connect,
  constants as http2Constants,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type IncomingHttpHeaders as Http2IncomingHttpHeaders,
} from "node:http2";
import { type ServiceName, serviceNames } from "../kit/catalog.ts";
import { createListener, type ListenerLimits } from "../kit/listener.ts";
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

type EdgeRequest = IncomingMessage | Http2ServerRequest;
type EdgeResponse = ServerResponse | Http2ServerResponse;

const requestIdPattern = /^[\w.:-]{1,128}$/;
const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2Constants;

/** Request headers never sent upstream: the mesh's own (edgePolicy), HTTP/1.1 connection headers, and what the edge sets itself. */
const droppedRequestHeaders = new Set<string>([
  ...edgePolicy.strippedRequestHeaders,
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "host",
  "content-length",
  "x-request-id",
]);

function originMatcher(allowed: string[] | undefined): (origin: string) => boolean {
  if (!allowed) {
    const pattern = new RegExp(edgePolicy.defaultOriginPattern);
    return (origin) => pattern.test(origin);
  }
  if (allowed.includes("*")) return () => true;
  const set = new Set(allowed);
  return (origin) => set.has(origin);
}

const failureWords: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host not found",
  EHOSTUNREACH: "host unreachable",
  ETIMEDOUT: "connection timed out",
};

/** The root cause of a failed upstream call, in words (Node's http2 may wrap it). */
function failureReason(error: Error): string {
  let current: (Error & { code?: string; cause?: unknown }) | undefined = error;
  let reason = error.message;
  while (current) {
    if (current.code) reason = failureWords[current.code] ?? current.code;
    current = current.cause instanceof Error ? current.cause : undefined;
  }
  return reason;
}

/** HTTP/2 error codes (RFC 9113 §7), for a stream the service reset. */
const http2ErrorNames = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"];
const closedReason = (stream: ClientHttp2Stream) => `stream closed with ${http2ErrorNames[stream.rstCode] ?? `code ${stream.rstCode}`}`;

/** One HTTP/2 session to a service, opened on first use and again after it closed or failed. */
class Upstream {
  private current: ClientHttp2Session | undefined;
  readonly service: ServiceName;
  private readonly base: string;
  private readonly log: Logger;
  constructor(service: ServiceName, base: string, log: Logger) {
    this.service = service;
    this.base = base;
    this.log = log;
  }

  session(): ClientHttp2Session {
    const open = this.current;
    if (open && !open.closed && !open.destroyed) return open;
    const session = http2Connect(this.base);
    let connected = false;
    session.once("connect", () => (connected = true));
    // A failure to connect fails the calls waiting on it, which answer `unavailable` themselves;
    // a connected session that fails (reset) is worth a line. Either way the next call reconnects.
    session.on("error", (error: Error & { code?: string }) => {
      if (connected) this.log.warn({ upstream: this.service, err: error.message, code: error.code }, "upstream HTTP/2 session failed");
    });
    session.once("close", () => {
      if (this.current === session) this.current = undefined;
    });
    // The edge's own listener keeps the process alive; an idle upstream session should not.
    session.unref();
    this.current = session;
    return session;
  }

  close(): void {
    this.current?.destroy();
    this.current = undefined;
  }
}

type TargetKind = "rpc" | "jwks" | "webhook" | "internal";

/** What the edge does at one path, built once per route. */
interface Target {
  kind: TargetKind;
  route: RpcRoute;
  /** Connect GET is allowed (NO_SIDE_EFFECTS RPCs, the JWKS document). */
  get: boolean;
  /** POST is allowed. */
  post: boolean;
  /** The `allow` header of a 405 (RPCs). */
  allow: string;
  upstream: Upstream | undefined;
  unary: boolean;
  timeoutMs: number;
  /** Replaces the client's query (the JWKS document). */
  query?: string;
  /** Added to a 200 answer (the JWKS document's cache-control). */
  okHeaders?: Record<string, string>;
  hook?: WebhookRoute;
  unavailable: string;
  timedOut: string;
  failedWhileAnswering: string;
  notConfigured: string;
  wrongMethod: string;
}

/** One request at the edge. */
interface Call {
  req: EdgeRequest;
  res: EdgeResponse;
  started: number;
  id: string;
  /** The TCP peer's address. */
  remote: string | undefined;
  /** The request's URL and its path (up to "?"). */
  url: string;
  path: string;
  /** Set when the request reached a route (forwarded or answered for it): the log line names it. */
  target: Target | undefined;
  /** The answer's headers: x-request-id and CORS, then the upstream's. */
  headers: OutgoingHttpHeaders;
  /** Written on the raw HTTP/2 stream (trailers-only), where the response object does not see it. */
  status: number;
  grpcStatus: string | undefined;
  /** The response is closed: finished, or the client is gone. */
  closed: boolean;
  /** The answer's headers are written (or being written). */
  answered: boolean;
  upstream: ClientHttp2Stream | undefined;
  /** The upstream's answer headers arrived. */
  responded: boolean;
  upstreamEnded: boolean;
  /** The upstream call's failure was handled (error, timeout or premature close: only the first counts). */
  failed: boolean;
}

/** Both kinds of response take writeHead(status, headers); TypeScript cannot call the union. */
const writeHead = (res: EdgeResponse, status: number, headers: OutgoingHttpHeaders) => (res as ServerResponse).writeHead(status, headers);

const http2Of = (res: EdgeResponse): Http2ServerResponse | undefined => ("stream" in res ? res : undefined);

export async function startEdge(options: EdgeOptions): Promise<RunningEdge> {
  const log = options.logger ?? createLogger("edge", options.logLevel ?? "info");
  const table = options.routes ?? (await loadRouteTable());
  const maxBodyBytes = options.maxBodyBytes ?? edgePolicy.maxBodyBytes;
  const upstreamTimeoutMs = options.upstreamTimeoutMs ?? edgePolicy.upstreamTimeoutMs;
  const streamTimeoutMs = options.streamTimeoutMs ?? edgePolicy.streamTimeoutMs;
  const originAllowed = originMatcher(options.allowedOrigins);
  const slowCallMs = options.slowCallMs ?? edgePolicy.slowCallMs;
  const exposeHeaders = edgePolicy.corsExposeHeaders.join(", ");
  const preflightHeaders = {
    "access-control-allow-methods": edgePolicy.corsAllowMethods.join(", "),
    "access-control-allow-headers": edgePolicy.corsAllowHeaders.join(", "),
    "access-control-max-age": String(edgePolicy.corsMaxAgeSeconds),
  };
  const healthBody = Buffer.from(JSON.stringify({ status: "ok" }));
  const tooLarge = `the request body is larger than the edge's limit of ${maxBodyBytes} bytes`;

  // --- The routes, built once ---------------------------------------------------------------
  const upstreams = new Map<ServiceName, Upstream>();
  for (const service of serviceNames) {
    const base = options.upstreams[service];
    if (base) upstreams.set(service, new Upstream(service, base, log));
  }
  const target = (kind: TargetKind, route: RpcRoute, extra: Partial<Target> = {}): Target => {
    const timeoutMs = route.kind === "unary" ? upstreamTimeoutMs : streamTimeoutMs;
    const allow = route.readOnly ? "GET, POST" : "POST";
    return {
      kind,
      route,
      get: route.readOnly,
      post: true,
      allow,
      upstream: upstreams.get(route.service),
      unary: route.kind === "unary",
      timeoutMs,
      unavailable: `the ${route.service} service is unavailable`,
      timedOut: `the ${route.service} service did not answer within ${timeoutMs} ms`,
      failedWhileAnswering: `the ${route.service} service failed while answering`,
      notConfigured: `the ${route.service} service is unavailable (the edge has no address for it)`,
      wrongMethod: `${route.rpc} is called with ${allow}, not `,
      ...extra,
    };
  };
  const targets = new Map<string, Target>();
  for (const route of table.routes) targets.set(route.path, target(route.exposed ? "rpc" : "internal", route));
  const getJwks = table.byPath.get(`/${edgePolicy.jwks.rpc}`)!;
  targets.set(
    edgePolicy.jwks.path,
    target("jwks", getJwks, { get: true, post: false, query: edgePolicy.jwks.query, okHeaders: { "cache-control": edgePolicy.jwks.cacheControl } }),
  );
  const webhooks = edgePolicy.webhooks.map((hook) => ({
    prefix: hook.prefix,
    target: target("webhook", table.byPath.get(`/${hook.rpc}`)!, { get: false, hook, unavailable: `the ${hook.service} service is unavailable; retry later` }),
  }));

  // --- Answers ------------------------------------------------------------------------------
  /** Cuts a response already under way, so that the client sees it fail. */
  const cut = (call: Call) => {
    const h2 = http2Of(call.res);
    if (h2) {
      if (!h2.stream.destroyed) h2.stream.close(NGHTTP2_INTERNAL_ERROR);
    } else call.res.destroy();
  };

  const writeAnswer = (call: Call, status: number, body: Buffer) => {
    call.answered = true;
    call.headers["content-length"] = body.length;
    writeHead(call.res, status, call.headers);
    call.res.end(body);
  };

  const sendError = (call: Call, code: ErrorCode, message: string, httpStatus?: number) => {
    // Answering a cancelled HTTP/2 stream throws (ERR_HTTP2_INVALID_STREAM): no one is left to answer.
    if (call.closed) return;
    const { req, res } = call;
    if (call.answered || res.headersSent) {
      // Too late for an error response: a response still running (a stream failed midway) is cut so the
      // client sees it fail; a finished one stays as it is (its upstream stream failed after the end).
      if (!res.writableEnded) cut(call);
      return;
    }
    const contentType = req.headers["content-type"];
    const response = errorResponse(contentType, code, message, httpStatus);
    call.grpcStatus = response.headers["grpc-status"];
    if (req.httpVersionMajor === 2 && protocolOf(contentType) === "grpc") {
      // A trailers-only response, written on the raw stream by the kit.
      call.answered = true;
      call.status = response.status;
      writeErrorResponse(req, res, code, message, { httpStatus, headers: call.headers });
      return;
    }
    Object.assign(call.headers, response.headers);
    writeAnswer(call, response.status, response.body);
  };

  /** A JSON answer of the edge itself (healthz, a webhook without signature). */
  const sendJson = (call: Call, status: number, body: Buffer) => {
    call.headers["content-type"] = "application/json; charset=utf-8";
    writeAnswer(call, status, body);
  };

  // --- The per-request line, and the drain count ---------------------------------------------
  let inFlight = 0;
  let drained: (() => void) | undefined;

  const onClosed = (call: Call) => {
    call.closed = true;
    inFlight--;
    if (inFlight === 0) drained?.();
    // The client is gone (or the answer is done): an upstream stream still running is cancelled. One
    // that has not answered yet is cancelled when its headers come (onResponse), as the edge always
    // did: the call has reached its service, which sees it start and then be cancelled
    // (edge-process.test.ts relies on it); the upstream timeout bounds the wait of a unary call.
    const upstream = call.upstream;
    if (upstream && call.responded && !call.upstreamEnded && !upstream.destroyed) upstream.close(NGHTTP2_CANCEL);

    const ms = performance.now() - call.started;
    const status = call.status || call.res.statusCode;
    const grpcStatus = call.grpcStatus;
    const failed = status >= 400 || (grpcStatus !== undefined && Number(grpcStatus) !== 0);
    const route = call.target?.route;
    const slow = ms >= slowCallMs && route?.kind === "unary";
    // A line per request only when the level wants it: successes at debug, failures at info, slow calls at warn.
    if (!failed && !slow && !log.isLevelEnabled("debug")) return;
    const fields = {
      request_id: call.id,
      method: call.req.method,
      path: call.path,
      status,
      ...(grpcStatus !== undefined ? { grpc_status: Number(grpcStatus) } : {}),
      ...(route ? { rpc: route.rpc, upstream: route.service } : {}),
      remote: call.remote,
      duration_ms: Math.round(ms * 10) / 10,
    };
    if (slow) log.warn({ ...fields, slow_call_ms: slowCallMs }, "slow edge request");
    else if (failed && call.path !== "/healthz") log.info(fields, "edge request");
    else log.debug(fields, "edge request");
  };

  // --- Forwarding ---------------------------------------------------------------------------
  /** The client's headers for the upstream call, in one pass; the edge's own set from the connection. */
  const upstreamHeaders = (call: Call, t: Target, method: string, body: Buffer | undefined): OutgoingHttpHeaders => {
    const incoming = call.req.headers as IncomingHttpHeaders & Http2IncomingHttpHeaders;
    const url = call.url;
    const q = url.indexOf("?");
    const path = t.query !== undefined ? `${t.route.upstreamPath}?${t.query}` : q < 0 ? t.route.upstreamPath : t.route.upstreamPath + url.slice(q);
    const out: OutgoingHttpHeaders = { ":method": method, ":path": path };
    // The trust boundary: what a client says about where it comes from is dropped, and the
    // edge says it from the connection itself (the TCP peer).
    for (const name in incoming) {
      if (name.charCodeAt(0) === 58 /* ":" */ || droppedRequestHeaders.has(name) || name.startsWith("x-forwarded-")) continue;
      if (name === "te") {
        if (incoming.te === "trailers") out.te = "trailers";
        continue;
      }
      out[name] = incoming[name];
    }
    const connection = incoming.connection;
    if (connection !== undefined) for (const listed of connection.toLowerCase().split(",")) delete out[listed.trim()];
    out["x-request-id"] = call.id;
    if (call.remote !== undefined) out["x-forwarded-for"] = call.remote;
    out["x-forwarded-proto"] = "http";
    const host = incoming.host ?? incoming[":authority"];
    if (host !== undefined) out["x-forwarded-host"] = host;
    if (body !== undefined) {
      const contentType = incoming["content-type"];
      if (contentType !== undefined || body.length > 0) out["content-type"] = contentType ?? "application/octet-stream";
      out["content-length"] = body.length;
    }
    return out;
  };

  const webhookStatus: Record<string, number> = { invalid_argument: 400, unauthenticated: 401, not_found: 404 };

  /** The answer of a webhook's RPC as a plain status, the Connect JSON as body (edgePolicy.webhooks). */
  const answerWebhook = (call: Call, status: number, body: Buffer) => {
    let plain = 200;
    if (status !== 200) {
      let code = "";
      try {
        code = String((JSON.parse(body.toString("utf8")) as { code?: string }).code ?? "");
      } catch {
        code = "";
      }
      plain = webhookStatus[code] ?? 503;
    }
    call.headers["content-type"] = "application/json";
    writeAnswer(call, plain, body);
  };

  /** The upstream call failed (error, timeout or closed before its end). */
  const upstreamFailed = (call: Call, t: Target, reason: string, timedOut: boolean) => {
    if (call.failed || call.upstreamEnded) return;
    call.failed = true;
    const route = t.route;
    if (call.closed) {
      log.debug({ request_id: call.id, upstream: route.service, rpc: route.rpc }, "client cancelled the call");
      return;
    }
    if (call.answered) {
      // A stream failed midway (or went idle past its timeout): the client sees it cut.
      cut(call);
      return;
    }
    const responded = call.responded;
    if (t.kind === "webhook") {
      if (responded) {
        sendError(call, "unavailable", `${t.failedWhileAnswering} (${reason})`, 503);
        return;
      }
      log.warn({ request_id: call.id, upstream: route.service, rpc: route.rpc, reason }, "upstream webhook call failed");
      call.headers["content-type"] = "application/json";
      writeAnswer(call, 503, Buffer.from(JSON.stringify({ code: "unavailable", message: t.unavailable })));
      return;
    }
    if (responded && !timedOut) {
      sendError(call, "unavailable", `${t.failedWhileAnswering} (${reason})`);
      return;
    }
    log.warn({ request_id: call.id, upstream: route.service, rpc: route.rpc, reason }, "upstream call failed");
    if (timedOut) sendError(call, "deadline_exceeded", t.timedOut);
    else sendError(call, "unavailable", `${t.unavailable} (${reason})`);
  };

  /** The upstream's answer headers: relayed as one body (unary), or piped (server streams). */
  const onResponse = (call: Call, t: Target, stream: ClientHttp2Stream, headers: Http2IncomingHttpHeaders) => {
    call.responded = true;
    if (call.closed) {
      stream.close(NGHTTP2_CANCEL);
      return;
    }
    const status = Number(headers[":status"] ?? 502);
    const answer = call.headers;
    for (const name in headers) if (name.charCodeAt(0) !== 58) answer[name] = headers[name];
    if (headers["grpc-status"] !== undefined) call.grpcStatus = String(headers["grpc-status"]);
    const h2 = http2Of(call.res);
    const grpc = h2 !== undefined && protocolOf(headers["content-type"]) === "grpc";

    let trailers: OutgoingHttpHeaders | undefined;
    if (grpc) {
      // gRPC's status travels in trailers, relayed as they come.
      stream.on("trailers", (received: Http2IncomingHttpHeaders) => {
        trailers = {};
        for (const name in received) if (name.charCodeAt(0) !== 58) trailers[name] = received[name];
        if (received["grpc-status"] !== undefined) call.grpcStatus = String(received["grpc-status"]);
        if (call.answered && !call.closed) h2.addTrailers(trailers);
      });
    }

    if (t.unary) {
      // One message: buffered and written with its headers at once, rather than piped (stream
      // machinery and a write per chunk, for a few hundred bytes).
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        call.upstreamEnded = true;
        if (call.closed) return;
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        if (t.kind === "webhook") {
          answerWebhook(call, status, body);
          return;
        }
        if (grpc) {
          call.answered = true;
          if (body.length === 0 && trailers === undefined && headers["grpc-status"] !== undefined) {
            // Trailers-only (an error without a message), relayed as such.
            call.status = status;
            if (!h2.stream.destroyed && !h2.stream.closed) h2.stream.respond({ ...answer, ":status": status }, { endStream: true });
            return;
          }
          if (trailers) h2.addTrailers(trailers);
          h2.writeHead(status, answer);
          h2.end(body);
          return;
        }
        if (t.okHeaders && status === 200) Object.assign(answer, t.okHeaders);
        writeAnswer(call, status, body);
      });
      return;
    }

    // A server stream: piped with back-pressure; its end ends the answer.
    call.answered = true;
    stream.on("end", () => (call.upstreamEnded = true));
    writeHead(call.res, status, answer);
    stream.pipe(call.res as NodeJS.WritableStream);
  };

  /** Sends the upstream call on its service's session and relays its answer. */
  const relay = (call: Call, t: Target, headers: OutgoingHttpHeaders, body: Buffer | undefined) => {
    let stream: ClientHttp2Stream;
    try {
      stream = t.upstream!.session().request(headers, { endStream: body === undefined });
    } catch (error) {
      // A session closing right now (GOAWAY) refuses new streams.
      upstreamFailed(call, t, failureReason(error as Error), false);
      return;
    }
    call.upstream = stream;
    if (t.timeoutMs > 0) {
      // Idle time of the stream: for a unary call, how long its service takes to answer.
      stream.setTimeout(t.timeoutMs, () => {
        if (!call.upstreamEnded && !stream.destroyed) stream.close(NGHTTP2_CANCEL);
        upstreamFailed(call, t, "timeout", true);
      });
    }
    stream.on("response", (answer: Http2IncomingHttpHeaders) => onResponse(call, t, stream, answer));
    stream.on("error", (error: Error) => upstreamFailed(call, t, failureReason(error), false));
    stream.on("close", () => {
      // Closed before its end without an error: reset by the service (or its session went away).
      if (!call.upstreamEnded) upstreamFailed(call, t, closedReason(stream), false);
    });
    if (body !== undefined) stream.end(body);
  };

  const forward = (call: Call, t: Target, body: Buffer | undefined) => relay(call, t, upstreamHeaders(call, t, body === undefined ? "GET" : "POST", body), body);

  /** A provider's plain POST as a Connect JSON call of its RPC (edgePolicy.webhooks). */
  const forwardWebhook = (call: Call, t: Target, name: string, raw: Buffer) => {
    const hook = t.hook!;
    const incoming = call.req.headers;
    let signature = "";
    for (const header of hook.signatureHeaders) {
      const value = incoming[header];
      if (typeof value === "string") {
        signature = value;
        break;
      }
    }
    const signed = hook.signatureHeaders.length > 0;
    if (signed && signature === "") {
      sendJson(call, 401, Buffer.from(JSON.stringify({ code: "unauthenticated", message: `the webhook has no signature header (${hook.signatureHeaders.join(" or ")})` })));
      return;
    }
    const message: Record<string, string> = { [hook.nameField]: name };
    if (hook.payload !== false) message.payload = raw.toString("base64");
    if (signed) message.signature = signature;
    const body = Buffer.from(JSON.stringify(message));
    const url = call.url;
    const q = url.indexOf("?");
    const headers: OutgoingHttpHeaders = {
      ":method": "POST",
      ":path": q < 0 ? t.route.upstreamPath : t.route.upstreamPath + url.slice(q),
      "content-type": "application/json",
      "content-length": body.length,
      "connect-protocol-version": "1",
      "x-request-id": call.id,
      "x-forwarded-proto": "http",
    };
    if (call.remote !== undefined) headers["x-forwarded-for"] = call.remote;
    relay(call, t, headers, body);
  };

  /** Reads the request body up to the limit, then `then(body)`; over the limit: 413, without reading on. */
  const readBody = (call: Call, then: (body: Buffer) => void) => {
    const req = call.req;
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number(declared) > maxBodyBytes) {
      sendError(call, "resource_exhausted", tooLarge, 413);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        req.off("data", onData);
        req.off("end", onEnd);
        sendError(call, "resource_exhausted", tooLarge, 413);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      if (call.closed) return;
      then(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    req.on("data", onData);
    req.on("end", onEnd);
    // A client that leaves mid-body: nothing to answer (the response's close counts it).
    req.on("error", () => undefined);
  };

  const serve = (call: Call) => {
    const { req } = call;
    const method = req.method;
    const incoming = req.headers;

    const origin = incoming.origin;
    const allowed = typeof origin === "string" && originAllowed(origin);
    if (origin) call.headers.vary = "Origin";
    if (allowed) {
      call.headers["access-control-allow-origin"] = origin;
      call.headers["access-control-expose-headers"] = exposeHeaders;
    }
    if (method === "OPTIONS" && incoming["access-control-request-method"]) {
      if (!allowed) {
        writeAnswer(call, 403, Buffer.alloc(0));
        return;
      }
      Object.assign(call.headers, preflightHeaders);
      call.answered = true;
      writeHead(call.res, 204, call.headers);
      call.res.end();
      return;
    }

    const path = call.path;
    const t = targets.get(path);
    if (t !== undefined) {
      if ((method === "POST" && t.post) || (method === "GET" && t.get)) {
        if (t.kind === "rpc" || t.kind === "jwks") {
          call.target = t;
          if (!t.upstream) sendError(call, "unavailable", t.notConfigured);
          else if (method === "GET") forward(call, t, undefined);
          else readBody(call, (body) => forward(call, t, body));
          return;
        }
      } else if (t.kind === "rpc") {
        call.headers.allow = t.allow;
        sendError(call, "unimplemented", t.wrongMethod + method, 405);
        return;
      }
      // An INTERNAL RPC looks exactly like an unknown path from outside.
      if (t.kind === "internal") log.info({ request_id: call.id, rpc: t.route.rpc, access: t.route.access }, "refused an RPC the edge does not expose");
    } else if (path === "/healthz" && method === "GET") {
      sendJson(call, 200, healthBody);
      return;
    } else if (method === "POST") {
      for (const { prefix, target: hook } of webhooks) {
        if (!path.startsWith(prefix)) continue;
        const segment = path.slice(prefix.length);
        if (segment.includes("/")) break;
        let name: string;
        try {
          name = decodeURIComponent(segment);
        } catch {
          sendError(call, "invalid_argument", `'${call.url}' is not a valid url component`, 400);
          return;
        }
        call.target = hook;
        if (!hook.upstream) sendError(call, "unavailable", hook.notConfigured);
        else readBody(call, (body) => forwardWebhook(call, hook, name, body));
        return;
      }
    }
    sendError(call, "not_found", `no RPC is served at ${path}`, 404);
  };

  const handle = (req: EdgeRequest, res: EdgeResponse) => {
    // A stream the client reset at once may arrive closed: no one to answer, and no close to count.
    if (http2Of(res)?.stream.destroyed) return;
    const given = req.headers["x-request-id"];
    const id = typeof given === "string" && requestIdPattern.test(given) ? given : randomUUID();
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const call: Call = {
      req,
      res,
      started: performance.now(),
      id,
      remote: req.socket?.remoteAddress,
      url,
      path: q < 0 ? url : url.slice(0, q),
      target: undefined,
      headers: { "x-request-id": id },
      status: 0,
      grpcStatus: undefined,
      closed: false,
      answered: false,
      upstream: undefined,
      responded: false,
      upstreamEnded: false,
      failed: false,
    };
    inFlight++;
    res.on("close", () => onClosed(call));
    try {
      serve(call);
    } catch (error) {
      log.error({ request_id: id, err: error }, "edge error");
      sendError(call, "internal", `internal error at the edge; quote request id ${id} when reporting it`);
    }
  };

  const listener = createListener(handle, { ...edgePolicy.listener, ...options.listener });
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
      for (const upstream of upstreams.values()) upstream.close();
      log.info("edge stopped");
    })());

  return { url, port, routes: table, stop };
}
