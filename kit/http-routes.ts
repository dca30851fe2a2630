/**
 * Plain HTTP routes beside a service's RPCs, for callers that do not speak
 * Connect or gRPC: a provider's or carrier's webhook POSTs a raw body whose
 * bytes its signature covers. A service declares them with `httpRoutes` on
 * its definition; the kit's fallback (kit/server.ts) serves the first route
 * whose method matches and whose path starts with its prefix, reads the body
 * whole (up to `maxBodyBytes`, else 413) and writes the handler's JSON
 * answer. Through the edge, webhooks reach a service as its contract's webhook
 * RPC instead (gateway/routes.ts `webhooks`); this route is where a provider posts
 * when no edge stands in between (the payment sandbox's default).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Logger } from "./logger.ts";

export interface PlainRequest {
  /** The path without the query, e.g. /webhooks/payments/sandbox. */
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface PlainResponse {
  status: number;
  /** Sent as JSON. */
  body: unknown;
}

export interface HttpRoute {
  method: "GET" | "POST";
  /** Path prefix the route serves, e.g. "/webhooks/payments/". */
  prefix: string;
  /** Largest body accepted (default 1 MiB). */
  maxBodyBytes?: number;
  handle(req: PlainRequest): Promise<PlainResponse>;
}

/** Serves `req` with the matching route; false when none matches (the caller answers). */
export function serveHttpRoute(
  routes: readonly HttpRoute[],
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
  log: Logger,
): boolean {
  const path = (req.url ?? "/").split("?")[0]!;
  const route = routes.find((r) => r.method === req.method && path.startsWith(r.prefix));
  if (!route) return false;
  const limit = route.maxBodyBytes ?? 1024 * 1024;
  const send = (status: number, body: unknown) => {
    if (res.headersSent) return;
    (res as ServerResponse).writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const chunks: Buffer[] = [];
  let size = 0;
  let refused = false;
  req.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size > limit && !refused) {
      refused = true;
      send(413, { error: `the body is larger than ${limit} bytes` });
    }
    if (!refused) chunks.push(chunk);
  });
  req.on("end", () => {
    if (refused) return;
    route.handle({ path, headers: req.headers, body: Buffer.concat(chunks) }).then(
      (answer) => send(answer.status, answer.body),
      (error: unknown) => {
        log.error({ err: error, path }, "http route failed");
        send(500, { error: "internal error" });
      },
    );
  });
  req.on("error", () => send(400, { error: "the request body could not be read" }));
  return true;
}
