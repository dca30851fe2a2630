/**
 * What the kit's call interceptor (kit/call.ts) observes of every call: it times the
 * call, counts it by method and code, logs it, and maps every error to a Connect error
 * (unexpected ones are logged with the stack and reach the client as INTERNAL naming
 * only the request id).
 *
 * It runs on every call, so what does not change per call is computed once per
 * method (its name, its package, its metric children), and a successful call is
 * logged at debug: when the level does not want it, no line is built. Failed calls
 * are always logged (INTERNAL, UNKNOWN, DATA_LOSS at error, the caller's mistakes at
 * info), and so is a call slower than `slowCallMs`, at warn.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type StreamResponse } from "@connectrpc/connect";
import { newSpanId, runWithTrace, type TraceContext } from "./context.ts";
import { toConnectError, withDomain } from "./errors.ts";
import type { Logger } from "./logger.ts";
import type { ServiceMetrics } from "./metrics.ts";

/** Metric label of each code ("ok" for success): "not_found", "deadline_exceeded", … */
const codeNames = new Map<Code | undefined, string>([
  [undefined, "ok"],
  ...Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map((c) => [c, Code[c].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase()] as [Code, string]),
]);

const serverFaults = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);

/**
 * Whether the client abandoned the call. Before the handler has answered, the request's
 * signal aborts only for the call's own deadline or because the client went away (its
 * HTTP/2 stream reset, its HTTP/1.1 connection closed). connect-node reads the reset's
 * code as the call's error, and its own client resets with INTERNAL_ERROR when its
 * deadline passes (grpc-js sends CANCEL): without this, every call a client gave up on
 * would be counted and logged as the server's INTERNAL fault.
 */
function abandonedByClient(signal: AbortSignal): boolean {
  if (!signal.aborted) return false;
  const reason: unknown = signal.reason;
  return !(reason instanceof ConnectError && reason.code === Code.DeadlineExceeded);
}

export interface ObserveOptions {
  /** Calls that take at least this long are logged at warn, whatever the level says of successes. */
  slowCallMs: number;
}

/** What the interceptor needs of one method, computed on its first call. */
export interface MethodObservation {
  name: string;
  /** Streams (WatchOrder, health Watch) last as long as their caller wants: never "slow". */
  unary: boolean;
  /** The proto package, ErrorInfo's domain. */
  domain: string;
  /** prom-client children by code label, created on a code's first use. */
  byCode: Map<string, { total: { inc(): void }; duration: { observe(seconds: number): void } }>;
}

/** The observing half of the kit's call interceptor (kit/call.ts). */
export interface Observer {
  /** What is observed of one method, computed on its first call. */
  of(method: DescMethod): MethodObservation;
  /** A unary call answered: counted, timed, logged when slow or at debug. */
  succeeded(m: MethodObservation, trace: TraceContext, started: number): void;
  /** A call failed: the error as the client gets it (unexpected ones logged with the stack as INTERNAL), counted and logged. */
  failed(m: MethodObservation, trace: TraceContext, started: number, error: unknown, signal: AbortSignal): ConnectError;
  /** A stream's response, observed as it runs: each step in the trace, the end counted, errors mapped. */
  stream<R extends StreamResponse>(m: MethodObservation, trace: TraceContext, started: number, res: R, signal: AbortSignal): R;
}

export function observer(log: Logger, metrics: ServiceMetrics, options: ObserveOptions = { slowCallMs: 1000 }): Observer {
  const methods = new WeakMap<DescMethod, MethodObservation>();
  const of = (method: DescMethod): MethodObservation => {
    let found = methods.get(method);
    if (!found) {
      found = { name: `${method.parent.typeName}/${method.name}`, unary: method.methodKind === "unary", domain: method.parent.file.proto.package, byCode: new Map() };
      methods.set(method, found);
    }
    return found;
  };
  const childrenOf = (m: MethodObservation, code: string) => {
    let children = m.byCode.get(code);
    if (!children) {
      children = { total: metrics.rpcTotal.labels(m.name, code), duration: metrics.rpcDuration.labels(m.name, code) };
      m.byCode.set(code, children);
    }
    return children;
  };
  const finish = (m: MethodObservation, trace: TraceContext, started: number, error?: ConnectError) => {
    const ms = performance.now() - started;
    const code = codeNames.get(error?.code) ?? "unknown";
    const children = childrenOf(m, code);
    children.total.inc();
    children.duration.observe(ms / 1000);
    const slow = m.unary && ms >= options.slowCallMs;
    // The line is built only when it is written; the trace ids go in directly (no async context needed).
    if (!error && !slow && !log.isLevelEnabled("debug")) return;
    const fields = { method: m.name, code, duration_ms: Math.round(ms * 10) / 10, request_id: trace.requestId, trace_id: trace.traceId, span_id: trace.spanId };
    if (error && serverFaults.has(error.code)) log.error(fields, "rpc failed");
    else if (error) (slow ? log.warn : log.info).call(log, fields, `rpc -> ${code}: ${error.rawMessage}`);
    else if (slow) log.warn({ ...fields, slow_call_ms: options.slowCallMs }, "slow rpc");
    else log.debug(fields, "rpc ok");
  };
  const mapError = (m: MethodObservation, trace: TraceContext, error: unknown, signal: AbortSignal): ConnectError => {
    const { error: mapped, unexpected } = toConnectError(error, trace.requestId);
    if (unexpected) runWithTrace(trace, () => log.error({ err: error, method: m.name }, "unexpected error"));
    // What the handler threw after its client left is answered to nobody: the call was cancelled.
    if (abandonedByClient(signal)) return new ConnectError("the client closed the call before it was answered", Code.Canceled);
    // ErrorInfo.domain names the service's package here, once, instead of in every throw.
    return withDomain(mapped, m.domain);
  };
  return {
    of,
    succeeded: (m, trace, started) => finish(m, trace, started),
    failed(m, trace, started, error, signal) {
      const mapped = mapError(m, trace, error, signal);
      finish(m, trace, started, mapped);
      return mapped;
    },
    stream<R extends StreamResponse>(m: MethodObservation, trace: TraceContext, started: number, res: R, signal: AbortSignal): R {
      // Streams run lazily after the interceptor returns: keep the trace on each
      // step and map errors raised mid-stream too.
      const iterator = res.message[Symbol.asyncIterator]();
      return {
        ...res,
        message: {
          [Symbol.asyncIterator]() {
            return {
              async next() {
                try {
                  const step = await runWithTrace({ ...trace, spanId: trace.spanId || newSpanId() }, () => iterator.next());
                  if (step.done) finish(m, trace, started);
                  return step;
                } catch (error) {
                  const mapped = mapError(m, trace, error, signal);
                  finish(m, trace, started, mapped);
                  throw mapped;
                }
              },
              async return(value?: unknown) {
                finish(m, trace, started, new ConnectError("client went away", Code.Canceled));
                return (await iterator.return?.(value)) ?? { done: true, value: undefined };
              },
            };
          },
        },
      } as R;
    },
  };
}
