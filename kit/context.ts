/**
 * Per-request context carried through async calls: request id and W3C trace
 * context (the format OpenTelemetry propagates as `traceparent`). It flows into
 * every log line, into outbound gRPC metadata and into NATS event headers, so a
 * checkout can be followed across services and across the event bus.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomFillSync } from "node:crypto";
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { Principal } from "./auth/principal.ts";
import { clientAddressOf } from "./client-address.ts";
import type { PagingScope } from "./paging.ts";

export interface TraceContext {
  requestId: string;
  traceId: string;
  /** This service's span for the current unit of work. */
  spanId: string;
  /** The span that caused it, when there was one. */
  parentSpanId?: string;
  sampled: boolean;
}

/**
 * Everything async context carries for a call, in one store: a call enters one scope
 * (kit/call.ts), not one per concern, and each read is one lookup. Event handlers and
 * jobs carry only a trace.
 */
export interface Scope {
  trace?: TraceContext;
  /** An inbound call's deadline, signal and client (below). */
  call?: CallDeadline;
  /** The verified caller (kit/auth), once the policy let the call through. */
  caller?: Principal;
  /** The page-token key and the RPC, for List RPCs (kit/paging.ts). */
  paging?: PagingScope;
}

const storage = new AsyncLocalStorage<Scope>();

export function currentScope(): Scope | undefined {
  return storage.getStore();
}

/** Runs `fn` in `scope`; the kit's call interceptor enters one per call. */
export function runInScope<T>(scope: Scope, fn: () => T): T {
  return storage.run(scope, fn);
}

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

// Ids come from a pool of random bytes refilled 4 KiB at a time: one randomBytes call per
// id (two per call) cost more than the rest of starting a trace.
const pool = Buffer.allocUnsafe(4096);
let used = pool.length;
function randomHex(bytes: number): string {
  if (used + bytes > pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  used += bytes;
  return pool.toString("hex", used - bytes, used);
}

export const newSpanId = () => randomHex(8);
const newTraceId = () => randomHex(16);

/** Continues the trace named by a `traceparent` header, or starts a new one. */
export function traceFrom(headers: { traceparent?: string | null; requestId?: string | null }): TraceContext {
  const match = headers.traceparent ? traceparentPattern.exec(headers.traceparent) : null;
  const valid = match && !/^0+$/.test(match[1]!) && !/^0+$/.test(match[2]!);
  const traceId = valid ? match[1]! : newTraceId();
  const requestId = headers.requestId && /^[\w.:-]{1,128}$/.test(headers.requestId) ? headers.requestId : traceId.slice(0, 16);
  return {
    requestId,
    traceId,
    spanId: newSpanId(),
    ...(valid ? { parentSpanId: match[2]! } : {}),
    sampled: valid ? (Number.parseInt(match[3]!, 16) & 1) === 1 : true,
  };
}

export function traceparentOf(ctx: TraceContext): string {
  return `00-${ctx.traceId}-${ctx.spanId}-${ctx.sampled ? "01" : "00"}`;
}

export function currentTrace(): TraceContext | undefined {
  return storage.getStore()?.trace;
}

/** Runs `fn` with `ctx` as its trace, keeping the rest of the current scope. */
export function runWithTrace<T>(ctx: TraceContext, fn: () => T): T {
  return storage.run({ ...storage.getStore(), trace: ctx }, fn);
}

/** Headers to send on an outbound call or event so the receiver continues this trace. */
export function propagationHeaders(): Record<string, string> {
  const ctx = storage.getStore()?.trace;
  if (!ctx) return {};
  return { traceparent: traceparentOf(ctx), "x-request-id": ctx.requestId };
}

/**
 * The inbound call's deadline and cancellation, carried in async context so the
 * work it starts obeys them: peer calls get at most the time left (kit/clients.ts),
 * database statements are cancelled and transactions refuse to commit once it has
 * passed (kit/db.ts).
 */
export interface CallDeadline {
  /** Aborts when the deadline passes or the caller cancels. */
  signal: AbortSignal;
  /** Epoch ms; every inbound call has one (the server gives MAX_TIMEOUT_MS to calls without). */
  deadline: number;
  /**
   * The client address (kit/client-address.ts), passed on to peer calls as their
   * X-Forwarded-For: the peer trusts this service as one proxy hop, so its per-client
   * rate limits count the shopper, not the calling service.
   */
  client: string;
}

export function currentCall(): CallDeadline | undefined {
  return storage.getStore()?.call;
}

/** Ms left until the current inbound call's deadline (0 when passed), undefined outside a call. */
export function remainingMs(): number | undefined {
  const call = storage.getStore()?.call;
  return call ? Math.max(0, call.deadline - Date.now()) : undefined;
}

const grpcTimeoutUnits: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 };

/** A `grpc-timeout` value ("30100m") in ms; undefined when malformed. */
export function grpcTimeoutMs(value: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  return m ? Number(m[1]) * grpcTimeoutUnits[m[2]!]! : undefined;
}

/** A `connect-timeout-ms` value in ms; undefined when malformed. */
export function connectTimeoutMs(value: string): number | undefined {
  return /^\d{1,10}$/.test(value) ? Number(value) : undefined;
}

/**
 * A call's deadline, read from the (already clamped) timeout header, its signal and its
 * client address: what the call's scope carries for the work it starts.
 */
export function callDeadlineOf(req: { stream: boolean; signal: AbortSignal; header: Headers; contextValues: ContextValues }, maxTimeoutMs: number): CallDeadline {
  const grpc = req.header.get("grpc-timeout");
  const connect = grpc === null ? req.header.get("connect-timeout-ms") : null;
  const given = grpc !== null ? grpcTimeoutMs(grpc) : connect !== null ? connectTimeoutMs(connect) : undefined;
  // Streams (WatchOrder, health Watch) may outlive MAX_TIMEOUT_MS: they keep the deadline they asked for, if any.
  const deadline = !req.stream
    ? Date.now() + Math.min(given ?? maxTimeoutMs, maxTimeoutMs)
    : given !== undefined
      ? Date.now() + given
      : Number.POSITIVE_INFINITY;
  return { signal: req.signal, deadline, client: clientAddressOf(req) };
}

/**
 * Whatever work fails after the call ended (a cancelled statement, a peer call cut
 * short) is reported as what it is, DEADLINE_EXCEEDED or CANCELLED, not as INTERNAL.
 */
export function afterDeadline(error: unknown, call: CallDeadline): unknown {
  if (!call.signal.aborted || error instanceof ConnectError) return error;
  return Date.now() >= call.deadline
    ? new ConnectError("the call's deadline passed before it completed", Code.DeadlineExceeded)
    : new ConnectError("the call was cancelled", Code.Canceled);
}
