/**
 * Errors answered outside an RPC handler (an unknown method on a service port;
 * at the edge: an unknown path, a body too large, a service down), written in
 * the wire protocol of the request, so every client library decodes them as RPC
 * errors: Connect unary (HTTP status + JSON body), Connect streaming (an
 * end-stream message), gRPC-Web and gRPC (a trailers-only response).
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";

/** Connect error codes (their wire names) with their gRPC number and HTTP status. */
const codes = {
  canceled: [1, 499],
  unknown: [2, 500],
  invalid_argument: [3, 400],
  deadline_exceeded: [4, 504],
  not_found: [5, 404],
  already_exists: [6, 409],
  permission_denied: [7, 403],
  resource_exhausted: [8, 429],
  failed_precondition: [9, 400],
  aborted: [10, 409],
  out_of_range: [11, 400],
  unimplemented: [12, 501],
  internal: [13, 500],
  unavailable: [14, 503],
  data_loss: [15, 500],
  unauthenticated: [16, 401],
} as const;

export type ErrorCode = keyof typeof codes;

export type WireProtocol = "connect" | "connect-stream" | "grpc-web" | "grpc";

export function protocolOf(contentType: string | undefined): WireProtocol {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type === "application/grpc" || type.startsWith("application/grpc+")) return "grpc";
  if (type.startsWith("application/connect+")) return "connect-stream";
  return "connect";
}

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Percent-encoding of grpc-message (gRPC over HTTP/2 spec). */
function grpcMessage(message: string): string {
  return Array.from(Buffer.from(message, "utf8"))
    .map((b) => (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`))
    .join("");
}

/**
 * @param httpStatus overrides the Connect unary status (413 for a body over the
 *   limit); the other protocols always answer 200 and carry the code in-band.
 */
export function errorResponse(contentType: string | undefined, code: ErrorCode, message: string, httpStatus?: number): ErrorResponse {
  const [grpcCode, connectStatus] = codes[code];
  const protocol = protocolOf(contentType);
  switch (protocol) {
    case "grpc":
    case "grpc-web":
      return {
        status: 200,
        headers: {
          "content-type": contentType!.split(";")[0]!.trim(),
          "grpc-status": String(grpcCode),
          "grpc-message": grpcMessage(message),
        },
        body: Buffer.alloc(0),
      };
    case "connect-stream": {
      const json = Buffer.from(JSON.stringify({ error: { code, message } }));
      const envelope = Buffer.alloc(5);
      envelope.writeUInt8(0b10, 0); // end-stream flag
      envelope.writeUInt32BE(json.length, 1);
      return { status: 200, headers: { "content-type": contentType!.split(";")[0]!.trim() }, body: Buffer.concat([envelope, json]) };
    }
    default:
      return {
        status: httpStatus ?? connectStatus,
        headers: { "content-type": "application/json" },
        body: Buffer.from(JSON.stringify({ code, message })),
      };
  }
}

/**
 * Writes an error response in the caller's protocol on a raw Node response.
 * gRPC over HTTP/2 gets a trailers-only response (one HEADERS frame that ends the
 * stream), which is how gRPC clients expect an error without a message.
 * @param headers added to the response (the edge's x-request-id and CORS headers).
 */
export function writeErrorResponse(
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
  code: ErrorCode,
  message: string,
  options: { httpStatus?: number; headers?: OutgoingHttpHeaders } = {},
): void {
  const contentType = req.headers["content-type"];
  const response = errorResponse(contentType, code, message, options.httpStatus);
  const headers = { ...options.headers, ...response.headers };
  if ("stream" in res && protocolOf(contentType) === "grpc") {
    // A stream the client has already cancelled cannot be answered (respond would throw).
    if (res.stream.destroyed || res.stream.closed) return;
    res.stream.respond({ ...headers, ":status": response.status }, { endStream: true });
    return;
  }
  const raw = res as ServerResponse;
  raw.writeHead(response.status, { ...headers, "content-length": response.body.length });
  raw.end(response.body);
}
