/**
 * Generated clients for calls between services: gRPC over HTTP/2 with a
 * deadline on every call (CALL_TIMEOUT_MS, or less: what is left of the inbound
 * call that makes it, whose cancellation cancels it too), retries only for side-effect-free RPCs on UNAVAILABLE,
 * the trace and request id passed on, a service credential on INTERNAL RPCs and
 * the end user's token forwarded, and a clear error naming the peer when it is down.
 */
import { type DescService, getOption, hasOption } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AccessPolicy, access } from "../gen/ecommerce/common/v1/access_pb.js";
import { onBehalfOfHeader } from "./auth/interceptor.ts";
import type { ServiceTokenSource } from "./auth/credentials.ts";
import { currentCaller } from "./auth/principal.ts";
import { type ServiceName, serviceCatalog } from "./catalog.ts";
import { currentCall, propagationHeaders } from "./context.ts";

export interface PeerClientOptions {
  peers: Record<ServiceName, string>;
  timeoutMs: number;
  credentials?: ServiceTokenSource;
  /** Attempts for retryable calls, including the first. */
  maxAttempts?: number;
}

/** Which service of the catalog serves a descriptor, by its proto package. */
export function peerOf(service: DescService): ServiceName {
  const pkg = service.file.proto.package;
  const name = (Object.keys(serviceCatalog) as ServiceName[]).find((n) => serviceCatalog[n].protoPackage === pkg);
  if (!name) throw new Error(`${service.typeName} belongs to no service of the catalog`);
  return name;
}

/** The same error with a message that names the peer; details and metadata kept. */
function withPeer(ce: ConnectError, message: string): ConnectError {
  const wrapped = new ConnectError(message, ce.code, ce.metadata, undefined, ce);
  wrapped.details.push(...ce.details);
  return wrapped;
}

function outbound(peer: string, url: string, options: PeerClientOptions): Interceptor {
  const attempts = options.maxAttempts ?? 3;
  return (next) => async (req) => {
    for (const [k, v] of Object.entries(propagationHeaders())) req.header.set(k, v);
    const client = currentCall()?.client;
    if (client) req.header.set("x-forwarded-for", client);
    const caller = currentCaller();
    const userToken = caller?.kind === "user" ? caller.token : caller?.kind === "service" ? caller.onBehalfOf?.token : undefined;
    const internal = hasOption(req.method, access) && getOption(req.method, access) === AccessPolicy.INTERNAL;
    if (internal) {
      if (!options.credentials) throw new ConnectError(`no service credential configured to call ${peer}`, Code.Internal);
      req.header.set("authorization", `Bearer ${await options.credentials.token()}`);
      if (userToken) req.header.set(onBehalfOfHeader, `Bearer ${userToken}`);
    } else if (userToken && !req.header.has("authorization")) {
      req.header.set("authorization", `Bearer ${userToken}`);
    }
    const retryable = !req.stream && req.method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS;
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (error) {
        const ce = ConnectError.from(error);
        if (ce.code === Code.Unavailable && retryable && attempt < attempts && !req.signal.aborted) {
          await new Promise((r) => setTimeout(r, 100 * 3 ** (attempt - 1)));
          continue;
        }
        if (ce.code === Code.Unavailable) throw withPeer(ce, `${peer} service unavailable at ${url}: ${ce.rawMessage}`);
        if (ce.code === Code.DeadlineExceeded) throw withPeer(ce, `${peer} service did not answer in time (${url}): ${ce.rawMessage}`);
        throw ce;
      }
    }
  };
}

/**
 * The deadline of an outbound call: min(CALL_TIMEOUT_MS, time left of the inbound call
 * that makes it), so a peer never works for a caller that has given up; the inbound
 * call's cancellation cancels the outbound one.
 */
function boundedByCall(timeoutMs: number | undefined, signal: AbortSignal | undefined, callTimeoutMs: number, peer: string) {
  const call = currentCall();
  if (!call) return { timeoutMs: timeoutMs ?? callTimeoutMs, signal };
  const left = call.deadline - Date.now();
  if (left <= 0 || call.signal.aborted) {
    throw new ConnectError(`not calling ${peer}: the deadline of the call that needs it has passed`, Code.DeadlineExceeded);
  }
  return { timeoutMs: Math.min(timeoutMs ?? callTimeoutMs, left), signal: signal ? AbortSignal.any([signal, call.signal]) : call.signal };
}

function deadlineBound(transport: Transport, callTimeoutMs: number, peer: string): Transport {
  return {
    async unary(method, signal, timeoutMs, header, input, contextValues) {
      const bound = boundedByCall(timeoutMs, signal, callTimeoutMs, peer);
      return transport.unary(method, bound.signal, bound.timeoutMs, header, input, contextValues);
    },
    async stream(method, signal, timeoutMs, header, input, contextValues) {
      const bound = boundedByCall(timeoutMs, signal, callTimeoutMs, peer);
      return transport.stream(method, bound.signal, bound.timeoutMs, header, input, contextValues);
    },
  };
}

/** Creates clients of other services; one HTTP/2 connection per peer, reused by all calls. */
export class PeerClients {
  private readonly transports = new Map<ServiceName, Transport>();
  private readonly options: PeerClientOptions;

  constructor(options: PeerClientOptions) {
    this.options = options;
  }

  client<S extends DescService>(service: S): Client<S> {
    const peer = peerOf(service);
    let transport = this.transports.get(peer);
    if (!transport) {
      const url = this.options.peers[peer];
      transport = deadlineBound(
        createGrpcTransport({
          baseUrl: url,
          defaultTimeoutMs: this.options.timeoutMs,
          // Answers between services are not compressed (kit/compression.ts).
          acceptCompression: [],
          interceptors: [outbound(peer, url, this.options)],
        }),
        this.options.timeoutMs,
        peer,
      );
      this.transports.set(peer, transport);
    }
    return createClient(service, transport);
  }
}
