/**
 * The outermost interceptor: continues the caller's trace (or starts one), times
 * the call, counts it by method and code, logs it, and maps every error to a
 * Connect error (unexpected ones are logged with the stack and reach the client
 * as INTERNAL naming only the request id).
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { newSpanId, runWithTrace, type TraceContext, traceFrom } from "./context.ts";
import { toConnectError, withDomain } from "./errors.ts";
import type { Logger } from "./logger.ts";
import type { ServiceMetrics } from "./metrics.ts";

function codeName(code: Code | undefined): string {
  return code === undefined ? "ok" : Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

export function observeInterceptor(log: Logger, metrics: ServiceMetrics): Interceptor {
  return (next) => async (req) => {
    const trace: TraceContext = traceFrom({ traceparent: req.header.get("traceparent"), requestId: req.header.get("x-request-id") });
    const method = `${req.method.parent.typeName}/${req.method.name}`;
    const started = performance.now();
    const finish = (error?: ConnectError) => {
      const code = codeName(error?.code);
      const seconds = (performance.now() - started) / 1000;
      metrics.rpcTotal.inc({ method, code });
      metrics.rpcDuration.observe({ method, code }, seconds);
      const fields = { method, code, duration_ms: Math.round(seconds * 1000 * 10) / 10 };
      runWithTrace(trace, () => {
        if (error && (error.code === Code.Internal || error.code === Code.Unknown || error.code === Code.DataLoss)) log.error(fields, "rpc failed");
        else log.info(fields, error ? `rpc -> ${code}: ${error.rawMessage}` : "rpc ok");
      });
    };
    const mapError = (error: unknown): ConnectError => {
      const { error: mapped, unexpected } = toConnectError(error, trace.requestId);
      if (unexpected) runWithTrace(trace, () => log.error({ err: error, method }, "unexpected error"));
      // ErrorInfo.domain names the service's package here, once, instead of in every throw.
      return withDomain(mapped, req.method.parent.file.proto.package);
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
