/**
 * Per-request context carried through async calls: request id and W3C trace
 * context (the format OpenTelemetry propagates as `traceparent`). It flows into
 * every log line, into outbound gRPC metadata and into NATS event headers, so a
 * checkout can be followed across services and across the event bus.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomBytes } from "node:crypto";

export interface TraceContext {
  requestId: string;
  traceId: string;
  /** This service's span for the current unit of work. */
  spanId: string;
  /** The span that caused it, when there was one. */
  parentSpanId?: string;
  sampled: boolean;
}

const storage = new AsyncLocalStorage<TraceContext>();

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export const newSpanId = () => randomBytes(8).toString("hex");
const newTraceId = () => randomBytes(16).toString("hex");

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
  return storage.getStore();
}

export function runWithTrace<T>(ctx: TraceContext, fn: () => T): T {
  return storage.run(ctx, fn);
}

/** Headers to send on an outbound call or event so the receiver continues this trace. */
export function propagationHeaders(): Record<string, string> {
  const ctx = storage.getStore();
  if (!ctx) return {};
  return { traceparent: traceparentOf(ctx), "x-request-id": ctx.requestId };
}
