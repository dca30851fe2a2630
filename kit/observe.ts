/**
 * The outermost interceptor: continues the caller's trace (or starts one), times
 * the call, counts it by method and code, logs it, and maps every error to a
 * Connect error (unexpected ones are logged with the stack and reach the client
 * as INTERNAL naming only the request id).
 *
 * It runs on every call, so what does not change per call is computed once per
 * method (its name, its package, its metric children), and a successful call is
 * logged at debug: when the level does not want it, no line is built. Failed calls
 * are always logged (INTERNAL, UNKNOWN, DATA_LOSS at error, the caller's mistakes at
 * info), and so is a call slower than `slowCallMs`, at warn.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { newSpanId, runWithTrace, type TraceContext, traceFrom } from "./context.ts";
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
 * Whether the client abandoned the call: its stream was reset before the answer.
 * connect-node reads the reset's code as the call's error, and its own client resets
 * with INTERNAL_ERROR when its deadline passes (grpc-js sends CANCEL): without this,
 * every call a client gave up on would be counted and logged as the server's INTERNAL
 * fault. The server's own deadline (DEADLINE_EXCEEDED) is not the client leaving.
 */
function abandonedByClient(signal: AbortSignal): boolean {
  const reason: unknown = signal.aborted ? signal.reason : undefined;
  return reason instanceof ConnectError && reason.code !== Code.DeadlineExceeded && reason.rawMessage.startsWith("http/2 stream closed");
}

export interface ObserveOptions {
  /** Calls that take at least this long are logged at warn, whatever the level says of successes. */
  slowCallMs: number;
}

/** What the interceptor needs of one method, computed on its first call. */
interface MethodObservation {
  name: string;
  /** Streams (WatchOrder, health Watch) last as long as their caller wants: never "slow". */
  unary: boolean;
  /** The proto package, ErrorInfo's domain. */
  domain: string;
  /** prom-client children by code label, created on a code's first use. */
  byCode: Map<string, { total: { inc(): void }; duration: { observe(seconds: number): void } }>;
}

export function observeInterceptor(log: Logger, metrics: ServiceMetrics, options: ObserveOptions = { slowCallMs: 1000 }): Interceptor {
  const methods = new WeakMap<DescMethod, MethodObservation>();
  const observationOf = (method: DescMethod): MethodObservation => {
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

  return (next) => async (req) => {
    const trace: TraceContext = traceFrom({ traceparent: req.header.get("traceparent"), requestId: req.header.get("x-request-id") });
    const m = observationOf(req.method);
    const started = performance.now();
    const finish = (error?: ConnectError) => {
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
    const mapError = (error: unknown): ConnectError => {
      const { error: mapped, unexpected } = toConnectError(error, trace.requestId);
      if (unexpected) runWithTrace(trace, () => log.error({ err: error, method: m.name }, "unexpected error"));
      // What the handler threw after its client left is answered to nobody: the call was cancelled.
      if (abandonedByClient(req.signal)) return new ConnectError("the client closed the call before it was answered", Code.Canceled);
      // ErrorInfo.domain names the service's package here, once, instead of in every throw.
      return withDomain(mapped, m.domain);
    };

    try {
      const res = await runWithTrace(trace, () => next(req));
      res.header.set("x-request-id", trace.requestId);
      if (!res.stream) {
        finish();
        return res;
      }
      // Streams run lazily after this interceptor returns: keep the trace on each
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
                  if (step.done) finish();
                  return step;
                } catch (error) {
                  const mapped = mapError(error);
                  finish(mapped);
                  throw mapped;
                }
              },
              async return(value?: unknown) {
                finish(new ConnectError("client went away", Code.Canceled));
                return (await iterator.return?.(value)) ?? { done: true, value: undefined };
              },
            };
          },
        },
      } as typeof res;
    } catch (error) {
      const mapped = mapError(error);
      finish(mapped);
      throw mapped;
    }
  };
}
